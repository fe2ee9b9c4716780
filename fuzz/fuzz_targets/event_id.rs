//! `EventId` parsing on arbitrary text: an id exactly when the text follows
//! the grammar (`<alnum+>:<digits>-<digits>`, each number a u64, at most 256
//! bytes), and then it prints back as text that parses to the same id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsauth_shared::event_id::EventId;
// The grammar, independently of the parser (shared with shared's proptests).
use wsauth_shared::oracles::event_id_well_formed as well_formed;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = text.parse::<EventId>();
    assert_eq!(parsed.is_ok(), well_formed(text), "{text:?}");
    if let Ok(id) = parsed {
        let printed = id.to_string();
        let again: EventId = printed.parse().expect("a printed id parses");
        assert_eq!(again, id, "{text:?}");
        // Only leading zeros differ between the text and its print.
        assert!(
            printed.len() <= text.len(),
            "{text:?} printed as {printed:?}"
        );
    }
});
