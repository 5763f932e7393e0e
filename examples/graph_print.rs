//! Debug aid: print tract's graph of an ONNX model (decluttered or optimised),
//! optionally only nodes whose name contains a filter.
//!
//!     cargo run --release --example graph_print -- MODEL.onnx [decluttered|optimized] [FILTER]
use tract_onnx::prelude::*;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        a.len() >= 2,
        "usage: graph_print MODEL [decluttered|optimized] [FILTER]"
    );
    let mut m = onnx().model_for_path(&a[1])?;
    m.set_input_fact(0, f32::fact([1, 3, 256, 256]).into())?;
    let typed = m.into_typed()?.into_decluttered()?;
    let typed = if a.get(2).map(String::as_str) == Some("optimized") {
        typed.into_optimized()?
    } else {
        typed
    };
    let filter = a.get(3).cloned().unwrap_or_default();
    let verbose = std::env::var("VERBOSE").is_ok();
    for n in typed.nodes() {
        if !n.name.contains(&filter) {
            continue;
        }
        if verbose {
            println!("{:?}", n.op);
        }
        let inputs: Vec<String> = n
            .inputs
            .iter()
            .map(|o| format!("{}/{}", o.node, o.slot))
            .collect();
        println!(
            "#{} {} [{}] {:?} in={:?} out={:?}",
            n.id,
            n.name,
            n.op.name(),
            n.op.info()?,
            inputs,
            n.outputs
                .iter()
                .map(|o| format!("{:?}", o.fact))
                .collect::<Vec<_>>()
        );
    }
    Ok(())
}
