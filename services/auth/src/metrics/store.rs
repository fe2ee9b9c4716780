//! [`MeteredStore`]: the store with every call timed and every failure
//! counted by operation, whichever store (Redis or memory) is behind it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::AuthMetrics;
use crate::event::{Event, EventChunk, EventId, NewEvent};
use crate::store::{IssueRequest, Live, RevocationState, Store, StoreError, TakenToken};
use crate::ws_token::{TokenHash, TokenRecord};

/// Indexes into [`STORE_OPS`], named.
mod op {
    pub const ISSUE_WS_TOKEN: usize = 0;
    pub const TAKE_WS_TOKEN: usize = 1;
    pub const REVOKE_JTI: usize = 2;
    pub const REVOKE_USER: usize = 3;
    pub const REVOCATION: usize = 4;
    pub const APPEND: usize = 5;
    pub const READ_AFTER: usize = 6;
    pub const STREAM_END: usize = 7;
}

/// A [`Store`] that records each call in [`AuthMetrics`].
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: AuthMetrics,
}

impl MeteredStore {
    pub fn wrap(inner: Arc<dyn Store>, metrics: AuthMetrics) -> Arc<dyn Store> {
        Arc::new(Self { inner, metrics })
    }

    fn record<T>(&self, op: usize, started: Instant, result: &Result<T, StoreError>) {
        let handles = self.metrics.store_op(op);
        handles.seconds.observe(started.elapsed().as_secs_f64());
        if let Err(error) = result {
            let kind = match error {
                StoreError::Unavailable(_) => 0,
                StoreError::Corrupt(_) => 1,
                StoreError::Failed(_) | StoreError::Config(_) => 2,
            };
            handles.errors[kind].inc();
        }
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn issue_ws_token(
        &self,
        request: IssueRequest<'_>,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let started = Instant::now();
        let result = self.inner.issue_ws_token(request).await;
        self.record(op::ISSUE_WS_TOKEN, started, &result);
        result
    }

    async fn take_ws_token(
        &self,
        hash: &TokenHash,
        consume: bool,
    ) -> Result<Option<TakenToken>, StoreError> {
        let started = Instant::now();
        let result = self.inner.take_ws_token(hash, consume).await;
        self.record(op::TAKE_WS_TOKEN, started, &result);
        result
    }

    async fn revoke_jti(&self, jti: &str, ttl: Option<Duration>) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.inner.revoke_jti(jti, ttl).await;
        self.record(op::REVOKE_JTI, started, &result);
        result
    }

    async fn revoke_user(&self, user_id: &str) -> Result<u64, StoreError> {
        let started = Instant::now();
        let result = self.inner.revoke_user(user_id).await;
        self.record(op::REVOKE_USER, started, &result);
        result
    }

    async fn revocation(
        &self,
        jti: Option<&str>,
        user_id: &str,
    ) -> Result<RevocationState, StoreError> {
        let started = Instant::now();
        let result = self.inner.revocation(jti, user_id).await;
        self.record(op::REVOCATION, started, &result);
        result
    }

    async fn append(&self, event: NewEvent) -> Result<Event, StoreError> {
        let started = Instant::now();
        let result = self.inner.append(event).await;
        self.record(op::APPEND, started, &result);
        if result.is_ok() {
            self.metrics.event_published();
        }
        result
    }

    async fn stream_end(&self) -> Result<EventId, StoreError> {
        let started = Instant::now();
        let result = self.inner.stream_end().await;
        self.record(op::STREAM_END, started, &result);
        result
    }

    async fn read_after(
        &self,
        after: &EventId,
        count: usize,
        max_bytes: usize,
    ) -> Result<EventChunk, StoreError> {
        let started = Instant::now();
        let result = self.inner.read_after(after, count, max_bytes).await;
        self.record(op::READ_AFTER, started, &result);
        result
    }

    fn live(&self) -> Result<broadcast::Receiver<Live>, StoreError> {
        self.inner.live()
    }

    fn live_ready(&self) -> watch::Receiver<bool> {
        self.inner.live_ready()
    }
}

/// Watches the live fan-out and records how old each event is when the
/// stream reader hands it on (its id holds the store's clock at append).
/// Runs until `stop`.
pub async fn watch_reader_lag(
    store: Arc<dyn Store>,
    metrics: AuthMetrics,
    stop: CancellationToken,
) {
    let mut ready = store.live_ready();
    loop {
        let mut live = match store.live() {
            Ok(live) => live,
            Err(_) => {
                tokio::select! {
                    () = stop.cancelled() => return,
                    changed = ready.changed() => if changed.is_err() { return },
                }
                continue;
            }
        };
        loop {
            let received = tokio::select! {
                () = stop.cancelled() => return,
                received = live.recv() => received,
            };
            match received {
                Ok(Live::Event(event)) => {
                    let now_ms = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                    let lag_ms = now_ms.saturating_sub(event.id.seq.ms);
                    metrics.reader_lag(Duration::from_millis(lag_ms));
                }
                Ok(Live::Reset { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use crate::metrics::STORE_OPS;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn calls_are_timed_and_appends_counted() {
        let metrics = AuthMetrics::new();
        let store = MeteredStore::wrap(Arc::new(MemoryStore::new(100)), metrics.clone());
        store
            .append(NewEvent {
                kind: EventKind::Broadcast,
                user_id: None,
                data: "d".into(),
            })
            .await
            .expect("the memory store appends");
        store.revoke_user("u").await.expect("revokes");
        let text = metrics.render();
        for line in [
            "wsauth_auth_events_published_total 1\n",
            "wsauth_auth_store_call_duration_seconds_count{op=\"append\"} 1\n",
            "wsauth_auth_store_call_duration_seconds_count{op=\"revoke_user\"} 1\n",
            "wsauth_auth_store_errors_total{op=\"append\",kind=\"unavailable\"} 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert_eq!(STORE_OPS[op::READ_AFTER], "read_after");
        assert_eq!(STORE_OPS[op::STREAM_END], "stream_end");
        assert_eq!(STORE_OPS[op::ISSUE_WS_TOKEN], "issue_ws_token");
    }
}
