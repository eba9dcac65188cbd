//! HTTPS targets: the core service behind a TLS-terminating proxy written here, with
//! certificates from a CA made in the test (rcgen). GO with `target.tls.ca`; an ERROR that
//! names the cause with no CA, a wrong host name, an expired certificate; mutual TLS: GO with
//! the client certificate, an ERROR without.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::reach::{Run, check_json};
use crate::support;

/// A certificate and its key.
struct Issued {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Issued {
    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }
    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
    fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, self.cert.pem()).unwrap();
        std::fs::write(&key, self.key.serialize_pem()).unwrap();
        (cert, key)
    }
}

fn ca(name: &str) -> Issued {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Issued { cert, key }
}

/// A leaf certificate for `names` signed by `ca`; `expired` puts its validity in the past.
fn leaf(ca: &Issued, names: &[&str], expired: bool) -> Issued {
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("client"),
    );
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    Issued { cert, key }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS-terminating proxy on 127.0.0.1 in front of `upstream` (a plain-HTTP port): it
/// presents `server`, and with `client_ca` requires a client certificate signed by it.
/// Serves at most 2 000 connections for at most two minutes, then stops.
fn tls_proxy(server: &Issued, client_ca: Option<&Issued>, upstream: u16) -> u16 {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der()).unwrap();
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(vec![server.der()], server.key_der())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let end = tokio::time::Instant::now() + Duration::from_secs(120);
            for _ in 0..2_000 {
                let Ok(Ok((tcp, _))) = tokio::time::timeout_at(end, listener.accept()).await else {
                    break;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let _ = tokio::time::timeout(
                        Duration::from_secs(60),
                        tokio::io::copy_bidirectional(&mut tls, &mut up),
                    )
                    .await;
                });
            }
        });
    });
    port
}

/// The service and a temporary directory for certificates and policies.
struct Rig {
    svc: support::Service,
    dir: tempfile::TempDir,
    ca: Issued,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let svc = support::Service::start(&support::config("core.yaml"), &dir.path().join("data"));
        Rig {
            svc,
            dir,
            ca: ca("preflight test CA"),
        }
    }

    fn upstream(&self) -> u16 {
        self.svc.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a policy with `target:` (YAML lines, indented by two) and `checks`.
    fn policy(&self, name: &str, target: &str, body: &str) -> PathBuf {
        let p = self.path(&format!("{name}.yaml"));
        std::fs::write(
            &p,
            format!("version: 1\nname: {name}\ntarget:\n{target}{body}"),
        )
        .unwrap();
        p
    }
}

/// smoke.yaml's checks, plus the load generator over TLS.
fn go_body() -> String {
    let smoke = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/smoke.yaml");
    format!(
        "include: [{}]\nchecks:\n  - id: tls-load\n    kind: load_slo\n    request: GET /healthz\n    \
         rate: 40/s\n    duration: 1s\n    connections: 4\n    thresholds: [\"errors < 1%\"]\n",
        smoke.display()
    )
}

/// One check, no retry: a handshake failure is reported at once.
const ONE_CHECK: &str =
    "checks:\n  - id: healthz\n    kind: http\n    severity: critical\n    request: GET /healthz\n";

fn assert_go(run: &Run, what: &str) {
    assert_eq!(
        run.json["verdict"],
        "GO",
        "{what}: {:?}\n{:#}\n{}",
        run.statuses(),
        run.json["results"],
        run.stderr
    );
    assert_eq!(run.result("tls-load")["status"], "PASS", "{what}");
}

fn assert_tls_error(run: &Run, needle: &str) {
    let r = run.result("healthz");
    assert_eq!(r["status"], "ERROR", "{r:#}");
    let summary = r["summary"].as_str().unwrap();
    assert!(
        summary.contains("TLS") && summary.contains(needle),
        "expected `{needle}` in: {summary}"
    );
    assert_eq!(run.json["verdict"], "NO-GO");
}

#[test]
fn https_with_a_private_ca() {
    let rig = Rig::new();
    let server = leaf(&rig.ca, &["localhost", "127.0.0.1"], false);
    let port = tls_proxy(&server, None, rig.upstream());
    let (ca_pem, _) = rig.ca.write(rig.dir.path(), "ca");
    let url = format!("https://localhost:{port}");

    // GO with the CA; the checked address is reported.
    let p = rig.policy(
        "with-ca",
        &format!("  url: {url}\n  tls: {{ ca: {} }}\n", ca_pem.display()),
        &go_body(),
    );
    let run = check_json(&[p.to_str().unwrap()], &[]);
    assert_go(&run, "with tls.ca");
    assert_eq!(run.json["target"]["address"], format!("127.0.0.1:{port}"));

    // The same by IP literal (the certificate names 127.0.0.1 too).
    let p = rig.policy(
        "with-ca-ip",
        &format!(
            "  url: https://127.0.0.1:{port}\n  tls: {{ ca: {} }}\n",
            ca_pem.display()
        ),
        &go_body(),
    );
    assert_go(&check_json(&[p.to_str().unwrap()], &[]), "by IP");

    // No CA: the system's roots do not know it.
    let p = rig.policy("no-ca", &format!("  url: {url}\n"), ONE_CHECK);
    assert_tls_error(&check_json(&[p.to_str().unwrap()], &[]), "unknown CA");

    // insecure_skip_verify: GO, with the warning in the report.
    let p = rig.policy(
        "insecure",
        &format!("  url: {url}\n  tls: {{ insecure_skip_verify: true }}\n"),
        ONE_CHECK,
    );
    let run = check_json(&[p.to_str().unwrap()], &[]);
    assert_eq!(run.json["verdict"], "GO", "{:#}", run.json);
    let warnings = run.json["target"]["warnings"].to_string();
    assert!(warnings.contains("insecure_skip_verify"), "{warnings}");
}

#[test]
fn https_names_a_wrong_host_and_an_expired_certificate() {
    let rig = Rig::new();
    let (ca_pem, _) = rig.ca.write(rig.dir.path(), "ca");
    let tls = format!("  tls: {{ ca: {} }}\n", ca_pem.display());

    let other = leaf(&rig.ca, &["other.example"], false);
    let port = tls_proxy(&other, None, rig.upstream());
    let p = rig.policy(
        "wrong-name",
        &format!("  url: https://localhost:{port}\n{tls}"),
        ONE_CHECK,
    );
    assert_tls_error(
        &check_json(&[p.to_str().unwrap()], &[]),
        "not valid for `localhost`",
    );

    let expired = leaf(&rig.ca, &["localhost"], true);
    let port = tls_proxy(&expired, None, rig.upstream());
    let p = rig.policy(
        "expired",
        &format!("  url: https://localhost:{port}\n{tls}"),
        ONE_CHECK,
    );
    assert_tls_error(&check_json(&[p.to_str().unwrap()], &[]), "expired");
}

#[test]
fn https_with_mutual_tls() {
    let rig = Rig::new();
    let server = leaf(&rig.ca, &["localhost"], false);
    let client_ca = ca("preflight test client CA");
    let client = leaf(&client_ca, &["preflight-client"], false);
    let port = tls_proxy(&server, Some(&client_ca), rig.upstream());
    let (ca_pem, _) = rig.ca.write(rig.dir.path(), "ca");
    let (cert, key) = client.write(rig.dir.path(), "client");
    let url = format!("https://localhost:{port}");

    let p = rig.policy(
        "mtls",
        &format!(
            "  url: {url}\n  tls:\n    ca: {}\n    client_cert: {}\n    client_key: {}\n",
            ca_pem.display(),
            cert.display(),
            key.display()
        ),
        &go_body(),
    );
    assert_go(
        &check_json(&[p.to_str().unwrap()], &[]),
        "with a client certificate",
    );

    let p = rig.policy(
        "no-client-cert",
        &format!("  url: {url}\n  tls: {{ ca: {} }}\n", ca_pem.display()),
        ONE_CHECK,
    );
    assert_tls_error(
        &check_json(&[p.to_str().unwrap()], &[]),
        "client certificate",
    );
}

/// A CA file that is not there is a usage error naming the field, before anything runs.
#[test]
fn a_missing_ca_file_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.yaml");
    std::fs::write(
        &p,
        format!(
            "version: 1\nname: x\ntarget:\n  url: https://127.0.0.1:9\n  tls: {{ ca: {} }}\n{ONE_CHECK}",
            dir.path().join("nope.pem").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args(["check", p.to_str().unwrap(), "--no-progress"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("target.tls.ca"), "{err}");
}
