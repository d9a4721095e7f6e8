//! Class labels on either device, and a [`LossMeter`] that adds up the loss and the correct
//! predictions of many batches where the logits are, so that training on a GPU need not wait
//! for the device after every step.
//!
//! On a GPU the loss kernel adds each batch's loss sum (f64) and hit count into the meter's two
//! device accumulators; nothing comes back to the host until [`LossMeter::read`], the only
//! synchronising call. On the CPU the meter is three host numbers and reading it is free.

use std::fmt;
use std::sync::Arc;

use kernels::{CudaSlice, Gpu};

use crate::{Device, Result};

enum LabelStore {
    Host(Vec<usize>),
    Cuda { gpu: Arc<Gpu>, buf: CudaSlice<i32> },
}

/// One class index per sample, in host memory or on one CUDA device (int32 there, as the loss
/// kernel reads them). Labels on the GPU are not range-checked by the kernel: they come from
/// checked host labels ([`Labels::to_device`]) or from a kernel that gathers checked ones (the
/// batch maker).
pub struct Labels {
    store: LabelStore,
}

impl Labels {
    /// Labels in host memory.
    pub fn host(labels: Vec<usize>) -> Labels {
        Labels {
            store: LabelStore::Host(labels),
        }
    }

    /// Adopts a device buffer of int32 labels filled by a kernel outside this crate (the GPU
    /// batch maker); its length is the number of samples.
    pub fn from_cuda(gpu: &Arc<Gpu>, buf: CudaSlice<i32>) -> Labels {
        Labels {
            store: LabelStore::Cuda {
                gpu: Arc::clone(gpu),
                buf,
            },
        }
    }

    pub fn len(&self) -> usize {
        match &self.store {
            LabelStore::Host(v) => v.len(),
            LabelStore::Cuda { buf, .. } => buf.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the labels are.
    pub fn device(&self) -> Device {
        match &self.store {
            LabelStore::Host(_) => Device::Cpu,
            LabelStore::Cuda { gpu, .. } => Device::Cuda(Arc::clone(gpu)),
        }
    }

    pub fn is_cuda(&self) -> bool {
        matches!(self.store, LabelStore::Cuda { .. })
    }

    /// The labels when they are in host memory; `None` on a GPU.
    pub fn host_data(&self) -> Option<&[usize]> {
        match &self.store {
            LabelStore::Host(v) => Some(v),
            LabelStore::Cuda { .. } => None,
        }
    }

    /// A host copy, from either device (on a GPU: waits for queued work).
    pub fn to_vec(&self) -> Result<Vec<usize>> {
        match &self.store {
            LabelStore::Host(v) => Ok(v.clone()),
            LabelStore::Cuda { gpu, buf } => Ok(gpu
                .download(&buf.as_view())?
                .into_iter()
                .map(|l| usize::try_from(l).unwrap_or_else(|_| panic!("negative label {l}")))
                .collect()),
        }
    }

    /// Overwrites these labels with `src`'s (same length, same device): a device-to-device copy
    /// on a GPU (capturable), a host copy otherwise. Panics on mixed devices or lengths.
    pub fn copy_from(&mut self, src: &Labels) -> Result<()> {
        assert_eq!(self.len(), src.len(), "Labels::copy_from: lengths differ");
        match (&mut self.store, &src.store) {
            (LabelStore::Host(d), LabelStore::Host(s)) => d.copy_from_slice(s),
            (LabelStore::Cuda { gpu, buf }, LabelStore::Cuda { gpu: g2, buf: s }) => {
                assert!(Arc::ptr_eq(gpu, g2), "Labels::copy_from: different GPUs");
                gpu.copy_buffer(s, buf)?;
            }
            _ => panic!("Labels::copy_from: labels on different devices"),
        }
        Ok(())
    }

    /// A copy on `device`. Panics if a host label does not fit the kernels' int32 (a
    /// programming error: class indices are small).
    pub fn to_device(&self, device: &Device) -> Result<Labels> {
        let store = match (&self.store, device) {
            (LabelStore::Host(v), Device::Cpu) => LabelStore::Host(v.clone()),
            (LabelStore::Cuda { .. }, Device::Cpu) => LabelStore::Host(self.to_vec()?),
            (LabelStore::Host(v), Device::Cuda(gpu)) => {
                let v: Vec<i32> = v
                    .iter()
                    .map(|&l| {
                        i32::try_from(l).unwrap_or_else(|_| panic!("label {l} does not fit i32"))
                    })
                    .collect();
                LabelStore::Cuda {
                    gpu: Arc::clone(gpu),
                    buf: gpu.upload(&v)?,
                }
            }
            (LabelStore::Cuda { gpu: from, buf }, Device::Cuda(gpu)) => {
                let buf = if Arc::ptr_eq(from, gpu) {
                    gpu.clone_buffer(buf)?
                } else {
                    let host: Vec<i32> = from.download(&buf.as_view())?;
                    gpu.upload(&host)?
                };
                LabelStore::Cuda {
                    gpu: Arc::clone(gpu),
                    buf,
                }
            }
        };
        Ok(Labels { store })
    }

    /// The device buffer of labels known to be on the GPU (internal).
    #[track_caller]
    pub(crate) fn cu(&self) -> &CudaSlice<i32> {
        match &self.store {
            LabelStore::Cuda { buf, .. } => buf,
            LabelStore::Host(_) => panic!("internal: expected labels on the GPU"),
        }
    }
}

impl From<Vec<usize>> for Labels {
    fn from(v: Vec<usize>) -> Labels {
        Labels::host(v)
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.store {
            LabelStore::Host(v) => f.debug_tuple("Labels").field(v).finish(),
            LabelStore::Cuda { .. } => f
                .debug_struct("Labels")
                .field("len", &self.len())
                .field("device", &self.device())
                .finish(),
        }
    }
}

enum Accumulators {
    Host {
        loss_sum: f64,
        correct: usize,
    },
    Cuda {
        gpu: Arc<Gpu>,
        /// Sum of per-sample losses, `loss_acc[0]` of `loss.cu`.
        loss_sum: CudaSlice<f64>,
        /// Correct predictions, `correct_acc[0]` of `loss.cu` (int32, read as unsigned: up to
        /// 2^32 − 1 hits between resets, about 80,000 epochs of CIFAR).
        correct: CudaSlice<i32>,
    },
}

/// The sum of per-sample losses, the number of correct predictions and the number of samples,
/// accumulated over batches on one device by
/// [`softmax_cross_entropy_into`](crate::loss::softmax_cross_entropy_into). Only
/// [`LossMeter::read`] synchronises with the GPU.
pub struct LossMeter {
    acc: Accumulators,
    /// Samples fed so far: known on the host without asking the device.
    count: usize,
}

/// What a [`LossMeter`] holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeterReading {
    /// Sum of the per-sample losses (f64 on both devices).
    pub loss_sum: f64,
    /// Mean loss per sample, `loss_sum / count` (NaN when `count` is 0: the mean of nothing).
    pub loss: f64,
    /// Samples whose argmax (lowest index on ties) equals the label.
    pub correct: usize,
    /// Samples accumulated.
    pub count: usize,
}

impl MeterReading {
    /// `correct / count` (NaN when `count` is 0).
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.count as f64
    }
}

impl LossMeter {
    /// An empty meter on `device` (`Err` when the GPU cannot allocate its 12 bytes).
    pub fn new(device: &Device) -> Result<LossMeter> {
        let acc = match device {
            Device::Cpu => Accumulators::Host {
                loss_sum: 0.0,
                correct: 0,
            },
            Device::Cuda(gpu) => Accumulators::Cuda {
                gpu: Arc::clone(gpu),
                loss_sum: gpu.zeros(1)?,
                correct: gpu.zeros(1)?,
            },
        };
        Ok(LossMeter { acc, count: 0 })
    }

    /// Where the accumulators are.
    pub fn device(&self) -> Device {
        match &self.acc {
            Accumulators::Host { .. } => Device::Cpu,
            Accumulators::Cuda { gpu, .. } => Device::Cuda(Arc::clone(gpu)),
        }
    }

    /// Samples accumulated so far (no synchronisation).
    pub fn count(&self) -> usize {
        self.count
    }

    /// The totals so far. On a GPU this waits for every queued step (two 8-byte copies): the
    /// one synchronising call of the meter. Asynchronous kernel errors surface here.
    pub fn read(&self) -> Result<MeterReading> {
        let (loss_sum, correct) = match &self.acc {
            Accumulators::Host { loss_sum, correct } => (*loss_sum, *correct),
            Accumulators::Cuda {
                gpu,
                loss_sum,
                correct,
            } => {
                let l = gpu.download(&loss_sum.as_view())?[0];
                let c = gpu.download(&correct.as_view())?[0];
                // The kernel adds with int32 wrap-around: read it as unsigned (exact to 2^32 − 1).
                (l, c as u32 as usize)
            }
        };
        Ok(MeterReading {
            loss_sum,
            loss: loss_sum / self.count as f64,
            correct,
            count: self.count,
        })
    }

    /// The device address of the loss accumulator (`None` on the CPU): an identity, for
    /// checking that a captured graph still writes into this meter.
    pub fn device_address(&self) -> Option<u64> {
        match &self.acc {
            Accumulators::Host { .. } => None,
            Accumulators::Cuda { gpu, loss_sum, .. } => Some(gpu.address_of(loss_sum)),
        }
    }

    /// Sets the number of samples the meter holds. For a replayed CUDA graph: its loss kernel
    /// adds the batch's loss and hits on the device, but the host-side count is not in the
    /// graph, so the replaying code adds the batch here (and a capture, which runs nothing,
    /// puts back the count it had before).
    pub fn set_count(&mut self, count: usize) {
        self.count = count;
    }

    /// Back to empty (on a GPU: two memsets queued on the stream, no synchronisation).
    pub fn reset(&mut self) -> Result<()> {
        match &mut self.acc {
            Accumulators::Host { loss_sum, correct } => {
                *loss_sum = 0.0;
                *correct = 0;
            }
            Accumulators::Cuda {
                gpu,
                loss_sum,
                correct,
            } => {
                gpu.memset_zeros(loss_sum)?;
                gpu.memset_zeros(correct)?;
            }
        }
        self.count = 0;
        Ok(())
    }

    /// Adds a batch computed on the host (internal: the CPU loss).
    pub(crate) fn add_host(&mut self, batch_loss_sum: f64, batch_correct: usize, n: usize) {
        match &mut self.acc {
            Accumulators::Host { loss_sum, correct } => {
                *loss_sum += batch_loss_sum;
                *correct += batch_correct;
            }
            Accumulators::Cuda { .. } => panic!("internal: a host batch added to a GPU meter"),
        }
        self.count += n;
    }

    /// The device accumulators, for the loss kernel to add `n` samples into (internal).
    #[track_caller]
    pub(crate) fn cuda_accumulators(
        &mut self,
        n: usize,
    ) -> (&mut CudaSlice<f64>, &mut CudaSlice<i32>) {
        self.count += n;
        match &mut self.acc {
            Accumulators::Cuda {
                loss_sum, correct, ..
            } => (loss_sum, correct),
            Accumulators::Host { .. } => panic!("internal: expected a GPU meter"),
        }
    }
}

impl fmt::Debug for LossMeter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LossMeter")
            .field("device", &self.device())
            .field("count", &self.count)
            .finish()
    }
}
