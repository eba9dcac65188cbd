//! Issue 15, "a leaked secret": a `${env:…}` value in a request line, a request header and an
//! expected body never appears in any report format, even when the target echoes it back.

use std::path::{Path, PathBuf};

use axum::http::{HeaderMap, StatusCode, Uri};
use preflight::engine::run::CheckOptions;
use preflight::policy::{Options, load_str};
use preflight::report::{self, Format, RenderOpts};

const SECRET: &str = "s3cr3t-VALUE-4711";

/// A wrong service built to leak: every request is answered 500 with the query string and
/// the `x-api-key` header echoed in a JSON body, so the check fails and quotes what it saw.
async fn echo_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let app = axum::Router::new().fallback(|uri: Uri, headers: HeaderMap| async move {
        let key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = serde_json::json!({"query": uri.query().unwrap_or_default(), "key": key});
        (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body))
    });
    // Lives as long as the test's runtime: it stops with the test.
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

const POLICY: &str = "version: 1
name: secrets
checks:
  - id: leaky
    kind: http
    severity: critical
    request: GET /items?token=${env:API_TOKEN}
    headers: {x-api-key: '${env:API_TOKEN}'}
    expect:
      status: 200
      json: {/key: 'not-${env:API_TOKEN}'}
      body_matches: 'token=${env:API_TOKEN}-x'
";

async fn run(url: &str, redact: bool) -> Vec<(Format, String)> {
    let opts = Options {
        env: Box::new(|name| (name == "API_TOKEN").then(|| SECRET.to_string())),
        today: chrono::NaiveDate::from_ymd_opt(2026, 6, 1).expect("a date"),
        missing_env_warns: false,
    };
    let loaded = load_str(Path::new("secrets.yaml"), POLICY, &opts)
        .unwrap_or_else(|d| panic!("the policy loads: {d:?}"));
    assert!(
        loaded.secrets.iter().any(|s| s.expose() == SECRET),
        "the loader returns the interpolated value"
    );
    let secrets = if redact { loaded.secrets } else { vec![] };
    let report = preflight::engine::run::check(CheckOptions {
        target: Some(url.to_string()),
        concurrency: 1,
        today: chrono::NaiveDate::from_ymd_opt(2026, 6, 1).expect("a date"),
        secrets,
        ..CheckOptions::new(
            loaded.policy,
            vec![PathBuf::from("secrets.yaml")],
            PathBuf::from(env!("CARGO_BIN_EXE_preflight")),
        )
    })
    .await
    .expect("the run starts");
    assert_eq!(
        report.results[0].status,
        preflight::outcome::Status::Fail,
        "{:?}",
        report.results[0]
    );
    [
        Format::Human,
        Format::Json,
        Format::Junit,
        Format::Markdown,
        Format::Html,
    ]
    .into_iter()
    .map(|f| {
        let mut out = Vec::new();
        report::write(f, &report, &mut out, &RenderOpts::default()).expect("renders");
        (f, String::from_utf8_lossy(&out).into_owned())
    })
    .collect()
}

#[tokio::test]
async fn interpolated_values_appear_in_no_report_format() {
    let url = echo_server().await;
    // The test can fail: without the secrets, the reports quote the value.
    let leaky = run(&url, false).await;
    assert!(
        leaky.iter().any(|(_, text)| text.contains(SECRET)),
        "the fake service no longer makes the reports quote the value"
    );
    for (format, text) in run(&url, true).await {
        assert!(
            !text.contains(SECRET),
            "{format:?} report shows the secret:\n{text}"
        );
    }
}
