//! The library's one error type.
//!
//! Every variant names the thing that failed (a path, a device, an operator)
//! and, where there is one, the fix, because the people who read these
//! messages are device engineers at a cart, not the authors of this code.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or device could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being accessed, e.g. `model file "models/x.onnx"`.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The model file does not exist.
    #[error("model file {path:?} not found; fix: pass an existing .onnx file (the bundled models are in models/, `make model` rebuilds them)")]
    ModelNotFound {
        /// Path that was looked up.
        path: PathBuf,
    },
    /// The model file exists but is not a loadable ONNX model.
    #[error("model file {path:?} is not a valid ONNX model ({reason}); fix: re-export it with `make model` or copy it again (truncated copy?)")]
    ModelCorrupt {
        /// Path of the model.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The model's inputs or outputs do not have the shape the runtime needs.
    #[error("model {path:?}: {reason}; fix: export the model with a fixed input of shape 1x3xHxW and one output of shape 1x1xHxW (see lgms_models/export.py)")]
    ModelShape {
        /// Path of the model.
        path: PathBuf,
        /// What is wrong with the shape.
        reason: String,
    },
    /// The model uses an operator that tract cannot run.
    #[error("model {path:?} uses operator {op:?}, which tract 0.23 does not support; fix: re-export without it (int8 models must use only QLinearConv/QLinearMatMul, no com.microsoft ops)")]
    UnsupportedOp {
        /// Path of the model.
        path: PathBuf,
        /// Name of the unsupported operator.
        op: String,
    },
    /// The model's preprocessing metadata is missing or malformed.
    #[error("model {path:?}: preprocessing metadata {key:?} {reason}; fix: re-export with lgms_models/export.py, or give the key in a sidecar JSON file next to the model (MODEL.onnx.json)")]
    ModelMetadata {
        /// Path of the model.
        path: PathBuf,
        /// Metadata key at fault.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// tract failed while optimising or running the model.
    #[error("inference with model {model:?} failed: {reason}")]
    Inference {
        /// Model name.
        model: String,
        /// tract's message.
        reason: String,
    },
    /// The configuration is unreadable or invalid.
    #[error("config {path:?}: {reason}")]
    Config {
        /// Config file (or `<command line>`).
        path: PathBuf,
        /// What is wrong, and the fix.
        reason: String,
    },
    /// A frame source failed (camera gone, file ended badly, bad format).
    #[error("source {source_name}: {reason}")]
    Source {
        /// Which source.
        source_name: String,
        /// What happened, and the fix.
        reason: String,
    },
    /// A sink or display failed.
    #[error("output {sink}: {reason}")]
    Sink {
        /// Which sink.
        sink: String,
        /// What happened, and the fix.
        reason: String,
    },
    /// Bad input data (a corrupt frame or image, a wrong size).
    #[error("{what}: {reason}")]
    InvalidInput {
        /// What was being read.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// Shorthand for an [`Error::Io`].
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// Shorthand for an [`Error::InvalidInput`].
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for an [`Error::Config`].
    pub fn config(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
