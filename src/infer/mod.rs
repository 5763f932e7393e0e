//! The network: model loading, the tract engine, preprocessing from the
//! model's metadata, and our own tract operators.

pub mod engine;
pub mod ops;
pub mod preprocess;
