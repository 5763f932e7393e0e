//! `lgms-edge masks`: the masks a model computes for a set of frames,
//! written as files, and optionally the network inputs they came from.
//!
//! Tools outside the runtime measure *this* runtime with it: the int8 gate
//! (`lgms_models/gate.py`) writes the inputs of the user's frames once with
//! the f32 model (so the Python side calibrates on exactly the tensors the
//! runtime feeds, after its own resize and normalisation), then runs every
//! candidate int8 model on those tensors here, through tract and our int8
//! kernels, and compares the masks with the f32 ones.
//!
//! Frames: a folder of `*.f32` network inputs (raw little-endian f32,
//! 1x3xHxW, as written by `--inputs`, the parity vectors' layout); a folder
//! of PNG/JPEG pictures of any sizes (or one with `images/` inside, as
//! `lgms-edge phantom` writes), each resized as a whole frame; or a Y4M file,
//! such as a `record = "input"` recording. Output: `OUT/masks/NAME.png`
//! (0/255, the network's resolution), with `--inputs` also
//! `OUT/inputs/NAME.f32`, with `--logits` `OUT/logits/NAME.f32`, and
//! `OUT/masks.json` (frames, mean inference ms).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::CaptureConfig;
use crate::frame::{Frame, Rect};
use crate::infer::engine::Engine;
use crate::infer::model::{LoadOptions, Model};
use crate::source::replay::{self, Pace};
use crate::{Error, Result};

/// What to write.
#[derive(Debug, Clone, Default)]
pub struct MasksOptions {
    /// Stop after this many frames.
    pub limit: Option<usize>,
    /// Take one frame in this many (0 and 1: every frame), so that a long
    /// recording is sampled across its length, not only its first seconds.
    pub step: usize,
    /// Also write the network inputs (`inputs/NAME.f32`).
    pub write_inputs: bool,
    /// Also write the logits (`logits/NAME.f32`, raw little-endian f32).
    pub write_logits: bool,
    /// Run the model converted to f16 at load.
    pub f16: bool,
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MasksReport {
    /// Model file.
    pub model: String,
    /// Model name and precision as run (e.g. `lgmsnet int8`).
    pub label: String,
    /// Where the frames came from.
    pub frames_from: String,
    /// Frames written, in order: the file stems.
    pub names: Vec<String>,
    /// Mean time of one inference (tract only, no pre/postprocessing), ms,
    /// without the first (warm-up) one when there are more.
    pub mean_infer_ms: f64,
    /// Output folder.
    pub out: PathBuf,
}

/// Where the frames come from.
enum Frames {
    Tensors(Vec<PathBuf>),
    Pictures(Vec<PathBuf>),
    Video(Box<dyn crate::source::FrameSource>),
}

fn list(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {dir:?}"), e))?;
    let mut out = Vec::new();
    for entry in rd {
        let p = entry
            .map_err(|e| Error::io(format!("listing {dir:?}"), e))?
            .path();
        let ext = p
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if ext.is_some_and(|e| exts.contains(&e.as_str())) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn open_frames(path: &Path) -> Result<Frames> {
    if path.is_dir() {
        let tensors = list(path, &["f32"])?;
        if !tensors.is_empty() {
            return Ok(Frames::Tensors(tensors));
        }
        let images = path.join("images");
        let dir = if images.is_dir() {
            images
        } else {
            path.to_path_buf()
        };
        let pictures = list(&dir, &["png", "jpg", "jpeg"])?;
        if pictures.is_empty() {
            return Err(Error::invalid(
                format!("frame folder {path:?}"),
                "holds no .f32 inputs and no .png/.jpg pictures; fix: pass a picture folder, a .y4m file or a folder written by `lgms-edge masks --inputs`",
            ));
        }
        return Ok(Frames::Pictures(pictures));
    }
    let capture = CaptureConfig {
        pace: Pace::Fast,
        looping: false,
        ..CaptureConfig::default()
    };
    Ok(Frames::Video(replay::open(path, &capture, None)?))
}

/// Reads a picture of any size as an RGB frame.
fn read_picture(path: &Path) -> Result<Frame> {
    let is_png = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if is_png {
        return super::eval::read_rgb(path);
    }
    let data = std::fs::read(path).map_err(|e| Error::io(format!("reading image {path:?}"), e))?;
    let mut dec = zune_jpeg::JpegDecoder::new(data.as_slice());
    dec.decode_headers()
        .map_err(|e| Error::invalid_from(format!("image {path:?}"), "bad JPEG header", e))?;
    let (w, h) = dec
        .dimensions()
        .ok_or_else(|| Error::invalid(format!("image {path:?}"), "no JPEG dimensions"))?;
    let what = format!("image {path:?}");
    crate::frame::Limits::DEFAULT.check(&what, w as u64, h as u64)?;
    let mut f = Frame::new(w as u32, h as u32);
    crate::source::pixfmt::decode_jpeg(&data, &mut f, &what)?;
    Ok(f)
}

fn read_tensor(path: &Path, len: usize) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(format!("reading {path:?}"), e))?;
    if bytes.len() != len * 4 {
        return Err(Error::invalid(
            format!("input tensor {path:?}"),
            format!(
                "has {} bytes, the model takes {} f32 values ({} bytes)",
                bytes.len(),
                len,
                len * 4
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs `model` on every frame of `frames` and writes the masks (and inputs) under `out`.
pub fn write_masks(
    model: &Path,
    frames: &Path,
    out: &Path,
    opts: &MasksOptions,
) -> Result<MasksReport> {
    let m = Model::load(
        model,
        &LoadOptions {
            f16: opts.f16,
            ..LoadOptions::default()
        },
    )?;
    let (ih, iw) = m.info().input_hw;
    let (oh, ow) = m.info().output_hw;
    let threshold = m.info().threshold;
    let mut engine = Engine::new(m.clone())?;
    let masks_dir = out.join("masks");
    let inputs_dir = out.join("inputs");
    let logits_dir = out.join("logits");
    for d in std::iter::once(&masks_dir)
        .chain(opts.write_inputs.then_some(&inputs_dir))
        .chain(opts.write_logits.then_some(&logits_dir))
    {
        std::fs::create_dir_all(d).map_err(|e| Error::io(format!("creating {d:?}"), e))?;
    }
    let limit = opts.limit.unwrap_or(usize::MAX);
    let mut source = open_frames(frames)?;
    let mut names = Vec::new();
    // The first inference warms tract's buffers up: not counted when others are.
    let (mut infer_s, mut first_s) = (0.0f64, 0.0f64);
    let mut frame = Frame::new(0, 0);
    let mut mask = Vec::with_capacity(oh * ow);
    while names.len() < limit {
        let step = opts.step.max(1);
        let i = names.len() * step;
        let name = match &mut source {
            Frames::Tensors(paths) => {
                let Some(p) = paths.get(i) else { break };
                let x = read_tensor(p, 3 * ih * iw)?;
                engine.with_input(|dst| dst.copy_from_slice(&x))?;
                stem(p)
            }
            Frames::Pictures(paths) => {
                let Some(p) = paths.get(i) else { break };
                frame = read_picture(p)?;
                engine.preprocess(&frame, Rect::full(frame.width, frame.height))?;
                stem(p)
            }
            Frames::Video(src) => {
                if frame.width == 0 {
                    let (w, h) = src.size();
                    frame = Frame::new(w, h);
                }
                // The frames between two taken ones are decoded and dropped.
                let mut ended = false;
                for _ in 0..if names.is_empty() { 1 } else { step } {
                    // A damaged frame of the file is skipped, as a run does.
                    let got = loop {
                        match src.next_frame(&mut frame) {
                            Err(e @ Error::CorruptFrame { .. }) => log::warn!("{e}"),
                            other => break other,
                        }
                    };
                    if !got? {
                        ended = true;
                        break;
                    }
                }
                if ended {
                    break;
                }
                engine.preprocess(&frame, Rect::full(frame.width, frame.height))?;
                format!("{i:05}")
            }
        };
        if opts.write_inputs {
            let bytes: Vec<u8> =
                engine.with_input(|x| x.iter().flat_map(|v| v.to_le_bytes()).collect())?;
            let p = inputs_dir.join(format!("{name}.f32"));
            std::fs::write(&p, bytes).map_err(|e| Error::io(format!("writing {p:?}"), e))?;
        }
        let t = Instant::now();
        engine.infer()?;
        if names.is_empty() {
            first_s = t.elapsed().as_secs_f64();
        } else {
            infer_s += t.elapsed().as_secs_f64();
        }
        if opts.write_logits {
            let bytes: Vec<u8> = engine
                .logits()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            let p = logits_dir.join(format!("{name}.f32"));
            std::fs::write(&p, bytes).map_err(|e| Error::io(format!("writing {p:?}"), e))?;
        }
        mask.clear();
        mask.extend(
            engine
                .logits()
                .iter()
                .map(|&l| if l > threshold { 255u8 } else { 0 }),
        );
        let p = masks_dir.join(format!("{name}.png"));
        image::save_buffer(
            &p,
            &mask,
            ow as u32,
            oh as u32,
            image::ExtendedColorType::L8,
        )
        .map_err(|e| Error::invalid_from(format!("mask {p:?}"), "cannot be written", e))?;
        names.push(name);
    }
    if names.is_empty() {
        return Err(Error::invalid(
            format!("frames {frames:?}"),
            "gave no frame; fix: pass a non-empty folder or video",
        ));
    }
    let report = MasksReport {
        model: model.display().to_string(),
        label: format!("{} {}", m.info().name, m.info().precision),
        frames_from: frames.display().to_string(),
        mean_infer_ms: match names.len() {
            1 => first_s * 1e3,
            n => infer_s * 1e3 / (n - 1) as f64,
        },
        names,
        out: out.to_path_buf(),
    };
    crate::app::write_json(&out.join("masks.json"), &report)?;
    Ok(report)
}
