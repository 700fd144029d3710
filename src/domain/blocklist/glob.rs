//! Globs over full user IDs, in the style of Matrix policy rules: `*` is any run of characters
//! (empty too), `?` is exactly one. Matching is iterative, in `O(pattern × id)` time at worst.

use super::postings::FastMap;
use super::EntryError;

/// Longest glob accepted, in bytes (the longest user ID).
pub const MAX_GLOB_BYTES: usize = 255;

/// Lower-cases a glob, prefixes `@` when it starts with a literal that is not one, and collapses
/// runs of `*`. Refuses globs with spaces, control characters, `#`, non-ASCII text, or with no
/// literal character besides `@ : .` (which would block nearly everyone).
pub(crate) fn normalize_glob(text: &str) -> Result<String, EntryError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(EntryError::Empty);
    }
    if text.len() > MAX_GLOB_BYTES {
        return Err(EntryError::TooLong);
    }
    if !text.bytes().all(|b| b.is_ascii_graphic() && b != b'#') {
        return Err(EntryError::GlobInvalid);
    }
    let mut out = String::with_capacity(text.len() + 1);
    if !text.starts_with(['@', '*', '?']) {
        out.push('@');
    }
    for c in text.chars().map(|c| c.to_ascii_lowercase()) {
        if !(c == '*' && out.ends_with('*')) {
            out.push(c);
        }
    }
    // The added `@` can push a glob of exactly the limit over it; the stored form must fit,
    // because the index normalises stored globs again and would drop a longer one.
    if out.len() > MAX_GLOB_BYTES {
        return Err(EntryError::TooLong);
    }
    if !out
        .bytes()
        .any(|b| !matches!(b, b'*' | b'?' | b'@' | b':' | b'.'))
    {
        return Err(EntryError::GlobTooBroad);
    }
    Ok(out)
}

/// Whether `pattern` matches all of `text`.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                resume = Some((p + 1, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match resume {
                Some((after_star, from)) => {
                    p = after_star;
                    t = from + 1;
                    resume = Some((after_star, from + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Bucket keys are at most this many bytes of a glob's literal head or tail.
const BUCKET_KEY_BYTES: usize = 16;

/// Globs bucketed so that a lookup only tries the ones that can match: a glob whose literal tail
/// (the text after its last wildcard) is at least as long as its literal head is filed under the
/// last bytes of that tail, any other under the first bytes of its head, and a glob with neither
/// goes to a short residual list. An ID can only match a glob filed under its own last (or first)
/// `n` bytes, for one of the few key lengths `n` in use.
#[derive(Debug, Default)]
pub(crate) struct GlobSet {
    globs: Vec<(u32, Box<[u8]>)>,
    tails: FastMap<Box<[u8]>, Vec<u32>>,
    tail_lens: Vec<usize>,
    heads: FastMap<Box<[u8]>, Vec<u32>>,
    head_lens: Vec<usize>,
    residual: Vec<u32>,
}

impl GlobSet {
    /// `globs` are `(entry index, normalised pattern)`, in entry order.
    pub(crate) fn build(globs: Vec<(u32, Box<[u8]>)>) -> GlobSet {
        let mut set = GlobSet::default();
        for (slot, (_, pattern)) in globs.iter().enumerate() {
            let slot = slot as u32;
            let head = pattern
                .iter()
                .position(|&b| b == b'*' || b == b'?')
                .unwrap_or(pattern.len());
            let tail = pattern
                .iter()
                .rev()
                .position(|&b| b == b'*' || b == b'?')
                .unwrap_or(pattern.len());
            if head == 0 && tail == 0 {
                set.residual.push(slot);
            } else if tail >= head {
                let n = tail.min(BUCKET_KEY_BYTES);
                let key = &pattern[pattern.len() - n..];
                set.tails.entry(key.into()).or_default().push(slot);
                if !set.tail_lens.contains(&n) {
                    set.tail_lens.push(n);
                }
            } else {
                let n = head.min(BUCKET_KEY_BYTES);
                set.heads.entry(pattern[..n].into()).or_default().push(slot);
                if !set.head_lens.contains(&n) {
                    set.head_lens.push(n);
                }
            }
        }
        set.globs = globs;
        set
    }

    pub(crate) fn len(&self) -> usize {
        self.globs.len()
    }

    /// The entry index of the earliest glob that matches `id` (already lower-cased).
    pub(crate) fn first_match(&self, id: &[u8]) -> Option<u32> {
        let mut best: Option<u32> = None;
        let mut consider = |slot: u32| {
            if best.is_some_and(|b| b <= slot) {
                return;
            }
            if let Some((_, pattern)) = self.globs.get(slot as usize) {
                if glob_match(pattern, id) {
                    best = Some(slot);
                }
            }
        };
        for &n in &self.tail_lens {
            if let Some(slots) = id
                .get(id.len().wrapping_sub(n)..)
                .and_then(|k| self.tails.get(k))
            {
                slots.iter().for_each(|&s| consider(s));
            }
        }
        for &n in &self.head_lens {
            if let Some(slots) = id.get(..n).and_then(|k| self.heads.get(k)) {
                slots.iter().for_each(|&s| consider(s));
            }
        }
        self.residual.iter().for_each(|&s| consider(s));
        best.and_then(|slot| self.globs.get(slot as usize))
            .map(|(entry, _)| *entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_glob_at_the_limit_that_needs_its_sigil_is_refused_rather_than_stored_too_long() {
        // 255 bytes typed without `@`: the stored form would be 256 bytes, which normalising
        // again refuses, so the index would silently drop the entry.
        let typed = format!("{}x:*", "x*".repeat(126));
        assert_eq!(typed.len(), MAX_GLOB_BYTES);
        assert_eq!(normalize_glob(&typed), Err(EntryError::TooLong));
        // With its `@` typed, the same glob fits, and normalising it again gives it back.
        let with_sigil = format!("@{}", &typed[1..]);
        let stored = normalize_glob(&with_sigil).unwrap();
        assert_eq!(stored.len(), MAX_GLOB_BYTES);
        assert_eq!(normalize_glob(&stored), Ok(stored.clone()));
    }
}
