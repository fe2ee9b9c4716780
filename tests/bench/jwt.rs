//! HS256 JWTs for the simulated users, minted here rather than by
//! `wsauth-auth mint-jwt` so that thousands cost microseconds, not processes.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Signs JWTs the auth service under test accepts.
#[derive(Clone)]
pub struct JwtMinter {
    key: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
}

impl JwtMinter {
    pub fn new(
        secret: &str,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            key: EncodingKey::from_secret(secret.as_bytes())?,
            issuer,
            audience,
        })
    }

    /// A JWT for `sub` valid for an hour: longer than any run, so no client
    /// is closed for an expired JWT mid-measurement.
    pub fn mint(&self, sub: &str) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims {
            sub,
            iat: now,
            exp: now + 3600,
            jti: format!("{:032x}", rand::random::<u128>()),
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.key,
        )?)
    }
}
