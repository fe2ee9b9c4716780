//! JWT verification: only the configured keys and algorithms, `sub` and `exp` required.
//! Which keys and algorithms those are is read once at start (`keys`).

mod keys;

use jsonwebtoken::errors::ErrorKind;
use serde::Deserialize;
use wsauth_shared::limits::MAX_ID_BYTES;

use crate::config::Config;
pub use keys::JwtConfigError;
use keys::VerifyKey;

/// The claims wsauth reads from a verified JWT.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// The user id. Defaulted only so that a missing `sub` is reported by
    /// `required_spec_claims` as a missing claim, not as malformed JSON.
    #[serde(default)]
    pub sub: String,
    /// Expiry, Unix seconds (presence enforced the same way).
    #[serde(default)]
    pub exp: u64,
    /// Issued at, Unix seconds; compared with a user's revocation cutoff.
    #[serde(default)]
    pub iat: Option<u64>,
    /// The JWT's id, for revocation by jti.
    #[serde(default)]
    pub jti: Option<String>,
}

/// Why a JWT was refused. Each message is safe to return to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub enum JwtError {
    /// Not three base64url parts with a JSON header.
    Malformed,
    /// No configured key for the header's alg / kid.
    AlgorithmNotAllowed,
    /// The signature does not verify.
    BadSignature,
    /// `exp` passed (beyond the leeway).
    Expired,
    /// `nbf` not reached (beyond the leeway).
    NotYetValid,
    /// `iss` differs from JWT_ISSUER.
    WrongIssuer,
    /// `aud` differs from JWT_AUDIENCE.
    WrongAudience,
    /// `sub`, `exp` (or configured `iss`/`aud`) missing or empty.
    MissingClaim,
    /// A claim has the wrong type.
    BadClaims,
    /// `sub` or `jti` longer than 256 bytes: such a user or jti could not be revoked.
    ClaimTooLong,
}

impl JwtError {
    /// The reason, for the caller (names no key and no token).
    pub fn message(self) -> &'static str {
        match self {
            Self::Malformed => "jwt is malformed",
            Self::AlgorithmNotAllowed => "jwt algorithm or key not accepted",
            Self::BadSignature => "jwt signature is invalid",
            Self::Expired => "jwt has expired",
            Self::NotYetValid => "jwt is not yet valid",
            Self::WrongIssuer => "jwt issuer not accepted",
            Self::WrongAudience => "jwt audience not accepted",
            Self::MissingClaim => "jwt lacks a required claim (sub, exp)",
            Self::BadClaims => "jwt claims are malformed",
            Self::ClaimTooLong => "jwt sub or jti is longer than 256 bytes",
        }
    }
}

/// Verifies JWTs against the configured keys. Cheap to share behind an `Arc`.
pub struct JwtVerifier {
    keys: Vec<VerifyKey>,
}

impl JwtVerifier {
    /// Loads the keys named by the config; at least one is required.
    pub fn from_config(config: &Config) -> Result<Self, JwtConfigError> {
        Ok(Self {
            keys: keys::load(config)?,
        })
    }

    /// Checks signature, algorithm, exp/nbf (with leeway), iss/aud and the
    /// required claims. Revocation is the caller's next step.
    pub fn verify(&self, jwt: &str) -> Result<Claims, JwtError> {
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| JwtError::Malformed)?;
        // A `kid` selects a JWKS key; otherwise the key configured for the header's alg.
        // Either way the key's own single algorithm must match the header: a token
        // whose `alg` was swapped (e.g. HS256 "signed" with a public key) finds no key.
        let key = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid.as_str())),
            None => None,
        }
        .or_else(|| {
            self.keys
                .iter()
                .find(|k| k.kid.is_none() && k.validation.algorithms[0] == header.alg)
        })
        .ok_or(JwtError::AlgorithmNotAllowed)?;
        let data = jsonwebtoken::decode::<Claims>(jwt, &key.key, &key.validation)
            .map_err(|e| classify(e.kind()))?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(JwtError::MissingClaim);
        }
        if claims.sub.len() > MAX_ID_BYTES
            || claims
                .jti
                .as_ref()
                .is_some_and(|jti| jti.len() > MAX_ID_BYTES)
        {
            return Err(JwtError::ClaimTooLong);
        }
        Ok(claims)
    }
}

/// jsonwebtoken's error kinds as the caller-safe reasons above.
fn classify(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) => JwtError::MissingClaim,
        ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) => JwtError::BadClaims,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => JwtError::AlgorithmNotAllowed,
        _ => JwtError::Malformed,
    }
}

#[cfg(test)]
mod tests;
