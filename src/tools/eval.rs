//! `lgms-edge eval`: a model's Dice and IoU on an `images/` + `masks/`
//! folder, computed exactly as the authors do, optionally against a second
//! model (f32 vs int8) with the agreement of their masks.
//!
//! The authors' metric, per image at the network's resolution:
//! `IoU = (|P ∩ G| + 1e-5) / (|P ∪ G| + 1e-5)` with `P = sigmoid(logit) > 0.5`
//! and `G = mask/255 > 0.5` (the mask resized nearest-neighbour to the
//! network's size, as their loader does), `Dice = 2 IoU / (1 + IoU)`,
//! both averaged over images.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::frame::{Frame, Rect};
use crate::infer::engine::Engine;
use crate::infer::model::{LoadOptions, Model};
use crate::{Error, Result};

/// The authors' smoothing term.
const SMOOTH: f64 = 1e-5;

/// IoU and Dice of two binary masks of the same size, the authors' way.
pub fn iou_dice(pred: &[u8], truth: &[u8]) -> (f64, f64) {
    let (mut inter, mut union) = (0u64, 0u64);
    for (&p, &g) in pred.iter().zip(truth) {
        let (p, g) = (p != 0, g != 0);
        inter += u64::from(p && g);
        union += u64::from(p || g);
    }
    let iou = (inter as f64 + SMOOTH) / (union as f64 + SMOOTH);
    (iou, 2.0 * iou / (1.0 + iou))
}

/// One image's scores.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageScore {
    /// File name.
    pub name: String,
    /// Dice of the first model against the ground truth.
    pub dice: f64,
    /// IoU of the first model against the ground truth.
    pub iou: f64,
    /// Dice of the second model, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dice_b: Option<f64>,
    /// IoU of the second model, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iou_b: Option<f64>,
    /// IoU between the two models' masks, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement_iou: Option<f64>,
}

/// Scores over a folder.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalReport {
    /// Folder evaluated.
    pub data: PathBuf,
    /// First model.
    pub model: String,
    /// Second model, if compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_b: Option<String>,
    /// Number of images.
    pub images: usize,
    /// Mean Dice of the first model.
    pub mean_dice: f64,
    /// Mean IoU of the first model.
    pub mean_iou: f64,
    /// Mean Dice of the second model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_dice_b: Option<f64>,
    /// Mean IoU of the second model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_iou_b: Option<f64>,
    /// Mean IoU between the two models' masks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_agreement_iou: Option<f64>,
    /// Per image.
    pub per_image: Vec<ImageScore>,
}

impl EvalReport {
    /// Human-readable summary (per-image lines when `verbose`).
    pub fn to_text(&self, verbose: bool) -> String {
        let mut s = String::new();
        if verbose {
            for i in &self.per_image {
                s += &format!("{:<20} dice {:.4} iou {:.4}", i.name, i.dice, i.iou);
                if let (Some(d), Some(a)) = (i.dice_b, i.agreement_iou) {
                    s += &format!("  | b: dice {d:.4}  agreement iou {a:.4}");
                }
                s += "\n";
            }
        }
        s += &format!(
            "{}: {} images, mean Dice {:.4}, mean IoU {:.4}\n",
            self.model, self.images, self.mean_dice, self.mean_iou
        );
        if let (Some(m), Some(d), Some(i), Some(a)) = (
            &self.model_b,
            self.mean_dice_b,
            self.mean_iou_b,
            self.mean_agreement_iou,
        ) {
            s += &format!("{m}: mean Dice {d:.4}, mean IoU {i:.4}\n");
            s += &format!("mask agreement (mean IoU between the two models' masks): {a:.4}\n");
        }
        s
    }
}

/// The `images/`/`masks/` pairs of a folder, sorted by name.
pub fn list_pairs(data: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let images = data.join("images");
    let masks = data.join("masks");
    let rd = std::fs::read_dir(&images).map_err(|e| {
        Error::io(
            format!("image folder {images:?} (fix: pass a folder with images/ and masks/ inside, as `lgms-edge phantom` writes)"),
            e,
        )
    })?;
    let mut pairs = Vec::new();
    for entry in rd {
        let p = entry
            .map_err(|e| Error::io(format!("listing {images:?}"), e))?
            .path();
        if p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.eq_ignore_ascii_case("png"))
            != Some(true)
        {
            continue;
        }
        let m = masks.join(p.file_name().unwrap_or_default());
        if !m.is_file() {
            return Err(Error::invalid(
                format!("image {p:?}"),
                format!("has no mask {m:?}; fix: every images/X.png needs masks/X.png"),
            ));
        }
        pairs.push((p, m));
    }
    if pairs.is_empty() {
        return Err(Error::invalid(
            format!("folder {images:?}"),
            "holds no .png images",
        ));
    }
    pairs.sort();
    Ok(pairs)
}

/// A PNG as an RGB frame.
pub(super) fn read_rgb(path: &Path) -> Result<Frame> {
    let img = image::open(path)
        .map_err(|e| Error::invalid_from(format!("image {path:?}"), "cannot be decoded", e))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    let mut f = Frame::new(w, h);
    f.rgb.copy_from_slice(img.as_raw());
    Ok(f)
}

/// Ground truth at the network's size: nearest-neighbour resize, `> 127`.
/// The mask must have its image's size (`image_wh`): another size means the
/// pair does not belong together.
fn read_truth(path: &Path, w: usize, h: usize, image_wh: (u32, u32)) -> Result<Vec<u8>> {
    let img = image::open(path)
        .map_err(|e| Error::invalid_from(format!("mask {path:?}"), "cannot be decoded", e))?
        .to_luma8();
    if img.dimensions() != image_wh {
        return Err(Error::invalid(
            format!("mask {path:?}"),
            format!(
                "it is {}x{}, its image is {}x{}; fix: pair each image with its own mask, of the same size",
                img.width(),
                img.height(),
                image_wh.0,
                image_wh.1
            ),
        ));
    }
    let (mw, mh) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0u8; w * h];
    for y in 0..h {
        // OpenCV's INTER_NEAREST: floor(dst * scale).
        let sy = (y * mh / h).min(mh - 1);
        for x in 0..w {
            let sx = (x * mw / w).min(mw - 1);
            out[y * w + x] = u8::from(img.as_raw()[sy * mw + sx] > 127);
        }
    }
    Ok(out)
}

fn predict(engine: &mut Engine, frame: &Frame, out: &mut Vec<u8>) -> Result<()> {
    engine.preprocess(frame, Rect::full(frame.width, frame.height))?;
    engine.infer()?;
    let t = engine.info().threshold;
    out.clear();
    out.extend(engine.logits().iter().map(|&l| u8::from(l > t)));
    Ok(())
}

/// Evaluates `model` (and `model_b`, if given) on `data`; `progress` is
/// called after each image with (done, total).
pub fn evaluate(
    data: &Path,
    model: &Path,
    model_b: Option<&Path>,
    mut progress: impl FnMut(usize, usize),
) -> Result<EvalReport> {
    let pairs = list_pairs(data)?;
    let load = |p: &Path| -> Result<Arc<Model>> { Model::load(p, &LoadOptions::default()) };
    let ma = load(model)?;
    let (oh, ow) = ma.info().output_hw;
    let mut ea = Engine::new(ma.clone())?;
    let mut eb = match model_b {
        Some(p) => {
            let mb = load(p)?;
            if mb.info().output_hw != (oh, ow) {
                return Err(Error::invalid(
                    format!("model {p:?}"),
                    "its output size differs from the first model's; compare models of the same size",
                ));
            }
            Some(Engine::new(mb)?)
        }
        None => None,
    };
    let (mut pa, mut pb) = (Vec::new(), Vec::new());
    let mut per_image = Vec::with_capacity(pairs.len());
    for (i, (img, msk)) in pairs.iter().enumerate() {
        let frame = read_rgb(img)?;
        let truth = read_truth(msk, ow, oh, (frame.width, frame.height))?;
        predict(&mut ea, &frame, &mut pa)?;
        let (iou, dice) = iou_dice(&pa, &truth);
        let mut score = ImageScore {
            name: img
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            dice,
            iou,
            dice_b: None,
            iou_b: None,
            agreement_iou: None,
        };
        if let Some(e) = eb.as_mut() {
            predict(e, &frame, &mut pb)?;
            let (iou_b, dice_b) = iou_dice(&pb, &truth);
            score.iou_b = Some(iou_b);
            score.dice_b = Some(dice_b);
            score.agreement_iou = Some(iou_dice(&pa, &pb).0);
        }
        per_image.push(score);
        progress(i + 1, pairs.len());
    }
    let n = per_image.len() as f64;
    let mean = |f: &dyn Fn(&ImageScore) -> Option<f64>| -> Option<f64> {
        per_image.iter().map(f).sum::<Option<f64>>().map(|s| s / n)
    };
    Ok(EvalReport {
        data: data.to_path_buf(),
        model: format!("{} {}", ma.info().name, ma.info().precision),
        model_b: eb
            .as_ref()
            .map(|e| format!("{} {}", e.info().name, e.info().precision)),
        images: per_image.len(),
        mean_dice: mean(&|s| Some(s.dice)).unwrap_or(0.0),
        mean_iou: mean(&|s| Some(s.iou)).unwrap_or(0.0),
        mean_dice_b: mean(&|s| s.dice_b),
        mean_iou_b: mean(&|s| s.iou_b),
        mean_agreement_iou: mean(&|s| s.agreement_iou),
        per_image,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_of_another_size_than_its_image_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.png");
        image::save_buffer(&p, &[255; 12], 4, 3, image::ExtendedColorType::L8).unwrap();
        let e = read_truth(&p, 2, 2, (8, 6)).unwrap_err().to_string();
        assert!(
            e.contains("m.png") && e.contains("4x3") && e.contains("8x6"),
            "{e}"
        );
        assert_eq!(read_truth(&p, 2, 2, (4, 3)).unwrap(), [1; 4]);
    }

    #[test]
    fn authors_metric_by_hand() {
        // P = {0,1,2}, G = {1,2,3}: |P∩G| = 2, |P∪G| = 4.
        let p = [1, 1, 1, 0, 0];
        let g = [0, 1, 1, 1, 0];
        let (iou, dice) = iou_dice(&p, &g);
        assert!((iou - (2.0 + 1e-5) / (4.0 + 1e-5)).abs() < 1e-12);
        assert!((dice - 2.0 * iou / (1.0 + iou)).abs() < 1e-12);
        // Both empty: a perfect score, as the authors' smoothing gives.
        assert_eq!(iou_dice(&[0, 0], &[0, 0]).0, 1.0);
        // Prediction empty, truth not: ~0.
        assert!(iou_dice(&[0, 0], &[1, 0]).0 < 1e-4);
    }
}
