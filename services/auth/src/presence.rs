//! Who is connected where: what gateways report (their counts, their
//! authenticated connections), kept with expiries so that a gateway which
//! stops reporting (crashed, killed, cut off) drops out within [`GATEWAY_TTL`].
//!
//! [`PresenceStore`] is implemented in Redis (shared by every auth replica)
//! and in memory (with the embedded store, one replica only).

use async_trait::async_trait;

use crate::store::StoreError;

pub mod memory;
pub mod redis;

pub use memory::MemoryPresence;
pub use redis::RedisPresence;

/// How long a gateway counts as live after its last report (the contract's
/// "seen in the last 30 s").
pub const GATEWAY_TTL_MS: u64 = 30_000;

/// One authenticated connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnEntry {
    pub conn_id: String,
    pub user_id: String,
    /// Unix ms.
    pub connected_at_ms: u64,
}

/// A gateway's report.
#[derive(Debug, Clone, Default)]
pub struct GatewayReport {
    pub gateway_id: String,
    pub connections: u64,
    pub authenticated: u64,
    /// Unix ms.
    pub started_at_ms: u64,
    /// `added` is every connection the gateway holds: forget the rest.
    pub full: bool,
    pub added: Vec<ConnEntry>,
    pub removed: Vec<ConnEntry>,
}

/// A live gateway, as last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRecord {
    pub gateway_id: String,
    pub connections: u64,
    pub authenticated: u64,
    pub started_at_ms: u64,
    pub last_seen_ms: u64,
}

/// One connection of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEntry {
    pub gateway_id: String,
    pub conn_id: String,
    pub connected_at_ms: u64,
}

/// Where reports go and answers come from.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Records a report at `now_ms`. `true`: the store knew nothing of this
    /// gateway before a report that was not `full`, so its connections are
    /// incomplete and the gateway must send a full one.
    async fn report(&self, report: &GatewayReport, now_ms: u64) -> Result<bool, StoreError>;

    /// Every gateway that reported within [`GATEWAY_TTL_MS`] of `now_ms`, by id.
    async fn gateways(&self, now_ms: u64) -> Result<Vec<GatewayRecord>, StoreError>;

    /// The user's connections on gateways live at `now_ms`, oldest first.
    async fn presence(&self, user_id: &str, now_ms: u64) -> Result<Vec<PresenceEntry>, StoreError>;
}

/// The conformance suite both stores pass.
#[cfg(test)]
pub(crate) mod conformance {
    use super::*;

    fn conn(conn_id: &str, user_id: &str, at: u64) -> ConnEntry {
        ConnEntry {
            conn_id: conn_id.into(),
            user_id: user_id.into(),
            connected_at_ms: at,
        }
    }

    fn report(gateway_id: &str, full: bool, added: Vec<ConnEntry>) -> GatewayReport {
        GatewayReport {
            gateway_id: gateway_id.into(),
            connections: 3,
            authenticated: u64::try_from(added.len()).unwrap_or(0),
            started_at_ms: 1_000,
            full,
            added,
            removed: Vec::new(),
        }
    }

    pub(crate) async fn run(store: &dyn PresenceStore) {
        let t = 10_000_000;
        let first = report(
            "gw-a",
            true,
            vec![conn("1", "ann", t), conn("2", "bob", t + 1)],
        );
        assert!(!store.report(&first, t).await.expect("report"));
        let unknown = report("gw-b", false, vec![conn("7", "ann", t + 2)]);
        assert!(
            store.report(&unknown, t).await.expect("report"),
            "a gateway first seen without a full report must resync"
        );
        let gateways = store.gateways(t + 5).await.expect("gateways");
        let ids: Vec<_> = gateways.iter().map(|g| g.gateway_id.as_str()).collect();
        assert_eq!(ids, ["gw-a", "gw-b"]);
        assert_eq!(gateways[0].connections, 3);
        assert_eq!(gateways[0].authenticated, 2);
        assert_eq!(gateways[0].started_at_ms, 1_000);
        assert_eq!(gateways[0].last_seen_ms, t);

        let ann = store.presence("ann", t + 5).await.expect("presence");
        let where_: Vec<_> = ann
            .iter()
            .map(|p| (p.gateway_id.as_str(), p.conn_id.as_str()))
            .collect();
        assert_eq!(where_, [("gw-a", "1"), ("gw-b", "7")]);
        assert!(
            store
                .presence("nobody", t)
                .await
                .expect("presence")
                .is_empty()
        );

        // A closed connection goes; a full report replaces everything known.
        let mut closed = report("gw-a", false, Vec::new());
        closed.removed = vec![conn("2", "bob", t + 1)];
        assert!(!store.report(&closed, t + 10).await.expect("report"));
        assert!(
            store
                .presence("bob", t + 10)
                .await
                .expect("presence")
                .is_empty()
        );
        let replaced = report("gw-b", true, vec![conn("8", "cid", t + 3)]);
        store.report(&replaced, t + 10).await.expect("report");
        let ann = store.presence("ann", t + 10).await.expect("presence");
        assert_eq!(ann.len(), 1, "{ann:?}");
        assert_eq!(
            store.presence("cid", t + 10).await.expect("presence").len(),
            1
        );

        // gw-a stops reporting: gone from both views after the TTL; gw-b stays.
        let later = t + 10 + GATEWAY_TTL_MS + 1;
        store
            .report(&report("gw-b", false, Vec::new()), later - 1)
            .await
            .expect("report");
        let gateways = store.gateways(later).await.expect("gateways");
        let ids: Vec<_> = gateways.iter().map(|g| g.gateway_id.as_str()).collect();
        assert_eq!(ids, ["gw-b"]);
        assert!(
            store
                .presence("ann", later)
                .await
                .expect("presence")
                .is_empty()
        );
        assert_eq!(
            store.presence("cid", later).await.expect("presence").len(),
            1
        );
    }
}
