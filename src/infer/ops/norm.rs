//! Layer and group normalisation as one operator: `y = (x - mean) /
//! sqrt(var + eps) * gamma[c] + beta[c]` over contiguous groups of `x`.
//!
//! LGMSNet normalises in two places, and tract runs both as chains of
//! single-threaded element-wise ops over the whole tensor:
//! - the transformer blocks' LayerNorm over the 48-128 channels of each
//!   token: `Reduce<Sum>`, `Mul` by 1/n, `Sub`, tract's `RmsNorm`, then the
//!   affine `Mul` and `Add`, which tract broadcasts slowly along the last
//!   axis;
//! - the multi-kernel blocks' GroupNorm (4 groups), exported as a reshape to
//!   `[1, groups, ..]`, means taken by products with constant `1/n` vectors
//!   (`EinSum`s that tract packs for its matmul kernel), `Sub`, `Square`,
//!   the same means, `Add` eps, `Rsqrt`, `Mul`, the reshape back and the
//!   affine `Mul` and `Add`, at up to 256x256.
//!
//! [`replace_all`] matches both in the decluttered graph. [`Norm`] makes
//! two passes over each group (mean and variance summed in f64, in 8 lanes
//! so that they vectorise) and one to write, groups in blocks on tract's
//! pool.

use std::sync::Arc;

use anyhow::bail;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer, RmsNorm};
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::{filled_f32, for_each_block, konst, scalar_const, single_successor, with_const};

/// Elements per block of work (several small groups, or one large group).
const BLOCK: usize = 16 * 1024;

/// Normalisation over contiguous groups of `len` elements, then a scale and
/// shift per channel: element `i` is in channel `(i / stride) % channels`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Norm {
    /// Elements per group.
    pub(crate) len: usize,
    /// `f32::to_bits` of eps.
    pub(crate) eps_bits: u32,
    /// Scale per channel.
    pub(crate) gamma: Arc<Tensor>,
    /// Shift per channel.
    pub(crate) beta: Arc<Tensor>,
    /// Consecutive elements of one channel.
    pub(crate) stride: usize,
    /// Shape of input and output.
    pub(crate) shape: TVec<usize>,
    /// Whether the exact GELU that follows in the graph (the multi-kernel
    /// blocks' `norm_act`) runs on each group's output while it is in
    /// cache, through the GELU kernel of [`super::gelu`] (the same values
    /// as that op).
    pub(crate) gelu: bool,
}

impl Op for Norm {
    fn name(&self) -> StaticName {
        "LgmsNorm".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "groups of {}, {} channels of {}, eps {}{}",
            self.len,
            self.gamma.len(),
            self.stride,
            f32::from_bits(self.eps_bits),
            if self.gelu { ", then GELU" } else { "" }
        )])
    }
    op_as_typed_op!();
}

impl EvalOp for Norm {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let (gamma, beta) = (
            self.gamma.try_as_plain_ram()?,
            self.beta.try_as_plain_ram()?,
        );
        let (gamma, beta) = (gamma.as_slice::<f32>()?, beta.as_slice::<f32>()?);
        if x.len() != self.shape.iter().product::<usize>() {
            bail!("LgmsNorm: {} inputs for {:?}", x.len(), self.shape);
        }
        let groups = x.len() / self.len;
        let per_block = (BLOCK / self.len).max(1);
        let gelu = self.gelu.then(|| crate::kernels::best().gelu());
        // The groups cover every element (`len` divides the volume: checked
        // at match time).
        let out = filled_f32(&self.shape, |dst| {
            for_each_block(groups.div_ceil(per_block), |b| {
                for g in b * per_block..((b + 1) * per_block).min(groups) {
                    let at = g * self.len;
                    // SAFETY: group g's elements, written by this block only;
                    // the output outlives the loop.
                    let y = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(at), self.len) };
                    self.group(&x[at..at + self.len], at, y, gamma, beta);
                    if let Some(k) = gelu {
                        k.run(y);
                    }
                }
            })
        })?;
        Ok(tvec!(out))
    }
}

impl Norm {
    /// Normalises one group `x` (starting at element `at`) into `y`.
    fn group(&self, x: &[f32], at: usize, y: &mut [f32], gamma: &[f32], beta: &[f32]) {
        let n = x.len() as f64;
        let mean = (lane_sum(x, |v| v as f64) / n) as f32;
        let var = (lane_sum(x, |v| ((v - mean) as f64).powi(2)) / n) as f32;
        let rstd = 1.0 / (var + f32::from_bits(self.eps_bits)).sqrt();
        let channels = gamma.len();
        if self.stride == 1 {
            // Every element its own channel, groups aligned to the channels
            // (checked at match time).
            for (xs, ys) in x.chunks_exact(channels).zip(y.chunks_exact_mut(channels)) {
                for (((&v, o), &g), &b) in xs.iter().zip(ys).zip(gamma).zip(beta) {
                    *o = (v - mean) * rstd * g + b;
                }
            }
            return;
        }
        // Runs of one channel.
        let mut k = 0;
        while k < x.len() {
            let i = at + k;
            let c = (i / self.stride) % channels;
            let end = x.len().min(k + self.stride - i % self.stride);
            let (s, b) = (rstd * gamma[c], beta[c]);
            for (&v, o) in x[k..end].iter().zip(&mut y[k..end]) {
                *o = (v - mean) * s + b;
            }
            k = end;
        }
    }
}

/// `sum f(x_i)` in f64, in 8 independent lanes (one running sum would
/// wait on every add).
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f64>() + tail
}

impl TypedOp for Norm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        if inputs[0].datum_type != f32::datum_type() {
            bail!("LgmsNorm takes f32, got {:?}", inputs[0].datum_type);
        }
        Ok(tvec!(f32::fact(self.shape.iter().copied())))
    }
    as_op!();
}

// ---------------------------------------------------------------------------
// Pattern matching
// ---------------------------------------------------------------------------

fn shape(model: &TypedModel, o: OutletId) -> Option<TVec<usize>> {
    Some(model.outlet_fact(o).ok()?.shape.as_concrete()?.into())
}

/// The per-channel affine after `last` (`Mul` by gamma, then `Add` of
/// beta, each optional), when the constants vary along the channels only
/// (`channel_axis` of a tensor of `rank`, `channels` long): (gamma, beta,
/// the last node).
fn affine(
    model: &TypedModel,
    mut last: usize,
    rank: usize,
    channel_axis: usize,
    channels: usize,
) -> (Arc<Tensor>, Arc<Tensor>, usize) {
    let per_channel = |k: &Tensor| {
        let s = k.shape();
        k.datum_type() == f32::datum_type()
            && k.len() == channels
            && (s.len() == 1 && channel_axis == rank - 1
                || s.len() == rank
                    && s.iter()
                        .enumerate()
                        .all(|(a, &d)| d == if a == channel_axis { channels } else { 1 }))
    };
    let mut gamma = Arc::new(tensor1(&vec![1f32; channels]));
    let mut beta = Arc::new(tensor1(&vec![0f32; channels]));
    for (name, slot) in [("Mul", &mut gamma), ("Add", &mut beta)] {
        let Some(next) = single_successor(model, last) else {
            break;
        };
        match with_const(model, next, name, OutletId::new(last, 0)) {
            Some(k) if per_channel(&k) => {
                let Ok(k) = k.clone().into_tensor().into_shape(&[channels]) else {
                    break;
                };
                *slot = Arc::new(k);
                last = next;
            }
            _ => break,
        }
    }
    (gamma, beta, last)
}

/// One match: the op, its input and the node whose output it replaces.
struct Found {
    op: Norm,
    x: OutletId,
    last: usize,
}

/// LayerNorm as tract declutters it: `x - Reduce<Sum>(x) * (1/n)` into
/// `RmsNorm` over the last axis, then the affine.
fn layer_norm(model: &TypedModel, rms: usize) -> Option<Found> {
    let node = model.node(rms);
    let op = node.op_as::<RmsNorm>()?;
    let sub = model.node(node.inputs[0].node);
    if sub.op.name() != "Sub" || single_successor(model, sub.id)? != rms {
        return None;
    }
    let (x, mean) = (sub.inputs[0], sub.inputs[1]);
    let xs = shape(model, x)?;
    let rank = xs.len();
    let n = *xs.last()?;
    if op.axis != rank - 1 || model.outlet_fact(x).ok()?.datum_type != f32::datum_type() {
        return None;
    }
    // mean = Reduce<Sum>(x, last axis) * (1/n).
    let mul = model.node(mean.node);
    let (sum_out, inv) = match mul.inputs.as_slice() {
        [a, b] if mul.op.name() == "Mul" => {
            match (scalar_const(model, *a), scalar_const(model, *b)) {
                (None, Some(v)) => (*a, v),
                (Some(v), None) => (*b, v),
                _ => return None,
            }
        }
        _ => return None,
    };
    let red = model.node(sum_out.node);
    let reduce = red.op_as::<Reduce>()?;
    if reduce.reducer != Reducer::Sum
        || reduce.axes.as_slice() != [rank - 1]
        || red.inputs.as_slice() != [x]
        || (inv * n as f32 - 1.0).abs() > 1e-6
    {
        return None;
    }
    let eps = op.eps.cast_to_scalar::<f32>().ok()?;
    let (gamma, beta, last) = affine(model, rms, rank, rank - 1, n);
    Some(Found {
        op: Norm {
            len: n,
            eps_bits: eps.to_bits(),
            gamma,
            beta,
            stride: 1,
            shape: xs,
            gelu: false,
        },
        x,
        last,
    })
}

/// Evaluates the chain of nodes from `from` to `to` (each with one input
/// on the chain, the others constant) on `input`, with tract's own ops.
fn eval_chain(model: &TypedModel, from: OutletId, to: OutletId, input: Tensor) -> Option<Tensor> {
    let mut chain = vec![];
    let mut at = to;
    while at != from {
        let node = model.node(at.node);
        if node.outputs.len() != 1 || chain.len() > 8 {
            return None;
        }
        chain.push(at.node);
        let live: Vec<&OutletId> = node
            .inputs
            .iter()
            .filter(|o| konst(model, **o).is_none())
            .collect();
        at = **live.first().filter(|_| live.len() == 1)?;
    }
    let mut value = input.into_tvalue();
    let mut prev = from;
    for &id in chain.iter().rev() {
        value = super::eval_with(model, id, prev, value)?;
        prev = OutletId::new(id, 0);
    }
    Some(value.into_tensor())
}

/// Whether the chain from `from` (`[1, groups, ..]`) to `to` computes the
/// mean of each group, on a test tensor: the exported GroupNorm takes it
/// with products by constant vectors, whatever their layout.
fn is_group_mean(model: &TypedModel, from: OutletId, to: OutletId) -> bool {
    let Some(s) = shape(model, from) else {
        return false;
    };
    if s.len() < 2 || s[0] != 1 {
        return false;
    }
    let (groups, len) = (s[1], s[2..].iter().product::<usize>());
    let values: Vec<f32> = (0..groups * len)
        .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0 + (i / len) as f32)
        .collect();
    let Ok(t) = Tensor::from_shape(&s, &values) else {
        return false;
    };
    let Some(got) = eval_chain(model, from, to, t) else {
        return false;
    };
    let Ok(got) = got.try_as_plain_ram() else {
        return false;
    };
    let Ok(got) = got.as_slice::<f32>() else {
        return false;
    };
    got.len() == groups
        && values.chunks(len).zip(got).all(|(g, &m)| {
            let want = g.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
            (m as f64 - want).abs() <= 1e-4 * want.abs().max(1.0)
        })
}

/// GroupNorm as exported: `r = reshape(x)` to `[1, groups, ..]`, `s = r -
/// mean(r)`, `s * rsqrt(mean(s^2) + eps)`, reshaped back, then the affine
/// per channel of `x` (`[1, C, ..]`).
fn group_norm(model: &TypedModel, rsqrt: usize) -> Option<Found> {
    let node = model.node(rsqrt);
    if node.op.name() != "Rsqrt" {
        return None;
    }
    // rsqrt(var + eps), then s * that.
    let add = model.node(node.inputs[0].node);
    let (var, eps) = match add.inputs.as_slice() {
        [a, b] if add.op.name() == "Add" => {
            match (scalar_const(model, *a), scalar_const(model, *b)) {
                (None, Some(e)) => (*a, e),
                (Some(e), None) => (*b, e),
                _ => return None,
            }
        }
        _ => return None,
    };
    let mul = single_successor(model, rsqrt)?;
    let mul_node = model.node(mul);
    if mul_node.op.name() != "Mul" || mul_node.inputs.len() != 2 {
        return None;
    }
    let s = *mul_node.inputs.iter().find(|o| o.node != rsqrt)?;
    let sub = model.node(s.node);
    if sub.op.name() != "Sub" || sub.outputs[0].successors.len() != 2 {
        return None;
    }
    let (r, mean) = (sub.inputs[0], sub.inputs[1]);
    // The other consumer of s squares it; var is the mean of that.
    let sq = sub.outputs[0]
        .successors
        .iter()
        .find(|i| i.node != mul)?
        .node;
    if model.node(sq).op.name() != "Square" {
        return None;
    }
    if !is_group_mean(model, r, mean) || !is_group_mean(model, OutletId::new(sq, 0), var) {
        return None;
    }
    // The reshapes around it.
    let reshape = model.node(r.node);
    let x = *reshape.inputs.first()?;
    let back = single_successor(model, mul)?;
    let back_node = model.node(back);
    let xs = shape(model, x)?;
    if !matches!(reshape.op_as::<AxisOp>()?, AxisOp::Reshape(..))
        || !matches!(back_node.op_as::<AxisOp>()?, AxisOp::Reshape(..))
        || shape(model, OutletId::new(back, 0))? != xs
        || xs.len() < 2
        || xs[0] != 1
        || model.outlet_fact(x).ok()?.datum_type != f32::datum_type()
    {
        return None;
    }
    let (channels, groups) = (xs[1], shape(model, r)?[1]);
    let total: usize = xs.iter().product();
    if groups == 0 || channels % groups != 0 {
        return None;
    }
    let (gamma, beta, last) = affine(model, back, xs.len(), 1, channels);
    Some(Found {
        op: Norm {
            len: total / groups,
            eps_bits: eps.to_bits(),
            gamma,
            beta,
            stride: xs[2..].iter().product::<usize>().max(1),
            shape: xs,
            gelu: false,
        },
        x,
        last,
    })
}

/// Replaces every LayerNorm and GroupNorm that matches; returns how many.
pub fn replace_all(model: &mut TypedModel) -> TractResult<usize> {
    let candidates: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<RmsNorm>() || n.op.name() == "Rsqrt")
        .map(|n| n.id)
        .collect();
    let mut replaced = 0;
    for id in candidates {
        let Some(mut found) = layer_norm(model, id).or_else(|| group_norm(model, id)) else {
            continue;
        };
        // An exact GELU after the norm (ours, or tract's where ours is
        // skipped) runs on the norm's output blocks.
        if let Some(s) = single_successor(model, found.last) {
            let node = model.node(s);
            let same = model
                .outlet_fact(OutletId::new(s, 0))
                .ok()
                .map(|f| &f.shape)
                == model
                    .outlet_fact(OutletId::new(found.last, 0))
                    .ok()
                    .map(|f| &f.shape);
            if same && (node.op_is::<super::gelu::Gelu>() || super::gelu::is_gelu_exact(model, s)) {
                found.op.gelu = true;
                found.last = s;
            }
        }
        let name = format!("{}.lgms_norm", model.node(found.last).name);
        super::swap_in(
            model,
            &[found.x],
            OutletId::new(found.last, 0),
            name,
            found.op,
        )?;
        replaced += 1;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An input of the wrong size is an error naming the op, not a panic
    /// or an output with unwritten values.
    #[test]
    fn a_wrong_sized_input_is_an_error() {
        let op = Norm {
            len: 4,
            eps_bits: 1e-5f32.to_bits(),
            gamma: Arc::new(tensor1(&[1f32; 4])),
            beta: Arc::new(tensor1(&[0f32; 4])),
            stride: 1,
            shape: tvec![2, 4],
            gelu: false,
        };
        let ok = op.eval_out_of_plan(tvec![
            tensor1(&[1f32, 2., 3., 4., 5., 6., 7., 9.]).into_tvalue()
        ]);
        assert!(ok.is_ok());
        let short = op.eval_out_of_plan(tvec![tensor1(&[1f32; 6]).into_tvalue()]);
        let err = short.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("LgmsNorm: 6 inputs"), "{err}");
    }
}
