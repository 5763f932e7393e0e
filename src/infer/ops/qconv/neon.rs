//! The aarch64 int8 kernel: NEON `sdot` (activations stored as `q - 128`,
//! so both operands are signed). Built only by [`Kernel::neon_dot`], which
//! takes the proof of the dot-product feature.

use std::arch::aarch64::*;
use std::arch::asm;

use super::{check, Acc, Kernel, CO, PX};
use crate::kernels::cpu::DotProd;

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
