//! The driver's state, behind one lock, and the rules every entry point shares: initialisation,
//! a current context, the sticky fault, handle lookup, fault injection, counters.
//!
//! Execution model: work queued on a stream runs when it is queued (the stand-in has one
//! device, streams are in order, so running eagerly preserves every ordering CUDA promises),
//! except on a capturing stream, where it is recorded as a graph node instead. What the host can
//! see of that is asynchronous, as on a GPU: a device-to-host copy lands in host memory only at a
//! synchronisation that covers it (`inflight.rs`, `sync.rs`), and a kernel fault does not fail
//! its launch (the fault is asynchronous) but every call from then on.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::Instant;

use crate::config::{human, Config, FailPoint};
use crate::inflight::InFlight;
use crate::memory::Memory;
use crate::module::{KernelMeta, Module};
use crate::ops::Op;
use crate::status::*;

/// `CUstreamCaptureMode`.
pub const CAPTURE_GLOBAL: u32 = 0;
pub const CAPTURE_THREAD_LOCAL: u32 = 1;
pub const CAPTURE_RELAXED: u32 = 2;

/// `CU_STREAM_NON_BLOCKING`.
pub const STREAM_NON_BLOCKING: u32 = 1;

/// The one context (the device's primary context).
pub const CONTEXT: u64 = 0xc0_0000;
/// The device's one memory pool.
pub const POOL: u64 = 0x900_0000;

thread_local! {
    /// Whether this thread has bound the context (`cuCtxSetCurrent`).
    pub static CURRENT: Cell<bool> = const { Cell::new(false) };
    /// This thread's capture interaction mode (`cuThreadExchangeStreamCaptureMode`).
    pub static THREAD_MODE: Cell<u32> = const { Cell::new(CAPTURE_GLOBAL) };
}

/// A stream capture in progress.
pub struct Capture {
    pub id: u64,
    pub mode: u32,
    pub thread: ThreadId,
    pub ops: Vec<Op>,
    /// Graph allocations made in this capture (their addresses are reserved, not live).
    pub allocs: Vec<u64>,
    /// Set once an illegal call invalidated the capture.
    pub invalidated: Option<CUresult>,
}

pub struct Stream {
    pub flags: u32,
    pub capture: Option<Capture>,
}

pub struct Event {
    pub timing: bool,
    /// When it was last recorded on a running stream.
    pub at: Option<Instant>,
    /// Where it was last recorded on a running stream: the stream, and the place of the next
    /// deferred copy then (it covers the copies before that place).
    pub covers: Option<(Option<u64>, u64)>,
    /// The capture it was last recorded in, if that capture is still going.
    pub captured_in: Option<u64>,
}

/// A captured graph: its operations in capture order (a capture of one stream is a chain).
pub struct Graph {
    pub ops: Arc<Vec<Op>>,
    /// Its allocations (reserved addresses; live between their alloc and free nodes).
    pub allocs: Vec<u64>,
    pub execs: u32,
}

pub struct Exec {
    pub graph: u64,
    pub ops: Arc<Vec<Op>>,
    pub has_allocs: bool,
    /// `CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH`.
    pub auto_free: bool,
}

/// A loaded function: its kernel and its settable attributes.
pub struct Function {
    pub kernel: Arc<KernelMeta>,
    pub module: u64,
    pub max_dynamic_shared: u32,
}

#[derive(Default, Debug, Clone)]
pub struct Counters {
    pub launches: u64,
    pub replayed: u64,
    pub allocs: u64,
    pub copies: u64,
    /// Per kernel: launches and seconds spent emulating them (`CUDA_STANDIN_STATS`).
    pub per_kernel: HashMap<String, (u64, f64)>,
}

pub struct Driver {
    pub config: Config,
    pub mem: Memory,
    pub primary_retains: u32,
    pub streams: HashMap<u64, Stream>,
    pub events: HashMap<u64, Event>,
    pub modules: HashMap<u64, Module>,
    pub functions: HashMap<u64, Function>,
    pub graphs: HashMap<u64, Graph>,
    pub execs: HashMap<u64, Exec>,
    pub pool_release_threshold: u64,
    pub counters: Counters,
    /// Device-to-host copies queued but not landed in host memory yet.
    pub in_flight: InFlight,
    /// The fault that made the context unusable, and its report.
    pub sticky: Option<(CUresult, String)>,
    next_handle: u64,
}

static DRIVER: Mutex<Option<Driver>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<Driver>> {
    DRIVER.lock().unwrap_or_else(|p| p.into_inner())
}

/// `cuInit`: reads the configuration and sets up the device once.
pub fn init() -> CUresult {
    if lock().is_some() {
        return CUDA_SUCCESS;
    }
    match Config::from_env() {
        Ok(c) => init_with(c),
        Err(e) => {
            eprintln!("cuda-standin: {e}");
            CUDA_ERROR_INVALID_VALUE
        }
    }
}

/// Tests of the stand-in itself: forgets the device (as if the process had restarted) and
/// unbinds the calling thread. A real driver has nothing like it.
#[doc(hidden)]
pub fn reset_for_tests() {
    *lock() = None;
    CURRENT.with(|c| c.set(false));
    THREAD_MODE.with(|m| m.set(CAPTURE_GLOBAL));
}

/// Tests of the stand-in itself: the sticky fault's code and report, if a kernel faulted.
#[doc(hidden)]
pub fn fault_for_tests() -> Option<(CUresult, String)> {
    lock().as_ref().and_then(|d| d.sticky.clone())
}

/// Sets the device up with `config` (once; `cuInit` with the environment's settings).
pub fn init_with(config: Config) -> CUresult {
    let mut guard = lock();
    if guard.is_some() {
        return CUDA_SUCCESS;
    }
    let mem = match Memory::new(config.memory_bytes) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("cuda-standin: {e}");
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
    };
    if !config.quiet {
        eprintln!(
            "cuda-standin: stand-in CUDA driver: an H100 (sm_90, 132 SMs) with {} of memory; \
             kernels run on the CPU under kernels/emu, not on a GPU",
            human(config.memory_bytes)
        );
    }
    if config.stats {
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(print_stats) };
    }
    *guard = Some(Driver {
        config,
        mem,
        primary_retains: 0,
        streams: HashMap::new(),
        events: HashMap::new(),
        modules: HashMap::new(),
        functions: HashMap::new(),
        graphs: HashMap::new(),
        execs: HashMap::new(),
        pool_release_threshold: 0,
        counters: Counters::default(),
        in_flight: InFlight::default(),
        sticky: None,
        next_handle: 1,
    });
    CUDA_SUCCESS
}

extern "C" fn print_stats() {
    if let Some(d) = lock().as_ref() {
        let c = &d.counters;
        let mut kernels: Vec<_> = c.per_kernel.iter().collect();
        kernels.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        for (name, (n, secs)) in kernels.iter().take(12) {
            eprintln!("cuda-standin:   {secs:8.3} s  {n:6} x {name}");
        }
        eprintln!(
            "cuda-standin: {} kernel launches ({} of them in graph replays), {} device \
             allocations, {} copies",
            c.launches + c.replayed,
            c.replayed,
            c.allocs,
            c.copies
        );
        let f = &d.in_flight;
        eprintln!(
            "cuda-standin: {} device-to-host copies landed at a synchronisation, {} never did \
             (no synchronisation covered them)",
            f.landed,
            f.pending()
        );
    }
}

/// Runs `f` on the driver: `CUDA_ERROR_NOT_INITIALIZED` before `cuInit`, the sticky error after
/// a fault, and `f`'s own result otherwise.
pub fn with<R>(f: impl FnOnce(&mut Driver) -> Result<R, CUresult>) -> Result<R, CUresult> {
    let mut guard = lock();
    let d = guard.as_mut().ok_or(CUDA_ERROR_NOT_INITIALIZED)?;
    if let Some((code, _)) = &d.sticky {
        return Err(*code);
    }
    f(d)
}

/// As [`with`], but also after a fault (queries that still answer on a broken context).
pub fn with_any<R>(f: impl FnOnce(&mut Driver) -> Result<R, CUresult>) -> Result<R, CUresult> {
    let mut guard = lock();
    let d = guard.as_mut().ok_or(CUDA_ERROR_NOT_INITIALIZED)?;
    f(d)
}

/// As [`with`], and the calling thread must have bound the context.
pub fn with_ctx<R>(f: impl FnOnce(&mut Driver) -> Result<R, CUresult>) -> Result<R, CUresult> {
    with(|d| {
        if !CURRENT.with(Cell::get) {
            return Err(CUDA_ERROR_INVALID_CONTEXT);
        }
        f(d)
    })
}

impl Driver {
    /// A fresh handle value of a kind (never null, never 1 or 2: those are special streams).
    pub fn handle(&mut self, kind: u64) -> u64 {
        self.next_handle += 1;
        (kind << 40) | (self.next_handle << 4)
    }

    /// Makes the context unusable: every later call returns `code`. Prints the report, as
    /// compute-sanitizer would.
    pub fn fault(&mut self, code: CUresult, report: String) {
        eprintln!(
            "cuda-standin: {} ({}): every later call on this context returns it\n{}",
            name(code),
            TABLE
                .iter()
                .find(|(c, _, _)| *c == code)
                .map_or("", |(_, _, t)| t.to_str().unwrap_or("")),
            report
                .lines()
                .map(|l| format!("========= {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        if self.sticky.is_none() {
            self.sticky = Some((code, report));
        }
    }

    /// Counts one event of `point` and says whether fault injection hits it.
    pub fn injected(&mut self, point: FailPoint) -> bool {
        let n = match point {
            FailPoint::Launch => self.counters.launches + self.counters.replayed,
            FailPoint::Alloc => self.counters.allocs,
            FailPoint::Copy => self.counters.copies,
        };
        self.config
            .fail
            .is_some_and(|f| f.point == point && f.nth == n)
    }

    /// The stream for a handle: `None` for the legacy default stream (0, `CU_STREAM_LEGACY`,
    /// `CU_STREAM_PER_THREAD`).
    pub fn stream_key(&self, stream: u64) -> Result<Option<u64>, CUresult> {
        match stream {
            0..=2 => Ok(None),
            s if self.streams.contains_key(&s) => Ok(Some(s)),
            _ => Err(CUDA_ERROR_INVALID_HANDLE),
        }
    }

    /// The capture `stream` is in, if any (and not invalidated).
    pub fn capturing(&mut self, stream: Option<u64>) -> Result<Option<&mut Capture>, CUresult> {
        let Some(s) = stream else { return Ok(None) };
        match self.streams.get_mut(&s).and_then(|s| s.capture.as_mut()) {
            Some(c) if c.invalidated.is_some() => Err(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED),
            Some(c) => Ok(Some(c)),
            None => Ok(None),
        }
    }

    /// Invalidates capture of `stream` with `code` (the capture ends in error).
    pub fn invalidate(&mut self, stream: u64, code: CUresult, why: &str) {
        if let Some(c) = self
            .streams
            .get_mut(&stream)
            .and_then(|s| s.capture.as_mut())
        {
            if c.invalidated.is_none() {
                eprintln!(
                    "cuda-standin: stream capture invalidated ({}): {why}",
                    name(code)
                );
                c.invalidated = Some(code);
            }
        }
    }

    /// A "potentially unsafe" call (synchronous allocation, copy, synchronisation), judged by
    /// the calling thread's mode as the driver documents (`cuThreadExchangeStreamCaptureMode`):
    /// relaxed: allowed; thread-local: refused while this thread has a capture that is not
    /// relaxed; global (the default): that, or while another thread has a global-mode capture.
    /// A refused call invalidates those captures and fails with
    /// `CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED`.
    pub fn unsafe_call(&mut self, what: &str) -> Result<(), CUresult> {
        let me = std::thread::current().id();
        let thread_mode = THREAD_MODE.with(Cell::get);
        let hit: Vec<u64> = self
            .streams
            .iter()
            .filter_map(|(&h, s)| {
                let c = s.capture.as_ref()?;
                let mine = c.thread == me && c.mode != CAPTURE_RELAXED;
                let applies = match thread_mode {
                    CAPTURE_RELAXED => false,
                    CAPTURE_THREAD_LOCAL => mine,
                    _ => mine || (c.thread != me && c.mode == CAPTURE_GLOBAL),
                };
                applies.then_some(h)
            })
            .collect();
        if hit.is_empty() {
            return Ok(());
        }
        for s in hit {
            self.invalidate(
                s,
                CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
                &format!("{what} while a stream is capturing"),
            );
        }
        Err(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)
    }

    /// Work on the legacy default stream waits for every blocking stream; if one of them is
    /// capturing, that is an implicit dependency on a capture: CUDA refuses it.
    pub fn legacy_stream_use(&mut self, stream: Option<u64>, what: &str) -> Result<(), CUresult> {
        if stream.is_some() {
            return Ok(());
        }
        let hit: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| s.flags & STREAM_NON_BLOCKING == 0 && s.capture.is_some())
            .map(|(&h, _)| h)
            .collect();
        if hit.is_empty() {
            return Ok(());
        }
        for s in hit {
            self.invalidate(
                s,
                CUDA_ERROR_STREAM_CAPTURE_IMPLICIT,
                &format!("{what} on the legacy default stream while a blocking stream captures"),
            );
        }
        Err(CUDA_ERROR_STREAM_CAPTURE_IMPLICIT)
    }

    /// The function for a handle.
    pub fn function(&self, f: u64) -> Result<&Function, CUresult> {
        self.functions.get(&f).ok_or(CUDA_ERROR_INVALID_HANDLE)
    }
}
