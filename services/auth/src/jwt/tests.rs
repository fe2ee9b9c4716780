//! Verification and key loading, through `JwtVerifier` as the service uses it.

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
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
    let jwt = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(), &key).expect("signs");
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
