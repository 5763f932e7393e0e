//! Renders sample composites to PNG and times the overlay on a 640x480 frame.
//!
//! `cargo run --release --example overlay_demo -- [OUT_DIR]` writes
//! `overlay_live.png`, `overlay_error.png` (640x480), `overlay_live_small.png`
//! and `overlay_paused.png` (256x256) into OUT_DIR (default `out/`) and
//! prints compose times.

use std::time::{Duration, Instant};

use lgms_edge::config::OverlayConfig;
use lgms_edge::frame::{Frame, Mask, Rect};
use lgms_edge::overlay::{draw_mask, HudInfo, Overlay, OverlayStyle, RgbTarget};

/// A grey, ultrasound-like frame: a soft vertical gradient with banding.
fn gradient(w: u32, h: u32) -> Frame {
    let mut f = Frame::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let fy = y as f32 / h as f32;
            let fx = x as f32 / w as f32;
            let band = ((fx * 23.0 + fy * 7.0).sin() * 0.5 + 0.5) * 40.0;
            let v = (30.0 + 120.0 * (1.0 - fy) * (0.6 + 0.4 * fx) + band).min(255.0) as u8;
            let i = (y as usize * w as usize + x as usize) * 3;
            f.rgb[i..i + 3].copy_from_slice(&[v, v, v.saturating_add(6)]);
        }
    }
    f
}

/// A lobed disc of radius about `r` centred in a roi at (x, y) of side 2r+8.
fn disc(x: u32, y: u32, r: u32) -> Mask {
    let s = 2 * r + 8;
    let mut m = Mask::new(Rect { x, y, w: s, h: s });
    let c = s as f32 / 2.0;
    for my in 0..s {
        for mx in 0..s {
            let (dx, dy) = (mx as f32 + 0.5 - c, my as f32 + 0.5 - c);
            // A slightly irregular outline, like a real segmentation.
            let rr = r as f32 * (1.0 + 0.08 * (dy.atan2(dx) * 5.0).sin());
            m.data[(my * s + mx) as usize] = u8::from(dx * dx + dy * dy <= rr * rr);
        }
    }
    m
}

fn save(f: &Frame, path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    image::RgbImage::from_raw(f.width, f.height, f.rgb.clone())
        .ok_or("frame buffer size")?
        .save(path)?;
    println!("wrote {}", path.display());
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "out".into()));
    std::fs::create_dir_all(&out)?;
    let style = OverlayStyle::from_config(&OverlayConfig::default(), Duration::from_millis(150));

    // 640x480 with a ~15% mask, live.
    let base = gradient(640, 480);
    let mask = disc(250, 140, 121);
    let hud = HudInfo {
        fps: 29.97,
        latency_ms: Some(41.6),
        model: "lgmsnet",
        precision: "int8",
        now: mask.captured + Duration::from_millis(38),
        model_failed: false,
    };
    let mut overlay = Overlay::new(style);
    let mut f = base.clone();
    overlay.draw(&mut RgbTarget::for_frame(&mut f)?, Some(&mask), &hud)?;
    save(&f, &out.join("overlay_live.png"))?;
    let mut f = base.clone();
    let err = HudInfo {
        model_failed: true,
        ..hud
    };
    overlay.draw(&mut RgbTarget::for_frame(&mut f)?, Some(&mask), &err)?;
    save(&f, &out.join("overlay_error.png"))?;

    // 256x256, live and paused.
    let small = gradient(256, 256);
    let m2 = disc(70, 60, 50);
    let mut f = small.clone();
    let live_small = HudInfo {
        now: m2.captured + Duration::from_millis(20),
        ..hud
    };
    overlay.draw(&mut RgbTarget::for_frame(&mut f)?, Some(&m2), &live_small)?;
    save(&f, &out.join("overlay_live_small.png"))?;
    let mut f = small.clone();
    let paused = HudInfo {
        now: m2.captured + Duration::from_millis(412),
        ..hud
    };
    overlay.draw(&mut RgbTarget::for_frame(&mut f)?, Some(&m2), &paused)?;
    save(&f, &out.join("overlay_paused.png"))?;

    // Timing: each case draws onto a fresh copy of the frame; the copy is
    // not counted.
    let iters = 500;
    let mut f = base.clone();
    let mut time = |name: &str, draw: &mut dyn FnMut(&mut RgbTarget<'_>)| {
        let mut runs = Vec::with_capacity(iters);
        for _ in 0..iters {
            f.copy_from(&base);
            let mut t = RgbTarget::for_frame(&mut f).expect("frame buffer matches its size");
            let start = Instant::now();
            draw(&mut t);
            runs.push(start.elapsed());
        }
        runs.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "{name:<36} {iters} runs: median {:7.1} us, min {:7.1} us, p99 {:7.1} us",
            us(runs[iters / 2]),
            us(runs[0]),
            us(runs[iters * 99 / 100]),
        );
    };
    println!(
        "640x480 frame, mask {} px ({:.1}% of the frame):",
        mask.area(),
        100.0 * mask.area() as f64 / (640.0 * 480.0)
    );
    time("compose (mask + 2px outline + HUD)", &mut |t| {
        overlay.draw(t, Some(&mask), &hud).expect("infallible");
    });
    let s = style;
    time("mask fill only", &mut |t| {
        draw_mask(t, &mask, s.color, s.alpha, None, 1).expect("infallible");
    });
    time("mask fill + 1px outline", &mut |t| {
        draw_mask(t, &mask, s.color, s.alpha, s.outline, 1).expect("infallible");
    });
    time("mask fill + 2px outline", &mut |t| {
        draw_mask(t, &mask, s.color, s.alpha, s.outline, 2).expect("infallible");
    });
    let mut hud_only = Overlay::new(style);
    time("HUD + label only (no mask yet)", &mut |t| {
        hud_only.draw(t, None, &hud).expect("infallible");
    });
    Ok(())
}
