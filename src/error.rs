//! The library's one error type.
//!
//! Every variant names the thing that failed (a path, a device, an operator)
//! and, where there is one, the fix, because the people who read these
//! messages are device engineers at a cart, not the authors of this code.
//!
//! A variant built from an underlying error (tract's, the TOML parser's, an
//! image decoder's, the OS's) keeps it as its [`std::error::Error::source`],
//! so callers can inspect it, and also says it in its own message, so one
//! log line (`{e}`) is the whole story. A chain printer that walks
//! `source()` (the CLI's) skips a cause its message already contains.

use std::fmt;
use std::path::PathBuf;

/// An underlying error of any kind, kept as a variant's source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
    #[error("model file {path:?} is not a valid ONNX model ({}); fix: re-export it with `make model` or copy it again (truncated copy?)", Chain(source.as_ref()))]
    ModelCorrupt {
        /// Path of the model.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: BoxError,
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
    /// A reduced-precision model without a passing accuracy record
    /// ([`crate::infer::gate`]).
    #[error("model {path:?} runs as {precision} without a passing accuracy record: {reason}; fix: {fix}, run it as f32, or set allow_ungated = true under [model] in the board file (demo: --allow-ungated) to run it unverified")]
    ModelUngated {
        /// Path of the model.
        path: PathBuf,
        /// `int8` or `f16`.
        precision: &'static str,
        /// No record, or what the failing record says.
        reason: String,
        /// The command that measures and records it.
        fix: String,
    },
    /// tract failed while optimising or running the model.
    #[error("inference with model {model:?} failed: {}", Chain(source.as_ref()))]
    Inference {
        /// Model name.
        model: String,
        /// What failed: tract's error, or our own check's message.
        #[source]
        source: BoxError,
    },
    /// The configuration file is unreadable or invalid.
    #[error("config {path:?}: {}", Reason(reason, source.as_deref()))]
    Config {
        /// Config file.
        path: PathBuf,
        /// What is wrong, and the fix.
        reason: String,
        /// The parser's or the file system's error, if one caused it.
        #[source]
        source: Option<BoxError>,
    },
    /// The command line asks for something impossible (flags out of range).
    #[error("{reason}")]
    Usage {
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
    /// One frame of a file is unreadable (damaged, cut, of another size);
    /// the source has already moved past it, so the next call reads the
    /// frame after it. Corruption in a file is not a lost signal: the run
    /// skips and counts such frames, or stops on the first one in strict mode.
    #[error("source {source_name}: {position} is corrupt ({reason}); skipped")]
    CorruptFrame {
        /// Which source.
        source_name: String,
        /// Where in the source: a frame number, a file name, a byte offset.
        position: String,
        /// What is wrong with it.
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
    #[error("{what}: {}", Reason(reason, source.as_deref()))]
    InvalidInput {
        /// What was being read.
        what: String,
        /// What is wrong with it.
        reason: String,
        /// The decoder's or parser's error, if one caused it.
        #[source]
        source: Option<BoxError>,
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
            source: None,
        }
    }

    /// An [`Error::InvalidInput`] caused by `source` (a decoder's or parser's error).
    pub fn invalid_from(
        what: impl Into<String>,
        reason: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::InvalidInput {
            what: what.into(),
            reason: reason.into(),
            source: Some(source.into()),
        }
    }

    /// Shorthand for an [`Error::Config`].
    pub fn config(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            reason: reason.into(),
            source: None,
        }
    }

    /// An [`Error::Config`] caused by `source` (the TOML parser's or the file system's error).
    pub fn config_from(
        path: impl Into<PathBuf>,
        reason: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Config {
            path: path.into(),
            reason: reason.into(),
            source: Some(source.into()),
        }
    }

    /// Shorthand for an [`Error::Usage`].
    pub fn usage(reason: impl Into<String>) -> Self {
        Error::Usage {
            reason: reason.into(),
        }
    }

    /// An [`Error::Inference`] for `model`: tract's error, or a message.
    pub fn inference(model: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Inference {
            model: model.into(),
            source: source.into(),
        }
    }

    /// An [`Error::CorruptFrame`]: `position` of `source_name` is unreadable.
    pub fn corrupt_frame(
        source_name: impl Into<String>,
        position: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::CorruptFrame {
            source_name: source_name.into(),
            position: position.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::ModelCorrupt`] for the file at `path`.
    pub fn model_corrupt(path: impl Into<PathBuf>, source: impl Into<BoxError>) -> Self {
        Error::ModelCorrupt {
            path: path.into(),
            source: source.into(),
        }
    }
}

/// An error and its sources, `: `-separated (`a: b: c`), skipping a source
/// whose text the message so far already contains.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !shown.contains(&text) {
                shown.push_str(": ");
                shown.push_str(&text);
            }
            next = cause.source();
        }
        f.write_str(&shown)
    }
}

/// A reason, then `": "` and the chain of its source unless the reason
/// already says it.
struct Reason<'a>(
    &'a str,
    Option<&'a (dyn std::error::Error + Send + Sync + 'static)>,
);

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)?;
        match self.1 {
            Some(e) if !self.0.contains(&e.to_string()) => write!(f, ": {}", Chain(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn causes_are_kept_and_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = Error::config_from("c.toml", "cannot read it", io);
        assert_eq!(e.to_string(), "config \"c.toml\": cannot read it: gone");
        let cause = e.source().expect("a source");
        assert_eq!(
            cause.downcast_ref::<std::io::Error>().map(|e| e.kind()),
            Some(std::io::ErrorKind::NotFound)
        );
        // The message already says the cause: the chain does not repeat it.
        assert_eq!(Chain(&e).to_string(), e.to_string());
    }

    #[test]
    fn a_reason_that_says_its_cause_is_not_followed_by_it() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = Error::config_from("c.toml", "cannot read it (gone); fix: x", io);
        assert_eq!(
            e.to_string(),
            "config \"c.toml\": cannot read it (gone); fix: x"
        );
        assert_eq!(Chain(&e).to_string(), e.to_string());
    }

    #[test]
    fn tract_chains_are_flattened_once() {
        let tract = anyhow::anyhow!("bad protobuf").context("decoding the model");
        let e = Error::model_corrupt("m.onnx", tract);
        let text = e.to_string();
        assert!(
            text.contains("(decoding the model: bad protobuf)"),
            "{text}"
        );
        assert_eq!(Chain(&e).to_string(), text);
        assert!(e.source().is_some());
    }

    #[test]
    fn helpers_without_a_cause_have_no_source() {
        assert!(Error::config("c.toml", "x").source().is_none());
        assert!(Error::invalid("frame", "x").source().is_none());
        assert_eq!(Error::usage("--frames 0").to_string(), "--frames 0");
        let e = Error::inference("m", "output has 3 values");
        assert_eq!(
            e.to_string(),
            "inference with model \"m\" failed: output has 3 values"
        );
    }
}
