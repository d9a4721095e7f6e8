//! One training step and one evaluation pass over a batch: the loop body of `train`.
//!
//! The `_into` forms add the batch's loss and hits to a [`LossMeter`] on the model's device
//! and never wait for the GPU: the training loop queues step after step and reads the meter
//! when it wants a number. [`train_step`] and [`eval_batch`] are the one-batch forms with a
//! host [`BatchResult`] (they read a fresh meter at once, so on a GPU each is one sync).

use crate::{Mode, ResNet, Sgd};
use tensor::loss::{softmax_cross_entropy_into, softmax_cross_entropy_loss_into};
use tensor::{expect_device, Labels, LossMeter, Tensor};

/// Loss and correct predictions of one batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchResult {
    pub loss: f32,
    pub correct: usize,
    pub count: usize,
}

/// Forward, loss, backward and SGD update on one batch; the loss and hits go into `meter`.
/// Images, labels, meter and model must share a device. No synchronisation on a GPU.
pub fn train_step_into(
    model: &mut ResNet,
    sgd: &Sgd,
    images: &Tensor,
    labels: &Labels,
    lr: f32,
    meter: &mut LossMeter,
) {
    let logits = model.forward(images, Mode::Train);
    let dlogits = softmax_cross_entropy_into(&logits, labels, meter);
    drop(logits);
    model.zero_grad();
    model.backward(&dlogits);
    sgd.step(model.params_mut(), lr);
}

/// Loss and hits of one batch with the running BN statistics, into `meter`; nothing is
/// updated and nothing is read back.
pub fn eval_batch_into(
    model: &mut ResNet,
    images: &Tensor,
    labels: &Labels,
    meter: &mut LossMeter,
) {
    let logits = model.forward(images, Mode::Eval);
    softmax_cross_entropy_loss_into(&logits, labels, meter);
}

/// Host labels on the images' device and an empty meter there, for the one-batch forms.
/// Labels are range-checked here, before they reach a GPU (the kernel trusts them).
fn batch_on_device(
    op: &str,
    model: &ResNet,
    images: &Tensor,
    labels: &[usize],
) -> (Labels, LossMeter) {
    let k = model.config.num_classes;
    for &l in labels {
        assert!(l < k, "label {l} out of range for {k} classes");
    }
    let device = images.device();
    let labels = expect_device(op, Labels::host(labels.to_vec()).to_device(&device));
    (labels, expect_device(op, LossMeter::new(&device)))
}

fn result_of(op: &str, meter: &LossMeter) -> BatchResult {
    let m = expect_device(op, meter.read());
    BatchResult {
        loss: m.loss as f32,
        correct: m.correct,
        count: m.count,
    }
}

/// Forward, loss, backward and SGD update on one batch ([`train_step_into`] with a fresh
/// meter, read at once).
pub fn train_step(
    model: &mut ResNet,
    sgd: &Sgd,
    images: &Tensor,
    labels: &[usize],
    lr: f32,
) -> BatchResult {
    let (labels, mut meter) = batch_on_device("train_step", model, images, labels);
    train_step_into(model, sgd, images, &labels, lr, &mut meter);
    result_of("train_step", &meter)
}

/// Loss and accuracy of one batch with the running BN statistics; nothing is updated.
pub fn eval_batch(model: &mut ResNet, images: &Tensor, labels: &[usize]) -> BatchResult {
    let (labels, mut meter) = batch_on_device("eval_batch", model, images, labels);
    eval_batch_into(model, images, &labels, &mut meter);
    result_of("eval_batch", &meter)
}

/// One training step captured as a CUDA graph, replayed with a single launch per step: none
/// of the step's few hundred kernel launches costs host time any more.
///
/// The graph reads its batch from fixed input buffers, so [`CapturedStep::run`] first copies
/// the batch in (two device-to-device copies). It writes the model's parameters, gradients,
/// momentum and BN statistics through the addresses they had at capture, so `run` checks that
/// the model it is given still has exactly those buffers (the captured model, not moved, not
/// copied-on-write since) and refuses otherwise. The learning rate comes from device memory,
/// set by `run` before each replay through the optimizer tables the step holds. What the graph
/// cannot do on the host — the meter's sample count, BN's `num_batches_tracked` — `run` does.
/// The meter must be the one given to [`CapturedStep::capture`] (its accumulators are baked
/// into the graph): reset it, do not replace it.
pub struct CapturedStep {
    graph: tensor::Graph,
    tables: tensor::sgd::GraphTables,
    images: Tensor,
    labels: Labels,
    /// Device addresses of every persistent buffer the graph writes, in `state_addresses` order.
    state: Vec<Option<u64>>,
    meter: Option<u64>,
}

/// Applies `f` to the model state a captured step reads and writes: every parameter's value,
/// gradient and momentum, and every BN layer's running statistics, in a fixed order.
fn visit_state(model: &mut ResNet, mut f: impl FnMut(&Tensor)) {
    for p in model.params_mut() {
        f(&p.value);
        f(&p.grad);
        f(&p.momentum);
    }
    for bn in model.bns_mut() {
        f(&bn.running_mean);
        f(&bn.running_var);
    }
}

/// The device addresses of that state, in [`visit_state`] order.
fn state_addresses(model: &mut ResNet) -> Vec<Option<u64>> {
    let mut out = Vec::new();
    visit_state(model, |t| out.push(t.device_address()));
    out
}

impl CapturedStep {
    /// Captures [`train_step_into`] for batches shaped like `images` / `labels` (their
    /// values are copied into the graph's input buffers). The model must have taken one eager
    /// step on its GPU with `sgd` first (that builds the optimizer tables the graph uses).
    /// Nothing runs: the model, meter and BN counters are as before. `Err` on the CPU, or when
    /// something in the step cannot be captured — the model should then not be used further
    /// (it may hold activations of the abandoned capture).
    pub fn capture(
        model: &mut ResNet,
        sgd: &Sgd,
        images: &Tensor,
        labels: &Labels,
        meter: &mut LossMeter,
    ) -> tensor::Result<CapturedStep> {
        let device = model.device();
        let mut fixed_images = Tensor::zeros_on(images.shape(), &device)?;
        fixed_images.copy_from(images)?;
        let mut fixed_labels = Labels::host(vec![0; labels.len()]).to_device(&device)?;
        fixed_labels.copy_from(labels)?;
        // State that outlives the graph must own its buffers: a copy-on-write inside the
        // capture would put it in memory the graph allocates (and frees) on every replay.
        for p in model.params_mut() {
            p.value.unshare();
            p.grad.unshare();
            p.momentum.unshare();
        }
        for bn in model.bns_mut() {
            bn.running_mean.unshare();
            bn.running_var.unshare();
        }
        // The eager step's cached working set goes back to the driver before the graph
        // reserves its own, so the two are not resident at once.
        if let Some(gpu) = device.gpu() {
            gpu.synchronize()?;
            gpu.trim_pool()?;
        }
        let count = meter.count();
        let tracked: Vec<i64> = model
            .bns_mut()
            .iter()
            .map(|b| b.num_batches_tracked)
            .collect();
        // lr: unused while capturing (the captured update reads it from device memory).
        let (captured, tables) = tensor::sgd::record_graph_tables(|| {
            device.capture(|| train_step_into(model, sgd, &fixed_images, &fixed_labels, 0.0, meter))
        });
        // The capture ran nothing: put back the host counters it advanced.
        meter.set_count(count);
        for (bn, t) in model.bns_mut().into_iter().zip(tracked) {
            bn.num_batches_tracked = t;
        }
        let (graph, ()) = captured?;
        assert!(tables.has_sgd_step(), "the captured step has no SGD update");
        graph.upload()?;
        Ok(CapturedStep {
            graph,
            tables,
            images: fixed_images,
            labels: fixed_labels,
            state: state_addresses(model),
            meter: meter.device_address(),
        })
    }

    /// Samples per step (the batch size the graph was captured for).
    pub fn batch_size(&self) -> usize {
        self.labels.len()
    }

    /// One training step on `images` / `labels` (same shapes as at capture) with learning
    /// rate `lr`: check the model and meter are the captured ones, copy the batch in, set lr,
    /// replay. Queued only: no synchronisation.
    pub fn run(
        &mut self,
        model: &mut ResNet,
        images: &Tensor,
        labels: &Labels,
        lr: f32,
        meter: &mut LossMeter,
    ) -> tensor::Result<()> {
        let refuse = |what: &str| {
            Err(tensor::Error::Graph(format!(
                "{what} is not the one the step was captured with (or its buffers moved)"
            )))
        };
        if state_addresses(model) != self.state {
            return refuse("the model");
        }
        // The graph writes through raw addresses, past copy-on-write: a clone of the model
        // taken since the capture would see the replay's writes.
        let mut shared = false;
        visit_state(model, |t| shared |= t.is_shared());
        if shared {
            return Err(tensor::Error::Graph(
                "the model's state is shared with a clone (copy-on-write pending); take real \
                 copies (e.g. to the host) for snapshots while replaying a captured step"
                    .into(),
            ));
        }
        if meter.device_address() != self.meter {
            return refuse("the loss meter");
        }
        self.images.copy_from(images)?;
        self.labels.copy_from(labels)?;
        self.tables.set_lr(lr)?;
        self.graph.launch()?;
        meter.set_count(meter.count() + self.batch_size());
        for bn in model.bns_mut() {
            bn.num_batches_tracked += 1;
        }
        Ok(())
    }
}
