//! The compiled form of subscribed policy lists: one binary blob, built once where the lists are
//! written, that an isolate opens without rebuilding anything (a check of its header and
//! checksum) and looks users up in directly.
//!
//! Decides: the blob's format and its checks. A blob that is not this format, not this version,
//! cut short or corrupted is refused ([`IndexError`]), never trusted: the writer rebuilds it from
//! the rules. Lookups: a user ID or its server name is found by binary search among the sorted
//! literal entities and hashes; globs (few in real lists) are tried one by one; the rule found
//! names its list, type, state key, reason and sender.
//!
//! Opening a blob costs a check of its header and of its page table, not of the whole blob: the
//! body is checksummed per 4 KiB page, and a page is checked the first time a lookup reads it.
//! A 100k-rule list is several megabytes, and hashing all of it would cost an isolate more CPU
//! than a request may use; a lookup reads a few dozen pages.
//!
//! Layout (all integers little-endian):
//! ```text
//! "KNPI" | version u16 | 0u16 | body length u32 | page size u32 | pages u32
//!        | checksum u64 of the page table | page table: checksum u64 × pages | body
//! body: 9 section lengths (u32 each), then the sections in this order:
//!   strings   : count u32, offsets u32 × (count + 1), bytes      (deduplicated texts)
//!   rules     : count u32, then per rule: list u32, kind u8, recommendation u8, 0u16,
//!               entity u32, state key u32, reason u32, sender u32  (string ids; u32::MAX: none)
//!   user_lit, server_lit, user_glob, server_glob :
//!               count u32, then (string id u32, rule u32) × count  (literals sorted by text)
//!   user_hash, server_hash : count u32, then (hash 32 bytes, rule u32) × count (sorted)
//!   reserved  : empty
//! ```

use std::collections::HashMap;

use super::{server_of, sha256, Entity, Kind, Recommendation, Rules};
use crate::domain::blocklist::glob_match;

pub const MAGIC: &[u8; 4] = b"KNPI";
pub const FORMAT_VERSION: u16 = 1;
/// The fixed part of the header, before the page table.
const HEADER: usize = 4 + 2 + 2 + 4 + 4 + 4 + 8;
/// Each page of the body has its own checksum.
pub const PAGE: usize = 4096;
const SECTIONS: usize = 9;
const NONE: u32 = u32::MAX;
const RULE_BYTES: usize = 4 + 1 + 1 + 2 + 4 * 4;

/// Why a blob was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexError {
    NotAnIndex,
    /// Written by another version of Knock: rebuild it.
    OldFormat(u16),
    Truncated,
    Corrupted,
}

impl std::fmt::Display for IndexError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexError::NotAnIndex => write!(f, "not a policy index"),
            IndexError::OldFormat(v) => write!(f, "policy index format {v}, not {FORMAT_VERSION}"),
            IndexError::Truncated => write!(f, "policy index cut short"),
            IndexError::Corrupted => write!(f, "policy index checksum does not match"),
        }
    }
}

/// A fast 64-bit checksum of the body (four lanes of multiply-rotate over 8-byte words): it
/// catches a damaged or cut blob; it is no defence against a forger, and needs none (only Knock
/// writes the blob).
pub fn checksum(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut lanes = [K, K ^ 1, K ^ 2, K ^ 3];
    let mut chunks = bytes.chunks_exact(32);
    for c in &mut chunks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let w = u64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
            *lane = (*lane ^ w).wrapping_mul(K).rotate_left(29);
        }
    }
    let mut h = lanes.iter().fold(bytes.len() as u64, |h, l| {
        (h ^ l).wrapping_mul(K).rotate_left(31)
    });
    for &b in chunks.remainder() {
        h = (h ^ b as u64).wrapping_mul(K).rotate_left(7);
    }
    h ^ (h >> 32)
}

/// One list to compile: its name as verdicts show it (an alias or ID) and its rules.
pub struct Source<'a> {
    pub list: &'a str,
    pub rules: &'a Rules,
}

#[derive(Default)]
struct Strings {
    ids: HashMap<String, u32>,
    texts: Vec<String>,
}

impl Strings {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.texts.len() as u32;
        self.texts.push(s.to_owned());
        self.ids.insert(s.to_owned(), i);
        i
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Compiles lists into a blob. Room rules are left out (they never match a person).
pub fn compile(sources: &[Source<'_>]) -> Vec<u8> {
    let mut strings = Strings::default();
    let mut rules: Vec<[u32; 7]> = Vec::new();
    // (kind, text or hash) → rule, per section
    let mut lits: [Vec<(u32, u32)>; 2] = [Vec::new(), Vec::new()];
    let mut globs: [Vec<(u32, u32)>; 2] = [Vec::new(), Vec::new()];
    let mut hashes: [Vec<([u8; 32], u32)>; 2] = [Vec::new(), Vec::new()];
    for src in sources {
        let list = strings.id(src.list);
        for r in src.rules.iter() {
            let side = match r.kind {
                Kind::User => 0,
                Kind::Server => 1,
                Kind::Room => continue,
            };
            let id = rules.len() as u32;
            let entity = match &r.entity {
                Entity::Glob(g) => {
                    let e = strings.id(g);
                    if r.entity.is_literal() {
                        lits[side].push((e, id));
                    } else {
                        globs[side].push((e, id));
                    }
                    e
                }
                Entity::Sha256(h) => {
                    hashes[side].push((*h, id));
                    NONE
                }
            };
            let opt = |s: &mut Strings, v: Option<&str>| v.map_or(NONE, |v| s.id(v));
            rules.push([
                list,
                r.kind as u32,
                match r.recommendation {
                    Recommendation::Ban => 0,
                    Recommendation::Takedown => 1,
                },
                entity,
                strings.id(&r.state_key),
                opt(&mut strings, r.reason.as_deref()),
                opt(&mut strings, Some(r.sender.as_str())),
            ]);
        }
    }
    let texts = &strings.texts;
    for l in &mut lits {
        l.sort_by(|a, b| texts[a.0 as usize].cmp(&texts[b.0 as usize]));
    }
    for h in &mut hashes {
        h.sort();
    }

    let mut sections: Vec<Vec<u8>> = Vec::with_capacity(SECTIONS);
    // strings
    let mut s = Vec::new();
    put_u32(&mut s, texts.len() as u32);
    let mut off = 0u32;
    put_u32(&mut s, 0);
    for t in texts {
        off += t.len() as u32;
        put_u32(&mut s, off);
    }
    for t in texts {
        s.extend_from_slice(t.as_bytes());
    }
    sections.push(s);
    // rules
    let mut s = Vec::with_capacity(4 + rules.len() * RULE_BYTES);
    put_u32(&mut s, rules.len() as u32);
    for r in &rules {
        put_u32(&mut s, r[0]);
        s.push(r[1] as u8);
        s.push(r[2] as u8);
        s.extend_from_slice(&[0, 0]);
        for v in &r[3..] {
            put_u32(&mut s, *v);
        }
    }
    sections.push(s);
    for pairs in lits.iter().chain(globs.iter()) {
        let mut s = Vec::with_capacity(4 + pairs.len() * 8);
        put_u32(&mut s, pairs.len() as u32);
        for (e, r) in pairs {
            put_u32(&mut s, *e);
            put_u32(&mut s, *r);
        }
        sections.push(s);
    }
    for hs in &hashes {
        let mut s = Vec::with_capacity(4 + hs.len() * 36);
        put_u32(&mut s, hs.len() as u32);
        for (h, r) in hs {
            s.extend_from_slice(h);
            put_u32(&mut s, *r);
        }
        sections.push(s);
    }
    sections.push(Vec::new());
    debug_assert_eq!(sections.len(), SECTIONS);

    let mut body = Vec::new();
    for s in &sections {
        put_u32(&mut body, s.len() as u32);
    }
    for s in &sections {
        body.extend_from_slice(s);
    }
    let table: Vec<u8> = body
        .chunks(PAGE)
        .flat_map(|p| checksum(p).to_le_bytes())
        .collect();
    let mut out = Vec::with_capacity(HEADER + table.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    put_u32(&mut out, body.len() as u32);
    put_u32(&mut out, PAGE as u32);
    put_u32(&mut out, (table.len() / 8) as u32);
    out.extend_from_slice(&checksum(&table).to_le_bytes());
    out.extend_from_slice(&table);
    out.extend_from_slice(&body);
    out
}

/// The rule a lookup found, with its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub list: String,
    pub kind: Kind,
    pub recommendation: Recommendation,
    /// The entity as the list wrote it (a glob or ID), or `sha256:<base64>` for a hashed one.
    pub entity: String,
    pub state_key: String,
    pub reason: Option<String>,
    pub sender: String,
}

impl Found {
    /// A knock's or member's verdict when this rule matches them.
    pub fn verdict(&self) -> String {
        format!("matches {}", self.explain())
    }

    /// The sentence a verdict or a kick reason shows: the source named, never guessed at.
    pub fn explain(&self) -> String {
        let mut s = format!(
            "{} rule {} in policy list {} ({}",
            self.kind.as_str(),
            self.entity,
            self.list,
            self.recommendation.as_str()
        );
        s.push_str(&format!(
            ", state key {}, set by {}",
            self.state_key, self.sender
        ));
        s.push(')');
        if let Some(r) = &self.reason {
            s.push_str(&format!(": {r}"));
        }
        s
    }
}

/// An opened blob. Nothing is rebuilt; each page is checked the first time a lookup reads it,
/// and every offset is bounds-checked as it is used, so a damaged blob gives an error, never a
/// wrong answer or a panic.
pub struct PolicyIndex {
    bytes: Vec<u8>,
    /// Where the body starts in `bytes`.
    body_at: usize,
    /// (start, length) of each section, in the body's coordinates.
    sections: [(usize, usize); SECTIONS],
    /// One bit per page: checked already.
    checked: std::cell::RefCell<Vec<u64>>,
}

const STRINGS: usize = 0;
const RULES: usize = 1;
const USER_LIT: usize = 2;
const SERVER_LIT: usize = 3;
const USER_GLOB: usize = 4;
const SERVER_GLOB: usize = 5;
const USER_HASH: usize = 6;
const SERVER_HASH: usize = 7;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

type Read<T> = Result<T, IndexError>;

impl PolicyIndex {
    /// Opens a blob, refusing one that is not this format, is cut short, or whose page table or
    /// section table is damaged. Pages are checked as lookups read them.
    pub fn open(bytes: Vec<u8>) -> Result<PolicyIndex, IndexError> {
        if bytes.len() < HEADER || &bytes[..4] != MAGIC {
            return Err(IndexError::NotAnIndex);
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != FORMAT_VERSION {
            return Err(IndexError::OldFormat(version));
        }
        let field = |at| u32_at(&bytes, at).map(|v| v as usize);
        let (Some(len), Some(page), Some(pages)) = (field(8), field(12), field(16)) else {
            return Err(IndexError::Truncated);
        };
        if page != PAGE || pages != len.div_ceil(PAGE) {
            return Err(IndexError::Corrupted);
        }
        let body_at = HEADER + pages * 8;
        if bytes.len() != body_at + len {
            return Err(IndexError::Truncated);
        }
        let sum = u64::from_le_bytes(
            bytes[20..28]
                .try_into()
                .map_err(|_| IndexError::Truncated)?,
        );
        if checksum(&bytes[HEADER..body_at]) != sum {
            return Err(IndexError::Corrupted);
        }
        let mut index = PolicyIndex {
            bytes,
            body_at,
            sections: [(0, 0); SECTIONS],
            checked: std::cell::RefCell::new(vec![0; pages.div_ceil(64)]),
        };
        let mut at = SECTIONS * 4;
        for i in 0..SECTIONS {
            let n = index.u32(i * 4)? as usize;
            index.sections[i] = (at, n);
            at += n;
        }
        if at != len {
            return Err(IndexError::Corrupted);
        }
        Ok(index)
    }

    /// `len` bytes of the body at `at`, their pages checked.
    fn read(&self, at: usize, len: usize) -> Read<&[u8]> {
        let body = &self.bytes[self.body_at..];
        let end = at.checked_add(len).ok_or(IndexError::Corrupted)?;
        if end > body.len() {
            return Err(IndexError::Corrupted);
        }
        if len > 0 {
            let mut checked = self.checked.borrow_mut();
            for p in at / PAGE..=(end - 1) / PAGE {
                if checked[p / 64] & (1 << (p % 64)) != 0 {
                    continue;
                }
                let page = &body[p * PAGE..((p + 1) * PAGE).min(body.len())];
                let t = HEADER + p * 8;
                let want = u64::from_le_bytes(
                    self.bytes[t..t + 8]
                        .try_into()
                        .map_err(|_| IndexError::Corrupted)?,
                );
                if checksum(page) != want {
                    return Err(IndexError::Corrupted);
                }
                checked[p / 64] |= 1 << (p % 64);
            }
        }
        Ok(&body[at..end])
    }

    fn u32(&self, at: usize) -> Read<u32> {
        let b = self.read(at, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The `u32` at `at` within section `sec`.
    fn sec_u32(&self, sec: usize, at: usize) -> Read<u32> {
        let (start, n) = self.sections[sec];
        if at + 4 > n {
            return Err(IndexError::Corrupted);
        }
        self.u32(start + at)
    }

    fn count(&self, sec: usize) -> Read<usize> {
        if self.sections[sec].1 == 0 {
            return Ok(0);
        }
        Ok(self.sec_u32(sec, 0)? as usize)
    }

    fn string(&self, id: u32) -> Read<&str> {
        let n = self.count(STRINGS)?;
        if id as usize >= n {
            return Err(IndexError::Corrupted);
        }
        let a = self.sec_u32(STRINGS, 4 + id as usize * 4)? as usize;
        let b = self.sec_u32(STRINGS, 8 + id as usize * 4)? as usize;
        let blob = 4 + (n + 1) * 4;
        let (start, len) = self.sections[STRINGS];
        if a > b || blob + b > len {
            return Err(IndexError::Corrupted);
        }
        let bytes = self.read(start + blob + a, b - a)?;
        std::str::from_utf8(bytes).map_err(|_| IndexError::Corrupted)
    }

    /// How many rules it holds (user and server rules).
    pub fn rules(&self) -> usize {
        self.count(RULES).unwrap_or(0)
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn rule(&self, id: u32) -> Read<Found> {
        if id as usize >= self.count(RULES)? {
            return Err(IndexError::Corrupted);
        }
        let (start, len) = self.sections[RULES];
        let at = 4 + id as usize * RULE_BYTES;
        if at + RULE_BYTES > len {
            return Err(IndexError::Corrupted);
        }
        let r = self.read(start + at, RULE_BYTES)?;
        let get = |k: usize| {
            u32::from_le_bytes([r[8 + k * 4], r[9 + k * 4], r[10 + k * 4], r[11 + k * 4]])
        };
        let opt = |v: u32| -> Read<Option<String>> {
            if v == NONE {
                Ok(None)
            } else {
                self.string(v).map(|s| Some(s.to_owned()))
            }
        };
        let kind = match r[4] {
            0 => Kind::User,
            1 => Kind::Server,
            _ => return Err(IndexError::Corrupted),
        };
        let recommendation = match r[5] {
            0 => Recommendation::Ban,
            1 => Recommendation::Takedown,
            _ => return Err(IndexError::Corrupted),
        };
        Ok(Found {
            list: self
                .string(u32::from_le_bytes([r[0], r[1], r[2], r[3]]))?
                .to_owned(),
            kind,
            recommendation,
            entity: opt(get(0))?.unwrap_or_else(|| "(hashed)".to_owned()),
            state_key: self.string(get(1))?.to_owned(),
            reason: opt(get(2))?,
            sender: opt(get(3))?.unwrap_or_default(),
        })
    }

    fn find_literal(&self, sec: usize, text: &str) -> Read<Option<u32>> {
        let (mut lo, mut hi) = (0usize, self.count(sec)?);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let e = self.sec_u32(sec, 4 + mid * 8)?;
            match self.string(e)?.cmp(text) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return self.sec_u32(sec, 8 + mid * 8).map(Some),
            }
        }
        Ok(None)
    }

    fn find_hash(&self, sec: usize, hash: &[u8; 32]) -> Read<Option<u32>> {
        let (start, len) = self.sections[sec];
        let (mut lo, mut hi) = (0usize, self.count(sec)?);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let at = 4 + mid * 36;
            if at + 36 > len {
                return Err(IndexError::Corrupted);
            }
            let h = self.read(start + at, 32)?;
            match h.cmp(hash.as_slice()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return self.sec_u32(sec, at + 32).map(Some),
            }
        }
        Ok(None)
    }

    fn find_glob(&self, sec: usize, text: &str) -> Read<Option<u32>> {
        for i in 0..self.count(sec)? {
            let e = self.sec_u32(sec, 4 + i * 8)?;
            if glob_match(self.string(e)?.as_bytes(), text.as_bytes()) {
                return self.sec_u32(sec, 8 + i * 8).map(Some);
            }
        }
        Ok(None)
    }

    /// The first rule that matches `user_id` (an exact or hashed user rule, then a server rule,
    /// then a glob), if any. An error means the blob is damaged: stop trusting it.
    pub fn judge(&self, user_id: &str) -> Result<Option<Found>, IndexError> {
        let user = user_id.to_lowercase();
        let server = server_of(&user).to_owned();
        let mut found = self.find_literal(USER_LIT, &user)?;
        if found.is_none() {
            found = self.find_hash(USER_HASH, &sha256(user_id))?;
        }
        if found.is_none() {
            found = self.find_literal(SERVER_LIT, &server)?;
        }
        if found.is_none() {
            found = self.find_hash(SERVER_HASH, &sha256(server_of(user_id)))?;
        }
        if found.is_none() {
            found = self.find_glob(USER_GLOB, &user)?;
        }
        if found.is_none() {
            found = self.find_glob(SERVER_GLOB, &server)?;
        }
        found.map(|id| self.rule(id)).transpose()
    }

    /// Checks every page (a writer that has time, or a test).
    pub fn check_all(&self) -> Result<(), IndexError> {
        let len = self.bytes.len() - self.body_at;
        self.read(0, len).map(|_| ())
    }
}
