//! The endoscopy phantom: a circular field of view with vignetting, mucosa
//! texture, vessels and folds, the lumen, and one polyp.

use super::math::*;

pub(super) struct Endoscopy {
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
    /// True when pixel `i` (row-major) is inside the field of view.
    pub(super) fn in_view(&self, i: usize) -> bool {
        self.inside[i]
    }

    pub(super) fn new(w: u32, h: u32, seed: u64) -> Self {
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

    pub(super) fn render(&mut self, t: u64, rgb: &mut [u8], mask: &mut [u8]) {
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
