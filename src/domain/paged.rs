//! The container both compiled indexes are stored in (the block-list's and the subscribed policy
//! lists'): a blob built once where a list is written, that an isolate opens without rebuilding
//! or hashing all of it, and reads in place.
//!
//! Decides: the container's layout and its checks. A blob that is not the expected kind, not this
//! format version, cut short or damaged is refused ([`IndexError`]), never trusted.
//!
//! Opening costs a check of the header and of the page table, not of the whole body: the body is
//! checksummed per 4 KiB page, and a page is checked the first time a read touches it. A 100k-entry
//! list is megabytes; hashing all of it in a fresh isolate (whose wasm still runs in the baseline
//! tier) costs more CPU than a request may use, while a lookup reads a few dozen pages.
//!
//! Layout (all integers little-endian):
//! ```text
//! magic [4] | version u16 | 0u16 | body length u32 | page size u32 | pages u32
//!           | checksum u64 of the page table | page table: checksum u64 × pages | body
//! body: section count × u32 lengths, then the sections in order
//! ```
//! A string table section (see [`put_strings`]) is `count u32, offsets u32 × (count + 1), bytes`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The fixed part of the header, before the page table.
const HEADER: usize = 4 + 2 + 2 + 4 + 4 + 4 + 8;
/// Each page of the body has its own checksum.
pub const PAGE: usize = 4096;

/// Why a blob was refused, or a read of it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexError {
    NotAnIndex,
    /// Written by another version of Knock: rebuild it.
    OldFormat(u16),
    Truncated,
    Corrupted,
    /// Built under other matching settings than the reader's: rebuild it under the reader's.
    OtherSettings,
}

impl std::fmt::Display for IndexError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexError::NotAnIndex => write!(f, "not an index of this kind"),
            IndexError::OldFormat(v) => write!(f, "index format {v}, another version's"),
            IndexError::Truncated => write!(f, "index cut short"),
            IndexError::Corrupted => write!(f, "index checksum does not match"),
            IndexError::OtherSettings => write!(f, "index built under other matching settings"),
        }
    }
}

impl std::error::Error for IndexError {}

pub type Read<T> = Result<T, IndexError>;

/// A fast 64-bit checksum (four lanes of multiply-rotate over 8-byte words): it catches a
/// damaged or cut blob; it is no defence against a forger, and needs none (only Knock writes
/// the blob).
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

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A string table section: `count u32, offsets u32 × (count + 1), bytes`.
pub fn put_strings<'a>(texts: impl ExactSizeIterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let mut s = Vec::new();
    put_u32(&mut s, texts.len() as u32);
    let mut off = 0u32;
    put_u32(&mut s, 0);
    for t in texts.clone() {
        off += t.len() as u32;
        put_u32(&mut s, off);
    }
    for t in texts {
        s.extend_from_slice(t);
    }
    s
}

/// Writes a blob of `sections` under `magic` and `version`.
pub fn write(magic: &[u8; 4], version: u16, sections: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::with_capacity(sections.iter().map(Vec::len).sum::<usize>() + 64);
    for s in sections {
        put_u32(&mut body, s.len() as u32);
    }
    for s in sections {
        body.extend_from_slice(s);
    }
    let table: Vec<u8> = body
        .chunks(PAGE)
        .flat_map(|p| checksum(p).to_le_bytes())
        .collect();
    let mut out = Vec::with_capacity(HEADER + table.len() + body.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    put_u32(&mut out, body.len() as u32);
    put_u32(&mut out, PAGE as u32);
    put_u32(&mut out, (table.len() / 8) as u32);
    out.extend_from_slice(&checksum(&table).to_le_bytes());
    out.extend_from_slice(&table);
    out.extend_from_slice(&body);
    out
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// An opened blob. Nothing is rebuilt; each page is checked the first time a read touches it,
/// and every offset is bounds-checked as it is used, so a damaged blob gives an error, never a
/// wrong byte or a panic.
#[derive(Debug)]
pub struct Paged {
    bytes: Vec<u8>,
    /// Where the body starts in `bytes`.
    body_at: usize,
    /// (start, length) of each section, in the body's coordinates.
    sections: Vec<(usize, usize)>,
    /// One bit per page: checked already.
    checked: Vec<AtomicU64>,
    /// A read found a damaged page.
    damaged: AtomicBool,
}

impl Paged {
    /// Opens a blob of `sections` sections, refusing one that is not `magic`, not `version`, is
    /// cut short, or whose page table or section table is damaged.
    pub fn open(bytes: Vec<u8>, magic: &[u8; 4], version: u16, sections: usize) -> Read<Paged> {
        if bytes.len() < HEADER || &bytes[..4] != magic {
            return Err(IndexError::NotAnIndex);
        }
        let found = u16::from_le_bytes([bytes[4], bytes[5]]);
        if found != version {
            return Err(IndexError::OldFormat(found));
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
        let mut paged = Paged {
            bytes,
            body_at,
            sections: vec![(0, 0); sections],
            checked: (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            damaged: AtomicBool::new(false),
        };
        let mut at = sections * 4;
        for i in 0..sections {
            let n = paged.u32(i * 4)? as usize;
            paged.sections[i] = (at, n);
            at += n;
        }
        if at != len {
            return Err(IndexError::Corrupted);
        }
        Ok(paged)
    }

    fn fail<T>(&self) -> Read<T> {
        self.damaged.store(true, Ordering::Relaxed);
        Err(IndexError::Corrupted)
    }

    /// Whether a read found a damaged page (or offset): stop trusting this copy.
    pub fn damaged(&self) -> bool {
        self.damaged.load(Ordering::Relaxed)
    }

    /// `len` bytes of the body at `at`, their pages checked.
    pub fn read(&self, at: usize, len: usize) -> Read<&[u8]> {
        let body = &self.bytes[self.body_at..];
        let Some(end) = at.checked_add(len).filter(|&e| e <= body.len()) else {
            return self.fail();
        };
        if len > 0 {
            for p in at / PAGE..=(end - 1) / PAGE {
                let (word, bit) = (&self.checked[p / 64], 1u64 << (p % 64));
                if word.load(Ordering::Relaxed) & bit != 0 {
                    continue;
                }
                let page = &body[p * PAGE..((p + 1) * PAGE).min(body.len())];
                let t = HEADER + p * 8;
                let want = u64::from_le_bytes(self.bytes[t..t + 8].try_into().unwrap_or([0; 8]));
                if checksum(page) != want {
                    return self.fail();
                }
                word.fetch_or(bit, Ordering::Relaxed);
            }
        }
        Ok(&body[at..end])
    }

    pub fn u32(&self, at: usize) -> Read<u32> {
        let b = self.read(at, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The length of section `sec`.
    pub fn section_len(&self, sec: usize) -> usize {
        self.sections.get(sec).map_or(0, |s| s.1)
    }

    /// `len` bytes at `at` within section `sec`.
    pub fn sec(&self, sec: usize, at: usize, len: usize) -> Read<&[u8]> {
        let Some(&(start, n)) = self.sections.get(sec) else {
            return self.fail();
        };
        if at.checked_add(len).is_none_or(|e| e > n) {
            return self.fail();
        }
        self.read(start + at, len)
    }

    /// The `u32` at `at` within section `sec`.
    pub fn sec_u32(&self, sec: usize, at: usize) -> Read<u32> {
        let b = self.sec(sec, at, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The `u64` at `at` within section `sec`.
    pub fn sec_u64(&self, sec: usize, at: usize) -> Read<u64> {
        let b = self.sec(sec, at, 8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    /// The count a section starts with (0 for an empty section).
    pub fn count(&self, sec: usize) -> Read<usize> {
        if self.section_len(sec) == 0 {
            return Ok(0);
        }
        Ok(self.sec_u32(sec, 0)? as usize)
    }

    /// Item `id` of the string table that starts at `base` in section `sec`.
    pub fn table_item(&self, sec: usize, base: usize, id: usize) -> Read<&[u8]> {
        let n = self.sec_u32(sec, base)? as usize;
        if id >= n {
            return self.fail();
        }
        let a = self.sec_u32(sec, base + 4 + id * 4)? as usize;
        let b = self.sec_u32(sec, base + 8 + id * 4)? as usize;
        if a > b {
            return self.fail();
        }
        self.sec(sec, base + 4 + (n + 1) * 4 + a, b - a)
    }

    /// Item `id` of section `sec`'s string table, as text.
    pub fn string(&self, sec: usize, id: usize) -> Read<&str> {
        let bytes = self.table_item(sec, 0, id)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s),
            Err(_) => self.fail(),
        }
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Checks every page (a writer that has time, or a test).
    pub fn check_all(&self) -> Read<()> {
        let len = self.bytes.len() - self.body_at;
        self.read(0, len).map(|_| ())
    }
}
