//! Property tests of the event id parser: arbitrary input never panics and
//! is either refused or an id that prints back as the same text; every id
//! auth could hand out round-trips.

use proptest::prelude::*;

use super::{BadEventId, EventId, MAX_EVENT_ID_BYTES, StreamSeq};
use crate::oracles::event_id_well_formed as well_formed;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn any_text_parses_exactly_when_well_formed(s in prop_oneof![
        "\\PC{0,40}",
        "[a-zA-Z0-9]{0,6}:[0-9+-]{0,25}",
        "[a-z0-9:+ -]{0,30}",
    ]) {
        let parsed = s.parse::<EventId>();
        prop_assert_eq!(parsed.is_ok(), well_formed(&s), "{:?}", s);
        if let Ok(id) = parsed {
            // Leading zeros are the one thing printing normalises.
            let again: EventId = id.to_string().parse().expect("a printed id parses");
            prop_assert_eq!(again, id);
        }
    }

    #[test]
    fn every_id_auth_can_hand_out_round_trips(
        epoch in "[a-zA-Z0-9]{1,32}",
        ms in any::<u64>(),
        seq in any::<u64>(),
    ) {
        let id = EventId { epoch: epoch.clone().into(), seq: StreamSeq { ms, seq } };
        let text = id.to_string();
        prop_assert_eq!(&text, &format!("{epoch}:{ms}-{seq}"));
        prop_assert_eq!(text.parse::<EventId>(), Ok(id));
    }

    #[test]
    fn long_or_overflowing_ids_are_refused_without_panicking(
        epoch_len in 1usize..400,
        extra_digits in 0usize..40,
    ) {
        let long = format!("{}:1-0", "e".repeat(epoch_len));
        let expected = if long.len() <= MAX_EVENT_ID_BYTES { Ok(()) } else { Err(BadEventId) };
        prop_assert_eq!(long.parse::<EventId>().map(|_| ()), expected);
        let overflow = format!("e:{}{}-0", u64::MAX, "9".repeat(extra_digits));
        prop_assert_eq!(overflow.parse::<EventId>().is_ok(), extra_digits == 0);
    }

    #[test]
    fn ids_of_one_epoch_order_like_their_numbers(
        a in (any::<u64>(), any::<u64>()),
        b in (any::<u64>(), any::<u64>()),
    ) {
        let x: EventId = format!("e:{}-{}", a.0, a.1).parse().expect("valid");
        let y: EventId = format!("e:{}-{}", b.0, b.1).parse().expect("valid");
        prop_assert_eq!(x.partial_cmp(&y), Some(a.cmp(&b)));
        prop_assert_eq!(x.is_at_or_before(&y), a <= b);
    }
}
