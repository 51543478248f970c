//! TLS of the gRPC servers (settings `grpc.tls_*`): the rustls configuration tonic serves
//! with, and who called, from the client certificate of a mutual-TLS connection.
//!
//! TLS is off unless `grpc.tls_cert_file` and `grpc.tls_key_file` are set; the servers then
//! speak plaintext HTTP/2 (h2c) as before. With `grpc.tls_client_auth = optional | required`
//! the server asks for a client certificate and accepts only one that chains to
//! `grpc.tls_client_ca_file`; the handshake fails otherwise, so a certificate that reaches a
//! request has been verified.

use std::path::Path;

use anyhow::Context;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tonic::transport::{
    server::{TcpConnectInfo, TlsConnectInfo},
    Certificate, Identity, ServerTlsConfig,
};
use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};

use crate::config::GrpcSettings;

/// `grpc.tls_client_auth`: whether the server asks callers for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is asked for (server-authenticated TLS only).
    #[default]
    None,
    /// A client may present a certificate; one that does not chain to the CA is refused, a
    /// client without one is let through (with no [`peer_identity`]).
    Optional,
    /// Every client must present a certificate that chains to the CA.
    Required,
}

/// The identity of the caller of a request: its verified client certificate's first URI or DNS
/// subject alternative name, else its subject common name. `None` on a connection without TLS
/// or without a client certificate, and for a certificate with neither name.
///
/// `extensions` are the request's (an `http::Request`'s in a tower layer, or
/// `tonic::Request::extensions()` in a handler), where tonic puts the connection's
/// `TlsConnectInfo<TcpConnectInfo>`.
pub fn peer_identity(extensions: &http::Extensions) -> Option<String> {
    let certs = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    // The end-entity certificate comes first, the intermediates after it.
    certificate_identity(certs.first()?)
}

/// The identity [`peer_identity`] reports for one DER certificate.
pub fn certificate_identity(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let named = san.value.general_names.iter().find_map(|name| match name {
            GeneralName::URI(name) | GeneralName::DNSName(name) if !name.is_empty() => {
                Some((*name).to_owned())
            }
            _ => None,
        });
        if named.is_some() {
            return named;
        }
    }
    let common_name = cert.subject().iter_common_name().find_map(|cn| {
        cn.as_str()
            .ok()
            .filter(|cn| !cn.is_empty())
            .map(str::to_owned)
    });
    common_name
}

/// The file of setting (or flag) `key`, read as a PEM certificate chain (at least one
/// certificate). The error names the setting and the path, never the content.
pub fn read_certificates(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    let pem = read(key, path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{key}: {} is not valid PEM", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(pem)
}

/// The file of setting (or flag) `key`, read as a PEM private key (PKCS#8, PKCS#1 or SEC1).
/// The error names the setting and the path, never the content.
pub fn read_private_key(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    let pem = read(key, path)?;
    if PrivateKeyDer::from_pem_slice(&pem).is_err() {
        return Err(format!(
            "{key}: {} holds no PEM private key (PKCS#8, RSA or EC)",
            path.display()
        ));
    }
    Ok(pem)
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))
}

/// What `grpc.tls_*` asks the server for: `None` for plaintext h2c.
pub fn server_tls_config(settings: &GrpcSettings) -> anyhow::Result<Option<ServerTlsConfig>> {
    let Some((cert_file, key_file)) = settings.tls_identity_files() else {
        return Ok(None);
    };
    let cert = read_certificates("grpc.tls_cert_file", cert_file).map_err(anyhow::Error::msg)?;
    let key = read_private_key("grpc.tls_key_file", key_file).map_err(anyhow::Error::msg)?;
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if settings.tls_client_auth != ClientAuth::None {
        let ca_file = settings
            .tls_client_ca_file()
            .context("grpc.tls_client_auth: optional and required need grpc.tls_client_ca_file")?;
        let ca =
            read_certificates("grpc.tls_client_ca_file", ca_file).map_err(anyhow::Error::msg)?;
        config = config
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(settings.tls_client_auth == ClientAuth::Optional);
    }
    // Builds the rustls configuration now, so that a key that does not match its certificate
    // stops start-up rather than every handshake.
    tonic::transport::Server::builder()
        .tls_config(config.clone())
        .map_err(|e| {
            anyhow::anyhow!(
                "grpc.tls_cert_file {} and grpc.tls_key_file {}: not a usable TLS identity: {}",
                cert_file.display(),
                key_file.display(),
                error_chain(&e)
            )
        })?;
    Ok(Some(config))
}

/// The messages of an error and its sources on one line (tonic's errors keep the cause in the
/// source).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{string::Ia5String, CertificateParams, DnType, KeyPair, SanType};

    fn cert_der(params: CertificateParams) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn params(cn: Option<&str>, sans: Vec<SanType>) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = sans;
        params
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(Ia5String::try_from(s).unwrap())
    }

    fn dns(s: &str) -> SanType {
        SanType::DnsName(Ia5String::try_from(s).unwrap())
    }

    #[test]
    fn the_first_uri_or_dns_name_wins_over_the_common_name() {
        let der = cert_der(params(
            Some("the-cn"),
            vec![
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
                SanType::Rfc822Name(Ia5String::try_from("ops@example.org").unwrap()),
                uri("spiffe://shardfeed/bench"),
                dns("bench.internal"),
            ],
        ));
        assert_eq!(
            certificate_identity(&der).as_deref(),
            Some("spiffe://shardfeed/bench")
        );
        let der = cert_der(params(
            Some("the-cn"),
            vec![dns("bench.internal"), uri("spiffe://shardfeed/bench")],
        ));
        assert_eq!(
            certificate_identity(&der).as_deref(),
            Some("bench.internal")
        );
    }

    #[test]
    fn without_a_uri_or_dns_name_the_common_name_is_the_identity() {
        let der = cert_der(params(
            Some("loadgen-7"),
            vec![SanType::IpAddress("10.1.2.3".parse().unwrap())],
        ));
        assert_eq!(certificate_identity(&der).as_deref(), Some("loadgen-7"));
        let der = cert_der(params(Some("loadgen-8"), vec![]));
        assert_eq!(certificate_identity(&der).as_deref(), Some("loadgen-8"));
    }

    #[test]
    fn no_name_or_no_certificate_is_no_identity() {
        let der = cert_der(params(
            None,
            vec![SanType::IpAddress("10.1.2.3".parse().unwrap())],
        ));
        assert_eq!(certificate_identity(&der), None);
        assert_eq!(certificate_identity(b"not a certificate"), None);
        assert_eq!(certificate_identity(&[]), None);
    }

    #[test]
    fn a_connection_without_tls_has_no_identity() {
        let mut extensions = http::Extensions::new();
        assert_eq!(peer_identity(&extensions), None);
        // What tonic puts there for a plaintext connection.
        extensions.insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: None,
        });
        assert_eq!(peer_identity(&extensions), None);
    }
}
