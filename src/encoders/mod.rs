//! Prompt encoders: the text encoder (and, with issue #4/#5, the reference-image encoder
//! whose tokens PFV masks).

pub mod text;
