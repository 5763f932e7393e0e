//! Where composited frames go: files for now, displays later.
//!
//! A sink receives finished RGB frames in order. File sinks write as they go
//! and flush on [`Sink::finish`], so a stopped run leaves a playable file.

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
        let file = File::create(&path)
            .map_err(|e| Error::io(format!("creating GIF file {path:?}"), e))?;
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
        let img = image::open(dir.path().join("png/frame_000007.png")).unwrap().to_rgb8();
        assert_eq!(img.get_pixel(1, 0).0, [30, 40, 50]);
        let mut g = GifSink::create(dir.path().join("a.gif"), 10.0).unwrap();
        g.write(&test_frame(0)).unwrap();
        g.write(&test_frame(1)).unwrap();
        drop(g);
        let bytes = std::fs::read(dir.path().join("a.gif")).unwrap();
        assert!(bytes.starts_with(b"GIF89a"));
    }
}
