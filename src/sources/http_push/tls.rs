//! HTTPS for the receiver: a rustls server configuration (ring provider, TLS 1.2 and 1.3, ALPN
//! `http/1.1`) built once from a PEM certificate chain and a PEM private key.
//!
//! Reads the two files once, at start (and in `check-config`); errors name the configuration
//! key and the file, never what is in it. No client certificates are asked for: cameras
//! authenticate with the allow-list and HTTP Basic auth (see [`super::guard`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{
    self, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

/// TLS settings of a listener: the rustls configuration and whether plain HTTP is still
/// served on the same port.
///
/// `Debug` shows the plain-HTTP flag only; two values are equal when they share the same
/// rustls configuration (one [`ServerTls::from_pem_files`] call) and flag.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    /// Serve plain HTTP too: a connection whose first byte is not a TLS handshake record
    /// (`0x16`) is served as plain HTTP. `false`: it gets a fixed `400` and is closed
    /// (counted in `plain_http_on_tls_port`).
    pub plain_http: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("plain_http", &self.plain_http)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.plain_http == other.plain_http
    }
}

impl Eq for ServerTls {}

/// Why the receiver's TLS configuration could not be built. Messages name the configuration
/// key (`cert_file`, `key_file`) and the file, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the {} {}: {source}", what(.key), .path.display())]
    Read {
        /// `cert_file` or `key_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not usable PEM, or holds no item of the expected kind.
    #[error("{} {}: {problem}", what(.key), .path.display())]
    Pem {
        /// `cert_file` or `key_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong, without any of the file's content.
        problem: &'static str,
    },
    /// The private key does not belong to the (first) certificate of the chain.
    #[error("the private key in {} does not belong to the certificate in {}", .key.display(), .cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the certificate or key otherwise (unsupported key type, ...).
    #[error("private key {} with certificate {}: {message}", .key.display(), .cert.display())]
    Rejected {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason (it never includes key material).
        message: String,
    },
}

impl TlsError {
    /// The configuration key the problem is about: `cert_file` or `key_file`.
    pub fn config_key(&self) -> &'static str {
        match self {
            TlsError::Read { key, .. } | TlsError::Pem { key, .. } => key,
            TlsError::KeyMismatch { .. } | TlsError::Rejected { .. } => "key_file",
        }
    }
}

/// What a configuration key names, for messages.
fn what(key: &str) -> &'static str {
    if key == "cert_file" {
        "certificate chain"
    } else {
        "private key"
    }
}

/// A content-free description of a PEM error (the library's own message can quote a line of
/// the file, which may be key material).
fn pem_problem(e: &rustls::pki_types::pem::Error, none_found: &'static str) -> &'static str {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::NoItemsFound => none_found,
        E::MissingSectionEnd { .. } => "a PEM section has no END line",
        E::IllegalSectionStart { .. } => "malformed PEM BEGIN line",
        E::Base64Decode(_) => "bad base64 inside a PEM section",
        E::SectionTooLarge => "a PEM section is larger than 256 MB",
        _ => "not a readable PEM file",
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

impl ServerTls {
    /// Build from a PEM certificate chain (`cert_file`: the server certificate first, then
    /// any intermediates, e.g. Let's Encrypt's `fullchain.pem`) and a PEM private key
    /// (`key_file`: PKCS#8, PKCS#1 RSA or SEC1 EC, e.g. `privkey.pem`).
    ///
    /// Protocols: TLS 1.3 and TLS 1.2 (rustls' safe defaults with the ring provider; cameras'
    /// embedded TLS stacks often stop at 1.2). ALPN offers `http/1.1` only.
    ///
    /// Errors: a file that cannot be read, holds no certificate / no private key, is not
    /// valid PEM, or a key that does not match the certificate ([`TlsError`]).
    pub fn from_pem_files(
        cert_file: &Path,
        key_file: &Path,
        plain_http: bool,
    ) -> Result<ServerTls, TlsError> {
        let pem = read("cert_file", cert_file)?;
        let chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                key: "cert_file",
                path: cert_file.to_path_buf(),
                problem: pem_problem(&e, "no PEM certificate found"),
            })?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                key: "cert_file",
                path: cert_file.to_path_buf(),
                problem: "no PEM certificate found",
            });
        }
        let pem = read("key_file", key_file)?;
        let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
            key: "key_file",
            path: key_file.to_path_buf(),
            problem: pem_problem(&e, "no PEM private key found"),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let rejected = |e: rustls::Error| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert: cert_file.to_path_buf(),
                key: key_file.to_path_buf(),
            },
            other => TlsError::Rejected {
                cert: cert_file.to_path_buf(),
                key: key_file.to_path_buf(),
                message: other.to_string(),
            },
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(rejected)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(rejected)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            plain_http,
        })
    }

    /// The same certificate without ALPN, for protocols other than HTTP (SMTP STARTTLS): a
    /// client that offers ALPN is not refused for not offering `http/1.1` (RFC 7301 §3.2).
    pub fn without_alpn(&self) -> ServerTls {
        let mut config = (*self.config).clone();
        config.alpn_protocols.clear();
        ServerTls {
            config: Arc::new(config),
            plain_http: self.plain_http,
        }
    }

    /// An acceptor for one connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        _dir: tempfile::TempDir,
        cert: PathBuf,
        key: PathBuf,
        other_key: PathBuf,
    }

    fn files() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["camqtt.local".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let f = Files {
            cert: dir.path().join("fullchain.pem"),
            key: dir.path().join("privkey.pem"),
            other_key: dir.path().join("other.pem"),
            _dir: dir,
        };
        std::fs::write(&f.cert, cert.pem()).unwrap();
        std::fs::write(&f.key, key.serialize_pem()).unwrap();
        std::fs::write(&f.other_key, other.serialize_pem()).unwrap();
        f
    }

    #[test]
    fn a_matching_chain_and_key_load() {
        let f = files();
        let t = ServerTls::from_pem_files(&f.cert, &f.key, true).unwrap();
        assert!(t.plain_http);
        assert_eq!(t.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(t, t.clone());
        assert!(format!("{t:?}").contains("plain_http: true"));
    }

    #[test]
    fn errors_name_the_key_and_file_never_the_content() {
        let f = files();
        let missing = f.cert.with_file_name("missing.pem");
        let e = ServerTls::from_pem_files(&missing, &f.key, true).unwrap_err();
        assert_eq!(e.config_key(), "cert_file");
        assert!(e.to_string().contains("missing.pem"), "{e}");

        // The key where the certificate belongs, and the other way round.
        let e = ServerTls::from_pem_files(&f.key, &f.key, true).unwrap_err();
        assert_eq!(e.config_key(), "cert_file");
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let e = ServerTls::from_pem_files(&f.cert, &f.cert, true).unwrap_err();
        assert_eq!(e.config_key(), "key_file");
        assert!(e.to_string().contains("no PEM private key"), "{e}");

        // Someone else's key.
        let e = ServerTls::from_pem_files(&f.cert, &f.other_key, true).unwrap_err();
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
        assert_eq!(e.config_key(), "key_file");

        // A damaged key: the message must not quote the file.
        let text = std::fs::read_to_string(&f.key).unwrap();
        let secret_line = text.lines().nth(1).unwrap().to_string();
        let damaged = f.key.with_file_name("damaged.pem");
        std::fs::write(&damaged, text.replace("-----END", "-----XND")).unwrap();
        let e = ServerTls::from_pem_files(&f.cert, &damaged, true).unwrap_err();
        let msg = format!("{e} {e:?}");
        assert!(msg.contains("damaged.pem"), "{msg}");
        assert!(!msg.contains(&secret_line), "{msg}");
        assert!(!msg.contains("PRIVATE KEY"), "{msg}");
    }
}
