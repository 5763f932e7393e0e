//! Raw frame dumps (`v4l2-ctl --stream-to`): YUYV, NV12, GREY, RGB24 or
//! BGR24 frames laid end to end, no header, converted by the live path's
//! [`Converter`].

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{source_err, Delivery, ReplayOptions};
use crate::frame::Frame;
use crate::sink::record::Y4mRecorder;
use crate::source::pixfmt::{Converter, PixelFormat};
use crate::source::FrameSource;
use crate::{Error, Result};

/// Replays raw frames laid end to end (a `v4l2-ctl --stream-to` dump).
pub struct RawReplay {
    path: PathBuf,
    file: BufReader<File>,
    conv: Converter,
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: usize,
    frames_in_file: u64,
    buf: Vec<u8>,
    opts: ReplayOptions,
    delivery: Delivery,
    pos: u64,
    pub(super) rec: Option<Y4mRecorder>,
}

impl RawReplay {
    /// Opens a dump of `format` frames of `width` x `height`, no line padding.
    pub fn open(
        path: &Path,
        format: PixelFormat,
        width: u32,
        height: u32,
        opts: ReplayOptions,
    ) -> Result<Self> {
        let stride = format.min_stride(width).ok_or_else(|| {
            source_err(
                path,
                "raw MJPEG dumps have no fixed frame size; fix: use an image folder",
            )
        })?;
        let frame_len = format.frame_len(stride, height).unwrap_or(0);
        let file =
            File::open(path).map_err(|e| Error::io(format!("opening raw video {path:?}"), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("reading raw video {path:?}"), e))?
            .len();
        let frames_in_file = len / frame_len as u64;
        if frames_in_file == 0 {
            return Err(source_err(
                path,
                format!(
                    "{len} bytes is less than one {} frame of {width}x{height} ({frame_len} bytes); \
                     fix: set capture.width/height/format to the dump's",
                    format.name()
                ),
            ));
        }
        if len % frame_len as u64 != 0 {
            log::warn!(
                "{path:?}: {} trailing bytes are not a whole {width}x{height} {} frame (size or \
                 format wrong, or a cut-off recording); they are skipped",
                len % frame_len as u64,
                format.name()
            );
        }
        Ok(RawReplay {
            path: path.to_path_buf(),
            file: BufReader::new(file),
            conv: Converter::new(format, width, height, stride)?,
            format,
            width,
            height,
            stride,
            frames_in_file,
            buf: vec![0; frame_len],
            opts,
            delivery: Delivery::new(&opts, opts.fps),
            pos: 0,
            rec: None,
        })
    }

    /// Whole frames in the file.
    pub fn frames_in_file(&self) -> u64 {
        self.frames_in_file
    }
}

impl FrameSource for RawReplay {
    fn name(&self) -> String {
        format!("raw {} replay {:?}", self.format.name(), self.path)
    }

    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn frame_rate(&self) -> f64 {
        self.opts.fps
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        if self.pos == self.frames_in_file {
            if !self.opts.looping {
                return Ok(false);
            }
            self.file
                .seek(SeekFrom::Start(0))
                .map_err(|e| Error::io(format!("rewinding {:?}", self.path), e))?;
            self.pos = 0;
        }
        self.file
            .read_exact(&mut self.buf)
            .map_err(|e| Error::io(format!("reading raw video {:?}", self.path), e))?;
        self.pos += 1;
        self.conv.to_rgb(&self.buf, frame)?;
        self.delivery.deliver(frame);
        if let Some(rec) = self.rec.as_mut() {
            rec.record_raw(self.format, self.stride, &self.buf, frame)?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::replay::tests::drain;
    use crate::source::replay::Pace;
    use std::time::{Duration, Instant};

    #[test]
    fn realtime_pace_holds_the_rate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.grey");
        std::fs::write(&path, [7u8; 4 * 6]).unwrap();
        let opts = ReplayOptions {
            pace: Pace::Realtime,
            fps: 50.0,
            ..crate::source::replay::tests::fast(false)
        };
        let mut s = RawReplay::open(&path, PixelFormat::Grey, 2, 2, opts).unwrap();
        assert_eq!(s.frames_in_file(), 6);
        let t0 = Instant::now();
        let frames = drain(&mut s, 10);
        let took = t0.elapsed();
        assert_eq!(frames.len(), 6);
        // Six frames at 50 fps: five periods (the first is immediate).
        assert!(took >= Duration::from_millis(95), "{took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
        let gap = frames[5].captured - frames[4].captured;
        assert!(gap >= Duration::from_millis(18), "{gap:?}");
    }
}
