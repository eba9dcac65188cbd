//! The evidence trail: an append-only SQLite table in which every record carries the SHA-256
//! of the record before it, so that changing, removing, inserting or reordering a record
//! breaks the chain at a place [`verify`] can name.
//!
//! A run is appended whole, in one transaction: a `start` record (runbook, operator,
//! target, the signer's public key if any), one `step` record per check or attestation, and
//! an `end` record (the verdict) whose hash, the chain head, the run's key signs. Triggers
//! refuse `UPDATE` and `DELETE`; the chain catches whoever bypasses them (another SQLite
//! client with the triggers dropped, a hex editor).
//!
//! **Canonical serialization** (what is hashed; docs/audit.md): the record's fields except
//! `seq`, `hash` and `signature` as one JSON object with its keys in byte order and no
//! whitespace — `check_id`, `evidence`, `kind`, `operator`, `prev_hash`, `run_id`,
//! `runbook`, `runbook_sha256`, `section`, `status`, `target`, `time`, every value a JSON
//! string (`evidence` and `target` hold JSON text, hashed as the exact text stored) —
//! encoded as UTF-8. `hash` is the lowercase hex SHA-256 of those bytes; the first record's
//! `prev_hash` is 64 zeros.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::sign::{self, PublicKey, Signer};

/// `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The trail's format version (`PRAGMA user_version`).
const FORMAT: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    seq            INTEGER PRIMARY KEY,
    run_id         TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('start', 'step', 'end')),
    time           TEXT NOT NULL,
    runbook        TEXT NOT NULL,
    runbook_sha256 TEXT NOT NULL,
    section        TEXT NOT NULL,
    check_id       TEXT NOT NULL,
    status         TEXT NOT NULL,
    evidence       TEXT NOT NULL,
    operator       TEXT NOT NULL,
    target         TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL,
    signature      TEXT
);
CREATE TRIGGER IF NOT EXISTS records_append_only_update BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'the evidence trail is append-only: a record cannot be changed'); END;
CREATE TRIGGER IF NOT EXISTS records_append_only_delete BEFORE DELETE ON records
BEGIN SELECT RAISE(ABORT, 'the evidence trail is append-only: a record cannot be deleted'); END;
";

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Start,
    Step,
    End,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Start => "start",
            Kind::Step => "step",
            Kind::End => "end",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        match s {
            "start" => Some(Kind::Start),
            "step" => Some(Kind::Step),
            "end" => Some(Kind::End),
            _ => None,
        }
    }
}

/// A record's hashed fields, as the audit gives them to [`Trail::append_run`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    pub run_id: String,
    pub kind: String,
    pub time: String,
    pub runbook: String,
    pub runbook_sha256: String,
    pub section: String,
    pub check_id: String,
    pub status: String,
    /// JSON text.
    pub evidence: String,
    pub operator: String,
    /// JSON text.
    pub target: String,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: i64,
    pub entry: Entry,
    pub prev_hash: String,
    pub hash: String,
    /// Hex Ed25519 signature over the raw bytes of `hash` (an `end` record of a signed run).
    pub signature: Option<String>,
}

/// The canonical form: keys in byte order, every value a string (see the module docs).
#[derive(Serialize)]
struct Canonical<'a> {
    check_id: &'a str,
    evidence: &'a str,
    kind: &'a str,
    operator: &'a str,
    prev_hash: &'a str,
    run_id: &'a str,
    runbook: &'a str,
    runbook_sha256: &'a str,
    section: &'a str,
    status: &'a str,
    target: &'a str,
    time: &'a str,
}

/// The canonical bytes of a record whose predecessor's hash is `prev_hash`.
pub fn canonical(e: &Entry, prev_hash: &str) -> Vec<u8> {
    serde_json::to_vec(&Canonical {
        check_id: &e.check_id,
        evidence: &e.evidence,
        kind: &e.kind,
        operator: &e.operator,
        prev_hash,
        run_id: &e.run_id,
        runbook: &e.runbook,
        runbook_sha256: &e.runbook_sha256,
        section: &e.section,
        status: &e.status,
        target: &e.target,
        time: &e.time,
    })
    .expect("strings serialize")
}

/// The hash a record must carry.
pub fn hash(e: &Entry, prev_hash: &str) -> String {
    sign::sha256_hex(&canonical(e, prev_hash))
}

/// Why the trail could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    #[error("evidence trail {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "evidence trail {path}: format {found} is not one this preflight reads (it reads {FORMAT})"
    )]
    Format { path: String, found: i64 },
    #[error("evidence trail {0} does not exist")]
    Missing(String),
}

/// An open trail.
pub struct Trail {
    conn: Connection,
    path: String,
}

/// What one [`Trail::append_run`] wrote.
#[derive(Debug, Clone)]
pub struct Appended {
    /// `seq` of the run's first and last record.
    pub first: i64,
    pub last: i64,
    /// The chain head after the run.
    pub head: String,
    pub signed: bool,
}

impl Trail {
    /// Opens the trail at `path`, creating it (and its tables and triggers) when absent.
    pub fn open(path: &Path) -> Result<Trail, TrailError> {
        let shown = path.display().to_string();
        let err = |source| TrailError::Sqlite {
            path: shown.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if version != 0 && version != FORMAT {
            return Err(TrailError::Format {
                path: shown,
                found: version,
            });
        }
        conn.execute_batch(SCHEMA).map_err(err)?;
        conn.execute_batch(&format!("PRAGMA user_version = {FORMAT}"))
            .map_err(err)?;
        Ok(Trail { conn, path: shown })
    }

    /// Opens an existing trail without creating anything (verify, log).
    pub fn open_existing(path: &Path) -> Result<Trail, TrailError> {
        if !path.exists() {
            return Err(TrailError::Missing(path.display().to_string()));
        }
        Trail::open(path)
    }

    fn err(&self, source: rusqlite::Error) -> TrailError {
        TrailError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends one run's records in one transaction, chained to the trail's head; with a
    /// signer, the last record carries the signature of its hash.
    pub fn append_run(
        &mut self,
        entries: &[Entry],
        signer: Option<&Signer>,
    ) -> Result<Appended, TrailError> {
        let path = self.path.clone();
        let err = |source| TrailError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut prev: String = tx
            .query_row(
                "SELECT hash FROM records ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?
            .unwrap_or_else(|| GENESIS.to_string());
        let (mut first, mut last) = (0, 0);
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO records (run_id, kind, time, runbook, runbook_sha256, section,
                     check_id, status, evidence, operator, target, prev_hash, hash, signature)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )
                .map_err(err)?;
            for (i, e) in entries.iter().enumerate() {
                let h = hash(e, &prev);
                let signature = match signer {
                    Some(s) if i + 1 == entries.len() => Some(s.sign_hash(&h)),
                    _ => None,
                };
                insert
                    .execute(params![
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
                        e.target,
                        prev,
                        h,
                        signature
                    ])
                    .map_err(err)?;
                last = tx.last_insert_rowid();
                if i == 0 {
                    first = last;
                }
                prev = h;
            }
        }
        tx.commit().map_err(err)?;
        Ok(Appended {
            first,
            last,
            head: prev,
            signed: signer.is_some(),
        })
    }

    /// Every record in storage order.
    pub fn records(&self) -> Result<Vec<Record>, TrailError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, run_id, kind, time, runbook, runbook_sha256, section, check_id,
                 status, evidence, operator, target, prev_hash, hash, signature
                 FROM records ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Record {
                    seq: r.get(0)?,
                    entry: Entry {
                        run_id: r.get(1)?,
                        kind: r.get(2)?,
                        time: r.get(3)?,
                        runbook: r.get(4)?,
                        runbook_sha256: r.get(5)?,
                        section: r.get(6)?,
                        check_id: r.get(7)?,
                        status: r.get(8)?,
                        evidence: r.get(9)?,
                        operator: r.get(10)?,
                        target: r.get(11)?,
                    },
                    prev_hash: r.get(12)?,
                    hash: r.get(13)?,
                    signature: r.get(14)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// The underlying connection (tests tamper through it).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// The first thing wrong with a trail, named by the record it was found at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tampering {
    /// `seq` of the record the problem was found at.
    pub seq: i64,
    pub what: Problem,
    /// One sentence for people.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// The record's fields do not give its hash.
    Altered,
    /// A record before this one is gone.
    Missing,
    /// This record is not part of the chain.
    Inserted,
    /// This record is out of its place in the chain.
    Reordered,
    /// The trail ends inside a run (its final record is gone).
    Truncated,
    /// A run's final record lacks the signature its first record promises, or the
    /// signature does not verify.
    BadSignature,
    /// A run was signed by another key than the one given.
    OtherKey,
    /// A run's records are not start, steps, end.
    Malformed,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub records: usize,
    pub runs: usize,
    /// Runs whose final record carries a signature that verifies.
    pub signed_runs: usize,
    /// The signers' key fingerprints seen.
    pub signers: Vec<String>,
    /// Whether signatures were checked against a key the caller trusts (`--key`), or only
    /// against the public key each run carries.
    pub key_checked: bool,
    /// The last record's hash.
    pub head: Option<String>,
    /// The first problem, if any.
    pub tampering: Option<Tampering>,
}

/// Like [`verify`], and the chain must still hold `head`, a hash noted from an earlier
/// `verify` or audit (a CI log, a ticket): the one cut the chain cannot show by itself, whole
/// runs removed from the end of the trail, then shows.
pub fn verify_with_head(records: &[Record], key: Option<&PublicKey>, head: &str) -> Verification {
    let mut v = verify(records, key);
    if v.tampering.is_none() && !records.iter().any(|r| r.hash == head) {
        let last = records.last().map_or(0, |r| r.seq);
        v.tampering = Some(Tampering {
            seq: last,
            what: Problem::Truncated,
            message: format!(
                "the trail does not hold the head {head} noted earlier: records after it were \
                 removed (the trail ends at record {last})"
            ),
        });
    }
    v
}

/// Recomputes the chain and the signatures; names the first problem.
pub fn verify(records: &[Record], key: Option<&PublicKey>) -> Verification {
    let mut v = Verification {
        records: records.len(),
        runs: 0,
        signed_runs: 0,
        signers: vec![],
        key_checked: key.is_some(),
        head: records.last().map(|r| r.hash.clone()),
        tampering: None,
    };
    v.tampering = chain(records).or_else(|| runs(records, key, &mut v));
    v
}

fn describe(r: &Record) -> String {
    let e = &r.entry;
    match Kind::parse(&e.kind) {
        Some(Kind::Step) => format!(
            "record {} (run {}, step `{}`{})",
            r.seq,
            e.run_id,
            e.check_id,
            if e.section.is_empty() {
                String::new()
            } else {
                format!(" in \"{}\"", e.section)
            }
        ),
        Some(k) => format!(
            "record {} (run {}, {} of the run)",
            r.seq,
            e.run_id,
            k.as_str()
        ),
        None => format!("record {} (run {})", r.seq, e.run_id),
    }
}

fn found(r: &Record, what: Problem, message: String) -> Option<Tampering> {
    Some(Tampering {
        seq: r.seq,
        what,
        message,
    })
}

/// The chain: each record's hash from its fields, each `prev_hash` the hash before.
fn chain(records: &[Record]) -> Option<Tampering> {
    let mut expected = GENESIS;
    let mut index: Option<HashMap<&str, usize>> = None;
    for (i, r) in records.iter().enumerate() {
        if r.prev_hash != expected {
            let index = index.get_or_insert_with(|| {
                records
                    .iter()
                    .enumerate()
                    .map(|(j, x)| (x.hash.as_str(), j))
                    .collect()
            });
            return match index.get(r.prev_hash.as_str()) {
                Some(&j) if j > i => found(
                    r,
                    Problem::Reordered,
                    format!(
                        "{} is out of order: in the chain it follows record {}, stored after it",
                        describe(r),
                        records[j].seq
                    ),
                ),
                Some(&j) if j + 1 < i => {
                    let x = &records[j + 1];
                    found(
                        x,
                        Problem::Inserted,
                        format!(
                            "{} was inserted: in the chain record {} follows record {} directly",
                            describe(x),
                            r.seq,
                            records[j].seq
                        ),
                    )
                }
                // The chain goes on past this record as if it were not there: it was inserted.
                _ if records.get(i + 1).is_some_and(|n| n.prev_hash == expected) => found(
                    r,
                    Problem::Inserted,
                    format!(
                        "{} was inserted: the record after it follows the one before it in the chain",
                        describe(r)
                    ),
                ),
                _ => {
                    let gap = match i.checked_sub(1).map(|p| records[p].seq) {
                        Some(p) if r.seq > p + 1 => {
                            format!(" (seq {} to {} are absent)", p + 1, r.seq - 1)
                        }
                        None if r.seq > 1 => format!(" (seq 1 to {} are absent)", r.seq - 1),
                        _ => String::new(),
                    };
                    found(
                        r,
                        Problem::Missing,
                        format!(
                            "a record is missing before {}{gap}: the hash it follows is no record's \
                             (a record was deleted, or the one before it was changed and rehashed)",
                            describe(r)
                        ),
                    )
                }
            };
        }
        if hash(&r.entry, &r.prev_hash) != r.hash {
            return found(
                r,
                Problem::Altered,
                format!(
                    "{} was altered: its fields do not give the hash it was written with",
                    describe(r)
                ),
            );
        }
        expected = &r.hash;
    }
    None
}

/// The runs: start, steps, end, each signed run's signature.
fn runs(records: &[Record], key: Option<&PublicKey>, v: &mut Verification) -> Option<Tampering> {
    let mut i = 0;
    while i < records.len() {
        let start = &records[i];
        if start.entry.kind != Kind::Start.as_str() {
            return found(
                start,
                Problem::Malformed,
                format!("{} does not begin a run", describe(start)),
            );
        }
        v.runs += 1;
        let mut j = i + 1;
        while j < records.len() && records[j].entry.kind == Kind::Step.as_str() {
            if records[j].entry.run_id != start.entry.run_id {
                return found(
                    &records[j],
                    Problem::Malformed,
                    format!(
                        "{} belongs to another run than the one it sits in",
                        describe(&records[j])
                    ),
                );
            }
            j += 1;
        }
        let Some(end) = records
            .get(j)
            .filter(|r| r.entry.kind == Kind::End.as_str() && r.entry.run_id == start.entry.run_id)
        else {
            let last = &records[j - 1];
            return found(
                last,
                Problem::Truncated,
                format!(
                    "run {} ends without its final record after {}: the trail was cut short",
                    start.entry.run_id,
                    describe(last)
                ),
            );
        };
        if let Some(t) = signature(start, end, key, v) {
            return Some(t);
        }
        i = j + 1;
    }
    None
}

/// The run's declared signer (its `start` evidence), checked against its final record.
fn signature(
    start: &Record,
    end: &Record,
    key: Option<&PublicKey>,
    v: &mut Verification,
) -> Option<Tampering> {
    let declared: Option<PublicKey> =
        serde_json::from_str::<serde_json::Value>(&start.entry.evidence)
            .ok()
            .and_then(|e| e["signer"]["public_key"].as_str().map(str::to_string))
            .and_then(|k| PublicKey::from_hex(&k).ok());
    let Some(declared) = declared else {
        return None; // an unsigned run: the chain is all there is
    };
    let run = &start.entry.run_id;
    if let Some(k) = key
        && k.fingerprint() != declared.fingerprint()
    {
        return found(
            end,
            Problem::OtherKey,
            format!(
                "{} closes run {run}, signed by another key ({}), not by the one given ({})",
                describe(end),
                declared.fingerprint(),
                k.fingerprint()
            ),
        );
    }
    let Some(sig) = &end.signature else {
        return found(
            end,
            Problem::BadSignature,
            format!(
                "{} has no signature, but its run declares the signer {}",
                describe(end),
                declared.fingerprint()
            ),
        );
    };
    if !declared.verify_hash(&end.hash, sig) {
        return found(
            end,
            Problem::BadSignature,
            format!(
                "the signature of {} does not verify with {}",
                describe(end),
                declared.fingerprint()
            ),
        );
    }
    v.signed_runs += 1;
    let fp = declared.fingerprint();
    if !v.signers.contains(&fp) {
        v.signers.push(fp);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(run: &str, kind: Kind, id: &str) -> Entry {
        Entry {
            run_id: run.into(),
            kind: kind.as_str().into(),
            time: "2026-12-03T10:00:00.000Z".into(),
            runbook: "runbooks/r.md".into(),
            runbook_sha256: sign::sha256_hex(b"runbook"),
            section: "Emergency procedures".into(),
            check_id: id.into(),
            status: if kind == Kind::Step {
                "PASS".into()
            } else {
                String::new()
            },
            evidence: r#"{"summary":"ok"}"#.into(),
            operator: "alice".into(),
            target: r#"{"url":"http://127.0.0.1:8080"}"#.into(),
        }
    }

    fn run(id: &str, steps: &[&str], signer: Option<&Signer>) -> Vec<Entry> {
        let mut start = entry(id, Kind::Start, "");
        if let Some(s) = signer {
            start.evidence =
                serde_json::json!({"signer": {"public_key": s.public().to_hex()}}).to_string();
        }
        let mut v = vec![start];
        v.extend(steps.iter().map(|s| entry(id, Kind::Step, s)));
        let mut end = entry(id, Kind::End, "");
        end.status = "GO".into();
        v.push(end);
        v
    }

    fn signer(dir: &Path, name: &str) -> Signer {
        let files = sign::keygen(&dir.join(name)).unwrap();
        Signer::read(&files.private).unwrap()
    }

    /// Two signed runs (records 1–5 and 6–10) in a fresh trail.
    fn trail(dir: &Path, key: &Signer) -> Trail {
        let mut t = Trail::open(&dir.join("trail.db")).unwrap();
        t.append_run(&run("r1", &["a", "b", "c"], Some(key)), Some(key))
            .unwrap();
        t.append_run(&run("r2", &["d", "e", "f"], Some(key)), Some(key))
            .unwrap();
        t
    }

    /// Tampering the way someone bypassing the triggers would.
    fn tamper(t: &Trail, sql: &str) {
        t.connection()
            .execute_batch(&format!(
                "DROP TRIGGER IF EXISTS records_append_only_update; DROP TRIGGER IF EXISTS records_append_only_delete; {sql}"
            ))
            .unwrap();
    }

    fn problem(t: &Trail, key: Option<&PublicKey>) -> Tampering {
        verify(&t.records().unwrap(), key)
            .tampering
            .expect("tampering found")
    }

    #[test]
    fn the_canonical_form_is_the_documented_one() {
        let e = entry("r1", Kind::Step, "a");
        let c = String::from_utf8(canonical(&e, GENESIS)).unwrap();
        assert_eq!(
            c,
            format!(
                r#"{{"check_id":"a","evidence":"{{\"summary\":\"ok\"}}","kind":"step","operator":"alice","prev_hash":"{GENESIS}","run_id":"r1","runbook":"runbooks/r.md","runbook_sha256":"{}","section":"Emergency procedures","status":"PASS","target":"{{\"url\":\"http://127.0.0.1:8080\"}}","time":"2026-12-03T10:00:00.000Z"}}"#,
                sign::sha256_hex(b"runbook")
            )
        );
        assert_eq!(hash(&e, GENESIS), sign::sha256_hex(c.as_bytes()));
    }

    #[test]
    fn an_intact_trail_verifies_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = signer(dir.path(), "k");
        let t = trail(dir.path(), &key);
        let v = verify(&t.records().unwrap(), Some(&key.public()));
        assert_eq!(v.tampering, None);
        assert_eq!((v.records, v.runs, v.signed_runs), (10, 2, 2));
        assert_eq!(v.signers, [key.public().fingerprint()]);
        assert_eq!(
            v.head.as_deref(),
            Some(t.records().unwrap()[9].hash.as_str())
        );
    }

    #[test]
    fn triggers_refuse_update_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let key = signer(dir.path(), "k");
        let t = trail(dir.path(), &key);
        let c = t.connection();
        let e = c.execute("UPDATE records SET status = 'FAIL' WHERE seq = 3", []);
        assert!(e.unwrap_err().to_string().contains("append-only"));
        let e = c.execute("DELETE FROM records WHERE seq = 3", []);
        assert!(e.unwrap_err().to_string().contains("append-only"));
        assert_eq!(verify(&t.records().unwrap(), None).tampering, None);
    }

    #[test]
    fn an_edited_field_names_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let key = signer(dir.path(), "k");
        let t = trail(dir.path(), &key);
        tamper(
            &t,
            "UPDATE records SET status = 'PASS' || '' , evidence = '{\"summary\":\"fine\"}' WHERE seq = 3",
        );
        let p = problem(&t, None);
        assert_eq!((p.seq, p.what), (3, Problem::Altered), "{p:?}");
        assert!(
            p.message
                .contains("record 3 (run r1, step `b` in \"Emergency procedures\") was altered"),
            "{}",
            p.message
        );
    }

    #[test]
    fn a_deleted_record_is_missing_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let key = signer(dir.path(), "k");
        let t = trail(dir.path(), &key);
        tamper(&t, "DELETE FROM records WHERE seq = 7");
        let p = problem(&t, None);
        assert_eq!((p.seq, p.what), (8, Problem::Missing), "{p:?}");
        assert!(p.message.contains("seq 7 to 7 are absent"), "{}", p.message);
    }

    #[test]
    fn two_swapped_records_are_out_of_order() {
        let dir = tempfile::tempdir().unwrap();
        let key = signer(dir.path(), "k");
        let t = trail(dir.path(), &key);
        // Swap the contents of rows 3 and 4 (their seq stay).
        tamper(
            &t,
            "UPDATE records SET seq = -3 WHERE seq = 3; UPDATE records SET seq = 3 WHERE seq = 4;
             UPDATE records SET seq = 4 WHERE seq = -3;",
        );
        let p = problem(&t, None);
        assert_eq!((p.seq, p.what), (3, Problem::Reordered), "{p:?}");
        assert!(p.message.contains("follows record 4"), "{}", p.message);
    }

    #[test]
    fn an_inserted_record_is_named_even_with_a_correct_link() {
        let dir = tempfile::tempdir().unwrap();
        let key = signer(dir.path(), "k");
        let t = trail(dir.path(), &key);
        let recs = t.records().unwrap();
        // A forged step after record 3, properly chained to it, at seq 3.5 (stored as 350
        // after renumbering everything ×100).
        let forged = entry("r1", Kind::Step, "forged");
        let h = hash(&forged, &recs[2].hash);
        tamper(&t, "UPDATE records SET seq = seq * 100");
        t.connection()
            .execute(
                "INSERT INTO records (seq, run_id, kind, time, runbook, runbook_sha256, section, check_id, status, evidence, operator, target, prev_hash, hash)
                 VALUES (350, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![forged.run_id, forged.kind, forged.time, forged.runbook, forged.runbook_sha256, forged.section, forged.check_id, forged.status, forged.evidence, forged.operator, forged.target, recs[2].hash, h],
            )
            .unwrap();
        let p = problem(&t, None);
        assert_eq!((p.seq, p.what), (350, Problem::Inserted), "{p:?}");
        assert!(p.message.contains("step `forged`"), "{}", p.message);
    }

    #[test]
    fn a_removed_last_record_leaves_its_run_unfinished() {
        let dir = tempfile::tempdir().unwrap();
        let key = signer(dir.path(), "k");
        let t = trail(dir.path(), &key);
        tamper(&t, "DELETE FROM records WHERE seq = 10");
        let p = problem(&t, None);
        assert_eq!((p.seq, p.what), (9, Problem::Truncated), "{p:?}");
        assert!(
            p.message.contains("run r2 ends without its final record"),
            "{}",
            p.message
        );
    }

    #[test]
    fn a_whole_run_cut_from_the_end_shows_only_against_a_noted_head() {
        let dir = tempfile::tempdir().unwrap();
        let key = signer(dir.path(), "k");
        let t = trail(dir.path(), &key);
        let head = t.records().unwrap()[9].hash.clone();
        tamper(&t, "DELETE FROM records WHERE seq > 5");
        let recs = t.records().unwrap();
        assert_eq!(
            verify(&recs, None).tampering,
            None,
            "the chain alone cannot see it"
        );
        let p = verify_with_head(&recs, None, &head).tampering.unwrap();
        assert_eq!((p.seq, p.what), (5, Problem::Truncated), "{p:?}");
        assert!(p.message.contains(&head), "{}", p.message);
    }

    #[test]
    fn a_signature_from_another_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let key = signer(dir.path(), "k");
        let other = signer(dir.path(), "other");
        let t = trail(dir.path(), &other);
        let p = problem(&t, Some(&key.public()));
        assert_eq!((p.seq, p.what), (5, Problem::OtherKey), "{p:?}");
        assert!(
            p.message.contains(&other.public().fingerprint()),
            "{}",
            p.message
        );
        assert!(
            p.message.contains(&key.public().fingerprint()),
            "{}",
            p.message
        );
    }

    #[test]
    fn a_stripped_or_forged_signature_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let key = signer(dir.path(), "k");
        let t = trail(dir.path(), &key);
        tamper(&t, "UPDATE records SET signature = NULL WHERE seq = 5");
        let p = problem(&t, Some(&key.public()));
        assert_eq!((p.seq, p.what), (5, Problem::BadSignature), "{p:?}");
        // Another record's valid signature, moved onto run r1's end record.
        let dir = tempfile::tempdir().unwrap();
        let t = trail(dir.path(), &key);
        tamper(
            &t,
            "UPDATE records SET signature = (SELECT signature FROM records WHERE seq = 10) WHERE seq = 5",
        );
        let p = problem(&t, None);
        assert_eq!((p.seq, p.what), (5, Problem::BadSignature), "{p:?}");
        assert!(p.message.contains("does not verify"), "{}", p.message);
    }
}
