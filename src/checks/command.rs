//! `command`: runs a local command (argv, no shell) with a timeout; checks its exit code and
//! output patterns.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checks::{Code, Exclusivity, Kind, KindSpec, Problems};
use crate::outcome::{Capability, CheckError, Observation, Outcome};
use crate::target::Ctx;
use crate::units::Dur;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Program and arguments, run without a shell. `{target}` is replaced by the target's
    /// base URL, `{data_dir}` by its data directory (spawned, or the `sqlite` file's
    /// directory), `{exe}` by preflight's own executable.
    pub argv: Vec<String>,
    /// Expected exit code (default 0).
    #[serde(default)]
    pub exit_code: i32,
    /// Regex stdout must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_matches: Option<String>,
    /// Regex stderr must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_matches: Option<String>,
    /// Kill the command after this long (default 10s).
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Maximum run time to pass (e.g. `5ms` for a status-bar command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_below: Option<Dur>,
}

fn default_timeout() -> Dur {
    Dur::from_secs(10)
}

impl Spec {
    fn check_fields(&self, p: &mut Problems) {
        if self.argv.is_empty() || self.argv[0].is_empty() {
            p.error(
                "/argv",
                EMPTY_ARGV,
                "`argv` needs at least the program",
                "e.g. `argv: [preflight, status, --format, tmux]`",
            );
        }
        for (field, re) in [
            ("/stdout_matches", &self.stdout_matches),
            ("/stderr_matches", &self.stderr_matches),
        ] {
            if let Some(re) = re
                && let Err(e) = regex::Regex::new(re) {
                    p.error(field, crate::checks::codes::BAD_REGEX, format!("invalid regex: {e}"), "");
                }
        }
    }
}

pub async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    let argv = expand(spec, ctx)?;
    let timeout = spec.timeout.get().min(ctx.remaining()?);
    execute(spec, &argv, timeout).await
}

/// Replaces the placeholders in every argument.
fn expand(spec: &Spec, ctx: &Ctx) -> Result<Vec<String>, CheckError> {
    let exe = std::env::current_exe()
        .map_err(|e| CheckError::Local(format!("finding preflight's executable: {e}")))?;
    let mut out = Vec::with_capacity(spec.argv.len());
    for a in &spec.argv {
        let mut a = a.replace("{target}", &ctx.target.url);
        a = a.replace("{exe}", &exe.display().to_string());
        if a.contains("{data_dir}") {
            let dir = ctx.target.data_dir().ok_or_else(|| CheckError::Missing {
                capability: Capability::Sqlite,
                hint: "`{data_dir}` needs a spawned target or `target.sqlite`".into(),
            })?;
            a = a.replace("{data_dir}", &dir.display().to_string());
        }
        out.push(a);
    }
    Ok(out)
}

/// Runs `argv` (no shell) in its own process group; after `timeout` the whole group is
/// killed and the check fails.
pub async fn execute(
    spec: &Spec,
    argv: &[String],
    timeout: std::time::Duration,
) -> Result<Outcome, CheckError> {
    use tokio::io::AsyncReadExt;
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| CheckError::Local("empty argv".into()))?;
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .envs(&spec.env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let started = std::time::Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| CheckError::Local(format!("starting `{prog}`: {e}")))?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let read_out = tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf).await;
        }
        buf
    });
    let read_err = tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf).await;
        }
        buf
    });
    let mut out = Outcome {
        sent: vec![format!("run {}", shell_words(argv))],
        ..Outcome::default()
    };
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(s) => Some(s.map_err(|e| CheckError::Local(format!("waiting for `{prog}`: {e}")))?),
        Err(_) => {
            kill_group(&mut child).await;
            None
        }
    };
    let elapsed = started.elapsed();
    let grab = |h: tokio::task::JoinHandle<Vec<u8>>| async move {
        // Readers end when the group is gone; bound the wait in case a grandchild escaped.
        match tokio::time::timeout(std::time::Duration::from_secs(1), h).await {
            Ok(Ok(b)) => String::from_utf8_lossy(&b).into_owned(),
            _ => String::new(),
        }
    };
    let stdout = grab(read_out).await;
    let stderr = grab(read_err).await;
    let Some(status) = status else {
        out.observe(Observation::new(
            "finished",
            format!("within {}", crate::units::Dur(timeout)),
            format!("killed after {:.1} s", elapsed.as_secs_f64()),
            false,
        ));
        out.summary = format!("`{prog}` ran over its timeout and was killed");
        return Ok(out);
    };
    let code = status.code();
    out.observe(Observation::new(
        "exit code",
        spec.exit_code.to_string(),
        code.map_or_else(
            || format!("killed by a signal ({status})"),
            |c| c.to_string(),
        ),
        code == Some(spec.exit_code),
    ));
    for (name, pattern, text) in [
        ("stdout", &spec.stdout_matches, &stdout),
        ("stderr", &spec.stderr_matches, &stderr),
    ] {
        if let Some(pattern) = pattern {
            let ok = regex::Regex::new(pattern).is_ok_and(|re| re.is_match(text));
            out.observe(Observation::new(
                name,
                format!("matches /{pattern}/"),
                snippet(text),
                ok,
            ));
        }
    }
    if let Some(limit) = spec.duration_below {
        out.observe(Observation::new(
            "duration",
            format!("< {limit}"),
            format!("{:.1} ms", elapsed.as_secs_f64() * 1e3),
            elapsed < limit.get(),
        ));
    }
    out.summary = format!(
        "`{prog}` exited {} in {:.1} ms",
        code.map_or_else(|| "by a signal".into(), |c| c.to_string()),
        elapsed.as_secs_f64() * 1e3
    );
    out.summarize_unmet();
    out.evidence = serde_json::json!({
        "argv": argv,
        "exit_code": code,
        "duration_ms": elapsed.as_secs_f64() * 1e3,
        "stdout": truncate(&stdout, 4096),
        "stderr": truncate(&stderr, 4096),
    });
    Ok(out)
}

async fn kill_group(child: &mut tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                format!("{a:?}")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn snippet(s: &str) -> String {
    format!("{:?}", truncate(s.trim_end(), 200))
}


const EMPTY_ARGV: Code = Code("command/empty-argv");

impl KindSpec for Spec {
    const KIND: Kind = Kind {
        name: "command",
        namespace: "command",
        exclusivity: Exclusivity::Shared,
        codes: &[EMPTY_ARGV],
    };

    fn validate(&self, p: &mut Problems) {
        self.check_fields(p)
    }

    fn default_timeout(&self) -> Dur {
        Dur(self.timeout.0 + std::time::Duration::from_secs(5))
    }

    fn default_budget(&self) -> u64 {
        1_000
    }

    fn run(&self, ctx: &Ctx) -> impl Future<Output = Result<Outcome, CheckError>> + Send {
        run(self, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Status;
    use std::time::Duration;

    fn spec(v: serde_json::Value) -> Spec {
        serde_json::from_value(v).unwrap()
    }

    #[tokio::test]
    async fn exit_code_and_output() {
        let s = spec(serde_json::json!({
            "argv": ["sh", "-c", "echo hello; echo oops >&2; exit 3"],
            "exit_code": 3, "stdout_matches": "^hello", "stderr_matches": "oops",
            "duration_below": "5s"
        }));
        let o = execute(&s, &s.argv, Duration::from_secs(5)).await.unwrap();
        assert_eq!(o.status(), Status::Pass, "{:#?}", o.observations);
        let s = spec(serde_json::json!({"argv": ["false"]}));
        let o = execute(&s, &s.argv, Duration::from_secs(5)).await.unwrap();
        assert_eq!(o.status(), Status::Fail);
        assert_eq!(o.observations[0].observed, "1");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        // The shell's child `sleep` holds stdout open: killing only the shell would hang.
        let s = spec(serde_json::json!({"argv": ["sh", "-c", "sleep 30; echo late"]}));
        let t = std::time::Instant::now();
        let o = execute(&s, &s.argv, Duration::from_millis(300))
            .await
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(o.status(), Status::Fail);
        assert!(o.observations[0].observed.starts_with("killed after"));
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error() {
        let s = spec(serde_json::json!({"argv": ["/nonexistent/preflight-x"]}));
        let e = execute(&s, &s.argv, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(e.status(), Status::Error);
    }
}
