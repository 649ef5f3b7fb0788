//! Weights by name: the module tree spells the checkpoint keys.
//!
//! Like candle's `VarBuilder`, a [`Weights`] value carries a key prefix and hands out
//! tensors by their diffusers parameter names (`down_blocks.0.resnets.1.conv1.weight`),
//! checking each shape against what the layer expects. The same code path can also
//! *create* weights (seeded uniform, PyTorch's default bounds) and record them, which is
//! how the committed demo-model script writes a pack without a second description of
//! the architecture.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, SafeTensors};

/// Why a model file could not be used. Messages are written for the person who chose the file.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelError {
    /// The file is not a safetensors file or was cut short.
    Corrupt { file: String, reason: String },
    /// A tensor the architecture needs is not in the file.
    Missing { name: String },
    /// A tensor has another shape than the architecture (config) says.
    Shape { name: String, expected: Vec<usize>, got: Vec<usize> },
    /// A tensor is stored in an element type we do not read.
    Dtype { name: String, dtype: String },
    /// The pack's manifest is missing, unreadable or of an unknown format version.
    Manifest(String),
    /// A file's SHA-256 differs from the manifest: wrong or damaged download.
    Checksum { file: String, expected: String, got: String },
    /// The config describes an architecture we do not build (yet).
    Unsupported(String),
    /// Reading a file failed.
    Io(String),
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelError::Corrupt { file, reason } => write!(
                f,
                "The model file {file} is damaged or truncated ({reason}). Download the model again."
            ),
            ModelError::Missing { name } => write!(
                f,
                "The model file has no tensor named {name}: it is not a model of the architecture its config describes."
            ),
            ModelError::Shape { name, expected, got } => write!(
                f,
                "The model tensor {name} has shape {got:?} but the config needs {expected:?}: the weights and the config do not belong together."
            ),
            ModelError::Dtype { name, dtype } => {
                write!(f, "The model tensor {name} is stored as {dtype}; adcanvas reads F32, F16, BF16 and its own q8/q4 blocks.")
            }
            ModelError::Manifest(m) => write!(f, "The model pack's manifest is not usable: {m}"),
            ModelError::Checksum { file, expected, got } => write!(
                f,
                "The model file {file} does not match its manifest (sha256 {got}, expected {expected}): it is the wrong file or damaged. Download the model again."
            ),
            ModelError::Unsupported(m) => write!(f, "This model is not supported: {m}"),
            ModelError::Io(m) => write!(f, "The model could not be read: {m}"),
        }
    }
}

impl std::error::Error for ModelError {}

/// How a freshly created weight is initialised (only used when creating a model).
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for conv and linear layers.
    FanIn(usize),
    /// All ones (norm scales).
    Ones,
    /// All zeros (norm shifts).
    Zeros,
}

/// Weights created by [`Weights::random`], recorded so they can be saved as safetensors.
#[derive(Default)]
pub struct CreatedWeights {
    seed: u64,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl CreatedWeights {
    /// The recorded tensors as a safetensors file (F32, sorted keys: byte-identical for one seed).
    pub fn to_safetensors(&self) -> Vec<u8> {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = self
            .tensors
            .iter()
            .map(|(name, (shape, values))| {
                let bytes: &[u8] = bytemuck::cast_slice(values);
                (
                    name.clone(),
                    safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                        .expect("shape and byte length agree by construction"),
                )
            })
            .collect();
        safetensors::serialize(views, None).expect("serialising in-memory tensors cannot fail")
    }

    /// Number of parameters created.
    pub fn parameter_count(&self) -> usize {
        self.tensors.values().map(|(_, v)| v.len()).sum()
    }
}


enum Source<'a> {
    File { file: String, tensors: Arc<SafeTensors<'a>> },
    Create(Arc<Mutex<CreatedWeights>>),
}

impl Clone for Source<'_> {
    fn clone(&self) -> Self {
        match self {
            Source::File { file, tensors } => Source::File { file: file.clone(), tensors: tensors.clone() },
            Source::Create(c) => Source::Create(c.clone()),
        }
    }
}

/// A view of a weight file (or a weight creator) under a key prefix.
#[derive(Clone)]
pub struct Weights<'a> {
    source: Source<'a>,
    prefix: String,
    device: Device,
}

impl<'a> Weights<'a> {
    /// Reads tensors from safetensors bytes. `file` names the file in error messages.
    pub fn from_safetensors(file: &str, bytes: &'a [u8], device: &Device) -> Result<Self, ModelError> {
        let tensors = SafeTensors::deserialize(bytes)
            .map_err(|e| ModelError::Corrupt { file: file.to_string(), reason: e.to_string() })?;
        Ok(Self {
            source: Source::File { file: file.to_string(), tensors: Arc::new(tensors) },
            prefix: String::new(),
            device: device.clone(),
        })
    }

    /// Creates weights instead of reading them; the returned handle collects what was made.
    pub fn random(seed: u64, device: &Device) -> (Self, Arc<Mutex<CreatedWeights>>) {
        let created = Arc::new(Mutex::new(CreatedWeights { seed, tensors: BTreeMap::new() }));
        (
            Self { source: Source::Create(created.clone()), prefix: String::new(), device: device.clone() },
            created,
        )
    }

    /// The device tensors are placed on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The same source one key segment deeper (`pp` as in candle).
    pub fn pp(&self, segment: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() { segment.to_string() } else { format!("{}.{segment}", self.prefix) };
        Self { source: self.source.clone(), prefix, device: self.device.clone() }
    }

    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) }
    }

    /// Whether the source holds `name` (always false when creating).
    pub fn contains(&self, name: &str) -> bool {
        match &self.source {
            Source::File { tensors, .. } => tensors.tensor(&self.key(name)).is_ok(),
            Source::Create(_) => false,
        }
    }

    /// The tensor `name` under this prefix, which must have exactly `shape`.
    pub fn tensor<const D: usize>(&self, name: &str, shape: [usize; D], init: Init) -> Result<Tensor<D>, ModelError> {
        let values = self.values(name, &shape, init)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), &self.device))
    }

    /// The values of `name` (exactly `shape`) on the CPU, for weights that are only ever
    /// indexed, never multiplied (token embedding tables).
    pub fn values(&self, name: &str, shape: &[usize], init: Init) -> Result<Vec<f32>, ModelError> {
        let key = self.key(name);
        Ok(match &self.source {
            Source::File { file, tensors } => {
                let view = tensors.tensor(&key).map_err(|e| match e {
                    safetensors::SafeTensorError::TensorNotFound(_) => ModelError::Missing { name: key.clone() },
                    other => ModelError::Corrupt { file: file.clone(), reason: other.to_string() },
                })?;
                match view.dtype() {
                    Dtype::I8 | Dtype::U8 => dequantize(file, tensors, &key, &view, shape)?,
                    dtype => {
                        if view.shape() != shape {
                            return Err(ModelError::Shape { name: key, expected: shape.to_vec(), got: view.shape().to_vec() });
                        }
                        decode_f32(&key, dtype, view.data())?
                    }
                }
            }
            Source::Create(created) => {
                let mut created = created.lock().expect("weight creator poisoned");
                let n: usize = shape.iter().product();
                let values = create_values(created.seed, &key, n, init);
                created.tensors.insert(key, (shape.to_vec(), values.clone()));
                values
            }
        })
    }
}

/// Reads a block-quantised tensor (`q8`: I8 in the tensor's shape; `q4`: U8 `[n / 2]`)
/// and its `.q_scale` companion (see [`crate::quant`]).
fn dequantize(
    file: &str,
    tensors: &SafeTensors<'_>,
    key: &str,
    view: &safetensors::tensor::TensorView<'_>,
    shape: &[usize],
) -> Result<Vec<f32>, ModelError> {
    use crate::quant::{SCALE_SUFFIX, dequantize_q4, dequantize_q8};
    let n: usize = shape.iter().product();
    let q4 = view.dtype() == Dtype::U8;
    let shape_ok = if q4 { view.shape() == [n / 2] && n % 2 == 0 } else { view.shape() == shape };
    if !shape_ok {
        return Err(ModelError::Shape { name: key.to_string(), expected: shape.to_vec(), got: view.shape().to_vec() });
    }
    let scale_key = format!("{key}{SCALE_SUFFIX}");
    let scales = tensors.tensor(&scale_key).map_err(|_| ModelError::Corrupt {
        file: file.to_string(),
        reason: format!("{key} is quantised but {scale_key} is missing"),
    })?;
    if scales.dtype() != Dtype::F16 {
        return Err(ModelError::Dtype { name: scale_key, dtype: format!("{:?}", scales.dtype()) });
    }
    let scales: Vec<half::f16> = scales.data().chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]])).collect();
    let values = if q4 { dequantize_q4(view.data(), &scales) } else { dequantize_q8(view.data(), &scales) };
    values.ok_or_else(|| ModelError::Corrupt {
        file: file.to_string(),
        reason: format!("{key}: {} quantised bytes do not match {} scales", view.data().len(), scales.len()),
    })
}

/// Decodes little-endian F32/F16/BF16 bytes to f32 (also used by the converter).
pub(crate) fn decode_f32(name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>, ModelError> {
    Ok(match dtype {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => return Err(ModelError::Dtype { name: name.to_string(), dtype: format!("{other:?}") }),
    })
}

/// Seeded values for one tensor: the stream depends on the seed and the full key only,
/// so adding a layer elsewhere does not change existing weights.
fn create_values(seed: u64, key: &str, n: usize, init: Init) -> Vec<f32> {
    match init {
        Init::Ones => vec![1.0; n],
        Init::Zeros => vec![0.0; n],
        Init::FanIn(fan_in) => {
            let mut h: u64 = seed ^ 0xcbf2_9ce4_8422_2325;
            for b in key.bytes() {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            let mut rng = ChaCha8Rng::seed_from_u64(h);
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        }
    }
}
