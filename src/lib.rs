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
pub mod config;
pub mod devices;
pub mod error;
pub mod frame;
pub mod infer;
pub mod kernels;
pub mod overlay;
pub mod pipeline;
pub mod sink;
pub mod source;
mod sys;
pub mod tools;

pub use error::{Error, Result};
