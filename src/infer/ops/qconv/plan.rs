//! The int8 convolution prepared once at load: packed weights, zero-point
//! and requantisation constants, the padded input layout; and the run that
//! fills the input buffer and calls a kernel per block.

use anyhow::bail;

use super::super::{for_each_block, SharedOut};
use super::{Kernel, CO, PX};

/// Everything the operator needs, prepared once at load.
#[derive(Debug)]
pub struct Plan {
    /// Input channels.
    pub(crate) cin: usize,
    /// Output channels.
    pub(crate) cout: usize,
    /// Channel groups (1: a dense conv).
    pub(crate) groups: usize,
    /// Kernel size (odd; padding `k / 2` on every side).
    pub(crate) k: usize,
    /// Image height.
    pub(crate) h: usize,
    /// Image width.
    pub(crate) w: usize,
    /// Input zero point (of the quantisation the conv sees).
    pub(crate) x_zp: i32,
    /// f32 input quantised here, `q = round_ties_even(x * inv_scale) + zp`:
    /// `Some((inv_scale, zp))`; `None` when the input is already u8.
    pub(crate) quantize_input: Option<(f32, i32)>,
    /// Table applied to the quantised input (tract's fused element-wise op).
    pub(crate) lut_in: Option<Box<[u8; 256]>>,
    /// What a requantised value `q` (0..=255) becomes in a u8 output: the
    /// table after the conv (tract's fused element-wise op), or `q`.
    pub(crate) out_u8: [u8; 256],
    /// What `q` becomes in an f32 output: `out_u8[q]` dequantised. One
    /// lookup replaces the table, the dequantisation and a float-to-int
    /// conversion per value.
    pub(crate) out_f32: [f32; 256],
    /// Whether the output goes through a table (`out_u8` for a u8 output,
    /// `out_f32` for f32) instead of plain requantisation (and
    /// dequantisation).
    pub(crate) out_table: bool,
    /// Per output channel, what `q` becomes in the f32 output, where a
    /// per-channel affine (a BatchNorm after the activation) follows the
    /// conv: then `out_f32` is unused.
    pub(crate) out_f32_channels: Option<Box<[[f32; 256]]>>,
    /// Levels `(lo, hi)` such that `out_f32[q]` is `(q.clamp(lo, hi) -
    /// zp) * scale` for every q, bit for bit (a ReLU after the conv):
    /// the f32 output is then computed instead of looked up.
    pub(crate) out_clamp: Option<(i32, i32)>,
    /// Weights `[cout/4][k*k][cin/4][4 out][4 in]`, zero-padded.
    pub(crate) weights: Vec<i8>,
    /// Sum of each output channel's weights (for the zero-point term).
    pub(crate) wsum: Vec<i32>,
    /// Bias per output channel, in accumulator units.
    pub(crate) bias: Vec<i32>,
    /// `x_scale * w_scale[o] / y_scale` per output channel.
    pub(crate) mult: Vec<f32>,
    /// Output zero point (requantisation).
    pub(crate) y_zp: i32,
    /// f32 output dequantised here, `(q - zp) * scale`: `Some((zp, scale))`;
    /// `None` for a u8 output.
    pub(crate) dequantize_output: Option<(i32, f32)>,
    /// Whether every adjacent input-channel weight pair has `|w0| + |w1| <= 128`.
    pub(crate) fits_7bit: bool,
    /// Whether an f32 tensor of the output's shape is added to the output
    /// (the residual `Add` after the conv), tile by tile while the values
    /// are in cache.
    pub(crate) residual: bool,
}

impl Plan {
    /// Builds the plan from ONNX-style parameters. `geometry`: `(cin, cout,
    /// k, h, w, groups)`; `w`: `[cout, cin / groups, k, k]`; `w_scale`: one
    /// value or one per output channel; `bias`: none or one per output
    /// channel. With `groups > 1`, each group's channel counts must be
    /// multiples of 4 (a 4-channel block never straddles two groups).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        (cin, cout, k, h, w_px, groups): (usize, usize, usize, usize, usize, usize),
        w: &[i8],
        bias: Option<&[i32]>,
        x_scale: f32,
        x_zp: i32,
        w_scale: &[f32],
        y_scale: f32,
        y_zp: i32,
    ) -> anyhow::Result<Plan> {
        if k % 2 == 0 || cin == 0 || cout == 0 || h == 0 || w_px == 0 || groups == 0 {
            bail!("int8 conv: unsupported geometry {cin}->{cout} channels, {k}x{k} kernel, {h}x{w_px} image, {groups} groups");
        }
        if !(0..=255).contains(&x_zp) || !(0..=255).contains(&y_zp) {
            bail!("int8 conv: zero points {x_zp} (input) and {y_zp} (output) must be u8 levels, 0..=255");
        }
        if groups > 1
            && (cin % groups != 0
                || cout % groups != 0
                || (cin / groups) % 4 != 0
                || (cout / groups) % 4 != 0)
        {
            bail!("int8 conv: {groups} groups of {cin}->{cout} channels: each group needs multiples of 4");
        }
        let cin_g = cin / groups;
        if w.len() != cout * cin_g * k * k {
            bail!("int8 conv: {} weights for {cout}x{cin_g}x{k}x{k}", w.len());
        }
        if w_scale.len() != 1 && w_scale.len() != cout {
            bail!(
                "int8 conv: {} weight scales for {cout} channels",
                w_scale.len()
            );
        }
        if bias.is_some_and(|b| b.len() != cout) {
            bail!("int8 conv: bias length differs from {cout} channels");
        }
        // A NaN or infinite requantisation factor would make the SIMD and
        // the reference epilogues disagree on garbage: such a conv is left
        // to tract.
        let positive = |s: f32| s.is_finite() && s > 0.0;
        if !positive(x_scale)
            || !positive(y_scale)
            || w_scale.iter().any(|s| !s.is_finite() || *s < 0.0)
            || w_scale.iter().any(|s| !(x_scale * s / y_scale).is_finite())
        {
            bail!(
                "int8 conv: scales must be finite, the input and output ones positive, the weight ones not negative (input {x_scale}, output {y_scale}, weights {:?}..)",
                &w_scale[..w_scale.len().min(4)]
            );
        }
        // Input-channel quads per output block: the block's group only.
        let (cin4, cout4, taps) = (cin_g.div_ceil(4), cout.div_ceil(4), k * k);
        let mut weights = vec![0i8; cout4 * taps * cin4 * 16];
        let mut wsum = vec![0i32; cout];
        for o in 0..cout {
            for i in 0..cin_g {
                for t in 0..taps {
                    let v = w[(o * cin_g + i) * taps + t];
                    wsum[o] += v as i32;
                    weights[(((o / 4) * taps + t) * cin4 + i / 4) * 16 + (o % 4) * 4 + i % 4] = v;
                }
            }
        }
        let fits_7bit = weights
            .chunks_exact(2)
            .all(|p| (p[0] as i32).abs() + (p[1] as i32).abs() <= 128);
        let ws = |o: usize| w_scale[if w_scale.len() == 1 { 0 } else { o }];
        Ok(Plan {
            cin,
            cout,
            groups,
            k,
            h,
            w: w_px,
            x_zp,
            quantize_input: None,
            lut_in: None,
            out_u8: [0; 256],
            out_f32: [0.0; 256],
            out_table: false,
            out_clamp: None,
            out_f32_channels: None,
            weights,
            wsum,
            bias: bias.map(<[i32]>::to_vec).unwrap_or_else(|| vec![0; cout]),
            mult: (0..cout).map(|o| x_scale * ws(o) / y_scale).collect(),
            y_zp,
            dequantize_output: None,
            fits_7bit,
            residual: false,
        }
        .with_io(
            Some((1.0 / x_scale, x_zp)),
            None,
            None,
            Some((y_zp, y_scale)),
        ))
    }

    /// The same conv with the given ends: the input quantised here
    /// (`Some((inv_scale, zp))`) or already u8, a table on the quantised
    /// input, a table on the requantised output, and the output
    /// dequantised here (`Some((zp, scale))`) or left u8.
    pub(crate) fn with_io(
        self,
        quantize_input: Option<(f32, i32)>,
        lut_in: Option<Box<[u8; 256]>>,
        lut_out: Option<&[u8; 256]>,
        dequantize_output: Option<(i32, f32)>,
    ) -> Plan {
        let mut out_u8 = [0u8; 256];
        for (q, v) in out_u8.iter_mut().enumerate() {
            *v = lut_out.map_or(q as u8, |t| t[q]);
        }
        let mut out_f32 = [0f32; 256];
        if let Some((zp, scale)) = dequantize_output {
            for (d, &v) in out_f32.iter_mut().zip(&out_u8) {
                *d = (v as f32 - zp as f32) * scale;
            }
        }
        Plan {
            quantize_input,
            lut_in,
            out_clamp: dequantize_output.and_then(|d| clamped(&out_f32, d)),
            out_table: out_u8.iter().enumerate().any(|(q, &v)| v as usize != q),
            out_u8,
            out_f32,
            dequantize_output,
            ..self
        }
    }

    /// The same conv with `table[q]` as the f32 output of level `q` (the
    /// dequantised level through element-wise ops folded into the conv).
    pub(crate) fn with_f32_table(self, table: [f32; 256]) -> Plan {
        Plan {
            out_clamp: self.dequantize_output.and_then(|d| clamped(&table, d)),
            out_f32: table,
            out_table: true,
            ..self
        }
    }

    /// The same conv with a residual added to its f32 output.
    pub(crate) fn with_residual(self) -> Plan {
        Plan {
            residual: true,
            ..self
        }
    }

    /// The same conv with `tables[c][q]` as the f32 output of level `q` in
    /// channel `c` (one table per output channel).
    pub(crate) fn with_f32_channel_tables(self, tables: Vec<[f32; 256]>) -> Plan {
        assert_eq!(tables.len(), self.cout, "one table per output channel");
        Plan {
            out_f32_channels: Some(tables.into_boxed_slice()),
            out_table: true,
            out_clamp: None,
            ..self
        }
    }

    fn pad(&self) -> usize {
        self.k / 2
    }
    /// Pixels per padded row: room for the last 16-pixel segment and the taps.
    fn row_px(&self) -> usize {
        self.w.div_ceil(PX) * PX + 2 * self.pad()
    }
    /// Bytes per 4-channel plane: an odd number of 64-byte cache lines.
    /// A 1x1 kernel step reads the same pixels from every plane; at a
    /// stride of a multiple of 4 KiB (a 64x64 plane is exactly 16 KiB)
    /// all those reads fall into one set of the L1 cache and evict each
    /// other; at an odd number of lines they spread over every set
    /// (1x1 convs 1.05-1.2x faster in a standalone loop).
    fn plane(&self) -> usize {
        let lines = ((self.h + 2 * self.pad()) * self.row_px() * 4).div_ceil(64);
        (lines | 1) * 64
    }
    /// Bytes of the quantised input buffer.
    pub fn buf_len(&self) -> usize {
        self.cin.div_ceil(4) * self.plane()
    }
    fn taps(&self) -> Vec<usize> {
        let row = self.row_px() * 4;
        (0..self.k * self.k)
            .map(|t| (t / self.k) * row + (t % self.k) * 4)
            .collect()
    }

    /// Quantises (or copies) `x` (`[cin, h, w]`, in parts along the
    /// channels: the inputs of a concat the conv absorbed) into `buf` in
    /// `kernel`'s encoding, padding with the zero point: one block per
    /// padded row, on the pool when there is one.
    pub(super) fn fill(&self, x: &[Input<'_>], buf: &mut [u8], kernel: Kernel) {
        let hw = self.h * self.w;
        assert!(
            x.iter().all(|p| p.len() % hw == 0)
                && x.iter().map(Input::len).sum::<usize>() == self.cin * hw
                && buf.len() >= self.buf_len()
        );
        let (pad, row, plane) = (self.pad(), self.row_px() * 4, self.plane());
        let zp = self.x_zp as u8 ^ if kernel.signed { 0x80 } else { 0 };
        // Padding rows above and below each plane.
        for dst_plane in buf[..self.buf_len()].chunks_mut(plane) {
            dst_plane[..pad * row].fill(zp);
            dst_plane[(pad + self.h) * row..].fill(zp);
        }
        let dst = SharedOut(buf.as_mut_ptr() as *mut f32);
        for_each_block(self.cin.div_ceil(4) * self.h, |n| {
            let (c4, y) = (n / self.h, n % self.h);
            let start = c4 * plane + (y + pad) * row;
            // SAFETY: padded row `y` of plane `c4` lies inside `buf` (its
            // `buf_len` bytes were asserted above), no other block writes
            // it, and `buf` outlives the loop.
            let padded =
                unsafe { std::slice::from_raw_parts_mut((dst.ptr() as *mut u8).add(start), row) };
            self.fill_row(x, c4, y, padded, kernel)
        });
    }

    /// Writes padded row `y` of 4-channel plane `c4`.
    fn fill_row(&self, x: &[Input<'_>], c4: usize, y: usize, padded: &mut [u8], kernel: Kernel) {
        #[cfg(target_arch = "x86_64")]
        if kernel.avx2.is_some() {
            // SAFETY: `avx2` holds the proof that this CPU has AVX2 and FMA.
            return unsafe { self.fill_row_avx2(x, c4, y, padded, kernel) };
        }
        self.fill_row_body(x, c4, y, padded, kernel, 0)
    }

    #[cfg(target_arch = "x86_64")]
    /// Whole 32-pixel pieces through [`super::x86::fill32_avx2`], the rest
    /// through [`Plan::fill_row_body`] compiled for AVX2 + FMA.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fill_row_avx2(
        &self,
        x: &[Input<'_>],
        c4: usize,
        y: usize,
        padded: &mut [u8],
        kernel: Kernel,
    ) {
        use super::x86::{fill32_avx2, Line};
        let (pad, w) = (self.pad(), self.w);
        let flip = if kernel.signed { 0x80 } else { 0 };
        let whole = w / 32 * 32;
        // Where each channel's row `y` starts.
        let lines: [Line; 4] = std::array::from_fn(|q| match self.channel_row(x, c4 * 4 + q, y) {
            // Padding channel (zero weights): any value will do.
            None => Line::Same(self.x_zp as u8),
            Some(Input::F32(row)) => Line::F32(row.as_ptr()),
            Some(Input::U8(row)) => Line::U8(row.as_ptr()),
        });
        let quant = self.quantize_input.unwrap_or((1.0, 0));
        let dst = &mut padded[pad * 4..(pad + whole) * 4];
        for (k, d) in dst.chunks_exact_mut(128).enumerate() {
            let at = |l: Line| match l {
                // SAFETY: `k * 32 + 32 <= whole <= w` values of the row.
                Line::F32(p) => Line::F32(unsafe { p.add(32 * k) }),
                Line::U8(p) => Line::U8(unsafe { p.add(32 * k) }),
                same => same,
            };
            // SAFETY: the proof of AVX2 (the caller's); 32 values per line
            // (above) and 128 bytes in `d`.
            unsafe {
                fill32_avx2(
                    &lines.map(at),
                    quant,
                    self.lut_in.as_deref(),
                    flip,
                    d.as_mut_ptr(),
                )
            };
        }
        self.fill_row_body(x, c4, y, padded, kernel, whole)
    }

    /// Row `y` of input channel `c` (`w` values, from whichever part of
    /// `x` holds the channel); None for a padding channel past `cin`.
    fn channel_row<'a>(&self, x: &[Input<'a>], c: usize, y: usize) -> Option<Input<'a>> {
        if c >= self.cin {
            return None;
        }
        let (part, c) = locate(x, c, self.h * self.w);
        let at = (c * self.h + y) * self.w;
        Some(match part {
            Input::F32(v) => Input::F32(&v[at..at + self.w]),
            Input::U8(v) => Input::U8(&v[at..at + self.w]),
        })
    }

    /// Writes the padding of row `y` of 4-channel plane `c4` and its
    /// pixels from `from` on.
    #[inline(always)]
    fn fill_row_body(
        &self,
        x: &[Input<'_>],
        c4: usize,
        y: usize,
        padded: &mut [u8],
        kernel: Kernel,
        from: usize,
    ) {
        /// Pixels per pass: stack buffers, no allocation per conv.
        const CHUNK: usize = 64;
        let flip = if kernel.signed { 0x80 } else { 0 };
        let zp = self.x_zp as u8 ^ flip;
        let (pad, w) = (self.pad(), self.w);
        // Zero point left, the pixels, zero point right (padding and the
        // last segment's overrun).
        padded[..pad * 4].fill(zp);
        padded[(pad + w) * 4..].fill(zp);
        for x0 in (from..w).step_by(CHUNK) {
            let n = CHUNK.min(w - x0);
            // One chunk of each of 4 channels, then the 4 bytes of each
            // pixel as one little-endian u32: both loops vectorise (byte
            // stores at a stride of 4 do not).
            let mut lines = [[0u8; CHUNK]; 4];
            for (q, line) in lines.iter_mut().enumerate() {
                let line = &mut line[..n];
                let Some(row) = self.channel_row(x, c4 * 4 + q, y) else {
                    // Padding channel (zero weights): any value will do.
                    line.fill(self.x_zp as u8);
                    continue;
                };
                match (row, self.quantize_input) {
                    (Input::F32(row), Some((inv, zp))) => {
                        for (d, &v) in line.iter_mut().zip(&row[x0..x0 + n]) {
                            // Not `clamp`, which keeps NaN: here NaN
                            // becomes the lowest level, as with `as u8`.
                            #[allow(clippy::manual_clamp)]
                            let v = (v * inv).max(-1024.0).min(1024.0);
                            *d = (round_even_i32(v) + zp).clamp(0, 255) as u8;
                        }
                    }
                    (Input::U8(row), _) => line.copy_from_slice(&row[x0..x0 + n]),
                    (Input::F32(_), None) => unreachable!("f32 input without quantisation"),
                }
                if let Some(t) = &self.lut_in {
                    line.iter_mut().for_each(|v| *v = t[*v as usize]);
                }
            }
            let flip4 = u32::from_ne_bytes([flip; 4]);
            let mut px = [0u32; CHUNK];
            for (j, p) in px.iter_mut().enumerate() {
                *p = u32::from_le_bytes([lines[0][j], lines[1][j], lines[2][j], lines[3][j]])
                    ^ flip4;
            }
            let dst = &mut padded[(pad + x0) * 4..(pad + x0 + n) * 4];
            for (d, p) in dst.chunks_exact_mut(4).zip(&px) {
                d.copy_from_slice(&p.to_le_bytes());
            }
        }
    }

    /// Computes output channel block `cb` (4 channels), row `y`, from the
    /// quantised input, into `out` (`[cout, h, w]` f32).
    ///
    /// # Safety
    /// `out` must point to `cout * h * w` values (f32, or u8 when the plan
    /// has no dequantisation) that no other thread writes at the same
    /// (channel, row).
    #[allow(clippy::too_many_arguments)]
    unsafe fn row(
        &self,
        buf: &[u8],
        cb: usize,
        y: usize,
        taps: &[usize],
        kernel: Kernel,
        out: SharedOut,
        residual: Option<&[f32]>,
    ) {
        // Whole 16-pixel segments requantise through the AVX2 epilogue;
        // the plain-Rust loops around the kernel (row tails), compiled for
        // AVX2, run 8 lanes wide instead of baseline SSE2's 4.
        #[cfg(target_arch = "x86_64")]
        if kernel.avx2.is_some() {
            // SAFETY: `avx2` holds the proof that this CPU has AVX2 and FMA;
            // the caller's guarantee on `out` passes on.
            return unsafe { self.row_avx2(buf, cb, y, taps, kernel, out, residual) };
        }
        // SAFETY: the caller's guarantee on `out` passes on.
        unsafe { self.row_body(buf, cb, y, taps, kernel, out, residual) }
    }

    /// [`Plan::row_body`] compiled for AVX2 + FMA.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `out` as for [`Plan::row`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn row_avx2(
        &self,
        buf: &[u8],
        cb: usize,
        y: usize,
        taps: &[usize],
        kernel: Kernel,
        out: SharedOut,
        residual: Option<&[f32]>,
    ) {
        // SAFETY: the caller's guarantee on `out` passes on.
        unsafe { self.row_body(buf, cb, y, taps, kernel, out, residual) }
    }

    /// # Safety
    /// `out` as for [`Plan::row`]; with a `residual`, an f32 output of
    /// the residual's size.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn row_body(
        &self,
        buf: &[u8],
        cb: usize,
        y: usize,
        taps: &[usize],
        kernel: Kernel,
        out: SharedOut,
        residual: Option<&[f32]>,
    ) {
        let (row, plane) = (self.row_px() * 4, self.plane());
        let cin4 = (self.cin / self.groups).div_ceil(4);
        let wlen = taps.len() * cin4 * 16;
        // This block's group starts at input plane `group * cin4`.
        let first_plane = (cb * CO) / (self.cout / self.groups) * cin4;
        let wb = &self.weights[cb * wlen..(cb + 1) * wlen];
        let zp = if kernel.signed {
            self.x_zp - 128
        } else {
            self.x_zp
        };
        let mut acc = [0i32; CO * PX];
        let rows = CO.min(self.cout - cb * CO);
        let mut corr = [0i32; CO];
        let mut mult = [0f32; CO];
        for r in 0..rows {
            let o = cb * CO + r;
            corr[r] = self.bias[o] - zp * self.wsum[o];
            mult[r] = self.mult[o];
        }
        let store = match &self.out_f32_channels {
            Some(t) => Store::F32Tables(&t[cb * CO..cb * CO + rows]),
            None => self.store(),
        };
        let size = match store {
            Store::F32 { .. } | Store::F32Table(_) | Store::F32Tables(_) => 4,
            Store::U8 | Store::U8Table(_) => 1,
        };
        // Where each row's output starts: unused rows get a null that the
        // stores never touch (a fixed-size map, without the masked
        // vector store LLVM makes of a loop over `rows`, which stalls the
        // loads that follow it).
        let starts: [*mut u8; CO] = std::array::from_fn(|r| {
            if r >= rows {
                return std::ptr::null_mut();
            }
            let at = ((cb * CO + r) * self.h + y) * self.w;
            // SAFETY: row y of channel `cb * CO + r` (`w` values of the
            // output type) is inside `out` (the caller's guarantee).
            unsafe { (out.ptr() as *mut u8).add(at * size) }
        });
        for x0 in (0..self.w).step_by(PX) {
            let base = first_plane * plane + y * row + x0 * 4;
            (kernel.tile)(buf, base, taps, plane, cin4, wb, &mut acc);
            let n = PX.min(self.w - x0);
            let dst = starts.map(|p| p.wrapping_add(x0 * size));
            #[cfg(target_arch = "x86_64")]
            let stored = if let (Some(_), PX) = (kernel.avx2, n) {
                // SAFETY: the proof of AVX2; `dst[r]` holds PX values for
                // every r < rows, which only this block writes.
                unsafe {
                    super::x86::store_tile_avx2(&acc, rows, &corr, &mult, self.y_zp, store, &dst)
                };
                true
            } else {
                false
            };
            #[cfg(not(target_arch = "x86_64"))]
            let stored = false;
            if !stored {
                // SAFETY: as above, for n values per row.
                unsafe {
                    super::scalar::store_tile(&acc, rows, n, &corr, &mult, self.y_zp, store, &dst)
                };
            }
            if let Some(res) = residual {
                for (r, &d) in dst.iter().enumerate().take(rows) {
                    let at = ((cb * CO + r) * self.h + y) * self.w + x0;
                    // SAFETY: the n f32 values just stored at `d` (the
                    // caller's guarantee: an f32 output), which only this
                    // block writes.
                    let d = unsafe { std::slice::from_raw_parts_mut(d as *mut f32, n) };
                    super::super::add_residual(d, &res[at..at + n]);
                }
            }
        }
    }

    /// Where the requantised levels go (see [`Store`]).
    pub(super) fn store(&self) -> Store<'_> {
        match (self.dequantize_output, self.out_table, self.out_clamp) {
            (Some((zp, scale)), false, _) => Store::F32 {
                zp,
                scale,
                lo: 0,
                hi: 255,
            },
            (Some((zp, scale)), true, Some((lo, hi))) => Store::F32 { zp, scale, lo, hi },
            (Some(_), true, None) => Store::F32Table(&self.out_f32),
            (None, false, _) => Store::U8,
            (None, true, _) => Store::U8Table(&self.out_u8),
        }
    }

    /// The whole convolution, f32 `x` (`[cin, h, w]`) into f32 `out`
    /// (`[cout, h, w]`), with `kernel`; `buf` is scratch of
    /// [`Plan::buf_len`] bytes. Needs a plan with f32 input and output.
    pub fn run(&self, x: &[f32], buf: &mut [u8], out: &mut [f32], kernel: Kernel) {
        assert!(self.quantize_input.is_some() && self.dequantize_output.is_some());
        assert!(out.len() >= self.cout * self.h * self.w);
        self.run_any(
            &[Input::F32(x)],
            buf,
            SharedOut(out.as_mut_ptr()),
            kernel,
            None,
        );
    }

    /// `x`: the input in parts along the channels (see [`Plan::fill`]);
    /// `out` holds `cout * h * w` values of the plan's output type;
    /// `residual`, as many f32 values, is added to an f32 output.
    pub(super) fn run_any(
        &self,
        x: &[Input<'_>],
        buf: &mut [u8],
        out: SharedOut,
        kernel: Kernel,
        residual: Option<&[f32]>,
    ) {
        let n_out = self.cout * self.h * self.w;
        assert!(
            residual.is_none_or(|r| r.len() == n_out && self.dequantize_output.is_some()),
            "int8 conv: a residual needs an f32 output of its size"
        );
        self.fill(x, buf, kernel);
        let buf = &*buf;
        let taps = self.taps();
        let cout4 = self.cout.div_ceil(4);
        // Row-major blocks: the output-channel blocks of one row follow
        // each other and read the same input rows while they are in
        // cache, and each thread of the pool takes a band of rows (half
        // the input) instead of every row for half the channels. At 2
        // threads the int8 convs take 39.5 instead of 42 ms (the 1x1
        // convs with few output channels, which read a large input for
        // little arithmetic, 1.1-1.2x faster); at 1 thread no change.
        for_each_block(cout4 * self.h, |n| {
            // SAFETY: block n owns channels 4*(n % cout4).. of row
            // n / cout4; the caller guarantees `out`'s size and that it
            // outlives the loop.
            unsafe { self.row(buf, n % cout4, n / cout4, &taps, kernel, out, residual) }
        });
    }
}

/// Rounds half to even, as ONNX quantisation does, for `|v| <= 2^22`,
/// as an integer: adding 1.5 * 2^23 leaves the f32 rounding (ties to even)
/// to the hardware and fixes the sum's exponent, so its bits minus the
/// constant's bits are the integer. Every caller clamps `v` to +-1024
/// first (anything beyond lands outside 0..=255 either way). Neither
/// `f32::round_ties_even` (a libm call on baseline x86_64, which has no
/// SSE4.1 `roundps`) nor a float-to-int cast vectorises as well.
#[inline(always)]
pub(super) fn round_even_i32(v: f32) -> i32 {
    ((v + MAGIC).to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32)
}

/// 1.5 * 2^23: adding it leaves no fraction bits in an f32 of magnitude
/// below 2^22.
const MAGIC: f32 = 12_582_912.0;

/// The operator's input, quantised here or already u8.
#[derive(Clone, Copy)]
pub(super) enum Input<'a> {
    F32(&'a [f32]),
    U8(&'a [u8]),
}

impl Input<'_> {
    pub(super) fn len(&self) -> usize {
        match self {
            Input::F32(x) => x.len(),
            Input::U8(x) => x.len(),
        }
    }
}

/// The part of `x` that holds input channel `c` (of `hw` values each), and
/// `c`'s index in that part. `fill` checked that the parts hold every
/// channel.
fn locate<'a>(x: &[Input<'a>], mut c: usize, hw: usize) -> (Input<'a>, usize) {
    for &part in x {
        let n = part.len() / hw;
        if c < n {
            return (part, c);
        }
        c -= n;
    }
    unreachable!("channel beyond the parts that fill checked")
}

/// `(lo, hi)` where `table[q]` is `(q.clamp(lo, hi) - zp) * scale` for
/// every level, bit for bit; None where it is not.
fn clamped(table: &[f32; 256], (zp, scale): (i32, f32)) -> Option<(i32, i32)> {
    let affine = |q: i32| (q - zp) as f32 * scale;
    let on = |q: i32| table[q as usize].to_bits() == affine(q).to_bits();
    let lo = (0..256).find(|&q| on(q))?;
    let hi = (0..256).rev().find(|&q| on(q))?;
    (0..256)
        .all(|q: i32| table[q as usize].to_bits() == affine(q.clamp(lo, hi)).to_bits())
        .then_some((lo, hi))
}

/// Where a tile's requantised levels `q` (0..=255) go: f32 dequantised
/// after a clamp to `lo..=hi`, `(q.clamp(lo, hi) - zp) * scale`; f32
/// through a 256-entry table, or one table per row; u8 as they are; u8
/// through a table.
#[derive(Debug, Clone, Copy)]
pub(super) enum Store<'a> {
    F32 {
        zp: i32,
        scale: f32,
        lo: i32,
        hi: i32,
    },
    F32Table(&'a [f32; 256]),
    /// One table per row of the tile.
    F32Tables(&'a [[f32; 256]]),
    U8,
    U8Table(&'a [u8; 256]),
}
