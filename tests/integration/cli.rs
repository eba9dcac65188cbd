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
        &["status"][..],
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
