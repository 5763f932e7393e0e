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
            for (r, out) in dst.chunks_exact_mut(w).enumerate() {
                kernel.row(&buf[r * pw..], pw, self.k, weights, bias, out);
                if let Some(res) = residual {
                    let y = self.y0 + r;
                    for (o, &v) in out.iter_mut().zip(&res[y * w..(y + 1) * w]) {
                        *o += v;
                    }
                }
            }
        });
    }
}

thread_local! {
    /// [`Band::run`]'s zero-bordered input rows, per pool thread: grown to
    /// the largest band once.
    static BORDERED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Computes one output row: `out[x] = bias + sum over ky, kx of w[ky * k
/// + kx] * src[ky * stride + x + kx]`, each product fused into the sum in
/// that order. `src` holds `k` bordered rows of `out.len() + k - 1` values
/// at `stride`.
type RowFn = fn(src: &[f32], stride: usize, k: usize, w: &[f32], bias: f32, out: &mut [f32]);

/// One implementation of [`RowFn`]: the scalar reference, or a SIMD one
/// that only a proof of its CPU features builds.
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
    name: &'static str,
    row: RowFn,
}

impl Kernel {
    /// The reference kernel: one value at a time.
    pub const SCALAR: Kernel = Kernel {
        name: "scalar",
        row: row_scalar,
    };

    /// The AVX2 + FMA kernel.
    #[cfg(target_arch = "x86_64")]
    pub fn avx2(_: Avx2Fma) -> Kernel {
        Kernel {
            name: "avx2",
            row: x86::row,
        }
    }

    /// The NEON kernel.
    #[cfg(target_arch = "aarch64")]
    pub fn neon(_: Neon) -> Kernel {
        Kernel {
            name: "neon",
            row: row_spans,
        }
    }

    /// `"scalar"`, `"avx2"` or `"neon"`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// One output row ([`RowFn`]); panics if `src` or `w` is too short.
    pub fn row(&self, src: &[f32], stride: usize, k: usize, w: &[f32], bias: f32, out: &mut [f32]) {
        let n = out.len();
        assert!(
            n > 0 && w.len() >= k * k && src.len() >= (k - 1) * stride + n + k - 1,
            "depthwise row: {} source values at stride {stride} for {n} outputs and k {k}",
            src.len()
        );
        (self.row)(src, stride, k, w, bias, out)
    }
}

/// One output value of [`RowFn`]: the definition.
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

fn row_scalar(src: &[f32], stride: usize, k: usize, w: &[f32], bias: f32, out: &mut [f32]) {
    for (x, o) in out.iter_mut().enumerate() {
        *o = tap_sum(src, stride, k, w, bias, x);
    }
}

/// [`RowFn`] in spans of [`SPAN`] pixels, each span's sums in an array
/// that the compiler keeps in vector registers (4 AVX2 or 8 NEON
/// registers), the rest one value at a time: the same operations in the
/// same order per value as [`row_scalar`].
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
    pub(super) fn row(src: &[f32], stride: usize, k: usize, w: &[f32], bias: f32, out: &mut [f32]) {
        // SAFETY: only `Kernel::avx2` reaches this function, with the proof
        // of AVX2 and FMA.
        unsafe { row_avx2(src, stride, k, w, bias, out) }
    }

    /// [`super::row_spans`] compiled for AVX2 + FMA (`vfmadd` on 8 lanes).
    #[target_feature(enable = "avx2,fma")]
    fn row_avx2(src: &[f32], stride: usize, k: usize, w: &[f32], bias: f32, out: &mut [f32]) {
        super::row_spans(src, stride, k, w, bias, out)
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
