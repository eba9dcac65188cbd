//! The command line as people meet it: `--help` of every command, snapshotted so a change to
//! what the tool teaches is a reviewed change.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args(args)
        .arg("--help")
        .env("COLUMNS", "100")
        .env_remove("PREFLIGHT_ADMIN_TOKEN")
        .output()
        .expect("run preflight");
    assert!(out.status.success(), "{args:?} --help failed");
    String::from_utf8(out.stdout).expect("utf-8 help")
}

#[test]
fn help_snapshots() {
    for cmd in [
        &[][..],
        &["check"][..],
        &["lint"][..],
        &["schema"][..],
        &["serve"][..],
        &["policies"][..],
        &["status"][..],
        &["audit"][..],
        &["watch"][..],
    ] {
        let name = if cmd.is_empty() { "preflight" } else { cmd[0] };
        insta::assert_snapshot!(format!("help_{name}"), help(cmd));
    }
}

#[test]
fn no_arguments_is_a_usage_error_with_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_preflight"))
        .output()
        .expect("run preflight");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Usage: preflight"), "{err}");
}

#[test]
fn completions_and_manpages_cover_every_subcommand() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_preflight"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("_preflight()"), "{bash}");
    for shell in ["bash", "zsh", "fish"] {
        let text = run(&["completions", shell]);
        for sub in ["check", "canary", "lint", "policies", "completions"] {
            assert!(text.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let fish = run(&["completions", "fish"]);
    assert!(fish.contains("-l format"), "options are completed too");
    let page = run(&["manpage"]);
    assert!(page.contains(".TH preflight 1"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    run(&["manpage", "--out-dir", dir.path().to_str().unwrap()]);
    for page in ["preflight.1", "preflight-check.1", "preflight-policies.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
    }
}
