//! The pipeline's first stages, on the CPU: the photo decoded ([`image_io`]), the product's mask
//! ([`mask`]; on a busy background `encoders::segmenter`'s network finds it), its placement on
//! the canvas ([`layout`]) and its pseudo-depth ([`depth`]).

pub mod depth;
pub mod image_io;
pub mod layout;
pub mod mask;
