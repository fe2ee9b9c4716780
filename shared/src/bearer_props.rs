//! Property tests of the Bearer parser: arbitrary header bytes never panic,
//! and a credential comes back exactly for `bearer` (any case), a space, and
//! something that is not all spaces; what comes back is inside the value,
//! trimmed, and never holds the scheme.

use proptest::prelude::*;

use super::credential;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn any_bytes_give_a_trimmed_credential_or_none(value in prop::collection::vec(any::<u8>(), 0..120)) {
        if let Some(found) = credential(&value) {
            prop_assert!(!found.is_empty());
            prop_assert_eq!(found, found.trim_ascii());
            let trimmed = value.trim_ascii();
            prop_assert!(trimmed.len() > 7 && trimmed[..6].eq_ignore_ascii_case(b"bearer") && trimmed[6] == b' ');
            prop_assert!(trimmed.ends_with(found));
        }
    }

    #[test]
    fn a_bearer_value_gives_its_credential(
        scheme in "[bB][eE][aA][rR][eE][rR]",
        before in "[ \\t]{0,3}",
        gap in " [ \\t]{0,3}",
        token in "[!-~]{1,60}",
        after in "[ \\t]{0,3}",
    ) {
        let value = format!("{before}{scheme}{gap}{token}{after}");
        prop_assert_eq!(credential(value.as_bytes()), Some(token.as_bytes()));
    }

    #[test]
    fn other_schemes_and_empty_credentials_give_none(
        scheme in "[A-Za-z]{0,10}",
        rest in "[ \\t]{0,4}",
        token in "[!-~]{0,20}",
    ) {
        prop_assume!(!scheme.eq_ignore_ascii_case("bearer"));
        let other = format!("{scheme} {token}");
        prop_assert_eq!(credential(other.as_bytes()), None);
        let empty = format!("Bearer{rest}");
        prop_assert_eq!(credential(empty.as_bytes()), None);
    }
}
