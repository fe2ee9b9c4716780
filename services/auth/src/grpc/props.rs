//! Property tests of the gRPC edge's request checks: arbitrary input never
//! panics and always maps to the contract's code.

use proptest::prelude::*;
use tonic::Code;

use super::checks::{check, check_user_id};
use super::gate::required_role;
use crate::caller::{CallerKeys, Role};
use crate::error::AuthError;
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
        header in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let keys = CallerKeys::new(&["internal-key".into()], &["admin-key".into()]);
        let role = keys.role_of(Some(&header));
        let text = String::from_utf8_lossy(&header).to_ascii_lowercase();
        if role != Role::Anonymous {
            prop_assert!(text.starts_with("bearer "), "{text}");
            prop_assert!(text.trim_end().ends_with("-key"), "{text}");
        }
    }

    #[test]
    fn any_path_needs_a_role_and_unknown_wsauth_methods_need_admin(
        method in "[A-Za-z]{0,20}",
        service in prop_oneof![
            Just("wsauth.v1.AuthService".to_string()),
            Just("wsauth.v1.BroadcastService".to_string()),
            Just("wsauth.v1.AdminService".to_string()),
            "[a-z.]{0,20}",
        ],
    ) {
        let path = format!("/{service}/{method}");
        let role = required_role(&path);
        let known = [
            "IssueWsToken", "ValidateToken", "VerifyJwt", "Subscribe", "History",
        ];
        if service.starts_with("wsauth.") && !known.contains(&method.as_str()) {
            prop_assert_eq!(role, Role::Admin, "{}", path);
        }
    }
}
