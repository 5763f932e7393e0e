//! The bundled f32 model with and without some of our operators, timed
//! alternately in one process (so that a shared machine's drift hits both
//! alike): min and median ms per inference and the ratio.
//!
//!     cargo run --release --example skip_ab -- SKIP [THREADS] [RUNS] [MODEL]
//!
//! SKIP: what `LGMS_SKIP_OPS` leaves to tract in the B model (e.g.
//! `conv3x3,gelu`); A runs every operator.
use std::path::Path;
use std::time::Instant;

use lgms_edge::infer::engine::Engine;
use lgms_edge::infer::model::{LoadOptions, Model};

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let skip = a.get(1).cloned().unwrap_or_default();
    let threads: usize = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let runs: usize = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(15);
    let path = a
        .get(4)
        .cloned()
        .unwrap_or_else(|| "models/lgmsnet-phantom-us.f32.onnx".into());
    let opts = LoadOptions {
        threads,
        ..LoadOptions::default()
    };
    // `substitute` reads LGMS_SKIP_OPS while the model loads.
    std::env::set_var("LGMS_SKIP_OPS", "");
    let ours = Model::load(Path::new(&path), &opts)?;
    std::env::set_var("LGMS_SKIP_OPS", &skip);
    let skipped = Model::load(Path::new(&path), &opts)?;
    std::env::remove_var("LGMS_SKIP_OPS");
    let (h, w) = ours.info().input_hw;
    let input: Vec<f32> = (0..3 * h * w)
        .map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 2.0)
        .collect();
    let mut engines = [Engine::new(ours)?, Engine::new(skipped)?];
    let mut times = [Vec::new(), Vec::new()];
    for e in &mut engines {
        e.run_tensor(&input)?;
    }
    for _ in 0..runs {
        for (e, t) in engines.iter_mut().zip(&mut times) {
            let t0 = Instant::now();
            e.run_tensor(&input)?;
            t.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    for t in &mut times {
        t.sort_by(f64::total_cmp);
    }
    let (a, b) = (&times[0], &times[1]);
    println!(
        "{threads} thread(s), {runs} runs: all ops {:.1} / {:.1} ms, without [{skip}] {:.1} / {:.1} ms (min / median); ratio {:.3} (min) {:.3} (median)",
        a[0],
        a[runs / 2],
        b[0],
        b[runs / 2],
        a[0] / b[0],
        a[runs / 2] / b[runs / 2]
    );
    Ok(())
}
