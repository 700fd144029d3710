//! Shapes with no platform of their own: a plain HTML form (urlencoded), any JSON object, and
//! what a Google Forms Apps Script posts.
//!
//! Decides: the fields of such a body. Apps Script's `e.namedValues` maps each question title to
//! an array of strings (Google's "Event objects" page); a script posts it as
//! `{"namedValues": {...}}`, as the bare map, or flattens it, as JSON or (`UrlFetchApp` with an
//! object payload) urlencoded. None of these carry a delivery id. Never does: field choice.

use serde_json::{Map, Value};

use super::{str_at, text_of, Field, FieldKind, FormError, Platform, Submission};

pub(super) fn parse_urlencoded(body: &[u8]) -> Result<Submission, FormError> {
    std::str::from_utf8(body).map_err(|_| FormError::InvalidUtf8)?;
    let fields = form_urlencoded::parse(body)
        .map(|(k, v)| Field::untyped(&k, v.into_owned()))
        .collect();
    Ok(Submission {
        platform: Platform::HtmlForm,
        fields,
        delivery_id: None,
    })
}

/// Top-level keys a generic object may carry its delivery id in.
const GENERIC_DELIVERY_KEYS: [&str; 3] = ["eventId", "event_id", "responseId"];

pub(super) fn parse_json(obj: &Map<String, Value>) -> Submission {
    if let Some(named) = obj.get("namedValues").and_then(Value::as_object) {
        // The keys are the questions as the person read them: labels, not ids.
        let fields = named
            .iter()
            .filter(|(_, v)| is_text_like(v))
            .map(|(question, v)| {
                Field::new(
                    Vec::new(),
                    Some(question.clone()),
                    FieldKind::Untyped,
                    text_of(Some(v)),
                )
            })
            .collect();
        return Submission {
            platform: Platform::GoogleForms,
            fields,
            delivery_id: None,
        };
    }
    let fields = obj
        .iter()
        .filter(|(_, v)| is_text_like(v))
        .map(|(k, v)| Field::untyped(k, text_of(Some(v))))
        .collect();
    let delivery_id = GENERIC_DELIVERY_KEYS.iter().find_map(|k| str_at(obj, k));
    Submission {
        platform: Platform::Json,
        fields,
        delivery_id,
    }
}

/// A scalar, or an array of scalars (a multiple-choice answer, or Apps Script's array of
/// strings per question). Objects and nested arrays are not answers.
fn is_text_like(v: &Value) -> bool {
    match v {
        Value::Object(_) => false,
        Value::Array(items) => items.iter().all(|i| !i.is_object() && !i.is_array()),
        _ => true,
    }
}
