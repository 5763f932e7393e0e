//! # lgms-edge
//!
//! Live video in, LGMSNet segmentation through tract, mask overlay out.
//!
//! Crate map (each module one stage, talking through [`frame`] data):
//! - [`source`]: where frames come from;
//! - [`preprocess`] and [`engine`]: the network through tract, with the
//!   model's own preprocessing;
//! - [`sink`]: where composited frames go;
//! - [`stats`]: per-stage latency;
//! - [`config`]: the validated configuration;
//! - [`parity`]: tract against PyTorch on committed vectors.

#![warn(missing_docs)]

pub mod app;
pub mod bench;
pub mod config;
pub mod devices;
pub mod drm;
pub mod engine;
pub mod error;
pub mod eval;
pub mod fbdev;
pub mod frame;
pub mod kernels;
pub mod ops;
pub mod overlay;
pub mod panel;
pub mod parity;
pub mod phantom;
pub mod pipeline;
pub mod pixfmt;
pub mod preprocess;
pub mod reconnect;
pub mod record;
pub mod replay;
pub mod sink;
pub mod source;
pub mod stats;
pub mod v4l2;
pub mod watchdog;
pub mod wide_sum;

pub use error::{Error, Result};
