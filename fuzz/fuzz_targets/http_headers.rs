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
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use wsauth_gateway::routes::{accept_key, bearer};
use wsauth_shared::bearer::credential;

type Value = Option<Vec<u8>>;

fn is(value: &Value, wanted: &str) -> bool {
    value
        .as_deref()
        .is_some_and(|v| v.eq_ignore_ascii_case(wanted.as_bytes()))
}

fn is_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

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
    let has_token = connection.as_deref().is_some_and(|c| {
        c.split(|&b| b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    let expected = if !has_token || !is(&upgrade, "websocket") || key.is_none() {
        Err(StatusCode::BAD_REQUEST)
    } else if !is(&version, "13") {
        Err(StatusCode::UPGRADE_REQUIRED)
    } else if !is_key(key.as_deref().unwrap_or_default()) {
        Err(StatusCode::BAD_REQUEST)
    } else {
        Ok(derive_accept_key(key.as_deref().unwrap_or_default()))
    };
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
