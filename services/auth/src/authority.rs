//! The credential rules: issue and validate ws tokens, verify JWTs, revoke.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::error::AuthError;
use crate::event::{EventKind, NewEvent};
use crate::events::Events;
use crate::jwt::{Claims, JwtVerifier};
use crate::revocation;
use crate::store::{IssueRequest, Store};
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

    /// Checks a JWT's signature and claims, without revocation.
    fn verify_signed(&self, jwt: &str) -> Result<Claims, AuthError> {
        self.inner
            .verifier
            .verify(jwt)
            .map_err(|e| AuthError::Unauthenticated(e.message()))
    }

    /// Verifies a JWT, then checks its revocation (jti and user cutoff in one round trip).
    pub async fn verify_jwt(&self, jwt: &str) -> Result<Claims, AuthError> {
        let claims = self.verify_signed(jwt)?;
        let state = self
            .inner
            .store
            .revocation(claims.jti.as_deref(), &claims.sub)
            .await?;
        if revocation::jwt_is_revoked(claims.iat, &state, now_ms(), self.inner.leeway_s) {
            return Err(AuthError::Unauthenticated("jwt has been revoked"));
        }
        Ok(claims)
    }

    /// Exchanges a valid JWT for a ws token bound to its `sub`: the revocation
    /// check and the token's creation are one atomic store call, stamped with
    /// the store's clock (one round trip, and no window for a RevokeUser).
    pub async fn issue_ws_token(&self, jwt: &str) -> Result<IssuedToken, AuthError> {
        let claims = self.verify_signed(jwt)?;
        let token = WsToken::generate().map_err(|error| {
            tracing::error!(%error, "the OS CSPRNG failed");
            AuthError::Internal("no randomness available")
        })?;
        let record = self
            .inner
            .store
            .issue_ws_token(IssueRequest {
                hash: &token.hash,
                user_id: &claims.sub,
                jti: claims.jti.as_deref(),
                iat: claims.iat,
                ttl: self.inner.ws_token_ttl,
                leeway_s: self.inner.leeway_s,
            })
            .await?
            .ok_or(AuthError::Unauthenticated("jwt has been revoked"))?;
        Ok(IssuedToken {
            token: token.text,
            expires_ms: record.expires_ms,
            user_id: record.user_id,
        })
    }

    /// Checks a ws token and (unless reuse is configured) consumes it.
    pub async fn validate_ws_token(&self, token: &str) -> Result<TokenRecord, AuthError> {
        // Anything but the 43 characters we hand out cannot be a token: no store call.
        if !WsToken::is_well_formed(token) {
            return Err(AuthError::Unauthenticated(
                "ws token is unknown, expired or already used",
            ));
        }
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
        // Expiry is the store's own TTL; `expires_ms` is the store's clock too,
        // so comparing it with this host's clock would only add skew.
        if revocation::ws_token_is_revoked(&taken.record, taken.user_cutoff_ms) {
            return Err(AuthError::Unauthenticated("ws token has been revoked"));
        }
        Ok(taken.record)
    }

    /// Revokes one JWT by `jti`, kept until its expiry plus leeway (or
    /// forever), and tells every gateway to close the connections
    /// authenticated with it. Stored first: a session verifying the JWT
    /// after the event is refused by the store instead.
    pub async fn revoke_jwt(&self, jti: &str, expires_ms: Option<u64>) -> Result<(), AuthError> {
        let ttl = revocation::jti_ttl(expires_ms, self.inner.leeway_s, now_ms());
        self.inner.store.revoke_jti(jti, ttl).await?;
        self.inner
            .events
            .publish(NewEvent {
                kind: EventKind::RevokeJwt,
                user_id: None,
                data: jti.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Revokes every JWT and ws token of a user issued up to now, and tells
    /// every gateway to close the user's connections.
    pub async fn revoke_user(&self, user_id: &str) -> Result<(), AuthError> {
        self.inner.store.revoke_user(user_id).await?;
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
