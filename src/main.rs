//! The `preflight` binary: parses arguments, hands over to [`cli`], and prints a command's
//! error with its causes (`error: what: why`) — anyhow and every print live only here, in
//! the binary; the library returns values and writes only to the writers it is given.

use std::process::ExitCode;

mod cli;

/// jemalloc wrapped in a live-byte counter, so the service can export its exact live heap
/// (`heap_live_bytes` on `/metrics`, read by `memory_growth` with `source: {metric: …}`); one
/// atomic add per allocation and per free, and still cheaper than the system allocator
/// (docs/benchmarks.md). Built without the `heap-stats` feature (default on), the binary uses
/// the system allocator and exports no heap series: the baseline its cost is measured against.
#[cfg(feature = "heap-stats")]
#[global_allocator]
static HEAP: cap::Cap<tikv_jemallocator::Jemalloc> =
    cap::Cap::new(tikv_jemallocator::Jemalloc, usize::MAX);

/// The candidate measured against it (`--features counting-alloc`, issue 14): the system
/// allocator with two atomic adds per allocation and per free.
#[cfg(all(feature = "counting-alloc", not(feature = "heap-stats")))]
#[global_allocator]
static HEAP: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// The live heap as the binary's allocator counts it.
#[cfg(feature = "heap-stats")]
fn live_heap() -> u64 {
    HEAP.allocated() as u64
}

#[cfg(all(feature = "counting-alloc", not(feature = "heap-stats")))]
fn live_heap() -> u64 {
    let s = HEAP.stats();
    // stats_alloc adds a realloc's growth to `bytes_allocated` and its shrinking to
    // `bytes_deallocated` (`bytes_reallocated` only repeats the net change).
    s.bytes_allocated.saturating_sub(s.bytes_deallocated) as u64
}

#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    #[cfg(any(feature = "heap-stats", feature = "counting-alloc"))]
    preflight::service::metrics::count_heap_with(live_heap);
    let cli = cli::parse();
    match cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            ExitCode::from(cli::exit::USAGE)
        }
    }
}
