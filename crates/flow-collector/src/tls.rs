//! The collector's TLS settings, and the acceptor built from them.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::CollectorError;

/// TLS settings of the reference collector.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerTls {
    /// PEM file of the server's certificate chain.
    pub cert: PathBuf,
    /// PEM file of its private key.
    pub key: PathBuf,
    /// PEM file of the CA(s) client certificates must chain to; with it, a client
    /// without a valid certificate is refused during the handshake (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// Serve TLS with this certificate chain and key.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> ServerTls {
        ServerTls {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
        }
    }

    /// Require client certificates signed by the CA(s) in `path`.
    pub fn with_client_ca(mut self, path: impl Into<PathBuf>) -> ServerTls {
        self.client_ca = Some(path.into());
        self
    }

    pub(crate) fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, CollectorError> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let load_certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, CollectorError> {
            CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| tls_error("load TLS certificates from", path, e))
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("configure TLS for", &self.cert, e))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in load_certs(ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| tls_error("add a client CA from", ca, e))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| tls_error("build the client verifier from", ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| tls_error("load the TLS private key from", &self.key, e))?;
        let config = builder
            .with_single_cert(load_certs(&self.cert)?, key)
            .map_err(|e| tls_error("use the TLS certificate and key from", &self.cert, e))?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// A [`CollectorError::Tls`].
fn tls_error(
    operation: &'static str,
    path: &Path,
    source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
) -> CollectorError {
    CollectorError::Tls {
        operation,
        path: path.to_owned(),
        source: source.into(),
    }
}
