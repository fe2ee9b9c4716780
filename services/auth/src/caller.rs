//! Who is calling: the `authorization: Bearer <key>` metadata, checked in
//! constant time; [`crate::grpc::gate`] records the caller's role on each call.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use tonic::Request;
use wsauth_shared::bearer;

use crate::error::AuthError;

/// What a caller may do. Ordered: an admin may do what an internal caller may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// No key, or a key that matched nothing.
    Anonymous,
    /// An `INTERNAL_API_KEYS` key: the gateway RPCs.
    Internal,
    /// An `ADMIN_API_KEYS` key (or no keys configured at all, loopback only): everything.
    Admin,
}

/// The caller's role, stored in each request's extensions by the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller(pub Role);

impl Caller {
    /// The role recorded for `request`; absent means the gate did not run: anonymous.
    pub fn of<T>(request: &Request<T>) -> Self {
        request
            .extensions()
            .get::<Caller>()
            .copied()
            .unwrap_or(Caller(Role::Anonymous))
    }

    /// UNAUTHENTICATED unless the caller has at least `role`.
    pub fn require(self, role: Role) -> Result<(), AuthError> {
        if self.0 >= role {
            Ok(())
        } else if self.0 == Role::Anonymous {
            Err(AuthError::Unauthenticated("missing or wrong api key"))
        } else {
            Err(AuthError::Unauthenticated(
                "this call needs an admin api key",
            ))
        }
    }
}

/// The configured keys, kept as SHA-256 digests so every comparison runs
/// over 32 bytes regardless of the presented key's length.
#[derive(Clone)]
pub struct CallerKeys {
    inner: Arc<Keys>,
}

struct Keys {
    internal: Vec<[u8; 32]>,
    admin: Vec<[u8; 32]>,
}

impl CallerKeys {
    /// Digests the configured keys; empty keys are ignored.
    pub fn new(internal: &[SecretString], admin: &[SecretString]) -> Self {
        let digest = |keys: &[SecretString]| {
            keys.iter()
                .map(|k| k.expose_secret().trim())
                .filter(|k| !k.is_empty())
                .map(|k| Sha256::digest(k.as_bytes()).into())
                .collect()
        };
        Self {
            inner: Arc::new(Keys {
                internal: digest(internal),
                admin: digest(admin),
            }),
        }
    }

    /// Whether no key is configured (then every caller is admin, on loopback only).
    pub fn is_open(&self) -> bool {
        self.inner.internal.is_empty() && self.inner.admin.is_empty()
    }

    /// The role of a presented `authorization` header value.
    pub fn role_of(&self, authorization: Option<&[u8]>) -> Role {
        if self.is_open() {
            return Role::Admin;
        }
        let Some(key) = authorization.and_then(bearer::credential) else {
            return Role::Anonymous;
        };
        let presented: [u8; 32] = Sha256::digest(key).into();
        // Check every key without stopping at the first match.
        let matches = |keys: &[[u8; 32]]| {
            keys.iter()
                .fold(Choice::from(0), |acc, k| acc | k.ct_eq(&presented))
        };
        if bool::from(matches(&self.inner.admin)) {
            Role::Admin
        } else if bool::from(matches(&self.inner.internal)) {
            Role::Internal
        } else {
            Role::Anonymous
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> CallerKeys {
        CallerKeys::new(&["int-key".into()], &["adm-key".into(), "adm2".into()])
    }

    #[test]
    fn keys_map_to_roles() {
        let keys = keys();
        assert_eq!(keys.role_of(Some(b"Bearer adm-key")), Role::Admin);
        assert_eq!(keys.role_of(Some(b"Bearer adm2")), Role::Admin);
        assert_eq!(keys.role_of(Some(b"Bearer int-key")), Role::Internal);
        assert_eq!(keys.role_of(Some(b"bearer int-key")), Role::Internal);
        assert_eq!(keys.role_of(Some(b"BEARER adm-key")), Role::Admin);
        assert_eq!(keys.role_of(Some(b"Bearer")), Role::Anonymous);
        assert_eq!(keys.role_of(Some(b"Bearer nope")), Role::Anonymous);
        assert_eq!(keys.role_of(Some(b"adm-key")), Role::Anonymous);
        assert_eq!(keys.role_of(None), Role::Anonymous);
    }

    #[test]
    fn no_keys_means_open() {
        let keys = CallerKeys::new(&[], &[]);
        assert!(keys.is_open());
        assert_eq!(keys.role_of(None), Role::Admin);
    }

    #[test]
    fn roles_gate_calls() {
        assert!(Caller(Role::Admin).require(Role::Internal).is_ok());
        assert!(Caller(Role::Internal).require(Role::Admin).is_err());
        assert!(Caller(Role::Anonymous).require(Role::Internal).is_err());
    }
}
