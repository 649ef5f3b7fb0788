//! adcanvas: product advertising images generated on the user's own device.
//!
//! The crate reads as the pipeline it runs:
//! [`image_io`] → [`mask`] → [`layout`] → [`pfv`] / [`depth`] → (encoders) → [`denoise`]
//! (UNet with the MEPA seam, ControlNet, scheduler) → [`vae`] (decode; [`vae_tiling`] for
//! large images on small GPUs) → [`composite`].
//! [`pipeline`] strings them together; [`model`] and [`pack`] load the weights
//! (`convert` writes packs, `parity` checks one against PyTorch at full size);
//! `web` is the browser's thin glue and `src/bin/adcanvas.rs` the native CLI.

// Enums of models and schedulers (one value each per pipeline) differ in size by design;
// boxing their larger variants would buy nothing.
#![allow(clippy::large_enum_variant)]

pub mod composite;
pub mod denoise;
pub mod depth;
pub mod encoders;
pub mod image_io;
pub mod layout;
pub mod mask;
pub mod pfv;
pub mod reference;
pub mod vae;
pub mod vae_tiling;
pub mod vae_tiny;

#[cfg(not(target_arch = "wasm32"))]
pub mod convert;
pub mod gpu;
pub mod model;
pub mod nn;
pub mod pack;
#[cfg(not(target_arch = "wasm32"))]
pub mod parity;
pub mod pipeline;
pub mod quant;
pub mod weights;

#[cfg(target_arch = "wasm32")]
pub mod web;
