//! YUV4MPEG2 replay: our recordings, or ffmpeg's
//! `-pix_fmt yuv420p/422p/444p/gray` output, read by the crate's one Y4M
//! reader ([`crate::y4m`]) at the file's own frame rate.

use std::path::{Path, PathBuf};

use super::{Delivery, ReplayOptions};
use crate::frame::Frame;
use crate::sink::record::Y4mRecorder;
use crate::source::FrameSource;
use crate::y4m::{Next, Reader};
use crate::Result;

/// Replays a YUV4MPEG2 file.
pub struct Y4mReplay {
    path: PathBuf,
    reader: Reader,
    opts: ReplayOptions,
    delivery: Delivery,
    pub(super) rec: Option<Y4mRecorder>,
}

impl Y4mReplay {
    /// Opens and parses the header; errors name the file and the bad field.
    pub fn open(path: &Path, opts: ReplayOptions) -> Result<Self> {
        let reader = Reader::open_limited(path, &opts.limits)?;
        let fps = reader.header().fps();
        Ok(Y4mReplay {
            path: path.to_path_buf(),
            reader,
            opts,
            delivery: Delivery::new(&opts, fps),
            rec: None,
        })
    }

    /// Reads the next frame; `Ok(false)` at the end, a cut-off last frame
    /// (an interrupted recording) counting as the end.
    fn read_frame(&mut self) -> Result<bool> {
        match self.reader.read_frame()? {
            Next::Frame => Ok(true),
            Next::End => Ok(false),
            Next::Truncated => {
                log::warn!(
                    "{:?}: frame {} is cut off (a recording that was interrupted); treated as the end",
                    self.path,
                    self.reader.frames_read()
                );
                Ok(false)
            }
        }
    }
}

impl FrameSource for Y4mReplay {
    fn name(&self) -> String {
        format!("y4m replay {:?}", self.path)
    }

    fn size(&self) -> (u32, u32) {
        let h = self.reader.header();
        (h.width, h.height)
    }

    fn frame_rate(&self) -> f64 {
        self.reader.header().fps()
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        if !self.read_frame()? {
            if !self.opts.looping || self.reader.frames_read() == 0 {
                return Ok(false);
            }
            self.reader.rewind()?;
            if !self.read_frame()? {
                return Ok(false);
            }
        }
        self.reader.to_rgb(frame)?;
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
    use std::io::Write;

    #[test]
    fn y4m_recording_replays_within_rounding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.y4m");
        let mut rec = Y4mRecorder::create(&path, 12.5, 1 << 20).unwrap();
        for n in 0..3 {
            rec.record_rgb(&pattern(6, 4, n)).unwrap();
        }
        let mut s = Y4mReplay::open(&path, fast(false)).unwrap();
        assert_eq!(s.size(), (6, 4));
        assert_eq!(s.frame_rate(), 12.5);
        let frames = drain(&mut s, 10);
        assert_eq!(frames.len(), 3);
        for (n, f) in frames.iter().enumerate() {
            assert_eq!(f.id, n as u64);
            let want = pattern(6, 4, n as u8);
            for (a, b) in f.rgb.iter().zip(&want.rgb) {
                assert!(a.abs_diff(*b) <= 2, "frame {n}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn y4m_loops_and_survives_a_cut_off_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.y4m");
        let mut rec = Y4mRecorder::create(&path, 30.0, 1 << 20).unwrap();
        for n in 0..2 {
            rec.record_rgb(&pattern(4, 4, n)).unwrap();
        }
        drop(rec);
        // Half a third frame, as a crash would leave.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"FRAME\n\x01\x02\x03").unwrap();
        let mut s = Y4mReplay::open(&path, fast(true)).unwrap();
        let frames = drain(&mut s, 5);
        assert_eq!(frames.len(), 5);
        let ids: Vec<u64> = frames.iter().map(|f| f.id).collect();
        assert_eq!(ids, [0, 1, 2, 3, 4]);
        // Frames 0 and 2 are the file's first frame again (blue = n * 40).
        assert!(frames[2].pixel(0, 0)[2] < 3 && frames[3].pixel(0, 0)[2] > 37);
    }

    #[test]
    fn y4m_420_from_ffmpeg_layout() {
        // 2x2 4:2:0 limited: Y 235 everywhere, neutral chroma -> white.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.y4m");
        std::fs::write(
            &path,
            b"YUV4MPEG2 W2 H2 F25:1 Ip A0:0 C420jpeg XYSCSS=420JPEG\nFRAME\n\xeb\xeb\xeb\xeb\x80\x80",
        )
        .unwrap();
        let mut s = Y4mReplay::open(&path, fast(false)).unwrap();
        let frames = drain(&mut s, 3);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].pixel(1, 1), [255, 255, 255]);
        std::fs::write(&path, b"YUV4MPEG2 W2 H2 C420p10\n").unwrap();
        let e = Y4mReplay::open(&path, fast(false))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("C420p10") && e.contains("fix"), "{e}");
        std::fs::write(&path, b"RIFF....").unwrap();
        assert!(Y4mReplay::open(&path, fast(false)).is_err());
    }
}
