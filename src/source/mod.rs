//! Frame sources: where video comes from.
//!
//! A source is small on purpose (like ripgrep's `Sink`): fill a frame, say
//! when the stream ended. Pacing belongs to the source, because a camera
//! paces itself and a file or generator must pretend to ([`pacing`]).
//!
//! [`open`] is the one place that builds the source a [`Config`] asks for,
//! explicitly (no registration magic): a V4L2 device wrapped in
//! [`Reconnecting`], a file replay, or the phantom, each with
//! `record = "input"` attached.

pub mod backoff;
pub mod pacing;
pub mod phantom;
pub mod pixfmt;
pub mod reconnect;
pub mod replay;
pub mod v4l2;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::{Config, RecordMode, SourceSpec};
use crate::frame::Frame;
use crate::sink::record::{self, SharedRecorder, Y4mRecorder};
use crate::Result;
use phantom::PhantomSource;
use reconnect::Reconnecting;
use v4l2::V4l2Source;

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

impl FrameSource for Box<dyn FrameSource> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn size(&self) -> (u32, u32) {
        (**self).size()
    }
    fn frame_rate(&self) -> f64 {
        (**self).frame_rate()
    }
    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        (**self).next_frame(frame)
    }
}

/// The source for `cfg.source`, with `record = "input"` attached: natively
/// by V4L2 and raw replay, as RGB 4:4:4 for the others. A V4L2 device that
/// is missing at start reports no signal until it appears; one that is
/// present but refuses the configured format is an error.
pub fn open(cfg: &Config) -> Result<Box<dyn FrameSource>> {
    if cfg.source == SourceSpec::Phantom {
        let phantom = PhantomSource::from_config(&cfg.phantom)?;
        return record::with_input_recording(Box::new(phantom), cfg);
    }
    let rec = match cfg.record {
        RecordMode::Input => Some(Y4mRecorder::create(
            &cfg.record_path,
            cfg.capture.fps,
            cfg.record_max_bytes,
        )?),
        _ => None,
    };
    match &cfg.source {
        SourceSpec::Phantom => unreachable!("the phantom is opened above"),
        SourceSpec::File(path) => replay::open(path, &cfg.capture, rec),
        SourceSpec::V4l2(path) => Ok(Box::new(v4l2_reconnecting(
            Target::Path(path.clone()),
            cfg,
            rec,
        )?)),
        SourceSpec::V4l2Card(card) => Ok(Box::new(v4l2_reconnecting(
            Target::Card(card.clone()),
            cfg,
            rec,
        )?)),
    }
}

/// Which device to (re)open.
#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    Card(String),
}

fn v4l2_reconnecting(
    target: Target,
    cfg: &Config,
    rec: Option<Y4mRecorder>,
) -> Result<Reconnecting> {
    let capture = cfg.capture.clone();
    let rec: Option<SharedRecorder> = rec.map(|r| Arc::new(Mutex::new(r)));
    let label = match &target {
        Target::Path(p) => p.display().to_string(),
        Target::Card(c) => format!("v4l2:{c}"),
    };
    let open_target = target.clone();
    let opener = move || -> Result<Box<dyn FrameSource>> {
        let path = match &open_target {
            Target::Path(p) => p.clone(),
            Target::Card(c) => v4l2::find_by_card(c)?,
        };
        let mut s = V4l2Source::open(&path, &capture)?;
        if let Some(r) = &rec {
            s.record_into(Arc::clone(r));
        }
        Ok(Box::new(s))
    };
    // A device that exists but cannot be configured is a config error, not
    // a lost signal: report it now rather than retrying forever.
    if let Target::Path(p) = &target {
        if p.exists() {
            let probe = opener.clone();
            let first = probe()?;
            drop(first);
        }
    }
    Ok(Reconnecting::new(
        label,
        Box::new(opener),
        (cfg.capture.width, cfg.capture.height),
        cfg.capture.fps,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::RawConfig;
    use std::path::Path;

    /// A validated config with `record_path` in `dir` and `extra` TOML.
    pub(crate) fn config(extra: &str, dir: &Path) -> Config {
        let text = format!(
            "record_path = \"{}\"\n{extra}\n[model]\npath = \"m.onnx\"\n",
            dir.join("rec.y4m").display()
        );
        let raw: RawConfig = toml::from_str(&text).unwrap();
        raw.validate(Path::new("t.toml")).unwrap()
    }

    #[test]
    fn file_source_with_input_recording() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a.grey");
        std::fs::write(&raw, [9u8; 16 * 16 * 2]).unwrap();
        let cfg = config(
            &format!(
                "source = \"{}\"\nrecord = \"input\"\n[capture]\nwidth = 16\nheight = 16\npace = \"fast\"",
                raw.display()
            ),
            dir.path(),
        );
        let mut src = open(&cfg).unwrap();
        let mut f = Frame::new(1, 1);
        assert!(src.next_frame(&mut f).unwrap());
        assert!(src.next_frame(&mut f).unwrap());
        assert!(!src.next_frame(&mut f).unwrap());
        let rec = std::fs::read(dir.path().join("rec.y4m")).unwrap();
        let header = b"YUV4MPEG2 W16 H16 F30:1 Ip A1:1 Cmono XCOLORRANGE=FULL\n";
        assert!(rec.starts_with(header));
        assert_eq!(rec.len(), header.len() + 2 * (6 + 256));
    }

    #[test]
    fn phantom_source_with_input_recording() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            "record = \"input\"\n[phantom]\nwidth = 96\nheight = 64\nfps = 200",
            dir.path(),
        );
        let mut src = open(&cfg).unwrap();
        assert_eq!(src.size(), (96, 64));
        let mut f = Frame::new(96, 64);
        assert!(src.next_frame(&mut f).unwrap());
        let rec = std::fs::read(dir.path().join("rec.y4m")).unwrap();
        assert!(rec.starts_with(b"YUV4MPEG2 W96 H64 F200:1 Ip A1:1 C444"));
    }

    #[test]
    fn missing_v4l2_device_reports_loss_at_its_configured_size() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            "source = \"/dev/video-absent\"\n[capture]\nwidth = 64\nheight = 48\nfps = 100",
            dir.path(),
        );
        let mut src = open(&cfg).unwrap();
        assert_eq!(src.size(), (64, 48));
        let mut f = Frame::new(1, 1);
        let e = src.next_frame(&mut f).unwrap_err().to_string();
        assert!(
            e.contains("/dev/video-absent") && e.contains("no signal"),
            "{e}"
        );
        // A present non-V4L2 path is a config error, not a lost signal.
        let cfg = config("source = \"/dev/null\"", dir.path());
        assert!(open(&cfg).is_err());
    }
}
