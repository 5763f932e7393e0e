//! Per-stage latency statistics.
//!
//! Each thread owns a [`StageRecorder`] for the stages it runs, so recording
//! never takes a lock; the recorders are merged into a [`Report`] at the end.
//! Samples are kept in buffers sized once at start; past that capacity a
//! uniform reservoir keeps the percentiles honest without allocating.

use std::time::Duration;

/// The stages of the frame path, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Waiting for and reading a frame from the source.
    Capture,
    /// Resize, channel order and normalisation into the input tensor.
    Preprocess,
    /// The network itself.
    Inference,
    /// Logits to mask, mask back to frame size.
    Postprocess,
    /// Drawing the overlay and HUD onto the frame.
    Compose,
    /// Handing the frame to the display or sink.
    Display,
    /// From capture of a frame to the end of its display.
    EndToEnd,
}

impl Stage {
    /// All stages, in report order.
    pub const ALL: [Stage; 7] = [
        Stage::Capture,
        Stage::Preprocess,
        Stage::Inference,
        Stage::Postprocess,
        Stage::Compose,
        Stage::Display,
        Stage::EndToEnd,
    ];

    /// Snake-case name used in text and JSON reports.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Capture => "capture",
            Stage::Preprocess => "preprocess",
            Stage::Inference => "inference",
            Stage::Postprocess => "postprocess",
            Stage::Compose => "compose",
            Stage::Display => "display",
            Stage::EndToEnd => "end_to_end",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Latency samples of one stage, in a buffer allocated once.
#[derive(Debug, Clone)]
pub struct Samples {
    values: Vec<f64>,
    capacity: usize,
    seen: u64,
    rng: u64,
}

impl Samples {
    /// A buffer that keeps up to `capacity` samples (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Samples {
            values: Vec::with_capacity(capacity),
            capacity,
            seen: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Adds a sample in milliseconds.
    pub fn push_ms(&mut self, ms: f64) {
        self.seen += 1;
        if self.values.len() < self.capacity {
            self.values.push(ms);
        } else {
            // Reservoir sampling (Algorithm R) with a xorshift generator: no
            // allocation and every sample equally likely to be kept.
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let j = self.rng % self.seen;
            if (j as usize) < self.capacity {
                self.values[j as usize] = ms;
            }
        }
    }

    /// Number of samples seen (not only kept).
    pub fn count(&self) -> u64 {
        self.seen
    }

    /// Summary of the kept samples, `None` when there are none.
    pub fn summary(&self) -> Option<Summary> {
        if self.values.is_empty() {
            return None;
        }
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            // Nearest-rank percentile: the smallest sample with at least p% at or below it.
            let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[rank.clamp(1, v.len()) - 1]
        };
        Some(Summary {
            count: self.seen,
            mean_ms: v.iter().sum::<f64>() / v.len() as f64,
            p50_ms: pct(50.0),
            p95_ms: pct(95.0),
            p99_ms: pct(99.0),
            max_ms: v[v.len() - 1],
        })
    }

    /// Forgets every sample, keeping the buffer.
    pub fn clear(&mut self) {
        self.values.clear();
        self.seen = 0;
    }

    fn merge(&mut self, other: &Samples) {
        for &ms in &other.values {
            self.push_ms(ms);
        }
        // Samples the other reservoir saw but dropped still count.
        self.seen += other.seen - other.values.len() as u64;
    }
}

/// p50/p95/p99/max of one stage, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Number of samples.
    pub count: u64,
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

/// Records latencies for the stages one thread runs.
#[derive(Debug, Clone)]
pub struct StageRecorder {
    stages: [Samples; 7],
}

impl StageRecorder {
    /// A recorder keeping up to `capacity` samples per stage.
    pub fn new(capacity: usize) -> Self {
        StageRecorder {
            stages: std::array::from_fn(|_| Samples::with_capacity(capacity)),
        }
    }

    /// Records one duration for `stage`.
    pub fn record(&mut self, stage: Stage, d: Duration) {
        self.stages[stage.index()].push_ms(d.as_secs_f64() * 1e3);
    }

    /// The samples of one stage.
    pub fn samples(&self, stage: Stage) -> &Samples {
        &self.stages[stage.index()]
    }

    /// Forgets every sample, keeping the buffers.
    pub fn clear(&mut self) {
        self.stages.iter_mut().for_each(Samples::clear);
    }

    /// Adds another recorder's samples to this one.
    pub fn merge(&mut self, other: &StageRecorder) {
        for (a, b) in self.stages.iter_mut().zip(other.stages.iter()) {
            a.merge(b);
        }
    }
}

/// One stage's line in a report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageReport {
    /// Stage name.
    pub stage: Stage,
    /// Its latency summary.
    #[serde(flatten)]
    pub summary: Summary,
}

/// The final report of a run, printed as text and written as JSON.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Model name and precision.
    pub model: String,
    /// Source name.
    pub source: String,
    /// Loading and optimising the model before the run, seconds (not part
    /// of `duration_s`).
    pub load_s: f64,
    /// Wall-clock duration of the run, from starting the threads to the
    /// end of the last frame, seconds.
    pub duration_s: f64,
    /// Frames read from the source: `frames_out + frames_dropped +
    /// frames_corrupt`.
    pub frames_in: u64,
    /// Frames written to the display or sink.
    pub frames_out: u64,
    /// Frames the source produced that were never shown: the compositor was
    /// behind, or the run stopped before showing them.
    pub frames_dropped: u64,
    /// Damaged frames of a file source, skipped.
    pub frames_corrupt: u64,
    /// Output frames per second over the streaming interval: from the
    /// first frame shown to the last.
    pub fps: f64,
    /// Inferences completed.
    pub inferences: u64,
    /// Inference results per second (all workers together).
    pub inference_fps: f64,
    /// Output frames that carried a mask overlay.
    pub frames_with_mask: u64,
    /// Output frames whose newest mask was older than the limit (overlay paused).
    pub frames_mask_stale: u64,
    /// Output frames with no mask at all yet.
    pub frames_no_mask: u64,
    /// Share of the output frames that carried a mask (0 to 1).
    pub mask_coverage: f64,
    /// Per-stage latency.
    pub stages: Vec<StageReport>,
    /// What the spool sender did, when the board has a `[pacs]` section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pacs: Option<crate::pacs::Counts>,
}

impl Report {
    /// Builds the stage list from merged recorders.
    pub fn stage_reports(rec: &StageRecorder) -> Vec<StageReport> {
        Stage::ALL
            .iter()
            .filter_map(|&stage| {
                rec.samples(stage)
                    .summary()
                    .map(|summary| StageReport { stage, summary })
            })
            .collect()
    }

    /// The summary of one stage, if it was measured.
    pub fn stage(&self, stage: Stage) -> Option<&Summary> {
        self.stages
            .iter()
            .find(|s| s.stage == stage)
            .map(|s| &s.summary)
    }

    /// Human-readable table.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "model:  {}", self.model);
        let _ = writeln!(s, "source: {}", self.source);
        let _ = writeln!(
            s,
            "frames: {} in, {} out, {} dropped, {} corrupt in {:.2} s -> {:.2} fps output, {:.2} inferences/s",
            self.frames_in,
            self.frames_out,
            self.frames_dropped,
            self.frames_corrupt,
            self.duration_s,
            self.fps,
            self.inference_fps
        );
        let _ = writeln!(s, "model load: {:.2} s (before the run)", self.load_s);
        let _ = writeln!(
            s,
            "overlay: {} frames with mask ({:.1} % coverage), {} paused (mask too old), {} before first mask",
            self.frames_with_mask,
            100.0 * self.mask_coverage,
            self.frames_mask_stale,
            self.frames_no_mask
        );
        if let Some(p) = &self.pacs {
            let _ = writeln!(
                s,
                "pacs: {} files stored, {} refused (moved to {}/)",
                p.sent,
                p.failed,
                crate::pacs::FAILED_DIR
            );
        }
        let _ = writeln!(
            s,
            "{:<12} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "stage", "count", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms"
        );
        for st in &self.stages {
            let m = &st.summary;
            let _ = writeln!(
                s,
                "{:<12} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                st.stage.name(),
                m.count,
                m.mean_ms,
                m.p50_ms,
                m.p95_ms,
                m.p99_ms,
                m.max_ms
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let mut s = Samples::with_capacity(1000);
        for i in 1..=100 {
            s.push_ms(i as f64);
        }
        let m = s.summary().unwrap();
        assert_eq!(m.p50_ms, 50.0);
        assert_eq!(m.p95_ms, 95.0);
        assert_eq!(m.p99_ms, 99.0);
        assert_eq!(m.max_ms, 100.0);
        assert_eq!(m.count, 100);
    }

    #[test]
    fn reservoir_does_not_grow() {
        let mut s = Samples::with_capacity(10);
        for i in 0..1000 {
            s.push_ms(i as f64);
        }
        assert_eq!(s.values.len(), 10);
        assert_eq!(s.values.capacity(), 10);
        assert_eq!(s.count(), 1000);
        // A uniform reservoir of 0..1000 almost surely keeps something above 100.
        assert!(s.summary().unwrap().max_ms > 100.0);
    }

    #[test]
    fn merge_counts_everything() {
        let mut a = StageRecorder::new(4);
        let mut b = StageRecorder::new(4);
        for _ in 0..10 {
            a.record(Stage::Inference, Duration::from_millis(5));
            b.record(Stage::Inference, Duration::from_millis(7));
        }
        a.merge(&b);
        assert_eq!(a.samples(Stage::Inference).count(), 20);
        let r = Report::stage_reports(&a);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].stage, Stage::Inference);
    }
}
