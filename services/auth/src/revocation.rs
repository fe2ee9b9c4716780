//! The revocation rules: by `jti`, and by user with a cutoff time.

use std::time::Duration;

use crate::store::RevocationState;
use crate::ws_token::TokenRecord;

/// Whether a verified JWT (its `iat`, Unix s) is revoked: its `jti` is
/// listed, or its user was revoked at or after its `iat` (whole seconds; a JWT
/// without `iat` counts as issued before any cutoff). Once a user has a
/// cutoff, an `iat` further ahead of `now_ms` than the leeway is not believed
/// either: it would otherwise let a JWT minted before the cutoff survive it.
///
/// The Redis store evaluates the same rule in its issue script (`store/redis.rs`).
pub fn jwt_is_revoked(
    iat: Option<u64>,
    state: &RevocationState,
    now_ms: u64,
    leeway_s: u64,
) -> bool {
    if state.jti_revoked {
        return true;
    }
    match state.user_cutoff_ms {
        Some(cutoff_ms) => iat.is_none_or(|iat| {
            iat <= cutoff_ms / 1000 || iat > (now_ms / 1000).saturating_add(leeway_s)
        }),
        None => false,
    }
}

/// Whether a ws token was issued at or before its user's cutoff (ms).
pub fn ws_token_is_revoked(record: &TokenRecord, user_cutoff_ms: Option<u64>) -> bool {
    user_cutoff_ms.is_some_and(|cutoff| record.issued_ms <= cutoff)
}

/// How long a `jti` revocation must be kept: until the JWT's own expiry plus
/// the leeway plus one second (jsonwebtoken compares whole seconds, so a JWT
/// is accepted up to the end of its `exp + leeway` second); None: forever.
/// An `expires_at` already past still keeps the revocation for leeway + 1 s:
/// the caller's clock may be ahead of ours.
pub fn jti_ttl(expires_at_ms: Option<u64>, leeway_s: u64, now_ms: u64) -> Option<Duration> {
    let margin_ms = leeway_s.saturating_add(1).saturating_mul(1000);
    expires_at_ms.map(|expires| {
        let until = expires.saturating_add(margin_ms);
        Duration::from_millis(until.saturating_sub(now_ms).max(margin_ms))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_002_000;

    fn revoked(iat: Option<u64>, state: &RevocationState) -> bool {
        jwt_is_revoked(iat, state, NOW_MS, 30)
    }

    #[test]
    fn a_user_cutoff_revokes_jwts_issued_up_to_its_second() {
        let state = RevocationState {
            jti_revoked: false,
            user_cutoff_ms: Some(1_000_500),
        };
        assert!(revoked(Some(999), &state));
        assert!(revoked(Some(1000), &state));
        assert!(!revoked(Some(1001), &state));
        assert!(revoked(None, &state));
        assert!(!revoked(None, &RevocationState::default()));
    }

    #[test]
    fn an_iat_beyond_the_leeway_does_not_survive_a_cutoff() {
        let state = RevocationState {
            jti_revoked: false,
            user_cutoff_ms: Some(1_000_500),
        };
        // now = 1002 s, leeway 30 s.
        assert!(!revoked(Some(1032), &state));
        assert!(revoked(Some(1033), &state));
        assert!(revoked(Some(u64::MAX), &state));
        // Without a cutoff there is nothing to survive.
        assert!(!revoked(Some(u64::MAX), &RevocationState::default()));
    }

    #[test]
    fn a_revoked_jti_wins() {
        let state = RevocationState {
            jti_revoked: true,
            user_cutoff_ms: None,
        };
        assert!(revoked(Some(5), &state));
    }

    #[test]
    fn ws_tokens_issued_at_the_cutoff_are_revoked() {
        let record = TokenRecord {
            issued_ms: 10,
            expires_ms: 20,
            user_id: "u".into(),
        };
        assert!(ws_token_is_revoked(&record, Some(10)));
        assert!(!ws_token_is_revoked(&record, Some(9)));
        assert!(!ws_token_is_revoked(&record, None));
    }

    #[test]
    fn jti_revocations_outlive_the_jwt_by_the_leeway() {
        assert_eq!(jti_ttl(None, 30, 0), None);
        assert_eq!(
            jti_ttl(Some(10_000), 30, 5_000),
            Some(Duration::from_millis(36_000))
        );
        // Already expired: still kept for leeway + 1 s.
        assert_eq!(
            jti_ttl(Some(10_000), 0, 20_000),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            jti_ttl(Some(u64::MAX), u64::MAX, 0),
            Some(Duration::from_millis(u64::MAX))
        );
    }
}
