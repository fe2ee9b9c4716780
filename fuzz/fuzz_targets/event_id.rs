//! `EventId` parsing on arbitrary text: an id exactly when the text follows
//! the grammar (`<alnum+>:<digits>-<digits>`, each number a u64, at most 256
//! bytes), and then it prints back as text that parses to the same id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsauth_shared::event_id::EventId;
use wsauth_shared::limits::MAX_ID_BYTES as MAX_EVENT_ID_BYTES;

/// The grammar, independently of the parser.
fn well_formed(s: &str) -> bool {
    let Some((epoch, seq)) = s.split_once(':') else {
        return false;
    };
    let Some((ms, n)) = seq.split_once('-') else {
        return false;
    };
    let number = |x: &str| {
        !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()) && x.parse::<u64>().is_ok()
    };
    s.len() <= MAX_EVENT_ID_BYTES
        && !epoch.is_empty()
        && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
        && number(ms)
        && number(n)
}

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
