//! The one place state lives: ws tokens, revocations and the event stream.
//!
//! [`Store`] is implemented by [`RedisStore`] (shared by every auth replica)
//! and [`MemoryStore`] (embedded, one replica only). Both pass the same
//! conformance suite (`tests/store_conformance.rs`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::events::{Event, EventChunk, EventId, NewEvent};
use crate::ws_token::{TokenHash, TokenRecord};

pub mod memory;
pub mod redis;

pub use memory::MemoryStore;
pub use redis::RedisStore;

/// How many events the in-process fan-out buffers per subscriber before it lags.
pub const FANOUT_CAPACITY: usize = 4096;

/// A store failure. Never carries a token.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Unreachable, timed out or refused: the caller may retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with data this version cannot read.
    #[error("store returned unexpected data: {0}")]
    Corrupt(String),
}

/// The revocation state relevant to one JWT, read in one round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RevocationState {
    /// The JWT's `jti` was revoked.
    pub jti_revoked: bool,
    /// The user's revocation cutoff (Unix ms), if any.
    pub user_cutoff_ms: Option<u64>,
}

/// A ws token read from the store, with its user's revocation cutoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenToken {
    /// The token's record.
    pub record: TokenRecord,
    /// The cutoff of `record.user_id` (Unix ms), if the user was revoked.
    pub user_cutoff_ms: Option<u64>,
}

/// Everything the auth service keeps. One small trait so both stores stay interchangeable.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a ws token, expiring after `ttl` in the store itself.
    async fn put_ws_token(
        &self,
        hash: &TokenHash,
        record: &TokenRecord,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Reads a ws token and its user's cutoff; with `consume`, deletes it in
    /// the same atomic step, so that of racing callers exactly one gets it.
    async fn take_ws_token(
        &self,
        hash: &TokenHash,
        consume: bool,
    ) -> Result<Option<TakenToken>, StoreError>;

    /// Marks a `jti` revoked, for `ttl` or (None) indefinitely.
    async fn revoke_jti(&self, jti: &str, ttl: Option<Duration>) -> Result<(), StoreError>;

    /// Sets a user's revocation cutoff (Unix ms).
    async fn set_user_cutoff(&self, user_id: &str, cutoff_ms: u64) -> Result<(), StoreError>;

    /// Reads the `jti` flag and the user's cutoff in one round trip.
    async fn revocation(
        &self,
        jti: Option<&str>,
        user_id: &str,
    ) -> Result<RevocationState, StoreError>;

    /// Appends an event to the stream (creating the stream's epoch when the
    /// stream is new) and returns it with its id.
    async fn append(&self, event: NewEvent) -> Result<Event, StoreError>;

    /// Up to `count` retained events strictly after `after` (same epoch or
    /// not: the chunk reports the current epoch and what was trimmed, and the
    /// caller decides).
    async fn read_after(&self, after: &EventId, count: usize) -> Result<EventChunk, StoreError>;

    /// The live events, in stream order, from this moment on.
    fn live(&self) -> broadcast::Receiver<Arc<Event>>;
}
