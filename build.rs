//! Encodes the committed name-commonness table (data/names/, see its README) for embedding: a
//! sorted, front-coded run of records cut into blocks of 16 with a directory of block offsets,
//! so that the worker looks names up with a binary search and never parses the table at start.
//! Needs no network and nothing but the standard library.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

const BLOCK: usize = 16;

fn main() {
    println!("cargo:rerun-if-changed=data/names/commonness.tsv");
    println!("cargo:rerun-if-changed=data/names/initials.tsv");
    let names = fs::read_to_string("data/names/commonness.tsv").expect("data/names/commonness.tsv");
    let initials = fs::read_to_string("data/names/initials.tsv").expect("data/names/initials.tsv");
    let out = env::var("OUT_DIR").expect("OUT_DIR");

    let mut rows: Vec<(&str, u8, u8)> = names
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut f = l.split('\t');
            let key = f.next().unwrap_or("");
            let given = f.next().and_then(|v| v.parse().ok()).unwrap_or(0u8);
            let surname = f.next().and_then(|v| v.parse().ok()).unwrap_or(0u8);
            assert!(
                !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase()) && key.len() < 64,
                "bad key in data/names/commonness.tsv: {l:?}"
            );
            assert!(given < 16 && surname < 16, "bad bucket: {l:?}");
            (key, given, surname)
        })
        .collect();
    rows.sort_unstable();
    rows.dedup_by(|a, b| a.0 == b.0);

    let mut blob = Vec::with_capacity(names.len() / 2);
    let mut offsets = Vec::with_capacity(rows.len() / BLOCK + 1);
    let mut prev: &str = "";
    for (i, (key, given, surname)) in rows.iter().enumerate() {
        let shared = if i % BLOCK == 0 {
            offsets.push(blob.len() as u32);
            0
        } else {
            prev.bytes()
                .zip(key.bytes())
                .take_while(|(a, b)| a == b)
                .count()
        };
        blob.push(shared as u8);
        blob.extend_from_slice(&key.as_bytes()[shared..]);
        blob.push(0x80 | given);
        blob.push(*surname);
        prev = key;
    }
    fs::write(Path::new(&out).join("commonness.bin"), &blob).expect("write commonness.bin");

    let mut initial_ppm = [0u32; 26];
    for l in initials.lines() {
        let mut f = l.split('\t');
        if let (Some(c), Some(v)) = (f.next(), f.next().and_then(|v| v.parse().ok())) {
            if let Some(b) = c.bytes().next().filter(u8::is_ascii_lowercase) {
                initial_ppm[usize::from(b - b'a')] = v;
            }
        }
    }
    // For each two-letter prefix, the blocks that may hold keys starting with it: from the last
    // block whose head sorts before the prefix to the first whose head's prefix sorts after it.
    let heads: Vec<&str> = rows.iter().step_by(BLOCK).map(|r| r.0).collect();
    let mut from = Vec::with_capacity(26 * 26);
    let mut to = Vec::with_capacity(26 * 26);
    for a in b'a'..=b'z' {
        for b in b'a'..=b'z' {
            let prefix = [a, b];
            let first = heads.partition_point(|h| h.as_bytes() < &prefix[..]);
            let past = heads.partition_point(|h| h.as_bytes()[..2.min(h.len())] <= prefix[..]);
            from.push(first.saturating_sub(1) as u16);
            to.push(past.max(first) as u16);
        }
    }
    let mut src = String::new();
    let _ = writeln!(src, "pub(crate) static FROM: [u16; 676] = {from:?};");
    let _ = writeln!(src, "pub(crate) static TO: [u16; 676] = {to:?};");
    let _ = writeln!(src, "pub(crate) const BLOCK: usize = {BLOCK};");
    let _ = writeln!(src, "pub(crate) const KEYS: usize = {};", rows.len());
    let _ = writeln!(
        src,
        "pub(crate) static OFFSETS: [u32; {}] = {offsets:?};",
        offsets.len()
    );
    let _ = writeln!(
        src,
        "pub(crate) static INITIAL_PPM: [u32; 26] = {initial_ppm:?};"
    );
    fs::write(Path::new(&out).join("commonness_index.rs"), src).expect("write commonness_index.rs");
}
