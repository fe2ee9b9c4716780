//! Reports this gateway to auth every few seconds (AdminService/ReportGateway):
//! its counts and the authenticated connections it gained and lost since the
//! last report, which auth keeps (with expiries) for the operators'
//! ListGateways and Presence. A connection's `connected_at` is when a
//! report first saw it, at most one interval after its `auth_ok`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use wsauth_shared::proto::{ConnectionEntry, ReportGatewayRequest};

use crate::auth_client::AuthClient;
use crate::hub::{ConnId, Hub};
use crate::metrics::Metrics;

/// Often enough for the contract's "within 15 s of a change", and for a
/// gateway to stay listed (auth forgets it 30 s after its last report).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Connections per request, so that a full report of a busy gateway stays
/// far below gRPC's message limit.
const ENTRIES_PER_REQUEST: usize = 1000;

/// The task that reports to auth.
pub struct Reporter {
    pub client: AuthClient,
    pub hub: Hub,
    pub metrics: Metrics,
    pub gateway_id: String,
    pub shutdown: CancellationToken,
}

/// What auth holds of this gateway's connections: user and first-seen time.
type Known = HashMap<ConnId, (Arc<str>, SystemTime)>;

impl Reporter {
    /// Runs until shutdown.
    pub async fn run(self) {
        let started_at = SystemTime::now();
        let mut known = Known::new();
        // The first report, and any after a failure or a `resync`, is full.
        let mut full = true;
        let mut interval = tokio::time::interval(REPORT_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            let now = SystemTime::now();
            let current: HashMap<ConnId, Arc<str>> = self.hub.connections().into_iter().collect();
            let mut next = Known::with_capacity(current.len());
            let mut added = Vec::new();
            for (conn_id, user) in &current {
                let seen = match known.get(conn_id) {
                    Some((_, seen)) => *seen,
                    None => now,
                };
                if full || !known.contains_key(conn_id) {
                    added.push(entry(*conn_id, user, seen));
                }
                next.insert(*conn_id, (Arc::clone(user), seen));
            }
            let removed: Vec<ConnectionEntry> = known
                .iter()
                .filter(|(conn_id, _)| !current.contains_key(conn_id))
                .map(|(conn_id, (user, seen))| entry(*conn_id, user, *seen))
                .collect();
            let report = Report {
                gateway_id: &self.gateway_id,
                connections: u64::try_from(self.metrics.sockets_open()).unwrap_or(0),
                authenticated: u64::try_from(current.len()).unwrap_or(u64::MAX),
                started_at,
            };
            match self.send(&report, full, added, removed).await {
                Ok(resync) => {
                    known = next;
                    full = resync;
                    if resync {
                        tracing::info!("auth had no record of this gateway: next report is full");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "presence report to auth failed; retrying in full");
                    full = true;
                }
            }
        }
    }

    /// Sends one report in chunks, the first carrying `full`; whether auth
    /// asks for a full report next.
    async fn send(
        &self,
        report: &Report<'_>,
        full: bool,
        added: Vec<ConnectionEntry>,
        removed: Vec<ConnectionEntry>,
    ) -> Result<bool, crate::auth_client::AuthCallError> {
        let mut added = added.into_iter();
        let mut removed = removed.into_iter();
        let mut first = true;
        let mut resync = false;
        loop {
            let chunk_added: Vec<_> = added.by_ref().take(ENTRIES_PER_REQUEST).collect();
            let room = ENTRIES_PER_REQUEST - chunk_added.len();
            let chunk_removed: Vec<_> = removed.by_ref().take(room).collect();
            if !first && chunk_added.is_empty() && chunk_removed.is_empty() {
                return Ok(resync);
            }
            let request = ReportGatewayRequest {
                gateway_id: report.gateway_id.to_owned(),
                connections: report.connections,
                authenticated: report.authenticated,
                started_at: Some(prost_types::Timestamp::from(report.started_at)),
                full: full && first,
                added: chunk_added,
                removed: chunk_removed,
            };
            // Only the first chunk's answer tells whether auth knew this gateway.
            let answer = self.client.report_gateway(request).await?;
            if first {
                resync = answer && !full;
            }
            first = false;
        }
    }
}

/// The counts of one report.
struct Report<'a> {
    gateway_id: &'a str,
    connections: u64,
    authenticated: u64,
    started_at: SystemTime,
}

fn entry(conn_id: ConnId, user: &str, seen: SystemTime) -> ConnectionEntry {
    ConnectionEntry {
        conn_id: conn_id.to_string(),
        user_id: user.to_owned(),
        connected_at: Some(prost_types::Timestamp::from(seen)),
    }
}
