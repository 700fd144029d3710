//! Tally's `FORM_RESPONSE` webhook (tally.so/help/webhooks, "Example webhook event").
//!
//! Decides: the fields of a Tally payload. `MULTIPLE_CHOICE`, `DROPDOWN`, `MULTI_SELECT`,
//! `RANKING` and the aggregate `CHECKBOXES` field carry option ids, resolved through the field's
//! `options: [{id, text}]` to their text. A `CHECKBOXES` question also arrives as one boolean
//! field per option, labelled "Question (Option)". `HIDDEN_FIELDS` carry values pre-filled from
//! the form link (`?matrix_id=...`). The delivery id is `eventId`, else `data.responseId`.
//! Never does: field choice.

use serde_json::{Map, Value};

use super::{str_at, text_of, Field, FieldKind, Platform, Submission};

pub(super) fn parse(obj: &Map<String, Value>) -> Option<Submission> {
    let data = obj.get("data")?.as_object()?;
    let raw_fields = data.get("fields")?.as_array()?;
    let fields = raw_fields
        .iter()
        .filter_map(Value::as_object)
        .map(field)
        .collect();
    let delivery_id = str_at(obj, "eventId").or_else(|| str_at(data, "responseId"));
    Some(Submission {
        platform: Platform::Tally,
        fields,
        delivery_id,
    })
}

fn field(f: &Map<String, Value>) -> Field {
    let text = |k: &str| f.get(k).and_then(Value::as_str).map(str::to_owned);
    let kind = f
        .get("type")
        .and_then(Value::as_str)
        .map_or(FieldKind::Untyped, kind);
    Field::new(
        text("key").into_iter().collect(),
        text("label"),
        kind,
        value(f),
    )
}

/// The answer, with option ids replaced by the options' text.
fn value(f: &Map<String, Value>) -> String {
    let options: Vec<(&str, &str)> = f
        .get("options")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| Some((o.get("id")?.as_str()?, o.get("text")?.as_str()?)))
        .collect();
    let resolve = |v: &Value| match v.as_str() {
        Some(id) => options
            .iter()
            .find(|(oid, _)| *oid == id)
            .map_or_else(|| id.to_owned(), |(_, t)| (*t).to_owned()),
        None => text_of(Some(v)),
    };
    match f.get("value") {
        Some(Value::Array(items)) if !options.is_empty() => {
            super::join_texts(items.iter().map(resolve))
        }
        Some(v @ Value::String(_)) if !options.is_empty() => resolve(v),
        other => text_of(other),
    }
}

fn kind(tally_type: &str) -> FieldKind {
    match tally_type {
        "INPUT_TEXT" => FieldKind::ShortText,
        "TEXTAREA" => FieldKind::LongText,
        "HIDDEN_FIELDS" => FieldKind::Hidden,
        "MULTIPLE_CHOICE" | "DROPDOWN" | "MULTI_SELECT" | "RANKING" => FieldKind::Choice,
        "CHECKBOXES" | "CHECKBOX" => FieldKind::Checkbox,
        "INPUT_EMAIL" => FieldKind::Email,
        "INPUT_NUMBER" | "RATING" | "LINEAR_SCALE" => FieldKind::Number,
        "INPUT_LINK" => FieldKind::Url,
        "INPUT_PHONE_NUMBER" => FieldKind::Phone,
        "INPUT_DATE" | "INPUT_TIME" => FieldKind::Date,
        "CALCULATED_FIELDS" => FieldKind::Calculated,
        "" => FieldKind::Untyped,
        _ => FieldKind::Other,
    }
}
