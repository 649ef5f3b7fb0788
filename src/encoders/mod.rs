//! Prompt encoders: the text encoder (MiniLM for our model, CLIP for Stable Diffusion's), and
//! the style-reference image encoder whose tokens PFV masks.

pub mod clip;
pub mod image;
pub mod text;
