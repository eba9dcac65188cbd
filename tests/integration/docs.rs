//! The docs say what the code does (issue 15): every log code (`HB-…`) and every response
//! error code the core service emits is documented, and every code the docs name is one the
//! service emits. Codes are read from the service's source (string literals `"HB-…"`, the
//! codes of `AppError::new(…)` and of the prebuilt error bodies) and from docs/*.md,
//! runbooks/*.md and README.md; the two sides are compared both ways.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use regex::Regex;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `src/service.rs` and every file under `src/service/`, each without its test module.
fn service_sources() -> Vec<(PathBuf, String)> {
    let mut files = vec![root().join("src/service.rs")];
    let mut dirs = vec![root().join("src/service")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            // The test module, not every `#[cfg(test)]` item (a test-only helper near the top
            // of a file would hide the rest of it).
            let code = match text.find("#[cfg(test)]\nmod ") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            (p, code)
        })
        .collect()
}

fn doc_files() -> Vec<(PathBuf, String)> {
    let mut files = vec![root().join("README.md")];
    for dir in ["docs", "runbooks"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "md") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let t = std::fs::read_to_string(&p).unwrap();
            (p, t)
        })
        .collect()
}

fn log_code_re() -> Regex {
    Regex::new(r"HB-[A-Z0-9]+(?:-[A-Z0-9]+)*").unwrap()
}

/// What the service's source emits.
#[derive(Debug, Default)]
struct Emitted {
    log: BTreeSet<String>,
    response: BTreeSet<String>,
}

fn emitted(sources: &[(PathBuf, String)]) -> Emitted {
    // Every string literal that is a whole `HB-…` code: `code = "HB-…"` in tracing macros,
    // and the codes computed elsewhere (the breaker's state codes, `HB-UNCODED`).
    let lit = Regex::new(r#""(HB-[A-Z0-9]+(?:-[A-Z0-9]+)*)""#).unwrap();
    // `AppError::new(StatusCode::X, "code", …)`, possibly over several lines.
    let app = Regex::new(r#"AppError::new\(\s*[^,()]+(?:\([^()]*\))?\s*,\s*"([^"]+)""#).unwrap();
    // Prebuilt bodies: `{"error":{"code":"rate-limited",…}}`.
    let body = Regex::new(r#""code":"([^"]+)""#).unwrap();
    let mut out = Emitted::default();
    for (_, text) in sources {
        out.log
            .extend(lit.captures_iter(text).map(|c| c[1].to_string()));
        out.response
            .extend(app.captures_iter(text).map(|c| c[1].to_string()));
        out.response
            .extend(body.captures_iter(text).map(|c| c[1].to_string()));
    }
    out
}

/// What the docs say.
#[derive(Debug, Default)]
struct Documented {
    /// Codes in the first column of a `| code |` table under a heading about logs.
    log_tables: BTreeSet<(String, String)>,
    /// Codes in the first column of a `| code |` table under a heading about error codes.
    error_tables: BTreeSet<(String, String)>,
    /// Every `HB-…` anywhere, with where.
    named_log: BTreeSet<(String, String)>,
    /// Response codes named in prose: `` `429 rate-limited` `` (and `` / `other` `` after
    /// it), `` code `overloaded` ``.
    named_response: BTreeSet<(String, String)>,
}

fn documented(docs: &[(PathBuf, String)]) -> Documented {
    let hb = log_code_re();
    let tick = Regex::new(r"`([^`]+)`").unwrap();
    let status = Regex::new(r"`[45]\d\d ([A-Za-z][\w-]*)`((?:\s*/\s*`[A-Za-z][\w-]*`)*)").unwrap();
    let code_word = Regex::new(r"\bcode `([A-Za-z][\w-]*)`").unwrap();
    let mut out = Documented::default();
    for (path, text) in docs {
        let name = path
            .strip_prefix(root())
            .unwrap_or(path)
            .display()
            .to_string();
        let mut heading = String::new();
        let mut fenced = false;
        let mut table: Option<bool> = None; // Some(is_log) inside a code table
        for (i, line) in text.lines().enumerate() {
            let at = format!("{name}:{}", i + 1);
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                continue;
            }
            for m in hb.find_iter(line) {
                out.named_log.insert((m.as_str().to_string(), at.clone()));
            }
            if fenced {
                continue;
            }
            if line.starts_with('#') {
                heading = line.to_ascii_lowercase();
                table = None;
                continue;
            }
            for c in status.captures_iter(line) {
                out.named_response.insert((c[1].to_string(), at.clone()));
                for t in tick.captures_iter(&c[2]) {
                    out.named_response.insert((t[1].to_string(), at.clone()));
                }
            }
            for c in code_word.captures_iter(line) {
                if !hb.is_match(&c[1]) {
                    out.named_response.insert((c[1].to_string(), at.clone()));
                }
            }
            let Some(row) = line.strip_prefix('|') else {
                table = None;
                continue;
            };
            let first = row.split('|').next().unwrap_or("").trim();
            if first == "code" {
                table = if heading.contains("log") {
                    Some(true)
                } else if heading.contains("error code") {
                    Some(false)
                } else {
                    None
                };
                continue;
            }
            let Some(is_log) = table else { continue };
            for t in tick.captures_iter(first) {
                let entry = (t[1].to_string(), at.clone());
                if is_log {
                    out.log_tables.insert(entry);
                } else {
                    out.error_tables.insert(entry);
                }
            }
        }
    }
    out
}

fn codes(set: &BTreeSet<(String, String)>, file: Option<&str>) -> BTreeSet<String> {
    set.iter()
        .filter(|(_, at)| file.is_none_or(|f| at.starts_with(&format!("{f}:"))))
        .map(|(c, _)| c.clone())
        .collect()
}

/// Every disagreement between the code and the docs, one line each.
fn differences(e: &Emitted, d: &Documented) -> Vec<String> {
    let mut out = Vec::new();
    let log_table = codes(&d.log_tables, Some("docs/configuration.md"));
    for c in e.log.difference(&log_table) {
        out.push(format!(
            "log code `{c}` is emitted by src/service but missing from the Log codes table of docs/configuration.md"
        ));
    }
    let error_table = codes(&d.error_tables, Some("docs/api.md"));
    for c in e.response.difference(&error_table) {
        out.push(format!(
            "response code `{c}` is emitted by src/service but missing from the Error codes table of docs/api.md"
        ));
    }
    for (c, at) in &d.named_log {
        if !e.log.contains(c) {
            out.push(format!(
                "{at}: names log code `{c}`, which the service never emits"
            ));
        }
    }
    for (c, at) in &d.log_tables {
        if !e.log.contains(c) {
            let what = if e.response.contains(c) {
                "a response code, not a log code"
            } else {
                "not a code the service emits"
            };
            out.push(format!("{at}: lists `{c}` in a table of log codes: {what}"));
        }
    }
    for (c, at) in d.error_tables.iter().chain(&d.named_response) {
        if !e.response.contains(c) {
            out.push(format!(
                "{at}: names response code `{c}`, which the service never answers"
            ));
        }
    }
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

#[test]
fn every_code_the_service_emits_is_documented_and_every_documented_code_exists() {
    let sources = service_sources();
    let e = emitted(&sources);
    let d = documented(&doc_files());
    // The extraction must find something on each side, or the comparison proves nothing.
    for c in [
        "HB-Q-TIMEOUT",
        "HB-SNAP-FAIL",
        "HB-RL-REJECT",
        "HB-BRK-OPEN",
        "HB-UNCODED",
    ] {
        assert!(
            e.log.contains(c),
            "log code {c} not found in src/service: {:?}",
            e.log
        );
    }
    for c in [
        "not-found",
        "method-not-allowed",
        "rate-limited",
        "overloaded",
        "internal",
    ] {
        assert!(
            e.response.contains(c),
            "response code {c} not found in src/service: {:?}",
            e.response
        );
    }
    assert!(
        codes(&d.log_tables, Some("docs/configuration.md")).len() >= 10,
        "the Log codes table of docs/configuration.md was not found: {:?}",
        d.log_tables
    );
    assert!(
        codes(&d.error_tables, Some("docs/api.md")).len() >= 10,
        "the Error codes table of docs/api.md was not found: {:?}",
        d.error_tables
    );
    assert!(
        !d.named_response.is_empty(),
        "no response code named in prose"
    );
    let diffs = differences(&e, &d);
    assert!(
        diffs.is_empty(),
        "the docs and the service disagree on {} code(s) (source files read: {}):\n{}",
        diffs.len(),
        sources
            .iter()
            .map(|(p, _)| rel(p))
            .collect::<Vec<_>>()
            .join(", "),
        diffs.join("\n")
    );
}

/// The comparison catches what the review found (a runbook naming `HB-SNAPSHOT`, response
/// codes listed as log codes) and a code the docs leave out.
#[test]
fn the_docs_check_fails_on_the_mistakes_it_guards_against() {
    let source = r##"
        tracing::error!(code = "HB-SNAP-FAIL", "snapshot failed");
        tracing::warn!(code = "HB-NEW", "undocumented");
        AppError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "…",
        );
        const B: &str = r#"{"error":{"code":"rate-limited","message":"…"}}"#;
    "##;
    let e = emitted(&[(PathBuf::from("x.rs"), source.to_string())]);
    assert_eq!(
        e.log,
        BTreeSet::from(["HB-SNAP-FAIL".to_string(), "HB-NEW".to_string()])
    );
    assert!(
        e.response.contains("method-not-allowed"),
        "{:?}",
        e.response
    );
    let docs = vec![
        (
            root().join("docs/configuration.md"),
            "## Log codes\n\n| code | level | meaning |\n|---|---|---|\n| `HB-SNAP-FAIL` | error | x |\n"
                .to_string(),
        ),
        (
            root().join("docs/api.md"),
            "## Error codes\n\n| code | status | when |\n|---|---|---|\n| `method-not-allowed` | 405 | x |\n| `rate-limited` | 429 | x |\n\nAnswers `404 no-such-code`.\n"
                .to_string(),
        ),
        (
            root().join("runbooks/r.md"),
            "## Log analysis\n\nlook for `HB-SNAPSHOT` errors\n\n| code | meaning |\n|---|---|\n| `rate-limited` | rejected |\n"
                .to_string(),
        ),
    ];
    let diffs = differences(&e, &documented(&docs)).join("\n");
    for expected in [
        "log code `HB-NEW` is emitted by src/service but missing",
        "runbooks/r.md:3: names log code `HB-SNAPSHOT`",
        "runbooks/r.md:7: lists `rate-limited` in a table of log codes: a response code",
        "docs/api.md:8: names response code `no-such-code`",
    ] {
        assert!(
            diffs.contains(expected),
            "missing {expected:?} in:\n{diffs}"
        );
    }
}

// ---- every error the service answers is the documented JSON ---------------------------

mod errors {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::{Request, StatusCode, header};
    use preflight::service::store::Store;
    use preflight::service::{AppState, Config, Shared, app};
    use tower::ServiceExt as _;

    const TOKEN: &str = "docs-test-token";

    /// A ready service over a store in `dir`, with the admin API mounted and the limiter off
    /// (the sweep below sends many requests from one address).
    fn state(dir: &std::path::Path) -> Shared {
        let yaml = format!("admin:\n  token: {TOKEN}\nrate_limit:\n  enabled: false\n");
        let mut cfg = Config::parse("test.yaml", &yaml).unwrap();
        cfg.data_dir = dir.to_path_buf();
        let store = Arc::new(Store::open(&dir.join("core.db")).unwrap());
        let s: Shared = Arc::new(AppState::new(cfg, store));
        s.ready.store(true, Ordering::Relaxed);
        s
    }

    fn request(method: &str, path: &str, body: impl Into<Body>) -> Request<Body> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(body.into())
            .unwrap();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    }

    struct Answer {
        status: StatusCode,
        content_type: String,
        allow: Option<String>,
        body: Vec<u8>,
    }

    async fn send(s: &Shared, req: Request<Body>) -> Answer {
        let res = app(s.clone()).oneshot(req).await.unwrap();
        let h = res.headers();
        let text =
            |n: header::HeaderName| h.get(n).map(|v| v.to_str().unwrap_or_default().to_string());
        let (status, content_type, allow) = (
            res.status(),
            text(header::CONTENT_TYPE).unwrap_or_default(),
            text(header::ALLOW),
        );
        let body = axum::body::to_bytes(res.into_body(), 1 << 22)
            .await
            .unwrap()
            .to_vec();
        Answer {
            status,
            content_type,
            allow,
            body,
        }
    }

    /// The `code` of a documented error body, or why the body is not one.
    fn error_code(a: &Answer) -> Result<String, String> {
        if a.content_type != "application/json" {
            return Err(format!("content-type {:?}", a.content_type));
        }
        let v: serde_json::Value = serde_json::from_slice(&a.body)
            .map_err(|e| format!("not JSON ({e}): {:?}", String::from_utf8_lossy(&a.body)))?;
        match (
            v.pointer("/error/code").and_then(|c| c.as_str()),
            v.pointer("/error/message").and_then(|c| c.as_str()),
        ) {
            (Some(code), Some(_)) => Ok(code.to_string()),
            _ => Err(format!("not {{\"error\":{{\"code\",\"message\"}}}}: {v}")),
        }
    }

    /// Regression (issue 15): api.md said every error body is JSON, but a 405 had an empty
    /// body.
    #[tokio::test]
    async fn a_wrong_method_is_405_with_allow_and_a_json_body() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        for (method, path, allow) in [
            ("POST", "/healthz", "GET,HEAD"),
            ("DELETE", "/v1/ticks", "POST"),
            ("GET", "/v1/graph/build", "POST"),
            ("PUT", "/admin/faults", "POST,DELETE"),
        ] {
            let a = send(&s, request(method, path, &b""[..])).await;
            assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(a.allow.as_deref(), Some(allow), "{method} {path}");
            assert_eq!(
                error_code(&a).as_deref(),
                Ok("method-not-allowed"),
                "{method} {path}"
            );
        }
    }

    /// Errors axum itself would answer in plain text are JSON too.
    #[tokio::test]
    async fn extractor_rejections_are_json() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        let a = send(
            &s,
            request("GET", "/v1/correlations?market=m1&market=m2", &b""[..]),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_eq!(error_code(&a).as_deref(), Ok("bad-query"));
        // Past axum's 2 MiB default limit of an admin body.
        let big = vec![b' '; 3 << 20];
        let a = send(&s, request("POST", "/admin/faults", big)).await;
        assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error_code(&a).as_deref(), Ok("body-too-large"));
        let a = send(&s, request("GET", "/nope", &b""[..])).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        assert_eq!(error_code(&a).as_deref(), Ok("not-found"));
    }

    /// Every route with every common method and a malformed body: each 4xx/5xx answer is
    /// the documented JSON error with a code from the Error codes table of docs/api.md.
    #[tokio::test]
    async fn every_error_answer_of_a_sweep_is_documented_json() {
        let documented = super::codes(
            &super::documented(&super::doc_files()).error_tables,
            Some("docs/api.md"),
        );
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        let paths = [
            "/healthz",
            "/readyz",
            "/metrics",
            "/status",
            "/v1/ticks",
            "/v1/ticks/lookup",
            "/v1/graph/build",
            "/v1/detections",
            "/v1/correlations",
            "/v1/correlations?market=nowhere",
            "/v1/correlations?market=m1&window=0s",
            "/admin/faults",
            "/admin/breaker/reset",
            "/admin/snapshot",
            "/admin/retention/sweep",
            "/no/such/route",
        ];
        let mut errors = 0;
        let mut bad = Vec::new();
        for path in paths {
            for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
                let a = send(&s, request(method, path, &b"{"[..])).await;
                if a.status.is_success() {
                    continue;
                }
                errors += 1;
                match error_code(&a) {
                    Ok(code) if documented.contains(&code) => {}
                    Ok(code) => bad.push(format!(
                        "{method} {path}: {} with code `{code}`, not in docs/api.md",
                        a.status
                    )),
                    Err(why) => bad.push(format!("{method} {path}: {} {why}", a.status)),
                }
            }
        }
        assert!(errors >= 40, "the sweep provoked only {errors} errors");
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }
}
