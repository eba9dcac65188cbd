//! Cost of the audit evidence trail (`preflight::audit::trail`), release build, issue 11:
//!
//! 1. **Append**: 300 runs of 10 records (start, 8 steps with ~1 KB of evidence each, end),
//!    each run one transaction as `preflight audit` appends it, into a file on disk. The
//!    cost per record, beside the same rows inserted by plain SQL with no hash, no chain
//!    lookup and no signature (the baseline, same transactions, same file system), and
//!    beside the same trail with every run signed.
//! 2. **Verify**: a trail of 100 000 records (1 000 runs of 100), read and verified (goal:
//!    under 1 s), beside reading the same records alone (the baseline).
//!
//! Run with `cargo bench --bench trail`. Each figure is the median of 5 runs.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use preflight::audit::sign::{self, Signer};
use preflight::audit::trail::{Entry, Trail, verify};

fn entries(run: usize, steps: usize, signer: Option<&Signer>) -> Vec<Entry> {
    let evidence = format!(
        r#"{{"id":"step","kind":"http","severity":"high","status":"PASS","summary":"GET /readyz answered 200 in 1.3 ms","observations":[{{"what":"status","expected":"200","observed":"200","ok":true}}],"sent":["GET /readyz from 127.39.224.129"],"requests":1,"evidence":{{"body":"{}"}}}}"#,
        "x".repeat(700)
    );
    let base = Entry {
        run_id: format!("20261203T000000Z-{run:012x}"),
        time: "2026-12-03T00:00:00.000Z".into(),
        runbook: "runbooks/operator-cheatsheet.md".into(),
        runbook_sha256: sign::sha256_hex(b"runbook"),
        operator: "alice".into(),
        target: r#"{"url":"http://127.0.0.1:8080","version":"0.1.0","host":"127.0.0.1","auditor_host":"ci"}"#.into(),
        ..Entry::default()
    };
    let signer_json = signer.map_or("null".to_string(), |s| {
        format!(r#"{{"public_key":"{}"}}"#, s.public().to_hex())
    });
    let mut v = vec![Entry {
        kind: "start".into(),
        evidence: format!(r#"{{"signer":{signer_json}}}"#),
        ..base.clone()
    }];
    for i in 0..steps {
        v.push(Entry {
            kind: "step".into(),
            section: "Emergency procedures".into(),
            check_id: format!("step-{i}"),
            status: "PASS".into(),
            evidence: evidence.clone(),
            ..base.clone()
        });
    }
    v.push(Entry {
        kind: "end".into(),
        status: "GO".into(),
        evidence: r#"{"steps":8}"#.into(),
        ..base
    });
    v
}

/// The baseline: the same rows by plain SQL, one transaction per run, nothing computed.
fn plain(path: &std::path::Path, runs: &[Vec<Entry>]) -> f64 {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE records (seq INTEGER PRIMARY KEY, run_id TEXT, kind TEXT, time TEXT,
         runbook TEXT, runbook_sha256 TEXT, section TEXT, check_id TEXT, status TEXT,
         evidence TEXT, operator TEXT, target TEXT, prev_hash TEXT, hash TEXT, signature TEXT)",
    )
    .unwrap();
    let t = Instant::now();
    for run in runs {
        let tx = conn.transaction().unwrap();
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO records (run_id, kind, time, runbook, runbook_sha256, section,
                     check_id, status, evidence, operator, target, prev_hash, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, '', '')",
                )
                .unwrap();
            for e in run {
                st.execute(rusqlite::params![
                    e.run_id,
                    e.kind,
                    e.time,
                    e.runbook,
                    e.runbook_sha256,
                    e.section,
                    e.check_id,
                    e.status,
                    e.evidence,
                    e.operator,
                    e.target
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    t.elapsed().as_secs_f64()
}

fn chained(path: &std::path::Path, runs: &[Vec<Entry>], signer: Option<&Signer>) -> f64 {
    let mut trail = Trail::open(path).unwrap();
    let t = Instant::now();
    for run in runs {
        trail.append_run(run, signer).unwrap();
    }
    t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir_in(".").unwrap();
    let key = sign::keygen(&dir.path().join("k")).unwrap();
    let signer = Signer::read(&key.private).unwrap();

    const RUNS: usize = 300;
    let unsigned: Vec<Vec<Entry>> = (0..RUNS).map(|r| entries(r, 8, None)).collect();
    let signed: Vec<Vec<Entry>> = (0..RUNS).map(|r| entries(r, 8, Some(&signer))).collect();
    let records = (RUNS * 10) as f64;
    let (mut base, mut chain, mut sig) = (vec![], vec![], vec![]);
    for i in 0..5 {
        base.push(plain(&dir.path().join(format!("plain{i}.db")), &unsigned));
        chain.push(chained(
            &dir.path().join(format!("chain{i}.db")),
            &unsigned,
            None,
        ));
        sig.push(chained(
            &dir.path().join(format!("signed{i}.db")),
            &signed,
            Some(&signer),
        ));
    }
    let (base, chain, sig) = (median(base), median(chain), median(sig));
    println!("append, {RUNS} runs of 10 records, one transaction per run (median of 5):");
    println!(
        "  plain INSERT (baseline)  {:8.1} µs/record",
        base / records * 1e6
    );
    println!(
        "  hash-chained             {:8.1} µs/record  ({:.2}x the baseline)",
        chain / records * 1e6,
        chain / base
    );
    println!(
        "  hash-chained and signed  {:8.1} µs/record  ({:.2}x the baseline)",
        sig / records * 1e6,
        sig / base
    );

    // 100 000 records: 1 000 runs of 100 (98 steps), signed.
    let big = dir.path().join("big.db");
    let mut trail = Trail::open(&big).unwrap();
    for r in 0..1000 {
        trail
            .append_run(&entries(r, 98, Some(&signer)), Some(&signer))
            .unwrap();
    }
    let key = signer.public();
    let (mut read, mut full) = (vec![], vec![]);
    for _ in 0..5 {
        let t = Instant::now();
        let recs = trail.records().unwrap();
        read.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let recs2 = trail.records().unwrap();
        let v = verify(&recs2, Some(&key));
        full.push(t.elapsed().as_secs_f64());
        assert_eq!(
            (recs.len(), v.records, v.signed_runs),
            (100_000, 100_000, 1000)
        );
        assert!(v.tampering.is_none(), "{:?}", v.tampering);
    }
    let (read, full) = (median(read), median(full));
    println!("verify, 100 000 records in 1 000 signed runs (median of 5):");
    println!("  read the records alone (baseline)  {:7.3} s", read);
    println!(
        "  read and verify (audit verify)     {:7.3} s  ({:.2}x the baseline; goal < 1 s: {})",
        full,
        full / read,
        if full < 1.0 { "met" } else { "NOT met" }
    );
}
