//! Minting JWTs the way an identity provider would, including the wrong ways:
//! expired, not yet valid, signed with another key or algorithm, unsigned.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

/// The HS256 secret every harness auth is started with (`JWT_HS256_SECRET`).
pub const JWT_SECRET: &str = "wsauth-e2e-hs256-secret-which-is-only-for-tests-0123456789";

/// The signing algorithm of a [`Jwt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlg {
    Hs256,
    Hs384,
    Hs512,
    /// `alg: none` with an empty signature, which no verifier may accept.
    None,
}

/// A JWT under construction. Defaults: `sub` as given, `iat` now, `exp` in
/// five minutes, a random `jti`, HS256 with [`JWT_SECRET`].
#[derive(Clone)]
pub struct Jwt {
    claims: Map<String, Value>,
    alg: JwtAlg,
    secret: Vec<u8>,
}

impl Jwt {
    pub fn for_user(sub: &str) -> Self {
        let now = now_unix();
        let jti = format!("jti-{:016x}", rand::random::<u64>());
        let claims = json!({ "sub": sub, "iat": now, "exp": now + 300, "jti": jti });
        Self {
            claims: claims
                .as_object()
                .expect("built from an object literal")
                .clone(),
            alg: JwtAlg::Hs256,
            secret: JWT_SECRET.as_bytes().to_vec(),
        }
    }

    /// `exp` = now + `seconds` (negative: already expired).
    pub fn expires_in(self, seconds: i64) -> Self {
        self.claim("exp", now_unix() + seconds)
    }

    /// `nbf` = now + `seconds`.
    pub fn not_before_in(self, seconds: i64) -> Self {
        self.claim("nbf", now_unix() + seconds)
    }

    /// `iat` = now + `seconds`.
    pub fn issued_in(self, seconds: i64) -> Self {
        self.claim("iat", now_unix() + seconds)
    }

    pub fn issuer(self, iss: &str) -> Self {
        self.claim("iss", iss)
    }

    pub fn audience(self, aud: &str) -> Self {
        self.claim("aud", aud)
    }

    pub fn jti(self, jti: &str) -> Self {
        self.claim("jti", jti)
    }

    /// Sets any claim.
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claims.insert(name.to_string(), value.into());
        self
    }

    /// Removes a claim (e.g. `sub` or `exp`, both required).
    pub fn without(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    pub fn signed_with(mut self, secret: &[u8]) -> Self {
        self.secret = secret.to_vec();
        self
    }

    pub fn alg(mut self, alg: JwtAlg) -> Self {
        self.alg = alg;
        self
    }

    /// The `jti` claim, for RevokeJwt.
    pub fn jti_claim(&self) -> Option<&str> {
        self.claims.get("jti").and_then(Value::as_str)
    }

    /// The `exp` claim in unix seconds.
    pub fn exp_claim(&self) -> Option<i64> {
        self.claims.get("exp").and_then(Value::as_i64)
    }

    /// The compact serialisation.
    pub fn sign(&self) -> String {
        let algorithm = match self.alg {
            JwtAlg::Hs256 => Algorithm::HS256,
            JwtAlg::Hs384 => Algorithm::HS384,
            JwtAlg::Hs512 => Algorithm::HS512,
            JwtAlg::None => {
                let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
                let claims = URL_SAFE_NO_PAD.encode(Value::Object(self.claims.clone()).to_string());
                return format!("{header}.{claims}.");
            }
        };
        let key = EncodingKey::from_secret(&self.secret).expect("test secrets are never empty");
        self.sign_with(algorithm, &key)
    }

    /// The compact serialisation, signed with `key` (e.g. an RSA or EC key).
    pub fn sign_with(&self, algorithm: Algorithm, key: &EncodingKey) -> String {
        jsonwebtoken::encode(&Header::new(algorithm), &self.claims, key)
            .expect("signing a JSON object with a valid key cannot fail")
    }
}

/// Seconds since the unix epoch.
pub fn now_unix() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since.as_secs()).expect("seconds since 1970 fit in i64")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims_of(jwt: &str) -> Value {
        let part = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn a_default_jwt_has_sub_iat_exp_and_jti() {
        let claims = claims_of(&Jwt::for_user("alice").sign());
        assert_eq!(claims["sub"], "alice");
        assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());
        assert!(claims["jti"].is_string());
    }

    #[test]
    fn an_unsigned_jwt_has_alg_none_and_an_empty_signature() {
        let jwt = Jwt::for_user("alice").alg(JwtAlg::None).sign();
        assert!(jwt.ends_with('.'));
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(jwt.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], "none");
    }
}
