//! Displays on a cart: the Linux framebuffer and DRM/KMS, drawing through
//! one panel module.

pub mod drm;
pub mod fbdev;
pub mod panel;

use std::path::Path;

use crate::sink::Sink;
use crate::Result;

/// The display for a `/dev/...` path: a framebuffer (`/dev/fbN`) or a DRM
/// card (`/dev/dri/cardN[:CONNECTOR]`).
pub fn open(path: &Path) -> Result<Box<dyn Sink>> {
    let s = path.to_string_lossy();
    if s.starts_with("/dev/dri/") {
        Ok(Box::new(drm::DrmSink::open(path)?))
    } else {
        Ok(Box::new(fbdev::FbSink::open(path)?))
    }
}
