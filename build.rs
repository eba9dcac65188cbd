//! Link settings for the `preflight` executable on Linux (issue 13, docs/benchmarks.md).
//!
//! - **Not position-independent** (`-no-pie`). A position-independent executable is relocated
//!   by the dynamic loader at every start: about 38 000 relocations here, 38 % of the
//!   instructions of `preflight status --format tmux`, a process a tmux status bar starts every
//!   few seconds. Linked at a fixed address, the linker resolves them once. The crates are
//!   still compiled position-independent; only the final link changes. Shared libraries, heap
//!   and stacks stay randomised; the executable's own image does not, as with Go's default
//!   `buildmode=exe`. `PREFLIGHT_PIE=1` at build time keeps the usual executable; a static
//!   build (`-C target-feature=+crt-static`) is left as rustc links it.
//! - **Identical code folded** (`-Wl,--icf=all`) when the linker is the toolchain's own LLD,
//!   the default for `x86_64-unknown-linux-gnu` since Rust 1.90: generic code instantiated
//!   identically for many types is kept once (3.5 % of the binary). Skipped when the build
//!   names another linker, which may not know the flag.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PREFLIGHT_PIE");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let features = env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let crt_static = features.split(',').any(|f| f == "crt-static");
    let keep_pie = env::var_os("PREFLIGHT_PIE").is_some_and(|v| !v.is_empty() && v != "0");
    if !crt_static && !keep_pie {
        println!("cargo::rustc-link-arg-bins=-no-pie");
    }
    if default_lld() {
        println!("cargo::rustc-link-arg-bins=-Wl,--icf=all");
    }
}

/// Whether the final link uses rustc's bundled LLD: the default linker setup of
/// `x86_64-unknown-linux-gnu` from Rust 1.90, with no linker chosen by configuration.
fn default_lld() -> bool {
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return false;
    }
    if env::var_os("RUSTC_LINKER").is_some() {
        return false;
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags
        .split('\x1f')
        .any(|f| f.contains("linker") || f.contains("link-self-contained") || f.contains("fuse-ld"))
    {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let version = String::from_utf8_lossy(&out.stdout);
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
