//! Normalisation: the family key of a name, the folded form of free text, and edit distance.
//!
//! Family key, in this order:
//! 1. lower-case; the leet symbols `$ @ | !` become `s a i i`; every other character that is not
//!    a letter or digit (the separators `. _ - = / +`, spaces, punctuation) is dropped;
//! 2. runs of ASCII digits at either end are stripped (`2troll`, `troll2024`), unless nothing but
//!    digits is left, in which case they are all kept and read as leet;
//! 3. the remaining leet digits become letters (`0→o 1→i 2→z 3→e 4→a 5→s 6→g 7→t 8→b 9→g`), and
//!    `l` becomes `i`, so that `1 l i | !` all collide;
//! 4. runs of one repeated character collapse to one (`trooolll` reads as `troi`).
//!
//! Stripping comes before leet mapping because a digit glued to the end of a name is far more often
//! a counter than a letter. A digit that touches the letters may still be a letter (`7roll`), so a
//! name also has a few alternative *readings*: the innermost digit of each end run kept and read
//! as a letter, or the whole run kept. The family key is the first reading, with every end run
//! stripped.
//!
//! Free text (display names) is first folded: lower-cased (before the skeleton, so that `ALICE`
//! and `alice` fold alike even though TS #39 maps capital `I` to `l`), fullwidth and circled Latin
//! letters made plain, mapped to the Unicode TS #39 confusables skeleton and lower-cased again,
//! repeated until nothing changes; then only letters and digits are kept (diacritics, which the
//! skeleton splits off, go with punctuation, emoji and spaces). Its family key is then taken as
//! for a localpart.

use unicode_security::skeleton;

/// Family keys longer than this take part in exact family matching only, never in near misses:
/// it bounds the work one very long name can cause.
pub const MAX_FUZZY_KEY_CHARS: usize = 32;

/// How many edits (optimal string alignment) a near miss may be from a blocked family key of
/// `len` characters: 0 up to 5, 1 from 6 to 9, 2 from 10 to [`MAX_FUZZY_KEY_CHARS`].
pub fn allowed_distance(len: usize) -> usize {
    match len {
        0..=5 => 0,
        6..=9 => 1,
        10..=MAX_FUZZY_KEY_CHARS => 2,
        _ => 0,
    }
}

/// How many edits away near misses of a user ID are looked for, by the length of its spelling
/// (the family key with double letters kept, so that `santonelbi` is one edit from `santonelli`
/// although their family keys are two apart): 1 from 3 to 9 characters, 2 from 10 to
/// [`MAX_FUZZY_KEY_CHARS`]. On short keys a near miss counts only together with the same counter
/// (see the policy).
pub fn near_allowance(len: usize) -> usize {
    match len {
        0..=2 => 0,
        3..=9 => 1,
        10..=MAX_FUZZY_KEY_CHARS => 2,
        _ => 0,
    }
}

/// How far near misses of a key may be, by its length: [`allowed_distance`] for display names,
/// [`near_allowance`] for user IDs.
pub(crate) type Allowance = fn(usize) -> usize;

/// How many deletions a candidate key of `len` characters needs to meet every blocked key it may
/// be a near miss of, or `None` when it can be a near miss of none. Against a blocked key of `m`
/// characters and allowance `a`, a match keeps a common subsequence of at least `m - a`
/// characters, so the candidate gives up at most `min(a, len + a - m)` of its own.
pub(crate) fn probe_depth(len: usize, allowance: Allowance) -> Option<usize> {
    (len.saturating_sub(2)..=len + 2)
        .filter_map(|m| {
            let a = allowance(m);
            (a > 0 && m.abs_diff(len) <= a).then(|| a.min((len + a).saturating_sub(m)))
        })
        .max()
}

fn letter_for(c: char) -> char {
    match c {
        '0' => 'o',
        '1' | 'l' => 'i',
        '2' => 'z',
        '3' => 'e',
        '4' => 'a',
        '5' => 's',
        '6' | '9' => 'g',
        '7' => 't',
        '8' => 'b',
        other => other,
    }
}

fn clean(s: &str) -> Vec<char> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        match c {
            '$' => out.push('s'),
            '@' => out.push('a'),
            '|' | '!' => out.push('i'),
            c if c.is_alphanumeric() => out.push(c),
            _ => {}
        }
    }
    out
}

fn finish(chars: &[char]) -> String {
    let mut out = String::with_capacity(chars.len());
    let mut last = None;
    for &c in chars {
        let c = letter_for(c);
        if last != Some(c) {
            out.push(c);
            last = Some(c);
        }
    }
    out
}

/// [`finish`] with runs of one character kept up to two long instead of collapsed: the form near
/// misses of user IDs are measured on, so that an edit next to a double letter stays one edit
/// (`santonelli`, `santonelbi`).
fn spell(chars: &[char]) -> String {
    let mut out = String::with_capacity(chars.len());
    let (mut last, mut run) = (None, 0);
    for &c in chars {
        let c = letter_for(c);
        if last == Some(c) {
            run += 1;
        } else {
            (last, run) = (Some(c), 1);
        }
        if run <= 2 {
            out.push(c);
        }
    }
    out
}

/// The digit-free middle of `chars`, as `(start, end)`: where the end runs of ASCII digits stop.
/// `None` when nothing but digits (or nothing at all) is there.
fn core_bounds(chars: &[char]) -> Option<(usize, usize)> {
    let lead = chars.iter().take_while(|c| c.is_ascii_digit()).count();
    if lead == chars.len() {
        return None;
    }
    let trail = chars
        .iter()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .count();
    Some((lead, chars.len() - trail))
}

/// The family key of a localpart (or of any name): the canonical reading described in the module
/// doc. Idempotent. Empty when the name has no letters or digits at all.
pub fn family_key(name: &str) -> String {
    let chars = clean(name);
    match core_bounds(&chars) {
        Some((start, end)) => finish(&chars[start..end]),
        None => finish(&chars),
    }
}

/// The digits a reading leaves outside it at either end: a counter (`troll2024`, `2troll`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Counter {
    pub lead: String,
    pub trail: String,
}

impl Counter {
    pub fn is_empty(&self) -> bool {
        self.lead.is_empty() && self.trail.is_empty()
    }
}

impl std::fmt::Display for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.lead.is_empty(), self.trail.is_empty()) {
            (false, false) => write!(f, "{}\u{2026}{}", self.lead, self.trail),
            (false, true) => f.write_str(&self.lead),
            _ => f.write_str(&self.trail),
        }
    }
}

/// One reading of a name: its key, the counter left outside it, whether it reads a digit inside
/// the name as a letter (`m4tthew`: people do not write their own names that way), and its
/// spelling (the key with double letters kept, see [`near_allowance`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub key: String,
    pub counter: Counter,
    pub leet: bool,
    pub spelling: String,
}

/// Every reading of a name with its counter, the family key first, without repeated keys (at
/// most nine; of two readings with one key, the first is kept).
pub fn readings(name: &str) -> Vec<Reading> {
    let chars = clean(name);
    let digits = |r: &[char]| r.iter().collect::<String>();
    let Some((start, end)) = core_bounds(&chars) else {
        return vec![Reading {
            key: finish(&chars),
            counter: Counter::default(),
            leet: !chars.is_empty(),
            spelling: spell(&chars),
        }];
    };
    let (starts, from) = if start > 0 {
        ([start, start - 1, 0], 3)
    } else {
        ([start; 3], 1)
    };
    let (ends, to) = if end < chars.len() {
        ([end, end + 1, chars.len()], 3)
    } else {
        ([end; 3], 1)
    };
    let mut out: Vec<Reading> = Vec::with_capacity(from * to);
    for &s in &starts[..from] {
        for &e in &ends[..to] {
            let key = finish(&chars[s..e]);
            if !out.iter().any(|r| r.key == key) {
                out.push(Reading {
                    key,
                    counter: Counter {
                        lead: digits(&chars[..s]),
                        trail: digits(&chars[e..]),
                    },
                    leet: chars[s..e].iter().any(char::is_ascii_digit),
                    spelling: spell(&chars[s..e]),
                });
            }
        }
    }
    out
}

/// Every reading of a name, the family key first, without repeats (at most nine).
pub fn family_readings(name: &str) -> Vec<String> {
    readings(name).into_iter().map(|r| r.key).collect()
}

fn compatibility_letter(c: char) -> char {
    let code = c as u32;
    let mapped = match code {
        0xFF01..=0xFF5E => code - 0xFEE0,
        0x24B6..=0x24CF => code - 0x24B6 + u32::from(b'a'),
        0x24D0..=0x24E9 => code - 0x24D0 + u32::from(b'a'),
        _ => code,
    };
    char::from_u32(mapped).unwrap_or(c)
}

fn fold_step(s: &str) -> String {
    let plain: String = s
        .chars()
        .flat_map(char::to_lowercase)
        .map(compatibility_letter)
        .collect();
    skeleton(&plain)
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// Folds free text for matching: lower case, look-alikes to their TS #39 prototype, lower case
/// again, and only letters and digits kept. Idempotent.
pub fn fold_free_text(s: &str) -> String {
    let mut current = fold_step(s);
    for _ in 0..8 {
        let next = fold_step(&current);
        if next == current {
            break;
        }
        current = next;
    }
    current
}

/// The readings of a display name: [`family_readings`] of its folded form.
pub fn display_readings(name: &str) -> Vec<String> {
    family_readings(&fold_free_text(name))
}

/// [`readings`] of a display name's folded form.
pub fn display_name_readings(name: &str) -> Vec<Reading> {
    readings(&fold_free_text(name))
}

/// Rows of up to this many cells live on the stack.
const STACK_ROW: usize = 48;

/// Optimal string alignment distance (Damerau-Levenshtein where no substring is edited twice).
pub fn osa_distance<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let width = b.len() + 1;
    if width <= STACK_ROW {
        let mut rows = [[0usize; STACK_ROW]; 3];
        let [x, y, z] = &mut rows;
        osa_rows(a, b, &mut x[..width], &mut y[..width], &mut z[..width])
    } else {
        osa_rows(
            a,
            b,
            &mut vec![0; width],
            &mut vec![0; width],
            &mut vec![0; width],
        )
    }
}

fn osa_rows<'r, T: PartialEq>(
    a: &[T],
    b: &[T],
    mut before: &'r mut [usize],
    mut prev: &'r mut [usize],
    mut row: &'r mut [usize],
) -> usize {
    for (j, cell) in prev.iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        row[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (prev[j] + 1).min(row[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            row[j] = best;
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

/// The near-miss distance of a candidate key from a blocked key, when it is within the blocked
/// key's allowance and not zero.
pub(crate) fn near_miss<T: PartialEq>(
    candidate: &[T],
    blocked: &[T],
    allowance: Allowance,
) -> Option<usize> {
    let allowed = allowance(blocked.len());
    if allowed == 0 || candidate.len().abs_diff(blocked.len()) > allowed {
        return None;
    }
    let d = osa_distance(candidate, blocked);
    (d >= 1 && d <= allowed).then_some(d)
}

/// [`near_miss`] of two keys as text, compared byte by byte when both are ASCII.
pub(crate) fn near_miss_str(candidate: &str, blocked: &str, allowance: Allowance) -> Option<usize> {
    if candidate.is_ascii() && blocked.is_ascii() {
        near_miss(candidate.as_bytes(), blocked.as_bytes(), allowance)
    } else {
        let a: Vec<char> = candidate.chars().collect();
        let b: Vec<char> = blocked.chars().collect();
        near_miss(&a, &b, allowance)
    }
}

const HASH_BASE: u64 = 0x9e37_79b9_7f4a_7c15 | 1;

fn mix(mut h: u64) -> u32 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h >> 32) as u32
}

fn digit(c: char) -> u64 {
    u64::from(c) + 1
}

/// A 32-bit hash of a key: a polynomial over its characters (so that the hash of any deletion
/// can be had from prefix sums in constant time, see [`deletion_hashes`]), then mixed. The index
/// hashes through [`hash_parts`], which agrees with it on one part; this is for tests.
#[cfg(test)]
pub(crate) fn hash_key(s: &str) -> u32 {
    mix(s.chars().fold(0u64, |h, c| {
        h.wrapping_mul(HASH_BASE).wrapping_add(digit(c))
    }))
}

/// [`hash_key`] of the parts joined by a character no key contains, without joining them.
pub(crate) fn hash_parts(parts: &[&str]) -> u32 {
    let mut h = 0u64;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h = h.wrapping_mul(HASH_BASE).wrapping_add(digit('\u{1}'));
        }
        h = part
            .chars()
            .fold(h, |h, c| h.wrapping_mul(HASH_BASE).wrapping_add(digit(c)));
    }
    mix(h)
}

/// Hashes of every string made by deleting up to `depth` (at most 2) characters from `chars`,
/// the string itself included. Equal strings hash equally whichever positions produced them, so
/// the list may repeat a hash.
pub(crate) fn deletion_hashes(chars: &[char], depth: usize, out: &mut Vec<u32>) {
    let n = chars.len();
    let mut stack = [[0u64; STACK_ROW]; 2];
    let mut heap;
    let [prefix, power] = if n < STACK_ROW {
        let [a, b] = &mut stack;
        [&mut a[..=n], &mut b[..=n]]
    } else {
        heap = [vec![0u64; n + 1], vec![0u64; n + 1]];
        let [a, b] = &mut heap;
        [&mut a[..], &mut b[..]]
    };
    power[0] = 1;
    for (k, &c) in chars.iter().enumerate() {
        prefix[k + 1] = prefix[k].wrapping_mul(HASH_BASE).wrapping_add(digit(c));
        power[k + 1] = power[k].wrapping_mul(HASH_BASE);
    }
    let span = |a: usize, b: usize| prefix[b].wrapping_sub(prefix[a].wrapping_mul(power[b - a]));
    out.clear();
    out.push(mix(prefix[n]));
    if depth >= 1 {
        for i in 0..n {
            let head = span(0, i);
            out.push(mix(head
                .wrapping_mul(power[n - 1 - i])
                .wrapping_add(span(i + 1, n))));
            if depth >= 2 {
                for j in i + 1..n {
                    out.push(mix(head
                        .wrapping_mul(power[n - 2 - i])
                        .wrapping_add(span(i + 1, j).wrapping_mul(power[n - 1 - j]))
                        .wrapping_add(span(j + 1, n))));
                }
            }
        }
    }
}
