//! A folder of PNG and JPEG images, played in name order: the frames of a
//! regression case, or a dataset's images.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::{source_err, Delivery, ReplayOptions};
use crate::frame::Frame;
use crate::sink::record::Y4mRecorder;
use crate::source::pixfmt::decode_jpeg;
use crate::source::FrameSource;
use crate::{Error, Result};

/// Replays the PNG and JPEG images of a folder in name order.
pub struct ImageFolder {
    dir: PathBuf,
    files: Vec<PathBuf>,
    width: u32,
    height: u32,
    opts: ReplayOptions,
    delivery: Delivery,
    pos: usize,
    scratch: Vec<u8>,
    pub(super) rec: Option<Y4mRecorder>,
}

impl ImageFolder {
    /// Lists the folder; the first image sets the size every other must have.
    pub fn open(dir: &Path, opts: ReplayOptions) -> Result<Self> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("listing image folder {dir:?}"), e))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension()
                        .and_then(|e| e.to_str())
                        .map(str::to_ascii_lowercase)
                        .as_deref(),
                    Some("png" | "jpg" | "jpeg")
                )
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(source_err(
                dir,
                "no .png/.jpg/.jpeg images in the folder; fix: point source at a folder of frames",
            ));
        }
        let mut s = ImageFolder {
            dir: dir.to_path_buf(),
            files,
            width: 0,
            height: 0,
            opts,
            delivery: Delivery::new(&opts, opts.fps),
            pos: 0,
            scratch: Vec::new(),
            rec: None,
        };
        let mut first = Frame::new(0, 0);
        let p = s.files[0].clone();
        s.load(&p, &mut first)?;
        s.width = first.width;
        s.height = first.height;
        Ok(s)
    }

    /// Decodes one image into `frame` (its size taken from the image).
    fn load(&mut self, path: &Path, frame: &mut Frame) -> Result<()> {
        let bad = |reason: String| Error::invalid(format!("image {path:?}"), reason);
        let is_png = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if !is_png {
            self.scratch.clear();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut self.scratch))
                .map_err(|e| Error::io(format!("reading image {path:?}"), e))?;
            let (w, h) =
                jpeg_size(&self.scratch).ok_or_else(|| bad("not a readable JPEG".into()))?;
            frame.width = w;
            frame.height = h;
            return decode_jpeg(&self.scratch, frame);
        }
        use image::ImageDecoder;
        let file = File::open(path).map_err(|e| Error::io(format!("reading image {path:?}"), e))?;
        let dec = image::codecs::png::PngDecoder::new(BufReader::new(file))
            .map_err(|e| bad(e.to_string()))?;
        let (w, h) = dec.dimensions();
        let ct = dec.color_type();
        self.scratch.resize(dec.total_bytes() as usize, 0);
        dec.read_image(&mut self.scratch)
            .map_err(|e| bad(e.to_string()))?;
        frame.width = w;
        frame.height = h;
        frame.rgb.resize(w as usize * h as usize * 3, 0);
        let px = frame.rgb.chunks_exact_mut(3);
        match ct {
            image::ColorType::Rgb8 => frame.rgb.copy_from_slice(&self.scratch),
            image::ColorType::Rgba8 => {
                for (o, i) in px.zip(self.scratch.chunks_exact(4)) {
                    o.copy_from_slice(&i[..3]);
                }
            }
            image::ColorType::L8 => {
                for (o, &l) in px.zip(self.scratch.iter()) {
                    o.fill(l);
                }
            }
            image::ColorType::La8 => {
                for (o, i) in px.zip(self.scratch.chunks_exact(2)) {
                    o.fill(i[0]);
                }
            }
            other => {
                return Err(bad(format!(
                    "colour type {other:?} is not supported; fix: save 8-bit RGB, RGBA or grey PNGs"
                )))
            }
        }
        Ok(())
    }
}

/// Width and height from a JPEG's SOF marker, without decoding.
fn jpeg_size(data: &[u8]) -> Option<(u32, u32)> {
    let mut dec = zune_jpeg::JpegDecoder::new(data);
    dec.decode_headers().ok()?;
    dec.dimensions().map(|(w, h)| (w as u32, h as u32))
}

impl FrameSource for ImageFolder {
    fn name(&self) -> String {
        format!("image folder {:?}", self.dir)
    }

    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn frame_rate(&self) -> f64 {
        self.opts.fps
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        if self.pos == self.files.len() {
            if !self.opts.looping {
                return Ok(false);
            }
            self.pos = 0;
        }
        let path = std::mem::take(&mut self.files[self.pos]);
        let loaded = self.load(&path, frame);
        self.files[self.pos] = path;
        loaded?;
        if (frame.width, frame.height) != (self.width, self.height) {
            return Err(source_err(
                &self.files[self.pos],
                format!(
                    "image is {}x{}, the folder's first is {}x{}; fix: give every frame one size",
                    frame.width, frame.height, self.width, self.height
                ),
            ));
        }
        self.pos += 1;
        self.delivery.deliver(frame);
        if let Some(rec) = self.rec.as_mut() {
            rec.record_rgb(frame)?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::replay::tests::{drain, fast, pattern};

    #[test]
    fn image_folder_in_name_order_with_size_check() {
        let dir = tempfile::tempdir().unwrap();
        for n in [2u8, 0, 1] {
            let f = pattern(5, 3, n);
            image::save_buffer(
                dir.path().join(format!("f{n}.png")),
                &f.rgb,
                5,
                3,
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        }
        std::fs::write(
            dir.path().join("f3.jpg"),
            crate::source::pixfmt::tests::test_jpeg(5, 3),
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
        let mut s = ImageFolder::open(dir.path(), fast(false)).unwrap();
        assert_eq!(s.size(), (5, 3));
        let frames = drain(&mut s, 10);
        assert_eq!(frames.len(), 4);
        for (n, f) in frames.iter().take(3).enumerate() {
            assert_eq!(f.rgb, pattern(5, 3, n as u8).rgb);
        }
        assert!(frames[3].pixel(0, 1)[0] > 200);
        // A frame of another size is an error naming the file.
        image::save_buffer(
            dir.path().join("f4.png"),
            &[0; 12],
            2,
            2,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
        let mut s = ImageFolder::open(dir.path(), fast(false)).unwrap();
        let mut f = Frame::new(1, 1);
        for _ in 0..4 {
            assert!(s.next_frame(&mut f).unwrap());
        }
        let e = s.next_frame(&mut f).unwrap_err().to_string();
        assert!(e.contains("f4.png") && e.contains("2x2"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(ImageFolder::open(empty.path(), fast(false)).is_err());
    }
}
