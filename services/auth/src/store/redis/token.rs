//! ws tokens in Redis: the scripts that write and take them, and the
//! decoding of the record [`ISSUE_TOKEN`] writes, kept side by side so the
//! two forms cannot drift apart.

use super::corrupt;
use crate::error::StoreError;
use crate::ws_token::TokenRecord;

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

/// Reads the value [`ISSUE_TOKEN`] stores: `"<issued_ms> <expires_ms> <user_id>"`,
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

    /// Runs [`ISSUE_TOKEN`] on a real redis-server and decodes the raw value it stored.
    #[tokio::test]
    async fn the_record_the_issue_script_stores_decodes() {
        let redis = TestRedis::spawn();
        let client = redis::Client::open(redis.url()).expect("a valid url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis-server answers");
        for user in ["alice", "a user with spaces", "ünïcode 用户"] {
            let key = format!("t:{user}");
            let issued: u64 = Script::new(ISSUE_TOKEN)
                .key(&key)
                .key("cutoff:none")
                .arg(user)
                .arg("")
                .arg(60_000)
                .arg(30)
                .invoke_async(&mut conn)
                .await
                .expect("the script runs");
            let stored: Vec<u8> = redis::cmd("GET")
                .arg(&key)
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
                }
            );
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
