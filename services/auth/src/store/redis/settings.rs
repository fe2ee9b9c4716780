//! Which Redis deployment auth talks to, read from the config: one server,
//! a Cluster or a Sentinel-managed master, each optionally over TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::{ClientTlsConfig, TlsCertificates};
use secrecy::{ExposeSecret as _, SecretString};

use crate::config::Config;
use crate::error::StoreError;

/// How auth reaches Redis: exactly one of the contract's three modes.
#[derive(Clone)]
pub enum Topology {
    /// `REDIS_URL`: one server.
    Single(SecretString),
    /// `REDIS_CLUSTER_URLS`: a Redis Cluster, from these seed nodes.
    Cluster(Vec<SecretString>),
    /// `REDIS_SENTINEL_URLS` + `REDIS_SENTINEL_MASTER`: the master the sentinels name.
    Sentinel {
        /// The sentinels' URLs (their user and password are also used for the master).
        sentinels: Vec<SecretString>,
        /// The monitored master's name.
        master: String,
    },
}

impl std::fmt::Debug for Topology {
    // URLs may carry passwords: only the mode and the counts are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(_) => f.write_str("Single"),
            Self::Cluster(nodes) => write!(f, "Cluster({} seed nodes)", nodes.len()),
            Self::Sentinel { sentinels, master } => {
                write!(f, "Sentinel({master:?}, {} sentinels)", sentinels.len())
            }
        }
    }
}

/// Everything the Redis store is built from.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// The deployment.
    pub topology: Topology,
    /// The CA bundle and client certificate for `rediss://`.
    pub tls: TlsFiles,
    /// The deadline of each call.
    pub timeout: Duration,
    /// Events kept in the stream (approximately, never fewer).
    pub retention: u64,
    /// Replicas that must acknowledge a token consumption, revocation or
    /// Publish before it is answered (0: none).
    pub wait_replicas: u32,
    /// Start even when `maxmemory-policy` may evict keys.
    pub allow_eviction: bool,
}

/// PEM files for TLS to Redis.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// Verifies the server (default: the system roots).
    pub ca: Option<PathBuf>,
    /// A client certificate and its key, both or neither.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl RedisSettings {
    /// The Redis settings of `config`: `Ok(None)` when no mode is set (the
    /// embedded store); an error naming both settings when more than one is.
    /// Empty values count as unset, as a template's `REDIS_URL=` would.
    pub fn from_config(config: &Config) -> Result<Option<Self>, StoreError> {
        let filled = |urls: &[SecretString]| -> Vec<SecretString> {
            urls.iter()
                .filter(|url| !url.expose_secret().trim().is_empty())
                .cloned()
                .collect()
        };
        let single = config
            .redis_url
            .as_ref()
            .filter(|url| !url.expose_secret().trim().is_empty());
        let cluster = filled(&config.redis_cluster_urls);
        let sentinels = filled(&config.redis_sentinel_urls);
        let master = config
            .redis_sentinel_master
            .as_deref()
            .map(str::trim)
            .filter(|name| !name.is_empty());
        let set: Vec<&str> = [
            (single.is_some(), "REDIS_URL"),
            (!cluster.is_empty(), "REDIS_CLUSTER_URLS"),
            (!sentinels.is_empty(), "REDIS_SENTINEL_URLS"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if set.len() > 1 {
            return Err(StoreError::Config(format!(
                "{} and {} are both set: auth reaches Redis in exactly one way, unset one of them",
                set[0], set[1]
            )));
        }
        let topology = match (single, cluster.is_empty(), sentinels.is_empty(), master) {
            (Some(url), _, _, None) => Topology::Single(url.clone()),
            (None, false, _, None) => Topology::Cluster(cluster),
            (None, _, false, Some(master)) => Topology::Sentinel {
                sentinels,
                master: master.to_owned(),
            },
            (None, true, true, None) => return Ok(None),
            (None, _, false, None) => {
                return Err(StoreError::Config(
                    "REDIS_SENTINEL_URLS is set without REDIS_SENTINEL_MASTER: name the master \
                     the sentinels monitor"
                        .into(),
                ));
            }
            (_, _, true, Some(_)) | (Some(_), _, _, Some(_)) => {
                return Err(StoreError::Config(
                    "REDIS_SENTINEL_MASTER is set without REDIS_SENTINEL_URLS (or with another \
                     Redis mode): it only applies to Sentinel"
                        .into(),
                ));
            }
        };
        let client = match (
            &config.redis_client_cert_file,
            &config.redis_client_key_file,
        ) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => {
                return Err(StoreError::Config(
                    "REDIS_CLIENT_CERT_FILE and REDIS_CLIENT_KEY_FILE go together: set both or \
                     neither"
                        .into(),
                ));
            }
        };
        Ok(Some(Self {
            topology,
            tls: TlsFiles {
                ca: config.redis_ca_file.clone(),
                client,
            },
            timeout: config.redis_timeout(),
            retention: config.event_retention,
            wait_replicas: config.redis_wait_replicas,
            allow_eviction: config.redis_allow_eviction,
        }))
    }

    /// One server at `url`, with the other settings at their defaults (for tests and tools).
    pub fn single(url: &str, timeout: Duration, retention: u64) -> Self {
        Self {
            topology: Topology::Single(SecretString::from(url)),
            tls: TlsFiles::default(),
            timeout,
            retention,
            wait_replicas: 0,
            allow_eviction: false,
        }
    }
}

impl TlsFiles {
    /// The certificates for the redis crate, read now; None when no file is set.
    pub fn load(&self) -> Result<Option<TlsCertificates>, StoreError> {
        if self.ca.is_none() && self.client.is_none() {
            return Ok(None);
        }
        let root_cert = self
            .ca
            .as_deref()
            .map(|path| read(path, "REDIS_CA_FILE"))
            .transpose()?;
        let client_tls = match &self.client {
            Some((cert, key)) => Some(ClientTlsConfig {
                client_cert: read(cert, "REDIS_CLIENT_CERT_FILE")?,
                client_key: read(key, "REDIS_CLIENT_KEY_FILE")?,
            }),
            None => None,
        };
        Ok(Some(TlsCertificates {
            client_tls,
            root_cert,
        }))
    }
}

fn read(path: &Path, setting: &str) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path)
        .map_err(|e| StoreError::Config(format!("{setting} {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn settings(args: &[&str]) -> Result<Option<RedisSettings>, String> {
        let mut argv = vec!["wsauth-auth"];
        argv.extend_from_slice(args);
        let config = Config::try_parse_from(argv).expect("flags parse");
        RedisSettings::from_config(&config).map_err(|e| e.to_string())
    }

    #[test]
    fn each_mode_alone_is_accepted() {
        assert!(settings(&[]).expect("none").is_none());
        assert!(settings(&["--redis-url", " "]).expect("blank").is_none());
        let single = settings(&["--redis-url", "redis://h:1"]).expect("single");
        assert!(matches!(
            single.map(|s| s.topology),
            Some(Topology::Single(_))
        ));
        let cluster = settings(&["--redis-cluster-urls", "redis://a:1,redis://b:2"]);
        match cluster.expect("cluster").map(|s| s.topology) {
            Some(Topology::Cluster(nodes)) => assert_eq!(nodes.len(), 2),
            other => panic!("{other:?}"),
        }
        let sentinel = settings(&[
            "--redis-sentinel-urls",
            "redis://s:26379",
            "--redis-sentinel-master",
            "mymaster",
        ]);
        match sentinel.expect("sentinel").map(|s| s.topology) {
            Some(Topology::Sentinel { master, .. }) => assert_eq!(master, "mymaster"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn two_modes_are_refused_naming_both() {
        let both = [
            (
                "--redis-url",
                "--redis-cluster-urls",
                "REDIS_URL",
                "REDIS_CLUSTER_URLS",
            ),
            (
                "--redis-url",
                "--redis-sentinel-urls",
                "REDIS_URL",
                "REDIS_SENTINEL_URLS",
            ),
            (
                "--redis-cluster-urls",
                "--redis-sentinel-urls",
                "REDIS_CLUSTER_URLS",
                "REDIS_SENTINEL_URLS",
            ),
        ];
        for (a, b, name_a, name_b) in both {
            let error = settings(&[a, "redis://h:1", b, "redis://h:2"]).expect_err("two modes");
            assert!(error.contains(name_a) && error.contains(name_b), "{error}");
        }
    }

    #[test]
    fn incomplete_settings_are_refused() {
        let error = settings(&["--redis-sentinel-urls", "redis://s:1"]).expect_err("no master");
        assert!(error.contains("REDIS_SENTINEL_MASTER"), "{error}");
        let error = settings(&["--redis-sentinel-master", "m"]).expect_err("no sentinels");
        assert!(error.contains("REDIS_SENTINEL_URLS"), "{error}");
        let error = settings(&[
            "--redis-url",
            "redis://h:1",
            "--redis-client-cert-file",
            "c.pem",
        ])
        .expect_err("cert without key");
        assert!(error.contains("REDIS_CLIENT_KEY_FILE"), "{error}");
    }

    #[test]
    fn urls_stay_out_of_debug_output() {
        let single = settings(&["--redis-url", "redis://:s3cret@h:1"])
            .expect("single")
            .expect("set");
        assert!(!format!("{single:?}").contains("s3cret"));
    }
}
