//! Frame sources: where video comes from.
//!
//! A source is small on purpose (like ripgrep's `Sink`): fill a frame, say
//! when the stream ended. Pacing belongs to the source, because a camera
//! paces itself and a file or generator must pretend to.

pub mod phantom;
pub mod pixfmt;
pub mod reconnect;
pub mod replay;
pub mod v4l2;

use crate::frame::Frame;
use crate::Result;

/// Anything that produces frames.
pub trait FrameSource: Send {
    /// Human-readable name, used in logs and on the NO SIGNAL screen.
    fn name(&self) -> String;

    /// Size of the frames this source produces.
    fn size(&self) -> (u32, u32);

    /// Nominal frames per second (the compositor's pace).
    fn frame_rate(&self) -> f64;

    /// Fills `frame` (id, capture time, pixels) with the next frame, waiting
    /// for it as a camera would. Returns `Ok(false)` at the end of the stream.
    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool>;
}
