//! The contract's rules restated for tests, independently of the code they
//! check: the property tests and the fuzz targets (`fuzz/`, which enables the
//! `oracles` feature) both judge auth's gate against these. Not part of any
//! service build.

use wsauth_shared::bearer::credential;

use crate::caller::Role;

/// Who may call what, as `CONTRACT.md` lists it ("Callers authenticate
/// with…"), and not the gate's own table: the gateway's RPCs take an internal
/// key, IssueWsToken is authorised by the JWT it carries, health and
/// reflection are open, and everything else (Publish, Revoke*, the operators'
/// view, a method not listed) takes an admin key.
pub const CONTRACT_ROLES: &[(&str, Role)] = &[
    ("/wsauth.v1.AuthService/IssueWsToken", Role::Anonymous),
    ("/wsauth.v1.AuthService/ValidateToken", Role::Internal),
    ("/wsauth.v1.AuthService/VerifyJwt", Role::Internal),
    ("/wsauth.v1.BroadcastService/Subscribe", Role::Internal),
    ("/wsauth.v1.BroadcastService/History", Role::Internal),
    // The contract's list of gateway RPCs predates presence; the gateway
    // reports what it holds with its internal key.
    ("/wsauth.v1.AdminService/ReportGateway", Role::Internal),
];

/// The open services: any method under these prefixes needs no key.
pub const OPEN_SERVICES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The role the contract requires of a caller of the gRPC method at `path`.
pub fn contract_role(path: &str) -> Role {
    if let Some((_, role)) = CONTRACT_ROLES.iter().find(|(p, _)| *p == path) {
        *role
    } else if OPEN_SERVICES.iter().any(|open| path.starts_with(open)) {
        Role::Anonymous
    } else {
        Role::Admin
    }
}

/// The role an `authorization` value presents, given the configured keys:
/// `Bearer <key>` with one of the admin keys is admin, with one of the
/// internal keys internal (a key in both is admin), anything else anonymous;
/// with no key configured at all every caller is admin (loopback only).
pub fn presented_role(authorization: Option<&[u8]>, internal: &[&str], admin: &[&str]) -> Role {
    if internal.is_empty() && admin.is_empty() {
        return Role::Admin;
    }
    let key = authorization.and_then(credential);
    let among = |keys: &[&str]| key.is_some_and(|k| keys.iter().any(|x| x.as_bytes() == k));
    if among(admin) {
        Role::Admin
    } else if among(internal) {
        Role::Internal
    } else {
        Role::Anonymous
    }
}

/// The role the gate hands on for a call to `path`: an open method's caller
/// is anonymous whatever it presents (its key is not even hashed), any other
/// caller has the role its key presents.
pub fn gate_caller(path: &str, presented: Role) -> Role {
    if contract_role(path) == Role::Anonymous {
        Role::Anonymous
    } else {
        presented
    }
}
