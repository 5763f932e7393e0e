//! Recording to YUV4MPEG2 (`.y4m`): lossless, playable with ffmpeg and mpv,
//! and replayable by [`crate::source::replay`].
//!
//! Two things get recorded (`record = "input" | "overlay"`):
//! - the input, in its native layout where Y4M has one (YUYV becomes
//!   planar 4:2:2, NV12 planar 4:2:0, GREY mono), so that the recording
//!   holds exactly the bytes the scanner sent: a regression can then replay
//!   the very frames that showed a problem;
//! - the composited output, as 4:4:4 full-range BT.601 (the RGB -> YCbCr
//!   rounding is the only loss).
//!
//! Every frame is flushed to the file as it is written, so a crash loses at
//! most the frame in flight, and the file stops growing at a size cap (the
//! run goes on; a warning says the recording stopped).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::{Config, RecordMode};
use crate::frame::Frame;
use crate::kernels::YuvRange;
use crate::sink::Sink;
use crate::source::pixfmt::PixelFormat;
use crate::source::FrameSource;
use crate::y4m::{self, Chroma, Header, Writer};
use crate::{Error, Result};

/// A recorder shared by every incarnation of a reopened device.
pub type SharedRecorder = Arc<Mutex<Y4mRecorder>>;

/// Writes frames to a Y4M file with a size cap, through the crate's one
/// Y4M writer ([`crate::y4m::Writer`]).
pub struct Y4mRecorder {
    out: Writer,
    fps: f64,
    planes: Vec<u8>,
}

impl Y4mRecorder {
    /// A recorder for `path`; the file is created (or truncated) at the
    /// first frame.
    pub fn create(path: impl Into<PathBuf>, fps: f64, max_bytes: u64) -> Result<Self> {
        Ok(Y4mRecorder {
            out: Writer::create(path, max_bytes)?,
            fps,
            planes: Vec::new(),
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        self.out.path()
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.out.frames()
    }

    /// Bytes written so far (header included).
    pub fn bytes(&self) -> u64 {
        self.out.bytes()
    }

    /// True once the size cap stopped the recording.
    pub fn stopped(&self) -> bool {
        self.out.stopped()
    }

    /// Flushes the file.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush()
    }

    /// The header for a frame of `layout`, with the plane buffer sized for it.
    fn begin(&mut self, width: u32, height: u32, chroma: Chroma, range: YuvRange) -> Header {
        let header = Header::new(width, height, self.fps, chroma, range);
        self.planes.resize(header.frame_bytes(), 0);
        header
    }

    /// Records an RGB frame (4:4:4). Returns `Ok(false)` when the cap stopped it.
    pub fn record_rgb(&mut self, frame: &Frame) -> Result<bool> {
        let header = self.begin(frame.width, frame.height, Chroma::C444, YuvRange::Full);
        y4m::rgb_to_planes_444(frame, &mut self.planes);
        self.write(&header)
    }

    /// Writes the planes. A write error (a full disk, a removed card) stops
    /// the recording with an error in the log; it never stops the video,
    /// so it is not returned.
    fn write(&mut self, header: &Header) -> Result<bool> {
        match self.out.write_frame(header, &self.planes) {
            Ok(written) => Ok(written),
            Err(e @ Error::Io { .. }) => {
                self.out.stop();
                log::error!(
                    "recording {:?} stopped after {} frames: {e}; the video goes on",
                    self.out.path(),
                    self.out.frames()
                );
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Records a raw frame in its native layout where Y4M has one (YUYV,
    /// NV12, GREY); RGB24/BGR24/MJPEG frames are recorded from `decoded`,
    /// the RGB frame the source made of them. Returns `Ok(false)` when the
    /// cap stopped the recording.
    pub fn record_raw(
        &mut self,
        format: PixelFormat,
        stride: usize,
        data: &[u8],
        decoded: &Frame,
    ) -> Result<bool> {
        let (width, height) = (decoded.width, decoded.height);
        let (w, h) = (width as usize, height as usize);
        let (chroma, range) = match format {
            PixelFormat::Yuyv => (Chroma::C422, YuvRange::Limited),
            PixelFormat::Nv12 => (Chroma::C420, YuvRange::Limited),
            PixelFormat::Grey => (Chroma::Mono, YuvRange::Full),
            _ => return self.record_rgb(decoded),
        };
        let need = format.frame_len(stride, height).unwrap_or(0);
        let row = format.min_stride(width).unwrap_or(stride);
        // The last line may lack its padding, never its pixels.
        let min = need.saturating_sub(stride.saturating_sub(row));
        if stride < row || data.len() < min {
            return Err(Error::invalid(
                format!("recording {:?}", self.out.path()),
                format!(
                    "raw {} frame has {} bytes with {stride} per line, expected {need} with at least {row} per line",
                    format.name(),
                    data.len()
                ),
            ));
        }
        let header = self.begin(width, height, chroma, range);
        let cw = w.div_ceil(2);
        match chroma {
            Chroma::C422 => {
                let (yp, rest) = self.planes.split_at_mut(w * h);
                let (up, vp) = rest.split_at_mut(cw * h);
                for r in 0..h {
                    let line = &data[r * stride..r * stride + w * 2];
                    for x in 0..w {
                        yp[r * w + x] = line[x * 2];
                    }
                    for c in 0..cw {
                        up[r * cw + c] = line[c * 4 + 1];
                        vp[r * cw + c] = line.get(c * 4 + 3).copied().unwrap_or(128);
                    }
                }
            }
            Chroma::C420 => {
                let ch = h.div_ceil(2);
                let (yp, rest) = self.planes.split_at_mut(w * h);
                let (up, vp) = rest.split_at_mut(cw * ch);
                for r in 0..h {
                    yp[r * w..(r + 1) * w].copy_from_slice(&data[r * stride..r * stride + w]);
                }
                let uv = &data[stride * h..];
                for r in 0..ch {
                    for c in 0..cw {
                        up[r * cw + c] = uv[r * stride + c * 2];
                        vp[r * cw + c] = uv[r * stride + c * 2 + 1];
                    }
                }
            }
            Chroma::Mono => {
                for r in 0..h {
                    self.planes[r * w..(r + 1) * w]
                        .copy_from_slice(&data[r * stride..r * stride + w]);
                }
            }
            Chroma::C444 => unreachable!("RGB input is recorded by record_rgb"),
        }
        self.write(&header)
    }
}

/// A sink that records the composited frames, then passes them on
/// (`record = "overlay"`).
pub struct RecordSink<S: Sink> {
    inner: S,
    rec: Y4mRecorder,
}

impl<S: Sink> RecordSink<S> {
    /// Records into `rec` everything `inner` receives.
    pub fn new(inner: S, rec: Y4mRecorder) -> Self {
        RecordSink { inner, rec }
    }

    /// The recorder (frame and byte counts).
    pub fn recorder(&self) -> &Y4mRecorder {
        &self.rec
    }
}

impl<S: Sink> Sink for RecordSink<S> {
    fn name(&self) -> String {
        format!("{} + recording {:?}", self.inner.name(), self.rec.path())
    }

    fn write(&mut self, frame: &Frame) -> Result<()> {
        self.rec.record_rgb(frame)?;
        self.inner.write(frame)
    }

    fn finish(&mut self) -> Result<()> {
        self.inner.finish()?;
        self.rec.flush()
    }
}

/// A source that records the frames it passes on, as RGB 4:4:4
/// (`record = "input"` for sources without a native raw layout; the V4L2
/// and raw replay sources record their raw bytes themselves).
pub struct RecordingSource<S: FrameSource> {
    inner: S,
    rec: Y4mRecorder,
}

impl<S: FrameSource> RecordingSource<S> {
    /// Records into `rec` every frame `inner` produces.
    pub fn new(inner: S, rec: Y4mRecorder) -> Self {
        RecordingSource { inner, rec }
    }
}

impl<S: FrameSource> FrameSource for RecordingSource<S> {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn size(&self) -> (u32, u32) {
        self.inner.size()
    }

    fn frame_rate(&self) -> f64 {
        self.inner.frame_rate()
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        let more = self.inner.next_frame(frame)?;
        if more {
            self.rec.record_rgb(frame)?;
        }
        Ok(more)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: u32, h: u32, seed: u8) -> Frame {
        let mut f = Frame::new(w, h);
        for (i, v) in f.rgb.iter_mut().enumerate() {
            *v = (i as u8).wrapping_mul(7).wrapping_add(seed);
        }
        f
    }

    #[test]
    fn rgb_recording_layout_and_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/r.y4m");
        let header = b"YUV4MPEG2 W4 H2 F15:1 Ip A1:1 C444 XCOLORRANGE=FULL\n";
        let per_frame = 6 + 4 * 2 * 3;
        // Room for the header and two frames, not three.
        let cap = (header.len() + 2 * per_frame + per_frame / 2) as u64;
        let mut r = Y4mRecorder::create(&path, 15.0, cap).unwrap();
        assert!(r.record_rgb(&frame(4, 2, 0)).unwrap());
        // Flushed per frame: the file holds the frame before the recorder is dropped.
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            (header.len() + per_frame) as u64
        );
        assert!(r.record_rgb(&frame(4, 2, 1)).unwrap());
        assert!(!r.record_rgb(&frame(4, 2, 2)).unwrap());
        assert!(r.stopped());
        assert_eq!(r.frames(), 2);
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(header));
        assert_eq!(bytes.len(), header.len() + 2 * per_frame);
        assert_eq!(r.bytes(), bytes.len() as u64);
        // A size change is an error, not a corrupt file.
        let mut r = Y4mRecorder::create(&path, 15.0, 1 << 20).unwrap();
        r.record_rgb(&frame(4, 2, 0)).unwrap();
        assert!(r.record_rgb(&frame(2, 2, 0)).is_err());
    }

    #[test]
    fn odd_width_nv12_without_room_for_its_chroma_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Y4mRecorder::create(dir.path().join("o.y4m"), 15.0, 1 << 20).unwrap();
        // 5x2 NV12 with a 5-byte stride: the CbCr row needs 6 bytes.
        let data = [128u8; 5 * 2 + 5];
        let e = r
            .record_raw(PixelFormat::Nv12, 5, &data, &frame(5, 2, 0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("o.y4m") && e.contains("at least 6 per line"),
            "{e}"
        );
    }

    #[test]
    fn raw_yuyv_and_nv12_are_stored_losslessly() {
        let dir = tempfile::tempdir().unwrap();
        // 4x2 YUYV with 2 bytes of line padding.
        let yuyv: Vec<u8> = (0..2)
            .flat_map(|r| {
                let mut l: Vec<u8> = (0..8).map(|i| (r * 8 + i) as u8 + 10).collect();
                l.extend([0xEE, 0xEE]);
                l
            })
            .collect();
        let path = dir.path().join("y.y4m");
        let mut r = Y4mRecorder::create(&path, 30.0, 1 << 20).unwrap();
        r.record_raw(PixelFormat::Yuyv, 10, &yuyv, &Frame::new(4, 2))
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header = b"YUV4MPEG2 W4 H2 F30:1 Ip A1:1 C422 XCOLORRANGE=LIMITED\nFRAME\n";
        assert!(bytes.starts_with(header));
        let planes = &bytes[header.len()..];
        // Y plane: even bytes; U: bytes 1, 5; V: bytes 3, 7 of each line.
        assert_eq!(&planes[..8], &[10, 12, 14, 16, 18, 20, 22, 24]);
        assert_eq!(&planes[8..12], &[11, 15, 19, 23]);
        assert_eq!(&planes[12..16], &[13, 17, 21, 25]);

        // 2x2 NV12: Y 1 2 3 4, UV 5 6.
        let path = dir.path().join("n.y4m");
        let mut r = Y4mRecorder::create(&path, 30.0, 1 << 20).unwrap();
        r.record_raw(PixelFormat::Nv12, 2, &[1, 2, 3, 4, 5, 6], &Frame::new(2, 2))
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.ends_with(b"C420mpeg2 XCOLORRANGE=LIMITED\nFRAME\n\x01\x02\x03\x04\x05\x06"));
        assert!(r
            .record_raw(PixelFormat::Nv12, 2, &[1, 2, 3], &Frame::new(2, 2))
            .is_err());
    }

    #[test]
    fn record_sink_passes_frames_on() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Y4mRecorder::create(dir.path().join("o.y4m"), 10.0, 1 << 20).unwrap();
        let mut s = RecordSink::new(crate::sink::NullSink::default(), rec);
        s.write(&frame(8, 8, 3)).unwrap();
        s.write(&frame(8, 8, 4)).unwrap();
        s.finish().unwrap();
        assert_eq!(s.recorder().frames(), 2);
        assert_eq!(s.inner.frames, 2);
    }

    #[test]
    fn overlay_recording_wraps_the_sink() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::source::tests::config("record = \"overlay\"", dir.path());
        let mut s =
            with_overlay_recording(Box::new(crate::sink::NullSink::default()), &cfg, 10.0).unwrap();
        s.write(&Frame::new(8, 8)).unwrap();
        s.finish().unwrap();
        let rec = std::fs::read(dir.path().join("rec.y4m")).unwrap();
        assert!(rec.starts_with(b"YUV4MPEG2 W8 H8 F10:1"));
        // Without recording, the sink is passed through as it is.
        let cfg = crate::source::tests::config("", dir.path());
        let s =
            with_overlay_recording(Box::new(crate::sink::NullSink::default()), &cfg, 10.0).unwrap();
        assert_eq!(s.name(), "null");
    }
}
