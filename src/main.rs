//! The `lgms-edge` command: parses arguments and wires library stages.
//! All behaviour lives in the library; this file only translates flags,
//! prints results and turns errors into exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use lgms_edge::app;
use lgms_edge::config::{Config, RawConfig};
use lgms_edge::error::Chain;
use lgms_edge::infer::info::InfoReport;
use lgms_edge::infer::model::{read_metadata, LoadOptions, Model, Precision};
use lgms_edge::source::phantom::{self, PhantomKind};
use lgms_edge::tools::parity;

/// Live ultrasound/endoscopy segmentation with LGMSNet on edge boards.
///
/// Logging goes to stderr; set RUST_LOG=debug for more.
#[derive(Debug, Parser)]
#[command(name = "lgms-edge", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole pipeline on the built-in phantom source and the bundled
    /// model; write the composited video to out/ and print the statistics.
    Demo(DemoArgs),
    /// Run the pipeline from a configuration file (see boards/).
    Run(RunArgs),
    /// Print a model's inputs, outputs, preprocessing, parameter count,
    /// operator histogram and the CPU features tract will use.
    Info(InfoArgs),
    /// Check tract's logits against the PyTorch logits stored in a parity
    /// manifest (models/parity/manifest.json); exits 1 beyond tolerance.
    Parity(ParityArgs),
    /// Per-stage latency (p50/p95/p99/max) and fps of one frame at a time
    /// through every stage, after a warm-up: what an engineer runs on a cart.
    Bench(BenchArgs),
    /// Dice and IoU of a model on an images/ + masks/ folder (the authors'
    /// metric), optionally compared with a second model (f32 vs int8).
    Eval(EvalArgs),
    /// Write a synthetic dataset (images/NNNNN.png + masks/NNNNN.png) from the built-in phantom.
    Phantom(PhantomArgs),
    /// Write the masks a model computes for a set of frames (OUT/masks/NAME.png,
    /// 0/255 at the network's size) and, with --inputs, the network inputs
    /// (OUT/inputs/NAME.f32): what the int8 gate measures this runtime with.
    Masks(MasksArgs),
}

#[derive(Debug, clap::Args)]
struct MasksArgs {
    /// Model to run (f32, int8; with --f16 an f32 model converted at load).
    #[arg(long)]
    model: PathBuf,
    /// Frames: a folder of pictures of any size (or with images/ inside), a
    /// .y4m file (e.g. a `record = "input"` recording), or a folder of .f32
    /// network inputs written by --inputs.
    #[arg(long)]
    frames: PathBuf,
    /// Output folder (masks/, inputs/, masks.json).
    #[arg(long)]
    out: PathBuf,
    /// At most this many frames.
    #[arg(long)]
    limit: Option<usize>,
    /// Take one frame in this many (a long recording sampled across its length).
    #[arg(long, default_value_t = 1)]
    step: usize,
    /// Also write each frame's network input (raw little-endian f32, 1x3xHxW).
    #[arg(long)]
    inputs: bool,
    /// Also write each frame's logits (raw little-endian f32, 1x1xHxW).
    #[arg(long)]
    logits: bool,
    /// Run the model converted to f16 (as `model.precision = "f16"` does).
    #[arg(long)]
    f16: bool,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Model to run (default: the bundled trained model, else the random-weight one).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Number of source frames to run.
    #[arg(long, default_value_t = 150)]
    frames: u64,
    /// Phantom kind: ultrasound or endoscopy.
    #[arg(long, default_value = "ultrasound")]
    kind: PhantomKind,
    /// Source frame rate.
    #[arg(long, default_value_t = 15.0)]
    fps: f64,
    /// Seed of the phantom source.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Inference workers, each a thread with its own model state (default:
    /// one per core this process may use, at most 4). With frames left for
    /// fresher ones, one worker per core (throughput mode) draws a mask
    /// on more frames than one worker using every core (latency mode) on
    /// the 2-core dev machine.
    #[arg(long)]
    workers: Option<usize>,
    /// Threads per inference (default: the cores left per worker, at
    /// least 1).
    #[arg(long)]
    threads: Option<usize>,
    /// Oldest mask still drawn, in ms (a cart's setting: older masks are
    /// not drawn, so that a mask never lags visibly behind the picture).
    #[arg(long, default_value_t = 150)]
    max_mask_age_ms: u64,
    /// Pixel spacing for the lesion measurements: the depth in mm that the
    /// frame's height shows (default: uncalibrated, no mm figures).
    #[arg(long)]
    depth_mm: Option<f64>,
    /// Output folder: demo.y4m (and demo.gif unless --no-gif), stats.json.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Do not write the animated GIF (it is slow to encode).
    #[arg(long)]
    no_gif: bool,
    /// Run an int8 model without a passing accuracy record (the HUD says "int8 unverified").
    #[arg(long)]
    allow_ungated: bool,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Configuration file (TOML), e.g. boards/x86-dev.toml.
    #[arg(long, short)]
    config: PathBuf,
    /// Override the config's frame limit (0: until the source ends or Ctrl-C).
    #[arg(long)]
    frames: Option<u64>,
    /// Write the final statistics as JSON to this file.
    #[arg(long)]
    stats_json: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct InfoArgs {
    /// ONNX model file.
    model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Board configuration (source, ROI, model, overlay).
    #[arg(long, short, default_value = "boards/x86-dev.toml")]
    config: PathBuf,
    /// Use this model instead of the config's (its precision is taken from the model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Threads per inference inside tract (needs a build with --features multithread).
    #[arg(long)]
    threads: Option<usize>,
    /// Frames timed.
    #[arg(long, default_value_t = 30)]
    frames: u64,
    /// Frames run before timing.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Also send the frames to the config's display (default: discard them).
    #[arg(long)]
    display: bool,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run tract's stock graph, without lgms-edge's fused operators (to compare).
    #[arg(long)]
    stock: bool,
    /// Compute in f16 (tract converts the f32 model at load; fast with asimdhp only).
    #[arg(long)]
    f16: bool,
    /// Then profile this many inferences per tract operator and print where the time goes.
    #[arg(long, value_name = "RUNS", num_args = 0..=1, default_missing_value = "3")]
    profile: Option<usize>,
    /// How many of the most expensive nodes the profile lists.
    #[arg(long, default_value_t = 15)]
    profile_top: usize,
}

#[derive(Debug, clap::Args)]
struct EvalArgs {
    /// Model to evaluate.
    #[arg(long)]
    model: PathBuf,
    /// Folder with images/*.png and masks/*.png of the same names.
    #[arg(long)]
    data: PathBuf,
    /// A second model to compare (scores and mask agreement with the first).
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Write the full report (per image) as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print one line per image.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Debug, clap::Args)]
struct ParityArgs {
    /// Parity manifest (JSON listing the model, tolerance and vectors).
    #[arg(long, default_value = "models/parity/manifest.json")]
    manifest: PathBuf,
    /// Check this model instead of the one the manifest names.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Override the manifest's tolerance (max |diff| on logits).
    #[arg(long)]
    tolerance: Option<f32>,
    /// Run the model converted to f16 (as `model.precision = "f16"` does).
    #[arg(long)]
    f16: bool,
}

#[derive(Debug, clap::Args)]
struct PhantomArgs {
    /// Output folder; images/ and masks/ are created inside it (existing files are overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Number of image/mask pairs to write (1 or more).
    #[arg(long)]
    count: u32,
    /// Seed: the same seed always gives the same dataset.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Kind of images: "ultrasound" (grey B-mode with lesions) or "endoscopy" (colour, with a polyp).
    #[arg(long, default_value = "ultrasound")]
    kind: PhantomKind,
    /// Image size as WIDTHxHEIGHT, each side 32..=4096.
    #[arg(long, default_value = "256x256", value_parser = parse_size)]
    size: (u32, u32),
}

/// Parses `WIDTHxHEIGHT`, e.g. `256x256`.
fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("size {s:?} is not WIDTHxHEIGHT; fix: write it like 256x256");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    Ok((w, h))
}

fn run_phantom(args: PhantomArgs) -> anyhow::Result<ExitCode> {
    let (w, h) = args.size;
    phantom::write_dataset(&args.out, args.kind, args.count, args.seed, w, h)
        .with_context(|| format!("writing the phantom dataset to {:?}", args.out))?;
    println!(
        "wrote {} {} image/mask pairs ({w}x{h}) to {}",
        args.count,
        args.kind,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => demo(a),
        Command::Run(a) => run(a),
        Command::Info(a) => info(a),
        Command::Parity(a) => parity_cmd(a),
        Command::Eval(a) => eval_cmd(a),
        Command::Bench(a) => bench_cmd(a),
        Command::Phantom(a) => run_phantom(a),
        Command::Masks(a) => masks_cmd(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lgms-edge: error: {}", Chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// The run's stop flag, and whether a signal raised it: the pipeline also
/// raises it when the run ends by itself.
struct Stop {
    run: Arc<AtomicBool>,
    signalled: Arc<AtomicBool>,
}

/// The first SIGINT/SIGTERM raises the stop flag: the pipeline stops
/// within a second, abandoning an inference in flight, and reports. A
/// second one exits at once (status 130), e.g. during a long model load.
fn stop_flag() -> anyhow::Result<Stop> {
    let stop = Stop {
        run: Arc::new(AtomicBool::new(false)),
        signalled: Arc::new(AtomicBool::new(false)),
    };
    let (run, signalled) = (stop.run.clone(), stop.signalled.clone());
    ctrlc::set_handler(move || {
        if signalled.swap(true, Ordering::SeqCst) {
            eprintln!("lgms-edge: second signal, exiting now");
            std::process::exit(130);
        }
        run.store(true, Ordering::SeqCst);
        eprintln!("lgms-edge: stopping (a second signal exits at once)");
    })
    .context("installing the signal handler")?;
    Ok(stop)
}

fn demo(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let model = match a.model {
        Some(m) => m,
        None => app::demo_model().map(PathBuf::from).with_context(|| {
            format!(
                "no bundled model found ({}); fix: run from the repository root, or pass --model",
                app::BUNDLED_MODELS.join(", ")
            )
        })?,
    };
    let stats = a.out.join("stats.json");
    let mut raw = RawConfig::new(&model);
    raw.source = "phantom".into();
    raw.display = a.out.join("demo.y4m").display().to_string();
    raw.max_mask_age_ms = a.max_mask_age_ms;
    raw.frames = a.frames;
    raw.stats_json = Some(stats.clone());
    raw.phantom.kind = a.kind;
    raw.phantom.fps = a.fps;
    raw.phantom.seed = a.seed;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    raw.model.workers = a.workers.unwrap_or(cores.min(4));
    raw.model.threads = a.threads.unwrap_or_else(|| {
        (cores / raw.model.workers.max(1)).clamp(1, lgms_edge::config::MAX_THREADS)
    });
    raw.measure.depth_mm = a.depth_mm;
    raw.model.allow_ungated = a.allow_ungated;
    // Any bundled model works: its precision is read from its metadata.
    raw.model.precision = read_metadata(&model)?.precision()?;
    let cfg = raw.validate_flags().context("checking the demo's flags")?;
    let stop = stop_flag()?;
    let result = app::run(&cfg, stop.run)?;
    if stop.signalled.load(Ordering::SeqCst) {
        log::info!("stopped by a signal: no GIF is written");
    } else if !a.no_gif {
        log::info!("writing {:?} from the video", a.out.join("demo.gif"));
        lgms_edge::sink::y4m_to_gif(&a.out.join("demo.y4m"), &a.out.join("demo.gif"), 2)?;
    }
    print!("{}", result.report.to_text());
    println!("video: {}", a.out.join("demo.y4m").display());
    println!("stats: {}", stats.display());
    Ok(ExitCode::SUCCESS)
}

fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = Config::load(&a.config)?;
    if let Some(n) = a.frames {
        cfg.frames = n;
    }
    if a.stats_json.is_some() {
        cfg.stats_json = a.stats_json;
    }
    let stop = stop_flag()?;
    let result = app::run(&cfg, stop.run)?;
    print!("{}", result.report.to_text());
    Ok(ExitCode::SUCCESS)
}

fn info(a: InfoArgs) -> anyhow::Result<ExitCode> {
    let model = Model::load(&a.model, &LoadOptions::default())?;
    let report = InfoReport::new(model.info());
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(ExitCode::SUCCESS)
}

fn parity_cmd(a: ParityArgs) -> anyhow::Result<ExitCode> {
    let opts = LoadOptions {
        f16: a.f16,
        ..Default::default()
    };
    let outcome = parity::check_with(&a.manifest, a.model.as_deref(), a.tolerance, &opts)?;
    print!("{}", outcome.to_text());
    if !outcome.passed() {
        bail!(
            "tract and PyTorch disagree: max |diff| {:.3e} > tolerance {:.1e}",
            outcome.max_abs_diff(),
            outcome.tolerance
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn eval_cmd(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} images {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = lgms_edge::tools::eval::evaluate(
        &a.data,
        &a.model,
        a.compare.as_deref(),
        |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    print!("{}", report.to_text(a.verbose));
    if let Some(p) = &a.json {
        app::write_json(p, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn masks_cmd(a: MasksArgs) -> anyhow::Result<ExitCode> {
    let opts = lgms_edge::tools::masks::MasksOptions {
        limit: a.limit,
        step: a.step,
        write_inputs: a.inputs,
        write_logits: a.logits,
        f16: a.f16,
    };
    let r = lgms_edge::tools::masks::write_masks(&a.model, &a.frames, &a.out, &opts)?;
    println!(
        "{}: {} masks of {} written to {} (mean inference {:.1} ms)",
        r.label,
        r.names.len(),
        r.frames_from,
        r.out.join("masks").display(),
        r.mean_infer_ms
    );
    Ok(ExitCode::SUCCESS)
}

fn bench_cmd(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = Config::load(&a.config)?;
    if let Some(m) = a.model {
        cfg.model.precision = read_metadata(&m)?.precision()?;
        cfg.model.path = m;
    }
    if let Some(t) = a.threads {
        cfg.model.threads = t;
    }
    if a.f16 {
        cfg.model.precision = Precision::F16;
    }
    let opts = lgms_edge::tools::bench::BenchOptions {
        frames: a.frames,
        warmup: a.warmup,
        use_display: a.display,
        stock: a.stock,
        profile_runs: a.profile,
    };
    let result = lgms_edge::tools::bench::run(&cfg, &opts)?;
    print!("{}", result.report.to_text());
    if let Some(p) = &a.json {
        app::write_json(p, &result.report)?;
    }
    if let Some(profile) = &result.profile {
        print!("{}", profile.to_text(a.profile_top));
    }
    Ok(ExitCode::SUCCESS)
}
