//! The reference matcher: every rule applied to every entry, one entry after another, with the
//! edit distance to every entry's family key computed in full before its allowance is applied.
//! It defines what [`BlockIndex`](super::BlockIndex) must answer (tests check they agree on
//! random lists) and is the naive baseline of the benchmark. Far too slow for large lists.

use super::glob::{glob_match, normalize_glob};
use super::normalize::{allowed_distance, display_readings, family_readings, osa_distance};
use super::{Entry, EntryKind, MatchRule, Verdict};
use crate::domain::mxid::UserId;

enum Prepared {
    Id {
        full: String,
        readings: Vec<String>,
        key_chars: Vec<char>,
    },
    Glob(Vec<u8>),
    Name {
        readings: Vec<String>,
        key_chars: Vec<char>,
    },
    Unusable,
}

fn key_chars(readings: &[String]) -> Vec<char> {
    readings
        .first()
        .map(|k| k.chars().collect())
        .unwrap_or_default()
}

pub struct LinearScan<'a> {
    entries: &'a [Entry],
    prepared: Vec<Prepared>,
}

impl<'a> LinearScan<'a> {
    pub fn new(entries: &'a [Entry]) -> LinearScan<'a> {
        let prepared = entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::UserId => match UserId::parse(&e.pattern) {
                    Ok(id) => {
                        let readings = family_readings(id.localpart());
                        Prepared::Id {
                            full: id.as_str().to_ascii_lowercase(),
                            key_chars: key_chars(&readings),
                            readings,
                        }
                    }
                    Err(_) => Prepared::Unusable,
                },
                EntryKind::Glob => match normalize_glob(&e.pattern) {
                    Ok(p) => Prepared::Glob(p.into_bytes()),
                    Err(_) => Prepared::Unusable,
                },
                EntryKind::DisplayName => {
                    let readings = display_readings(&e.pattern);
                    Prepared::Name {
                        key_chars: key_chars(&readings),
                        readings,
                    }
                }
            })
            .collect();
        LinearScan { entries, prepared }
    }

    pub fn check_user(&self, user: &UserId) -> Option<Verdict<'a>> {
        let full = user.as_str().to_ascii_lowercase();
        let candidate = user.as_str();
        for (i, p) in self.prepared.iter().enumerate() {
            if let Prepared::Id { full: f, .. } = p {
                if *f == full {
                    return self.verdict(i, MatchRule::Exact, candidate, &full, &full);
                }
            }
        }
        for (i, p) in self.prepared.iter().enumerate() {
            if let Prepared::Glob(g) = p {
                if glob_match(g, full.as_bytes()) {
                    let pattern = self
                        .entries
                        .get(i)
                        .map(|e| e.pattern.clone())
                        .unwrap_or_default();
                    return self.verdict(i, MatchRule::Glob, candidate, &full, &pattern);
                }
            }
        }
        let readings = family_readings(user.localpart());
        self.fuzzy(&readings, candidate, MatchRule::Family, |p| match p {
            Prepared::Id { readings, .. } => Some(readings),
            _ => None,
        })
    }

    pub fn check_display_name(&self, name: &str) -> Option<Verdict<'a>> {
        let readings = display_readings(name);
        self.fuzzy(&readings, name, MatchRule::DisplayName, |p| match p {
            Prepared::Name { readings, .. } => Some(readings),
            _ => None,
        })
    }

    fn fuzzy(
        &self,
        readings: &[String],
        candidate: &str,
        same: MatchRule,
        keys_of: impl Fn(&Prepared) -> Option<&Vec<String>>,
    ) -> Option<Verdict<'a>> {
        for (i, p) in self.prepared.iter().enumerate() {
            let Some(theirs) = keys_of(p) else { continue };
            if let Some(r) = readings
                .iter()
                .find(|r| !r.is_empty() && theirs.contains(r))
            {
                return self.verdict(i, same, candidate, r, r);
            }
        }
        let key = readings.first()?;
        let chars: Vec<char> = key.chars().collect();
        let mut best: Option<(usize, usize, &str)> = None;
        for (i, p) in self.prepared.iter().enumerate() {
            let Some(blocked) = keys_of(p).and_then(|k| k.first()) else {
                continue;
            };
            let blocked_chars = match p {
                Prepared::Id { key_chars, .. } | Prepared::Name { key_chars, .. } => key_chars,
                _ => continue,
            };
            let d = osa_distance(&chars, blocked_chars);
            if d >= 1
                && d <= allowed_distance(blocked_chars.len())
                && best.is_none_or(|(bd, _, _)| d < bd)
            {
                best = Some((d, i, blocked));
            }
        }
        let (d, i, blocked) = best?;
        self.verdict(i, MatchRule::Distance(d as u8), candidate, key, blocked)
    }

    fn verdict(
        &self,
        index: usize,
        rule: MatchRule,
        candidate: &str,
        candidate_key: &str,
        entry_key: &str,
    ) -> Option<Verdict<'a>> {
        Verdict::at(
            self.entries,
            index,
            rule,
            candidate,
            candidate_key,
            entry_key,
        )
    }
}
