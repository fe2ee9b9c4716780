//! Property tests of the client-frame parser: arbitrary text never panics;
//! a first frame is accepted exactly when the contract says (a JSON object,
//! `type` "jwt", a non-empty string `token`, `since` absent, null or an event
//! id), and everything else is a [`FrameError`], which closes with 4400.

use proptest::prelude::*;
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};

use super::{ClientFrame, EventId, FrameError};
use crate::close::CloseCode;

/// What the contract says of a first frame, from the JSON value alone:
/// `Some((token, since))` when it must be accepted.
fn oracle(value: &Value) -> Option<(String, Option<String>)> {
    let object = value.as_object()?;
    if object.get("type")? != "jwt" {
        return None;
    }
    let token = object.get("token")?.as_str().filter(|t| !t.is_empty())?;
    let since = match object.get("since") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            s.parse::<EventId>().ok()?;
            Some(s.clone())
        }
        Some(_) => return None,
    };
    Some((token.to_string(), since))
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        Just(json!("jwt")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for a jwt-frame field: often right, often subtly wrong.
fn field(right: &'static [&'static str]) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        3 => prop::sample::select(right).prop_map(|s| Some(json!(s))),
        1 => Just(None),
        1 => json_value().prop_map(Some),
    ]
}

/// Objects shaped like a first frame, with each field right or wrong.
fn frame_like() -> impl Strategy<Value = Value> {
    (
        field(&["jwt", "JWT", "jwt ", ""]),
        field(&["a.b.c", "", "x"]),
        field(&[
            "e1:1-0",
            "e1:18446744073709551615-7",
            "e1:1-",
            ":1-0",
            "e1:+1-0",
            "e 1:1-0",
        ]),
        prop::collection::btree_map("[a-z]{1,6}", json_value(), 0..3),
    )
        .prop_map(|(kind, token, since, extra)| {
            let mut object: Map<String, Value> = extra.into_iter().collect();
            for (name, value) in [("type", kind), ("token", token), ("since", since)] {
                match value {
                    Some(value) => object.insert(name.to_string(), value),
                    None => object.remove(name),
                };
            }
            Value::Object(object)
        })
}

fn accepted(text: &str) -> Result<(String, Option<String>), FrameError> {
    ClientFrame::parse_first(text).map(|(token, since)| {
        (
            token.expose_secret().to_string(),
            since.map(|id| id.to_string()),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_text_is_a_first_frame_or_a_4400(text in "\\PC{0,200}") {
        if let Err(error) = accepted(&text) {
            // Every refusal of a first frame is the one close code.
            let _: FrameError = error;
            prop_assert_eq!(CloseCode::BadFirstFrame.code(), 4400);
        }
        // Later frames never fail: an echo or a refresh.
        let _ = ClientFrame::parse_later(&text);
    }

    #[test]
    fn any_bytes_as_lossy_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = accepted(&text);
        let _ = ClientFrame::parse_later(&text);
    }

    #[test]
    fn a_first_frame_is_accepted_exactly_when_the_contract_says(value in prop_oneof![
        3 => frame_like(),
        1 => json_value(),
    ]) {
        let text = value.to_string();
        let expected = oracle(&value);
        prop_assert_eq!(accepted(&text).ok(), expected.clone(), "{}", text);
        // A refresh is any frame the first-frame rules would take as a jwt
        // frame, whatever the string in its since.
        let refresh = matches!(ClientFrame::parse_later(&text), ClientFrame::Jwt { .. });
        let mut without_since = value.clone();
        if let Some(object) = without_since.as_object_mut()
            && object.get("since").is_some_and(Value::is_string)
        {
            object.remove("since");
        }
        prop_assert_eq!(refresh, oracle(&without_since).is_some(), "{}", text);
    }

    #[test]
    fn json_that_is_not_an_object_is_never_a_jwt_frame(
        items in prop::collection::vec(json_value(), 0..4),
    ) {
        // serde reads a struct from an array too: ["jwt","tok"] must still be 4400.
        let mut items = items;
        items.insert(0, json!("jwt"));
        items.insert(1, json!("a.b.c"));
        let text = Value::Array(items).to_string();
        prop_assert!(accepted(&text).is_err(), "{}", text);
        prop_assert!(matches!(ClientFrame::parse_later(&text), ClientFrame::Other), "{}", text);
    }
}
