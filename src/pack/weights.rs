//! Weights by name: the module tree spells the checkpoint keys.
//!
//! Like candle's `VarBuilder`, a [`Weights`] value carries a key prefix and hands out
//! tensors by their diffusers parameter names (`down_blocks.0.resnets.1.conv1.weight`),
//! checking each shape against what the layer expects. The same code path can also
//! *create* weights (seeded uniform, PyTorch's default bounds) and record them, which is
//! how the committed demo-model script writes a pack without a second description of
//! the architecture.
//!
//! Layer weights come back as a [`Weight`]: f32, or — for a q8/q4 pack loaded with
//! [`QuantizedWeights::Keep`] — the pack's blocks as a burn quantised tensor, expanded to f32
//! layer by layer as the model runs, so device memory holds 0.28 (q8) or 0.16 (q4) of the
//! f32 weights.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use burn::module::Module;
use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, SafeTensors};

use crate::error::ModelError;

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

#[cfg(test)]
impl CreatedWeights {
    /// Sets every value of the created tensor `key` (tests zero a layer this way, then load
    /// the model again from [`CreatedWeights::to_safetensors`]).
    pub(crate) fn fill(&mut self, key: &str, value: f32) {
        let (_, values) = self.tensors.get_mut(key).unwrap_or_else(|| panic!("no created tensor {key}"));
        values.fill(value);
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

/// What loading does with a pack's block-quantised (q8, q4) weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuantizedWeights {
    /// Expand them to f32 once, at load: the fastest to run, 4 bytes a weight on the device.
    #[default]
    Expand,
    /// Keep them quantised on the device (burn `Q8S`/`Q4S`, blocks of 32: the pack's own
    /// values, so results are the same) and expand each layer's weight when it runs: 1 byte
    /// (q8) or ½ byte (q4) a weight plus ⅛ byte of f32 scale, and one extra kernel per layer
    /// call. For models whose f32 weights would not fit (SD 1.5 is 3.4 GiB).
    Keep,
}

impl QuantizedWeights {
    /// Above this many bytes of f32 weights, a pack's weights stay quantised
    /// ([`crate::pack::Manifest::quantized_weights`]).
    pub const KEEP_ABOVE_BYTES: u64 = 1 << 30;
}

/// A float tensor as a burn module parameter. Ours are never trained here (inference only),
/// so they are made initialised, without asking for gradients.
pub type FloatParam<const D: usize> = burn::module::Param<Tensor<D>>;

/// `tensor` as a [`FloatParam`] with a fresh id.
pub fn float_param<const D: usize>(tensor: Tensor<D>) -> FloatParam<D> {
    burn::module::Param::initialized(burn::module::ParamId::new(), tensor)
}

/// A layer weight as the device holds it: f32, or the pack's quantised blocks. Either way a
/// burn parameter, so the models' `Module` derives reach it (burn's visitors, device moves,
/// parameter counts, snapshots).
#[derive(Module, Debug)]
pub enum Weight<const D: usize> {
    Float(FloatParam<D>),
    Quantized(QuantizedWeight<D>),
}

/// Block-quantised values, flat (blocks of 32 run over the row-major elements, as in the
/// pack), and the shape to give them when expanded.
#[derive(Module, Debug)]
pub struct QuantizedWeight<const D: usize> {
    pub blocks: FloatParam<1>,
    #[module(skip)]
    pub shape: [usize; D],
}

impl<const D: usize> Weight<D> {
    /// The weight in f32 (for a quantised one, expanded now: a temporary the size of this
    /// layer's weight).
    pub fn value(&self) -> Tensor<D> {
        match self {
            Weight::Float(t) => t.val(),
            Weight::Quantized(q) => q.blocks.val().dequantize().reshape(q.shape),
        }
    }
}

/// A view of a weight file (or a weight creator) under a key prefix.
#[derive(Clone)]
pub struct Weights<'a> {
    source: Source<'a>,
    prefix: String,
    device: Device,
    quantized: QuantizedWeights,
    /// Bytes of tensors placed on the device so far, shared by every view of this source.
    device_bytes: Arc<AtomicU64>,
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
            quantized: QuantizedWeights::default(),
            device_bytes: Arc::default(),
        })
    }

    /// The same weights, with `mode` for the quantised ones ([`Weights::param`]).
    pub fn with_quantized(self, mode: QuantizedWeights) -> Self {
        Self { quantized: mode, ..self }
    }

    /// Creates weights instead of reading them; the returned handle collects what was made.
    pub fn random(seed: u64, device: &Device) -> (Self, Arc<Mutex<CreatedWeights>>) {
        let created = Arc::new(Mutex::new(CreatedWeights { seed, tensors: BTreeMap::new() }));
        (
            Self {
                source: Source::Create(created.clone()),
                prefix: String::new(),
                device: device.clone(),
                quantized: QuantizedWeights::default(),
                device_bytes: Arc::default(),
            },
            created,
        )
    }

    /// The device tensors are placed on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes placed on the device through this source (any of its views) so far: 4 a value
    /// for f32 tensors, the packed values and scales for quantised ones.
    pub fn device_bytes(&self) -> u64 {
        self.device_bytes.load(Ordering::Relaxed)
    }

    /// The same source one key segment deeper (`pp` as in candle).
    pub fn pp(&self, segment: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() { segment.to_string() } else { format!("{}.{segment}", self.prefix) };
        Self {
            source: self.source.clone(),
            prefix,
            device: self.device.clone(),
            quantized: self.quantized,
            device_bytes: self.device_bytes.clone(),
        }
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
        self.device_bytes.fetch_add(4 * values.len() as u64, Ordering::Relaxed);
        Ok(Tensor::from_data(TensorData::new(values, shape), &self.device))
    }

    /// [`Weights::tensor`] as a module parameter (norm scales, biases, embeddings).
    pub fn float<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        init: Init,
    ) -> Result<FloatParam<D>, ModelError> {
        self.tensor(name, shape, init).map(float_param)
    }

    /// A layer weight (conv, linear): like [`Weights::tensor`], except that a quantised pack
    /// tensor stays quantised on the device under [`QuantizedWeights::Keep`].
    pub fn param<const D: usize>(&self, name: &str, shape: [usize; D], init: Init) -> Result<Weight<D>, ModelError> {
        if let (QuantizedWeights::Keep, Source::File { file, tensors }) = (self.quantized, &self.source) {
            let key = self.key(name);
            if let Ok(view) = tensors.tensor(&key)
                && matches!(view.dtype(), Dtype::I8 | Dtype::U8)
            {
                let data = burn_blocks(file, tensors, &key, &view, &shape)?;
                self.device_bytes.fetch_add(data.as_bytes().len() as u64, Ordering::Relaxed);
                return Ok(Weight::Quantized(QuantizedWeight {
                    blocks: float_param(Tensor::from_data(data, &self.device)),
                    shape,
                }));
            }
        }
        self.float(name, shape, init).map(Weight::Float)
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
                            return Err(ModelError::Shape {
                                name: key,
                                expected: shape.to_vec(),
                                got: view.shape().to_vec(),
                            });
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

/// A block-quantised pack tensor, checked: its value bytes (`q8`: one i8 a value; `q4`: two
/// values a byte, low nibble first, each offset by 8) and its f16 scales, one per 32 values.
struct Blocks<'a> {
    n: usize,
    values: &'a [u8],
    scales: Vec<half::f16>,
    q4: bool,
}

/// Reads a block-quantised tensor (`q8`: I8 in the tensor's shape; `q4`: U8 `[n / 2]`)
/// and its `.q_scale` companion (see [`crate::pack::quant`]).
fn read_blocks<'a>(
    file: &str,
    tensors: &SafeTensors<'a>,
    key: &str,
    view: &safetensors::tensor::TensorView<'a>,
    shape: &[usize],
) -> Result<Blocks<'a>, ModelError> {
    use crate::pack::quant::{BLOCK, SCALE_SUFFIX};
    let n: usize = shape.iter().product();
    let q4 = view.dtype() == Dtype::U8;
    let shape_ok = if q4 { view.shape() == [n / 2] && n.is_multiple_of(2) } else { view.shape() == shape };
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
    let scales: Vec<half::f16> =
        scales.data().chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]])).collect();
    if n != scales.len() * BLOCK {
        return Err(ModelError::Corrupt {
            file: file.to_string(),
            reason: format!("{key}: {n} quantised values do not match {} scales", scales.len()),
        });
    }
    Ok(Blocks { n, values: view.data(), scales, q4 })
}

/// Expands a block-quantised tensor to f32 (code × its block's scale).
fn dequantize(
    file: &str,
    tensors: &SafeTensors<'_>,
    key: &str,
    view: &safetensors::tensor::TensorView<'_>,
    shape: &[usize],
) -> Result<Vec<f32>, ModelError> {
    use crate::pack::quant::{dequantize_q4, dequantize_q8};
    let b = read_blocks(file, tensors, key, view, shape)?;
    let values = if b.q4 { dequantize_q4(b.values, &b.scales) } else { dequantize_q8(b.values, &b.scales) };
    Ok(values.expect("sizes checked by read_blocks"))
}

/// A block-quantised pack tensor as burn's own quantised data, flat `[n]`, without expanding
/// it: burn's `Q8S`/`Q4S` with blocks of 32, values packed in u32 words (lowest bits first)
/// and followed by the scales. The values are the pack's bytes as they are for q8 (one
/// two's-complement byte a value); q4 nibbles are stored offset by 8 in the pack and as two's
/// complement in burn, which is `nibble ^ 8`. The scales go to the device as f32, not as the
/// pack's f16: Chromium's WebGPU (SwiftShader) expanded f16-scaled blocks wrongly (up to 82
/// of 255 levels off in the image; right on native wgpu), f32-scaled ones exactly.
fn burn_blocks(
    file: &str,
    tensors: &SafeTensors<'_>,
    key: &str,
    view: &safetensors::tensor::TensorView<'_>,
    shape: &[usize],
) -> Result<TensorData, ModelError> {
    let b = read_blocks(file, tensors, key, view, shape)?;
    Ok(blocks_data(&b))
}

fn blocks_data(b: &Blocks<'_>) -> TensorData {
    use burn::tensor::DType;
    let scheme = QuantScheme::default()
        .with_value(if b.q4 { QuantValue::Q4S } else { QuantValue::Q8S })
        .with_store(QuantStore::PackedU32(0))
        .per_block([crate::pack::quant::BLOCK as u8], ScaleDtype::F32);
    // n is a multiple of 32, so the values fill whole u32 words and the scales need no padding.
    let mut bytes: Vec<u8> = if b.q4 { b.values.iter().map(|v| v ^ 0x88).collect() } else { b.values.to_vec() };
    bytes.extend(b.scales.iter().flat_map(|s| s.to_f32().to_ne_bytes()));
    TensorData::from_bytes_vec(bytes, [b.n], DType::QFloat(scheme))
}

impl<const D: usize> Weight<D> {
    /// `values` (row-major, `shape`) quantised as a pack stores them (`q4`, else q8) and kept
    /// quantised on `device`, as [`QuantizedWeights::Keep`] loads them: for the kernel checks
    /// and benchmarks, which need a quantised layer without a pack file.
    pub fn quantize(values: &[f32], shape: [usize; D], q4: bool, device: &Device) -> Self {
        use crate::pack::quant::{quantize_q4, quantize_q8};
        let (bytes, scales) = if q4 {
            quantize_q4(values)
        } else {
            let (q, s) = quantize_q8(values);
            (q.into_iter().map(|v| v as u8).collect(), s)
        };
        let data = blocks_data(&Blocks { n: values.len(), values: &bytes, scales, q4 });
        Weight::Quantized(QuantizedWeight { blocks: float_param(Tensor::from_data(data, device)), shape })
    }
}

/// Decodes little-endian F32/F16/BF16 bytes to f32 (also used by the converter).
pub(crate) fn decode_f32(name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>, ModelError> {
    Ok(match dtype {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::quant::{SCALE_SUFFIX, quantize_q4, quantize_q8};

    /// A safetensors file of `(name, dtype, shape, bytes)` entries.
    fn file(entries: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = entries
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                (name.to_string(), safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).unwrap())
            })
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn f16_bytes(values: &[half::f16]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn ramp(n: usize) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.37).sin() * 0.8).collect()
    }

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// `pp` segments spell the diffusers key; f32, f16 and bf16 tensors all read as f32.
    #[test]
    fn keys_follow_the_module_path_and_float_dtypes_decode() {
        let w = ramp(6);
        let bytes = file(&[
            ("down_blocks.0.resnets.1.conv1.weight", Dtype::F32, vec![2, 3], f32_bytes(&w)),
            ("norm.weight", Dtype::F16, vec![2], f16_bytes(&[half::f16::from_f32(0.5), half::f16::from_f32(-2.0)])),
            ("norm.bias", Dtype::BF16, vec![1], half::bf16::from_f32(3.0).to_le_bytes().to_vec()),
        ]);
        let device = Device::flex();
        let root = Weights::from_safetensors("unet.safetensors", &bytes, &device).unwrap();
        let conv = root.pp("down_blocks").pp(0).pp("resnets").pp(1).pp("conv1");
        assert!(conv.contains("weight") && !conv.contains("bias"));
        assert_eq!(host(conv.tensor("weight", [2, 3], Init::Zeros).unwrap()), w);
        assert_eq!(root.values("norm.weight", &[2], Init::Zeros).unwrap(), vec![0.5, -2.0]);
        assert_eq!(root.values("norm.bias", &[1], Init::Zeros).unwrap(), vec![3.0]);
        assert_eq!(root.device_bytes(), 4 * 6, "only the tensor placed on the device counts");
    }

    /// A missing tensor names its whole key; a wrong shape names both shapes; an unread dtype
    /// says which; bytes that are not safetensors say so, with the file's name.
    #[test]
    fn wrong_files_get_errors_that_name_the_tensor() {
        let bytes = file(&[
            ("a.weight", Dtype::F32, vec![4], f32_bytes(&ramp(4))),
            ("a.steps", Dtype::I64, vec![1], 7i64.to_le_bytes().to_vec()),
        ]);
        let device = Device::flex();
        let w = Weights::from_safetensors("x.safetensors", &bytes, &device).unwrap().pp("a");
        match w.tensor("bias", [4], Init::Zeros) {
            Err(ModelError::Missing { name }) => assert_eq!(name, "a.bias"),
            other => panic!("expected Missing, got {:?}", other.err()),
        }
        match w.tensor("weight", [2, 2], Init::Zeros) {
            Err(ModelError::Shape { name, expected, got }) => {
                assert_eq!((name.as_str(), expected, got), ("a.weight", vec![2, 2], vec![4]))
            }
            other => panic!("expected Shape, got {:?}", other.err()),
        }
        assert!(matches!(w.tensor("steps", [1], Init::Zeros), Err(ModelError::Dtype { .. })));
        match Weights::from_safetensors("y.safetensors", &bytes[..bytes.len() / 2], &device) {
            Err(ModelError::Corrupt { file, .. }) => assert_eq!(file, "y.safetensors"),
            Err(other) => panic!("expected Corrupt, got {other:?}"),
            Ok(_) => panic!("a truncated file loaded"),
        }
    }

    /// q8 and q4 pack tensors: expanded at load or kept quantised on the device, a layer sees
    /// the same values (the pack's codes × their block scales), and keeping them puts under a
    /// third of the f32 bytes on the device (q8 0.28, q4 0.16, scales included).
    #[test]
    fn quantised_tensors_read_the_same_kept_or_expanded() {
        let values = ramp(128);
        let (q8, s8) = quantize_q8(&values);
        let (q4, s4) = quantize_q4(&values);
        let q8_bytes: Vec<u8> = q8.iter().map(|v| *v as u8).collect();
        let bytes = file(&[
            ("l8.weight", Dtype::I8, vec![4, 32], q8_bytes),
            (&format!("l8.weight{SCALE_SUFFIX}"), Dtype::F16, vec![s8.len()], f16_bytes(&s8)),
            ("l4.weight", Dtype::U8, vec![64], q4),
            (&format!("l4.weight{SCALE_SUFFIX}"), Dtype::F16, vec![s4.len()], f16_bytes(&s4)),
            ("bare.weight", Dtype::I8, vec![32], vec![1; 32]),
        ]);
        let device = Device::flex();
        for layer in ["l8", "l4"] {
            let expand = Weights::from_safetensors("q.safetensors", &bytes, &device).unwrap();
            let keep = Weights::from_safetensors("q.safetensors", &bytes, &device)
                .unwrap()
                .with_quantized(QuantizedWeights::Keep);
            let a = expand.pp(layer).param("weight", [4, 32], Init::Zeros).unwrap();
            let b = keep.pp(layer).param("weight", [4, 32], Init::Zeros).unwrap();
            assert!(matches!(a, Weight::Float(_)) && matches!(b, Weight::Quantized(_)), "{layer}");
            let (a, b) = (host(a.value()), host(b.value()));
            let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            assert_eq!(worst, 0.0, "{layer}: kept and expanded values differ by {worst}");
            let err = a.iter().zip(&values).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            let step = if layer == "l8" { 0.8 / 127.0 } else { 0.8 / 7.0 };
            assert!(err <= step, "{layer}: {err} from the original values, more than one quantisation step");
            assert!(keep.device_bytes() < expand.device_bytes() / 3, "{layer}: kept weights not smaller");
        }
        let w = Weights::from_safetensors("q.safetensors", &bytes, &device).unwrap();
        match w.tensor("bare.weight", [32], Init::Zeros) {
            Err(ModelError::Corrupt { reason, .. }) => assert!(reason.contains(SCALE_SUFFIX), "{reason}"),
            other => panic!("a q8 tensor without scales loaded: {:?}", other.err()),
        }
    }

    /// Created weights depend on the seed and the key only, and what was created reads back
    /// unchanged from its safetensors file.
    #[test]
    fn created_weights_are_seeded_by_key_and_round_trip() {
        let device = Device::flex();
        let make = |seed, extra: bool| {
            let (w, created) = Weights::random(seed, &device);
            if extra {
                w.pp("other").tensor("weight", [5], Init::FanIn(5)).unwrap();
            }
            let t = host(w.pp("conv").tensor("weight", [3, 4], Init::FanIn(4)).unwrap());
            w.pp("norm").tensor("weight", [3], Init::Ones).unwrap();
            (t, created)
        };
        let (a, created) = make(7, false);
        let (b, _) = make(7, true);
        let (c, _) = make(8, false);
        assert_eq!(a, b, "adding a layer elsewhere changed a weight");
        assert_ne!(a, c, "another seed gave the same weights");
        assert!(a.iter().all(|v| v.abs() <= 0.5), "FanIn(4) bound is 1/√4");
        let created = created.lock().unwrap();
        assert_eq!(created.parameter_count(), 15);
        let bytes = created.to_safetensors();
        let back = Weights::from_safetensors("made.safetensors", &bytes, &device).unwrap();
        assert_eq!(back.values("conv.weight", &[3, 4], Init::Zeros).unwrap(), a);
        assert_eq!(back.values("norm.weight", &[3], Init::Zeros).unwrap(), vec![1.0; 3]);
    }
}
