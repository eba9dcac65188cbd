//! TLS to an `https://` target: one rustls client configuration (ring provider) shared by the
//! checks' HTTP client and the load generator, built from `target.tls`, and handshake
//! failures explained (unknown CA, name mismatch, expired) by finding the rustls error in an
//! error's source chain.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
};

/// What `target.tls` says, with paths as given (relative to the working directory).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub ca: Option<std::path::PathBuf>,
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
    pub insecure_skip_verify: bool,
}

/// The TLS client configuration of a target.
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<ClientConfig>,
    /// Server certificates are not verified (`target.tls.insecure_skip_verify`).
    pub insecure: bool,
    /// Whether a client certificate is presented (mutual TLS).
    pub client_auth: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("insecure", &self.insecure)
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file; an error names the file and the field.
fn read_certs(path: &Path, field: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("`{field}`: cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{field}`: {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "`{field}`: {} holds no certificate (`-----BEGIN CERTIFICATE-----`)",
            path.display()
        ));
    }
    Ok(certs)
}

impl Tls {
    /// Builds the configuration: the system's roots plus `ca`, SNI from the URL's host
    /// (rustls does that per connection), HTTP/1.1, and the client certificate when given.
    pub fn new(opts: &TlsOptions) -> Result<Self, String> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = if opts.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
        } else {
            // The system's roots through the platform verifier — the same verifier and roots
            // as every other client of preflight (`http_client::tls_config`) — plus `ca`.
            let extra = match &opts.ca {
                Some(ca) => {
                    let certs = read_certs(ca, "target.tls.ca")?;
                    // Each must be a usable trust anchor; say which file holds one that is not.
                    let mut probe = RootCertStore::empty();
                    for cert in &certs {
                        probe.add(cert.clone()).map_err(|e| {
                            format!(
                                "`target.tls.ca`: {} holds a certificate rustls rejects: {e}",
                                ca.display()
                            )
                        })?;
                    }
                    certs
                }
                None => Vec::new(),
            };
            let verifier =
                rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider())
                    .map_err(|e| format!("TLS: loading the system's certificate roots: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        };
        let mut config = match (&opts.client_cert, &opts.client_key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "target.tls.client_cert")?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    format!(
                        "`target.tls.client_key`: no private key read from {}: {e}",
                        key.display()
                    )
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("`target.tls.client_cert`/`client_key`: {e}"))?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => {
                return Err("`target.tls.client_cert` needs `target.tls.client_key`".into());
            }
            (None, Some(_)) => {
                return Err("`target.tls.client_key` needs `target.tls.client_cert`".into());
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            config: Arc::new(config),
            insecure: opts.insecure_skip_verify,
            client_auth: opts.client_cert.is_some(),
        })
    }

    /// The server name to verify and send (SNI) for `host` (a name or an IP literal).
    pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
        ServerName::try_from(host.to_string())
            .map_err(|e| format!("`{host}` is not a valid TLS server name: {e}"))
    }
}

/// Accepts any server certificate (`insecure_skip_verify`); handshake signatures are still
/// checked, so the connection is at least to the holder of the presented key.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The rustls error somewhere in `e`'s source chain (looking inside `io::Error`s, whose
/// `source()` skips the error they wrap).
pub fn find_rustls_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = find_rustls_error(inner)
        {
            return Some(found);
        }
        cur = err.source();
    }
    None
}

/// What a TLS failure means for the operator, with what to do about it; `host` is the
/// name the certificate was checked against.
pub fn explain(e: &rustls::Error, host: &str) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                "TLS: the server's certificate is signed by an unknown CA (not in the system's roots; \
                 set `target.tls.ca` to the CA's PEM file)"
                    .into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "TLS: the server's certificate is not valid for `{host}` (name mismatch: {c:?})"
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("TLS: the server's certificate has expired ({c:?})")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("TLS: the server's certificate is not valid yet ({c:?})")
            }
            CertificateError::Revoked => "TLS: the server's certificate is revoked".into(),
            CertificateError::BadSignature => {
                "TLS: the server's certificate has a bad signature".into()
            }
            other => format!("TLS: the server's certificate is invalid ({other:?})"),
        },
        E::AlertReceived(AlertDescription::CertificateRequired) => {
            "TLS: the server requires a client certificate (set `target.tls.client_cert` and `client_key`)"
                .into()
        }
        E::AlertReceived(
            a @ (AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied),
        ) => format!(
            "TLS: the server rejected the client certificate (alert {a:?}; check `target.tls.client_cert`)"
        ),
        E::AlertReceived(a) => format!("TLS: the server ended the handshake (alert {a:?})"),
        other => format!("TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rustls_error_is_found_inside_io_errors() {
        let inner = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, inner);
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let outer = Outer(io);
        let found = find_rustls_error(&outer).expect("found");
        assert!(explain(found, "h").contains("unknown CA"));
        assert!(explain(found, "h").contains("target.tls.ca"));
    }

    #[test]
    fn causes_are_named() {
        let e = |c| rustls::Error::InvalidCertificate(c);
        assert!(
            explain(&e(CertificateError::NotValidForName), "db.example").contains("`db.example`")
        );
        assert!(explain(&e(CertificateError::Expired), "h").contains("expired"));
        let alert = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert!(explain(&alert, "h").contains("client certificate"));
    }

    #[test]
    fn bad_files_are_errors_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem").unwrap();
        let err = Tls::new(&TlsOptions {
            ca: Some(empty),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.contains("target.tls.ca"), "{err}");
        let err = Tls::new(&TlsOptions {
            ca: Some(dir.path().join("missing.pem")),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
        let err = Tls::new(&TlsOptions {
            client_cert: Some(dir.path().join("c.pem")),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.contains("client_key"), "{err}");
    }
}
