//! `preflight canary --listen`: the live canary's command line (the run itself is
//! `preflight::canary::live`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use preflight::canary::proxy::Sticky;
use preflight::policy::canary::CanarySpec;
use preflight::report::PolicyInfo;

use super::{Error, ExtraReport, FormatArg, exit};

/// The live canary's flags (with `--listen`).
#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Live canary: proxy real traffic on ADDR to --baseline and --canary, the canary's share
    /// growing by --steps, each interval judged as it flows; promote or roll back.
    #[arg(long, value_name = "ADDR", requires_all = ["baseline", "canary"], help_heading = "Live canary")]
    pub listen: Option<SocketAddr>,
    /// Serve the proxy's own `/metrics` on ADDR (requests and upstream failures per side,
    /// weight, step, last score, canary down).
    #[arg(
        long,
        value_name = "ADDR",
        requires = "listen",
        help_heading = "Live canary"
    )]
    pub metrics_listen: Option<SocketAddr>,
    /// The canary's first share of clients, e.g. `5%` (default: the first of --steps, or 5%).
    #[arg(
        long,
        value_name = "PERCENT",
        requires = "listen",
        help_heading = "Live canary"
    )]
    pub weight: Option<preflight::units::Percent>,
    /// The shares of the steps, in percent, increasing: e.g. `5,25,50,100`.
    #[arg(
        long,
        value_name = "P,P,…",
        value_delimiter = ',',
        requires = "listen",
        help_heading = "Live canary"
    )]
    pub steps: Vec<f64>,
    /// GO intervals each step needs (default: --duration / (steps × --interval), at least 1).
    #[arg(
        long,
        value_name = "N",
        requires = "listen",
        help_heading = "Live canary"
    )]
    pub step_intervals: Option<u32>,
    /// INCONCLUSIVE intervals (too little traffic) a step may add before the run ends
    /// INCONCLUSIVE (exit 3, never a promotion).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 3,
        requires = "listen",
        help_heading = "Live canary"
    )]
    pub max_inconclusive: u32,
    /// Run once after the last step passed (`sh -c`; PREFLIGHT_VERDICT, PREFLIGHT_REASON,
    /// PREFLIGHT_WEIGHT in its environment).
    #[arg(
        long,
        value_name = "CMD",
        requires = "listen",
        help_heading = "Live canary"
    )]
    pub on_promote: Option<String>,
    /// Run once when the canary is rolled back.
    #[arg(
        long,
        value_name = "CMD",
        requires = "listen",
        help_heading = "Live canary"
    )]
    pub on_rollback: Option<String>,
    /// Keep proxying at the final weight this long after the decision (100% promoted, 0%
    /// otherwise), so the hooks can switch the real routing first.
    #[arg(
        long,
        value_name = "DURATION",
        requires = "listen",
        help_heading = "Live canary"
    )]
    pub linger: Option<preflight::units::Dur>,
    /// What keeps a client on its side: `address` (default), `header:NAME` or `cookie:NAME`.
    #[arg(
        long,
        value_name = "KEY",
        default_value = "address",
        requires = "listen",
        help_heading = "Live canary"
    )]
    pub sticky: Sticky,
    /// Append the run (every interval and decision, the verdict) to this evidence trail
    /// (`preflight audit verify` proves it; docs/audit.md).
    #[arg(
        long,
        value_name = "FILE",
        requires = "listen",
        help_heading = "Live canary"
    )]
    pub trail: Option<PathBuf>,
    /// Sign the run's record in the trail with this private key (`audit keygen`).
    #[arg(
        long,
        value_name = "KEY",
        requires = "trail",
        help_heading = "Live canary"
    )]
    pub sign: Option<PathBuf>,
    /// Who ran it, in the trail (default: $USER).
    #[arg(
        long,
        value_name = "NAME",
        requires = "trail",
        help_heading = "Live canary"
    )]
    pub operator: Option<String>,
    /// Add `Preflight-Canary-Side: baseline|canary` to every answer (for tests and debugging).
    #[arg(long, requires = "listen", help_heading = "Live canary")]
    pub tag_responses: bool,
}

/// The steps: `--steps`, with `--weight` first when it is below them; `[--weight]` alone; 5 %.
fn steps(args: &LiveArgs) -> Result<Vec<f64>, String> {
    let weight = args.weight.map(|w| w.0 * 100.0);
    let mut steps = args.steps.clone();
    match (weight, steps.first()) {
        (Some(w), Some(first)) if w < *first => steps.insert(0, w),
        (Some(w), None) => steps.push(w),
        (None, None) => steps.push(5.0),
        _ => {}
    }
    if steps.iter().any(|s| !(*s > 0.0 && *s <= 100.0)) {
        return Err(format!(
            "--steps {steps:?}: every share must be above 0 and at most 100"
        ));
    }
    if steps.windows(2).any(|w| w[1] <= w[0]) {
        return Err(format!("--steps {steps:?}: the shares must increase"));
    }
    Ok(steps)
}

pub struct Run {
    pub args: LiveArgs,
    pub spec: CanarySpec,
    pub policy: PolicyInfo,
    /// The policy file the spec came from (its SHA-256 goes into the trail).
    pub policy_file: PathBuf,
    pub baseline: String,
    pub canary: String,
    pub duration: Option<preflight::units::Dur>,
    pub format: FormatArg,
    pub output: Option<PathBuf>,
    pub reports: Vec<ExtraReport>,
    pub quiet: bool,
}

pub fn run(r: Run) -> Result<u8, Error> {
    let steps = match steps(&r.args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::USAGE);
        }
    };
    let interval = r.spec.traffic.interval.get();
    if interval.is_zero() {
        eprintln!("error: --interval must be above 0");
        return Ok(exit::USAGE);
    }
    let step_intervals = r.args.step_intervals.unwrap_or_else(|| {
        r.duration.map_or(1, |d| {
            (d.get().as_secs_f64() / (steps.len() as f64 * interval.as_secs_f64()))
                .floor()
                .max(1.0) as u32
        })
    });
    let signer = match r
        .args
        .sign
        .as_deref()
        .map(preflight::audit::sign::Signer::read)
        .transpose()
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::USAGE);
        }
    };
    let trail = r.args.trail.clone();
    let operator = r
        .args
        .operator
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    let policy_file = r.policy_file.clone();
    let quiet = r.quiet;
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(async {
        let shutdown = super::terminated();
        let opts = preflight::canary::live::Options {
            spec: r.spec,
            policy: r.policy,
            listen: r.args.listen.expect("--listen"),
            metrics_listen: r.args.metrics_listen,
            baseline: r.baseline,
            canary: r.canary,
            steps,
            interval,
            step_intervals,
            max_inconclusive: r.args.max_inconclusive,
            on_promote: r.args.on_promote,
            on_rollback: r.args.on_rollback,
            linger: r.args.linger.map_or(Duration::ZERO, |d| d.get()),
            sticky: r.args.sticky,
            tag: r.args.tag_responses,
            on_listening: Box::new(|addr| eprintln!("canary: proxy listening on http://{addr}")),
            progress: std::sync::Arc::new(move |m: &str| {
                if !quiet {
                    eprintln!("canary: {m}");
                }
            }),
            shutdown,
        };
        preflight::canary::live::run(opts).await
    });
    drop(runtime);
    match report {
        Ok(report) => {
            if let Some(path) = &trail {
                match preflight::audit::record(
                    path,
                    &report,
                    &policy_file,
                    &operator,
                    signer.as_ref(),
                ) {
                    Ok(t) => eprintln!(
                        "canary: decisions in the trail {} (records {}–{}, head {})",
                        t.file, t.first_seq, t.last_seq, t.head
                    ),
                    // The decision is made and acted on: the report still goes out.
                    Err(e) => eprintln!("error: the run could not be written to the trail: {e}"),
                }
            }
            super::write_report(r.format.into(), &report, r.output.as_deref(), &r.reports)
        }
        Err(preflight::engine::run::CheckFailure::Usage(msg)) => {
            eprintln!("error: {msg}");
            Ok(exit::USAGE)
        }
    }
}
