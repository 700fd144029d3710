//! The lookup structures: the fuzzy index over family keys, built on the posting table of
//! [`super::postings`], and [`BlockIndex`], which answers "is this user (or display name) blocked or held, and
//! why?".

use super::evidence::{self, beats, effective_reach, near_key, EntryReading, Found};
use super::glob::{normalize_glob, GlobSet};
use super::normalize::{
    allowed_distance, deletion_hashes, display_name_readings, hash_parts, near_allowance,
    near_miss_str, probe_depth, readings, Allowance, Reading,
};
use super::policy::{Namesakes, Outcome, Policy, Reach};
use super::postings::{posting, FastMap, FastSet, PostingTable};
use super::{Entry, EntryKind, MatchRule, Verdict};
use crate::domain::mxid::UserId;

/// Separates the readings of one member in [`FuzzyIndex::readings`]; never part of a key.
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
#[derive(Debug)]
struct FuzzyIndex {
    kind: EntryKind,
    allowance: Allowance,
    entries: Vec<u32>,
    readings: Vec<Box<str>>,
    family: PostingTable,
    family_counter: PostingTable,
    near: PostingTable,
    near_counter: PostingTable,
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
struct Member {
    entry: u32,
    readings: Vec<Reading>,
    reach: Reach,
}

impl FuzzyIndex {
    /// `members` are in entry order.
    fn build(kind: EntryKind, allowance: Allowance, members: Vec<Member>) -> FuzzyIndex {
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
        let mut index = FuzzyIndex {
            kind,
            allowance,
            entries: Vec::with_capacity(n),
            readings: Vec::with_capacity(n),
            family: PostingTable::build(family, n),
            family_counter: PostingTable::build(family_counter, n),
            near: PostingTable::build(near, n),
            near_counter: PostingTable::build(near_counter, n),
        };
        for m in members {
            index.entries.push(m.entry);
            index.readings.push(encode(&m.readings));
        }
        index
    }

    fn member_readings(&self, member: u32) -> impl Iterator<Item = EntryReading<'_>> + Clone {
        decode(self.readings.get(member as usize).map_or("", |r| r))
    }

    fn entry(&self, member: u32) -> usize {
        self.entries.get(member as usize).copied().unwrap_or(0) as usize
    }

    /// The strongest graded match among the members that can win, as `(member, match)`.
    fn lookup<'c>(
        &'c self,
        policy: &Policy,
        same: MatchRule,
        candidate: &'c [Reading],
    ) -> Option<(u32, Found<'c>)> {
        let mut best: Option<(u32, Found<'c>)> = None;
        let mut memo = Namesakes::default();
        let consider = |member: u32, found: Found<'c>, best: &mut Option<(u32, Found<'c>)>| {
            let current = best
                .as_ref()
                .map(|(m, f)| (&f.grade, f.rule, self.entry(*m)));
            if beats(&found.grade, found.rule, self.entry(member), current) {
                *best = Some((member, found));
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
                self.family.collect(&[key_hash(&r.key, c)], &mut members);
                self.family_counter
                    .collect(&[counter_hash(er, c), counter_hash(bare, c)], &mut members);
            }
        }
        members.sort_unstable();
        members.dedup();
        for &member in &members {
            let theirs = self.member_readings(member);
            if let Some(found) =
                evidence::family(policy, self.kind, same, candidate, theirs, &mut memo)
            {
                consider(member, found, &mut best);
            }
        }

        // A near miss never beats a family match that blocks (its rule ranks lower).
        if best
            .as_ref()
            .is_some_and(|(_, f)| f.grade.outcome == Outcome::Block)
        {
            return best;
        }
        if let Some(primary) = candidate.first().filter(|r| !r.key.is_empty()) {
            for (member, found) in self.near(policy, primary, &mut memo) {
                consider(member, found, &mut best);
            }
        }
        best
    }

    fn near<'c>(
        &'c self,
        policy: &Policy,
        candidate: &'c Reading,
        memo: &mut Namesakes,
    ) -> Vec<(u32, Found<'c>)> {
        let mut out = Vec::new();
        let mine = near_key(candidate, self.kind);
        let chars: Vec<char> = mine.chars().collect();
        let Some(depth) = probe_depth(chars.len(), self.allowance) else {
            return out;
        };
        if self.near.len() == 0 {
            return out;
        }
        let mut hashes = Vec::new();
        deletion_hashes(&chars, depth, &mut hashes);
        let mut members = Vec::new();
        self.near.collect(&hashes, &mut members);
        members.sort_unstable();
        members.dedup();
        let mut same_counter = Vec::new();
        for &member in &members {
            let Some(primary) = self.member_readings(member).next() else {
                continue;
            };
            let theirs = primary.near_key(self.kind);
            let Some(d) = near_miss_str(mine, theirs, self.allowance) else {
                continue;
            };
            same_counter.clear();
            self.near_counter.collect(
                &[near_counter_hash(
                    theirs,
                    EntryReading {
                        lead: &candidate.counter.lead,
                        trail: &candidate.counter.trail,
                        ..primary
                    },
                )],
                &mut same_counter,
            );
            for &other in same_counter.iter().chain([member].iter()) {
                let Some(reading) = self.member_readings(other).next() else {
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
        out
    }
}

/// How many postings the index holds, for sizing it (each posting is 4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexStats {
    pub entries: usize,
    pub globs: usize,
    pub family_postings: usize,
    pub near_miss_postings: usize,
}

/// An immutable index over a block list and a policy, built once per list version. Lookups never
/// scan the list.
#[derive(Debug)]
pub struct BlockIndex {
    entries: Vec<Entry>,
    policy: Policy,
    exact: FastMap<Box<str>, u32>,
    globs: GlobSet,
    ids: FuzzyIndex,
    names: FuzzyIndex,
}

impl BlockIndex {
    /// Builds the index under the default policy.
    pub fn build(entries: Vec<Entry>) -> BlockIndex {
        BlockIndex::build_with(entries, Policy::default())
    }

    /// Builds the index. Entries whose pattern is not valid for their kind are kept (so indices
    /// stay those of the list) but never match.
    pub fn build_with(entries: Vec<Entry>, policy: Policy) -> BlockIndex {
        let mut exact: FastMap<Box<str>, u32> = FastMap::default();
        let mut globs = Vec::new();
        let mut ids = Vec::new();
        let mut names = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let i = i as u32;
            match entry.kind {
                EntryKind::UserId => {
                    if let Ok(id) = UserId::parse(&entry.pattern) {
                        exact
                            .entry(id.as_str().to_ascii_lowercase().into_boxed_str())
                            .or_insert(i);
                        let readings = readings(id.localpart());
                        let reach = effective_reach(entry, readings.first(), &policy);
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
                        globs.push((i, pattern.into_bytes().into_boxed_slice()));
                    }
                }
                EntryKind::DisplayName => {
                    let readings = display_name_readings(&entry.pattern);
                    if readings.first().is_some_and(|k| !k.key.is_empty()) {
                        let reach = effective_reach(entry, readings.first(), &policy);
                        names.push(Member {
                            entry: i,
                            readings,
                            reach,
                        });
                    }
                }
            }
        }
        BlockIndex {
            entries,
            policy,
            exact,
            globs: GlobSet::build(globs),
            ids: FuzzyIndex::build(EntryKind::UserId, near_allowance, ids),
            names: FuzzyIndex::build(EntryKind::DisplayName, allowed_distance, names),
        }
    }

    /// The strongest evidence that `user` is blocked, if any grades as hold or block: the exact
    /// ID, then globs, then the family of its localpart and near misses of it (which ignore the
    /// server). Among several matches the strongest outcome wins, then the stronger rule (exact,
    /// glob, family, one edit, two), then the earliest entry.
    pub fn check_user(&self, user: &UserId) -> Option<Verdict<'_>> {
        let full = user.as_str().to_ascii_lowercase();
        if let Some(&i) = self.exact.get(full.as_str()) {
            return Verdict::plain(
                &self.entries,
                i as usize,
                MatchRule::Exact,
                user.as_str(),
                &full,
                &full,
            );
        }
        if let Some(i) = self.globs.first_match(full.as_bytes()) {
            let pattern = self
                .entries
                .get(i as usize)
                .map(|e| e.pattern.clone())
                .unwrap_or_default();
            return Verdict::plain(
                &self.entries,
                i as usize,
                MatchRule::Glob,
                user.as_str(),
                &full,
                &pattern,
            );
        }
        let readings = readings(user.localpart());
        let (member, found) = self
            .ids
            .lookup(&self.policy, MatchRule::Family, &readings)?;
        Verdict::found(&self.entries, self.ids.entry(member), user.as_str(), found)
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
        let (member, found) = self
            .names
            .lookup(&self.policy, MatchRule::DisplayName, &readings)?;
        Verdict::found(&self.entries, self.names.entry(member), name, found)
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The reach of entry `index`: its own, or the policy's default for its name.
    pub fn reach_of(&self, index: usize) -> Option<Reach> {
        let entry = self.entries.get(index)?;
        let readings = match entry.kind {
            EntryKind::Glob => return Some(Reach::Exact),
            EntryKind::UserId => readings(UserId::parse(&entry.pattern).ok()?.localpart()),
            EntryKind::DisplayName => display_name_readings(&entry.pattern),
        };
        Some(effective_reach(entry, readings.first(), &self.policy))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn stats(&self) -> IndexStats {
        IndexStats {
            entries: self.entries.len(),
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
