//! The x86_64 int8 kernels: AVX2 (`vpmaddubsw` + `vpmaddwd`, 7-bit
//! weights), AVX-VNNI and AVX-512 VNNI (`vpdpbusd`, any weights). Each is
//! built only by a constructor that takes the proof of its features.

use std::arch::x86_64::*;

use super::plan::Store;
use super::{check, Acc, Kernel, CO, PX};
use crate::kernels::cpu::{Avx2Fma, Avx512Vnni, AvxVnni};

impl Kernel {
    /// The AVX2 kernel (needs 7-bit weights).
    pub fn avx2(proof: Avx2Fma) -> Kernel {
        Kernel {
            name: "avx2",
            signed: false,
            needs_7bit: true,
            avx2: Some(proof),
            tile: tile_avx2_checked,
        }
    }

    /// The AVX-VNNI kernel.
    pub fn avx_vnni(proof: AvxVnni) -> Kernel {
        Kernel {
            name: "avx-vnni",
            signed: false,
            needs_7bit: false,
            avx2: Some(proof.avx2()),
            tile: tile_avxvnni_checked,
        }
    }

    /// The AVX-512 VNNI kernel (with VL, on ymm registers).
    pub fn avx512_vnni(proof: Avx512Vnni) -> Kernel {
        Kernel {
            name: "avx512-vnni",
            signed: false,
            needs_7bit: false,
            avx2: Some(proof.avx2()),
            tile: tile_avx512vnni_checked,
        }
    }
}

/// The safe entries of the tables: bounds checked, then the kernel body.
macro_rules! checked {
    ($name:ident, $body:ident, $ctor:ident) => {
        fn $name(
            x: &[u8],
            base: usize,
            taps: &[usize],
            plane: usize,
            cin4: usize,
            w: &[i8],
            acc: &mut Acc,
        ) {
            check(x, base, taps, plane, cin4, w);
            // SAFETY: only the `Kernel` constructor named by `$ctor`
            // reaches this function, with the proof of the features; every
            // read is in bounds (`check`).
            unsafe { $body(x, base, taps, plane, cin4, w, acc) }
        }
    };
}
checked!(tile_avx2_checked, tile_avx2, avx2);
checked!(tile_avxvnni_checked, tile_avxvnni, avx_vnni);
checked!(tile_avx512vnni_checked, tile_avx512vnni, avx512_vnni);

/// `a` plus the 4-byte dot products of `x` (u8) and `w` (i8) per i32
/// lane, in AVX2: u8 x i8 pairs to i16 (`vpmaddubsw`, exact for 7-bit
/// weights), then pairs of i16 to i32 (`vpmaddwd` by ones).
///
/// # Safety
/// The CPU must have AVX2 (it is inlined into AVX2 kernel bodies only).
#[inline(always)]
unsafe fn dp_avx2(a: __m256i, x: __m256i, w: __m256i) -> __m256i {
    // SAFETY: the caller guarantees AVX2.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), ones))
    }
}

/// The kernel loop around one dot-product step: 4 output channels x 16
/// pixels (two registers of 8 pixels x 4 channels) per input-channel
/// quad and tap, each output channel's 4 weights in every lane.
macro_rules! tile_loop {
    ($name:ident, $features:literal, $dp:ident) => {
        /// # Safety
        /// The CPU must have the features; every read in bounds ([`check`]).
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
            // SAFETY: the caller guarantees the features and that `check`
            // passed: the two 32-byte loads per quad stay inside `x`
            // (`base + tap + (cin4 - 1) * plane + 64 <= x.len()`), the weight
            // reads inside `w`'s `taps * cin4 * 16` bytes, the stores inside
            // `acc`.
            unsafe {
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

/// Requantises rows `0..rows` of `acc` (`round_ties_even((acc + corr[r]) *
/// mult[r]) + y_zp`, clamped to 0..=255) and stores each row's 16 values
/// at `dst[r]` as `store` says: the AVX2 form of [`super::scalar::store_tile`],
/// bit for bit, with `vroundps` and the u8 table in registers
/// ([`lookup_u8_avx2`]); 4-17 % faster per conv than the plain loops
/// compiled for AVX2 with gathers.
///
/// # Safety
/// The CPU must have AVX2; `dst[r]` (r < rows) must be valid for 16
/// values of the output type (f32 or u8).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn store_tile_avx2(
    acc: &Acc,
    rows: usize,
    corr: &[i32; CO],
    mult: &[f32; CO],
    y_zp: i32,
    store: Store<'_>,
    dst: &[*mut u8; CO],
) {
    if matches!(store, Store::U8 | Store::U8Table(_)) {
        // SAFETY: the caller's guarantees, passed on.
        return unsafe { store_u8_tile_avx2(acc, rows, corr, mult, y_zp, store, dst) };
    }
    // SAFETY: the caller guarantees AVX2 and the destinations; the loads
    // stay inside `acc`.
    unsafe {
        // The levels' range, narrower where an f32 store clamps them.
        let (qlo, qhi) = match store {
            Store::F32 { lo, hi, .. } => (lo.max(0), hi.min(255)),
            _ => (0, 255),
        };
        let lo = _mm256_set1_ps((qlo - y_zp) as f32);
        let hi = _mm256_set1_ps((qhi - y_zp) as f32);
        let zpf = _mm256_set1_ps(y_zp as f32);
        for r in 0..rows.min(CO) {
            let (c, m) = (_mm256_set1_epi32(corr[r]), _mm256_set1_ps(mult[r]));
            for h in 0..2 {
                let a = _mm256_loadu_si256(acc.as_ptr().add(r * PX + 8 * h) as *const __m256i);
                let f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(a, c)), m);
                // q - y_zp, rounded half to even and clamped; as floats,
                // every value is an exact integer.
                let v = _mm256_min_ps(
                    _mm256_max_ps(
                        _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(f),
                        lo,
                    ),
                    hi,
                );
                match store {
                    Store::F32 { zp, scale, .. } => {
                        let d = (dst[r] as *mut f32).add(8 * h);
                        let out = _mm256_mul_ps(
                            _mm256_add_ps(v, _mm256_set1_ps((y_zp - zp) as f32)),
                            _mm256_set1_ps(scale),
                        );
                        _mm256_storeu_ps(d, out);
                    }
                    Store::F32Table(t) => {
                        let idx = _mm256_cvtps_epi32(_mm256_add_ps(v, zpf));
                        let d = (dst[r] as *mut f32).add(8 * h);
                        _mm256_storeu_ps(d, _mm256_i32gather_ps::<4>(t.as_ptr(), idx));
                    }
                    Store::F32Tables(ts) => {
                        let idx = _mm256_cvtps_epi32(_mm256_add_ps(v, zpf));
                        let d = (dst[r] as *mut f32).add(8 * h);
                        _mm256_storeu_ps(d, _mm256_i32gather_ps::<4>(ts[r].as_ptr(), idx));
                    }
                    // Taken above.
                    Store::U8 | Store::U8Table(_) => {}
                }
            }
        }
    }
}

/// [`store_tile_avx2`] for the u8 stores, with the clamp and the zero
/// point in the integer packs: `vcvtps2dq` rounds half to even (the
/// default rounding mode), the i32 to i16 pack saturates, the zero point
/// is a saturating i16 add and the i16 to u8 pack clamps to 0..=255, so
/// the levels equal the reference's for every sum; values above 2^30 are
/// cut there first (above 2^31 the conversion would give i32::MIN).
/// Five float operations per 8 values instead of eight.
///
/// # Safety
/// As for [`store_tile_avx2`], with a u8 `store` and `y_zp` in 0..=255
/// (the plan's zero points are).
#[target_feature(enable = "avx2,fma")]
unsafe fn store_u8_tile_avx2(
    acc: &Acc,
    rows: usize,
    corr: &[i32; CO],
    mult: &[f32; CO],
    y_zp: i32,
    store: Store<'_>,
    dst: &[*mut u8; CO],
) {
    // SAFETY: the caller guarantees AVX2 and the destinations; the loads
    // stay inside `acc`.
    unsafe {
        let top = _mm256_set1_ps((1u32 << 30) as f32);
        let mut q = [_mm256_setzero_si256(); 2 * CO];
        for r in 0..rows.min(CO) {
            let (c, m) = (_mm256_set1_epi32(corr[r]), _mm256_set1_ps(mult[r]));
            for h in 0..2 {
                let a = _mm256_loadu_si256(acc.as_ptr().add(r * PX + 8 * h) as *const __m256i);
                let f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(a, c)), m);
                q[2 * r + h] = _mm256_cvtps_epi32(_mm256_min_ps(f, top));
            }
        }
        let zp = _mm256_set1_epi16(y_zp as i16);
        // Two rows per register: 32 bytes, row 2p then row 2p + 1.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for p in 0..rows.div_ceil(2) {
            let r0 = _mm256_adds_epi16(_mm256_packs_epi32(q[4 * p], q[4 * p + 1]), zp);
            let r1 = _mm256_adds_epi16(_mm256_packs_epi32(q[4 * p + 2], q[4 * p + 3]), zp);
            // Dwords: r0 px 0-3, 8-11, r1 0-3, 8-11 | r0 4-7, 12-15, r1 4-7, 12-15.
            let b = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(r0, r1), order);
            let b = match store {
                Store::U8Table(t) => lookup_u8_avx2(t, b),
                _ => b,
            };
            _mm_storeu_si128(dst[2 * p] as *mut __m128i, _mm256_castsi256_si128(b));
            if 2 * p + 1 < rows {
                _mm_storeu_si128(
                    dst[2 * p + 1] as *mut __m128i,
                    _mm256_extracti128_si256::<1>(b),
                );
            }
        }
    }
}

/// `table[x]` for each of the 32 bytes of `x`: the 16-entry `vpshufb`
/// lookup of the low nibble in each of the table's 16 blocks, then a
/// tree of 15 byte blends on bits 4, 5, 6 and 7 (`vpblendvb` takes each
/// byte's top bit, so each level shifts its bit there). 35 operations
/// per 32 bytes, against 64 for a pass per block that zeroes the bytes of
/// the other blocks; twice as fast as two 8-lane gathers here.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn lookup_u8_avx2(table: &[u8; 256], x: __m256i) -> __m256i {
    // SAFETY: the caller guarantees AVX2; the loads stay inside `table`.
    unsafe {
        let lo = _mm256_and_si256(x, _mm256_set1_epi8(0x0f));
        let block = |b: usize| {
            let t = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                table.as_ptr().add(16 * b) as *const __m128i
            ));
            _mm256_shuffle_epi8(t, lo)
        };
        // Bit 4 (then 5, 6) of each byte moved to its bit 7: the shifts
        // are by 16-bit words, but what crosses into the high byte stays
        // below its bit 7.
        let (b4, b5, b6) = (
            _mm256_slli_epi16::<3>(x),
            _mm256_slli_epi16::<2>(x),
            _mm256_slli_epi16::<1>(x),
        );
        let pair = |k: usize| _mm256_blendv_epi8(block(2 * k), block(2 * k + 1), b4);
        let quad = |k: usize| _mm256_blendv_epi8(pair(2 * k), pair(2 * k + 1), b5);
        let half = |k: usize| _mm256_blendv_epi8(quad(2 * k), quad(2 * k + 1), b6);
        _mm256_blendv_epi8(half(0), half(1), x)
    }
}

/// One channel's 32 pixels for [`fill32_avx2`]: f32 values to quantise,
/// u8 values, or one value throughout (a padding channel).
#[derive(Clone, Copy)]
pub(super) enum Line {
    F32(*const f32),
    U8(*const u8),
    Same(u8),
}

/// Writes 32 pixels of 4 channels at `dst` (128 bytes), each pixel's 4
/// channel bytes side by side, XORed with `flip`: the AVX2 form of
/// `Plan::fill_row_body`. An f32 line is quantised with `(inv_scale,
/// zp)`, `round_ties_even(v * inv_scale) + zp` clamped to 0..=255 (NaN
/// the lowest level); then `lut`, when there is one, maps every byte.
///
/// # Safety
/// The CPU must have AVX2; each line's pointer must be valid for 32
/// values; `dst` for 128 bytes.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn fill32_avx2(
    lines: &[Line; 4],
    (inv, zp): (f32, i32),
    lut: Option<&[u8; 256]>,
    flip: u8,
    dst: *mut u8,
) {
    // SAFETY: the caller guarantees AVX2, the lines and `dst`.
    unsafe {
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let mut c = [_mm256_setzero_si256(); 4];
        for (c, line) in c.iter_mut().zip(lines) {
            *c = match *line {
                Line::F32(p) => {
                    let (inv, zpf) = (_mm256_set1_ps(inv), _mm256_set1_ps(zp as f32));
                    // The clamp before the rounding (the bounds are
                    // integers, so it commutes); `max` turns NaN into
                    // the low bound.
                    let (lo, hi) = (
                        _mm256_set1_ps(-zp as f32),
                        _mm256_set1_ps((255 - zp) as f32),
                    );
                    let q: [__m256i; 4] = std::array::from_fn(|k| {
                        let v = _mm256_mul_ps(_mm256_loadu_ps(p.add(8 * k)), inv);
                        let v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
                        let v =
                            _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                        _mm256_cvtps_epi32(_mm256_add_ps(v, zpf))
                    });
                    let w = _mm256_packus_epi16(
                        _mm256_packs_epi32(q[0], q[1]),
                        _mm256_packs_epi32(q[2], q[3]),
                    );
                    _mm256_permutevar8x32_epi32(w, order)
                }
                Line::U8(p) => _mm256_loadu_si256(p as *const __m256i),
                Line::Same(v) => _mm256_set1_epi8(v as i8),
            };
            // A padding channel's value goes in as it is (as in the
            // scalar fill; its weights are zero).
            if let (Some(t), false) = (lut, matches!(line, Line::Same(_))) {
                *c = lookup_u8_avx2(t, *c);
            }
        }
        // Bytes to pixels: c0 c1 pairs and c2 c3 pairs, then the pairs
        // side by side; each 128-bit lane holds its own pixels.
        let (a, b) = (
            _mm256_unpacklo_epi8(c[0], c[1]),
            _mm256_unpackhi_epi8(c[0], c[1]),
        );
        let (d, e) = (
            _mm256_unpacklo_epi8(c[2], c[3]),
            _mm256_unpackhi_epi8(c[2], c[3]),
        );
        // Pixels 0-3 | 16-19, 4-7 | 20-23, 8-11 | 24-27, 12-15 | 28-31.
        let p = [
            _mm256_unpacklo_epi16(a, d),
            _mm256_unpackhi_epi16(a, d),
            _mm256_unpacklo_epi16(b, e),
            _mm256_unpackhi_epi16(b, e),
        ];
        let f = _mm256_set1_epi8(flip as i8);
        let out = [
            _mm256_permute2x128_si256::<0x20>(p[0], p[1]),
            _mm256_permute2x128_si256::<0x20>(p[2], p[3]),
            _mm256_permute2x128_si256::<0x31>(p[0], p[1]),
            _mm256_permute2x128_si256::<0x31>(p[2], p[3]),
        ];
        for (k, v) in out.iter().enumerate() {
            _mm256_storeu_si256(dst.add(32 * k) as *mut __m256i, _mm256_xor_si256(*v, f));
        }
    }
}
