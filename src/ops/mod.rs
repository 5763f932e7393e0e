//! Our own tract operators, substituted into the loaded model where tract's
//! stock graph is slow for LGMSNet (issue 6; `lgms-edge bench --profile`
//! shows where).
//!
//! [`substitute`] pattern-matches the decluttered graph, before
//! `into_optimized`, and swaps each match for one fused operator:
//! - [`attention::Attention`]: `EinSum(Q,K) [* scale] -> Softmax -> EinSum(.,V)`,
//!   the sparse attention of the hybrid blocks, computed one query row at a
//!   time (the score matrix, up to 4x4x1024x1024 floats, never exists);
//! - [`upsample::Upsample2x`]: ONNX `Resize` that is a 2x bilinear
//!   half-pixel upsampling of an NCHW tensor (the decoder's `up_conv`).
//!
//! Each operator has scalar, AVX2 and NEON kernels (chosen once per process,
//! `LGMS_KERNELS=scalar` forces the scalar ones, as for the pixel kernels)
//! and runs its independent blocks on tract's thread pool when the model was
//! loaded with more than one thread. `tests/ops.rs` checks the substituted
//! model against the stock graph; `lgms-edge bench --stock` times the stock
//! graph for comparison.

use tract_onnx::prelude::*;

pub mod attention;
pub mod upsample;

/// What [`substitute`] replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Substitutions {
    /// Attention subgraphs fused into [`attention::Attention`].
    pub attention: usize,
    /// Resize nodes replaced by [`upsample::Upsample2x`].
    pub upsample: usize,
}

/// Replaces every matching subgraph of the decluttered `model` by our
/// operators. Subgraphs that do not match exactly are left to tract.
pub fn substitute(model: &mut TypedModel) -> TractResult<Substitutions> {
    let attention = attention::fuse_all(model)?;
    let upsample = upsample::replace_all(model)?;
    if attention + upsample > 0 {
        // Drop the nodes the patches disconnected.
        *model = model.clone().into_compact()?;
    }
    Ok(Substitutions {
        attention,
        upsample,
    })
}

/// Whether the SIMD kernels may be used (`LGMS_KERNELS=scalar` says no).
fn simd_allowed() -> bool {
    crate::kernels::best().name != "scalar"
}

/// Runs `f(i)` for `i in 0..n`, on tract's thread pool when the running
/// plan has a multi-threaded executor, else in order on this thread.
/// `f` gets disjoint work by index; results come back through its captures.
fn for_each_block(n: usize, f: impl Fn(usize) + Sync + Send) {
    #[cfg(feature = "multithread")]
    {
        use rayon::prelude::*;
        use tract_linalg::multithread::{current_tract_executor, Executor};
        if let Executor::MultiThread(pool) = current_tract_executor() {
            if pool.current_num_threads() > 1 && n > 1 {
                pool.install(|| (0..n).into_par_iter().for_each(&f));
                return;
            }
        }
    }
    (0..n).for_each(f);
}

/// A raw pointer to an output buffer that blocks write disjoint parts of.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: only used by `for_each_block` callers that write disjoint index
// ranges per block, and only while the owning tensor is alive.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer. A method, not field access, so that closures capture the
    /// whole (`Send`) wrapper rather than the raw pointer field.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}
