//! The block list: who may not be invited, including people trying to dodge an earlier ban.
//!
//! Decides: whether a user ID or a display name matches a blocked entry, by which rule, how strong
//! that evidence is, what follows from it (block, hold for a moderator, or nothing), and says so in
//! a sentence. Entries are exact Matrix IDs, globs over full IDs (`@spam*:*`, `*:evil.example`),
//! or display names (against impersonation).
//!
//! Rules:
//! 1. **exact**: the same user ID;
//! 2. **glob**: a glob entry matches the full ID;
//! 3. **family**: the localpart reads like a blocked ID's localpart once case, leet, separators,
//!    repeated letters and counters at either end are folded away (see [`normalize`]); the server
//!    is ignored, so a variant on another homeserver is caught;
//! 4. **distance**: the family keys are a few edits apart (optimal string alignment): 1 for keys
//!    of 3 to 9 characters, 2 for 10 to 32 (see [`near_allowance`]).
//!
//! A match is **evidence**, not a verdict: [`policy`] grades it. The same ID or a glob blocks. A
//! family match or near miss blocks when no honest namesake would leave it (the same counter,
//! digits written for letters, a distinctive name spelled otherwise); it is held for a moderator
//! when only the counter differs (on any name: the name table does not know every rare one),
//! when the name is short or common (see [`commonness`]) and only the spelling differs, when only
//! the first letter differs (or the last, after a given name: another initial), or when it is two
//! edits away; and it is no match at all when the near miss is itself a common name, a short
//! name's near miss without the same counter, or differs in a letter and in a counter of its own
//! where those read as another person's (another initial, two edits). So blocking
//! `@trollking` blocks `@tr0llk1ng` and `@trollkin` and holds `@trollking99`, blocking
//! `@matthew41` holds `@matthew70`, and blocking `@anna83` holds `@anja83` but lets `@anja17` in. Each entry's **reach** (exact, family
//! or fuzzy; by default from how distinctive its name is) bounds which rules apply to it. When
//! several entries match, the strongest outcome wins, then the stronger rule, then the earliest.
//!
//! Display names are folded with the Unicode TS #39 confusables skeleton (Cyrillic `а`, fullwidth
//! letters, `1` for `l`, ...) and then matched by family and near misses in the same way.
//!
//! Never does: IO, clock reads (`added_at` is passed in), or a linear scan per lookup:
//! [`BlockIndex`] answers from hash tables and a deletion neighbourhood; [`LinearScan`] is the
//! slow, obviously correct reference used by tests and benchmarks.

pub mod commonness;
mod evidence;
mod fuzzy;
mod glob;
mod index;
pub mod layers;
mod list;
pub mod normalize;
pub mod policy;
mod postings;
mod preview;
mod reference;
mod settings;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::mxid::{MxidError, UserId};

pub use glob::{glob_match, MAX_GLOB_BYTES};
pub use index::{Allow, BlockIndex, IndexStats, FORMAT_VERSION as INDEX_FORMAT};
pub use list::{AddOutcome, BlockList, ImportReport, LineError, MAX_DOCUMENT_BYTES, MAX_ENTRIES};
pub use normalize::{
    allowed_distance, display_name_readings, display_readings, family_key, family_readings,
    fold_free_text, near_allowance, osa_distance, readings, Counter, Reading, MAX_FUZZY_KEY_CHARS,
};
pub use policy::{
    CounterMatch, Evidence, Grade, MemberAction, Namesakes, Outcome, Policy, Reach, SettingError,
    Why, SETTINGS,
};
pub use preview::{preview, Caught, EntryRequest, Preview, Seen};
pub use reference::LinearScan;

/// Longest display-name pattern, in bytes.
pub const MAX_DISPLAY_NAME_BYTES: usize = 255;
/// Longest reason, in bytes.
pub const MAX_REASON_BYTES: usize = 500;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    UserId,
    Glob,
    DisplayName,
}

/// One blocked pattern. Built through [`Entry::parse`], [`Entry::display_name`] or [`Entry::new`],
/// the pattern is normalised: a user ID in canonical lower case, a glob lower-cased with its `@`,
/// a display name trimmed (it is folded only when matched, so it reads as typed).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub pattern: String,
    pub kind: EntryKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix milliseconds.
    #[serde(default)]
    pub added_at: u64,
    /// How far the entry reaches; `None` (and a stored entry without one) takes the policy's
    /// default for its name ([`Policy::default_reach`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<Reach>,
}

/// Why a pattern (or a line of an import) cannot be an entry. Each has a sentence fit to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryError {
    Empty,
    TooLong,
    NotAUserId(MxidError),
    GlobInvalid,
    GlobTooBroad,
    DisplayNameUnmatchable,
    ReasonTooLong,
    ReasonInvalid,
    Malformed,
    ListFull,
}

impl EntryError {
    pub fn message(self) -> &'static str {
        match self {
            EntryError::Empty => "The pattern is empty.",
            EntryError::TooLong => "The pattern is longer than 255 bytes.",
            EntryError::NotAUserId(e) => e.message(),
            EntryError::GlobInvalid => {
                "A glob may only use printable ASCII without spaces or '#', with * and ? as wildcards."
            }
            EntryError::GlobTooBroad => {
                "That glob would block nearly everyone: it needs some literal text besides @ : and ."
            }
            EntryError::DisplayNameUnmatchable => {
                "That display name has no letters or digits to match on."
            }
            EntryError::ReasonTooLong => "The reason is longer than 500 bytes.",
            EntryError::ReasonInvalid => "The reason may not contain line breaks or control characters.",
            EntryError::Malformed => "This is not a block-list entry.",
            EntryError::ListFull => "The block list is full.",
        }
    }
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for EntryError {}

impl Entry {
    /// An entry from text a person typed: a glob if it has `*` (or has `?` and is no user ID),
    /// otherwise a user ID. Display names need [`Entry::display_name`].
    pub fn parse(text: &str, reason: Option<String>, added_at: u64) -> Result<Entry, EntryError> {
        let kind = if text.contains('*') {
            EntryKind::Glob
        } else {
            match UserId::parse(text) {
                Ok(_) => EntryKind::UserId,
                Err(_) if text.contains('?') => EntryKind::Glob,
                Err(e) => return Err(EntryError::NotAUserId(e)),
            }
        };
        Entry::new(text, kind, reason, added_at)
    }

    pub fn display_name(
        text: &str,
        reason: Option<String>,
        added_at: u64,
    ) -> Result<Entry, EntryError> {
        Entry::new(text, EntryKind::DisplayName, reason, added_at)
    }

    /// An entry of a given kind, validated and normalised for that kind.
    pub fn new(
        text: &str,
        kind: EntryKind,
        reason: Option<String>,
        added_at: u64,
    ) -> Result<Entry, EntryError> {
        let pattern = normalize_pattern(text, kind)?;
        let reason = match reason.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(r) if r.len() > MAX_REASON_BYTES => return Err(EntryError::ReasonTooLong),
            Some(r) if r.chars().any(char::is_control) => return Err(EntryError::ReasonInvalid),
            Some(r) => Some(r.to_owned()),
        };
        Ok(Entry {
            pattern,
            kind,
            reason,
            added_at,
            reach: None,
        })
    }

    /// The same entry with a reach of its own.
    pub fn with_reach(mut self, reach: Option<Reach>) -> Entry {
        self.reach = reach;
        self
    }

    /// What makes two entries the same: their kind and normalised pattern (a display name folded).
    pub fn identity(&self) -> (EntryKind, String) {
        let key = match self.kind {
            EntryKind::UserId | EntryKind::Glob => self.pattern.to_ascii_lowercase(),
            EntryKind::DisplayName => fold_free_text(&self.pattern),
        };
        (self.kind, key)
    }
}

fn normalize_pattern(text: &str, kind: EntryKind) -> Result<String, EntryError> {
    match kind {
        EntryKind::UserId => UserId::parse(text)
            .map(|id| id.as_str().to_ascii_lowercase())
            .map_err(EntryError::NotAUserId),
        EntryKind::Glob => glob::normalize_glob(text),
        EntryKind::DisplayName => {
            let text = text.trim();
            if text.is_empty() {
                Err(EntryError::Empty)
            } else if text.len() > MAX_DISPLAY_NAME_BYTES {
                Err(EntryError::TooLong)
            } else if text.chars().any(char::is_control)
                || family_key(&fold_free_text(text)).is_empty()
            {
                Err(EntryError::DisplayNameUnmatchable)
            } else {
                Ok(text.to_owned())
            }
        }
    }
}

/// The rule by which a verdict fired.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum MatchRule {
    Exact,
    Glob,
    Family,
    /// A near miss, this many edits away.
    Distance(u8),
    /// Same folded display name (distance 0); near misses of display names are `Distance`.
    DisplayName,
}

/// A match, with what is needed to explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict<'a> {
    /// The entry that matched (read from the index's blob, or borrowed from a list).
    pub entry: Cow<'a, Entry>,
    /// The entry's position in the list.
    pub index: usize,
    pub rule: MatchRule,
    /// What was checked: the user ID or display name, as given.
    pub candidate: String,
    /// The normalised form of the candidate that matched (lower-cased ID, family key or reading).
    pub candidate_key: String,
    /// The normalised form of the entry it matched.
    pub entry_key: String,
    /// The facts the policy weighed.
    pub evidence: Evidence,
    /// What follows, and why.
    pub grade: Grade,
}

impl<'a> Verdict<'a> {
    /// The verdict for `entries[index]`, or `None` if there is no such entry. Both matchers
    /// (the index and the linear reference) build their verdicts here.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn at(
        entry: Option<Cow<'a, Entry>>,
        index: usize,
        rule: MatchRule,
        candidate: &str,
        candidate_key: &str,
        entry_key: &str,
        evidence: Evidence,
        grade: Grade,
    ) -> Option<Verdict<'a>> {
        Some(Verdict {
            entry: entry?,
            index,
            rule,
            candidate: candidate.to_owned(),
            candidate_key: candidate_key.to_owned(),
            entry_key: entry_key.to_owned(),
            evidence,
            grade,
        })
    }

    /// A graded match, as the matchers found it.
    pub(crate) fn found(
        entry: Option<Cow<'a, Entry>>,
        index: usize,
        candidate: &str,
        found: evidence::Found<'_>,
    ) -> Option<Verdict<'a>> {
        Verdict::at(
            entry,
            index,
            found.rule,
            candidate,
            found.candidate_key,
            found.entry_key,
            found.evidence,
            found.grade,
        )
    }

    /// An exact or glob match: always a block, with no fuzzy evidence to weigh.
    pub(crate) fn plain(
        entry: Option<Cow<'a, Entry>>,
        index: usize,
        rule: MatchRule,
        candidate: &str,
        candidate_key: &str,
        entry_key: &str,
    ) -> Option<Verdict<'a>> {
        let why = if rule == MatchRule::Exact {
            Why::ExactId
        } else {
            Why::Glob
        };
        Verdict::at(
            entry,
            index,
            rule,
            candidate,
            candidate_key,
            entry_key,
            Evidence::plain(),
            Grade::blocking(why),
        )
    }

    /// The hold a lookup answers when it read a damaged page of its index: the candidate is
    /// neither let in nor removed on a copy that cannot be read.
    pub(crate) fn damaged(candidate: &str, why: &str) -> Verdict<'static> {
        Verdict {
            entry: Cow::Owned(Entry {
                pattern: "(the block-list index)".to_owned(),
                kind: EntryKind::Glob,
                reason: Some(format!(
                    "this copy of the index is damaged ({why}); it is being replaced"
                )),
                added_at: 0,
                reach: None,
            }),
            index: 0,
            rule: MatchRule::Glob,
            candidate: candidate.to_owned(),
            candidate_key: candidate.to_owned(),
            entry_key: String::new(),
            evidence: Evidence::plain(),
            grade: Grade {
                outcome: Outcome::Hold,
                why: Why::IndexDamaged,
            },
        }
    }

    /// Block or hold.
    pub fn outcome(&self) -> Outcome {
        self.grade.outcome
    }

    /// One sentence for moderators, e.g.
    /// `@tr0llk1ng:localhost matches blocked @trollking:localhost (family: both read as troiking)`;
    /// a hold also says why it is no block:
    /// `...; held for a moderator, not blocked: only the counter or spelling differs, and mathew is
    /// a common name (about 4 in a thousand)`.
    pub fn explain(&self) -> String {
        let what = match self.entry.kind {
            EntryKind::DisplayName => format!("display name \"{}\"", self.candidate),
            _ => self.candidate.clone(),
        };
        let blocked = match self.entry.kind {
            EntryKind::DisplayName => format!("blocked display name \"{}\"", self.entry.pattern),
            EntryKind::Glob => format!("blocked pattern {}", self.entry.pattern),
            EntryKind::UserId => format!("blocked {}", self.entry.pattern),
        };
        let how = match self.rule {
            MatchRule::Exact => "exact ID".to_owned(),
            MatchRule::Glob => "glob".to_owned(),
            MatchRule::Family => format!("family: both read as {}", self.entry_key),
            MatchRule::DisplayName => format!("look-alike: both fold to {}", self.entry_key),
            MatchRule::Distance(d) => format!(
                "near miss: {} is {d} edit{} from {}",
                self.candidate_key,
                if d == 1 { "" } else { "s" },
                self.entry_key
            ),
        };
        let mut out = format!("{what} matches {blocked} ({how})");
        if let Some(held) = self.grade.hold_clause(&self.entry_key, &self.candidate_key) {
            out.push_str("; ");
            out.push_str(&held);
        }
        if let Some(reason) = &self.entry.reason {
            out.push_str("; reason: ");
            out.push_str(reason);
        }
        out
    }
}
