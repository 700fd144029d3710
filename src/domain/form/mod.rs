//! Form intake: from a platform's raw webhook body to the one Matrix ID it carries.
//!
//! Decides: what platform sent a body, whether it is a submission at all (a Typeform partial
//! response is not), which field holds the Matrix ID, whether a honeypot field was filled, the
//! idempotency key of a delivery, and whether the reply goes to a person or a program
//! ([`audience`]). Never does: signature checks (see [`super::signature`]), any lookup of the
//! ID, or any IO.
//!
//! Accepted shapes (one file each; the fixtures in `tests/fixtures/intake/` follow the
//! platforms' own documentation):
//! - Tally ([`tally`]): `{eventId, data: {responseId, fields: [{key, label, type, value, options}]}}`
//! - Typeform ([`typeform`]): `{event_id, event_type, form_response: {token, answers,
//!   definition: {fields}, hidden, variables}}`
//! - Fillout ([`fillout`]): `{formId, submission: {submissionId, questions, urlParameters}}`
//! - Formspree ([`formspree`]): `{form, keys, submission: {..., _date}}`
//! - Google Forms through Apps Script ([`generic`]): `{namedValues: {question: [answer]}}`, or a
//!   flat object as JSON or urlencoded
//! - Jotform ([`jotform`]): `multipart/form-data` with the answers as JSON in `rawRequest`
//! - any other JSON object ([`generic`]): its top-level values, `matrix_id`, `user_id` or `mxid`
//!   first
//! - `application/x-www-form-urlencoded` or `multipart/form-data` from a plain HTML form
//!
//! Every shape becomes a list of [`Field`]s with a [`FieldKind`], and one set of rules
//! ([`Submission::choose`]) picks the Matrix ID from them, whatever the platform.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::mxid::{is_invisible, MxidError};

mod audience;
mod choose;
mod fillout;
mod formspree;
mod generic;
mod jotform;
mod multipart;
mod tally;
mod typeform;

pub use audience::{audience, Audience};
pub use choose::Choice;

/// Largest body Knock reads. Anything bigger is refused with 413 before it is parsed.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How a body is encoded, from its `Content-Type` (see [`body_kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    UrlEncoded,
    Multipart(Boundary),
}

/// A multipart boundary. RFC 2046 allows 1 to 70 characters, so it fits in place and
/// [`BodyKind`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Boundary {
    bytes: [u8; Boundary::MAX],
    len: u8,
}

impl Boundary {
    const MAX: usize = 70;

    /// A boundary of printable ASCII (spaces inside allowed, as RFC 2046 does), 1 to 70 bytes.
    pub fn new(text: &str) -> Option<Boundary> {
        let b = text.as_bytes();
        let printable = b.iter().all(|c| (b' '..=b'~').contains(c));
        if b.is_empty() || b.len() > Self::MAX || !printable || b.ends_with(b" ") {
            return None;
        }
        let mut bytes = [0; Self::MAX];
        bytes[..b.len()].copy_from_slice(b);
        Some(Boundary {
            bytes,
            len: b.len() as u8,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for Boundary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Boundary({:?})",
            String::from_utf8_lossy(self.as_bytes())
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Tally,
    Typeform,
    Fillout,
    Formspree,
    Jotform,
    GoogleForms,
    Json,
    HtmlForm,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Tally => "tally",
            Platform::Typeform => "typeform",
            Platform::Fillout => "fillout",
            Platform::Formspree => "formspree",
            Platform::Jotform => "jotform",
            Platform::GoogleForms => "google_forms",
            Platform::Json => "json",
            Platform::HtmlForm => "html_form",
        }
    }
}

/// What kind of question a field answers, as far as its platform says. Field choice only looks
/// for a typed Matrix ID in free text ([`FieldKind::is_free_text`]), so a choice, checkbox or
/// yes/no question that merely mentions Matrix ("Are you new to Matrix?") is never a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    ShortText,
    LongText,
    /// Pre-filled from the form link (Tally hidden fields, Typeform `hidden`, Fillout URL
    /// parameters); never shown to the person.
    Hidden,
    Choice,
    Checkbox,
    Boolean,
    Email,
    Number,
    Url,
    Phone,
    Date,
    /// Computed by the form itself (Tally calculated fields, Typeform variables).
    Calculated,
    /// A kind the platform names but Knock has no use for (files, payments, ratings...).
    Other,
    /// The platform says nothing about the field (HTML forms, generic JSON, Jotform, Formspree,
    /// Google Forms).
    Untyped,
}

impl FieldKind {
    /// Short or long text, a hidden field, or a field of unknown kind.
    pub fn is_free_text(self) -> bool {
        matches!(
            self,
            FieldKind::ShortText | FieldKind::LongText | FieldKind::Hidden | FieldKind::Untyped
        )
    }
}

/// One answer of a submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The names a program gave the field: Tally `key`, Typeform `ref` and `id`, Fillout `id`,
    /// Jotform `q3_matrixId` and `matrixId`, an HTML input's `name`. Most specific first.
    pub ids: Vec<String>,
    /// The question as a person reads it: Tally `label`, Typeform `title`, Fillout `name`, a
    /// Google Forms question.
    pub label: Option<String>,
    pub kind: FieldKind,
    /// The answer as text: choices resolved to their text and joined with ", "; empty when the
    /// answer is empty, null, false or not text-like.
    pub value: String,
}

impl Field {
    fn new(ids: Vec<String>, label: Option<String>, kind: FieldKind, value: String) -> Field {
        let label = label.filter(|l| !l.trim().is_empty());
        let ids = ids.into_iter().filter(|i| !i.trim().is_empty()).collect();
        Field {
            ids,
            label,
            kind,
            value,
        }
    }

    /// A field known by one name only, of unknown kind: an HTML input, a JSON key.
    fn untyped(name: &str, value: String) -> Field {
        Field {
            ids: vec![name.to_owned()],
            label: None,
            kind: FieldKind::Untyped,
            value,
        }
    }

    /// Every name the field goes by: its ids, then its label.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.ids.iter().chain(self.label.iter()).map(String::as_str)
    }

    pub fn is_hidden(&self) -> bool {
        self.kind == FieldKind::Hidden
    }

    /// The name shown in messages: the label if there is one, else the first id.
    pub fn display_name(&self) -> &str {
        self.label
            .as_deref()
            .or(self.ids.first().map(String::as_str))
            .unwrap_or("")
    }

    fn is_empty(&self) -> bool {
        self.value.trim().is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub platform: Platform,
    pub fields: Vec<Field>,
    /// The platform's own id for this delivery, stable across its retries.
    pub delivery_id: Option<String>,
}

/// What a delivery is: a submission to act on, or a notice that is not one.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Submission(Submission),
    /// A Typeform `form_response_partial`: someone left the form before submitting it. Answer
    /// 2xx so that it is not retried, and invite nobody.
    Partial(Partial),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Partial {
    pub platform: Platform,
    pub delivery_id: Option<String>,
}

/// Why a payload can't be used. Each maps to one HTTP status and a sentence for the sender.
#[derive(Debug, Clone, PartialEq)]
pub enum FormError {
    UnsupportedMediaType,
    /// `multipart/form-data` without a usable `boundary` parameter.
    MissingBoundary,
    MalformedMultipart,
    InvalidUtf8,
    MalformedJson,
    NotAnObject,
    /// From [`parse_submission`] only: the delivery is a [`Delivery::Partial`].
    NotASubmission,
    NoMatrixId,
    NamedFieldMissing(String),
    /// More than one field holds a valid Matrix ID (their names).
    Ambiguous(Vec<String>),
    /// Several fields are named for the Matrix ID and none holds a valid one (their names).
    NoValidMatrixId(Vec<String>),
    /// The field the Matrix ID was taken from does not hold a valid one.
    InvalidMxid {
        field: String,
        error: MxidError,
    },
}

/// Longest excerpt of a field name that a message repeats.
const NAME_EXCERPT_CHARS: usize = 40;
/// Most field names a message lists.
const NAMES_LISTED: usize = 5;

/// A short, printable excerpt of text that came from outside (a field's name or label).
fn excerpt(text: &str) -> String {
    let mut out = String::new();
    let words = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty());
    for word in words {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(
            word.chars()
                .filter(|c| !c.is_control() && !is_invisible(*c) && *c != '"'),
        );
    }
    if out.chars().count() > NAME_EXCERPT_CHARS {
        out = out.chars().take(NAME_EXCERPT_CHARS - 1).collect();
        out.push('…');
    }
    out
}

fn name_list(names: &[String]) -> String {
    let mut listed: Vec<String> = names
        .iter()
        .take(NAMES_LISTED)
        .map(|n| format!("\"{}\"", excerpt(n)))
        .collect();
    if names.len() > NAMES_LISTED {
        listed.push(format!("and {} more", names.len() - NAMES_LISTED));
    }
    listed.join(", ")
}

impl FormError {
    pub fn status(&self) -> u16 {
        match self {
            FormError::UnsupportedMediaType => 415,
            // Not the sender's fault and nothing to retry: a 2xx, with nobody invited.
            FormError::NotASubmission => 200,
            _ => 400,
        }
    }

    pub fn message(&self) -> String {
        match self {
            FormError::UnsupportedMediaType => "Unsupported content type: send application/json, \
                application/x-www-form-urlencoded or multipart/form-data."
                .into(),
            FormError::MissingBoundary => {
                "The multipart/form-data body has no boundary in its Content-Type.".into()
            }
            FormError::MalformedMultipart => {
                "The multipart/form-data body is not well formed.".into()
            }
            FormError::InvalidUtf8 => "The request body is not valid UTF-8 text.".into(),
            FormError::MalformedJson => "The request body is not valid JSON.".into(),
            FormError::NotAnObject => "The JSON body must be an object.".into(),
            FormError::NotASubmission => {
                "This is a partial response, not a submission: nobody is invited.".into()
            }
            FormError::NoMatrixId => {
                "No Matrix ID was found in the form. Add a field for it, like @name:example.org."
                    .into()
            }
            FormError::NamedFieldMissing(name) => format!(
                "The form has no answer in the field \"{}\" that holds the Matrix ID.",
                excerpt(name)
            ),
            FormError::Ambiguous(names) => format!(
                "More than one form field holds a Matrix ID ({}); set FORM_FIELD to the one to \
                 use.",
                name_list(names)
            ),
            FormError::NoValidMatrixId(names) => format!(
                "None of the Matrix ID fields ({}) holds a valid Matrix ID, like \
                 @name:example.org.",
                name_list(names)
            ),
            FormError::InvalidMxid { field, error } => {
                format!("The field \"{}\": {}", excerpt(field), error.message())
            }
        }
    }
}

/// Reads the media type of a `Content-Type` header. A missing header is sniffed from the body.
pub fn body_kind(content_type: Option<&str>, body: &[u8]) -> Result<BodyKind, FormError> {
    let Some(ct) = content_type.map(str::trim).filter(|c| !c.is_empty()) else {
        return sniff(body);
    };
    let mut parts = ct.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(BodyKind::Json),
        e if e.starts_with("application/") && e.ends_with("+json") => Ok(BodyKind::Json),
        "application/x-www-form-urlencoded" => Ok(BodyKind::UrlEncoded),
        "multipart/form-data" => parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
            .and_then(|(_, v)| Boundary::new(v.trim().trim_matches('"')))
            .map(BodyKind::Multipart)
            .ok_or(FormError::MissingBoundary),
        _ => Err(FormError::UnsupportedMediaType),
    }
}

fn sniff(body: &[u8]) -> Result<BodyKind, FormError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if let Some(rest) = body.strip_prefix(b"--") {
        let line = rest.split(|b| *b == b'\r').next().unwrap_or(b"");
        if let Some(b) = std::str::from_utf8(line).ok().and_then(Boundary::new) {
            return Ok(BodyKind::Multipart(b));
        }
    }
    match first {
        Some(b'{') => Ok(BodyKind::Json),
        Some(_) if body.contains(&b'=') => Ok(BodyKind::UrlEncoded),
        _ => Err(FormError::UnsupportedMediaType),
    }
}

/// Parses a body of a known kind into what it delivers.
pub fn parse_delivery(kind: BodyKind, body: &[u8]) -> Result<Delivery, FormError> {
    match kind {
        BodyKind::UrlEncoded => generic::parse_urlencoded(body).map(Delivery::Submission),
        BodyKind::Multipart(boundary) => {
            let parts = multipart::parse(boundary.as_bytes(), body)?;
            jotform::parse(&parts).map(Delivery::Submission)
        }
        BodyKind::Json => {
            let text = std::str::from_utf8(body).map_err(|_| FormError::InvalidUtf8)?;
            let value: Value = serde_json::from_str(text).map_err(|_| FormError::MalformedJson)?;
            let Value::Object(obj) = value else {
                return Err(FormError::NotAnObject);
            };
            if let Some(s) = tally::parse(&obj) {
                Ok(Delivery::Submission(s))
            } else if let Some(d) = typeform::parse(&obj) {
                Ok(d)
            } else if let Some(s) = fillout::parse(&obj).or_else(|| formspree::parse(&obj)) {
                Ok(Delivery::Submission(s))
            } else {
                Ok(Delivery::Submission(generic::parse_json(&obj)))
            }
        }
    }
}

/// Parses a body into a [`Submission`]; a delivery that is not one (a partial response) is
/// [`FormError::NotASubmission`], whose status is 200. Prefer [`parse_delivery`].
pub fn parse_submission(kind: BodyKind, body: &[u8]) -> Result<Submission, FormError> {
    match parse_delivery(kind, body)? {
        Delivery::Submission(s) => Ok(s),
        Delivery::Partial(_) => Err(FormError::NotASubmission),
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
        Some(Value::Array(items)) => join_texts(items.iter().map(|i| text_of(Some(i)))),
        _ => String::new(),
    }
}

fn join_texts(items: impl Iterator<Item = String>) -> String {
    items
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Submission {
    /// The idempotency key of this delivery: the platform's delivery id when it sent one, else a
    /// hash of the raw body, so a retried delivery maps to the same key.
    pub fn delivery_key(&self, raw_body: &[u8]) -> String {
        match &self.delivery_id {
            Some(id) if id.len() <= 128 => format!("{}:{id}", self.platform.as_str()),
            _ => format!("sha256:{}", hex_sha256(raw_body)),
        }
    }
}

/// The SHA-256 digest of `bytes`, as lower-case hex.
pub fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests;
