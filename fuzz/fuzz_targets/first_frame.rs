//! The gateway's client-frame parser on arbitrary text: a first frame is
//! accepted exactly when the contract says (a JSON object with `type` "jwt",
//! a non-empty string `token`, `since` absent, null or an event id; none of
//! the three twice), with that token and since; every refusal closes with 4400. A later
//! frame is a refresh exactly when it would be a jwt frame whatever its since.
#![no_main]

use std::fmt;

use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret as _;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use wsauth_gateway::message::{ClientFrame, EventId};

/// The entries of a JSON object that the contract reads, in order and with
/// duplicates kept (a `Value` keeps only the last of a repeated key).
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries_;
        impl<'de> Visitor<'de> for Entries_ {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if ["type", "token", "since"].contains(&key.as_str()) {
                        entries.push((key, map.next_value::<Value>()?));
                    } else {
                        // Any JSON, however deep (a `Value` stops at 128 levels).
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Entries_)
    }
}

/// What the contract accepts as a jwt frame: `Some((token, since))`.
/// `check_since` false: a refresh, whose since (any string) is ignored.
fn oracle(text: &str, check_since: bool) -> Option<(String, Option<String>)> {
    let Entries(entries) = serde_json::from_str(text).ok()?;
    // A field the gateway reads, given twice, is no jwt frame.
    for name in ["type", "token", "since"] {
        if entries.iter().filter(|(k, _)| k == name).count() > 1 {
            return None;
        }
    }
    let get = |name: &str| entries.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    // Fields the gateway does not read may hold any JSON value.
    if get("type")? != "jwt" {
        return None;
    }
    let token = get("token")?.as_str().filter(|t| !t.is_empty())?;
    let since = match get("since") {
        None | Some(Value::Null) => None,
        Some(Value::String(_)) if !check_since => None,
        Some(Value::String(s)) => {
            s.parse::<EventId>().ok()?;
            Some(s.clone())
        }
        Some(_) => return None,
    };
    Some((token.to_owned(), since))
}

fuzz_target!(|data: &[u8]| {
    // The socket hands the session text frames only, which are UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let got = ClientFrame::parse_first(text).map(|(token, since)| {
        (
            token.expose_secret().to_owned(),
            since.map(|s| s.to_string()),
        )
    });
    let expected = oracle(text, true);
    match (&got, &expected) {
        (Ok(got), Some(expected)) => {
            assert_eq!(got.0, expected.0, "{text:?}");
            // Printing normalises leading zeros: compare parsed ids.
            let parse =
                |s: &Option<String>| s.as_ref().map(|s| s.parse::<EventId>().expect("checked"));
            assert_eq!(parse(&got.1), parse(&expected.1), "{text:?}");
        }
        (Err(_), None) => {}
        _ => panic!("first frame {text:?}: parser {got:?}, contract {expected:?}"),
    }
    let refresh = match ClientFrame::parse_later(text) {
        ClientFrame::Jwt { token } => Some(token.expose_secret().to_owned()),
        ClientFrame::Other => None,
    };
    let expected = oracle(text, false).map(|(token, _)| token);
    assert_eq!(refresh, expected, "later frame {text:?}");
});
