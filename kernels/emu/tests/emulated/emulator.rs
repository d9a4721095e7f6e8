//! The emulator itself, on kernels that break the rules on purpose (`kernels/emu/selftest.cu`):
//! each must be reported the way a GPU (or compute-sanitizer) would report it, with the kernel,
//! thread and address, instead of passing or hanging. If these did not fail, a pass of the parity
//! tests would prove less.

use std::sync::Mutex;

use kernels_emu::{
    kernel, launch, mem_map, mem_set_arena, mem_unmap, Dim3, FaultKind, ParamBuffer,
};

/// The device arena is process-wide: one of these tests at a time.
static ARENA: Mutex<()> = Mutex::new(());

fn dim(x: u32) -> Dim3 {
    Dim3 { x, y: 1, z: 1 }
}

/// Runs `name` with `params` over `grid` x `block`, with `[base, base + mapped)` the only live
/// allocation inside an arena of `arena` bytes at `base`.
fn run_in_arena(
    name: &str,
    grid: u32,
    block: u32,
    arena: &mut [f32],
    mapped_floats: usize,
    params: impl FnOnce(u64) -> ParamBuffer,
) -> Result<(), kernels_emu::Fault> {
    let _one = ARENA.lock().unwrap_or_else(|p| p.into_inner());
    let base = arena.as_mut_ptr() as u64;
    let k = kernel(name).expect("self-test kernel in the table");
    let p = params(base);
    // SAFETY: the buffer outlives the launch; accesses outside the mapped part are caught.
    unsafe {
        mem_set_arena(base, std::mem::size_of_val(arena) as u64);
        mem_map(base, (mapped_floats * 4) as u64, 1);
        let r = launch(&k, dim(grid), dim(block), p.as_bytes());
        assert!(mem_unmap(base));
        mem_set_arena(0, 0);
        r
    }
}

#[test]
fn a_write_past_the_end_of_an_allocation_stops_the_kernel_and_names_it() {
    let mut arena = vec![0.0f32; 4096];
    let fault = run_in_arena("emu_selftest_write_past_end", 2, 64, &mut arena, 100, |y| {
        let mut p = ParamBuffer::new();
        p.push(y as *mut f32);
        p.push(100i32);
        p
    })
    .expect_err("y[100] lies past the 100-float allocation");
    assert_eq!(fault.kind, FaultKind::Address);
    assert!(fault.is_write);
    assert_eq!(fault.size, 4);
    // Element 100 belongs to thread 36 of block 1.
    assert_eq!((fault.block, fault.thread), ([1, 0, 0], [36, 0, 0]));
    assert_eq!(fault.address, arena.as_ptr() as u64 + 400);
    for want in [
        "Invalid __global__ write of size 4 bytes",
        "emu_selftest_write_past_end by thread (36,0,0) in block (1,0,0)",
        "is 0 bytes after the nearest allocation #1 of 400 bytes",
    ] {
        assert!(fault.message.contains(want), "{want:?} not in:\n{fault}");
    }
    // Everything in bounds was written; nothing past the fault.
    assert!(arena[..100].iter().all(|&v| v == 1.0));
    assert!(arena[100..].iter().all(|&v| v == 0.0));
}

#[test]
fn the_same_kernel_in_bounds_runs_clean() {
    let mut arena = vec![0.0f32; 4096];
    run_in_arena("emu_selftest_write_past_end", 2, 64, &mut arena, 101, |y| {
        let mut p = ParamBuffer::new();
        p.push(y as *mut f32);
        p.push(100i32);
        p
    })
    .expect("101 floats are mapped");
    assert!(arena[..101].iter().all(|&v| v == 1.0));
}

#[test]
fn a_misaligned_store_is_a_fault() {
    let mut arena = vec![0.0f32; 64];
    let fault = run_in_arena(
        "emu_selftest_misaligned_store",
        1,
        32,
        &mut arena,
        64,
        |y| {
            let mut p = ParamBuffer::new();
            p.push(y as *mut f32);
            p.push(2i32);
            p
        },
    )
    .expect_err("a 4-byte store at offset 2");
    assert_eq!(fault.kind, FaultKind::Misaligned);
    assert!(fault.message.contains("misaligned address"), "{fault}");
}

#[test]
fn a_barrier_that_not_every_thread_reaches_is_a_deadlock_not_a_hang() {
    let mut out = vec![0.0f32; 64];
    let k = kernel("emu_selftest_deadlock").unwrap();
    let mut p = ParamBuffer::new();
    p.push(out.as_mut_ptr());
    // SAFETY: 64 floats for 64 threads.
    let fault = unsafe { launch(&k, dim(1), dim(64), p.as_bytes()) }.expect_err("deadlock");
    assert_eq!(fault.kind, FaultKind::Trap);
    assert!(
        fault.message.contains("Deadlock in emu_selftest_deadlock")
            && fault.message.contains("32 thread(s) wait at __syncthreads"),
        "{fault}"
    );
}

#[test]
fn a_shuffle_that_lanes_have_returned_from_is_a_trap() {
    let mut out = vec![0.0f32; 32];
    let k = kernel("emu_selftest_shuffle_after_return").unwrap();
    let mut p = ParamBuffer::new();
    p.push(out.as_mut_ptr());
    // SAFETY: 32 floats for 32 threads.
    let fault = unsafe { launch(&k, dim(1), dim(32), p.as_bytes()) }.expect_err("a trap");
    assert_eq!(fault.kind, FaultKind::Trap);
    assert!(
        fault.message.contains("returned before reaching it"),
        "{fault}"
    );
}

#[test]
fn a_missing_syncthreads_gives_a_wrong_result() {
    let x: Vec<f32> = (0..256).map(|i| i as f32 + 1.0).collect();
    let want: Vec<f32> = (0..256).map(|i| x[(i + 1) % 256]).collect();
    let k = kernel("emu_selftest_neighbour").unwrap();
    let run = |sync: i32| {
        let mut y = vec![f32::NAN; 256];
        let mut p = ParamBuffer::new();
        p.push(x.as_ptr());
        p.push(y.as_mut_ptr());
        p.push(sync);
        // SAFETY: 256 floats each for 256 threads.
        unsafe { launch(&k, dim(1), dim(256), p.as_bytes()) }.unwrap();
        y
    };
    // Run the broken variant after a clean one, so the static shared memory holds stale values
    // from the previous launch (the emulator's stand-in for garbage).
    assert_eq!(run(1), want);
    let mut x2 = x.clone();
    x2.iter_mut().for_each(|v| *v = -*v);
    let broken = {
        let mut y = vec![f32::NAN; 256];
        let mut p = ParamBuffer::new();
        p.push(x2.as_ptr());
        p.push(y.as_mut_ptr());
        p.push(0i32);
        // SAFETY: as above.
        unsafe { launch(&k, dim(1), dim(256), p.as_bytes()) }.unwrap();
        y
    };
    let want2: Vec<f32> = (0..256).map(|i| x2[(i + 1) % 256]).collect();
    // Thread t reads slot t+1 before thread t+1 has written it (fibers run in order until a
    // barrier): all but the last thread see the previous launch's values.
    let wrong = broken.iter().zip(&want2).filter(|(a, b)| a != b).count();
    assert_eq!(wrong, 255, "{broken:?}");
}

#[test]
fn every_kernel_parameter_layout_is_cudas() {
    // Natural alignment in order: a pointer after an int starts at the next multiple of 8.
    let k = kernel("emu_selftest_write_past_end").unwrap();
    let slots: Vec<_> = k
        .params()
        .map(|s| (s.offset, s.size, s.is_pointer))
        .collect();
    assert_eq!(slots, vec![(0, 8, true), (8, 4, false)]);
    assert_eq!(k.param_bytes, 12);
    let conv = kernel("conv2d_forward").unwrap();
    // x, w, y; N, C, H, W, CO, OH, OW, KS, S, P; beta; k_chunk.
    assert_eq!(conv.params().count(), 15);
    assert_eq!(conv.param_bytes, 3 * 8 + 12 * 4);
}
