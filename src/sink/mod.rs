//! Where composited frames go: a display ([`display`]) or files.
//!
//! A sink receives finished RGB frames in order. File sinks write as they go
//! and flush on [`Sink::finish`], so a stopped run leaves a playable file.
//! [`open`] is the one place that builds the sink a [`Config`] asks for,
//! with `record = "overlay"` attached ([`record`]).

pub mod display;
pub mod record;

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::config::{Config, DisplaySpec};
use crate::frame::Frame;
use crate::kernels::YuvRange;
use crate::y4m::{self, Chroma, Header, Next};
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

impl Sink for Box<dyn Sink> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn write(&mut self, frame: &Frame) -> Result<()> {
        (**self).write(frame)
    }
    fn finish(&mut self) -> Result<()> {
        (**self).finish()
    }
}

/// Opens the configured display or file sink (with `record = "overlay"`
/// attached); `fps` is the source's rate, for the file formats that store one.
pub fn open(cfg: &Config, fps: f64) -> Result<Box<dyn Sink>> {
    let sink: Box<dyn Sink> = match &cfg.display {
        DisplaySpec::Null => Box::new(NullSink::default()),
        DisplaySpec::PngDir(d) => Box::new(PngDirSink::create(d)?),
        DisplaySpec::Y4m(p) => Box::new(Y4mSink::create(p, fps)?),
        DisplaySpec::Gif(p) => Box::new(GifSink::create(p, fps)?),
        DisplaySpec::Device(p) => display::open(p)?,
    };
    record::with_overlay_recording(sink, cfg, fps)
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
/// with ffmpeg and mpv, through the crate's one Y4M writer
/// ([`crate::y4m::Writer`]): each frame is flushed as soon as it is
/// written, so a crash loses at most the frame in flight.
pub struct Y4mSink {
    out: y4m::Writer,
    fps: f64,
    planes: Vec<u8>,
}

impl Y4mSink {
    /// Creates (truncates) the file; the header is written with the first frame.
    pub fn create(path: impl Into<PathBuf>, fps: f64) -> Result<Self> {
        Ok(Y4mSink {
            out: y4m::Writer::create(path, u64::MAX)?,
            fps,
            planes: Vec::new(),
        })
    }
}

impl Sink for Y4mSink {
    fn name(&self) -> String {
        format!("y4m video {:?}", self.out.path())
    }

    fn write(&mut self, frame: &Frame) -> Result<()> {
        let header = Header::new(
            frame.width,
            frame.height,
            self.fps,
            Chroma::C444,
            YuvRange::Full,
        );
        self.planes.resize(header.frame_bytes(), 0);
        y4m::rgb_to_planes_444(frame, &mut self.planes);
        self.out.write_frame(&header, &self.planes).map(drop)
    }

    fn finish(&mut self) -> Result<()> {
        self.out.flush()
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

/// Turns a Y4M written by [`Y4mSink`] (or any 8-bit Y4M) into an animated
/// GIF, keeping every `step`-th frame. Done after a run so that GIF
/// encoding (slow) does not count in the display stage's latency.
pub fn y4m_to_gif(y4m: &Path, gif: &Path, step: usize) -> Result<()> {
    let mut reader = y4m::Reader::open(y4m)?;
    let step = step.max(1);
    let mut sink = GifSink::create(gif, reader.header().fps() / step as f64)?;
    let mut frame = Frame::new(1, 1);
    let mut index = 0u64;
    loop {
        match reader.read_frame()? {
            Next::Frame => {}
            Next::End => break,
            Next::Truncated => {
                return Err(Error::invalid(
                    format!("video {y4m:?}"),
                    format!("frame {index} is truncated; fix: convert a complete recording"),
                ))
            }
        }
        if index.is_multiple_of(step as u64) {
            reader.to_rgb(&mut frame)?;
            frame.id = index;
            sink.write(&frame)?;
        }
        index += 1;
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

    #[test]
    fn open_builds_the_configured_sink() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.y4m");
        let cfg =
            crate::source::tests::config(&format!("display = \"{}\"", out.display()), dir.path());
        let mut s = open(&cfg, 12.0).unwrap();
        s.write(&test_frame(0)).unwrap();
        s.finish().unwrap();
        assert!(std::fs::read(&out)
            .unwrap()
            .starts_with(b"YUV4MPEG2 W4 H2 F12:1"));
        // A device path that is no display is an error, not a file.
        let cfg = crate::source::tests::config("display = \"/dev/null\"", dir.path());
        assert!(open(&cfg, 12.0).is_err());
    }
}
