//! `preflight watch`: its command line (the loop itself is `preflight::watch`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use preflight::probe::discovery::{Instance, Source};

use super::{DEFAULT_POLICY, Error, exit};

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Policy files (merged in order) or built-in names; default as `check`:
    /// policies/production-hardening.yaml (the built-in copy outside a checkout).
    #[arg(value_name = "POLICY")]
    pub policies: Vec<PathBuf>,
    /// Base URL of the running service to watch (never spawned).
    #[arg(long, value_name = "URL", conflicts_with = "targets")]
    pub target: Option<String>,
    /// The instances to watch: a Prometheus `file_sd` file (JSON or YAML), or
    /// `prometheus:URL?match={job="core"}` (that server's active targets). Listed again
    /// every --refresh.
    #[arg(long, value_name = "SOURCE")]
    pub targets: Option<String>,
    /// How often --targets is listed again: an instance that appears is watched from then
    /// on; one that is gone is not (its runs under way finish, its series leave /metrics); a
    /// listing that fails keeps the instances of the last one. `0s`: listed once, at start.
    #[arg(long, value_name = "DURATION", default_value = "1m")]
    pub refresh: preflight::units::Dur,
    /// How often the read-only checks run (a check's own `schedule:` overrides it).
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub every: preflight::units::Dur,
    /// Where `/metrics`, `/` (the last report, HTML) and `/report.json` are served.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
    /// Admin API token of the targets (enables scheduled fault-injection checks).
    #[arg(
        long,
        env = "PREFLIGHT_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Most read-only checks running at once on one instance.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// No progress lines on stderr (one per run); errors and the start and stop lines stay.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The instance of a single `--target` URL, named `host:port` as Prometheus names it.
fn single(url: &str) -> Result<Instance, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("target `{url}` is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("target `{url}` is not an http:// or https:// URL"));
    }
    let host = u
        .host_str()
        .ok_or_else(|| format!("target `{url}` has no host"))?;
    let port = u.port_or_known_default().unwrap_or(80);
    // An IPv6 host comes bracketed (`[::1]`), as in the URL.
    let name = format!("{host}:{port}");
    Ok(Instance {
        name,
        url: url.trim_end_matches('/').to_string(),
        labels: Default::default(),
    })
}

pub fn run(args: WatchArgs) -> Result<u8, Error> {
    let policy_files = if args.policies.is_empty() {
        vec![super::policy_path(std::path::Path::new(DEFAULT_POLICY))]
    } else {
        args.policies
            .iter()
            .map(|p| super::policy_path(p))
            .collect()
    };
    if args.every.get().is_zero() {
        eprintln!("error: --every must be above 0");
        return Ok(exit::USAGE);
    }
    let Some(loaded) = super::load_policies(&policy_files)? else {
        return Ok(exit::USAGE);
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let policy_url = loaded.policy.target.as_ref().and_then(|t| t.url.clone());
    let (instances, source) = match (&args.target, &args.targets, &policy_url) {
        (Some(url), _, _) | (None, None, Some(url)) => (single(url).map(|i| vec![i]), None),
        (None, Some(src), _) => match Source::parse(src) {
            Ok(s) => (runtime.block_on(s.load()), Some(s)),
            Err(e) => (Err(e), None),
        },
        (None, None, None) => (
            Err(
                "watch needs a running service: give --target URL, --targets SOURCE or \
                 `target.url` in the policy (it never spawns the bundled service)"
                    .into(),
            ),
            None,
        ),
    };
    let relist = source
        .filter(|_| !args.refresh.get().is_zero())
        .map(|source| preflight::watch::Relist {
            every: args.refresh.get(),
            source,
        });
    let instances = match instances {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::USAGE);
        }
    };
    if let Some(bad) = instances
        .iter()
        .find(|i| !preflight::target::is_http_url(&i.url))
    {
        eprintln!(
            "error: instance `{}`: `{}` is not an http:// or https:// URL",
            bad.name, bad.url
        );
        return Ok(exit::USAGE);
    }
    let quiet = args.quiet;
    let exe = std::env::current_exe()?;
    eprintln!(
        "watch: {} on {} instance(s), read-only checks every {}{}",
        loaded.policy.name,
        instances.len(),
        args.every,
        match &relist {
            Some(_) => format!(", targets listed again every {}", args.refresh),
            None => String::new(),
        }
    );
    let result = runtime.block_on(async {
        let shutdown = super::terminated();
        preflight::watch::run(preflight::watch::Options {
            policy: loaded.policy,
            policy_files: loaded.files,
            instances,
            admin_token: args.admin_token,
            every: args.every.get(),
            concurrency: args.concurrency.into(),
            listen: args.listen,
            exe,
            secrets: loaded.secrets,
            on_listening: Box::new(|addr| {
                eprintln!("watch: listening on http://{addr} (/metrics, /, /report.json)")
            }),
            progress: std::sync::Arc::new(move |m: &str| {
                if !quiet {
                    eprintln!("watch: {m}");
                }
            }),
            shutdown,
            relist,
        })
        .await
    });
    drop(runtime);
    match result {
        Ok(()) => {
            eprintln!("watch: stopped");
            Ok(exit::GO)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(exit::USAGE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_named_as_prometheus_names_it() {
        assert_eq!(
            single("http://127.0.0.1:8080/").unwrap().name,
            "127.0.0.1:8080"
        );
        assert_eq!(
            single("https://core.internal").unwrap().name,
            "core.internal:443"
        );
        assert_eq!(single("http://[::1]:9/").unwrap().name, "[::1]:9");
        assert!(single("ftp://x").unwrap_err().contains("http"));
        assert!(single("nonsense").is_err());
    }
}
