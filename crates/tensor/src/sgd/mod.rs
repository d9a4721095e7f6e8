//! SGD with momentum, weight decay and optional Nesterov: PyTorch's `torch.optim.SGD`
//! (dampening 0). With `g' = g + wd·p` and `buf = μ·buf + g'` (buf starts at 0, which equals
//! PyTorch's first-step copy), the step is `p -= lr·buf`, or `p -= lr·(g' + μ·buf)` with Nesterov.

//!
//! [`sgd_update`] works on host slices (the CPU reference); [`update`] takes tensors and
//! dispatches on their device (on a GPU, `sgd.cu`'s `sgd_step` with a cached one-segment
//! table). [`update_all`] updates many tensors at once: on a GPU that is one
//! `sgd_step_tensors` launch for the whole model, through a table of the tensors' device
//! addresses that is uploaded once and reused while the tensors stay put; on the CPU it is
//! [`sgd_update`] per tensor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub mod cuda;

use crate::{check, cuda_of, Tensor};
use cuda::{SgdSegments, SgdTable, SgdTensorTable, ZeroTable};
use kernels::Gpu;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub lr: f32,
    pub momentum: f32,
    /// 0 for the tensors exempt from decay (BN parameters and biases, when so configured).
    pub weight_decay: f32,
    pub nesterov: bool,
}

pub fn sgd_update(param: &mut [f32], grad: &[f32], momentum_buf: &mut [f32], cfg: SgdConfig) {
    assert!(
        param.len() == grad.len() && param.len() == momentum_buf.len(),
        "sgd: lengths differ"
    );
    for ((p, &g), b) in param.iter_mut().zip(grad).zip(momentum_buf.iter_mut()) {
        let g = g + cfg.weight_decay * *p;
        *b = cfg.momentum * *b + g;
        let step = if cfg.nesterov {
            g + cfg.momentum * *b
        } else {
            *b
        };
        *p -= cfg.lr * step;
    }
}

/// Segment tables `[0, len]` with one weight decay, per (GPU, len, decay bits). Each entry
/// holds its `Arc<Gpu>`, so a cached pointer can never be reused by another device.
type TableCache = HashMap<(usize, usize, u32), (Arc<Gpu>, Arc<SgdTable>)>;

fn one_segment_table(op: &str, gpu: &Arc<Gpu>, len: usize, weight_decay: f32) -> Arc<SgdTable> {
    static CACHE: OnceLock<Mutex<TableCache>> = OnceLock::new();
    let key = (Arc::as_ptr(gpu) as usize, len, weight_decay.to_bits());
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some((_, t)) = cache.get(&key) {
        return Arc::clone(t);
    }
    let segments = check(op, SgdSegments::new(&[(len, weight_decay)]));
    let table = Arc::new(check(op, SgdTable::new(gpu, &segments)));
    cache.insert(key, (Arc::clone(gpu), Arc::clone(&table)));
    table
}

/// [`sgd_update`] on tensors of one device: `param`, `grad` and `momentum_buf` alike.
pub fn update(param: &mut Tensor, grad: &Tensor, momentum_buf: &mut Tensor, cfg: SgdConfig) {
    const OP: &str = "sgd update";
    let Some(gpu) = cuda_of(OP, &[&*param, grad, &*momentum_buf]) else {
        return sgd_update(param.data_mut(), grad.data(), momentum_buf.data_mut(), cfg);
    };
    assert!(
        param.len() == grad.len() && param.len() == momentum_buf.len(),
        "sgd: lengths differ"
    );
    if param.is_empty() {
        return;
    }
    let table = one_segment_table(OP, &gpu, param.len(), cfg.weight_decay);
    let r = cuda::sgd_step(
        &gpu,
        &table,
        &mut param.cu_mut().as_view_mut(),
        &grad.cu().as_view(),
        &mut momentum_buf.cu_mut().as_view_mut(),
        cfg.lr,
        cfg.momentum,
        cfg.nesterov,
    );
    check(OP, r);
}

/// One tensor's share of [`update_all`].
pub struct SgdParam<'a> {
    pub value: &'a mut Tensor,
    pub grad: &'a Tensor,
    pub momentum: &'a mut Tensor,
    /// 0 for the tensors exempt from decay.
    pub weight_decay: f32,
}

/// The address table of the last [`update_all`] per GPU; rebuilt only when the tensors (their
/// buffers, lengths or decays) differ from the ones it describes.
type TensorTableCache = HashMap<usize, (Arc<Gpu>, Arc<Mutex<SgdTensorTable>>)>;

/// [`update`] over every tensor of `params` with one learning rate, momentum and Nesterov flag.
/// All tensors must be on one device. On a GPU: a single launch for all of them.
pub fn update_all(params: &mut [SgdParam<'_>], lr: f32, momentum: f32, nesterov: bool) {
    let _span = crate::profile::span(|| "sgd".into());
    const OP: &str = "sgd update";
    if params.is_empty() {
        return;
    }
    let cfg = |weight_decay| SgdConfig {
        lr,
        momentum,
        weight_decay,
        nesterov,
    };
    let all: Vec<&Tensor> = params
        .iter()
        .flat_map(|p| [&*p.value, p.grad, &*p.momentum])
        .collect();
    let Some(gpu) = cuda_of(OP, &all) else {
        for p in params.iter_mut() {
            sgd_update(
                p.value.data_mut(),
                p.grad.data(),
                p.momentum.data_mut(),
                cfg(p.weight_decay),
            );
        }
        return;
    };
    let mut addresses = Vec::with_capacity(3 * params.len());
    let mut segments = Vec::with_capacity(params.len());
    for p in params.iter_mut().filter(|p| !p.value.is_empty()) {
        assert!(
            p.value.len() == p.grad.len() && p.value.len() == p.momentum.len(),
            "sgd: lengths differ"
        );
        // The kernel writes value and momentum through these addresses: `cu_mut` first makes
        // sure neither buffer is shared with a clone (copy on write), as every writer must.
        addresses.extend([
            gpu.address_of(p.value.cu_mut()),
            gpu.address_of(p.grad.cu()),
            gpu.address_of(p.momentum.cu_mut()),
        ]);
        segments.push((p.value.len(), p.weight_decay));
    }
    if segments.is_empty() {
        return;
    }
    let segments = check(OP, SgdSegments::new(&segments));
    // In a CUDA-graph capture nothing may be uploaded: the table must already exist (an eager
    // step built it); the capture keeps it (`record_graph_tables`) and each replay sets lr.
    let capturing = check(OP, gpu.is_capturing());
    let table = {
        let mut cache = tensor_tables();
        let key = Arc::as_ptr(&gpu) as usize;
        let stale = cache
            .get(&key)
            .is_none_or(|(_, t)| !lock(t).describes(&addresses, &segments));
        if stale {
            assert!(
                !capturing,
                "sgd update in a CUDA-graph capture, but its parameter table is not built yet: \
                 run one eager step with the same tensors before capturing"
            );
            // SAFETY: the addresses are those of `params`' live buffers on `gpu`, whose lengths
            // are the segments'; the table is only used again when it describes the tensors
            // then passed (checked above), or by a graph captured with these very tensors.
            let table = check(OP, unsafe {
                SgdTensorTable::new(&gpu, addresses, segments)
            });
            cache.insert(key, (Arc::clone(&gpu), Arc::new(Mutex::new(table))));
        }
        Arc::clone(&cache.get(&key).expect("just inserted").1)
    };
    if capturing {
        keep_for_graph(GraphTable::Sgd(Arc::clone(&gpu), Arc::clone(&table)));
    } else {
        check(OP, lock(&table).set_lr(&gpu, lr));
    }
    check(
        OP,
        cuda::sgd_step_tensors(&gpu, &lock(&table), momentum, nesterov),
    );
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere mid-update; the table itself is intact.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn tensor_tables() -> std::sync::MutexGuard<'static, TensorTableCache> {
    static CACHE: OnceLock<Mutex<TensorTableCache>> = OnceLock::new();
    lock(CACHE.get_or_init(Default::default))
}

/// A device table a captured graph reads (its addresses are baked into the graph).
enum GraphTable {
    Sgd(Arc<Gpu>, Arc<Mutex<SgdTensorTable>>),
    /// Held only to keep the table alive while the graph may replay.
    Zero {
        _alive: Arc<ZeroTable>,
    },
}

thread_local! {
    /// The tables used while a capture is being recorded on this thread (see
    /// [`record_graph_tables`]); `None` when no recording is open.
    static RECORDING: std::cell::RefCell<Option<Vec<GraphTable>>> = const { std::cell::RefCell::new(None) };
}

fn keep_for_graph(t: GraphTable) {
    RECORDING.with(|r| match r.borrow_mut().as_mut() {
        Some(v) => v.push(t),
        None => panic!(
            "an optimizer step was captured into a CUDA graph outside record_graph_tables: its \
             tables would not be kept alive for the graph"
        ),
    });
}

/// The optimizer's device tables a captured graph reads: holding this keeps them alive (a
/// later eager step with other tensors builds new tables instead of reusing these), and
/// [`GraphTables::set_lr`] sets the learning rate the graph's SGD step reads.
pub struct GraphTables {
    tables: Vec<GraphTable>,
}

impl GraphTables {
    /// Queues the learning rate for the graph's next replay (a small copy on the stream,
    /// ordered after the replays already queued).
    pub fn set_lr(&self, lr: f32) -> crate::Result<()> {
        for t in &self.tables {
            if let GraphTable::Sgd(gpu, table) = t {
                lock(table).set_lr(gpu, lr)?;
            }
        }
        Ok(())
    }

    /// Whether the graph contains an SGD step (whose lr [`GraphTables::set_lr`] sets).
    pub fn has_sgd_step(&self) -> bool {
        self.tables.iter().any(|t| matches!(t, GraphTable::Sgd(..)))
    }
}

/// Runs `capture` (which records a CUDA graph) and returns, with its result, the optimizer
/// tables that [`update_all`] and [`zero_all`] used inside it. The graph must hold them for
/// as long as it may be replayed.
pub fn record_graph_tables<R>(capture: impl FnOnce() -> R) -> (R, GraphTables) {
    RECORDING.with(|r| {
        assert!(r.borrow().is_none(), "nested record_graph_tables");
        *r.borrow_mut() = Some(Vec::new());
    });
    // Closes the recording even if `capture` unwinds.
    struct Close;
    impl Drop for Close {
        fn drop(&mut self) {
            RECORDING.with(|r| *r.borrow_mut() = None);
        }
    }
    let close = Close;
    let out = capture();
    let tables = RECORDING
        .with(|r| r.borrow_mut().take())
        .unwrap_or_default();
    drop(close);
    (out, GraphTables { tables })
}

/// The zeroing table of the last [`zero_all`] per GPU (as [`TensorTableCache`]).
type ZeroTableCache = HashMap<usize, (Arc<Gpu>, Arc<ZeroTable>)>;

/// Sets every tensor of `tensors` to zero (the gradients before a backward pass). On a GPU it
/// is one `zero_tensors` launch through a cached table of the buffers' addresses (one memset
/// per tensor otherwise: 65 for ResNet-20); on the CPU a fill per tensor. All on one device.
pub fn zero_all(tensors: &mut [&mut Tensor]) {
    let _span = crate::profile::span(|| "zero_grad".into());
    const OP: &str = "zero gradients";
    if tensors.is_empty() {
        return;
    }
    let all: Vec<&Tensor> = tensors.iter().map(|t| &**t).collect();
    let Some(gpu) = cuda_of(OP, &all) else {
        for t in tensors.iter_mut() {
            t.fill(0.0);
        }
        return;
    };
    let (mut addresses, mut lens) = (Vec::new(), Vec::new());
    for t in tensors.iter_mut().filter(|t| !t.is_empty()) {
        // Written through the address: unshare first, as every writer must.
        addresses.push(gpu.address_of(t.cu_mut()));
        lens.push(t.len());
    }
    if lens.is_empty() {
        return;
    }
    static CACHE: OnceLock<Mutex<ZeroTableCache>> = OnceLock::new();
    let capturing = check(OP, gpu.is_capturing());
    let table = {
        let mut cache = lock(CACHE.get_or_init(Default::default));
        let key = Arc::as_ptr(&gpu) as usize;
        if cache
            .get(&key)
            .is_none_or(|(_, t)| !t.describes(&addresses, &lens))
        {
            assert!(
                !capturing,
                "zeroing gradients in a CUDA-graph capture, but their table is not built yet: \
                 run one eager step with the same tensors before capturing"
            );
            // SAFETY: the addresses are `tensors`' live buffers on `gpu` with these lengths; the
            // table is reused only when it describes the tensors then passed (checked above), or
            // by a graph captured with these very tensors.
            let table = check(OP, unsafe { ZeroTable::new(&gpu, addresses, lens) });
            cache.insert(key, (Arc::clone(&gpu), Arc::new(table)));
        }
        Arc::clone(&cache.get(&key).expect("just inserted").1)
    };
    if capturing {
        keep_for_graph(GraphTable::Zero {
            _alive: Arc::clone(&table),
        });
    }
    check(OP, cuda::zero_tensors(&gpu, &table));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_steps_by_hand() {
        let cfg = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
            nesterov: false,
        };
        let (mut p, mut buf) = (vec![1.0f32], vec![0.0f32]);
        sgd_update(&mut p, &[0.5], &mut buf, cfg);
        // g' = 0.5 + 0.01 = 0.51; buf = 0.51; p = 1 - 0.051 = 0.949
        assert!((buf[0] - 0.51).abs() < 1e-7 && (p[0] - 0.949).abs() < 1e-7);
        sgd_update(&mut p, &[0.5], &mut buf, cfg);
        // g' = 0.5 + 0.00949 = 0.50949; buf = 0.459 + 0.50949 = 0.96849; p = 0.949 - 0.096849
        assert!((buf[0] - 0.96849).abs() < 1e-6 && (p[0] - 0.852151).abs() < 1e-6);
    }

    #[test]
    fn nesterov_by_hand() {
        let cfg = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: true,
        };
        let (mut p, mut buf) = (vec![1.0f32], vec![1.0f32]);
        sgd_update(&mut p, &[0.5], &mut buf, cfg);
        // buf = 0.9 + 0.5 = 1.4; step = 0.5 + 0.9·1.4 = 1.76; p = 1 - 0.176
        assert!((buf[0] - 1.4).abs() < 1e-6 && (p[0] - 0.824).abs() < 1e-6);
    }

    /// On the CPU, `update_all` is `sgd_update` per tensor, bit for bit.
    #[test]
    fn update_all_equals_per_tensor_updates() {
        let t = |v: &[f32]| Tensor::from_vec(&[v.len()], v.to_vec());
        let (mut a, mut b) = (t(&[1.0, -2.0, 0.5]), t(&[0.25]));
        let (ga, gb) = (t(&[0.1, 0.2, -0.3]), t(&[4.0]));
        let (mut ma, mut mb) = (t(&[0.5, 0.0, 1.0]), t(&[-1.0]));
        let (mut ra, mut rb, mut rma, mut rmb) = (a.clone(), b.clone(), ma.clone(), mb.clone());
        for step in 0..2 {
            let lr = 0.1 / (step + 1) as f32;
            update_all(
                &mut [
                    SgdParam {
                        value: &mut a,
                        grad: &ga,
                        momentum: &mut ma,
                        weight_decay: 1e-2,
                    },
                    SgdParam {
                        value: &mut b,
                        grad: &gb,
                        momentum: &mut mb,
                        weight_decay: 0.0,
                    },
                ],
                lr,
                0.9,
                true,
            );
            let cfg = |weight_decay| SgdConfig {
                lr,
                momentum: 0.9,
                weight_decay,
                nesterov: true,
            };
            update(&mut ra, &ga, &mut rma, cfg(1e-2));
            update(&mut rb, &gb, &mut rmb, cfg(0.0));
        }
        assert_eq!((a, b, ma, mb), (ra, rb, rma, rmb));
    }
}
