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
    /// Check policy files without running anything (no network).
    ///
    /// Reads each policy the way `preflight check` would: YAML, `${env:NAME}` interpolation,
    /// includes, the JSON Schema, types, and semantic rules (duplicate ids, unknown
    /// dependencies, waivers, each kind's own limits). Every problem is reported at
    /// `file:line:col` with a stable code (see docs/diagnostics.md) and a hint.
    ///
    /// Directories are searched recursively for `*.yaml`, `*.yml` and Markdown files with
    /// ```preflight blocks; each file is linted as a policy of its own.
    ///
    /// An unset `${env:NAME}` is only a warning here (lint runs where secrets are not set);
    /// `preflight check` treats it as an error.
    ///
    /// Exit status: 0 when there are no errors (warnings are allowed), 2 on any error.
    ///
    /// Examples:
    ///   preflight lint                       # everything under policies/
    ///   preflight lint policies/smoke.yaml
    ///   preflight lint runbooks/ --format json
    Lint(LintArgs),
    /// Print the JSON Schema of policy files (draft 2020-12).
    ///
    /// Editors use it for completion and inline errors: start a policy with
    /// `# yaml-language-server: $schema=../docs/policy.schema.json`. The committed copy is
    /// regenerated with `cargo run -- schema > docs/policy.schema.json`.
    Schema,
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
        Command::Lint(args) => lint(args),
        Command::Schema => schema(),
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

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Policy files or directories (default: `policies`).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// `human`: `file:line:col: error[code]: message` with the source line and a hint;
    /// `json`: the same as one JSON document.
    #[arg(long, value_name = "FORMAT", default_value = "human", value_parser = ["human", "json"])]
    pub format: String,
}

fn lint(args: LintArgs) -> anyhow::Result<u8> {
    use crate::policy::render;
    use is_terminal::IsTerminal;

    let roots = if args.paths.is_empty() {
        vec![PathBuf::from("policies")]
    } else {
        args.paths
    };
    for r in &roots {
        if !r.exists() {
            anyhow::bail!("{}: no such file or directory", r.display());
        }
    }
    let files = crate::policy::find_policy_files(&roots)?;
    if files.is_empty() {
        anyhow::bail!("no policy files (*.yaml, *.yml, *.md with ```preflight blocks) found");
    }
    let mut diags = Vec::new();
    for f in &files {
        let opts = crate::policy::Options {
            missing_env_warns: true,
            ..Default::default()
        };
        match crate::policy::load_with(std::slice::from_ref(f), &opts) {
            Ok(loaded) => diags.extend(loaded.warnings),
            Err(d) => diags.extend(d),
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.format == "json" {
        render::json(&diags, &files, &mut out)?;
    } else {
        let opts = render::RenderOpts {
            color: std::io::stdout().is_terminal(),
        };
        render::human(&diags, &mut render::Sources::new(), &mut out, &opts)?;
        if diags.is_empty() {
            use std::io::Write;
            writeln!(out, "{} policy file(s): no problems", files.len())?;
        }
    }
    Ok(if diags.iter().any(|d| d.is_error()) {
        exit::USAGE
    } else {
        exit::GO
    })
}

fn schema() -> anyhow::Result<u8> {
    println!(
        "{}",
        serde_json::to_string_pretty(&crate::policy::schema::schema())?
    );
    Ok(exit::GO)
}
