//! Inference time of one 256x256 LGMSNet pass with tract's plan as is and
//! with the wide sums swapped for `WideSumF64` (src/infer/ops/wide_sum.rs).
//!
//!     cargo run --release --example wide_sum_timing -- [MODEL] [RUNS]
use std::time::Instant;
use tract_onnx::prelude::*;

fn median_ms(plan: &Arc<TypedRunnableModel>, input: &Tensor, runs: usize) -> anyhow::Result<f64> {
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        TypedSimpleState::new(plan)?.run(tvec!(input.clone().into()))?;
        t.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[runs / 2])
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let path = a
        .get(1)
        .map(String::as_str)
        .unwrap_or("models/lgmsnet-random.f32.onnx");
    let runs: usize = a.get(2).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let mut m = onnx().model_for_path(path)?;
    m.set_input_fact(0, f32::fact([1, 3, 256, 256]).into())?;
    let optimized = m.into_typed()?.into_decluttered()?.into_optimized()?;
    let mut hardened = optimized.clone();
    let n = lgms_edge::infer::ops::wide_sum::harden(&mut hardened)?;
    let input = Tensor::from(tract_ndarray::Array4::<f32>::from_elem(
        (1, 3, 256, 256),
        0.003,
    ));
    let plain = optimized.into_runnable()?;
    let wide = hardened.into_runnable()?;
    median_ms(&plain, &input, 3)?;
    median_ms(&wide, &input, 3)?;
    for _ in 0..2 {
        println!(
            "tract plan as is:        median {:.1} ms over {runs} runs",
            median_ms(&plain, &input, runs)?
        );
        println!(
            "with {n} WideSumF64 ops: median {:.1} ms over {runs} runs",
            median_ms(&wide, &input, runs)?
        );
    }
    Ok(())
}
