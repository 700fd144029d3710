//! The fuzzy half of the block-list index: family keys of a set of names (user-ID localparts,
//! or folded display names) with their counters, and a deletion neighbourhood over them for near
//! misses, stored as one section of [`super::BlockIndex`]'s blob and read in place.
//!
//! Decides: which members a candidate meets, and the strongest graded match among them (through
//! [`super::evidence`]). Never does: IO, or reading a page it does not need.

use super::evidence::{self, beats, near_key, EntryReading, Found};
use super::normalize::{
    deletion_hashes, hash_parts, near_miss_str, probe_depth, Allowance, Reading,
};
use super::policy::{Namesakes, Outcome, Policy, Reach};
use super::postings::{posting, FastSet, PostingTable, TableView};
use super::{EntryKind, MatchRule};
use crate::domain::paged::{put_strings, put_u32, IndexError, Paged, Read};

/// Separates the readings of one member in a fuzzy index's readings table; never part of a key.
const READING_SEPARATOR: char = ' ';
/// Separates a reading's key, lead and trail digits; never part of a key.
const FIELD_SEPARATOR: char = '\u{1}';

/// Family keys of a set of names (localparts, or folded display names), with their counters.
///
/// Family matches look up every reading of the candidate in two hash tables: by key, filed for the
/// earliest member with that reading, and by key and counter, filed for the earliest member with
/// that reading and counter (looked up with the candidate's counter and with none); both apart
/// for members' family keys and their other readings. A pair's grade depends on nothing else of
/// the member than whether its counter is the candidate's, none or another, and is monotone in
/// that order (another counter is never stronger evidence), so the earliest member overall, with
/// the candidate's counter and with none are the only ones of a reading that can win.
///
/// Near misses use a deletion neighbourhood (SymSpell) over the members' family keys: every key
/// is filed under each string made by deleting up to its allowance of characters, a candidate
/// looks up its own deletions, and each hit is verified with the real distance; for each key
/// found, the member with the candidate's counter is looked up as well. Only members whose reach
/// is fuzzy are filed there; members of reach exact are not members at all.
#[derive(Debug, Clone, Copy)]
pub(super) struct FuzzyIndex {
    sec: usize,
    kind: EntryKind,
    allowance: Allowance,
    members: usize,
    entries_at: usize,
    readings_at: usize,
    pub(super) family: TableView,
    pub(super) family_counter: TableView,
    pub(super) near: TableView,
    pub(super) near_counter: TableView,
}

/// Whether a reading is its member's family key (the first) or another reading: the tables
/// keep the two apart, because they grade differently (see [`evidence::family`]).
const PRIMARY: &str = "p";
const OTHER: &str = "o";

fn class(reading: usize) -> &'static str {
    if reading == 0 {
        PRIMARY
    } else {
        OTHER
    }
}

fn key_hash(key: &str, class: &str) -> u32 {
    hash_parts(&[key, class])
}

fn counter_hash(r: EntryReading<'_>, class: &str) -> u32 {
    hash_parts(&[r.key, r.lead, r.trail, class])
}

fn near_counter_hash(near_key: &str, counter: EntryReading<'_>) -> u32 {
    hash_parts(&[near_key, counter.lead, counter.trail])
}

fn encode(readings: &[Reading]) -> Box<str> {
    let mut out = String::new();
    for (i, r) in readings.iter().enumerate() {
        if i > 0 {
            out.push(READING_SEPARATOR);
        }
        out.push_str(&r.key);
        out.push(FIELD_SEPARATOR);
        out.push_str(&r.counter.lead);
        out.push(FIELD_SEPARATOR);
        out.push_str(&r.counter.trail);
        out.push(FIELD_SEPARATOR);
        out.push_str(&r.spelling);
    }
    out.into_boxed_str()
}

fn decode(text: &str) -> impl Iterator<Item = EntryReading<'_>> + Clone {
    text.split(READING_SEPARATOR).map(|r| {
        let mut f = r.split(FIELD_SEPARATOR);
        EntryReading {
            key: f.next().unwrap_or(""),
            lead: f.next().unwrap_or(""),
            trail: f.next().unwrap_or(""),
            spelling: f.next().unwrap_or(""),
        }
    })
}

/// A fuzzy member to be: the entry's index, its readings (family key first) and its reach.
pub(super) struct Member {
    pub(super) entry: u32,
    pub(super) readings: Vec<Reading>,
    pub(super) reach: Reach,
}

impl FuzzyIndex {
    /// The stored form of the fuzzy index over `members` (in entry order).
    pub(super) fn encode(kind: EntryKind, allowance: Allowance, members: Vec<Member>) -> Vec<u8> {
        let mut family = Vec::new();
        let mut family_counter = Vec::new();
        let mut near = Vec::new();
        let mut near_counter = Vec::new();
        let mut hashes = Vec::new();
        let mut seen_readings: FastSet<(&str, &str)> = FastSet::default();
        let mut seen_counters: FastSet<(&str, &str, &str, &str)> = FastSet::default();
        let mut seen_keys: FastSet<&str> = FastSet::default();
        let mut seen_key_counters: FastSet<(&str, &str, &str)> = FastSet::default();
        for (member, m) in members.iter().enumerate() {
            let member = member as u32;
            for (i, r) in m.readings.iter().enumerate() {
                if r.key.is_empty() {
                    continue;
                }
                let er = EntryReading::of(r);
                let c = class(i);
                if seen_readings.insert((&r.key, c)) {
                    family.push(posting(key_hash(&r.key, c), member));
                }
                if seen_counters.insert((er.key, er.lead, er.trail, c)) {
                    family_counter.push(posting(counter_hash(er, c), member));
                }
            }
            if m.reach < Reach::Fuzzy {
                continue;
            }
            let Some(primary) = m.readings.first().filter(|r| !r.key.is_empty()) else {
                continue;
            };
            let er = EntryReading::of(primary);
            let near_key = er.near_key(kind);
            let chars: Vec<char> = near_key.chars().collect();
            let depth = allowance(chars.len());
            if depth == 0 {
                continue;
            }
            if seen_key_counters.insert((near_key, er.lead, er.trail)) {
                near_counter.push(posting(near_counter_hash(near_key, er), member));
            }
            if seen_keys.insert(near_key) {
                deletion_hashes(&chars, depth, &mut hashes);
                near.extend(hashes.iter().map(|&h| posting(h, member)));
            }
        }
        let n = members.len();
        let tables = [
            PostingTable::build(family, n),
            PostingTable::build(family_counter, n),
            PostingTable::build(near, n),
            PostingTable::build(near_counter, n),
        ];
        let mut entries = Vec::with_capacity(4 + 4 * n);
        put_u32(&mut entries, n as u32);
        for m in &members {
            put_u32(&mut entries, m.entry);
        }
        let encoded: Vec<Box<str>> = members.iter().map(|m| encode(&m.readings)).collect();
        let readings = put_strings(encoded.iter().map(|r| r.as_bytes()));
        let mut parts = vec![entries, readings];
        for t in &tables {
            let mut b = Vec::with_capacity(20 + 4 * t.len());
            t.encode(&mut b);
            parts.push(b);
        }
        let mut out = Vec::new();
        let mut at = 4 * parts.len();
        for p in &parts {
            put_u32(&mut out, at as u32);
            at += p.len();
        }
        for p in &parts {
            out.extend_from_slice(p);
        }
        out
    }

    /// The fuzzy index stored in section `sec`.
    pub(super) fn open(
        blob: &Paged,
        sec: usize,
        kind: EntryKind,
        allowance: Allowance,
    ) -> Read<FuzzyIndex> {
        let at = |i: usize| blob.sec_u32(sec, 4 * i).map(|v| v as usize);
        let (entries_at, readings_at) = (at(0)?, at(1)?);
        let members = blob.sec_u32(sec, entries_at)? as usize;
        if members > 0 {
            blob.table_item(sec, readings_at, members - 1)?;
        }
        let table = |i: usize| -> Read<TableView> { Ok(TableView::open(blob, sec, at(i)?)?.0) };
        Ok(FuzzyIndex {
            sec,
            kind,
            allowance,
            members,
            entries_at,
            readings_at,
            family: table(2)?,
            family_counter: table(3)?,
            near: table(4)?,
            near_counter: table(5)?,
        })
    }

    fn member_readings<'b>(
        &self,
        blob: &'b Paged,
        member: u32,
    ) -> Read<impl Iterator<Item = EntryReading<'b>> + Clone> {
        if member as usize >= self.members {
            return Err(IndexError::Corrupted);
        }
        let bytes = blob.table_item(self.sec, self.readings_at, member as usize)?;
        let text = std::str::from_utf8(bytes).map_err(|_| IndexError::Corrupted)?;
        Ok(decode(text))
    }

    fn entry(&self, blob: &Paged, member: u32) -> Read<usize> {
        if member as usize >= self.members {
            return Err(IndexError::Corrupted);
        }
        Ok(blob.sec_u32(self.sec, self.entries_at + 4 + 4 * member as usize)? as usize)
    }

    /// The strongest graded match among the members that can win, as `(entry, match)`.
    pub(super) fn lookup<'c>(
        &self,
        blob: &'c Paged,
        policy: &Policy,
        same: MatchRule,
        candidate: &'c [Reading],
    ) -> Read<Option<(usize, Found<'c>)>> {
        let mut best: Option<(usize, Found<'c>)> = None;
        let mut memo = Namesakes::default();
        let consider = |entry: usize, found: Found<'c>, best: &mut Option<(usize, Found<'c>)>| {
            let current = best.as_ref().map(|(e, f)| (&f.grade, f.rule, *e));
            if beats(&found.grade, found.rule, entry, current) {
                *best = Some((entry, found));
            }
        };

        // A candidate's family key meets both kinds of entry readings; its other readings meet
        // only entries' family keys.
        let mut members = Vec::new();
        for (i, r) in candidate.iter().enumerate() {
            if r.key.is_empty() {
                continue;
            }
            let er = EntryReading::of(r);
            let classes: &[&str] = if i == 0 {
                &[PRIMARY, OTHER]
            } else {
                &[PRIMARY]
            };
            let bare = EntryReading {
                lead: "",
                trail: "",
                ..er
            };
            for c in classes {
                self.family
                    .collect(blob, &[key_hash(&r.key, c)], &mut members)?;
                self.family_counter.collect(
                    blob,
                    &[counter_hash(er, c), counter_hash(bare, c)],
                    &mut members,
                )?;
            }
        }
        members.sort_unstable();
        members.dedup();
        for &member in &members {
            let theirs = self.member_readings(blob, member)?;
            if let Some(found) =
                evidence::family(policy, self.kind, same, candidate, theirs, &mut memo)
            {
                consider(self.entry(blob, member)?, found, &mut best);
            }
        }

        // A near miss never beats a family match that blocks (its rule ranks lower).
        if best
            .as_ref()
            .is_some_and(|(_, f)| f.grade.outcome == Outcome::Block)
        {
            return Ok(best);
        }
        if let Some(primary) = candidate.first().filter(|r| !r.key.is_empty()) {
            for (member, found) in self.near(blob, policy, primary, &mut memo)? {
                consider(self.entry(blob, member)?, found, &mut best);
            }
        }
        Ok(best)
    }

    fn near<'c>(
        &self,
        blob: &'c Paged,
        policy: &Policy,
        candidate: &'c Reading,
        memo: &mut Namesakes,
    ) -> Read<Vec<(u32, Found<'c>)>> {
        let mut out = Vec::new();
        let mine = near_key(candidate, self.kind);
        let chars: Vec<char> = mine.chars().collect();
        let Some(depth) = probe_depth(chars.len(), self.allowance) else {
            return Ok(out);
        };
        if self.near.len() == 0 {
            return Ok(out);
        }
        let mut hashes = Vec::new();
        deletion_hashes(&chars, depth, &mut hashes);
        let mut members = Vec::new();
        self.near.collect(blob, &hashes, &mut members)?;
        members.sort_unstable();
        members.dedup();
        let mut same_counter = Vec::new();
        for &member in &members {
            let Some(primary) = self.member_readings(blob, member)?.next() else {
                continue;
            };
            let theirs = primary.near_key(self.kind);
            let Some(d) = near_miss_str(mine, theirs, self.allowance) else {
                continue;
            };
            same_counter.clear();
            self.near_counter.collect(
                blob,
                &[near_counter_hash(
                    theirs,
                    EntryReading {
                        lead: &candidate.counter.lead,
                        trail: &candidate.counter.trail,
                        ..primary
                    },
                )],
                &mut same_counter,
            )?;
            for &other in same_counter.iter().chain([member].iter()) {
                let Some(reading) = self.member_readings(blob, other)?.next() else {
                    continue;
                };
                if reading.near_key(self.kind) != theirs {
                    continue;
                }
                if let Some(found) = evidence::near(policy, self.kind, candidate, reading, d, memo)
                {
                    out.push((other, found));
                }
            }
        }
        Ok(out)
    }
}
