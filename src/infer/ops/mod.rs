//! Our own tract operators, substituted into the loaded model where tract's
//! stock graph is slow for LGMSNet (`lgms-edge bench --profile` shows
//! where).
//!
//! [`substitute`] pattern-matches the decluttered graph, before
//! `into_optimized`, and swaps each match for one fused operator:
//! - [`attention::Attention`]: `EinSum(Q,K) [* scale] -> Softmax -> EinSum(.,V)`,
//!   the sparse attention of the hybrid blocks, computed one query row at a
//!   time (the score matrix, up to 4x4x1024x1024 floats, never exists);
//! - [`upsample::Upsample2x`]: ONNX `Resize` that is a 2x bilinear
//!   half-pixel upsampling of an NCHW tensor (the decoder's `up_conv`);
//! - [`conv1x1::Conv1x1`]: 1x1 convolution + bias over a wide image (the
//!   decoder's full-resolution 1x1 convs), without tract's packing;
//! - [`conv3x3::Conv3x3`]: 3x3 convolution (+ bias, + GELU) of images of
//!   32x32 and up, direct from zero-bordered planes instead of tract's pad,
//!   im2col and matrix product (the decoder's and the hybrid blocks' 3x3
//!   convs);
//! - [`dwconv::DwConcat`]: the multi-kernel blocks' `Slice`s of one tensor
//!   through depthwise convs (3x3 to 9x9), their `Concat` and the residual
//!   `Add`, one operator on the pool (tract's depthwise convs run on one
//!   thread);
//! - [`gelu::Gelu`]: tract's `GeluExact` on f32, vectorised (the 1x1 conv
//!   applies the same kernel in its epilogue to the GELUs that follow it);
//! - [`qconv::QConv`]: in int8 models, `QuantizeLinear -> QLinearConv ->
//!   DequantizeLinear` as one int8 convolution (AVX2 `vpmaddubsw`, NEON
//!   `sdot`), f32 in and out;
//! - [`maxpool::MaxPool2x2`]: the encoder's 2x2 max pooling, one plane per
//!   block on the pool (tract's runs on one thread);
//! - [`norm::Norm`]: the transformer blocks' LayerNorm and the multi-kernel
//!   blocks' GroupNorm, each one operator instead of a chain of
//!   single-threaded element-wise ops and reductions;
//! - [`linear::Linear`]: the transformer blocks' linear layers (+ bias) over
//!   token-major rows, without tract's packing;
//! - [`permute::Permute`]: a chain of axis moves and reshapes (the hybrid
//!   blocks' 2x2 patches and heads) as one strided copy on the pool
//!   instead of one single-threaded copy per move.
//!
//! Each operator has scalar, AVX2 and NEON kernels (the int8 conv also
//! AVX-VNNI, AVX-512 VNNI and NEON `sdot`), next to the operator; they run
//! from the one kernel table of [`crate::kernels`], chosen once per process
//! (`LGMS_KERNELS=scalar` forces the scalar ones, as for the pixel kernels).
//! Each operator runs its independent blocks on tract's thread pool when the
//! model was loaded with more than one thread. `tests/ops.rs` checks the substituted
//! model against the stock graph; `lgms-edge bench --stock` times the stock
//! graph for comparison.

use tract_onnx::prelude::*;

/// Output channels per register block of the SIMD f32 conv kernels (1x1
/// and 3x3): 6 channels x 16 pixels is 12 AVX2 accumulators, which with the
/// two input vectors and the broadcast weight fill the 16 registers.
const ROWS: usize = 6;

/// Runs `$block::<R>(args)` for `n` channels in register blocks of
/// [`ROWS`] and one smaller last block (each size its own monomorphised
/// block), with `$r0` the first channel of the block in `args`.
macro_rules! for_row_blocks {
    ($n:expr, |$r0:ident| $block:ident($($arg:expr),*)) => {{
        let mut $r0 = 0;
        while $r0 < $n {
            let rr = ($n - $r0).min($crate::infer::ops::ROWS);
            match rr {
                6 => $block::<6>($($arg),*),
                5 => $block::<5>($($arg),*),
                4 => $block::<4>($($arg),*),
                3 => $block::<3>($($arg),*),
                2 => $block::<2>($($arg),*),
                _ => $block::<1>($($arg),*),
            }
            $r0 += rr;
        }
    }};
}

/// Runs `$block::<4>(args)` for `$i` in steps of 4 while 4 remain, then
/// `$block::<1>(args)` for each one left: the SIMD kernels of attention
/// (queries) and of the linear layers (rows) take 4 at a time.
macro_rules! by_fours {
    ($n:expr, |$i:ident| $block:ident($($arg:expr),*)) => {{
        let mut $i = 0;
        while $i + 4 <= $n {
            $block::<4>($($arg),*);
            $i += 4;
        }
        while $i < $n {
            $block::<1>($($arg),*);
            $i += 1;
        }
    }};
}

pub mod attention;
pub mod conv1x1;
pub mod conv3x3;
pub mod dwconv;
pub mod gelu;
pub mod linear;
pub mod maxpool;
pub mod norm;
pub mod permute;
pub mod qconv;
pub mod upsample;
pub mod wide_sum;

/// What [`substitute`] replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Substitutions {
    /// Attention subgraphs fused into [`attention::Attention`].
    pub attention: usize,
    /// Resize nodes replaced by [`upsample::Upsample2x`].
    pub upsample: usize,
    /// Wide 1x1 convolutions replaced by [`conv1x1::Conv1x1`].
    pub conv1x1: usize,
    /// 3x3 convolutions replaced by [`conv3x3::Conv3x3`].
    pub conv3x3: usize,
    /// Splits of depthwise convolutions (and their concat) replaced by
    /// [`dwconv::DwConcat`].
    pub dwconv: usize,
    /// Exact GELUs replaced by [`gelu::Gelu`] (not counting those the 1x1
    /// convs fold in).
    pub gelu: usize,
    /// Quantised convolutions replaced by [`qconv::QConv`].
    pub qconv: usize,
    /// 2x2 max poolings replaced by [`maxpool::MaxPool2x2`].
    pub maxpool: usize,
    /// LayerNorms and GroupNorms replaced by [`norm::Norm`].
    pub norm: usize,
    /// Token-major linear layers replaced by [`linear::Linear`].
    pub linear: usize,
    /// Chains of axis moves and reshapes replaced by [`permute::Permute`].
    pub permute: usize,
}

/// Replaces every matching subgraph of the decluttered `model` by our
/// operators. Subgraphs that do not match exactly are left to tract.
///
/// `LGMS_SKIP_OPS=attention,upsample,conv1x1,conv3x3,dwconv,gelu,qconv,maxpool,norm,linear,permute` (any subset) leaves those to
/// tract, to time or bisect one operator at a time.
pub fn substitute(model: &mut TypedModel) -> TractResult<Substitutions> {
    substitute_except(model, &[])
}

/// [`substitute`], leaving the operators named in `skip` (as
/// `LGMS_SKIP_OPS` names them) to tract too.
pub fn substitute_except(model: &mut TypedModel, skip: &[String]) -> TractResult<Substitutions> {
    let env = std::env::var("LGMS_SKIP_OPS").unwrap_or_default();
    let on =
        |name: &str| !env.split(',').any(|s| s.trim() == name) && !skip.iter().any(|s| s == name);
    // In this order: the GELUs that the f32 convs fold go before `gelu`
    // replaces the rest; `permute`, which replaces axis ops, goes after
    // every matcher that reads them (the GroupNorm's reshapes in `norm`).
    type Replace = fn(&mut TypedModel) -> TractResult<usize>;
    let steps: [(&str, Replace); 11] = [
        ("attention", attention::fuse_all),
        ("upsample", upsample::replace_all),
        ("conv1x1", conv1x1::replace_all),
        ("conv3x3", conv3x3::replace_all),
        ("dwconv", dwconv::replace_all),
        ("gelu", gelu::replace_all),
        ("qconv", qconv::replace_all),
        ("maxpool", maxpool::replace_all),
        ("norm", norm::replace_all),
        ("linear", linear::replace_all),
        ("permute", permute::replace_all),
    ];
    let mut n = [0usize; 11];
    for ((name, replace), count) in steps.iter().zip(&mut n) {
        if on(name) {
            *count = replace(model)?;
        }
    }
    if n.iter().sum::<usize>() > 0 {
        // Drop the nodes the patches disconnected.
        *model = model.clone().into_compact()?;
    }
    let [attention, upsample, conv1x1, conv3x3, dwconv, gelu, qconv, maxpool, norm, linear, permute] =
        n;
    Ok(Substitutions {
        attention,
        upsample,
        conv1x1,
        conv3x3,
        dwconv,
        gelu,
        qconv,
        maxpool,
        norm,
        linear,
        permute,
    })
}

/// Wires `op` on `inputs` in place of the subgraph whose output is
/// `replaced` (the disconnected nodes go at the compaction in
/// [`substitute`]).
fn swap_in(
    model: &mut TypedModel,
    inputs: &[OutletId],
    replaced: OutletId,
    name: String,
    op: impl Into<Box<dyn TypedOp>>,
) -> TractResult<()> {
    let mut patch = TypedModelPatch::default();
    let taps = patch.taps(model, inputs)?;
    let out = patch.wire_node(name, op, &taps)?;
    patch.shunt_outside(model, replaced, out[0])?;
    patch.apply(model)
}

/// Swaps in the operator `matcher` finds at each node (with its one input
/// and the node whose output it replaces), named after the matched node
/// plus `suffix`; returns how many.
fn replace_each<O: Into<Box<dyn TypedOp>>>(
    model: &mut TypedModel,
    suffix: &str,
    matcher: impl Fn(&TypedModel, usize) -> Option<(O, OutletId, usize)>,
) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        let Some((op, x, last)) = matcher(model, id) else {
            continue;
        };
        let name = format!("{}.{suffix}", model.node(id).name);
        swap_in(model, &[x], OutletId::new(last, 0), name, op)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// The single consumer of `id`'s output, if it has exactly one and is not
/// a model output: a node that a fused operator may swallow.
fn single_successor(model: &TypedModel, id: usize) -> Option<usize> {
    let succ = &model.node(id).outputs[0].successors;
    (succ.len() == 1 && !model.outputs.contains(&OutletId::new(id, 0))).then(|| succ[0].node)
}

/// The constant value of `o`, if it has one.
fn konst(model: &TypedModel, o: OutletId) -> Option<std::sync::Arc<Tensor>> {
    model.outlet_fact(o).ok()?.konst.clone()
}

/// `dst[i] += src[i]`: a residual added to an operator's output while the
/// values are in cache (the same single rounding as tract's `Add`);
/// inlined, so that it runs in the vector width of its caller's kernel.
#[inline]
fn add_residual(dst: &mut [f32], src: &[f32]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d += v;
    }
}

/// Node `id` evaluated by tract itself with `value` in place of its input
/// `from` and every other input its constant: its first output. How the
/// matchers learn what a chain of ops does to given values (the levels of
/// a quantised output, a test tensor), with tract's own arithmetic.
fn eval_with(model: &TypedModel, id: usize, from: OutletId, value: TValue) -> Option<TValue> {
    let node = model.node(id);
    let inputs: TVec<TValue> = node
        .inputs
        .iter()
        .map(|o| {
            if *o == from {
                Some(value.clone())
            } else {
                Some(konst(model, *o)?.into_tvalue())
            }
        })
        .collect::<Option<_>>()?;
    node.op.eval_out_of_plan(inputs).ok()??.into_iter().next()
}

/// The f32 value of a one-element constant (any rank, every dimension 1).
fn scalar_const(model: &TypedModel, o: OutletId) -> Option<f32> {
    let k = konst(model, o)?;
    (k.len() == 1 && k.datum_type() == f32::datum_type())
        .then(|| k.cast_to_scalar::<f32>().ok())
        .flatten()
}

/// Node `id` is the binary op `name` of `from` and a constant (either
/// order): the constant.
fn with_const(
    model: &TypedModel,
    id: usize,
    name: &str,
    from: OutletId,
) -> Option<std::sync::Arc<Tensor>> {
    let node = model.node(id);
    if node.op.name() != name || node.inputs.len() != 2 || !node.inputs.contains(&from) {
        return None;
    }
    let other = node.inputs.iter().find(|o| **o != from)?;
    konst(model, *other)
}

/// A new f32 tensor of `shape`, every element of which `fill` writes
/// (through the pointer the pool's blocks share).
fn filled_f32(shape: &[usize], fill: impl FnOnce(SharedOut)) -> TractResult<TValue> {
    // SAFETY: f32 has no invalid bit patterns, and `fill` writes every
    // element before the tensor is read.
    let mut out = unsafe { Tensor::uninitialized::<f32>(shape)? };
    {
        let mut view = out.try_as_plain_ram_mut()?;
        fill(SharedOut(view.as_slice_mut::<f32>()?.as_mut_ptr()));
    }
    Ok(out.into_tvalue())
}

/// `(add, other input)` when node `last`'s only consumer adds another f32
/// tensor of the same shape to it (no broadcast).
pub(super) fn residual_add(model: &TypedModel, last: usize) -> Option<(usize, OutletId)> {
    use tract_onnx::tract_core::ops::binary::TypedBinOp;
    let add = single_successor(model, last)?;
    let node = model.node(add);
    let bin = node.op_as::<TypedBinOp>()?;
    let out = OutletId::new(last, 0);
    if bin.0.name() != "Add" || bin.1.is_some() || node.inputs.len() != 2 {
        return None;
    }
    let other = match (node.inputs[0] == out, node.inputs[1] == out) {
        (true, false) => node.inputs[1],
        (false, true) => node.inputs[0],
        _ => return None,
    };
    let (a, b, sum) = (
        model.outlet_fact(out).ok()?,
        model.outlet_fact(other).ok()?,
        model.outlet_fact(OutletId::new(add, 0)).ok()?,
    );
    let f32 = f32::datum_type();
    (a.datum_type == f32
        && b.datum_type == f32
        && sum.datum_type == f32
        && a.shape.as_concrete().is_some()
        && a.shape == b.shape
        && a.shape == sum.shape)
        .then_some((add, other))
}

/// Runs `f(i)` for `i in 0..n`, on tract's thread pool when the running
/// plan has a multi-threaded executor, else in order on this thread.
/// `f` gets disjoint work by index; results come back through its captures.
fn for_each_block(n: usize, f: impl Fn(usize) + Sync + Send) {
    #[cfg(feature = "multithread")]
    {
        use rayon::prelude::*;
        use tract_linalg::multithread::{current_tract_executor, Executor};
        if let Executor::MultiThread(pool) = current_tract_executor() {
            if pool.current_num_threads() > 1 && n > 1 {
                pool.install(|| (0..n).into_par_iter().for_each(&f));
                return;
            }
        }
    }
    (0..n).for_each(f);
}

/// Threads [`for_each_block`] would use now (1 without a multi-threaded executor).
fn parallelism() -> usize {
    #[cfg(feature = "multithread")]
    {
        use tract_linalg::multithread::{current_tract_executor, Executor};
        if let Executor::MultiThread(pool) = current_tract_executor() {
            return pool.current_num_threads().max(1);
        }
    }
    1
}

/// A raw pointer to an output buffer that blocks write disjoint parts of.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: only used by `for_each_block` callers that write disjoint index
// ranges per block, and only while the owning tensor is alive.
unsafe impl Send for SharedOut {}
// SAFETY: as for `Send`: blocks share the pointer, never an element.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer. A method, not field access, so that closures capture the
    /// whole (`Send`) wrapper rather than the raw pointer field.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}
