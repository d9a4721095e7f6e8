//! Model checkpoints in the safetensors format.
//!
//! safetensors is a plain, non-executable format (an 8-byte header length, a JSON header, raw
//! little-endian tensor bytes) that PyTorch, JAX and candle all read. Writing our weights
//! under PyTorch's `state_dict` names and dtypes means a user can inspect or reuse a checkpoint
//! with `safetensors.torch.load_file(path)` and `model.load_state_dict(...)`. That is why
//! tensors can be `I64` as well as `F32`: PyTorch keeps BatchNorm's `num_batches_tracked` as an
//! int64 scalar, and `load_state_dict` expects it. Free-form string metadata (architecture,
//! epoch, optimizer settings, ...) goes in the header's `__metadata__` map.
//!
//! Files are written with [`crate::engine::atomic::write_atomic`], so an interrupted save never
//! destroys the previous checkpoint.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, View};

use crate::engine::atomic::write_atomic;

/// Element data of a tensor, in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// 32-bit floats: weights, biases, BatchNorm running statistics, optimizer momenta.
    F32(Vec<f32>),
    /// 64-bit integers: counters such as BatchNorm's `num_batches_tracked`.
    I64(Vec<i64>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn dtype(&self) -> Dtype {
        match self {
            TensorData::F32(_) => Dtype::F32,
            TensorData::I64(_) => Dtype::I64,
        }
    }

    fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// One named tensor of a checkpoint, e.g. `layer1.0.conv1.weight` with shape `[16, 16, 3, 3]`.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    /// Unique name; use PyTorch's `state_dict` key for the same parameter.
    pub name: String,
    /// Dimensions, outermost first (PyTorch order: conv weights are `[out, in, kh, kw]`).
    pub shape: Vec<usize>,
    /// Elements; `data.len()` must equal the product of `shape` (1 for a scalar `[]`).
    pub data: TensorData,
}

impl NamedTensor {
    /// A float tensor.
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> Self {
        NamedTensor {
            name: name.into(),
            shape,
            data: TensorData::F32(data),
        }
    }

    /// An int64 tensor.
    pub fn i64(name: impl Into<String>, shape: Vec<usize>, data: Vec<i64>) -> Self {
        NamedTensor {
            name: name.into(),
            shape,
            data: TensorData::I64(data),
        }
    }

    /// The float elements, or `None` for an integer tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::I64(_) => None,
        }
    }

    /// The integer elements, or `None` for a float tensor.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::I64(v) => Some(v),
            TensorData::F32(_) => None,
        }
    }
}

/// Serialised bytes of one tensor, in the form the safetensors writer wants.
struct Encoded {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Encoded {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Encode tensors and metadata as safetensors bytes (no file I/O).
pub fn to_bytes(tensors: &[NamedTensor], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let mut seen = HashSet::new();
    let mut encoded = Vec::with_capacity(tensors.len());
    for t in tensors {
        if !seen.insert(t.name.as_str()) {
            bail!("duplicate tensor name `{}`", t.name);
        }
        let expected: usize = t.shape.iter().product();
        if expected != t.data.len() {
            bail!(
                "tensor `{}` has shape {:?} ({} elements) but {} values",
                t.name,
                t.shape,
                expected,
                t.data.len()
            );
        }
        let enc = Encoded {
            dtype: t.data.dtype(),
            shape: t.shape.clone(),
            bytes: t.data.to_le_bytes(),
        };
        encoded.push((t.name.clone(), enc));
    }
    let info: Option<HashMap<String, String>> = if metadata.is_empty() {
        None
    } else {
        Some(
            metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    };
    safetensors::serialize(encoded.iter().map(|(n, e)| (n.as_str(), e)), info)
        .context("cannot serialise safetensors")
}

/// Decode safetensors bytes: tensors sorted by name, and the `__metadata__` map.
///
/// Only `F32` and `I64` tensors are accepted; anything else (e.g. a half-precision export) is an
/// error naming the tensor and its dtype rather than a silent conversion.
pub fn from_bytes(bytes: &[u8]) -> Result<(Vec<NamedTensor>, BTreeMap<String, String>)> {
    let st = SafeTensors::deserialize(bytes).context("not a valid safetensors file")?;
    let (_, header) = SafeTensors::read_metadata(bytes).context("not a valid safetensors file")?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();

    let mut tensors = Vec::with_capacity(st.len());
    for (name, view) in st.iter() {
        let raw = view.data();
        let data = match view.dtype() {
            Dtype::F32 => TensorData::F32(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            Dtype::I64 => TensorData::I64(
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            other => bail!("tensor `{name}` has dtype {other:?}; only F32 and I64 are supported"),
        };
        tensors.push(NamedTensor {
            name: name.to_string(),
            shape: view.shape().to_vec(),
            data,
        });
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((tensors, metadata))
}

/// Atomically write a checkpoint: `tensors` as little-endian F32/I64 data, `metadata` in the
/// header's `__metadata__`. Tensor names must be unique and each shape must match its data.
pub fn save(
    path: &Path,
    tensors: &[NamedTensor],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let bytes = to_bytes(tensors, metadata)
        .with_context(|| format!("cannot save checkpoint {}", path.display()))?;
    write_atomic(path, &bytes).with_context(|| format!("cannot save checkpoint {}", path.display()))
}

/// Read a checkpoint written by [`save`] (or by `safetensors.torch.save_file`, as long as its
/// tensors are F32 or I64). Tensors come back sorted by name. Every error names the file.
///
/// A NaN or infinity in any tensor is an error naming the tensor and the count ([`ensure_finite`]):
/// every command (train, eval, predict, reproduce) loads through here, so such a checkpoint
/// never enters a run, where ReLU and BN would carry the NaN on to a loss the run then stops at.
pub fn load(path: &Path) -> Result<(Vec<NamedTensor>, BTreeMap<String, String>)> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let loaded = from_bytes(&bytes)
        .and_then(|(tensors, meta)| ensure_finite(&tensors).map(|()| (tensors, meta)));
    loaded.with_context(|| format!("cannot load checkpoint {}", path.display()))
}

/// Every float of every tensor is finite; otherwise an error naming each tensor that is not,
/// with how many of its values are NaN and how many infinite.
pub fn ensure_finite(tensors: &[NamedTensor]) -> Result<()> {
    const SHOWN: usize = 4;
    let bad: Vec<String> = tensors
        .iter()
        .filter_map(|t| {
            let v = t.as_f32()?;
            let nan = v.iter().filter(|x| x.is_nan()).count();
            let inf = v.iter().filter(|x| x.is_infinite()).count();
            let what = match (nan, inf) {
                (0, 0) => return None,
                (n, 0) => format!("{n} NaN"),
                (0, i) => format!("{i} infinite"),
                (n, i) => format!("{n} NaN and {i} infinite"),
            };
            Some(format!("`{}` has {what} of its {} values", t.name, v.len()))
        })
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    let more = match bad.len() {
        n if n > SHOWN => format!(", and {} more tensors", n - SHOWN),
        _ => String::new(),
    };
    bail!(
        "non-finite numbers in {} tensor{}: {}{more}",
        bad.len(),
        if bad.len() == 1 { "" } else { "s" },
        bad[..bad.len().min(SHOWN)].join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<NamedTensor>, BTreeMap<String, String>) {
        let tensors = vec![
            NamedTensor::f32(
                "conv1.weight",
                vec![2, 1, 3, 3],
                (0..18).map(|i| i as f32 * 0.25 - 2.0).collect(),
            ),
            NamedTensor::f32("bn1.running_var", vec![2], vec![1.5, f32::MIN_POSITIVE]),
            NamedTensor::i64("bn1.num_batches_tracked", vec![], vec![391 * 160]),
            NamedTensor::f32("fc.bias", vec![10], vec![-0.0; 10]),
            NamedTensor::f32("empty", vec![0, 4], vec![]),
        ];
        let mut meta = BTreeMap::new();
        meta.insert("arch".to_string(), "resnet20".to_string());
        meta.insert("epoch".to_string(), "17".to_string());
        (tensors, meta)
    }

    fn sorted(mut v: Vec<NamedTensor>) -> Vec<NamedTensor> {
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    #[test]
    fn round_trip_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        let (tensors, meta) = sample();
        save(&path, &tensors, &meta).unwrap();
        let (back, back_meta) = load(&path).unwrap();
        assert_eq!(back, sorted(tensors));
        assert_eq!(back_meta, meta);
        // Bit-exact floats, including the sign of zero.
        let bias = back.iter().find(|t| t.name == "fc.bias").unwrap();
        assert!(bias.as_f32().unwrap().iter().all(|x| x.is_sign_negative()));
        let nbt = back
            .iter()
            .find(|t| t.name == "bn1.num_batches_tracked")
            .unwrap();
        assert_eq!(nbt.as_i64(), Some(&[62560i64][..]));
        assert!(nbt.shape.is_empty());
    }

    #[test]
    fn file_layout_is_standard_safetensors() {
        // Check the bytes ourselves, independent of the library that wrote them: u64 header
        // length, JSON header with dtypes and `__metadata__`, then little-endian data.
        let t = vec![NamedTensor::f32("w", vec![2], vec![1.0, -2.0])];
        let mut meta = BTreeMap::new();
        meta.insert("k".to_string(), "v".to_string());
        let bytes = to_bytes(&t, &meta).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        assert_eq!(header["w"]["dtype"], "F32");
        assert_eq!(header["w"]["shape"], serde_json::json!([2]));
        assert_eq!(header["__metadata__"]["k"], "v");
        assert_eq!(&bytes[8 + n..], &[0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]);
    }

    #[test]
    fn empty_metadata_and_no_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.safetensors");
        save(&path, &[], &BTreeMap::new()).unwrap();
        let (t, m) = load(&path).unwrap();
        assert!(t.is_empty() && m.is_empty());
    }

    #[test]
    fn overwrite_replaces_content_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");
        let (tensors, meta) = sample();
        save(&path, &tensors, &meta).unwrap();
        let newer = vec![NamedTensor::f32("fc.bias", vec![1], vec![7.0])];
        save(&path, &newer, &BTreeMap::new()).unwrap();
        assert_eq!(load(&path).unwrap(), (newer, BTreeMap::new()));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["last.safetensors"]);
    }

    #[test]
    fn invalid_input_is_rejected_before_touching_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let (tensors, meta) = sample();
        save(&path, &tensors, &meta).unwrap();
        let before = std::fs::read(&path).unwrap();

        let bad_shape = vec![NamedTensor::f32("w", vec![2, 2], vec![1.0; 3])];
        let err = format!("{:#}", save(&path, &bad_shape, &meta).unwrap_err());
        assert!(
            err.contains("c.safetensors") && err.contains("`w`"),
            "{err}"
        );

        let dup = vec![
            NamedTensor::f32("w", vec![1], vec![1.0]),
            NamedTensor::i64("w", vec![1], vec![1]),
        ];
        let err = format!("{:#}", save(&path, &dup, &meta).unwrap_err());
        assert!(err.contains("duplicate"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn missing_truncated_and_garbage_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.safetensors");
        let err = format!("{:#}", load(&missing).unwrap_err());
        assert!(err.contains("missing.safetensors"), "{err}");

        let (tensors, meta) = sample();
        let bytes = to_bytes(&tensors, &meta).unwrap();
        let truncated = dir.path().join("truncated.safetensors");
        std::fs::write(&truncated, &bytes[..bytes.len() - 5]).unwrap();
        let err = format!("{:#}", load(&truncated).unwrap_err());
        assert!(err.contains("truncated.safetensors"), "{err}");

        let garbage = dir.path().join("garbage.safetensors");
        std::fs::write(&garbage, b"this is a CSV file, not a checkpoint\n").unwrap();
        let err = format!("{:#}", load(&garbage).unwrap_err());
        assert!(
            err.contains("garbage.safetensors") && err.contains("safetensors"),
            "{err}"
        );

        let tiny = dir.path().join("tiny.safetensors");
        std::fs::write(&tiny, b"abc").unwrap();
        assert!(format!("{:#}", load(&tiny).unwrap_err()).contains("tiny.safetensors"));
    }

    #[test]
    fn non_finite_values_are_an_error_naming_each_tensor_and_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.safetensors");
        let (mut tensors, meta) = sample();
        if let TensorData::F32(v) = &mut tensors[0].data {
            v[3] = f32::NAN;
        }
        if let TensorData::F32(v) = &mut tensors[1].data {
            v[1] = f32::NEG_INFINITY;
        }
        // Written as is (a checkpoint from elsewhere can hold anything), refused on load.
        save(&path, &tensors, &meta).unwrap();
        let err = format!("{:#}", load(&path).unwrap_err());
        assert!(err.contains("nan.safetensors"), "{err}");
        assert!(
            err.contains("non-finite numbers in 2 tensors")
                && err.contains("`conv1.weight` has 1 NaN of its 18 values")
                && err.contains("`bn1.running_var` has 1 infinite of its 2 values"),
            "{err}"
        );
        // Many tensors: four named, the rest counted.
        let many: Vec<NamedTensor> = (0..6)
            .map(|i| NamedTensor::f32(format!("t{i}"), vec![2], vec![f32::NAN, f32::INFINITY]))
            .collect();
        let err = format!("{:#}", ensure_finite(&many).unwrap_err());
        assert!(
            err.contains("`t3` has 1 NaN and 1 infinite of its 2 values")
                && !err.contains("`t4`")
                && err.ends_with(", and 2 more tensors"),
            "{err}"
        );
        let (clean, _) = sample();
        ensure_finite(&clean).unwrap();
    }

    #[test]
    fn other_dtypes_are_an_error_naming_tensor_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("half.safetensors");
        let half =
            safetensors::tensor::TensorView::new(Dtype::F16, vec![2], &[0, 0x3c, 0, 0x40]).unwrap();
        let bytes = safetensors::serialize([("h", half)], None).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let err = format!("{:#}", load(&path).unwrap_err());
        assert!(err.contains("half.safetensors"), "{err}");
        assert!(err.contains("`h`") && err.contains("F16"), "{err}");
    }
}
