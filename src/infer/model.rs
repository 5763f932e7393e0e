//! Loading a model: the ONNX file read, checked and optimised once into a
//! [`Model`] that every worker's [`crate::infer::engine::Engine`] shares.
//!
//! Preprocessing (size, channel order, mean, std, scale) and the threshold
//! come from the model file's metadata (`lgms.*` keys written by
//! `lgms_models/export.py`) or a sidecar `MODEL.onnx.json`, never from code: a
//! model trained with other conventions then runs correctly without a
//! rebuild, and a model without them is refused instead of silently fed
//! the wrong numbers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::infer::preprocess::{ChannelOrder, Normalize};
use crate::kernels::cpu_features;
use crate::{Error, Result};

/// What a model computes in: `lgms.precision` in its metadata, and
/// `model.precision` in the configuration.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit float (a model without `lgms.precision` is taken as f32).
    #[default]
    F32,
    /// Quantised: QLinearConv/QLinearMatMul with int8 weights.
    Int8,
    /// An f32 model that tract converts to f16 at load.
    F16,
}

impl Precision {
    /// Every precision, in the order messages list them.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Int8, Precision::F16];

    /// The name used in metadata and configuration (`"f32"`, `"int8"`, `"f16"`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
            Precision::F16 => "f16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the runtime knows about a model after loading it.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// File it was loaded from.
    pub path: PathBuf,
    /// `lgms.name`, or the file stem.
    pub name: String,
    /// `lgms.precision` (f16 when [`LoadOptions::f16`] converted the model).
    pub precision: Precision,
    /// Input height and width.
    pub input_hw: (usize, usize),
    /// Output (logits) height and width.
    pub output_hw: (usize, usize),
    /// Input normalisation.
    pub normalize: Normalize,
    /// Logit threshold: mask = logit > threshold.
    pub threshold: f32,
    /// Every `lgms.*` metadata entry (after the sidecar's overrides).
    pub metadata: BTreeMap<String, String>,
    /// Number of weights (elements of constant float/int tensors of the decluttered graph).
    pub parameters: usize,
    /// Operator name -> count, in the optimised graph that tract runs.
    pub op_histogram: BTreeMap<String, usize>,
    /// Subgraphs replaced by our own operators (none with `LoadOptions::stock`).
    pub substitutions: crate::infer::ops::Substitutions,
}

/// Options for loading a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Threads tract may use per inference (needs the `multithread` feature for > 1).
    pub threads: usize,
    /// Run tract's stock graph, without our fused operators ([`crate::infer::ops`]):
    /// for comparisons (`lgms-edge bench --stock`) and for bisecting.
    pub stock: bool,
    /// Compute in f16: tract converts an f32 model at load (`model.precision
    /// = "f16"`). Fast only where the CPU has fp16 arithmetic (`asimdhp`:
    /// Pi 5, Orin; not Pi 4); elsewhere tract emulates it, slowly.
    pub f16: bool,
    /// Our operators to leave to tract (`"qconv"`, `"norm"`... as
    /// `LGMS_SKIP_OPS` names them): to compare one operator against tract's
    /// with everything else equal.
    pub skip_ops: Vec<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            threads: 1,
            stock: false,
            f16: false,
            skip_ops: Vec::new(),
        }
    }
}

/// A loaded, optimised model, shared by all workers.
#[derive(Debug)]
pub struct Model {
    info: ModelInfo,
    plan: Arc<TypedRunnableModel>,
    /// The thread pool of a multi-threaded plan (the one its run options
    /// name), or None.
    #[cfg(feature = "multithread")]
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl Model {
    /// Loads, checks and optimises an ONNX model.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Arc<Model>> {
        check_model_path(path)?;
        let corrupt = |e: TractError| Error::model_corrupt(path, e);
        let onnx = onnx();
        let proto = onnx.proto_model_for_path(path).map_err(corrupt)?;
        let metadata = Metadata::from_proto(path, &proto)?;
        let dir = path.parent().and_then(Path::to_str);
        let parsed = onnx.parse(&proto, dir).map_err(corrupt)?;
        if !parsed.unresolved_inputs.is_empty() {
            return Err(corrupt(anyhow::anyhow!(
                "inputs {:?} are not defined",
                parsed.unresolved_inputs
            )));
        }
        drop(proto);
        let mut inference = parsed.model;

        // An operator tract does not know is kept as a placeholder node by the
        // ONNX loader; name it now instead of failing later with a type error.
        for node in inference.nodes() {
            let name = node.op.name();
            if let Some(op) = name
                .strip_prefix("Unimplemented(")
                .and_then(|s| s.strip_suffix(')'))
            {
                return Err(Error::UnsupportedOp {
                    path: path.to_path_buf(),
                    op: op.to_string(),
                });
            }
        }

        let normalize = metadata.normalize()?;
        let threshold = metadata.f32("lgms.threshold")?;
        let name = metadata
            .get("lgms.name")
            .map(str::to_string)
            .unwrap_or_else(|| {
                path.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
        let precision = metadata.precision()?;

        let shape_err = |reason: String| Error::ModelShape {
            path: path.to_path_buf(),
            reason,
        };
        if inference.inputs.len() != 1 || inference.outputs.len() != 1 {
            return Err(shape_err(format!(
                "it has {} inputs and {} outputs, the runtime needs exactly one of each",
                inference.inputs.len(),
                inference.outputs.len()
            )));
        }
        let input_fact = inference.input_fact(0).map_err(corrupt)?.clone();
        let dims = input_fact
            .shape
            .as_concrete_finite()
            .ok()
            .flatten()
            .map(|d| d.to_vec());
        let dims = dims
            .ok_or_else(|| shape_err(format!("input shape {:?} is not fixed", input_fact.shape)))?;
        if dims.len() != 4 || dims[0] != 1 || dims[1] != 3 || dims[2] < 8 || dims[3] < 8 {
            return Err(shape_err(format!(
                "input shape is {dims:?}, expected [1, 3, H, W]"
            )));
        }
        let input_hw = (dims[2], dims[3]);
        inference
            .set_input_fact(0, f32::fact([1, 3, input_hw.0, input_hw.1]).into())
            .map_err(corrupt)?;

        let typed = inference
            .into_typed()
            .and_then(|m| m.into_decluttered())
            .map_err(corrupt)?;
        let out_fact = typed.output_fact(0).map_err(corrupt)?.clone();
        let out_dims: Vec<usize> = out_fact
            .shape
            .as_concrete()
            .map(|d| d.to_vec())
            .ok_or_else(|| shape_err(format!("output shape {:?} is not fixed", out_fact.shape)))?;
        if out_dims.len() != 4
            || out_dims[0] != 1
            || out_dims[1] != 1
            || out_fact.datum_type != f32::datum_type()
        {
            return Err(shape_err(format!(
                "output is {:?} {:?}, expected f32 logits [1, 1, H, W]",
                out_fact.datum_type, out_dims
            )));
        }
        let parameters = count_parameters(&typed);
        let mut typed = typed;
        let mut precision = precision;
        if opts.f16 {
            if precision != Precision::F32 {
                return Err(Error::ModelMetadata {
                    path: path.to_path_buf(),
                    key: "lgms.precision".into(),
                    reason: format!(
                        "is \"{precision}\"; f16 is converted from an f32 model at load, \
                         fix: point model.path at the .f32.onnx file"
                    ),
                });
            }
            if !cpu_features().iter().any(|f| f == "fp16" || f == "asimdhp") {
                log::warn!(
                    "{}: f16 requested but this CPU has no fp16 arithmetic (asimdhp): \
                     tract emulates it, many times slower than f32; fix: precision = \"f32\"",
                    path.display()
                );
            }
            typed = to_f16(typed).map_err(corrupt)?;
            precision = Precision::F16;
        }
        // Our operators are f32 kernels: an f16 model runs tract's own.
        let substitutions = if opts.stock || opts.f16 {
            crate::infer::ops::Substitutions::default()
        } else {
            crate::infer::ops::substitute_except(&mut typed, &opts.skip_ops).map_err(corrupt)?
        };
        log::debug!("{}: {substitutions:?}", path.display());
        let mut optimized = if opts.stock {
            typed.into_optimized()
        } else {
            optimize_tuned(typed)
        }
        .map_err(corrupt)?;
        // After optimisation, so that no tract pass fuses the wide sums back.
        let widened = crate::infer::ops::wide_sum::harden(&mut optimized).map_err(corrupt)?;
        log::debug!(
            "{}: {widened} wide reductions accumulate in f64",
            path.display()
        );
        let mut op_histogram = BTreeMap::new();
        for node in optimized.nodes() {
            *op_histogram.entry(node.op.name().to_string()).or_insert(0) += 1;
        }
        let run_opts = run_options(opts.threads)?;
        #[cfg(feature = "multithread")]
        let pool = match &run_opts.executor {
            Some(multithread::Executor::MultiThread(pool)) if pool.current_num_threads() > 1 => {
                Some(pool.clone())
            }
            _ => None,
        };
        let plan = optimized
            .into_runnable_with_options(&run_opts)
            .map_err(corrupt)?;
        Ok(Arc::new(Model {
            info: ModelInfo {
                path: path.to_path_buf(),
                name,
                precision,
                input_hw,
                output_hw: (out_dims[2], out_dims[3]),
                normalize,
                threshold,
                metadata: metadata.map,
                parameters,
                op_histogram,
                substitutions,
            },
            plan,
            #[cfg(feature = "multithread")]
            pool,
        }))
    }

    /// What was read from the file.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// tract's runnable plan, for the engines.
    pub(crate) fn plan(&self) -> &Arc<TypedRunnableModel> {
        &self.plan
    }

    /// Runs `f` (a run of the plan) on one of the plan's pool threads
    /// when it has a pool, else here. Our operators split their work on
    /// that pool; called from a thread of the pool, each split runs at
    /// once, with this thread taking a share, instead of handing the work
    /// to the pool and sleeping until a pool thread wakes it (in a
    /// standalone loop on this 2-core VM: 0.2 against 23 us for an empty
    /// split back to back, 5-20 against 40-90 us after a pause), and an
    /// inference makes over a hundred of them.
    pub(crate) fn on_pool<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        #[cfg(feature = "multithread")]
        if let Some(pool) = &self.pool {
            return pool.install(f);
        }
        f()
    }
}

/// tract's f32 -> f16 translation of every node but the input, the
/// upsamplings and the last one (the 16 -> 1 logits conv), which stay f32: the engine keeps feeding
/// f32 and reading f32 logits, and the translator puts the casts in between.
fn to_f16(mut model: TypedModel) -> TractResult<TypedModel> {
    use tract_onnx::tract_core::transform::{build_float_translator, NodeFilter};
    // The filter matches by substring: give the two kept nodes unique names.
    const KEEP_IN: &str = "lgms_f32_input";
    const KEEP_OUT: &str = "lgms_f32_logits";
    let input = model.input_outlets()?[0].node;
    let output = model.output_outlets()?[0].node;
    model.node_mut(input).name = KEEP_IN.into();
    model.node_mut(output).name = KEEP_OUT.into();
    let filter = NodeFilter {
        include: None,
        // tract 0.23's Resize has no f16 kernel ("tensor is F16, accessed as
        // F32"): the upsamplings stay f32, with casts around them.
        exclude: Some(vec![KEEP_IN.into(), KEEP_OUT.into(), "Resize".into()]),
    };
    build_float_translator(f32::datum_type(), f16::datum_type(), filter).transform_into(model)
}

/// tract knobs scoped to our optimisation pass (not process-wide, so that a
/// `--stock` model loaded in the same process keeps tract's defaults).
///
/// On x86_64, `TRACT_DISABLE_DIRECT_SPATIAL`: tract runs LGMSNet's two
/// full-resolution 3x3 decoder convs as a `DirectSpatialConv` about three
/// times slower than as im2col + matmul (`lgms-edge bench --profile`, with
/// and without the knob). On aarch64
/// tract's choice is kept: it is unmeasured on a board, and setting
/// `TRACT_DISABLE_DIRECT_SPATIAL=1` in the environment tries the other way.
fn optimize_tuned(model: TypedModel) -> TractResult<TypedModel> {
    let knobs: &[(&str, &str)] = if cfg!(target_arch = "x86_64") {
        &[("TRACT_DISABLE_DIRECT_SPATIAL", "true")]
    } else {
        &[]
    };
    let scope = tract_onnx::tract_core::knobs::KnobScope::new(knobs.iter().copied())?;
    scope.enter(|| model.into_optimized())
}

#[cfg(feature = "multithread")]
fn run_options(threads: usize) -> Result<RunOptions> {
    let mut o = RunOptions::default();
    if threads > 1 {
        o.executor = Some(multithread::Executor::multithread(threads));
    }
    Ok(o)
}

#[cfg(not(feature = "multithread"))]
fn run_options(threads: usize) -> Result<RunOptions> {
    if threads > 1 {
        log::warn!(
            "model.threads = {threads} ignored: this build has no multi-threaded kernels \
             (rebuild with --features multithread); use model.workers for parallelism"
        );
    }
    Ok(RunOptions::default())
}

fn count_parameters(model: &TypedModel) -> usize {
    model
        .nodes()
        .iter()
        .filter_map(|n| n.op_as::<tract_onnx::tract_core::ops::konst::Const>())
        .map(|c| c.val().len())
        .filter(|&n| n > 1)
        .sum()
}

/// A model's metadata: the ONNX file's `metadata_props`, with a sidecar
/// JSON's overrides.
#[derive(Debug, Clone)]
pub struct Metadata {
    path: PathBuf,
    map: BTreeMap<String, String>,
}

/// A model path must name an existing file: a folder is told apart from a
/// missing file.
fn check_model_path(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::invalid(
            format!("model {path:?}"),
            "is a folder, not a model file; fix: pass the .onnx file (e.g. models/lgmsnet-phantom-us.f32.onnx)",
        ));
    }
    if !path.is_file() {
        return Err(Error::ModelNotFound {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Reads a model's metadata without building its graph: the ONNX protobuf
/// is decoded, not translated or optimised, so knowing a model's precision
/// costs no model load.
pub fn read_metadata(path: &Path) -> Result<Metadata> {
    check_model_path(path)?;
    let proto = onnx()
        .proto_model_for_path(path)
        .map_err(|e| Error::model_corrupt(path, e))?;
    Metadata::from_proto(path, &proto)
}

impl Metadata {
    /// The ONNX metadata of `proto` (the file at `path`), then the keys of a
    /// sidecar JSON (`MODEL.onnx.json`, or `MODEL.json`) over them.
    fn from_proto(path: &Path, proto: &tract_onnx::pb::ModelProto) -> Result<Metadata> {
        let mut map: BTreeMap<String, String> = proto
            .metadata_props
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        let mut sidecar = path.as_os_str().to_owned();
        sidecar.push(".json");
        for cand in [PathBuf::from(sidecar), path.with_extension("json")] {
            if !cand.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&cand)
                .map_err(|e| Error::io(format!("model sidecar {cand:?}"), e))?;
            let obj: BTreeMap<String, serde_json::Value> =
                serde_json::from_str(&text).map_err(|e| Error::ModelMetadata {
                    path: path.to_path_buf(),
                    key: cand.display().to_string(),
                    reason: format!("is not a flat JSON object ({e})"),
                })?;
            for (k, v) in obj {
                let s = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                map.insert(k, s);
            }
            log::info!("model metadata overridden by sidecar {cand:?}");
            break;
        }
        Ok(Metadata {
            path: path.to_path_buf(),
            map,
        })
    }

    /// Every entry, after the sidecar's overrides.
    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.map
    }

    /// The value of `key`, if there is one.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// `lgms.precision` (f32 when absent).
    pub fn precision(&self) -> Result<Precision> {
        let Some(s) = self.get("lgms.precision") else {
            return Ok(Precision::F32);
        };
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s.trim())
            .ok_or_else(|| {
                self.err(
                    "lgms.precision",
                    format!("= {s:?}, expected f32, int8 or f16"),
                )
            })
    }

    fn err(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::ModelMetadata {
            path: self.path.to_path_buf(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn require(&self, key: &str) -> Result<&str> {
        self.get(key).ok_or_else(|| self.err(key, "is missing"))
    }

    fn f32(&self, key: &str) -> Result<f32> {
        let s = self.require(key)?;
        s.trim()
            .parse::<f32>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| self.err(key, format!("= {s:?} is not a finite number")))
    }

    fn triple(&self, key: &str) -> Result<[f32; 3]> {
        let s = self.require(key)?;
        let v: Vec<f32> = s
            .split(',')
            .filter_map(|p| p.trim().parse::<f32>().ok())
            .collect();
        match v.as_slice() {
            [a, b, c] if v.iter().all(|x| x.is_finite()) => Ok([*a, *b, *c]),
            _ => Err(self.err(key, format!("= {s:?} is not three comma-separated numbers"))),
        }
    }

    fn normalize(&self) -> Result<Normalize> {
        let order = self.require("lgms.channel_order")?;
        let channel_order = match order.to_ascii_uppercase().as_str() {
            "RGB" => ChannelOrder::Rgb,
            "BGR" => ChannelOrder::Bgr,
            _ => {
                return Err(self.err(
                    "lgms.channel_order",
                    format!("= {order:?}, expected RGB or BGR"),
                ))
            }
        };
        let std = self.triple("lgms.std")?;
        if std.iter().any(|&s| s <= 0.0) {
            return Err(self.err("lgms.std", "has a value <= 0"));
        }
        // The runtime resizes bilinearly, as the authors' training did; a
        // model that asks for another filter would get different inputs.
        if let Some(r) = self.get("lgms.resize") {
            if !r.eq_ignore_ascii_case("bilinear") {
                return Err(self.err(
                    "lgms.resize",
                    format!(
                        "= {r:?}, but the runtime resizes bilinearly only; set it to \"bilinear\""
                    ),
                ));
            }
        }
        let max_pixel_value = self.f32("lgms.max_pixel_value")?;
        if max_pixel_value <= 0.0 {
            return Err(self.err("lgms.max_pixel_value", "must be > 0"));
        }
        Ok(Normalize {
            channel_order,
            mean: self.triple("lgms.mean")?,
            std,
            max_pixel_value,
            extra_scale: self.f32("lgms.extra_scale")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A multi-threaded plan runs on a thread of its own pool (where our
    /// operators' splits start at once); a single-threaded one here.
    #[cfg(feature = "multithread")]
    #[test]
    fn runs_go_to_the_plan_pool_when_there_is_one() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_dark.onnx");
        let load = |threads| {
            let opts = LoadOptions {
                threads,
                ..LoadOptions::default()
            };
            Model::load(&path, &opts).expect("the tiny fixture model loads")
        };
        let here = std::thread::current().id();
        let on =
            |m: &Model| m.on_pool(|| (rayon::current_num_threads(), std::thread::current().id()));
        let (threads, id) = on(&load(2));
        assert_eq!(threads, 2);
        assert_ne!(id, here);
        assert_eq!(on(&load(1)).1, here);
    }
}
