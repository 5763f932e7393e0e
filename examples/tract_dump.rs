//! Debug aid: run an ONNX file through tract and dump every graph output.
//!
//!     cargo run --example tract_dump -- MODEL.onnx INPUT.f32 OUTDIR [decluttered|optimized]
//!
//! Writes OUTDIR/out{i}.f32 (raw little-endian) and OUTDIR/shapes.txt, for
//! node-by-node comparison with onnxruntime (bisecting precision loss).
use std::io::Write;
use tract_onnx::prelude::*;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        a.len() >= 4,
        "usage: tract_dump MODEL INPUT OUTDIR [decluttered|optimized]"
    );
    let mode = a.get(4).map(String::as_str).unwrap_or("optimized");
    let bytes = std::fs::read(&a[2])?;
    let x: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut m = onnx().model_for_path(&a[1])?;
    let hw = ((x.len() / 3) as f64).sqrt() as usize;
    m.set_input_fact(0, f32::fact([1, 3, hw, hw]).into())?;
    let typed = m.into_typed()?.into_decluttered()?;
    let mut typed = if mode == "optimized" {
        typed.into_optimized()?
    } else {
        typed
    };
    if std::env::var_os("WIDE_SUM").is_some() {
        eprintln!(
            "wide sums: {}",
            lgms_edge::infer::ops::wide_sum::harden(&mut typed)?
        );
    }
    if std::env::var_os("DUMP_NODES").is_some() {
        for n in typed.nodes() {
            eprintln!("{} {} {:?} <- {:?}", n.id, n.name, n.op, n.inputs);
        }
    }
    let plan = typed.into_runnable()?;
    let input = tract_ndarray::Array4::from_shape_vec((1, 3, hw, hw), x)?;
    let outs = plan.run(tvec!(Tensor::from(input).into()))?;
    std::fs::create_dir_all(&a[3])?;
    let mut shapes = std::fs::File::create(format!("{}/shapes.txt", a[3]))?;
    for (i, o) in outs.iter().enumerate() {
        let o = o.cast_to::<f32>()?;
        let view = o.try_as_plain_ram()?;
        let v = view.as_slice::<f32>()?;
        let mut f = std::fs::File::create(format!("{}/out{i}.f32", a[3]))?;
        for x in v {
            f.write_all(&x.to_le_bytes())?;
        }
        writeln!(shapes, "{i} {:?}", o.shape())?;
    }
    Ok(())
}
