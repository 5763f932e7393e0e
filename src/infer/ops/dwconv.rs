//! The multi-kernel blocks' depthwise convolutions as one operator: the
//! input's channels split into parts, each part through its own
//! depthwise `k x k` conv (stride 1, "same" zero padding, + bias), the
//! results concatenated along the channels, and the block's residual
//! (the input itself) added where the graph adds it.
//!
//! LGMSNet's encoder blocks split 16 or 32 channels into 4 parts with
//! 3x3, 5x5, 7x7 and 9x9 kernels at up to 256x256: tract runs them as 4
//! `Slice` copies, 4 single-threaded depthwise convs (13-15 G multiply-adds/s
//! here: 4.7 ms of an int8 inference, most of it the 9x9 at 256x256),
//! a `Concat` copy and an `Add`. Here each block of rows of one channel
//! is copied into a zero-bordered buffer that stays in cache, and each
//! output row accumulates its taps over 32 pixels at a time in registers
//! (one broadcast weight, one load and one FMA per 8 pixels and tap); the
//! blocks run on the pool.
//!
//! Every output value is `bias`, then `+ w[ky][kx] * x` for every tap in
//! row-major order as one fused multiply-add each (zero padding included),
//! then `+ residual`: the scalar reference and the SIMD kernels give the
//! same bits. tract sums in another order: the results differ from its
//! graph in the last bits (tested against it with a tolerance).
//!
//! [`replace_all`] matches `Concat(axis 1)` of depthwise f32 `Conv`s (one
//! weight per channel and tap, odd square kernel, stride and dilation 1,
//! padding `k / 2` on every side) each on a `Slice` (axis 1) of the same
//! `[1, C, H, W]` tensor, and folds an `Add` of that tensor after it.

use std::sync::Arc;

use anyhow::bail;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{DimLike, EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::ops::array::{Slice, TypedConcat};
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::{for_each_block, konst, replace_each, single_successor, SharedOut};
#[cfg(target_arch = "x86_64")]
use crate::kernels::cpu::Avx2Fma;
#[cfg(target_arch = "aarch64")]
use crate::kernels::cpu::Neon;

/// Output rows per block on the pool: the block's bordered input (up to
/// 40 rows of a 264-pixel row, 42 KB) stays in the core's L2.
const BAND: usize = 32;

/// Pixels per register block of the SIMD row kernels.
const SPAN: usize = 32;

/// One part of the split: input channels `src..src + c`, each convolved
/// with its own `k x k` kernel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Part {
    /// First input channel.
    pub src: usize,
    /// Channels.
    pub c: usize,
    /// Kernel size (odd).
    pub k: usize,
    /// Weights `[c, k, k]`, row-major.
    pub weights: Arc<Tensor>,
    /// Bias per channel.
    pub bias: Arc<Tensor>,
}

/// The split, the depthwise convs and the concat (+ the residual).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DwConcat {
    /// Input channels.
    pub cin: usize,
    /// Image height.
    pub h: usize,
    /// Image width.
    pub w: usize,
    /// The parts, in output channel order.
    pub parts: Vec<Part>,
    /// Whether output channel `o` adds input channel `o` (the block's
    /// residual; needs as many output channels as input ones).
    pub residual: bool,
}

impl DwConcat {
    /// Output channels.
    pub fn cout(&self) -> usize {
        self.parts.iter().map(|p| p.c).sum()
    }

    /// The part (its index) and the channel within it of output channel `o`.
    fn locate(&self, mut o: usize) -> (usize, usize) {
        for (i, p) in self.parts.iter().enumerate() {
            if o < p.c {
                return (i, o);
            }
            o -= p.c;
        }
        unreachable!("output channel beyond the parts")
    }

    /// The whole operator on `x` (`[cin, h, w]`) into `out` (`[cout, h,
    /// w]`), blocks on the pool when there is one.
    pub fn run(&self, x: &[f32], out: &mut [f32], kernel: Kernel) -> anyhow::Result<()> {
        let (h, w) = (self.h, self.w);
        if x.len() != self.cin * h * w || out.len() != self.cout() * h * w {
            bail!(
                "LgmsDwConv: {} values in and {} out, expected {} x {h} x {w} and {} x {h} x {w}",
                x.len(),
                out.len(),
                self.cin,
                self.cout()
            );
        }
        if self.residual && self.cout() != self.cin {
            bail!(
                "LgmsDwConv: a residual needs as many output channels as input ones ({} and {})",
                self.cout(),
                self.cin
            );
        }
        let views = self
            .parts
            .iter()
            .map(|p| Ok((p.weights.try_as_plain_ram()?, p.bias.try_as_plain_ram()?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let params = views
            .iter()
            .map(|(w, b)| Ok((w.as_slice::<f32>()?, b.as_slice::<f32>()?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (p, (wt, b)) in self.parts.iter().zip(&params) {
            if p.k % 2 == 0
                || p.src + p.c > self.cin
                || wt.len() != p.c * p.k * p.k
                || b.len() != p.c
            {
                bail!(
                    "LgmsDwConv: a part of channels {}..{} with a {}x{} kernel needs an odd kernel, channels within the {} inputs, {} weights and {} biases (it has {} and {})",
                    p.src,
                    p.src + p.c,
                    p.k,
                    p.k,
                    self.cin,
                    p.c * p.k * p.k,
                    p.c,
                    wt.len(),
                    b.len()
                );
            }
        }
        let bands = h.div_ceil(BAND);
        let shared = SharedOut(out.as_mut_ptr());
        for_each_block(self.cout() * bands, |n| {
            let (o, y0) = (n / bands, (n % bands) * BAND);
            let (pi, c) = self.locate(o);
            let (part, (weights, bias)) = (&self.parts[pi], params[pi]);
            let kk = part.k * part.k;
            let plane = &x[(part.src + c) * h * w..(part.src + c + 1) * h * w];
            let residual = self.residual.then(|| &x[o * h * w..(o + 1) * h * w]);
            let rows = BAND.min(h - y0);
            // SAFETY: block n owns rows y0..y0 + rows of output channel o,
            // disjoint between blocks, inside `out` (checked above).
            let dst = unsafe {
                std::slice::from_raw_parts_mut(shared.ptr().add((o * h + y0) * w), rows * w)
            };
            let band = Band {
                plane,
                h,
                w,
                y0,
                rows,
                k: part.k,
            };
            band.run(
                &weights[c * kk..(c + 1) * kk],
                bias[c],
                residual,
                dst,
                kernel,
            );
        });
        Ok(())
    }
}

/// Rows `y0..y0 + rows` of one channel's output.
struct Band<'a> {
    plane: &'a [f32],
    h: usize,
    w: usize,
    y0: usize,
    rows: usize,
    k: usize,
}

impl Band<'_> {
    fn run(
        &self,
        weights: &[f32],
        bias: f32,
        residual: Option<&[f32]>,
        dst: &mut [f32],
        kernel: Kernel,
    ) {
        let (w, p) = (self.w, self.k / 2);
        let pw = w + 2 * p;
        let padded_rows = self.rows + 2 * p;
        BORDERED.with_borrow_mut(|buf| {
            if buf.len() < padded_rows * pw {
                buf.resize(padded_rows * pw, 0.0);
            }
            let buf = &mut buf[..padded_rows * pw];
            // Input rows y0 - p .. y0 + rows + p, zeros outside the image.
            for (r, row) in buf.chunks_exact_mut(pw).enumerate() {
                let y = (self.y0 + r) as isize - p as isize;
                if y < 0 || y >= self.h as isize {
                    row.fill(0.0);
                    continue;
                }
                let y = y as usize;
                row[..p].fill(0.0);
                row[p..p + w].copy_from_slice(&self.plane[y * w..(y + 1) * w]);
                row[p + w..].fill(0.0);
            }
            kernel.rows(buf, pw, self.k, weights, bias, dst, w);
            if let Some(res) = residual {
                super::add_residual(dst, &res[self.y0 * w..(self.y0 + self.rows) * w]);
            }
        });
    }
}

thread_local! {
    /// [`Band::run`]'s zero-bordered input rows, per pool thread: grown to
    /// the largest band once.
    static BORDERED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Computes consecutive output rows of `n` values,
/// `out[r * n + x] = bias + sum over ky, kx of w[ky * k + kx] *
/// src[(r + ky) * stride + x + kx]`, each product fused into the sum in
/// that order. `src` holds the
/// bordered input rows (`out.len() / n + k - 1` of them) of `n + k - 1`
/// values at `stride`.
type RowsFn =
    fn(src: &[f32], stride: usize, k: usize, w: &[f32], bias: f32, out: &mut [f32], n: usize);

/// One implementation of [`RowsFn`]: the scalar reference, or a SIMD one
/// that only a proof of its CPU features builds.
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
    name: &'static str,
    rows: RowsFn,
}

impl Kernel {
    /// The reference kernel: one value at a time.
    pub const SCALAR: Kernel = Kernel {
        name: "scalar",
        rows: rows_scalar,
    };

    /// The AVX2 + FMA kernel.
    #[cfg(target_arch = "x86_64")]
    pub fn avx2(_: Avx2Fma) -> Kernel {
        Kernel {
            name: "avx2",
            rows: x86::rows,
        }
    }

    /// The NEON kernel.
    #[cfg(target_arch = "aarch64")]
    pub fn neon(_: Neon) -> Kernel {
        Kernel {
            name: "neon",
            rows: rows_spans,
        }
    }

    /// `"scalar"`, `"avx2"` or `"neon"`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Output rows of `n` values ([`RowsFn`]); panics if `out` is not
    /// whole rows or `src` or `w` is too short.
    #[allow(clippy::too_many_arguments)]
    pub fn rows(
        &self,
        src: &[f32],
        stride: usize,
        k: usize,
        w: &[f32],
        bias: f32,
        out: &mut [f32],
        n: usize,
    ) {
        let rows = out.len() / n.max(1);
        assert!(
            n > 0
                && k > 0
                && rows > 0
                && out.len() == rows * n
                && w.len() >= k * k
                && src.len() >= (rows + k - 2) * stride + n + k - 1,
            "depthwise rows: {} source values at stride {stride} for {} outputs in rows of {n} and k {k}",
            src.len(),
            out.len()
        );
        (self.rows)(src, stride, k, w, bias, out, n)
    }
}

/// One output value of [`RowsFn`]: the definition.
#[inline(always)]
fn tap_sum(src: &[f32], stride: usize, k: usize, w: &[f32], bias: f32, x: usize) -> f32 {
    let mut acc = bias;
    for ky in 0..k {
        for kx in 0..k {
            acc = w[ky * k + kx].mul_add(src[ky * stride + x + kx], acc);
        }
    }
    acc
}

fn rows_scalar(
    src: &[f32],
    stride: usize,
    k: usize,
    w: &[f32],
    bias: f32,
    out: &mut [f32],
    n: usize,
) {
    for (r, row) in out.chunks_exact_mut(n).enumerate() {
        for (x, o) in row.iter_mut().enumerate() {
            *o = tap_sum(&src[r * stride..], stride, k, w, bias, x);
        }
    }
}

/// [`RowsFn`] two rows at a time through [`pair_spans`], an odd last row
/// through [`row_spans`].
#[inline(always)]
fn rows_spans(
    src: &[f32],
    stride: usize,
    k: usize,
    w: &[f32],
    bias: f32,
    out: &mut [f32],
    n: usize,
) {
    let last_row = out.len() / n - 1;
    let mut pairs = out.chunks_exact_mut(2 * n);
    for (p, pair) in pairs.by_ref().enumerate() {
        let (o0, o1) = pair.split_at_mut(n);
        pair_spans(&src[2 * p * stride..], stride, k, w, bias, o0, o1);
    }
    let last = pairs.into_remainder();
    if !last.is_empty() {
        row_spans(&src[last_row * stride..], stride, k, w, bias, last);
    }
}

/// Two output rows (`o0` from source rows `0..k`, `o1` from `1..k + 1`)
/// in spans of [`SPAN`] pixels: each source span loaded once serves both
/// rows (a row of its own loads a span and a weight per 4 or 8 vector
/// multiply-adds, and the loads, not the multiply-adds, bound it). Per
/// value the same operations in the same order as [`rows_scalar`].
#[inline(always)]
fn pair_spans(
    src: &[f32],
    stride: usize,
    k: usize,
    w: &[f32],
    bias: f32,
    o0: &mut [f32],
    o1: &mut [f32],
) {
    let n = o0.len();
    let mut x = 0;
    while x + SPAN <= n {
        let (mut a0, mut a1) = ([bias; SPAN], [bias; SPAN]);
        for iy in 0..=k {
            let r = &src[iy * stride + x..iy * stride + x + SPAN + k - 1];
            for kx in 0..k {
                let s: &[f32; SPAN] = r[kx..kx + SPAN].try_into().expect("SPAN values");
                if iy < k {
                    let wv = w[iy * k + kx];
                    for (a, &v) in a0.iter_mut().zip(s) {
                        *a = wv.mul_add(v, *a);
                    }
                }
                if iy > 0 {
                    let wv = w[(iy - 1) * k + kx];
                    for (a, &v) in a1.iter_mut().zip(s) {
                        *a = wv.mul_add(v, *a);
                    }
                }
            }
        }
        o0[x..x + SPAN].copy_from_slice(&a0);
        o1[x..x + SPAN].copy_from_slice(&a1);
        x += SPAN;
    }
    for i in x..n {
        o0[i] = tap_sum(src, stride, k, w, bias, i);
        o1[i] = tap_sum(&src[stride..], stride, k, w, bias, i);
    }
}

/// One row of [`RowsFn`] in spans of [`SPAN`] pixels, each span's sums in an array
/// that the compiler keeps in vector registers (4 AVX2 or 8 NEON
/// registers), the rest one value at a time: the same operations in the
/// same order per value as [`rows_scalar`].
#[inline(always)]
fn row_spans(src: &[f32], stride: usize, k: usize, w: &[f32], bias: f32, out: &mut [f32]) {
    let n = out.len();
    let mut x = 0;
    while x + SPAN <= n {
        let mut acc = [bias; SPAN];
        for ky in 0..k {
            let r = &src[ky * stride + x..ky * stride + x + SPAN + k - 1];
            let wr = &w[ky * k..ky * k + k];
            for (kx, &wv) in wr.iter().enumerate() {
                let s: &[f32; SPAN] = r[kx..kx + SPAN].try_into().expect("SPAN values");
                for (a, &v) in acc.iter_mut().zip(s) {
                    *a = wv.mul_add(v, *a);
                }
            }
        }
        out[x..x + SPAN].copy_from_slice(&acc);
        x += SPAN;
    }
    for (i, o) in out[x..].iter_mut().enumerate() {
        *o = tap_sum(src, stride, k, w, bias, x + i);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    pub(super) fn rows(
        src: &[f32],
        stride: usize,
        k: usize,
        w: &[f32],
        bias: f32,
        out: &mut [f32],
        n: usize,
    ) {
        // SAFETY: only `Kernel::avx2` reaches this function, with the proof
        // of AVX2 and FMA.
        unsafe { rows_avx2(src, stride, k, w, bias, out, n) }
    }

    /// [`super::rows_spans`] compiled for AVX2 + FMA (`vfmadd` on 8 lanes).
    #[target_feature(enable = "avx2,fma")]
    fn rows_avx2(
        src: &[f32],
        stride: usize,
        k: usize,
        w: &[f32],
        bias: f32,
        out: &mut [f32],
        n: usize,
    ) {
        super::rows_spans(src, stride, k, w, bias, out, n)
    }
}

impl Op for DwConcat {
    fn name(&self) -> StaticName {
        "LgmsDwConv".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        let ks: Vec<String> = self
            .parts
            .iter()
            .map(|p| format!("{}x{} on {}..{}", p.k, p.k, p.src, p.src + p.c))
            .collect();
        Ok(vec![format!(
            "depthwise {} -> {} channels, {}x{}, {}{}",
            self.cin,
            self.cout(),
            self.h,
            self.w,
            ks.join(", "),
            if self.residual { ", + input" } else { "" }
        )])
    }
    op_as_typed_op!();
}

impl EvalOp for DwConcat {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        // SAFETY: f32 has no invalid bit patterns, and `run` writes every
        // value (each block its rows) before the tensor is read.
        let mut out = unsafe { Tensor::uninitialized::<f32>(&[1, self.cout(), self.h, self.w])? };
        {
            let mut view = out.try_as_plain_ram_mut()?;
            self.run(
                x,
                view.as_slice_mut::<f32>()?,
                crate::kernels::best().dwconv(),
            )?;
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for DwConcat {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        if inputs[0].datum_type != f32::datum_type() {
            bail!("LgmsDwConv takes f32, got {:?}", inputs[0].datum_type);
        }
        Ok(tvec!(f32::fact([1, self.cout(), self.h, self.w])))
    }
    as_op!();
}

// ---------------------------------------------------------------------------
// Pattern matching
// ---------------------------------------------------------------------------

/// Node `id` as one part: a depthwise f32 conv on a `Slice` (axis 1) of
/// `[1, C, H, W]`; with the sliced tensor.
fn part_at(model: &TypedModel, id: usize) -> Option<(Part, OutletId)> {
    let node = model.node(id);
    let conv = node.op_as::<Conv>()?;
    let ps = &conv.pool_spec;
    let k = *ps.kernel_shape.first()?;
    let ones = |v: &Option<TVec<usize>>| v.as_ref().is_none_or(|v| v.iter().all(|&s| s == 1));
    let same = match &ps.padding {
        PaddingSpec::Explicit(b, a) => b[..] == [k / 2, k / 2] && a[..] == [k / 2, k / 2],
        PaddingSpec::SameUpper | PaddingSpec::SameLower => true,
        PaddingSpec::Valid => k == 1,
        _ => false,
    };
    if conv.q_params.is_some()
        || conv.kernel_fmt != KernelFormat::OIHW
        || ps.data_format != DataFormat::NCHW
        || ps.kernel_shape[..] != [k, k]
        || k % 2 == 0
        || !ones(&ps.strides)
        || !ones(&ps.dilations)
        || !same
        || !(2..=3).contains(&node.inputs.len())
        || single_successor(model, id).is_none()
    {
        return None;
    }
    let slice_id = node.inputs[0].node;
    let slice = model.node(slice_id).op_as::<Slice>()?;
    let source = *model.node(slice_id).inputs.first()?;
    let src_fact = model.outlet_fact(source).ok()?;
    let (src, end) = (slice.start.as_usize()?, slice.end.as_usize()?);
    let c = end.checked_sub(src)?;
    if slice.axis != 1
        || src_fact.datum_type != f32::datum_type()
        || !matches!(src_fact.shape.as_concrete()?, &[1, _, _, _])
        || single_successor(model, slice_id) != Some(id)
        || conv.group != c
    {
        return None;
    }
    let weights = konst(model, node.inputs[1])?;
    if weights.datum_type() != f32::datum_type() || weights.shape() != [c, 1, k, k] {
        return None;
    }
    let bias = match node.inputs.get(2) {
        Some(&o) => {
            let b = konst(model, o)?;
            if b.datum_type() != f32::datum_type() {
                return None;
            }
            let v = b.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec();
            match v.len() {
                n if n == c => v,
                1 => vec![v[0]; c],
                _ => return None,
            }
        }
        None => vec![0.0; c],
    };
    let part = Part {
        src,
        c,
        k,
        weights: Arc::new(
            weights
                .clone()
                .into_tensor()
                .into_shape(&[c * k * k])
                .ok()?,
        ),
        bias: Arc::new(Tensor::from_shape(&[c], &bias).ok()?),
    };
    Some((part, source))
}

/// The operator for the `Concat` at `id`, its input, and the node whose
/// output it replaces (the concat, or the residual `Add` after it).
fn match_at(model: &TypedModel, id: usize) -> Option<(DwConcat, OutletId, usize)> {
    let node = model.node(id);
    if node.op_as::<TypedConcat>()?.axis != 1 || node.inputs.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    let mut source = None;
    for i in &node.inputs {
        let (part, src) = part_at(model, i.node)?;
        if source.is_some_and(|s| s != src) {
            return None;
        }
        source = Some(src);
        parts.push(part);
    }
    let source = source?;
    let (cin, h, w) = match *model.outlet_fact(source).ok()?.shape.as_concrete()? {
        [1, c, h, w] => (c, h, w),
        _ => return None,
    };
    let mut op = DwConcat {
        cin,
        h,
        w,
        parts,
        residual: false,
    };
    let out_fact = model.outlet_fact(OutletId::new(id, 0)).ok()?;
    if out_fact.shape.as_concrete()? != [1, op.cout(), h, w] {
        return None;
    }
    let mut last = id;
    if let Some(add) = single_successor(model, id) {
        let a = model.node(add);
        let other = a.inputs.iter().find(|o| o.node != id);
        let add_fact = model.outlet_fact(OutletId::new(add, 0)).ok()?;
        if a.op.name() == "Add"
            && a.inputs.len() == 2
            && other == Some(&source)
            && op.cout() == cin
            && add_fact.shape.as_concrete() == Some(&[1, cin, h, w])
        {
            op.residual = true;
            last = add;
        }
    }
    Some((op, source, last))
}

/// Replaces every matching split of depthwise convs; returns how many.
pub fn replace_all(model: &mut TypedModel) -> TractResult<usize> {
    replace_each(model, "lgms_dwconv", match_at)
}
