//! Certificates for tests and for the local stack (`shardfeed dev certs`): a CA of the test's
//! own, and server and client certificates it signs, as PEM.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The names a server certificate of [`TestCa::server`] is valid for, by default: what tests and
/// the local stack dial.
pub const LOCAL_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// A certificate authority made on the spot.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate signed by a [`TestCa`] and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    /// A new CA whose subject common name is `name`.
    pub fn new(name: &str) -> anyhow::Result<TestCa> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().context("generating the CA key")?;
        let issuer = CertifiedIssuer::self_signed(params, key).context("signing the CA")?;
        Ok(TestCa { issuer })
    }

    /// The CA certificate, PEM: what clients trust, and what a server checks client
    /// certificates against.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses, the first also its common
    /// name).
    pub fn server(&self, names: &[&str]) -> anyhow::Result<Issued> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).context("server names")?;
        self.leaf(&mut params, names.first().map_or("server", |n| n.as_str()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A certificate for `names` that serves and also dials its peers with the same identity
    /// (Redis nodes on their cluster bus and replication links): server and client auth.
    pub fn peer(&self, names: &[&str]) -> anyhow::Result<Issued> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).context("peer names")?;
        self.leaf(&mut params, names.first().map_or("peer", |n| n.as_str()));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign(params)
    }

    /// A client certificate whose identity is `identity`: its URI subject alternative name
    /// when it has a scheme (`spiffe://shardfeed/bench`), else its DNS name; its common name too.
    pub fn client(&self, identity: &str) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::default();
        let name = identity.try_into().context("the client identity")?;
        params.subject_alt_names = vec![if identity.contains("://") {
            SanType::URI(name)
        } else {
            SanType::DnsName(name)
        }];
        self.leaf(&mut params, identity);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn leaf(&self, params: &mut CertificateParams, common_name: &str) {
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
    }

    fn sign(&self, params: CertificateParams) -> anyhow::Result<Issued> {
        let key = KeyPair::generate().context("generating a key")?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("signing a certificate")?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Issued {
    /// As a TLS identity for tonic (a server's, or a client's for mutual TLS).
    pub fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// Writes `<stem>.pem` and `<stem>-key.pem` (the key readable by its owner alone) into
    /// `dir`; returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}-key.pem"));
        write_file(&cert, &self.cert_pem, 0o644)?;
        write_file(&key, &self.key_pem, 0o600)?;
        Ok((cert, key))
    }
}

fn write_file(path: &Path, content: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(content.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// A client configuration that trusts `ca_pem` (and presents `identity`, for mutual TLS).
pub fn client_tls(ca_pem: &str, identity: Option<&Issued>) -> ClientTlsConfig {
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    match identity {
        Some(issued) => config.identity(issued.identity()),
        None => config,
    }
}

/// A fresh CA and a certificate it signed for `127.0.0.1` and `localhost`, valid for server and
/// client auth, in PEM: for the stores' TLS tests (`PgServer::start_tls`, `RedisCluster::start_tls`).
pub struct TestCertificates {
    /// The CA's certificate: what a client trusts (`*.tls_ca_file`).
    pub ca_pem: String,
    /// The server's certificate and its private key.
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCertificates {
    pub fn for_localhost() -> anyhow::Result<TestCertificates> {
        let ca = TestCa::new("shardfeed test CA")?;
        // Redis nodes present it to each other too.
        let server = ca.peer(&["127.0.0.1", "localhost"])?;
        Ok(TestCertificates {
            ca_pem: ca.cert_pem(),
            cert_pem: server.cert_pem,
            key_pem: server.key_pem,
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

/// A CA and a server certificate for [`LOCAL_NAMES`] it signed, in files of a temporary dir
/// (`ca.pem`, `server.pem`, `server-key.pem`) that a gRPC server's settings name.
pub struct TestPki {
    pub ca: TestCa,
    pub dir: tempfile::TempDir,
}

impl TestPki {
    pub fn new() -> anyhow::Result<TestPki> {
        let ca = TestCa::new("shardfeed test CA")?;
        let dir = tempfile::tempdir().context("a dir for the certificates")?;
        ca.server(LOCAL_NAMES)?.write(dir.path(), "server")?;
        write_file(&dir.path().join("ca.pem"), &ca.cert_pem(), 0o644)?;
        Ok(TestPki { ca, dir })
    }

    /// The file `name` of the dir, as a settings value.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// The `SHARDFEED_GRPC__TLS_*` settings of a server with this certificate and
    /// `client_auth` (`none`, `optional`, `required`; the CA checks client certificates).
    pub fn grpc_env(&self, client_auth: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("SHARDFEED_GRPC__TLS_CERT_FILE", self.path("server.pem")),
            ("SHARDFEED_GRPC__TLS_KEY_FILE", self.path("server-key.pem")),
            ("SHARDFEED_GRPC__TLS_CLIENT_AUTH", client_auth.to_owned()),
        ];
        if client_auth != "none" {
            env.push(("SHARDFEED_GRPC__TLS_CLIENT_CA_FILE", self.path("ca.pem")));
        }
        env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// A client that trusts this CA and presents `client` if given.
    pub fn client(&self, client: Option<&Issued>) -> ClientTlsConfig {
        client_tls(&self.ca.cert_pem(), client)
    }
}

/// The files of a local PKI, as [`write_local_pki`] leaves them.
#[derive(Debug, Clone)]
pub struct PkiFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// A new CA in `dir` (`ca.pem`; its key is not kept), a server certificate for `server_names`
/// (`server.pem`, `server-key.pem`) and a client certificate for `client_identity`
/// (`client.pem`, `client-key.pem`), all signed by it. Creates `dir` if needed.
pub fn write_local_pki(
    dir: &Path,
    server_names: &[&str],
    client_identity: &str,
) -> anyhow::Result<PkiFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = TestCa::new("shardfeed local CA")?;
    let ca_path = dir.join("ca.pem");
    write_file(&ca_path, &ca.cert_pem(), 0o644)?;
    let (server_cert, server_key) = ca.server(server_names)?.write(dir, "server")?;
    let (client_cert, client_key) = ca.client(client_identity)?.write(dir, "client")?;
    Ok(PkiFiles {
        ca: ca_path,
        server_cert,
        server_key,
        client_cert,
        client_key,
    })
}
