//! Debug aid: after our substitutions, list tract's remaining quantised
//! convs with their neighbours (why `ops::qconv` did not match them), and
//! the geometry of every int8 conv it did replace.
//!
//!     cargo run --release --example qconv_debug -- MODEL.int8.onnx
use tract_onnx::prelude::*;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(a.len() >= 2, "usage: qconv_debug MODEL");
    let mut m = onnx().model_for_path(&a[1])?;
    m.set_input_fact(0, f32::fact([1, 3, 256, 256]).into())?;
    let mut typed = m.into_typed()?.into_decluttered()?;
    println!("{:?}", lgms_edge::infer::ops::substitute(&mut typed)?);
    for n in typed.nodes() {
        let (qconv, left) = (n.op.name() == "LgmsQConv", n.name.ends_with("_quant"));
        if !qconv && !left {
            continue;
        }
        let pred = typed.node(n.inputs[0].node);
        let succ: Vec<String> = n.outputs[0]
            .successors
            .iter()
            .map(|s| typed.node(s.node).op.name().to_string())
            .collect();
        let head = format!(
            "{} [{}] {:?} pred={}",
            n.name,
            n.op.name(),
            n.op.info()?,
            pred.op.name()
        );
        if qconv {
            println!("{head} succ={succ:?}");
        } else {
            println!(
                "{head} succ={succ:?} out={:?}",
                typed.outlet_fact(OutletId::new(n.id, 0))?
            );
        }
    }
    Ok(())
}
