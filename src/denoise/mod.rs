//! Denoising: the UNet, whose cross-attentions run MEPA's processor (`mepa.rs`) where the pack
//! carries the adapter, the ControlNet that steers it with the product's depth, and the scheduler.

pub mod blocks;
pub mod config;
pub mod controlnet;
pub mod mepa;
pub mod scheduler;
pub mod unet;
