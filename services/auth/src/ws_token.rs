//! ws tokens: 256 random bits handed to the client, known to the store only by hash.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Store key prefix of a ws token hash.
const KEY_PREFIX: &str = "wsauth:wst:";

/// A freshly generated ws token: the text for the client and the hash for the store.
pub struct WsToken {
    /// URL-safe base64 (no padding) of 32 random bytes: 43 characters.
    pub text: String,
    /// What the store keeps instead of the token.
    pub hash: TokenHash,
}

impl WsToken {
    /// Draws 32 bytes from the OS CSPRNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        let text = URL_SAFE_NO_PAD.encode(bytes);
        let hash = TokenHash::of(&text);
        Ok(Self { text, hash })
    }

    /// Whether `text` has the shape of a token we hand out: 43 URL-safe base64 characters.
    pub fn is_well_formed(text: &str) -> bool {
        text.len() == 43
            && text
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    }
}

// No Debug on WsToken: its text is a credential.

/// SHA-256 of a ws token's text. A stolen store dump yields no usable token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// Hashes a token as presented by a client.
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// The store key: `wsauth:wst:<64 hex digits>`.
    pub fn key(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut key = String::with_capacity(KEY_PREFIX.len() + 64);
        key.push_str(KEY_PREFIX);
        for byte in self.0 {
            key.push(char::from(HEX[usize::from(byte >> 4)]));
            key.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        key
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// What the store holds for a ws token (each store decodes its own form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// When the token was issued (Unix ms), compared with a user's revocation cutoff.
    pub issued_ms: u64,
    /// When it stops being accepted (Unix ms).
    pub expires_ms: u64,
    /// The JWT `sub` it is bound to.
    pub user_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_43_url_safe_characters_and_unique() {
        let a = WsToken::generate().expect("the OS CSPRNG works in tests");
        let b = WsToken::generate().expect("the OS CSPRNG works in tests");
        assert_eq!(a.text.len(), 43);
        assert!(
            a.text
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(a.text, b.text);
        assert!(WsToken::is_well_formed(&a.text));
        assert!(!WsToken::is_well_formed(&a.text[1..]));
        assert!(!WsToken::is_well_formed(&format!("{}=", &a.text[1..])));
        assert!(a.hash == TokenHash::of(&a.text));
    }

    #[test]
    fn the_key_holds_the_hash_not_the_token() {
        let token = WsToken::generate().expect("the OS CSPRNG works in tests");
        let key = token.hash.key();
        assert!(key.starts_with("wsauth:wst:"));
        assert_eq!(key.len(), 11 + 64);
        assert!(!key.contains(&token.text));
    }
}
