//! The `lgms-edge` command: parses arguments and wires library stages.
//! All behaviour lives in the library; this file only translates flags.

use clap::{Parser, Subcommand};

/// Live ultrasound/endoscopy segmentation with LGMSNet on edge boards.
#[derive(Debug, Parser)]
#[command(name = "lgms-edge", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {}
}
