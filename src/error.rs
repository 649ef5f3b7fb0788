//! The error a model file can cause, shared by every stage that loads weights. It depends on
//! nothing else in the crate, so any module may return it without an import cycle.

/// Why a model file could not be used. Messages are written for the person who chose the file.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelError {
    /// The file is not a safetensors file or was cut short.
    Corrupt { file: String, reason: String },
    /// A tensor the architecture needs is not in the file.
    Missing { name: String },
    /// A tensor has another shape than the architecture (config) says.
    Shape { name: String, expected: Vec<usize>, got: Vec<usize> },
    /// A tensor is stored in an element type we do not read.
    Dtype { name: String, dtype: String },
    /// The pack's manifest is missing, unreadable or of an unknown format version.
    Manifest(String),
    /// A file's SHA-256 differs from the manifest: wrong or damaged download.
    Checksum { file: String, expected: String, got: String },
    /// The config describes an architecture we do not build (yet).
    Unsupported(String),
    /// Reading a file failed.
    Io(String),
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelError::Corrupt { file, reason } => {
                write!(f, "The model file {file} is damaged or truncated ({reason}). Download the model again.")
            }
            ModelError::Missing { name } => write!(
                f,
                "The model file has no tensor named {name}: it is not a model of the architecture its config describes."
            ),
            ModelError::Shape { name, expected, got } => write!(
                f,
                "The model tensor {name} has shape {got:?} but the config needs {expected:?}: the weights and the config do not belong together."
            ),
            ModelError::Dtype { name, dtype } => {
                write!(
                    f,
                    "The model tensor {name} is stored as {dtype}; adcanvas reads F32, F16, BF16 and its own q8/q4 blocks."
                )
            }
            ModelError::Manifest(m) => write!(f, "The model pack's manifest is not usable: {m}"),
            ModelError::Checksum { file, expected, got } => write!(
                f,
                "The model file {file} does not match its manifest (sha256 {got}, expected {expected}): it is the wrong file or damaged. Download the model again."
            ),
            ModelError::Unsupported(m) => write!(f, "This model is not supported: {m}"),
            ModelError::Io(m) => write!(f, "The model could not be read: {m}"),
        }
    }
}

impl std::error::Error for ModelError {}
