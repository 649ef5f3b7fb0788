//! Encoders: the text encoder (MiniLM for our model, CLIP for Stable Diffusion's), the
//! style-reference image encoder, and the reference itself: its foreground hidden by PFV before
//! the encoder sees it; and the cut-out network ([`segmenter`]), which encodes a product photo on
//! a busy background as its mask.

pub mod clip;
pub mod image;
pub mod reference;
pub mod segmenter;
pub mod text;
