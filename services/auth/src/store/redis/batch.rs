//! Plain commands on the store's connection, for the state auth keeps in
//! Redis beside the store's own (presence): so it reaches Redis the same
//! way in every mode (Cluster, Sentinel, TLS) and under the same deadline.
//!
//! A [`Batch`] is sent as pipelines. In Cluster mode a pipeline must stay in
//! one slot (the crate refuses a cross-slot one), so the batch is split by
//! the slot of each command's key and the pipelines run side by side; order
//! is kept among the commands of each key, which is all a caller can rely on.

use std::collections::HashMap;

use futures::{StreamExt as _, TryStreamExt as _};
use redis::cluster_routing::{Route, SlotAddr};
use redis::{Cmd, Pipeline, Value};

use super::RedisStore;
use crate::error::StoreError;

/// Pipelines of one batch in flight at once (Cluster mode): a full presence
/// report touches one key per user, and thousands of futures at once would
/// only queue inside the client.
const PIPELINES_IN_FLIGHT: usize = 64;

/// Commands of a batch under one deadline: one round trip outside Cluster
/// mode, a few rounds of [`PIPELINES_IN_FLIGHT`] pipelines in it.
const CHUNK_COMMANDS: usize = 1000;

/// Commands sent together, each on one key; replies come back in order.
#[derive(Default)]
pub struct Batch {
    commands: Vec<(String, Cmd)>,
}

impl Batch {
    /// Adds `name key`, returning the command for its further arguments.
    pub fn cmd(&mut self, name: &str, key: impl Into<String>) -> &mut Cmd {
        let key = key.into();
        let mut cmd = redis::cmd(name);
        cmd.arg(&key);
        self.commands.push((key, cmd));
        &mut self.commands.last_mut().expect("pushed just above").1
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The commands as pipelines, with the batch positions of their commands:
    /// one per slot when `by_slot`, else one.
    fn pipelines(self, by_slot: bool) -> Vec<(Vec<usize>, Pipeline)> {
        let mut groups: Vec<(Vec<usize>, Pipeline)> = Vec::new();
        let mut slots: HashMap<Route, usize> = HashMap::new();
        for (at, (key, cmd)) in self.commands.into_iter().enumerate() {
            let group = if by_slot {
                *slots
                    .entry(Route::with_key(&key, SlotAddr::Master))
                    .or_insert_with(|| {
                        groups.push((Vec::new(), redis::pipe()));
                        groups.len() - 1
                    })
            } else {
                if groups.is_empty() {
                    groups.push((Vec::new(), redis::pipe()));
                }
                0
            };
            let (positions, pipe) = &mut groups[group];
            positions.push(at);
            pipe.add_command(cmd);
        }
        groups
    }
}

impl RedisStore {
    /// Runs `batch`: every reply in the batch's order. Each chunk of
    /// [`CHUNK_COMMANDS`] commands has its own deadline and goes after the
    /// one before, so a gateway's full report of 50,000 connections is 50
    /// bounded steps (not one deadline it cannot meet, retried forever),
    /// and the connection ValidateToken shares is never held by one huge
    /// pipeline.
    pub async fn run_batch(&self, batch: Batch) -> Result<Vec<Value>, StoreError> {
        let mut replies = Vec::with_capacity(batch.commands.len());
        let mut commands = batch.commands.into_iter();
        loop {
            let chunk: Vec<_> = commands.by_ref().take(CHUNK_COMMANDS).collect();
            if chunk.is_empty() {
                return Ok(replies);
            }
            replies.extend(self.run_chunk(Batch { commands: chunk }).await?);
        }
    }

    /// One chunk of a batch, under one deadline.
    async fn run_chunk(&self, batch: Batch) -> Result<Vec<Value>, StoreError> {
        let len = batch.commands.len();
        let groups = batch.pipelines(self.inner.redis.is_cluster());
        let answered: Vec<(Vec<usize>, Vec<Value>)> = self
            .call(|conn| {
                futures::stream::iter(groups)
                    .map(move |(positions, pipe)| {
                        let mut conn = conn.clone();
                        async move {
                            let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
                            Ok((positions, replies))
                        }
                    })
                    .buffer_unordered(PIPELINES_IN_FLIGHT)
                    .try_collect()
            })
            .await?;
        let mut replies = vec![Value::Nil; len];
        for (positions, values) in answered {
            if positions.len() != values.len() {
                return Err(StoreError::Corrupt(
                    "a pipeline answered a different number of replies".into(),
                ));
            }
            for (at, value) in positions.into_iter().zip(values) {
                replies[at] = value;
            }
        }
        Ok(replies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(batch: &Batch) -> Vec<&str> {
        batch.commands.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn a_batch_splits_by_slot_in_cluster_mode_and_keeps_each_keys_order() {
        let mut batch = Batch::default();
        batch.cmd("HSET", "a").arg("f").arg(1);
        batch.cmd("HSET", "b").arg("f").arg(1);
        // Same hash tag: same slot as each other.
        batch.cmd("HSET", "{t}x").arg("f").arg(1);
        batch.cmd("PEXPIRE", "a").arg(10);
        batch.cmd("HSET", "{t}y").arg("f").arg(1);
        assert_eq!(keys(&batch), ["a", "b", "{t}x", "a", "{t}y"]);
        let mut groups: Vec<Vec<usize>> = batch
            .pipelines(true)
            .into_iter()
            .map(|(positions, pipe)| {
                assert_eq!(pipe.len(), positions.len());
                positions
            })
            .collect();
        groups.sort();
        // "a" and "b" are in different slots (15495 and 3300).
        assert_eq!(groups, [vec![0, 3], vec![1], vec![2, 4]]);

        let mut batch = Batch::default();
        batch.cmd("GET", "a");
        batch.cmd("GET", "b");
        let groups = batch.pipelines(false);
        assert_eq!(groups.len(), 1, "one pipeline outside Cluster mode");
        assert_eq!(groups[0].0, [0, 1]);
    }
}
