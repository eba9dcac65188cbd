//! The `preflight` binary: parses arguments, hands over to [`cli`], and prints a command's
//! error with its causes (`error: what: why`) — anyhow and every print live only here, in
//! the binary; the library returns values and writes only to the writers it is given.

use std::process::ExitCode;

use clap::Parser as _;

mod cli;

/// The system allocator with counters, so the service can export its exact live heap
/// (`heap_live_bytes` on `/metrics`, read by `memory_growth` with `source: {metric: …}`).
/// Two atomic adds per allocation and per free; docs/benchmarks.md has the measured cost.
/// Built without the `heap-stats` feature (default on), the binary uses the plain system
/// allocator and exports no heap series: the baseline that cost is measured against.
#[cfg(all(feature = "heap-stats", not(feature = "jemalloc")))]
#[global_allocator]
static HEAP: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Experiment (issue 14): jemalloc, which keeps its own statistics, in place of the system
/// allocator and its counters.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            ExitCode::from(cli::exit::USAGE)
        }
    }
}
