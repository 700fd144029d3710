//! The stored block list: one JSON document (the worker keeps it in a single KV value) and its pure
//! edits: add, remove, import and export.
//!
//! JSON keeps readable field names (`pattern`, `kind`, `reason`, `added_at`, `reach`) and leaves
//! out an absent reason or reach (an entry stored before reach existed reads as one without): a typical entry is 60 to 90 bytes, so 100,000 entries stay well inside KV's
//! 25 MiB. A list refuses entries past [`MAX_ENTRIES`] or past an upper bound of
//! [`MAX_DOCUMENT_BYTES`] of JSON, so it always fits.
//!
//! The text format is the original service's `blocked_users.txt`, one entry per line:
//! ```text
//! # blank lines and lines starting with '#' are ignored
//! @troll:example.org
//! @spam*:*            # text after whitespace and '#' is the reason
//! display: Alice Admin  # impersonation
//! ```
//! `display:` marks a display name, which in this format cannot contain a `#` after a space;
//! `allow: @someone:example.org` is a local exception to the subscribed policy lists. The
//! text format has no reach: entries read from it take the default.
//! Imports add what they can and report every other line with its number and why.

use std::collections::HashMap;

use serde::{Deserialize, Serialize, Serializer};

use super::{Allow, BlockIndex, Entry, EntryError, EntryKind};
use crate::domain::mxid::UserId;

/// Most entries a list holds.
pub const MAX_ENTRIES: usize = 100_000;
/// Upper bound on the list's JSON size, under KV's 25 MiB per value.
pub const MAX_DOCUMENT_BYTES: usize = 24 * 1024 * 1024;

const DISPLAY_PREFIX: &str = "display:";
/// Marks a local exception to the subscribed policy lists in the text format.
const ALLOW_PREFIX: &str = "allow:";

/// The stored document. `version` goes up by one with every change, so a writer can tell whether
/// the list moved under it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockList {
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub entries: Vec<Entry>,
    /// Local exceptions to the subscribed policy lists (a moderator's unblock of someone a
    /// subscribed rule names), by exact user ID.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<Allow>,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AddOutcome {
    Added,
    /// The same kind and normalised pattern is already at `index`.
    Duplicate {
        index: usize,
    },
    Full,
}

#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub added: usize,
    pub duplicates: usize,
    pub errors: Vec<LineError>,
}

/// A line (text import) or an entry (JSON import, counted from 1) that was not added.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub text: String,
    #[serde(serialize_with = "as_message")]
    pub error: EntryError,
}

fn as_message<S: Serializer>(e: &EntryError, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(e.message())
}

/// An upper bound of the entry's size in the JSON document (escaping at most doubles text).
fn json_bound(e: &Entry) -> usize {
    96 + 2 * e.pattern.len() + 2 * e.reason.as_ref().map_or(0, String::len)
}

/// Splits `pattern  # reason`; a line that starts with `#` is all comment.
fn split_comment(line: &str) -> (&str, Option<&str>) {
    let line = line.trim();
    if line.starts_with('#') {
        return ("", None);
    }
    let mut prev_space = false;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_space {
            let reason = line[i + 1..].trim();
            return (line[..i].trim(), (!reason.is_empty()).then_some(reason));
        }
        prev_space = c.is_whitespace();
    }
    (line, None)
}

/// A pattern in the text format: `display:` and a display name, a glob, or a user ID.
fn parse_pattern(text: &str, reason: Option<String>, now: u64) -> Result<Entry, EntryError> {
    let text = text.trim();
    match text.get(..DISPLAY_PREFIX.len()) {
        Some(p) if p.eq_ignore_ascii_case(DISPLAY_PREFIX) => {
            Entry::display_name(&text[DISPLAY_PREFIX.len()..], reason, now)
        }
        _ => Entry::parse(text, reason, now),
    }
}

/// Adds entries while keeping track of duplicates and the size bound, for the bulk imports.
struct Adder<'a> {
    list: &'a mut BlockList,
    seen: HashMap<(EntryKind, String), usize>,
    bytes: usize,
    report: ImportReport,
}

impl<'a> Adder<'a> {
    fn new(list: &'a mut BlockList) -> Adder<'a> {
        let mut seen = HashMap::with_capacity(list.entries.len());
        for (i, e) in list.entries.iter().enumerate() {
            seen.entry(e.identity()).or_insert(i);
        }
        let bytes = list.entries.iter().map(json_bound).sum();
        Adder {
            list,
            seen,
            bytes,
            report: ImportReport::default(),
        }
    }

    fn offer(&mut self, line: usize, text: &str, entry: Result<Entry, EntryError>) {
        let error = match entry {
            Err(e) => e,
            Ok(entry) => {
                let identity = entry.identity();
                if self.seen.contains_key(&identity) {
                    self.report.duplicates += 1;
                    return;
                }
                let bytes = json_bound(&entry);
                if self.list.entries.len() >= MAX_ENTRIES || self.bytes + bytes > MAX_DOCUMENT_BYTES
                {
                    EntryError::ListFull
                } else {
                    self.seen.insert(identity, self.list.entries.len());
                    self.bytes += bytes;
                    if entry.kind == EntryKind::UserId {
                        self.list
                            .allowed
                            .retain(|a| !a.user_id.eq_ignore_ascii_case(&entry.pattern));
                    }
                    self.list.entries.push(entry);
                    self.report.added += 1;
                    return;
                }
            }
        };
        self.report.errors.push(LineError {
            line,
            text: text.to_owned(),
            error,
        });
    }

    fn finish(self) -> ImportReport {
        if self.report.added > 0 {
            self.list.version += 1;
        }
        self.report
    }
}

/// A JSON import: the document itself, or a bare array of entries or of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Incoming {
    Document { entries: Vec<serde_json::Value> },
    Bare(Vec<serde_json::Value>),
}

impl BlockList {
    pub fn new() -> BlockList {
        BlockList::default()
    }

    /// Adds an entry unless one of the same kind and normalised pattern is there, or the list is
    /// full.
    pub fn add(&mut self, entry: Entry) -> AddOutcome {
        let (kind, key) = entry.identity();
        let existing = self.entries.iter().position(|e| {
            e.kind == kind
                && match kind {
                    EntryKind::DisplayName => e.identity().1 == key,
                    _ => e.pattern.eq_ignore_ascii_case(&key),
                }
        });
        if let Some(index) = existing {
            return AddOutcome::Duplicate { index };
        }
        let bytes: usize = self.entries.iter().map(json_bound).sum();
        if self.entries.len() >= MAX_ENTRIES || bytes + json_bound(&entry) > MAX_DOCUMENT_BYTES {
            return AddOutcome::Full;
        }
        if entry.kind == EntryKind::UserId {
            // Blocked here now: an exception for them over the subscribed lists is moot.
            self.allowed
                .retain(|a| !a.user_id.eq_ignore_ascii_case(&entry.pattern));
        }
        self.entries.push(entry);
        self.version += 1;
        AddOutcome::Added
    }

    /// Records a local exception for `user` to the subscribed policy lists (or its new reason).
    /// Whether anything changed.
    pub fn allow(&mut self, user: &UserId, reason: Option<String>, now: u64) -> bool {
        let id = user.as_str().to_ascii_lowercase();
        let reason = reason
            .map(|r| {
                r.trim()
                    .chars()
                    .filter(|c| !c.is_control())
                    .collect::<String>()
            })
            .filter(|r| !r.is_empty());
        match self.allowed.iter_mut().find(|a| a.user_id == id) {
            Some(a) if a.reason == reason => return false,
            Some(a) => a.reason = reason,
            None => self.allowed.push(Allow {
                user_id: id,
                reason,
                added_at: now,
            }),
        }
        self.version += 1;
        true
    }

    /// Removes the local exception for `user_id`. Whether there was one.
    pub fn disallow(&mut self, user_id: &str) -> bool {
        let before = self.allowed.len();
        self.allowed
            .retain(|a| !a.user_id.eq_ignore_ascii_case(user_id.trim()));
        let removed = self.allowed.len() != before;
        if removed {
            self.version += 1;
        }
        removed
    }

    /// Removes every entry with the same kind and normalised pattern as `text` (read as in the
    /// text format; text that is no ID or glob is read as a display name), or with exactly that
    /// pattern. Whether anything was removed.
    pub fn remove(&mut self, text: &str) -> bool {
        let text = text.trim();
        let target = parse_pattern(text, None, 0)
            .or_else(|_| Entry::display_name(text, None, 0))
            .ok()
            .map(|e| e.identity());
        let before = self.entries.len();
        self.entries
            .retain(|e| e.pattern != text && Some(e.identity()) != target);
        let removed = self.entries.len() != before;
        if removed {
            self.version += 1;
        }
        removed
    }

    /// The index to check users against.
    pub fn index(&self) -> BlockIndex {
        BlockIndex::build_full(&self.entries, &self.allowed, super::Policy::default())
    }

    /// The stored document, compact.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// Loads a stored document as it is (the worker's own KV value).
    pub fn from_json(json: &str) -> Result<BlockList, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Adds the entries of a JSON document, a bare array of entries, or a bare array of strings
    /// (read as text-format lines). Each entry is validated again; `added_at` 0 becomes `now`.
    /// Fails only when the text is not JSON of one of these shapes.
    pub fn import_json(&mut self, json: &str, now: u64) -> Result<ImportReport, serde_json::Error> {
        let values = match serde_json::from_str::<Incoming>(json)? {
            Incoming::Document { entries } | Incoming::Bare(entries) => entries,
        };
        let mut adder = Adder::new(self);
        for (i, value) in values.into_iter().enumerate() {
            let (text, entry) = match value {
                serde_json::Value::String(s) => {
                    let (pattern, reason) = split_comment(&s);
                    let entry = parse_pattern(pattern, reason.map(str::to_owned), now);
                    (s, entry)
                }
                other => {
                    let text = other.to_string();
                    let entry = serde_json::from_value::<Entry>(other)
                        .map_err(|_| EntryError::Malformed)
                        .and_then(|e| {
                            let at = if e.added_at == 0 { now } else { e.added_at };
                            Entry::new(&e.pattern, e.kind, e.reason, at)
                                .map(|n| n.with_reach(e.reach))
                        });
                    (text, entry)
                }
            };
            adder.offer(i + 1, &text, entry);
        }
        Ok(adder.finish())
    }

    /// The list in the text format, one entry per line, under a header comment.
    pub fn export_text(&self) -> String {
        let mut out = format!(
            "# Knock block list, version {}: one entry per line; \"display:\" marks a display name; text after \" # \" is the reason.\n",
            self.version
        );
        for e in &self.entries {
            if e.kind == EntryKind::DisplayName {
                out.push_str(DISPLAY_PREFIX);
                out.push(' ');
            }
            out.push_str(&e.pattern);
            if let Some(reason) = &e.reason {
                out.push_str("  # ");
                out.push_str(reason);
            }
            out.push('\n');
        }
        for a in &self.allowed {
            out.push_str(ALLOW_PREFIX);
            out.push(' ');
            out.push_str(&a.user_id);
            if let Some(reason) = &a.reason {
                out.push_str("  # ");
                out.push_str(reason);
            }
            out.push('\n');
        }
        out
    }

    /// Adds the entries of a text-format list, stamped `now`; reports each line it could not add.
    pub fn import_text(&mut self, text: &str, now: u64) -> ImportReport {
        let mut allows = Vec::new();
        let mut adder = Adder::new(self);
        for (i, line) in text.lines().enumerate() {
            let (pattern, reason) = split_comment(line);
            if pattern.is_empty() && reason.is_none() {
                continue;
            }
            if let Some(id) = pattern
                .get(..ALLOW_PREFIX.len())
                .filter(|p| p.eq_ignore_ascii_case(ALLOW_PREFIX))
                .map(|_| pattern[ALLOW_PREFIX.len()..].trim())
            {
                allows.push((
                    i + 1,
                    line.trim().to_owned(),
                    id.to_owned(),
                    reason.map(str::to_owned),
                ));
                continue;
            }
            let entry = parse_pattern(pattern, reason.map(str::to_owned), now);
            adder.offer(i + 1, line.trim(), entry);
        }
        let mut report = adder.finish();
        for (line, text, id, reason) in allows {
            match UserId::parse(&id) {
                Ok(user) => {
                    if self.allow(&user, reason, now) {
                        report.added += 1;
                    } else {
                        report.duplicates += 1;
                    }
                }
                Err(e) => report.errors.push(LineError {
                    line,
                    text,
                    error: EntryError::NotAUserId(e),
                }),
            }
        }
        report
    }
}
