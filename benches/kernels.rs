//! Throughput of every pixel kernel at a cart's capture size (1920x1080):
//! scalar reference vs the native SIMD table, and vs the crates that do the
//! same job (`yuv` for colour conversion, `fast_image_resize` for resizing),
//! in one run; then the pixel path as the pipeline runs it (capture
//! conversion, then crop + resize + normalise) and the compositor's mask
//! overlay, each on both tables.
//!
//! `cargo bench --bench kernels` (`-- 1080p` for the frame-sized groups).
//! Criterion prints throughput in Melem/s, one element being one output
//! pixel: read it as megapixels per second, and the time as the time per
//! frame. Under qemu-user the numbers mean nothing (the emulator's speed,
//! not the board's); run the benches on the board.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

use lgms_edge::config::OverlayConfig;
use lgms_edge::frame::{Frame, Mask, Rect};
use lgms_edge::infer::preprocess::{self, ChannelOrder, Normalize};
use lgms_edge::kernels::{self, Kernels, YuvCoeffs, YuvMatrix, YuvRange};
use lgms_edge::overlay::{HudInfo, Overlay, OverlayStyle, RgbTarget};
use lgms_edge::source::phantom::{Phantom, PhantomKind};
use lgms_edge::source::pixfmt::{self, Converter, PixelFormat};

/// A cart's capture size (HDMI/SDI grabbers of ultrasound and endoscopy
/// towers deliver 1080p).
const W: usize = 1920;
const H: usize = 1080;
/// The network's input and output size.
const NET: usize = 256;
/// The part of the frame the network sees: the scan area of a 1080p
/// ultrasound screen, without the scanner's side panels.
const ROI: Rect = Rect {
    x: 240,
    y: 40,
    w: 1440,
    h: 1000,
};

/// The bundled model's preprocessing (BGR, ImageNet mean/std, the authors'
/// second division by 255).
const NORM: Normalize = Normalize {
    channel_order: ChannelOrder::Bgr,
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
    max_pixel_value: 255.0,
    extra_scale: 1.0 / 255.0,
};

/// The scalar table and the fastest native one (the pixel kernels are the
/// same in every native table of an architecture).
fn tables() -> Vec<&'static Kernels> {
    let mut t = vec![kernels::scalar()];
    t.extend(kernels::native());
    t
}

fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 24) as u8
        })
        .collect()
}

fn colour(c: &mut Criterion) {
    let k = YuvCoeffs::new(YuvMatrix::Bt601, YuvRange::Limited);
    let yuyv = noise(W * H * 2, 1);
    let nv12 = noise(W * H * 3 / 2, 2);
    let mut rgb = vec![0u8; W * H * 3];
    let mut g = c.benchmark_group("yuyv_to_rgb_1080p");
    g.throughput(Throughput::Elements((W * H) as u64));
    for t in tables() {
        g.bench_function(BenchmarkId::from_parameter(t.name), |b| {
            b.iter(|| t.yuyv_to_rgb(black_box(&yuyv), W * 2, W, H, &k, &mut rgb))
        });
    }
    g.bench_function(BenchmarkId::from_parameter("yuv-crate"), |b| {
        let img = yuv::YuvPackedImage {
            yuy: &yuyv,
            yuy_stride: (W * 2) as u32,
            width: W as u32,
            height: H as u32,
        };
        b.iter(|| {
            yuv::yuyv422_to_rgb(
                black_box(&img),
                &mut rgb,
                (W * 3) as u32,
                yuv::YuvRange::Limited,
                yuv::YuvStandardMatrix::Bt601,
            )
            .expect("yuv crate conversion")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("nv12_to_rgb_1080p");
    g.throughput(Throughput::Elements((W * H) as u64));
    let (yp, uv) = nv12.split_at(W * H);
    for t in tables() {
        g.bench_function(BenchmarkId::from_parameter(t.name), |b| {
            b.iter(|| t.nv12_to_rgb(black_box(yp), W, uv, W, W, H, &k, &mut rgb))
        });
    }
    g.bench_function(BenchmarkId::from_parameter("yuv-crate"), |b| {
        let img = yuv::YuvBiPlanarImage {
            y_plane: yp,
            y_stride: W as u32,
            uv_plane: uv,
            uv_stride: W as u32,
            width: W as u32,
            height: H as u32,
        };
        b.iter(|| {
            yuv::yuv_nv12_to_rgb(
                black_box(&img),
                &mut rgb,
                (W * 3) as u32,
                yuv::YuvRange::Limited,
                yuv::YuvStandardMatrix::Bt601,
                yuv::YuvConversionMode::Balanced,
            )
            .expect("yuv crate conversion")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("grey_to_rgb_1080p");
    g.throughput(Throughput::Elements((W * H) as u64));
    for t in tables() {
        g.bench_function(BenchmarkId::from_parameter(t.name), |b| {
            b.iter(|| t.grey_to_rgb(black_box(yp), W, W, H, &k, &mut rgb))
        });
    }
    g.finish();
}

fn tensor(c: &mut Criterion) {
    let rgb = noise(W * H * 3, 3);
    let (roi, norm) = (ROI, NORM);
    let mut out = vec![0f32; 3 * NET * NET];
    let mut g = c.benchmark_group("resize_normalize_1080p_roi_1440x1000_to_256");
    g.throughput(Throughput::Elements((NET * NET) as u64));
    for t in tables() {
        g.bench_function(BenchmarkId::from_parameter(t.name), |b| {
            b.iter(|| t.resize_normalize(black_box(&rgb), W, H, roi, NET, NET, &norm, &mut out))
        });
    }
    // fast_image_resize does the resize only (u8 RGB out, and its bilinear
    // filter widens on downscale, unlike OpenCV's), so it is timed with the
    // normalisation pass we would still need after it.
    g.bench_function(
        BenchmarkId::from_parameter("fast_image_resize+normalize"),
        |b| {
            use fast_image_resize as fr;
            let src = fr::images::ImageRef::new(W as u32, H as u32, &rgb, fr::PixelType::U8x3)
                .expect("fir source");
            let mut dst = fr::images::Image::new(NET as u32, NET as u32, fr::PixelType::U8x3);
            let mut resizer = fr::Resizer::new();
            let opts = fr::ResizeOptions::new()
                .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear))
                .crop(
                    f64::from(roi.x),
                    f64::from(roi.y),
                    f64::from(roi.w),
                    f64::from(roi.h),
                );
            let aff = norm.affine();
            b.iter(|| {
                resizer
                    .resize(black_box(&src), &mut dst, &opts)
                    .expect("fir resize");
                for (i, px) in dst.buffer().chunks_exact(3).enumerate() {
                    for (c, &(s, o, from)) in aff.iter().enumerate() {
                        out[c * NET * NET + i] = f32::from(px[from]) * s + o;
                    }
                }
            })
        },
    );
    g.finish();

    let logits: Vec<f32> = noise(NET * NET, 4)
        .iter()
        .map(|&v| f32::from(v) / 32.0 - 4.0)
        .collect();
    let (mw, mh) = (ROI.w as usize, ROI.h as usize);
    let mut mask = vec![0u8; mw * mh];
    let mut g = c.benchmark_group("logits_to_mask_256_to_1080p_roi_1440x1000");
    g.throughput(Throughput::Elements((mw * mh) as u64));
    for t in tables() {
        g.bench_function(BenchmarkId::from_parameter(t.name), |b| {
            b.iter(|| t.logits_to_mask(black_box(&logits), NET, NET, 0.0, mw, mh, &mut mask))
        });
    }
    g.finish();
}

/// A 1080p phantom ultrasound frame and its exact lesion mask over [`ROI`]:
/// what the network's mask looks like on a cart's frame.
fn phantom_1080p() -> (Frame, Mask) {
    let mut p = Phantom::new(PhantomKind::Ultrasound, W as u32, H as u32, 1).expect("phantom");
    let mut frame = Frame::new(W as u32, H as u32);
    let mut full = Mask::new(Rect::full(W as u32, H as u32));
    p.render(10, &mut frame, &mut full).expect("phantom frame");
    let mut mask = Mask::new(ROI);
    for (y, row) in mask.data.chunks_exact_mut(ROI.w as usize).enumerate() {
        let from = (ROI.y as usize + y) * W + ROI.x as usize;
        row.copy_from_slice(&full.data[from..from + ROI.w as usize]);
    }
    (frame, mask)
}

/// Capture conversion then crop + resize + normalise, as a frame goes
/// through the pipeline: [`Converter::to_rgb`] (what a V4L2 capture or a
/// raw replay runs) then [`preprocess::frame_to_input`] (the engine's
/// step), on the run's table; and the same two kernels on each table.
fn pixel_path(c: &mut Criterion) {
    let (rendered, _) = phantom_1080p();
    let k = YuvCoeffs::new(YuvMatrix::Bt601, YuvRange::Limited);
    let (roi, norm) = (ROI, NORM);
    for format in [PixelFormat::Yuyv, PixelFormat::Nv12] {
        let stride = format.min_stride(W as u32).expect("raw format");
        let mut raw = vec![0u8; format.frame_len(stride, H as u32).expect("raw format")];
        pixfmt::encode_rgb(format, &rendered.rgb, W as u32, H as u32, &mut raw)
            .expect("phantom frame encodes");
        let mut frame = Frame::new(W as u32, H as u32);
        let mut input = vec![0f32; 3 * NET * NET];
        let mut g = c.benchmark_group(format!("pixel_path_1080p_{}", format.name()));
        g.throughput(Throughput::Elements((W * H) as u64));
        for t in tables() {
            g.bench_function(BenchmarkId::from_parameter(t.name), |b| {
                b.iter(|| {
                    let rgb = &mut frame.rgb;
                    match format {
                        PixelFormat::Yuyv => t.yuyv_to_rgb(black_box(&raw), stride, W, H, &k, rgb),
                        _ => {
                            let (y, uv) = raw.split_at(stride * H);
                            t.nv12_to_rgb(black_box(y), stride, uv, stride, W, H, &k, rgb)
                        }
                    }
                    t.resize_normalize(rgb, W, H, roi, NET, NET, &norm, &mut input);
                })
            });
        }
        let conv = Converter::new(format, W as u32, H as u32, stride).expect("converter");
        let id = format!("pipeline ({})", kernels::best().name);
        g.bench_function(BenchmarkId::from_parameter(id), |b| {
            b.iter(|| {
                conv.to_rgb(black_box(&raw), &mut frame).expect("converts");
                preprocess::frame_to_input(&frame, roi, (NET, NET), &norm, &mut input)
                    .expect("preprocesses");
            })
        });
        g.finish();
    }
}

fn blend(c: &mut Criterion) {
    let mut frame = noise(W * H * 3, 5);
    let mut g = c.benchmark_group("blend_span_1080p_whole_frame");
    g.throughput(Throughput::Elements((W * H) as u64));
    for t in tables() {
        g.bench_function(BenchmarkId::from_parameter(t.name), |b| {
            b.iter(|| {
                for row in frame.chunks_exact_mut(W * 3) {
                    t.blend_span(black_box(row), [0, 220, 120], 102);
                }
            })
        });
    }
    g.finish();

    // What the compositor draws on every frame with a live mask: the fill,
    // the outline (on by default), the HUD and the label, through
    // `Overlay::draw` on an `RgbTarget` over the frame.
    let (mut frame, mask) = phantom_1080p();
    let set = mask.data.iter().filter(|&&v| v != 0).count();
    eprintln!(
        "overlay_1080p: mask over roi {}x{}, {set} pixels set ({:.1} % of the frame)",
        ROI.w,
        ROI.h,
        100.0 * set as f64 / (W * H) as f64
    );
    let style = OverlayStyle::from_config(
        &OverlayConfig::default(),
        std::time::Duration::from_millis(150),
    );
    let mut overlay = Overlay::new(style);
    let hud = HudInfo {
        fps: 30.0,
        latency_ms: Some(40.0),
        model: "lgmsnet-phantom-us",
        precision: "f32",
        now: mask.captured,
        model_failed: false,
    };
    let mut g = c.benchmark_group("overlay_1080p_phantom_mask");
    g.throughput(Throughput::Elements((W * H) as u64));
    for t in tables() {
        g.bench_function(BenchmarkId::from_parameter(t.name), |b| {
            b.iter(|| {
                let mut target = RgbTarget::for_frame(&mut frame)
                    .expect("frame-sized buffer")
                    .with_kernels(t);
                let state = overlay.draw(&mut target, Some(black_box(&mask)), &hud);
                assert!(matches!(state, Ok(s) if s.draws_mask()));
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_millis(1500));
    targets = colour, tensor, pixel_path, blend
}
criterion_main!(benches);
