//! Denoising: the UNet (with the cross-attention seam MEPA occupies), the ControlNet that
//! steers it with the product's depth, and the scheduler.

pub mod attention;
pub mod controlnet;
pub mod mepa;
pub mod scheduler;
pub mod unet;
