//! The reference int8 kernel: u8 activations, i32 sums, plain loops.

use super::plan::{round_even_i32, Store};
use super::{check, Acc, CO, PX};

/// The reference kernel: u8 activations, i32 sums.
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

/// The reference epilogue: requantises rows `0..rows` of `acc`, the first
/// `n` pixels of each (`round_ties_even((acc + corr[r]) * mult[r]) +
/// y_zp`, clamped to 0..=255), and stores them at `dst[r]` as `store`
/// says. Plain loops the compiler vectorises (8 lanes wide inside the
/// AVX2-compiled row).
///
/// # Safety
/// `dst[r]` (r < rows) must be valid for `n` values of the output type
/// (f32 for `Store::F32*`, u8 otherwise) that nothing else accesses.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn store_tile(
    acc: &Acc,
    rows: usize,
    n: usize,
    corr: &[i32; CO],
    mult: &[f32; CO],
    y_zp: i32,
    store: Store<'_>,
    dst: &[*mut u8; CO],
) {
    let n = n.min(PX);
    for r in 0..rows.min(CO) {
        let (c, m) = (corr[r], mult[r]);
        // Values beyond +-1024 clamp to 0 or 255 either way.
        let requant = |a: i32| {
            let v = ((a.wrapping_add(c)) as f32 * m).clamp(-1024.0, 1024.0);
            (round_even_i32(v) + y_zp).clamp(0, 255)
        };
        let mut q = [0i32; PX];
        for (q, &a) in q.iter_mut().zip(&acc[r * PX..(r + 1) * PX]) {
            *q = requant(a);
        }
        match store {
            Store::F32 { zp, scale, lo, hi } => {
                let mut f = [0f32; PX];
                for (f, &q) in f.iter_mut().zip(&q) {
                    *f = (q.clamp(lo, hi) - zp) as f32 * scale;
                }
                // SAFETY: the caller's guarantee on `dst[r]`.
                unsafe { std::slice::from_raw_parts_mut(dst[r] as *mut f32, n) }
                    .copy_from_slice(&f[..n]);
            }
            Store::F32Table(t) => {
                // SAFETY: as above.
                let d = unsafe { std::slice::from_raw_parts_mut(dst[r] as *mut f32, n) };
                for (d, &q) in d.iter_mut().zip(&q) {
                    *d = t[q as u8 as usize];
                }
            }
            Store::F32Tables(ts) => {
                // SAFETY: as above.
                let d = unsafe { std::slice::from_raw_parts_mut(dst[r] as *mut f32, n) };
                for (d, &q) in d.iter_mut().zip(&q) {
                    *d = ts[r][q as u8 as usize];
                }
            }
            Store::U8 | Store::U8Table(_) => {
                // SAFETY: as above.
                let d = unsafe { std::slice::from_raw_parts_mut(dst[r], n) };
                for (d, &q) in d.iter_mut().zip(&q) {
                    *d = match store {
                        Store::U8Table(t) => t[q as u8 as usize],
                        _ => q as u8,
                    };
                }
            }
        }
    }
}
