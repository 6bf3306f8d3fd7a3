//! rustls (ring) client configuration for `mqtts://` brokers: CA file or system roots, optional
//! client certificate (mutual TLS). Reads the PEM files once when the sink starts; errors name
//! the file, never its contents.

use std::path::Path;
use std::sync::Arc;

use rumqttc::tokio_rustls::rustls::{
    self, ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

use super::SinkError;
use super::config::TlsOptions;

fn read(what: &str, path: &Path) -> Result<Vec<u8>, SinkError> {
    std::fs::read(path)
        .map_err(|e| SinkError::Tls(format!("cannot read {what} {}: {e}", path.display())))
}

fn certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, SinkError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SinkError::Tls(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(SinkError::Tls(format!(
            "{what} {}: no PEM certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

/// Build the rustls client configuration for `t`.
pub(crate) fn client_config(t: &TlsOptions) -> Result<ClientConfig, SinkError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SinkError::Tls(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    match &t.ca_file {
        Some(path) => {
            for cert in certs("CA file", path)? {
                roots
                    .add(cert)
                    .map_err(|e| SinkError::Tls(format!("CA file {}: {e}", path.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(SinkError::Tls(
                    "no system CA certificates found; set mqtt.tls.ca_file".into(),
                ));
            }
        }
    }
    let builder = builder.with_root_certificates(roots);
    let config = match (&t.cert_file, &t.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certs("client certificate", cert)?;
            let pem = read("client key", key)?;
            let key_der = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| SinkError::Tls(format!("client key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| SinkError::Tls(format!("client certificate/key: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(SinkError::Tls(
                "a client certificate needs both cert_file and key_file".into(),
            ));
        }
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_reported_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = client_config(&TlsOptions {
            ca_file: Some(missing.clone()),
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = client_config(&TlsOptions {
            ca_file: Some(junk),
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn ca_and_client_certificate_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_params = {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p
        };
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let (ca_f, cert_f, key_f) = (
            dir.path().join("ca.pem"),
            dir.path().join("c.pem"),
            dir.path().join("k.pem"),
        );
        std::fs::write(&ca_f, ca.pem()).unwrap();
        std::fs::write(&cert_f, cert.pem()).unwrap();
        std::fs::write(&key_f, key.serialize_pem()).unwrap();
        let c = client_config(&TlsOptions {
            ca_file: Some(ca_f.clone()),
            cert_file: Some(cert_f.clone()),
            key_file: Some(key_f),
            server_name: None,
        })
        .unwrap();
        assert!(c.client_auth_cert_resolver.has_certs());
        // A certificate where the key belongs is an error, not a panic.
        let e = client_config(&TlsOptions {
            ca_file: Some(ca_f),
            cert_file: Some(cert_f.clone()),
            key_file: Some(cert_f),
            server_name: None,
        })
        .unwrap_err();
        assert!(e.to_string().contains("client key"), "{e}");
    }
}
