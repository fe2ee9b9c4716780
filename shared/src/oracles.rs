//! The contract's rules restated for tests, independently of the code they
//! check: the property tests and the fuzz targets (`fuzz/`, which enables the
//! `oracles` feature) both judge the parsers against these. Not part of any
//! service build.

use crate::limits::MAX_ID_BYTES;

/// Whether `s` is an event id by the grammar alone, without the parser:
/// `<alnum+>:<digits>-<digits>`, each number a u64, at most 256 bytes.
pub fn event_id_well_formed(s: &str) -> bool {
    let Some((epoch, seq)) = s.split_once(':') else {
        return false;
    };
    let Some((ms, n)) = seq.split_once('-') else {
        return false;
    };
    let digits = |x: &str| {
        !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()) && x.parse::<u64>().is_ok()
    };
    s.len() <= MAX_ID_BYTES
        && !epoch.is_empty()
        && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
        && digits(ms)
        && digits(n)
}
