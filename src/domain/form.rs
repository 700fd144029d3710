//! Form payloads: from a platform's raw webhook body to the one Matrix ID it carries.
//!
//! Decides: what platform sent a body, which field holds the Matrix ID, whether a honeypot field
//! was filled, and the idempotency key of a delivery. Never does: signature checks (see
//! [`super::signature`]) or any lookup of the ID.
//!
//! Accepted shapes:
//! - Tally: `{eventId, data: {responseId, fields: [{key, label, type, value}]}}`
//! - Typeform: `{event_id, form_response: {token, hidden: {..}, definition: {fields}, answers}}`
//! - any other JSON object: its top-level string values, `matrix_id`, `user_id` or `mxid` first
//! - `application/x-www-form-urlencoded` from a plain HTML form

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::mxid::{MxidError, UserId};

/// Largest body Knock reads. Anything bigger is refused with 413 before it is parsed.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Field names that mark a generic JSON object's Matrix ID, in order of preference.
const GENERIC_ID_KEYS: [&str; 3] = ["matrix_id", "user_id", "mxid"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    UrlEncoded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Tally,
    Typeform,
    Json,
    HtmlForm,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Tally => "tally",
            Platform::Typeform => "typeform",
            Platform::Json => "json",
            Platform::HtmlForm => "html_form",
        }
    }
}

/// One answer of a submission. `names` holds every name the field goes by (key, ref, id, label).
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub names: Vec<String>,
    /// The answer as text; empty when the answer is empty, null or not text-like.
    pub value: String,
}

impl Field {
    fn new(names: Vec<String>, value: String) -> Field {
        Field { names, value }
    }

    fn answers_to(&self, wanted: &str) -> bool {
        self.names
            .iter()
            .any(|n| n.trim().eq_ignore_ascii_case(wanted.trim()))
    }

    fn mentions_matrix(&self) -> bool {
        self.names.iter().any(|n| {
            let n = n.to_ascii_lowercase();
            n.contains("matrix") || GENERIC_ID_KEYS.contains(&n.as_str())
        })
    }

    /// The name shown in messages: the label if there is one, else the key.
    pub fn display_name(&self) -> &str {
        self.names.last().map(String::as_str).unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub platform: Platform,
    pub fields: Vec<Field>,
    /// The platform's own id for this delivery, stable across its retries.
    pub delivery_id: Option<String>,
}

/// Why a payload can't be used. Each maps to one HTTP status and a sentence for the sender.
#[derive(Debug, Clone, PartialEq)]
pub enum FormError {
    UnsupportedMediaType,
    InvalidUtf8,
    MalformedJson,
    NotAnObject,
    NoMatrixId,
    NamedFieldMissing(String),
    Ambiguous(Vec<String>),
    InvalidMxid(MxidError),
}

impl FormError {
    pub fn status(&self) -> u16 {
        match self {
            FormError::UnsupportedMediaType => 415,
            _ => 400,
        }
    }

    pub fn message(&self) -> String {
        match self {
            FormError::UnsupportedMediaType => "Unsupported content type: send application/json \
                or application/x-www-form-urlencoded."
                .into(),
            FormError::InvalidUtf8 => "The request body is not valid UTF-8 text.".into(),
            FormError::MalformedJson => "The request body is not valid JSON.".into(),
            FormError::NotAnObject => "The JSON body must be an object.".into(),
            FormError::NoMatrixId => {
                "No Matrix ID was found in the form. Add a field for it, like @name:example.org."
                    .into()
            }
            FormError::NamedFieldMissing(name) => {
                format!("The form has no answer in the field \"{name}\" that holds the Matrix ID.")
            }
            FormError::Ambiguous(names) => format!(
                "More than one form field could hold the Matrix ID ({}); set FORM_FIELD to the \
                 one to use.",
                names.join(", ")
            ),
            FormError::InvalidMxid(e) => e.message().into(),
        }
    }
}

/// Reads the media type of a `Content-Type` header. A missing header is sniffed from the body.
pub fn body_kind(content_type: Option<&str>, body: &[u8]) -> Result<BodyKind, FormError> {
    let Some(ct) = content_type.map(str::trim).filter(|c| !c.is_empty()) else {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        return match first {
            Some(b'{') => Ok(BodyKind::Json),
            Some(_) if body.contains(&b'=') => Ok(BodyKind::UrlEncoded),
            _ => Err(FormError::UnsupportedMediaType),
        };
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(BodyKind::Json),
        e if e.starts_with("application/") && e.ends_with("+json") => Ok(BodyKind::Json),
        "application/x-www-form-urlencoded" => Ok(BodyKind::UrlEncoded),
        _ => Err(FormError::UnsupportedMediaType),
    }
}

/// Parses a body of a known kind into a [`Submission`].
pub fn parse_submission(kind: BodyKind, body: &[u8]) -> Result<Submission, FormError> {
    match kind {
        BodyKind::UrlEncoded => parse_urlencoded(body),
        BodyKind::Json => {
            let text = std::str::from_utf8(body).map_err(|_| FormError::InvalidUtf8)?;
            let value: Value = serde_json::from_str(text).map_err(|_| FormError::MalformedJson)?;
            let Value::Object(obj) = value else {
                return Err(FormError::NotAnObject);
            };
            if let Some(s) = parse_tally(&obj) {
                Ok(s)
            } else if let Some(s) = parse_typeform(&obj) {
                Ok(s)
            } else {
                Ok(parse_generic(&obj))
            }
        }
    }
}

fn parse_urlencoded(body: &[u8]) -> Result<Submission, FormError> {
    std::str::from_utf8(body).map_err(|_| FormError::InvalidUtf8)?;
    let fields = form_urlencoded::parse(body)
        .map(|(k, v)| Field::new(vec![k.into_owned()], v.into_owned()))
        .collect();
    Ok(Submission {
        platform: Platform::HtmlForm,
        fields,
        delivery_id: None,
    })
}

fn parse_tally(obj: &Map<String, Value>) -> Option<Submission> {
    let data = obj.get("data")?.as_object()?;
    let raw_fields = data.get("fields")?.as_array()?;
    let fields = raw_fields
        .iter()
        .filter_map(Value::as_object)
        .map(|f| {
            let names = ["key", "label"]
                .iter()
                .filter_map(|k| f.get(*k).and_then(Value::as_str))
                .map(str::to_owned)
                .collect();
            Field::new(names, text_of(f.get("value")))
        })
        .collect();
    let delivery_id = str_at(obj, "eventId").or_else(|| str_at(data, "responseId"));
    Some(Submission {
        platform: Platform::Tally,
        fields,
        delivery_id,
    })
}

fn parse_typeform(obj: &Map<String, Value>) -> Option<Submission> {
    let resp = obj.get("form_response")?.as_object()?;
    let titles: Vec<(&str, &str)> = resp
        .get("definition")
        .and_then(|d| d.get("fields"))
        .and_then(Value::as_array)
        .map(|fs| {
            fs.iter()
                .filter_map(|f| Some((f.get("id")?.as_str()?, f.get("title")?.as_str()?)))
                .collect()
        })
        .unwrap_or_default();
    let mut fields = Vec::new();
    for answer in resp
        .get("answers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(a) = answer.as_object() else {
            continue;
        };
        let field = a.get("field").and_then(Value::as_object);
        let id = field.and_then(|f| str_at(f, "id"));
        let mut names: Vec<String> = [field.and_then(|f| str_at(f, "ref")), id.clone()]
            .into_iter()
            .flatten()
            .collect();
        if let Some((_, title)) = titles.iter().find(|(fid, _)| Some(*fid) == id.as_deref()) {
            names.push((*title).to_owned());
        }
        let kind = a.get("type").and_then(Value::as_str).unwrap_or("");
        let value = match kind {
            "choice" => text_of(a.get("choice").and_then(|c| c.get("label"))),
            _ => text_of(a.get(kind)),
        };
        fields.push(Field::new(names, value));
    }
    if let Some(hidden) = resp.get("hidden").and_then(Value::as_object) {
        for (k, v) in hidden {
            fields.push(Field::new(vec![k.clone()], text_of(Some(v))));
        }
    }
    let delivery_id = str_at(obj, "event_id").or_else(|| str_at(resp, "token"));
    Some(Submission {
        platform: Platform::Typeform,
        fields,
        delivery_id,
    })
}

fn parse_generic(obj: &Map<String, Value>) -> Submission {
    let fields = obj
        .iter()
        .filter(|(_, v)| !v.is_object() && !v.is_array())
        .map(|(k, v)| Field::new(vec![k.clone()], text_of(Some(v))))
        .collect();
    let delivery_id = ["eventId", "event_id", "responseId"]
        .iter()
        .find_map(|k| str_at(obj, k));
    Submission {
        platform: Platform::Json,
        fields,
        delivery_id,
    }
}

fn str_at(obj: &Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An answer as text. Arrays (multiple choice) join their text items; objects are not text.
fn text_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(true)) => "true".into(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| text_of(Some(i)))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    }
}

impl Submission {
    /// True when any of the named honeypot fields holds a value.
    pub fn honeypot_filled(&self, honeypots: &[String]) -> bool {
        honeypots.iter().any(|h| {
            self.fields
                .iter()
                .any(|f| f.answers_to(h) && !f.value.trim().is_empty())
        })
    }

    /// Picks the Matrix ID: from the `form_field` when configured; otherwise the one field whose
    /// name mentions "matrix" (or is a generic ID key), or else the one field whose value is an
    /// `@user:server`.
    pub fn matrix_id(&self, form_field: Option<&str>) -> Result<UserId, FormError> {
        let raw = self.matrix_id_text(form_field)?;
        UserId::parse(raw).map_err(FormError::InvalidMxid)
    }

    /// The raw text of the Matrix ID field, before parsing.
    pub fn matrix_id_text(&self, form_field: Option<&str>) -> Result<&str, FormError> {
        if let Some(wanted) = form_field {
            let field = self
                .fields
                .iter()
                .find(|f| f.answers_to(wanted) && !f.value.trim().is_empty())
                .ok_or_else(|| FormError::NamedFieldMissing(wanted.to_owned()))?;
            return Ok(&field.value);
        }
        if self.platform == Platform::Json {
            for key in GENERIC_ID_KEYS {
                if let Some(f) = self.fields.iter().find(|f| f.answers_to(key)) {
                    if !f.value.trim().is_empty() {
                        return Ok(&f.value);
                    }
                }
            }
        }
        let named: Vec<&Field> = self
            .fields
            .iter()
            .filter(|f| f.mentions_matrix() && !f.value.trim().is_empty())
            .collect();
        let candidates = if named.is_empty() {
            self.fields
                .iter()
                .filter(|f| looks_like_mxid(&f.value))
                .collect()
        } else {
            named
        };
        match candidates.as_slice() {
            [] => Err(FormError::NoMatrixId),
            [one] => Ok(&one.value),
            many => Err(FormError::Ambiguous(
                many.iter().map(|f| f.display_name().to_owned()).collect(),
            )),
        }
    }

    /// The idempotency key of this delivery: the platform's delivery id when it sent one, else a
    /// hash of the raw body, so a retried delivery maps to the same key.
    pub fn delivery_key(&self, raw_body: &[u8]) -> String {
        match &self.delivery_id {
            Some(id) if id.len() <= 128 => format!("{}:{id}", self.platform.as_str()),
            _ => format!("sha256:{}", hex_sha256(raw_body)),
        }
    }
}

/// Strict detection for unlabeled fields: only text that starts with `@` (or is a matrix.to
/// link) and parses, so that a time like `12:30` is never taken for an ID.
fn looks_like_mxid(value: &str) -> bool {
    let v = value.trim();
    (v.starts_with('@') || v.contains("matrix.to/#/@")) && UserId::parse(v).is_ok()
}

/// The SHA-256 digest of `bytes`, as lower-case hex.
pub fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TALLY: &str = include_str!("../../tests/fixtures/tally.json");
    const TYPEFORM: &str = include_str!("../../tests/fixtures/typeform.json");
    const GENERIC: &str = include_str!("../../tests/fixtures/generic.json");
    const HTML: &str = include_str!("../../tests/fixtures/html_form.txt");

    fn json(body: &str) -> Submission {
        parse_submission(BodyKind::Json, body.as_bytes()).unwrap()
    }

    #[test]
    fn a_tally_payload_yields_its_matrix_id_and_event_id() {
        let s = json(TALLY);
        assert_eq!(s.platform, Platform::Tally);
        assert_eq!(s.matrix_id(None).unwrap().as_str(), "@alice:localhost");
        assert_eq!(
            s.delivery_id.as_deref(),
            Some("a4cb511e-d513-4fa5-baee-b815d718dfd1")
        );
    }

    #[test]
    fn a_typeform_payload_yields_its_matrix_id_and_event_id() {
        let s = json(TYPEFORM);
        assert_eq!(s.platform, Platform::Typeform);
        assert_eq!(s.matrix_id(None).unwrap().as_str(), "@bob:localhost");
        assert_eq!(s.delivery_id.as_deref(), Some("01HF7ZQ7J4Y3D0Q6J5W9V2Y3XB"));
    }

    #[test]
    fn typeform_fields_answer_to_ref_id_and_title() {
        let s = json(TYPEFORM);
        for name in [
            "matrix_id",
            "SMEUb7VJz92Q",
            "Your Matrix ID (like @you:example.org)",
        ] {
            assert_eq!(s.matrix_id(Some(name)).unwrap().as_str(), "@bob:localhost");
        }
        assert_eq!(s.matrix_id_text(Some("source")).unwrap(), "A friend");
    }

    #[test]
    fn typeform_hidden_fields_are_fields_too() {
        let s = json(TYPEFORM);
        assert_eq!(s.matrix_id_text(Some("utm_source")).unwrap(), "newsletter");
    }

    #[test]
    fn a_generic_json_object_uses_its_known_keys() {
        let s = json(GENERIC);
        assert_eq!(s.platform, Platform::Json);
        assert_eq!(s.matrix_id(None).unwrap().as_str(), "@carol:localhost");
        for key in ["user_id", "mxid"] {
            let body = format!(r#"{{"{key}":"dan:localhost","other":"@eve:localhost"}}"#);
            assert_eq!(
                json(&body).matrix_id(None).unwrap().as_str(),
                "@dan:localhost"
            );
        }
    }

    #[test]
    fn an_html_form_body_is_decoded() {
        let s = parse_submission(BodyKind::UrlEncoded, HTML.as_bytes()).unwrap();
        assert_eq!(s.platform, Platform::HtmlForm);
        assert_eq!(s.matrix_id(None).unwrap().as_str(), "@dave:localhost");
        assert_eq!(s.delivery_id, None);
    }

    #[test]
    fn form_field_picks_by_key_or_label_case_insensitively() {
        let s = json(TALLY);
        for name in ["question_w4Q0vW", "your matrix id", " Your Matrix ID "] {
            assert_eq!(
                s.matrix_id(Some(name)).unwrap().as_str(),
                "@alice:localhost"
            );
        }
        assert_eq!(
            s.matrix_id(Some("nope")),
            Err(FormError::NamedFieldMissing("nope".into()))
        );
    }

    #[test]
    fn an_unlabeled_field_whose_value_is_an_id_is_found() {
        let body = r#"{"data":{"fields":[{"key":"q1","label":"Name","value":"Al"},
            {"key":"q2","label":"Handle","value":" @al:example.org "}]}}"#;
        assert_eq!(
            json(body).matrix_id(None).unwrap().as_str(),
            "@al:example.org"
        );
    }

    #[test]
    fn a_time_of_day_is_not_mistaken_for_an_id() {
        let body = r#"{"data":{"fields":[{"key":"q1","label":"When","value":"12:30"}]}}"#;
        assert_eq!(json(body).matrix_id(None), Err(FormError::NoMatrixId));
    }

    #[test]
    fn two_candidate_fields_are_ambiguous() {
        let body = r#"{"data":{"fields":[
            {"key":"q1","label":"Matrix ID","value":"@a:x.org"},
            {"key":"q2","label":"Backup matrix account","value":"@b:x.org"}]}}"#;
        assert_eq!(
            json(body).matrix_id(None),
            Err(FormError::Ambiguous(vec![
                "Matrix ID".into(),
                "Backup matrix account".into()
            ]))
        );
        let body = r#"{"data":{"fields":[
            {"key":"q1","label":"Me","value":"@a:x.org"},
            {"key":"q2","label":"Friend","value":"@b:x.org"}]}}"#;
        assert!(matches!(
            json(body).matrix_id(None),
            Err(FormError::Ambiguous(_))
        ));
    }

    #[test]
    fn a_labelled_field_wins_over_unlabelled_id_like_values() {
        let body = r#"{"data":{"fields":[
            {"key":"q1","label":"Matrix","value":"@a:x.org"},
            {"key":"q2","label":"Referrer","value":"@b:x.org"}]}}"#;
        assert_eq!(json(body).matrix_id(None).unwrap().as_str(), "@a:x.org");
    }

    #[test]
    fn an_invalid_id_reports_why() {
        let body = r#"{"matrix_id":"not an id"}"#;
        assert_eq!(
            json(body).matrix_id(None),
            Err(FormError::InvalidMxid(MxidError::MissingColon))
        );
    }

    #[test]
    fn missing_id_is_reported() {
        assert_eq!(
            json(r#"{"note":"hi"}"#).matrix_id(None),
            Err(FormError::NoMatrixId)
        );
        assert_eq!(
            json(r#"{"matrix_id":""}"#).matrix_id(None),
            Err(FormError::NoMatrixId)
        );
    }

    #[test]
    fn honeypots_trigger_only_when_filled() {
        let hp = vec!["website".to_owned()];
        assert!(!json(TALLY).honeypot_filled(&hp), "null value");
        assert!(!json(TYPEFORM).honeypot_filled(&hp), "empty hidden field");
        let html = parse_submission(BodyKind::UrlEncoded, HTML.as_bytes()).unwrap();
        assert!(!html.honeypot_filled(&hp));
        let filled = parse_submission(
            BodyKind::UrlEncoded,
            b"matrix_id=%40a%3Ax.org&website=http%3A%2F%2Fspam",
        )
        .unwrap();
        assert!(filled.honeypot_filled(&hp));
        assert!(filled.honeypot_filled(&["WEBSITE".to_owned()]));
        assert!(!filled.honeypot_filled(&[]));
    }

    #[test]
    fn content_types_are_recognised() {
        assert_eq!(body_kind(Some("application/json"), b""), Ok(BodyKind::Json));
        assert_eq!(
            body_kind(Some("Application/JSON; charset=utf-8"), b""),
            Ok(BodyKind::Json)
        );
        assert_eq!(
            body_kind(Some("application/x-www-form-urlencoded"), b""),
            Ok(BodyKind::UrlEncoded)
        );
        for bad in [
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/xml",
        ] {
            assert_eq!(
                body_kind(Some(bad), b"{}"),
                Err(FormError::UnsupportedMediaType)
            );
        }
    }

    #[test]
    fn a_missing_content_type_is_sniffed() {
        assert_eq!(body_kind(None, b"  {\"a\":1}"), Ok(BodyKind::Json));
        assert_eq!(body_kind(None, b"a=b"), Ok(BodyKind::UrlEncoded));
        assert_eq!(
            body_kind(None, b"hello"),
            Err(FormError::UnsupportedMediaType)
        );
        assert_eq!(
            body_kind(Some(""), b""),
            Err(FormError::UnsupportedMediaType)
        );
    }

    #[test]
    fn malformed_bodies_are_refused_clearly() {
        assert_eq!(
            parse_submission(BodyKind::Json, b"{\"a\":"),
            Err(FormError::MalformedJson)
        );
        assert_eq!(
            parse_submission(BodyKind::Json, b"[1,2]"),
            Err(FormError::NotAnObject)
        );
        assert_eq!(
            parse_submission(BodyKind::Json, b"{\"a\":\"\xff\"}"),
            Err(FormError::InvalidUtf8)
        );
        assert_eq!(
            parse_submission(BodyKind::UrlEncoded, b"a=\xff"),
            Err(FormError::InvalidUtf8)
        );
        let bomb = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            parse_submission(BodyKind::Json, format!("{{\"a\":{bomb}}}").as_bytes()),
            Err(FormError::MalformedJson)
        );
    }

    #[test]
    fn duplicate_json_keys_keep_the_last_value() {
        let s = json(r#"{"matrix_id":"@a:x.org","matrix_id":"@b:x.org"}"#);
        assert_eq!(s.matrix_id(None).unwrap().as_str(), "@b:x.org");
    }

    #[test]
    fn delivery_keys_use_the_platform_id_or_the_body_hash() {
        assert_eq!(
            json(TALLY).delivery_key(TALLY.as_bytes()),
            "tally:a4cb511e-d513-4fa5-baee-b815d718dfd1"
        );
        assert_eq!(
            json(TYPEFORM).delivery_key(b"ignored"),
            "typeform:01HF7ZQ7J4Y3D0Q6J5W9V2Y3XB"
        );
        let tally_no_event = r#"{"data":{"responseId":"r9","fields":[]}}"#;
        assert_eq!(json(tally_no_event).delivery_key(b""), "tally:r9");
        let html = parse_submission(BodyKind::UrlEncoded, HTML.as_bytes()).unwrap();
        let key = html.delivery_key(HTML.as_bytes());
        assert_eq!(key, html.delivery_key(HTML.as_bytes()));
        assert!(key.starts_with("sha256:") && key.len() == 7 + 64);
        assert_ne!(key, html.delivery_key(b"other body"));
    }

    #[test]
    fn an_overlong_delivery_id_falls_back_to_the_body_hash() {
        let body = format!(
            r#"{{"eventId":"{}","matrix_id":"@a:x.org"}}"#,
            "e".repeat(500)
        );
        assert!(json(&body)
            .delivery_key(body.as_bytes())
            .starts_with("sha256:"));
    }

    #[test]
    fn the_sha256_helper_matches_a_known_digest() {
        assert_eq!(
            hex_sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
