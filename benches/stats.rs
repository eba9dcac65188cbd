//! Speed of the canary judge's statistics (`preflight::stats`) at canary sample sizes, release
//! build: the median of 7 runs of each, in milliseconds.
//!
//! 1. Mann–Whitney U at 5 000 and 20 000 values per side (goal: well under 100 ms);
//! 2. Hodges–Lehmann shift and 95 % interval at 5 000 per side (goal: well under 100 ms), beside
//!    the naive way — sorting all m·n differences — at 2 000 per side (4 M differences), which
//!    also checks that both give the same estimate;
//! 3. Fisher's exact test at 100 000 per side, and a p99 interval from 100 000 values.
//!
//! Run with `cargo bench --bench stats`.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use preflight::stats::{self, Alternative};
use rand::{RngExt, SeedableRng};

/// Latency-like samples: log-normal-ish, with ties from millisecond rounding (0.001).
fn sample(rng: &mut rand::rngs::StdRng, n: usize, scale: f64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let u: f64 = rng.random_range(0.0..1.0);
            ((-(1.0 - u).ln()).powf(1.5) * scale * 1000.0).round() / 1000.0
        })
        .collect()
}

fn median_ms(mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[3]
}

fn main() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for n in [5_000, 20_000] {
        let x = sample(&mut rng, n, 10.5);
        let y = sample(&mut rng, n, 10.0);
        let ms = median_ms(|| {
            std::hint::black_box(stats::mann_whitney(&x, &y, Alternative::Greater));
        });
        println!("mann_whitney      n={n:>6}/side  {ms:8.2} ms");
    }

    let x = sample(&mut rng, 5_000, 10.5);
    let y = sample(&mut rng, 5_000, 10.0);
    let ms = median_ms(|| {
        std::hint::black_box(stats::hodges_lehmann(&x, &y, 0.95));
    });
    println!(
        "hodges_lehmann    n=  5000/side  {ms:8.2} ms  (selection, 25 M differences implicit)"
    );

    let x = &x[..2_000];
    let y = &y[..2_000];
    let fast = stats::hodges_lehmann(x, y, 0.95).expect("valid samples");
    let mut naive = 0.0;
    let naive_ms = median_ms(|| {
        let mut d: Vec<f64> = x
            .iter()
            .flat_map(|a| y.iter().map(move |b| a - b))
            .collect();
        d.sort_unstable_by(f64::total_cmp);
        let k = d.len();
        naive = (d[k / 2 - 1] + d[k / 2]) / 2.0;
    });
    let fast_ms = median_ms(|| {
        std::hint::black_box(stats::hodges_lehmann(x, y, 0.95));
    });
    println!(
        "hodges_lehmann    n=  2000/side  {fast_ms:8.2} ms  vs sorting 4 M differences {naive_ms:8.2} ms \
         ({:.0}×; estimates {} and {naive}: {})",
        naive_ms / fast_ms,
        fast.estimate,
        if fast.estimate == naive {
            "equal"
        } else {
            "DIFFER"
        }
    );

    let ms = median_ms(|| {
        std::hint::black_box(stats::compare_proportions(
            1_150,
            100_000,
            1_000,
            100_000,
            Alternative::Greater,
            0.95,
        ));
    });
    println!("compare_proportions n=100000/side {ms:8.2} ms  (Fisher exact + Newcombe)");

    let s = sample(&mut rng, 100_000, 10.0);
    let ms = median_ms(|| {
        std::hint::black_box(stats::quantile_ci(&s, 0.99, 0.95));
    });
    println!("quantile_ci p99   n=100000       {ms:8.2} ms");
}
