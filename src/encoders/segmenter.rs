//! The cut-out network: where the product is in a photo whose background is not plain (a cup on
//! a café table), which the border-growing mask ([`crate::input::mask`]) refuses.
//!
//! It is a `UNet2DConditionModel` with plain blocks (training/train_segmenter.py): RGB in, one
//! logit out, run once at timestep 0 with a single zero context token, so the denoiser's own
//! class, loader, quantisation and kernels run it. The photo is stretched to the network's square
//! (`sample_size` pixels a side: it was trained on crops of every aspect ratio stretched so) and
//! its logits are scaled back to the photo's size, bilinearly, before the sigmoid.
//!
//! It always runs on the CPU, whatever device the model is on: one pass of a 2 M-parameter network
//! takes about half a second there (native and in the browser), while on a GPU its first pass
//! compiles kernels for shapes no other model part has (4 minutes on SwiftShader; BENCHMARKS.md).

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use image::RgbaImage;
use image::imageops::{FilterType, resize};

use crate::denoise::config::UNetConfig;
use crate::denoise::unet::UNet2DConditionModel;
use crate::error::ModelError;
use crate::pack::weights::Weights;

/// The largest side a pack's segmenter may declare: its input is one image of that size.
const MAX_SIDE: usize = 1024;

#[derive(Module, Debug)]
pub struct Segmenter {
    unet: UNet2DConditionModel,
    side: usize,
    /// The empty prompt the cut-out UNet was trained with (computed, not a parameter).
    #[module(skip)]
    context: Tensor<3>,
    #[module(skip)]
    device: Device,
}

impl Segmenter {
    /// Refuses a config that is not a cut-out network (3 channels in, 1 out, a side the image is
    /// stretched to that its levels divide).
    pub fn check(config: &UNetConfig) -> Result<(), ModelError> {
        let side = config.sample_size;
        if config.in_channels != 3 || config.out_channels != 1 {
            return Err(ModelError::Unsupported(format!(
                "the segmenter must read 3 channels (RGB) and write 1 (the product's logit); this one reads {} and writes {}",
                config.in_channels, config.out_channels
            )));
        }
        if side == 0 || side > MAX_SIDE || !side.is_multiple_of(config.latent_multiple()) {
            return Err(ModelError::Unsupported(format!(
                "the segmenter's sample_size {side} must be a side of at most {MAX_SIDE} px that its {} levels divide",
                config.block_out_channels.len()
            )));
        }
        Ok(())
    }

    /// Builds the network from `w`, whose weights must be on the CPU device (`Device::flex()`).
    pub fn load(w: &Weights, config: &UNetConfig) -> Result<Self, ModelError> {
        Self::check(config)?;
        let device = Device::flex();
        Ok(Self {
            unet: UNet2DConditionModel::load(w, config)?,
            side: config.sample_size,
            context: Tensor::zeros([1, 1, config.cross_attention_dim], &device),
            device,
        })
    }

    /// The side of the square the network reads.
    pub fn side(&self) -> usize {
        self.side
    }

    /// The probability that each pixel of `photo` is product, row-major at the photo's size. The
    /// network reads the photo and its mirror image (one batch of two) and their logits are
    /// averaged, the mirror's flipped back: a mistake the network makes on one side of an object
    /// it rarely makes on both (+1 IoU point on the held-out photos, docs/EVAL.md).
    pub async fn probability(&self, photo: &RgbaImage) -> Result<Vec<f32>, String> {
        let side = self.side;
        let s = side as u32;
        let small =
            if photo.dimensions() == (s, s) { photo.clone() } else { resize(photo, s, s, FilterType::Triangle) };
        let n = side * side;
        // Pixel `i`'s place in the mirror image (its row reversed); its own inverse.
        let mirrored = |i: usize| i - i % side + (side - 1 - i % side);
        let mut planar = vec![0f32; 2 * 3 * n];
        for (i, p) in small.pixels().enumerate() {
            for c in 0..3 {
                let v = f32::from(p.0[c]) / 127.5 - 1.0;
                planar[c * n + i] = v;
                planar[(3 + c) * n + mirrored(i)] = v;
            }
        }
        let x = Tensor::<4>::from_data(TensorData::new(planar, [2, 3, side, side]), &self.device);
        let context = Tensor::cat(vec![self.context.clone(), self.context.clone()], 0);
        let logits = self.unet.forward(x, 0.0, &context);
        let logits = logits.into_data_async().await.map_err(|e| format!("{e:?}"))?;
        let logits = logits.try_to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
        let (plain, mirror) = logits.split_at(n);
        let mean: Vec<f32> = (0..n).map(|i| 0.5 * (plain[i] + mirror[mirrored(i)])).collect();
        let (w, h) = photo.dimensions();
        Ok(upsample_bilinear(&mean, side, w as usize, h as usize).into_iter().map(sigmoid).collect())
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `src` (`side`²) scaled to `w`×`h` as PyTorch's `interpolate(mode="bilinear",
/// align_corners=False)` scales it (what training/evaluate_segmenter.py scores).
fn upsample_bilinear(src: &[f32], side: usize, w: usize, h: usize) -> Vec<f32> {
    let coords = |n: usize| -> Vec<(usize, usize, f32)> {
        let scale = side as f32 / n as f32;
        (0..n)
            .map(|d| {
                let s = ((d as f32 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (s.floor() as usize).min(side - 1);
                let i1 = (i0 + 1).min(side - 1);
                (i0, i1, s - i0 as f32)
            })
            .collect()
    };
    let (xs, ys) = (coords(w), coords(h));
    let mut out = Vec::with_capacity(w * h);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            let top = src[y0 * side + x0] * (1.0 - fx) + src[y0 * side + x1] * fx;
            let bottom = src[y1 * side + x0] * (1.0 - fx) + src[y1 * side + x1] * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Torch's values for `interpolate(arange(4.).view(1, 1, 2, 2), size=(4, 4), mode="bilinear")`.
    #[test]
    fn upsampling_matches_torch_bilinear() {
        let out = upsample_bilinear(&[0.0, 1.0, 2.0, 3.0], 2, 4, 4);
        let torch = [0.0, 0.25, 0.75, 1.0, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2.0, 2.25, 2.75, 3.0];
        for (a, b) in out.iter().zip(torch) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
        assert_eq!(upsample_bilinear(&[0.0, 1.0, 2.0, 3.0], 2, 2, 2), vec![0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn a_denoiser_config_is_not_a_segmenter() {
        let mut config = UNetConfig::demo();
        assert!(Segmenter::check(&config).is_err());
        config.in_channels = 3;
        config.out_channels = 1;
        config.sample_size = 64;
        assert!(Segmenter::check(&config).is_ok(), "{:?}", Segmenter::check(&config));
        config.sample_size = 65;
        assert!(Segmenter::check(&config).is_err());
    }
}
