//! The pipeline's promises, checked on real threads:
//! every frame in comes out, masks are drawn only while fresh, a slow or
//! failing model never holds the video back, a silent source gives NO
//! SIGNAL and recovers.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lgms_edge::frame::{Frame, Mask, Rect};
use lgms_edge::infer::engine::Engine;
use lgms_edge::infer::model::{LoadOptions, Model};
use lgms_edge::infer::Segmenter;
use lgms_edge::pipeline::stats::{Stage, StageRecorder};
use lgms_edge::pipeline::{self, Options, RecordState};
use lgms_edge::sink::Sink;
use lgms_edge::source::phantom::{Phantom, PhantomKind, PhantomSource};
use lgms_edge::source::FrameSource;
use lgms_edge::{Error, Result};

/// Keeps the ids of the frames it was given.
#[derive(Default)]
struct CollectSink {
    ids: Vec<u64>,
}

impl Sink for CollectSink {
    fn name(&self) -> String {
        "collect".into()
    }
    fn write(&mut self, frame: &Frame) -> Result<()> {
        self.ids.push(frame.id);
        Ok(())
    }
}

/// Segments dark pixels, after an injected delay; fails its first `fail_first` calls.
struct SlowDark {
    delay: Duration,
    fail_first: u32,
    calls: u32,
}

impl Segmenter for SlowDark {
    fn label(&self) -> String {
        "slow-dark f32".into()
    }
    fn segment(
        &mut self,
        frame: &Frame,
        roi: Rect,
        mask: &mut Mask,
        rec: &mut StageRecorder,
    ) -> Result<()> {
        self.calls += 1;
        let t0 = Instant::now();
        std::thread::sleep(self.delay);
        if self.calls <= self.fail_first {
            return Err(Error::inference("slow-dark", "injected failure"));
        }
        mask.roi = roi;
        mask.frame_id = frame.id;
        mask.captured = frame.captured;
        mask.data.resize(roi.w as usize * roi.h as usize, 0);
        for y in 0..roi.h {
            for x in 0..roi.w {
                let p = frame.pixel(roi.x + x, roi.y + y);
                mask.data[(y * roi.w + x) as usize] = u8::from(p[0] < 40);
            }
        }
        rec.record(Stage::Inference, t0.elapsed());
        Ok(())
    }
}

fn phantom(fps: f64, frames: u64) -> Box<dyn FrameSource> {
    let p = Phantom::new(PhantomKind::Ultrasound, 160, 120, 3).unwrap();
    Box::new(PhantomSource::new(p, fps).unwrap().limit(Some(frames)))
}

/// Under qemu-user (`make test-aarch64` sets `LGMS_EMULATED`) everything runs
/// several times slower: the tests that demand every frame out get a source
/// at a quarter of the rate, so that the compositor still keeps pace.
fn pace(fps: f64) -> f64 {
    if std::env::var_os("LGMS_EMULATED").is_some() {
        fps / 4.0
    } else {
        fps
    }
}

fn opts(max_age_ms: u64) -> Options {
    Options {
        max_mask_age: Duration::from_millis(max_age_ms),
        keep_records: true,
        ..Options::default()
    }
}

#[test]
fn end_to_end_through_tract_every_frame_out_fresh_masks_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = Model::load(
        &root.join("tests/fixtures/tiny_dark.onnx"),
        &LoadOptions::default(),
    )
    .unwrap();
    let segs: Vec<Box<dyn Segmenter>> = vec![Box::new(Engine::new(model).unwrap())];
    let mut sink = CollectSink::default();
    let n = 40;
    let r = pipeline::run(phantom(pace(40.0), n), segs, &mut sink, &opts(150)).unwrap();
    let rep = &r.report;
    assert_eq!(rep.frames_in, n);
    assert_eq!(rep.frames_out, n);
    assert_eq!(
        sink.ids,
        (0..n).collect::<Vec<_>>(),
        "every frame, in order"
    );
    assert_eq!(rep.frames_dropped, 0);
    assert!(
        rep.inferences > 0 && rep.frames_with_mask > 0,
        "{}",
        rep.to_text()
    );
    for st in Stage::ALL {
        assert!(
            rep.stage(st).is_some(),
            "stage {} missing:\n{}",
            st.name(),
            rep.to_text()
        );
    }
    assert_eq!(rep.stage(Stage::Capture).unwrap().count, n);
    assert_eq!(rep.stage(Stage::Display).unwrap().count, n);
    // Masks drawn only when fresh, and only from frames already captured.
    for rec in &r.records {
        match rec.state {
            RecordState::Drawn => {
                let age = rec.mask_age_ms.unwrap();
                assert!(age <= 150.0, "{rec:?}");
                assert!(rec.mask_frame_id.unwrap() <= rec.frame_id, "{rec:?}");
            }
            _ => assert_eq!(rec.mask_frame_id, None, "{rec:?}"),
        }
    }
    let json = serde_json::to_value(rep).unwrap();
    for key in ["p50_ms", "p95_ms", "p99_ms", "max_ms"] {
        assert!(json["stages"][0][key].is_number(), "{json}");
    }
}

#[test]
fn slow_inference_never_slows_the_video_nor_shows_old_masks() {
    let fps = 30.0;
    let n = 45u64;
    let segs: Vec<Box<dyn Segmenter>> = vec![Box::new(SlowDark {
        delay: Duration::from_millis(400),
        fail_first: 0,
        calls: 0,
    })];
    let mut sink = CollectSink::default();
    let r = pipeline::run(phantom(fps, n), segs, &mut sink, &opts(150)).unwrap();
    let rep = &r.report;
    assert_eq!(rep.frames_out, n, "{}", rep.to_text());
    // 45 frames at 30 fps take 1.5 s; one 400 ms inference per frame would take 18 s.
    assert!(rep.duration_s < 4.0, "video held back: {}", rep.to_text());
    assert!(rep.inferences >= 1);
    // Every mask is at least 400 ms old when it could be shown: none is drawn.
    assert_eq!(rep.frames_with_mask, 0, "{}", rep.to_text());
    assert!(
        rep.frames_mask_stale > 0,
        "the HUD must say paused: {}",
        rep.to_text()
    );
    assert!(r.records.iter().all(|rec| rec.state != RecordState::Drawn));
    // Output pace follows the source: median interval near 33 ms, not 400.
    let mut gaps: Vec<f64> = r
        .records
        .windows(2)
        .map(|w| (w[1].shown_at - w[0].shown_at).as_secs_f64() * 1e3)
        .collect();
    gaps.sort_by(f64::total_cmp);
    let median = gaps[gaps.len() / 2];
    assert!(median < 100.0, "median output interval {median} ms");
}

#[test]
fn moderately_slow_inference_draws_only_fresh_masks() {
    let segs: Vec<Box<dyn Segmenter>> = vec![Box::new(SlowDark {
        delay: Duration::from_millis(60),
        fail_first: 0,
        calls: 0,
    })];
    let mut sink = CollectSink::default();
    let r = pipeline::run(phantom(30.0, 45), segs, &mut sink, &opts(150)).unwrap();
    assert!(r.report.frames_with_mask > 10, "{}", r.report.to_text());
    for rec in r.records.iter().filter(|r| r.state == RecordState::Drawn) {
        assert!(rec.mask_age_ms.unwrap() <= 150.0, "{rec:?}");
    }
}

#[test]
fn failing_model_shows_error_and_recovers() {
    let segs: Vec<Box<dyn Segmenter>> = vec![Box::new(SlowDark {
        delay: Duration::from_millis(5),
        fail_first: 3,
        calls: 0,
    })];
    let mut sink = CollectSink::default();
    let r = pipeline::run(phantom(pace(30.0), 60), segs, &mut sink, &opts(150)).unwrap();
    assert_eq!(r.report.frames_out, 60);
    let states: Vec<RecordState> = r.records.iter().map(|r| r.state).collect();
    let first_err = states.iter().position(|s| *s == RecordState::ModelError);
    let last_drawn = states.iter().rposition(|s| *s == RecordState::Drawn);
    assert!(first_err.is_some(), "{states:?}");
    assert!(
        last_drawn > first_err,
        "recovered after the failures: {states:?}"
    );
}

/// A source that goes silent (errors) between two frame numbers.
struct Flaky {
    inner: Box<dyn FrameSource>,
    dead_from: u64,
    dead_for: Duration,
    dead_since: Option<Instant>,
    delivered: u64,
}

impl FrameSource for Flaky {
    fn name(&self) -> String {
        "flaky".into()
    }
    fn size(&self) -> (u32, u32) {
        self.inner.size()
    }
    fn frame_rate(&self) -> f64 {
        self.inner.frame_rate()
    }
    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        if self.delivered == self.dead_from {
            let since = *self.dead_since.get_or_insert_with(Instant::now);
            if since.elapsed() < self.dead_for {
                std::thread::sleep(Duration::from_millis(20));
                return Err(Error::Source {
                    source_name: "flaky".into(),
                    reason: "unplugged".into(),
                });
            }
        }
        self.delivered += 1;
        self.inner.next_frame(frame)
    }
}

/// 30 frames at 30 fps with the camera gone for 900 ms after frame 10, and
/// a fast model.
fn unplugged_for_900ms() -> (Flaky, Vec<Box<dyn Segmenter>>) {
    let src = Flaky {
        inner: phantom(30.0, 30),
        dead_from: 10,
        dead_for: Duration::from_millis(900),
        dead_since: None,
        delivered: 0,
    };
    let segs: Vec<Box<dyn Segmenter>> = vec![Box::new(SlowDark {
        delay: Duration::from_millis(1),
        fail_first: 0,
        calls: 0,
    })];
    (src, segs)
}

#[test]
fn silent_source_shows_no_signal_then_resumes() {
    let (src, segs) = unplugged_for_900ms();
    let mut sink = CollectSink::default();
    let r = pipeline::run(Box::new(src), segs, &mut sink, &opts(150)).unwrap();
    let states: Vec<RecordState> = r.records.iter().map(|r| r.state).collect();
    let first = states
        .iter()
        .position(|s| *s == RecordState::NoSignal)
        .expect("NO SIGNAL shown");
    let resumed = states[first..].iter().any(|s| *s != RecordState::NoSignal);
    assert!(first >= 10 && resumed, "{states:?}");
    // All 30 real frames still came out.
    assert_eq!(r.report.frames_out, 30);
}

#[test]
fn stop_flag_ends_an_endless_run_with_a_report() {
    let p = Phantom::new(PhantomKind::Endoscopy, 96, 96, 1).unwrap();
    let src = Box::new(PhantomSource::new(p, 50.0).unwrap());
    let segs: Vec<Box<dyn Segmenter>> = vec![Box::new(SlowDark {
        delay: Duration::from_millis(1),
        fail_first: 0,
        calls: 0,
    })];
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        s2.store(true, Ordering::SeqCst);
    });
    let mut o = opts(150);
    o.stop = stop;
    let mut sink = CollectSink::default();
    let r = pipeline::run(src, segs, &mut sink, &o).unwrap();
    t.join().unwrap();
    assert!(
        r.report.frames_out > 5 && r.report.duration_s < 3.0,
        "{}",
        r.report.to_text()
    );
}

/// Collects systemd notify datagrams with their arrival times until STOPPING=1.
fn notify_server(dir: &Path) -> (String, std::thread::JoinHandle<Vec<(Instant, String)>>) {
    let path = dir.join("notify");
    let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let handle = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = server.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let stop = msg == "STOPPING=1";
            got.push((Instant::now(), msg));
            if stop {
                break;
            }
        }
        got
    });
    (path.to_str().unwrap().to_string(), handle)
}

#[test]
fn watchdog_pings_while_frames_flow_and_stops_during_no_signal() {
    let dir = tempfile::tempdir().unwrap();
    let (path, server) = notify_server(dir.path());
    let (src, segs) = unplugged_for_900ms();
    // WatchdogSec=40ms: a ping at most every 20 ms while frames flow.
    let dog = lgms_edge::pipeline::watchdog::Watchdog::new(Some(&path), Some(40_000));
    let o = Options {
        watchdog: Some(Arc::new(std::sync::Mutex::new(dog))),
        ..opts(150)
    };
    let mut sink = CollectSink::default();
    let r = pipeline::run(Box::new(src), segs, &mut sink, &o).unwrap();
    assert_eq!(r.report.frames_out, 30);
    let got = server.join().unwrap();
    let msgs: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
    assert!(msgs[0].starts_with("READY=1"), "{msgs:?}");
    assert_eq!(msgs.last(), Some(&"STOPPING=1"));
    let pings: Vec<Instant> = got
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    // Frames at 30 fps before and after the outage: pings on both sides.
    assert!(pings.len() >= 10, "{} pings", pings.len());
    // The 900 ms outage (NO SIGNAL on screen) shows as one long silence.
    let longest = pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        longest >= Duration::from_millis(600),
        "pings continued through NO SIGNAL (longest gap {longest:?})"
    );
}

fn fast_phantom(frames: u64) -> Box<dyn FrameSource> {
    let p = Phantom::new(PhantomKind::Ultrasound, 96, 64, 5).unwrap();
    Box::new(
        PhantomSource::new(p, 30.0)
            .unwrap()
            .paced(false)
            .limit(Some(frames)),
    )
}

fn slow_dark(delay_ms: u64, fail_first: u32) -> Vec<Box<dyn Segmenter>> {
    vec![Box::new(SlowDark {
        delay: Duration::from_millis(delay_ms),
        fail_first,
        calls: 0,
    })]
}

fn lossless() -> Options {
    Options {
        lossless: true,
        live: false,
        ..opts(150)
    }
}

#[test]
fn lossless_replay_shows_every_frame_with_its_own_mask() {
    let n = 20;
    let mut sink = CollectSink::default();
    // Inference (30 ms) is far slower than the unpaced source: without
    // back-pressure most frames would be overwritten before being shown.
    let r = pipeline::run(fast_phantom(n), slow_dark(30, 0), &mut sink, &lossless()).unwrap();
    let rep = &r.report;
    assert_eq!(sink.ids, (0..n).collect::<Vec<_>>(), "{}", rep.to_text());
    assert_eq!((rep.frames_in, rep.frames_dropped), (n, 0));
    assert_eq!((rep.inferences, rep.frames_with_mask), (n, n));
    for rec in &r.records {
        assert_eq!(rec.state, RecordState::Drawn, "{rec:?}");
        assert_eq!(rec.mask_frame_id, Some(rec.frame_id), "{rec:?}");
    }
}

#[test]
fn lossless_replay_with_a_failing_model_never_borrows_another_frames_mask() {
    let n = 8;
    let mut sink = CollectSink::default();
    let r = pipeline::run(fast_phantom(n), slow_dark(5, 2), &mut sink, &lossless()).unwrap();
    let states: Vec<RecordState> = r.records.iter().map(|r| r.state).collect();
    assert_eq!(states.len(), n as usize, "{states:?}");
    // The failures are shown as such; every later frame gets its own mask.
    assert_eq!(&states[..2], [RecordState::ModelError; 2], "{states:?}");
    for rec in &r.records[2..] {
        assert_eq!(rec.mask_frame_id, Some(rec.frame_id), "{rec:?}");
    }
}

/// Frames from the phantom, with frames `bad` reported damaged (as a file
/// source does), ending after `total`.
struct Damaged {
    inner: Box<dyn FrameSource>,
    bad: Vec<u64>,
    total: u64,
    read: u64,
}

impl FrameSource for Damaged {
    fn name(&self) -> String {
        "damaged file".into()
    }
    fn size(&self) -> (u32, u32) {
        self.inner.size()
    }
    fn frame_rate(&self) -> f64 {
        self.inner.frame_rate()
    }
    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        if self.read == self.total {
            return Ok(false);
        }
        self.read += 1;
        if self.bad.contains(&(self.read - 1)) {
            return Err(Error::corrupt_frame(
                "damaged file",
                format!("frame {}", self.read - 1),
                "injected",
            ));
        }
        self.inner.next_frame(frame)
    }
}

fn damaged(bad: &[u64], total: u64) -> Box<dyn FrameSource> {
    Box::new(Damaged {
        inner: fast_phantom(total),
        bad: bad.to_vec(),
        total,
        read: 0,
    })
}

#[test]
fn damaged_frames_of_a_file_are_skipped_counted_and_the_run_ends() {
    let mut sink = CollectSink::default();
    let r = pipeline::run(
        damaged(&[3, 5], 10),
        slow_dark(1, 0),
        &mut sink,
        &lossless(),
    )
    .unwrap();
    let rep = &r.report;
    assert_eq!(rep.frames_corrupt, 2, "{}", rep.to_text());
    assert_eq!(rep.frames_out, 8, "{}", rep.to_text());
    assert_eq!(
        rep.frames_in,
        rep.frames_out + rep.frames_dropped + rep.frames_corrupt
    );
    assert!(r.records.iter().all(|r| r.state != RecordState::NoSignal));
    assert!(rep.to_text().contains("2 corrupt"), "{}", rep.to_text());
    // Strict: the first damaged frame ends the run with its error.
    let strict = Options {
        strict: true,
        ..lossless()
    };
    let e = pipeline::run(damaged(&[3], 10), slow_dark(1, 0), &mut sink, &strict)
        .expect_err("strict fails")
        .to_string();
    assert!(e.contains("frame 3") && e.contains("corrupt"), "{e}");
}

#[test]
fn a_file_that_fails_to_read_ends_the_run_instead_of_showing_no_signal() {
    let (src, segs) = unplugged_for_900ms();
    let mut sink = CollectSink::default();
    let o = Options {
        live: false,
        ..opts(150)
    };
    let t0 = Instant::now();
    let e = pipeline::run(Box::new(src), segs, &mut sink, &o)
        .expect_err("a read error of a file ends the run");
    assert!(e.to_string().contains("unplugged"), "{e}");
    assert!(t0.elapsed() < Duration::from_millis(800), "no retrying");
}

#[test]
fn stop_abandons_an_inference_in_flight_and_accounts_for_every_frame() {
    let p = Phantom::new(PhantomKind::Ultrasound, 96, 64, 2).unwrap();
    let src = Box::new(PhantomSource::new(p, 30.0).unwrap());
    // Each inference takes 20 s: joining the worker would take that long.
    let segs = slow_dark(20_000, 0);
    let stop = Arc::new(AtomicBool::new(false));
    let o = Options {
        stop: stop.clone(),
        ..opts(150)
    };
    let s2 = stop.clone();
    let stopped_at = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        s2.store(true, Ordering::SeqCst);
        Instant::now()
    });
    let mut sink = CollectSink::default();
    let r = pipeline::run(src, segs, &mut sink, &o).unwrap();
    let ended = Instant::now();
    let stopped_at = stopped_at.join().unwrap();
    // The stop takes the grace period (300 ms) plus scheduling: under a
    // second, where joining the worker would take 20 s.
    let took = ended.saturating_duration_since(stopped_at);
    assert!(took < Duration::from_secs(1), "stop took {took:?}");
    let rep = &r.report;
    assert!(rep.frames_out > 5, "{}", rep.to_text());
    assert_eq!(
        rep.frames_in,
        rep.frames_out + rep.frames_dropped + rep.frames_corrupt,
        "{}",
        rep.to_text()
    );
    assert_eq!(rep.inferences, 0);
    // The output rate is over the streaming interval: about the source's 30 fps.
    assert!(rep.fps > 15.0 && rep.fps < 45.0, "{}", rep.to_text());
}

/// Fails the writes of frames `from..to`, then works again.
struct FlakySink {
    writes: u64,
    fail: std::ops::Range<u64>,
    ids: Vec<u64>,
}

impl Sink for FlakySink {
    fn name(&self) -> String {
        "flaky display".into()
    }
    fn write(&mut self, frame: &Frame) -> Result<()> {
        self.writes += 1;
        if self.fail.contains(&(self.writes - 1)) {
            return Err(Error::io(
                "writing the flaky display",
                std::io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        }
        self.ids.push(frame.id);
        Ok(())
    }
}

#[test]
fn display_write_errors_drop_their_frames_and_the_video_goes_on() {
    let n = 12;
    let mut sink = FlakySink {
        writes: 0,
        fail: 3..6,
        ids: Vec::new(),
    };
    let r = pipeline::run(fast_phantom(n), slow_dark(1, 0), &mut sink, &lossless()).unwrap();
    let rep = &r.report;
    assert_eq!(sink.ids, [0, 1, 2, 6, 7, 8, 9, 10, 11], "{}", rep.to_text());
    assert_eq!(
        (rep.frames_out, rep.frames_dropped),
        (9, 3),
        "{}",
        rep.to_text()
    );
}

/// Counts the frames that carry caliper-coloured pixels.
#[derive(Default)]
struct CaliperSink {
    with_calipers: u64,
}

impl Sink for CaliperSink {
    fn name(&self) -> String {
        "calipers".into()
    }
    fn write(&mut self, frame: &Frame) -> Result<()> {
        use embedded_graphics::pixelcolor::RgbColor;
        let c = lgms_edge::overlay::calipers::CALIPER;
        let rgb = [c.r(), c.g(), c.b()];
        if frame.rgb.chunks_exact(3).any(|p| p == rgb) {
            self.with_calipers += 1;
        }
        Ok(())
    }
}

#[test]
fn measurements_are_drawn_with_the_mask_and_only_then() {
    let run = |measure: Option<lgms_edge::measure::Settings>| {
        let mut sink = CaliperSink::default();
        let o = Options {
            measure,
            ..lossless()
        };
        let r = pipeline::run(fast_phantom(6), slow_dark(1, 0), &mut sink, &o).unwrap();
        assert_eq!(r.report.frames_with_mask, 6);
        sink.with_calipers
    };
    let settings = lgms_edge::measure::Settings {
        calibration: lgms_edge::measure::Calibration::spacing(0.2, 0.2),
        min_area_px: 20,
        smooth_frames: 3,
    };
    assert_eq!(run(Some(settings)), 6);
    assert_eq!(run(None), 0);
}

/// Keeps a checksum of every frame written.
#[derive(Default)]
struct SumSink {
    sums: Vec<u64>,
}

impl Sink for SumSink {
    fn name(&self) -> String {
        "sums".into()
    }
    fn write(&mut self, frame: &Frame) -> Result<()> {
        let sum = frame.rgb.iter().enumerate().fold(0u64, |a, (i, &v)| {
            a.wrapping_add((i as u64 + 1) * u64::from(v))
        });
        self.sums.push(sum);
        Ok(())
    }
}

#[test]
fn freeze_holds_the_screen_steps_through_the_cine_and_unfreezes() {
    use lgms_edge::control::{Command, Request};
    let (tx, rx) = std::sync::mpsc::channel::<Request>();
    let shots = tempfile::tempdir().unwrap();
    let o = Options {
        control: Some(Arc::new(std::sync::Mutex::new(rx))),
        cine_frames: 30,
        snapshot_dir: shots.path().join("snaps"),
        spool_dir: shots.path().join("spool"),
        measure: Some(lgms_edge::measure::Settings {
            calibration: lgms_edge::measure::Calibration::NONE,
            min_area_px: 20,
            smooth_frames: 3,
        }),
        ..opts(150)
    };
    let ask = move |c: Command| {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        tx.send(Request { command: c, reply }).unwrap();
        answer.recv_timeout(Duration::from_secs(2)).unwrap()
    };
    let driver = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        let frozen = ask(Command::Freeze).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        let stepped = ask(Command::Step(-3)).unwrap();
        let shot = ask(Command::SaveSnapshot).unwrap();
        let depth = ask(Command::SetDepth(48.0)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let live = ask(Command::Unfreeze).unwrap();
        let not_frozen = ask(Command::Step(-1)).unwrap_err();
        (frozen, stepped, shot, depth, live, not_frozen)
    });
    let mut sink = SumSink::default();
    let r = pipeline::run(phantom(30.0, 60), slow_dark(1, 0), &mut sink, &o).unwrap();
    let (frozen, stepped, shot, depth, live, not_frozen) = driver.join().unwrap();
    // The snapshot is the frozen picture, written as a PNG off the video's thread.
    let png = std::path::PathBuf::from(shot["snapshot"].as_str().unwrap());
    let t0 = Instant::now();
    while !png.exists() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (160, 120));
    // Its DICOM file is in the spool once the run is over (the run waits
    // for the files being written), with the same pixels.
    let dcm = dicom_object::open_file(shot["dicom"].as_str().unwrap()).unwrap();
    let pixels = dcm
        .element(dicom_dictionary_std::tags::PIXEL_DATA)
        .unwrap()
        .to_bytes()
        .unwrap()
        .into_owned();
    assert_eq!(pixels, img.to_rgb8().into_raw());
    assert_eq!(frozen["frozen"], true);
    assert_eq!(stepped["frames_back"], 3);
    // 48 mm over the 120 rows of the frame: 0.4 mm per pixel.
    assert_eq!(depth["mm_per_pixel"][1], 0.4);
    assert_eq!(live["frozen"], false);
    assert!(not_frozen.contains("not frozen"), "{not_frozen}");
    // Every source frame still came out; while frozen the same picture
    // repeats (a run of equal frames), then it moves again.
    assert_eq!(r.report.frames_out, 60);
    let longest_repeat = sink
        .sums
        .windows(2)
        .fold((0, 0), |(best, run), w| {
            let run = if w[0] == w[1] { run + 1 } else { 0 };
            (best.max(run), run)
        })
        .0;
    assert!(longest_repeat >= 5, "{longest_repeat}");
    let n = sink.sums.len();
    assert_ne!(sink.sums[n - 1], sink.sums[n - 2], "live again at the end");
}
