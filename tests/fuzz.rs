//! Mutation fuzzing of everything that reads outside input: Y4M files, raw
//! dumps, image folders (PNG and JPEG), MJPEG frames, board files and model
//! metadata. Each case mutates a valid input (bit flips, overwritten,
//! deleted, inserted or duplicated byte ranges, truncation) with its own
//! seeded generator, then reads it the way a run does, on a thread with a
//! deadline: it must end (or be refused) without a panic and without
//! hanging. A failing case names its seed and leaves its input in
//! `target/fuzz-failures/`, so it can be replayed and made a test.
//!
//! CI runs the default numbers of cases; `make fuzz` runs many more
//! (`LGMS_FUZZ_SCALE`, a multiplier).

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use lgms_edge::config::RawConfig;
use lgms_edge::frame::{Frame, Mask, Rect};
use lgms_edge::infer::model::{read_metadata, LoadOptions, Model};
use lgms_edge::infer::Segmenter;
use lgms_edge::kernels::YuvRange;
use lgms_edge::pipeline::stats::StageRecorder;
use lgms_edge::pipeline::{self, Options};
use lgms_edge::sink::NullSink;
use lgms_edge::source::pixfmt::{decode_jpeg, PixelFormat};
use lgms_edge::source::replay::{ImageFolder, Pace, RawReplay, ReplayOptions, Y4mReplay};
use lgms_edge::source::FrameSource;
use lgms_edge::y4m::{Chroma, Header, Writer};
use lgms_edge::Error;

/// Cases per target, times `LGMS_FUZZ_SCALE` (default 1).
fn cases(n: u64) -> u64 {
    let scale = std::env::var("LGMS_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1);
    n * scale.max(1)
}

/// Longest a single case may take before it counts as a hang.
const DEADLINE: Duration = Duration::from_secs(10);

/// Mutates `data` in place with 1 to 4 random edits.
fn mutate(rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
    const INTERESTING: [u8; 8] = [0, 0xFF, b'\n', b'F', b' ', b'W', 0x7F, 0x80];
    for _ in 0..rng.gen_range(1..=4) {
        if data.is_empty() {
            data.push(rng.gen());
            continue;
        }
        let at = rng.gen_range(0..data.len());
        let len = rng.gen_range(1..=(data.len() - at).min(64));
        match rng.gen_range(0..7) {
            0 => data[at] ^= 1 << rng.gen_range(0..8),
            1 => data[at] = INTERESTING[rng.gen_range(0..INTERESTING.len())],
            2 => {
                for b in &mut data[at..at + len] {
                    *b = rng.gen();
                }
            }
            3 => {
                data.drain(at..at + len);
            }
            4 => {
                let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                data.splice(at..at, bytes);
            }
            5 => {
                let copy = data[at..at + len].to_vec();
                let to = rng.gen_range(0..=data.len());
                data.splice(to..to, copy);
            }
            _ => data.truncate(at),
        }
    }
}

/// Runs `case` on a thread; a panic or a run past the deadline fails the
/// test, naming `what` and leaving `input` for replay.
fn guarded(what: &str, seed: u64, input: &[u8], case: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        case();
        let _ = tx.send(());
    });
    let outcome = match rx.recv_timeout(DEADLINE) {
        Ok(()) => handle.join().map_err(|_| "panicked"),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("panicked"),
        Err(mpsc::RecvTimeoutError::Timeout) => Err("hung"),
    };
    if let Err(how) = outcome {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
        let _ = std::fs::create_dir_all(&dir);
        let saved = dir.join(format!("{what}-{seed}"));
        let _ = std::fs::write(&saved, input);
        panic!("{what} case {seed} {how}; its input is in {saved:?}");
    }
}

/// Reads a readable but damaged file to its end as the capture thread
/// does: every frame is whole and of the stream's size, or a
/// [`Error::CorruptFrame`] that is skipped; nothing else (a damaged file is
/// not a lost signal). It must end well before `max_reads`.
fn drain(mut s: Box<dyn FrameSource>, max_reads: usize) {
    let mut f = Frame::new(1, 1);
    for _ in 0..max_reads {
        match s.next_frame(&mut f) {
            Ok(true) => {
                let (w, h) = s.size();
                assert_eq!((f.width, f.height), (w, h), "a frame of another size");
                assert_eq!(f.rgb.len(), w as usize * h as usize * 3);
            }
            Ok(false) => return,
            Err(Error::CorruptFrame { .. }) => {}
            Err(e) => panic!("a damaged file gave {e}, not a corrupt frame"),
        }
    }
    panic!("the source did not end after {max_reads} reads");
}

/// Segments nothing, at once: the pipeline around it is what is tested.
struct Blank;

impl Segmenter for Blank {
    fn label(&self) -> String {
        "blank f32".into()
    }
    fn segment(
        &mut self,
        frame: &Frame,
        roi: Rect,
        mask: &mut Mask,
        _rec: &mut StageRecorder,
    ) -> lgms_edge::Result<()> {
        mask.roi = roi;
        mask.frame_id = frame.id;
        mask.captured = frame.captured;
        mask.data.resize(roi.w as usize * roi.h as usize, 0);
        Ok(())
    }
}

/// A damaged file through the whole pipeline, replayed losslessly: the run
/// ends at the end of the file and accounts for every frame.
fn through_pipeline(s: Box<dyn FrameSource>) {
    let opts = Options {
        lossless: true,
        live: false,
        ..Options::default()
    };
    let mut sink = NullSink::default();
    let r = pipeline::run(s, vec![Box::new(Blank)], &mut sink, &opts)
        .expect("a damaged file is not an error unless strict");
    let rep = r.report;
    assert_eq!(
        rep.frames_in,
        rep.frames_out + rep.frames_dropped + rep.frames_corrupt
    );
    assert_eq!(
        (rep.frames_dropped, rep.frames_with_mask),
        (0, rep.frames_out)
    );
}

fn opts() -> ReplayOptions {
    ReplayOptions::new(Pace::Fast, 30.0)
}

/// Five frames of each Y4M layout we read.
fn y4m_bases() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    for (i, chroma) in [Chroma::C420, Chroma::C422, Chroma::C444, Chroma::Mono]
        .into_iter()
        .enumerate()
    {
        let h = Header::new(11, 7, 12.5, chroma, YuvRange::Limited);
        let path = dir.path().join(format!("b{i}.y4m"));
        let mut w = Writer::create(&path, u64::MAX).unwrap();
        for n in 0..5u8 {
            let planes: Vec<u8> = (0..h.frame_bytes()).map(|j| (j as u8) ^ n).collect();
            w.write_frame(&h, &planes).unwrap();
        }
        drop(w);
        out.push(std::fs::read(&path).unwrap());
    }
    out
}

#[test]
fn y4m_files() {
    let bases = y4m_bases();
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..cases(500) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut data = bases[seed as usize % bases.len()].clone();
        mutate(&mut rng, &mut data);
        let path = dir.path().join(format!("{seed}.y4m"));
        std::fs::write(&path, &data).unwrap();
        guarded("y4m", seed, &data, move || {
            if let Ok(s) = Y4mReplay::open(&path, opts()) {
                drain(Box::new(s), 10_000);
            }
            // One case in ten also runs through the pipeline.
            if seed % 10 == 0 {
                if let Ok(s) = Y4mReplay::open(&path, opts()) {
                    through_pipeline(Box::new(s));
                }
            }
        });
    }
}

#[test]
fn raw_dumps() {
    let dir = tempfile::tempdir().unwrap();
    let formats = [
        PixelFormat::Yuyv,
        PixelFormat::Nv12,
        PixelFormat::Grey,
        PixelFormat::Rgb24,
        PixelFormat::Bgr24,
    ];
    for seed in 0..cases(200) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let format = formats[seed as usize % formats.len()];
        let (w, h) = (10u32, 6u32);
        let stride = format.min_stride(w).unwrap();
        let one = format.frame_len(stride, h).unwrap();
        let mut data: Vec<u8> = (0..one * 3).map(|_| rng.gen()).collect();
        mutate(&mut rng, &mut data);
        let path = dir.path().join(format!("{seed}.raw"));
        std::fs::write(&path, &data).unwrap();
        guarded("raw", seed, &data, move || {
            if let Ok(s) = RawReplay::open(&path, format, w, h, opts()) {
                drain(Box::new(s), 100);
            }
        });
    }
}

fn png(w: u32, h: u32, n: u8) -> Vec<u8> {
    let px: Vec<u8> = (0..w * h * 3).map(|i| (i as u8).wrapping_mul(n)).collect();
    let mut buf = Cursor::new(Vec::new());
    image::write_buffer_with_format(
        &mut buf,
        &px,
        w,
        h,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .unwrap();
    buf.into_inner()
}

fn jpeg(w: u16, h: u16) -> Vec<u8> {
    let px: Vec<u8> = (0..w as usize * h as usize * 3).map(|i| i as u8).collect();
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 90)
        .encode(&px, w, h, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    out
}

#[test]
fn image_folders() {
    let root = tempfile::tempdir().unwrap();
    let bases = [png(12, 8, 1), jpeg(12, 8)];
    for seed in 0..cases(500) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dir = root.path().join(seed.to_string());
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("0.png"), png(12, 8, 3)).unwrap();
        let kind = seed as usize % 2;
        let mut data = bases[kind].clone();
        mutate(&mut rng, &mut data);
        let name = if kind == 0 { "1.png" } else { "1.jpg" };
        std::fs::write(dir.join(name), &data).unwrap();
        std::fs::write(dir.join("2.png"), png(12, 8, 5)).unwrap();
        guarded("image-folder", seed, &data, move || {
            let s = ImageFolder::open(&dir, opts()).expect("the first image is whole");
            drain(Box::new(s), 10);
            if seed % 10 == 0 {
                let s = ImageFolder::open(&dir, opts()).expect("the first image is whole");
                through_pipeline(Box::new(s));
            }
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
}

#[test]
fn mjpeg_frames() {
    let base = jpeg(16, 8);
    for seed in 0..cases(500) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut data = base.clone();
        mutate(&mut rng, &mut data);
        let input = data.clone();
        guarded("mjpeg", seed, &input, move || {
            let mut f = Frame::new(16, 8);
            if decode_jpeg(&data, &mut f, "MJPEG frame").is_ok() {
                assert_eq!(f.rgb.len(), 16 * 8 * 3);
            }
        });
    }
}

fn board_files() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("boards");
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn board_configs() {
    let boards = board_files();
    for seed in 0..cases(200) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (path, text) = &boards[seed as usize % boards.len()];
        let mut data = text.clone().into_bytes();
        mutate(&mut rng, &mut data);
        let input = data.clone();
        let path = path.clone();
        guarded("config", seed, &input, move || {
            let text = String::from_utf8_lossy(&data);
            if let Ok(raw) = toml::from_str::<RawConfig>(&text) {
                let _ = raw.validate(&path);
            }
        });
    }
}

#[test]
fn model_metadata() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_dark.onnx");
    let onnx = std::fs::read(&fixture).unwrap();
    let sidecar = br#"{"lgms.channel_order":"BGR","lgms.mean":"0.485,0.456,0.406","lgms.std":"0.229,0.224,0.225","lgms.max_pixel_value":"255","lgms.extra_scale":"0.00392","lgms.threshold":"0","lgms.resize":"bilinear","lgms.precision":"f32"}"#;
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..cases(100) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let case = dir.path().join(seed.to_string());
        std::fs::create_dir(&case).unwrap();
        let model = case.join("m.onnx");
        // Even seeds: a damaged ONNX file (metadata only); odd: a damaged
        // sidecar next to the real model (a full load).
        let (input, full) = if seed % 2 == 0 {
            let mut data = onnx.clone();
            mutate(&mut rng, &mut data);
            std::fs::write(&model, &data).unwrap();
            (data, false)
        } else {
            let mut data = sidecar.to_vec();
            mutate(&mut rng, &mut data);
            std::fs::write(&model, &onnx).unwrap();
            std::fs::write(case.join("m.onnx.json"), &data).unwrap();
            (data, true)
        };
        guarded("metadata", seed, &input, move || {
            if let Ok(m) = read_metadata(&model) {
                let _ = m.precision();
            }
            if full {
                let _ = Model::load(&model, &LoadOptions::default());
            }
        });
    }
}
