//! Displays on a cart: the Linux framebuffer and DRM/KMS, drawing through
//! one panel module.

pub mod drm;
pub mod fbdev;
pub mod panel;
