//! The stand-in driver, called as cudarc calls it (through its exported `cu*` functions), on
//! hand-written PTX modules of the emulator's self-test kernels: that a launch runs, and that
//! everything a real driver refuses or faults on is refused or faulted on here, with the
//! driver's own error codes. No GPU and no nvrtc needed; the project's real modules (cubins from
//! nvrtc) go through the same driver in the emulated GPU suite (`scripts/emulated-gpu.sh`).

use std::ffi::{c_void, CString};
use std::sync::{Mutex, MutexGuard};

use cuda_standin::config::{Config, Fail, FailPoint};
use cuda_standin::status::*;
use cuda_standin::*;

/// The driver is process-wide: one test at a time, each on a fresh device.
static SERIAL: Mutex<()> = Mutex::new(());

const PTX: &str = r#"
.version 8.0
.target sm_90
.address_size 64

.visible .entry emu_selftest_write_past_end(
    .param .u64 emu_selftest_write_past_end_param_0,
    .param .u32 emu_selftest_write_past_end_param_1
)
.maxntid 256, 1, 1
{
    ret;
}

.visible .entry emu_selftest_deadlock(
    .param .u64 emu_selftest_deadlock_param_0
)
{
    .shared .align 4 .b8 big[50000];
    ret;
}
"#;

fn config() -> Config {
    Config {
        memory_bytes: 64 << 20,
        fail: None,
        stats: false,
        quiet: true,
        launch_blocking: false,
        deferred_copies: true,
    }
}

struct Device {
    _serial: MutexGuard<'static, ()>,
    module: u64,
    stream: u64,
}

fn ok(code: CUresult, what: &str) {
    assert_eq!(code, CUDA_SUCCESS, "{what}: {}", name(code));
}

/// A fresh device with `config`, the context bound, the self-test module loaded and a
/// non-blocking stream.
fn device(config: Config) -> Device {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    driver::reset_for_tests();
    assert_eq!(driver::init_with(config), CUDA_SUCCESS);
    let (mut ctx, mut module, mut stream) = (0u64, 0u64, 0u64);
    let ptx = CString::new(PTX).unwrap();
    // SAFETY: out-parameters and a NUL-terminated image, as the API wants.
    unsafe {
        ok(cuDevicePrimaryCtxRetain(&mut ctx, 0), "retain");
        ok(cuCtxSetCurrent(ctx), "set current");
        ok(cuModuleLoadData(&mut module, ptx.as_ptr().cast()), "load");
        ok(cuStreamCreate(&mut stream, 1), "stream");
    }
    Device {
        _serial: serial,
        module,
        stream,
    }
}

impl Device {
    fn function(&self, name: &str) -> u64 {
        let mut f = 0u64;
        let n = CString::new(name).unwrap();
        // SAFETY: as above.
        ok(
            unsafe { cuModuleGetFunction(&mut f, self.module, n.as_ptr()) },
            name,
        );
        f
    }
    fn alloc(&self, bytes: usize) -> u64 {
        let mut p = 0u64;
        // SAFETY: as above.
        ok(
            unsafe { cuMemAllocAsync(&mut p, bytes, self.stream) },
            "alloc",
        );
        p
    }
    /// Copies `n` floats to the host and synchronises the stream: the copy lands only then.
    fn download(&self, src: u64, n: usize) -> Vec<f32> {
        let mut v = vec![0.0f32; n];
        // SAFETY: `v` holds n floats, and outlives the synchronisation.
        unsafe {
            ok(
                cuMemcpyDtoHAsync_v2(v.as_mut_ptr().cast(), src, n * 4, self.stream),
                "download",
            );
            ok(cuStreamSynchronize(self.stream), "synchronise the download");
        }
        v
    }
    /// Launches `write_past_end(y, n)`: writes y[0..=n] with 2 blocks of 64 threads.
    fn write_past_end(&self, stream: u64, y: u64, n: i32, block: u32) -> CUresult {
        let f = self.function("emu_selftest_write_past_end");
        let mut buf = [0u8; 12];
        buf[..8].copy_from_slice(&y.to_le_bytes());
        buf[8..].copy_from_slice(&n.to_le_bytes());
        launch_extra(f, [2, 1, 1], [block, 1, 1], stream, &buf)
    }
}

/// cuLaunchKernel with one packed parameter buffer, as the project launches.
fn launch_extra(f: u64, grid: [u32; 3], block: [u32; 3], stream: u64, params: &[u8]) -> CUresult {
    let mut size = params.len();
    let key = |k: usize| std::ptr::without_provenance_mut::<c_void>(k);
    let mut extra = [
        key(1),
        params.as_ptr() as *mut c_void,
        key(2),
        (&mut size as *mut usize).cast(),
        key(0),
    ];
    // SAFETY: a function handle and a described buffer, as the API wants.
    unsafe {
        cuLaunchKernel(
            f,
            grid[0],
            grid[1],
            grid[2],
            block[0],
            block[1],
            block[2],
            0,
            stream,
            std::ptr::null_mut(),
            extra.as_mut_ptr(),
        )
    }
}

#[test]
fn a_launch_runs_the_kernel_on_device_memory() {
    let d = device(config());
    let y = d.alloc(101 * 4);
    // Fresh device memory is NaN-filled (0xFF bytes), never a lucky zero.
    assert!(d.download(y, 101).iter().all(|v| v.is_nan()));
    ok(d.write_past_end(d.stream, y, 100, 64), "launch");
    assert_eq!(d.download(y, 101), vec![1.0; 101]);
    // SAFETY: a live allocation.
    ok(unsafe { cuStreamSynchronize(d.stream) }, "sync");
}

#[test]
fn parameter_lists_must_match_the_kernels_signature() {
    let d = device(config());
    let f = d.function("emu_selftest_write_past_end");
    let y = d.alloc(128 * 4);
    // 16 bytes for a (pointer, int) kernel, whose buffer is 12 bytes.
    let code = launch_extra(f, [1, 1, 1], [64, 1, 1], d.stream, &[0u8; 16]);
    assert_eq!(code, CUDA_ERROR_INVALID_VALUE);
    // kernelParams: as many pointers as the signature has.
    let (mut yv, mut n) = (y, 63i32);
    let mut args = [
        (&mut yv as *mut u64).cast::<c_void>(),
        (&mut n as *mut i32).cast(),
    ];
    // SAFETY: two valid argument pointers for a two-parameter kernel.
    let code = unsafe {
        cuLaunchKernel(
            f,
            1,
            1,
            1,
            64,
            1,
            1,
            0,
            d.stream,
            args.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    };
    ok(code, "kernelParams launch");
    assert_eq!(d.download(y, 64), vec![1.0; 64]);
    // Both forms at once, or neither, is an error.
    let code = unsafe {
        cuLaunchKernel(
            f,
            1,
            1,
            1,
            64,
            1,
            1,
            0,
            d.stream,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    assert_eq!(code, CUDA_ERROR_INVALID_VALUE);
}

#[test]
fn launch_shapes_beyond_the_hardware_or_the_kernels_bounds_are_refused() {
    let d = device(config());
    let y = d.alloc(4096 * 4);
    // __launch_bounds__(256) (.maxntid in the PTX): 512 threads are refused.
    assert_eq!(
        d.write_past_end(d.stream, y, 100, 512),
        CUDA_ERROR_INVALID_VALUE
    );
    let f = d.function("emu_selftest_write_past_end");
    let buf = [&y.to_le_bytes()[..], &10i32.to_le_bytes()[..]].concat();
    for (grid, block) in [
        ([1, 1, 1], [1025, 1, 1]),
        ([1, 1, 1], [1, 1, 65]),
        ([1, 65536, 1], [32, 1, 1]),
        ([0, 1, 1], [32, 1, 1]),
    ] {
        assert_eq!(
            launch_extra(f, grid, block, d.stream, &buf),
            CUDA_ERROR_INVALID_VALUE,
            "grid {grid:?} block {block:?}"
        );
    }
    // 50000 bytes of static shared memory: over the 48 KiB a block gets without opting in.
    let big = d.function("emu_selftest_deadlock");
    assert_eq!(
        launch_extra(big, [1, 1, 1], [32, 1, 1], d.stream, &y.to_le_bytes()),
        CUDA_ERROR_INVALID_VALUE
    );
}

#[test]
fn a_kernel_fault_is_sticky_and_names_the_kernel_thread_and_address() {
    let d = device(config());
    let y = d.alloc(100 * 4);
    // The launch itself succeeds, as on a GPU (the fault is asynchronous) ...
    ok(
        d.write_past_end(d.stream, y, 100, 64),
        "the faulting launch",
    );
    // ... and every later call returns the fault.
    // SAFETY: plain calls.
    unsafe {
        assert_eq!(cuStreamSynchronize(d.stream), CUDA_ERROR_ILLEGAL_ADDRESS);
        let mut p = 0u64;
        assert_eq!(
            cuMemAllocAsync(&mut p, 64, d.stream),
            CUDA_ERROR_ILLEGAL_ADDRESS
        );
        assert_eq!(cuMemFreeAsync(y, d.stream), CUDA_ERROR_ILLEGAL_ADDRESS);
        assert_eq!(cuCtxSynchronize(), CUDA_ERROR_ILLEGAL_ADDRESS);
    }
    let (code, report) = driver::fault_for_tests().expect("a recorded fault");
    assert_eq!(code, CUDA_ERROR_ILLEGAL_ADDRESS);
    for want in [
        "emu_selftest_write_past_end",
        "thread (36,0,0) in block (1,0,0)",
        "Invalid __global__ write of size 4 bytes",
        "0 bytes after the nearest allocation",
    ] {
        assert!(report.contains(want), "{want:?} not in {report}");
    }
}

#[test]
fn launch_blocking_reports_the_fault_at_the_launch() {
    let d = device(Config {
        launch_blocking: true,
        ..config()
    });
    let y = d.alloc(100 * 4);
    assert_eq!(
        d.write_past_end(d.stream, y, 100, 64),
        CUDA_ERROR_ILLEGAL_ADDRESS
    );
}

#[test]
fn memory_is_bounded_checked_and_freed_once() {
    let d = device(config());
    // SAFETY: out-parameters and device pointers as the API wants.
    unsafe {
        let (mut free, mut total) = (0usize, 0usize);
        ok(cuMemGetInfo_v2(&mut free, &mut total), "info");
        assert_eq!((free, total), (64 << 20, 64 << 20));
        let mut p = 0u64;
        assert_eq!(
            cuMemAllocAsync(&mut p, 65 << 20, d.stream),
            CUDA_ERROR_OUT_OF_MEMORY
        );
        let a = d.alloc(40 << 20);
        assert_eq!(
            cuMemAllocAsync(&mut p, 30 << 20, d.stream),
            CUDA_ERROR_OUT_OF_MEMORY
        );
        ok(cuMemGetInfo_v2(&mut free, &mut total), "info");
        assert_eq!(free, 24 << 20);
        // A copy past the end of an allocation.
        let host = vec![0u8; 4096];
        assert_eq!(
            cuMemcpyHtoDAsync_v2(a + (40 << 20) - 1024, host.as_ptr().cast(), 4096, d.stream),
            CUDA_ERROR_INVALID_VALUE
        );
        ok(cuMemFreeAsync(a, d.stream), "free");
        assert_eq!(
            cuMemFreeAsync(a, d.stream),
            CUDA_ERROR_INVALID_VALUE,
            "double free"
        );
        ok(
            cuMemAllocAsync(&mut p, 60 << 20, d.stream),
            "the memory is back",
        );
    }
    // A freed buffer's address is not reused (while there is room), so a kernel that still
    // writes to it faults instead of corrupting a new buffer.
    let y = d.alloc(256 * 4);
    // SAFETY: as above.
    ok(unsafe { cuMemFreeAsync(y, d.stream) }, "free");
    let z = d.alloc(256 * 4);
    assert_ne!(y, z);
    ok(
        d.write_past_end(d.stream, y, 10, 64),
        "launch on freed memory",
    );
    let (_, report) = driver::fault_for_tests().expect("use after free faults");
    assert!(report.contains("has been freed"), "{report}");
}

#[test]
fn calls_that_capture_forbids_invalidate_the_capture() {
    let d = device(config());
    let y = d.alloc(256 * 4);
    let host = vec![1.0f32; 256];
    // SAFETY: handles and pointers as the API wants.
    unsafe {
        // Synchronising the capturing stream.
        ok(cuStreamBeginCapture_v2(d.stream, 1), "begin");
        assert_eq!(
            cuStreamSynchronize(d.stream),
            CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
        );
        let mut status = 0u32;
        ok(cuStreamIsCapturing(d.stream, &mut status), "status");
        assert_eq!(status, 2, "invalidated");
        assert_eq!(
            d.write_past_end(d.stream, y, 10, 64),
            CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        );
        let mut graph = 1u64;
        assert_eq!(
            cuStreamEndCapture(d.stream, &mut graph),
            CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        );
        assert_eq!(graph, 0);

        // A copy from pageable host memory; from page-locked memory it is fine.
        ok(cuStreamBeginCapture_v2(d.stream, 1), "begin");
        let mut pinned: *mut c_void = std::ptr::null_mut();
        ok(cuMemHostAlloc(&mut pinned, 1024, 0), "pinned");
        ok(
            cuMemcpyHtoDAsync_v2(y, pinned, 1024, d.stream),
            "pinned copy in capture",
        );
        assert_eq!(
            cuMemcpyHtoDAsync_v2(y, host.as_ptr().cast(), 1024, d.stream),
            CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
        );
        assert_eq!(
            cuStreamEndCapture(d.stream, &mut graph),
            CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        );
        ok(cuMemFreeHost(pinned), "free pinned");

        // Freeing memory the graph did not allocate.
        ok(cuStreamBeginCapture_v2(d.stream, 1), "begin");
        assert_eq!(cuMemFreeAsync(y, d.stream), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(
            cuStreamEndCapture(d.stream, &mut graph),
            CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        );

        // A synchronous allocation or context synchronisation from the capturing thread.
        ok(cuStreamBeginCapture_v2(d.stream, 1), "begin");
        let mut p = 0u64;
        assert_eq!(
            cuMemAlloc_v2(&mut p, 64),
            CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
        );
        assert_eq!(
            cuStreamEndCapture(d.stream, &mut graph),
            CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        );

        // The legacy stream while a blocking stream captures.
        let mut blocking = 0u64;
        ok(cuStreamCreate(&mut blocking, 0), "blocking stream");
        ok(cuStreamBeginCapture_v2(blocking, 1), "begin");
        assert_eq!(
            cuMemcpyHtoDAsync_v2(y, host.as_ptr().cast(), 16, 0),
            CUDA_ERROR_STREAM_CAPTURE_IMPLICIT
        );
        assert_eq!(
            cuStreamEndCapture(blocking, &mut graph),
            CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        );

        // A relaxed thread may make such calls during its own capture.
        ok(cuStreamBeginCapture_v2(d.stream, 1), "begin");
        let mut mode = 2u32; // CU_STREAM_CAPTURE_MODE_RELAXED
        ok(cuThreadExchangeStreamCaptureMode(&mut mode), "relax");
        ok(cuMemAlloc_v2(&mut p, 64), "allowed when relaxed");
        ok(cuThreadExchangeStreamCaptureMode(&mut mode), "restore");
        ok(
            cuStreamEndCapture(d.stream, &mut graph),
            "the capture is intact",
        );
        ok(cuGraphDestroy(graph), "destroy");
        ok(cuMemFree_v2(p), "free");
        assert_eq!(
            cuMemAlloc_v2(&mut p, 0),
            CUDA_ERROR_INVALID_VALUE,
            "zero bytes"
        );

        // Ending a thread-local capture from another thread.
        ok(cuStreamBeginCapture_v2(d.stream, 1), "begin");
        let s = d.stream;
        let code = std::thread::spawn(move || {
            let mut g = 0u64;
            cuCtxSetCurrent(driver::CONTEXT);
            cuStreamEndCapture(s, &mut g)
        })
        .join()
        .unwrap();
        assert_eq!(code, CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD);
        ok(
            cuStreamEndCapture(d.stream, &mut graph),
            "end on the right thread",
        );
        ok(cuGraphDestroy(graph), "destroy");
        // Nothing above ran: y was never written.
    }
    assert!(d.download(y, 256).iter().all(|v| v.is_nan()));
}

#[test]
fn a_graph_replays_exactly_what_was_captured_including_its_memory() {
    let d = device(config());
    let out = d.alloc(64 * 4);
    let mut scratch = 0u64;
    let mut graph = 0u64;
    // SAFETY: handles and pointers as the API wants.
    unsafe {
        ok(cuStreamBeginCapture_v2(d.stream, 1), "begin");
        ok(
            cuMemAllocAsync(&mut scratch, 64 * 4, d.stream),
            "graph alloc",
        );
        ok(
            d.write_past_end(d.stream, scratch, 63, 64),
            "captured launch",
        );
        ok(
            cuMemcpyDtoDAsync_v2(out, scratch, 64 * 4, d.stream),
            "captured copy",
        );
        ok(cuMemFreeAsync(scratch, d.stream), "graph free");
        ok(cuStreamEndCapture(d.stream, &mut graph), "end");
    }
    // Nothing ran during the capture.
    assert!(d.download(out, 64).iter().all(|v| v.is_nan()));
    let mut exec = 0u64;
    // SAFETY: as above.
    unsafe {
        ok(
            cuGraphInstantiateWithFlags(&mut exec, graph, 0),
            "instantiate",
        );
        let mut second = 0u64;
        assert_eq!(
            cuGraphInstantiateWithFlags(&mut second, graph, 0),
            CUDA_ERROR_INVALID_VALUE,
            "a graph with memory nodes has one executable at a time"
        );
        for _ in 0..2 {
            ok(cuGraphLaunch(exec, d.stream), "replay");
            assert_eq!(d.download(out, 64), vec![1.0; 64]);
            ok(cuMemsetD32Async(out, 0, 64, d.stream), "reset");
        }
    }
    // The graph's allocation is live only inside the replay: a kernel using it afterwards faults.
    ok(
        d.write_past_end(d.stream, scratch, 10, 64),
        "launch on graph memory",
    );
    let (code, report) = driver::fault_for_tests().expect("graph memory outside the graph");
    assert_eq!(code, CUDA_ERROR_ILLEGAL_ADDRESS);
    assert!(report.contains("emu_selftest_write_past_end"), "{report}");
}

#[test]
fn a_graph_whose_allocation_outlives_it_is_not_relaunched_before_the_free() {
    let d = device(config());
    let (mut kept, mut graph, mut exec) = (0u64, 0u64, 0u64);
    // SAFETY: handles and pointers as the API wants.
    unsafe {
        ok(cuStreamBeginCapture_v2(d.stream, 1), "begin");
        ok(cuMemAllocAsync(&mut kept, 1024, d.stream), "graph alloc");
        ok(cuStreamEndCapture(d.stream, &mut graph), "end");
        ok(
            cuGraphInstantiateWithFlags(&mut exec, graph, 0),
            "instantiate",
        );
        ok(cuGraphLaunch(exec, d.stream), "first launch");
        assert_eq!(
            cuGraphLaunch(exec, d.stream),
            CUDA_ERROR_INVALID_VALUE,
            "not freed yet"
        );
        ok(cuMemFreeAsync(kept, d.stream), "free outside the graph");
        ok(cuGraphLaunch(exec, d.stream), "relaunch after the free");
    }
}

#[test]
fn injected_faults_hit_the_nth_launch_or_allocation() {
    let d = device(Config {
        fail: Some(Fail {
            point: FailPoint::Launch,
            nth: 2,
        }),
        ..config()
    });
    let y = d.alloc(256 * 4);
    ok(d.write_past_end(d.stream, y, 10, 64), "first launch");
    ok(
        d.write_past_end(d.stream, y, 10, 64),
        "second launch (faults asynchronously)",
    );
    // SAFETY: a plain call.
    assert_eq!(
        unsafe { cuStreamSynchronize(d.stream) },
        CUDA_ERROR_ILLEGAL_ADDRESS
    );
    let (_, report) = driver::fault_for_tests().unwrap();
    assert!(
        report.contains("CUDA_STANDIN_FAIL=launch:2")
            && report.contains("emu_selftest_write_past_end"),
        "{report}"
    );
    drop(d);

    let d = device(Config {
        fail: Some(Fail {
            point: FailPoint::Alloc,
            nth: 2,
        }),
        ..config()
    });
    d.alloc(64);
    let mut p = 0u64;
    // SAFETY: as above.
    assert_eq!(
        unsafe { cuMemAllocAsync(&mut p, 64, d.stream) },
        CUDA_ERROR_OUT_OF_MEMORY
    );
    // Not sticky: the next allocation works.
    d.alloc(64);
}

#[test]
fn it_is_an_h100_and_says_it_is_not() {
    let _d = device(config());
    let (mut major, mut minor, mut sms, mut version) = (0, 0, 0, 0);
    let mut name = [0u8; 128];
    // SAFETY: out-parameters as the API wants.
    unsafe {
        ok(cuDeviceGetAttribute(&mut major, 75, 0), "major");
        ok(cuDeviceGetAttribute(&mut minor, 76, 0), "minor");
        ok(cuDeviceGetAttribute(&mut sms, 16, 0), "SMs");
        ok(cuDriverGetVersion(&mut version), "version");
        ok(cuDeviceGetName(name.as_mut_ptr().cast(), 128, 0), "name");
        let mut dummy = 0;
        assert_eq!(
            cuDeviceGetAttribute(&mut dummy, 0, 0),
            CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuDeviceGetAttribute(&mut dummy, 16, 1),
            CUDA_ERROR_INVALID_DEVICE
        );
    }
    assert_eq!((major, minor, sms, version), (9, 0, 132, 13000));
    let name = String::from_utf8_lossy(&name);
    assert!(
        name.contains("H100") && name.contains("not a GPU"),
        "{name}"
    );
}

#[test]
fn calls_need_a_current_context() {
    let d = device(config());
    // SAFETY: plain calls.
    unsafe {
        ok(cuCtxSetCurrent(0), "unbind");
        let mut p = 0u64;
        assert_eq!(
            cuMemAllocAsync(&mut p, 64, d.stream),
            CUDA_ERROR_INVALID_CONTEXT
        );
    }
}

#[test]
fn graph_memory_stays_with_the_graph_after_a_launch_until_trimmed() {
    let d = device(config());
    let (mut a, mut b, mut graph, mut exec) = (0u64, 0u64, 0u64, 0u64);
    let info = || {
        let (mut free, mut total, mut used) = (0usize, 0usize, 0u64);
        // SAFETY: out-parameters.
        unsafe {
            ok(cuMemGetInfo_v2(&mut free, &mut total), "info");
            ok(
                cuDeviceGetGraphMemAttribute(0, 0, (&mut used as *mut u64).cast()),
                "graph memory in use",
            );
        }
        (free, used)
    };
    // SAFETY: handles and pointers as the API wants.
    unsafe {
        ok(cuStreamBeginCapture_v2(d.stream, 1), "begin");
        ok(cuMemAllocAsync(&mut a, 8 << 20, d.stream), "a");
        ok(cuMemAllocAsync(&mut b, 4 << 20, d.stream), "b");
        ok(cuMemFreeAsync(a, d.stream), "free a");
        ok(cuMemFreeAsync(b, d.stream), "free b");
        ok(cuStreamEndCapture(d.stream, &mut graph), "end");
        ok(
            cuGraphInstantiateWithFlags(&mut exec, graph, 0),
            "instantiate",
        );
        assert_eq!(info(), (64 << 20, 0), "nothing before the first launch");
        ok(cuGraphLaunch(exec, d.stream), "launch");
        // The peak of the replay (a and b at once) stays associated with the graph.
        assert_eq!(info(), ((64 - 12) << 20, 12 << 20));
        ok(cuGraphLaunch(exec, d.stream), "relaunch reuses it");
        assert_eq!(info(), ((64 - 12) << 20, 12 << 20));
        // Eager allocations compete with it ...
        let mut c = 0u64;
        assert_eq!(
            cuMemAllocAsync(&mut c, 60 << 20, d.stream),
            CUDA_ERROR_OUT_OF_MEMORY
        );
        // ... until it is trimmed.
        ok(cuDeviceGraphMemTrim(0), "trim");
        assert_eq!(info(), (64 << 20, 0));
        ok(
            cuMemAllocAsync(&mut c, 60 << 20, d.stream),
            "fits after the trim",
        );
        // Now the graph's own working set no longer fits: its launch is out of memory.
        assert_eq!(cuGraphLaunch(exec, d.stream), CUDA_ERROR_OUT_OF_MEMORY);
    }
}

#[test]
fn the_pool_keeps_freed_memory_until_a_synchronisation_trims_it_to_its_threshold() {
    let d = device(config());
    let info = || {
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: out-parameters.
        ok(unsafe { cuMemGetInfo_v2(&mut free, &mut total) }, "info");
        free
    };
    let mut pool = 0u64;
    // SAFETY: handles and pointers as the API wants.
    unsafe {
        ok(cuDeviceGetMemPool(&mut pool, 0), "pool");
        let mut keep_all = u64::MAX;
        ok(
            cuMemPoolSetAttribute(pool, 4, (&mut keep_all as *mut u64).cast()),
            "threshold",
        );
        let a = d.alloc(40 << 20);
        ok(cuMemFreeAsync(a, d.stream), "free");
        // Kept by the pool: still counted as used ...
        assert_eq!(info(), 24 << 20);
        let mut reserved = 0u64;
        ok(
            cuMemPoolGetAttribute(pool, 5, (&mut reserved as *mut u64).cast()),
            "reserved",
        );
        assert_eq!(reserved, 40 << 20);
        // ... reused by the pool's next allocations ...
        let b = d.alloc(30 << 20);
        assert_eq!(info(), 24 << 20);
        ok(cuMemFreeAsync(b, d.stream), "free");
        // ... and competing with everything else: a synchronous allocation cannot have it.
        let mut c = 0u64;
        assert_eq!(cuMemAlloc_v2(&mut c, 30 << 20), CUDA_ERROR_OUT_OF_MEMORY);
        ok(
            cuStreamSynchronize(d.stream),
            "sync keeps it (threshold: all)",
        );
        assert_eq!(info(), 24 << 20);
        ok(cuMemPoolTrimTo(pool, 0), "trim");
        assert_eq!(info(), 64 << 20);
        ok(cuMemAlloc_v2(&mut c, 30 << 20), "fits now");
        // With the default threshold (0), a synchronisation hands everything back.
        let mut zero = 0u64;
        ok(
            cuMemPoolSetAttribute(pool, 4, (&mut zero as *mut u64).cast()),
            "threshold",
        );
        let e = d.alloc(20 << 20);
        ok(cuMemFreeAsync(e, d.stream), "free");
        assert_eq!(info(), (64 - 30 - 20) << 20);
        ok(cuStreamSynchronize(d.stream), "sync");
        assert_eq!(info(), (64 - 30) << 20);
    }
}

#[test]
fn pointer_parameters_must_be_device_memory_aligned_to_their_elements() {
    let d = device(config());
    let host = vec![0.0f32; 256];
    // A host pointer where the kernel wants device memory: a fault, as on a GPU.
    ok(
        d.write_past_end(d.stream, host.as_ptr() as u64, 10, 64),
        "launch with a host pointer",
    );
    let (code, report) = driver::fault_for_tests().expect("a host pointer faults");
    assert_eq!(code, CUDA_ERROR_ILLEGAL_ADDRESS);
    assert!(report.contains("not a device address"), "{report}");
    drop(d);
    // A float pointer 2 bytes into an allocation.
    let d = device(config());
    let y = d.alloc(1024);
    ok(
        d.write_past_end(d.stream, y + 2, 10, 64),
        "launch with a misaligned pointer",
    );
    let (code, report) = driver::fault_for_tests().expect("a misaligned pointer faults");
    assert_eq!(code, CUDA_ERROR_MISALIGNED_ADDRESS);
    assert!(
        report.contains("not aligned to its 4-byte elements"),
        "{report}"
    );
}

#[test]
fn graph_launch_and_upload_follow_the_drivers_memory_rules() {
    let d = device(config());
    let (mut kept, mut graph, mut exec) = (0u64, 0u64, 0u64);
    // SAFETY: handles and pointers as the API wants.
    unsafe {
        // AUTO_FREE_ON_LAUNCH: an allocation the graph keeps is freed by the next launch.
        ok(cuStreamBeginCapture_v2(d.stream, 1), "begin");
        ok(cuMemAllocAsync(&mut kept, 1 << 20, d.stream), "graph alloc");
        ok(cuStreamEndCapture(d.stream, &mut graph), "end");
        ok(
            cuGraphInstantiateWithFlags(&mut exec, graph, 1),
            "instantiate, auto free",
        );
        ok(cuGraphLaunch(exec, d.stream), "first");
        ok(
            cuGraphLaunch(exec, d.stream),
            "second: the first's allocation is freed",
        );
        // Destroying the graph and its executable leaves the kept allocation to the user, who
        // frees it: the device is whole again.
        ok(cuGraphExecDestroy(exec), "destroy exec");
        ok(cuGraphDestroy(graph), "destroy graph");
        ok(cuMemFreeAsync(kept, d.stream), "free the kept allocation");
        ok(
            cuStreamSynchronize(d.stream),
            "sync: the pool hands back what it kept",
        );
        let (mut free, mut total) = (0usize, 0usize);
        ok(cuMemGetInfo_v2(&mut free, &mut total), "info");
        assert_eq!(free, total);

        // A graph bigger than the device fails at its upload, before any launch.
        let mut big = 0u64;
        ok(cuStreamBeginCapture_v2(d.stream, 1), "begin");
        ok(
            cuMemAllocAsync(&mut big, 100 << 20, d.stream),
            "a graph alloc larger than the device",
        );
        ok(cuMemFreeAsync(big, d.stream), "graph free");
        ok(cuStreamEndCapture(d.stream, &mut graph), "end");
        ok(
            cuGraphInstantiateWithFlags(&mut exec, graph, 0),
            "instantiate",
        );
        assert_eq!(cuGraphUpload(exec, d.stream), CUDA_ERROR_OUT_OF_MEMORY);
    }
}

/// `n` floats of `value` on `stream` (a memset of its bits).
fn fill(buf: u64, n: usize, value: f32, stream: u64) {
    // SAFETY: a live allocation of at least n floats.
    ok(
        unsafe { cuMemsetD32Async(buf, value.to_bits(), n, stream) },
        "fill",
    );
}

/// Queues a device-to-host copy of `host.len()` floats; nothing synchronises.
///
/// # Safety
/// `host` must stay alive until a synchronisation covers the copy.
unsafe fn copy_back(host: &mut [f32], src: u64, stream: u64) {
    ok(
        unsafe { cuMemcpyDtoHAsync_v2(host.as_mut_ptr().cast(), src, host.len() * 4, stream) },
        "device-to-host copy",
    );
}

#[test]
fn a_device_to_host_copy_lands_only_at_a_synchronisation_that_covers_it() {
    let d = device(config());
    let buf = d.alloc(16 * 4);
    fill(buf, 16, 1.0, d.stream);
    let (mut other, mut blocking) = (0u64, 0u64);
    // SAFETY: out-parameters.
    unsafe {
        ok(
            cuStreamCreate(&mut other, 1),
            "a second non-blocking stream",
        );
        ok(cuStreamCreate(&mut blocking, 0), "a blocking stream");
    }
    let mut host = vec![0.0f32; 16];
    // SAFETY: `host` outlives every synchronisation below.
    unsafe { copy_back(&mut host, buf, d.stream) };
    // The planted read before synchronising: not the result (nor what was there), but NaN.
    assert!(host.iter().all(|v| v.is_nan()), "{host:?}");
    // Work queued after the copy does not change what it delivers.
    fill(buf, 16, 2.0, d.stream);
    // SAFETY: stream handles.
    unsafe {
        ok(cuStreamSynchronize(other), "sync another stream");
        ok(cuStreamSynchronize(0), "sync the legacy stream");
    }
    assert!(
        host.iter().all(|v| v.is_nan()),
        "covered by neither another stream nor the legacy one (the stream is non-blocking)"
    );
    // SAFETY: the copy's own stream.
    ok(unsafe { cuStreamSynchronize(d.stream) }, "sync");
    assert_eq!(host, vec![1.0; 16]);

    // An event covers the copies before it on its stream, not those after.
    let (mut before, mut after) = (vec![0.0f32; 16], vec![0.0f32; 16]);
    let mut event = 0u64;
    // SAFETY: buffers outlive the synchronisations; handles as the API wants.
    unsafe {
        ok(cuEventCreate(&mut event, 2), "event");
        copy_back(&mut before, buf, d.stream);
        ok(cuEventRecord(event, d.stream), "record");
        fill(buf, 16, 3.0, d.stream);
        copy_back(&mut after, buf, d.stream);
        ok(cuEventSynchronize(event), "event sync");
    }
    assert_eq!(before, vec![2.0; 16]);
    assert!(after.iter().all(|v| v.is_nan()), "{after:?}");
    // SAFETY: no arguments.
    ok(unsafe { cuCtxSynchronize() }, "context sync");
    assert_eq!(after, vec![3.0; 16]);

    // The legacy stream and a blocking stream wait for each other: syncing one covers the other.
    let mut on_blocking = vec![0.0f32; 16];
    // SAFETY: as above.
    unsafe {
        copy_back(&mut on_blocking, buf, blocking);
        assert!(on_blocking.iter().all(|v| v.is_nan()));
        ok(cuStreamSynchronize(0), "sync the legacy stream");
    }
    assert_eq!(on_blocking, vec![3.0; 16]);

    // A synchronous copy returns with its data in place.
    let mut sync_copy = vec![0.0f32; 16];
    // SAFETY: `sync_copy` holds 16 floats.
    ok(
        unsafe { cuMemcpyDtoH_v2(sync_copy.as_mut_ptr().cast(), buf, 64) },
        "synchronous copy",
    );
    assert_eq!(sync_copy, vec![3.0; 16]);
}

#[test]
fn a_copy_that_a_fault_overtakes_never_lands_and_eager_copies_land_at_once() {
    let d = device(config());
    let buf = d.alloc(64 * 4);
    fill(buf, 64, 1.0, d.stream);
    let mut host = vec![0.0f32; 64];
    // SAFETY: `host` outlives the synchronisation.
    unsafe { copy_back(&mut host, buf, d.stream) };
    // A kernel faults before the host synchronises: the synchronisation reports it, and the
    // destination keeps what it held (the context is lost, the copy is not delivered).
    ok(d.write_past_end(d.stream, buf, 64, 64), "faulting launch");
    // SAFETY: a stream handle.
    assert_eq!(
        unsafe { cuStreamSynchronize(d.stream) },
        CUDA_ERROR_ILLEGAL_ADDRESS
    );
    assert!(host.iter().all(|v| v.is_nan()));
    drop(d);

    // CUDA_STANDIN_EAGER_COPIES=1: the copy lands when queued.
    let d = device(Config {
        deferred_copies: false,
        ..config()
    });
    let buf = d.alloc(16 * 4);
    fill(buf, 16, 5.0, d.stream);
    let mut host = vec![0.0f32; 16];
    // SAFETY: `host` holds 16 floats.
    unsafe { copy_back(&mut host, buf, d.stream) };
    assert_eq!(host, vec![5.0; 16]);
}

#[test]
fn a_copy_whose_destination_the_host_used_before_synchronising_is_refused_not_delivered() {
    let d = device(config());
    let buf = d.alloc(16 * 4);
    fill(buf, 16, 1.0, d.stream);
    // Written before the synchronisation: the host's value stays, the synchronisation fails.
    let mut host = vec![0.0f32; 16];
    // SAFETY: `host` outlives the synchronisation.
    unsafe { copy_back(&mut host, buf, d.stream) };
    host[3] = 42.0;
    // SAFETY: a stream handle.
    assert_eq!(
        unsafe { cuStreamSynchronize(d.stream) },
        CUDA_ERROR_ILLEGAL_STATE
    );
    assert_eq!(host[3], 42.0);
    assert!(host[2].is_nan(), "nothing of the copy was delivered");
    // Freed before the synchronisation (the allocator's own bookkeeping lands in the freed
    // block): refused, and nothing is written into the heap.
    let mut gone = vec![0.0f32; 16];
    // SAFETY: deliberately not kept alive: the copy must not land in it.
    unsafe { copy_back(&mut gone, buf, d.stream) };
    drop(gone);
    // SAFETY: a stream handle.
    assert_eq!(
        unsafe { cuStreamSynchronize(d.stream) },
        CUDA_ERROR_ILLEGAL_STATE
    );
    // Not sticky: the stream works on.
    assert_eq!(d.download(buf, 16), vec![1.0; 16]);
}
