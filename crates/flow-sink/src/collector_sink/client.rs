//! TLS client setup: the HTTP client, with the CA and client identity of a
//! [`ClientTls`] read from their files (again at every reconfiguration).

use std::time::Duration;

use super::config::ClientTls;
use crate::{
    error::SinkError,
    state_dir::{MAX_OPERATOR_FILE_BYTES, read_regular_file},
};

/// The HTTP client for `url`: reads the TLS files in `tls` now.
pub(crate) fn build_client(
    tls: &ClientTls,
    connect_timeout: Duration,
    request_timeout: Duration,
    url: &str,
) -> Result<reqwest::Client, SinkError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("flowexporter/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &tls.ca_file {
        let pem = read_regular_file(path, MAX_OPERATOR_FILE_BYTES)
            .map_err(|e| SinkError::io("read", path, e))?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| SinkError::Tls {
                what: "CA certificate",
                path: path.clone(),
                source,
            })?;
        if certs.is_empty() {
            return Err(SinkError::InvalidConfig {
                key: "tls ca_file",
                value: path.display().to_string(),
                reason: "holds no PEM certificate",
            });
        }
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let mut pem = read_regular_file(cert, MAX_OPERATOR_FILE_BYTES)
                .map_err(|e| SinkError::io("read", cert, e))?;
            pem.push(b'\n');
            pem.extend(
                read_regular_file(key, MAX_OPERATOR_FILE_BYTES)
                    .map_err(|e| SinkError::io("read", key, e))?,
            );
            let identity = reqwest::Identity::from_pem(&pem).map_err(|source| SinkError::Tls {
                what: "client certificate and key",
                path: cert.clone(),
                source,
            })?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        (Some(path), None) | (None, Some(path)) => {
            return Err(SinkError::InvalidConfig {
                key: "tls client identity",
                value: path.display().to_string(),
                reason: "needs both a certificate and a key",
            });
        }
    }
    builder.build().map_err(|source| SinkError::HttpClient {
        url: url.to_owned(),
        source,
    })
}
