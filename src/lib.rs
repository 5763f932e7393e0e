//! # lgms-edge
//!
//! Live video in, LGMSNet segmentation through tract, mask overlay out.
//!
//! Crate map (each module one stage, talking through [`frame`] data):
//! - [`source`]: where frames come from ([`phantom`] is the built-in one);
//! - [`engine`]: the network through tract, with the model's own preprocessing;
//! - [`overlay`]: mask fill, outline and HUD through embedded-graphics;
//! - [`sink`]: where composited frames go;
//! - [`pipeline`]: the threads that tie them together without ever holding
//!   the video back;
//! - [`stats`]: per-stage latency;
//! - [`config`]: the validated configuration.

#![warn(missing_docs)]

pub mod config;
pub mod devices;
pub mod drm;
pub mod error;
pub mod fbdev;
pub mod frame;
pub mod panel;
pub mod pixfmt;
pub mod reconnect;
pub mod record;
pub mod replay;
pub mod sink;
pub mod source;
pub mod stats;
pub mod v4l2;

pub use error::{Error, Result};
