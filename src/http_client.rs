//! Where every `reqwest` client of the crate starts. A leaf: it imports nothing of the crate,
//! so the bundled service may use it too.
//!
//! reqwest is built with rustls and no crypto provider of its own (`rustls-no-provider`):
//! building a client panics unless a process-wide rustls provider is installed. This module
//! installs rustls's `ring` provider once, before the first client is built, so no caller has
//! to remember it. TLS settings (roots, client certificates) are the caller's, on the builder.

use std::sync::Once;

/// A `reqwest::ClientBuilder` with the crypto provider in place. Use it (or [`client`])
/// instead of `reqwest::Client::new()`/`builder()`, which panic without a provider.
pub fn builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}

/// A client with reqwest's defaults (see [`builder`]).
pub fn client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::new()
}

/// Installs rustls's `ring` provider as the process default, once. A provider installed
/// earlier by someone else (an embedding program) is kept.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed: that one serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    /// Regression guard: with `rustls-no-provider`, building a client without an installed
    /// provider panics; the builder must install one first.
    #[test]
    fn clients_build_with_tls() {
        let c = super::builder().https_only(true).build();
        assert!(c.is_ok(), "{c:?}");
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        let _ = super::client();
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
