//! Lua scripts run by hash, falling back to their source on NOSCRIPT.
//!
//! The redis crate's `Script` answers NOSCRIPT with SCRIPT LOAD and a second
//! EVALSHA. In Cluster mode SCRIPT LOAD goes to every master the client
//! knows, so right after a failover it can miss the promoted replica (whose
//! script cache is empty: Redis does not replicate it) while the EVALSHA
//! reaches it, and the call fails with NOSCRIPT. Sending EVAL with the source
//! to the node that refused runs the script there and caches it for the
//! next EVALSHA, in every mode, and costs one round trip instead of two.

use redis::aio::ConnectionLike;
use redis::{Cmd, ErrorKind, FromRedisValue, RedisResult, ServerErrorKind, ToRedisArgs};

/// A Lua script and its SHA-1, computed once.
pub(super) struct LuaScript {
    source: &'static str,
    sha: String,
}

impl LuaScript {
    pub(super) fn new(source: &'static str) -> Self {
        Self {
            source,
            sha: redis::Script::new(source).get_hash().to_owned(),
        }
    }

    /// Starts a call with `key` as `KEYS[1]`.
    pub(super) fn key<T: ToRedisArgs>(&self, key: T) -> Invocation<'_> {
        let mut invocation = Invocation {
            script: self,
            keys: Vec::with_capacity(3),
            args: Vec::with_capacity(4),
        };
        invocation.key(key);
        invocation
    }
}

/// One call of a script: its keys and arguments, encoded.
pub(super) struct Invocation<'a> {
    script: &'a LuaScript,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Invocation<'_> {
    /// Adds `KEYS[n+1]`.
    pub(super) fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    /// Adds `ARGV[n+1]`.
    pub(super) fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// EVALSHA; on NOSCRIPT, EVAL with the source on the same route.
    pub(super) async fn invoke_async<T: FromRedisValue>(
        &self,
        conn: &mut impl ConnectionLike,
    ) -> RedisResult<T> {
        match self
            .command("EVALSHA", &self.script.sha)
            .query_async(conn)
            .await
        {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.command("EVAL", self.script.source)
                    .query_async(conn)
                    .await
            }
            reply => reply,
        }
    }

    fn command(&self, verb: &str, script: &str) -> Cmd {
        let mut cmd = Cmd::with_capacity(3 + self.keys.len() + self.args.len(), 0);
        cmd.arg(verb)
            .arg(script)
            .arg(self.keys.len())
            .arg(&*self.keys)
            .arg(&*self.args);
        cmd
    }
}

#[cfg(test)]
mod tests {
    use wsauth_tests::TestRedis;

    use super::*;

    fn calls_of(info: &str, command: &str) -> u64 {
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |calls| calls.parse().expect("a count"))
    }

    /// A node whose script cache is empty (a promoted replica, a restart,
    /// SCRIPT FLUSH) is sent the source once, with no SCRIPT LOAD, and the
    /// next call finds the script by hash.
    #[tokio::test]
    async fn an_empty_script_cache_gets_the_source_once_then_the_hash() {
        let redis = TestRedis::spawn();
        let mut conn = super::super::test_connection(&redis).await;
        let script = LuaScript::new("return {KEYS[1], ARGV[1]}");
        for round in 0..2 {
            let _: () = redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query_async(&mut conn)
                .await
                .expect("flush");
            let _: () = redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query_async(&mut conn)
                .await
                .expect("reset");
            for _ in 0..3 {
                let reply: (String, String) = script
                    .key("k")
                    .arg(round)
                    .invoke_async(&mut conn)
                    .await
                    .expect("runs");
                assert_eq!(reply, ("k".to_owned(), round.to_string()));
            }
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut conn)
                .await
                .expect("info");
            assert_eq!(calls_of(&info, "eval"), 1, "{info}");
            assert_eq!(calls_of(&info, "evalsha"), 3, "{info}");
            assert_eq!(calls_of(&info, "script|load"), 0, "{info}");
        }
    }

    /// In a cluster (the case this module exists for): the source goes to
    /// the master that owns the key and refused the hash, and no SCRIPT LOAD
    /// is sent anywhere, so a master the client does not know yet (a
    /// promoted replica) cannot be missed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_a_cluster_the_owner_of_the_key_gets_the_source_and_no_node_a_script_load() {
        let cluster = wsauth_tests::TestRedisCluster::spawn();
        let nodes: Vec<String> = cluster.urls().split(',').map(str::to_owned).collect();
        let client = redis::cluster::ClusterClient::new(nodes).expect("cluster urls");
        let mut conn = client
            .get_async_connection()
            .await
            .expect("the cluster answers");
        let ports = cluster.master_ports();
        for &port in &ports {
            assert_eq!(wsauth_tests::redis_cli(port, &["SCRIPT", "FLUSH"]), "OK");
            assert_eq!(
                wsauth_tests::redis_cli(port, &["CONFIG", "RESETSTAT"]),
                "OK"
            );
        }
        let script = LuaScript::new("return KEYS[1]");
        for key in ["{a}k", "{b}k", "{c}k", "{a}k"] {
            let reply: String = script.key(key).invoke_async(&mut conn).await.expect("runs");
            assert_eq!(reply, key);
        }
        for &port in &ports {
            let info = wsauth_tests::redis_cli(port, &["INFO", "commandstats"]);
            assert_eq!(calls_of(&info, "script|load"), 0, "{port}: {info}");
        }
        let owner = cluster.master_of("{a}k");
        let info = wsauth_tests::redis_cli(owner, &["INFO", "commandstats"]);
        assert_eq!(
            calls_of(&info, "eval"),
            1,
            "the source once, then the hash: {info}"
        );
    }

    #[test]
    fn the_hash_is_the_scripts_sha1() {
        // SHA-1 of "return 1", as Redis computes it for SCRIPT LOAD.
        let script = LuaScript::new("return 1");
        assert_eq!(script.sha, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }

    #[test]
    fn keys_come_before_args_whatever_order_they_were_added_in() {
        let script = LuaScript::new("return KEYS[1]");
        let mut invocation = script.key("k1");
        invocation.arg("a1").key("k2").arg(7);
        let packed = invocation
            .command("EVALSHA", &script.sha)
            .get_packed_command();
        let text = String::from_utf8(packed).expect("ascii");
        let words: Vec<&str> = text
            .split("\r\n")
            .filter(|w| !w.starts_with(['*', '$']))
            .collect();
        assert_eq!(
            words,
            [
                "EVALSHA",
                script.sha.as_str(),
                "2",
                "k1",
                "k2",
                "a1",
                "7",
                ""
            ]
        );
    }
}
