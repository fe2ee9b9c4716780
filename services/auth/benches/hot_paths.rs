//! Micro-benchmarks of the CPU side of the hot RPCs: ws token generation and
//! hashing (IssueWsToken / ValidateToken) and JWT verification (VerifyJwt).

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use wsauth_auth::Config;
use wsauth_auth::clock::now_ms;
use wsauth_auth::jwt::JwtVerifier;
use wsauth_auth::ws_token::{TokenHash, WsToken};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn ws_tokens(c: &mut Criterion) {
    c.bench_function("ws_token/generate+hash+key", |b| {
        b.iter(|| {
            let token = WsToken::generate().expect("the OS CSPRNG works");
            black_box(token.hash.key())
        })
    });
    let token = WsToken::generate().expect("the OS CSPRNG works").text;
    c.bench_function("ws_token/hash+key (validate)", |b| {
        b.iter(|| black_box(TokenHash::of(black_box(&token)).key()))
    });
}

fn jwts(c: &mut Criterion) {
    let now = now_ms() / 1000;
    let claims = json!({ "sub": "user-1234", "iat": now, "exp": now + 3600, "jti": "abc" });

    let secret = "bench-secret";
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()).expect("hmac key"),
    )
    .expect("sign");
    let verifier = JwtVerifier::from_config(&Config::with_hs256_secret(secret)).expect("config");
    c.bench_function("jwt/verify HS256", |b| {
        b.iter(|| black_box(verifier.verify(black_box(&hs))))
    });

    for (alg, private, public) in [
        (Algorithm::RS256, "rsa_private.pem", "rsa_public.pem"),
        (Algorithm::ES256, "ec_private.pem", "ec_public.pem"),
        (Algorithm::EdDSA, "ed_private.pem", "ed_public.pem"),
    ] {
        let pem = std::fs::read(fixture(private)).expect("fixture");
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_ed_pem(&pem),
        }
        .expect("key");
        let jwt = jsonwebtoken::encode(&Header::new(alg), &claims, &key).expect("sign");
        let mut config = Config::with_hs256_secret("unused");
        config.jwt_hs256_secret = None;
        config.jwt_public_key_file = Some(fixture(public));
        let verifier = JwtVerifier::from_config(&config).expect("config");
        c.bench_function(&format!("jwt/verify {alg:?}"), |b| {
            b.iter(|| black_box(verifier.verify(black_box(&jwt))))
        });
    }
}

criterion_group!(benches, ws_tokens, jwts);
criterion_main!(benches);
