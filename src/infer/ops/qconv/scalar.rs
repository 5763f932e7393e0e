//! The reference int8 kernel: u8 activations, i32 sums, plain loops.

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
