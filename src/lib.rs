//! adcanvas: product advertising images generated on the user's own device.
//!
//! The crate's folders are the pipeline's stages, in the order it runs them
//! (docs/ARCHITECTURE.md draws it):
//! [`input`] (photo → mask → layout, depth) → [`pfv`] → [`encoders`] (text, style reference)
//! → [`denoise`] (UNet with MEPA's attention processor, ControlNet, scheduler) → [`vae`]
//! (decode) → [`composite`]. [`pipeline`] strings them together. Beneath them: [`nn`], the
//! layers every model is built of, and [`pack`], the model files and weights by name; [`model`]
//! is a loaded pack, [`gpu`] the device, [`kernels`] our own GPU kernels beneath the layers,
//! [`error`] the model-file error every stage shares; [`archive`] zips several finished ads
//! for one download.
//! `web` is the browser's thin glue and `src/bin/adcanvas.rs` the native CLI.

// Enums of models and schedulers (one value each per pipeline) differ in size by design;
// boxing their larger variants would buy nothing.
#![allow(clippy::large_enum_variant)]

pub mod archive;
pub mod composite;
pub mod denoise;
pub mod encoders;
pub mod error;
pub mod gpu;
pub mod input;
pub mod kernels;
pub mod model;
pub mod nn;
pub mod pack;
#[cfg(not(target_arch = "wasm32"))]
pub mod parity;
pub mod pfv;
pub mod pipeline;
pub mod vae;

#[cfg(target_arch = "wasm32")]
pub mod web;
