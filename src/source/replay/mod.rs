//! Replay sources for bench work and regressions: an image folder, a Y4M
//! file, a raw YUYV/NV12/GREY/RGB24/BGR24 dump.
//!
//! Each plays at the recorded pace (`pace = "realtime"`: a file pretends to
//! be a camera, so the pipeline sees the same timing as on the cart) or as
//! fast as the pipeline takes frames (`"fast"`, for throughput and
//! regression runs), once or looping. [`open`] picks the kind from the path:
//! a folder, `.y4m`, or a raw extension (`.yuyv`, `.nv12`, `.grey`,
//! `.rgb24`, `.bgr24`; `.yuv`/`.raw` take `capture.format`).

mod images;
mod raw;
mod y4m;

use std::path::Path;
use std::time::Instant;

pub use images::ImageFolder;
pub use raw::RawReplay;
pub use y4m::Y4mReplay;

use crate::config::CaptureConfig;
use crate::frame::{Frame, Limits};
use crate::sink::record::Y4mRecorder;
use crate::source::pacing::Pacer;
use crate::source::pixfmt::PixelFormat;
use crate::source::FrameSource;
use crate::{Error, Result};

/// How fast a file plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pace {
    /// At the file's frame rate, as a camera would deliver.
    Realtime,
    /// As fast as frames are asked for.
    Fast,
}

/// Replay options shared by every kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayOptions {
    /// Pacing.
    pub pace: Pace,
    /// Start over at the end.
    pub looping: bool,
    /// Frame rate for kinds that do not carry one (folders, raw dumps).
    pub fps: f64,
    /// Largest frame accepted, checked before decoding.
    pub limits: Limits,
    /// A damaged frame is an error that ends the run, instead of being
    /// skipped and counted.
    pub strict: bool,
}

impl ReplayOptions {
    /// Playing once at `pace`, `fps` where the file has no rate, within
    /// the default limits, skipping damaged frames.
    pub fn new(pace: Pace, fps: f64) -> Self {
        ReplayOptions {
            pace,
            looping: false,
            fps,
            limits: Limits::DEFAULT,
            strict: false,
        }
    }

    /// The options a validated `[capture]` table asks for.
    pub fn from_config(c: &CaptureConfig) -> Self {
        ReplayOptions {
            pace: c.pace,
            looping: c.looping,
            fps: c.fps,
            limits: c.limits(),
            strict: c.strict,
        }
    }
}

/// What every kind does with a decoded frame: wait for its time (on the
/// rate for [`Pace::Realtime`], at once for [`Pace::Fast`]), then number and
/// stamp it.
struct Delivery {
    pacer: Pacer,
    next_id: u64,
}

impl Delivery {
    fn new(opts: &ReplayOptions, fps: f64) -> Self {
        let pacer = match opts.pace {
            Pace::Realtime => Pacer::new(fps),
            Pace::Fast => Pacer::unpaced(),
        };
        Delivery { pacer, next_id: 0 }
    }

    fn deliver(&mut self, frame: &mut Frame) {
        self.pacer.wait();
        frame.id = self.next_id;
        frame.captured = Instant::now();
        self.next_id += 1;
    }
}

/// Opens the replay source for `path`, choosing the kind by folder or
/// extension. `rec` receives the input frames (`record = "input"`).
pub fn open(
    path: &Path,
    capture: &CaptureConfig,
    rec: Option<Y4mRecorder>,
) -> Result<Box<dyn FrameSource>> {
    let opts = ReplayOptions::from_config(capture);
    if !path.exists() {
        return Err(source_err(
            path,
            "does not exist; fix: point source at an existing image folder, .y4m file or raw dump \
             (or \"phantom\", or a V4L2 device under /dev)",
        ));
    }
    if path.is_dir() {
        let mut s = ImageFolder::open(path, opts)?;
        s.rec = rec;
        return Ok(Box::new(s));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let raw = match ext.as_str() {
        "y4m" => {
            let mut s = Y4mReplay::open(path, opts)?;
            s.rec = rec;
            return Ok(Box::new(s));
        }
        "yuyv" | "yuy2" => Some(PixelFormat::Yuyv),
        "nv12" => Some(PixelFormat::Nv12),
        "grey" | "gray" | "y8" => Some(PixelFormat::Grey),
        "rgb" | "rgb24" => Some(PixelFormat::Rgb24),
        "bgr" | "bgr24" => Some(PixelFormat::Bgr24),
        "yuv" | "raw" => Some(capture.format),
        _ => None,
    };
    match raw {
        Some(PixelFormat::Mjpeg) | None => Err(Error::Source {
            source_name: path.display().to_string(),
            reason: format!(
                "cannot tell what kind of file {ext:?} is; fix: use an image folder, a .y4m file, \
                 or a raw dump named .yuyv/.nv12/.grey/.rgb24/.bgr24 (or .yuv/.raw with capture.format)"
            ),
        }),
        Some(format) => {
            let mut s = RawReplay::open(path, format, capture.width, capture.height, opts)?;
            s.rec = rec;
            Ok(Box::new(s))
        }
    }
}

pub(super) fn source_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Source {
        source_name: path.display().to_string(),
        reason: reason.into(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn fast(looping: bool) -> ReplayOptions {
        ReplayOptions {
            looping,
            ..ReplayOptions::new(Pace::Fast, 30.0)
        }
    }

    pub(crate) fn drain(s: &mut dyn FrameSource, max: usize) -> Vec<Frame> {
        let mut out = Vec::new();
        let mut f = Frame::new(1, 1);
        while out.len() < max && s.next_frame(&mut f).unwrap() {
            out.push(f.clone());
        }
        out
    }

    /// A frame whose pixels encode their position and the frame number.
    pub(crate) fn pattern(w: u32, h: u32, n: u8) -> Frame {
        let mut f = Frame::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let i = ((y * w + x) * 3) as usize;
                f.rgb[i..i + 3].copy_from_slice(&[(x * 20) as u8, (y * 20) as u8, n * 40]);
            }
        }
        f
    }

    #[test]
    fn raw_nv12_dump_plays_loops_and_records_natively() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.nv12");
        // Two 2x2 frames: red, then white; and 3 stray bytes.
        let mut data = vec![81, 81, 81, 81, 90, 240, 235, 235, 235, 235, 128, 128];
        data.extend([1, 2, 3]);
        std::fs::write(&path, &data).unwrap();
        let cap = CaptureConfig {
            width: 2,
            height: 2,
            pace: Pace::Fast,
            looping: true,
            ..CaptureConfig::default()
        };
        let rec_path = dir.path().join("in.y4m");
        let rec = Y4mRecorder::create(&rec_path, 30.0, 1 << 20).unwrap();
        let mut s = open(&path, &cap, Some(rec)).unwrap();
        let frames = drain(s.as_mut(), 3);
        assert!(frames[0].pixel(0, 0)[0] > 250 && frames[0].pixel(0, 0)[1] < 5);
        assert_eq!(frames[1].pixel(1, 1), [255, 255, 255]);
        assert_eq!(frames[2].rgb, frames[0].rgb);
        drop(s);
        // The recording holds the NV12 bytes as planar 4:2:0, unchanged.
        let bytes = std::fs::read(&rec_path).unwrap();
        let body = b"FRAME\n\x51\x51\x51\x51\x5a\xf0";
        assert_eq!(bytes.windows(body.len()).filter(|w| w == body).count(), 2);
        // A wrong size is caught before any frame.
        let cap = CaptureConfig {
            width: 64,
            height: 64,
            ..cap
        };
        let e = open(&path, &cap, None).err().unwrap().to_string();
        assert!(e.contains("capture.width"), "{e}");
    }

    #[test]
    fn raw_yuyv_plays_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.yuyv");
        std::fs::write(&path, [235, 128, 16, 128].repeat(3)).unwrap();
        let cap = CaptureConfig {
            width: 2,
            height: 1,
            pace: Pace::Fast,
            ..CaptureConfig::default()
        };
        let mut s = open(&path, &cap, None).unwrap();
        let frames = drain(s.as_mut(), 10);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[2].pixel(0, 0), [255, 255, 255]);
        assert_eq!(frames[2].pixel(1, 0), [0, 0, 0]);
        std::fs::write(dir.path().join("x.mp4"), b"").unwrap();
        assert!(open(&dir.path().join("x.mp4"), &cap, None).is_err());
        let e = open(&dir.path().join("gone"), &cap, None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("gone") && e.contains("does not exist"), "{e}");
    }
}
