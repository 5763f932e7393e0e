//! int8 convolution: each `QuantizeLinear -> QLinearConv -> DequantizeLinear`
//! of a quantised model fused into one operator, f32 in and f32 out, with
//! the arithmetic in int8 (issue 6).
//!
//! tract 0.23.9 runs a quantised conv as im2col into i8 panels, an i32 matrix
//! product and separate passes for zero points, scaling, rounding and
//! clamping. Here its int8 matrix kernel for AVX2 (`avx2_mmm_i32_8x8`) widens
//! every byte to i16 and multiplies one product per lane: `lgms-edge bench
//! --profile` on the int8 model measured 0.4 G multiply-adds/s, 20-45x slower
//! than tract's f32 convs, and on an AVX-512 VNNI Xeon the glue passes still
//! made int8 4x slower than f32.
//!
//! This operator:
//! - quantises the f32 input once into a zero-point-padded buffer laid out
//!   `[C/4][H+2p][W'][4]` bytes: four input channels of one pixel side by
//!   side, so 8 pixels x 4 channels are one 32-byte load, and every 3x3 tap
//!   is a plain offset into it (no im2col);
//! - multiplies by int8 weights packed `[O/4][tap][C/4][4 out][4 in]`:
//!   4 output channels x 16 pixels per kernel call, accumulated in i32 —
//!   AVX2 `vpmaddubsw` + `vpmaddwd` (u8 x i8, 32 products in 2 instructions,
//!   where tract's f32 FMA does 8 in one), AVX-512 VNNI / AVX-VNNI
//!   `vpdpbusd` (32 in one), NEON `sdot` (16 products in one
//!   instruction, Cortex-A76/A78 and later; the activations are stored
//!   minus 128 so that both operands are signed);
//! - requantises exactly as ONNX says (`round_ties_even(acc * x_scale *
//!   w_scale / y_scale) + y_zero_point`, clamped to u8) and dequantises in
//!   the same pass, straight into the f32 output.
//!
//! `vpmaddubsw` adds two u8 x i8 products into one i16 lane, saturating:
//! exact only when `|w0| + |w1| <= 128` for each pair of adjacent input
//! channels, which 7-bit weights guarantee (`lgms_models/quantize.py` quantises
//! with onnxruntime's `reduce_range`, range -64..63). A conv whose weights do
//! not fit is left to tract on AVX2 (the NEON kernel has no such limit).
//!
//! [`replace_all`] matches, in the decluttered graph, tract's quantised
//! `Conv` (u8 activations, i8 weights with zero point 0, per-tensor or
//! per-channel scales, group 1, stride 1, dilation 1, odd square kernel with
//! "same" padding), or the quantised `EinSum` tract makes of a 1x1 conv,
//! whose input comes from a `QuantizeLinearU8` and whose only consumer is a
//! `DequantizeLinearF32`. tract's declutter folds `DequantizeLinear -> SiLU
//! -> QuantizeLinear` and the like into a u8 `LookupTable`; one such table
//! on either side is applied inside the operator. Anything else stays with
//! tract.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use anyhow::bail;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearU8};
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::{for_each_block, simd_allowed, SharedOut};

/// Output channels per kernel call.
pub const CO: usize = 4;
/// Pixels per kernel call (a segment of one output row).
pub const PX: usize = 16;

/// The kernels' accumulator block: `acc[r * PX + j]` for output channel
/// `r` of the block and pixel `j` of the segment.
pub type Acc = [i32; CO * PX];

/// One kernel: accumulates a 4-channel x 16-pixel block.
///
/// `x`: the quantised input buffer ([`Plan::buf_len`] bytes); `base`: byte
/// offset of the block's first pixel in the first channel plane, tap (0, 0);
/// `taps`: byte offset of each kernel tap; `plane`: bytes per 4-channel
/// plane; `w`: this output-channel block's packed weights, `taps.len() *
/// cin4 * 16` bytes.
pub type TileFn =
    fn(x: &[u8], base: usize, taps: &[usize], plane: usize, cin4: usize, w: &[i8], acc: &mut Acc);

/// A kernel and how it wants the activations stored.
#[derive(Clone, Copy)]
pub struct Kernel {
    /// "scalar", "avx2", "avx-vnni" or "neon-dotprod".
    pub name: &'static str,
    /// Activations stored as `q - 128` (i8) instead of `q` (u8).
    pub signed: bool,
    /// Whether it needs `|w0| + |w1| <= 128` for adjacent input channels.
    pub needs_7bit: bool,
    /// Whether the CPU has AVX2, so that the plain-Rust quantisation and
    /// requantisation loops around the kernel may be compiled for it.
    pub avx2: bool,
    /// The block function.
    pub tile: TileFn,
}

/// The reference kernel (u8 activations).
pub const SCALAR: Kernel = Kernel {
    name: "scalar",
    signed: false,
    needs_7bit: false,
    avx2: false,
    tile: tile_scalar,
};

/// The kernel this process uses.
pub fn kernel() -> Kernel {
    if simd_allowed() {
        if let Some(k) = simd_kernel() {
            return k;
        }
    }
    SCALAR
}

/// This CPU's SIMD kernel, if the build has one.
pub fn simd_kernel() -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    if x86::has_vnni() {
        return Some(Kernel {
            name: "avx-vnni",
            signed: false,
            needs_7bit: false,
            avx2: true,
            tile: x86::tile_vnni,
        });
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        return Some(Kernel {
            name: "avx2",
            signed: false,
            needs_7bit: true,
            avx2: true,
            tile: x86::tile,
        });
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("dotprod") {
        return Some(Kernel {
            name: "neon-dotprod",
            signed: true,
            needs_7bit: false,
            avx2: false,
            tile: neon::tile,
        });
    }
    None
}

/// Everything the operator needs, prepared once at load.
#[derive(Debug)]
pub struct Plan {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Channel groups (1: a dense conv).
    pub groups: usize,
    /// Kernel size (odd; padding `k / 2` on every side).
    pub k: usize,
    /// Image height.
    pub h: usize,
    /// Image width.
    pub w: usize,
    /// Input zero point (of the quantisation the conv sees).
    pub x_zp: i32,
    /// f32 input quantised here, `q = round_ties_even(x * inv_scale) + zp`:
    /// `Some((inv_scale, zp))`; `None` when the input is already u8.
    pub quantize_input: Option<(f32, i32)>,
    /// Table applied to the quantised input (tract's fused element-wise op).
    pub lut_in: Option<Vec<u8>>,
    /// Table applied to the requantised output.
    pub lut_out: Option<Vec<u8>>,
    /// Weights `[cout/4][k*k][cin/4][4 out][4 in]`, zero-padded.
    pub weights: Vec<i8>,
    /// Sum of each output channel's weights (for the zero-point term).
    pub wsum: Vec<i32>,
    /// Bias per output channel, in accumulator units.
    pub bias: Vec<i32>,
    /// `x_scale * w_scale[o] / y_scale` per output channel.
    pub mult: Vec<f32>,
    /// Output zero point (requantisation).
    pub y_zp: i32,
    /// f32 output dequantised here, `(q - zp) * scale`: `Some((zp, scale))`;
    /// `None` for a u8 output.
    pub dequantize_output: Option<(i32, f32)>,
    /// Whether every adjacent input-channel weight pair has `|w0| + |w1| <= 128`.
    pub fits_7bit: bool,
}

impl Plan {
    /// Builds the plan from ONNX-style parameters. `geometry`: `(cin, cout,
    /// k, h, w, groups)`; `w`: `[cout, cin / groups, k, k]`; `w_scale`: one
    /// value or one per output channel; `bias`: none or one per output
    /// channel. With `groups > 1`, each group's channel counts must be
    /// multiples of 4 (a 4-channel block never straddles two groups).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        (cin, cout, k, h, w_px, groups): (usize, usize, usize, usize, usize, usize),
        w: &[i8],
        bias: Option<&[i32]>,
        x_scale: f32,
        x_zp: i32,
        w_scale: &[f32],
        y_scale: f32,
        y_zp: i32,
    ) -> anyhow::Result<Plan> {
        if k % 2 == 0 || cin == 0 || cout == 0 || h == 0 || w_px == 0 || groups == 0 {
            bail!("int8 conv: unsupported geometry {cin}->{cout} channels, {k}x{k} kernel, {h}x{w_px} image, {groups} groups");
        }
        if groups > 1
            && (cin % groups != 0
                || cout % groups != 0
                || (cin / groups) % 4 != 0
                || (cout / groups) % 4 != 0)
        {
            bail!("int8 conv: {groups} groups of {cin}->{cout} channels: each group needs multiples of 4");
        }
        let cin_g = cin / groups;
        if w.len() != cout * cin_g * k * k {
            bail!("int8 conv: {} weights for {cout}x{cin_g}x{k}x{k}", w.len());
        }
        if w_scale.len() != 1 && w_scale.len() != cout {
            bail!(
                "int8 conv: {} weight scales for {cout} channels",
                w_scale.len()
            );
        }
        if bias.is_some_and(|b| b.len() != cout) {
            bail!("int8 conv: bias length differs from {cout} channels");
        }
        // Input-channel quads per output block: the block's group only.
        let (cin4, cout4, taps) = (cin_g.div_ceil(4), cout.div_ceil(4), k * k);
        let mut weights = vec![0i8; cout4 * taps * cin4 * 16];
        let mut wsum = vec![0i32; cout];
        for o in 0..cout {
            for i in 0..cin_g {
                for t in 0..taps {
                    let v = w[(o * cin_g + i) * taps + t];
                    wsum[o] += v as i32;
                    weights[(((o / 4) * taps + t) * cin4 + i / 4) * 16 + (o % 4) * 4 + i % 4] = v;
                }
            }
        }
        let fits_7bit = weights
            .chunks_exact(2)
            .all(|p| (p[0] as i32).abs() + (p[1] as i32).abs() <= 128);
        let ws = |o: usize| w_scale[if w_scale.len() == 1 { 0 } else { o }];
        Ok(Plan {
            cin,
            cout,
            groups,
            k,
            h,
            w: w_px,
            x_zp,
            quantize_input: Some((1.0 / x_scale, x_zp)),
            lut_in: None,
            lut_out: None,
            weights,
            wsum,
            bias: bias.map(<[i32]>::to_vec).unwrap_or_else(|| vec![0; cout]),
            mult: (0..cout).map(|o| x_scale * ws(o) / y_scale).collect(),
            y_zp,
            dequantize_output: Some((y_zp, y_scale)),
            fits_7bit,
        })
    }

    fn pad(&self) -> usize {
        self.k / 2
    }
    /// Pixels per padded row: room for the last 16-pixel segment and the taps.
    fn row_px(&self) -> usize {
        self.w.div_ceil(PX) * PX + 2 * self.pad()
    }
    /// Bytes per 4-channel plane.
    fn plane(&self) -> usize {
        (self.h + 2 * self.pad()) * self.row_px() * 4
    }
    /// Bytes of the quantised input buffer.
    pub fn buf_len(&self) -> usize {
        self.cin.div_ceil(4) * self.plane()
    }
    fn taps(&self) -> Vec<usize> {
        let row = self.row_px() * 4;
        (0..self.k * self.k)
            .map(|t| (t / self.k) * row + (t % self.k) * 4)
            .collect()
    }

    /// Quantises (or copies) `x` (`[cin, h, w]`) into `buf` in `kernel`'s
    /// encoding, padding with the zero point.
    fn fill(&self, x: Input<'_>, buf: &mut [u8], kernel: Kernel) {
        assert!(x.len() >= self.cin * self.h * self.w && buf.len() >= self.buf_len());
        #[cfg(target_arch = "x86_64")]
        if kernel.avx2 {
            // SAFETY: `avx2` is only set on kernels chosen where AVX2 is detected.
            return unsafe { self.fill_avx2(x, buf, kernel) };
        }
        self.fill_body(x, buf, kernel)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fill_avx2(&self, x: Input<'_>, buf: &mut [u8], kernel: Kernel) {
        self.fill_body(x, buf, kernel)
    }

    #[inline(always)]
    fn fill_body(&self, x: Input<'_>, buf: &mut [u8], kernel: Kernel) {
        let flip = if kernel.signed { 0x80 } else { 0 };
        let zp = self.x_zp as u8 ^ flip;
        let (pad, row, plane, hw, w) = (
            self.pad(),
            self.row_px(),
            self.plane(),
            self.h * self.w,
            self.w,
        );
        // One image row of each of 4 channels, then interleaved: both
        // loops vectorise (the strided byte stores of a direct loop did not).
        let mut tmp = vec![[0u8; 4]; w];
        let mut line = vec![0u8; w];
        let blocks = buf[..self.buf_len()].chunks_mut(plane).enumerate();
        for (c4, dst_plane) in blocks {
            for y in 0..self.h {
                for q in 0..4 {
                    let c = c4 * 4 + q;
                    if c >= self.cin {
                        // Padding channel (zero weights): any value will do.
                        line.fill(self.x_zp as u8);
                    } else {
                        let src = c * hw + y * w;
                        match (x, self.quantize_input) {
                            (Input::F32(x), Some((inv, zp))) => {
                                let zp = zp as f32;
                                for (d, &v) in line.iter_mut().zip(&x[src..src + w]) {
                                    *d = (round_even(v * inv) + zp).clamp(0.0, 255.0) as u8;
                                }
                            }
                            (Input::U8(x), _) => line.copy_from_slice(&x[src..src + w]),
                            (Input::F32(_), None) => unreachable!("f32 input without quantisation"),
                        }
                        if let Some(t) = &self.lut_in {
                            line.iter_mut().for_each(|v| *v = t[*v as usize]);
                        }
                    }
                    for (t, &v) in tmp.iter_mut().zip(&line) {
                        t[q] = v ^ flip;
                    }
                }
                // The padded row: zero point left, the pixels, zero point
                // right (padding and the last segment's overrun).
                let line_start = (y + pad) * row * 4;
                let padded = &mut dst_plane[line_start..line_start + row * 4];
                padded[..pad * 4].fill(zp);
                padded[pad * 4..(pad + w) * 4].copy_from_slice(tmp.as_flattened());
                padded[(pad + w) * 4..].fill(zp);
            }
            // Padding rows above and below.
            dst_plane[..pad * row * 4].fill(zp);
            dst_plane[(pad + self.h) * row * 4..].fill(zp);
        }
    }

    /// Computes output channel block `cb` (4 channels), row `y`, from the
    /// quantised input, into `out` (`[cout, h, w]` f32).
    ///
    /// # Safety
    /// `out` must point to `cout * h * w` values (f32, or u8 when the plan
    /// has no dequantisation) that no other thread writes at the same
    /// (channel, row).
    unsafe fn row(
        &self,
        buf: &[u8],
        cb: usize,
        y: usize,
        taps: &[usize],
        kernel: Kernel,
        out: SharedOut,
    ) {
        // The requantisation loops are plain Rust; compiled for AVX2 they
        // run 8 lanes wide instead of baseline SSE2's 4, with vroundps-free
        // rounding (see `round_even`).
        #[cfg(target_arch = "x86_64")]
        if kernel.avx2 {
            return self.row_avx2(buf, cb, y, taps, kernel, out);
        }
        self.row_body(buf, cb, y, taps, kernel, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn row_avx2(
        &self,
        buf: &[u8],
        cb: usize,
        y: usize,
        taps: &[usize],
        kernel: Kernel,
        out: SharedOut,
    ) {
        self.row_body(buf, cb, y, taps, kernel, out)
    }

    #[inline(always)]
    unsafe fn row_body(
        &self,
        buf: &[u8],
        cb: usize,
        y: usize,
        taps: &[usize],
        kernel: Kernel,
        out: SharedOut,
    ) {
        let (row, plane) = (self.row_px() * 4, self.plane());
        let cin4 = (self.cin / self.groups).div_ceil(4);
        let wlen = taps.len() * cin4 * 16;
        // This block's group starts at input plane `group * cin4`.
        let first_plane = (cb * CO) / (self.cout / self.groups) * cin4;
        let wb = &self.weights[cb * wlen..(cb + 1) * wlen];
        let zp = if kernel.signed {
            self.x_zp - 128
        } else {
            self.x_zp
        };
        let mut acc = [0i32; CO * PX];
        for x0 in (0..self.w).step_by(PX) {
            let base = first_plane * plane + y * row + x0 * 4;
            (kernel.tile)(buf, base, taps, plane, cin4, wb, &mut acc);
            let n = PX.min(self.w - x0);
            for r in 0..CO.min(self.cout - cb * CO) {
                let o = cb * CO + r;
                let (corr, m) = (self.bias[o] - zp * self.wsum[o], self.mult[o]);
                let yzp = self.y_zp as f32;
                // Fixed-size loops: vectorised by the compiler.
                let mut q = [0f32; PX];
                for (q, &a) in q.iter_mut().zip(&acc[r * PX..(r + 1) * PX]) {
                    *q = (round_even((a + corr) as f32 * m) + yzp).clamp(0.0, 255.0);
                }
                if let Some(t) = &self.lut_out {
                    q.iter_mut().for_each(|v| *v = t[*v as usize] as f32);
                }
                let at = (o * self.h + y) * self.w + x0;
                match self.dequantize_output {
                    Some((zp, scale)) => {
                        let dst = std::slice::from_raw_parts_mut(out.ptr().add(at), n);
                        for (d, &v) in dst.iter_mut().zip(&q) {
                            *d = (v - zp as f32) * scale;
                        }
                    }
                    None => {
                        let dst = std::slice::from_raw_parts_mut((out.ptr() as *mut u8).add(at), n);
                        for (d, &v) in dst.iter_mut().zip(&q) {
                            *d = v as u8;
                        }
                    }
                }
            }
        }
    }

    /// The whole convolution, f32 `x` (`[cin, h, w]`) into f32 `out`
    /// (`[cout, h, w]`), with `kernel`; `buf` is scratch of
    /// [`Plan::buf_len`] bytes. Needs a plan with f32 input and output.
    pub fn run(&self, x: &[f32], buf: &mut [u8], out: &mut [f32], kernel: Kernel) {
        assert!(self.quantize_input.is_some() && self.dequantize_output.is_some());
        assert!(out.len() >= self.cout * self.h * self.w);
        self.run_any(Input::F32(x), buf, SharedOut(out.as_mut_ptr()), kernel);
    }

    /// `out` holds `cout * h * w` values of the plan's output type.
    fn run_any(&self, x: Input<'_>, buf: &mut [u8], out: SharedOut, kernel: Kernel) {
        self.fill(x, buf, kernel);
        let buf = &*buf;
        let taps = self.taps();
        let cout4 = self.cout.div_ceil(4);
        for_each_block(cout4 * self.h, |n| {
            // SAFETY: block n owns channels 4*(n / h).. of row n % h; the
            // caller guarantees `out`'s size and that it outlives the loop.
            unsafe { self.row(buf, n / self.h, n % self.h, &taps, kernel, out) }
        });
    }
}

/// Rounds half to even, as ONNX quantisation does, for `|v| < 2^22`:
/// adding and subtracting 1.5 * 2^23 leaves the f32 rounding (ties to even)
/// to the hardware. Larger values land far outside 0..=255 either way and
/// are clamped by every caller. (`f32::round_ties_even` is a libm call on
/// baseline x86_64, which has no SSE4.1 `roundps`, and does not vectorise.)
#[inline(always)]
fn round_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// The operator's input, quantised here or already u8.
#[derive(Clone, Copy)]
enum Input<'a> {
    F32(&'a [f32]),
    U8(&'a [u8]),
}

impl Input<'_> {
    fn len(&self) -> usize {
        match self {
            Input::F32(x) => x.len(),
            Input::U8(x) => x.len(),
        }
    }
}

/// The operator: `[1, cin, h, w]` in, `[1, cout, h, w]` out (f32, or u8
/// where the conv's neighbours in the graph are quantised too).
#[derive(Debug, Clone)]
pub struct QConv {
    /// Shared by the op's clones.
    pub plan: Arc<Plan>,
    /// The replaced DequantizeLinear's output shape (`cout * h * w` values).
    pub out_shape: TVec<usize>,
}

impl PartialEq for QConv {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.plan, &other.plan) && self.out_shape == other.out_shape
    }
}
impl Eq for QConv {}
impl Hash for QConv {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.plan) as usize).hash(state)
    }
}

impl Op for QConv {
    fn name(&self) -> StaticName {
        "LgmsQConv".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        let p = &self.plan;
        Ok(vec![format!(
            "int8 {}x{}: {} -> {} channels ({} groups), {}x{}",
            p.k, p.k, p.cin, p.cout, p.groups, p.h, p.w
        )])
    }
    op_as_typed_op!();
}

impl EvalOp for QConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let p = &self.plan;
        let view = inputs[0].try_as_plain_ram()?;
        let x = if p.quantize_input.is_some() {
            Input::F32(view.as_slice::<f32>()?)
        } else {
            Input::U8(view.as_slice::<u8>()?)
        };
        if x.len() != p.cin * p.h * p.w {
            bail!(
                "LgmsQConv: input has {} values, expected {} x {} x {}",
                x.len(),
                p.cin,
                p.h,
                p.w
            );
        }
        // SAFETY: `run_any` writes every one of the `cout * h * w` values.
        let mut out = unsafe {
            if p.dequantize_output.is_some() {
                Tensor::uninitialized::<f32>(&self.out_shape)?
            } else {
                Tensor::uninitialized::<u8>(&self.out_shape)?
            }
        };
        {
            let mut view = out.try_as_plain_ram_mut()?;
            let dst = if p.dequantize_output.is_some() {
                SharedOut(view.as_slice_mut::<f32>()?.as_mut_ptr())
            } else {
                SharedOut(view.as_slice_mut::<u8>()?.as_mut_ptr() as *mut f32)
            };
            // `out` has the plan's type and `cout * h * w` values
            // (`out_shape`'s volume was checked at match time).
            with_scratch(p.buf_len(), |buf| p.run_any(x, buf, dst, kernel()));
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

thread_local! {
    /// The quantised-input buffer, kept per inference thread: it grows to
    /// the largest conv's size once, instead of a fresh (page-faulting)
    /// allocation of up to a few MB per conv per frame.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with at least `len` bytes of this thread's scratch (contents
/// unspecified: `Plan::fill` writes every byte it reads).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0);
            }
            f(&mut buf[..len])
        }
        // Re-entered (cannot happen with tract's plan order): a fresh one.
        Err(_) => f(&mut vec![0u8; len]),
    })
}

impl TypedOp for QConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let p = &self.plan;
        let want = if p.quantize_input.is_some() {
            f32::datum_type()
        } else {
            u8::datum_type()
        };
        if inputs[0].datum_type != want {
            bail!("LgmsQConv takes {want:?}, got {:?}", inputs[0].datum_type);
        }
        let shape = self.out_shape.iter().copied();
        Ok(tvec!(if p.dequantize_output.is_some() {
            f32::fact(shape)
        } else {
            u8::fact(shape)
        }))
    }
    as_op!();
}

/// The reference kernel: u8 activations, i32 sums.
pub fn tile_scalar(
    x: &[u8],
    base: usize,
    taps: &[usize],
    plane: usize,
    cin4: usize,
    w: &[i8],
    acc: &mut Acc,
) {
    check(x, base, taps, plane, cin4, w);
    acc.fill(0);
    for (t, &off) in taps.iter().enumerate() {
        for c4 in 0..cin4 {
            let xb = &x[base + off + c4 * plane..][..PX * 4];
            let wb = &w[(t * cin4 + c4) * 16..][..16];
            for r in 0..CO {
                for j in 0..PX {
                    let s: i32 = (0..4)
                        .map(|q| wb[r * 4 + q] as i32 * xb[j * 4 + q] as i32)
                        .sum();
                    acc[r * PX + j] += s;
                }
            }
        }
    }
}

/// Every read a kernel makes is inside `x` and `w`.
fn check(x: &[u8], base: usize, taps: &[usize], plane: usize, cin4: usize, w: &[i8]) {
    let last = taps.iter().max().copied().unwrap_or(0);
    assert!(cin4 > 0 && base + last + (cin4 - 1) * plane + PX * 4 <= x.len());
    assert!(w.len() >= taps.len() * cin4 * 16);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{check, Acc, CO, PX};

    pub(super) fn tile(
        x: &[u8],
        base: usize,
        taps: &[usize],
        plane: usize,
        cin4: usize,
        w: &[i8],
        acc: &mut Acc,
    ) {
        check(x, base, taps, plane, cin4, w);
        assert!(is_x86_feature_detected!("avx2"));
        // SAFETY: feature checked; every read is in bounds (`check`).
        unsafe { tile_avx2(x, base, taps, plane, cin4, w, acc) }
    }

    /// AVX-512 VNNI (with VL, on ymm registers) or AVX-VNNI: `vpdpbusd`
    /// does the u8 x i8 4-products-and-add of a lane in one instruction,
    /// in i32 (no i16 step: any weights).
    pub(super) fn has_vnni() -> bool {
        (is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl"))
            || is_x86_feature_detected!("avxvnni")
    }

    pub(super) fn tile_vnni(
        x: &[u8],
        base: usize,
        taps: &[usize],
        plane: usize,
        cin4: usize,
        w: &[i8],
        acc: &mut Acc,
    ) {
        check(x, base, taps, plane, cin4, w);
        // SAFETY: features checked; every read is in bounds (`check`).
        unsafe {
            if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
                tile_avx512vnni(x, base, taps, plane, cin4, w, acc)
            } else {
                assert!(is_x86_feature_detected!("avxvnni"));
                tile_avxvnni(x, base, taps, plane, cin4, w, acc)
            }
        }
    }

    /// `a` plus the 4-byte dot products of `x` (u8) and `w` (i8) per i32
    /// lane, in AVX2: u8 x i8 pairs to i16 (`vpmaddubsw`, exact for 7-bit
    /// weights), then pairs of i16 to i32 (`vpmaddwd` by ones).
    #[inline(always)]
    unsafe fn dp_avx2(a: __m256i, x: __m256i, w: __m256i) -> __m256i {
        let ones = _mm256_set1_epi16(1);
        _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), ones))
    }

    /// The kernel loop around one dot-product step: 4 output channels x 16
    /// pixels (two registers of 8 pixels x 4 channels) per input-channel
    /// quad and tap, each output channel's 4 weights in every lane.
    macro_rules! tile_loop {
        ($name:ident, $features:literal, $dp:ident) => {
            #[target_feature(enable = $features)]
            unsafe fn $name(
                x: &[u8],
                base: usize,
                taps: &[usize],
                plane: usize,
                cin4: usize,
                w: &[i8],
                acc: &mut Acc,
            ) {
                // a[2r], a[2r+1]: output channel r, pixels 0-7 and 8-15.
                let mut a = [_mm256_setzero_si256(); 2 * CO];
                let mut wp = w.as_ptr();
                for &off in taps {
                    let mut xp = x.as_ptr().add(base + off);
                    for _ in 0..cin4 {
                        let x0 = _mm256_loadu_si256(xp as *const __m256i);
                        let x1 = _mm256_loadu_si256(xp.add(32) as *const __m256i);
                        for r in 0..CO {
                            let wv =
                                _mm256_set1_epi32((wp.add(r * 4) as *const i32).read_unaligned());
                            a[2 * r] = $dp(a[2 * r], x0, wv);
                            a[2 * r + 1] = $dp(a[2 * r + 1], x1, wv);
                        }
                        xp = xp.add(plane);
                        wp = wp.add(16);
                    }
                }
                for r in 0..CO {
                    let dst = acc.as_mut_ptr().add(r * PX);
                    _mm256_storeu_si256(dst as *mut __m256i, a[2 * r]);
                    _mm256_storeu_si256(dst.add(8) as *mut __m256i, a[2 * r + 1]);
                }
            }
        };
    }
    tile_loop!(tile_avx2, "avx2", dp_avx2);
    tile_loop!(
        tile_avx512vnni,
        "avx2,avx512vnni,avx512vl",
        _mm256_dpbusd_epi32
    );
    tile_loop!(tile_avxvnni, "avx2,avxvnni", _mm256_dpbusd_avx_epi32);
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;
    use std::arch::asm;

    use super::{check, Acc, CO, PX};

    pub(super) fn tile(
        x: &[u8],
        base: usize,
        taps: &[usize],
        plane: usize,
        cin4: usize,
        w: &[i8],
        acc: &mut Acc,
    ) {
        check(x, base, taps, plane, cin4, w);
        assert!(std::arch::is_aarch64_feature_detected!("dotprod"));
        // SAFETY: feature checked; every read is in bounds (`check`).
        unsafe { tile_dot(x, base, taps, plane, cin4, w, acc) }
    }

    /// `acc[i] += dot(x[4i..4i+4], w[4L..4L+4])` for the four i32 lanes.
    macro_rules! sdot {
        ($acc:expr, $x:expr, $w:expr, $lane:literal) => {
            asm!(
                concat!("sdot {a:v}.4s, {x:v}.16b, {w:v}.4b[", $lane, "]"),
                a = inout(vreg) $acc,
                x = in(vreg) $x,
                w = in(vreg) $w,
                options(pure, nomem, nostack)
            )
        };
    }

    #[target_feature(enable = "neon,dotprod")]
    unsafe fn tile_dot(
        x: &[u8],
        base: usize,
        taps: &[usize],
        plane: usize,
        cin4: usize,
        w: &[i8],
        acc: &mut Acc,
    ) {
        // a[4r + v]: output channel r, pixels 4v..4v+4.
        let mut a = [vdupq_n_s32(0); CO * 4];
        let mut wp = w.as_ptr();
        for &off in taps {
            let mut xp = x.as_ptr().add(base + off) as *const i8;
            for _ in 0..cin4 {
                // The 4 output channels' 4 weights, one 32-bit lane each.
                let wv = vld1q_s8(wp);
                for v in 0..4 {
                    // 4 pixels x 4 channels (stored as q - 128).
                    let xv = vld1q_s8(xp.add(16 * v));
                    sdot!(a[v], xv, wv, "0");
                    sdot!(a[4 + v], xv, wv, "1");
                    sdot!(a[8 + v], xv, wv, "2");
                    sdot!(a[12 + v], xv, wv, "3");
                }
                xp = xp.add(plane);
                wp = wp.add(16);
            }
        }
        for r in 0..CO {
            for v in 0..4 {
                vst1q_s32(acc.as_mut_ptr().add(r * PX + 4 * v), a[4 * r + v]);
            }
        }
    }
}

/// Reads a constant input as `T` values.
fn const_vec<T: Datum + Copy>(model: &TypedModel, outlet: OutletId) -> Option<Vec<T>> {
    let k = model.outlet_fact(outlet).ok()?.konst.clone()?;
    if k.datum_type() != T::datum_type() {
        return None;
    }
    let view = k.try_as_plain_ram().ok()?;
    Some(view.as_slice::<T>().ok()?.to_vec())
}

/// The 256-entry table of a u8 -> u8 `LookupTable` node (tract's
/// declutter folds `DequantizeLinear -> element-wise op -> QuantizeLinear`
/// into one).
fn u8_table(model: &TypedModel, id: usize) -> Option<Vec<u8>> {
    use tract_onnx::tract_core::ops::quant::LookupTable;
    let node = model.node(id);
    let lut = node
        .op_as::<ElementWiseOp>()?
        .0
        .downcast_ref::<LookupTable>()?;
    let out = model.outlet_fact(OutletId::new(id, 0)).ok()?;
    let table = lut.table.table();
    (out.datum_type == u8::datum_type() && table.len() == 256).then(|| table.to_vec())
}

/// The single consumer of `id`'s output, if it has exactly one and is not
/// a model output.
fn single_successor(model: &TypedModel, id: usize) -> Option<usize> {
    let succ = &model.node(id).outputs[0].successors;
    (succ.len() == 1 && !model.outputs.contains(&OutletId::new(id, 0))).then(|| succ[0].node)
}

/// The quantised conv's geometry: `(k, cin, h, w, weights, cout, groups)`
/// with the `[cout, cin / groups, k, k]` weights, from tract's `Conv` or,
/// for 1x1, its quantised `EinSum`.
#[allow(clippy::type_complexity)]
fn conv_geometry(
    model: &TypedModel,
    id: usize,
) -> Option<(usize, usize, usize, usize, Vec<i8>, usize, usize)> {
    use tract_onnx::tract_core::ops::einsum::EinSum;
    let node = model.node(id);
    if node.inputs.len() != 9 {
        return None;
    }
    let xs: TVec<usize> = model
        .outlet_fact(node.inputs[0])
        .ok()?
        .shape
        .as_concrete()?
        .into();
    let (cin, h, w) = match xs.as_slice() {
        &[1, c, h, w] | &[c, h, w] => (c, h, w),
        _ => return None,
    };
    let wshape: TVec<usize> = model
        .outlet_fact(node.inputs[1])
        .ok()?
        .shape
        .as_concrete()?
        .into();
    let weights = const_vec::<i8>(model, node.inputs[1])?;
    if let Some(conv) = node.op_as::<Conv>() {
        let ps = &conv.pool_spec;
        let g = conv.group;
        if conv.q_params != Some(u8::datum_type())
            || (g > 1 && ((cin / g) % 4 != 0 || cin % g != 0))
            || conv.kernel_fmt != KernelFormat::OIHW
            || ps.data_format != DataFormat::NCHW
            || xs.len() != 4
        {
            return None;
        }
        let k = *ps.kernel_shape.first()?;
        let pad = k / 2;
        let ones = |v: &Option<TVec<usize>>| v.as_ref().is_none_or(|v| v.iter().all(|&s| s == 1));
        let same = |v: &TVec<usize>| v.len() == 2 && v.iter().all(|&p| p == pad);
        let padding_ok = match &ps.padding {
            PaddingSpec::Explicit(b, a) | PaddingSpec::ExplicitOnnxPool(b, a, _) => {
                same(b) && same(a)
            }
            PaddingSpec::Valid => k == 1,
            PaddingSpec::SameUpper | PaddingSpec::SameLower => true,
        };
        let cout = *wshape.first()?;
        if ps.kernel_shape.len() != 2
            || ps.kernel_shape[1] != k
            || k % 2 == 0
            || !ones(&ps.strides)
            || !ones(&ps.dilations)
            || !padding_ok
            || wshape.as_slice() != [cout, cin / g, k, k]
            || cout % g != 0
            || (cout / g) % 4 != 0 && g > 1
        {
            return None;
        }
        return Some((k, cin, h, w, weights, cout, g));
    }
    // A 1x1 conv: tract declutters it to an EinSum of the image with the
    // [O, I] weights (the batch axis kept or dropped on either side).
    let es = node.op_as::<EinSum>()?;
    let expr = es.axes.to_string();
    let (ins, out) = expr.split_once("->")?;
    let ins = ins.strip_prefix('N').unwrap_or(ins);
    if es.q_params != Some(u8::datum_type()) || !matches!(out, "NOHW" | "OHW") {
        return None;
    }
    match (ins, wshape.as_slice()) {
        ("IHW,OI,O,,,O,O,,", &[cout, i]) if i == cin => Some((1, cin, h, w, weights, cout, 1)),
        // One output channel: tract drops the weights' O axis.
        ("IHW,I,,,,O,O,,", &[i]) if i == cin => Some((1, cin, h, w, weights, 1, 1)),
        _ => None,
    }
}

struct Found {
    plan: Plan,
    /// The operator's input (f32 before a fused QuantizeLinear, or u8).
    x: OutletId,
    /// The node whose output the op replaces (the conv, a table after it,
    /// or the DequantizeLinear).
    last: usize,
    /// Its shape.
    out_shape: TVec<usize>,
}

fn match_at(model: &TypedModel, id: usize) -> Option<Found> {
    let node = model.node(id);
    let (k, cin, h, w, weights, cout, groups) = conv_geometry(model, id)?;
    // Input: u8, maybe from a table, maybe from a QuantizeLinearU8 of f32.
    let mut x = node.inputs[0];
    let lut_in = u8_table(model, x.node);
    if lut_in.is_some() {
        x = model.node(x.node).inputs[0];
    }
    let mut quantize_input = None;
    let qnode = model.node(x.node);
    if let Some(q) = qnode
        .op_as::<ElementWiseOp>()
        .and_then(|e| e.0.downcast_ref::<QuantizeLinearU8>())
    {
        let src = *qnode.inputs.first()?;
        if model.outlet_fact(src).ok()?.datum_type == f32::datum_type() {
            // tract's quantisation exactly (it multiplies by 1/scale).
            quantize_input = Some((q.scale, q.zero_point as i32));
            x = src;
        }
    }
    if quantize_input.is_none() && model.outlet_fact(x).ok()?.datum_type != u8::datum_type() {
        return None;
    }
    // Output: u8, maybe through a table, maybe into a DequantizeLinearF32.
    let mut last = id;
    let mut lut_out = None;
    if let Some(s) = single_successor(model, last) {
        lut_out = u8_table(model, s);
        if lut_out.is_some() {
            last = s;
        }
    }
    let mut dequantize_output = None;
    if let Some(s) = single_successor(model, last) {
        if let Some(dq) = model.node(s).op_as::<DequantizeLinearF32>() {
            dequantize_output = Some((dq.zero_point, dq.scale));
            last = s;
        }
    }
    let out_fact = model.outlet_fact(OutletId::new(last, 0)).ok()?;
    let out_shape: TVec<usize> = out_fact.shape.as_concrete()?.into();
    let out_dt = if dequantize_output.is_some() {
        f32::datum_type()
    } else {
        u8::datum_type()
    };
    if out_shape.iter().product::<usize>() != cout * h * w || out_fact.datum_type != out_dt {
        return None;
    }
    // The constants: bias, x0, x_scale, k0, k_scale, y0, y_scale.
    let bias = const_vec::<i32>(model, node.inputs[2])?;
    let x0 = const_vec::<i32>(model, node.inputs[3])?;
    let x_scale = const_vec::<f32>(model, node.inputs[4])?;
    let k0 = const_vec::<i32>(model, node.inputs[5])?;
    let k_scale = const_vec::<f32>(model, node.inputs[6])?;
    let y0 = const_vec::<i32>(model, node.inputs[7])?;
    let y_scale = const_vec::<f32>(model, node.inputs[8])?;
    let (&x0, &x_scale, &y0, &y_scale) = match (&x0[..], &x_scale[..], &y0[..], &y_scale[..]) {
        ([a], [b], [c], [d]) => (a, b, c, d),
        _ => return None,
    };
    if k0.iter().any(|&z| z != 0) {
        return None;
    }
    let bias = match bias.len() {
        n if n == cout => Some(bias),
        // No bias (tract's placeholder is a scalar zero).
        0 => None,
        1 if bias[0] == 0 => None,
        _ => return None,
    };
    let plan = Plan::new(
        (cin, cout, k, h, w, groups),
        &weights,
        bias.as_deref(),
        x_scale,
        x0,
        &k_scale,
        y_scale,
        y0,
    )
    .ok()?;
    Some(Found {
        plan: Plan {
            quantize_input,
            lut_in,
            lut_out,
            dequantize_output,
            ..plan
        },
        x,
        last,
        out_shape,
    })
}

/// Replaces every matching quantised conv; returns how many.
pub fn replace_all(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::einsum::EinSum;
    if simd_kernel().is_none() {
        // No int8 SIMD here (an aarch64 core without dotprod, such as the
        // Pi 4's Cortex-A72): tract's arm64 int8 kernels beat our scalar one.
        return Ok(0);
    }
    let kernel = kernel();
    let mut replaced = 0;
    let candidates: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<Conv>() || n.op_is::<EinSum>())
        .map(|n| n.id)
        .collect();
    for id in candidates {
        let Some(found) = match_at(model, id) else {
            continue;
        };
        if kernel.needs_7bit && !found.plan.fits_7bit {
            log::warn!(
                "{}: 8-bit weights would saturate the {} int8 kernel; left to tract \
                 (fix: quantise with 7-bit weights, lgms_models/quantize.py's default)",
                model.node(id).name,
                kernel.name
            );
            continue;
        }
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(model, found.x)?;
        let name = format!("{}.lgms_qconv", model.node(id).name);
        let op = QConv {
            plan: Arc::new(found.plan),
            out_shape: found.out_shape,
        };
        let out = patch.wire_node(name, op, &[x])?;
        patch.shunt_outside(model, OutletId::new(found.last, 0), out[0])?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}
