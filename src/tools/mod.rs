//! The engineer's tools beside the live pipeline: per-stage benchmark,
//! accuracy evaluation, parity with PyTorch, and masks written to files.

pub mod bench;
pub mod eval;
pub mod masks;
pub mod parity;
