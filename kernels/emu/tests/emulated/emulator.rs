//! The emulator itself, on kernels that break the rules on purpose (`kernels/emu/selftest.cu`) and
//! on project kernels given wrong buffers: each must be reported the way a GPU (or
//! compute-sanitizer) would report it, with the kernel, thread and address, instead of passing or
//! hanging. If these did not fail, a pass of the parity tests would prove less. Races:
//! `racecheck.rs` and `schedules.rs`.

use kernels_emu::{kernel, FaultKind};

use crate::common::*;
use crate::params;

#[test]
fn a_write_past_the_end_of_an_allocation_stops_the_kernel_and_names_it() {
    let mut y = DevVec::filled(0.0f32, 100);
    // The gap after the allocation is no one's memory: look at its first word to see that the
    // faulting store did not happen.
    let gap = y.addr() as *const f32;
    // SAFETY: the arena's gaps are mapped host memory that no allocation uses.
    let after = || unsafe { gap.add(100).read() };
    let before = after();
    let fault = run(
        "emu_selftest_write_past_end",
        2,
        64,
        &params!(y.as_mut_ptr(), 100i32),
    )
    .expect_err("y[100] lies past the 100-float allocation");
    assert_eq!(fault.kind, FaultKind::Address);
    assert!(fault.is_write);
    assert_eq!(fault.size, 4);
    // Element 100 belongs to thread 36 of block 1.
    assert_eq!((fault.block, fault.thread), ([1, 0, 0], [36, 0, 0]));
    assert_eq!(fault.address, y.addr() + 400);
    for want in [
        "Invalid __global__ write of size 4 bytes".to_string(),
        "emu_selftest_write_past_end by thread (36,0,0) in block (1,0,0)".to_string(),
        format!(
            "is 0 bytes after the nearest allocation #{} of 400 bytes",
            y.id()
        ),
    ] {
        assert!(fault.message.contains(&want), "{want:?} not in:\n{fault}");
    }
    // Everything in bounds was written; nothing past the fault.
    assert!(y.iter().all(|&v| v == 1.0));
    assert_eq!(after().to_bits(), before.to_bits());
}

#[test]
fn the_same_kernel_in_bounds_runs_clean() {
    let mut y = DevVec::filled(0.0f32, 101);
    run(
        "emu_selftest_write_past_end",
        2,
        64,
        &params!(y.as_mut_ptr(), 100i32),
    )
    .expect("101 floats are allocated");
    assert!(y.iter().all(|&v| v == 1.0));
}

/// What the parity sweeps now catch: a project kernel (avgpool_forward, at an odd shape) given
/// an input one element short reads past it, and the read stops the launch, naming the
/// allocation. On a host `Vec` this read landed in whatever the heap held next.
#[test]
fn an_out_of_bounds_read_at_an_odd_shape_is_caught() {
    let (nc, hw) = (3 * 5, 7 * 7);
    let (g, b) = cfg_1d(nc);
    let launch = |x: &DevVec<f32>, y: &mut DevVec<f32>| {
        let k = kernel("avgpool_forward").unwrap();
        let p = params!(x.as_ptr(), y.as_mut_ptr(), nc as i32, hw as i32);
        // SAFETY: DevVec buffers: the emulator checks every access.
        unsafe { kernels_emu::launch_with(&k, g, b, p.as_bytes(), &Default::default()) }
    };
    let mut y = nan_vec(nc);
    let short = DevVec::filled(1.0f32, nc * hw - 1);
    let fault = launch(&short, &mut y).expect_err("the last row runs one float past x");
    assert_eq!(fault.kind, FaultKind::Address);
    assert!(!fault.is_write);
    assert_eq!(fault.address, short.addr() + 4 * (nc * hw - 1) as u64);
    // Row nc - 1 is thread nc - 1 of block 0 (one thread per row).
    assert_eq!(
        (fault.block, fault.thread),
        ([0, 0, 0], [nc as u32 - 1, 0, 0])
    );
    let want = format!(
        "is 0 bytes after the nearest allocation #{} of {} bytes",
        short.id(),
        4 * (nc * hw - 1)
    );
    assert!(
        fault
            .message
            .contains("Invalid __global__ read of size 4 bytes")
            && fault.message.contains(&want),
        "{fault}"
    );
    let exact = DevVec::filled(1.0f32, nc * hw);
    launch(&exact, &mut y).expect("in bounds");
    assert!(y.iter().all(|&v| v == 1.0), "{y:?}");
}

#[test]
fn a_misaligned_store_is_a_fault() {
    let mut y = DevVec::filled(0.0f32, 64);
    let fault = run(
        "emu_selftest_misaligned_store",
        1,
        32,
        &params!(y.as_mut_ptr(), 2i32),
    )
    .expect_err("a 4-byte store at offset 2");
    assert_eq!(fault.kind, FaultKind::Misaligned);
    assert!(fault.message.contains("misaligned address"), "{fault}");
}

/// An 8-byte (float2) or 16-byte (float4) access must be aligned to its width, as on the GPU:
/// 4-byte alignment is not enough for either, 8-byte not for a float4. Aligned ones run and
/// move the right values.
#[test]
fn a_misaligned_8_or_16_byte_access_is_a_fault() {
    let mut x: DevVec<f32> = (0..16).map(|i| i as f32).collect();
    let mut y = nan_vec(1);
    let xp = x.as_mut_ptr();
    for (width, offset) in [(8i32, 4i32), (8, 12), (16, 4), (16, 8), (16, 24)] {
        for store in [0i32, 1] {
            let fault = run(
                "emu_selftest_vector_access",
                1,
                1,
                &params!(xp, y.as_mut_ptr(), offset, width, store),
            )
            .expect_err("misaligned");
            assert_eq!(
                (fault.kind, fault.size, fault.is_write),
                (FaultKind::Misaligned, width as u32, store == 1),
                "width {width} offset {offset} store {store}: {fault}"
            );
            assert_eq!(fault.address, x.addr() + offset as u64);
        }
    }
    for (width, offset, sum) in [(8, 8, 2.0 + 3.0), (16, 16, 4.0 + 5.0 + 6.0 + 7.0)] {
        run(
            "emu_selftest_vector_access",
            1,
            1,
            &params!(xp, y.as_mut_ptr(), offset, width, 0i32),
        )
        .expect("aligned load");
        assert_eq!(y[0], sum);
    }
    run(
        "emu_selftest_vector_access",
        1,
        1,
        &params!(xp, y.as_mut_ptr(), 32i32, 16i32, 1i32),
    )
    .expect("aligned store");
    assert_eq!(x[8..12], [1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn a_barrier_that_not_every_thread_reaches_is_a_deadlock_not_a_hang() {
    let mut out = DevVec::filled(0.0f32, 64);
    let fault =
        run("emu_selftest_deadlock", 1, 64, &params!(out.as_mut_ptr())).expect_err("deadlock");
    assert_eq!(fault.kind, FaultKind::Trap);
    assert!(
        fault.message.contains("Deadlock in emu_selftest_deadlock")
            && fault.message.contains("32 thread(s) wait at __syncthreads"),
        "{fault}"
    );
}

#[test]
fn a_shuffle_that_lanes_have_returned_from_is_a_trap() {
    let mut out = DevVec::filled(0.0f32, 32);
    let fault = run(
        "emu_selftest_shuffle_after_return",
        1,
        32,
        &params!(out.as_mut_ptr()),
    )
    .expect_err("a trap");
    assert_eq!(fault.kind, FaultKind::Trap);
    assert!(
        fault.message.contains("returned before reaching it"),
        "{fault}"
    );
}

/// Without the barrier, thread t reads slot t+1 before thread t+1 has written it (fibers run in
/// order until a barrier): shared memory is poisoned with NaN at each block's start, so all but
/// the last thread read NaN, even right after a launch that filled the same memory.
#[test]
fn a_missing_syncthreads_gives_a_wrong_result() {
    let x: DevVec<f32> = (0..256).map(|i| i as f32 + 1.0).collect();
    let want: Vec<f32> = (0..256).map(|i| x[(i + 1) % 256]).collect();
    let run_sync = |sync: i32| {
        let mut y = nan_vec(256);
        run(
            "emu_selftest_neighbour",
            1,
            256,
            &params!(x.as_ptr(), y.as_mut_ptr(), sync),
        )
        .unwrap();
        y
    };
    assert_eq!(run_sync(1), want);
    let broken = run_sync(0);
    assert!(broken[..255].iter().all(|v| v.is_nan()), "{broken:?}");
    assert_eq!(broken[255], want[255]);
}

/// The stricter shared memory: an access outside every `__shared__` variable (here: one past
/// the end of the array) is a fault naming the variable, as compute-sanitizer's memcheck
/// reports shared accesses outside the block's allocation.
#[test]
fn a_shared_access_outside_its_variable_is_a_fault() {
    let x: DevVec<f32> = (0..257).map(|i| i as f32).collect();
    let mut y = nan_vec(256);
    // sync = 1 and a block of 257 threads: thread 256 writes s[256], one past the array.
    let fault = run(
        "emu_selftest_neighbour",
        1,
        257,
        &params!(x.as_ptr(), y.as_mut_ptr(), 1i32),
    )
    .expect_err("s[256] is past the 256-float array");
    assert_eq!(fault.kind, FaultKind::Address);
    assert_eq!(fault.thread, [256, 0, 0]);
    assert!(
        fault.message.contains("Invalid __shared__")
            && fault
                .message
                .contains("0 bytes after the end of `s` (1024 bytes, selftest.cu:"),
        "{fault}"
    );
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

/// The typed wrappers refuse a buffer outside the device arena (here on the stack; its accesses would go
/// unchecked): a test cannot quietly fall back to host memory.
#[test]
#[should_panic(expected = "is not in a device-arena allocation")]
fn the_wrappers_refuse_host_buffers() {
    let x = [1.0f32; 4];
    let mut y = nan_vec(4);
    let (g, b) = cfg_1d(4);
    unsafe { kernels_emu::emu_relu_forward(g, b, x.as_ptr(), y.as_mut_ptr(), 4) };
}
