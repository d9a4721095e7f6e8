//! Timing and reporting for `benches/kernels.rs`: device time from CUDA events around a batch of
//! launches, criterion throughput, and a closing summary table (time per launch, effective
//! GB/s, TFLOP/s, and the fraction of the card's ceiling: memory bandwidth for memory-bound
//! kernels, fp32 or bf16 tensor throughput for convolutions). The ceilings are measured in the
//! same run by the `ceiling/*` benchmarks (`peak.cu`, a device copy); the environment
//! variables KERNELS_BENCH_PEAK_GBS / _TFLOPS / _TENSOR_TFLOPS override them.

use std::cell::RefCell;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use cudarc::driver::sys::CUevent_flags;
use kernels::Gpu;

/// What one launch does, for throughput.
#[derive(Clone, Copy)]
pub enum Work {
    /// Memory-bound: bytes of every buffer the launch reads or writes, each counted once.
    Bytes(u64),
    /// fp32 arithmetic on the CUDA cores: 2*N*Cout*Cin*k^2*Ho*Wo FLOP for a convolution (the
    /// same count for fwd, bwd-data, bwd-weight).
    Flops(u64),
    /// The same count, done on the tensor cores (bf16 operands).
    TensorFlops(u64),
}

/// Names of the benchmarks whose throughput is the ceiling for each kind of [`Work`].
pub const CEILING_BANDWIDTH: &str = "ceiling/copy_dtod";
/// See [`CEILING_BANDWIDTH`].
pub const CEILING_FP32: &str = "ceiling/fma_f32";
/// See [`CEILING_BANDWIDTH`].
pub const CEILING_BF16: &str = "ceiling/mma_bf16";

struct Row {
    name: String,
    shape: String,
    work: Work,
    /// Median over criterion's samples of (device time of the batch / launches in the batch).
    secs: f64,
}

/// Runs benchmarks on one [`Gpu`] and remembers each result for [`Bench::summary`].
pub struct Bench<'a> {
    pub c: &'a mut Criterion,
    pub gpu: &'a Gpu,
    rows: Vec<Row>,
    /// False under `--test` / `--list` (or without `--bench`): criterion then runs each
    /// benchmark once (a smoke test) and no rates are printed.
    report: bool,
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    panic!("kernels bench {what}: {e}")
}

/// Device time of `iters` back-to-back launches: a CUDA event before the first and after the
/// last, one synchronisation (on the end event) per batch.
fn device_time(
    gpu: &Gpu,
    iters: u64,
    name: &str,
    launch: &mut dyn FnMut() -> kernels::Result<()>,
) -> Duration {
    let flags = Some(CUevent_flags::CU_EVENT_DEFAULT); // timing enabled
    let stream = gpu.stream();
    let start = stream.record_event(flags).unwrap_or_else(|e| fail(name, e));
    for _ in 0..iters {
        launch().unwrap_or_else(|e| fail(name, e));
    }
    let end = stream.record_event(flags).unwrap_or_else(|e| fail(name, e));
    let ms = start.elapsed_ms(&end).unwrap_or_else(|e| fail(name, e));
    Duration::from_secs_f64(f64::from(ms) * 1e-3)
}

impl<'a> Bench<'a> {
    pub fn new(c: &'a mut Criterion, gpu: &'a Gpu) -> Self {
        let args: Vec<String> = std::env::args().collect();
        let has = |f: &str| args.iter().any(|a| a == f);
        Bench {
            c,
            gpu,
            rows: Vec::new(),
            report: has("--bench") && !has("--test") && !has("--list"),
        }
    }

    /// Benchmarks `launch` as `group/id`; `shape` is a human-readable description for the
    /// summary table.
    pub fn run(
        &mut self,
        group: &str,
        id: &str,
        shape: &str,
        work: Work,
        mut launch: impl FnMut() -> kernels::Result<()>,
    ) {
        let name = format!("{group}/{id}");
        let samples = RefCell::new(Vec::<(u64, Duration)>::new());
        let gpu = self.gpu;
        let mut g = self.c.benchmark_group(group);
        g.throughput(match work {
            Work::Bytes(b) => Throughput::BytesDecimal(b),
            Work::Flops(f) | Work::TensorFlops(f) => Throughput::Elements(f),
        });
        g.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let t = device_time(gpu, iters, &name, &mut launch);
                samples.borrow_mut().push((iters, t));
                t
            })
        });
        g.finish();
        // Surfaces an asynchronous fault (bad address, ...) under this benchmark's name.
        self.gpu.synchronize().unwrap_or_else(|e| fail(&name, e));

        let samples = samples.into_inner();
        if samples.is_empty() || !self.report {
            return; // filtered out on the command line, or not measuring
        }
        // Criterion's warm-up calls start at 1 launch; ignore batches under 0.5 ms if possible.
        let long: Vec<_> = samples
            .iter()
            .filter(|(_, t)| *t >= Duration::from_micros(500))
            .collect();
        let pick = if long.is_empty() {
            samples.iter().collect()
        } else {
            long
        };
        let mut per: Vec<f64> = pick
            .iter()
            .map(|(n, t)| t.as_secs_f64() / *n as f64)
            .collect();
        per.sort_by(f64::total_cmp);
        let secs = per[per.len() / 2];
        let row = Row {
            name,
            shape: shape.to_string(),
            work,
            secs,
        };
        println!("{:<44} -> {}", row.name, rate(&row));
        self.rows.push(row);
    }

    /// Throughput of the benchmark `name` in its own unit (GB/s or TFLOP/s), if it ran.
    fn measured(&self, name: &str) -> Option<f64> {
        self.rows.iter().find(|r| r.name == name).map(throughput)
    }

    /// The closing table: one line per benchmark that ran.
    pub fn summary(&self) {
        if self.rows.is_empty() {
            return;
        }
        let peak = |var: &str, ceiling: &str| env_f64(var).or_else(|| self.measured(ceiling));
        let peak_gbs = peak("KERNELS_BENCH_PEAK_GBS", CEILING_BANDWIDTH);
        let peak_tflops = peak("KERNELS_BENCH_PEAK_TFLOPS", CEILING_FP32);
        let peak_tensor = peak("KERNELS_BENCH_PEAK_TENSOR_TFLOPS", CEILING_BF16);
        println!();
        println!(
            "kernels bench summary ({:?}); time = median device time per launch; GB/s = \
             bytes read+written once each / time; TFLOP/s = 2*N*Cout*Cin*k^2*Ho*Wo / time",
            self.gpu
        );
        let show =
            |p: Option<f64>, unit: &str| p.map_or("n/a".to_string(), |p| format!("{p:.1} {unit}"));
        println!(
            "ceilings: memory {}, fp32 {}, bf16 mma.sync {} (% of peak uses the matching one)",
            show(peak_gbs, "GB/s"),
            show(peak_tflops, "TFLOP/s"),
            show(peak_tensor, "TFLOP/s")
        );
        println!(
            "{:<40} {:<34} {:>10} {:>16}   % of peak",
            "benchmark", "shape", "us/launch", "throughput"
        );
        for r in &self.rows {
            let ceiling = match r.work {
                Work::Bytes(_) => peak_gbs,
                Work::Flops(_) => peak_tflops,
                Work::TensorFlops(_) => peak_tensor,
            };
            let frac = ceiling.map(|p| throughput(r) / p);
            println!(
                "{:<40} {:<34} {:>10.2} {:>16}   {}",
                r.name,
                r.shape,
                r.secs * 1e6,
                rate(r),
                frac.map_or("n/a".to_string(), |f| format!("{:>8.1}%", 100.0 * f))
            );
        }
    }
}

/// GB/s for memory-bound rows, TFLOP/s for arithmetic ones.
fn throughput(r: &Row) -> f64 {
    match r.work {
        Work::Bytes(b) => b as f64 / r.secs / 1e9,
        Work::Flops(f) | Work::TensorFlops(f) => f as f64 / r.secs / 1e12,
    }
}

fn rate(r: &Row) -> String {
    match r.work {
        Work::Bytes(_) => format!("{:.1} GB/s", throughput(r)),
        Work::Flops(_) | Work::TensorFlops(_) => format!("{:.2} TFLOP/s", throughput(r)),
    }
}

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Deterministic pseudo-random fill (xorshift64*), no RNG dependency.
pub struct Fill(u64);

impl Fill {
    pub fn new(seed: u64) -> Self {
        Fill(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub fn f32s(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            .collect()
    }
    /// Uniform in 0..m.
    pub fn below(&mut self, m: u64) -> u64 {
        self.next_u64() % m
    }
}
