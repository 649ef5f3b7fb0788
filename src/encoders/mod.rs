//! Prompt encoders: the text encoder (MiniLM for our model, CLIP for Stable Diffusion's), the
//! style-reference image encoder, and the reference itself: its foreground hidden by PFV before
//! the encoder sees it.

pub mod clip;
pub mod image;
pub mod reference;
pub mod text;
