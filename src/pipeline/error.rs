//! Why a generation did not produce an image: every stage's error, as the user reads it.

use crate::composite::CompositeError;
use crate::denoise::scheduler::SchedulerError;
use crate::encoders::reference::ReferenceError;
use crate::error::ModelError;
use crate::input::image_io::ImageError;
use crate::input::layout::LayoutError;
use crate::input::mask::MaskError;

/// Any reason a generation did not produce an image. `Display` is for the user.
#[derive(Debug, Clone, PartialEq)]
pub enum PipelineError {
    Image(ImageError),
    Mask(MaskError),
    Layout(LayoutError),
    Model(ModelError),
    Scheduler(SchedulerError),
    Composite(CompositeError),
    /// An option is out of range (size not a multiple of the model's, zero steps, …).
    Options(String),
    /// The user pressed Cancel.
    Cancelled,
    /// Not a failure: a helper's run ([`super::partner`]) stops once its share of the guidance is
    /// computed (or its partner is gone); its own ad is never used.
    ShareDone,
    /// The GPU failed or was lost mid-run (driver reset, tab in background too long, …).
    Gpu(String),
}

impl std::fmt::Display for PipelineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PipelineError::Image(e) => e.fmt(f),
            PipelineError::Mask(e) => e.fmt(f),
            PipelineError::Layout(e) => e.fmt(f),
            PipelineError::Model(e) => e.fmt(f),
            PipelineError::Scheduler(e) => e.fmt(f),
            PipelineError::Composite(e) => e.fmt(f),
            PipelineError::Options(m) => f.write_str(m),
            PipelineError::Cancelled => f.write_str("cancelled"),
            PipelineError::ShareDone => f.write_str("the helper's share of the work is done"),
            PipelineError::Gpu(m) => write!(
                f,
                "The GPU stopped responding ({m}). Your photo and settings are kept: reload the page (or rerun) to try again."
            ),
        }
    }
}

impl std::error::Error for PipelineError {}

impl From<ReferenceError> for PipelineError {
    fn from(e: ReferenceError) -> Self {
        match e {
            ReferenceError::Image(e) => PipelineError::Image(e),
            ReferenceError::Unusable(m) => PipelineError::Options(m),
        }
    }
}

macro_rules! from_error {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for PipelineError { fn from(e: $t) -> Self { PipelineError::$v(e) } }
    )*};
}
from_error!(ImageError => Image, MaskError => Mask, LayoutError => Layout, ModelError => Model, SchedulerError => Scheduler, CompositeError => Composite);
