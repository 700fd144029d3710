//! The reference matcher: every rule applied to every entry, one entry after another, with the
//! edit distance to every entry's family key computed in full before its allowance is applied,
//! and every match graded before the strongest is kept. It defines what
//! [`BlockIndex`](super::BlockIndex) must answer (tests check they agree on random lists) and is
//! the naive baseline of the benchmark. Far too slow for large lists.

use super::evidence::{self, beats, effective_reach, near_key, EntryReading, Found};
use super::glob::{glob_match, normalize_glob};
use super::normalize::{
    allowed_distance, display_name_readings, near_allowance, osa_distance, readings, Allowance,
    Reading,
};
use super::policy::{Namesakes, Policy, Reach};
use super::{Entry, EntryKind, MatchRule, Verdict};
use crate::domain::mxid::UserId;
use std::borrow::Cow;

enum Prepared {
    Id {
        full: String,
        readings: Vec<Reading>,
        reach: Reach,
    },
    Glob(Vec<u8>),
    Name {
        readings: Vec<Reading>,
        reach: Reach,
    },
    Unusable,
}

pub struct LinearScan<'a> {
    entries: &'a [Entry],
    policy: Policy,
    prepared: Vec<Prepared>,
}

impl<'a> LinearScan<'a> {
    pub fn new(entries: &'a [Entry]) -> LinearScan<'a> {
        LinearScan::with_policy(entries, Policy::default())
    }

    pub fn with_policy(entries: &'a [Entry], policy: Policy) -> LinearScan<'a> {
        let prepared = entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::UserId => match UserId::parse(&e.pattern) {
                    Ok(id) => {
                        let readings = readings(id.localpart());
                        Prepared::Id {
                            full: id.as_str().to_ascii_lowercase(),
                            reach: effective_reach(e, readings.first(), &policy),
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
                    let readings = display_name_readings(&e.pattern);
                    if readings.first().is_some_and(|r| !r.key.is_empty()) {
                        Prepared::Name {
                            reach: effective_reach(e, readings.first(), &policy),
                            readings,
                        }
                    } else {
                        Prepared::Unusable
                    }
                }
            })
            .collect();
        LinearScan {
            entries,
            policy,
            prepared,
        }
    }

    pub fn check_user(&self, user: &UserId) -> Option<Verdict<'a>> {
        let full = user.as_str().to_ascii_lowercase();
        let candidate = user.as_str();
        for (i, p) in self.prepared.iter().enumerate() {
            if let Prepared::Id { full: f, .. } = p {
                if *f == full {
                    return Verdict::plain(
                        self.entries.get(i).map(Cow::Borrowed),
                        i,
                        MatchRule::Exact,
                        candidate,
                        &full,
                        &full,
                    );
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
                    return Verdict::plain(
                        self.entries.get(i).map(Cow::Borrowed),
                        i,
                        MatchRule::Glob,
                        candidate,
                        &full,
                        &pattern,
                    );
                }
            }
        }
        let readings = readings(user.localpart());
        self.fuzzy(
            EntryKind::UserId,
            &readings,
            candidate,
            MatchRule::Family,
            near_allowance,
            |p| match p {
                Prepared::Id {
                    readings, reach, ..
                } if *reach >= Reach::Family => Some((readings, *reach)),
                _ => None,
            },
        )
    }

    pub fn check_display_name(&self, name: &str) -> Option<Verdict<'a>> {
        let readings = display_name_readings(name);
        self.fuzzy(
            EntryKind::DisplayName,
            &readings,
            name,
            MatchRule::DisplayName,
            allowed_distance,
            |p| match p {
                Prepared::Name { readings, reach } => Some((readings, *reach)),
                _ => None,
            },
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn fuzzy(
        &self,
        kind: EntryKind,
        readings: &[Reading],
        candidate: &str,
        same: MatchRule,
        allowance: Allowance,
        keys_of: impl Fn(&Prepared) -> Option<(&Vec<Reading>, Reach)>,
    ) -> Option<Verdict<'a>> {
        let mut best: Option<(usize, Found<'_>)> = None;
        let mut memo = Namesakes::default();
        fn consider<'f>(i: usize, found: Found<'f>, best: &mut Option<(usize, Found<'f>)>) {
            let current = best.as_ref().map(|(bi, f)| (&f.grade, f.rule, *bi));
            if beats(&found.grade, found.rule, i, current) {
                *best = Some((i, found));
            }
        }
        for (i, p) in self.prepared.iter().enumerate() {
            let Some((theirs, reach)) = keys_of(p) else {
                continue;
            };
            let entry_readings = theirs.iter().map(EntryReading::of);
            if let Some(found) = evidence::family(
                &self.policy,
                kind,
                same,
                readings,
                entry_readings,
                &mut memo,
            ) {
                consider(i, found, &mut best);
            }
            if reach < Reach::Fuzzy {
                continue;
            }
            let (Some(mine), Some(primary)) = (readings.first(), theirs.first()) else {
                continue;
            };
            let entry = EntryReading::of(primary);
            let (a, b) = (near_key(mine, kind), entry.near_key(kind));
            if a.is_empty() || b.is_empty() {
                continue;
            }
            let a: Vec<char> = a.chars().collect();
            let b: Vec<char> = b.chars().collect();
            let d = osa_distance(&a, &b);
            if d >= 1 && d <= allowance(b.len()) {
                if let Some(found) = evidence::near(&self.policy, kind, mine, entry, d, &mut memo) {
                    consider(i, found, &mut best);
                }
            }
        }
        let (i, found) = best?;
        Verdict::found(self.entries.get(i).map(Cow::Borrowed), i, candidate, found)
    }
}
