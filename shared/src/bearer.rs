//! The one parser of `Authorization: Bearer <credential>` (RFC 6750 §2.1),
//! for the gateway's `/token/ws` and auth's API-key check.

/// The credential of a Bearer authorization value: `None` for another
/// scheme, no credential, or a value without the space after the scheme.
/// The scheme is case-insensitive (RFC 9110 §11.1); spaces around the
/// credential are not part of it.
pub fn credential(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let split = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(split);
    let credential = rest.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !credential.is_empty()).then_some(credential)
}

#[cfg(test)]
mod tests {
    use super::credential;

    #[test]
    fn takes_the_credential_of_a_bearer_value_only() {
        let cases: [(&[u8], Option<&[u8]>); 10] = [
            (b"Bearer a.b.c", Some(b"a.b.c")),
            (b"bearer a.b.c", Some(b"a.b.c")),
            (b"BEARER key", Some(b"key")),
            (b"Bearer   key  ", Some(b"key")),
            (b"Basic a.b.c", None),
            (b"Bearer ", None),
            (b"Bearer", None),
            (b"Bearerkey", None),
            (b"key", None),
            (b"", None),
        ];
        for (value, expected) in cases {
            assert_eq!(
                credential(value),
                expected,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }
}

#[cfg(test)]
#[path = "bearer_props.rs"]
mod props;
