//! Builds the capture sources, displays and recorders a validated
//! [`Config`] asks for, explicitly, in one place (no registration magic).
//!
//! The phantom generator and the file sinks are built by their own
//! modules; this covers V4L2 devices (wrapped in [`Reconnecting`]), file
//! replay, framebuffer and DRM displays, and `record`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::{Config, RecordMode, SourceSpec};
use crate::sink::record::{RecordSink, RecordingSource, Y4mRecorder};
use crate::sink::Sink;
use crate::source::reconnect::Reconnecting;
use crate::source::v4l2::V4l2Source;
use crate::source::FrameSource;
use crate::Result;

/// A recorder shared by every incarnation of a reopened device.
pub type SharedRecorder = Arc<Mutex<Y4mRecorder>>;

/// The source for `cfg.source`, or `None` for the phantom (built elsewhere).
/// `record = "input"` is attached here: natively by V4L2 and raw replay.
/// A V4L2 device that is missing at start gives NO SIGNAL until it appears;
/// one that is present but refuses the configured format is an error.
pub fn open_source(cfg: &Config) -> Result<Option<Box<dyn FrameSource>>> {
    let rec = match cfg.record {
        RecordMode::Input => Some(Y4mRecorder::create(
            &cfg.record_path,
            cfg.capture.fps,
            cfg.record_max_bytes,
        )?),
        _ => None,
    };
    match &cfg.source {
        SourceSpec::Phantom => Ok(None),
        SourceSpec::File(path) => Ok(Some(crate::source::replay::open(path, &cfg.capture, rec)?)),
        SourceSpec::V4l2(path) => Ok(Some(Box::new(v4l2_reconnecting(
            Target::Path(path.clone()),
            cfg,
            rec,
        )?))),
        SourceSpec::V4l2Card(card) => Ok(Some(Box::new(v4l2_reconnecting(
            Target::Card(card.clone()),
            cfg,
            rec,
        )?))),
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
            Target::Card(c) => crate::source::v4l2::find_by_card(c)?,
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
    // The pipeline draws its own NO SIGNAL screen when frames stop, so the
    // loss is reported as errors rather than as placeholder frames.
    Ok(Reconnecting::new(
        label,
        Box::new(opener),
        (cfg.capture.width, cfg.capture.height),
        cfg.capture.fps,
    )
    .reporting_loss())
}

/// The display for a `/dev/...` path: a framebuffer (`/dev/fbN`) or a DRM
/// card (`/dev/dri/cardN[:CONNECTOR]`).
pub fn open_display(path: &Path) -> Result<Box<dyn Sink>> {
    let s = path.to_string_lossy();
    if s.starts_with("/dev/dri/") {
        Ok(Box::new(crate::sink::display::drm::DrmSink::open(path)?))
    } else {
        Ok(Box::new(crate::sink::display::fbdev::FbSink::open(path)?))
    }
}

/// Wraps `sink` so that it also records what it shows (`record = "overlay"`).
pub fn with_overlay_recording(
    sink: Box<dyn Sink>,
    cfg: &Config,
    fps: f64,
) -> Result<Box<dyn Sink>> {
    if cfg.record != RecordMode::Overlay {
        return Ok(sink);
    }
    let rec = Y4mRecorder::create(&cfg.record_path, fps, cfg.record_max_bytes)?;
    Ok(Box::new(RecordSink::new(sink, rec)))
}

/// Wraps a source without native raw recording (e.g. the phantom) so that
/// `record = "input"` records its frames.
pub fn with_input_recording(
    source: Box<dyn FrameSource>,
    cfg: &Config,
) -> Result<Box<dyn FrameSource>> {
    if cfg.record != RecordMode::Input {
        return Ok(source);
    }
    let rec = Y4mRecorder::create(&cfg.record_path, source.frame_rate(), cfg.record_max_bytes)?;
    Ok(Box::new(RecordingSource::new(source, rec)))
}

impl Sink for Box<dyn Sink> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn write(&mut self, frame: &crate::frame::Frame) -> Result<()> {
        (**self).write(frame)
    }
    fn finish(&mut self) -> Result<()> {
        (**self).finish()
    }
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
    fn next_frame(&mut self, frame: &mut crate::frame::Frame) -> Result<bool> {
        (**self).next_frame(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;
    use crate::frame::Frame;

    fn config(extra: &str, dir: &Path) -> Config {
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
        let mut src = open_source(&cfg).unwrap().unwrap();
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
    fn missing_v4l2_device_reports_loss_at_its_configured_size() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            "source = \"/dev/video-absent\"\n[capture]\nwidth = 64\nheight = 48\nfps = 100",
            dir.path(),
        );
        let mut src = open_source(&cfg).unwrap().unwrap();
        assert_eq!(src.size(), (64, 48));
        let mut f = Frame::new(1, 1);
        let e = src.next_frame(&mut f).unwrap_err().to_string();
        assert!(
            e.contains("/dev/video-absent") && e.contains("no signal"),
            "{e}"
        );
        // A present non-V4L2 path is a config error, not NO SIGNAL.
        let cfg = config("source = \"/dev/null\"", dir.path());
        assert!(open_source(&cfg).is_err());
    }

    #[test]
    fn overlay_recording_wraps_the_sink() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config("record = \"overlay\"", dir.path());
        let mut s =
            with_overlay_recording(Box::new(crate::sink::NullSink::default()), &cfg, 10.0).unwrap();
        s.write(&Frame::new(8, 8)).unwrap();
        s.finish().unwrap();
        let rec = std::fs::read(dir.path().join("rec.y4m")).unwrap();
        assert!(rec.starts_with(b"YUV4MPEG2 W8 H8 F10:1"));
        assert!(open_display(Path::new("/dev/null")).is_err());
    }
}
