//! Where every `reqwest` client of the crate starts. A leaf: it imports nothing of the crate,
//! so the bundled service may use it too.
//!
//! reqwest is built with rustls and no crypto provider of its own (`rustls-no-provider`, so
//! no aws-lc C build): left alone, building a client panics unless a process-wide rustls
//! provider is installed, and every client built re-reads and re-parses the system's root
//! certificates (measured: a `check` run 2–4× slower in debug builds, where checks build one
//! client per source address), and fails outright on a machine with no CA bundle — even for
//! plain HTTP. So this module builds one rustls configuration per process (ring provider,
//! the platform's verifier and roots) and hands it to every client.
//!
//! TLS of a particular target (a private CA, a client certificate) is set by passing another
//! `rustls::ClientConfig` to [`reqwest::ClientBuilder::tls_backend_preconfigured`] on the
//! builder (the last call wins); reqwest's `add_root_certificate`/`identity` have no effect
//! on a builder with a preconfigured TLS backend. [`tls_config`] is the default to start from.

use std::sync::{Arc, Once, OnceLock};

/// A `reqwest::ClientBuilder` with the shared TLS configuration. Use it (or [`client`])
/// instead of `reqwest::Client::new()`/`builder()`.
pub fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(tls_config())
}

/// A client with reqwest's defaults and the shared TLS configuration.
pub fn client() -> reqwest::Client {
    builder()
        .build()
        // Nothing left to fail: TLS is prebuilt and no resolver or proxy is configured.
        .expect("a default reqwest client with a prebuilt TLS configuration")
}

/// The TLS configuration every client starts from: rustls with the ring provider, the
/// platform's certificate verifier and roots (loaded once per process), HTTP/1.1 by ALPN.
/// With no usable system roots it still builds (plain HTTP must work on such a machine);
/// HTTPS handshakes then fail with an unknown issuer, and a CA must be given explicitly.
pub fn tls_config() -> rustls::ClientConfig {
    static CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            install_crypto_provider();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(rustls::DEFAULT_VERSIONS)
                // Unreachable: ring implements every default version; fall back to the
                // process default provider rather than panic.
                .unwrap_or_else(|_| rustls::ClientConfig::builder());
            let mut config = match rustls_platform_verifier::Verifier::new(provider) {
                Ok(verifier) => builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth(),
                Err(_) => builder
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            };
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            config
        })
        .clone()
}

/// Installs rustls's `ring` provider as the process default, once, for any rustls user that
/// asks for the default (reqwest does when a builder has no preconfigured TLS). A provider
/// installed earlier by someone else (an embedding program) is kept.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed: that one serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    /// Regression guard: with `rustls-no-provider`, `reqwest::Client::new()` panics unless a
    /// provider is installed; clients from here build, and so does a plain reqwest one after.
    #[test]
    fn clients_build_with_tls() {
        let c = super::builder().https_only(true).build();
        assert!(c.is_ok(), "{c:?}");
        let _ = super::client();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        let _ = reqwest::Client::new();
        assert_eq!(super::tls_config().alpn_protocols, [b"http/1.1".to_vec()]);
    }

    /// The client speaks TLS: an `https` request to a plain TCP listener on loopback starts
    /// with a TLS handshake record (0x16, version 3.x). The handshake then fails, as it must.
    #[tokio::test]
    async fn https_requests_start_a_tls_handshake() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 3];
            sock.read_exact(&mut head).await.unwrap();
            head
        });
        let client = super::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap();
        let sent = tokio::spawn(async move { client.get(&url).send().await });
        let head = tokio::time::timeout(std::time::Duration::from_secs(30), server)
            .await
            .expect("the client never connected")
            .unwrap();
        assert_eq!(
            head[..2],
            [0x16, 0x03],
            "not a TLS handshake record: {head:?}"
        );
        assert!(sent.await.unwrap().is_err());
    }
}
