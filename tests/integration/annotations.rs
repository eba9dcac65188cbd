//! Where people already work: GitHub workflow commands, GitLab Code Quality and SARIF, for
//! `lint` diagnostics and `check` reports; `--report FORMAT:FILE` and the job summary.

use std::path::Path;
use std::process::Command;

use preflight::report::{self, Format, RenderOpts};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const ANNOTATED: &str = "tests/fixtures/policies/ci/annotated.yaml";

fn lint(format: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_preflight"))
        .current_dir(root())
        .env_remove("PREFLIGHT_TEST_NEVER_SET")
        .args(["lint", "--format", format, ANNOTATED])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
    )
}

fn render(format: Format) -> String {
    let mut buf = Vec::new();
    let fixed = crate::check::fixed_report();
    report::write(format, &fixed, &mut buf, &RenderOpts { color: false }).unwrap();
    String::from_utf8(buf).unwrap()
}

/// The workflow-command grammar: `::LEVEL[ k=v(,k=v)*]::MESSAGE` on one line, where a value
/// holds no raw `,` `:` or line end and the message no raw line end.
fn assert_workflow_commands(text: &str) {
    let re = regex::Regex::new(
        r"^::(error|warning|notice)( (file|line|col|endLine|endColumn|title)=[^,:\r\n]*(,(file|line|col|endLine|endColumn|title)=[^,:\r\n]*)*)?::[^\r\n]*$",
    )
    .unwrap();
    assert!(!text.is_empty());
    for line in text.lines() {
        assert!(re.is_match(line), "not a workflow command: {line}");
    }
}

#[test]
fn lint_as_github_annotations() {
    let (code, text) = lint("github");
    assert_eq!(code, 2, "errors still fail the step");
    assert_workflow_commands(&text);
    insta::assert_snapshot!("lint_github", text);
}

#[test]
fn lint_as_codequality() {
    let (code, text) = lint("codequality");
    assert_eq!(code, 2);
    let issues: serde_json::Value = serde_json::from_str(&text).unwrap();
    for i in issues.as_array().unwrap() {
        for field in ["description", "check_name", "fingerprint", "severity"] {
            assert!(i[field].is_string(), "{field} in {i:#}");
        }
        assert_eq!(i["location"]["path"], ANNOTATED);
        assert!(i["location"]["lines"]["begin"].as_u64().unwrap() >= 1);
    }
    insta::assert_snapshot!("lint_codequality", text);
}

#[test]
fn lint_as_sarif_validates_against_the_official_schema() {
    let (code, text) = lint("sarif");
    assert_eq!(code, 2);
    let log: serde_json::Value = serde_json::from_str(&text).unwrap();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/sarif-schema-2.1.0.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the SARIF schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&log)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // The validator does reject a log that breaks the schema.
    let mut broken = log.clone();
    broken["runs"][0]["results"][0]["level"] = "fatal".into();
    assert!(!validator.is_valid(&broken));
    // Every result names a rule that exists, and the rules are the documented codes.
    let run = &log["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    let documented = std::fs::read_to_string(root().join("docs/diagnostics.md")).unwrap();
    assert_eq!(rules.len(), documented.matches("\n### `").count());
    for r in run["results"].as_array().unwrap() {
        let i = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[i]["id"], r["ruleId"]);
    }
    insta::assert_snapshot!("lint_sarif_results", format!("{:#}", run["results"]));
}

#[test]
fn check_report_as_github_annotations() {
    let text = render(Format::Github);
    assert_workflow_commands(&text);
    // The failing check points at its line; the built-in policy's check names no file.
    assert!(text.contains(
        "::error file=policies/production-hardening.yaml,line=88,col=9,title=preflight detectors-built-once FAIL · critical · blocking::"
    ), "{text}");
    assert!(
        text.contains("::error title=preflight correlations ERROR · high · blocking::"),
        "{text}"
    );
    // The verdict is the last line.
    assert!(
        text.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("::error title=preflight NO-GO")
    );
    insta::assert_snapshot!("check_github", text);
}

#[test]
fn check_report_as_codequality() {
    let text = render(Format::Codequality);
    let issues: serde_json::Value = serde_json::from_str(&text).unwrap();
    let issues = issues.as_array().unwrap();
    // every result but the PASS
    assert_eq!(issues.len(), 5);
    let fail = issues
        .iter()
        .find(|i| {
            i["description"]
                .as_str()
                .unwrap()
                .starts_with("detectors-built-once")
        })
        .unwrap();
    assert_eq!(fail["severity"], "blocker");
    assert_eq!(fail["location"]["lines"]["begin"], 88);
    insta::assert_snapshot!("check_codequality", text);
}

/// One run writes the annotations, a JUnit file and the job summary.
#[test]
fn one_check_run_feeds_every_ci_surface() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.md");
    std::fs::write(&summary, "earlier step\n").unwrap();
    let junit = dir.path().join("report.xml");
    // A closed port: the check ERRORs at once, NO-GO.
    let closed = crate::check::closed_port();
    let port = closed.port;
    let out = Command::new(env!("CARGO_BIN_EXE_preflight"))
        .current_dir(root())
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env_remove("PREFLIGHT_ADMIN_TOKEN")
        .args([
            "check",
            "tests/fixtures/policies/engine/remote-http.yaml",
            "--no-progress",
        ])
        .args(["--target", &format!("http://127.0.0.1:{port}")])
        .args(["--format", "github", "--report"])
        .arg(format!("junit:{}", junit.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_workflow_commands(&text);
    assert!(
        text.contains("::error file=tests/fixtures/policies/engine/remote-http.yaml,line="),
        "{text}"
    );
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.starts_with("earlier step\n"), "appended, not replaced");
    assert!(md.contains("NO-GO"), "{md}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    roxmltree::Document::parse(&xml).expect("the JUnit report parses");
}

#[test]
fn a_bad_report_argument_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args(["check", "--report", "yaml:x.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown format `yaml`"), "{err}");
}
