//! The one event id parser: `"<epoch>:<ms>-<seq>"`, as auth hands ids out.
//!
//! Both services parse with the same rules, so an id the gateway accepts from
//! a client is one auth accepts too (a gateway that passed on an id auth then
//! refused would turn a client's mistake into an auth failure).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::limits::MAX_ID_BYTES as MAX_EVENT_ID_BYTES;

/// The response metadata of a live Subscribe (no `after_id`, no
/// `from_oldest`): where the stream stood when it opened, so that a
/// subscriber whose stream breaks before its first event resumes from there
/// instead of losing what was published meanwhile. The value is an event id
/// to resume with as `after_id` (`<epoch>:0-0` before the first event, so
/// that trimming or a new epoch in between is refused with OUT_OF_RANGE and
/// told as a gap). An auth that predates it sends none.
pub const LIVE_FROM_METADATA: &str = "wsauth-live-from";
/// [`LIVE_FROM_METADATA`]'s value from an auth of the release before this
/// one when the stream was empty: resume with `from_oldest`. (Such an auth
/// cannot say whether trimming passed that point.)
pub const LIVE_FROM_OLDEST: &str = "oldest";

/// A position inside one epoch of the stream: Redis's `<ms>-<seq>`, ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamSeq {
    /// Milliseconds part (the append time).
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl FromStr for StreamSeq {
    type Err = BadEventId;

    fn from_str(s: &str) -> Result<Self, BadEventId> {
        let (ms, seq) = s.split_once('-').ok_or(BadEventId)?;
        Ok(Self {
            ms: number(ms)?,
            seq: number(seq)?,
        })
    }
}

/// Decimal digits only: `u64::from_str` alone would also take a leading `+`,
/// which Redis never writes.
fn number(s: &str) -> Result<u64, BadEventId> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadEventId);
    }
    s.parse().map_err(|_| BadEventId)
}

impl fmt::Display for StreamSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// An event id, `"<epoch>:<ms>-<seq>"`. Ids of one epoch are ordered by
/// position; ids of different epochs are not comparable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId {
    /// The stream epoch: ASCII letters and digits, new whenever the stream is (re)created.
    pub epoch: Box<str>,
    /// The position within the epoch.
    pub seq: StreamSeq,
}

/// An event id string that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadEventId;

impl fmt::Display for BadEventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed event id")
    }
}

impl std::error::Error for BadEventId {}

impl FromStr for EventId {
    type Err = BadEventId;

    fn from_str(s: &str) -> Result<Self, BadEventId> {
        if s.len() > MAX_EVENT_ID_BYTES {
            return Err(BadEventId);
        }
        let (epoch, seq) = s.split_once(':').ok_or(BadEventId)?;
        if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(BadEventId);
        }
        Ok(Self {
            epoch: epoch.into(),
            seq: seq.parse()?,
        })
    }
}

impl PartialOrd for EventId {
    /// `None` across epochs: a new epoch means a new stream, not a later id.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (self.epoch == other.epoch).then(|| self.seq.cmp(&other.seq))
    }
}

impl EventId {
    /// True when `self` is in `last`'s epoch and not after it: already delivered.
    pub fn is_at_or_before(&self, last: &EventId) -> bool {
        matches!(
            self.partial_cmp(last),
            Some(Ordering::Less | Ordering::Equal)
        )
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> EventId {
        s.parse().expect("valid id")
    }

    #[test]
    fn ids_round_trip_through_text() {
        let parsed = id("ab12:12-3");
        assert_eq!(&*parsed.epoch, "ab12");
        assert_eq!(parsed.seq, StreamSeq { ms: 12, seq: 3 });
        assert_eq!(parsed.to_string(), "ab12:12-3");
        let max = format!("e:{}-{}", u64::MAX, u64::MAX);
        assert_eq!(id(&max).to_string(), max);
    }

    #[test]
    fn malformed_ids_are_refused() {
        let too_long = format!("{}:1-0", "a".repeat(MAX_EVENT_ID_BYTES));
        let overflow = format!("e:{}0-0", u64::MAX);
        for bad in [
            "", "ab", "ab:1", ":1-0", "ab:-0", "ab:1-", "ab:x-0", "ab:1-0x", "ab:+1-0", "ab:1-+0",
            "ab:1-0-0",
            // An epoch is letters and digits only: auth never makes another.
            "a-b:1-0", "a:b:1-0", "é:1-0", " ab:1-0", &too_long, &overflow,
        ] {
            assert_eq!(bad.parse::<EventId>(), Err(BadEventId), "{bad:?}");
        }
    }

    #[test]
    fn ids_order_numerically_within_an_epoch() {
        assert!(id("ab:9-0") < id("ab:10-0"));
        assert!(id("ab:10-2") < id("ab:10-10"));
        assert_eq!(
            id("ab:10-2").partial_cmp(&id("ab:10-2")),
            Some(Ordering::Equal)
        );
        assert!(id("ab:10-2").is_at_or_before(&id("ab:10-2")));
        assert!(!id("ab:10-3").is_at_or_before(&id("ab:10-2")));
    }

    #[test]
    fn ids_of_other_epochs_are_not_comparable() {
        assert_eq!(id("ab:1-0").partial_cmp(&id("cd:9-0")), None);
        assert!(!id("ab:1-0").is_at_or_before(&id("cd:9-0")));
    }
}

#[cfg(test)]
#[path = "event_id_props.rs"]
mod props;
