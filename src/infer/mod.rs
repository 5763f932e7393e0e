//! The network: model loading, the tract engine, preprocessing from the
//! model's metadata, and our own tract operators.

pub mod model;
pub mod ops;
pub mod preprocess;

pub use self::model as engine;
