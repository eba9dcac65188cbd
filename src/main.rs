//! The `preflight` binary: parses arguments, hands over to [`cli`], and prints a command's
//! error with its causes (`error: what: why`) — anyhow and every print live only here, in
//! the binary; the library returns values and writes only to the writers it is given.

use std::process::ExitCode;

use clap::Parser as _;

mod cli;

/// jemalloc, whose statistics give the service its exact live heap (`heap_live_bytes` on
/// `/metrics`, read by `memory_growth` with `source: {metric: …}`); cheaper than the system
/// allocator it replaces (docs/benchmarks.md). Built without the `heap-stats` feature (default
/// on), the binary uses the system allocator and exports no heap series: the baseline its cost
/// is measured against.
#[cfg(feature = "heap-stats")]
#[global_allocator]
static HEAP: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The candidate measured against jemalloc (`--features counting-alloc`, issue 14): the system
/// allocator with two atomic adds per allocation and per free.
#[cfg(all(feature = "counting-alloc", not(feature = "heap-stats")))]
#[global_allocator]
static HEAP: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    #[cfg(feature = "heap-stats")]
    preflight::service::metrics::jemalloc_is_global();
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            ExitCode::from(cli::exit::USAGE)
        }
    }
}
