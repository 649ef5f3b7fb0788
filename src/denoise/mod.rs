//! Denoising: the UNet (with the cross-attention seam MEPA occupies) and the scheduler.

pub mod attention;
pub mod mepa;
pub mod scheduler;
pub mod unet;
