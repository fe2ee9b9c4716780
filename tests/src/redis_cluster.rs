//! A private Redis Cluster: 3 masters, 3 replicas, on loopback free ports.

use std::path::PathBuf;
use std::time::Duration;

use crate::redis_node::{RedisNode, info_field, pick_port, redis_cli, topology_dir, wait_until};

/// How long a node may be unreachable before the cluster fails it over:
/// short, so failover tests finish quickly.
const NODE_TIMEOUT_MS: u64 = 1500;
/// How long six fresh nodes may take to agree on the slots and sync their
/// replicas. Gossip is slow on a loaded machine (the test suite runs many
/// topologies at once on two cores); a slow start is not what is tested.
const STARTUP_WAIT: Duration = Duration::from_secs(90);

/// Six `redis-server --cluster-enabled yes` nodes joined by
/// `redis-cli --cluster create … --cluster-replicas 1`. Killed on drop.
pub struct TestRedisCluster {
    nodes: Vec<RedisNode>,
    dir: PathBuf,
}

impl TestRedisCluster {
    /// Starts the six nodes, creates the cluster and waits until every node
    /// sees every slot served.
    pub fn spawn() -> Self {
        let dir = topology_dir("cluster");
        let nodes: Vec<RedisNode> = (0..6)
            .map(|_| {
                // The bus port is chosen too (default port + 10000 may not
                // exist), afresh with each attempt (it may be taken).
                RedisNode::spawn_with(&dir, || {
                    vec![
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-port".into(),
                        pick_port().to_string(),
                        "--cluster-node-timeout".into(),
                        NODE_TIMEOUT_MS.to_string(),
                        "--save".into(),
                        String::new(),
                        "--appendonly".into(),
                        "no".into(),
                        // Redis waits 5 s by default before a diskless full
                        // sync; a master killed before its replica synced
                        // leaves a replica that will not stand (its data is
                        // "too old"), and the slots stay CLUSTERDOWN.
                        "--repl-diskless-sync-delay".into(),
                        "0".into(),
                    ]
                })
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"]);
        let created = std::process::Command::new("redis-cli")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("redis-cli must be on PATH next to redis-server");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes, dir };
        cluster.wait_healthy(STARTUP_WAIT);
        cluster
    }

    /// `redis://127.0.0.1:P1,redis://…` for `REDIS_CLUSTER_URLS` (every node as a seed).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(RedisNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The process ids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(RedisNode::pid).collect()
    }

    /// Ports of the nodes that are masters right now (running ones only).
    pub fn master_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.is_running() && n.cli(&["ROLE"]).starts_with("master"))
            .map(RedisNode::port)
            .collect()
    }

    /// The master serving `key` right now.
    pub fn master_of(&self, key: &str) -> u16 {
        let slot: u16 = self
            .any_running()
            .cli(&["CLUSTER", "KEYSLOT", key])
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        self.master_ports()
            .into_iter()
            .find(|&port| {
                redis_cli(port, &["CLUSTER", "NODES"])
                    .lines()
                    .find(|line| line.contains("myself"))
                    .is_some_and(|line| owns(line, slot))
            })
            .expect("some master owns every slot")
    }

    /// SIGKILLs the node on `port` (the cluster then fails it over to its
    /// replica after the node timeout; [`TestRedisCluster::wait_healthy`] waits for that).
    pub fn kill(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .expect("a node of this cluster")
            .kill();
    }

    /// Waits until every running node reports `cluster_state:ok`, three
    /// masters serve, and every running replica has synced with its master
    /// (only a synced replica can take over when its master is killed).
    pub fn wait_healthy(&self, within: Duration) {
        let healthy =
            wait_until(within, || {
                self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                    info_field(&n.cli(&["CLUSTER", "INFO"]), "cluster_state") == Some("ok")
                }) && self.master_ports().len() == 3
                    && self.replicas_synced()
            });
        assert!(
            healthy,
            "timed out after {within:?} waiting until the cluster serves every slot and every replica is synced: {}",
            self.describe()
        );
    }

    /// Each running node's cluster state, role and replication link, for a
    /// failure message.
    fn describe(&self) -> String {
        let field = |text: &str, name: &str| info_field(text, name).unwrap_or("?").to_owned();
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]);
                let replication = n.cli(&["INFO", "replication"]);
                format!(
                    "{}: state {}, known nodes {}, role {}, link {}",
                    n.port(),
                    field(&info, "cluster_state"),
                    field(&info, "cluster_known_nodes"),
                    field(&replication, "role"),
                    field(&replication, "master_link_status"),
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Whether every running replica's link to its master is up.
    fn replicas_synced(&self) -> bool {
        self.nodes.iter().filter(|n| n.is_running()).all(|n| {
            let info = n.cli(&["INFO", "replication"]);
            !info.contains("role:slave") || info.contains("master_link_status:up")
        })
    }

    /// `CONFIG SET name value` on every running node.
    pub fn config_set(&self, name: &str, value: &str) {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            assert_eq!(node.cli(&["CONFIG", "SET", name, value]), "OK");
        }
    }

    /// `FLUSHALL` on every running master (replicas follow).
    pub fn flushall(&self) {
        for port in self.master_ports() {
            assert_eq!(redis_cli(port, &["FLUSHALL"]), "OK");
        }
    }

    fn any_running(&self) -> &RedisNode {
        self.nodes
            .iter()
            .find(|n| n.is_running())
            .expect("some node runs")
    }
}

/// Whether a `CLUSTER NODES` line lists `slot` among its ranges.
fn owns(line: &str, slot: u16) -> bool {
    line.split_whitespace().skip(8).any(|range| {
        let (from, to) = range.split_once('-').unwrap_or((range, range));
        match (from.parse::<u16>(), to.parse::<u16>()) {
            (Ok(from), Ok(to)) => (from..=to).contains(&slot),
            _ => false,
        }
    })
}

impl Drop for TestRedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
