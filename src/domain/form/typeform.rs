//! Typeform's webhook (typeform.com/developers/webhooks/example-payload).
//!
//! Decides: whether a payload is a submission (`event_type: form_response`) or a partial
//! response (`form_response_partial`, sent to webhooks subscribed to it, for people who left the
//! form), and the fields of a submission. An answer's `field` often carries only `id` and
//! `type`; its `ref` and `title` come from `form_response.definition.fields`, matched by id.
//! Every answer type is read: `text`, `email`, `url`, `number`, `boolean`, `date`,
//! `phone_number`, `file_url`, `choice {label, other}`, `choices {labels, other}`. The `hidden`
//! values and the `variables` beside the answers are fields too. The delivery id is `event_id`,
//! else `form_response.token`. Never does: field choice.

use serde_json::{Map, Value};

use super::{join_texts, str_at, text_of, Delivery, Field, FieldKind, Partial, Platform};

/// The `event_type` of a partial response.
const PARTIAL: &str = "form_response_partial";

/// A field of `definition.fields`.
struct Definition<'a> {
    id: &'a str,
    reference: Option<&'a str>,
    title: Option<&'a str>,
    kind: Option<&'a str>,
}

pub(super) fn parse(obj: &Map<String, Value>) -> Option<Delivery> {
    let resp = obj.get("form_response")?.as_object()?;
    let delivery_id = str_at(obj, "event_id").or_else(|| str_at(resp, "token"));
    if obj.get("event_type").and_then(Value::as_str) == Some(PARTIAL) {
        return Some(Delivery::Partial(Partial {
            platform: Platform::Typeform,
            delivery_id,
        }));
    }
    let definitions: Vec<Definition> = resp
        .get("definition")
        .and_then(|d| d.get("fields"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| {
            Some(Definition {
                id: f.get("id")?.as_str()?,
                reference: f.get("ref").and_then(Value::as_str),
                title: f.get("title").and_then(Value::as_str),
                kind: f.get("type").and_then(Value::as_str),
            })
        })
        .collect();
    let mut fields: Vec<Field> = resp
        .get("answers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(|a| answer(a, &definitions))
        .collect();
    if let Some(hidden) = resp.get("hidden").and_then(Value::as_object) {
        for (k, v) in hidden {
            fields.push(Field::new(
                vec![k.clone()],
                None,
                FieldKind::Hidden,
                text_of(Some(v)),
            ));
        }
    }
    for v in resp
        .get("variables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        let key = v.get("key").and_then(Value::as_str).unwrap_or("");
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
        fields.push(Field::new(
            vec![key.to_owned()],
            None,
            FieldKind::Calculated,
            text_of(v.get(kind)),
        ));
    }
    Some(Delivery::Submission(super::Submission {
        platform: Platform::Typeform,
        fields,
        delivery_id,
    }))
}

fn answer(a: &Map<String, Value>, definitions: &[Definition]) -> Field {
    let field = a.get("field").and_then(Value::as_object);
    let at = |k: &str| field.and_then(|f| f.get(k)).and_then(Value::as_str);
    let id = at("id");
    let def = definitions.iter().find(|d| Some(d.id) == id);
    let reference = at("ref").or(def.and_then(|d| d.reference));
    let answer_type = a.get("type").and_then(Value::as_str).unwrap_or("");
    let kind = at("type")
        .or(def.and_then(|d| d.kind))
        .map(field_kind)
        .unwrap_or_else(|| answer_kind(answer_type));
    let ids = [reference, id]
        .into_iter()
        .flatten()
        .map(str::to_owned)
        .collect();
    let title = def.and_then(|d| d.title).map(str::to_owned);
    Field::new(ids, title, kind, value(a, answer_type))
}

fn value(a: &Map<String, Value>, answer_type: &str) -> String {
    let inner = |k: &str, sub: &str| a.get(k).and_then(|c| c.get(sub));
    match answer_type {
        "choice" => {
            let label = text_of(inner("choice", "label"));
            if label.is_empty() {
                text_of(inner("choice", "other"))
            } else {
                label
            }
        }
        "choices" => {
            let labels = inner("choices", "labels").map(|l| text_of(Some(l)));
            let other = text_of(inner("choices", "other"));
            join_texts(labels.into_iter().chain([other]))
        }
        _ => text_of(a.get(answer_type)),
    }
}

/// The kind of a question from its type in the form's definition.
fn field_kind(typeform_type: &str) -> FieldKind {
    match typeform_type {
        "short_text" => FieldKind::ShortText,
        "long_text" => FieldKind::LongText,
        "email" => FieldKind::Email,
        "website" => FieldKind::Url,
        "phone_number" => FieldKind::Phone,
        "date" => FieldKind::Date,
        "number" | "opinion_scale" | "rating" | "nps" => FieldKind::Number,
        "yes_no" | "legal" => FieldKind::Boolean,
        "multiple_choice" | "picture_choice" | "dropdown" | "ranking" | "matrix" => {
            FieldKind::Choice
        }
        "" => FieldKind::Untyped,
        _ => FieldKind::Other,
    }
}

/// The kind of a question from its answer's type alone, when the field's type is missing. A
/// `text` answer may be short or long text or a dropdown, so its kind is unknown.
fn answer_kind(answer_type: &str) -> FieldKind {
    match answer_type {
        "email" => FieldKind::Email,
        "url" => FieldKind::Url,
        "number" => FieldKind::Number,
        "boolean" => FieldKind::Boolean,
        "choice" | "choices" => FieldKind::Choice,
        "date" => FieldKind::Date,
        "phone_number" => FieldKind::Phone,
        "file_url" | "payment" => FieldKind::Other,
        _ => FieldKind::Untyped,
    }
}
