//! Ed25519 keys for signing a run's chain head, in the PEM forms OpenSSL reads and writes:
//! the private key as PKCS#8 (`-----BEGIN PRIVATE KEY-----`, also what `openssl genpkey
//! -algorithm ed25519` writes), the public key as SubjectPublicKeyInfo (`-----BEGIN PUBLIC
//! KEY-----`, what `openssl pkey -pubout` writes). ring does the cryptography.
//!
//! A key is named by its fingerprint, `SHA256:` and the unpadded base64 of the SHA-256 of
//! the raw 32-byte public key (the form `ssh-keygen -l` prints).

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the 32 key bytes.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Lowercase hex of the SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A key problem, for people.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Bad { path: PathBuf, why: String },
    #[error("{0} exists: not overwriting a key (remove it, or choose another --out)")]
    Exists(PathBuf),
    #[error("generating a key: the system's random source failed")]
    Random,
}

/// The base64 body of the first PEM block labelled `label`.
fn pem_body(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text.split_once(&begin)?.1.split_once(&end)?.0;
    let joined: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(joined).ok()
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// A public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Reads a `PUBLIC KEY` PEM file (or a private key's file: its public half).
    pub fn read(path: &Path) -> Result<PublicKey, KeyError> {
        let text = read(path)?;
        if let Some(der) = pem_body(&text, "PUBLIC KEY") {
            return der
                .strip_prefix(&SPKI_PREFIX[..])
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
                .map(PublicKey)
                .ok_or_else(|| KeyError::Bad {
                    path: path.to_path_buf(),
                    why: "not an Ed25519 public key".into(),
                });
        }
        Ok(Signer::parse(path, &text)?.public())
    }

    /// From 64 hex digits (as a run's `start` record carries it).
    pub fn from_hex(s: &str) -> Result<PublicKey, String> {
        unhex(s)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(PublicKey)
            .ok_or_else(|| format!("`{s}` is not a 32-byte hex public key"))
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// `SHA256:` and the unpadded base64 of the SHA-256 of the key.
    pub fn fingerprint(&self) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.0);
        format!("SHA256:{}", STANDARD_NO_PAD.encode(d.as_ref()))
    }

    /// The PEM text (`PUBLIC KEY`).
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        pem("PUBLIC KEY", &der)
    }

    /// Whether `signature` (hex) signs the bytes of `hash` (hex text, as stored).
    pub fn verify_hash(&self, hash: &str, signature: &str) -> bool {
        let Some(sig) = unhex(signature) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(hash.as_bytes(), &sig)
            .is_ok()
    }
}

/// A private key that signs chain heads.
pub struct Signer(Ed25519KeyPair);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.public().fingerprint())
    }
}

impl Signer {
    /// Reads a PKCS#8 `PRIVATE KEY` PEM file.
    pub fn read(path: &Path) -> Result<Signer, KeyError> {
        Signer::parse(path, &read(path)?)
    }

    fn parse(path: &Path, text: &str) -> Result<Signer, KeyError> {
        let bad = |why: &str| KeyError::Bad {
            path: path.to_path_buf(),
            why: why.into(),
        };
        let der = pem_body(text, "PRIVATE KEY").ok_or_else(|| {
            bad("no `-----BEGIN PRIVATE KEY-----` block (make one with `preflight audit keygen`)")
        })?;
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map(Signer)
            .map_err(|e| bad(&format!("not an Ed25519 PKCS#8 key ({e})")))
    }

    pub fn public(&self) -> PublicKey {
        let mut k = [0u8; 32];
        k.copy_from_slice(self.0.public_key().as_ref());
        PublicKey(k)
    }

    /// Hex signature over the bytes of `hash` (hex text, as stored).
    pub fn sign_hash(&self, hash: &str) -> String {
        hex(self.0.sign(hash.as_bytes()).as_ref())
    }
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The two files [`keygen`] wrote.
#[derive(Debug)]
pub struct KeyFiles {
    pub private: PathBuf,
    pub public: PathBuf,
    pub fingerprint: String,
}

/// Writes a new key pair: `out` (the private key, mode 0600, never overwritten) and
/// `out.pub` (the public key).
pub fn keygen(out: &Path) -> Result<KeyFiles, KeyError> {
    let public_path = PathBuf::from(format!("{}.pub", out.display()));
    for p in [out, public_path.as_path()] {
        if p.exists() {
            return Err(KeyError::Exists(p.to_path_buf()));
        }
    }
    let rng = ring::rand::SystemRandom::new();
    let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Random)?;
    let signer = Ed25519KeyPair::from_pkcs8(doc.as_ref())
        .map(Signer)
        .map_err(|_| KeyError::Random)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyError::Io { path, source }
    };
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(out)
            .map_err(io(out))?
    };
    f.write_all(pem("PRIVATE KEY", doc.as_ref()).as_bytes())
        .map_err(io(out))?;
    let public = signer.public();
    std::fs::write(&public_path, public.to_pem()).map_err(io(&public_path))?;
    Ok(KeyFiles {
        private: out.to_path_buf(),
        public: public_path,
        fingerprint: public.fingerprint(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_abc_is_the_fips_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_key_pair_round_trips_through_its_pem_files_and_signs() {
        let dir = tempfile::tempdir().unwrap();
        let files = keygen(&dir.path().join("audit.key")).unwrap();
        let signer = Signer::read(&files.private).unwrap();
        let public = PublicKey::read(&files.public).unwrap();
        assert_eq!(signer.public(), public);
        assert_eq!(public.fingerprint(), files.fingerprint);
        assert_eq!(PublicKey::read(&files.private).unwrap(), public);
        let h = sha256_hex(b"head");
        let sig = signer.sign_hash(&h);
        assert!(public.verify_hash(&h, &sig));
        assert!(!public.verify_hash(&sha256_hex(b"other"), &sig));
        assert!(!public.verify_hash(&h, "zz"));
        let mode = std::fs::metadata(&files.private).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert!(matches!(keygen(&files.private), Err(KeyError::Exists(_))));
    }

    /// A key made by OpenSSL (`openssl genpkey -algorithm ed25519`, RFC 8410's example key)
    /// is read, and its public half is RFC 8410's.
    #[test]
    fn reads_an_openssl_pkcs8_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\n\
             MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
             -----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let k = Signer::read(&path).unwrap().public();
        assert_eq!(
            k.to_pem(),
            "-----BEGIN PUBLIC KEY-----\n\
             MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n\
             -----END PUBLIC KEY-----\n"
        );
        assert_eq!(PublicKey::from_hex(&k.to_hex()).unwrap(), k);
    }

    #[test]
    fn a_file_without_a_key_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, "hello").unwrap();
        let e = Signer::read(&path).unwrap_err().to_string();
        assert!(e.contains("preflight audit keygen"), "{e}");
    }
}
