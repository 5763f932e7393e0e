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

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::frame::Frame;
use crate::sink::{rgb_to_ycbcr_full, Sink};
use crate::source::pixfmt::PixelFormat;
use crate::source::FrameSource;
use crate::{Error, Result};

/// Y4M chroma layouts we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// 4:4:4 from RGB, full range.
    Rgb444,
    /// 4:2:2 planar from YUYV, limited range.
    Yuyv422,
    /// 4:2:0 planar from NV12, limited range (MPEG-2 chroma siting, as NV12).
    Nv12To420,
    /// Luma only, full range.
    Mono,
}

impl Layout {
    fn tag(self) -> &'static str {
        match self {
            Layout::Rgb444 => "C444 XCOLORRANGE=FULL",
            Layout::Yuyv422 => "C422 XCOLORRANGE=LIMITED",
            Layout::Nv12To420 => "C420mpeg2 XCOLORRANGE=LIMITED",
            Layout::Mono => "Cmono XCOLORRANGE=FULL",
        }
    }

    fn frame_bytes(self, w: usize, h: usize) -> usize {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        match self {
            Layout::Rgb444 => w * h * 3,
            Layout::Yuyv422 => w * h + 2 * cw * h,
            Layout::Nv12To420 => w * h + 2 * cw * ch,
            Layout::Mono => w * h,
        }
    }
}

/// Frame rate as a Y4M `F` ratio (29.97 -> 2997:100).
fn rate_ratio(fps: f64) -> (u64, u64) {
    let den = 1000u64;
    let num = (fps.max(0.001) * den as f64).round() as u64;
    let g = gcd(num, den);
    (num / g, den / g)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a.max(1)
    } else {
        gcd(b, a % b)
    }
}

/// Writes frames to a Y4M file with a size cap.
pub struct Y4mRecorder {
    path: PathBuf,
    out: BufWriter<File>,
    rate: (u64, u64),
    format: Option<(Layout, u32, u32)>,
    max_bytes: u64,
    written: u64,
    frames: u64,
    stopped: bool,
    planes: Vec<u8>,
}

impl Y4mRecorder {
    /// Creates (truncates) `path`; nothing is written before the first frame.
    pub fn create(path: impl Into<PathBuf>, fps: f64, max_bytes: u64) -> Result<Self> {
        let path = path.into();
        if let Some(p) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(p)
                .map_err(|e| Error::io(format!("creating recording folder {p:?}"), e))?;
        }
        let file = File::create(&path)
            .map_err(|e| Error::io(format!("creating recording {path:?}"), e))?;
        Ok(Y4mRecorder {
            path,
            out: BufWriter::new(file),
            rate: rate_ratio(fps),
            format: None,
            max_bytes,
            written: 0,
            frames: 0,
            stopped: false,
            planes: Vec::new(),
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Bytes written so far (header included).
    pub fn bytes(&self) -> u64 {
        self.written
    }

    /// True once the size cap stopped the recording.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Records an RGB frame (4:4:4). Returns `Ok(false)` when the cap stopped it.
    pub fn record_rgb(&mut self, frame: &Frame) -> Result<bool> {
        let (w, h) = (frame.width as usize, frame.height as usize);
        if !self.begin(Layout::Rgb444, frame.width, frame.height)? {
            return Ok(false);
        }
        let n = w * h;
        let (y, rest) = self.planes.split_at_mut(n);
        let (cb, cr) = rest.split_at_mut(n);
        for (i, px) in frame.rgb.chunks_exact(3).enumerate() {
            let [py, pcb, pcr] = rgb_to_ycbcr_full(px[0], px[1], px[2]);
            y[i] = py;
            cb[i] = pcb;
            cr[i] = pcr;
        }
        self.commit()
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
        let layout = match format {
            PixelFormat::Yuyv => Layout::Yuyv422,
            PixelFormat::Nv12 => Layout::Nv12To420,
            PixelFormat::Grey => Layout::Mono,
            _ => return self.record_rgb(decoded),
        };
        let need = format.frame_len(stride, height).unwrap_or(0);
        let min = need.saturating_sub(stride - format.min_stride(width).unwrap_or(stride));
        if data.len() < min {
            return Err(Error::invalid(
                format!("recording {:?}", self.path),
                format!(
                    "raw {} frame has {} bytes, expected {need}",
                    format.name(),
                    data.len()
                ),
            ));
        }
        if !self.begin(layout, width, height)? {
            return Ok(false);
        }
        let cw = w.div_ceil(2);
        match layout {
            Layout::Yuyv422 => {
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
            Layout::Nv12To420 => {
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
            Layout::Mono => {
                for r in 0..h {
                    self.planes[r * w..(r + 1) * w]
                        .copy_from_slice(&data[r * stride..r * stride + w]);
                }
            }
            Layout::Rgb444 => unreachable!("RGB input is recorded by record_rgb"),
        }
        self.commit()
    }

    /// Writes the header on the first frame, checks the size and the cap,
    /// and sizes the plane buffer. `Ok(false)`: the cap stops the recording.
    fn begin(&mut self, layout: Layout, width: u32, height: u32) -> Result<bool> {
        if self.stopped {
            return Ok(false);
        }
        let frame_bytes = layout.frame_bytes(width as usize, height as usize);
        let header = match self.format {
            None => Some(format!(
                "YUV4MPEG2 W{width} H{height} F{}:{} Ip A1:1 {}\n",
                self.rate.0,
                self.rate.1,
                layout.tag()
            )),
            Some(f) if f == (layout, width, height) => None,
            Some((l, w, h)) => {
                return Err(Error::Sink {
                    sink: format!("recording {:?}", self.path),
                    reason: format!(
                        "frame changed from {w}x{h} ({}) to {width}x{height} ({}); a Y4M file has one format",
                        l.tag(),
                        layout.tag()
                    ),
                })
            }
        };
        let cost = header.as_ref().map_or(0, |h| h.len()) + 6 + frame_bytes;
        if self.written + cost as u64 > self.max_bytes {
            self.stopped = true;
            log::warn!(
                "recording {:?} stopped at {} frames, {} bytes: the next frame would pass record_max_mb",
                self.path,
                self.frames,
                self.written
            );
            return Ok(false);
        }
        if let Some(h) = header {
            self.out
                .write_all(h.as_bytes())
                .map_err(|e| Error::io(format!("writing recording {:?}", self.path), e))?;
            self.written += h.len() as u64;
            self.format = Some((layout, width, height));
            self.planes = vec![0; frame_bytes];
        }
        Ok(true)
    }

    fn commit(&mut self) -> Result<bool> {
        let io_err = |e| Error::io(format!("writing recording {:?}", self.path), e);
        self.out.write_all(b"FRAME\n").map_err(io_err)?;
        self.out.write_all(&self.planes).map_err(io_err)?;
        // Flushed every frame: a crash loses at most the frame in flight.
        self.out.flush().map_err(io_err)?;
        self.written += 6 + self.planes.len() as u64;
        self.frames += 1;
        Ok(true)
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
        format!("{} + recording {:?}", self.inner.name(), self.rec.path)
    }

    fn write(&mut self, frame: &Frame) -> Result<()> {
        self.rec.record_rgb(frame)?;
        self.inner.write(frame)
    }

    fn finish(&mut self) -> Result<()> {
        self.inner.finish()?;
        self.rec
            .out
            .flush()
            .map_err(|e| Error::io(format!("flushing recording {:?}", self.rec.path), e))
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
    fn rate_ratios() {
        assert_eq!(rate_ratio(30.0), (30, 1));
        assert_eq!(rate_ratio(29.97), (2997, 100));
        assert_eq!(rate_ratio(12.5), (25, 2));
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
}
