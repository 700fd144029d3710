//! The index's storage: a fast hasher for its short keys, and a hash-bucketed posting table
//! (one directory read and one short contiguous run per lookup). Decides nothing about matches.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

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

    /// Where the postings of `hash` may be, and the check bits they carry.
    pub(crate) fn locate(&self, hash: u32) -> (usize, usize, u32) {
        let (bucket, check) = self.split(hash);
        let start = self.directory.get(bucket).copied().unwrap_or(0) as usize;
        let end = self.directory.get(bucket + 1).copied().unwrap_or(0) as usize;
        (start, end, check)
    }

    /// Appends the members filed under any of `hashes` (a member may appear more than once).
    /// Directory slots are all read first and the postings copied out before any is compared, so
    /// that the many cache misses of one lookup overlap instead of queueing.
    pub(crate) fn collect(&self, hashes: &[u32], out: &mut Vec<u32>) {
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

    pub(crate) fn len(&self) -> usize {
        self.postings.len()
    }
}

pub(crate) fn posting(hash: u32, member: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(member)
}
