//! Presence in this process's memory, beside the embedded store.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{GATEWAY_TTL_MS, GatewayRecord, GatewayReport, PresenceEntry, PresenceStore};
use crate::store::StoreError;

#[derive(Default)]
struct Gateway {
    record: Option<GatewayRecord>,
    /// conn_id → (user_id, connected_at_ms).
    conns: HashMap<String, (String, u64)>,
}

/// Presence for one auth replica.
#[derive(Default)]
pub struct MemoryPresence {
    /// std Mutex: never held across an await.
    gateways: Mutex<HashMap<String, Gateway>>,
}

impl MemoryPresence {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Gateway>> {
        // A panic while holding the lock leaves plain maps, still consistent.
        self.gateways.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn is_live(record: &GatewayRecord, now_ms: u64) -> bool {
    record.last_seen_ms.saturating_add(GATEWAY_TTL_MS) >= now_ms
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn report(&self, report: &GatewayReport, now_ms: u64) -> Result<bool, StoreError> {
        let mut gateways = self.lock();
        // Drop the gateways that expired, as Redis expires their keys.
        gateways.retain(|_, g| g.record.as_ref().is_some_and(|r| is_live(r, now_ms)));
        let gateway = gateways.entry(report.gateway_id.clone()).or_default();
        let resync = gateway.record.is_none() && !report.full;
        if report.full {
            gateway.conns.clear();
        }
        for conn in &report.added {
            gateway.conns.insert(
                conn.conn_id.clone(),
                (conn.user_id.clone(), conn.connected_at_ms),
            );
        }
        for conn in &report.removed {
            gateway.conns.remove(&conn.conn_id);
        }
        gateway.record = Some(GatewayRecord {
            gateway_id: report.gateway_id.clone(),
            connections: report.connections,
            authenticated: report.authenticated,
            started_at_ms: report.started_at_ms,
            last_seen_ms: now_ms,
        });
        Ok(resync)
    }

    async fn gateways(&self, now_ms: u64) -> Result<Vec<GatewayRecord>, StoreError> {
        let mut records: Vec<GatewayRecord> = self
            .lock()
            .values()
            .filter_map(|g| g.record.clone())
            .filter(|r| is_live(r, now_ms))
            .collect();
        records.sort_by(|a, b| a.gateway_id.cmp(&b.gateway_id));
        Ok(records)
    }

    async fn presence(&self, user_id: &str, now_ms: u64) -> Result<Vec<PresenceEntry>, StoreError> {
        let gateways = self.lock();
        let mut entries: Vec<PresenceEntry> = gateways
            .iter()
            .filter(|(_, g)| g.record.as_ref().is_some_and(|r| is_live(r, now_ms)))
            .flat_map(|(gateway_id, g)| {
                g.conns
                    .iter()
                    .filter(|(_, (user, _))| user == user_id)
                    .map(|(conn_id, (_, at))| PresenceEntry {
                        gateway_id: gateway_id.clone(),
                        conn_id: conn_id.clone(),
                        connected_at_ms: *at,
                    })
            })
            .collect();
        entries.sort_by(|a, b| {
            (a.connected_at_ms, &a.gateway_id, &a.conn_id).cmp(&(
                b.connected_at_ms,
                &b.gateway_id,
                &b.conn_id,
            ))
        });
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_presence_conformance_suite() {
        crate::presence::conformance::run(&MemoryPresence::new()).await;
    }
}
