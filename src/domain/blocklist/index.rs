//! The lookup structures: the fuzzy index over family keys, built on the posting tables of
//! [`super::postings`], and [`BlockIndex`], which answers "is this user (or display name) blocked or held, and
//! why?".
//!
//! A `BlockIndex` lives in one compiled blob ([`BlockIndex::compile`]), built once where the list
//! is written and read in place by every isolate ([`BlockIndex::open`]): opening it checks a
//! header and a page table and rebuilds only the glob buckets; a lookup reads the few pages it
//! needs, each checksummed the first time (see `crate::domain::paged`). An index built in memory
//! ([`BlockIndex::build_with`]) is the same blob, so every test exercises the stored form.
//!
//! A list that only grew since a published index is published as a small index of the entries it
//! added, layered over that one ([`BlockIndex::over`]): an isolate that holds the base reads only
//! the addition. A layered index answers as the index of the whole list would: the same verdicts,
//! entry positions counted across both (the addition's after the base's), and the addition's
//! local exceptions, which are the whole list's.
//!
//! Sections (all integers little-endian), under magic `KNBI`:
//! ```text
//! meta    : the policy the index was built under (JSON); a reader under another refuses it
//! entries : string table of entries: kind u8, reach u8 (0 default), added_at u64,
//!           pattern length u16, pattern, reason (the rest; empty: none)
//! exact   : posting table: hash of the lower-cased ID -> entry (verified against the entry)
//! globs   : string table: entry u32, normalised pattern
//! ids     : fuzzy index of user IDs   (see FuzzyIndex)
//! names   : fuzzy index of display names
//! allowed : string table, sorted: user ID, 0u8, reason   (local exceptions to subscribed lists)
//! fuzzy index: 6 offsets u32 (entries, readings, family, family_counter, near, near_counter),
//!           entries: count u32 + entry u32 x count; readings: string table; 4 posting tables
//! ```

use std::borrow::Cow;
use std::rc::Rc;

use super::evidence::{self, effective_reach};
use super::fuzzy::{FuzzyIndex, Member};
use super::glob::{normalize_glob, GlobSet};
use super::normalize::{
    allowed_distance, display_name_readings, hash_parts, near_allowance, readings,
};
use super::policy::{Outcome, Policy, Reach};
use super::postings::{posting, PostingTable, TableView};
use super::{Entry, EntryKind, MatchRule, Verdict};
use crate::domain::mxid::UserId;
use crate::domain::paged::{self, put_strings, IndexError, Paged, Read};

pub const MAGIC: &[u8; 4] = b"KNBI";
pub const FORMAT_VERSION: u16 = 1;
const META: usize = 0;
const ENTRIES: usize = 1;
const EXACT: usize = 2;
const GLOBS: usize = 3;
const IDS: usize = 4;
const NAMES: usize = 5;
const ALLOWED: usize = 6;
const SECTIONS: usize = 7;

/// How many postings the index holds, for sizing it (each posting is 4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexStats {
    pub entries: usize,
    pub globs: usize,
    pub family_postings: usize,
    pub near_miss_postings: usize,
}

fn kind_code(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::UserId => 0,
        EntryKind::Glob => 1,
        EntryKind::DisplayName => 2,
    }
}

fn reach_code(reach: Option<Reach>) -> u8 {
    match reach {
        None => 0,
        Some(Reach::Exact) => 1,
        Some(Reach::Family) => 2,
        Some(Reach::Fuzzy) => 3,
    }
}

pub(crate) fn encode_entry(e: &Entry) -> Vec<u8> {
    let reason = e.reason.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(12 + e.pattern.len() + reason.len());
    out.push(kind_code(e.kind));
    out.push(reach_code(e.reach));
    out.extend_from_slice(&e.added_at.to_le_bytes());
    out.extend_from_slice(&(e.pattern.len() as u16).to_le_bytes());
    out.extend_from_slice(e.pattern.as_bytes());
    out.extend_from_slice(reason.as_bytes());
    out
}

/// An entry record: its kind, its pattern (borrowed), and the whole record.
fn entry_parts(record: &[u8]) -> Read<(EntryKind, &str)> {
    let bad = || IndexError::Corrupted;
    let kind = match record.first().ok_or_else(bad)? {
        0 => EntryKind::UserId,
        1 => EntryKind::Glob,
        2 => EntryKind::DisplayName,
        _ => return Err(bad()),
    };
    let n = u16::from_le_bytes([
        *record.get(10).ok_or_else(bad)?,
        *record.get(11).ok_or_else(bad)?,
    ]);
    let pattern = record.get(12..12 + n as usize).ok_or_else(bad)?;
    Ok((kind, std::str::from_utf8(pattern).map_err(|_| bad())?))
}

fn decode_entry(record: &[u8]) -> Read<Entry> {
    let bad = || IndexError::Corrupted;
    let (kind, pattern) = entry_parts(record)?;
    let reach = match record.get(1).ok_or_else(bad)? {
        0 => None,
        1 => Some(Reach::Exact),
        2 => Some(Reach::Family),
        3 => Some(Reach::Fuzzy),
        _ => return Err(bad()),
    };
    let added_at = u64::from_le_bytes(
        record
            .get(2..10)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    let reason = std::str::from_utf8(&record[12 + pattern.len()..]).map_err(|_| bad())?;
    Ok(Entry {
        pattern: pattern.to_owned(),
        kind,
        reason: (!reason.is_empty()).then(|| reason.to_owned()),
        added_at,
        reach,
    })
}

fn exact_hash(id: &str) -> u32 {
    hash_parts(&[id, "exact"])
}

/// A local exception to the subscribed policy lists: this user ID is let in whatever a
/// subscribed rule says of it (a moderator unblocked them here). Knock's own entries still apply.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Allow {
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub added_at: u64,
}

/// An immutable index over a block list and a policy, built once per list version and read in
/// place from its blob. Lookups never scan the list.
#[derive(Debug)]
pub struct BlockIndex {
    blob: Paged,
    policy: Policy,
    entries: usize,
    exact: TableView,
    globs: GlobSet,
    ids: FuzzyIndex,
    names: FuzzyIndex,
    /// The published index this one's entries come after (see [`BlockIndex::over`]).
    base: Option<Rc<BlockIndex>>,
}

impl BlockIndex {
    /// Builds the index under the default policy.
    pub fn build(entries: Vec<Entry>) -> BlockIndex {
        BlockIndex::build_with(entries, Policy::default())
    }

    /// Builds the index (in memory: the blob [`BlockIndex::compile`] writes, opened).
    pub fn build_with(entries: Vec<Entry>, policy: Policy) -> BlockIndex {
        BlockIndex::build_full(&entries, &[], policy)
    }

    /// Builds the index of entries and local exceptions.
    pub fn build_full(entries: &[Entry], allowed: &[Allow], policy: Policy) -> BlockIndex {
        let blob = BlockIndex::compile(entries, allowed, &policy);
        match BlockIndex::open(blob, &policy) {
            Ok(index) => index,
            // The blob was written just now, in this memory: it opens.
            Err(e) => unreachable!("a blob written in memory does not open: {e}"),
        }
    }

    /// The stored form of the index under `policy`. Entries whose pattern is not valid for their
    /// kind are kept (so indices stay those of the list) but never match.
    pub fn compile(entries: &[Entry], allowed: &[Allow], policy: &Policy) -> Vec<u8> {
        let mut exact = Vec::new();
        let mut globs: Vec<Vec<u8>> = Vec::new();
        let mut ids = Vec::new();
        let mut names = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let i = i as u32;
            match entry.kind {
                EntryKind::UserId => {
                    if let Ok(id) = UserId::parse(&entry.pattern) {
                        exact.push(posting(exact_hash(&id.as_str().to_ascii_lowercase()), i));
                        let readings = readings(id.localpart());
                        let reach = effective_reach(entry, readings.first(), policy);
                        if reach >= Reach::Family {
                            ids.push(Member {
                                entry: i,
                                readings,
                                reach,
                            });
                        }
                    }
                }
                EntryKind::Glob => {
                    if let Ok(pattern) = normalize_glob(&entry.pattern) {
                        let mut g = i.to_le_bytes().to_vec();
                        g.extend_from_slice(pattern.as_bytes());
                        globs.push(g);
                    }
                }
                EntryKind::DisplayName => {
                    let readings = display_name_readings(&entry.pattern);
                    if readings.first().is_some_and(|k| !k.key.is_empty()) {
                        let reach = effective_reach(entry, readings.first(), policy);
                        names.push(Member {
                            entry: i,
                            readings,
                            reach,
                        });
                    }
                }
            }
        }
        let records: Vec<Vec<u8>> = entries.iter().map(encode_entry).collect();
        let mut exact_table = Vec::new();
        PostingTable::build(exact, entries.len()).encode(&mut exact_table);
        let mut allowed: Vec<Vec<u8>> = allowed
            .iter()
            .map(|a| {
                let mut r = a.user_id.to_ascii_lowercase().into_bytes();
                r.push(0);
                r.extend_from_slice(a.reason.as_deref().unwrap_or("").as_bytes());
                r
            })
            .collect();
        allowed.sort();
        allowed.dedup_by(|a, b| a.split(|&c| c == 0).next() == b.split(|&c| c == 0).next());
        let sections = [
            serde_json::to_vec(policy).unwrap_or_default(),
            put_strings(records.iter().map(Vec::as_slice)),
            exact_table,
            put_strings(globs.iter().map(Vec::as_slice)),
            FuzzyIndex::encode(EntryKind::UserId, near_allowance, ids),
            FuzzyIndex::encode(EntryKind::DisplayName, allowed_distance, names),
            put_strings(allowed.iter().map(Vec::as_slice)),
        ];
        paged::write(MAGIC, FORMAT_VERSION, &sections)
    }

    /// Opens a compiled index for lookups under `policy`: refused when it is not this format,
    /// is damaged where opening reads it, or was built under another policy (its reach decisions
    /// would not be the reader's). Only the glob buckets are rebuilt; every other page is read in
    /// place and checked the first time a lookup reads it.
    pub fn open(bytes: Vec<u8>, policy: &Policy) -> Result<BlockIndex, IndexError> {
        let blob = Paged::open(bytes, MAGIC, FORMAT_VERSION, SECTIONS)?;
        let meta = blob.sec(META, 0, blob.section_len(META))?;
        if meta != serde_json::to_vec(policy).unwrap_or_default().as_slice() {
            return Err(IndexError::OtherSettings);
        }
        let entries = blob.count(ENTRIES)?;
        let mut globs = Vec::new();
        for i in 0..blob.count(GLOBS)? {
            let g = blob.table_item(GLOBS, 0, i)?;
            let entry = u32::from_le_bytes(
                g.get(..4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(IndexError::Corrupted)?,
            );
            if entry as usize >= entries {
                return Err(IndexError::Corrupted);
            }
            globs.push((entry, g[4..].to_vec().into_boxed_slice()));
        }
        let ids = FuzzyIndex::open(&blob, IDS, EntryKind::UserId, near_allowance)?;
        let names = FuzzyIndex::open(&blob, NAMES, EntryKind::DisplayName, allowed_distance)?;
        let exact = TableView::open(&blob, EXACT, 0)?.0;
        Ok(BlockIndex {
            exact,
            globs: GlobSet::build(globs),
            blob,
            policy: *policy,
            entries,
            ids,
            names,
            base: None,
        })
    }

    /// The index of a list that is `base`'s entries followed by `added`'s (compiled from the
    /// entries after the base's and the list's whole set of local exceptions). Refused when the
    /// two were built under other settings, or either is itself layered.
    pub fn over(base: Rc<BlockIndex>, added: BlockIndex) -> Result<BlockIndex, IndexError> {
        if base.policy != added.policy {
            return Err(IndexError::OtherSettings);
        }
        if base.base.is_some() || added.base.is_some() {
            return Err(IndexError::Corrupted);
        }
        Ok(BlockIndex {
            base: Some(base),
            ..added
        })
    }

    /// The stronger of this layer's verdict and the base's: what one index of both lists'
    /// entries would answer (on a tie, the base's, whose entries come first).
    fn with_base<'s>(
        &'s self,
        own: Option<Verdict<'s>>,
        of_base: impl FnOnce(&'s BlockIndex) -> Option<Verdict<'s>>,
    ) -> Option<Verdict<'s>> {
        let Some(base) = self.base.as_deref() else {
            return own;
        };
        let offset = base.len();
        let own = own.map(|mut v| {
            v.index += offset;
            v
        });
        match (of_base(base), own) {
            (Some(b), Some(o)) => Some(
                if evidence::beats(&o.grade, o.rule, o.index, Some((&b.grade, b.rule, b.index))) {
                    o
                } else {
                    b
                },
            ),
            (b, o) => b.or(o),
        }
    }

    /// The blob (what the list object publishes); of a layered index, the layer's alone.
    pub fn bytes(&self) -> &[u8] {
        self.blob.bytes()
    }

    /// Whether a lookup found this copy damaged: its answers since were holds, and it should be
    /// replaced (the list object's copy, or one rebuilt from the list).
    pub fn damaged(&self) -> bool {
        self.blob.damaged() || self.base.as_ref().is_some_and(|b| b.damaged())
    }

    /// Checks every page (a writer that has time, or a test).
    pub fn check_all(&self) -> Result<(), IndexError> {
        if let Some(base) = &self.base {
            base.check_all()?;
        }
        self.blob.check_all()
    }

    /// Entry `index` of the list, read from the blob (or the base's).
    pub fn entry(&self, index: usize) -> Option<Entry> {
        let index = match &self.base {
            Some(base) if index < base.len() => return base.entry(index),
            Some(base) => index - base.len(),
            None => index,
        };
        self.blob
            .table_item(ENTRIES, 0, index)
            .and_then(decode_entry)
            .ok()
    }

    fn verdict_at(
        &self,
        index: usize,
        candidate: &str,
        found: evidence::Found<'_>,
    ) -> Read<Option<Verdict<'static>>> {
        let entry = decode_entry(self.blob.table_item(ENTRIES, 0, index)?)?;
        Ok(Verdict::found(
            Some(Cow::Owned(entry)),
            index,
            candidate,
            found,
        ))
    }

    /// A lookup that read a damaged page answers a hold: nobody is let in (or removed) on a
    /// copy that cannot be read, and a moderator sees why.
    fn or_damaged(
        &self,
        read: Read<Option<Verdict<'static>>>,
        candidate: &str,
    ) -> Option<Verdict<'_>> {
        read.unwrap_or_else(|e| Some(Verdict::damaged(candidate, &e.to_string())))
    }

    /// The strongest evidence that `user` is blocked, if any grades as hold or block: the exact
    /// ID, then globs, then the family of its localpart and near misses of it (which ignore the
    /// server). Among several matches the strongest outcome wins, then the stronger rule (exact,
    /// glob, family, one edit, two), then the earliest entry.
    pub fn check_user(&self, user: &UserId) -> Option<Verdict<'_>> {
        let read = self.try_check_user(user);
        let own = self.or_damaged(read, user.as_str());
        self.with_base(own, |base| base.check_user(user))
    }

    fn try_check_user(&self, user: &UserId) -> Read<Option<Verdict<'static>>> {
        let full = user.as_str().to_ascii_lowercase();
        let mut hits = Vec::new();
        self.exact
            .collect(&self.blob, &[exact_hash(&full)], &mut hits)?;
        hits.sort_unstable();
        for i in hits {
            let record = self.blob.table_item(ENTRIES, 0, i as usize)?;
            if entry_parts(record)? == (EntryKind::UserId, full.as_str()) {
                let entry = decode_entry(record)?;
                return Ok(Verdict::plain(
                    Some(Cow::Owned(entry)),
                    i as usize,
                    MatchRule::Exact,
                    user.as_str(),
                    &full,
                    &full,
                ));
            }
        }
        if let Some(i) = self.globs.first_match(full.as_bytes()) {
            let entry = decode_entry(self.blob.table_item(ENTRIES, 0, i as usize)?)?;
            let pattern = entry.pattern.clone();
            return Ok(Verdict::plain(
                Some(Cow::Owned(entry)),
                i as usize,
                MatchRule::Glob,
                user.as_str(),
                &full,
                &pattern,
            ));
        }
        let readings = readings(user.localpart());
        let Some((entry, found)) =
            self.ids
                .lookup(&self.blob, &self.policy, MatchRule::Family, &readings)?
        else {
            return Ok(None);
        };
        self.verdict_at(entry, user.as_str(), found)
    }

    /// The local exception for `user`, if a moderator let them in over the subscribed lists:
    /// its reason (empty when none was given). A layer holds the list's whole set, so the base's
    /// is not asked.
    pub fn allowed(&self, user: &str) -> Option<String> {
        let user = user.to_ascii_lowercase();
        let (mut lo, mut hi) = (0usize, self.blob.count(ALLOWED).ok()?);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let record = self.blob.table_item(ALLOWED, 0, mid).ok()?;
            let zero = record.iter().position(|&c| c == 0)?;
            match record[..zero].cmp(user.as_bytes()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    return Some(String::from_utf8_lossy(&record[zero + 1..]).into_owned())
                }
            }
        }
        None
    }

    /// The strongest evidence against a person: their ID, and their display name when Knock
    /// knows it. The stronger outcome wins; on a tie, the ID's match.
    pub fn judge(&self, user: &UserId, display_name: Option<&str>) -> Option<Verdict<'_>> {
        let by_id = self.check_user(user);
        if by_id
            .as_ref()
            .is_some_and(|v| v.outcome() == Outcome::Block)
        {
            return by_id;
        }
        let by_name = display_name.and_then(|d| self.check_display_name(d));
        match (by_id, by_name) {
            (Some(a), Some(b)) => Some(if b.outcome() > a.outcome() { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// Whether a display name impersonates a blocked one: same folded family, then near misses.
    pub fn check_display_name(&self, name: &str) -> Option<Verdict<'_>> {
        let readings = display_name_readings(name);
        let read = self
            .names
            .lookup(&self.blob, &self.policy, MatchRule::DisplayName, &readings)
            .and_then(|hit| match hit {
                Some((entry, found)) => self.verdict_at(entry, name, found),
                None => Ok(None),
            });
        let own = self.or_damaged(read, name);
        self.with_base(own, |base| base.check_display_name(name))
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The reach of entry `index`: its own, or the policy's default for its name.
    pub fn reach_of(&self, index: usize) -> Option<Reach> {
        let entry = self.entry(index)?;
        let readings = match entry.kind {
            EntryKind::Glob => return Some(Reach::Exact),
            EntryKind::UserId => readings(UserId::parse(&entry.pattern).ok()?.localpart()),
            EntryKind::DisplayName => display_name_readings(&entry.pattern),
        };
        Some(effective_reach(&entry, readings.first(), &self.policy))
    }

    /// Entries of the list (the base's and this layer's).
    pub fn len(&self) -> usize {
        self.entries + self.base.as_ref().map_or(0, |b| b.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The blob's size in bytes (with the base's).
    pub fn size(&self) -> usize {
        self.blob.size() + self.base.as_ref().map_or(0, |b| b.size())
    }

    pub fn stats(&self) -> IndexStats {
        let own = self.own_stats();
        match &self.base {
            None => own,
            Some(base) => {
                let b = base.stats();
                IndexStats {
                    entries: own.entries + b.entries,
                    globs: own.globs + b.globs,
                    family_postings: own.family_postings + b.family_postings,
                    near_miss_postings: own.near_miss_postings + b.near_miss_postings,
                }
            }
        }
    }

    fn own_stats(&self) -> IndexStats {
        IndexStats {
            entries: self.entries,
            globs: self.globs.len(),
            family_postings: self.ids.family.len()
                + self.ids.family_counter.len()
                + self.names.family.len()
                + self.names.family_counter.len(),
            near_miss_postings: self.ids.near.len()
                + self.ids.near_counter.len()
                + self.names.near.len()
                + self.names.near_counter.len(),
        }
    }
}
