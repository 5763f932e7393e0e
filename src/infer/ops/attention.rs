//! Fused attention: `softmax(scale * Q K^T) V`, one query row at a time.
//!
//! LGMSNet's hybrid blocks attend over 256 or 1024 tokens with 4 heads of
//! depth 8, for each of the 4 pixel offsets of a 2x2 patch: 16 independent
//! (offset, head) blocks. tract's stock graph runs this as a matrix product
//! into a 4x4x1024x1024 score tensor (64 MiB), a softmax over it, and a
//! second product with an inner dimension of 1024 packed for its matmul
//! kernel: about a third of the network's time. With a depth of 8 the score
//! row of one query is 8 multiply-adds per key, so this operator keeps one
//! row (4 KiB) in cache: scores, max, exp, sum and the weighted sum of V,
//! then the next query. K and V are transposed once per block so every
//! inner loop runs along the keys, in SIMD lanes.
//!
//! [`fuse_all`] finds `EinSum(Q,K) [-> Mul(const scalar)] -> Softmax(last
//! axis) -> EinSum(., V)` in the decluttered graph, whatever the einsum
//! axis letters and operand layouts are, and records each operand's element
//! strides so that no transpose or reshape node is needed around it.

use std::cell::RefCell;

use anyhow::bail;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::{for_each_block, SharedOut};
#[cfg(target_arch = "x86_64")]
use crate::kernels::cpu::Avx2Fma;
#[cfg(target_arch = "aarch64")]
use crate::kernels::cpu::Neon;

/// Where one operand's logical axes are in its tensor, as element strides.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Layout {
    /// Stride of each batch axis (0 where the operand is broadcast).
    pub(crate) batch: TVec<isize>,
    /// Stride between rows: queries for Q and the output, keys for K and V.
    pub(crate) rows: isize,
    /// Stride along the head depth.
    pub(crate) depth: isize,
}

/// `out[b, i, e] = sum_j softmax_j(scale * q[b, i] . k[b, j]) * v[b, j, e]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attention {
    /// Sizes of the batch axes (offsets x heads for LGMSNet).
    pub(crate) batch: TVec<usize>,
    /// Queries per block.
    pub(crate) m: usize,
    /// Keys (and values) per block.
    pub(crate) n: usize,
    /// Depth of Q and K.
    pub(crate) d: usize,
    /// Depth of V and of the output.
    pub(crate) dv: usize,
    /// `f32::to_bits` of the score scale (bits, so that the op is `Eq + Hash`).
    pub(crate) scale_bits: u32,
    /// Operand layouts.
    pub(crate) q: Layout,
    /// Operand layouts.
    pub(crate) k: Layout,
    /// Operand layouts.
    pub(crate) v: Layout,
    /// Output layout, in a dense tensor of `out_shape`.
    pub(crate) out: Layout,
    /// Shape of the output (the shape the second EinSum produced).
    pub(crate) out_shape: TVec<usize>,
}

impl Op for Attention {
    fn name(&self) -> StaticName {
        "LgmsAttention".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "batch {:?}, {} queries x {} keys, depth {}/{}, scale {}",
            self.batch,
            self.m,
            self.n,
            self.d,
            self.dv,
            f32::from_bits(self.scale_bits)
        )])
    }
    op_as_typed_op!();
}

thread_local! {
    /// Per-thread scratch (Q block, K^T, V^T, score row, output rows),
    /// grown on the first frame and reused afterwards.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl EvalOp for Attention {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let q = inputs[0].try_as_plain_ram()?;
        let k = inputs[1].try_as_plain_ram()?;
        let v = inputs[2].try_as_plain_ram()?;
        let (q, k, v) = (
            q.as_slice::<f32>()?,
            k.as_slice::<f32>()?,
            v.as_slice::<f32>()?,
        );
        let blocks: usize = self.batch.iter().product();
        let mut out = if blocks * self.m * self.dv == self.out_shape.iter().product::<usize>() {
            // SAFETY: f32 has no invalid bit patterns, and the blocks write
            // m x dv values each, at distinct indices: all of them.
            unsafe { Tensor::uninitialized::<f32>(&self.out_shape)? }
        } else {
            Tensor::zero::<f32>(&self.out_shape)?
        };
        {
            let mut view = out.try_as_plain_ram_mut()?;
            let dst = view.as_slice_mut::<f32>()?;
            let shared = SharedOut(dst.as_mut_ptr());
            let kernel = crate::kernels::best().attention();
            for_each_block(blocks, |b| self.run_block(kernel, b, q, k, v, shared));
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl Attention {
    fn offsets(&self, mut b: usize) -> (isize, isize, isize, isize) {
        let (mut oq, mut ok, mut ov, mut oo) = (0, 0, 0, 0);
        for ax in (0..self.batch.len()).rev() {
            let c = (b % self.batch[ax]) as isize;
            b /= self.batch[ax];
            oq += c * self.q.batch[ax];
            ok += c * self.k.batch[ax];
            ov += c * self.v.batch[ax];
            oo += c * self.out.batch[ax];
        }
        (oq, ok, ov, oo)
    }

    /// One (offset, head) block: gather, attend, scatter.
    fn run_block(&self, kernel: Kernel, b: usize, q: &[f32], k: &[f32], v: &[f32], out: SharedOut) {
        let (m, n, d, dv) = (self.m, self.n, self.d, self.dv);
        let ld = leading_dim(n);
        let scale = f32::from_bits(self.scale_bits);
        let (oq, ok, ov, oo) = self.offsets(b);
        SCRATCH.with_borrow_mut(|scratch| {
            let need = m * d + d * ld + dv * ld + n + m * dv;
            if scratch.len() < need {
                scratch.resize(need, 0.0);
            }
            let (qs, rest) = scratch.split_at_mut(m * d);
            let (kt, rest) = rest.split_at_mut(d * ld);
            let (vt, rest) = rest.split_at_mut(dv * ld);
            let (row, rest) = rest.split_at_mut(n);
            let o = &mut rest[..m * dv];
            // Offsets come from the tensor shapes checked at match time
            // (`output_facts`), so every index below is in bounds.
            let at = |base: isize, r: usize, rs: isize, c: usize, cs: isize| {
                (base + r as isize * rs + c as isize * cs) as usize
            };
            for i in 0..m {
                for t in 0..d {
                    qs[i * d + t] = q[at(oq, i, self.q.rows, t, self.q.depth)] * scale;
                }
            }
            for t in 0..d {
                for j in 0..n {
                    kt[t * ld + j] = k[at(ok, j, self.k.rows, t, self.k.depth)];
                }
            }
            for e in 0..dv {
                for j in 0..n {
                    vt[e * ld + j] = v[at(ov, j, self.v.rows, e, self.v.depth)];
                }
            }
            kernel.attend(qs, kt, vt, m, n, ld, d, dv, row, o);
            for i in 0..m {
                for e in 0..dv {
                    // SAFETY: blocks differ in at least one batch coordinate, so
                    // their output index sets are disjoint; each index is within
                    // the output tensor (shape checked at match time).
                    unsafe {
                        *out.ptr().add(at(oo, i, self.out.rows, e, self.out.depth)) = o[i * dv + e];
                    }
                }
            }
        });
    }
}

/// Floats between two rows of the transposed keys and values: `n` rounded
/// up to whole vectors, plus 16 where that is a multiple of 4 KiB. With
/// 1024 keys the rows would otherwise lie exactly 4 KiB apart and the 8
/// streams of an inner loop would share one L1 set.
pub fn leading_dim(n: usize) -> usize {
    let ld = n.next_multiple_of(8);
    if (ld * 4).is_multiple_of(4096) {
        ld + 16
    } else {
        ld
    }
}

impl TypedOp for Attention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        for (ix, i) in inputs.iter().enumerate() {
            if i.datum_type != f32::datum_type() {
                bail!(
                    "LgmsAttention input {ix} is {:?}, expected f32",
                    i.datum_type
                );
            }
        }
        Ok(tvec!(f32::fact(self.out_shape.iter().copied())))
    }
    as_op!();
}

/// Attends every query of one block (see [`Kernel::attend`]).
type AttendFn = fn(
    qs: &[f32],
    kt: &[f32],
    vt: &[f32],
    m: usize,
    n: usize,
    ld: usize,
    d: usize,
    dv: usize,
    row: &mut [f32],
    out: &mut [f32],
);

/// One implementation of the attention kernel: the scalar reference, or a
/// SIMD one that only a proof of its CPU features builds. The tables of
/// [`crate::kernels`] hold one each.
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
    name: &'static str,
    attend: AttendFn,
}

impl Kernel {
    /// The reference kernel.
    pub const SCALAR: Kernel = Kernel {
        name: "scalar",
        attend: attend_scalar,
    };

    /// The AVX2 + FMA kernel.
    #[cfg(target_arch = "x86_64")]
    pub fn avx2(_: Avx2Fma) -> Kernel {
        Kernel {
            name: "avx2",
            attend: x86::attend,
        }
    }

    /// The NEON kernel.
    #[cfg(target_arch = "aarch64")]
    pub fn neon(_: Neon) -> Kernel {
        Kernel {
            name: "neon",
            attend: neon::attend,
        }
    }

    /// `"scalar"`, `"avx2"` or `"neon"`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Attends every query of one block.
    ///
    /// `qs`: `m x d` queries, already multiplied by the scale; `kt`: `d`
    /// rows of `n` keys, transposed, `ld` floats apart; `vt`: `dv` rows of
    /// `n` values, transposed, `ld` apart; `row`: `n` floats of scratch;
    /// `out`: `m x dv` results. Panics if `ld < n` or a slice is shorter
    /// than that.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &self,
        qs: &[f32],
        kt: &[f32],
        vt: &[f32],
        m: usize,
        n: usize,
        ld: usize,
        d: usize,
        dv: usize,
        row: &mut [f32],
        out: &mut [f32],
    ) {
        (self.attend)(qs, kt, vt, m, n, ld, d, dv, row, out)
    }
}

/// The reference kernel (and the fallback).
#[allow(clippy::too_many_arguments)]
fn attend_scalar(
    qs: &[f32],
    kt: &[f32],
    vt: &[f32],
    m: usize,
    n: usize,
    ld: usize,
    d: usize,
    dv: usize,
    row: &mut [f32],
    out: &mut [f32],
) {
    assert!(ld >= n, "rows of {n} keys {ld} floats apart");
    let row = &mut row[..n];
    for i in 0..m {
        let q = &qs[i * d..(i + 1) * d];
        row.fill(0.0);
        for (t, &qt) in q.iter().enumerate() {
            for (r, &kv) in row.iter_mut().zip(&kt[t * ld..t * ld + n]) {
                *r += qt * kv;
            }
        }
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for r in row.iter_mut() {
            *r = (*r - max).exp();
            sum += *r;
        }
        let inv = 1.0 / sum;
        for e in 0..dv {
            let acc: f32 = row
                .iter()
                .zip(&vt[e * ld..e * ld + n])
                .map(|(p, v)| p * v)
                .sum();
            out[i * dv + e] = acc * inv;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `exp(x)` for 8 lanes (Cephes' polynomial, ~2 ulp), `x` clamped below
    /// at -87.3 (the result is then ~1e-38 instead of 0; the softmax sum is >= 1).
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn exp8(x: __m256) -> __m256 {
        let x = _mm256_max_ps(x, _mm256_set1_ps(-87.3));
        let fx = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let p = _mm256_fmadd_ps(
            p,
            _mm256_mul_ps(r, r),
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(fx),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(p, _mm256_castsi256_ps(pow2))
    }

    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    fn hmax(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_max_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    /// AVX2 + FMA version of [`super::attend_scalar`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attend(
        qs: &[f32],
        kt: &[f32],
        vt: &[f32],
        m: usize,
        n: usize,
        ld: usize,
        d: usize,
        dv: usize,
        row: &mut [f32],
        out: &mut [f32],
    ) {
        assert!(ld >= n && qs.len() >= m * d && kt.len() >= d * ld && vt.len() >= dv * ld);
        assert!(row.len() >= n && out.len() >= m * dv);
        // SAFETY: only `Kernel::avx2` reaches this function, with the proof
        // of AVX2 and FMA; slice bounds asserted above.
        unsafe { attend_avx2(qs, kt, vt, m, n, ld, d, dv, row, out) }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn attend_avx2(
        qs: &[f32],
        kt: &[f32],
        vt: &[f32],
        m: usize,
        n: usize,
        ld: usize,
        d: usize,
        dv: usize,
        row: &mut [f32],
        out: &mut [f32],
    ) {
        // SAFETY: `attend` asserted every slice length used below; each vector access
        // is at `j + 8 <= body <= n` within a row of `n` (or `m x d`) values.
        unsafe {
            let body = n / 8 * 8;
            let rp = row.as_mut_ptr();
            for i in 0..m {
                let q = &qs[i * d..(i + 1) * d];
                // Scores, 32 keys per step in 4 independent sums (one sum
                // would wait on the FMA latency at every depth step):
                // row[j] = sum_t q[t] * kt[t][j], in the reference's order.
                let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
                let mut j = 0;
                while j + 32 <= body {
                    let mut a = [_mm256_setzero_ps(); 4];
                    for (t, &qt) in q.iter().enumerate() {
                        let qv = _mm256_set1_ps(qt);
                        // j + 32 <= body <= n: in row t of kt.
                        let kp = kt.as_ptr().add(t * ld + j);
                        for (u, a) in a.iter_mut().enumerate() {
                            *a = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kp.add(8 * u)), *a);
                        }
                    }
                    for (u, a) in a.iter().enumerate() {
                        _mm256_storeu_ps(rp.add(j + 8 * u), *a);
                        vmax = _mm256_max_ps(vmax, *a);
                    }
                    j += 32;
                }
                while j < body {
                    let mut acc = _mm256_setzero_ps();
                    for (t, &qt) in q.iter().enumerate() {
                        // j + 8 <= body <= n: in row t of kt.
                        let k = _mm256_loadu_ps(kt.as_ptr().add(t * ld + j));
                        acc = _mm256_fmadd_ps(_mm256_set1_ps(qt), k, acc);
                    }
                    _mm256_storeu_ps(rp.add(j), acc);
                    vmax = _mm256_max_ps(vmax, acc);
                    j += 8;
                }
                let mut max = hmax(vmax);
                for j in body..n {
                    let s: f32 = q
                        .iter()
                        .enumerate()
                        .map(|(t, &qt)| qt * kt[t * ld + j])
                        .sum();
                    row[j] = s;
                    max = max.max(s);
                }
                // Probabilities (unnormalised) and their sum.
                let vm = _mm256_set1_ps(max);
                let mut vsum = _mm256_setzero_ps();
                let mut j = 0;
                while j < body {
                    let p = exp8(_mm256_sub_ps(_mm256_loadu_ps(rp.add(j)), vm));
                    _mm256_storeu_ps(rp.add(j), p);
                    vsum = _mm256_add_ps(vsum, p);
                    j += 8;
                }
                let mut sum = hsum(vsum);
                for r in &mut row[body..n] {
                    *r = (*r - max).exp();
                    sum += *r;
                }
                let inv = 1.0 / sum;
                // Weighted values, 8 output depths at a time: each block of
                // 8 probabilities is loaded once and feeds 8 independent sums
                // (a fixed count, so that they stay in registers).
                let dv8 = dv / 8 * 8;
                for e0 in (0..dv8).step_by(8) {
                    let mut a = [_mm256_setzero_ps(); 8];
                    let mut j = 0;
                    while j < body {
                        let p = _mm256_loadu_ps(rp.add(j));
                        for (u, a) in a.iter_mut().enumerate() {
                            // e0 + u < dv and j + 8 <= body <= n: in row e0 + u of vt.
                            let v = _mm256_loadu_ps(vt.as_ptr().add((e0 + u) * ld + j));
                            *a = _mm256_fmadd_ps(p, v, *a);
                        }
                        j += 8;
                    }
                    for (u, a) in a.iter().enumerate() {
                        let e = e0 + u;
                        let mut acc = hsum(*a);
                        for jj in body..n {
                            acc += row[jj] * vt[e * ld + jj];
                        }
                        out[i * dv + e] = acc * inv;
                    }
                }
                // The remaining depths one at a time, two sums along the keys.
                for e in dv8..dv {
                    let vrow = vt.as_ptr().add(e * ld);
                    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                    let mut j = 0;
                    while j + 16 <= body {
                        a0 = _mm256_fmadd_ps(
                            _mm256_loadu_ps(rp.add(j)),
                            _mm256_loadu_ps(vrow.add(j)),
                            a0,
                        );
                        a1 = _mm256_fmadd_ps(
                            _mm256_loadu_ps(rp.add(j + 8)),
                            _mm256_loadu_ps(vrow.add(j + 8)),
                            a1,
                        );
                        j += 16;
                    }
                    if j < body {
                        a0 = _mm256_fmadd_ps(
                            _mm256_loadu_ps(rp.add(j)),
                            _mm256_loadu_ps(vrow.add(j)),
                            a0,
                        );
                    }
                    let mut acc = hsum(_mm256_add_ps(a0, a1));
                    for jj in body..n {
                        acc += row[jj] * vt[e * ld + jj];
                    }
                    out[i * dv + e] = acc * inv;
                }
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    /// `exp(x)` for 4 lanes, the same polynomial as the AVX2 kernel.
    #[target_feature(enable = "neon")]
    pub(super) fn exp4(x: float32x4_t) -> float32x4_t {
        let x = vmaxq_f32(x, vdupq_n_f32(-87.3));
        let fx = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(std::f32::consts::LOG2_E)));
        let r = vfmsq_f32(x, fx, vdupq_n_f32(0.693_359_4));
        let r = vfmsq_f32(r, fx, vdupq_n_f32(-2.121_944_4e-4));
        let mut p = vdupq_n_f32(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ] {
            p = vfmaq_f32(vdupq_n_f32(c), p, r);
        }
        let p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0)), p, vmulq_f32(r, r));
        let pow2 = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(fx), vdupq_n_s32(127)));
        vmulq_f32(p, vreinterpretq_f32_s32(pow2))
    }

    /// NEON version of [`super::attend_scalar`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attend(
        qs: &[f32],
        kt: &[f32],
        vt: &[f32],
        m: usize,
        n: usize,
        ld: usize,
        d: usize,
        dv: usize,
        row: &mut [f32],
        out: &mut [f32],
    ) {
        assert!(ld >= n && qs.len() >= m * d && kt.len() >= d * ld && vt.len() >= dv * ld);
        assert!(row.len() >= n && out.len() >= m * dv);
        // SAFETY: only `Kernel::neon` reaches this function, with the proof
        // of NEON; slice bounds asserted above.
        unsafe { attend_neon(qs, kt, vt, m, n, ld, d, dv, row, out) }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "neon")]
    unsafe fn attend_neon(
        qs: &[f32],
        kt: &[f32],
        vt: &[f32],
        m: usize,
        n: usize,
        ld: usize,
        d: usize,
        dv: usize,
        row: &mut [f32],
        out: &mut [f32],
    ) {
        // SAFETY: `attend` asserted every slice length used below; each vector access
        // is at `j + 4 <= body <= n` within a row of `n` (or `m x d`) values.
        unsafe {
            let body = n / 4 * 4;
            let rp = row.as_mut_ptr();
            for i in 0..m {
                let q = &qs[i * d..(i + 1) * d];
                let mut vmax = vdupq_n_f32(f32::NEG_INFINITY);
                let mut j = 0;
                while j < body {
                    let mut acc = vdupq_n_f32(0.0);
                    for (t, &qt) in q.iter().enumerate() {
                        // j + 4 <= body <= n: in row t of kt.
                        acc = vfmaq_n_f32(acc, vld1q_f32(kt.as_ptr().add(t * ld + j)), qt);
                    }
                    vst1q_f32(rp.add(j), acc);
                    vmax = vmaxq_f32(vmax, acc);
                    j += 4;
                }
                let mut max = vmaxvq_f32(vmax);
                for j in body..n {
                    let s: f32 = q
                        .iter()
                        .enumerate()
                        .map(|(t, &qt)| qt * kt[t * ld + j])
                        .sum();
                    row[j] = s;
                    max = max.max(s);
                }
                let vm = vdupq_n_f32(max);
                let mut vsum = vdupq_n_f32(0.0);
                let mut j = 0;
                while j < body {
                    let p = exp4(vsubq_f32(vld1q_f32(rp.add(j)), vm));
                    vst1q_f32(rp.add(j), p);
                    vsum = vaddq_f32(vsum, p);
                    j += 4;
                }
                let mut sum = vaddvq_f32(vsum);
                for r in &mut row[body..n] {
                    *r = (*r - max).exp();
                    sum += *r;
                }
                let inv = 1.0 / sum;
                for e in 0..dv {
                    let vrow = vt.as_ptr().add(e * ld);
                    let (mut a0, mut a1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
                    let mut j = 0;
                    while j + 8 <= body {
                        a0 = vfmaq_f32(a0, vld1q_f32(rp.add(j)), vld1q_f32(vrow.add(j)));
                        a1 = vfmaq_f32(a1, vld1q_f32(rp.add(j + 4)), vld1q_f32(vrow.add(j + 4)));
                        j += 8;
                    }
                    if j < body {
                        a0 = vfmaq_f32(a0, vld1q_f32(rp.add(j)), vld1q_f32(vrow.add(j)));
                    }
                    let mut acc = vaddvq_f32(vaddq_f32(a0, a1));
                    for jj in body..n {
                        acc += row[jj] * vt[e * ld + jj];
                    }
                    out[i * dv + e] = acc * inv;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Pattern matching
// ---------------------------------------------------------------------------

/// The node that consumes `node`'s only output, if exactly one does and the
/// output is not a model output.
fn sole_successor(model: &TypedModel, node: usize) -> Option<usize> {
    let n = model.node(node);
    if n.outputs.len() != 1 || n.outputs[0].successors.len() != 1 {
        return None;
    }
    if model.outputs.contains(&OutletId::new(node, 0)) {
        return None;
    }
    Some(n.outputs[0].successors[0].node)
}

/// A constant that holds one f32 value (any rank, every dimension 1).
fn scalar_const(model: &TypedModel, outlet: OutletId) -> Option<f32> {
    let c = model.node(outlet.node).op_as::<Const>()?;
    let t = c.val();
    if t.datum_type() != f32::datum_type() || t.len() != 1 {
        return None;
    }
    let plain = t.try_as_plain_ram().ok()?;
    plain.as_slice::<f32>().ok()?.first().copied()
}

fn concrete_shape(model: &TypedModel, outlet: OutletId) -> Option<TVec<usize>> {
    let f = model.outlet_fact(outlet).ok()?;
    if f.datum_type != f32::datum_type() {
        return None;
    }
    f.shape.as_concrete().map(|s| s.into())
}

fn dense_strides(shape: &[usize]) -> TVec<isize> {
    let mut s: TVec<isize> = tvec![0; shape.len()];
    let mut acc = 1isize;
    for i in (0..shape.len()).rev() {
        s[i] = acc;
        acc *= shape[i] as isize;
    }
    s
}

/// An EinSum's axes as (letter, position in input 0, in input 1, in output).
type AxisPos = (char, Option<usize>, Option<usize>, Option<usize>);

fn einsum_axes(op: &EinSum) -> Option<Vec<AxisPos>> {
    if op.q_params.is_some() || op.operating_dt != f32::datum_type() {
        return None;
    }
    let mut v = Vec::new();
    for a in op.axes.iter_all_axes() {
        if a.inputs.len() != 2 || a.inputs.iter().any(|i| i.len() > 1) || a.outputs[0].len() > 1 {
            return None;
        }
        v.push((
            a.repr,
            a.inputs[0].first().copied(),
            a.inputs[1].first().copied(),
            a.outputs[0].first().copied(),
        ));
    }
    Some(v)
}

/// Size of a (possibly absent) axis position in a shape: absent = 1.
fn dim(shape: &[usize], pos: Option<usize>) -> usize {
    pos.map_or(1, |p| shape[p])
}

fn stride(strides: &[isize], shape: &[usize], pos: Option<usize>) -> isize {
    match pos {
        Some(p) if shape[p] > 1 => strides[p],
        _ => 0,
    }
}

struct Found {
    op: Attention,
    q: OutletId,
    k: OutletId,
    v: OutletId,
    last: usize,
}

/// Matches the attention chain ending at Softmax node `sm`.
fn match_at(model: &TypedModel, sm: usize) -> Option<Found> {
    let softmax = model.node(sm).op_as::<Softmax>()?;
    let s_shape = concrete_shape(model, model.node(sm).inputs[0])?;
    let r = s_shape.len();
    if softmax.kind != SoftmaxKind::Softmax
        || softmax.quant_output_dt.is_some()
        || r < 2
        || softmax.axes.as_slice() != [r - 1]
    {
        return None;
    }
    // Backwards: optional scalar Mul, then the QK EinSum.
    let mut prev = model.node(sm).inputs[0].node;
    let mut scale = 1.0f32;
    // The node the QK product must feed, and feed alone.
    let mut after_qk = sm;
    if let Some(bin) = model.node(prev).op_as::<TypedBinOp>() {
        if bin.0.name() != "Mul" || sole_successor(model, prev) != Some(sm) {
            return None;
        }
        let ins = &model.node(prev).inputs;
        let (c, other) = match (scalar_const(model, ins[0]), scalar_const(model, ins[1])) {
            (_, Some(c)) => (c, ins[0]),
            (Some(c), None) => (c, ins[1]),
            _ => return None,
        };
        if concrete_shape(model, other)? != s_shape {
            return None;
        }
        scale = c;
        after_qk = prev;
        prev = other.node;
    }
    let qk_node = model.node(prev);
    let qk = qk_node.op_as::<EinSum>()?;
    if qk_node.inputs.len() != 2 || sole_successor(model, prev)? != after_qk {
        return None;
    }
    let qk_axes = einsum_axes(qk)?;
    // Forward: the AV EinSum.
    let av_id = sole_successor(model, sm)?;
    let av_node = model.node(av_id);
    let av = av_node.op_as::<EinSum>()?;
    if av_node.inputs.len() != 2 {
        return None;
    }
    let av_axes = einsum_axes(av)?;
    let a_slot = av_node
        .inputs
        .iter()
        .position(|o| *o == OutletId::new(sm, 0))?;
    let v_slot = 1 - a_slot;

    let (s0, s1) = (
        concrete_shape(model, qk_node.inputs[0])?,
        concrete_shape(model, qk_node.inputs[1])?,
    );
    let out_pos = |axes: &[AxisPos], p: usize| axes.iter().find(|a| a.3 == Some(p)).copied();
    // QK output: batch axes 0..r-2, then m (queries), then n (keys).
    let m_ax = out_pos(&qk_axes, r - 2)?;
    let n_ax = out_pos(&qk_axes, r - 1)?;
    // Q is the operand holding m; K the one holding n.
    let q_is_0 = m_ax.1.is_some() && m_ax.2.is_none() && n_ax.2.is_some() && n_ax.1.is_none();
    let q_is_1 = m_ax.2.is_some() && m_ax.1.is_none() && n_ax.1.is_some() && n_ax.2.is_none();
    if q_is_0 == q_is_1 {
        return None;
    }
    let pick = |a: &AxisPos, first: bool| if first { a.1 } else { a.2 };
    let (q_shape, k_shape) = if q_is_0 { (&s0, &s1) } else { (&s1, &s0) };
    // Contracted axes: exactly one of size > 1 (the depth), the rest size 1.
    let mut depth: Option<AxisPos> = None;
    for a in qk_axes.iter().filter(|a| a.3.is_none()) {
        let (qd, kd) = (
            dim(q_shape, pick(a, q_is_0)),
            dim(k_shape, pick(a, !q_is_0)),
        );
        if qd == 1 && kd == 1 {
            continue;
        }
        if qd != kd || depth.is_some() {
            return None;
        }
        depth = Some(*a);
    }
    let depth = depth?;
    let (m, n, d) = (
        s_shape[r - 2],
        s_shape[r - 1],
        dim(q_shape, pick(&depth, q_is_0)),
    );
    let (qs, ks) = (dense_strides(q_shape), dense_strides(k_shape));
    let mut batch: TVec<usize> = tvec![];
    let (mut qb, mut kb) = (tvec![], tvec![]);
    for p in 0..r - 2 {
        let a = out_pos(&qk_axes, p)?;
        let size = s_shape[p];
        let (qp, kp) = (pick(&a, q_is_0), pick(&a, !q_is_0));
        // Each operand has the batch axis at full size, or not at all (size 1).
        for (shape, pos) in [(q_shape, qp), (k_shape, kp)] {
            let dd = dim(shape, pos);
            if dd != size && dd != 1 {
                return None;
            }
        }
        batch.push(size);
        qb.push(stride(&qs, q_shape, qp));
        kb.push(stride(&ks, k_shape, kp));
    }
    // Any other axis of Q or K (in no output, not the depth) must be size 1:
    // covered by the contracted-axes loop above.
    let q_layout = Layout {
        batch: qb,
        rows: stride(&qs, q_shape, pick(&m_ax, q_is_0)),
        depth: stride(&qs, q_shape, pick(&depth, q_is_0)),
    };
    let k_layout = Layout {
        batch: kb,
        rows: stride(&ks, k_shape, pick(&n_ax, !q_is_0)),
        depth: stride(&ks, k_shape, pick(&depth, !q_is_0)),
    };

    // AV: the attention operand's axes are the QK output's positions.
    let v_shape = concrete_shape(model, av_node.inputs[v_slot])?;
    let o_shape = concrete_shape(model, OutletId::new(av_id, 0))?;
    let a_pos = |a: &AxisPos| if a_slot == 0 { a.1 } else { a.2 };
    let v_pos = |a: &AxisPos| if v_slot == 0 { a.1 } else { a.2 };
    let by_a = |p: usize| av_axes.iter().find(|a| a_pos(a) == Some(p)).copied();
    let (vs, os) = (dense_strides(&v_shape), dense_strides(&o_shape));
    let keys = by_a(r - 1)?;
    let rows = by_a(r - 2)?;
    if keys.3.is_some() || dim(&v_shape, v_pos(&keys)) != n || rows.3.is_none() {
        return None;
    }
    if v_pos(&rows).is_some_and(|p| v_shape[p] != 1) {
        return None;
    }
    let mut vb = tvec![];
    let mut ob = tvec![];
    for (p, &size) in batch.iter().enumerate() {
        let a = by_a(p)?;
        if a.3.is_none() && size != 1 {
            return None;
        }
        let dd = dim(&v_shape, v_pos(&a));
        if dd != size && dd != 1 {
            return None;
        }
        vb.push(stride(&vs, &v_shape, v_pos(&a)));
        ob.push(stride(&os, &o_shape, a.3));
    }
    // The value depth: V's axes that A lacks; one of size > 1 at most,
    // in the output; others size 1.
    let mut vdepth: Option<AxisPos> = None;
    for a in av_axes.iter().filter(|a| a_pos(a).is_none()) {
        let size = dim(&v_shape, v_pos(a));
        if size == 1 {
            continue;
        }
        if a.3.is_none() || vdepth.is_some() {
            return None;
        }
        vdepth = Some(*a);
    }
    let (dv, v_depth_stride, o_depth_stride) = match vdepth {
        Some(a) => (
            dim(&v_shape, v_pos(&a)),
            stride(&vs, &v_shape, v_pos(&a)),
            stride(&os, &o_shape, a.3),
        ),
        None => (1, 0, 0),
    };
    // The output holds exactly batch x m x dv values.
    let total: usize = batch.iter().product::<usize>() * m * dv;
    if o_shape.iter().product::<usize>() != total {
        return None;
    }
    let op = Attention {
        batch,
        m,
        n,
        d,
        dv,
        scale_bits: scale.to_bits(),
        q: q_layout,
        k: k_layout,
        v: Layout {
            batch: vb,
            rows: stride(&vs, &v_shape, v_pos(&keys)),
            depth: v_depth_stride,
        },
        out: Layout {
            batch: ob,
            rows: stride(&os, &o_shape, rows.3),
            depth: o_depth_stride,
        },
        out_shape: o_shape,
    };
    let (q, k) = if q_is_0 {
        (qk_node.inputs[0], qk_node.inputs[1])
    } else {
        (qk_node.inputs[1], qk_node.inputs[0])
    };
    Some(Found {
        op,
        q,
        k,
        v: av_node.inputs[v_slot],
        last: av_id,
    })
}

/// Fuses every attention chain of `model`; returns how many.
pub fn fuse_all(model: &mut TypedModel) -> TractResult<usize> {
    let mut fused = 0;
    let candidates: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<Softmax>())
        .map(|n| n.id)
        .collect();
    for sm in candidates {
        let Some(found) = match_at(model, sm) else {
            log::debug!("softmax {} is not a fusable attention", model.node(sm).name);
            continue;
        };
        let name = format!("{}.lgms_attention", model.node(found.last).name);
        let (inputs, last) = ([found.q, found.k, found.v], OutletId::new(found.last, 0));
        super::swap_in(model, &inputs, last, name, found.op)?;
        fused += 1;
    }
    Ok(fused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_kernels_match_std_exp() {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::cpu::Avx2Fma::detect().is_some() {
            use std::arch::x86_64::*;
            let mut worst = 0f32;
            for i in 0..20000 {
                let x = -90.0 + i as f32 * 0.0045;
                let mut out = [0f32; 8];
                // SAFETY: features checked above.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr(), x86::exp8(_mm256_set1_ps(x))) };
                let want = x.exp();
                if want > 1e-30 {
                    worst = worst.max(((out[0] - want) / want).abs());
                }
            }
            assert!(worst < 4e-7, "AVX2 exp off by {worst:e} relative");
        }
        #[cfg(target_arch = "aarch64")]
        {
            use std::arch::aarch64::*;
            let mut worst = 0f32;
            for i in 0..20000 {
                let x = -90.0 + i as f32 * 0.0045;
                let mut out = [0f32; 4];
                // SAFETY: NEON is baseline on aarch64.
                unsafe { vst1q_f32(out.as_mut_ptr(), neon::exp4(vdupq_n_f32(x))) };
                let want = x.exp();
                if want > 1e-30 {
                    worst = worst.max(((out[0] - want) / want).abs());
                }
            }
            assert!(worst < 4e-7, "NEON exp off by {worst:e} relative");
        }
    }
}
