//! The network: model loading, the tract engine, preprocessing from the
//! model's metadata, and our own tract operators.
//!
//! The rest of the pipeline sees only [`Segmenter`]: a frame in, a mask
//! out. [`engine::Engine`] is the one that runs tract; tests use stand-ins.

pub mod engine;
pub mod gate;
pub mod info;
pub mod model;
pub mod ops;
pub mod preprocess;
pub mod profile;

use crate::frame::{Frame, Mask, Rect};
use crate::pipeline::stats::StageRecorder;
use crate::Result;

/// Something that turns a frame into a mask: the [`engine::Engine`], or a
/// stand-in in tests.
pub trait Segmenter: Send {
    /// Model name and precision for the HUD, e.g. `lgmsnet-phantom-us f32`.
    fn label(&self) -> String;

    /// Segments `roi` of `frame` into `mask` (whose roi, frame id and capture
    /// time it sets), recording preprocess/inference/postprocess times.
    fn segment(
        &mut self,
        frame: &Frame,
        roi: Rect,
        mask: &mut Mask,
        rec: &mut StageRecorder,
    ) -> Result<()>;
}

impl Segmenter for engine::Engine {
    fn label(&self) -> String {
        format!("{} {}", self.info().name, self.info().precision)
    }

    fn segment(
        &mut self,
        frame: &Frame,
        roi: Rect,
        mask: &mut Mask,
        rec: &mut StageRecorder,
    ) -> Result<()> {
        engine::Engine::segment(self, frame, roi, mask, rec)
    }
}
