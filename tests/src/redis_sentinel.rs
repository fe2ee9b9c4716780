//! A private Sentinel deployment: a master, a replica and three sentinels,
//! on loopback free ports.

use std::path::PathBuf;
use std::time::Duration;

use crate::redis_node::{RedisNode, info_field, redis_cli, topology_dir, wait_for, wait_until};

/// The master name the sentinels monitor.
pub const SENTINEL_MASTER: &str = "wsauth";

/// A master, its replica and three sentinels (quorum 2). Killed on drop.
pub struct TestRedisSentinel {
    servers: Vec<RedisNode>,
    sentinels: Vec<RedisNode>,
    dir: PathBuf,
}

impl TestRedisSentinel {
    /// Starts the servers and sentinels and waits until every sentinel
    /// knows the replica and the other two sentinels (so a failover can run).
    pub fn spawn() -> Self {
        let dir = topology_dir("sentinel");
        let no_persistence = || -> Vec<String> {
            vec![
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
            ]
        };
        let master = RedisNode::spawn(&dir, &no_persistence());
        let mut replica_args = no_persistence();
        replica_args.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            master.port().to_string(),
        ]);
        let replica = RedisNode::spawn(&dir, &replica_args);
        let sentinels = (0..3)
            .map(|i| {
                let conf = dir.join(format!("sentinel-{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {port} 2\n\
                         sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                         sentinel failover-timeout {SENTINEL_MASTER} 10000\n\
                         sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
                        port = master.port()
                    ),
                )
                .expect("the temp dir is writable");
                RedisNode::spawn(&dir, &[conf.display().to_string(), "--sentinel".into()])
            })
            .collect();
        let deployment = Self {
            servers: vec![master, replica],
            sentinels,
            dir,
        };
        // Sentinels discover each other by hello messages every 2 s; on a
        // loaded machine that takes a while, and a slow start is not tested.
        deployment.wait_ready(Duration::from_secs(90));
        deployment
    }

    /// `redis://127.0.0.1:S1,…` for `REDIS_SENTINEL_URLS`.
    pub fn urls(&self) -> String {
        self.sentinels
            .iter()
            .map(RedisNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The process ids of the running servers and sentinels.
    pub fn pids(&self) -> Vec<u32> {
        self.servers
            .iter()
            .chain(&self.sentinels)
            .filter_map(RedisNode::pid)
            .collect()
    }

    /// The port of the master the sentinels name now.
    pub fn master_port(&self) -> u16 {
        let reply =
            self.sentinels[0].cli(&["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER]);
        reply
            .lines()
            .nth(1)
            .and_then(|port| port.trim().parse().ok())
            .expect("the sentinel names a master")
    }

    /// SIGKILLs the current master (the sentinels then promote the
    /// replica; [`TestRedisSentinel::wait_promoted`] waits for that); returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let old = self.master_port();
        self.servers
            .iter_mut()
            .find(|s| s.port() == old)
            .expect("the master is one of ours")
            .kill();
        old
    }

    /// Waits until every sentinel names a master other than `old` and it accepts writes.
    pub fn wait_promoted(&self, old: u16) {
        wait_for(
            Duration::from_secs(30),
            "the sentinels promoted the replica",
            || {
                self.sentinels.iter().all(|s| {
                    s.cli(&["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER])
                        .lines()
                        .nth(1)
                        .and_then(|p| p.trim().parse::<u16>().ok())
                        .is_some_and(|p| p != old)
                }) && redis_cli(self.master_port(), &["ROLE"]).starts_with("master")
            },
        );
    }

    /// `FLUSHALL` on the current master.
    pub fn flushall(&self) {
        assert_eq!(redis_cli(self.master_port(), &["FLUSHALL"]), "OK");
    }

    /// Waits until every sentinel names the same master, knows the replica
    /// and the other two sentinels, and the replica's link to that master
    /// is up. Which server is master is not assumed: on a loaded machine the
    /// sentinels may fail the first one over while the deployment forms.
    fn wait_ready(&self, within: Duration) {
        let ready = wait_until(within, || {
            let views: Vec<SentinelView> = self.sentinels.iter().map(SentinelView::of).collect();
            let Some(master) = views.first().and_then(|v| v.master) else {
                return false;
            };
            views.iter().all(|v| {
                v.master == Some(master)
                    && v.replicas.as_deref() == Some("1")
                    && v.other_sentinels.as_deref() == Some("2")
            }) && self.servers.iter().filter(|s| s.port() != master).all(|s| {
                s.cli(&["INFO", "replication"])
                    .contains("master_link_status:up")
            })
        });
        assert!(
            ready,
            "timed out after {within:?} waiting until every sentinel knows the master, the replica and the others: {}",
            self.describe()
        );
    }

    /// What each sentinel and server says, for a failure message.
    fn describe(&self) -> String {
        let sentinels = self.sentinels.iter().map(|s| {
            let v = SentinelView::of(s);
            format!(
                "sentinel {}: master {:?}, replicas {:?}, other sentinels {:?}",
                s.port(),
                v.master,
                v.replicas,
                v.other_sentinels
            )
        });
        let servers = self.servers.iter().map(|s| {
            let info = s.cli(&["INFO", "replication"]);
            format!(
                "server {}: role {}, link {}",
                s.port(),
                info_field(&info, "role").unwrap_or("?"),
                info_field(&info, "master_link_status").unwrap_or("?")
            )
        });
        sentinels.chain(servers).collect::<Vec<_>>().join("; ")
    }
}

/// One sentinel's view of the monitored master.
struct SentinelView {
    master: Option<u16>,
    replicas: Option<String>,
    other_sentinels: Option<String>,
}

impl SentinelView {
    fn of(sentinel: &RedisNode) -> Self {
        let info = sentinel.cli(&["SENTINEL", "master", SENTINEL_MASTER]);
        let field = |name: &str| {
            let mut lines = info.lines();
            lines
                .position(|l| l.trim() == name)
                .and_then(|_| lines.next())
                .map(|v| v.trim().to_owned())
        };
        Self {
            master: field("port").and_then(|p| p.parse().ok()),
            replicas: field("num-slaves"),
            other_sentinels: field("num-other-sentinels"),
        }
    }
}

impl Drop for TestRedisSentinel {
    fn drop(&mut self) {
        for node in self.sentinels.iter_mut().chain(self.servers.iter_mut()) {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
