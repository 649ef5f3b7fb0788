//! diffusers' `ResnetBlock2D`, shared by the UNet, the ControlNet and the KL VAE.

use burn::module::Module;
use burn::tensor::Tensor;

use super::{Conv2d, GroupNorm, Linear, silu};
use crate::error::ModelError;
use crate::pack::weights::Weights;

/// diffusers' `ResnetBlock2D` with a time embedding (`resnet_time_scale_shift="default"`).
#[derive(Module, Debug)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    /// `temb_channels` is `None` in the VAE, whose resnets have no time input.
    pub fn load(
        w: &Weights,
        c_in: usize,
        c_out: usize,
        temb_channels: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            norm1: GroupNorm::load(&w.pp("norm1"), groups, c_in, eps)?,
            conv1: Conv2d::load(&w.pp("conv1"), c_in, c_out, 3, 1, 1)?,
            time_emb_proj: temb_channels.map(|t| Linear::load(&w.pp("time_emb_proj"), t, c_out, true)).transpose()?,
            norm2: GroupNorm::load(&w.pp("norm2"), groups, c_out, eps)?,
            conv2: Conv2d::load(&w.pp("conv2"), c_out, c_out, 3, 1, 1)?,
            conv_shortcut: if c_in != c_out {
                Some(Conv2d::load(&w.pp("conv_shortcut"), c_in, c_out, 1, 1, 0)?)
            } else {
                None
            },
        })
    }

    /// # Shapes
    /// - x: `[batch, c_in, h, w]`, temb: `[batch, temb_channels]` → `[batch, c_out, h, w]`
    pub fn forward(&self, x: Tensor<4>, temb: Option<&Tensor<2>>) -> Tensor<4> {
        let mut h = self.conv1.forward(self.norm1.forward_silu(x.clone()));
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t: Tensor<2> = proj.forward(silu(temb.clone()));
            let [b, c] = t.dims();
            h = h + t.reshape([b, c, 1, 1]);
        }
        let h = self.conv2.forward(self.norm2.forward_silu(h));
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        shortcut + h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Tensor};

    fn max_abs(t: Tensor<4>) -> f32 {
        t.abs().max().into_scalar()
    }

    /// With its second conv zeroed the block is its skip path: the input itself when the
    /// widths agree, the 1×1 shortcut conv when they do not; the time embedding only reaches
    /// the output through the residual branch.
    #[test]
    fn the_residual_branch_adds_to_the_skip_path() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 8, 6, 5], Distribution::Normal(0.0, 1.0), &device);
        let temb = Tensor::<2>::random([2, 16], Distribution::Normal(0.0, 1.0), &device);
        let (w, created) = Weights::random(3, &device);
        let random = ResnetBlock2D::load(&w, 8, 8, Some(16), 4, 1e-5).unwrap();
        assert!(max_abs(random.forward(x.clone(), Some(&temb)) - x.clone()) > 1e-2, "random branch adds nothing");
        let bytes = {
            let mut c = created.lock().unwrap();
            c.fill("conv2.weight", 0.0);
            c.fill("conv2.bias", 0.0);
            c.to_safetensors()
        };
        let w = Weights::from_safetensors("resnet.safetensors", &bytes, &device).unwrap();
        let block = ResnetBlock2D::load(&w, 8, 8, Some(16), 4, 1e-5).unwrap();
        assert_eq!(
            max_abs(block.forward(x.clone(), Some(&temb)) - x.clone()),
            0.0,
            "zeroed branch is not the identity"
        );

        let (w, created) = Weights::random(4, &device);
        ResnetBlock2D::load(&w, 8, 12, None, 4, 1e-5).unwrap();
        let bytes = {
            let mut c = created.lock().unwrap();
            c.fill("conv2.weight", 0.0);
            c.fill("conv2.bias", 0.0);
            c.to_safetensors()
        };
        let w = Weights::from_safetensors("resnet.safetensors", &bytes, &device).unwrap();
        let block = ResnetBlock2D::load(&w, 8, 12, None, 4, 1e-5).unwrap();
        let shortcut = Conv2d::load(&w.pp("conv_shortcut"), 8, 12, 1, 1, 0).unwrap();
        let y = block.forward(x.clone(), None);
        assert_eq!(y.dims(), [2, 12, 6, 5]);
        assert_eq!(max_abs(y - shortcut.forward(x)), 0.0, "the skip of a widening block is its 1×1 conv");
    }
}
