//! `preflight audit` end to end, through the binary: the operator cheatsheet against the
//! spawned service (good and before-hardening), answers typed at the prompt, the trail that
//! `audit verify` proves and names the first tampered record of, and signatures.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const CHEATSHEET: &str = "runbooks/operator-cheatsheet.md";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn preflight() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_preflight"));
    c.current_dir(root()).env_remove("PREFLIGHT_ADMIN_TOKEN");
    c
}

/// Runs `preflight ARGS` with `stdin` typed in; (exit code, stdout, stderr).
fn run(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = preflight()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running preflight");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// An audit of the cheatsheet with a JSON evidence report.
fn audit(trail: &Path, extra: &[&str], stdin: &str) -> (i32, Value, String) {
    let trail = trail.to_str().unwrap();
    let mut args = vec![
        "audit",
        CHEATSHEET,
        "--trail",
        trail,
        "--format",
        "json",
        "--operator",
        "alice",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run(&args, stdin);
    let json = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("not a JSON evidence report ({e}): {out}\nstderr: {err}"));
    (code, json, err)
}

fn status_of<'a>(report: &'a Value, id: &str) -> &'a str {
    report["report"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no step {id}"))["status"]
        .as_str()
        .unwrap()
}

fn failed(report: &Value) -> Vec<String> {
    let mut v: Vec<String> = report["report"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "FAIL")
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn sha256_hex(bytes: &[u8]) -> String {
    preflight::audit::sign::sha256_hex(bytes)
}

#[test]
fn the_cheatsheet_audit_with_yes_passes_and_the_trail_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("trail.db");
    let (code, a, err) = audit(&trail, &["--yes"], "");
    assert_eq!(code, 0, "GO expected: {a:#}\n{err}");
    assert_eq!(a["report"]["verdict"], "GO");
    assert!(failed(&a).is_empty(), "{:?}", failed(&a));
    // What was audited: the runbook's exact bytes, the target's version and host.
    let text = std::fs::read(root().join(CHEATSHEET)).unwrap();
    assert_eq!(a["runbook"]["sha256"], sha256_hex(&text));
    assert_eq!(a["target"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(a["target"]["host"], "127.0.0.1");
    assert_eq!(a["operator"], "alice");
    // Sections in document order, each step under its heading, shown as they ran.
    let titles: Vec<&str> = a["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            "Emergency procedures",
            "Log analysis",
            "Circuit breaker management",
            "Performance"
        ]
    );
    for t in &titles {
        assert!(
            err.contains(&format!("## {t}")),
            "section {t} not shown: {err}"
        );
    }
    // --yes answers, and says nobody looked.
    assert_eq!(status_of(&a, "no-new-warning-codes"), "PASS");
    assert!(err.contains("--yes: nobody looked"), "{err}");
    // The trail: start, 7 steps, end; intact; listed.
    assert_eq!(
        (
            a["trail"]["first_seq"].as_i64(),
            a["trail"]["last_seq"].as_i64()
        ),
        (Some(1), Some(9))
    );
    let t = trail.to_str().unwrap();
    let (code, out, err) = run(&["audit", "verify", "--trail", t], "");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("intact: 9 records in 1 runs, none signed"),
        "{out}"
    );
    let (code, out, _) = run(&["audit", "log", "--trail", t, "--format", "json"], "");
    assert_eq!(code, 0);
    let runs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(runs[0]["run_id"], a["run_id"]);
    assert_eq!(runs[0]["verdict"], "GO");
    assert_eq!(runs[0]["operator"], "alice");
    assert_eq!(runs[0]["steps"], 7);
    // The head the audit reported is the one to note; the trail must still hold it.
    let head = a["trail"]["head"].as_str().unwrap();
    let (_, out, _) = run(&["audit", "log", "--trail", t], "");
    assert!(out.contains(&format!("head {head} (record 9)")), "{out}");
    let (code, _, _) = run(&["audit", "verify", "--trail", t, "--head", head], "");
    assert_eq!(code, 0);
    let (code, out, _) = run(
        &["audit", "verify", "--trail", t, "--head", &"ab".repeat(32)],
        "",
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not hold the head"), "{out}");
}

#[test]
fn before_hardening_the_steps_that_should_fail_do_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (code, a, err) = audit(
        &dir.path().join("trail.db"),
        &["--yes", "--config", "config/before-hardening.yaml"],
        "",
    );
    assert_eq!(code, 1, "NO-GO expected: {a:#}\n{err}");
    assert_eq!(failed(&a), ["detectors-built-once", "feed-breaker-closed"]);
    assert!(
        err.contains("FAIL         detectors-built-once: detector_instances = "),
        "{err}"
    );
}

#[test]
fn answers_typed_at_the_prompt_are_attested_and_no_input_is_never_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("trail.db");
    // First confirm: a bad answer, then yes with a note; second: no, without a note.
    let (_, a, err) = audit(&trail, &[], "maybe\ny\nhttps://grafana/d/core\nn\n\n");
    assert!(err.contains("answer y or n"), "{err}");
    assert_eq!(status_of(&a, "no-new-warning-codes"), "PASS");
    assert_eq!(status_of(&a, "p99-within-slo"), "FAIL");
    let step = a["report"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "no-new-warning-codes")
        .unwrap();
    let att = &step["evidence"]["attestation"];
    assert_eq!(att["answer"], "yes");
    assert_eq!(att["operator"], "alice");
    assert_eq!(att["via"], "terminal");
    assert_eq!(att["note"], "https://grafana/d/core");
    // The attestation is in the trail, hashed with the rest.
    let conn = rusqlite::Connection::open(&trail).unwrap();
    let evidence: String = conn
        .query_row(
            "SELECT evidence FROM records WHERE check_id = 'no-new-warning-codes'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(evidence.contains("https://grafana/d/core"), "{evidence}");

    // No input: unanswered, INCONCLUSIVE, never PASS; end of input is no answer either.
    for extra in [&["--no-input"][..], &[]] {
        let (_, a, _) = audit(&trail, extra, "");
        assert_eq!(
            status_of(&a, "no-new-warning-codes"),
            "INCONCLUSIVE",
            "{extra:?}"
        );
        assert_eq!(status_of(&a, "p99-within-slo"), "INCONCLUSIVE", "{extra:?}");
    }
    // A plain check has no one to ask: SKIP.
    let (_, out, _) = run(
        &["check", CHEATSHEET, "--format", "json", "--no-progress"],
        "",
    );
    let r: Value = serde_json::from_str(&out).unwrap();
    let confirm = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "p99-within-slo")
        .unwrap();
    assert_eq!(confirm["status"], "SKIP");
    assert!(
        confirm["summary"]
            .as_str()
            .unwrap()
            .contains("preflight audit")
    );
}

#[test]
fn a_signed_trail_verifies_with_its_key_and_names_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("trail.db");
    let t = trail.to_str().unwrap();
    let key: PathBuf = dir.path().join("ops.key");
    let other: PathBuf = dir.path().join("other.key");
    for k in [&key, &other] {
        let (code, out, err) = run(&["audit", "keygen", "--out", k.to_str().unwrap()], "");
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("fingerprint SHA256:"), "{out}");
    }
    let (code, _, _) = run(&["audit", "keygen", "--out", key.to_str().unwrap()], "");
    assert_eq!(code, 2, "an existing key is never overwritten");
    let (code, a, err) = audit(&trail, &["--yes", "--sign", key.to_str().unwrap()], "");
    assert_eq!(code, 0, "{err}");
    let fingerprint = a["trail"]["signed_by"].as_str().unwrap().to_string();
    let pubkey = format!("{}.pub", key.display());
    let otherpub = format!("{}.pub", other.display());

    let (code, out, _) = run(&["audit", "verify", "--trail", t, "--key", &pubkey], "");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("1 signed by {fingerprint} (the key given)")),
        "{out}"
    );

    let (code, out, _) = run(&["audit", "verify", "--trail", t, "--key", &otherpub], "");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("record 9 (run") && out.contains("signed by another key"),
        "{out}"
    );

    // An edit through SQLite with the triggers out of the way: verify names the record.
    let conn = rusqlite::Connection::open(&trail).unwrap();
    let refused = conn.execute("UPDATE records SET status = 'PASS' WHERE seq = 4", []);
    assert!(refused.unwrap_err().to_string().contains("append-only"));
    conn.execute_batch(
        "DROP TRIGGER records_append_only_update;
         UPDATE records SET evidence = replace(evidence, 'query returned', 'query said') WHERE check_id = 'log-counts-match-log-events';",
    )
    .unwrap();
    let (code, out, _) = run(
        &[
            "audit", "verify", "--trail", t, "--key", &pubkey, "--format", "json",
        ],
        "",
    );
    assert_eq!(code, 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tampering"]["what"], "altered");
    assert_eq!(v["tampering"]["seq"], 3);
    assert!(
        v["tampering"]["message"]
            .as_str()
            .unwrap()
            .contains("step `log-counts-match-log-events` in \"Log analysis\""),
        "{v:#}"
    );
}

#[test]
fn the_evidence_report_in_markdown_and_html_names_what_was_audited() {
    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("trail.db");
    let sha = sha256_hex(&std::fs::read(root().join(CHEATSHEET)).unwrap());
    for (format, heading, section) in [
        (
            "markdown",
            "## Audit of `runbooks/operator-cheatsheet.md`",
            "### Log analysis",
        ),
        (
            "html",
            "<h1>Audit of runbooks/operator-cheatsheet.md</h1>",
            "<h2>Log analysis</h2>",
        ),
    ] {
        let out = dir.path().join(format!("audit.{format}"));
        let (code, _, err) = run(
            &[
                "audit",
                CHEATSHEET,
                "--yes",
                "--operator",
                "bob",
                "--trail",
                trail.to_str().unwrap(),
                "--format",
                format,
                "--output",
                out.to_str().unwrap(),
            ],
            "",
        );
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains("GO: ") && err.contains("evidence report in"),
            "{err}"
        );
        let text = std::fs::read_to_string(&out).unwrap();
        for needle in [
            heading,
            section,
            &sha,
            "bob",
            env!("CARGO_PKG_VERSION"),
            "nobody looked",
        ] {
            assert!(
                text.contains(needle),
                "{format} report lacks {needle:?}:\n{text}"
            );
        }
    }
}
