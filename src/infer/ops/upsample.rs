//! 2x bilinear upsampling (half-pixel centres, `align_corners=False`) of an
//! NCHW f32 tensor: PyTorch's `nn.Upsample(scale_factor=2, mode="bilinear")`
//! as exported to ONNX `Resize`.
//!
//! At exactly 2x the weights are constant: output column `2j` is
//! `0.75 x[j] + 0.25 x[j-1]` and `2j+1` is `0.75 x[j] + 0.25 x[j+1]`
//! (indices clamped at the borders), the same along rows. So each input
//! row is widened once (SIMD: two blends and an interleave per 8 pixels)
//! and each output row is a blend of two widened rows. tract's generic
//! Resize computes coordinates and weights per pixel, in scalar code.
//!
//! [`replace_all`] swaps in [`Upsample2x`] for every ONNX `Resize` that is
//! linear and half-pixel (or PyTorch half-pixel), from
//! `[N, C, H, W]` to `[N, C, 2H, 2W]`; any other Resize stays tract's.

use std::cell::RefCell;

use anyhow::bail;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::ops::nn::resize::{CoordTransformer, Interpolator, Resize};
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::{for_each_block, swap_in, SharedOut};
#[cfg(target_arch = "x86_64")]
use crate::kernels::cpu::Avx2Fma;
#[cfg(target_arch = "aarch64")]
use crate::kernels::cpu::Neon;

/// `[N, C, H, W]` -> `[N, C, 2H, 2W]`, bilinear, half-pixel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upsample2x {
    /// Input shape `[N, C, H, W]`.
    pub shape: [usize; 4],
}

impl Op for Upsample2x {
    fn name(&self) -> StaticName {
        "LgmsUpsample2x".into()
    }
    op_as_typed_op!();
}

thread_local! {
    /// Two widened rows, reused across planes and frames.
    static ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl EvalOp for Upsample2x {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let [n, c, h, w] = self.shape;
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        if x.len() != n * c * h * w {
            bail!(
                "LgmsUpsample2x: input has {} values, expected {:?}",
                x.len(),
                self.shape
            );
        }
        // SAFETY: f32 has no invalid bit patterns, and the planes below
        // write every one of the n * c * 4hw values.
        let mut out = unsafe { Tensor::uninitialized::<f32>(&[n, c, 2 * h, 2 * w])? };
        {
            let mut view = out.try_as_plain_ram_mut()?;
            let dst = view.as_slice_mut::<f32>()?;
            let shared = SharedOut(dst.as_mut_ptr());
            let k = crate::kernels::best().upsample();
            for_each_block(n * c, |p| {
                let src = &x[p * h * w..(p + 1) * h * w];
                // SAFETY: plane p owns output values [p*4hw, (p+1)*4hw), disjoint
                // between planes, inside the tensor allocated above.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(shared.ptr().add(p * 4 * h * w), 4 * h * w)
                };
                ROWS.with_borrow_mut(|rows| upsample_plane(k, src, h, w, rows, dst));
            });
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Upsample2x {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        if inputs[0].datum_type != f32::datum_type() {
            bail!("LgmsUpsample2x takes f32, got {:?}", inputs[0].datum_type);
        }
        let [n, c, h, w] = self.shape;
        Ok(tvec!(f32::fact([n, c, 2 * h, 2 * w])))
    }
    as_op!();
}

/// Widens one row: `out[2j] = .75 x[j] + .25 x[j-1]`, `out[2j+1] = .75 x[j] + .25 x[j+1]`.
type WidenFn = fn(src: &[f32], out: &mut [f32]);
/// `out[i] = .75 a[i] + .25 b[i]`.
type BlendFn = fn(a: &[f32], b: &[f32], out: &mut [f32]);

/// The row kernels of one implementation: the scalar reference, or SIMD
/// ones that only a proof of their CPU features builds. The tables of
/// [`crate::kernels`] hold one each.
#[derive(Debug, Clone, Copy)]
pub struct RowKernels {
    name: &'static str,
    widen: WidenFn,
    blend: BlendFn,
}

impl RowKernels {
    /// The reference kernels.
    pub const SCALAR: RowKernels = RowKernels {
        name: "scalar",
        widen: widen_scalar,
        blend: blend_scalar,
    };

    /// The AVX2 + FMA kernels.
    #[cfg(target_arch = "x86_64")]
    pub fn avx2(_: Avx2Fma) -> RowKernels {
        RowKernels {
            name: "avx2",
            widen: x86::widen,
            blend: x86::blend,
        }
    }

    /// The NEON kernels.
    #[cfg(target_arch = "aarch64")]
    pub fn neon(_: Neon) -> RowKernels {
        RowKernels {
            name: "neon",
            widen: neon::widen,
            blend: neon::blend,
        }
    }

    /// `"scalar"`, `"avx2"` or `"neon"`.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// Upsamples one `h x w` plane into `4hw` values, with `rows` as scratch.
pub fn upsample_plane(
    k: RowKernels,
    src: &[f32],
    h: usize,
    w: usize,
    rows: &mut Vec<f32>,
    dst: &mut [f32],
) {
    let ow = 2 * w;
    if rows.len() < 3 * ow {
        rows.resize(3 * ow, 0.0);
    }
    // Three widened rows in a ring: i-1, i, i+1.
    let (r0, rest) = rows.split_at_mut(ow);
    let (r1, r2) = rest.split_at_mut(ow);
    let r2 = &mut r2[..ow];
    (k.widen)(&src[..w], r1);
    r0.copy_from_slice(r1);
    let mut ring = [r0, r1, r2];
    for i in 0..h {
        let next = (i + 1).min(h - 1);
        (k.widen)(&src[next * w..(next + 1) * w], ring[2]);
        let (top, bottom) = dst[2 * i * ow..(2 * i + 2) * ow].split_at_mut(ow);
        (k.blend)(ring[1], ring[0], top);
        (k.blend)(ring[1], ring[2], bottom);
        ring.rotate_left(1);
    }
}

fn widen_scalar(src: &[f32], out: &mut [f32]) {
    widen_pixels(src, out, 0..src.len());
}

/// The widening formula for the pixels `js` (the whole row in the scalar
/// kernel; borders and tails in the SIMD ones), borders clamped.
fn widen_pixels(src: &[f32], out: &mut [f32], js: impl Iterator<Item = usize>) {
    let w = src.len();
    for j in js {
        let l = src[j.saturating_sub(1)];
        let r = src[(j + 1).min(w - 1)];
        out[2 * j] = 0.75 * src[j] + 0.25 * l;
        out[2 * j + 1] = 0.75 * src[j] + 0.25 * r;
    }
}

fn blend_scalar(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = 0.75 * x + 0.25 * y;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::widen_pixels;

    pub(super) fn widen(src: &[f32], out: &mut [f32]) {
        assert!(out.len() >= 2 * src.len() && !src.is_empty());
        // SAFETY: only `RowKernels::avx2` reaches this function, with the
        // proof of AVX2 and FMA; bounds asserted above.
        unsafe { widen_avx2(src, out) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn widen_avx2(src: &[f32], out: &mut [f32]) {
        // SAFETY: `widen` asserted `out.len() >= 2 * w`; the loads are at pixels
        // `j - 1 ..= j + 8 < w` and the stores at `2j .. 2j + 16 <= 2w`.
        unsafe {
            let w = src.len();
            let (c75, c25) = (_mm256_set1_ps(0.75), _mm256_set1_ps(0.25));
            // Pixels 1..w-1 in blocks of 8 with both neighbours inside the row;
            // the borders (and the tail) go through the scalar formula.
            let mut j = 1;
            while j + 9 <= w {
                let p = src.as_ptr().add(j);
                let x = _mm256_mul_ps(_mm256_loadu_ps(p), c75);
                let even = _mm256_fmadd_ps(_mm256_loadu_ps(p.sub(1)), c25, x);
                let odd = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(1)), c25, x);
                // Interleave even/odd: lanes (e0 o0 e1 o1 ...).
                let lo = _mm256_unpacklo_ps(even, odd);
                let hi = _mm256_unpackhi_ps(even, odd);
                let q = out.as_mut_ptr().add(2 * j);
                _mm256_storeu_ps(q, _mm256_permute2f128_ps::<0x20>(lo, hi));
                _mm256_storeu_ps(q.add(8), _mm256_permute2f128_ps::<0x31>(lo, hi));
                j += 8;
            }
            widen_pixels(src, out, (0..1).chain(j..w));
        }
    }

    pub(super) fn blend(a: &[f32], b: &[f32], out: &mut [f32]) {
        let n = out.len();
        assert!(a.len() >= n && b.len() >= n);
        // SAFETY: only `RowKernels::avx2` reaches this function, with the
        // proof of AVX2 and FMA; bounds asserted above.
        unsafe { blend_avx2(a, b, out) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn blend_avx2(a: &[f32], b: &[f32], out: &mut [f32]) {
        // SAFETY: `blend` asserted `a` and `b` hold `n` values; every access is at
        // `i + 8 <= n`.
        unsafe {
            let n = out.len();
            let (c75, c25) = (_mm256_set1_ps(0.75), _mm256_set1_ps(0.25));
            let mut i = 0;
            while i + 8 <= n {
                let x = _mm256_mul_ps(_mm256_loadu_ps(a.as_ptr().add(i)), c75);
                let y = _mm256_fmadd_ps(_mm256_loadu_ps(b.as_ptr().add(i)), c25, x);
                _mm256_storeu_ps(out.as_mut_ptr().add(i), y);
                i += 8;
            }
            for k in i..n {
                out[k] = 0.75 * a[k] + 0.25 * b[k];
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    use super::widen_pixels;

    pub(super) fn widen(src: &[f32], out: &mut [f32]) {
        assert!(out.len() >= 2 * src.len() && !src.is_empty());
        // SAFETY: only `RowKernels::neon` reaches this function, with the
        // proof of NEON; bounds asserted above.
        unsafe { widen_neon(src, out) }
    }

    #[target_feature(enable = "neon")]
    unsafe fn widen_neon(src: &[f32], out: &mut [f32]) {
        // SAFETY: `widen` asserted `out.len() >= 2 * w`; the loads are at pixels
        // `j - 1 ..= j + 4 < w` and the stores at `2j .. 2j + 8 <= 2w`.
        unsafe {
            let w = src.len();
            let (c75, c25) = (vdupq_n_f32(0.75), vdupq_n_f32(0.25));
            let mut j = 1;
            while j + 5 <= w {
                let p = src.as_ptr().add(j);
                let x = vmulq_f32(vld1q_f32(p), c75);
                let even = vfmaq_f32(x, vld1q_f32(p.sub(1)), c25);
                let odd = vfmaq_f32(x, vld1q_f32(p.add(1)), c25);
                // vst2q interleaves: e0 o0 e1 o1 ...
                vst2q_f32(out.as_mut_ptr().add(2 * j), float32x4x2_t(even, odd));
                j += 4;
            }
            widen_pixels(src, out, (0..1).chain(j..w));
        }
    }

    pub(super) fn blend(a: &[f32], b: &[f32], out: &mut [f32]) {
        let n = out.len();
        assert!(a.len() >= n && b.len() >= n);
        // SAFETY: only `RowKernels::neon` reaches this function, with the
        // proof of NEON; bounds asserted above.
        unsafe { blend_neon(a, b, out) }
    }

    #[target_feature(enable = "neon")]
    unsafe fn blend_neon(a: &[f32], b: &[f32], out: &mut [f32]) {
        // SAFETY: `blend` asserted `a` and `b` hold `n` values; every access is at
        // `i + 4 <= n`.
        unsafe {
            let n = out.len();
            let (c75, c25) = (vdupq_n_f32(0.75), vdupq_n_f32(0.25));
            let mut i = 0;
            while i + 4 <= n {
                let x = vmulq_f32(vld1q_f32(a.as_ptr().add(i)), c75);
                vst1q_f32(
                    out.as_mut_ptr().add(i),
                    vfmaq_f32(x, vld1q_f32(b.as_ptr().add(i)), c25),
                );
                i += 4;
            }
            for k in i..n {
                out[k] = 0.75 * a[k] + 0.25 * b[k];
            }
        }
    }
}

/// Replaces every 2x bilinear half-pixel Resize; returns how many.
pub fn replace_all(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        let Some(resize) = model.node(id).op_as::<Resize>() else {
            continue;
        };
        let half_pixel = matches!(
            resize.coord_transformer,
            CoordTransformer::HalfPixel | CoordTransformer::PytorchHalfPixel
        );
        if !half_pixel || !matches!(resize.interpolator, Interpolator::Linear) {
            continue;
        }
        let node = model.node(id);
        let (fin, fout) = (
            model.outlet_fact(node.inputs[0])?,
            model.outlet_fact(OutletId::new(id, 0))?,
        );
        let (Some(si), Some(so)) = (fin.shape.as_concrete(), fout.shape.as_concrete()) else {
            continue;
        };
        let two_x = si.len() == 4
            && so.len() == 4
            && si[0] == so[0]
            && si[1] == so[1]
            && so[2] == 2 * si[2]
            && so[3] == 2 * si[3]
            && si[2] > 0
            && si[3] > 0;
        if !two_x || fin.datum_type != f32::datum_type() {
            continue;
        }
        let op = Upsample2x {
            shape: [si[0], si[1], si[2], si[3]],
        };
        let (x, name) = (node.inputs[0], format!("{}.lgms_upsample2x", node.name));
        swap_in(model, &[x], OutletId::new(id, 0), name, op)?;
        replaced += 1;
    }
    Ok(replaced)
}
