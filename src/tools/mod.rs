//! The engineer's tools beside the live pipeline: per-stage benchmark,
//! accuracy evaluation, and parity with PyTorch.

pub mod bench;
pub mod eval;
pub mod parity;
