//! The contract's rules restated for tests, independently of the code they
//! check: the property tests and the fuzz targets (`fuzz/`, which enables the
//! `oracles` feature) both judge the gateway against these. Not part of any
//! service build.

use axum::http::StatusCode;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Whether a `Sec-WebSocket-Key` value is 16 bytes of base64: 22 characters
/// of the alphabet and `==`.
pub fn is_ws_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// What `/ws` answers from its upgrade headers (each absent or its value), in
/// RFC 6455's order: 400 without a `Connection` token `upgrade`, `Upgrade:
/// websocket` or a key; 426 for a version other than 13; 400 for a key that
/// is not 16 bytes of base64; else the RFC's accept value for the key.
pub fn ws_upgrade(
    connection: Option<&[u8]>,
    upgrade: Option<&[u8]>,
    version: Option<&[u8]>,
    key: Option<&[u8]>,
) -> Result<String, StatusCode> {
    let has_token = connection.is_some_and(|c| {
        c.split(|&b| b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    let is = |value: Option<&[u8]>, wanted: &str| {
        value.is_some_and(|v| v.eq_ignore_ascii_case(wanted.as_bytes()))
    };
    let Some(key) = key.filter(|_| has_token && is(upgrade, "websocket")) else {
        return Err(StatusCode::BAD_REQUEST);
    };
    if !is(version, "13") {
        Err(StatusCode::UPGRADE_REQUIRED)
    } else if !is_ws_key(key) {
        Err(StatusCode::BAD_REQUEST)
    } else {
        Ok(derive_accept_key(key))
    }
}
