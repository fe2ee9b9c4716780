//! The contract's size limits, defined once for both services.

/// The largest JWT or ws token: longer ones are refused at the edge
/// (`INVALID_ARGUMENT` at auth, 401 or 4400 at the gateway) before any work.
pub const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;

/// The largest `user_id`, `jti`, `gateway_id` or event id.
pub const MAX_ID_BYTES: usize = 256;
