//! 3x3 convolution, stride 1, "same" padding, optional groups, f32 NCHW,
//! computed directly: each output value is `b[o] + sum over c, ky, kx of
//! w[o, c, ky, kx] x[c, y + ky - 1, x + kx - 1]`.
//!
//! tract runs a convolution as an explicit `Pad` copy, an im2col packing and
//! a matrix product. On the full-resolution decoder convs (16 to 64
//! channels at 128x128 and 256x256) that gets about 20 G multiply-adds/s
//! here against 35-40 on the deep, narrow ones (`lgms-edge bench
//! --profile`); this kernel measures 1.4-3.4x tract's speed on the former
//! and 1.05-1.3x on the latter (`examples/ops_timing.rs`). Here the input is copied once into zero-bordered planes
//! (the padding), and a register block of 6 output channels x 16 pixels of
//! one row accumulates the 9 taps of every input channel straight from
//! those planes: no im2col. An exact GELU that follows runs on the
//! registers before the store ([`Act`]), as in [`super::conv1x1`].
//!
//! [`replace_all`] swaps in [`Conv3x3`] for each f32 tract `Conv` with a
//! 3x3 kernel, stride and dilation 1, padding 1 on every side, constant
//! OIHW weights and bias, on a `[1, C, H, W]` input of at least
//! [`MIN_PIXELS`] pixels and 2 to [`MAX_GROUP_INPUTS`] input channels per
//! group (depthwise convs have their own op in tract; on the smallest
//! images the per-row overhead is not measured to pay).

use std::sync::Arc;

use anyhow::bail;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

pub use super::conv1x1::Act;
use super::{for_each_block, parallelism, replace_each, single_successor, SharedOut};
#[cfg(target_arch = "x86_64")]
use crate::kernels::cpu::Avx2Fma;
#[cfg(target_arch = "aarch64")]
use crate::kernels::cpu::Neon;

/// Images with fewer pixels are left to tract.
pub const MIN_PIXELS: usize = 32 * 32;
/// Groups with more input channels are left to tract (LGMSNet's deepest
/// 3x3 conv has 384).
pub const MAX_GROUP_INPUTS: usize = 512;

/// The convolution with its constants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Conv3x3 {
    /// Weights `[cout, cin / groups, 3, 3]`, row-major.
    pub weights: Arc<Tensor>,
    /// Bias per output channel (zeros when the graph had none).
    pub bias: Arc<Tensor>,
    /// Input channels, output channels, groups.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Channel groups.
    pub groups: usize,
    /// Image height and width.
    pub h: usize,
    /// Image width.
    pub w: usize,
    /// Output shape.
    pub out_shape: TVec<usize>,
    /// Applied to each value after the bias.
    pub act: Act,
}

impl Op for Conv3x3 {
    fn name(&self) -> StaticName {
        "LgmsConv3x3".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} -> {} channels in {} groups, {}x{}, {:?}",
            self.cin, self.cout, self.groups, self.h, self.w, self.act
        )])
    }
    op_as_typed_op!();
}

impl EvalOp for Conv3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (h, w) = (self.h, self.w);
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        if x.len() != self.cin * h * w {
            bail!(
                "LgmsConv3x3: input has {} values, expected {} x {h} x {w}",
                x.len(),
                self.cin
            );
        }
        let plane = (h + 2) * (w + 2);
        // The zero-bordered copy, in this thread's buffer: it grows to the
        // largest conv once, and fresh pages are not faulted in per call.
        PADDED.with_borrow_mut(|padded| -> TractResult<_> {
            if padded.len() < self.cin * plane {
                padded.resize(self.cin * plane, 0.0);
            }
            let shared = SharedOut(padded.as_mut_ptr());
            for_each_block(self.cin, |c| {
                // SAFETY: channel c owns padded values [c*plane, (c+1)*plane),
                // disjoint between channels, inside `padded`.
                let dst =
                    unsafe { std::slice::from_raw_parts_mut(shared.ptr().add(c * plane), plane) };
                pad_plane(&x[c * h * w..(c + 1) * h * w], h, w, dst);
            });
            self.convolve(&padded[..self.cin * plane])
        })
    }
}

thread_local! {
    /// [`Conv3x3::eval`]'s zero-bordered input planes.
    static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `src` (`h x w`) into `dst` (`(h + 2) x (w + 2)`) inside a border of zeros.
fn pad_plane(src: &[f32], h: usize, w: usize, dst: &mut [f32]) {
    let pw = w + 2;
    dst[..pw].fill(0.0);
    dst[(h + 1) * pw..(h + 2) * pw].fill(0.0);
    for (y, row) in src.chunks_exact(w).enumerate() {
        let d = &mut dst[(y + 1) * pw..(y + 2) * pw];
        d[0] = 0.0;
        d[1..=w].copy_from_slice(row);
        d[w + 1] = 0.0;
    }
}

impl Conv3x3 {
    /// The convolution of the zero-bordered input planes.
    fn convolve(&self, padded: &[f32]) -> TractResult<TVec<TValue>> {
        let (h, w) = (self.h, self.w);
        let plane = (h + 2) * (w + 2);
        let wt = self.weights.try_as_plain_ram()?;
        let wt = wt.as_slice::<f32>()?;
        let b = self.bias.try_as_plain_ram()?;
        let b = b.as_slice::<f32>()?;
        // SAFETY: f32 has no invalid bit patterns, and the blocks below write
        // every output value.
        let mut out = unsafe { Tensor::uninitialized::<f32>(&self.out_shape)? };
        {
            let mut view = out.try_as_plain_ram_mut()?;
            let dst = view.as_slice_mut::<f32>()?;
            let shared = SharedOut(dst.as_mut_ptr());
            let k = crate::kernels::best().conv3x3();
            let (cin_g, cout_g) = (self.cin / self.groups, self.cout / self.groups);
            let taps = cin_g * 9;
            // Blocks of whole output channels, never across a group, as
            // many per group as it takes to give every thread one.
            let per_group = parallelism().div_ceil(self.groups).max(1);
            let per = cout_g.div_ceil(per_group).max(1);
            let blocks_per_group = cout_g.div_ceil(per);
            for_each_block(self.groups * blocks_per_group, |n| {
                let (g, j) = (n / blocks_per_group, n % blocks_per_group);
                let oc0 = g * cout_g + j * per;
                let count = per.min((g + 1) * cout_g - oc0);
                // SAFETY: this block owns output channels oc0..oc0+count, whole
                // planes disjoint between blocks, inside `out`.
                let rows = unsafe {
                    std::slice::from_raw_parts_mut(shared.ptr().add(oc0 * h * w), count * h * w)
                };
                k.conv(
                    &wt[oc0 * taps..(oc0 + count) * taps],
                    &b[oc0..oc0 + count],
                    &padded[g * cin_g * plane..(g + 1) * cin_g * plane],
                    cin_g,
                    h,
                    w,
                    count,
                    self.act,
                    rows,
                );
            });
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Conv3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        if inputs[0].datum_type != f32::datum_type() {
            bail!("LgmsConv3x3 takes f32, got {:?}", inputs[0].datum_type);
        }
        Ok(tvec!(f32::fact(self.out_shape.iter().copied())))
    }
    as_op!();
}

/// Computes `n` output channels (see [`Kernel::conv`]).
type ConvFn = fn(
    w: &[f32],
    b: &[f32],
    xpad: &[f32],
    cin: usize,
    h: usize,
    width: usize,
    n: usize,
    act: Act,
    out: &mut [f32],
);

/// One implementation of the 3x3 convolution kernel: the scalar reference,
/// or a SIMD one that only a proof of its CPU features builds.
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
    name: &'static str,
    conv: ConvFn,
}

impl Kernel {
    /// The reference kernel.
    pub const SCALAR: Kernel = Kernel {
        name: "scalar",
        conv: conv_scalar,
    };

    /// The AVX2 + FMA kernel.
    #[cfg(target_arch = "x86_64")]
    pub fn avx2(_: Avx2Fma) -> Kernel {
        Kernel {
            name: "avx2",
            conv: x86::conv,
        }
    }

    /// The NEON kernel.
    #[cfg(target_arch = "aarch64")]
    pub fn neon(_: Neon) -> Kernel {
        Kernel {
            name: "neon",
            conv: neon::conv,
        }
    }

    /// `"scalar"`, `"avx2"` or `"neon"`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Computes `n` output channels into `out` (`n x h x width`), each
    /// value through `act` after the bias.
    ///
    /// `w`: `n x cin x 3 x 3`; `b`: `n`; `xpad`: `cin` planes of
    /// `(h + 2) x (width + 2)`, the input inside a border of zeros. Panics
    /// if a slice is shorter than that.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &self,
        w: &[f32],
        b: &[f32],
        xpad: &[f32],
        cin: usize,
        h: usize,
        width: usize,
        n: usize,
        act: Act,
        out: &mut [f32],
    ) {
        assert!(w.len() >= n * cin * 9 && b.len() >= n);
        assert!(xpad.len() >= cin * (h + 2) * (width + 2) && out.len() >= n * h * width);
        (self.conv)(w, b, xpad, cin, h, width, n, act, out)
    }
}

/// Output channel `r` at row `y`, pixels `px`, one at a time (the scalar
/// kernel, and the SIMD kernels' tails).
#[allow(clippy::too_many_arguments)]
fn conv_pixels(
    w: &[f32],
    b: &[f32],
    xpad: &[f32],
    cin: usize,
    h: usize,
    width: usize,
    r: usize,
    y: usize,
    px: std::ops::Range<usize>,
    act: Act,
    out: &mut [f32],
) {
    let (pw, plane) = (width + 2, (h + 2) * (width + 2));
    for q in px {
        let mut acc = b[r];
        for c in 0..cin {
            for ky in 0..3 {
                for kx in 0..3 {
                    acc += w[(r * cin + c) * 9 + ky * 3 + kx]
                        * xpad[c * plane + (y + ky) * pw + q + kx];
                }
            }
        }
        out[(r * h + y) * width + q] = act.apply(acc);
    }
}

#[allow(clippy::too_many_arguments)]
fn conv_scalar(
    w: &[f32],
    b: &[f32],
    xpad: &[f32],
    cin: usize,
    h: usize,
    width: usize,
    n: usize,
    act: Act,
    out: &mut [f32],
) {
    for r in 0..n {
        for y in 0..h {
            conv_pixels(w, b, xpad, cin, h, width, r, y, 0..width, act, out);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::gelu::x86::gelu8;
    use super::super::ROWS;
    use super::{conv_pixels, Act};

    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv(
        w: &[f32],
        b: &[f32],
        xpad: &[f32],
        cin: usize,
        h: usize,
        width: usize,
        n: usize,
        act: Act,
        out: &mut [f32],
    ) {
        let body = width / 16 * 16;
        // Row by row, every channel block: the three input rows a row
        // needs stay in cache for all of them, and the input streams
        // from memory once.
        for y in 0..h {
            for_row_blocks!(n, |r0| block(
                &w[r0 * cin * 9..],
                &b[r0..],
                xpad,
                cin,
                h,
                width,
                y,
                act,
                &mut out[r0 * h * width..]
            ));
        }
        for r in 0..n {
            for y in 0..h {
                conv_pixels(w, b, xpad, cin, h, width, r, y, body..width, act, out);
            }
        }
    }

    /// `R` channels over every full 16-pixel strip of row `y`.
    #[allow(clippy::too_many_arguments)]
    fn block<const R: usize>(
        w: &[f32],
        b: &[f32],
        xpad: &[f32],
        cin: usize,
        h: usize,
        width: usize,
        y: usize,
        act: Act,
        out: &mut [f32],
    ) {
        assert!(R <= ROWS && w.len() >= R * cin * 9 && b.len() >= R && y < h);
        assert!(xpad.len() >= cin * (h + 2) * (width + 2) && out.len() >= R * h * width);
        // SAFETY: only `Kernel::avx2` reaches `conv`, with the proof of AVX2
        // and FMA; the asserts above bound every access below.
        unsafe { block_body::<R>(w, b, xpad, cin, h, width, y, act, out) }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_body<const R: usize>(
        w: &[f32],
        b: &[f32],
        xpad: &[f32],
        cin: usize,
        h: usize,
        width: usize,
        y: usize,
        act: Act,
        out: &mut [f32],
    ) {
        let (pw, plane) = (width + 2, (h + 2) * (width + 2));
        // SAFETY: `block` asserted the sizes; a strip at pixel q reads
        // padded columns q..q + 18 <= width + 2 of rows y..y + 3 <= h + 2,
        // and writes pixels q..q + 16 <= width of row y < h of R planes.
        unsafe {
            let (wp, xp, op) = (w.as_ptr(), xpad.as_ptr(), out.as_mut_ptr());
            {
                for q in (0..width / 16 * 16).step_by(16) {
                    let mut acc = [[_mm256_setzero_ps(); 2]; R];
                    for (r, a) in acc.iter_mut().enumerate() {
                        let bv = _mm256_set1_ps(b[r]);
                        *a = [bv, bv];
                    }
                    for c in 0..cin {
                        for ky in 0..3 {
                            let row = xp.add(c * plane + (y + ky) * pw + q);
                            let wk = wp.add(c * 9 + ky * 3);
                            for kx in 0..3 {
                                let x0 = _mm256_loadu_ps(row.add(kx));
                                let x1 = _mm256_loadu_ps(row.add(kx + 8));
                                for (r, a) in acc.iter_mut().enumerate() {
                                    let wv = _mm256_broadcast_ss(&*wk.add(r * cin * 9 + kx));
                                    a[0] = _mm256_fmadd_ps(wv, x0, a[0]);
                                    a[1] = _mm256_fmadd_ps(wv, x1, a[1]);
                                }
                            }
                        }
                    }
                    for (r, a) in acc.iter().enumerate() {
                        let (mut a0, mut a1) = (a[0], a[1]);
                        if act == Act::Gelu {
                            a0 = gelu8(a0);
                            a1 = gelu8(a1);
                        }
                        let d = op.add((r * h + y) * width + q);
                        _mm256_storeu_ps(d, a0);
                        _mm256_storeu_ps(d.add(8), a1);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    use super::super::gelu::neon::gelu4;
    use super::super::ROWS;
    use super::{conv_pixels, Act};

    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv(
        w: &[f32],
        b: &[f32],
        xpad: &[f32],
        cin: usize,
        h: usize,
        width: usize,
        n: usize,
        act: Act,
        out: &mut [f32],
    ) {
        let body = width / 16 * 16;
        // Row by row, every channel block: the three input rows a row
        // needs stay in cache for all of them, and the input streams
        // from memory once.
        for y in 0..h {
            for_row_blocks!(n, |r0| block(
                &w[r0 * cin * 9..],
                &b[r0..],
                xpad,
                cin,
                h,
                width,
                y,
                act,
                &mut out[r0 * h * width..]
            ));
        }
        for r in 0..n {
            for y in 0..h {
                conv_pixels(w, b, xpad, cin, h, width, r, y, body..width, act, out);
            }
        }
    }

    /// `R` channels over every full 16-pixel strip of row `y`.
    #[allow(clippy::too_many_arguments)]
    fn block<const R: usize>(
        w: &[f32],
        b: &[f32],
        xpad: &[f32],
        cin: usize,
        h: usize,
        width: usize,
        y: usize,
        act: Act,
        out: &mut [f32],
    ) {
        assert!(R <= ROWS && w.len() >= R * cin * 9 && b.len() >= R && y < h);
        assert!(xpad.len() >= cin * (h + 2) * (width + 2) && out.len() >= R * h * width);
        // SAFETY: only `Kernel::neon` reaches `conv`, with the proof of
        // NEON; the asserts above bound every access below.
        unsafe { block_body::<R>(w, b, xpad, cin, h, width, y, act, out) }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "neon")]
    unsafe fn block_body<const R: usize>(
        w: &[f32],
        b: &[f32],
        xpad: &[f32],
        cin: usize,
        h: usize,
        width: usize,
        y: usize,
        act: Act,
        out: &mut [f32],
    ) {
        let (pw, plane) = (width + 2, (h + 2) * (width + 2));
        // SAFETY: `block` asserted the sizes; a strip at pixel q reads
        // padded columns q..q + 18 <= width + 2 of rows y..y + 3 <= h + 2,
        // and writes pixels q..q + 16 <= width of row y < h of R planes.
        unsafe {
            let (wp, xp, op) = (w.as_ptr(), xpad.as_ptr(), out.as_mut_ptr());
            {
                for q in (0..width / 16 * 16).step_by(16) {
                    // R channels x 16 pixels (4 vectors each): up to 24 of
                    // the 32 registers.
                    let mut acc = [[vdupq_n_f32(0.0); 4]; R];
                    for (r, a) in acc.iter_mut().enumerate() {
                        *a = [vdupq_n_f32(b[r]); 4];
                    }
                    for c in 0..cin {
                        for ky in 0..3 {
                            let row = xp.add(c * plane + (y + ky) * pw + q);
                            let wk = wp.add(c * 9 + ky * 3);
                            for kx in 0..3 {
                                let xv = [
                                    vld1q_f32(row.add(kx)),
                                    vld1q_f32(row.add(kx + 4)),
                                    vld1q_f32(row.add(kx + 8)),
                                    vld1q_f32(row.add(kx + 12)),
                                ];
                                for (r, a) in acc.iter_mut().enumerate() {
                                    let wv = *wk.add(r * cin * 9 + kx);
                                    for (av, &x) in a.iter_mut().zip(&xv) {
                                        *av = vfmaq_n_f32(*av, x, wv);
                                    }
                                }
                            }
                        }
                    }
                    for (r, a) in acc.iter().enumerate() {
                        let d = op.add((r * h + y) * width + q);
                        for (v, &av) in a.iter().enumerate() {
                            let av = if act == Act::Gelu { gelu4(av) } else { av };
                            vst1q_f32(d.add(4 * v), av);
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Pattern matching
// ---------------------------------------------------------------------------

fn const_f32(model: &TypedModel, outlet: OutletId) -> Option<Arc<Tensor>> {
    let c = model.node(outlet.node).op_as::<Const>()?;
    (c.val().datum_type() == f32::datum_type()).then(|| c.val().clone())
}

fn match_at(model: &TypedModel, id: usize) -> Option<(Conv3x3, OutletId, usize)> {
    let node = model.node(id);
    let conv = node.op_as::<Conv>()?;
    let ps = &conv.pool_spec;
    let ones = |v: &Option<TVec<usize>>| v.as_ref().is_none_or(|v| v.iter().all(|&s| s == 1));
    let pad_one = match &ps.padding {
        PaddingSpec::Explicit(b, a) => b[..] == [1, 1] && a[..] == [1, 1],
        PaddingSpec::SameUpper | PaddingSpec::SameLower => true,
        _ => false,
    };
    if conv.q_params.is_some()
        || conv.kernel_fmt != KernelFormat::OIHW
        || ps.data_format != DataFormat::NCHW
        || ps.kernel_shape[..] != [3, 3]
        || !ones(&ps.strides)
        || !ones(&ps.dilations)
        || !pad_one
        || !(2..=3).contains(&node.inputs.len())
    {
        return None;
    }
    let x_fact = model.outlet_fact(node.inputs[0]).ok()?;
    let (cin, h, w) = match x_fact.shape.as_concrete()? {
        &[1, c, h, w] => (c, h, w),
        _ => return None,
    };
    let g = conv.group;
    let weights = const_f32(model, node.inputs[1])?;
    let cout = *weights.shape().first()?;
    if x_fact.datum_type != f32::datum_type()
        || g == 0
        || cin % g != 0
        || cout % g != 0
        || weights.shape() != [cout, cin / g, 3, 3]
        || h * w < MIN_PIXELS
        || cin / g > MAX_GROUP_INPUTS
        || cin / g < 2
    {
        return None;
    }
    let bias = match node.inputs.get(2) {
        Some(&o) => {
            let b = const_f32(model, o)?;
            match b.len() {
                n if n == cout => b.into_tensor().into_shape(&[cout]).ok()?,
                1 => {
                    let v = b.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?[0];
                    Tensor::from_shape(&[cout], &vec![v; cout]).ok()?
                }
                _ => return None,
            }
        }
        None => Tensor::zero::<f32>(&[cout]).ok()?,
    };
    let out_shape: TVec<usize> = model
        .outlet_fact(OutletId::new(id, 0))
        .ok()?
        .shape
        .as_concrete()?
        .into();
    if out_shape[..] != [1, cout, h, w] {
        return None;
    }
    let mut last = id;
    let mut act = Act::Linear;
    if let Some(s) = single_successor(model, id).filter(|&s| super::gelu::is_gelu_exact(model, s)) {
        act = Act::Gelu;
        last = s;
    }
    let op = Conv3x3 {
        weights: Arc::new(weights.into_tensor()),
        bias: Arc::new(bias),
        cin,
        cout,
        groups: g,
        h,
        w,
        out_shape,
        act,
    };
    Some((op, node.inputs[0], last))
}

/// Replaces every matching 3x3 convolution; returns how many.
pub fn replace_all(model: &mut TypedModel) -> TractResult<usize> {
    replace_each(model, "lgms_conv3x3", match_at)
}
