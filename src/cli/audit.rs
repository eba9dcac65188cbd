//! `preflight audit`: the command line of runbook audits. The library walks the runbook and
//! writes the trail (`preflight::audit`); this module asks the operator, shows the sections
//! as they run, and prints.

use std::collections::HashMap;
use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use clap::{Args, Subcommand};
use preflight::audit::{self, sign, trail};
use preflight::engine::run::{CheckOptions, Progress};
use preflight::outcome::{Answer, Attestation, Attestor, Status};
use preflight::target::ProgressFn;

use super::{Error, exit};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Write a new Ed25519 key pair for `--sign`: the private key (PKCS#8 PEM, mode 0600)
    /// and beside it FILE.pub (the public key, for `audit verify --key`).
    Keygen {
        /// The private key's file (never overwritten).
        #[arg(long, value_name = "FILE", default_value = "preflight-audit.key")]
        out: PathBuf,
    },
    #[command(verbatim_doc_comment)]
    /// Prove the trail unaltered: recompute every record's hash, the chain, and each signed
    /// run's signature; name the first altered, missing, inserted or reordered record.
    ///
    /// Exit codes: 0 intact, 1 tampered, 2 the trail or key cannot be read.
    Verify {
        #[arg(long, value_name = "FILE", default_value = audit::DEFAULT_TRAIL)]
        trail: PathBuf,
        /// The public key the runs must be signed with (`keygen`'s FILE.pub). Without it the
        /// signatures are checked against the key each run names, which proves integrity but
        /// not who signed.
        #[arg(long, value_name = "PUB")]
        key: Option<PathBuf>,
        /// A chain head noted earlier (printed by `audit`, `verify` and `log`): the trail must
        /// still hold it. This is what shows whole runs cut from the end of the trail.
        #[arg(long, value_name = "HASH")]
        head: Option<String>,
        #[arg(long, value_enum, default_value_t = TextOrJson::Human)]
        format: TextOrJson,
    },
    /// List the runs in the trail: id, runbook, operator, verdict, time, steps, signed.
    Log {
        #[arg(long, value_name = "FILE", default_value = audit::DEFAULT_TRAIL)]
        trail: PathBuf,
        #[arg(long, value_enum, default_value_t = TextOrJson::Human)]
        format: TextOrJson,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TextOrJson {
    Human,
    Json,
}

/// `--format` of an audit's evidence report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditFormat {
    Human,
    Json,
    Markdown,
    Html,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The runbook: Markdown whose ```preflight blocks are its steps.
    #[arg(value_name = "RUNBOOK", required = true)]
    pub runbook: Option<PathBuf>,
    /// Base URL of a running target (default: spawn the bundled service).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Admin token of the target (for steps that use the admin API).
    #[arg(
        long,
        env = "PREFLIGHT_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<String>,
    /// Service profile of the spawned target (default config/core.yaml).
    #[arg(long, value_name = "PROFILE", conflicts_with = "target")]
    pub config: Option<PathBuf>,
    /// The evidence trail (SQLite; created when absent).
    #[arg(long, value_name = "FILE", default_value = audit::DEFAULT_TRAIL)]
    pub trail: PathBuf,
    /// Who runs the audit (default: $USER).
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
    /// Answer every `confirm` step yes (for CI). Recorded as `--yes`: nobody looked.
    #[arg(long, conflicts_with = "no_input")]
    pub yes: bool,
    /// Ask nothing: every `confirm` step is INCONCLUSIVE (never PASS).
    #[arg(long)]
    pub no_input: bool,
    /// Sign the run's chain head with this private key (`audit keygen`).
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
    /// The evidence report's format.
    #[arg(long, value_enum, default_value_t = AuditFormat::Human)]
    pub format: AuditFormat,
    /// Write the evidence report to FILE instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(args: AuditArgs) -> Result<u8, Error> {
    match args.command {
        Some(AuditCommand::Keygen { out }) => keygen(&out),
        Some(AuditCommand::Verify {
            trail,
            key,
            head,
            format,
        }) => verify(&trail, key.as_deref(), head.as_deref(), format),
        Some(AuditCommand::Log { trail, format }) => log(&trail, format),
        None => audit_run(args.run),
    }
}

fn keygen(out: &std::path::Path) -> Result<u8, Error> {
    match sign::keygen(out) {
        Ok(f) => {
            println!(
                "wrote {} (private: keep it secret) and {} (public: give it to `audit verify --key`)\nfingerprint {}",
                f.private.display(),
                f.public.display(),
                f.fingerprint
            );
            Ok(exit::GO)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(exit::USAGE)
        }
    }
}

fn open(path: &std::path::Path) -> Result<Vec<trail::Record>, String> {
    trail::Trail::open_existing(path)
        .and_then(|t| t.records())
        .map_err(|e| e.to_string())
}

fn verify(
    path: &std::path::Path,
    key: Option<&std::path::Path>,
    head: Option<&str>,
    format: TextOrJson,
) -> Result<u8, Error> {
    let key = match key.map(sign::PublicKey::read).transpose() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::USAGE);
        }
    };
    let records = match open(path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::USAGE);
        }
    };
    let v = match head {
        Some(h) => trail::verify_with_head(&records, key.as_ref(), h),
        None => trail::verify(&records, key.as_ref()),
    };
    if format == TextOrJson::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        match &v.tampering {
            Some(t) => println!("TAMPERED: {} ({})", t.message, path.display()),
            None => {
                let signed = match (v.signed_runs, v.key_checked) {
                    (0, _) => "none signed".to_string(),
                    (n, true) => format!("{n} signed by {} (the key given)", v.signers.join(", ")),
                    (n, false) => format!(
                        "{n} signed by {} (each by the key it names: give --key to prove whose)",
                        v.signers.join(", ")
                    ),
                };
                println!(
                    "intact: {} records in {} runs, {signed}; head {}",
                    v.records,
                    v.runs,
                    v.head.as_deref().unwrap_or("(empty trail)")
                );
            }
        }
    }
    Ok(if v.tampering.is_some() {
        exit::NO_GO
    } else {
        exit::GO
    })
}

fn log(path: &std::path::Path, format: TextOrJson) -> Result<u8, Error> {
    let records = match open(path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::USAGE);
        }
    };
    let runs = audit::runs(&records);
    if format == TextOrJson::Json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(exit::GO);
    }
    println!(
        "{:<30} {:<24} {:<12} {:<12} {:>5} {:<6} RUNBOOK",
        "RUN", "STARTED", "OPERATOR", "VERDICT", "STEPS", "SIGNED"
    );
    for r in runs {
        println!(
            "{:<30} {:<24} {:<12} {:<12} {:>5} {:<6} {}",
            r.run_id,
            r.started,
            r.operator,
            r.verdict.as_deref().unwrap_or("(none)"),
            r.steps,
            if r.signed { "yes" } else { "no" },
            r.runbook
        );
    }
    if let Some(last) = records.last() {
        println!(
            "head {} (record {}): note it, and `audit verify --head` proves nothing was cut after it",
            last.hash, last.seq
        );
    }
    Ok(exit::GO)
}

/// How `confirm` steps are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ask,
    Yes,
    NoInput,
}

/// Asks on the terminal (stdin, stderr), one question at a time.
struct Prompter {
    mode: Mode,
    operator: String,
}

impl Attestor for Prompter {
    fn ask(
        &self,
        question: &str,
        evidence: Option<&str>,
    ) -> Pin<Box<dyn Future<Output = Attestation> + Send + '_>> {
        let (question, evidence) = (question.to_string(), evidence.map(str::to_string));
        Box::pin(async move {
            let (answer, via, note) = match self.mode {
                Mode::Yes => (Answer::Yes, "--yes", None),
                Mode::NoInput => (Answer::Unanswered, "--no-input", None),
                Mode::Ask => {
                    let asked =
                        tokio::task::spawn_blocking(move || prompt(&question, evidence.as_deref()))
                            .await
                            .unwrap_or((Answer::Unanswered, None));
                    (asked.0, "terminal", asked.1)
                }
            };
            Attestation {
                answer,
                operator: self.operator.clone(),
                via: via.into(),
                note,
                at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }
        })
    }
}

/// One question on stderr, its answer from stdin: y/yes or n/no (asked again otherwise),
/// then the note. End of input is no answer.
fn prompt(question: &str, evidence: Option<&str>) -> (Answer, Option<String>) {
    let stdin = std::io::stdin();
    // Answers piped in are echoed, so the transcript reads as a dialogue.
    let echo = !stdin.is_terminal();
    let mut lines = stdin.lock().lines().inspect(move |l| {
        if echo && let Ok(l) = l {
            eprintln!("{l}");
        }
    });
    let answer = loop {
        eprint!("    ? {question} [y/n] ");
        match lines.next() {
            Some(Ok(l)) => match l.trim().to_lowercase().as_str() {
                "y" | "yes" => break Answer::Yes,
                "n" | "no" => break Answer::No,
                _ => eprintln!("      answer y or n"),
            },
            _ => {
                eprintln!("(no answer)");
                return (Answer::Unanswered, None);
            }
        }
    };
    eprint!("      {}: ", evidence.unwrap_or("note (optional)"));
    let note = lines
        .next()
        .and_then(Result::ok)
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty());
    (answer, note)
}

/// Shows each section's heading when its first step starts, and each result as it ends.
struct Sections {
    by_check: HashMap<String, String>,
    shown: Mutex<Option<String>>,
}

impl Progress for Sections {
    fn message(&self, msg: &str) {
        eprintln!("  {msg}");
    }

    fn started(&self, id: &str) -> ProgressFn {
        let section = self.by_check.get(id).cloned().unwrap_or_default();
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        if shown.as_deref() != Some(section.as_str()) {
            eprintln!(
                "\n## {}",
                if section.is_empty() {
                    "(no section)"
                } else {
                    &section
                }
            );
            *shown = Some(section);
        }
        Arc::new(|_| {})
    }

    fn finished(&self, id: &str, status: Status, summary: &str) {
        eprintln!("  {:<12} {id}: {summary}", status.as_str());
    }
}

fn audit_run(args: RunArgs) -> Result<u8, Error> {
    let runbook = args.runbook.expect("clap requires RUNBOOK");
    let Some(loaded) = super::load_policies(std::slice::from_ref(&runbook))? else {
        return Ok(exit::USAGE);
    };
    let signer = match args.sign.as_deref().map(sign::Signer::read).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::USAGE);
        }
    };
    let text = std::fs::read_to_string(&runbook).unwrap_or_default();
    let by_check: HashMap<String, String> = audit::sections_by_check(&text, &loaded.policy)
        .into_iter()
        .collect();
    let operator = args
        .operator
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "unknown".into());
    let mode = if args.yes {
        Mode::Yes
    } else if args.no_input {
        Mode::NoInput
    } else {
        Mode::Ask
    };
    if mode == Mode::Ask && !std::io::stdin().is_terminal() {
        eprintln!(
            "  (stdin is not a terminal: confirm steps read their answers from it; --yes or --no-input to not ask)"
        );
    }
    let title = runbook.display().to_string();
    eprintln!(
        "auditing {title} as {operator} (trail {})",
        args.trail.display()
    );
    let check = CheckOptions {
        target: args.target,
        admin_token: args.admin_token,
        config: args.config,
        concurrency: 1,
        progress: Arc::new(Sections {
            by_check,
            shown: Mutex::new(None),
        }),
        secrets: loaded.secrets,
        attestor: Some(Arc::new(Prompter {
            mode,
            operator: operator.clone(),
        })),
        identify: true,
        ..CheckOptions::new(loaded.policy, loaded.files, std::env::current_exe()?)
    };
    let opts = audit::Options {
        runbook,
        check,
        trail: args.trail,
        operator,
        signer,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let audit = match runtime.block_on(audit::run(opts)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::USAGE);
        }
    };
    drop(runtime);
    let format = match args.format {
        AuditFormat::Human => preflight::report::Format::Human,
        AuditFormat::Json => preflight::report::Format::Json,
        AuditFormat::Markdown => preflight::report::Format::Markdown,
        AuditFormat::Html => preflight::report::Format::Html,
    };
    let render = preflight::report::RenderOpts { color: false };
    let mut buf = Vec::new();
    audit::render::write(format, &audit, &mut buf, &render)?;
    match &args.output {
        Some(path) => {
            std::fs::write(path, &buf).map_err(|source| Error::WriteReport {
                path: path.clone(),
                source,
            })?;
            eprintln!(
                "{}: {} (evidence report in {}; trail {} records {}–{})",
                audit.verdict().as_str(),
                audit.report.verdict_reason,
                path.display(),
                audit.trail.file,
                audit.trail.first_seq,
                audit.trail.last_seq
            );
        }
        None => {
            use std::io::Write as _;
            std::io::stdout().write_all(&buf)?;
        }
    }
    Ok(super::verdict_exit(audit.verdict()))
}
