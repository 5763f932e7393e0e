//! Each of lgms-edge's tract operators against the stock tract graph it
//! replaces, at LGMSNet's sizes, in one run: min and median milliseconds
//! and the speed-up (stock / ours).
//!
//!     cargo run --release --example ops_timing -- [RUNS] [FILTER]
//!
//! FILTER: only the cases whose name contains it.
//!
//! Each case builds the graph as tract's decluttering leaves it
//! (`tests/common/graphs.rs`, shared with `tests/ops.rs`), optimises it once as is and once after
//! `ops::substitute`, and times the two plans alternately on the same
//! random input. Single-threaded (no executor).
use std::time::Instant;

#[path = "../tests/common/graphs.rs"]
mod graphs;

use lgms_edge::infer::ops;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::nn::resize::CoordTransformer;

fn time(plan: &Arc<TypedRunnableModel>, inputs: &TVec<TValue>) -> anyhow::Result<f64> {
    let mut state = TypedSimpleState::new(plan)?;
    let t0 = Instant::now();
    state.run(inputs.clone())?;
    Ok(t0.elapsed().as_secs_f64() * 1e3)
}

fn case(name: &str, stock: TypedModel, runs: usize) -> anyhow::Result<()> {
    if !std::env::args()
        .nth(2)
        .is_none_or(|filter| name.contains(&filter))
    {
        return Ok(());
    }
    let mut ours = stock.clone();
    let subs = ops::substitute(&mut ours)?;
    let inputs: TVec<TValue> = stock
        .input_outlets()?
        .iter()
        .enumerate()
        .map(|(i, o)| -> anyhow::Result<TValue> {
            let shape: Vec<usize> = stock
                .outlet_fact(*o)?
                .shape
                .as_concrete()
                .unwrap_or(&[])
                .to_vec();
            let n = shape.iter().product();
            Ok(Tensor::from_shape(&shape, &graphs::pseudo_random(n, i as u64))?.into_tvalue())
        })
        .collect::<anyhow::Result<_>>()?;
    let a = stock.into_optimized()?.into_runnable()?;
    let b = ours.into_optimized()?.into_runnable()?;
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    time(&a, &inputs)?;
    time(&b, &inputs)?;
    for _ in 0..runs {
        ta.push(time(&a, &inputs)?);
        tb.push(time(&b, &inputs)?);
    }
    ta.sort_by(f64::total_cmp);
    tb.sort_by(f64::total_cmp);
    let (ma, mb) = (ta[runs / 2], tb[runs / 2]);
    println!(
        "{name:<38} stock {:8.2} / {ma:8.2} ms   ours {:8.2} / {mb:8.2} ms   speed-up {:5.2}x (min) {:5.2}x (median)   {subs:?}",
        ta[0],
        tb[0],
        ta[0] / tb[0],
        ma / mb
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    println!("min / median over {runs} runs, one thread");
    case(
        "attention 4x4 heads, 1024 tokens",
        graphs::lgmsnet_attention(1024)?,
        runs,
    )?;
    case(
        "attention 4x4 heads, 256 tokens",
        graphs::lgmsnet_attention(256)?,
        runs,
    )?;
    case(
        "upsample 2x 32x128x128 -> 256x256",
        graphs::resize2x([1, 32, 128, 128], CoordTransformer::HalfPixel)?,
        runs,
    )?;
    case(
        "upsample 2x 64x64x64 -> 128x128",
        graphs::resize2x([1, 64, 64, 64], CoordTransformer::HalfPixel)?,
        runs,
    )?;
    case(
        "conv1x1 32->64 at 256x256",
        graphs::conv1x1(32, 64, 256, 256, 1)?,
        runs,
    )?;
    case(
        "conv1x1 32->64 + gelu at 256x256",
        graphs::then_gelu(graphs::conv1x1(32, 64, 256, 256, 1)?)?,
        runs,
    )?;
    case(
        "gelu 32x256x256",
        graphs::then_gelu(graphs::identity([1, 32, 256, 256])?)?,
        runs,
    )?;
    case(
        "conv1x1 64->16 at 256x256",
        graphs::conv1x1(64, 16, 256, 256, 1)?,
        runs,
    )?;
    case(
        "conv1x1 64->128 at 128x128",
        graphs::conv1x1(64, 128, 128, 128, 1)?,
        runs,
    )?;
    case(
        "conv1x1 128->32 at 128x128",
        graphs::conv1x1(128, 32, 128, 128, 1)?,
        runs,
    )?;
    case(
        "conv3x3 32->16 at 256x256",
        graphs::conv3x3(32, 16, 1, 256, 256, 1)?,
        runs,
    )?;
    case(
        "conv3x3 32->32 g2 + gelu at 256x256",
        graphs::then_gelu(graphs::conv3x3(32, 32, 2, 256, 256, 1)?)?,
        runs,
    )?;
    case(
        "conv3x3 64->32 at 128x128",
        graphs::conv3x3(64, 32, 1, 128, 128, 1)?,
        runs,
    )?;
    case(
        "conv3x3 64->64 g2 + gelu at 128x128",
        graphs::then_gelu(graphs::conv3x3(64, 64, 2, 128, 128, 1)?)?,
        runs,
    )?;
    case(
        "conv3x3 128->64 at 64x64",
        graphs::conv3x3(128, 64, 1, 64, 64, 1)?,
        runs,
    )?;
    case(
        "conv3x3 384->128 at 32x32",
        graphs::conv3x3(384, 128, 1, 32, 32, 1)?,
        runs,
    )?;
    case(
        "conv3x3 64->64 at 64x64",
        graphs::conv3x3(64, 64, 1, 64, 64, 1)?,
        runs,
    )?;
    // Quantised convs (Q -> QLinearConv -> DQ as tract declutters them,
    // 7-bit per-channel weights as lgms_models/quantize.py makes them).
    case(
        "int8 conv 3x3 128->64 at 64x64",
        graphs::qconv(128, 64, 3, 64, 64, 1, 63, true, 1)?,
        runs,
    )?;
    case(
        "int8 conv 3x3 32->16 g2 at 256x256",
        graphs::qconv(32, 16, 3, 256, 256, 2, 63, true, 1)?,
        runs,
    )?;
    case(
        "int8 conv 1x1 32->64 at 256x256",
        graphs::qconv(32, 64, 1, 256, 256, 1, 63, true, 1)?,
        runs,
    )?;
    case(
        "int8 conv 1x1 128->32 at 128x128",
        graphs::qconv(128, 32, 1, 128, 128, 1, 63, true, 1)?,
        runs,
    )?;
    Ok(())
}
