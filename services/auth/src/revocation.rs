//! The revocation rules: by `jti`, and by user with a cutoff time.

use std::time::Duration;

use crate::jwt::Claims;
use crate::store::RevocationState;
use crate::ws_token::TokenRecord;

/// Whether a verified JWT is revoked: its `jti` is listed, or its user was
/// revoked at or after its `iat` (whole seconds; a JWT without `iat` counts
/// as issued before any cutoff).
pub fn jwt_is_revoked(claims: &Claims, state: &RevocationState) -> bool {
    if state.jti_revoked {
        return true;
    }
    match state.user_cutoff_ms {
        Some(cutoff_ms) => claims.iat.is_none_or(|iat| iat <= cutoff_ms / 1000),
        None => false,
    }
}

/// Whether a ws token was issued at or before its user's cutoff (ms).
pub fn ws_token_is_revoked(record: &TokenRecord, user_cutoff_ms: Option<u64>) -> bool {
    user_cutoff_ms.is_some_and(|cutoff| record.issued_ms <= cutoff)
}

/// How long a `jti` revocation must be kept: until the JWT's own expiry plus
/// the leeway (after that the JWT fails on `exp` anyway); None: forever.
/// `Some(ZERO)` means there is nothing left to keep.
pub fn jti_ttl(expires_at_ms: Option<u64>, leeway_s: u64, now_ms: u64) -> Option<Duration> {
    expires_at_ms.map(|expires| {
        let until = expires.saturating_add(leeway_s.saturating_mul(1000));
        Duration::from_millis(until.saturating_sub(now_ms))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(iat: Option<u64>) -> Claims {
        Claims {
            sub: "u".into(),
            exp: 2_000_000_000,
            iat,
            jti: None,
        }
    }

    #[test]
    fn a_user_cutoff_revokes_jwts_issued_up_to_its_second() {
        let state = RevocationState {
            jti_revoked: false,
            user_cutoff_ms: Some(1_000_500),
        };
        assert!(jwt_is_revoked(&claims(Some(999)), &state));
        assert!(jwt_is_revoked(&claims(Some(1000)), &state));
        assert!(!jwt_is_revoked(&claims(Some(1001)), &state));
        assert!(jwt_is_revoked(&claims(None), &state));
        assert!(!jwt_is_revoked(&claims(None), &RevocationState::default()));
    }

    #[test]
    fn a_revoked_jti_wins() {
        let state = RevocationState {
            jti_revoked: true,
            user_cutoff_ms: None,
        };
        assert!(jwt_is_revoked(&claims(Some(5)), &state));
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
            Some(Duration::from_millis(35_000))
        );
        assert_eq!(jti_ttl(Some(10_000), 0, 20_000), Some(Duration::ZERO));
    }
}
