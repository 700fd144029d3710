//! How common a name is: about how many people in a million bear a given family key, as a given
//! name, a surname, or a handle made of two of them (`annaschmidt`, `vgautier`, `schmidtanna`).
//!
//! Decides: the namesake estimate the policy weighs a fuzzy match against. The table is compiled
//! into the worker from `data/names/` (given names and surnames of 83 countries, see its README
//! for the source, its licence and how it was derived): a name's share is the largest it has in
//! any of those countries, kept as a power of two. A handle of two parts is as common as the
//! product of their shares; an initial counts as the share of given names that start with it.
//!
//! Never does: IO, allocation, or parsing at start-up: the table is a sorted, front-coded byte
//! string with a directory of block offsets (see `build.rs`), searched in place.

mod table {
    include!(concat!(env!("OUT_DIR"), "/commonness_index.rs"));
}

static NAMES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/commonness.bin"));

/// Longest key the table holds (the encoder refuses longer ones).
const MAX_KEY: usize = 64;

/// Parts per million of one name: as a given name and as a surname (0 when not seen as that).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NameShare {
    pub given: u32,
    pub surname: u32,
}

impl NameShare {
    pub fn either(self) -> u32 {
        self.given.max(self.surname)
    }
}

fn ppm(bucket: u8) -> u32 {
    if bucket == 0 {
        0
    } else {
        1u32 << bucket.min(15)
    }
}

/// The key of the record at `at` whose shared prefix is already in `buf[..]`; returns the
/// record's key length, its buckets and where the next record starts.
fn decode(at: usize, buf: &mut [u8; MAX_KEY]) -> Option<(usize, u8, u8, usize)> {
    let shared = usize::from(*NAMES.get(at)?);
    let mut len = shared;
    let mut i = at + 1;
    loop {
        let b = *NAMES.get(i)?;
        i += 1;
        if b & 0x80 != 0 {
            let surname = *NAMES.get(i)?;
            return Some((len, b & 0x0f, surname, i + 1));
        }
        *buf.get_mut(len)? = b;
        len += 1;
    }
}

fn block_head(block: usize) -> Option<([u8; MAX_KEY], usize)> {
    let at = *table::OFFSETS.get(block)? as usize;
    let mut buf = [0u8; MAX_KEY];
    let (len, ..) = decode(at, &mut buf)?;
    Some((buf, len))
}

/// The shares of one name, by its family key (as [`super::family_key`] reads it).
pub fn share(key: &str) -> NameShare {
    find(key.as_bytes()).0.unwrap_or_default()
}

/// The shares of `key` if the table has it, and whether the table has a longer key that starts
/// with it (so that a longer prefix of a handle may still be a name).
fn find(key: &[u8]) -> (Option<NameShare>, bool) {
    let (Some(&a), Some(&b)) = (key.first(), key.get(1)) else {
        return (None, key.len() == 1);
    };
    if table::KEYS == 0
        || key.len() >= MAX_KEY
        || !a.is_ascii_lowercase()
        || !b.is_ascii_lowercase()
    {
        return (None, false);
    }
    let prefix = usize::from(a - b'a') * 26 + usize::from(b - b'a');
    let lo = table::FROM.get(prefix).copied().unwrap_or(0) as usize;
    let hi = table::TO.get(prefix).copied().unwrap_or(0) as usize;
    // The last block in [lo, hi) whose first key is at most `key`.
    let (mut lo, mut hi) = (lo, hi.max(lo + 1));
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        match block_head(mid) {
            Some((buf, len)) if &buf[..len] <= key => lo = mid,
            _ => hi = mid,
        }
    }
    let Some(&start) = table::OFFSETS.get(lo) else {
        return (None, false);
    };
    match scan(start as usize, lo, key) {
        Some(found) => found,
        // Past the block's last key: the next block's first key may extend `key`.
        None => (
            None,
            block_head(lo + 1).is_some_and(|(buf, len)| buf[..len].starts_with(key)),
        ),
    }
}

/// Looks `key` up in the block at `at` without decoding its records: a record sharing more of the
/// previous record's prefix than the previous record shared with `key` still sorts before `key`,
/// and one sharing less sorts after it. `None` when every record of the block sorts before
/// `key`; otherwise the shares if found, and whether the record after `key`'s place extends it.
fn scan(mut at: usize, block: usize, key: &[u8]) -> Option<(Option<NameShare>, bool)> {
    let mut matched = 0usize;
    for n in 0..table::BLOCK {
        let shared = usize::from(*NAMES.get(at)?);
        if n > 0 && shared < matched {
            return Some((None, false));
        }
        at += 1;
        let skip = n > 0 && shared > matched;
        let mut j = shared;
        loop {
            let b = *NAMES.get(at)?;
            if b & 0x80 != 0 {
                let surname = *NAMES.get(at + 1)?;
                at += 2;
                if !skip && j == key.len() {
                    // The next record extends `key` if it keeps all of it.
                    let more = if n + 1 < table::BLOCK {
                        NAMES.get(at).is_some_and(|&s| usize::from(s) >= key.len())
                            && table::OFFSETS.get(block + 1) != Some(&(at as u32))
                    } else {
                        block_head(block + 1).is_some_and(|(buf, len)| buf[..len].starts_with(key))
                    };
                    let share = NameShare {
                        given: ppm(b & 0x0f),
                        surname: ppm(surname),
                    };
                    return Some((Some(share), more));
                }
                if !skip {
                    matched = j;
                }
                break;
            }
            at += 1;
            if skip {
                continue;
            }
            let Some(&k) = key.get(j) else {
                // This record is longer than `key` and starts with it.
                return Some((None, true));
            };
            if b > k {
                return Some((None, false));
            }
            if b < k {
                matched = j;
                while *NAMES.get(at)? & 0x80 == 0 {
                    at += 1;
                }
                at += 2;
                break;
            }
            j += 1;
        }
    }
    None
}

/// Parts per million of given names that start with `c`.
pub fn initial_share(c: char) -> u32 {
    if c.is_ascii_lowercase() {
        table::INITIAL_PPM[usize::from(c as u8 - b'a')]
    } else {
        0
    }
}

/// What a part of a handle can be: an initial, a given name or a surname.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Initial,
    Given,
    Surname,
}

fn part_share(part: &str) -> [(Part, u32); 2] {
    let mut chars = part.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => [(Part::Initial, initial_share(c)), (Part::Initial, 0)],
        _ => {
            let s = share(part);
            [(Part::Given, s.given), (Part::Surname, s.surname)]
        }
    }
}

/// About how many people in a million would have a handle with this family key: the largest of
/// its share as one name and, for every split into two parts (given name and surname either way
/// round, an initial and a surname, a given name and an initial), the product of the parts'
/// shares. A letter that both parts share at
/// the split is tried on both sides, since the family key collapses `annaahmed` to `anahmed`.
/// 0 for a key the table knows nothing of.
pub fn namesakes_per_million(key: &str) -> u32 {
    if !key.is_ascii() || key.len() < 2 {
        return 0;
    }
    let bytes = key.as_bytes();
    let mut best = share(key).either();
    for i in 1..key.len() {
        let left = &key[..i];
        let lefts = if i == 1 {
            part_share(left)
        } else {
            let (found, more) = find(&bytes[..i]);
            let s = found.unwrap_or_default();
            if found.is_none() && !more {
                // No name starts with this prefix, so no longer one does either.
                break;
            }
            [(Part::Given, s.given), (Part::Surname, s.surname)]
        };
        if lefts.iter().all(|&(_, s)| s == 0) {
            continue;
        }
        let overlap = (i >= 2 && key.len() - i >= 2).then(|| &key[i - 1..]);
        for right in std::iter::once(&key[i..]).chain(overlap) {
            let rights = part_share(right);
            for (lp, ls) in lefts {
                for &(rp, rs) in &rights {
                    // An initial goes before a surname (`vgautier`) or after a given name
                    // (`annas`); elsewhere it is just a letter.
                    let allowed = match (lp, rp) {
                        (Part::Initial, r) => r == Part::Surname,
                        (l, Part::Initial) => l == Part::Given,
                        _ => true,
                    };
                    if ls == 0 || rs == 0 || !allowed {
                        continue;
                    }
                    let product = (u64::from(ls) * u64::from(rs) / 1_000_000) as u32;
                    best = best.max(product);
                }
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::blocklist::family_key;

    #[test]
    fn the_table_is_sorted_and_keyed_by_family_keys() {
        let mut previous: Option<Vec<u8>> = None;
        let mut count = 0;
        for (block, &start) in table::OFFSETS.iter().enumerate() {
            let mut at = start as usize;
            let mut buf = [0u8; MAX_KEY];
            for _ in 0..table::BLOCK {
                if block + 1 < table::OFFSETS.len() && at == table::OFFSETS[block + 1] as usize {
                    break;
                }
                let Some((len, ..)) = decode(at, &mut buf) else {
                    break;
                };
                let key = buf[..len].to_vec();
                let text = std::str::from_utf8(&key).unwrap();
                assert_eq!(family_key(text), text, "{text} is not a family key");
                if let Some(p) = &previous {
                    assert!(*p < key, "{text} out of order");
                }
                previous = Some(key);
                at = decode(at, &mut buf).unwrap().3;
                count += 1;
            }
        }
        assert_eq!(count, table::KEYS);
        assert!(count > 50_000, "{count}");
    }

    #[test]
    fn common_names_are_common_and_invented_words_are_unknown() {
        assert!(share("mathew").given >= 1_000, "{:?}", share("mathew"));
        assert!(share("micheie").given >= 1_000);
        assert!(share("smith").surname >= 10_000);
        assert!(share("gautier").surname > 0);
        assert_eq!(share("troiking"), NameShare::default());
        assert_eq!(share("zzzzqx"), NameShare::default());
        assert_eq!(share(""), NameShare::default());
        assert_eq!(share("\u{e9}mile"), NameShare::default());
        // The first and last keys of the table are found too.
        assert!(share("ab").either() > 0);
    }

    #[test]
    fn a_handle_of_two_names_is_as_common_as_their_product() {
        let anna = share("ana").given;
        let schmidt = share("schmidt").surname;
        assert_eq!(
            namesakes_per_million("anaschmidt"),
            (u64::from(anna) * u64::from(schmidt) / 1_000_000) as u32
        );
        assert!(namesakes_per_million("vgautier") > 0);
        assert!(namesakes_per_million("vgautier") < namesakes_per_million("gautier"));
        assert!(namesakes_per_million("troiking") < 5);
        assert_eq!(namesakes_per_million("x"), 0);
    }

    #[test]
    fn a_lookup_says_whether_a_longer_name_starts_with_the_key() {
        let text = include_str!("../../../data/names/commonness.tsv");
        let keys: Vec<&str> = text
            .lines()
            .map(|l| l.split('\t').next().unwrap())
            .collect();
        for (i, key) in keys.iter().enumerate().step_by(3) {
            for probe in [
                key.to_string(),
                key[..key.len().min(3)].to_owned(),
                format!("{key}z"),
            ] {
                let has = keys.binary_search(&probe.as_str()).is_ok();
                let at = keys.partition_point(|k| *k <= probe.as_str());
                let more = keys.get(at).is_some_and(|k| k.starts_with(probe.as_str()));
                let (found, extends) = find(probe.as_bytes());
                assert_eq!(
                    (found.is_some(), extends),
                    (has, more),
                    "{probe} (near {i})"
                );
            }
        }
    }

    #[test]
    fn initials_cover_the_alphabet() {
        let total: u32 = ('a'..='z').map(initial_share).sum();
        assert!((900_000..=1_100_000).contains(&total), "{total}");
        assert!(initial_share('m') > initial_share('q'));
        assert_eq!(initial_share('1'), 0);
    }
}

#[cfg(test)]
mod against_the_text {
    use super::*;

    #[test]
    fn every_key_of_the_committed_table_is_found_with_its_shares_and_neighbours_are_not() {
        let text = include_str!("../../../data/names/commonness.tsv");
        let mut keys = std::collections::HashSet::new();
        for line in text.lines() {
            let mut f = line.split('\t');
            let key = f.next().unwrap();
            let given: u8 = f.next().unwrap().parse().unwrap();
            let surname: u8 = f.next().unwrap().parse().unwrap();
            assert_eq!(
                share(key),
                NameShare {
                    given: ppm(given),
                    surname: ppm(surname)
                },
                "{key}"
            );
            keys.insert(key);
        }
        for line in text.lines().step_by(7) {
            let key = line.split('\t').next().unwrap();
            for probe in [
                format!("{key}q"),
                key[..key.len() - 1].to_owned(),
                format!("a{key}"),
            ] {
                if !keys.contains(probe.as_str()) {
                    assert_eq!(share(&probe), NameShare::default(), "{probe}");
                }
            }
        }
    }
}
