//! Hot loops do not allocate: after a warm-up, capture conversion (raw
//! formats, Y4M and raw replay, the phantom), preprocessing and
//! postprocessing, the overlay and the sinks run frame after frame with
//! zero heap allocations. A counting global allocator measures it, per
//! thread, so that other tests running at the same time do not count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, Instant};

use lgms_edge::config::OverlayConfig;
use lgms_edge::frame::{Frame, Mask, Rect};
use lgms_edge::infer::engine::Engine;
use lgms_edge::infer::model::{LoadOptions, Model};
use lgms_edge::kernels::YuvRange;
use lgms_edge::overlay::{HudInfo, Overlay, OverlayStyle, RgbTarget};
use lgms_edge::sink::record::Y4mRecorder;
use lgms_edge::sink::{NullSink, Sink, Y4mSink};
use lgms_edge::source::phantom::{Phantom, PhantomKind, PhantomSource};
use lgms_edge::source::pixfmt::{Converter, PixelFormat};
use lgms_edge::source::replay::{Pace, RawReplay, ReplayOptions, Y4mReplay};
use lgms_edge::source::FrameSource;
use lgms_edge::y4m::{Chroma, Header, Writer};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a thread-local `Cell` that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations on this thread during `f`, run `n` times after 3 warm-ups.
fn allocations(n: usize, mut f: impl FnMut()) -> u64 {
    for _ in 0..3 {
        f();
    }
    let before = ALLOCS.with(Cell::get);
    for _ in 0..n {
        f();
    }
    ALLOCS.with(Cell::get) - before
}

#[test]
fn the_counter_counts() {
    let n = allocations(2, || drop(std::hint::black_box(vec![1u8; 8])));
    assert_eq!(n, 2);
}

#[test]
fn capture_conversion_of_every_raw_format() {
    let (w, h) = (64u32, 48u32);
    for format in [
        PixelFormat::Yuyv,
        PixelFormat::Nv12,
        PixelFormat::Grey,
        PixelFormat::Rgb24,
        PixelFormat::Bgr24,
    ] {
        let stride = format.min_stride(w).unwrap();
        let conv = Converter::new(format, w, h, stride).unwrap();
        let src = vec![77u8; format.frame_len(stride, h).unwrap()];
        let mut dst = Frame::new(w, h);
        let n = allocations(20, || conv.to_rgb(&src, &mut dst).unwrap());
        assert_eq!(n, 0, "{format:?}");
    }
}

#[test]
fn file_replay_and_the_phantom() {
    let dir = tempfile::tempdir().unwrap();
    let y4m = dir.path().join("v.y4m");
    let header = Header::new(64, 48, 30.0, Chroma::C420, YuvRange::Limited);
    let mut w = Writer::create(&y4m, u64::MAX).unwrap();
    for _ in 0..4 {
        w.write_frame(&header, &vec![90; header.frame_bytes()])
            .unwrap();
    }
    drop(w);
    let raw = dir.path().join("v.yuyv");
    std::fs::write(&raw, vec![100u8; 64 * 2 * 48 * 4]).unwrap();
    let opts = ReplayOptions {
        looping: true,
        ..ReplayOptions::new(Pace::Fast, 30.0)
    };
    let mut sources: Vec<(&str, Box<dyn FrameSource>)> = vec![
        ("y4m", Box::new(Y4mReplay::open(&y4m, opts).unwrap())),
        (
            "raw",
            Box::new(RawReplay::open(&raw, PixelFormat::Yuyv, 64, 48, opts).unwrap()),
        ),
        (
            "phantom",
            Box::new(
                PhantomSource::new(
                    Phantom::new(PhantomKind::Ultrasound, 96, 64, 1).unwrap(),
                    30.0,
                )
                .unwrap()
                .paced(false),
            ),
        ),
        (
            "phantom nv12 camera",
            Box::new(
                PhantomSource::new(
                    Phantom::new(PhantomKind::Ultrasound, 96, 64, 1).unwrap(),
                    30.0,
                )
                .unwrap()
                .paced(false)
                .pixel_format(PixelFormat::Nv12)
                .unwrap(),
            ),
        ),
    ];
    for (name, s) in &mut sources {
        let (sw, sh) = s.size();
        let mut f = Frame::new(sw, sh);
        // Ten frames: the replays loop back to their start on the way.
        let n = allocations(10, || assert!(s.next_frame(&mut f).unwrap()));
        assert_eq!(n, 0, "{name}");
    }
}

#[test]
fn preprocessing_and_postprocessing() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_dark.onnx");
    let mut engine = Engine::new(Model::load(&model, &LoadOptions::default()).unwrap()).unwrap();
    let mut frame = Frame::new(160, 120);
    frame.rgb.fill(40);
    let roi = Rect {
        x: 10,
        y: 8,
        w: 120,
        h: 100,
    };
    let mut mask = Mask::new(roi);
    engine.preprocess(&frame, roi).unwrap();
    engine.infer().unwrap();
    let n = allocations(20, || {
        engine.preprocess(&frame, roi).unwrap();
        engine.postprocess(&mut mask);
    });
    assert_eq!(n, 0);
}

#[test]
fn compose_and_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (160u32, 120u32);
    let roi = Rect::full(w, h);
    let mut mask = Mask::new(roi);
    mask.data = (0..w * h).map(|i| u8::from(i % 7 < 3)).collect();
    let t0 = Instant::now();
    mask.captured = t0;
    let mut overlay = Overlay::new(OverlayStyle::from_config(
        &OverlayConfig::default(),
        Duration::from_millis(150),
    ));
    let mut frame = Frame::new(w, h);
    frame.captured = t0 + Duration::from_millis(20);
    let hud = HudInfo {
        fps: 30.0,
        latency_ms: Some(42.0),
        model: "tiny",
        precision: "f32",
        now: frame.captured,
        model_failed: false,
    };
    let n = allocations(20, || {
        let mut target = RgbTarget::for_frame(&mut frame).unwrap();
        let drawn = overlay.draw(&mut target, Some(&mask), &hud);
        assert!(drawn.is_ok());
    });
    assert_eq!(n, 0, "overlay");
    let mut sinks: Vec<(&str, Box<dyn Sink>)> = vec![
        ("null", Box::new(NullSink::default())),
        (
            "y4m",
            Box::new(Y4mSink::create(dir.path().join("o.y4m"), 30.0).unwrap()),
        ),
    ];
    for (name, sink) in &mut sinks {
        let n = allocations(20, || sink.write(&frame).unwrap());
        assert_eq!(n, 0, "{name}");
    }
    let mut rec = Y4mRecorder::create(dir.path().join("r.y4m"), 30.0, u64::MAX).unwrap();
    let n = allocations(20, || assert!(rec.record_rgb(&frame).unwrap()));
    assert_eq!(n, 0, "recording");
}
