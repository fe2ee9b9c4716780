//! Certificates made in the test (rcgen, ring): a CA, leaves it signs for
//! `localhost`/`127.0.0.1` (server and client use), and a private directory
//! to write them to as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate authority that lives as long as the test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key, as PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names is valid");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("ring generates a P-256 key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("a self-signed CA");
        Self { issuer }
    }

    /// The CA certificate, for trust stores and TLS_CLIENT_CA_FILE.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `localhost`, `127.0.0.1` and `name`, usable by a server and a client.
    pub fn leaf(&self, name: &str) -> Leaf {
        let names = vec![
            name.to_string(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ];
        let mut params = CertificateParams::new(names).expect("valid names");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("ring generates a P-256 key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("the CA signs the leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A private temporary directory, removed on drop.
pub struct PkiDir {
    path: PathBuf,
}

impl PkiDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "wsauth-pki-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&path).expect("create the pki directory");
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` atomically (a rename, as cert-manager does).
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let target = self.path.join(name);
        let temporary = self.path.join(format!(".{name}.tmp"));
        std::fs::write(&temporary, contents).expect("write a pki file");
        std::fs::rename(&temporary, &target).expect("move a pki file in place");
        target
    }

    /// Writes `leaf` as `<stem>.pem` and `<stem>.key`: (cert path, key path).
    pub fn write_leaf(&self, stem: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
        (
            self.write(&format!("{stem}.pem"), &leaf.cert_pem),
            self.write(&format!("{stem}.key"), &leaf.key_pem),
        )
    }
}

impl Default for PkiDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PkiDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
