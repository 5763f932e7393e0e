//! Parity between tract and PyTorch: run committed input tensors through
//! the engine and compare with the logits PyTorch computed for them.
//!
//! The vectors are written by `lgms_models/parity.py`, so CI checks the Rust
//! runtime against the authors' framework without installing PyTorch.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::infer::engine::Engine;
use crate::infer::model::{LoadOptions, Model};
use crate::{Error, Result};

#[derive(Debug, Deserialize)]
struct Manifest {
    model: PathBuf,
    tolerance: f32,
    vectors: Vec<Vector>,
}

#[derive(Debug, Deserialize)]
struct Vector {
    name: String,
    input: PathBuf,
    logits: PathBuf,
}

/// The comparison of one vector.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VectorResult {
    /// Vector name.
    pub name: String,
    /// Largest absolute logit difference.
    pub max_abs_diff: f32,
    /// Fraction of pixels whose mask (logit > 0) differs.
    pub mask_mismatch: f64,
    /// IoU of the two masks (logits > threshold): the agreement `eval --compare` reports too.
    pub mask_iou: f64,
}

/// The comparison of all vectors.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// Model checked.
    pub model: PathBuf,
    /// Allowed max |diff|.
    pub tolerance: f32,
    /// Per vector.
    pub vectors: Vec<VectorResult>,
}

impl Outcome {
    /// Largest difference over all vectors.
    pub fn max_abs_diff(&self) -> f32 {
        self.vectors
            .iter()
            .map(|v| v.max_abs_diff)
            .fold(0.0, f32::max)
    }

    /// True when every vector is within tolerance.
    pub fn passed(&self) -> bool {
        !self.vectors.is_empty() && self.max_abs_diff() <= self.tolerance
    }

    /// Human-readable lines.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "model {} (tolerance {:.1e})\n",
            self.model.display(),
            self.tolerance
        );
        for v in &self.vectors {
            s += &format!(
                "  {:<24} max |diff| {:.3e}  mask mismatch {:.5}%  mask IoU {:.5}\n",
                v.name,
                v.max_abs_diff,
                v.mask_mismatch * 100.0,
                v.mask_iou
            );
        }
        s += &format!("{}\n", if self.passed() { "PASS" } else { "FAIL" });
        s
    }
}

/// Reads a raw little-endian f32 file of exactly `len` values.
pub fn read_f32(path: &Path, len: usize) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(format!("parity vector {path:?}"), e))?;
    if bytes.len() != len * 4 {
        return Err(Error::invalid(
            format!("parity vector {path:?}"),
            format!(
                "has {} bytes, expected {} (f32 x {len}); regenerate with lgms_models/parity.py",
                bytes.len(),
                len * 4
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Runs every vector of `manifest` through `model` (or the manifest's model).
pub fn check(manifest: &Path, model: Option<&Path>, tolerance: Option<f32>) -> Result<Outcome> {
    check_with(manifest, model, tolerance, &LoadOptions::default())
}

/// [`check`] with the model loaded by `opts` (e.g. converted to f16).
pub fn check_with(
    manifest: &Path,
    model: Option<&Path>,
    tolerance: Option<f32>,
    opts: &LoadOptions,
) -> Result<Outcome> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| Error::io(format!("parity manifest {manifest:?}"), e))?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| {
        Error::invalid_from(
            format!("parity manifest {manifest:?}"),
            "is not valid JSON",
            e,
        )
    })?;
    let dir = manifest.parent().unwrap_or(Path::new("."));
    // The manifest names the model relative to the repository root; fall back
    // to the manifest's folder for manifests copied elsewhere.
    let model_path = match model {
        Some(p) => p.to_path_buf(),
        None if m.model.is_file() => m.model.clone(),
        None => dir.join(m.model.file_name().unwrap_or_default()),
    };
    let loaded = Model::load(&model_path, opts)?;
    let (h, w) = loaded.info().input_hw;
    let (oh, ow) = loaded.info().output_hw;
    let threshold = loaded.info().threshold;
    let mut engine = Engine::new(loaded)?;
    let mut vectors = Vec::new();
    for v in &m.vectors {
        let input = read_f32(&dir.join(&v.input), 3 * h * w)?;
        let expect = read_f32(&dir.join(&v.logits), oh * ow)?;
        let got = engine.run_tensor(&input)?;
        let mut max_abs_diff = 0.0f32;
        let mut mismatched = 0usize;
        let (mut inter, mut union) = (0usize, 0usize);
        for (a, b) in got.iter().zip(&expect) {
            max_abs_diff = max_abs_diff.max((a - b).abs());
            let (ma, mb) = (*a > threshold, *b > threshold);
            mismatched += usize::from(ma != mb);
            inter += usize::from(ma && mb);
            union += usize::from(ma || mb);
        }
        vectors.push(VectorResult {
            name: v.name.clone(),
            max_abs_diff,
            mask_mismatch: mismatched as f64 / expect.len() as f64,
            // Two empty masks agree perfectly.
            mask_iou: if union == 0 {
                1.0
            } else {
                inter as f64 / union as f64
            },
        });
    }
    Ok(Outcome {
        model: model_path,
        tolerance: tolerance.unwrap_or(m.tolerance),
        vectors,
    })
}
