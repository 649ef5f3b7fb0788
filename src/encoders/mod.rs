//! Prompt encoders: the text encoder, and the style-reference image encoder whose tokens PFV masks.

pub mod image;
pub mod text;
