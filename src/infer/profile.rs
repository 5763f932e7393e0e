//! Where one inference's time goes, node by node of tract's plan
//! (`lgms-edge bench --profile`; [`crate::infer::engine::Engine::profile`]
//! measures it).

use std::collections::BTreeMap;

/// Time spent in one node of tract's plan, per inference.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeTime {
    /// Node name (from the ONNX graph, plus tract's suffixes).
    pub name: String,
    /// Operator as tract names it (`Conv`, `EinSum`, `LgmsAttention`...).
    pub op: String,
    /// Milliseconds per inference.
    pub ms: f64,
}

/// Where one inference's time goes, per node of tract's plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpProfile {
    /// Wall time per profiled inference, including the profiler's clock reads.
    pub total_ms: f64,
    /// Every node that took time, in plan order.
    pub nodes: Vec<NodeTime>,
}

impl OpProfile {
    /// Operator name -> (ms per inference, node count), most expensive first.
    pub fn by_op(&self) -> Vec<(String, f64, usize)> {
        let mut m: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
        for n in &self.nodes {
            let e = m.entry(&n.op).or_default();
            e.0 += n.ms;
            e.1 += 1;
        }
        let mut v: Vec<_> = m
            .into_iter()
            .map(|(k, (ms, c))| (k.to_string(), ms, c))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }

    /// A table: per operator, then the `top` most expensive nodes.
    pub fn to_text(&self, top: usize) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "profile: {:.1} ms per inference", self.total_ms);
        let _ = writeln!(
            s,
            "{:<28} {:>9} {:>6} {:>6}",
            "operator", "ms", "share", "nodes"
        );
        for (op, ms, count) in self.by_op() {
            let share = 100.0 * ms / self.total_ms.max(1e-9);
            let _ = writeln!(s, "{op:<28} {ms:>9.2} {share:>5.1}% {count:>6}");
        }
        let mut nodes: Vec<&NodeTime> = self.nodes.iter().collect();
        nodes.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        let _ = writeln!(s, "top {top} nodes:");
        for n in nodes.into_iter().take(top) {
            let _ = writeln!(s, "{:>9.2} ms  {:<22} {}", n.ms, n.op, n.name);
        }
        s
    }
}
