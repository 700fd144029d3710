//! Fillout's webhook: the submission as Fillout's REST API returns it
//! (fillout.com/help/api-reference/get-submission-by-id), wrapped with the form:
//! `{formId, formName, submission: {submissionId, submissionTime, questions: [{id, name, type,
//! value}], calculations, urlParameters: [{id, name, value}], ...}}`.
//!
//! Decides: the fields of a Fillout payload. Questions are typed; URL parameters are values
//! pre-filled from the form link, so they are hidden fields; calculations are computed ones.
//! The delivery id is `submissionId`. Never does: field choice.

use serde_json::{Map, Value};

use super::{str_at, text_of, Field, FieldKind, Platform, Submission};

pub(super) fn parse(obj: &Map<String, Value>) -> Option<Submission> {
    // The documented webhook wraps the submission; a custom body may send it bare.
    let sub = match obj.get("submission").and_then(Value::as_object) {
        Some(s) => s,
        None if obj.contains_key("submissionId") => obj,
        None => return None,
    };
    let questions = sub.get("questions")?.as_array()?;
    let entries = |key: &str| {
        sub.get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
    };
    let mut fields: Vec<Field> = questions
        .iter()
        .filter_map(Value::as_object)
        .map(|q| {
            let kind = q
                .get("type")
                .and_then(Value::as_str)
                .map_or(FieldKind::Untyped, kind);
            entry(q, kind)
        })
        .collect();
    fields.extend(entries("urlParameters").map(|p| entry(p, FieldKind::Hidden)));
    fields.extend(entries("calculations").map(|c| entry(c, FieldKind::Calculated)));
    Some(Submission {
        platform: Platform::Fillout,
        fields,
        delivery_id: str_at(sub, "submissionId"),
    })
}

fn entry(e: &Map<String, Value>, kind: FieldKind) -> Field {
    let text = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
    Field::new(
        text("id").into_iter().collect(),
        text("name"),
        kind,
        text_of(e.get("value")),
    )
}

/// Fillout's question types. Only `ShortAnswer`, `LongAnswer`, `EmailInput`, `NumberInput`,
/// `MultipleChoice` and `DatePicker` appear in Fillout's documented examples; the others are
/// the names its form builder uses.
fn kind(fillout_type: &str) -> FieldKind {
    match fillout_type {
        "ShortAnswer" => FieldKind::ShortText,
        "LongAnswer" => FieldKind::LongText,
        "EmailInput" => FieldKind::Email,
        "NumberInput" | "OpinionScale" | "Rating" | "Slider" => FieldKind::Number,
        "URLInput" => FieldKind::Url,
        "PhoneNumber" => FieldKind::Phone,
        "DatePicker" | "DateTimePicker" | "TimePicker" | "DateRange" => FieldKind::Date,
        "MultipleChoice" | "Dropdown" | "MultiSelect" | "PictureChoice" | "Ranking" | "Matrix" => {
            FieldKind::Choice
        }
        "Checkboxes" => FieldKind::Checkbox,
        "Checkbox" | "Switch" => FieldKind::Boolean,
        "" => FieldKind::Untyped,
        _ => FieldKind::Other,
    }
}
