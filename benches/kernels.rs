//! Throughput of every pixel kernel: scalar reference vs the native SIMD
//! table, and vs the crates that do the same job (`yuv` for colour
//! conversion, `fast_image_resize` for resizing), in one run.
//!
//! `cargo bench --bench kernels` (or `make bench-kernels`). Criterion prints
//! throughput in Melem/s, one element being one output pixel: read it as
//! megapixels per second. Under qemu-user the numbers mean nothing (the
//! emulator's speed, not the board's); run the benches on the board.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

use lgms_edge::frame::Rect;
use lgms_edge::infer::preprocess::{ChannelOrder, Normalize};
use lgms_edge::kernels::{self, Kernels, YuvCoeffs, YuvMatrix, YuvRange};

/// A capture-sized frame (what the cameras deliver).
const W: usize = 1280;
const H: usize = 720;
/// The network's input and output size.
const NET: usize = 256;

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
    let mut g = c.benchmark_group("yuyv_to_rgb_720p");
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

    let mut g = c.benchmark_group("nv12_to_rgb_720p");
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

    let mut g = c.benchmark_group("grey_to_rgb_720p");
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
    let roi = Rect {
        x: 160,
        y: 40,
        w: 960,
        h: 640,
    };
    let norm = Normalize {
        channel_order: ChannelOrder::Bgr,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        max_pixel_value: 255.0,
        extra_scale: 1.0 / 255.0,
    };
    let mut out = vec![0f32; 3 * NET * NET];
    let mut g = c.benchmark_group("resize_normalize_960x640_to_256");
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
    let mut mask = vec![0u8; 960 * 640];
    let mut g = c.benchmark_group("logits_to_mask_256_to_960x640");
    g.throughput(Throughput::Elements(960 * 640));
    for t in tables() {
        g.bench_function(BenchmarkId::from_parameter(t.name), |b| {
            b.iter(|| t.logits_to_mask(black_box(&logits), NET, NET, 0.0, 960, 640, &mut mask))
        });
    }
    g.finish();
}

fn blend(c: &mut Criterion) {
    let mut frame = noise(W * H * 3, 5);
    let mut g = c.benchmark_group("blend_span_720p");
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
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = colour, tensor, blend
}
criterion_main!(benches);
