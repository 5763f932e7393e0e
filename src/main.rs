//! The `lgms-edge` command: parses arguments and wires library stages.
//! All behaviour lives in the library; this file only translates flags.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lgms_edge::phantom::{self, PhantomKind};

/// Live ultrasound/endoscopy segmentation with LGMSNet on edge boards.
#[derive(Debug, Parser)]
#[command(name = "lgms-edge", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a synthetic dataset (images/NNNNN.png + masks/NNNNN.png) from the built-in phantom.
    Phantom(PhantomArgs),
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

fn run_phantom(args: PhantomArgs) -> anyhow::Result<()> {
    let (w, h) = args.size;
    phantom::write_dataset(&args.out, args.kind, args.count, args.seed, w, h)
        .with_context(|| format!("writing the phantom dataset to {:?}", args.out))?;
    println!(
        "wrote {} {} image/mask pairs ({w}x{h}) to {}",
        args.count,
        args.kind,
        args.out.display()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Phantom(args) => run_phantom(args),
    }
}
