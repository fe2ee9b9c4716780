//! AuthService over real gRPC against a private redis-server.

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use prost_types::Timestamp;
use tonic::Code;
use wsauth_shared::proto::{
    IssueWsTokenRequest, RevokeJwtRequest, RevokeUserRequest, ValidateTokenRequest,
    VerifyJwtRequest,
};
use wsauth_tests::TestRedis;

fn issue(jwt: &str) -> IssueWsTokenRequest {
    IssueWsTokenRequest { jwt: jwt.into() }
}
fn validate(token: &str) -> ValidateTokenRequest {
    ValidateTokenRequest {
        token: token.into(),
    }
}
fn verify(jwt: &str) -> VerifyJwtRequest {
    VerifyJwtRequest { jwt: jwt.into() }
}

#[tokio::test]
async fn an_issued_ws_token_validates_once_for_its_user() {
    let redis = TestRedis::spawn();
    let auth = TestAuth::spawn(config(Some(redis.url()))).await;
    let mut client = auth.auth_client().await;

    let issued = call(client.issue_ws_token(req(issue(&Jwt::for_user("alice").sign()), None)))
        .await
        .expect("issue");
    assert_eq!(issued.user_id, "alice");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(&issued.token)
            .expect("url-safe base64")
            .len(),
        32
    );
    let expires = issued.expires_at.expect("expires_at").seconds as u64;
    assert!(
        (now_s() + 55..=now_s() + 61).contains(&expires),
        "expires {expires}"
    );

    let valid = call(client.validate_token(req(validate(&issued.token), Some(INTERNAL_KEY))))
        .await
        .expect("first validation");
    assert_eq!(valid.user_id, "alice");
    assert_eq!(
        valid.expires_at.expect("expires_at").seconds as u64,
        expires
    );
    let again = call(client.validate_token(req(validate(&issued.token), Some(INTERNAL_KEY)))).await;
    assert_code(again, Code::Unauthenticated);
    let unknown = call(client.validate_token(req(validate("nope"), Some(ADMIN_KEY)))).await;
    assert_code(unknown, Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_racing_validations_of_one_token_give_exactly_one_success() {
    let redis = TestRedis::spawn();
    let auth = TestAuth::spawn(config(Some(redis.url()))).await;
    let mut client = auth.auth_client().await;
    let token = call(client.issue_ws_token(req(issue(&Jwt::for_user("racer").sign()), None)))
        .await
        .expect("issue")
        .token;

    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut client = auth.auth_client().await;
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            call(client.validate_token(req(validate(&token), Some(INTERNAL_KEY)))).await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => ok += 1,
            Err(status) => assert_eq!(status.code(), Code::Unauthenticated),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn reuse_mode_accepts_a_token_until_it_expires() {
    let redis = TestRedis::spawn();
    let mut config = config(Some(redis.url()));
    config.ws_token_reuse = true;
    config.ws_token_ttl_s = 1;
    let auth = TestAuth::spawn(config).await;
    let mut client = auth.auth_client().await;
    let token = call(client.issue_ws_token(req(issue(&Jwt::for_user("bob").sign()), None)))
        .await
        .expect("issue")
        .token;
    for _ in 0..3 {
        let valid = call(client.validate_token(req(validate(&token), Some(INTERNAL_KEY)))).await;
        assert_eq!(valid.expect("reusable").user_id, "bob");
    }
    // TTL 1 s: the token disappears on its own.
    wait_until(Duration::from_secs(5), "the ws token to expire", || {
        let mut client = client.clone();
        let token = token.clone();
        async move {
            match call(client.validate_token(req(validate(&token), Some(INTERNAL_KEY)))).await {
                Ok(_) => false,
                Err(status) => {
                    assert_eq!(status.code(), Code::Unauthenticated);
                    true
                }
            }
        }
    })
    .await;
}

#[tokio::test]
async fn an_unused_single_use_token_expires_after_its_ttl() {
    let redis = TestRedis::spawn();
    let mut config = config(Some(redis.url()));
    config.ws_token_ttl_s = 1;
    let auth = TestAuth::spawn(config).await;
    let mut client = auth.auth_client().await;
    let issued = call(client.issue_ws_token(req(issue(&Jwt::for_user("t").sign()), None)))
        .await
        .expect("issue");
    let key_count = || async {
        let client = redis::Client::open(redis.url()).expect("client");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("conn");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("wsauth:wst:*")
            .query_async(&mut conn)
            .await
            .expect("keys");
        keys.len()
    };
    assert_eq!(key_count().await, 1);
    // Redis itself expires it: wait (with a deadline) until the key is gone, unconsumed.
    wait_until(
        Duration::from_secs(5),
        "redis to expire the token",
        || async { key_count().await == 0 },
    )
    .await;
    let late = call(client.validate_token(req(validate(&issued.token), Some(INTERNAL_KEY)))).await;
    assert_code(late, Code::Unauthenticated);
}

#[tokio::test]
async fn caller_keys_gate_each_rpc() {
    let redis = TestRedis::spawn();
    let auth = TestAuth::spawn(config(Some(redis.url()))).await;
    let mut client = auth.auth_client().await;
    let token = || async {
        let mut client = auth.auth_client().await;
        call(client.issue_ws_token(req(issue(&Jwt::for_user("k").sign()), None)))
            .await
            .expect("issue")
            .token
    };

    for key in [None, Some("wrong"), Some("")] {
        let t = token().await;
        assert_code(
            call(client.validate_token(req(validate(&t), key))).await,
            Code::Unauthenticated,
        );
        assert_code(
            call(client.verify_jwt(req(verify(&Jwt::for_user("k").sign()), key))).await,
            Code::Unauthenticated,
        );
    }
    // An internal key is not enough for the admin RPCs.
    let revoke = RevokeJwtRequest {
        jti: "x".into(),
        expires_at: None,
    };
    assert_code(
        call(client.revoke_jwt(req(revoke.clone(), Some(INTERNAL_KEY)))).await,
        Code::Unauthenticated,
    );
    let revoke_user = RevokeUserRequest {
        user_id: "someone-else".into(),
    };
    assert_code(
        call(client.revoke_user(req(revoke_user.clone(), Some(INTERNAL_KEY)))).await,
        Code::Unauthenticated,
    );
    assert_code(
        call(client.revoke_jwt(req(revoke.clone(), None))).await,
        Code::Unauthenticated,
    );
    // Admin keys do everything.
    call(client.revoke_jwt(req(revoke, Some(ADMIN_KEY))))
        .await
        .expect("admin revoke");
    call(client.revoke_user(req(revoke_user, Some(ADMIN_KEY))))
        .await
        .expect("admin revoke user");
    let t = token().await;
    call(client.validate_token(req(validate(&t), Some(ADMIN_KEY))))
        .await
        .expect("admin validates");
    call(client.verify_jwt(req(verify(&Jwt::for_user("k2").sign()), Some(ADMIN_KEY))))
        .await
        .expect("admin verifies");
}

#[tokio::test]
async fn verify_jwt_returns_the_claims() {
    let redis = TestRedis::spawn();
    let auth = TestAuth::spawn(config(Some(redis.url()))).await;
    let mut client = auth.auth_client().await;
    let jwt = Jwt::for_user("dora").jti("jti-1");
    let exp = jwt.exp_claim().expect("exp");
    let verified = call(client.verify_jwt(req(verify(&jwt.sign()), Some(INTERNAL_KEY))))
        .await
        .expect("verify");
    assert_eq!(verified.user_id, "dora");
    assert_eq!(verified.jti, "jti-1");
    assert_eq!(
        verified.expires_at,
        Some(Timestamp {
            seconds: exp,
            nanos: 0
        })
    );
    let without_jti = jwt.without("jti").sign();
    let verified = call(client.verify_jwt(req(verify(&without_jti), Some(INTERNAL_KEY))))
        .await
        .expect("verify");
    assert_eq!(verified.jti, "");
}

#[tokio::test]
async fn bad_jwts_are_unauthenticated_on_every_rpc() {
    let redis = TestRedis::spawn();
    let mut config = config(Some(redis.url()));
    config.jwt_issuer = Some("https://id.example".into());
    config.jwt_audience = Some("wsauth".into());
    let auth = TestAuth::spawn(config).await;
    let mut client = auth.auth_client().await;
    let good = || {
        Jwt::for_user("eve")
            .issuer("https://id.example")
            .audience("wsauth")
    };
    call(client.verify_jwt(req(verify(&good().sign()), Some(INTERNAL_KEY))))
        .await
        .expect("good jwt");

    let mut cases = vec![
        ("alg none", good().alg(JwtAlg::None).sign()),
        ("wrong secret", good().signed_with(b"other").sign()),
        ("expired", good().expires_in(-120).sign()),
        ("not yet valid", good().not_before_in(120).sign()),
        ("wrong iss", good().issuer("https://evil.example").sign()),
        ("wrong aud", good().audience("other").sign()),
        ("missing sub", good().without("sub").sign()),
        ("missing exp", good().without("exp").sign()),
    ];
    cases.push(("garbage", "not-a-jwt".into()));
    for (name, jwt) in cases {
        let status = assert_code(
            call(client.verify_jwt(req(verify(&jwt), Some(INTERNAL_KEY)))).await,
            Code::Unauthenticated,
        );
        assert!(status.message().starts_with("jwt "), "{name}: {status:?}");
        assert_code(
            call(client.issue_ws_token(req(issue(&jwt), None))).await,
            Code::Unauthenticated,
        );
    }
}

#[tokio::test]
async fn an_hs256_jwt_signed_with_the_rsa_public_key_is_refused() {
    let mut config = config(None);
    config.jwt_hs256_secret = None;
    config.jwt_public_key_file = Some(fixture("rsa_public.pem"));
    let auth = TestAuth::spawn(config).await;
    let mut client = auth.auth_client().await;
    let public = std::fs::read(fixture("rsa_public.pem")).expect("fixture");
    let forged = Jwt::for_user("mallory").signed_with(&public).sign();
    assert_code(
        call(client.verify_jwt(req(verify(&forged), Some(INTERNAL_KEY)))).await,
        Code::Unauthenticated,
    );
    assert_code(
        call(client.issue_ws_token(req(issue(&forged), None))).await,
        Code::Unauthenticated,
    );
    // The real RS256 token is accepted.
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(
        &std::fs::read(fixture("rsa_private.pem")).expect("fixture"),
    )
    .expect("key");
    let real = Jwt::for_user("rita").sign_with(jsonwebtoken::Algorithm::RS256, &key);
    let verified = call(client.verify_jwt(req(verify(&real), Some(INTERNAL_KEY))))
        .await
        .expect("rs256");
    assert_eq!(verified.user_id, "rita");
}

#[tokio::test]
async fn oversized_and_empty_fields_are_invalid_arguments() {
    let auth = TestAuth::spawn(config(None)).await;
    let mut client = auth.auth_client().await;
    let big = "a".repeat(8 * 1024 + 1);
    let long_id = "u".repeat(257);
    let k = Some(ADMIN_KEY);
    assert_code(
        call(client.issue_ws_token(req(issue(""), None))).await,
        Code::InvalidArgument,
    );
    assert_code(
        call(client.issue_ws_token(req(issue(&big), None))).await,
        Code::InvalidArgument,
    );
    assert_code(
        call(client.validate_token(req(validate(""), k))).await,
        Code::InvalidArgument,
    );
    assert_code(
        call(client.validate_token(req(validate(&big), k))).await,
        Code::InvalidArgument,
    );
    assert_code(
        call(client.verify_jwt(req(verify(""), k))).await,
        Code::InvalidArgument,
    );
    assert_code(
        call(client.verify_jwt(req(verify(&big), k))).await,
        Code::InvalidArgument,
    );
    let jti = |jti: &str| RevokeJwtRequest {
        jti: jti.into(),
        expires_at: None,
    };
    assert_code(
        call(client.revoke_jwt(req(jti(""), k))).await,
        Code::InvalidArgument,
    );
    assert_code(
        call(client.revoke_jwt(req(jti(&long_id), k))).await,
        Code::InvalidArgument,
    );
    let user = |u: &str| RevokeUserRequest { user_id: u.into() };
    assert_code(
        call(client.revoke_user(req(user(""), k))).await,
        Code::InvalidArgument,
    );
    assert_code(
        call(client.revoke_user(req(user(&long_id), k))).await,
        Code::InvalidArgument,
    );
    // At the limit is fine.
    call(client.revoke_user(req(user(&"u".repeat(256)), k)))
        .await
        .expect("256 bytes is allowed");
}

#[tokio::test]
async fn revoke_jwt_rejects_that_jwt_only() {
    let redis = TestRedis::spawn();
    let auth = TestAuth::spawn(config(Some(redis.url()))).await;
    let mut client = auth.auth_client().await;
    let claims_a = Jwt::for_user("fay");
    let jwt_a = claims_a.sign();
    let jwt_b = Jwt::for_user("fay").sign();
    call(client.verify_jwt(req(verify(&jwt_a), Some(INTERNAL_KEY))))
        .await
        .expect("valid before");
    let expires_at = Some(Timestamp {
        seconds: claims_a.exp_claim().expect("exp"),
        nanos: 0,
    });
    let jti = claims_a.jti_claim().expect("jti").to_owned();
    call(client.revoke_jwt(req(RevokeJwtRequest { jti, expires_at }, Some(ADMIN_KEY))))
        .await
        .expect("revoke");
    let status = assert_code(
        call(client.verify_jwt(req(verify(&jwt_a), Some(INTERNAL_KEY)))).await,
        Code::Unauthenticated,
    );
    assert!(status.message().contains("revoked"), "{status:?}");
    assert_code(
        call(client.issue_ws_token(req(issue(&jwt_a), None))).await,
        Code::Unauthenticated,
    );
    call(client.verify_jwt(req(verify(&jwt_b), Some(INTERNAL_KEY))))
        .await
        .expect("another jti still valid");
}

#[tokio::test]
async fn revoke_user_rejects_old_jwts_and_unused_tokens_but_not_later_ones() {
    let redis = TestRedis::spawn();
    let auth = TestAuth::spawn(config(Some(redis.url()))).await;
    let mut client = auth.auth_client().await;
    let old_jwt = Jwt::for_user("gus").sign();
    let unused = call(client.issue_ws_token(req(issue(&old_jwt), None)))
        .await
        .expect("issue")
        .token;
    let other_user = call(client.issue_ws_token(req(issue(&Jwt::for_user("hal").sign()), None)))
        .await
        .expect("issue")
        .token;

    call(client.revoke_user(req(
        RevokeUserRequest {
            user_id: "gus".into(),
        },
        Some(ADMIN_KEY),
    )))
    .await
    .expect("revoke");
    let revoked_at = now_s();

    assert_code(
        call(client.verify_jwt(req(verify(&old_jwt), Some(INTERNAL_KEY)))).await,
        Code::Unauthenticated,
    );
    assert_code(
        call(client.issue_ws_token(req(issue(&old_jwt), None))).await,
        Code::Unauthenticated,
    );
    assert_code(
        call(client.validate_token(req(validate(&unused), Some(INTERNAL_KEY)))).await,
        Code::Unauthenticated,
    );
    call(client.validate_token(req(validate(&other_user), Some(INTERNAL_KEY))))
        .await
        .expect("other users unaffected");

    // The cutoff is in whole seconds: a JWT issued in a later second is accepted.
    wait_until(Duration::from_secs(3), "the next second", || async {
        now_s() > revoked_at
    })
    .await;
    let new_jwt = Jwt::for_user("gus").sign();
    call(client.verify_jwt(req(verify(&new_jwt), Some(INTERNAL_KEY))))
        .await
        .expect("new jwt accepted");
    let token = call(client.issue_ws_token(req(issue(&new_jwt), None)))
        .await
        .expect("issue")
        .token;
    call(client.validate_token(req(validate(&token), Some(INTERNAL_KEY))))
        .await
        .expect("new token accepted");
}

#[tokio::test]
async fn redis_down_gives_unavailable_then_recovers_without_restart() {
    let mut redis = TestRedis::spawn();
    let mut config = config(Some(redis.url()));
    config.redis_timeout_ms = 300;
    let auth = TestAuth::spawn(config).await;
    let mut client = auth.auth_client().await;
    let jwt = Jwt::for_user("ivy").sign();
    call(client.issue_ws_token(req(issue(&jwt), None)))
        .await
        .expect("issue while up");

    redis.kill();
    let started = tokio::time::Instant::now();
    assert_code(
        call(client.issue_ws_token(req(issue(&jwt), None))).await,
        Code::Unavailable,
    );
    assert_code(
        call(client.verify_jwt(req(verify(&jwt), Some(INTERNAL_KEY)))).await,
        Code::Unavailable,
    );
    assert_code(
        // Well-formed, so it is looked up (a malformed one is refused without Redis).
        call(client.validate_token(req(validate(&"A".repeat(43)), Some(INTERNAL_KEY)))).await,
        Code::Unavailable,
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "unavailable took {:?}",
        started.elapsed()
    );

    redis.restart();
    wait_until(Duration::from_secs(10), "auth to reach redis again", || {
        let mut client = client.clone();
        let jwt = jwt.clone();
        async move {
            call(client.issue_ws_token(req(issue(&jwt), None)))
                .await
                .is_ok()
        }
    })
    .await;
    let token = call(client.issue_ws_token(req(issue(&jwt), None)))
        .await
        .expect("issue")
        .token;
    call(client.validate_token(req(validate(&token), Some(INTERNAL_KEY))))
        .await
        .expect("validate after recovery");
}

#[tokio::test]
async fn redis_never_holds_a_raw_token_or_jwt() {
    let redis = TestRedis::spawn();
    let auth = TestAuth::spawn(config(Some(redis.url()))).await;
    let mut client = auth.auth_client().await;
    let mut secrets = Vec::new();
    for i in 0..5 {
        let jwt = Jwt::for_user(&format!("user{i}")).sign();
        let token = call(client.issue_ws_token(req(issue(&jwt), None)))
            .await
            .expect("issue")
            .token;
        if i % 2 == 0 {
            call(client.validate_token(req(validate(&token), Some(INTERNAL_KEY))))
                .await
                .expect("validate");
        }
        secrets.push(token);
        secrets.push(jwt);
    }
    call(client.revoke_user(req(
        RevokeUserRequest {
            user_id: "user1".into(),
        },
        Some(ADMIN_KEY),
    )))
    .await
    .expect("revoke");

    let redis_client = redis::Client::open(redis.url()).expect("client");
    let mut conn = redis_client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert!(keys.iter().filter(|k| k.starts_with("wsauth:wst:")).count() >= 2);
    let mut dump = String::new();
    for key in &keys {
        dump.push_str(key);
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("type");
        let value = match kind.as_str() {
            "string" => {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<redis::Value>(&mut conn)
                    .await
            }
            "stream" => {
                redis::cmd("XRANGE")
                    .arg(key)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
            }
            other => panic!("unexpected key type {other} for {key}"),
        }
        .expect("read");
        dump.push_str(&format!("{value:?}"));
    }
    for secret in &secrets {
        assert!(
            !dump.contains(secret.as_str()),
            "a raw credential is stored in redis"
        );
    }
}
