//! The one place state lives: ws tokens, revocations and the event stream.
//!
//! [`Store`] is implemented by [`RedisStore`] (shared by every auth replica)
//! and [`MemoryStore`] (embedded, one replica only). Both pass the same
//! conformance suite (`tests/store_conformance.rs`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, watch};

pub use crate::error::StoreError;
use crate::event::{Event, EventChunk, EventId, NewEvent};
use crate::ws_token::{TokenHash, TokenRecord};

pub mod memory;
pub mod redis;

pub use memory::MemoryStore;
pub use redis::RedisStore;

/// How many events the in-process fan-out buffers per subscriber before it lags.
pub const FANOUT_CAPACITY: usize = 4096;

/// What the live fan-out carries.
#[derive(Debug, Clone)]
pub enum Live {
    /// The next event of the stream.
    Event(Arc<Event>),
    /// The store lost the stream and started (or will start) a new epoch:
    /// events appended before the loss but not yet read may be gone.
    Reset {
        /// The new epoch ("" when the new stream has no event yet).
        epoch: String,
    },
}

/// A ws token to issue, with what the store needs to check the JWT's
/// revocation in the same atomic step.
#[derive(Debug, Clone, Copy)]
pub struct IssueRequest<'a> {
    /// Where the token goes.
    pub hash: &'a TokenHash,
    /// The JWT's `sub`, which the token is bound to.
    pub user_id: &'a str,
    /// The JWT's `jti`, if any.
    pub jti: Option<&'a str>,
    /// The JWT's `iat` (Unix s), if any.
    pub iat: Option<u64>,
    /// The token's lifetime.
    pub ttl: Duration,
    /// The JWT leeway (s): an `iat` further in the future than this is not trusted.
    pub leeway_s: u64,
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
    /// Checks the JWT's revocation (its `jti`, its user's cutoff) and, unless
    /// revoked, stores a ws token expiring after `ttl` in the store itself,
    /// stamped with the store's clock: one atomic step, so a concurrent
    /// RevokeUser either refuses the JWT here or revokes the token. `None`: revoked.
    async fn issue_ws_token(
        &self,
        request: IssueRequest<'_>,
    ) -> Result<Option<TokenRecord>, StoreError>;

    /// Reads a ws token and its user's cutoff; with `consume`, deletes it in
    /// the same atomic step, so that of racing callers exactly one gets it.
    async fn take_ws_token(
        &self,
        hash: &TokenHash,
        consume: bool,
    ) -> Result<Option<TakenToken>, StoreError>;

    /// Marks a `jti` revoked, for `ttl` or (None) indefinitely.
    async fn revoke_jti(&self, jti: &str, ttl: Option<Duration>) -> Result<(), StoreError>;

    /// Sets a user's revocation cutoff to the store's clock now, never
    /// lowering an earlier cutoff; returns the cutoff (Unix ms).
    async fn revoke_user(&self, user_id: &str) -> Result<u64, StoreError>;

    /// Reads the `jti` flag and the user's cutoff in one round trip.
    async fn revocation(
        &self,
        jti: Option<&str>,
        user_id: &str,
    ) -> Result<RevocationState, StoreError>;

    /// Appends an event to the stream (creating the stream's epoch when the
    /// stream is new) and returns it with its id.
    async fn append(&self, event: NewEvent) -> Result<Event, StoreError>;

    /// Where the stream ends now: its epoch and last generated id, creating
    /// the epoch when there is none yet (as the first append would), so
    /// that a reader resuming from here is told (another epoch, or ids
    /// trimmed after it) of anything it can no longer be given.
    async fn stream_end(&self) -> Result<EventId, StoreError>;

    /// Up to `count` retained events strictly after `after`, stopping once
    /// they hold `max_bytes` of data (at least one event). Same epoch or not:
    /// the chunk reports the current epoch, the last id and what was trimmed,
    /// and the caller decides.
    async fn read_after(
        &self,
        after: &EventId,
        count: usize,
        max_bytes: usize,
    ) -> Result<EventChunk, StoreError>;

    /// The live events, in stream order, from this moment on. Unavailable
    /// while the store cannot say where "this moment" is in the stream (the
    /// stream reader has no position yet or lost the store): a subscriber
    /// taken on then could miss events.
    fn live(&self) -> Result<broadcast::Receiver<Live>, StoreError>;

    /// Whether the live fan-out is working, and changes to it (for health).
    fn live_ready(&self) -> watch::Receiver<bool>;
}
