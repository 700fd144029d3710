//! Which field holds the Matrix ID, and whether a honeypot was filled.
//!
//! Decides, the same way for every platform:
//! - with `FORM_FIELD`, the field whose key, ref, id, label, title or name it is;
//! - otherwise the free-text fields (short or long text, hidden, or of unknown kind; never a
//!   choice, checkbox, yes/no, email or number question) whose name mentions "matrix" (or
//!   "mxid"). If there is one, it must hold a valid ID, or the answer is an error naming it: a
//!   mistyped ID is never silently replaced by another field's ("Referred by"). If there are
//!   several, the one valid ID wins, and more than one is an error naming them;
//! - otherwise the fields whose value is explicitly a Matrix ID (`@name:server`, a matrix.to
//!   link or a `matrix:` URI): one is used, several are an error naming them, none is an error.
//!
//! A field of unknown kind answered yes/no/true/false/on/off is read as a yes/no question. A
//! hidden field left empty (the form link had no such parameter) was never the person's to fill,
//! so it is no candidate; an empty visible one is a missing answer. Fields that agree on the same
//! ID are one candidate, not an ambiguity.
//!
//! Honeypots match field ids (keys, refs, HTML names), and labels only of hidden fields, so that
//! a visible "Website" question never marks honest people as spam.
//!
//! Never does: any lookup of the ID.

use super::{Field, FieldKind, FormError, Platform, Submission};
use crate::domain::mxid::{TypedId, UserId};

/// Most form answers kept with a knock for its moderators.
pub const MAX_ANSWERS: usize = 10;
/// Longest label or answer kept (characters).
pub const MAX_ANSWER_CHARS: usize = 200;

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut c: String = s.chars().take(max - 1).collect();
        c.push('…');
        c
    }
}

/// Field names that mark a generic JSON object's Matrix ID, in order of preference.
const GENERIC_ID_KEYS: [&str; 3] = ["matrix_id", "user_id", "mxid"];

/// The Matrix ID a submission carries, and where it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice<'a> {
    pub id: UserId,
    pub field: &'a Field,
    /// The localpart was typed with capitals and was read in lower case.
    pub case_folded: bool,
}

impl Choice<'_> {
    /// A sentence for the verdict when the ID was read differently from how it was typed.
    pub fn note(&self) -> Option<&'static str> {
        self.case_folded.then_some(
            "The Matrix ID was typed with capital letters; Matrix IDs are lower case, so it \
             was read in lower case.",
        )
    }
}

/// Why no ID was chosen, and the field the choice settled on when there was one.
struct Refusal<'a> {
    field: Option<&'a Field>,
    error: FormError,
}

impl<'a> Refusal<'a> {
    fn new(error: FormError) -> Refusal<'a> {
        Refusal { field: None, error }
    }
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

impl Field {
    /// True when `wanted` is one of the field's names (key, ref, id, label, title or name).
    pub fn answers_to(&self, wanted: &str) -> bool {
        self.names().any(|n| same_name(n, wanted))
    }

    fn mentions_matrix(&self) -> bool {
        self.names().any(|n| {
            let n = n.to_ascii_lowercase();
            n.contains("matrix") || n.contains("mxid")
        })
    }

    /// Free text in which a person may have typed their ID, or a hidden field that was filled
    /// in (see the module doc).
    fn may_hold_typed_id(&self) -> bool {
        let unfilled_hidden = self.is_hidden() && self.is_empty();
        self.kind.is_free_text()
            && !unfilled_hidden
            && !(self.kind == FieldKind::Untyped && is_yes_no(&self.value))
    }

    /// A field whose answer a person typed, or one pre-filled from the form link.
    fn may_hold_explicit_id(&self) -> bool {
        !matches!(
            self.kind,
            FieldKind::Choice
                | FieldKind::Checkbox
                | FieldKind::Boolean
                | FieldKind::Number
                | FieldKind::Calculated
        )
    }

    fn is_honeypot(&self, name: &str) -> bool {
        self.ids.iter().any(|i| same_name(i, name))
            || (self.is_hidden() && self.label.as_deref().is_some_and(|l| same_name(l, name)))
    }
}

fn is_yes_no(value: &str) -> bool {
    ["yes", "no", "true", "false", "on", "off"]
        .iter()
        .any(|w| value.trim().eq_ignore_ascii_case(w))
}

fn typed(field: &Field) -> Result<TypedId, FormError> {
    UserId::parse_typed(&field.value).map_err(|error| FormError::InvalidMxid {
        field: field.display_name().to_owned(),
        error,
    })
}

fn names_of(fields: &[&Field]) -> Vec<String> {
    fields.iter().map(|f| f.display_name().to_owned()).collect()
}

/// The one ID among `candidates` (fields that agree count once), or `None` if there is none.
fn single(candidates: Vec<(&Field, TypedId)>) -> Result<Option<(&Field, TypedId)>, FormError> {
    let mut candidates = candidates.into_iter();
    let Some(first) = candidates.next() else {
        return Ok(None);
    };
    let others: Vec<&Field> = candidates
        .filter(|(_, t)| t.id != first.1.id)
        .map(|(f, _)| f)
        .collect();
    if others.is_empty() {
        return Ok(Some(first));
    }
    let mut all = vec![first.0];
    all.extend(others);
    Err(FormError::Ambiguous(names_of(&all)))
}

impl Submission {
    /// Picks the Matrix ID by the rules in this module's doc.
    pub fn choose(&self, form_field: Option<&str>) -> Result<Choice<'_>, FormError> {
        self.select(form_field)
            .map(|(field, t)| Choice {
                id: t.id,
                field,
                case_folded: t.case_folded,
            })
            .map_err(|r| r.error)
    }

    /// The Matrix ID, as [`Submission::choose`] picks it.
    pub fn matrix_id(&self, form_field: Option<&str>) -> Result<UserId, FormError> {
        self.choose(form_field).map(|c| c.id)
    }

    /// The raw text of the field the choice settled on, even when it is not a valid ID (to
    /// record what was typed).
    pub fn matrix_id_text(&self, form_field: Option<&str>) -> Result<&str, FormError> {
        match self.select(form_field) {
            Ok((field, _)) => Ok(&field.value),
            Err(Refusal {
                field: Some(field), ..
            }) => Ok(&field.value),
            Err(r) => Err(r.error),
        }
    }

    fn select(&self, form_field: Option<&str>) -> Result<(&Field, TypedId), Refusal<'_>> {
        let settle = |f| match typed(f) {
            Ok(t) => Ok((f, t)),
            Err(error) => Err(Refusal {
                field: Some(f),
                error,
            }),
        };
        if let Some(wanted) = form_field {
            let field = self
                .fields
                .iter()
                .find(|f| f.answers_to(wanted) && !f.is_empty())
                .ok_or_else(|| Refusal::new(FormError::NamedFieldMissing(wanted.to_owned())))?;
            return settle(field);
        }
        if self.platform == Platform::Json {
            for key in GENERIC_ID_KEYS {
                if let Some(f) = self
                    .fields
                    .iter()
                    .find(|f| f.answers_to(key) && !f.is_empty())
                {
                    return settle(f);
                }
            }
        }
        let named: Vec<&Field> = self
            .fields
            .iter()
            .filter(|f| f.may_hold_typed_id() && f.mentions_matrix())
            .collect();
        match named.as_slice() {
            [] => {}
            [one] => return settle(one),
            many => {
                let valid = many
                    .iter()
                    .filter_map(|f| typed(f).ok().map(|t| (*f, t)))
                    .collect();
                return match single(valid) {
                    Ok(Some(found)) => Ok(found),
                    Ok(None) => {
                        let filled: Vec<&Field> =
                            many.iter().copied().filter(|f| !f.is_empty()).collect();
                        match filled.as_slice() {
                            // Only one was answered: its own error says what is wrong with it.
                            [one] => settle(one),
                            _ => Err(Refusal::new(FormError::NoValidMatrixId(names_of(many)))),
                        }
                    }
                    Err(e) => Err(Refusal::new(e)),
                };
            }
        }
        let explicit = self
            .fields
            .iter()
            .filter(|f| f.may_hold_explicit_id())
            .filter_map(|f| typed(f).ok().filter(|t| t.explicit).map(|t| (f, t)))
            .collect();
        match single(explicit) {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Err(Refusal::new(FormError::NoMatrixId)),
            Err(e) => Err(Refusal::new(e)),
        }
    }

    /// The form's answers to show a moderator: every filled field but the one the ID came
    /// from and the honeypots, as (label, value), at most [`MAX_ANSWERS`] of them, each value
    /// cut to [`MAX_ANSWER_CHARS`]. Fields that repeat another's answer (Tally's per-option
    /// checkbox booleans beside their aggregate) are shown once.
    pub fn answers(&self, chosen: &Field, honeypots: &[String]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for f in &self.fields {
            if std::ptr::eq(f, chosen) || f.is_empty() || honeypots.iter().any(|h| f.is_honeypot(h))
            {
                continue;
            }
            if self.is_option_of_another(f) {
                // Tally's "Question (Option)": the aggregate field lists the options chosen.
                continue;
            }
            let label = cut(f.display_name(), MAX_ANSWER_CHARS);
            let value = cut(f.value.trim(), MAX_ANSWER_CHARS);
            if out.iter().any(|(l, v)| *l == label && *v == value) {
                continue;
            }
            out.push((label, value));
            if out.len() == MAX_ANSWERS {
                break;
            }
        }
        out
    }

    /// True when `f` is labelled "Question (Option)" and another field is labelled "Question".
    fn is_option_of_another(&self, f: &Field) -> bool {
        let Some(label) = f.label.as_deref() else {
            return false;
        };
        let Some(question) = label.strip_suffix(')').and_then(|l| l.rsplit_once(" (")) else {
            return false;
        };
        self.fields
            .iter()
            .any(|o| !std::ptr::eq(o, f) && o.label.as_deref() == Some(question.0))
    }

    /// True when any of the named honeypot fields holds a value (see the module doc).
    pub fn honeypot_filled(&self, honeypots: &[String]) -> bool {
        honeypots.iter().any(|h| {
            self.fields
                .iter()
                .any(|f| f.is_honeypot(h) && !f.value.trim().is_empty())
        })
    }
}
