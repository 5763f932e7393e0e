//! 1x1 convolution (+ bias) over a wide NCHW image: `out[o, p] = b[o] +
//! sum_i w[o, i] x[i, p]` with the pixels `p` contiguous.
//!
//! LGMSNet's decoder ends in 1x1 convs at 128x128 and 256x256 with 16 to
//! 128 channels: few output channels, 16k-65k pixels. tract runs them as a
//! general matrix product that packs the image into panels first, and got
//! 5-11 GFLOP/s on them here (`lgms-edge bench --profile`), against 35-50
//! on the narrow, deep convs of the encoder. In NCHW the product needs no
//! im2col: this kernel walks the pixels in tiles, copies each tile's input
//! once into strips of 16 pixels that the register block reads in order
//! (read in place, the channel rows of a strip alias in L1), and keeps a
//! 6-output-channel x 16-pixel block in registers, broadcasting each weight.
//! The exact GELU that follows the decoder's 1x1 convs runs on those
//! registers before the store ([`Act`]).
//!
//! [`replace_all`] matches, in the decluttered graph, an `EinSum` of the
//! image with a constant `[O, I]` matrix whose input and output are
//! `[.., I, pixels..]` and `[.., O, pixels..]` (how tract declutters a 1x1
//! ONNX Conv), plus the bias `Add` that follows when its constant varies
//! only along `O`, and then a `GeluExact`. Only images of at least [`MIN_PIXELS`] pixels: below
//! that tract's own kernels are already efficient.

use std::ops::Range;
use std::sync::Arc;

use anyhow::bail;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::{for_each_block, parallelism, single_successor, SharedOut};
#[cfg(target_arch = "x86_64")]
use crate::kernels::cpu::Avx2Fma;
#[cfg(target_arch = "aarch64")]
use crate::kernels::cpu::Neon;

/// Images with fewer pixels are left to tract.
pub const MIN_PIXELS: usize = 128 * 128;

/// Pixels per tile for `i` input channels: one packed tile of input
/// (`i x tile` floats, about 128 KiB) stays in L2 while every output
/// channel of the block streams it in order (a quarter of that measured
/// no faster, and long runs per input row let the prefetcher follow the
/// packing's reads). A multiple of 16 (the SIMD kernels' pixel block).
fn tile(i: usize) -> usize {
    (32768 / i.max(1) / 16 * 16).clamp(64, 4096)
}

/// `[.., I, pixels] -> [.., O, pixels]` by a constant matrix, plus bias.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Conv1x1 {
    /// Weights, `O x I` row-major.
    pub weights: Arc<Tensor>,
    /// Bias per output channel (zeros when the graph had none).
    pub bias: Arc<Tensor>,
    /// Input channels.
    pub i: usize,
    /// Output channels.
    pub o: usize,
    /// Pixels.
    pub p: usize,
    /// Output shape.
    pub out_shape: TVec<usize>,
    /// Applied to each value after the bias.
    pub act: Act,
}

impl Op for Conv1x1 {
    fn name(&self) -> StaticName {
        "LgmsConv1x1".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} -> {} channels, {} pixels, {:?}",
            self.i, self.o, self.p, self.act
        )])
    }
    op_as_typed_op!();
}

impl EvalOp for Conv1x1 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        if x.len() != self.i * self.p {
            bail!(
                "LgmsConv1x1: input has {} values, expected {} x {}",
                x.len(),
                self.i,
                self.p
            );
        }
        let w = self.weights.try_as_plain_ram()?;
        let w = w.as_slice::<f32>()?;
        let b = self.bias.try_as_plain_ram()?;
        let b = b.as_slice::<f32>()?;
        // SAFETY: f32 has no invalid bit patterns, and the blocks below
        // write every value (all channels at every pixel).
        let mut out = unsafe { Tensor::uninitialized::<f32>(&self.out_shape)? };
        {
            let mut view = out.try_as_plain_ram_mut()?;
            let dst = view.as_slice_mut::<f32>()?;
            let k = crate::kernels::best().conv1x1();
            let (i, o, p) = (self.i, self.o, self.p);
            // Blocks of pixels, every channel in each: a thread packs and
            // reads only its own pixels of the input, once for all the
            // channels (with blocks of channels each thread would pack and
            // read the whole input).
            let tl = tile(i);
            let per = p.div_ceil(4 * parallelism()).div_ceil(tl).max(1) * tl;
            let shared = SharedOut(dst.as_mut_ptr());
            for_each_block(p.div_ceil(per), |n| {
                let px = n * per..((n + 1) * per).min(p);
                // SAFETY: `dst` holds the o rows of p values, and block n
                // alone writes pixels `px` of them.
                unsafe { k.conv_pixels(w, b, x, i, p, 0, o, self.act, px, shared.ptr()) };
            });
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Conv1x1 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        if inputs[0].datum_type != f32::datum_type() {
            bail!("LgmsConv1x1 takes f32, got {:?}", inputs[0].datum_type);
        }
        Ok(tvec!(f32::fact(self.out_shape.iter().copied())))
    }
    as_op!();
}

/// What the kernels apply to each output value after the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Act {
    /// Nothing: the conv + bias.
    #[default]
    Linear,
    /// Exact GELU ([`super::gelu::gelu`]), folded from the `GeluExact` that
    /// follows the conv.
    Gelu,
}

impl Act {
    /// The activation of one value (the scalar kernels').
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Act::Linear => v,
            Act::Gelu => super::gelu::gelu(v),
        }
    }
}

/// Computes output channels `oc0..oc0+n` at pixels `px` (see
/// [`Kernel::conv_pixels`]; the same safety contract).
#[allow(clippy::too_many_arguments)]
type ConvFn = unsafe fn(
    w: &[f32],
    b: &[f32],
    x: &[f32],
    i: usize,
    p: usize,
    oc0: usize,
    n: usize,
    act: Act,
    px: Range<usize>,
    out: *mut f32,
);

/// One implementation of the 1x1 convolution kernel: the scalar reference,
/// or a SIMD one that only a proof of its CPU features builds. The tables
/// of [`crate::kernels`] hold one each.
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

    /// Computes output channels `oc0..oc0+n` into `rows` (`n x p`), each
    /// value through `act` after the bias, walking the pixels in tiles of
    /// [`tile`]`(i)`.
    ///
    /// `w`: `o x i` (all channels); `b`: `o`; `x`: `i x p`. Panics if a
    /// slice is shorter than that.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &self,
        w: &[f32],
        b: &[f32],
        x: &[f32],
        i: usize,
        p: usize,
        oc0: usize,
        n: usize,
        act: Act,
        rows: &mut [f32],
    ) {
        assert!(
            rows.len() >= n * p,
            "1x1 conv: {} output values for {n} x {p}",
            rows.len()
        );
        // SAFETY: `rows` holds the n rows of p values (asserted), and the
        // exclusive borrow keeps every other writer out.
        unsafe { self.conv_pixels(w, b, x, i, p, oc0, n, act, 0..p, rows.as_mut_ptr()) }
    }

    /// [`Kernel::conv`] at pixels `px` only, into the rows at `out` (row
    /// `r` at `out + r * p`): disjoint pixel ranges of the same rows can
    /// run on different threads. Panics if `w`, `b` or `x` is too short
    /// or `px` ends past `p`.
    ///
    /// # Safety
    /// `out` must be valid for writes of `n` rows of `p` values, and no
    /// other thread may read or write pixels `px` of those rows meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn conv_pixels(
        &self,
        w: &[f32],
        b: &[f32],
        x: &[f32],
        i: usize,
        p: usize,
        oc0: usize,
        n: usize,
        act: Act,
        px: Range<usize>,
        out: *mut f32,
    ) {
        check(w, b, x, i, p, oc0, n, &px);
        // SAFETY: the caller's guarantee on `out`; the inputs checked.
        unsafe { (self.conv)(w, b, x, i, p, oc0, n, act, px, out) }
    }
}

/// The reference kernel.
///
/// # Safety
/// As for [`Kernel::conv_pixels`].
#[allow(clippy::too_many_arguments)]
unsafe fn conv_scalar(
    w: &[f32],
    b: &[f32],
    x: &[f32],
    i: usize,
    p: usize,
    oc0: usize,
    n: usize,
    act: Act,
    px: Range<usize>,
    out: *mut f32,
) {
    for r in 0..n {
        // SAFETY: row r of the caller's rows.
        unsafe { conv_row(w, b, x, i, p, oc0 + r, px.clone(), act, out.add(r * p)) };
    }
}

/// Output channel `oc` at pixels `px` into its row, one pixel at a time
/// (the scalar kernel, and the SIMD kernels' tails).
///
/// # Safety
/// `row` must be valid for writes at pixels `px`, which no other thread
/// touches meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn conv_row(
    w: &[f32],
    b: &[f32],
    x: &[f32],
    i: usize,
    p: usize,
    oc: usize,
    px: Range<usize>,
    act: Act,
    row: *mut f32,
) {
    for q in px {
        let mut acc = b[oc];
        for c in 0..i {
            acc += w[oc * i + c] * x[c * p + q];
        }
        // SAFETY: the caller's guarantee.
        unsafe { *row.add(q) = act.apply(acc) };
    }
}

#[allow(clippy::too_many_arguments)]
fn check(
    w: &[f32],
    b: &[f32],
    x: &[f32],
    i: usize,
    p: usize,
    oc0: usize,
    n: usize,
    px: &Range<usize>,
) {
    assert!(w.len() >= (oc0 + n) * i && b.len() >= oc0 + n);
    assert!(x.len() >= i * p && px.start <= px.end && px.end <= p);
}

/// Copies the full 16-pixel strips of the tile `t0..t0 + 16 * strips` of
/// `x` (`i x p`) into `packed` as `[strip][channel][16]`: the register
/// block then reads its input in order. Read in place, the `i` rows of a
/// strip lie `4 p` bytes apart, a multiple of 4 KiB at LGMSNet's sizes, so
/// they all fall in one L1 set and evict each other between the channel
/// blocks.
fn pack_tile(x: &[f32], i: usize, p: usize, t0: usize, strips: usize, packed: &mut [f32]) {
    for c in 0..i {
        let src = &x[c * p + t0..c * p + t0 + 16 * strips];
        for (s, chunk) in src.chunks_exact(16).enumerate() {
            packed[(s * i + c) * 16..(s * i + c + 1) * 16].copy_from_slice(chunk);
        }
    }
}

/// The SIMD kernels' walk over pixels `px`: tiles of pixels, each packed
/// once into this thread's [`PACKED`] buffer, then every block of channels
/// over its strips (`block`), then the pixel tail in scalar.
///
/// # Safety
/// As for [`Kernel::conv_pixels`]; `block` gets the tile's strips and
/// first pixel and must write only those pixels of the rows at `out`.
#[allow(clippy::too_many_arguments)]
unsafe fn tiled(
    w: &[f32],
    b: &[f32],
    x: &[f32],
    i: usize,
    p: usize,
    oc0: usize,
    n: usize,
    act: Act,
    px: Range<usize>,
    out: *mut f32,
    mut block: impl FnMut(&[f32], usize, usize, usize),
) {
    let tl = tile(i);
    PACKED.with_borrow_mut(|packed| {
        if packed.len() < i * tl {
            packed.resize(i * tl, 0.0);
        }
        for t0 in px.clone().step_by(tl) {
            let end = (t0 + tl).min(px.end);
            let strips = (end - t0) / 16;
            pack_tile(x, i, p, t0, strips, packed);
            // (packed tile, strips, first pixel, n)
            block(packed, strips, t0, n);
            for r in 0..n {
                // SAFETY: row r at the tile's tail pixels (the caller's rows).
                unsafe {
                    conv_row(
                        w,
                        b,
                        x,
                        i,
                        p,
                        oc0 + r,
                        t0 + 16 * strips..end,
                        act,
                        out.add(r * p),
                    )
                };
            }
        }
    });
}

thread_local! {
    /// [`tiled`]'s packed tile, per pool thread: grown to the largest tile
    /// once, not allocated per call.
    static PACKED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::super::gelu::x86::gelu8;
    use super::super::ROWS;
    use super::{tiled, Act};

    /// # Safety
    /// As for [`super::Kernel::conv_pixels`].
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn conv(
        w: &[f32],
        b: &[f32],
        x: &[f32],
        i: usize,
        p: usize,
        oc0: usize,
        n: usize,
        act: Act,
        px: Range<usize>,
        out: *mut f32,
    ) {
        // SAFETY: the caller's rows; each block writes its strips of rows
        // r0.. at the tile's pixels.
        unsafe {
            tiled(
                w,
                b,
                x,
                i,
                p,
                oc0,
                n,
                act,
                px,
                out,
                |packed, strips, t0, n| {
                    for_row_blocks!(n, |r0| block_avx2(
                        &w[(oc0 + r0) * i..],
                        &b[oc0 + r0..],
                        i,
                        packed,
                        strips,
                        out.add(r0 * p + t0),
                        p,
                        act
                    ));
                },
            )
        };
    }

    /// `R` channels over every strip of the packed tile.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `16 * strips` values in each of
    /// `R` rows `p` apart, which no other thread touches meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn block_avx2<const R: usize>(
        w: &[f32],
        b: &[f32],
        i: usize,
        packed: &[f32],
        strips: usize,
        dst: *mut f32,
        p: usize,
        act: Act,
    ) {
        assert!(R <= ROWS && w.len() >= R * i && b.len() >= R);
        assert!(packed.len() >= strips * i * 16);
        // SAFETY: only `Kernel::avx2` reaches `conv`, with the proof of AVX2
        // and FMA; the asserts above bound the reads, the caller the writes.
        unsafe { block_body::<R>(w, b, i, packed, strips, dst, p, act) }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_body<const R: usize>(
        w: &[f32],
        b: &[f32],
        i: usize,
        packed: &[f32],
        strips: usize,
        dst: *mut f32,
        p: usize,
        act: Act,
    ) {
        // SAFETY: `block_avx2` asserted that `w` holds `R x i` weights, `b`
        // `R` biases and `packed` `strips x i x 16` values; the caller, that
        // `dst` reaches pixel `16 * strips` of row `R - 1`.
        unsafe {
            let wp = w.as_ptr();
            for s in 0..strips {
                let xs = packed.as_ptr().add(s * i * 16);
                let mut acc = [[_mm256_setzero_ps(); 2]; R];
                for (r, a) in acc.iter_mut().enumerate() {
                    let bv = _mm256_set1_ps(b[r]);
                    *a = [bv, bv];
                }
                for c in 0..i {
                    let x0 = _mm256_loadu_ps(xs.add(c * 16));
                    let x1 = _mm256_loadu_ps(xs.add(c * 16 + 8));
                    for (r, a) in acc.iter_mut().enumerate() {
                        let wv = _mm256_broadcast_ss(&*wp.add(r * i + c));
                        a[0] = _mm256_fmadd_ps(wv, x0, a[0]);
                        a[1] = _mm256_fmadd_ps(wv, x1, a[1]);
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    let (mut a0, mut a1) = (a[0], a[1]);
                    if act == Act::Gelu {
                        a0 = gelu8(a0);
                        a1 = gelu8(a1);
                    }
                    let d = dst.add(r * p + s * 16);
                    _mm256_storeu_ps(d, a0);
                    _mm256_storeu_ps(d.add(8), a1);
                }
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;
    use std::ops::Range;

    use super::super::gelu::neon::gelu4;
    use super::super::ROWS;
    use super::{tiled, Act};

    /// # Safety
    /// As for [`super::Kernel::conv_pixels`].
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn conv(
        w: &[f32],
        b: &[f32],
        x: &[f32],
        i: usize,
        p: usize,
        oc0: usize,
        n: usize,
        act: Act,
        px: Range<usize>,
        out: *mut f32,
    ) {
        // SAFETY: the caller's rows; each block writes its strips of rows
        // r0.. at the tile's pixels.
        unsafe {
            tiled(
                w,
                b,
                x,
                i,
                p,
                oc0,
                n,
                act,
                px,
                out,
                |packed, strips, t0, n| {
                    for_row_blocks!(n, |r0| block_neon(
                        &w[(oc0 + r0) * i..],
                        &b[oc0 + r0..],
                        i,
                        packed,
                        strips,
                        out.add(r0 * p + t0),
                        p,
                        act
                    ));
                },
            )
        };
    }

    /// `R` channels over every strip of the packed tile.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `16 * strips` values in each of
    /// `R` rows `p` apart, which no other thread touches meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn block_neon<const R: usize>(
        w: &[f32],
        b: &[f32],
        i: usize,
        packed: &[f32],
        strips: usize,
        dst: *mut f32,
        p: usize,
        act: Act,
    ) {
        assert!(R <= ROWS && w.len() >= R * i && b.len() >= R);
        assert!(packed.len() >= strips * i * 16);
        // SAFETY: only `Kernel::neon` reaches `conv`, with the proof of
        // NEON; the asserts above bound the reads, the caller the writes.
        unsafe { block_body::<R>(w, b, i, packed, strips, dst, p, act) }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "neon")]
    unsafe fn block_body<const R: usize>(
        w: &[f32],
        b: &[f32],
        i: usize,
        packed: &[f32],
        strips: usize,
        dst: *mut f32,
        p: usize,
        act: Act,
    ) {
        // SAFETY: `block_neon` asserted that `w` holds `R x i` weights, `b`
        // `R` biases and `packed` `strips x i x 16` values; the caller, that
        // `dst` reaches pixel `16 * strips` of row `R - 1`.
        unsafe {
            for s in 0..strips {
                let xs = packed.as_ptr().add(s * i * 16);
                // R channels x 16 pixels (4 vectors each): up to 24 of the
                // 32 registers.
                let mut acc = [[vdupq_n_f32(0.0); 4]; R];
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = [vdupq_n_f32(b[r]); 4];
                }
                for c in 0..i {
                    let row = xs.add(c * 16);
                    let xv = [
                        vld1q_f32(row),
                        vld1q_f32(row.add(4)),
                        vld1q_f32(row.add(8)),
                        vld1q_f32(row.add(12)),
                    ];
                    for (r, a) in acc.iter_mut().enumerate() {
                        let wv = w[r * i + c];
                        for v in 0..4 {
                            a[v] = vfmaq_n_f32(a[v], xv[v], wv);
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    let d = dst.add(r * p + s * 16);
                    for (v, &av) in a.iter().enumerate() {
                        let av = if act == Act::Gelu { gelu4(av) } else { av };
                        vst1q_f32(d.add(4 * v), av);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Pattern matching
// ---------------------------------------------------------------------------

fn const_of(model: &TypedModel, outlet: OutletId) -> Option<Arc<Tensor>> {
    let c = model.node(outlet.node).op_as::<Const>()?;
    (c.val().datum_type() == f32::datum_type()).then(|| c.val().clone())
}

struct Found {
    op: Conv1x1,
    x: OutletId,
    /// The node whose output the op replaces (the EinSum, or its bias Add).
    last: usize,
}

fn match_at(model: &TypedModel, id: usize) -> Option<Found> {
    let node = model.node(id);
    let es = node.op_as::<EinSum>()?;
    if es.q_params.is_some() || es.operating_dt != f32::datum_type() || node.inputs.len() != 2 {
        return None;
    }
    // One operand is the constant [O, I] matrix, the other the image.
    let (w_slot, w) = (0..2).find_map(|s| const_of(model, node.inputs[s]).map(|t| (s, t)))?;
    let x_slot = 1 - w_slot;
    let x_fact = model.outlet_fact(node.inputs[x_slot]).ok()?;
    let xs: TVec<usize> = x_fact.shape.as_concrete()?.into();
    let ys: TVec<usize> = model
        .outlet_fact(OutletId::new(id, 0))
        .ok()?
        .shape
        .as_concrete()?
        .into();
    if w.rank() != 2 || x_fact.datum_type != f32::datum_type() {
        return None;
    }
    let axes: Vec<_> = es.axes.iter_all_axes().collect();
    let pos =
        |a: &&tract_onnx::tract_core::axes::Axis, slot: usize| a.inputs[slot].first().copied();
    // W's two axes: I (contracted, in x) and O (in the output, not in x).
    let w_i = axes
        .iter()
        .find(|a| pos(a, w_slot).is_some() && a.outputs[0].is_empty())?;
    let w_o = axes
        .iter()
        .find(|a| pos(a, w_slot).is_some() && !a.outputs[0].is_empty())?;
    let (wi_pos, wo_pos) = (pos(w_i, w_slot)?, pos(w_o, w_slot)?);
    let (i, o) = (w.shape()[wi_pos], w.shape()[wo_pos]);
    let xi = pos(w_i, x_slot)?;
    if pos(w_o, x_slot).is_some() || xs[xi] != i {
        return None;
    }
    // x = [size-1 axes.., I, pixel axes..] and y = [size-1.., O, pixel axes..],
    // pixel axes in the same order: both are [channels, pixels] in memory.
    if xs[..xi].iter().any(|&d| d != 1) {
        return None;
    }
    let yo = w_o.outputs[0][0];
    if ys[..yo].iter().any(|&d| d != 1) || ys[yo] != o {
        return None;
    }
    let x_pixels: Vec<usize> = (xi + 1..xs.len()).collect();
    let y_pixels: Vec<usize> = (yo + 1..ys.len()).collect();
    if x_pixels.len() != y_pixels.len() {
        return None;
    }
    for (&xa, &ya) in x_pixels.iter().zip(&y_pixels) {
        let a = axes.iter().find(|a| pos(a, x_slot) == Some(xa))?;
        if a.outputs[0].first() != Some(&ya) || xs[xa] != ys[ya] || pos(a, w_slot).is_some() {
            return None;
        }
    }
    // Axes of x before I (size 1) may be summed away or kept: either way
    // the data is the same [I, P] block.
    let p: usize = x_pixels.iter().map(|&a| xs[a]).product();
    if p < MIN_PIXELS {
        return None;
    }
    // The weights as O x I row-major.
    let w = if wo_pos == 0 {
        w
    } else {
        Arc::new(w.as_ref().clone().permute_axes(&[1, 0]).ok()?)
    };
    // A following bias Add with a constant that varies along O only.
    let mut last = id;
    let mut bias = Tensor::zero::<f32>(&[o]).ok()?;
    if let Some(add_id) = single_successor(model, id) {
        let add = model.node(add_id);
        if add
            .op_as::<TypedBinOp>()
            .is_some_and(|b| b.0.name() == "Add")
        {
            let other = add.inputs[1 - node.outputs[0].successors[0].slot];
            if let Some(c) = const_of(model, other) {
                let cs = c.shape();
                let along_o = cs.len() == ys.len()
                    && cs
                        .iter()
                        .enumerate()
                        .all(|(ax, &d)| d == 1 || (ax == yo && d == o))
                    || cs.len() == ys.len() - yo
                        && cs
                            .iter()
                            .enumerate()
                            .all(|(ax, &d)| d == 1 || (ax == 0 && d == o));
                let add_shape = model.outlet_fact(OutletId::new(add_id, 0)).ok()?;
                if along_o && add_shape.shape.as_concrete()? == ys.as_slice() {
                    let flat = c.clone().into_tensor().into_shape(&[c.len()]).ok()?;
                    bias = if c.len() == o {
                        flat
                    } else {
                        // A scalar bias, broadcast to every channel.
                        let v = flat.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?[0];
                        Tensor::from_shape(&[o], &vec![v; o]).ok()?
                    };
                    last = add_id;
                }
            }
        }
    }
    // A following exact GELU runs in the kernel's epilogue, while the
    // values are still in registers.
    let mut act = Act::Linear;
    if let Some(g) = single_successor(model, last).filter(|&g| super::gelu::is_gelu_exact(model, g))
    {
        act = Act::Gelu;
        last = g;
    }
    Some(Found {
        op: Conv1x1 {
            weights: Arc::new(w.as_ref().clone().into_shape(&[o, i]).ok()?),
            bias: Arc::new(bias),
            i,
            o,
            p,
            out_shape: ys,
            act,
        },
        x: node.inputs[x_slot],
        last,
    })
}

/// Replaces every wide 1x1 convolution; returns how many.
pub fn replace_all(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    let candidates: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<EinSum>())
        .map(|n| n.id)
        .collect();
    for id in candidates {
        let Some(found) = match_at(model, id) else {
            continue;
        };
        let name = format!("{}.lgms_conv1x1", model.node(id).name);
        let last = OutletId::new(found.last, 0);
        super::swap_in(model, &[found.x], last, name, found.op)?;
        replaced += 1;
    }
    Ok(replaced)
}
