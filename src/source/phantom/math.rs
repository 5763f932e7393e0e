//! The phantom's portable numerics: hashing, a small random generator,
//! polynomial transcendental functions, value noise, and blobs (smooth
//! closed shapes that drift and deform, for lesions and polyps).
//!
//! Only integer hashing and IEEE basic arithmetic are used here, so that
//! the same `(seed, t)` gives bit-identical frames on every architecture
//! (see the module doc of [`super`]).

pub(super) const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64 finaliser: a good 64-bit mix, identical everywhere.
#[inline]
pub(super) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A tiny portable random generator for sequence parameters.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64, stream: u64) -> Self {
        Rng(mix64(seed ^ mix64(stream.wrapping_add(GOLDEN))))
    }
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }
    /// Uniform in [0, 1).
    pub(super) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    pub(super) fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Uniform [0, 1) from a hash.
#[inline]
pub(super) fn hash_unit(h: u64) -> f32 {
    (h >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// Sine by range reduction and a Taylor polynomial (error < 4e-6): portable.
pub(super) fn sin_p(x: f64) -> f64 {
    use std::f64::consts::{FRAC_PI_2, PI, TAU};
    let mut x = x - (x / TAU).round() * TAU;
    if x > FRAC_PI_2 {
        x = PI - x;
    } else if x < -FRAC_PI_2 {
        x = -PI - x;
    }
    let x2 = x * x;
    x * (1.0
        + x2 * (-1.0 / 6.0
            + x2 * (1.0 / 120.0
                + x2 * (-1.0 / 5040.0 + x2 * (1.0 / 362_880.0 - x2 / 39_916_800.0)))))
}

pub(super) fn cos_p(x: f64) -> f64 {
    sin_p(x + std::f64::consts::FRAC_PI_2)
}

/// f32 sine for per-pixel use; the argument must be already small (|x| < 1e4).
#[inline]
pub(super) fn sin_f(x: f32) -> f32 {
    use std::f32::consts::{FRAC_PI_2, PI, TAU};
    // Round to nearest by truncation: one instruction, where f32::round may
    // be a library call on baseline x86_64. Same result on every platform.
    let q = x * (1.0 / TAU);
    let k = (q + if q >= 0.0 { 0.5 } else { -0.5 }) as i32;
    let mut x = x - k as f32 * TAU;
    if x > FRAC_PI_2 {
        x = PI - x;
    } else if x < -FRAC_PI_2 {
        x = -PI - x;
    }
    let x2 = x * x;
    x * (1.0
        + x2 * (-1.0 / 6.0 + x2 * (1.0 / 120.0 + x2 * (-1.0 / 5040.0 + x2 * (1.0 / 362_880.0)))))
}

/// Arctangent by two half-angle reductions and a series: portable.
pub(super) fn atan_p(z: f64) -> f64 {
    let sign = if z < 0.0 { -1.0 } else { 1.0 };
    let mut z = z.abs();
    let mut scale = 1.0;
    for _ in 0..3 {
        z /= 1.0 + (1.0 + z * z).sqrt();
        scale *= 2.0;
    }
    let z2 = z * z;
    let mut term = z;
    let mut sum = 0.0;
    for k in 0..8 {
        sum += term / (2 * k + 1) as f64;
        term *= -z2;
    }
    sign * scale * sum
}

/// log2 from the float's exponent and a mantissa polynomial (error < 1e-4).
#[inline]
pub(super) fn log2_f(x: f32) -> f32 {
    let bits = x.max(1e-30).to_bits();
    let e = ((bits >> 23) & 0xff) as i32 - 127;
    let m = f32::from_bits((bits & 0x007F_FFFF) | 0x3F80_0000); // [1, 2)
    let y = (m - 1.0) / (m + 1.0); // atanh series: log2(m) = 2/ln2 * atanh(y)
    let y2 = y * y;
    e as f32 + 2.885_39 * y * (1.0 + y2 * (1.0 / 3.0 + y2 * (1.0 / 5.0 + y2 * (1.0 / 7.0))))
}

#[inline]
pub(super) fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Smooth 2-D value noise in [0, 1), lattice spacing 1.
pub(super) fn value_noise(seed: u64, x: f64, y: f64) -> f64 {
    let (xf, yf) = (x.floor(), y.floor());
    let (xi, yi) = (xf as i64, yf as i64);
    let (fx, fy) = (x - xf, y - yf);
    let (sx, sy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
    let at = |i: i64, j: i64| {
        let h = mix64(
            seed ^ mix64(
                (i as u64).wrapping_mul(0x9E37_79B1) ^ (j as u64).wrapping_mul(0x85EB_CA77) << 1,
            ),
        );
        (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    };
    let a = at(xi, yi) + (at(xi + 1, yi) - at(xi, yi)) * sx;
    let b = at(xi, yi + 1) + (at(xi + 1, yi + 1) - at(xi, yi + 1)) * sx;
    a + (b - a) * sy
}

/// Contrast stretch of noise that clusters around 1/2, back into [0, 1].
pub(super) fn stretch(n: f64) -> f64 {
    ((n - 0.5) * 2.4 + 0.5).clamp(0.0, 1.0)
}

/// Two octaves of value noise, in [0, 1).
pub(super) fn fractal_noise(seed: u64, x: f64, y: f64) -> f64 {
    (value_noise(seed, x, y) * 2.0 + value_noise(seed ^ 0x55, x * 2.03 + 17.1, y * 2.03 - 5.3))
        / 3.0
}

// ---------------------------------------------------------------------------
// Blobs: smooth closed shapes (an ellipse with a harmonically perturbed
// radius) that drift and deform over time. Used for lesions and polyps.

/// Highest boundary harmonic.
pub(super) const KMAX: usize = 8;

/// Time-independent description of one blob.
#[derive(Debug, Clone)]
pub(super) struct BlobSpec {
    /// Rest centre, pixels.
    pub(super) cx: f64,
    pub(super) cy: f64,
    /// Semi-axes, pixels.
    pub(super) a: f64,
    pub(super) b: f64,
    /// Orientation and its wobble.
    pub(super) angle: f64,
    pub(super) angle_amp: f64,
    pub(super) angle_freq: f64,
    /// Drift: amplitude (pixels), angular frequency (rad/frame), phase, per axis.
    pub(super) drift: [(f64, f64, f64); 2],
    /// Boundary harmonics 2..=KMAX: amplitude, phase, deformation rate.
    pub(super) harm: [(f64, f64, f64); KMAX + 1],
    /// Breathing of the size: amplitude (fraction), frequency.
    pub(super) pulse: (f64, f64),
}

impl BlobSpec {
    pub(super) fn random(rng: &mut Rng, radius: f64, aspect: f64, irregular: f64) -> Self {
        let mut harm = [(0.0, 0.0, 0.0); KMAX + 1];
        for (k, h) in harm.iter_mut().enumerate().skip(2) {
            let kk = k as f64;
            // Amplitudes fall with order; irregular blobs keep high orders.
            let fall = if irregular > 0.5 {
                kk - 1.0
            } else {
                (kk - 1.0) * (kk - 1.0)
            };
            let amp = irregular * rng.range(0.3, 1.0) * 0.22 / fall;
            *h = (
                amp,
                rng.range(0.0, std::f64::consts::TAU),
                rng.range(-0.03, 0.03),
            );
        }
        // Keep the boundary radius above 0.4 whatever the phases do.
        let total: f64 = harm.iter().map(|h| h.0).sum();
        if total > 0.45 {
            for h in harm.iter_mut() {
                h.0 *= 0.45 / total;
            }
        }
        let a = radius / aspect.sqrt();
        let b = radius * aspect.sqrt();
        BlobSpec {
            cx: 0.0,
            cy: 0.0,
            a,
            b,
            angle: rng.range(-0.5, 0.5),
            angle_amp: rng.range(0.02, 0.15),
            angle_freq: rng.range(0.005, 0.02),
            drift: [
                (
                    radius * rng.range(0.1, 0.35),
                    rng.range(0.008, 0.025),
                    rng.range(0.0, 6.3),
                ),
                (
                    radius * rng.range(0.05, 0.25),
                    rng.range(0.008, 0.025),
                    rng.range(0.0, 6.3),
                ),
            ],
            harm,
            pulse: (rng.range(0.02, 0.08), rng.range(0.01, 0.04)),
        }
    }

    /// Largest distance from the rest centre that the blob can ever reach.
    pub(super) fn reach(&self) -> f64 {
        let harm: f64 = self.harm.iter().map(|h| h.0 * 1.3).sum();
        self.a.max(self.b) * (1.0 + self.pulse.0) * (1.0 + harm)
            + hypot_p(self.drift[0].0, self.drift[1].0)
    }

    pub(super) fn at(&self, t: u64) -> Blob {
        let t = t as f64;
        let cx = self.cx + self.drift[0].0 * sin_p(self.drift[0].1 * t + self.drift[0].2);
        let cy = self.cy + self.drift[1].0 * sin_p(self.drift[1].1 * t + self.drift[1].2);
        let ang = self.angle + self.angle_amp * sin_p(self.angle_freq * t);
        let s = 1.0 + self.pulse.0 * sin_p(self.pulse.1 * t);
        let (a, b) = (self.a * s, self.b * s);
        let mut cr = [0f32; KMAX + 1];
        let mut ci = [0f32; KMAX + 1];
        let mut sum = 0.0;
        for k in 2..=KMAX {
            let (amp, ph, rate) = self.harm[k];
            // The amplitude breathes and the phase turns slowly: deformation.
            let amp = amp * (1.0 + 0.3 * sin_p(rate * 3.0 * t + ph));
            let ph = ph + rate * t;
            cr[k] = (amp * cos_p(ph)) as f32;
            ci[k] = (amp * sin_p(ph)) as f32;
            sum += amp;
        }
        let scale = (a * b).sqrt();
        Blob {
            cx: cx as f32,
            cy: cy as f32,
            e1x: cos_p(ang) as f32,
            e1y: sin_p(ang) as f32,
            inv_a: (1.0 / a) as f32,
            inv_b: (1.0 / b) as f32,
            scale: scale as f32,
            cr,
            ci,
            bound: (a.max(b) * (1.0 + sum)) as f32,
        }
    }
}

/// A blob at one instant, ready for per-pixel evaluation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Blob {
    pub(super) cx: f32,
    pub(super) cy: f32,
    pub(super) e1x: f32,
    pub(super) e1y: f32,
    pub(super) inv_a: f32,
    pub(super) inv_b: f32,
    /// Pixels per normalised radius unit (geometric mean of the semi-axes).
    pub(super) scale: f32,
    pub(super) cr: [f32; KMAX + 1],
    pub(super) ci: [f32; KMAX + 1],
    /// Radius of a circle that contains the blob, pixels.
    pub(super) bound: f32,
}

impl Blob {
    /// Approximate signed distance (pixels) of point (x, y) to the boundary,
    /// negative inside; also the normalised radius (0 at centre, 1 at the edge).
    #[inline]
    pub(super) fn eval(&self, x: f32, y: f32) -> (f32, f32) {
        let (qx, qy) = (x - self.cx, y - self.cy);
        let u = (qx * self.e1x + qy * self.e1y) * self.inv_a;
        let v = (qy * self.e1x - qx * self.e1y) * self.inv_b;
        let rho = (u * u + v * v).sqrt();
        if rho < 1e-6 {
            return (-self.scale, 0.0);
        }
        let (zr, zi) = (u / rho, v / rho);
        let (mut pr, mut pi) = (zr, zi);
        let mut rb = 1.0;
        for k in 2..=KMAX {
            let npr = pr * zr - pi * zi;
            pi = pr * zi + pi * zr;
            pr = npr;
            rb += self.cr[k] * pr - self.ci[k] * pi;
        }
        ((rho - rb) * self.scale, rho / rb)
    }

    /// Pixel bounding box (inclusive-exclusive), clipped to the frame.
    pub(super) fn bbox(&self, w: u32, h: u32, pad: f32) -> (usize, usize, usize, usize) {
        let r = self.bound + pad;
        let x0 = (self.cx - r).floor().max(0.0) as usize;
        let y0 = (self.cy - r).floor().max(0.0) as usize;
        let x1 = ((self.cx + r).ceil() + 1.0).clamp(0.0, w as f32) as usize;
        let y1 = ((self.cy + r).ceil() + 1.0).clamp(0.0, h as f32) as usize;
        (x0, y0, x1.max(x0), y1.max(y0))
    }
}

/// Two approximately standard normal values from one hash (Irwin-Hall of
/// four bytes each: cheap, portable, and the tails do not matter here).
#[inline]
pub(super) fn gauss_pair(h: u64) -> (f32, f32) {
    let lo = (h & 0xff) + ((h >> 8) & 0xff) + ((h >> 16) & 0xff) + ((h >> 24) & 0xff);
    let hi = ((h >> 32) & 0xff) + ((h >> 40) & 0xff) + ((h >> 48) & 0xff) + ((h >> 56) & 0xff);
    const INV_SD: f32 = 1.0 / 147.8;
    ((lo as f32 - 510.0) * INV_SD, (hi as f32 - 510.0) * INV_SD)
}

/// asin(x) = atan(x / sqrt(1 - x^2)), |x| < 1: portable.
pub(super) fn asin_p(x: f64) -> f64 {
    atan_p(x / (1.0 - x * x).sqrt())
}

/// sqrt(x^2 + y^2) without the platform's `hypot`.
pub(super) fn hypot_p(x: f64, y: f64) -> f64 {
    (x * x + y * y).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_math_matches_std() {
        for i in -2000..2000 {
            let x = i as f64 * 0.01;
            assert!((sin_p(x) - x.sin()).abs() < 1e-5, "sin {x}");
            assert!((cos_p(x) - x.cos()).abs() < 1e-5, "cos {x}");
            assert!(
                (sin_f(x as f32) - (x as f32).sin()).abs() < 1e-5,
                "sin_f {x}"
            );
            assert!((atan_p(x) - x.atan()).abs() < 1e-9, "atan {x}");
        }
        for i in 1..5000 {
            let x = i as f32 * 0.013;
            assert!((log2_f(x) - x.log2()).abs() < 1e-3, "log2 {x}");
        }
    }
}
