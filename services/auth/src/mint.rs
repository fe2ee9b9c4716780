//! `wsauth-auth mint-jwt`: an HS256 JWT for development and tests.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::clock::now_ms;
use crate::config::Config;

/// Why no JWT could be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// mint-jwt signs with the HS256 secret only.
    #[error("mint-jwt needs JWT_HS256_SECRET")]
    NoSecret,
    /// An empty `--sub`.
    #[error("--sub must not be empty")]
    EmptySub,
    /// Signing failed.
    #[error("cannot sign: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    /// No randomness for the jti.
    #[error("cannot draw a random jti: {0}")]
    Random(#[from] getrandom::Error),
}

#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// A JWT for `sub`, valid for `ttl_s` seconds, with iat, exp, a random jti,
/// and iss/aud when configured.
pub fn mint_jwt(config: &Config, sub: &str, ttl_s: u64) -> Result<String, MintError> {
    let secret = config
        .jwt_hs256_secret
        .as_ref()
        .ok_or(MintError::NoSecret)?;
    if secret.expose_secret().is_empty() {
        return Err(MintError::NoSecret);
    }
    if sub.is_empty() {
        return Err(MintError::EmptySub);
    }
    let mut jti = [0u8; 16];
    getrandom::fill(&mut jti)?;
    let iat = now_ms() / 1000;
    let claims = MintClaims {
        sub,
        iat,
        exp: iat.saturating_add(ttl_s),
        jti: jti.iter().map(|b| format!("{b:02x}")).collect(),
        iss: config.jwt_issuer.as_deref(),
        aud: config.jwt_audience.as_deref(),
    };
    let key = EncodingKey::from_secret(secret.expose_secret().as_bytes())?;
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &key,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::JwtVerifier;

    #[test]
    fn minted_jwts_verify_with_the_same_config() {
        let mut config = Config::with_hs256_secret("s3cret");
        config.jwt_issuer = Some("iss".into());
        config.jwt_audience = Some("aud".into());
        let jwt = mint_jwt(&config, "alice", 60).expect("mints");
        let claims = JwtVerifier::from_config(&config)
            .expect("config")
            .verify(&jwt)
            .expect("valid");
        assert_eq!(claims.sub, "alice");
        assert!(claims.jti.is_some_and(|j| j.len() == 32));
        assert!(claims.iat.is_some());
    }

    #[test]
    fn minting_needs_the_hs256_secret() {
        let mut config = Config::with_hs256_secret("x");
        config.jwt_hs256_secret = None;
        assert!(matches!(
            mint_jwt(&config, "a", 1),
            Err(MintError::NoSecret)
        ));
    }
}
