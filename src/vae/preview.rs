//! What an ad looks like while it is being denoised: the latents mapped to colours by a linear
//! fit (RGB ≈ W·z + b per latent cell), the "cheap latent preview" of diffusion UIs, so that the
//! studio can show a step's picture without running the VAE decoder.
//!
//! A linear stand-in for the decoder, good enough for a thumbnail. The fit is learnt from the
//! model's own data: from a palette through the VAE encoder (`pipeline::preview::calibrate`, cheap
//! on the CPU), and from every finished ad (its final latents and the decoded picture), so it
//! follows the latents this model really makes. Each cell's colour is the mean of the `f × f`
//! pixels it decodes to.

use std::sync::Mutex;

use burn::tensor::TensorData;
use image::{Rgba, RgbaImage};

/// Ridge added to the normal equations: keeps the fit defined before it has seen every channel vary.
const RIDGE: f64 = 1e-3;

/// The running least-squares fit and the last step's latents and preview.
#[derive(Default)]
pub struct LatentPreview {
    /// Normal equations over `[z, 1]` (k = channels + 1): XᵀX (k × k) and XᵀY (k × 3).
    xtx: Vec<f64>,
    xty: Vec<f64>,
    /// `[k × 3]` weights, once something has been learnt.
    fit: Option<Vec<f64>>,
    /// The last denoising step's latents `[1, c, lh, lw]` (for learning once the ad is decoded).
    last: Option<TensorData>,
    /// The last preview made, for whoever reports progress to take.
    latest: Option<RgbaImage>,
}

/// The model's preview state, shared by its runs (and by copies of the model).
pub type SharedPreview = std::sync::Arc<Mutex<LatentPreview>>;

/// Whether a fit was learnt (burn's module display of the model prints it).
impl std::fmt::Debug for LatentPreview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatentPreview").field("fitted", &self.fit.is_some()).finish()
    }
}

impl LatentPreview {
    /// Adds the cells of `latents` (`[1, c, lh, lw]`) against the mean colours of `image`'s
    /// blocks (`image` is `lw·f × lh·f`).
    pub fn learn(&mut self, latents: &TensorData, image: &RgbaImage) {
        let [_, c, lh, lw] = match latents.shape().as_slice() {
            &[b, c, h, w] => [b, c, h, w],
            _ => return,
        };
        let Ok(z) = latents.try_to_vec::<f32>() else { return };
        let f = image.width() as usize / lw.max(1);
        if f == 0 || image.height() as usize != lh * f {
            return;
        }
        let k = c + 1;
        if self.xtx.len() != k * k {
            self.xtx = vec![0.0; k * k];
            self.xty = vec![0.0; k * 3];
        }
        let mut x = vec![0f64; k];
        for cy in 0..lh {
            for cx in 0..lw {
                for (ch, xv) in x.iter_mut().take(c).enumerate() {
                    *xv = f64::from(z[(ch * lh + cy) * lw + cx]);
                }
                x[c] = 1.0;
                let mut rgb = [0f64; 3];
                for py in cy * f..(cy + 1) * f {
                    for px in cx * f..(cx + 1) * f {
                        let p = image.get_pixel(px as u32, py as u32).0;
                        for (v, &p) in rgb.iter_mut().zip(&p) {
                            *v += f64::from(p) / 255.0;
                        }
                    }
                }
                for v in &mut rgb {
                    *v /= (f * f) as f64;
                }
                for i in 0..k {
                    for j in 0..k {
                        self.xtx[i * k + j] += x[i] * x[j];
                    }
                    for (o, v) in rgb.iter().enumerate() {
                        self.xty[i * 3 + o] += x[i] * v;
                    }
                }
            }
        }
        self.fit = solve(&self.xtx, &self.xty, k);
    }

    /// The preview of `latents` (`[1, c, lh, lw]`): one pixel per latent cell, or `None` before
    /// anything was learnt for this many channels.
    pub fn image(&self, latents: &TensorData) -> Option<RgbaImage> {
        let fit = self.fit.as_ref()?;
        let &[_, c, lh, lw] = latents.shape().as_slice() else { return None };
        if fit.len() != (c + 1) * 3 {
            return None;
        }
        let z = latents.try_to_vec::<f32>().ok()?;
        let mut out = RgbaImage::new(lw as u32, lh as u32);
        for (i, px) in out.pixels_mut().enumerate() {
            let mut rgb = [fit[c * 3], fit[c * 3 + 1], fit[c * 3 + 2]];
            for ch in 0..c {
                let v = f64::from(z[ch * lh * lw + i]);
                for (o, out) in rgb.iter_mut().enumerate() {
                    *out += fit[ch * 3 + o] * v;
                }
            }
            *px = Rgba([to_u8(rgb[0]), to_u8(rgb[1]), to_u8(rgb[2]), 255]);
        }
        Some(out)
    }

    /// Keeps a step's latents; with `shown` (latents of the same shape: the step's predicted
    /// clean image), also its picture for [`take_latest`](Self::take_latest).
    pub fn step(&mut self, latents: TensorData, shown: Option<&TensorData>) {
        if let Some(shown) = shown {
            self.latest = self.image(shown);
        }
        self.last = Some(latents);
    }

    /// Learns from the last step's latents against the ad they decoded to.
    pub fn learn_last(&mut self, decoded: &RgbaImage) {
        if let Some(latents) = self.last.take() {
            self.learn(&latents, decoded);
        }
    }

    /// The newest step preview, once (the studio shows it with the step's progress).
    pub fn take_latest(&mut self) -> Option<RgbaImage> {
        self.latest.take()
    }
}

fn to_u8(v: f64) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Solves (XᵀX + ridge·I) W = XᵀY for the `k × 3` weights by Gaussian elimination.
fn solve(xtx: &[f64], xty: &[f64], k: usize) -> Option<Vec<f64>> {
    let n = xtx[k * k - 1].max(1.0); // the number of cells seen (the constant column's square)
    let mut a: Vec<f64> = xtx.to_vec();
    for i in 0..k {
        a[i * k + i] += RIDGE * n;
    }
    let mut b = xty.to_vec();
    for col in 0..k {
        let pivot = (col..k).max_by(|&x, &y| a[x * k + col].abs().total_cmp(&a[y * k + col].abs()))?;
        if a[pivot * k + col].abs() < 1e-12 {
            return None;
        }
        for j in 0..k {
            a.swap(col * k + j, pivot * k + j);
        }
        for o in 0..3 {
            b.swap(col * 3 + o, pivot * 3 + o);
        }
        for row in 0..k {
            if row == col {
                continue;
            }
            let factor = a[row * k + col] / a[col * k + col];
            for j in col..k {
                a[row * k + j] -= factor * a[col * k + j];
            }
            for o in 0..3 {
                b[row * 3 + o] -= factor * b[col * 3 + o];
            }
        }
    }
    Some((0..k).flat_map(|i| (0..3).map(move |o| (i, o))).map(|(i, o)| b[i * 3 + o] / a[i * k + i]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Latents that are an exact linear function of the colours are fitted exactly.
    #[test]
    fn learns_a_linear_map_and_previews_with_it() {
        let (c, lh, lw, f) = (4usize, 4usize, 6usize, 2usize);
        let mut image = RgbaImage::new((lw * f) as u32, (lh * f) as u32);
        let mut z = vec![0f32; c * lh * lw];
        for cy in 0..lh {
            for cx in 0..lw {
                let rgb = [(cx * 40) as u8, (cy * 60) as u8, ((cx + cy) * 25) as u8];
                for py in 0..f {
                    for px in 0..f {
                        image.put_pixel(
                            (cx * f + px) as u32,
                            (cy * f + py) as u32,
                            Rgba([rgb[0], rgb[1], rgb[2], 255]),
                        );
                    }
                }
                let v = rgb.map(|v| f32::from(v) / 255.0);
                // z = A·rgb − 0.5 for a fixed invertible A (plus a channel of noise-free mix).
                let zc = [v[0] + v[1], v[1] - v[2], 2.0 * v[2], v[0] - v[1] + v[2]];
                for ch in 0..c {
                    z[(ch * lh + cy) * lw + cx] = zc[ch] - 0.5;
                }
            }
        }
        let latents = TensorData::new(z, [1, c, lh, lw]);
        let mut preview = LatentPreview::default();
        assert!(preview.image(&latents).is_none(), "nothing learnt yet");
        preview.learn(&latents, &image);
        let shown = preview.image(&latents).expect("a fit");
        assert_eq!(shown.dimensions(), (lw as u32, lh as u32));
        for cy in 0..lh {
            for cx in 0..lw {
                let want = image.get_pixel((cx * f) as u32, (cy * f) as u32).0;
                let got = shown.get_pixel(cx as u32, cy as u32).0;
                for ch in 0..3 {
                    assert!(
                        (i32::from(want[ch]) - i32::from(got[ch])).abs() <= 2,
                        "cell ({cx},{cy}): {want:?} vs {got:?}"
                    );
                }
            }
        }
        // Another channel count is not this fit's.
        assert!(preview.image(&TensorData::new(vec![0f32; 3 * 4], [1, 3, 2, 2])).is_none());
    }
}
