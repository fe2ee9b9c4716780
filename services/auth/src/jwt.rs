//! JWT verification: only the configured keys and algorithms, `sub` and `exp` required.

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use secrecy::ExposeSecret;
use serde::Deserialize;
use wsauth_shared::limits::MAX_ID_BYTES;

use crate::config::Config;

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

/// Why the JWT settings could not be loaded (a startup error).
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    #[error("no JWT key configured: set JWT_HS256_SECRET, JWT_PUBLIC_KEY_FILE or JWT_JWKS_FILE")]
    NoKey,
    #[error("JWT_HS256_SECRET is empty")]
    EmptySecret,
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an RSA, EC P-256 or Ed25519 public key in PEM form")]
    BadPem { path: String },
    #[error("{path} is not a JWKS file: {reason}")]
    BadJwks { path: String, reason: String },
}

/// One verification key with the single algorithm it accepts.
struct VerifyKey {
    kid: Option<String>,
    key: DecodingKey,
    validation: Validation,
}

/// Verifies JWTs against the configured keys. Cheap to share behind an `Arc`.
pub struct JwtVerifier {
    keys: Vec<VerifyKey>,
}

impl JwtVerifier {
    /// Loads the keys named by the config; at least one is required.
    pub fn from_config(config: &Config) -> Result<Self, JwtConfigError> {
        let mut base = Validation::new(Algorithm::HS256);
        base.set_required_spec_claims(&["exp", "sub"]);
        base.validate_exp = true;
        base.validate_nbf = true;
        base.leeway = config.jwt_leeway_s;
        if let Some(issuer) = &config.jwt_issuer {
            base.set_issuer(&[issuer]);
            base.required_spec_claims.insert("iss".into());
        }
        if let Some(audience) = &config.jwt_audience {
            base.set_audience(&[audience]);
            base.required_spec_claims.insert("aud".into());
        } else {
            // Without a configured audience, a token carrying `aud` is still fine.
            base.validate_aud = false;
        }
        let with_alg = |alg: Algorithm| {
            let mut validation = base.clone();
            validation.algorithms = vec![alg];
            validation
        };

        let mut keys = Vec::new();
        if let Some(secret) = &config.jwt_hs256_secret {
            let secret = secret.expose_secret();
            if secret.is_empty() {
                return Err(JwtConfigError::EmptySecret);
            }
            let key = DecodingKey::from_secret(secret.as_bytes())
                .map_err(|_| JwtConfigError::EmptySecret)?;
            keys.push(VerifyKey {
                kid: None,
                key,
                validation: with_alg(Algorithm::HS256),
            });
        }
        if let Some(path) = &config.jwt_public_key_file {
            let pem = read(path)?;
            let (key, alg) = pem_key(&pem).ok_or_else(|| JwtConfigError::BadPem {
                path: path.display().to_string(),
            })?;
            keys.push(VerifyKey {
                kid: None,
                key,
                validation: with_alg(alg),
            });
        }
        if let Some(path) = &config.jwt_jwks_file {
            let text = read(path)?;
            let bad = |reason: String| JwtConfigError::BadJwks {
                path: path.display().to_string(),
                reason,
            };
            let set: JwkSet = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
            for jwk in &set.keys {
                let kid = jwk
                    .common
                    .key_id
                    .clone()
                    .ok_or_else(|| bad("a key has no kid".into()))?;
                let alg =
                    jwk_algorithm(jwk.common.key_algorithm, &jwk.algorithm).ok_or_else(|| {
                        bad(format!(
                            "key {kid}: only RS256, ES256 and EdDSA keys are supported"
                        ))
                    })?;
                let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(format!("key {kid}: {e}")))?;
                keys.push(VerifyKey {
                    kid: Some(kid),
                    key,
                    validation: with_alg(alg),
                });
            }
            if set.keys.is_empty() {
                return Err(bad("no keys".into()));
            }
        }
        if keys.is_empty() {
            return Err(JwtConfigError::NoKey);
        }
        Ok(Self { keys })
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

fn read(path: &Path) -> Result<Vec<u8>, JwtConfigError> {
    std::fs::read(path).map_err(|source| JwtConfigError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The key in a PEM file and the one algorithm it is used with.
fn pem_key(pem: &[u8]) -> Option<(DecodingKey, Algorithm)> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Some((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Some((key, Algorithm::ES256));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Some((key, Algorithm::EdDSA));
    }
    None
}

/// A JWKS key's algorithm: its `alg` when given, else inferred from the key type.
fn jwk_algorithm(
    declared: Option<KeyAlgorithm>,
    params: &AlgorithmParameters,
) -> Option<Algorithm> {
    let inferred = match params {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    match declared {
        None => Some(inferred),
        Some(alg) => {
            let alg = Algorithm::try_from(alg).ok()?;
            (alg == inferred).then_some(alg)
        }
    }
}

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
mod tests {
    use std::path::PathBuf;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    use super::*;
    use crate::clock::now_ms;

    const SECRET: &str = "unit-test-secret";

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn now() -> u64 {
        now_ms() / 1000
    }

    fn claims() -> Value {
        json!({ "sub": "alice", "exp": now() + 300, "iat": now(), "jti": "j1" })
    }

    fn hs256(claims: &Value) -> String {
        let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("hmac key");
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).expect("signs")
    }

    fn signed(alg: Algorithm, kid: Option<&str>, private_pem: &str, claims: &Value) -> String {
        let pem = std::fs::read(fixture(private_pem)).expect("fixture");
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_ed_pem(&pem),
        }
        .expect("fixture key");
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &key).expect("signs")
    }

    fn hs_verifier() -> JwtVerifier {
        JwtVerifier::from_config(&Config::with_hs256_secret(SECRET)).expect("config")
    }

    fn pem_verifier(public_pem: &str) -> JwtVerifier {
        let mut config = Config::with_hs256_secret("x");
        config.jwt_hs256_secret = None;
        config.jwt_public_key_file = Some(fixture(public_pem));
        JwtVerifier::from_config(&config).expect("config")
    }

    #[test]
    fn a_valid_hs256_jwt_yields_its_claims() {
        let claims = hs_verifier().verify(&hs256(&claims())).expect("valid");
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.jti.as_deref(), Some("j1"));
    }

    #[test]
    fn alg_none_is_refused() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims().to_string());
        let jwt = format!("{header}.{body}.");
        // jsonwebtoken has no `none` algorithm: the header itself does not parse.
        assert_eq!(hs_verifier().verify(&jwt).unwrap_err(), JwtError::Malformed);
    }

    #[test]
    fn a_sub_or_jti_over_256_bytes_is_refused() {
        let verifier = hs_verifier();
        let mut c = claims();
        c["sub"] = json!("u".repeat(257));
        assert_eq!(
            verifier.verify(&hs256(&c)).unwrap_err(),
            JwtError::ClaimTooLong
        );
        let mut c = claims();
        c["jti"] = json!("j".repeat(257));
        assert_eq!(
            verifier.verify(&hs256(&c)).unwrap_err(),
            JwtError::ClaimTooLong
        );
        let mut c = claims();
        c["sub"] = json!("u".repeat(256));
        c["jti"] = json!("j".repeat(256));
        assert!(verifier.verify(&hs256(&c)).is_ok());
    }

    #[test]
    fn time_claims_given_as_strings_are_refused() {
        // CVE-2026-25537: jsonwebtoken < 10.3 skipped nbf/exp given as strings.
        let verifier = hs_verifier();
        let mut c = claims();
        c["nbf"] = json!((now() + 3600).to_string());
        assert!(verifier.verify(&hs256(&c)).is_err());
        let mut c = claims();
        c["exp"] = json!((now() - 3600).to_string());
        assert!(verifier.verify(&hs256(&c)).is_err());
    }

    #[test]
    fn an_hs256_jwt_keyed_with_the_rsa_public_key_is_refused() {
        let public = std::fs::read(fixture("rsa_public.pem")).expect("fixture");
        let key = EncodingKey::from_secret(&public).expect("hmac key");
        let jwt =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(), &key).expect("signs");
        assert_eq!(
            pem_verifier("rsa_public.pem").verify(&jwt).unwrap_err(),
            JwtError::AlgorithmNotAllowed
        );
    }

    #[test]
    fn pem_keys_select_their_algorithm() {
        for (private, public, alg) in [
            ("rsa_private.pem", "rsa_public.pem", Algorithm::RS256),
            ("ec_private.pem", "ec_public.pem", Algorithm::ES256),
            ("ed_private.pem", "ed_public.pem", Algorithm::EdDSA),
        ] {
            let verifier = pem_verifier(public);
            let verified = verifier
                .verify(&signed(alg, None, private, &claims()))
                .expect("valid");
            assert_eq!(verified.sub, "alice", "{alg:?}");
            // A key of another type cannot stand in.
            let other = if alg == Algorithm::RS256 {
                signed(Algorithm::ES256, None, "ec_private.pem", &claims())
            } else {
                signed(Algorithm::RS256, None, "rsa_private.pem", &claims())
            };
            assert!(verifier.verify(&other).is_err(), "{alg:?}");
        }
    }

    #[test]
    fn jwks_keys_are_chosen_by_kid() {
        let rsa = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_private.pem")).expect("f"))
            .expect("key");
        let ec = EncodingKey::from_ec_pem(&std::fs::read(fixture("ec_private.pem")).expect("f"))
            .expect("key");
        let mut rsa_jwk = Jwk::from_encoding_key(&rsa, Algorithm::RS256).expect("jwk");
        rsa_jwk.common.key_id = Some("r1".into());
        let mut ec_jwk = Jwk::from_encoding_key(&ec, Algorithm::ES256).expect("jwk");
        ec_jwk.common.key_id = Some("e1".into());
        let dir = std::env::temp_dir().join(format!("wsauth-jwks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("jwks.json");
        std::fs::write(&path, json!({ "keys": [rsa_jwk, ec_jwk] }).to_string()).expect("write");
        let mut config = Config::with_hs256_secret("x");
        config.jwt_hs256_secret = None;
        config.jwt_jwks_file = Some(path);
        let verifier = JwtVerifier::from_config(&config).expect("config");

        let good = signed(Algorithm::RS256, Some("r1"), "rsa_private.pem", &claims());
        assert_eq!(verifier.verify(&good).expect("valid").sub, "alice");
        let good = signed(Algorithm::ES256, Some("e1"), "ec_private.pem", &claims());
        assert!(verifier.verify(&good).is_ok());
        let wrong_kid = signed(Algorithm::RS256, Some("e1"), "rsa_private.pem", &claims());
        assert!(verifier.verify(&wrong_kid).is_err());
        let unknown = signed(Algorithm::RS256, Some("zz"), "rsa_private.pem", &claims());
        assert_eq!(
            verifier.verify(&unknown).unwrap_err(),
            JwtError::AlgorithmNotAllowed
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn time_claims_are_enforced_with_leeway() {
        let verifier = hs_verifier();
        let mut c = claims();
        c["exp"] = json!(now() - 120);
        assert_eq!(verifier.verify(&hs256(&c)).unwrap_err(), JwtError::Expired);
        c["exp"] = json!(now() - 5); // inside the 30 s leeway
        assert!(verifier.verify(&hs256(&c)).is_ok());
        let mut c = claims();
        c["nbf"] = json!(now() + 120);
        assert_eq!(
            verifier.verify(&hs256(&c)).unwrap_err(),
            JwtError::NotYetValid
        );
    }

    #[test]
    fn sub_and_exp_are_required() {
        let verifier = hs_verifier();
        for missing in ["sub", "exp"] {
            let mut c = claims();
            c.as_object_mut().expect("object").remove(missing);
            assert_eq!(
                verifier.verify(&hs256(&c)).unwrap_err(),
                JwtError::MissingClaim,
                "{missing}"
            );
        }
        let mut c = claims();
        c["sub"] = json!("");
        assert_eq!(
            verifier.verify(&hs256(&c)).unwrap_err(),
            JwtError::MissingClaim
        );
        let mut c = claims();
        c["exp"] = json!("soon");
        assert!(verifier.verify(&hs256(&c)).is_err());
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let mut config = Config::with_hs256_secret(SECRET);
        config.jwt_issuer = Some("https://issuer".into());
        config.jwt_audience = Some("wsauth".into());
        let verifier = JwtVerifier::from_config(&config).expect("config");
        let mut c = claims();
        c["iss"] = json!("https://issuer");
        c["aud"] = json!("wsauth");
        assert!(verifier.verify(&hs256(&c)).is_ok());
        let mut wrong = c.clone();
        wrong["iss"] = json!("https://other");
        assert_eq!(
            verifier.verify(&hs256(&wrong)).unwrap_err(),
            JwtError::WrongIssuer
        );
        let mut wrong = c.clone();
        wrong["aud"] = json!("other");
        assert_eq!(
            verifier.verify(&hs256(&wrong)).unwrap_err(),
            JwtError::WrongAudience
        );
        let mut missing = c.clone();
        missing.as_object_mut().expect("object").remove("iss");
        assert_eq!(
            verifier.verify(&hs256(&missing)).unwrap_err(),
            JwtError::MissingClaim
        );
    }

    #[test]
    fn a_wrong_signature_is_refused() {
        let jwt = hs256(&claims());
        let other = JwtVerifier::from_config(&Config::with_hs256_secret("other")).expect("config");
        assert_eq!(other.verify(&jwt).unwrap_err(), JwtError::BadSignature);
        assert_eq!(
            hs_verifier().verify("not.a.jwt").unwrap_err(),
            JwtError::Malformed
        );
    }

    #[test]
    fn no_key_is_a_startup_error() {
        let mut config = Config::with_hs256_secret("x");
        config.jwt_hs256_secret = None;
        assert!(matches!(
            JwtVerifier::from_config(&config),
            Err(JwtConfigError::NoKey)
        ));
    }
}
