//! The one Bearer parser (gateway `/token/ws`, auth's API keys) on arbitrary
//! header bytes: a credential exactly for `bearer` in any case, one space,
//! and a credential that is not all whitespace; what comes back is that
//! credential, trimmed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsauth_shared::bearer::credential;

/// RFC 6750 §2.1 as the contract reads it, independently of the parser.
fn expected(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    if value.len() < 7 || !value[..6].eq_ignore_ascii_case(b"bearer") || value[6] != b' ' {
        return None;
    }
    let rest = value[7..].trim_ascii();
    (!rest.is_empty()).then_some(rest)
}

fuzz_target!(|data: &[u8]| {
    assert_eq!(credential(data), expected(data), "{data:?}");
});
