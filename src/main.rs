//! The `preflight` binary: parses arguments, hands over to [`preflight::cli`], and prints a
//! command's error with its causes (`error: what: why`) — anyhow lives only here.

use std::process::ExitCode;

use clap::Parser as _;

#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    let cli = preflight::cli::Cli::parse();
    match preflight::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            ExitCode::from(preflight::cli::exit::USAGE)
        }
    }
}
