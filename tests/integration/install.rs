//! An installed preflight: the binary copied alone into an empty root, run from an empty
//! directory, has its default policy and service profiles built in; a file on disk of the
//! same name wins; repository paths resolve against the policy file that declares them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::by_id;

/// `ROOT/bin/preflight`, a copy of the test build's binary, and nothing else.
fn install(root: &Path) -> PathBuf {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let exe = bin.join("preflight");
    std::fs::copy(env!("CARGO_BIN_EXE_preflight"), &exe).unwrap();
    exe
}

fn run(exe: &Path, cwd: &Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(exe)
        .current_dir(cwd)
        .env_remove("PREFLIGHT_ADMIN_TOKEN")
        .args(args)
        .args(["--format", "json", "--no-progress"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not a JSON report ({e}); stderr: {stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// Only what `dir` holds, so a test can show a run wrote nothing where it ran.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn the_installed_binary_checks_from_an_empty_directory() {
    let _timing = crate::support::timing();
    let root = tempfile::tempdir().unwrap();
    let exe = install(root.path());
    let empty = tempfile::tempdir().unwrap();

    let (code, report, stderr) = run(&exe, empty.path(), &["check"]);
    assert_eq!(code, 0, "{report:#} {stderr}");
    assert_eq!(report["verdict"], "GO");
    assert_eq!(
        report["policy"]["files"],
        serde_json::json!(["builtin:policies/production-hardening.yaml"])
    );
    assert_eq!(report["target"]["config"], "builtin:config/core.yaml");
    // The repository's files are not here: SKIP naming the path, never blocking.
    for (id, path) in [
        ("operator-runbook", "runbooks/operator-cheatsheet.md"),
        ("tmux-config", "config/.tmux.conf"),
        ("dashboard", "docs/dashboard.json"),
    ] {
        let r = by_id(&report, id);
        assert_eq!(r["status"], "SKIP", "{r:#}");
        assert_eq!(r["out_of_scope"], true, "{r:#}");
        assert_eq!(r["blocking"], false, "{r:#}");
        assert!(r["summary"].as_str().unwrap().starts_with(path), "{r:#}");
    }
    let others = report["results"].as_array().unwrap().iter();
    for r in others.filter(|r| r["out_of_scope"] != true) {
        assert_eq!(r["status"], "PASS", "{r:#}");
    }
    assert!(
        report["verdict_reason"]
            .as_str()
            .unwrap()
            .contains("out of scope here: operator-runbook"),
        "{report:#}"
    );
    assert_eq!(
        entries(empty.path()),
        Vec::<String>::new(),
        "the run wrote into its directory"
    );

    // A built-in profile by name: NO-GO on the defects it carries.
    let (code, report, stderr) = run(
        &exe,
        empty.path(),
        &[
            "check",
            "--config",
            "before-hardening",
            "--only",
            "ready,per-ip-rate-limit,query-timeout,detectors-built-once",
        ],
    );
    assert_eq!(code, 1, "{report:#} {stderr}");
    assert_eq!(
        report["target"]["config"],
        "builtin:config/before-hardening.yaml"
    );
    for id in ["per-ip-rate-limit", "query-timeout", "detectors-built-once"] {
        assert_eq!(by_id(&report, id)["status"], "FAIL", "{id}");
    }
}

#[test]
fn a_file_on_disk_wins_and_paths_follow_the_policy_file() {
    let root = tempfile::tempdir().unwrap();
    let exe = install(root.path());
    let project = tempfile::tempdir().unwrap();
    let policies = project.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(project.path().join("RUNBOOK.md"), "## Rollback\n").unwrap();
    // Same name as the built-in `smoke`; only a file check, so no target is needed.
    std::fs::write(
        policies.join("smoke.yaml"),
        "version: 1\nname: local smoke\ngate: {block_on: [high]}\nchecks:\n  - id: runbook\n    kind: file\n    severity: high\n    path: ../RUNBOOK.md\n    contains: [\"## Rollback\"]\n",
    )
    .unwrap();
    // Run from elsewhere: the relative path still follows the policy file.
    let elsewhere = tempfile::tempdir().unwrap();
    let policy = policies.join("smoke.yaml");
    let args = [
        "check",
        policy.to_str().unwrap(),
        "--target",
        "http://127.0.0.1:9",
    ];
    let (code, report, stderr) = run(&exe, elsewhere.path(), &args);
    assert_eq!(code, 0, "{report:#} {stderr}");
    assert_eq!(report["policy"]["name"], "local smoke");
    let r = by_id(&report, "runbook");
    assert_eq!(r["status"], "PASS", "{r:#}");
    // From the project root, `policies/smoke.yaml` is the file on disk, not the built-in.
    let args = [
        "check",
        "policies/smoke.yaml",
        "--target",
        "http://127.0.0.1:9",
    ];
    let (_, report, _) = run(&exe, project.path(), &args);
    assert_eq!(
        report["policy"]["files"],
        serde_json::json!(["policies/smoke.yaml"])
    );
    assert_eq!(by_id(&report, "runbook")["status"], "PASS");
    // Remove the runbook: the disk policy FAILs (a SKIP is only for built-in policies).
    std::fs::remove_file(project.path().join("RUNBOOK.md")).unwrap();
    let (code, report, _) = run(&exe, project.path(), &args);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(by_id(&report, "runbook")["status"], "FAIL");
}

#[test]
fn policies_lists_and_shows_the_builtins() {
    let root = tempfile::tempdir().unwrap();
    let exe = install(root.path());
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(&exe)
        .current_dir(empty.path())
        .arg("policies")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "production-hardening",
        "smoke",
        "before-hardening",
        "regressions/leak-64b",
    ] {
        assert!(
            text.contains(&format!("  {name} ")),
            "{name} missing:\n{text}"
        );
    }
    let show = |name: &str| {
        Command::new(&exe)
            .current_dir(empty.path())
            .args(["policies", "show", name])
            .output()
            .unwrap()
    };
    let out = show("before-hardening");
    assert!(out.status.success());
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(repo.join("config/before-hardening.yaml")).unwrap()
    );
    let out = show("nope");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`preflight policies` lists them"));
}

/// The inputs and `env` of the action's `check` step, as the runner substitutes them.
struct ActionStep {
    run: String,
    env: Vec<(String, String)>,
}

/// Reads `action.yml`: the `check` step's script and environment with `${{ inputs.NAME }}`
/// replaced by `inputs` (or the input's default), and the install step's script.
fn action_steps(inputs: &[(&str, &str)]) -> (String, ActionStep) {
    use yaml_rust2::{Yaml, YamlLoader};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("action.yml")).unwrap();
    let doc = &YamlLoader::load_from_str(&text).unwrap()[0];
    let input = |name: &str| -> String {
        inputs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| {
                doc["inputs"][name]["default"]
                    .as_str()
                    .unwrap_or_else(|| panic!("action.yml has no input `{name}`"))
                    .to_string()
            })
    };
    let substitute = |v: &str| -> String {
        let re = regex::Regex::new(r"\$\{\{\s*inputs\.([a-z-]+)\s*\}\}").unwrap();
        re.replace_all(v, |c: &regex::Captures| input(&c[1]))
            .into_owned()
    };
    let steps = doc["runs"]["steps"].as_vec().unwrap();
    assert_eq!(doc["runs"]["using"].as_str(), Some("composite"));
    let install = steps[0]["run"].as_str().unwrap().to_string();
    let check = steps
        .iter()
        .find(|s| s["id"].as_str() == Some("check"))
        .expect("a step with id `check`");
    let env = match &check["env"] {
        Yaml::Hash(h) => h
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().unwrap().to_string(),
                    substitute(v.as_str().unwrap_or("")),
                )
            })
            .collect(),
        _ => vec![],
    };
    (
        install,
        ActionStep {
            run: check["run"].as_str().unwrap().to_string(),
            env,
        },
    )
}

/// Runs the `check` step in bash as a runner would: `RUNNER_TEMP` holding the installed
/// binary, `GITHUB_OUTPUT` and `GITHUB_STEP_SUMMARY` files, the workspace as working
/// directory. Returns (exit code, stdout, the step's outputs, the job summary).
fn run_check_step(
    step: &ActionStep,
    runner_temp: &Path,
    workspace: &Path,
) -> (i32, String, String, String) {
    let output = runner_temp.join("github_output");
    let summary = runner_temp.join("step_summary");
    let out = Command::new("bash")
        .args(["-e", "-c", &step.run])
        .current_dir(workspace)
        .envs(step.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUNNER_TEMP", runner_temp)
        .env("GITHUB_OUTPUT", &output)
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("GITHUB_ACTION_PATH", env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        std::fs::read_to_string(&output).unwrap_or_default(),
        std::fs::read_to_string(&summary).unwrap_or_default(),
    )
}

/// The GitHub Action as far as this machine can run it: `action.yml`'s `check` step, in bash,
/// with the runner's environment and its inputs substituted, against the binary where its
/// install step puts it (`cargo install --root "$RUNNER_TEMP/preflight"`; the install itself
/// is the same binary copied, as in the tests above). GO against a target given as input;
/// NO-GO with annotations, the job summary and the uploaded report when a profile carries
/// defects.
#[test]
fn the_github_action_check_step_runs_as_a_runner_would() {
    let _timing = crate::support::timing();
    let runner_temp = tempfile::tempdir().unwrap();
    install(&runner_temp.path().join("preflight"));
    let workspace = tempfile::tempdir().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let svc = crate::support::Service::start(&crate::support::config("core.yaml"), dir.path());
    let (install_script, step) = action_steps(&[
        ("policy", "smoke"),
        ("target", &svc.url),
        ("report-format", "junit"),
    ]);
    assert!(
        install_script.contains("cargo install --locked --path \"$GITHUB_ACTION_PATH\" --root \"$RUNNER_TEMP/preflight\""),
        "the install step installs where the check step looks: {install_script}"
    );
    let (code, stdout, outputs, summary) =
        run_check_step(&step, runner_temp.path(), workspace.path());
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(outputs.trim(), "exit-code=0");
    assert!(summary.contains("**GO**"), "{summary}");
    let junit = std::fs::read_to_string(workspace.path().join("preflight-report.junit")).unwrap();
    assert!(
        junit.starts_with("<?xml") && junit.contains("<testsuite"),
        "{junit}"
    );

    // No target: the bundled service with a built-in profile carrying defects. NO-GO, each
    // failing check an `::error` workflow command at its line in the built-in policy.
    let (_, step) = action_steps(&[
        (
            "args",
            "--config before-hardening --only ready,per-ip-rate-limit,query-timeout",
        ),
        ("report-format", "json"),
    ]);
    let (code, stdout, outputs, summary) =
        run_check_step(&step, runner_temp.path(), workspace.path());
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(outputs.trim().lines().last(), Some("exit-code=1"));
    assert!(summary.contains("NO-GO"), "{summary}");
    // One `::error` per failing check and one for the verdict. A built-in policy has no
    // file in the workspace to point at, so the commands carry a title and no `file=`.
    let errors: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("::error "))
        .collect();
    assert_eq!(errors.len(), 3, "{stdout}");
    let command =
        regex::Regex::new(r"^::error (file=[^,:]+,line=\d+(,col=\d+)?,)?title=[^,:]+::.+$")
            .unwrap();
    for e in &errors {
        assert!(command.is_match(e), "not a workflow command: {e}");
    }
    for id in ["per-ip-rate-limit", "query-timeout", "NO-GO"] {
        assert!(
            errors
                .iter()
                .any(|e| e.contains(&format!("title=preflight {id} "))),
            "{id}: {stdout}"
        );
    }
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace.path().join("preflight-report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["verdict"], "NO-GO");
}

/// build.rs links the executable at a fixed address on Linux, so the loader has nothing to
/// relocate when `preflight status` starts (docs/benchmarks.md, issue 13): the ELF type is
/// `ET_EXEC` (2), not the position-independent `ET_DYN` (3) — unless the build asked for
/// one with `PREFLIGHT_PIE`.
#[test]
#[cfg(target_os = "linux")]
fn the_executable_is_linked_at_a_fixed_address() {
    use std::io::Read as _;
    let mut head = [0u8; 18];
    std::fs::File::open(env!("CARGO_BIN_EXE_preflight"))
        .and_then(|mut f| f.read_exact(&mut head))
        .unwrap();
    assert_eq!(&head[..4], b"\x7fELF");
    let e_type = u16::from_le_bytes([head[16], head[17]]);
    let pie_asked = option_env!("PREFLIGHT_PIE").is_some_and(|v| !v.is_empty() && v != "0");
    assert_eq!(e_type, if pie_asked { 3 } else { 2 }, "ELF e_type");
}
