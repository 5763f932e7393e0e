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
    /// Frames delivered since the last pass began (a looping folder whose
    /// images all became unreadable ends instead of spinning).
    good_in_pass: u64,
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
            good_in_pass: 0,
            scratch: Vec::new(),
            rec: None,
        };
        // The first image that decodes sets the size; damaged ones before
        // it are skipped (and counted) when playback reaches them.
        let mut first = Frame::new(0, 0);
        let mut first_err = None;
        for i in 0..s.files.len() {
            let p = s.files[i].clone();
            match s.load(&p, &mut first) {
                Ok(()) => {
                    s.width = first.width;
                    s.height = first.height;
                    return Ok(s);
                }
                Err(e) if s.opts.strict => return Err(e),
                Err(e) => {
                    log::warn!("{e}");
                    first_err.get_or_insert(e);
                }
            }
        }
        let why = first_err.map(|e| e.to_string()).unwrap_or_default();
        Err(source_err(
            dir,
            format!("none of its {} images can be read (first: {why}); fix: point source at a folder of readable PNG/JPEG frames", s.files.len()),
        ))
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
            self.opts
                .limits
                .check(&format!("image {path:?}"), w.into(), h.into())?;
            frame.width = w;
            frame.height = h;
            return decode_jpeg(&self.scratch, frame, &format!("image {path:?}"));
        }
        use image::ImageDecoder;
        let file = File::open(path).map_err(|e| Error::io(format!("reading image {path:?}"), e))?;
        // The decoder checks the header's size against the limits before it
        // allocates anything for the pixels.
        let lim = self.opts.limits;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(lim.max_width);
        limits.max_image_height = Some(lim.max_height);
        limits.max_alloc = Some(u64::from(lim.max_width) * u64::from(lim.max_height) * 8);
        let dec = image::codecs::png::PngDecoder::with_limits(BufReader::new(file), limits)
            .map_err(|e| match e {
                image::ImageError::Limits(_) => bad(format!(
                    "its header's size is over the {}x{} limit; fix: a smaller image, or raise \
                     capture.max_width/max_height if this size is real",
                    lim.max_width, lim.max_height
                )),
                e => bad(e.to_string()),
            })?;
        let (w, h) = dec.dimensions();
        lim.check(&format!("image {path:?}"), w.into(), h.into())?;
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
            if !self.opts.looping || self.good_in_pass == 0 {
                return Ok(false);
            }
            self.pos = 0;
            self.good_in_pass = 0;
        }
        let path = std::mem::take(&mut self.files[self.pos]);
        let loaded = self.load(&path, frame);
        self.files[self.pos] = path;
        let index = self.pos;
        self.pos += 1;
        let reason = match loaded {
            Err(e) => Some(e.to_string()),
            Ok(()) if (frame.width, frame.height) != (self.width, self.height) => Some(format!(
                "it is {}x{}, the folder's first image is {}x{}; fix: give every frame one size",
                frame.width, frame.height, self.width, self.height
            )),
            Ok(()) => None,
        };
        if let Some(reason) = reason {
            // Leave the frame at the stream's size for whoever reuses it.
            frame.width = self.width;
            frame.height = self.height;
            frame
                .rgb
                .resize(self.width as usize * self.height as usize * 3, 0);
            let name = self.files[index]
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            return Err(Error::corrupt_frame(
                self.name(),
                format!("image {index} ({name})"),
                reason,
            ));
        }
        self.good_in_pass += 1;
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
    use crate::source::replay::ReplayOptions;

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

    fn save(dir: &Path, name: &str, w: u32, h: u32, n: u8) {
        let f = pattern(w, h, n);
        image::save_buffer(dir.join(name), &f.rgb, w, h, image::ExtendedColorType::Rgb8).unwrap();
    }

    /// CRC-32 (ISO-HDLC), as PNG chunks carry it.
    fn crc32(data: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    /// A valid PNG whose header claims `w` x `h` (its data is a 1x1 image's).
    fn png_claiming(w: u32, h: u32) -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        image::write_buffer_with_format(
            &mut buf,
            &[0, 0, 0],
            1,
            1,
            image::ExtendedColorType::Rgb8,
            image::ImageFormat::Png,
        )
        .unwrap();
        let mut png = buf.into_inner();
        // Signature (8), IHDR length (4), "IHDR" (4), width, height, ...
        png[16..20].copy_from_slice(&w.to_be_bytes());
        png[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        png
    }

    #[test]
    fn damaged_images_are_skipped_and_named_and_the_folder_ends() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        save(d, "f0.png", 5, 3, 0);
        save(d, "f1.png", 5, 3, 1);
        let whole = std::fs::read(d.join("f1.png")).unwrap();
        std::fs::write(d.join("f2.png"), &whole[..whole.len() / 2]).unwrap();
        std::fs::write(d.join("f3.png"), b"\x89PNG garbage").unwrap();
        std::fs::write(d.join("f4.png"), b"").unwrap();
        save(d, "f5.png", 2, 2, 5);
        std::fs::write(d.join("f6.jpg"), b"\xff\xd8 not a jpeg").unwrap();
        std::fs::write(d.join("f7.png"), png_claiming(100_000, 100_000)).unwrap();
        save(d, "f8.png", 5, 3, 3);
        let mut s = ImageFolder::open(d, fast(false)).unwrap();
        let mut f = Frame::new(1, 1);
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            match s.next_frame(&mut f) {
                Ok(true) => good.push(f.rgb[2] / 40),
                Ok(false) => break,
                Err(e) => {
                    assert!(matches!(e, Error::CorruptFrame { .. }), "{e}");
                    assert_eq!((f.width, f.height), (5, 3));
                    bad.push(e.to_string());
                }
            }
        }
        assert_eq!(good, [0, 1, 3], "{bad:#?}");
        assert_eq!(bad.len(), 6, "{bad:#?}");
        for (i, name) in [(2, "f2.png"), (5, "f5.png"), (6, "f6.jpg"), (7, "f7.png")] {
            assert!(
                bad.iter()
                    .any(|b| b.contains(&format!("image {i} ({name})"))),
                "{name}: {bad:#?}"
            );
        }
        assert!(bad.iter().any(|b| b.contains("2x2")), "{bad:#?}");
        assert!(
            bad.iter().any(|b| b.contains("8192x8192 limit")),
            "{bad:#?}"
        );
    }

    #[test]
    fn the_first_readable_image_sets_the_size_and_strict_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.png"), b"").unwrap();
        save(d, "b.png", 6, 4, 1);
        let s = ImageFolder::open(d, fast(false)).unwrap();
        assert_eq!(s.size(), (6, 4));
        let strict = ReplayOptions {
            strict: true,
            ..fast(false)
        };
        let e = ImageFolder::open(d, strict).err().unwrap().to_string();
        assert!(e.contains("a.png"), "{e}");
        std::fs::remove_file(d.join("b.png")).unwrap();
        let e = ImageFolder::open(d, fast(false)).err().unwrap().to_string();
        assert!(
            e.contains("none of its 1 images") && e.contains("fix"),
            "{e}"
        );
    }

    #[test]
    fn a_looping_folder_whose_images_all_fail_ends() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "a.png", 4, 4, 1);
        let mut s = ImageFolder::open(dir.path(), fast(true)).unwrap();
        std::fs::write(dir.path().join("a.png"), b"gone bad").unwrap();
        let mut f = Frame::new(1, 1);
        assert!(s.next_frame(&mut f).is_err());
        assert!(!s.next_frame(&mut f).unwrap());
    }
}
