//! The credential rules: issue and validate ws tokens, verify JWTs, revoke.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::error::AuthError;
use crate::events::{EventKind, Events, NewEvent};
use crate::jwt::{Claims, JwtVerifier};
use crate::revocation;
use crate::store::Store;
use crate::ws_token::{TokenHash, TokenRecord, WsToken};

/// A ws token handed out by [`Authority::issue_ws_token`].
pub struct IssuedToken {
    /// The token text for the client (a credential: never log it).
    pub token: String,
    /// The JWT's `sub`.
    pub user_id: String,
    /// Unix ms.
    pub expires_ms: u64,
}

/// Issues and checks credentials. Cheap to clone.
#[derive(Clone)]
pub struct Authority {
    inner: Arc<Inner>,
}

struct Inner {
    verifier: JwtVerifier,
    store: Arc<dyn Store>,
    events: Events,
    ws_token_ttl: Duration,
    ws_token_reuse: bool,
    leeway_s: u64,
}

impl Authority {
    /// Builds the rules over a verifier and a store.
    pub fn new(
        verifier: JwtVerifier,
        store: Arc<dyn Store>,
        events: Events,
        ws_token_ttl: Duration,
        ws_token_reuse: bool,
        leeway_s: u64,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                verifier,
                store,
                events,
                ws_token_ttl,
                ws_token_reuse,
                leeway_s,
            }),
        }
    }

    /// Verifies a JWT, then checks its revocation (jti and user cutoff in one round trip).
    pub async fn verify_jwt(&self, jwt: &str) -> Result<Claims, AuthError> {
        let claims = self
            .inner
            .verifier
            .verify(jwt)
            .map_err(|e| AuthError::Unauthenticated(e.message()))?;
        let state = self
            .inner
            .store
            .revocation(claims.jti.as_deref(), &claims.sub)
            .await?;
        if revocation::jwt_is_revoked(&claims, &state) {
            return Err(AuthError::Unauthenticated("jwt has been revoked"));
        }
        Ok(claims)
    }

    /// Exchanges a valid JWT for a ws token bound to its `sub`.
    pub async fn issue_ws_token(&self, jwt: &str) -> Result<IssuedToken, AuthError> {
        let claims = self.verify_jwt(jwt).await?;
        let token = WsToken::generate().map_err(|error| {
            tracing::error!(%error, "the OS CSPRNG failed");
            AuthError::Internal("no randomness available")
        })?;
        let issued_ms = now_ms();
        let ttl = self.inner.ws_token_ttl;
        let expires_ms = issued_ms + u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let record = TokenRecord {
            issued_ms,
            expires_ms,
            user_id: claims.sub,
        };
        self.inner
            .store
            .put_ws_token(&token.hash, &record, ttl)
            .await?;
        Ok(IssuedToken {
            token: token.text,
            user_id: record.user_id,
            expires_ms,
        })
    }

    /// Checks a ws token and (unless reuse is configured) consumes it.
    pub async fn validate_ws_token(&self, token: &str) -> Result<TokenRecord, AuthError> {
        let hash = TokenHash::of(token);
        let consume = !self.inner.ws_token_reuse;
        let taken = self
            .inner
            .store
            .take_ws_token(&hash, consume)
            .await?
            .ok_or(AuthError::Unauthenticated(
                "ws token is unknown, expired or already used",
            ))?;
        if taken.record.expires_ms <= now_ms() {
            return Err(AuthError::Unauthenticated(
                "ws token is unknown, expired or already used",
            ));
        }
        if revocation::ws_token_is_revoked(&taken.record, taken.user_cutoff_ms) {
            return Err(AuthError::Unauthenticated("ws token has been revoked"));
        }
        Ok(taken.record)
    }

    /// Revokes one JWT by `jti`, kept until its expiry plus leeway (or forever).
    pub async fn revoke_jwt(&self, jti: &str, expires_ms: Option<u64>) -> Result<(), AuthError> {
        match revocation::jti_ttl(expires_ms, self.inner.leeway_s, now_ms()) {
            // Already past expiry plus leeway: `exp` rejects the JWT anyway.
            Some(Duration::ZERO) => Ok(()),
            ttl => Ok(self.inner.store.revoke_jti(jti, ttl).await?),
        }
    }

    /// Revokes every JWT and ws token of a user issued up to now, and tells
    /// every gateway to close the user's connections.
    pub async fn revoke_user(&self, user_id: &str) -> Result<(), AuthError> {
        self.inner.store.set_user_cutoff(user_id, now_ms()).await?;
        self.inner
            .events
            .publish(NewEvent {
                kind: EventKind::Disconnect,
                user_id: Some(user_id.to_owned()),
                data: String::new(),
            })
            .await?;
        Ok(())
    }
}
