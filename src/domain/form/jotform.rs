//! Jotform's webhook, and any other `multipart/form-data` form.
//!
//! Jotform posts `multipart/form-data` (jotform.com/help/245-how-to-setup-a-webhook-with-jotform)
//! with the parts `formID`, `submissionID`, `formTitle`, `pretty` (a "Label:answer, ..." summary
//! meant for people) and `rawRequest`, a JSON object of the answers keyed by each question's
//! unique name, like `q3_matrixId` (`q`, the question number, `_`, the name). Checkbox answers
//! are arrays; composite ones (a name, a date) are objects.
//!
//! Decides: the fields of such a body: the `qN_name` entries of `rawRequest`, and any flat
//! `qN_name` parts beside it, each known by its full key and by its name part. The delivery id
//! is `submissionID`. Without `rawRequest` or `formID`, the body is a plain HTML form posted as
//! multipart: each text part is a field (uploaded files are not). Never does: field choice, or
//! reading `pretty`, whose commas and colons can't be told from those in answers.

use serde_json::{Map, Value};

use super::multipart::Part;
use super::{text_of, Field, FieldKind, FormError, Platform, Submission};

pub(super) fn parse(parts: &[Part]) -> Result<Submission, FormError> {
    let text = |name: &str| -> Result<Option<&str>, FormError> {
        parts
            .iter()
            .find(|p| p.name == name && p.filename.is_none())
            .map(|p| std::str::from_utf8(p.body).map_err(|_| FormError::InvalidUtf8))
            .transpose()
    };
    let raw = text("rawRequest")?;
    let form_id = text("formID")?;
    if raw.is_none() && form_id.is_none() {
        return html_form(parts);
    }
    let mut fields = Vec::new();
    if let Some(raw) = raw {
        let answers: Map<String, Value> =
            serde_json::from_str(raw).map_err(|_| FormError::MalformedJson)?;
        for (key, value) in &answers {
            if let Some(name) = question_name(key) {
                fields.push(question(key, name, text_of(Some(value))));
            }
        }
    }
    for part in parts.iter().filter(|p| p.filename.is_none()) {
        let Some(name) = question_name(&part.name) else {
            continue;
        };
        if fields.iter().any(|f: &Field| f.ids[0] == part.name) {
            continue;
        }
        let value = std::str::from_utf8(part.body).map_err(|_| FormError::InvalidUtf8)?;
        fields.push(question(&part.name, name, value.to_owned()));
    }
    let delivery_id = text("submissionID")?
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    Ok(Submission {
        platform: Platform::Jotform,
        fields,
        delivery_id,
    })
}

/// The name part of a question's key: `matrixId` of `q3_matrixId`.
fn question_name(key: &str) -> Option<&str> {
    let (number, name) = key.strip_prefix('q')?.split_once('_')?;
    let numbered = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
    (numbered && !name.is_empty()).then_some(name)
}

fn question(key: &str, name: &str, value: String) -> Field {
    Field {
        ids: vec![key.to_owned(), name.to_owned()],
        label: None,
        kind: FieldKind::Untyped,
        value,
    }
}

fn html_form(parts: &[Part]) -> Result<Submission, FormError> {
    let mut fields = Vec::new();
    for part in parts.iter().filter(|p| p.filename.is_none()) {
        let value = std::str::from_utf8(part.body).map_err(|_| FormError::InvalidUtf8)?;
        fields.push(Field::untyped(&part.name, value.to_owned()));
    }
    Ok(Submission {
        platform: Platform::HtmlForm,
        fields,
        delivery_id: None,
    })
}
