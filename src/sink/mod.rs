//! Where composited frames go: files for now, displays later.
//!
//! A sink receives finished RGB frames in order. File sinks write as they go
//! and flush on [`Sink::finish`], so a stopped run leaves a playable file.

pub mod display;
pub mod record;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::frame::Frame;
use crate::{Error, Result};

/// A consumer of composited frames.
pub trait Sink: Send {
    /// Human-readable description for logs and reports.
    fn name(&self) -> String;

    /// Shows or stores one frame.
    fn write(&mut self, frame: &Frame) -> Result<()>;

    /// Flushes and closes. Called once at the end of a run.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Discards frames: for benchmarks, where only the timing matters.
#[derive(Debug, Default)]
pub struct NullSink {
    /// Frames received.
    pub frames: u64,
}

impl Sink for NullSink {
    fn name(&self) -> String {
        "null".into()
    }

    fn write(&mut self, frame: &Frame) -> Result<()> {
        // Touch the frame so the work that produced it cannot be optimised away.
        std::hint::black_box(frame.rgb.first());
        self.frames += 1;
        Ok(())
    }
}

/// Writes each frame as `frame_NNNNNN.png` into a folder.
#[derive(Debug)]
pub struct PngDirSink {
    dir: PathBuf,
    written: u64,
}

impl PngDirSink {
    /// Creates the folder if needed.
    pub fn create(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating PNG output folder {dir:?}"), e))?;
        Ok(PngDirSink { dir, written: 0 })
    }
}

impl Sink for PngDirSink {
    fn name(&self) -> String {
        format!("png folder {:?}", self.dir)
    }

    fn write(&mut self, frame: &Frame) -> Result<()> {
        let path = self.dir.join(format!("frame_{:06}.png", frame.id));
        image::save_buffer(
            &path,
            &frame.rgb,
            frame.width,
            frame.height,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| Error::Sink {
            sink: self.name(),
            reason: format!("writing {path:?}: {e}"),
        })?;
        self.written += 1;
        Ok(())
    }
}

/// Writes a YUV4MPEG2 (`.y4m`) video, 4:4:4 full-range BT.601, playable
/// with ffmpeg and mpv. Each frame is flushed as soon as it is written, so a
/// crash loses at most the frame in flight.
pub struct Y4mSink {
    path: PathBuf,
    out: BufWriter<File>,
    fps: u32,
    size: Option<(u32, u32)>,
    planes: Vec<u8>,
}

impl Y4mSink {
    /// Creates (truncates) the file; the header is written with the first frame.
    pub fn create(path: impl Into<PathBuf>, fps: f64) -> Result<Self> {
        let path = path.into();
        create_parent(&path)?;
        let file = File::create(&path)
            .map_err(|e| Error::io(format!("creating video file {path:?}"), e))?;
        Ok(Y4mSink {
            path,
            out: BufWriter::new(file),
            fps: fps.round().max(1.0) as u32,
            size: None,
            planes: Vec::new(),
        })
    }
}

/// Full-range BT.601 RGB -> Y'CbCr, the inverse of what players use for
/// unflagged 4:4:4 Y4M with `XCOLORRANGE=FULL`.
pub fn rgb_to_ycbcr_full(r: u8, g: u8, b: u8) -> [u8; 3] {
    let (r, g, b) = (r as f32, g as f32, b as f32);
    let y = 0.299 * r + 0.587 * g + 0.114 * b;
    let cb = 128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b;
    let cr = 128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b;
    [
        y.round().clamp(0.0, 255.0) as u8,
        cb.round().clamp(0.0, 255.0) as u8,
        cr.round().clamp(0.0, 255.0) as u8,
    ]
}

impl Sink for Y4mSink {
    fn name(&self) -> String {
        format!("y4m video {:?}", self.path)
    }

    fn write(&mut self, frame: &Frame) -> Result<()> {
        let io_err = |e| Error::io(format!("writing video file {:?}", self.path), e);
        match self.size {
            None => {
                let header = format!(
                    "YUV4MPEG2 W{} H{} F{}:1 Ip A1:1 C444 XCOLORRANGE=FULL\n",
                    frame.width, frame.height, self.fps
                );
                self.out.write_all(header.as_bytes()).map_err(io_err)?;
                self.size = Some((frame.width, frame.height));
                self.planes = vec![0; frame.rgb.len()];
            }
            Some((w, h)) if (w, h) != (frame.width, frame.height) => {
                return Err(Error::Sink {
                    sink: self.name(),
                    reason: format!(
                        "frame size changed from {w}x{h} to {}x{}; a Y4M file has one size",
                        frame.width, frame.height
                    ),
                });
            }
            Some(_) => {}
        }
        let n = frame.width as usize * frame.height as usize;
        let (y, rest) = self.planes.split_at_mut(n);
        let (cb, cr) = rest.split_at_mut(n);
        for (i, px) in frame.rgb.chunks_exact(3).enumerate() {
            let [py, pcb, pcr] = rgb_to_ycbcr_full(px[0], px[1], px[2]);
            y[i] = py;
            cb[i] = pcb;
            cr[i] = pcr;
        }
        self.out.write_all(b"FRAME\n").map_err(io_err)?;
        self.out.write_all(&self.planes).map_err(io_err)?;
        self.out.flush().map_err(io_err)
    }

    fn finish(&mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| Error::io(format!("flushing video file {:?}", self.path), e))
    }
}

/// Writes an animated GIF (viewable in any browser). Colour quantisation
/// is slow (tens of ms per VGA frame), so use it for short demos.
pub struct GifSink {
    path: PathBuf,
    encoder: image::codecs::gif::GifEncoder<BufWriter<File>>,
    delay_ms: u32,
}

impl GifSink {
    /// Creates (truncates) the file.
    pub fn create(path: impl Into<PathBuf>, fps: f64) -> Result<Self> {
        let path = path.into();
        create_parent(&path)?;
        let file =
            File::create(&path).map_err(|e| Error::io(format!("creating GIF file {path:?}"), e))?;
        let mut encoder = image::codecs::gif::GifEncoder::new_with_speed(BufWriter::new(file), 10);
        encoder
            .set_repeat(image::codecs::gif::Repeat::Infinite)
            .map_err(|e| Error::Sink {
                sink: format!("gif {path:?}"),
                reason: e.to_string(),
            })?;
        Ok(GifSink {
            path,
            encoder,
            delay_ms: (1000.0 / fps.max(1.0)).round() as u32,
        })
    }
}

impl Sink for GifSink {
    fn name(&self) -> String {
        format!("gif {:?}", self.path)
    }

    fn write(&mut self, frame: &Frame) -> Result<()> {
        let mut rgba = Vec::with_capacity(frame.rgb.len() / 3 * 4);
        for px in frame.rgb.chunks_exact(3) {
            rgba.extend_from_slice(&[px[0], px[1], px[2], 255]);
        }
        let buf = image::RgbaImage::from_raw(frame.width, frame.height, rgba).ok_or_else(|| {
            Error::invalid("GIF frame", "pixel buffer does not match the frame size")
        })?;
        let delay = image::Delay::from_numer_denom_ms(self.delay_ms, 1);
        self.encoder
            .encode_frame(image::Frame::from_parts(buf, 0, 0, delay))
            .map_err(|e| Error::Sink {
                sink: self.name(),
                reason: e.to_string(),
            })
    }
}

/// Full-range BT.601 Y'CbCr -> RGB, the inverse of [`rgb_to_ycbcr_full`].
pub fn ycbcr_full_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let (y, cb, cr) = (y as f32, cb as f32 - 128.0, cr as f32 - 128.0);
    let r = y + 1.402 * cr;
    let g = y - 0.344_136 * cb - 0.714_136 * cr;
    let b = y + 1.772 * cb;
    [
        r.round().clamp(0.0, 255.0) as u8,
        g.round().clamp(0.0, 255.0) as u8,
        b.round().clamp(0.0, 255.0) as u8,
    ]
}

/// Turns a 4:4:4 Y4M written by [`Y4mSink`] into an animated GIF, keeping
/// every `step`-th frame. Done after a run so that GIF encoding (slow) does
/// not count in the display stage's latency.
pub fn y4m_to_gif(y4m: &Path, gif: &Path, step: usize) -> Result<()> {
    let bad = |reason: String| Error::invalid(format!("video {y4m:?}"), reason);
    let data = std::fs::read(y4m).map_err(|e| Error::io(format!("reading video {y4m:?}"), e))?;
    let header_end = data
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no Y4M header".into()))?;
    let header =
        std::str::from_utf8(&data[..header_end]).map_err(|_| bad("header is not text".into()))?;
    let mut parts = header.split(' ');
    if parts.next() != Some("YUV4MPEG2") {
        return Err(bad("not a YUV4MPEG2 file".into()));
    }
    let (mut w, mut h, mut fps, mut c444) = (0usize, 0usize, 15.0f64, false);
    for p in parts {
        match p.split_at(1) {
            ("W", v) => w = v.parse().map_err(|_| bad(format!("bad width {v:?}")))?,
            ("H", v) => h = v.parse().map_err(|_| bad(format!("bad height {v:?}")))?,
            ("F", v) => {
                let mut nd = v.split(':').filter_map(|x| x.parse::<f64>().ok());
                if let (Some(n), Some(d)) = (nd.next(), nd.next()) {
                    fps = n / d.max(1.0);
                }
            }
            ("C", v) => c444 = v.starts_with("444"),
            _ => {}
        }
    }
    if w == 0 || h == 0 || !c444 {
        return Err(bad("only 4:4:4 Y4M files with a size are supported".into()));
    }
    let n = w * h;
    let mut sink = GifSink::create(gif, fps / step.max(1) as f64)?;
    let mut frame = Frame::new(w as u32, h as u32);
    let mut pos = header_end + 1;
    let mut index = 0usize;
    while pos < data.len() {
        let line_end = data[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| pos + i)
            .ok_or_else(|| bad("truncated FRAME header".into()))?;
        if !data[pos..line_end].starts_with(b"FRAME") {
            return Err(bad(format!("expected FRAME at byte {pos}")));
        }
        let start = line_end + 1;
        let planes = data
            .get(start..start + 3 * n)
            .ok_or_else(|| bad(format!("frame {index} is truncated")))?;
        if index.is_multiple_of(step.max(1)) {
            for i in 0..n {
                let rgb = ycbcr_full_to_rgb(planes[i], planes[n + i], planes[2 * n + i]);
                frame.rgb[i * 3..i * 3 + 3].copy_from_slice(&rgb);
            }
            frame.id = index as u64;
            sink.write(&frame)?;
        }
        index += 1;
        pos = start + 3 * n;
    }
    sink.finish()
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => std::fs::create_dir_all(p)
            .map_err(|e| Error::io(format!("creating output folder {p:?}"), e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_frame(id: u64) -> Frame {
        let mut f = Frame::new(4, 2);
        f.id = id;
        for (i, v) in f.rgb.iter_mut().enumerate() {
            *v = (i * 10) as u8;
        }
        f
    }

    #[test]
    fn y4m_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.y4m");
        let mut s = Y4mSink::create(&path, 15.0).unwrap();
        s.write(&test_frame(0)).unwrap();
        s.write(&test_frame(1)).unwrap();
        s.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header = b"YUV4MPEG2 W4 H2 F15:1 Ip A1:1 C444 XCOLORRANGE=FULL\n";
        assert!(bytes.starts_with(header));
        assert_eq!(bytes.len(), header.len() + 2 * (6 + 4 * 2 * 3));
        // A size change is refused, not written as garbage.
        let mut s = Y4mSink::create(&path, 15.0).unwrap();
        s.write(&test_frame(0)).unwrap();
        assert!(s.write(&Frame::new(2, 2)).is_err());
    }

    #[test]
    fn y4m_converts_to_gif() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.y4m");
        let mut s = Y4mSink::create(&path, 10.0).unwrap();
        for i in 0..4 {
            s.write(&test_frame(i)).unwrap();
        }
        s.finish().unwrap();
        let gif = dir.path().join("v.gif");
        y4m_to_gif(&path, &gif, 2).unwrap();
        let file = std::io::BufReader::new(std::fs::File::open(&gif).unwrap());
        let dec = image::codecs::gif::GifDecoder::new(file).unwrap();
        use image::AnimationDecoder;
        assert_eq!(dec.into_frames().count(), 2);
        // A truncated video is an error, not a panic.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        assert!(y4m_to_gif(&path, &gif, 1).is_err());
    }

    #[test]
    fn ycbcr_round_trip() {
        for rgb in [[0u8, 0, 0], [255, 255, 255], [200, 30, 90], [10, 240, 128]] {
            let [y, cb, cr] = rgb_to_ycbcr_full(rgb[0], rgb[1], rgb[2]);
            let back = ycbcr_full_to_rgb(y, cb, cr);
            for c in 0..3 {
                assert!(
                    (back[c] as i32 - rgb[c] as i32).abs() <= 2,
                    "{rgb:?} -> {back:?}"
                );
            }
        }
    }

    #[test]
    fn ycbcr_grey_is_neutral() {
        assert_eq!(rgb_to_ycbcr_full(0, 0, 0), [0, 128, 128]);
        assert_eq!(rgb_to_ycbcr_full(255, 255, 255), [255, 128, 128]);
        assert_eq!(rgb_to_ycbcr_full(255, 0, 0)[2], 255);
    }

    #[test]
    fn png_and_gif_write_readable_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = PngDirSink::create(dir.path().join("png")).unwrap();
        p.write(&test_frame(7)).unwrap();
        let img = image::open(dir.path().join("png/frame_000007.png"))
            .unwrap()
            .to_rgb8();
        assert_eq!(img.get_pixel(1, 0).0, [30, 40, 50]);
        let mut g = GifSink::create(dir.path().join("a.gif"), 10.0).unwrap();
        g.write(&test_frame(0)).unwrap();
        g.write(&test_frame(1)).unwrap();
        drop(g);
        let bytes = std::fs::read(dir.path().join("a.gif")).unwrap();
        assert!(bytes.starts_with(b"GIF89a"));
    }
}
