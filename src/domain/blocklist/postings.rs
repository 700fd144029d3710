//! The index's storage: a fast hasher for its short keys, and a hash-bucketed posting table
//! (one directory read and one short contiguous run per lookup). Decides nothing about matches.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::domain::paged::{put_u32, IndexError, Paged, Read};

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
pub(crate) type FastSet<K> = HashSet<K, BuildHasherDefault<ShortKeyHasher>>;

/// Postings of `(32-bit hash, member)`, packed into one `u32` each, with a directory over the top
/// bits of the hash: one lookup reads a directory slot and one short, contiguous run. A posting
/// keeps the member number in its low bits and, above it, as many of the hash bits below the
/// directory's as fit; hash collisions only cost a verification.
#[derive(Debug, Default)]
pub(crate) struct PostingTable {
    bucket_bits: u32,
    check_bits: u32,
    member_bits: u32,
    directory: Vec<u32>,
    postings: Vec<u32>,
}

impl PostingTable {
    /// `pairs` are [`posting`]s of members below `members`.
    pub(crate) fn build(mut pairs: Vec<u64>, members: usize) -> PostingTable {
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
    pub(crate) fn split(&self, hash: u32) -> (usize, u32) {
        let h = u64::from(hash);
        let bucket = h >> (32 - self.bucket_bits);
        let check = ((h << self.bucket_bits) & 0xffff_ffff) >> (32 - self.check_bits);
        (bucket as usize, check as u32)
    }

    /// The table in its stored form: `bucket_bits, check_bits, member_bits, directory length,
    /// postings length` (u32 each), the directory, the postings.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        for v in [
            self.bucket_bits,
            self.check_bits,
            self.member_bits,
            self.directory.len() as u32,
            self.postings.len() as u32,
        ] {
            put_u32(out, v);
        }
        for &v in self.directory.iter().chain(&self.postings) {
            put_u32(out, v);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.postings.len()
    }
}

/// A stored [`PostingTable`], read in place from section `sec` of a blob at `at`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TableView {
    sec: usize,
    bucket_bits: u32,
    check_bits: u32,
    member_bits: u32,
    directory_at: usize,
    directory_len: usize,
    postings_at: usize,
    postings_len: usize,
}

impl TableView {
    /// The table stored at `at`, and where the section goes on after it.
    pub(crate) fn open(blob: &Paged, sec: usize, at: usize) -> Read<(TableView, usize)> {
        let field = |i: usize| blob.sec_u32(sec, at + 4 * i);
        let (bucket_bits, check_bits, member_bits) = (field(0)?, field(1)?, field(2)?);
        let (directory_len, postings_len) = (field(3)? as usize, field(4)? as usize);
        if bucket_bits > 24
            || member_bits == 0
            || member_bits > 32
            || check_bits + member_bits != 32
            || directory_len != (1usize << bucket_bits) + 1
        {
            return Err(IndexError::Corrupted);
        }
        let directory_at = at + 20;
        let postings_at = directory_at + 4 * directory_len;
        let end = postings_at + 4 * postings_len;
        if end > blob.section_len(sec) {
            return Err(IndexError::Corrupted);
        }
        let view = TableView {
            sec,
            bucket_bits,
            check_bits,
            member_bits,
            directory_at,
            directory_len,
            postings_at,
            postings_len,
        };
        Ok((view, end))
    }

    fn split(&self, hash: u32) -> (usize, u32) {
        let h = u64::from(hash);
        let bucket = h >> (32 - self.bucket_bits);
        let check = ((h << self.bucket_bits) & 0xffff_ffff) >> (32 - self.check_bits);
        (bucket as usize, check as u32)
    }

    /// Appends the members filed under any of `hashes` (a member may appear more than once).
    pub(crate) fn collect(&self, blob: &Paged, hashes: &[u32], out: &mut Vec<u32>) -> Read<()> {
        if self.postings_len == 0 {
            return Ok(());
        }
        let mask = ((1u64 << self.member_bits) - 1) as u32;
        for &h in hashes {
            let (bucket, check) = self.split(h);
            if bucket + 1 >= self.directory_len {
                return Err(IndexError::Corrupted);
            }
            let run = blob.sec(self.sec, self.directory_at + 4 * bucket, 8)?;
            let start = u32::from_le_bytes([run[0], run[1], run[2], run[3]]) as usize;
            let end = u32::from_le_bytes([run[4], run[5], run[6], run[7]]) as usize;
            if start > end || end > self.postings_len {
                return Err(IndexError::Corrupted);
            }
            if start == end {
                continue;
            }
            let bytes = blob.sec(self.sec, self.postings_at + 4 * start, 4 * (end - start))?;
            out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .filter(|&p| (u64::from(p) >> self.member_bits) as u32 == check)
                    .map(|p| p & mask),
            );
        }
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.postings_len
    }
}

pub(crate) fn posting(hash: u32, member: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(member)
}
