//! Command-line interface: arguments, dispatch and exit codes. This module and `main.rs` are
//! the only places that print to stdout/stderr or decide the process exit code.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit codes, documented in the README.
pub mod exit {
    /// GO: nothing blocking failed (or a command succeeded).
    pub const GO: u8 = 0;
    /// NO-GO: a FAIL or ERROR at a blocking severity.
    pub const NO_GO: u8 = 1;
    /// Invalid policy or usage: nothing ran.
    pub const USAGE: u8 = 2;
    /// INCONCLUSIVE: nothing failed, but a blocking check could not give an answer.
    pub const INCONCLUSIVE: u8 = 3;
}

/// preflight decides whether a service is fit to deploy by proving its hardening
/// requirements against a running instance.
#[derive(Debug, Parser)]
#[command(name = "preflight", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bundled core service (the reference target).
    ///
    /// With `--listen 127.0.0.1:0` it binds a free port; the first line on stdout is always
    /// `listening on http://ADDR`, so scripts and tests can find it.
    Serve(ServeArgs),
    /// One-line status of a core service from its SQLite store (for tmux status bars).
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Service configuration (YAML). See docs/configuration.md.
    #[arg(long, short, value_name = "FILE", default_value = "config/core.yaml")]
    pub config: PathBuf,
    /// Address to listen on; port 0 picks a free port. Overrides `listen` in the config.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Directory for the SQLite store, snapshots and (by default) logs. Overrides the config.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Admin API bearer token. Overrides the config; prefer the environment variable.
    #[arg(
        long,
        env = "PREFLIGHT_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Data directory of the service (holds `core.db`).
    #[arg(long, value_name = "DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Output format: `tmux` (one short line) or `json`.
    #[arg(long, value_name = "FORMAT", default_value = "tmux")]
    pub format: String,
}

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::USAGE)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Status(args) => status(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<u8> {
    crate::service::serve(crate::service::ServeOptions {
        config: args.config,
        listen: args.listen,
        data_dir: args.data_dir,
        admin_token: args.admin_token,
    })?;
    Ok(exit::GO)
}

fn status(args: StatusArgs) -> anyhow::Result<u8> {
    let line = crate::service::status_line(&args.data_dir, &args.format)?;
    println!("{line}");
    Ok(exit::GO)
}
