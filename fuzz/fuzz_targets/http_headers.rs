//! What `/token/ws` and `/ws` answer from their headers alone, on arbitrary
//! header values (any bytes hyper accepts in a value):
//! - `/token/ws`: the credential of a UTF-8 `Authorization: Bearer` value, or 401;
//! - `/ws`: 400 without `Connection: upgrade`, `Upgrade: websocket` or a key,
//!   426 naming version 13 for another version, 400 for a key that is not 16
//!   bytes of base64, else RFC 6455's accept value (in that order).
#![no_main]

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use libfuzzer_sys::fuzz_target;
use wsauth_gateway::oracles::ws_upgrade;
use wsauth_gateway::routes::{accept_key, bearer};
use wsauth_shared::bearer::credential;

type Value = Option<Vec<u8>>;

fuzz_target!(|input: (Value, Value, Value, Value, Value)| {
    let (authorization, connection, upgrade, version, key) = input;
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (header::AUTHORIZATION, &authorization),
        (header::CONNECTION, &connection),
        (header::UPGRADE, &upgrade),
        (header::SEC_WEBSOCKET_VERSION, &version),
        (header::SEC_WEBSOCKET_KEY, &key),
    ] {
        if let Some(value) = value {
            // hyper never hands over a value with NUL, CR or LF: skip those inputs.
            let Ok(value) = HeaderValue::from_bytes(value) else {
                return;
            };
            headers.insert::<HeaderName>(name, value);
        }
    }

    // /token/ws
    let expected = authorization
        .as_deref()
        .and_then(credential)
        .and_then(|c| std::str::from_utf8(c).ok());
    let got = bearer(&headers);
    assert_eq!(got, expected, "{headers:?}");
    if got.is_none() {
        let response = wsauth_gateway::error::HttpError::MissingBearer.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    // /ws
    // The contract's statuses, as the gateway's proptests state them.
    let expected = ws_upgrade(
        connection.as_deref(),
        upgrade.as_deref(),
        version.as_deref(),
        key.as_deref(),
    );
    match accept_key(&headers) {
        Ok(accept) => assert_eq!(Ok(accept.to_str().expect("base64").to_owned()), expected),
        Err(refused) => {
            let response = refused.into_response();
            assert_eq!(Err(response.status()), expected, "{headers:?}");
            if response.status() == StatusCode::UPGRADE_REQUIRED {
                assert_eq!(&response.headers()[header::SEC_WEBSOCKET_VERSION], "13");
            }
        }
    }
});
