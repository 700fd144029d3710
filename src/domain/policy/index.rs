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
//! The blob is a [`Paged`] container (`crate::domain::paged`): opening it checks its header
//! and page table, and each 4 KiB page is checked the first time a lookup reads it.
//!
//! Sections (all integers little-endian), under magic `KNPI`:
//! ```text
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

pub use crate::domain::paged::IndexError;
use crate::domain::paged::{put_strings, put_u32, Paged, Read};

pub const MAGIC: &[u8; 4] = b"KNPI";
pub const FORMAT_VERSION: u16 = 1;
const SECTIONS: usize = 9;
const NONE: u32 = u32::MAX;
const RULE_BYTES: usize = 4 + 1 + 1 + 2 + 4 * 4;

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
    sections.push(put_strings(texts.iter().map(|t| t.as_bytes())));
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

    crate::domain::paged::write(MAGIC, FORMAT_VERSION, &sections)
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

/// An opened blob ([`Paged`]): nothing is rebuilt, and a damaged page gives an error, never a
/// wrong answer.
pub struct PolicyIndex {
    blob: Paged,
}

const STRINGS: usize = 0;
const RULES: usize = 1;
const USER_LIT: usize = 2;
const SERVER_LIT: usize = 3;
const USER_GLOB: usize = 4;
const SERVER_GLOB: usize = 5;
const USER_HASH: usize = 6;
const SERVER_HASH: usize = 7;

impl PolicyIndex {
    /// Opens a blob, refusing one that is not this format, is cut short, or whose page table or
    /// section table is damaged. Pages are checked as lookups read them.
    pub fn open(bytes: Vec<u8>) -> Result<PolicyIndex, IndexError> {
        Ok(PolicyIndex {
            blob: Paged::open(bytes, MAGIC, FORMAT_VERSION, SECTIONS)?,
        })
    }

    fn sec_u32(&self, sec: usize, at: usize) -> Read<u32> {
        self.blob.sec_u32(sec, at)
    }

    fn count(&self, sec: usize) -> Read<usize> {
        self.blob.count(sec)
    }

    fn string(&self, id: u32) -> Read<&str> {
        self.blob.string(STRINGS, id as usize)
    }

    /// How many rules it holds (user and server rules).
    pub fn rules(&self) -> usize {
        self.count(RULES).unwrap_or(0)
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> usize {
        self.blob.size()
    }

    pub fn bytes(&self) -> &[u8] {
        self.blob.bytes()
    }

    fn rule(&self, id: u32) -> Read<Found> {
        if id as usize >= self.count(RULES)? {
            return Err(IndexError::Corrupted);
        }
        let r = self
            .blob
            .sec(RULES, 4 + id as usize * RULE_BYTES, RULE_BYTES)?;
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
        let (mut lo, mut hi) = (0usize, self.count(sec)?);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let at = 4 + mid * 36;
            let h = self.blob.sec(sec, at, 32)?;
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
        self.blob.check_all()
    }
}
