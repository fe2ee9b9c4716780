//! A redis-server that speaks TLS and requires client certificates
//! (`--tls-auth-clients yes`), with a CA and leaves made for it (rcgen), as
//! a managed Redis that needs `rediss://` would. Its plain port stays open
//! for the harness's own checks (`FLUSHALL`, readiness) only.

use std::path::PathBuf;

use crate::pki::{PkiDir, TestCa};
use crate::redis_node::{RedisNode, pick_port};

pub struct TestRedisTls {
    node: RedisNode,
    tls_port: u16,
    ca_file: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    // Last: the node's directory and the PEM files live in it.
    _dir: PkiDir,
}

impl TestRedisTls {
    pub fn spawn() -> Self {
        let dir = PkiDir::new();
        let ca = TestCa::new("wsauth test redis CA");
        let ca_file = dir.write("ca.pem", &ca.pem());
        let (server_cert, server_key) = dir.write_leaf("redis", &ca.leaf("redis"));
        let (client_cert, client_key) = dir.write_leaf("auth", &ca.leaf("auth"));
        // redis-server cannot take a listening socket, so its TLS port is
        // picked like its plain one: from below the ephemeral range (a port
        // the OS handed out and took back could be any client's next local
        // port), and picked again when taken.
        let path = |p: &PathBuf| p.display().to_string();
        let (node, tls_port) = (0..20)
            .find_map(|_| {
                let tls_port = pick_port();
                let extra = [
                    "--tls-port".into(),
                    tls_port.to_string(),
                    "--tls-cert-file".into(),
                    path(&server_cert),
                    "--tls-key-file".into(),
                    path(&server_key),
                    "--tls-ca-cert-file".into(),
                    path(&ca_file),
                    "--tls-auth-clients".into(),
                    "yes".into(),
                ];
                RedisNode::try_spawn(dir.path(), &extra).map(|node| (node, tls_port))
            })
            .expect("redis-server with TLS did not start on any of 20 port pairs");
        Self {
            node,
            tls_port,
            ca_file,
            client_cert,
            client_key,
            _dir: dir,
        }
    }

    /// The settings that point auth at it over TLS with a client certificate.
    pub fn auth_env(&self) -> Vec<(&'static str, String)> {
        let path = |p: &PathBuf| p.display().to_string();
        vec![
            ("REDIS_URL", format!("rediss://localhost:{}", self.tls_port)),
            ("REDIS_CA_FILE", path(&self.ca_file)),
            ("REDIS_CLIENT_CERT_FILE", path(&self.client_cert)),
            ("REDIS_CLIENT_KEY_FILE", path(&self.client_key)),
        ]
    }

    pub fn pid(&self) -> Option<u32> {
        self.node.pid()
    }

    pub fn flushall(&self) {
        assert_eq!(self.node.cli(&["FLUSHALL"]).trim(), "OK");
    }
}
