//! The built-in phantom: deterministic ultrasound-like and endoscopy-like
//! frames, each with its exact ground-truth mask.
//!
//! Why a phantom: the runtime must be testable and demonstrable without a
//! probe, a camera or patient data, and the segmentation must be checkable
//! against a known answer. Every frame is a pure function of
//! `(kind, size, seed, t)`.
//!
//! Reproducibility: only integer hashing and IEEE basic arithmetic (`+ - * /`,
//! `sqrt`, `floor`, `round`) are used, including our own polynomial `sin` and
//! `atan`, because the platform's `sin`/`ln`/`powf` may differ in the last bit
//! between x86_64 and aarch64. Rust never fuses multiply-adds on its own, so
//! the same `(seed, t)` gives bit-identical frames on every architecture.
//!
//! Speed: everything that does not move (fan geometry, scan-conversion table,
//! tissue layers, endoscope vignetting and mucosa texture) is computed once in
//! [`Phantom::new`]; a frame only adds speckle, lesions and motion, into
//! buffers owned by the phantom, so rendering never allocates.
//!
//! Ultrasound is rendered the way a scanner does it: echo amplitudes on a
//! polar (beam x depth) grid (so speckle is elongated along the arc and
//! lesions cast posterior shadows or enhancement down their beams),
//! log-compressed, then scan-converted into the fan.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::config::PhantomConfig;
use crate::frame::{Frame, Mask, Rect};
use crate::source::FrameSource;
use crate::{Error, Result};

/// Which kind of images the phantom makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhantomKind {
    /// B-mode ultrasound (grey, R = G = B) with hypoechoic lesions.
    Ultrasound,
    /// Colour endoscopy view with a polyp.
    Endoscopy,
}

impl FromStr for PhantomKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ultrasound" | "us" => Ok(PhantomKind::Ultrasound),
            "endoscopy" | "endo" => Ok(PhantomKind::Endoscopy),
            _ => Err(Error::invalid(
                format!("phantom kind {s:?}"),
                "unknown kind; fix: use \"ultrasound\" or \"endoscopy\"",
            )),
        }
    }
}

impl fmt::Display for PhantomKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PhantomKind::Ultrasound => "ultrasound",
            PhantomKind::Endoscopy => "endoscopy",
        })
    }
}

/// Smallest and largest frame side the phantom accepts.
pub const MIN_SIDE: u32 = 32;
/// See [`MIN_SIDE`].
pub const MAX_SIDE: u32 = 4096;

/// A deterministic generator of frames and their ground-truth masks.
pub struct Phantom {
    kind: PhantomKind,
    width: u32,
    height: u32,
    seed: u64,
    inner: Inner,
}

enum Inner {
    Ultrasound(Box<Ultrasound>),
    Endoscopy(Box<Endoscopy>),
}

impl fmt::Debug for Phantom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Phantom")
            .field("kind", &self.kind)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl Phantom {
    /// Builds a phantom sequence: geometry, tissue and lesions are fixed by
    /// `seed`; frames are then rendered by [`Phantom::render`].
    pub fn new(kind: PhantomKind, width: u32, height: u32, seed: u64) -> Result<Self> {
        if !(MIN_SIDE..=MAX_SIDE).contains(&width) || !(MIN_SIDE..=MAX_SIDE).contains(&height) {
            return Err(Error::invalid(
                format!("phantom size {width}x{height}"),
                format!("out of range; fix: use {MIN_SIDE}..={MAX_SIDE} pixels per side"),
            ));
        }
        let inner = match kind {
            PhantomKind::Ultrasound => {
                Inner::Ultrasound(Box::new(Ultrasound::new(width, height, seed)))
            }
            PhantomKind::Endoscopy => {
                Inner::Endoscopy(Box::new(Endoscopy::new(width, height, seed)))
            }
        };
        Ok(Phantom {
            kind,
            width,
            height,
            seed,
            inner,
        })
    }

    /// The kind of images made.
    pub fn kind(&self) -> PhantomKind {
        self.kind
    }

    /// Frame size.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The sequence seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Number of lesions (ultrasound) or polyps (endoscopy) in the sequence.
    pub fn target_count(&self) -> usize {
        match &self.inner {
            Inner::Ultrasound(us) => us.lesions.len(),
            Inner::Endoscopy(_) => 1,
        }
    }

    /// True when frame pixel (x, y) is in the imaged field of view (the fan,
    /// or the endoscope's circle). Masks never extend outside it.
    pub fn in_view(&self, x: u32, y: u32) -> bool {
        if x >= self.width || y >= self.height {
            return false;
        }
        let i = (y * self.width + x) as usize;
        match &self.inner {
            Inner::Ultrasound(us) => us.pix[i].cell != OUTSIDE,
            Inner::Endoscopy(en) => en.inside[i],
        }
    }

    /// Renders frame number `t` into `frame` (pixels only; id and time are
    /// the caller's) and its ground truth into `mask` (1 = lesion/polyp).
    /// Both must already have this phantom's size; the mask's roi must be
    /// the full frame.
    pub fn render(&mut self, t: u64, frame: &mut Frame, mask: &mut Mask) -> Result<()> {
        let (w, h) = (self.width, self.height);
        if frame.width != w || frame.height != h || frame.rgb.len() != w as usize * h as usize * 3 {
            return Err(Error::invalid(
                "phantom output frame",
                format!(
                    "frame is {}x{} ({} bytes) but the phantom makes {w}x{h}; fix: allocate it with Frame::new({w}, {h})",
                    frame.width,
                    frame.height,
                    frame.rgb.len()
                ),
            ));
        }
        if mask.roi != Rect::full(w, h) || mask.data.len() != w as usize * h as usize {
            return Err(Error::invalid(
                "phantom output mask",
                format!(
                    "mask roi is {:?}; fix: allocate it with Mask::new(Rect::full({w}, {h}))",
                    mask.roi
                ),
            ));
        }
        match &mut self.inner {
            Inner::Ultrasound(us) => us.render(t, &mut frame.rgb, &mut mask.data),
            Inner::Endoscopy(en) => en.render(t, &mut frame.rgb, &mut mask.data),
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Portable numerics: hashing and polynomial transcendental functions.

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64 finaliser: a good 64-bit mix, identical everywhere.
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A tiny portable random generator for sequence parameters.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        Rng(mix64(seed ^ mix64(stream.wrapping_add(GOLDEN))))
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Uniform [0, 1) from a hash.
#[inline]
fn hash_unit(h: u64) -> f32 {
    (h >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// Sine by range reduction and a Taylor polynomial (error < 4e-6): portable.
fn sin_p(x: f64) -> f64 {
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

fn cos_p(x: f64) -> f64 {
    sin_p(x + std::f64::consts::FRAC_PI_2)
}

/// f32 sine for per-pixel use; the argument must be already small (|x| < 1e4).
#[inline]
fn sin_f(x: f32) -> f32 {
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
fn atan_p(z: f64) -> f64 {
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
fn log2_f(x: f32) -> f32 {
    let bits = x.max(1e-30).to_bits();
    let e = ((bits >> 23) & 0xff) as i32 - 127;
    let m = f32::from_bits((bits & 0x007F_FFFF) | 0x3F80_0000); // [1, 2)
    let y = (m - 1.0) / (m + 1.0); // atanh series: log2(m) = 2/ln2 * atanh(y)
    let y2 = y * y;
    e as f32 + 2.885_39 * y * (1.0 + y2 * (1.0 / 3.0 + y2 * (1.0 / 5.0 + y2 * (1.0 / 7.0))))
}

#[inline]
fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Smooth 2-D value noise in [0, 1), lattice spacing 1.
fn value_noise(seed: u64, x: f64, y: f64) -> f64 {
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
fn stretch(n: f64) -> f64 {
    ((n - 0.5) * 2.4 + 0.5).clamp(0.0, 1.0)
}

/// Two octaves of value noise, in [0, 1).
fn fractal_noise(seed: u64, x: f64, y: f64) -> f64 {
    (value_noise(seed, x, y) * 2.0 + value_noise(seed ^ 0x55, x * 2.03 + 17.1, y * 2.03 - 5.3))
        / 3.0
}

// ---------------------------------------------------------------------------
// Blobs: smooth closed shapes (an ellipse with a harmonically perturbed
// radius) that drift and deform over time. Used for lesions and polyps.

/// Highest boundary harmonic.
const KMAX: usize = 8;

/// Time-independent description of one blob.
#[derive(Debug, Clone)]
struct BlobSpec {
    /// Rest centre, pixels.
    cx: f64,
    cy: f64,
    /// Semi-axes, pixels.
    a: f64,
    b: f64,
    /// Orientation and its wobble.
    angle: f64,
    angle_amp: f64,
    angle_freq: f64,
    /// Drift: amplitude (pixels), angular frequency (rad/frame), phase, per axis.
    drift: [(f64, f64, f64); 2],
    /// Boundary harmonics 2..=KMAX: amplitude, phase, deformation rate.
    harm: [(f64, f64, f64); KMAX + 1],
    /// Breathing of the size: amplitude (fraction), frequency.
    pulse: (f64, f64),
}

impl BlobSpec {
    fn random(rng: &mut Rng, radius: f64, aspect: f64, irregular: f64) -> Self {
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
    fn reach(&self) -> f64 {
        let harm: f64 = self.harm.iter().map(|h| h.0 * 1.3).sum();
        self.a.max(self.b) * (1.0 + self.pulse.0) * (1.0 + harm)
            + hypot_p(self.drift[0].0, self.drift[1].0)
    }

    fn at(&self, t: u64) -> Blob {
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
struct Blob {
    cx: f32,
    cy: f32,
    e1x: f32,
    e1y: f32,
    inv_a: f32,
    inv_b: f32,
    /// Pixels per normalised radius unit (geometric mean of the semi-axes).
    scale: f32,
    cr: [f32; KMAX + 1],
    ci: [f32; KMAX + 1],
    /// Radius of a circle that contains the blob, pixels.
    bound: f32,
}

impl Blob {
    /// Approximate signed distance (pixels) of point (x, y) to the boundary,
    /// negative inside; also the normalised radius (0 at centre, 1 at the edge).
    #[inline]
    fn eval(&self, x: f32, y: f32) -> (f32, f32) {
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
    fn bbox(&self, w: u32, h: u32, pad: f32) -> (usize, usize, usize, usize) {
        let r = self.bound + pad;
        let x0 = (self.cx - r).floor().max(0.0) as usize;
        let y0 = (self.cy - r).floor().max(0.0) as usize;
        let x1 = ((self.cx + r).ceil() + 1.0).clamp(0.0, w as f32) as usize;
        let y1 = ((self.cy + r).ceil() + 1.0).clamp(0.0, h as f32) as usize;
        (x0, y0, x1.max(x0), y1.max(y0))
    }
}

// ---------------------------------------------------------------------------
// Ultrasound.

const OUTSIDE: u32 = u32::MAX;

/// Scan-conversion entry: which polar cell a pixel falls in, and where in it.
#[derive(Debug, Clone, Copy)]
struct PixLut {
    cell: u32,
    fb: f32,
    fs: f32,
}

#[derive(Debug, Clone)]
struct LesionSpec {
    blob: BlobSpec,
    /// Echo level inside, relative to the surroundings.
    interior: f32,
    /// Boundary blur half-width, pixels.
    soft: f32,
    /// Posterior effect: > 0 enhancement (cysts), < 0 shadowing (solid).
    posterior: f32,
    /// Bright rim just outside the boundary.
    halo: f32,
}

struct Ultrasound {
    w: u32,
    h: u32,
    ax: f32,
    ay: f32,
    r0: f32,
    n_b: usize,
    n_s: usize,
    beam_sin: Vec<f32>,
    beam_cos: Vec<f32>,
    /// Static echogenicity on the polar grid (beam-major).
    tissue: Vec<f32>,
    pix: Vec<PixLut>,
    lesions: Vec<LesionSpec>,
    /// Tissue-fixed speckle scatter (complex, already weighted).
    static_speckle: Vec<(f32, f32)>,
    seed: u64,
    // Per-frame scratch, sized once.
    re: Vec<f32>,
    im: Vec<f32>,
    tmp_re: Vec<f32>,
    tmp_im: Vec<f32>,
    gain: Vec<f32>,
    disp: Vec<f32>,
    blobs: Vec<Blob>,
}

impl Ultrasound {
    fn new(w: u32, h: u32, seed: u64) -> Self {
        let mut rng = Rng::new(seed, 1);
        let (wf, hf) = (w as f64, h as f64);
        // Curvilinear probe: apex above the image, near arc at the top.
        let y_top = (0.04 * hf).round();
        let y_bot = hf - (0.03 * hf).round() - 1.0;
        let r0 = (0.12 * hf).max(4.0);
        let ay = y_top - r0;
        let r1 = y_bot - ay;
        let alpha = asin_p((0.48 * wf / r1).min(0.62));
        let ax = wf / 2.0 - 0.5; // centre column, in pixel-centre coordinates
        let n_s = (r1 - r0).ceil() as usize + 1;
        let dr = (r1 - r0) / (n_s - 1) as f64;
        // Beams about 1.5 px apart at the far arc: lateral resolution is
        // coarser than axial, as in a real scanner.
        let n_b = ((2.0 * alpha * r1 / 1.5).ceil() as usize + 1).max(8);
        let dtheta = 2.0 * alpha / (n_b - 1) as f64;
        let beam_angle = |b: usize| -alpha + b as f64 * dtheta;
        let beam_sin: Vec<f32> = (0..n_b).map(|b| sin_p(beam_angle(b)) as f32).collect();
        let beam_cos: Vec<f32> = (0..n_b).map(|b| cos_p(beam_angle(b)) as f32).collect();

        // Scan-conversion table.
        let mut pix = Vec::with_capacity(w as usize * h as usize);
        for y in 0..h {
            for x in 0..w {
                let dx = x as f64 - ax;
                let dy = y as f64 - ay;
                let r = (dx * dx + dy * dy).sqrt();
                let entry = if dy > 0.0 && r >= r0 && r <= r1 {
                    let th = atan_p(dx / dy);
                    if th.abs() <= alpha {
                        let fb = ((th + alpha) / dtheta).clamp(0.0, (n_b - 1) as f64);
                        let fs = ((r - r0) / dr).clamp(0.0, (n_s - 1) as f64);
                        let b0 = (fb.floor() as usize).min(n_b - 2);
                        let s0 = (fs.floor() as usize).min(n_s - 2);
                        PixLut {
                            cell: (b0 * n_s + s0) as u32,
                            fb: (fb - b0 as f64) as f32,
                            fs: (fs - s0 as f64) as f32,
                        }
                    } else {
                        PixLut {
                            cell: OUTSIDE,
                            fb: 0.0,
                            fs: 0.0,
                        }
                    }
                } else {
                    PixLut {
                        cell: OUTSIDE,
                        fb: 0.0,
                        fs: 0.0,
                    }
                };
                pix.push(entry);
            }
        }

        let lat_px = dtheta * 0.5 * (r0 + r1); // beam spacing at mid-depth
        let tissue = Self::tissue_map(&mut rng, seed, n_b, n_s, dr, lat_px);

        // Lesions: 1-3, placed inside the fan with margin, not overlapping.
        let n_les = 1 + rng.below(3) as usize;
        let side = wf.min(hf);
        let mut lesions: Vec<LesionSpec> = Vec::new();
        let mut tries = 0;
        while lesions.len() < n_les && tries < 200 {
            tries += 1;
            let style = rng.below(3);
            let radius = side * rng.range(0.045, if lesions.is_empty() { 0.12 } else { 0.085 });
            let (aspect, irregular) = match style {
                0 => (rng.range(0.75, 1.0), rng.range(0.05, 0.3)), // cyst: round, smooth
                1 => (rng.range(0.45, 0.8), rng.range(0.2, 0.6)),  // benign solid: wider than tall
                _ => (rng.range(0.7, 1.3), rng.range(0.6, 1.0)),   // irregular
            };
            let mut blob = BlobSpec::random(&mut rng, radius, aspect, irregular);
            let reach = blob.reach() + 3.0;
            let rr = rng.range(r0 + 0.12 * (r1 - r0) + reach, r1 - reach - 2.0);
            if rr <= r0 + reach {
                continue;
            }
            let th_max = alpha - (reach + 2.0) / rr;
            if th_max <= 0.0 {
                continue;
            }
            let th = rng.range(-th_max, th_max);
            blob.cx = ax + rr * sin_p(th);
            blob.cy = ay + rr * cos_p(th);
            let clash = lesions.iter().any(|l| {
                hypot_p(l.blob.cx - blob.cx, l.blob.cy - blob.cy) < l.blob.reach() + reach + 4.0
            });
            if clash {
                continue;
            }
            let (interior, posterior, halo) = match style {
                0 => (rng.range(0.04, 0.1), rng.range(0.8, 1.4), 0.0),
                1 => (
                    rng.range(0.18, 0.35),
                    rng.range(-0.15, 0.25),
                    rng.range(0.0, 0.25),
                ),
                _ => (
                    rng.range(0.15, 0.3),
                    rng.range(-0.75, -0.45),
                    rng.range(0.0, 0.5),
                ),
            };
            lesions.push(LesionSpec {
                blob,
                interior: interior as f32,
                soft: rng.range(0.8, 2.2) as f32,
                posterior: posterior as f32,
                halo: halo as f32,
            });
        }
        let cells = n_b * n_s;
        // The tissue-fixed part of the speckle does not change: draw it once.
        let static_key = mix64(seed ^ 0x05EE_D0F7_155E);
        let static_speckle = (0..cells)
            .map(|c| {
                let (r, i) = gauss_pair(mix64(static_key ^ c as u64));
                (0.6 * r, 0.6 * i)
            })
            .collect();
        Ultrasound {
            w,
            h,
            ax: ax as f32,
            ay: ay as f32,
            r0: r0 as f32,
            n_b,
            n_s,
            beam_sin,
            beam_cos,
            tissue,
            pix,
            blobs: Vec::with_capacity(lesions.len()),
            lesions,
            static_speckle,
            seed,
            re: vec![0.0; cells],
            im: vec![0.0; cells],
            tmp_re: vec![0.0; cells],
            tmp_im: vec![0.0; cells],
            gain: vec![1.0; cells],
            disp: vec![0.0; cells],
        }
    }

    /// Layered breast-like tissue: skin, fat with lobules, fibroglandular
    /// tissue, retromammary fat, striated muscle; with depth attenuation
    /// left after time-gain compensation and a weaker edge of the aperture.
    fn tissue_map(
        rng: &mut Rng,
        seed: u64,
        n_b: usize,
        n_s: usize,
        dr: f64,
        lat_px: f64,
    ) -> Vec<f32> {
        // Layer lower boundaries (depth fraction) and their waviness.
        let base = [
            0.015,
            rng.range(0.035, 0.05),
            rng.range(0.18, 0.3),
            rng.range(0.5, 0.65),
            rng.range(0.6, 0.72),
            rng.range(0.84, 0.92),
        ];
        let mut wav = [[(0.0, 0.0, 0.0); 3]; 6];
        for (i, wl) in wav.iter_mut().enumerate() {
            for (j, h) in wl.iter_mut().enumerate() {
                let amp = if i < 2 { 0.003 } else { 0.035 / (j + 1) as f64 };
                *h = (
                    rng.range(0.3, 1.0) * amp,
                    rng.range(0.5, 1.5) * (j + 1) as f64,
                    rng.range(0.0, 6.3),
                );
            }
        }
        let level = [2.4, 1.25, 0.45, 1.0, 0.4, 0.6, 0.5];
        let tilt = rng.range(-0.1, 0.1);
        let ns = seed ^ 0x7155;
        let mut out = vec![0f32; n_b * n_s];
        let mut bounds = [0f64; 6];
        for b in 0..n_b {
            let l = b as f64 / (n_b - 1) as f64;
            for (i, bd) in bounds.iter_mut().enumerate() {
                *bd = base[i] + tilt * (l - 0.5) * if i >= 2 { 1.0 } else { 0.0 };
                for &(amp, f, ph) in &wav[i] {
                    *bd += amp * sin_p(std::f64::consts::TAU * f * l + ph);
                }
            }
            let e2 = (2.0 * l - 1.0) * (2.0 * l - 1.0);
            let edge = 1.0 - 0.3 * e2 * e2;
            for s in 0..n_s {
                let d = s as f64 / (n_s - 1) as f64;
                let (xl, ya) = (b as f64 * lat_px, s as f64 * dr);
                // Blend layer levels with soft transitions.
                let mut e = level[0];
                for i in 0..6 {
                    let wdt = if i < 2 { 0.004 } else { 0.015 };
                    let k = smoothstep(-(wdt as f32), wdt as f32, (d - bounds[i]) as f32) as f64;
                    e += (level[i + 1] - e) * k;
                }
                let layer = (0..6).filter(|&i| d > bounds[i]).count();
                let texture = match layer {
                    2 | 4 => 0.25 + 1.5 * stretch(fractal_noise(ns, xl / 22.0, ya / 14.0)),
                    3 => 0.3 + 1.4 * stretch(fractal_noise(ns ^ 3, xl / 12.0, ya / 7.0)),
                    5 => {
                        1.0 + 0.3
                            * sin_p(
                                ya / 2.2
                                    + xl * 0.03
                                    + 3.0 * fractal_noise(ns ^ 5, xl / 40.0, ya / 40.0),
                            )
                    }
                    _ => 0.9 + 0.2 * fractal_noise(ns ^ 7, xl / 8.0, ya / 8.0),
                };
                let atten = 1.08 - 0.55 * d;
                out[b * n_s + s] = (e * texture * atten * edge) as f32;
            }
        }
        out
    }

    fn render(&mut self, t: u64, rgb: &mut [u8], mask: &mut [u8]) {
        let (n_b, n_s) = (self.n_b, self.n_s);
        let frame_key = mix64(self.seed ^ mix64(t.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 0xF0));

        // 1. Speckle: complex Gaussian scatter, part fixed to the tissue and
        // part new each frame, then low-passed (the pulse's point spread).
        let cells = self
            .re
            .iter_mut()
            .zip(self.im.iter_mut())
            .zip(self.static_speckle.iter());
        for (c, ((re, im), &(sr, si))) in cells.enumerate() {
            let (dr, di) = gauss_pair(mix64(frame_key ^ c as u64));
            *re = sr + 0.8 * dr;
            *im = si + 0.8 * di;
        }
        // Axial [1 2 1] along each beam (contiguous).
        for b in 0..n_b {
            let row = b * n_s;
            for s in 0..n_s {
                let sm = row + s.saturating_sub(1);
                let sp = row + (s + 1).min(n_s - 1);
                let i = row + s;
                self.tmp_re[i] = self.re[sm] + 2.0 * self.re[i] + self.re[sp];
                self.tmp_im[i] = self.im[sm] + 2.0 * self.im[i] + self.im[sp];
            }
        }
        // Lateral [1 2 1] across beams.
        for b in 0..n_b {
            let bm = b.saturating_sub(1) * n_s;
            let bp = (b + 1).min(n_b - 1) * n_s;
            let row = b * n_s;
            for s in 0..n_s {
                self.re[row + s] =
                    self.tmp_re[bm + s] + 2.0 * self.tmp_re[row + s] + self.tmp_re[bp + s];
                self.im[row + s] =
                    self.tmp_im[bm + s] + 2.0 * self.tmp_im[row + s] + self.tmp_im[bp + s];
            }
        }

        // 2. Lesions on the polar grid: darkening, halo, posterior effect.
        self.blobs.clear();
        for l in &self.lesions {
            self.blobs.push(l.blob.at(t));
        }
        self.gain.fill(1.0);
        for (l, blob) in self.lesions.iter().zip(self.blobs.iter()) {
            let bound = blob.bound + 3.0 * l.soft + 3.0;
            let (rx, ry) = (blob.cx - self.ax, blob.cy - self.ay);
            for b in 0..n_b {
                let (sn, cs) = (self.beam_sin[b], self.beam_cos[b]);
                let along = rx * sn + ry * cs;
                let perp = rx * cs - ry * sn;
                if perp.abs() >= bound {
                    continue;
                }
                let half = (bound * bound - perp * perp).sqrt();
                let s0 = (along - half - self.r0).floor().max(0.0) as usize;
                let s1 = ((along + half - self.r0).ceil().max(0.0) as usize).min(n_s - 1);
                let row = b * n_s;
                let mut far = None;
                let mut thick = 0f32;
                for s in s0..=s1 {
                    let r = self.r0 + s as f32;
                    let (d, _) = blob.eval(self.ax + r * sn, self.ay + r * cs);
                    let inside = smoothstep(l.soft, -l.soft, d);
                    let mut g = 1.0 + (l.interior - 1.0) * inside;
                    if l.halo > 0.0 {
                        let x = (d - 1.5 * l.soft) / (1.5 * l.soft);
                        g += l.halo * (1.0 - x * x).max(0.0);
                    }
                    self.gain[row + s] *= g;
                    if d < 0.0 {
                        far = Some(s);
                        thick += 1.0;
                    }
                }
                if let (Some(far), true) = (far, l.posterior != 0.0) {
                    let strength = l.posterior * (thick / (2.0 * blob.scale)).min(1.0);
                    let fade_len = 2.5 * blob.scale;
                    for s in far + 1..n_s {
                        let dist = (s - far) as f32;
                        let ramp = smoothstep(0.0, 2.0 * l.soft + 2.0, dist);
                        let fade = 1.0 / (1.0 + dist / fade_len);
                        self.gain[row + s] *= 1.0 + strength * ramp * fade;
                    }
                }
            }
        }

        // 3. Envelope, log compression to display grey levels.
        // 48 dB shown; 0 dB (mean tissue) lands at about 60 % of white.
        const NORM: f32 = 1.0 / 16.0 * 2.6; // undo the 16x filter gain, unit variance
        for c in 0..n_b * n_s {
            let (re, im) = (self.re[c], self.im[c]);
            let env = (re * re + im * im).sqrt() * NORM * self.tissue[c] * self.gain[c];
            let db = 6.0206 * log2_f(env);
            self.disp[c] = ((db + 30.0) * (255.0 / 48.0)).clamp(0.0, 255.0);
        }

        // 4. Scan conversion into the fan.
        for (p, px) in rgb.chunks_exact_mut(3).zip(self.pix.iter()) {
            let v = if px.cell == OUTSIDE {
                0
            } else {
                let c = px.cell as usize;
                let a = self.disp[c] + (self.disp[c + 1] - self.disp[c]) * px.fs;
                let b = self.disp[c + n_s] + (self.disp[c + n_s + 1] - self.disp[c + n_s]) * px.fs;
                (a + (b - a) * px.fb + 0.5) as u8
            };
            p[0] = v;
            p[1] = v;
            p[2] = v;
        }

        // 5. Ground truth: exactly the lesion pixels inside the fan.
        mask.fill(0);
        let w = self.w as usize;
        for blob in &self.blobs {
            let (x0, y0, x1, y1) = blob.bbox(self.w, self.h, 1.0);
            for y in y0..y1 {
                for x in x0..x1 {
                    let i = y * w + x;
                    if self.pix[i].cell != OUTSIDE && blob.eval(x as f32, y as f32).0 < 0.0 {
                        mask[i] = 1;
                    }
                }
            }
        }
    }
}

/// Two approximately standard normal values from one hash (Irwin-Hall of
/// four bytes each: cheap, portable, and the tails do not matter here).
#[inline]
fn gauss_pair(h: u64) -> (f32, f32) {
    let lo = (h & 0xff) + ((h >> 8) & 0xff) + ((h >> 16) & 0xff) + ((h >> 24) & 0xff);
    let hi = ((h >> 32) & 0xff) + ((h >> 40) & 0xff) + ((h >> 48) & 0xff) + ((h >> 56) & 0xff);
    const INV_SD: f32 = 1.0 / 147.8;
    ((lo as f32 - 510.0) * INV_SD, (hi as f32 - 510.0) * INV_SD)
}

/// asin(x) = atan(x / sqrt(1 - x^2)), |x| < 1: portable.
fn asin_p(x: f64) -> f64 {
    atan_p(x / (1.0 - x * x).sqrt())
}

/// sqrt(x^2 + y^2) without the platform's `hypot`.
fn hypot_p(x: f64, y: f64) -> f64 {
    (x * x + y * y).sqrt()
}

// ---------------------------------------------------------------------------
// Endoscopy.

struct Endoscopy {
    w: u32,
    h: u32,
    fov_cx: f32,
    fov_cy: f32,
    fov_r: f32,
    /// Inside the circular field of view (pixel centre).
    inside: Vec<bool>,
    /// Lens vignetting times the anti-aliased edge of the field of view.
    vignette: Vec<f32>,
    /// Static mucosa texture in [0, 1).
    texture: Vec<f32>,
    /// Vessel darkness in [0, 1].
    vessels: Vec<f32>,
    seed: u64,
    lumen: BlobSpec,
    polyp: BlobSpec,
    fold_freq: f32,
    fold_speed: f64,
    fold_harm: [(f32, f32); 4],
    tint: [f32; 3],
    polyp_tint: [f32; 3],
    /// Per-frame shading grid (near, brightness, fold sine) at every other pixel.
    grid_w: usize,
    grid_h: usize,
    shade: Vec<[f32; 3]>,
}

impl Endoscopy {
    fn new(w: u32, h: u32, seed: u64) -> Self {
        let mut rng = Rng::new(seed, 2);
        let (wf, hf) = (w as f32, h as f32);
        let fov_cx = wf / 2.0 - 0.5;
        let fov_cy = hf / 2.0 - 0.5;
        let fov_r = 0.5 * wf.min(hf) * 0.97;
        let n = w as usize * h as usize;
        let mut inside = Vec::with_capacity(n);
        let mut vignette = Vec::with_capacity(n);
        let mut texture = Vec::with_capacity(n);
        let mut vessels = Vec::with_capacity(n);
        let scale = fov_r as f64 / 120.0; // texture scale follows the image size
        let ts = seed ^ 0xE4D0;
        for y in 0..h {
            for x in 0..w {
                let dx = x as f32 - fov_cx;
                let dy = y as f32 - fov_cy;
                let r = (dx * dx + dy * dy).sqrt();
                inside.push(r <= fov_r);
                let rn = r / fov_r;
                let edge = (fov_r + 0.5 - r).clamp(0.0, 1.0);
                vignette.push(edge * (1.0 - 0.45 * rn * rn * rn * rn));
                let (xs, ys) = (x as f64 / scale, y as f64 / scale);
                texture.push(fractal_noise(ts, xs / 6.0, ys / 6.0) as f32);
                // Ridged noise: thin meandering lines where the noise crosses 1/2.
                let v1 = (fractal_noise(ts ^ 1, xs / 30.0, ys / 30.0) - 0.5).abs();
                let v2 = (fractal_noise(ts ^ 2, xs / 14.0, ys / 14.0) - 0.5).abs();
                let line = (1.0 - v1 / 0.02).max(0.0) + 0.6 * (1.0 - v2 / 0.015).max(0.0);
                vessels.push(line.min(1.0) as f32);
            }
        }
        let r_fov = fov_r as f64;
        let aspect = rng.range(0.7, 1.0);
        let mut lumen = BlobSpec::random(&mut rng, 0.16 * r_fov, aspect, 0.5);
        lumen.cx = fov_cx as f64 + rng.range(-0.25, 0.25) * r_fov;
        lumen.cy = fov_cy as f64 + rng.range(-0.25, 0.25) * r_fov;
        lumen.drift = [
            (0.12 * r_fov, rng.range(0.006, 0.015), rng.range(0.0, 6.3)),
            (0.1 * r_fov, rng.range(0.006, 0.015), rng.range(0.0, 6.3)),
        ];
        let radius = rng.range(0.14, 0.26) * r_fov;
        let (aspect, irregular) = (rng.range(0.7, 1.0), rng.range(0.1, 0.4));
        let mut polyp = BlobSpec::random(&mut rng, radius, aspect, irregular);
        // Place the polyp on the wall (away from the lumen), inside the view.
        let mut best = (f64::MIN, 0.0, 0.0);
        for _ in 0..32 {
            let reach = polyp.reach() + 3.0;
            let lim = (0.92 * r_fov - reach).max(0.0);
            let ang = rng.range(0.0, std::f64::consts::TAU);
            let rad = rng.range(0.35, 1.0) * lim;
            let (px, py) = (
                fov_cx as f64 + rad * cos_p(ang),
                fov_cy as f64 + rad * sin_p(ang),
            );
            let dl = hypot_p(px - lumen.cx, py - lumen.cy) - lumen.reach() - reach;
            if dl > best.0 {
                best = (dl, px, py);
            }
            if dl > 0.0 {
                break;
            }
        }
        polyp.cx = best.1;
        polyp.cy = best.2;
        let mut fold_harm = [(0.0, 0.0); 4];
        for (k, f) in fold_harm.iter_mut().enumerate() {
            let amp = rng.range(0.2, 0.8) / (k + 1) as f64;
            let ph = rng.range(0.0, 6.3);
            *f = ((amp * cos_p(ph)) as f32, (amp * sin_p(ph)) as f32);
        }
        let tint = [
            rng.range(0.92, 1.0) as f32,
            rng.range(0.42, 0.55) as f32,
            rng.range(0.36, 0.48) as f32,
        ];
        let polyp_tint = [
            rng.range(0.95, 1.0) as f32,
            tint[1] + rng.range(0.0, 0.08) as f32,
            tint[2] + rng.range(0.0, 0.06) as f32,
        ];
        Endoscopy {
            w,
            h,
            fov_cx,
            fov_cy,
            fov_r,
            inside,
            vignette,
            texture,
            vessels,
            seed,
            lumen,
            polyp,
            fold_freq: rng.range(0.9, 1.6) as f32,
            fold_speed: rng.range(0.01, 0.03),
            fold_harm,
            tint,
            polyp_tint,
            grid_w: w as usize / 2 + 2,
            grid_h: h as usize / 2 + 2,
            shade: vec![[0.0; 3]; (w as usize / 2 + 2) * (h as usize / 2 + 2)],
        }
    }

    fn render(&mut self, t: u64, rgb: &mut [u8], mask: &mut [u8]) {
        let lumen = self.lumen.at(t);
        let polyp = self.polyp.at(t);
        let frame_key = mix64(self.seed ^ mix64(t.wrapping_mul(0xA076_1D64_78BD_642F) ^ 0xE0));
        // Camera advancing: folds stream outwards. Reduce the phase in f64.
        let fold_off = {
            let p = self.fold_speed * t as f64 * std::f64::consts::TAU;
            (p - (p / std::f64::consts::TAU).floor() * std::f64::consts::TAU) as f32
        };
        let w = self.w as usize;
        let inv_r = 1.0 / self.fov_r;
        // Light comes from the endoscope tip, a little off-axis.
        let (lx, ly) = (
            (self.fov_cx - polyp.cx) * inv_r * 0.6,
            (self.fov_cy - polyp.cy) * inv_r * 0.6,
        );
        let ln = 1.0 / (lx * lx + ly * ly + 1.0).sqrt();
        let (lx, ly, lz) = (lx * ln, ly * ln, ln);
        let (pb_x0, pb_y0, pb_x1, pb_y1) = polyp.bbox(self.w, self.h, 8.0);
        // Pass 1: the smooth part (lumen distance, light, folds) on a grid of
        // every other pixel; it is most of the arithmetic and varies slowly.
        let (gw, gh) = (self.grid_w, self.grid_h);
        for gy in 0..gh {
            for gx in 0..gw {
                let (xf, yf) = ((2 * gx) as f32, (2 * gy) as f32);
                // The direction from the lumen's centre, and its harmonics
                // (z^k as complex powers: no trigonometry per pixel), shape
                // both the lumen's outline and the folds' wobble.
                let (qx, qy) = (xf - lumen.cx, yf - lumen.cy);
                let qn = (qx * qx + qy * qy).sqrt().max(1e-3);
                let (zr, zi) = (qx / qn, qy / qn);
                let (mut pr, mut pi) = (zr, zi);
                let mut wob = 0.0;
                let mut rb = 1.0;
                for (k, &(hr, hi)) in self.fold_harm.iter().enumerate() {
                    wob += hr * pr - hi * pi;
                    let npr = pr * zr - pi * zi;
                    pi = pr * zi + pi * zr;
                    pr = npr;
                    rb += lumen.cr[k + 2] * pr - lumen.ci[k + 2] * pi;
                }
                // Distance from the lumen: nearer the wall = nearer the light.
                let dl = qn - lumen.scale * rb;
                let rho = (dl.max(0.0) * inv_r + 0.02).min(1.5);
                let near = smoothstep(0.0, 0.9, rho);
                let mut bright = 0.06 + 1.1 * near * near.sqrt();
                // Haustral folds: rings whose spacing shrinks towards the lumen.
                let phase = self.fold_freq * 6.0 / (rho + 0.25) + 0.8 * wob - fold_off;
                let sp = sin_f(phase);
                let cp = sin_f(phase + std::f32::consts::FRAC_PI_2);
                let c2 = cp.max(0.0) * cp.max(0.0);
                let crease = c2 * c2 * c2 * c2;
                bright *= 1.0 + near * (0.2 * sp - 0.35 * crease);
                self.shade[gy * gw + gx] = [near, bright, sp];
            }
        }
        // Pass 2: per pixel, interpolate the shading, add texture, vessels,
        // glints, the polyp and sensor noise.
        mask.fill(0);
        for y in 0..self.h as usize {
            let (gy, fy) = (y / 2, (y % 2) as f32 * 0.5);
            for x in 0..w {
                let i = y * w + x;
                let o = &mut rgb[i * 3..i * 3 + 3];
                let vig = self.vignette[i];
                if vig <= 0.0 {
                    o.copy_from_slice(&[0, 0, 0]);
                    continue;
                }
                let (xf, yf) = (x as f32, y as f32);
                let (gx, fx) = (x / 2, (x % 2) as f32 * 0.5);
                let g = gy * gw + gx;
                let (s00, s01, s10, s11) = (
                    self.shade[g],
                    self.shade[g + 1],
                    self.shade[g + gw],
                    self.shade[g + gw + 1],
                );
                let lerp = |k: usize| {
                    let a = s00[k] + (s01[k] - s00[k]) * fx;
                    let b = s10[k] + (s11[k] - s10[k]) * fx;
                    a + (b - a) * fy
                };
                let (near, bright, sp) = (lerp(0), lerp(1), lerp(2));
                let tex = self.texture[i];
                let ves = self.vessels[i] * near;
                let mut col = [
                    self.tint[0] * bright * (0.9 + 0.2 * tex) * (1.0 - 0.18 * ves),
                    self.tint[1]
                        * bright
                        * (0.85 + 0.3 * tex)
                        * (0.55 + 0.45 * bright.min(1.0))
                        * (1.0 - 0.45 * ves),
                    self.tint[2]
                        * bright
                        * (0.85 + 0.3 * tex)
                        * (0.5 + 0.5 * bright.min(1.0))
                        * (1.0 - 0.4 * ves),
                ];
                // Specular glints on fold crests where the mucus is wet.
                let glint = smoothstep(0.9, 0.99, sp) * smoothstep(0.64, 0.69, tex) * near;
                // The polyp: a dome with its own tint, shading and highlight.
                if x >= pb_x0 && x < pb_x1 && y >= pb_y0 && y < pb_y1 {
                    let (d, rn) = polyp.eval(xf, yf);
                    if d < 0.0 && self.inside[i] {
                        mask[i] = 1;
                    }
                    let wgt = smoothstep(1.2, -1.2, d);
                    let (ux, uy) = ((xf - polyp.cx) / polyp.scale, (yf - polyp.cy) / polyp.scale);
                    let un = (ux * ux + uy * uy).sqrt().max(1e-6);
                    if wgt > 0.0 {
                        let rr = rn.min(1.0);
                        let nz = (1.0 - rr * rr).max(0.0).sqrt();
                        let (nx, ny) = (ux / un * rr, uy / un * rr);
                        let lam = (nx * lx + ny * ly + nz * lz).max(0.0);
                        let mut spec = lam;
                        for _ in 0..5 {
                            spec *= spec;
                        }
                        let pit = 0.85 + 0.3 * self.texture[(i * 7 + 13) % self.texture.len()];
                        let pb = bright.max(0.5) * (0.45 + 0.55 * lam) * pit;
                        for (c, tint) in col.iter_mut().zip(self.polyp_tint) {
                            let pc = tint * pb + 0.6 * spec;
                            *c += (pc - *c) * wgt;
                        }
                    } else if d < 6.0 {
                        // Shadow cast on the wall on the side away from the light.
                        let away = (-(ux / un * lx + uy / un * ly)
                            / (lx * lx + ly * ly).sqrt().max(1e-3))
                        .max(0.0);
                        let sh = 1.0 - 0.4 * (1.0 - d / 6.0) * (0.4 + 0.6 * away);
                        for c in col.iter_mut() {
                            *c *= sh;
                        }
                    }
                }
                let noise = (hash_unit(mix64(frame_key ^ i as u64)) - 0.5) * (6.0 / 255.0);
                for c in 0..3 {
                    let v = (col[c] + (1.0 - col[c]) * glint) * vig + noise;
                    o[c] = (v * 255.0 + 0.5).clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The frame source.

/// The phantom as a live [`FrameSource`], paced like a camera or as fast as
/// the consumer asks.
pub struct PhantomSource {
    phantom: Phantom,
    fps: f64,
    paced: bool,
    limit: Option<u64>,
    delivered: u64,
    next_slot: u64,
    start: Option<Instant>,
    mask: Mask,
}

impl PhantomSource {
    /// A real-time source at `fps` frames per second, without a frame limit.
    pub fn new(phantom: Phantom, fps: f64) -> Result<Self> {
        if !(fps > 0.0 && fps <= 1000.0) {
            return Err(Error::Source {
                source_name: "phantom".into(),
                reason: format!("frame rate {fps}; fix: use 0 < fps <= 1000"),
            });
        }
        let (w, h) = phantom.size();
        Ok(PhantomSource {
            phantom,
            fps,
            paced: true,
            limit: None,
            delivered: 0,
            next_slot: 0,
            start: None,
            mask: Mask::new(Rect::full(w, h)),
        })
    }

    /// Builds the source from the configuration's `[phantom]` table.
    pub fn from_config(cfg: &PhantomConfig) -> Result<Self> {
        PhantomSource::new(
            Phantom::new(cfg.kind, cfg.width, cfg.height, cfg.seed)?,
            cfg.fps,
        )
    }

    /// `true` (default): deliver frames at the frame rate; `false`: as fast
    /// as asked (benchmarks, dataset generation).
    pub fn paced(mut self, paced: bool) -> Self {
        self.paced = paced;
        self
    }

    /// Ends the stream after `limit` frames (`None`: never).
    pub fn limit(mut self, limit: Option<u64>) -> Self {
        self.limit = limit;
        self
    }

    /// The ground truth of the last delivered frame (its `frame_id` and
    /// `captured` match the frame's).
    pub fn last_mask(&self) -> &Mask {
        &self.mask
    }

    /// The generator itself.
    pub fn phantom(&self) -> &Phantom {
        &self.phantom
    }
}

impl FrameSource for PhantomSource {
    fn name(&self) -> String {
        format!(
            "phantom {} seed {}",
            self.phantom.kind(),
            self.phantom.seed()
        )
    }

    fn size(&self) -> (u32, u32) {
        self.phantom.size()
    }

    fn frame_rate(&self) -> f64 {
        self.fps
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        if self.limit.is_some_and(|l| self.delivered >= l) {
            return Ok(false);
        }
        let mut slot = self.next_slot;
        if self.paced {
            // Due times come from the start instant, not from summed sleeps,
            // so the rate does not drift with render time or sleep overshoot.
            let start = *self.start.get_or_insert_with(Instant::now);
            let due = start + Duration::from_secs_f64(slot as f64 / self.fps);
            let now = Instant::now();
            if now < due {
                std::thread::sleep(due - now);
            } else {
                // Late, as a camera whose reader fell behind: the frame shown
                // is the newest one, older slots are dropped (ids skip).
                let newest = (now.duration_since(start).as_secs_f64() * self.fps).floor() as u64;
                if newest > slot {
                    log::debug!(
                        "phantom: consumer late, skipping {} frame(s)",
                        newest - slot
                    );
                    slot = newest;
                }
            }
        }
        frame.id = slot;
        frame.captured = Instant::now();
        self.phantom.render(slot, frame, &mut self.mask)?;
        self.mask.frame_id = frame.id;
        self.mask.captured = frame.captured;
        self.next_slot = slot + 1;
        self.delivered += 1;
        Ok(true)
    }
}

// ---------------------------------------------------------------------------
// Datasets.

/// Frames between consecutive samples of a dataset (in the phantom's time).
const DATASET_T_STEP: u64 = 7;

/// Writes `count` image/mask pairs for training and evaluation in the layout
/// of the LGMSNet loaders: `out_dir/images/NNNNN.png` (RGB) and
/// `out_dir/masks/NNNNN.png` (8-bit grey, 0 or 255). Each sample comes from
/// its own sequence (seeded from `seed` and its index) at time `7 * index`,
/// so lesion count, shape and place vary across samples.
pub fn write_dataset(
    out_dir: &Path,
    kind: PhantomKind,
    count: u32,
    seed: u64,
    width: u32,
    height: u32,
) -> Result<()> {
    if count == 0 {
        return Err(Error::invalid(
            "dataset count 0",
            "nothing to write; fix: use --count 1 or more",
        ));
    }
    let images = out_dir.join("images");
    let masks = out_dir.join("masks");
    for dir in [&images, &masks] {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating dataset folder {dir:?}"), e))?;
    }
    let mut frame = Frame::new(width, height);
    let mut mask = Mask::new(Rect::full(width, height));
    let mut grey = vec![0u8; width as usize * height as usize];
    for i in 0..count {
        let seq_seed = mix64(seed ^ mix64(u64::from(i) ^ 0xDA7A));
        let mut phantom = Phantom::new(kind, width, height, seq_seed)?;
        phantom.render(u64::from(i) * DATASET_T_STEP, &mut frame, &mut mask)?;
        for (g, &m) in grey.iter_mut().zip(mask.data.iter()) {
            *g = if m != 0 { 255 } else { 0 };
        }
        let name = format!("{i:05}.png");
        let save = |path: &Path, data: &[u8], ty| {
            image::save_buffer(path, data, width, height, ty).map_err(|e| Error::Sink {
                sink: format!("dataset {out_dir:?}"),
                reason: format!("writing {path:?}: {e}; fix: check free space and permissions"),
            })
        };
        save(
            &images.join(&name),
            &frame.rgb,
            image::ExtendedColorType::Rgb8,
        )?;
        save(&masks.join(&name), &grey, image::ExtendedColorType::L8)?;
    }
    log::info!("wrote {count} {kind} image/mask pairs ({width}x{height}) to {out_dir:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(kind: PhantomKind, w: u32, h: u32, seed: u64, t: u64) -> (Phantom, Frame, Mask) {
        let mut p = Phantom::new(kind, w, h, seed).unwrap();
        let mut f = Frame::new(w, h);
        let mut m = Mask::new(Rect::full(w, h));
        p.render(t, &mut f, &mut m).unwrap();
        (p, f, m)
    }

    /// Mean grey (or mean of channels) over mask pixels, and over the ring
    /// of in-view pixels 3..=7 px outside the mask.
    fn inside_and_ring(p: &Phantom, f: &Frame, m: &Mask) -> ([f64; 3], [f64; 3]) {
        let (w, h) = (f.width as i64, f.height as i64);
        let (mut sin, mut nin, mut sring, mut nring) = ([0f64; 3], 0f64, [0f64; 3], 0f64);
        for y in 0..h {
            for x in 0..w {
                let px = f.pixel(x as u32, y as u32);
                if m.contains(x as u32, y as u32) {
                    for c in 0..3 {
                        sin[c] += px[c] as f64;
                    }
                    nin += 1.0;
                    continue;
                }
                if !p.in_view(x as u32, y as u32) {
                    continue;
                }
                let mut dmin = i64::MAX;
                for dy in -7i64..=7 {
                    for dx in -7i64..=7 {
                        let (xx, yy) = (x + dx, y + dy);
                        if xx >= 0
                            && yy >= 0
                            && xx < w
                            && yy < h
                            && m.contains(xx as u32, yy as u32)
                        {
                            dmin = dmin.min(dx * dx + dy * dy);
                        }
                    }
                }
                if (9..=49).contains(&dmin) {
                    for c in 0..3 {
                        sring[c] += px[c] as f64;
                    }
                    nring += 1.0;
                }
            }
        }
        assert!(nin > 0.0 && nring > 0.0);
        (sin.map(|v| v / nin), sring.map(|v| v / nring))
    }

    fn centroid(m: &Mask) -> (f64, f64) {
        let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
        for y in 0..m.roi.h {
            for x in 0..m.roi.w {
                if m.contains(x, y) {
                    sx += x as f64;
                    sy += y as f64;
                    n += 1.0;
                }
            }
        }
        (sx / n, sy / n)
    }

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

    #[test]
    fn same_seed_same_frame_other_seed_or_time_differs() {
        for kind in [PhantomKind::Ultrasound, PhantomKind::Endoscopy] {
            let (_, f1, m1) = render(kind, 96, 80, 3, 5);
            let (_, f2, m2) = render(kind, 96, 80, 3, 5);
            assert_eq!(f1.rgb, f2.rgb, "{kind}");
            assert_eq!(m1.data, m2.data, "{kind}");
            let (_, f3, _) = render(kind, 96, 80, 4, 5);
            assert_ne!(f1.rgb, f3.rgb, "{kind}: seeds 3 and 4 gave the same frame");
            // Speckle / sensor noise changes from frame to frame.
            let (_, f4, _) = render(kind, 96, 80, 3, 6);
            assert_ne!(f1.rgb, f4.rgb, "{kind}: t=5 and t=6 gave the same frame");
        }
    }

    #[test]
    fn speckle_changes_everywhere_from_frame_to_frame() {
        // Lesion motion alone would change only pixels near the lesions.
        let (p, f5, _) = render(PhantomKind::Ultrasound, 128, 96, 8, 5);
        let (_, f6, _) = render(PhantomKind::Ultrasound, 128, 96, 8, 6);
        let (mut changed, mut total) = (0, 0);
        for y in 0..96 {
            for x in 0..128 {
                if p.in_view(x, y) {
                    total += 1;
                    changed += usize::from(f5.pixel(x, y) != f6.pixel(x, y));
                }
            }
        }
        assert!(
            changed * 10 > total * 7,
            "{changed} of {total} pixels changed"
        );
    }

    #[test]
    fn rendering_again_into_used_buffers_is_identical() {
        // No state leaks between frames: t=5 after t=9 equals a fresh t=5.
        let (mut p, mut f, mut m) = render(PhantomKind::Ultrasound, 96, 80, 11, 9);
        p.render(5, &mut f, &mut m).unwrap();
        let (_, f2, m2) = render(PhantomKind::Ultrasound, 96, 80, 11, 5);
        assert_eq!(f.rgb, f2.rgb);
        assert_eq!(m.data, m2.data);
    }

    #[test]
    fn ultrasound_is_grey_with_black_outside_the_fan() {
        let (p, f, _) = render(PhantomKind::Ultrasound, 128, 96, 2, 0);
        for y in 0..96 {
            for x in 0..128 {
                let [r, g, b] = f.pixel(x, y);
                assert!(r == g && g == b);
                if !p.in_view(x, y) {
                    assert_eq!(r, 0);
                }
            }
        }
        assert!(!p.in_view(0, 0) && !p.in_view(127, 0) && p.in_view(64, 48));
    }

    #[test]
    fn lesions_are_darker_than_their_surroundings() {
        let mut counts = [0usize; 4];
        for seed in 0..12 {
            for t in [0, 40, 80] {
                let (p, f, m) = render(PhantomKind::Ultrasound, 160, 128, seed, t);
                counts[p.target_count()] += 1;
                let (inside, ring) = inside_and_ring(&p, &f, &m);
                assert!(
                    inside[0] < 0.7 * ring[0],
                    "seed {seed} t {t}: lesion mean {:.1} vs surroundings {:.1}",
                    inside[0],
                    ring[0]
                );
            }
        }
        // Sequences have 1, 2 and 3 lesions.
        assert!(
            counts[1] > 0 && counts[2] > 0 && counts[3] > 0,
            "{counts:?}"
        );
        assert_eq!(counts[0], 0);
    }

    #[test]
    fn masks_are_nonempty_and_inside_the_view() {
        for kind in [PhantomKind::Ultrasound, PhantomKind::Endoscopy] {
            for seed in 0..16 {
                for t in [0, 500] {
                    let (p, _, m) = render(kind, 96, 96, seed, t);
                    assert!(m.area() > 20, "{kind} seed {seed} t {t}: area {}", m.area());
                    for y in 0..96 {
                        for x in 0..96 {
                            if m.contains(x, y) {
                                assert!(
                                    p.in_view(x, y),
                                    "{kind} seed {seed}: mask outside view at {x},{y}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn lesions_move_smoothly() {
        let mut total = 0.0;
        for seed in 0..10 {
            let (mut p, mut f, mut m) = render(PhantomKind::Ultrasound, 128, 128, seed, 100);
            let before = m.data.clone();
            let c0 = centroid(&m);
            p.render(110, &mut f, &mut m).unwrap();
            let c1 = centroid(&m);
            assert_ne!(
                before, m.data,
                "seed {seed}: mask did not change in 10 frames"
            );
            let d = ((c1.0 - c0.0).powi(2) + (c1.1 - c0.1).powi(2)).sqrt();
            assert!(
                d < 8.0,
                "seed {seed}: centroid jumped {d:.1} px in 10 frames"
            );
            total += d;
        }
        assert!(
            total / 10.0 > 0.3,
            "mean centroid motion {:.2} px per 10 frames",
            total / 10.0
        );
    }

    #[test]
    fn polyp_differs_from_the_wall_around_it() {
        for seed in 0..8 {
            let (p, f, m) = render(PhantomKind::Endoscopy, 128, 128, seed, 20);
            let (inside, ring) = inside_and_ring(&p, &f, &m);
            let diff: f64 = (0..3).map(|c| (inside[c] - ring[c]).abs()).sum();
            assert!(
                diff > 20.0,
                "seed {seed}: polyp {inside:?} vs wall {ring:?}"
            );
            // Mucosa is reddish: red dominates.
            assert!(
                ring[0] > ring[1] && ring[0] > ring[2],
                "seed {seed}: {ring:?}"
            );
        }
        let (_, f, _) = render(PhantomKind::Endoscopy, 128, 128, 0, 0);
        assert_eq!(
            f.pixel(0, 0),
            [0, 0, 0],
            "corners are outside the circular view"
        );
    }

    #[test]
    fn kind_parses_and_rejects_with_a_fix() {
        assert_eq!(
            "ultrasound".parse::<PhantomKind>().unwrap(),
            PhantomKind::Ultrasound
        );
        assert_eq!(
            "Endoscopy".parse::<PhantomKind>().unwrap(),
            PhantomKind::Endoscopy
        );
        let e = "mri".parse::<PhantomKind>().unwrap_err().to_string();
        assert!(
            e.contains("mri") && e.contains("fix") && e.contains("ultrasound"),
            "{e}"
        );
    }

    #[test]
    fn wrong_sizes_are_errors() {
        assert!(Phantom::new(PhantomKind::Ultrasound, 8, 64, 0).is_err());
        let mut p = Phantom::new(PhantomKind::Ultrasound, 64, 64, 0).unwrap();
        let mut f = Frame::new(32, 64);
        let mut m = Mask::new(Rect::full(64, 64));
        let e = p.render(0, &mut f, &mut m).unwrap_err().to_string();
        assert!(e.contains("Frame::new(64, 64)"), "{e}");
        let mut f = Frame::new(64, 64);
        let mut m = Mask::new(Rect {
            x: 0,
            y: 0,
            w: 32,
            h: 32,
        });
        assert!(p.render(0, &mut f, &mut m).is_err());
    }

    #[test]
    fn source_paces_frames_from_its_start() {
        let p = Phantom::new(PhantomKind::Ultrasound, 64, 64, 1).unwrap();
        let mut src = PhantomSource::new(p, 50.0).unwrap().limit(Some(10));
        let mut f = Frame::new(64, 64);
        let t0 = Instant::now();
        let mut ids = Vec::new();
        while src.next_frame(&mut f).unwrap() {
            ids.push(f.id);
            assert_eq!(src.last_mask().frame_id, f.id);
            assert_eq!(src.last_mask().captured, f.captured);
        }
        let took = t0.elapsed();
        // Frame 9 is due 180 ms after frame 0; only a lower bound is robust.
        assert!(
            took >= Duration::from_millis(150),
            "10 frames at 50 fps took {took:?}"
        );
        assert_eq!(ids.len(), 10);
        assert_eq!(ids[0], 0);
        assert!(ids.windows(2).all(|w| w[1] > w[0]));
        assert!(!src.next_frame(&mut f).unwrap(), "stays ended");
    }

    #[test]
    fn unpaced_source_does_not_sleep_and_reports_ground_truth() {
        let p = Phantom::new(PhantomKind::Endoscopy, 64, 64, 5).unwrap();
        // At 1 fps, 5 paced frames would take 4 s.
        let mut src = PhantomSource::new(p, 1.0)
            .unwrap()
            .paced(false)
            .limit(Some(5));
        let mut f = Frame::new(64, 64);
        let t0 = Instant::now();
        let mut n = 0;
        while src.next_frame(&mut f).unwrap() {
            assert_eq!(f.id, n);
            n += 1;
        }
        assert_eq!(n, 5);
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t0.elapsed()
        );
        let (_, f2, m2) = render(PhantomKind::Endoscopy, 64, 64, 5, 4);
        assert_eq!(f.rgb, f2.rgb);
        assert_eq!(src.last_mask().data, m2.data);
        assert_eq!(src.last_mask().frame_id, 4);
    }

    #[test]
    fn source_rejects_bad_rates_and_sizes() {
        let p = Phantom::new(PhantomKind::Ultrasound, 64, 64, 1).unwrap();
        assert!(PhantomSource::new(p, 0.0).is_err());
        // A bad kind is refused by the config parser (`phantom.kind`).
        let cfg = PhantomConfig {
            kind: PhantomKind::Ultrasound,
            width: 8,
            height: 64,
            fps: 10.0,
            seed: 1,
        };
        assert!(PhantomSource::from_config(&cfg).is_err());
    }

    #[test]
    fn dataset_has_matching_binary_pairs() {
        let dir = tempfile::tempdir().unwrap();
        write_dataset(dir.path(), PhantomKind::Ultrasound, 4, 9, 64, 48).unwrap();
        let mut areas = Vec::new();
        for i in 0..4 {
            let name = format!("{i:05}.png");
            let img = image::open(dir.path().join("images").join(&name)).unwrap();
            let mask = image::open(dir.path().join("masks").join(&name)).unwrap();
            assert_eq!(img.color(), image::ColorType::Rgb8);
            assert_eq!(mask.color(), image::ColorType::L8);
            assert_eq!((img.width(), img.height()), (64, 48));
            assert_eq!((mask.width(), mask.height()), (64, 48));
            let m = mask.to_luma8();
            assert!(m.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
            let area = m.pixels().filter(|p| p.0[0] == 255).count();
            assert!(area > 0, "{name}: empty mask");
            areas.push(area);
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("images"))
                .unwrap()
                .count(),
            4
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("masks")).unwrap().count(),
            4
        );
        areas.dedup();
        assert!(
            areas.len() > 1,
            "all samples have the same lesion area: no variety"
        );
        assert!(write_dataset(dir.path(), PhantomKind::Ultrasound, 0, 9, 64, 48).is_err());
    }
}
