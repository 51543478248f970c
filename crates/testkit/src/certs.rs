//! Certificates for TLS tests: a CA of their own and a server certificate it signed.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A fresh CA and a certificate it signed for `127.0.0.1` and `localhost`, in PEM.
pub struct TestCertificates {
    /// The CA's certificate: what a client trusts (`*.tls_ca_file`).
    pub ca_pem: String,
    /// The server's certificate and its private key.
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCertificates {
    pub fn for_localhost() -> anyhow::Result<TestCertificates> {
        let ca_key = KeyPair::generate().context("a CA key")?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "shardfeed test CA");
        let ca_cert = ca.self_signed(&ca_key).context("the CA certificate")?;
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().context("a server key")?;
        let mut server =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        server
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let cert = server
            .signed_by(&key, &issuer)
            .context("the server certificate")?;
        Ok(TestCertificates {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes the CA's certificate to `dir/ca.pem` and returns its path.
    pub fn write_ca(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.ca_pem)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}
