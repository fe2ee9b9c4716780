use std::sync::Arc;

use rcgen::{CertificateParams, KeyPair};

use super::*;

/// A self-signed certificate for localhost: (cert PEM, key PEM).
fn self_signed() -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    (cert.pem(), key.serialize_pem())
}

struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "wsauth-tls-unit-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&path).expect("dir");
        Self(path)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write");
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn files(dir: &Dir, client_ca: Option<PathBuf>) -> TlsFiles {
    let (cert, key) = self_signed();
    TlsFiles {
        cert: dir.write("cert.pem", &cert),
        key: dir.write("key.pem", &key),
        client_ca,
    }
}

#[tokio::test]
async fn a_config_is_built_with_the_given_alpn() {
    let dir = Dir::new();
    let tls = ReloadingServerConfig::load(files(&dir, None), vec![b"h2".to_vec()])
        .await
        .expect("valid files");
    assert_eq!(tls.current().alpn_protocols, vec![b"h2".to_vec()]);
}

#[tokio::test]
async fn bad_files_are_refused_naming_the_file() {
    let dir = Dir::new();
    let good = files(&dir, None);
    let missing = TlsFiles {
        cert: dir.0.join("absent.pem"),
        ..good.clone()
    };
    let error = ReloadingServerConfig::load(missing, vec![]).await.err();
    assert!(matches!(error, Some(TlsError::Read { .. })), "{error:?}");

    let garbage = TlsFiles {
        cert: dir.write("garbage.pem", "not a certificate"),
        ..good.clone()
    };
    let error = ReloadingServerConfig::load(garbage, vec![]).await.err();
    assert!(
        matches!(error, Some(TlsError::NoCertificate { .. })),
        "{error:?}"
    );

    let no_key = TlsFiles {
        key: dir.write("nokey.pem", "nothing here"),
        ..good.clone()
    };
    let error = ReloadingServerConfig::load(no_key, vec![])
        .await
        .err()
        .expect("no key is an error");
    assert!(error.to_string().contains("nokey.pem"), "{error}");

    let bad_ca = TlsFiles {
        client_ca: Some(dir.write("ca.pem", "no CA")),
        ..good
    };
    let error = ReloadingServerConfig::load(bad_ca, vec![]).await.err();
    assert!(
        matches!(error, Some(TlsError::NoCertificate { .. })),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_key_of_another_certificate_is_refused() {
    let dir = Dir::new();
    let good = files(&dir, None);
    let (_, other_key) = self_signed();
    let mismatched = TlsFiles {
        key: dir.write("other.key", &other_key),
        ..good
    };
    assert!(
        ReloadingServerConfig::load(mismatched, vec![])
            .await
            .is_err()
    );
}

#[tokio::test]
async fn refresh_swaps_only_on_a_valid_change() {
    let dir = Dir::new();
    let files = files(&dir, None);
    let tls = ReloadingServerConfig::load(files.clone(), vec![])
        .await
        .expect("valid");
    let first = tls.current();
    assert!(!tls.refresh().await.expect("readable"));
    assert!(Arc::ptr_eq(&first, &tls.current()));

    // A certificate written before its key does not build: the old config stays.
    let (cert, key) = self_signed();
    std::fs::write(&files.cert, &cert).expect("write");
    assert!(tls.refresh().await.is_err());
    assert!(Arc::ptr_eq(&first, &tls.current()));
    // Reported once, not on every tick.
    assert!(!tls.refresh().await.expect("unchanged since"));

    std::fs::write(&files.key, &key).expect("write");
    assert!(tls.refresh().await.expect("valid change"));
    assert!(!Arc::ptr_eq(&first, &tls.current()));
}
