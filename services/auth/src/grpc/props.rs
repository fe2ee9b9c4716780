//! Property tests of the gRPC edge's request checks: arbitrary input never
//! panics and always maps to the contract's code.

use proptest::prelude::*;
use tonic::Code;

use super::checks::{check, check_user_id};
use super::gate::required_role;
use crate::caller::CallerKeys;
use crate::error::AuthError;
use crate::oracles::{CONTRACT_ROLES, OPEN_SERVICES, contract_role, presented_role};
use wsauth_shared::limits::{MAX_CREDENTIAL_BYTES, MAX_ID_BYTES};

fn code(result: Result<(), AuthError>) -> Option<Code> {
    result.err().map(|e| tonic::Status::from(e).code())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_field_is_invalid_argument_exactly_when_empty_or_too_long(
        value in ".{0,300}",
        max in prop_oneof![Just(MAX_ID_BYTES), Just(MAX_CREDENTIAL_BYTES), 0usize..64],
    ) {
        let expected = (value.is_empty() || value.len() > max).then_some(Code::InvalidArgument);
        prop_assert_eq!(code(check(&value, max, "empty", "too long")), expected);
    }

    #[test]
    fn user_ids_are_checked_by_byte_length(value in "\\PC{0,200}") {
        let expected = (value.is_empty() || value.len() > MAX_ID_BYTES).then_some(Code::InvalidArgument);
        prop_assert_eq!(code(check_user_id(&value)), expected);
    }

    #[test]
    fn any_authorization_header_maps_to_a_role_and_only_real_keys_grant_one(
        header in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..80),
            "(?i)[ \t]{0,2}bearer[ \t]{0,2}(admin|internal|other)-key[ \t]{0,2}"
                .prop_map(String::into_bytes),
        ],
    ) {
        let keys = CallerKeys::new(&["internal-key".into()], &["admin-key".into()]);
        prop_assert_eq!(
            keys.role_of(Some(&header)),
            presented_role(Some(&header), &["internal-key"], &["admin-key"]),
            "{:?}", String::from_utf8_lossy(&header)
        );
    }

    #[test]
    fn any_path_needs_the_role_the_contract_lists(
        path in prop_oneof![
            prop::sample::select(CONTRACT_ROLES).prop_map(|(path, _)| path.to_string()),
            (prop::sample::select(OPEN_SERVICES), "[A-Za-z]{0,20}")
                .prop_map(|(service, method)| format!("{service}{method}")),
            (
                prop_oneof![
                    Just("wsauth.v1.AuthService".to_string()),
                    Just("wsauth.v1.BroadcastService".to_string()),
                    Just("wsauth.v1.AdminService".to_string()),
                    "[a-z.]{0,20}",
                ],
                "[A-Za-z]{0,20}",
            )
                .prop_map(|(service, method)| format!("/{service}/{method}")),
            "\\PC{0,60}",
        ],
    ) {
        prop_assert_eq!(required_role(&path), contract_role(&path), "{}", path);
    }
}
