//! The `gantry` command: every Gantry component behind one binary.
//!
//! Each area owns one module under `commands/` with its own clap subcommand
//! enum, flattened here, so the CLI reads like Docker's (`gantry run`,
//! `gantry images`) with the cluster commands beside it (`gantry server`).

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Gantry: containers and a Kubernetes-compatible cluster in one binary.
#[derive(Parser)]
#[command(name = "gantry", version, about)]
struct Cli {
    /// Where Gantry keeps its state (images, containers, the cluster store).
    #[arg(long, global = true, env = "GANTRY_ROOT", default_value = "/var/lib/gantry")]
    root: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Cluster(commands::cluster::ClusterCommand),
    #[command(flatten)]
    Image(commands::image::ImageCommand),
    #[command(flatten)]
    Container(Box<commands::container::ContainerCommand>),
}

/// Options every command handler receives.
pub struct GlobalOptions {
    pub root: PathBuf,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,libcgroups=error,libcontainer=error,hickory_server=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let global = GlobalOptions { root: cli.root };
    let result = match cli.command {
        Command::Cluster(cmd) => cmd.run(&global),
        Command::Image(cmd) => cmd.run(&global),
        Command::Container(cmd) => cmd.run(&global),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Plain, Docker-like messages: the cause chain on one line, no
            // backtrace even when RUST_BACKTRACE is set.
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
