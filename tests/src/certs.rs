//! A throwaway certificate authority and server certificate for TLS tests.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

use crate::kamailio::write_file;
use crate::HarnessError;

/// Paths of the generated PEM files.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA certificate a client must trust.
    pub ca_cert: PathBuf,
    /// The server certificate (for `domain` and `ip`).
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
}

impl TestPki {
    /// Makes a CA and a server certificate naming both `domain` and `ip`.
    pub fn create(dir: &Path, domain: &str, ip: IpAddr) -> Result<TestPki, HarnessError> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Locus test CA");
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params = CertificateParams::new(vec![domain.to_owned()])?;
        params.subject_alt_names.push(SanType::IpAddress(ip));
        params.distinguished_name.push(DnType::CommonName, domain);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;

        let pki = TestPki {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        };
        write_file(&pki.ca_cert, &ca_cert.pem())?;
        write_file(&pki.server_cert, &cert.pem())?;
        write_file(&pki.server_key, &key.serialize_pem())?;
        Ok(pki)
    }
}
