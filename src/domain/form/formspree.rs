//! Formspree's webhook: `{form, keys, submission: {..., _date}}`. Formspree's help shows the
//! signature, not the body; this shape is the one public receivers read.
//!
//! Decides: the fields of a Formspree payload: the submission's entries, in the order of `keys`
//! (the form's field names) when it is given. `_date` is Formspree's, not an answer. Formspree
//! sends no delivery id, so the key is the body's hash (a retry resends the same body). Never
//! does: field choice.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::{text_of, Field, Platform, Submission};

/// Entries Formspree adds to the submission itself.
const METADATA: [&str; 1] = ["_date"];

pub(super) fn parse(obj: &Map<String, Value>) -> Option<Submission> {
    let sub = obj.get("submission")?.as_object()?;
    let keys: Vec<&str> = obj
        .get("keys")
        .and_then(Value::as_array)
        .map(|k| k.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if keys.is_empty() && !obj.get("form").is_some_and(Value::is_string) {
        return None;
    }
    let listed = keys.iter().copied().filter(|k| sub.contains_key(*k));
    let rest = sub.keys().map(String::as_str).filter(|k| !keys.contains(k));
    let mut seen = BTreeSet::new();
    let fields = listed
        .chain(rest)
        .filter(|k| !METADATA.contains(k) && seen.insert(*k))
        .filter(|k| sub.get(*k).is_some_and(|v| !v.is_object()))
        .map(|k| Field::untyped(k, text_of(sub.get(k))))
        .collect();
    Some(Submission {
        platform: Platform::Formspree,
        fields,
        delivery_id: None,
    })
}
