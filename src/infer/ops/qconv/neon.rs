//! The aarch64 int8 kernels: NEON `sdot` where the core has the
//! dot-product extension (Cortex-A76/A78), and a widening one for every
//! other NEON core (the Pi 4's Cortex-A72). Built only by
//! [`Kernel::neon_dot`] and [`Kernel::neon_widening`], which take the proofs
//! of the features they use.
//!
//! Without `sdot`, base NEON multiplies bytes only into i16 lanes (`smull`,
//! `smlal`), and two i8 x i8 products summed in an i16 lane overflow at
//! `(-128) * (-128) + (-128) * (-128) = 32768`: exact only for 7-bit
//! weights. The widening kernel instead widens both operands to i16 and
//! multiplies-accumulates into i32 lanes (`smlal` on 16-bit lanes, by
//! weight lane), where a u8 x i8 product (|p| <= 255 * 128) and every sum
//! the scalar kernel forms fit: the accumulators equal [`super::scalar`]'s
//! bit for bit, for any weights, with the activations stored as plain u8.
//! That costs 64 `smlal` per 256 multiply-adds (4 per instruction, as
//! tract's f32 `fmla` and its own int8 `smlal` kernels), where `sdot` does
//! 16 per instruction.

use std::arch::aarch64::*;
use std::arch::asm;

use super::{check, Acc, Kernel, CO, PX};
use crate::kernels::cpu::{DotProd, Neon};

impl Kernel {
    /// The NEON `sdot` kernel.
    pub fn neon_dot(_: DotProd) -> Kernel {
        Kernel {
            name: "neon-dotprod",
            signed: true,
            needs_7bit: false,
            tile,
        }
    }

    /// The NEON widening kernel (no dot-product extension needed).
    pub fn neon_widening(_: Neon) -> Kernel {
        Kernel {
            name: "neon-widening",
            signed: false,
            needs_7bit: false,
            tile: tile_widening,
        }
    }
}

fn tile(x: &[u8], base: usize, taps: &[usize], plane: usize, cin4: usize, w: &[i8], acc: &mut Acc) {
    check(x, base, taps, plane, cin4, w);
    // SAFETY: only `Kernel::neon_dot` reaches this function, with the proof
    // of the dot-product feature; every read is in bounds (`check`).
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
    // SAFETY: the caller guarantees the features and that `check` passed: the
    // 16-byte loads stay inside `x` and `w`, the stores inside `acc`.
    unsafe {
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

fn tile_widening(
    x: &[u8],
    base: usize,
    taps: &[usize],
    plane: usize,
    cin4: usize,
    w: &[i8],
    acc: &mut Acc,
) {
    check(x, base, taps, plane, cin4, w);
    // SAFETY: only `Kernel::neon_widening` reaches this function, with the
    // proof of NEON; every read is in bounds (`check`).
    unsafe { tile_wide(x, base, taps, plane, cin4, w, acc) }
}

/// `a[g] += x[q] * w[L]` for the 16 pixels of channel `q` (widened to i16 in
/// `x[q][0]`, pixels 0..8, and `x[q][1]`, pixels 8..16), `a[g]` holding
/// pixels `4g..4g+4` of one output channel: `smlal`/`smlal2` by lane.
#[inline]
#[target_feature(enable = "neon")]
fn mac<const L: i32>(a: &mut [int32x4_t; 4], x: &[int16x8_t; 2], w: int16x8_t) {
    a[0] = vmlal_laneq_s16::<L>(a[0], vget_low_s16(x[0]), w);
    a[1] = vmlal_high_laneq_s16::<L>(a[1], x[0], w);
    a[2] = vmlal_laneq_s16::<L>(a[2], vget_low_s16(x[1]), w);
    a[3] = vmlal_high_laneq_s16::<L>(a[3], x[1], w);
}

#[target_feature(enable = "neon")]
unsafe fn tile_wide(
    x: &[u8],
    base: usize,
    taps: &[usize],
    plane: usize,
    cin4: usize,
    w: &[i8],
    acc: &mut Acc,
) {
    // SAFETY: the caller guarantees NEON and that `check` passed: the
    // 64-byte loads from `x` (16 pixels x 4 channels from `base + tap +
    // c4 * plane`) and the 16-byte loads from `w` stay inside the slices,
    // the stores inside `acc`.
    unsafe {
        // a[r][g]: output channel r, pixels 4g..4g+4.
        let mut a = [[vdupq_n_s32(0); 4]; CO];
        let mut wp = w.as_ptr();
        for &off in taps {
            let mut xp = x.as_ptr().add(base + off);
            for _ in 0..cin4 {
                // De-interleaved: c.i holds input channel i of the 16 pixels.
                let c = vld4q_u8(xp);
                // u8 -> i16 (0..=255): exact.
                let wide = |v: uint8x16_t| -> [int16x8_t; 2] {
                    [
                        vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(v))),
                        vreinterpretq_s16_u16(vmovl_high_u8(v)),
                    ]
                };
                let (x0, x1, x2, x3) = (wide(c.0), wide(c.1), wide(c.2), wide(c.3));
                // The block's weights `[4 out][4 in]`, widened: lane 4r + i
                // of (wl, wh) is output r's weight for input i.
                let wv = vld1q_s8(wp);
                let (wl, wh) = (vmovl_s8(vget_low_s8(wv)), vmovl_high_s8(wv));
                mac::<0>(&mut a[0], &x0, wl);
                mac::<1>(&mut a[0], &x1, wl);
                mac::<2>(&mut a[0], &x2, wl);
                mac::<3>(&mut a[0], &x3, wl);
                mac::<4>(&mut a[1], &x0, wl);
                mac::<5>(&mut a[1], &x1, wl);
                mac::<6>(&mut a[1], &x2, wl);
                mac::<7>(&mut a[1], &x3, wl);
                mac::<0>(&mut a[2], &x0, wh);
                mac::<1>(&mut a[2], &x1, wh);
                mac::<2>(&mut a[2], &x2, wh);
                mac::<3>(&mut a[2], &x3, wh);
                mac::<4>(&mut a[3], &x0, wh);
                mac::<5>(&mut a[3], &x1, wh);
                mac::<6>(&mut a[3], &x2, wh);
                mac::<7>(&mut a[3], &x3, wh);
                xp = xp.add(plane);
                wp = wp.add(16);
            }
        }
        for (r, ar) in a.iter().enumerate() {
            for (g, &v) in ar.iter().enumerate() {
                vst1q_s32(acc.as_mut_ptr().add(r * PX + 4 * g), v);
            }
        }
    }
}
