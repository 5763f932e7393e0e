//! The x86_64 int8 kernels: AVX2 (`vpmaddubsw` + `vpmaddwd`, 7-bit
//! weights), AVX-VNNI and AVX-512 VNNI (`vpdpbusd`, any weights). Each is
//! built only by a constructor that takes the proof of its features.

use std::arch::x86_64::*;

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
