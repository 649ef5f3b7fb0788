//! The style reference (issue #4, docs/METHOD.md §5–6): a second picture whose background
//! style guides the new background. Its foreground — found by the same mask code as the
//! product's, or given as a mask — is hidden by PFV before the image encoder sees it, and
//! the hidden patches' tokens are dropped, so the reference's own product cannot leak into
//! the ad. The kept tokens become MEPA's image prompt.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use image::imageops::FilterType;
use image::{GrayImage, RgbImage, RgbaImage};

use crate::denoise::mepa::ImageProjection;
use crate::encoders::image::{ImageEncoder, keep_tokens};
use crate::input::image_io::{DecodeLimits, DecodedImage, ImageError, decode_image};
use crate::input::mask::{MaskError, MaskOptions, coverage, product_mask};
use crate::pfv::{DEFAULT_FILL, PatchGrid, PfvConfig, TokenMode, patch_visibility};

/// Why a style reference cannot be used: its picture (or mask) does not decode, or it cannot
/// serve as one. Messages are written for the person who chose it.
#[derive(Debug, Clone, PartialEq)]
pub enum ReferenceError {
    Image(ImageError),
    Unusable(String),
}

impl std::fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Image(e) => e.fmt(f),
            Self::Unusable(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ReferenceError {}

impl From<ImageError> for ReferenceError {
    fn from(e: ImageError) -> Self {
        Self::Image(e)
    }
}

/// A decoded reference and its foreground coverage (1 = foreground, to be hidden).
#[derive(Debug, Clone)]
pub struct Reference {
    pub image: RgbaImage,
    pub foreground: Vec<f32>,
}

impl Reference {
    /// Decodes a reference and finds its foreground with the product-mask code. A reference
    /// with no foreground at all is pure background and is used whole.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReferenceError> {
        let image = decode_picture(bytes)?;
        let foreground = match product_mask(&image, &MaskOptions::default()) {
            Ok(mask) => mask.alpha,
            Err(MaskError::Empty) => vec![0.0; image.rgba.len() / 4],
            Err(MaskError::BusyBackground { .. }) => {
                return Err(ReferenceError::Unusable(
                    "The style reference's foreground could not be found automatically (its border is not a plain colour). \
                     Give its mask (white = the object PFV should hide), or turn PFV off to use the whole reference."
                        .into(),
                ));
            }
            Err(MaskError::FullFrame) => {
                return Err(ReferenceError::Unusable(
                    "The style reference is all foreground: there is no background style to take from it.".into(),
                ));
            }
            // Only a given mask can be the wrong size, and only the network unsure; neither is here.
            Err(e @ (MaskError::SizeMismatch { .. } | MaskError::Transparent | MaskError::Unsure { .. })) => {
                return Err(ReferenceError::Unusable(e.to_string()));
            }
        };
        Ok(Self { image: image.rgba, foreground })
    }

    /// A reference used whole, with no foreground to hide (for PFV off, or a pure-background picture).
    pub fn whole(bytes: &[u8]) -> Result<Self, ReferenceError> {
        let image = decode_picture(bytes)?;
        let foreground = vec![0.0; image.rgba.len() / 4];
        Ok(Self { image: image.rgba, foreground })
    }

    /// A reference with an explicit foreground mask (its alpha when it has transparency, else its
    /// grey level: white/opaque = foreground),
    /// which must have the reference's size.
    pub fn with_mask(bytes: &[u8], mask_bytes: &[u8]) -> Result<Self, ReferenceError> {
        let image = decode_picture(bytes)?;
        let mask = decode(mask_bytes)?;
        if mask.rgba.dimensions() != image.rgba.dimensions() {
            let (w, h) = image.rgba.dimensions();
            let (mw, mh) = mask.rgba.dimensions();
            return Err(ReferenceError::Unusable(format!(
                "The reference mask is {mw}×{mh} but the reference is {w}×{h}; they must match."
            )));
        }
        Ok(Self { foreground: coverage(&mask), image: image.rgba })
    }

    /// The reference at the encoder's input size: centre-cropped to a square (as a CLIP image
    /// processor does), resized, as RGB and as foreground coverage.
    fn square(&self, side: u32) -> (RgbImage, Vec<f32>) {
        let (w, h) = self.image.dimensions();
        let s = w.min(h);
        let (x0, y0) = ((w - s) / 2, (h - s) / 2);
        let rgb = image::DynamicImage::ImageRgba8(self.image.clone())
            .crop_imm(x0, y0, s, s)
            .resize_exact(side, side, FilterType::CatmullRom)
            .to_rgb8();
        let fg = GrayImage::from_fn(s, s, |x, y| {
            let v = self.foreground[((y + y0) * w + x + x0) as usize];
            image::Luma([(v.clamp(0.0, 1.0) * 255.0).round() as u8])
        });
        let fg = image::imageops::resize(&fg, side, side, FilterType::Triangle)
            .pixels()
            .map(|p| f32::from(p.0[0]) / 255.0)
            .collect();
        (rgb, fg)
    }
}

fn decode(bytes: &[u8]) -> Result<DecodedImage, ReferenceError> {
    Ok(decode_image(bytes, &DecodeLimits::default())?)
}

/// The reference picture itself, which must show something: a fully transparent one has no
/// style to give (its colours are whatever the exporter left under alpha 0).
fn decode_picture(bytes: &[u8]) -> Result<DecodedImage, ReferenceError> {
    let image = decode(bytes)?;
    if image.rgba.pixels().all(|p| p.0[3] == 0) {
        return Err(ReferenceError::Unusable(
            "The style reference is fully transparent: there is no picture to take a style from.".into(),
        ));
    }
    Ok(image)
}

/// How the reference is used: the ablation switches of issue #4.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceOptions {
    /// λ_i, the image prompt's weight (0 ignores the reference).
    pub scale: f32,
    /// PFV on (the method) or off (ablation: the encoder sees the whole reference).
    pub pfv: bool,
    pub pfv_config: PfvConfig,
    /// What happens to hidden tokens: dropped (default; what the model was trained with) or zeroed.
    pub token_mode: TokenMode,
    /// MEPA's region mask on (image prompt acts on the background only) or off (everywhere).
    pub region_masks: bool,
}

impl Default for ReferenceOptions {
    fn default() -> Self {
        Self {
            scale: 1.0,
            pfv: true,
            pfv_config: PfvConfig::default(),
            token_mode: TokenMode::Drop,
            region_masks: true,
        }
    }
}

/// The image encoder and the projection to the UNet's cross-attention width.
#[derive(Module, Debug)]
pub struct ReferenceEncoder {
    pub encoder: ImageEncoder,
    pub projection: ImageProjection,
}

/// An encoded reference: MEPA's image-prompt tokens and what PFV did.
pub struct EncodedReference {
    /// `[1, tokens, cross_dim]`.
    pub tokens: Tensor<3>,
    pub report: ReferenceReport,
}

/// What PFV did to a reference, for the user and for evaluation.
#[derive(Debug, Clone)]
pub struct ReferenceReport {
    /// The reference exactly as the encoder saw it (hidden patches grey).
    pub seen: RgbImage,
    /// PFV's patch grid on the encoder-size reference (all visible with PFV off).
    pub grid: PatchGrid,
    /// Image-prompt tokens MEPA attends to (CLS + visible patches when dropping).
    pub tokens: usize,
}

impl ReferenceReport {
    pub fn hidden_patches(&self) -> usize {
        self.grid.visible.iter().filter(|v| !**v).count()
    }
}

impl ReferenceEncoder {
    /// reference → square → PFV (grey fill) → encoder → drop or zero hidden tokens → projection.
    pub fn encode(
        &self,
        reference: &Reference,
        options: &ReferenceOptions,
        device: &Device,
    ) -> Result<EncodedReference, ReferenceError> {
        let config = self.encoder.config();
        let side = config.image_size as u32;
        let (mut rgb, fg) = reference.square(side);
        let decision: Vec<f32> = if options.pfv { fg.iter().map(|v| 1.0 - v).collect() } else { vec![1.0; fg.len()] };
        let grid = patch_visibility(&decision, side, side, &options.pfv_config)
            .map_err(|e| ReferenceError::Unusable(e.to_string()))?;
        let mut rgba = image::DynamicImage::ImageRgb8(rgb).to_rgba8();
        grid.apply_to_image(&mut rgba, DEFAULT_FILL);
        rgb = image::DynamicImage::ImageRgba8(rgba).to_rgb8();
        let tokens = self.encoder.forward(self.encoder.pixels(rgb.as_raw(), device));
        let g = config.grid() as u32;
        let keep: Vec<bool> = std::iter::once(true).chain(grid.token_keep(g, g)).collect();
        let tokens: Tensor<3> = match options.token_mode {
            TokenMode::Drop => self.projection.forward(keep_tokens(tokens, &keep)),
            TokenMode::Zero => {
                let [_, n, _] = tokens.dims();
                let weights: Vec<f32> = keep.iter().map(|&k| f32::from(u8::from(k))).collect();
                let rows = Tensor::<1>::from_floats(weights.as_slice(), device).reshape([1, n, 1]);
                self.projection.forward(tokens) * rows
            }
        };
        let count = tokens.dims()[1];
        Ok(EncodedReference { tokens, report: ReferenceReport { seen: rgb, grid, tokens: count } })
    }
}
