//! Command-line interface: arguments, dispatch and exit codes. This module and `main.rs` are
//! the only places that print to stdout/stderr or decide the process exit code.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod audit;
mod live;
mod progress;
mod watch;

/// The policy `check` runs when none is given.
pub const DEFAULT_POLICY: &str = "policies/production-hardening.yaml";
/// Why a command could not do its job (exit code 2). `main.rs` prints it with its causes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A usage problem found by the command itself (no such path, nothing to lint).
    #[error("{0}")]
    Usage(String),
    #[error("writing {}", path.display())]
    WriteReport {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Serve(#[from] preflight::service::ServeError),
    #[error(transparent)]
    Status(#[from] preflight::service::StatusError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

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

const EXAMPLES: &str = "\
Examples:
  # prove the default policy against the bundled service (spawned for the run)
  preflight check
  # the same service without its hardening: NO-GO, naming each defect
  preflight check --config config/before-hardening.yaml
  # read-only checks against a running service
  preflight check policies/smoke.yaml --target http://127.0.0.1:8080
  # a CI gate: exit code plus a JUnit report
  preflight check --format junit --output report.xml
  # validate policies and runbooks without running anything
  preflight lint policies/ runbooks/
  # judge a canary against its baseline (here: 20 ms slower, NO-GO)
  preflight canary --canary-config config/candidate-slow.yaml
  # keep proving the read-only checks every minute, results on :9464/metrics
  preflight watch policies/smoke.yaml --target http://127.0.0.1:8080 --every 1m

Exit codes: 0 GO, 1 NO-GO, 2 invalid policy or usage (nothing ran), 3 INCONCLUSIVE.
Docs: README.md, docs/policy-reference.md, docs/report-format.md, docs/canary.md, docs/watch.md, docs/api.md";

/// preflight decides whether a service is fit to deploy by proving its hardening
/// requirements against a running instance.
#[derive(Debug, Parser)]
#[command(
    name = "preflight",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `preflight status` alone. A tmux status bar starts it every few seconds, and building the
/// whole command line (every subcommand and argument) was a quarter of its instructions, so
/// [`parse`] tries this first; help, `--version` and every error go to [`Cli`], which
/// describes `status` with the same [`StatusArgs`].
#[derive(Debug, Parser)]
#[command(name = "preflight")]
struct StatusOnly {
    #[command(subcommand)]
    command: StatusCommand,
}

#[derive(Debug, Subcommand)]
enum StatusCommand {
    Status(StatusArgs),
}

/// The command line: `preflight status …` by its own small parser when it parses as one,
/// everything else (and every help or error) by the full [`Cli`].
pub fn parse() -> Cli {
    parse_from(std::env::args_os().collect())
}

fn parse_from(args: Vec<std::ffi::OsString>) -> Cli {
    if args.get(1).is_some_and(|a| a == "status")
        && let Ok(StatusOnly {
            command: StatusCommand::Status(status),
        }) = StatusOnly::try_parse_from(&args)
    {
        return Cli {
            command: Command::Status(status),
        };
    }
    Cli::parse_from(args)
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prove a policy against a running service: GO / NO-GO / INCONCLUSIVE.
    ///
    /// With no target (`--target` or `target.url` in the policy) it spawns the bundled core
    /// service on a free loopback port in a temporary directory, runs the policy against it
    /// and stops it. Exit codes: 0 GO, 1 NO-GO, 2 invalid policy or usage (nothing ran),
    /// 3 INCONCLUSIVE.
    Check(CheckArgs),
    #[command(verbatim_doc_comment)]
    /// Compare a canary with its baseline: GO / NO-GO / INCONCLUSIVE, with the statistics.
    ///
    /// Sends the same paced request mix to both versions (interleaved, so machine noise hits
    /// both alike), reads their `/metrics` (and PromQL, when configured) at every interval,
    /// and judges each metric: latency by Mann–Whitney U and the Hodges–Lehmann shift, the
    /// tail by the share of requests beyond the baseline's p99, errors as proportions
    /// (Fisher's exact test). Each interval is scored as it ends; a score at or below
    /// `marginal` stops the run with NO-GO. Too few samples is INCONCLUSIVE, never GO.
    ///
    /// Without --baseline/--canary it spawns two instances of the bundled service with
    /// --baseline-config and --canary-config (both default to config/core.yaml). The
    /// traffic, metrics and thresholds come from the policy's `canary:` section (default
    /// policies/canary.yaml, the built-in copy outside a checkout); see docs/canary.md.
    ///
    /// Examples:
    ///   preflight canary --canary-config config/candidate-slow.yaml
    ///   preflight canary --baseline http://10.0.0.5:8080 --canary http://10.0.0.6:8080 \
    ///       --request 'GET /api/items' --duration 2m
    ///
    /// Exit codes: 0 GO, 1 NO-GO, 2 usage, 3 INCONCLUSIVE.
    Canary(Box<CanaryArgs>),
    #[command(verbatim_doc_comment)]
    /// Audit a runbook: run its steps section by section, ask the operator to attest its
    /// `confirm` steps, and append every result to a hash-chained evidence trail.
    ///
    /// The runbook's ```preflight blocks run in document order against the target (the
    /// bundled service spawned for the run when no --target is given, as `check` does).
    /// Each section's heading is shown with its results as they come. A `confirm` step asks
    /// y/n and a note on the terminal; --yes answers yes for CI (recorded as such),
    /// --no-input leaves it unanswered (INCONCLUSIVE, never PASS).
    ///
    /// The trail (SQLite, append-only) gets one record per step, each carrying the SHA-256
    /// of the one before; with --sign KEY the run's last record carries an Ed25519
    /// signature of the chain head. `audit verify` proves the trail unaltered. See
    /// docs/audit.md.
    ///
    /// Examples:
    ///   preflight audit runbooks/operator-cheatsheet.md --yes
    ///   preflight audit keygen --out ops.key
    ///   preflight audit runbooks/operator-cheatsheet.md --target http://10.0.0.5:8080 \
    ///       --operator alice --sign ops.key --format html --output audit.html
    ///   preflight audit verify --key ops.key.pub
    ///   preflight audit log
    ///
    /// Exit codes: 0 GO, 1 NO-GO, 2 usage (nothing ran, or the trail could not be
    /// written), 3 INCONCLUSIVE; `audit verify`: 0 intact, 1 tampered, 2 unreadable.
    Audit(audit::AuditArgs),
    #[command(verbatim_doc_comment)]
    /// Keep proving a policy against running services; results as Prometheus metrics.
    ///
    /// Re-runs the policy's read-only checks every --every against each instance (--target
    /// URL, or --targets with a file_sd file or a Prometheus server's active targets). A
    /// check with a `schedule:` (`every 30s`, `hourly`, `daily at 03:00`, `weekly on sun at
    /// 03:00`, with `jitter` and a UTC `window`) runs on it instead. A check that disturbs
    /// the target (faults, floods, kills) runs only on a schedule of its own, alone on its
    /// instance: it never overlaps another check there. Without one it is listed as not run.
    /// watch never spawns the bundled service: with no target it is a usage error.
    ///
    /// Served on --listen: /metrics (preflight_check_status, preflight_verdict, …; see
    /// docs/watch.md), / (the last report per instance, HTML) and /report.json. Alerting
    /// rules: docs/alerts.yaml. An instance that goes away gives ERROR rows, not an exit.
    /// SIGTERM (or Ctrl-C) lets the runs under way finish, then exits 0.
    ///
    /// Examples:
    ///   preflight watch policies/smoke.yaml --target http://10.0.0.5:8080 --every 1m
    ///   preflight watch --targets prometheus:http://prometheus:9090?match={job="core"} \
    ///       --listen 0.0.0.0:9464 --admin-token "$TOKEN"
    ///   preflight watch staging.yaml --targets fleet.json --every 5m --quiet
    ///
    /// Exit codes: 0 stopped by SIGTERM or Ctrl-C, 2 invalid policy or usage (nothing ran).
    Watch(watch::WatchArgs),
    /// Run the bundled core service (the reference target).
    ///
    /// With `--listen 127.0.0.1:0` it binds a free port; the first line on stdout is always
    /// `listening on http://ADDR`, so scripts and tests can find it.
    Serve(ServeArgs),
    /// One-line status of a core service from its SQLite store (for tmux status bars).
    Status(StatusArgs),
    /// Work with JSON reports: merge the shards of a fleet run into one verdict.
    #[command(subcommand)]
    Report(ReportCommand),
    #[command(verbatim_doc_comment)]
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
    #[command(verbatim_doc_comment)]
    /// List the policies and service profiles built into the binary, or print one.
    ///
    /// An installed preflight needs no checkout: `check`, `canary` and `serve` take a
    /// built-in by name (`preflight check smoke`, `--config before-hardening`) whenever no
    /// file of that name exists; a file on disk always wins. `preflight policies show NAME`
    /// prints one to start your own from.
    ///
    /// Examples:
    ///   preflight policies
    ///   preflight policies show smoke > my-policy.yaml
    ///   preflight check --config regressions/no-rate-limit
    Policies(PoliciesArgs),
    /// Write a starter policy; with --target, checks for what the service answers.
    ///
    /// Without a target: a commented starting point. With one, a read-only look (GET
    /// /healthz, /readyz, / and /metrics, once each) and a check for each thing found — its
    /// status, a latency bound with room, the content type; exported memory and request
    /// counters from /metrics — each marked `review:` with the value it was based on.
    /// --probe-limits also finds the per-client rate limit (bounded bursts of up to 300 GETs,
    /// a window waited out up to 30 s) and writes a `rate_limit` check stating the algorithm
    /// and parameters the limiter behaves like (token or leaky bucket, fixed or sliding window).
    ///
    /// Examples:
    ///   preflight init --target http://127.0.0.1:8080
    ///   preflight init --target https://staging.example.com --probe-limits /api/items -o staging.yaml
    ///   preflight lint preflight.yaml && preflight check preflight.yaml
    #[command(verbatim_doc_comment)]
    Init(InitArgs),
    /// Print a shell completion script.
    ///
    /// Examples:
    ///   preflight completions bash > ~/.local/share/bash-completion/completions/preflight
    ///   preflight completions zsh > "${fpath[1]}/_preflight"
    ///   preflight completions fish > ~/.config/fish/completions/preflight.fish
    #[command(verbatim_doc_comment)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print preflight's manual page (roff), or write one page per subcommand.
    ///
    /// Examples:
    ///   preflight manpage > /usr/local/share/man/man1/preflight.1
    ///   preflight manpage --out-dir /usr/local/share/man/man1   # preflight-check.1, …
    #[command(verbatim_doc_comment)]
    Manpage {
        /// Write `preflight.1` and `preflight-SUBCOMMAND.1` here instead of printing.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Print the JSON Schema of policy files (draft 2020-12).
    ///
    /// Editors use it for completion and inline errors: start a policy with
    /// `# yaml-language-server: $schema=../docs/policy.schema.json`. The committed copy is
    /// regenerated with `cargo run -- schema > docs/policy.schema.json`.
    Schema,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Policy files (merged in order) or built-in names (`preflight policies`).
    /// Default: policies/production-hardening.yaml (the built-in copy outside a checkout).
    #[arg(value_name = "POLICY")]
    pub policies: Vec<PathBuf>,
    /// Base URL of a running service to check; it is used as given, never spawned.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Admin API token of the target (enables fault-injection checks).
    #[arg(
        long,
        env = "PREFLIGHT_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// A client address (IP or CIDR of this machine) checks may send from, for a target not
    /// on loopback; repeatable, added to `target.source_addresses`.
    #[arg(long = "source-address", value_name = "ADDR|CIDR")]
    pub source_addresses: Vec<preflight::policy::model::AddressRange>,
    /// Service profile for the spawned service: a file or a built-in name such as
    /// `before-hardening` (default config/core.yaml, the built-in copy outside a checkout).
    #[arg(long, value_name = "PROFILE", conflicts_with = "target")]
    pub config: Option<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = FormatArg::Human)]
    pub format: FormatArg,
    /// Write the report to FILE instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write the report in FORMAT to FILE, from the same run (repeatable), e.g.
    /// `--format github --report junit:report.xml --report html:report.html`.
    #[arg(long = "report", value_name = "FORMAT:FILE", value_parser = parse_extra_report)]
    pub reports: Vec<ExtraReport>,
    /// Run only these checks (comma-separated or repeated).
    #[arg(long, value_name = "ID", value_delimiter = ',', action = clap::ArgAction::Append)]
    pub only: Vec<String>,
    /// Leave these checks out (comma-separated or repeated).
    #[arg(long, value_name = "ID", value_delimiter = ',', action = clap::ArgAction::Append)]
    pub skip: Vec<String>,
    /// Stop after the first blocking failure; the remaining checks are SKIP.
    #[arg(long)]
    pub fail_fast: bool,
    /// Most independent read-only checks running at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// No progress spinners on stderr (they only show on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Check a fleet: every instance a Prometheus `file_sd` file lists (JSON or YAML,
    /// labels kept), or `prometheus:URL?match={job="api"}` for a Prometheus server's active
    /// targets. Each instance gets its own verdict; the fleet's follows the policy's
    /// `fleet.require` (default: all GO). See docs/fleets.md.
    #[arg(long, value_name = "SOURCE", conflicts_with_all = ["target", "config"])]
    pub targets: Option<String>,
    /// Check only shard K of N of the fleet (by a stable hash of each instance's name), for
    /// CI matrix jobs or Kubernetes indexed Jobs; join the JSON reports with
    /// `preflight report merge`.
    #[arg(long, value_name = "K/N", requires = "targets", value_parser = parse_shard)]
    pub shard: Option<(u32, u32)>,
}

fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    preflight::probe::discovery::parse_shard(s)
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    #[command(verbatim_doc_comment)]
    /// Join the JSON reports of a fleet's shards into the fleet's report and verdict.
    ///
    /// Each input is the `--format json` report of `preflight check --targets … --shard K/N`.
    /// They must be of one policy and one fleet, and no instance may be in two. A shard left
    /// out leaves its instances out: they count as not GO, so the merged verdict is at best
    /// INCONCLUSIVE until every shard is in.
    ///
    /// Examples:
    ///   preflight report merge shard-1.json shard-2.json shard-3.json
    ///   preflight report merge shards/*.json --format junit -o fleet.xml
    ///
    /// Exit codes: 0 GO, 1 NO-GO, 2 unreadable or mismatched reports, 3 INCONCLUSIVE.
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The shard reports (JSON).
    #[arg(value_name = "REPORT.json", required = true)]
    pub reports: Vec<PathBuf>,
    /// Report format of the merged report.
    #[arg(long, value_enum, default_value_t = FormatArg::Human)]
    pub format: FormatArg,
    /// Write the merged report to FILE instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write it in FORMAT to FILE (repeatable), as `check --report`.
    #[arg(long = "report", value_name = "FORMAT:FILE", value_parser = parse_extra_report)]
    pub reports_extra: Vec<ExtraReport>,
}

#[derive(Debug, Args)]
pub struct CanaryArgs {
    /// Policy files or built-in names with a `canary:` section (default policies/canary.yaml).
    #[arg(value_name = "POLICY")]
    pub policies: Vec<PathBuf>,
    /// Base URL of the running baseline (with --canary).
    #[arg(long, value_name = "URL", requires = "canary", conflicts_with_all = ["baseline_config", "canary_config"])]
    pub baseline: Option<String>,
    /// Base URL of the running canary (with --baseline).
    #[arg(long, value_name = "URL", requires = "baseline")]
    pub canary: Option<String>,
    /// Profile of the spawned baseline (default config/core.yaml).
    #[arg(long, value_name = "PROFILE")]
    pub baseline_config: Option<PathBuf>,
    /// Profile of the spawned canary (default config/core.yaml).
    #[arg(long, value_name = "PROFILE")]
    pub canary_config: Option<PathBuf>,
    /// A request of the mix, `'METHOD /path'` (repeatable; replaces the policy's requests,
    /// equal weights).
    #[arg(long = "request", value_name = "'METHOD /PATH'")]
    pub requests: Vec<preflight::units::RequestLine>,
    /// Requests per second to each version (e.g. `40/s`).
    #[arg(long, value_name = "RATE")]
    pub rate: Option<preflight::units::Rate>,
    /// How long the traffic runs, warm-up included (e.g. `45s`, `2m`).
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<preflight::units::Dur>,
    /// Length of one judged interval.
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<preflight::units::Dur>,
    /// Traffic at the start that is not judged.
    #[arg(long, value_name = "DURATION")]
    pub warmup: Option<preflight::units::Dur>,
    /// A client address the traffic may send from (repeatable; see `check --source-address`).
    #[arg(long = "source-address", value_name = "ADDR|CIDR")]
    pub source_addresses: Vec<preflight::policy::model::AddressRange>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = FormatArg::Human)]
    pub format: FormatArg,
    /// Write the report to FILE instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write the report in FORMAT to FILE, from the same run (repeatable), e.g.
    /// `--format github --report junit:report.xml --report html:report.html`.
    #[arg(long = "report", value_name = "FORMAT:FILE", value_parser = parse_extra_report)]
    pub reports: Vec<ExtraReport>,
    /// No progress lines on stderr.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub live: live::LiveArgs,
}

/// A `--report FORMAT:FILE` argument.
#[derive(Debug, Clone)]
pub struct ExtraReport {
    pub format: FormatArg,
    pub path: PathBuf,
}

fn parse_extra_report(s: &str) -> Result<ExtraReport, String> {
    use clap::ValueEnum as _;
    let (format, path) = s
        .split_once(':')
        .filter(|(_, p)| !p.is_empty())
        .ok_or_else(|| format!("expected FORMAT:FILE (e.g. junit:report.xml), got `{s}`"))?;
    let format = FormatArg::from_str(format, true).map_err(|_| {
        let names: Vec<String> = FormatArg::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        format!("unknown format `{format}`; one of: {}", names.join(", "))
    })?;
    Ok(ExtraReport {
        format,
        path: PathBuf::from(path),
    })
}

/// `--format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Human,
    Json,
    Junit,
    Markdown,
    Html,
    /// GitHub Actions annotations (workflow commands); with `GITHUB_STEP_SUMMARY` set, the
    /// Markdown report is appended to the job summary too.
    Github,
    /// GitLab Code Quality JSON.
    Codequality,
}

impl From<FormatArg> for preflight::report::Format {
    fn from(f: FormatArg) -> Self {
        use preflight::report::Format;
        match f {
            FormatArg::Human => Format::Human,
            FormatArg::Json => Format::Json,
            FormatArg::Junit => Format::Junit,
            FormatArg::Markdown => Format::Markdown,
            FormatArg::Html => Format::Html,
            FormatArg::Github => Format::Github,
            FormatArg::Codequality => Format::Codequality,
        }
    }
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
    /// Write the pid here (atomically) once listening; removed on a graceful exit, left
    /// behind by kill -9 and overwritten by the next start. Overrides `pid_file`.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
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
pub struct InitArgs {
    /// Base URL of a running service to look at (read-only unless --probe-limits).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Also find the rate limit (bounded bursts of up to 300 requests from this host) of PATH
    /// (default: the first of /healthz, /readyz, / that answered; health endpoints are often
    /// exempt, so name a route the limiter covers).
    #[arg(long, requires = "target", value_name = "PATH", num_args = 0..=1, default_missing_value = "")]
    pub probe_limits: Option<String>,
    /// Where to write the policy (`-` for stdout).
    #[arg(long, short, value_name = "FILE", default_value = "preflight.yaml")]
    pub output: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PoliciesArgs {
    #[command(subcommand)]
    pub action: Option<PoliciesAction>,
}

#[derive(Debug, Subcommand)]
pub enum PoliciesAction {
    /// List them (the default).
    List,
    /// Print one built-in policy or profile as it ships.
    Show {
        /// Its name (`smoke`, `before-hardening`, `regressions/leak-64b`) or repository path.
        name: String,
    },
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

/// Resolves on SIGTERM or Ctrl-C, for the commands that run until stopped. The SIGTERM
/// handler is installed at once (call it inside the runtime), so a SIGTERM right after is
/// not the default kill.
fn terminated() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    Box::pin(async move {
        match term {
            Ok(mut s) => {
                tokio::select! {
                    _ = s.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    })
}

/// Runs a parsed command line; the exit code, or an error for `main.rs` to print (exit 2).
pub fn run(cli: Cli) -> Result<u8, Error> {
    match cli.command {
        Command::Check(args) => check(args),
        Command::Canary(args) => canary(*args),
        Command::Audit(args) => audit::run(args),
        Command::Watch(args) => watch::run(args),
        Command::Serve(args) => serve(args),
        Command::Status(args) => status(args),
        Command::Report(ReportCommand::Merge(args)) => report_merge(args),
        Command::Lint(args) => lint(args),
        Command::Policies(args) => policies(args),
        Command::Init(args) => init(args),
        Command::Completions { shell } => completions(shell),
        Command::Manpage { out_dir } => manpage(out_dir),
        Command::Schema => schema(),
    }
}

fn check(args: CheckArgs) -> Result<u8, Error> {
    use preflight::engine::run::{CheckFailure, CheckOptions, NoProgress, Progress};
    use preflight::report::Format;
    use std::sync::Arc;

    let format: Format = args.format.into();
    let progress: Arc<dyn Progress> = if !args.no_progress && std::io::stderr().is_terminal() {
        Arc::new(progress::Spinners::new())
    } else {
        Arc::new(NoProgress)
    };
    let policy_files = if args.policies.is_empty() {
        vec![policy_path(std::path::Path::new(DEFAULT_POLICY))]
    } else {
        args.policies.iter().map(|p| policy_path(p)).collect()
    };
    let Some(loaded) = load_policies(&policy_files)? else {
        return Ok(exit::USAGE);
    };
    let opts = CheckOptions {
        target: args.target,
        admin_token: args.admin_token,
        source_addresses: args.source_addresses,
        config: args.config,
        only: args.only,
        skip: args.skip,
        fail_fast: args.fail_fast,
        concurrency: args.concurrency.into(),
        progress,
        secrets: loaded.secrets,
        ..CheckOptions::new(loaded.policy, loaded.files, std::env::current_exe()?)
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let run = async {
        match &args.targets {
            Some(source) => fleet(opts, source, args.shard).await,
            None => preflight::engine::run::check(opts).await,
        }
    };
    let report = match runtime.block_on(run) {
        Ok(r) => r,
        Err(CheckFailure::Usage(msg)) => {
            eprintln!("error: {msg}");
            return Ok(exit::USAGE);
        }
    };
    // Spinner threads and the runtime end before the report is written.
    drop(runtime);
    write_report(format, &report, args.output.as_deref(), &args.reports)
}

/// Lists the fleet of `--targets`, keeps shard K/N of it, and checks that part.
async fn fleet(
    opts: preflight::engine::run::CheckOptions,
    source: &str,
    shard: Option<(u32, u32)>,
) -> Result<preflight::report::Report, preflight::engine::run::CheckFailure> {
    use preflight::engine::fleet::{Fleet, check_fleet};
    use preflight::engine::run::CheckFailure;
    use preflight::probe::discovery::{Source, in_shard};
    let parsed = Source::parse(source).map_err(CheckFailure::Usage)?;
    opts.progress
        .message(&format!("listing the fleet ({source})"));
    let all = parsed
        .load()
        .await
        .map_err(|e| CheckFailure::Usage(format!("--targets {source}: {e}")))?;
    let size = all.len();
    let instances: Vec<_> = match shard {
        Some((k, n)) => all.into_iter().filter(|i| in_shard(i, k, n)).collect(),
        None => all,
    };
    if instances.is_empty() {
        let (k, n) = shard.unwrap_or((1, 1));
        return Err(CheckFailure::Usage(format!(
            "shard {k}/{n} holds none of the fleet's {size} instances: use fewer shards"
        )));
    }
    check_fleet(
        opts,
        Fleet {
            instances,
            source: source.to_string(),
            size,
            shard,
        },
    )
    .await
}

fn report_merge(args: MergeArgs) -> Result<u8, Error> {
    let mut reports = vec![];
    for path in &args.reports {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                return Ok(exit::USAGE);
            }
        };
        match serde_json::from_str::<preflight::report::Report>(&text) {
            Ok(r) => reports.push(r),
            Err(e) => {
                eprintln!(
                    "error: {} is not a preflight JSON report ({e}); make it with `check --targets … --format json`",
                    path.display()
                );
                return Ok(exit::USAGE);
            }
        }
    }
    let merged = match preflight::engine::fleet::merge(reports) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::USAGE);
        }
    };
    write_report(
        args.format.into(),
        &merged,
        args.output.as_deref(),
        &args.reports_extra,
    )
}

/// The default canary policy, used when no policy is given (the built-in one outside a
/// checkout).
const DEFAULT_CANARY_POLICY: &str = "policies/canary.yaml";

/// A policy argument as the loader reads it: the file when it exists, else the built-in
/// policy of that name or path (`builtin:…`), else the path as given (reported missing).
fn policy_path(arg: &std::path::Path) -> PathBuf {
    preflight::builtin::resolve(arg, preflight::builtin::policy).path()
}

fn canary(args: CanaryArgs) -> Result<u8, Error> {
    use preflight::canary::run::{Options, Versions};
    use preflight::policy::canary::WeightedRequest;
    use preflight::report::PolicyInfo;
    let files: Vec<PathBuf> = if args.policies.is_empty() {
        vec![policy_path(std::path::Path::new(DEFAULT_CANARY_POLICY))]
    } else {
        args.policies.iter().map(|p| policy_path(p)).collect()
    };
    let Some(loaded) = load_policies(&files)? else {
        return Ok(exit::USAGE);
    };
    let p = loaded.policy;
    let Some(mut spec) = p.canary.clone() else {
        eprintln!(
            "error: {} has no `canary:` section; add one (docs/canary.md) or pass a policy that has it",
            files[0].display()
        );
        return Ok(exit::USAGE);
    };
    let declared: Vec<ipnet::IpNet> = p
        .target
        .as_ref()
        .map(|t| t.source_addresses.iter().map(|a| a.0).collect())
        .unwrap_or_default();
    let policy = PolicyInfo {
        name: p.name.clone(),
        description: p.description.clone(),
        files: loaded
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect(),
    };
    if !args.requests.is_empty() {
        spec.traffic.requests = args
            .requests
            .iter()
            .map(|r| WeightedRequest {
                request: r.clone(),
                weight: 1,
            })
            .collect();
    }
    if let Some(r) = args.rate {
        spec.traffic.rate = r;
    }
    if let Some(d) = args.duration {
        spec.traffic.duration = d;
    }
    if let Some(d) = args.interval {
        spec.traffic.interval = d;
    }
    if let Some(d) = args.warmup {
        spec.traffic.warmup = d;
    }
    if args.live.listen.is_some() {
        return live::run(live::Run {
            args: args.live,
            spec,
            policy,
            policy_file: files[0].clone(),
            baseline: args.baseline.expect("--listen requires --baseline"),
            canary: args.canary.expect("--listen requires --canary"),
            duration: args.duration,
            format: args.format,
            output: args.output,
            reports: args.reports,
            quiet: args.no_progress,
        });
    }
    let problems = preflight::policy::canary::problems(&spec);
    if !problems.is_empty() {
        for (ptr, msg, hint) in problems {
            eprintln!("error: canary{ptr}: {msg} (hint: {hint})");
        }
        return Ok(exit::USAGE);
    }
    let versions = match (args.baseline, args.canary) {
        (Some(baseline), Some(canary)) => Versions::Urls { baseline, canary },
        _ => {
            let core = || PathBuf::from(preflight::engine::run::DEFAULT_CONFIG);
            let resolve = |p: PathBuf| preflight::engine::run::resolve_profile(&p);
            let (baseline, canary) = match (
                resolve(args.baseline_config.unwrap_or_else(core)),
                resolve(args.canary_config.unwrap_or_else(core)),
            ) {
                (Ok(b), Ok(c)) => (b, c),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("error: {e}");
                    return Ok(exit::USAGE);
                }
            };
            Versions::Configs { baseline, canary }
        }
    };
    let mut declared = declared;
    declared.extend(args.source_addresses.iter().map(|a| a.0));
    let quiet = args.no_progress;
    let opts = Options {
        spec,
        policy,
        versions,
        exe: std::env::current_exe()?,
        declared_sources: declared,
        progress: std::sync::Arc::new(move |m: &str| {
            if !quiet {
                eprintln!("canary: {m}");
            }
        }),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let report = match runtime.block_on(preflight::canary::run::run(opts)) {
        Ok(r) => r,
        Err(preflight::engine::run::CheckFailure::Usage(msg)) => {
            eprintln!("error: {msg}");
            return Ok(exit::USAGE);
        }
    };
    drop(runtime);
    write_report(
        args.format.into(),
        &report,
        args.output.as_deref(),
        &args.reports,
    )
}

/// Loads policy files; on any error prints every diagnostic and returns `None` (exit 2).
fn load_policies(files: &[PathBuf]) -> Result<Option<preflight::policy::load::Loaded>, Error> {
    match preflight::policy::load(files) {
        Ok(l) => Ok(Some(l)),
        Err(diags) => {
            let opts = preflight::policy::render::RenderOpts {
                color: std::io::stderr().is_terminal(),
            };
            let mut sources = preflight::policy::render::Sources::new();
            preflight::policy::render::human(&diags, &mut sources, &mut std::io::stderr(), &opts)?;
            let errors = diags.iter().filter(|d| d.is_error()).count();
            eprintln!("error: the policy is invalid ({errors} error(s)); nothing ran");
            Ok(None)
        }
    }
}

/// Writes the report to `output` (a one-line verdict on stderr) or stdout; the exit code of
/// its verdict.
fn write_report(
    format: preflight::report::Format,
    report: &preflight::report::Report,
    output: Option<&std::path::Path>,
    extra: &[ExtraReport],
) -> Result<u8, Error> {
    use preflight::report::{Format, RenderOpts};
    let to_terminal = output.is_none() && std::io::stdout().is_terminal();
    let render = RenderOpts {
        color: to_terminal && format == Format::Human,
    };
    match output {
        Some(path) => {
            let mut buf = Vec::new();
            preflight::report::write(format, report, &mut buf, &render)?;
            std::fs::write(path, buf).map_err(|source| Error::WriteReport {
                path: path.to_path_buf(),
                source,
            })?;
            eprintln!(
                "{}: {} (report in {})",
                report.verdict.as_str(),
                report.verdict_reason,
                path.display()
            );
        }
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            preflight::report::write(format, report, &mut lock, &render)?;
        }
    }
    for e in extra {
        let mut buf = Vec::new();
        preflight::report::write(
            e.format.into(),
            report,
            &mut buf,
            &RenderOpts { color: false },
        )?;
        std::fs::write(&e.path, buf).map_err(|source| Error::WriteReport {
            path: e.path.clone(),
            source,
        })?;
    }
    if format == Format::Github {
        job_summary(report)?;
    }
    Ok(verdict_exit(report.verdict))
}

/// The exit code of a verdict.
fn verdict_exit(v: preflight::report::Verdict) -> u8 {
    use preflight::report::Verdict;
    match v {
        Verdict::Go => exit::GO,
        Verdict::NoGo => exit::NO_GO,
        Verdict::Inconclusive => exit::INCONCLUSIVE,
    }
}

/// Appends the Markdown report to the GitHub Actions job summary when the runner set
/// `GITHUB_STEP_SUMMARY`.
fn job_summary(report: &preflight::report::Report) -> Result<(), Error> {
    let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let path = PathBuf::from(path);
    let mut buf = Vec::new();
    preflight::report::write(
        preflight::report::Format::Markdown,
        report,
        &mut buf,
        &preflight::report::RenderOpts { color: false },
    )?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)?;
        f.write_all(&buf)
    };
    write().map_err(|source| Error::WriteReport { path, source })
}

fn serve(args: ServeArgs) -> Result<u8, Error> {
    let service = preflight::service::start(preflight::service::ServeOptions {
        config: preflight::builtin::resolve(&args.config, preflight::builtin::profile).path(),
        listen: args.listen,
        data_dir: args.data_dir,
        pid_file: args.pid_file,
        admin_token: args.admin_token,
    })?;
    {
        // Always the first stdout line: scripts and `engine::spawn` read the address here.
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{}", service.local_addr())?;
        out.flush()?;
    }
    service.run()?;
    Ok(exit::GO)
}

fn status(args: StatusArgs) -> Result<u8, Error> {
    let line = preflight::service::status_line(&args.data_dir, &args.format)?;
    println!("{line}");
    Ok(exit::GO)
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Policy files or directories (default: `policies`).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// `human`: `file:line:col: error[code]: message` with the source line and a hint;
    /// `json`: the same as one JSON document; `github`: GitHub Actions annotations;
    /// `codequality`: GitLab Code Quality JSON; `sarif`: SARIF 2.1.0 (code scanning).
    #[arg(long, value_name = "FORMAT", default_value = "human",
          value_parser = ["human", "json", "github", "codequality", "sarif"])]
    pub format: String,
}

fn lint(args: LintArgs) -> Result<u8, Error> {
    use preflight::policy::render;

    let roots = if args.paths.is_empty() {
        vec![PathBuf::from("policies")]
    } else {
        args.paths
    };
    // A built-in policy by name (`preflight lint smoke`) when no such file exists.
    let (builtins, roots): (Vec<PathBuf>, Vec<PathBuf>) = roots
        .into_iter()
        .map(|r| policy_path(&r))
        .partition(|r| preflight::builtin::is_builtin(r));
    for r in &roots {
        if !r.exists() {
            return Err(Error::Usage(format!(
                "{}: no such file or directory (nor a built-in policy: `preflight policies`)",
                r.display()
            )));
        }
    }
    let mut files = preflight::policy::find_policy_files(&roots)?;
    files.extend(builtins);
    if files.is_empty() {
        return Err(Error::Usage(
            "no policy files (*.yaml, *.yml, *.md with ```preflight blocks) found".into(),
        ));
    }
    let mut diags = Vec::new();
    for f in &files {
        let opts = preflight::policy::Options {
            missing_env_warns: true,
            ..Default::default()
        };
        match preflight::policy::load_with(std::slice::from_ref(f), &opts) {
            Ok(loaded) => diags.extend(loaded.warnings),
            Err(d) => diags.extend(d),
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.format == "json" {
        render::json(&diags, &files, &mut out)?;
    } else if args.format == "github" {
        preflight::report::github::diagnostics(&diags, &mut out)?;
    } else if args.format == "codequality" {
        preflight::report::codequality::diagnostics(&diags, &mut out)?;
    } else if args.format == "sarif" {
        preflight::report::sarif::write(&diags, &files, &mut out)?;
    } else {
        let opts = render::RenderOpts {
            color: std::io::stdout().is_terminal(),
        };
        render::human(&diags, &mut render::Sources::new(), &mut out, &opts)?;
        if diags.is_empty() {
            writeln!(out, "{} policy file(s): no problems", files.len())?;
        }
    }
    Ok(if diags.iter().any(|d| d.is_error()) {
        exit::USAGE
    } else {
        exit::GO
    })
}

fn policies(args: PoliciesArgs) -> Result<u8, Error> {
    use preflight::builtin::{self, Builtin};
    match args.action.unwrap_or(PoliciesAction::List) {
        PoliciesAction::List => {
            let mut out = std::io::stdout().lock();
            let width = builtin::POLICIES
                .iter()
                .chain(builtin::PROFILES)
                .map(|b| b.name().len())
                .max()
                .unwrap_or(0);
            let mut section = |title: &str, set: &[Builtin]| -> std::io::Result<()> {
                writeln!(out, "{title}")?;
                for b in set {
                    writeln!(out, "  {:width$}  {}", b.name(), b.summary())?;
                }
                writeln!(out)
            };
            section(
                "Built-in policies (`preflight check NAME`):",
                builtin::POLICIES,
            )?;
            section(
                "Built-in service profiles (`preflight check --config NAME`, `preflight serve --config NAME`):",
                builtin::PROFILES,
            )?;
            writeln!(
                out,
                "A file on disk of the same name or path wins. `preflight policies show NAME` prints one."
            )?;
            Ok(exit::GO)
        }
        PoliciesAction::Show { name } => {
            let arg = std::path::Path::new(&name);
            match builtin::policy(arg).or_else(|| builtin::profile(arg)) {
                Some(b) => {
                    print!("{}", b.text);
                    Ok(exit::GO)
                }
                None => Err(Error::Usage(format!(
                    "no built-in policy or profile `{name}`; `preflight policies` lists them"
                ))),
            }
        }
    }
}

fn init(args: InitArgs) -> Result<u8, Error> {
    let to_stdout = args.output.as_os_str() == "-";
    if !to_stdout && args.output.exists() && !args.force {
        return Err(Error::Usage(format!(
            "{} exists; pass --force to replace it, or -o FILE",
            args.output.display()
        )));
    }
    let found = match &args.target {
        Some(url) => {
            let runtime = tokio::runtime::Runtime::new()?;
            let limits = args
                .probe_limits
                .as_deref()
                .map(|p| (!p.is_empty()).then_some(p));
            match runtime.block_on(preflight::init::probe(url, limits)) {
                Ok(f) => f,
                Err(msg) => {
                    eprintln!("error: {msg}");
                    return Ok(exit::USAGE);
                }
            }
        }
        None => preflight::init::Found::default(),
    };
    let today = chrono::Local::now().format("%Y-%m-%d").to_string();
    let text = preflight::init::render(args.target.as_deref(), &found, &today);
    if to_stdout {
        print!("{text}");
        return Ok(exit::GO);
    }
    std::fs::write(&args.output, &text).map_err(|source| Error::WriteReport {
        path: args.output.clone(),
        source,
    })?;
    let checks = text.lines().filter(|l| l.starts_with("  - id: ")).count();
    let out = args.output.display();
    eprintln!(
        "wrote {out} ({checks} check(s), each marked `review:`); next: `preflight lint {out}`, then `preflight check {out}`"
    );
    Ok(exit::GO)
}

fn completions(shell: clap_complete::Shell) -> Result<u8, Error> {
    use clap::CommandFactory as _;
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "preflight", &mut std::io::stdout().lock());
    Ok(exit::GO)
}

/// preflight's manual page on stdout, or every page (`preflight.1`, `preflight-check.1`, …)
/// written into a directory.
fn manpage(dir: Option<PathBuf>) -> Result<u8, Error> {
    use clap::CommandFactory as _;
    let cmd = Cli::command();
    match dir {
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout().lock())?,
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            clap_mangen::generate_to(cmd, &dir)?;
        }
    }
    Ok(exit::GO)
}

fn schema() -> Result<u8, Error> {
    println!(
        "{}",
        serde_json::to_string_pretty(&preflight::policy::schema::schema())?
    );
    Ok(exit::GO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<std::ffi::OsString> {
        v.iter().map(Into::into).collect()
    }

    fn status(cli: Cli) -> (PathBuf, String) {
        match cli.command {
            Command::Status(s) => (s.data_dir, s.format),
            other => panic!("not status: {other:?}"),
        }
    }

    /// The small parser reads `status` exactly as the full one does, defaults included.
    #[test]
    fn the_status_fast_path_parses_as_the_full_command_line() {
        for v in [
            &["preflight", "status"][..],
            &["preflight", "status", "--format", "json"],
            &[
                "preflight",
                "status",
                "--data-dir",
                "/var/lib/core",
                "--format=tmux",
            ],
        ] {
            let full = Cli::try_parse_from(args(v)).expect("the full parser takes it");
            assert!(StatusOnly::try_parse_from(args(v)).is_ok(), "{v:?}");
            assert_eq!(status(parse_from(args(v))), status(full), "{v:?}");
        }
    }

    /// Help, version and errors are the full parser's: the small one refuses them.
    #[test]
    fn the_status_fast_path_leaves_help_and_errors_to_the_full_parser() {
        for v in [
            &["preflight", "status", "--help"][..],
            &["preflight", "status", "--version"],
            &["preflight", "status", "--bogus"],
        ] {
            assert!(StatusOnly::try_parse_from(args(v)).is_err(), "{v:?}");
        }
        assert!(matches!(
            parse_from(args(&["preflight", "lint", "status"])).command,
            Command::Lint(_)
        ));
    }
}
