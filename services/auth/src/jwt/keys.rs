//! Loading the JWT verification keys at start: the HS256 secret, a PEM public
//! key or a JWKS file, each bound to the one algorithm it may verify.

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;

use crate::config::Config;

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
pub(super) struct VerifyKey {
    /// The JWKS `kid` that selects it; `None` for the HS256 secret and a PEM key.
    pub(super) kid: Option<String>,
    pub(super) key: DecodingKey,
    /// The claim checks, with `algorithms` holding exactly this key's algorithm.
    pub(super) validation: Validation,
}

/// The keys named by the config, each with the one algorithm it accepts and
/// the claim checks every verification applies; at least one is required.
pub(super) fn load(config: &Config) -> Result<Vec<VerifyKey>, JwtConfigError> {
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
        let key =
            DecodingKey::from_secret(secret.as_bytes()).map_err(|_| JwtConfigError::EmptySecret)?;
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
            let alg = jwk_algorithm(jwk.common.key_algorithm, &jwk.algorithm).ok_or_else(|| {
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
    Ok(keys)
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
