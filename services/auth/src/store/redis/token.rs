//! ws tokens in Redis: the scripts that write and take them, the two ways
//! to run them (one server: one script each; Cluster: one slot per script),
//! and the decoding of the record the scripts write, kept side by side so
//! the forms cannot drift apart.

use super::{RedisStore, corrupt, cutoff_key, jti_key, ttl_ms};
use crate::error::StoreError;
use crate::store::{IssueRequest, TakenToken};
use crate::ws_token::{TokenHash, TokenRecord};

/// GET or GETDEL (ARGV[1] == "1") of a ws token, and its user's cutoff, in one
/// atomic step. The value is "<issued_ms> <expires_ms> <user_id>".
pub(super) const TAKE_TOKEN: &str = r"
local v
if ARGV[1] == '1' then v = redis.call('GETDEL', KEYS[1]) else v = redis.call('GET', KEYS[1]) end
if not v then return false end
local a = string.find(v, ' ', 1, true)
local b = a and string.find(v, ' ', a + 1, true)
if not b then return {v, ''} end
local cutoff = redis.call('GET', ARGV[2] .. string.sub(v, b + 1))
return {v, cutoff or ''}
";

/// IssueWsToken in one atomic step, on Redis's clock: refuse a revoked JWT
/// (KEYS[3], the jti key, when given; the user's cutoff KEYS[2] against the
/// iat ARGV[2]), else store the token KEYS[1] for ARGV[1] (user id) with
/// PX ARGV[3]; returns the issue time (ms) or false when revoked.
/// Mirrors `revocation::jwt_is_revoked` (leeway ARGV[4]).
pub(super) const ISSUE_TOKEN: &str = r"
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = tonumber(redis.call('GET', KEYS[2]) or '')
if cutoff then
  if ARGV[2] == '' then return false end
  local iat = tonumber(ARGV[2])
  if iat <= math.floor(cutoff / 1000) or iat > math.floor(now / 1000) + tonumber(ARGV[4]) then
    return false
  end
end
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[1], string.format('%d %d ', now, now + ttl) .. ARGV[1], 'PX', ARGV[3])
return now
";

/// Cluster step 1 of IssueWsToken, on the master of the user's cutoff
/// KEYS[1] (whose clock also stamps RevokeUser): the issue time (ms), or
/// false when the iat ARGV[1] is revoked by the cutoff (leeway ARGV[2]).
pub(super) const STAMP_TOKEN: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = tonumber(redis.call('GET', KEYS[1]) or '')
if cutoff then
  if ARGV[1] == '' then return false end
  local iat = tonumber(ARGV[1])
  if iat <= math.floor(cutoff / 1000) or iat > math.floor(now / 1000) + tonumber(ARGV[2]) then
    return false
  end
end
return now
";

/// Cluster step 2 of IssueWsToken: stores the token KEYS[1] issued at ARGV[1]
/// (ms) for ARGV[3] (user id) with PX ARGV[2], in [`ISSUE_TOKEN`]'s form.
pub(super) const STORE_TOKEN: &str = r"
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], string.format('%d %d ', now, now + ttl) .. ARGV[3], 'PX', ARGV[2])
return now
";

impl RedisStore {
    /// IssueWsToken's store step: the issue time, or None when the JWT is revoked.
    pub(super) async fn issue(&self, request: IssueRequest<'_>) -> Result<Option<u64>, StoreError> {
        let ttl_ms = ttl_ms(request.ttl);
        let scripts = &self.inner.scripts;
        let iat = request.iat.map(|iat| iat.to_string()).unwrap_or_default();
        if !self.inner.redis.is_cluster() {
            let mut invocation = scripts.issue_token.key(request.hash.key());
            invocation.key(cutoff_key(request.user_id));
            if let Some(jti) = request.jti {
                invocation.key(jti_key(jti));
            }
            invocation
                .arg(request.user_id)
                .arg(&iat)
                .arg(ttl_ms)
                .arg(request.leeway_s);
            return self
                .call(|mut conn| async move { invocation.invoke_async(&mut conn).await })
                .await;
        }
        // The token, the user's cutoff and the jti live in three slots: check
        // the jti and stamp against the cutoff, then store. A RevokeUser in
        // between sets a cutoff at or after the stamp (same master, same
        // clock), so the token is refused when taken.
        self.call(|mut conn| async move {
            if let Some(jti) = request.jti {
                let revoked: bool = redis::cmd("EXISTS")
                    .arg(jti_key(jti))
                    .query_async(&mut conn)
                    .await?;
                if revoked {
                    return Ok(None);
                }
            }
            let stamp: Option<u64> = scripts
                .stamp_token
                .key(cutoff_key(request.user_id))
                .arg(&iat)
                .arg(request.leeway_s)
                .invoke_async(&mut conn)
                .await?;
            let Some(now) = stamp else {
                return Ok(None);
            };
            scripts
                .store_token
                .key(request.hash.key())
                .arg(now)
                .arg(ttl_ms)
                .arg(request.user_id)
                .invoke_async::<u64>(&mut conn)
                .await?;
            Ok(Some(now))
        })
        .await
    }

    /// ValidateToken's store step: the token's record and its user's cutoff,
    /// deleting the token first when `consume` (then replicated as configured).
    pub(super) async fn take(
        &self,
        hash: &TokenHash,
        consume: bool,
    ) -> Result<Option<TakenToken>, StoreError> {
        let key = hash.key();
        let cluster = self.inner.redis.is_cluster();
        let taken: Option<(Vec<u8>, Vec<u8>)> = self
            .call(|mut conn| async move {
                let taken: Option<(Vec<u8>, Vec<u8>)> = if cluster {
                    // The cutoff lives in the user's slot: read after the
                    // token is gone, so a RevokeUser before now is seen.
                    let value: Option<Vec<u8>> = redis::cmd(if consume { "GETDEL" } else { "GET" })
                        .arg(&key)
                        .query_async(&mut conn)
                        .await?;
                    match value {
                        Some(value) => {
                            // A record that does not decode fails below.
                            let user = decode_record(&value).map(|r| r.user_id).unwrap_or_default();
                            let cutoff: Option<Vec<u8>> = redis::cmd("GET")
                                .arg(cutoff_key(&user))
                                .query_async(&mut conn)
                                .await?;
                            Some((value, cutoff.unwrap_or_default()))
                        }
                        None => None,
                    }
                } else {
                    self.inner
                        .scripts
                        .take_token
                        .key(&key)
                        .arg(if consume { "1" } else { "0" })
                        .arg(super::CUTOFF_PREFIX)
                        .invoke_async(&mut conn)
                        .await?
                };
                if consume && taken.is_some() {
                    self.replicate(&mut conn, &key).await?;
                }
                Ok(taken)
            })
            .await?;
        let Some((value, cutoff)) = taken else {
            return Ok(None);
        };
        Ok(Some(TakenToken {
            record: decode_record(&value)?,
            user_cutoff_ms: parse_cutoff(&cutoff)?,
        }))
    }
}

pub(super) fn parse_cutoff(bytes: &[u8]) -> Result<Option<u64>, StoreError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| corrupt("user cutoff"))
}

/// Reads the value [`ISSUE_TOKEN`] and [`STORE_TOKEN`] store: `"<issued_ms> <expires_ms> <user_id>"`,
/// the user id last so it may hold spaces.
pub(super) fn decode_record(value: &[u8]) -> Result<TokenRecord, StoreError> {
    let malformed = || corrupt("ws token record");
    let text = std::str::from_utf8(value).map_err(|_| malformed())?;
    let mut parts = text.splitn(3, ' ');
    let mut number = || -> Result<u64, StoreError> {
        parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(malformed)
    };
    let issued_ms = number()?;
    let expires_ms = number()?;
    let user_id = parts.next().ok_or_else(malformed)?.to_owned();
    Ok(TokenRecord {
        issued_ms,
        expires_ms,
        user_id,
    })
}

#[cfg(test)]
mod tests {
    use redis::Script;
    use wsauth_tests::TestRedis;

    use super::*;

    /// Runs both writers ([`ISSUE_TOKEN`], [`STORE_TOKEN`]) on a real
    /// redis-server and decodes the raw values they stored.
    #[tokio::test]
    async fn the_records_the_scripts_store_decode() {
        let redis = TestRedis::spawn();
        let mut conn = super::super::test_connection(&redis).await;
        for user in ["alice", "a user with spaces", "ünïcode 用户"] {
            let issue_key = format!("issue:{user}");
            let issued: u64 = Script::new(ISSUE_TOKEN)
                .key(&issue_key)
                .key("cutoff:none")
                .arg(user)
                .arg("")
                .arg(60_000)
                .arg(30)
                .invoke_async(&mut conn)
                .await
                .expect("the issue script runs");
            let store_key = format!("store:{user}");
            let stored_at: u64 = Script::new(STORE_TOKEN)
                .key(&store_key)
                .arg(issued)
                .arg(60_000)
                .arg(user)
                .invoke_async(&mut conn)
                .await
                .expect("the store script runs");
            assert_eq!(stored_at, issued);
            for key in [&issue_key, &store_key] {
                let stored: Vec<u8> = redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .expect("the script stored the token");
                let record = decode_record(&stored).expect("the stored form decodes");
                assert_eq!(
                    record,
                    TokenRecord {
                        issued_ms: issued,
                        expires_ms: issued + 60_000,
                        user_id: user.to_owned(),
                    },
                    "{key}"
                );
            }
        }
    }

    #[test]
    fn malformed_records_are_corrupt_not_a_panic() {
        for bad in [&b"x 2 u"[..], b"1 2", b"1", b"", b"1 x u", b"\xff 2 u"] {
            assert!(
                matches!(decode_record(bad), Err(StoreError::Corrupt(_))),
                "{bad:?}"
            );
        }
    }
}
