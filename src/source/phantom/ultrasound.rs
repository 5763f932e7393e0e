//! The ultrasound phantom: echo amplitudes on a polar (beam x depth) grid,
//! speckle, tissue layers and hypoechoic lesions with posterior shadowing
//! or enhancement, log-compressed, then scan-converted into the fan.

use super::math::*;

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

pub(super) struct Ultrasound {
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
    /// Number of lesions in the sequence.
    pub(super) fn lesion_count(&self) -> usize {
        self.lesions.len()
    }

    /// The exact outline of each lesion at frame `t`: `n` points on its
    /// boundary (the zero of the blob's distance, found along rays from its
    /// centre; the blobs are star-shaped), frame pixel coordinates.
    pub(super) fn lesion_outlines(&self, t: u64, n: usize) -> Vec<Vec<(f64, f64)>> {
        self.lesions
            .iter()
            .map(|l| {
                let blob = l.blob.at(t);
                let (cx, cy) = (f64::from(blob.cx), f64::from(blob.cy));
                (0..n)
                    .map(|i| {
                        let th = std::f64::consts::TAU * i as f64 / n as f64;
                        let (s, c) = th.sin_cos();
                        let inside =
                            |r: f64| blob.eval((cx + r * c) as f32, (cy + r * s) as f32).0 < 0.0;
                        let (mut lo, mut hi) = (0.0, f64::from(blob.bound) + 2.0);
                        for _ in 0..40 {
                            let mid = 0.5 * (lo + hi);
                            if inside(mid) {
                                lo = mid;
                            } else {
                                hi = mid;
                            }
                        }
                        let r = 0.5 * (lo + hi);
                        (cx + r * c, cy + r * s)
                    })
                    .collect()
            })
            .collect()
    }

    /// True when pixel `i` (row-major) is inside the fan.
    pub(super) fn in_view(&self, i: usize) -> bool {
        self.pix[i].cell != OUTSIDE
    }

    pub(super) fn new(w: u32, h: u32, seed: u64) -> Self {
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

    pub(super) fn render(&mut self, t: u64, rgb: &mut [u8], mask: &mut [u8]) {
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
        // Axial [1 2 1] along each beam (contiguous), the ends repeated;
        // then lateral [1 2 1] across beams, the edge beams repeated. Slices
        // and windows, not indices, so that both run in vector lanes (the
        // same sums in the same order, so the same bits).
        for (src, dst) in [(&self.re, &mut self.tmp_re), (&self.im, &mut self.tmp_im)] {
            for (r, t) in src
                .chunks_exact(n_s.max(1))
                .zip(dst.chunks_exact_mut(n_s.max(1)))
            {
                axial(r, t);
            }
        }
        for (src, dst) in [(&self.tmp_re, &mut self.re), (&self.tmp_im, &mut self.im)] {
            for (b, out) in dst.chunks_exact_mut(n_s.max(1)).enumerate() {
                let row = |k: usize| &src[k * n_s..(k + 1) * n_s];
                let (m, c, p) = (row(b.saturating_sub(1)), row(b), row((b + 1).min(n_b - 1)));
                for (o, ((&m, &c), &p)) in out.iter_mut().zip(m.iter().zip(c).zip(p)) {
                    *o = m + 2.0 * c + p;
                }
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
                                            // Zipped slices, not indices: without bounds checks the loop runs
                                            // in vector lanes (the same operations per value, so the same bits).
        let cells = self
            .disp
            .iter_mut()
            .zip(self.re.iter().zip(&self.im))
            .zip(self.tissue.iter().zip(&self.gain));
        for ((d, (&re, &im)), (&tissue, &gain)) in cells {
            let env = (re * re + im * im).sqrt() * NORM * tissue * gain;
            let db = 6.0206 * log2_f(env);
            *d = ((db + 30.0) * (255.0 / 48.0)).clamp(0.0, 255.0);
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

/// `t[s] = r[s - 1] + 2 r[s] + r[s + 1]` along one beam, the end samples
/// standing in for their missing neighbours.
fn axial(r: &[f32], t: &mut [f32]) {
    let n = r.len();
    let last = n - 1;
    t[0] = r[0] + 2.0 * r[0] + r[1.min(last)];
    if n > 1 {
        t[last] = r[last - 1] + 2.0 * r[last] + r[last];
    }
    if n > 2 {
        for (t, w) in t[1..last].iter_mut().zip(r.windows(3)) {
            *t = w[0] + 2.0 * w[1] + w[2];
        }
    }
}
