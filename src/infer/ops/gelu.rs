//! Exact GELU, `0.5 x (1 + erf(x / sqrt 2))`, on f32 tensors.
//!
//! tract's `GeluExact` computes erf from a degree-6 polynomial raised to
//! the 16th power, in chunks of 1024 through a scratch buffer; on
//! LGMSNet's full-resolution decoder (up to 4 M values per node) that is a
//! tenth of an f32 inference. Here erf is a rational function (odd degree-13
//! numerator over even degree-8 denominator, the approximation XLA and Eigen
//! use for f32) on `x` in `(-4, 4)`, and +-1 (f32's erf) beyond. The
//! rational is within 7e-8 of erf; evaluated in f32, with FMAs and one
//! division per value, within 3.4e-7 (a few ulp near 1, as tract's own),
//! and the scalar reference and the AVX2/NEON kernels give the same bits. [`gelu`] is the formula; [`Kernel`] applies it in place.
//!
//! [`replace_all`] swaps in [`Gelu`] for each `GeluExact` that tract's
//! declutter made of ONNX `Erf` chains, on f32; [`super::conv1x1`] folds
//! the ones that follow its convs into its epilogue first.

use anyhow::bail;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::GeluExact;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::{for_each_block, swap_in, SharedOut};
#[cfg(target_arch = "x86_64")]
use crate::kernels::cpu::Avx2Fma;
#[cfg(target_arch = "aarch64")]
use crate::kernels::cpu::Neon;

/// `1 / sqrt(2)`.
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// Beyond this, f32 erf is +-1.
const CLAMP: f32 = 4.0;
/// Numerator coefficients, x^1 .. x^13 (odd powers).
const ALPHA: [f32; 7] = [
    -1.609_603_3e-2,
    -2.954_6e-3,
    -7.349_906_3e-4,
    -5.692_506_4e-5,
    -2.101_024e-6,
    2.770_681_4e-8,
    -2.726_142_3e-10,
];
/// Denominator coefficients, x^0 .. x^8 (even powers).
const BETA: [f32; 5] = [
    -1.426_473_9e-2,
    -7.373_329_2e-3,
    -1.682_827e-3,
    -2.133_740_6e-4,
    -1.456_607_2e-5,
];

/// erf of an f32, the rational approximation of the module doc (the
/// reference that the SIMD kernels reproduce bit for bit).
pub fn erf(x: f32) -> f32 {
    // A NaN stays NaN here and becomes a number in the SIMD max/min; both
    // give NaN at the end, from the product with `x`.
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let mut p = ALPHA[6];
    for a in ALPHA[..6].iter().rev() {
        p = x2.mul_add(p, *a);
    }
    let p = x * p;
    let mut q = BETA[4];
    for b in BETA[..4].iter().rev() {
        q = x2.mul_add(q, *b);
    }
    // At the clamp the rational is one ulp short of 1; f32's erf is 1.
    if x2 >= CLAMP * CLAMP {
        x * (1.0 / CLAMP)
    } else {
        p / q
    }
}

/// Exact GELU: `(x * 0.5) * (1 + erf(x / sqrt 2))`, in tract's order.
pub fn gelu(x: f32) -> f32 {
    (x * 0.5) * (erf(x * FRAC_1_SQRT_2) + 1.0)
}

fn gelu_scalar(xs: &mut [f32]) {
    for x in xs {
        *x = gelu(*x);
    }
}

/// One implementation of the in-place GELU: the scalar reference, or a
/// SIMD one that only a proof of its CPU features builds.
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
    name: &'static str,
    run: fn(&mut [f32]),
}

impl Kernel {
    /// The reference kernel.
    pub const SCALAR: Kernel = Kernel {
        name: "scalar",
        run: gelu_scalar,
    };

    /// The AVX2 + FMA kernel.
    #[cfg(target_arch = "x86_64")]
    pub fn avx2(_: Avx2Fma) -> Kernel {
        Kernel {
            name: "avx2",
            run: x86::run,
        }
    }

    /// The NEON kernel.
    #[cfg(target_arch = "aarch64")]
    pub fn neon(_: Neon) -> Kernel {
        Kernel {
            name: "neon",
            run: neon::run,
        }
    }

    /// `"scalar"`, `"avx2"` or `"neon"`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// `x = gelu(x)` for every value.
    pub fn run(&self, xs: &mut [f32]) {
        (self.run)(xs)
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    use super::{ALPHA, BETA, CLAMP, FRAC_1_SQRT_2};

    pub(super) fn run(xs: &mut [f32]) {
        // SAFETY: only `Kernel::avx2` reaches this function, with the proof
        // of AVX2 and FMA.
        unsafe { run_avx2(xs) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn run_avx2(xs: &mut [f32]) {
        let mut chunks = xs.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` holds exactly 8 values.
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), gelu8(_mm256_loadu_ps(c.as_ptr()))) };
        }
        super::gelu_scalar(chunks.into_remainder());
    }

    /// [`super::gelu`] on 8 lanes, with the same operations in the same
    /// order (so the same bits).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn gelu8(v: __m256) -> __m256 {
        let x = _mm256_mul_ps(v, _mm256_set1_ps(FRAC_1_SQRT_2));
        // A NaN input gives a number here, and NaN again from the final
        // product with `v`.
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-CLAMP)),
            _mm256_set1_ps(CLAMP),
        );
        let x2 = _mm256_mul_ps(x, x);
        let mut p = _mm256_set1_ps(ALPHA[6]);
        for a in ALPHA[..6].iter().rev() {
            p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(*a));
        }
        let p = _mm256_mul_ps(x, p);
        let mut q = _mm256_set1_ps(BETA[4]);
        for b in BETA[..4].iter().rev() {
            q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(*b));
        }
        let at_clamp = _mm256_cmp_ps::<_CMP_GE_OQ>(x2, _mm256_set1_ps(CLAMP * CLAMP));
        let e = _mm256_blendv_ps(
            _mm256_div_ps(p, q),
            _mm256_mul_ps(x, _mm256_set1_ps(1.0 / CLAMP)),
            at_clamp,
        );
        _mm256_mul_ps(
            _mm256_mul_ps(v, _mm256_set1_ps(0.5)),
            _mm256_add_ps(e, _mm256_set1_ps(1.0)),
        )
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use std::arch::aarch64::*;

    use super::{ALPHA, BETA, CLAMP, FRAC_1_SQRT_2};

    pub(super) fn run(xs: &mut [f32]) {
        // SAFETY: only `Kernel::neon` reaches this function, with the proof
        // of NEON.
        unsafe { run_neon(xs) }
    }

    #[target_feature(enable = "neon")]
    fn run_neon(xs: &mut [f32]) {
        let mut chunks = xs.chunks_exact_mut(4);
        for c in &mut chunks {
            // SAFETY: `c` holds exactly 4 values.
            unsafe { vst1q_f32(c.as_mut_ptr(), gelu4(vld1q_f32(c.as_ptr()))) };
        }
        super::gelu_scalar(chunks.into_remainder());
    }

    /// [`super::gelu`] on 4 lanes, with the same operations in the same
    /// order (so the same bits).
    #[inline]
    #[target_feature(enable = "neon")]
    pub(crate) fn gelu4(v: float32x4_t) -> float32x4_t {
        let x = vmulq_n_f32(v, FRAC_1_SQRT_2);
        // A NaN input gives a number here (`vmaxnmq`/`vminnmq` return the
        // number), and NaN again from the final product with `v`.
        let x = vminnmq_f32(vmaxnmq_f32(x, vdupq_n_f32(-CLAMP)), vdupq_n_f32(CLAMP));
        let x2 = vmulq_f32(x, x);
        let mut p = vdupq_n_f32(ALPHA[6]);
        for a in ALPHA[..6].iter().rev() {
            p = vfmaq_f32(vdupq_n_f32(*a), x2, p);
        }
        let p = vmulq_f32(x, p);
        let mut q = vdupq_n_f32(BETA[4]);
        for b in BETA[..4].iter().rev() {
            q = vfmaq_f32(vdupq_n_f32(*b), x2, q);
        }
        let at_clamp = vcgeq_f32(x2, vdupq_n_f32(CLAMP * CLAMP));
        let e = vbslq_f32(at_clamp, vmulq_n_f32(x, 1.0 / CLAMP), vdivq_f32(p, q));
        vmulq_f32(vmulq_n_f32(v, 0.5), vaddq_f32(e, vdupq_n_f32(1.0)))
    }
}

/// Values per block on the pool: large enough that a block's overhead is
/// noise, small enough that both threads get work on a 128x128 plane set.
const BLOCK: usize = 1 << 15;

/// Exact GELU of an f32 tensor, any shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Gelu;

impl Op for Gelu {
    fn name(&self) -> StaticName {
        "LgmsGelu".into()
    }
    op_as_typed_op!();
}

impl EvalOp for Gelu {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        // In place when this op holds the only reference to its input, as
        // tract's element-wise ops do; a copy otherwise.
        let mut t = inputs.remove(0).into_tensor();
        {
            let mut view = t.try_as_plain_ram_mut()?;
            let xs = view.as_slice_mut::<f32>()?;
            let (n, shared) = (xs.len(), SharedOut(xs.as_mut_ptr()));
            let k = crate::kernels::best().gelu();
            for_each_block(n.div_ceil(BLOCK), |b| {
                let start = b * BLOCK;
                // SAFETY: block b owns values [start, min(start + BLOCK, n)),
                // disjoint between blocks, inside the tensor held above.
                let xs = unsafe {
                    std::slice::from_raw_parts_mut(shared.ptr().add(start), BLOCK.min(n - start))
                };
                k.run(xs);
            });
        }
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for Gelu {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        if inputs[0].datum_type != f32::datum_type() {
            bail!("LgmsGelu takes f32, got {:?}", inputs[0].datum_type);
        }
        Ok(tvec!(inputs[0].without_value()))
    }
    as_op!();
}

/// Whether node `id` is tract's `GeluExact` on f32.
pub(crate) fn is_gelu_exact(model: &TypedModel, id: usize) -> bool {
    let node = model.node(id);
    node.op_as::<ElementWiseOp>()
        .is_some_and(|e| e.0.is::<GeluExact>())
        && node.inputs.len() == 1
        && model
            .outlet_fact(node.inputs[0])
            .is_ok_and(|f| f.datum_type == f32::datum_type())
}

/// Replaces every f32 `GeluExact`; returns how many.
pub fn replace_all(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        if !is_gelu_exact(model, id) {
            continue;
        }
        let node = model.node(id);
        let (x, name) = (node.inputs[0], format!("{}.lgms_gelu", node.name));
        swap_in(model, &[x], OutletId::new(id, 0), name, Gelu)?;
        replaced += 1;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64 by its Taylor series (for |x| <= 4: the cancellation
    /// there costs about 7 of f64's 16 digits).
    fn erf64(x: f64) -> f64 {
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_is_within_a_few_ulp_of_the_true_one() {
        let mut worst = 0f64;
        for k in -40_000..=40_000 {
            let x = k as f32 * 1e-4;
            let err = (erf(x) as f64 - erf64(x as f64)).abs();
            worst = worst.max(err);
        }
        // One ulp of f32 below 1 is 6e-8; the f32 evaluation measures 3.3e-7.
        assert!(worst < 3.5e-7, "max |erf error| {worst:e}");
        // Beyond 4, 1 - erf(x) < 1.6e-8: f32's erf is 1.
        for x in [4.0f32, 4.5, 7.0, 1e30, f32::INFINITY] {
            assert_eq!((erf(x), erf(-x)), (1.0, -1.0), "{x}");
        }
    }

    #[test]
    fn gelu_has_its_limits_and_symmetry() {
        assert_eq!(gelu(0.0), 0.0);
        assert_eq!(gelu(10.0), 10.0);
        assert_eq!(gelu(-10.0), 0.0);
        assert_eq!(gelu(f32::INFINITY), f32::INFINITY);
        assert!(gelu(f32::NAN).is_nan());
        // gelu(x) - gelu(-x) = x.
        for x in [0.1f32, 0.7, 1.3, 2.9] {
            assert!((gelu(x) - gelu(-x) - x).abs() < 1e-6, "{x}");
        }
    }
}
