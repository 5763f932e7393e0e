//! # lgms-edge
//!
//! Live video in, LGMSNet segmentation through tract, mask overlay out.
//!
//! The modules, in the order a frame flows through them (stages talk only
//! through [`frame`] data):
//!
//! | Module | Its job |
//! |---|---|
//! | [`source`] | Where frames come from: the `FrameSource` trait, `source::open` for a config |
//! | [`source::v4l2`] | V4L2 capture (mmap buffers, format negotiation) |
//! | [`source::pixfmt`] | Raw pixel formats (YUYV, NV12, GREY, RGB24, BGR24, MJPEG) to RGB |
//! | [`source::replay`] | File replay: image folders, Y4M, raw dumps |
//! | [`source::phantom`] | The built-in ultrasound/endoscopy generator and dataset writer |
//! | [`source::reconnect`] | A capture device that comes back after it is unplugged |
//! | [`source::pacing`] | The one pacing: a file or generated source kept on its frame rate |
//! | [`source::backoff`] | The one retry policy: doubling delays for a failing device or stage |
//! | [`infer`] | The network: the `Segmenter` trait (a frame in, a mask out) |
//! | [`infer::preprocess`] | Frame to input tensor with the model's normalisation, logits to mask |
//! | [`infer::model`] | Loading, checking and optimising a model; its metadata and precision |
//! | [`infer::engine`] | One worker's tract state: preprocess, infer, postprocess |
//! | [`infer::gate`] | The accuracy record an int8/f16 model needs before `run` takes it |
//! | [`infer::ops`] | Our own tract operators (attention, 1x1 and 3x3 convs, GELU, upsample, int8 conv, wide sums) |
//! | [`infer::profile`] | Time per tract operator (`bench --profile`) |
//! | [`infer::info`] | What `lgms-edge info` reports about a model |
//! | [`kernels`] | One kernel table (pixel stages and our operators), scalar reference plus AVX2/VNNI/NEON, chosen once per run |
//! | [`kernels::cpu`] | CPU feature detection: the proofs a SIMD kernel needs |
//! | [`control`] | The control socket: freeze, cine, depth, overlay on/off, snapshot and cine saves, patient, one JSON line each |
//! | [`measure`] | Lesions of a mask: calibrated area and diameters, steadied over frames |
//! | [`dicom`] | DICOM export of the snapshot and the cine, JSON sidecars, the spool folder |
//! | [`pacs`] | The spool sender: C-STORE of the spooled files to the PACS, moved to `sent/` once stored |
//! | [`overlay`] | Drawing the mask and the HUD onto a frame |
//! | [`overlay::target`] | The one RGB `DrawTarget` and its adapters |
//! | [`overlay::mask`] | The mask's blended fill and outline |
//! | [`overlay::hud`] | The HUD text |
//! | [`overlay::no_signal`] | The NO SIGNAL screen, drawn only by the compositor |
//! | [`pipeline`] | The threads: capture, inference workers, compositor |
//! | `pipeline::slots` | The newest-frame and newest-mask slots between threads |
//! | `pipeline::workers` | The capture and inference threads |
//! | `pipeline::compositor` | Pairs each frame with a fresh-enough mask and shows it |
//! | [`pipeline::stats`] | Per-stage latency and the run's report |
//! | [`pipeline::watchdog`] | systemd readiness, watchdog pings, real-time priority |
//! | [`sink`] | Where composited frames go: the `Sink` trait, the file sinks, `sink::open` for a config |
//! | [`sink::record`] | Recording input or overlay frames to Y4M |
//! | [`sink::display`] | Framebuffer and DRM displays ([`sink::display::panel`], [`sink::display::fbdev`], [`sink::display::drm`]) |
//! | [`tools`] | Beside the pipeline: [`tools::bench`], [`tools::eval`], [`tools::parity`], [`tools::masks`] |
//! | [`config`] | The TOML configuration, validated into typed settings |
//! | [`app`] | Builds the configured source, workers and sink, and runs them |
//! | [`error`] | The one error type, naming the thing and the fix |
//! | [`frame`] | Frames and masks, the data between stages |
//! | [`y4m`] | The one Y4M reader and writer (replay, Y4M display, recording) |
//! | `sys` | The one `ioctl` wrapper (V4L2 and fbdev; DRM goes through the `drm` crate) |

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod app;
pub mod config;
pub mod control;
pub mod dicom;
pub mod error;
pub mod frame;
pub mod infer;
pub mod kernels;
pub mod measure;
pub mod overlay;
pub mod pacs;
pub mod pipeline;
pub mod sink;
pub mod source;
mod sys;
pub mod tools;
pub mod y4m;

pub use error::{Error, Result};
