//! The lookup structures: a hash-bucketed posting table, the fuzzy index over family keys built
//! on it, and [`BlockIndex`], which answers "is this user (or display name) blocked, and why?".

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use super::glob::{normalize_glob, GlobSet};
use super::normalize::{
    allowed_distance, deletion_hashes, display_readings, family_readings, hash_key, near_miss_str,
    probe_depth,
};
use super::{Entry, EntryKind, MatchRule, Verdict};
use crate::domain::mxid::UserId;

/// A fast hasher for the short keys of the index's maps. Their keys come from the list's
/// administrators, so the people being checked cannot fill them with chosen collisions.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ShortKeyHasher(u64);

impl Hasher for ShortKeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<ShortKeyHasher>>;
type FastSet<K> = HashSet<K, BuildHasherDefault<ShortKeyHasher>>;

/// Postings of `(32-bit hash, member)`, packed into one `u32` each, with a directory over the top
/// bits of the hash: one lookup reads a directory slot and one short, contiguous run. A posting
/// keeps the member number in its low bits and, above it, as many of the hash bits below the
/// directory's as fit; hash collisions only cost a verification.
#[derive(Debug, Default)]
struct PostingTable {
    bucket_bits: u32,
    check_bits: u32,
    member_bits: u32,
    directory: Vec<u32>,
    postings: Vec<u32>,
}

impl PostingTable {
    /// `pairs` are [`posting`]s of members below `members`.
    fn build(mut pairs: Vec<u64>, members: usize) -> PostingTable {
        pairs.sort_unstable();
        pairs.dedup();
        let bucket_bits = (usize::BITS - pairs.len().leading_zeros())
            .saturating_sub(2)
            .clamp(1, 24);
        let member_bits = (usize::BITS - members.saturating_sub(1).leading_zeros()).clamp(1, 32);
        let mut table = PostingTable {
            bucket_bits,
            check_bits: 32 - member_bits,
            member_bits,
            directory: vec![0u32; (1usize << bucket_bits) + 1],
            postings: Vec::with_capacity(pairs.len()),
        };
        for &p in &pairs {
            let (bucket, check) = table.split((p >> 32) as u32);
            if let Some(slot) = table.directory.get_mut(bucket + 1) {
                *slot += 1;
            }
            table
                .postings
                .push(((u64::from(check) << member_bits) | (p & 0xffff_ffff)) as u32);
        }
        for i in 1..table.directory.len() {
            table.directory[i] += table.directory[i - 1];
        }
        table
    }

    /// The directory bucket of a hash, and the bits a posting keeps to tell hashes apart in it.
    fn split(&self, hash: u32) -> (usize, u32) {
        let h = u64::from(hash);
        let bucket = h >> (32 - self.bucket_bits);
        let check = ((h << self.bucket_bits) & 0xffff_ffff) >> (32 - self.check_bits);
        (bucket as usize, check as u32)
    }

    /// Where the postings of `hash` may be, and the check bits they carry.
    fn locate(&self, hash: u32) -> (usize, usize, u32) {
        let (bucket, check) = self.split(hash);
        let start = self.directory.get(bucket).copied().unwrap_or(0) as usize;
        let end = self.directory.get(bucket + 1).copied().unwrap_or(0) as usize;
        (start, end, check)
    }

    /// Appends the members filed under any of `hashes` (a member may appear more than once).
    /// Directory slots are all read first and the postings copied out before any is compared, so
    /// that the many cache misses of one lookup overlap instead of queueing.
    fn collect(&self, hashes: &[u32], out: &mut Vec<u32>) {
        let located: Vec<(usize, usize, u32)> = hashes.iter().map(|&h| self.locate(h)).collect();
        let mut raw: Vec<(u32, u32)> = Vec::with_capacity(located.len() * 4);
        for (start, end, check) in located {
            for &p in self.postings.get(start..end).unwrap_or(&[]) {
                raw.push((p, check));
            }
        }
        let mask = ((1u64 << self.member_bits) - 1) as u32;
        out.extend(
            raw.into_iter()
                .filter(|&(p, check)| (u64::from(p) >> self.member_bits) as u32 == check)
                .map(|(p, _)| p & mask),
        );
    }

    fn len(&self) -> usize {
        self.postings.len()
    }
}

fn posting(hash: u32, member: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(member)
}

/// Separates the readings of one member in [`FuzzyIndex::readings`]; never part of a key.
const READING_SEPARATOR: &str = " ";

/// Family keys of a set of names (localparts, or folded display names). Family matches look up
/// every reading in a hash table; near misses use a deletion neighbourhood (SymSpell): every
/// blocked key is filed under each string made by deleting up to its allowed distance of
/// characters, a candidate looks up its own deletions, and each hit is verified with the real
/// distance and the blocked key's allowance. A reading or key is filed for its earliest member
/// only: a later member with the same one could never win, so a thousand entries of one family
/// cost one posting.
#[derive(Debug, Default)]
struct FuzzyIndex {
    entries: Vec<u32>,
    readings: Vec<Box<str>>,
    family: PostingTable,
    near: PostingTable,
}

/// A fuzzy match: the member, the reading or key compared, and the distance (0 for family).
struct FuzzyHit {
    member: u32,
    candidate_key: String,
    entry_key: String,
    distance: usize,
}

impl FuzzyIndex {
    /// `members` are `(entry index, readings with the family key first)`, in entry order.
    fn build(members: Vec<(u32, Vec<String>)>) -> FuzzyIndex {
        let mut family = Vec::new();
        let mut near = Vec::new();
        let mut hashes = Vec::new();
        let mut seen_readings: FastSet<&str> = FastSet::default();
        let mut seen_keys: FastSet<&str> = FastSet::default();
        for (member, (_, readings)) in members.iter().enumerate() {
            let member = member as u32;
            for reading in readings.iter().filter(|r| !r.is_empty()) {
                if seen_readings.insert(reading) {
                    family.push(posting(hash_key(reading), member));
                }
            }
            let Some(key) = readings.first().filter(|k| seen_keys.insert(k)) else {
                continue;
            };
            let key: Vec<char> = key.chars().collect();
            let depth = allowed_distance(key.len());
            if depth > 0 {
                deletion_hashes(&key, depth, &mut hashes);
                near.extend(hashes.iter().map(|&h| posting(h, member)));
            }
        }
        let mut index = FuzzyIndex {
            family: PostingTable::build(family, members.len()),
            near: PostingTable::build(near, members.len()),
            ..FuzzyIndex::default()
        };
        for (entry, readings) in members {
            index.entries.push(entry);
            index
                .readings
                .push(readings.join(READING_SEPARATOR).into_boxed_str());
        }
        index
    }

    fn member_readings(&self, member: u32) -> impl Iterator<Item = &str> {
        self.readings
            .get(member as usize)
            .map(|r| r.split(READING_SEPARATOR))
            .into_iter()
            .flatten()
    }

    fn entry(&self, member: u32) -> usize {
        self.entries.get(member as usize).copied().unwrap_or(0) as usize
    }

    fn family(&self, readings: &[String]) -> Option<FuzzyHit> {
        let mut best: Option<FuzzyHit> = None;
        let mut members = Vec::new();
        for reading in readings.iter().filter(|r| !r.is_empty()) {
            members.clear();
            self.family.collect(&[hash_key(reading)], &mut members);
            for &member in &members {
                if best.as_ref().is_some_and(|b| b.member <= member) {
                    continue;
                }
                if let Some(entry_key) = self.member_readings(member).find(|r| r == reading) {
                    best = Some(FuzzyHit {
                        member,
                        candidate_key: reading.clone(),
                        entry_key: entry_key.to_owned(),
                        distance: 0,
                    });
                }
            }
        }
        best
    }

    fn near(&self, key: &str) -> Option<FuzzyHit> {
        let chars: Vec<char> = key.chars().collect();
        let depth = probe_depth(chars.len())?;
        if chars.is_empty() || self.near.len() == 0 {
            return None;
        }
        let mut hashes = Vec::new();
        deletion_hashes(&chars, depth, &mut hashes);
        let mut members = Vec::new();
        self.near.collect(&hashes, &mut members);
        members.sort_unstable();
        members.dedup();
        let mut best: Option<(usize, u32, &str)> = None;
        for member in members {
            let Some(entry_key) = self.member_readings(member).next() else {
                continue;
            };
            if let Some(d) = near_miss_str(key, entry_key) {
                if best
                    .as_ref()
                    .is_none_or(|(bd, bm, _)| (d, member) < (*bd, *bm))
                {
                    best = Some((d, member, entry_key));
                }
            }
        }
        best.map(|(distance, member, entry_key)| FuzzyHit {
            member,
            candidate_key: key.to_owned(),
            entry_key: entry_key.to_owned(),
            distance,
        })
    }

    fn lookup(&self, readings: &[String]) -> Option<FuzzyHit> {
        self.family(readings)
            .or_else(|| readings.first().and_then(|key| self.near(key)))
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

/// An immutable index over a block list, built once per list version. Lookups never scan the list.
#[derive(Debug)]
pub struct BlockIndex {
    entries: Vec<Entry>,
    exact: FastMap<Box<str>, u32>,
    globs: GlobSet,
    ids: FuzzyIndex,
    names: FuzzyIndex,
}

impl BlockIndex {
    /// Builds the index. Entries whose pattern is not valid for their kind are kept (so indices
    /// stay those of the list) but never match.
    pub fn build(entries: Vec<Entry>) -> BlockIndex {
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
                        ids.push((i, family_readings(id.localpart())));
                    }
                }
                EntryKind::Glob => {
                    if let Ok(pattern) = normalize_glob(&entry.pattern) {
                        globs.push((i, pattern.into_bytes().into_boxed_slice()));
                    }
                }
                EntryKind::DisplayName => {
                    let readings = display_readings(&entry.pattern);
                    if readings.first().is_some_and(|k| !k.is_empty()) {
                        names.push((i, readings));
                    }
                }
            }
        }
        BlockIndex {
            entries,
            exact,
            globs: GlobSet::build(globs),
            ids: FuzzyIndex::build(ids),
            names: FuzzyIndex::build(names),
        }
    }

    /// Whether `user` is blocked, trying in order: the exact ID, globs, the family of its
    /// localpart, then near misses of that family. Family rules ignore the server. Within a rule
    /// the earliest entry wins; among near misses, the closest and then the earliest.
    pub fn check_user(&self, user: &UserId) -> Option<Verdict<'_>> {
        let full = user.as_str().to_ascii_lowercase();
        if let Some(&i) = self.exact.get(full.as_str()) {
            return self.verdict(i as usize, MatchRule::Exact, user.as_str(), &full, &full);
        }
        if let Some(i) = self.globs.first_match(full.as_bytes()) {
            let pattern = self
                .entries
                .get(i as usize)
                .map(|e| e.pattern.clone())
                .unwrap_or_default();
            return self.verdict(i as usize, MatchRule::Glob, user.as_str(), &full, &pattern);
        }
        let readings = family_readings(user.localpart());
        let hit = self.ids.lookup(&readings)?;
        self.fuzzy_verdict(&self.ids, hit, user.as_str(), MatchRule::Family)
    }

    /// Whether a display name impersonates a blocked one: same folded family, then near misses.
    pub fn check_display_name(&self, name: &str) -> Option<Verdict<'_>> {
        let readings = display_readings(name);
        let hit = self.names.lookup(&readings)?;
        self.fuzzy_verdict(&self.names, hit, name, MatchRule::DisplayName)
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
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
            family_postings: self.ids.family.len() + self.names.family.len(),
            near_miss_postings: self.ids.near.len() + self.names.near.len(),
        }
    }

    fn fuzzy_verdict(
        &self,
        index: &FuzzyIndex,
        hit: FuzzyHit,
        candidate: &str,
        same: MatchRule,
    ) -> Option<Verdict<'_>> {
        let rule = match hit.distance {
            0 => same,
            d => MatchRule::Distance(d as u8),
        };
        self.verdict(
            index.entry(hit.member),
            rule,
            candidate,
            &hit.candidate_key,
            &hit.entry_key,
        )
    }

    fn verdict(
        &self,
        index: usize,
        rule: MatchRule,
        candidate: &str,
        candidate_key: &str,
        entry_key: &str,
    ) -> Option<Verdict<'_>> {
        Verdict::at(
            &self.entries,
            index,
            rule,
            candidate,
            candidate_key,
            entry_key,
        )
    }
}
