//! int8 convolution: each `QuantizeLinear -> QLinearConv -> DequantizeLinear`
//! of a quantised model fused into one operator, f32 in and f32 out, with
//! the arithmetic in int8.
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
//!   minus 128 so that both operands are signed), and on a NEON core
//!   without dotprod (the Pi 4's Cortex-A72) both operands widened to i16
//!   and `smlal` into i32 (4 products in one instruction, as f32 `fmla`,
//!   from a quarter of the bytes, without im2col);
//! - requantises exactly as ONNX says (`round_ties_even(acc * x_scale *
//!   w_scale / y_scale) + y_zero_point`, clamped to u8) and dequantises in
//!   the same pass, straight into the f32 output;
//! - folds what follows into that pass: a requantised value has only 256
//!   levels, so tract's u8 table after the conv, the dequantisation, and
//!   element-wise f32 ops after it (SiLU, GELU, a max with a scalar) become
//!   one 256-entry table, whose f32 entries tract's own ops compute at load.
//!
//! `vpmaddubsw` adds two u8 x i8 products into one i16 lane, saturating:
//! exact only when `|w0| + |w1| <= 128` for each pair of adjacent input
//! channels, which 7-bit weights guarantee (`lgms_models/quantize.py` quantises
//! with onnxruntime's `reduce_range`, range -64..63). A conv whose weights do
//! not fit is left to tract on AVX2 (the NEON kernels have no such limit).
//!
//! [`replace_all`] matches, in the decluttered graph, tract's quantised
//! `Conv` (u8 activations, i8 weights with zero point 0, per-tensor or
//! per-channel scales, group 1, stride 1, dilation 1, odd square kernel with
//! "same" padding), or the quantised `EinSum` tract makes of a 1x1 conv,
//! whose input comes from a `QuantizeLinearU8` and whose only consumer is a
//! `DequantizeLinearF32`. tract's declutter folds `DequantizeLinear -> SiLU
//! -> QuantizeLinear` and the like into a u8 `LookupTable`; one such table
//! on either side is applied inside the operator, as is a chain of
//! element-wise f32 ops after the `DequantizeLinearF32`, or one op that
//! the declutter split over the slices reading the output (the slices
//! then read activated values), and an `Add` of a residual of the output's
//! shape after them (added tile by tile, while the values are in cache).
//! Anything else stays with tract.
//!
//! The parts: [`Plan`] (the weights and geometry prepared at load, and the
//! run), [`QConv`] (the tract operator), [`replace_all`] (the graph
//! matching), and the kernels per architecture (scalar, x86, neon), of
//! which the tables of [`crate::kernels`] hold one each.

mod matcher;
mod op;
mod plan;
mod scalar;

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use matcher::{replace_all, selected};
pub use op::QConv;
pub use plan::Plan;

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
type TileFn =
    fn(x: &[u8], base: usize, taps: &[usize], plane: usize, cin4: usize, w: &[i8], acc: &mut Acc);

/// One kernel and how it wants the activations stored: the scalar
/// reference, or a SIMD one that only a proof of its CPU features builds
/// (`Kernel::avx2` and the others, per architecture).
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
    /// "scalar", "avx2", "avx-vnni", "avx512-vnni", "neon-widening" or
    /// "neon-dotprod".
    name: &'static str,
    /// Activations stored as `q - 128` (i8) instead of `q` (u8).
    signed: bool,
    /// Whether it needs `|w0| + |w1| <= 128` for adjacent input channels.
    needs_7bit: bool,
    /// The proof of AVX2 + FMA, where the kernel came with one: the
    /// plain-Rust quantisation and requantisation loops around the kernel
    /// then run compiled for them.
    #[cfg(target_arch = "x86_64")]
    avx2: Option<crate::kernels::cpu::Avx2Fma>,
    /// The block function.
    tile: TileFn,
}

impl Kernel {
    /// The reference kernel (u8 activations).
    pub const SCALAR: Kernel = Kernel {
        name: "scalar",
        signed: false,
        needs_7bit: false,
        #[cfg(target_arch = "x86_64")]
        avx2: None,
        tile: scalar::tile,
    };

    /// "scalar", "avx2", "avx-vnni", "avx512-vnni", "neon-widening" or
    /// "neon-dotprod".
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether it needs `|w0| + |w1| <= 128` for adjacent input channels
    /// (a conv whose weights do not fit is left to tract).
    pub fn needs_7bit(&self) -> bool {
        self.needs_7bit
    }

    /// Whether it sums several byte products per instruction and lane
    /// (`vpmaddubsw`, `vpdpbusd`, `sdot`): where int8 does less arithmetic
    /// than f32, not only less memory traffic (the widening NEON kernel
    /// does one product per lane, as f32's `fmla` does).
    pub fn dot_product(&self) -> bool {
        matches!(
            self.name,
            "avx2" | "avx-vnni" | "avx512-vnni" | "neon-dotprod"
        )
    }
}

/// Every read a kernel makes is inside `x` and `w`.
fn check(x: &[u8], base: usize, taps: &[usize], plane: usize, cin4: usize, w: &[i8]) {
    // Checked arithmetic: a wrapped offset must never pass.
    let last = taps.iter().max().copied().unwrap_or(0);
    let end = cin4
        .checked_sub(1)
        .and_then(|c| c.checked_mul(plane))
        .and_then(|n| n.checked_add(base))
        .and_then(|n| n.checked_add(last))
        .and_then(|n| n.checked_add(PX * 4));
    assert!(
        end.is_some_and(|e| e <= x.len()),
        "int8 conv input too small"
    );
    let weights = taps.len().checked_mul(cin4).and_then(|n| n.checked_mul(16));
    assert!(
        weights.is_some_and(|n| w.len() >= n),
        "int8 conv weights too small"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Each distinct SIMD int8 kernel of the tables this CPU supports.
    fn simd_kernels() -> Vec<Kernel> {
        let mut out: Vec<Kernel> = Vec::new();
        for t in crate::kernels::supported() {
            let k = t.qconv();
            if k.name != "scalar" && !out.iter().any(|o| o.name == k.name) {
                out.push(k);
            }
        }
        out
    }

    /// One block through `k` and through the scalar reference, with the
    /// activations stored as `k` wants them; the accumulators must be
    /// identical (a signed kernel's differ by `128 * sum(w)` per output
    /// channel, which the plan adds back through the zero point).
    fn same_block(
        k: Kernel,
        x: &[u8],
        base: usize,
        taps: &[usize],
        plane: usize,
        cin4: usize,
        w: &[i8],
    ) {
        let mut want = [0i32; CO * PX];
        scalar::tile(x, base, taps, plane, cin4, w, &mut want);
        let stored: Vec<u8> = x
            .iter()
            .map(|&v| if k.signed { v ^ 0x80 } else { v })
            .collect();
        let mut got = [i32::MIN; CO * PX];
        (k.tile)(&stored, base, taps, plane, cin4, w, &mut got);
        if k.signed {
            for r in 0..CO {
                let wsum: i32 = (0..taps.len() * cin4)
                    .flat_map(|b| &w[b * 16 + r * 4..][..4])
                    .map(|&v| v as i32)
                    .sum();
                got[r * PX..(r + 1) * PX]
                    .iter_mut()
                    .for_each(|a| *a += 128 * wsum);
            }
        }
        assert_eq!(want, got, "{} taps {taps:?} cin4 {cin4}", k.name);
    }

    /// A random block: a buffer with unaligned tap offsets and planes.
    fn block() -> impl Strategy<Value = (Vec<u8>, usize, Vec<usize>, usize, usize, Vec<i8>)> {
        (1usize..6, 1usize..10, 0usize..40, 64usize..200).prop_flat_map(
            |(cin4, ntaps, base, plane)| {
                let taps = proptest::collection::vec(0usize..150, ntaps);
                (Just(cin4), Just(base), taps, Just(plane)).prop_flat_map(
                    |(cin4, base, taps, plane)| {
                        let last = taps.iter().max().copied().unwrap_or(0);
                        let len = base + last + (cin4 - 1) * plane + PX * 4;
                        let wlen = taps.len() * cin4 * 16;
                        (
                            proptest::collection::vec(any::<u8>(), len),
                            Just(base),
                            Just(taps),
                            Just(plane),
                            Just(cin4),
                            proptest::collection::vec(any::<i8>(), wlen),
                        )
                    },
                )
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every SIMD kernel on random bytes and weights (8-bit; 7-bit for
        /// a kernel that needs them).
        #[test]
        fn simd_blocks_equal_the_scalar_block((x, base, taps, plane, cin4, w) in block()) {
            for k in simd_kernels() {
                let w: Vec<i8> = if k.needs_7bit { w.iter().map(|&v| v >> 1).collect() } else { w.clone() };
                same_block(k, &x, base, &taps, plane, cin4, &w);
            }
        }
    }

    /// The extremes: every weight -128 or 127 against activations 0 and
    /// 255, where any i16 sum of two products would overflow, and 25 taps x
    /// 16 planes of them (the largest sums of a 5x5 conv over 64 channels).
    #[test]
    fn simd_blocks_are_exact_at_the_extremes() {
        let (cin4, plane, taps) = (16, 64, (0..25).collect::<Vec<usize>>());
        let len = taps[24] + (cin4 - 1) * plane + PX * 4;
        let eight_bit: Vec<Kernel> = simd_kernels()
            .into_iter()
            .filter(|k| !k.needs_7bit)
            .collect();
        // The boards (every aarch64 table) take 8-bit weights.
        #[cfg(target_arch = "aarch64")]
        assert!(!eight_bit.is_empty(), "no 8-bit int8 kernel to test");
        for k in eight_bit {
            for wv in [-128i8, 127] {
                for xv in [0u8, 255] {
                    let w = vec![wv; taps.len() * cin4 * 16];
                    same_block(k, &vec![xv; len], 0, &taps, plane, cin4, &w);
                }
            }
            // Mixed extremes, varying per pixel, channel and output.
            let x: Vec<u8> = (0..len).map(|i| if i % 3 == 0 { 0 } else { 255 }).collect();
            let w: Vec<i8> = (0..taps.len() * cin4 * 16)
                .map(|i| if i % 5 < 2 { -128 } else { 127 })
                .collect();
            same_block(k, &x, 0, &taps, plane, cin4, &w);
        }
    }

    /// The conv the output tests share: 8 -> `cout` channels, 3x3, over
    /// 3 x 37 pixels (two whole 16-pixel segments and a tail per row), the
    /// input quantised at scale 0.02 and zero point 117, the output at
    /// scale 0.05 and zero point 131, then `lut_out` and the
    /// dequantisation `deq`. Its input comes from [`test_input`].
    fn test_conv(cout: usize, lut_out: Option<&[u8; 256]>, deq: Option<(i32, f32)>) -> Plan {
        let (cin, k) = (8, 3);
        let wts: Vec<i8> = (0..cout * cin * k * k)
            .map(|i| ((i * 37 % 61) as i32 - 30) as i8)
            .collect();
        Plan::new(
            (cin, cout, k, 3, 37, 1),
            &wts,
            None,
            0.02,
            117,
            &[0.003],
            0.05,
            131,
        )
        .unwrap()
        .with_io(Some((1.0 / 0.02, 117)), None, lut_out, deq)
    }

    /// [`test_conv`]'s input: values from -2.5 to 2.5.
    fn test_input() -> Vec<f32> {
        (0..8 * 3 * 37)
            .map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 5.0)
            .collect()
    }

    /// `plan` run on `x` with `kernel`: the bits of its output values (of a
    /// u8 output, four values to each f32 slot, the rest zeros).
    fn output_bits(plan: &Plan, x: &[f32], kernel: Kernel) -> Vec<u32> {
        use super::plan::Input;
        let mut buf = vec![0u8; plan.buf_len()];
        let mut out = vec![0f32; plan.cout * plan.h * plan.w];
        plan.run_any(
            &[Input::F32(x)],
            &mut buf,
            super::super::SharedOut(out.as_mut_ptr()),
            kernel,
            None,
        );
        out.iter().map(|v| v.to_bits()).collect()
    }

    /// A conv whose scales are NaN, infinite, zero or negative (or whose
    /// requantisation factor overflows) is refused with an error naming
    /// the scales, and so left to tract.
    #[test]
    fn bad_scales_are_refused() {
        let w = vec![1i8; 4 * 4 * 9];
        let new =
            |x: f32, ws: f32, y: f32| Plan::new((4, 4, 3, 2, 2, 1), &w, None, x, 0, &[ws], y, 0);
        for (x, ws, y) in [
            (f32::NAN, 0.01, 0.1),
            (0.1, f32::INFINITY, 0.1),
            (0.1, 0.01, 0.0),
            (-0.1, 0.01, 0.1),
            (0.1, -0.01, 0.1),
            (1e30, 1e30, 1e-30),
        ] {
            let err = new(x, ws, y).unwrap_err().to_string();
            assert!(
                err.contains("scales must be finite, the input and output ones positive"),
                "{x} {ws} {y}: {err}"
            );
        }
        assert!(
            new(0.1, 0.0, 0.1).is_ok(),
            "a zero weight scale (an all-zero channel) is fine"
        );
        assert!(new(0.1, 0.01, 0.1).is_ok());
        // Zero points are u8 levels (the u8 epilogues rely on it).
        for (x0, y0) in [(-1, 0), (0, 256), (300, 7)] {
            let err = Plan::new((4, 4, 3, 2, 2, 1), &w, None, 0.1, x0, &[0.01], 0.1, y0)
                .unwrap_err()
                .to_string();
            assert!(err.contains("must be u8 levels"), "{x0} {y0}: {err}");
        }
    }

    /// Every kind of output (f32 or u8, with or without a table) of every
    /// SIMD kernel, through its epilogue, equals the scalar kernel's with
    /// the reference epilogue, bit for bit: whole 16-pixel segments and the
    /// tail of a row.
    #[test]
    fn every_output_kind_equals_the_scalar_path() {
        let table: [u8; 256] = std::array::from_fn(|q| ((q * 7 + 3) % 256) as u8);
        let x = test_input();
        for (lut, deq) in [
            (None, Some((131, 0.05))),
            (Some(&table), Some((131, 0.05))),
            (None, None),
            (Some(&table), None),
        ] {
            let plan = test_conv(7, lut, deq);
            let want = output_bits(&plan, &x, crate::kernels::scalar().qconv());
            let levels: std::collections::BTreeSet<_> = want.iter().collect();
            assert!(
                levels.len() > 20,
                "{lut:?} {deq:?}: {} levels",
                levels.len()
            );
            for k in simd_kernels() {
                assert_eq!(
                    output_bits(&plan, &x, k),
                    want,
                    "{} {lut:?} {deq:?}",
                    k.name
                );
            }
        }
    }

    /// A ReLU after the conv (an f32 table that is a clamped
    /// dequantisation, bit for bit) is computed instead of looked up, and
    /// gives the table's values on every kernel; a table that differs in
    /// one level stays a table.
    #[test]
    fn a_relu_table_is_computed_and_equals_the_table() {
        use super::plan::Store;
        let (zp, scale) = (131, 0.05f32);
        let relu: [f32; 256] = std::array::from_fn(|q| ((q as i32).max(zp) - zp) as f32 * scale);
        let x = test_input();
        let computed = test_conv(8, None, Some((zp, scale))).with_f32_table(relu);
        assert!(matches!(
            computed.store(),
            Store::F32 {
                lo: 131,
                hi: 255,
                ..
            }
        ));
        let mut almost = relu;
        almost[200] += 1.0;
        let looked_up = test_conv(8, None, Some((zp, scale))).with_f32_table(almost);
        assert!(matches!(looked_up.store(), Store::F32Table(_)));
        // The levels through the table, from the u8 output of the same conv
        // (four levels to each slot, in memory order).
        let scalar = crate::kernels::scalar().qconv();
        let q: Vec<u8> = output_bits(&test_conv(8, None, None), &x, scalar)
            .iter()
            .flat_map(|b| b.to_ne_bytes())
            .take(8 * 3 * 37)
            .collect();
        let want: Vec<u32> = q.iter().map(|&l| relu[l as usize].to_bits()).collect();
        assert!(q.iter().any(|&l| (l as i32) < zp) && q.iter().any(|&l| (l as i32) > zp));
        assert_eq!(output_bits(&computed, &x, scalar), want);
        for k in simd_kernels() {
            assert_eq!(output_bits(&computed, &x, k), want, "{}", k.name);
        }
    }

    /// The quantised input buffer of every SIMD kernel's fill equals the
    /// scalar fill's (in the kernel's encoding): f32 inputs with NaN,
    /// infinities, ties and values far outside the range, in two parts
    /// (an absorbed concat), a padding channel, whole 32-pixel pieces and
    /// a tail; u8 inputs through a table.
    #[test]
    fn fill_equals_the_scalar_fill() {
        use super::plan::Input;
        let (cin, cout, k, h, w) = (7, 4, 3, 2, 70);
        let wts = vec![1i8; cout * cin * k * k];
        let hw = h * w;
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e30,
            -1e30,
            0.5,
            1.5,
            -2.5,
        ];
        let xf: Vec<f32> = (0..cin * hw)
            .map(|i| match i % 11 {
                0 => specials[i / 11 % specials.len()],
                _ => ((i * 7919 % 1000) as f32 - 500.0) * 0.013,
            })
            .collect();
        let xu: Vec<u8> = (0..cin * hw).map(|i| (i * 131 % 256) as u8).collect();
        let table: Box<[u8; 256]> = Box::new(std::array::from_fn(|q| (q * 5 + 1) as u8));
        let base = Plan::new((cin, cout, k, h, w, 1), &wts, None, 0.1, 9, &[0.01], 0.1, 0).unwrap();
        let quantised = base.with_io(Some((1.0 / 0.1, 9)), None, None, Some((0, 0.1)));
        let base = Plan::new((cin, cout, k, h, w, 1), &wts, None, 0.1, 9, &[0.01], 0.1, 0).unwrap();
        let looked_up = base.with_io(None, Some(table), None, Some((0, 0.1)));
        let cases: [(&Plan, Vec<Input<'_>>); 2] = [
            (
                &quantised,
                vec![Input::F32(&xf[..3 * hw]), Input::F32(&xf[3 * hw..])],
            ),
            (
                &looked_up,
                vec![Input::U8(&xu[..4 * hw]), Input::U8(&xu[4 * hw..])],
            ),
        ];
        for (plan, x) in cases {
            let fill = |kernel: Kernel| {
                let mut buf = vec![0xA5u8; plan.buf_len()];
                plan.fill(&x, &mut buf, kernel);
                let flip = if kernel.signed { 0x80 } else { 0 };
                buf.iter().map(|b| b ^ flip).collect::<Vec<u8>>()
            };
            let want = fill(crate::kernels::scalar().qconv());
            for k in simd_kernels() {
                assert_eq!(fill(k), want, "{}", k.name);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The AVX2 epilogue against the reference epilogue, bit for bit,
        /// for every kind of output, on any accumulators: ties (a scale of
        /// 0.5 and odd sums), sums far beyond the u8 range, 1 to 4 rows.
        #[test]
        fn avx2_epilogue_equals_the_reference(
            acc in proptest::array::uniform32(any::<i32>()),
            acc2 in proptest::array::uniform32(-3000i32..3000),
            rows in 1usize..=4,
            corr in proptest::array::uniform4(-100_000i32..100_000),
            scale_pick in proptest::array::uniform4(0usize..4),
            y_zp in 0i32..=255,
            zp in 0i32..=255,
            (lo, hi) in (0i32..=255, 0i32..=255).prop_map(|(a, b)| (a.min(b), a.max(b))),
            seed in any::<u8>(),
        ) {
            use super::plan::Store;
            let Some(_) = crate::kernels::cpu::Avx2Fma::detect() else { return Ok(()) };
            let mut a = [0i32; CO * PX];
            a[..32].copy_from_slice(&acc);
            a[32..].copy_from_slice(&acc2);
            let mult = scale_pick.map(|i| [0.5f32, 0.013, 3.0e-7, 1.0e9][i]);
            let t8: [u8; 256] = std::array::from_fn(|i| (i as u8).wrapping_mul(29).wrapping_add(seed));
            let t32: [f32; 256] = std::array::from_fn(|i| i as f32 * -0.37 + seed as f32);
            let rows32: [[f32; 256]; CO] =
                std::array::from_fn(|r| std::array::from_fn(|i| (i * (r + 2)) as f32 - seed as f32));
            for store in [
                Store::F32 { zp, scale: 0.021, lo: 0, hi: 255 },
                Store::F32 { zp, scale: 0.021, lo, hi },
                Store::F32Table(&t32),
                Store::F32Tables(&rows32),
                Store::U8,
                Store::U8Table(&t8),
            ] {
                let mut want = [[0f32; PX]; CO];
                let mut got = [[0f32; PX]; CO];
                let ptrs = |o: &mut [[f32; PX]; CO]| -> [*mut u8; CO] {
                    std::array::from_fn(|r| o[r].as_mut_ptr() as *mut u8)
                };
                // SAFETY: every row has room for PX f32 (or u8) values.
                unsafe {
                    scalar::store_tile(&a, rows, PX, &corr, &mult, y_zp, store, &ptrs(&mut want));
                    x86::store_tile_avx2(&a, rows, &corr, &mult, y_zp, store, &ptrs(&mut got));
                }
                let bits = |o: &[[f32; PX]; CO]| o.map(|r| r.map(f32::to_bits));
                prop_assert_eq!(bits(&got), bits(&want), "{:?}", store);
            }
        }
    }

    /// Every aarch64 core gets a SIMD int8 conv: the widening kernel on
    /// plain NEON (the Pi 4's Cortex-A72), `sdot` with dotprod.
    #[cfg(target_arch = "aarch64")]
    #[test]
    fn every_aarch64_table_has_a_simd_int8_kernel() {
        use crate::kernels::cpu::DotProd;
        let all = crate::kernels::supported();
        let names: Vec<_> = all.iter().map(|t| (t.name, t.qconv().name())).collect();
        assert!(names.contains(&("neon", "neon-widening")), "{names:?}");
        let dot = DotProd::detect().is_some();
        assert_eq!(
            names.contains(&("neon+dotprod", "neon-dotprod")),
            dot,
            "{names:?}"
        );
        let want = if dot { "neon-dotprod" } else { "neon-widening" };
        assert_eq!(
            crate::kernels::native().map(|t| t.qconv().name()),
            Some(want)
        );
    }
}
