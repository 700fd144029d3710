//! The evidence of one candidate against one entry, as both matchers (the index and the linear
//! reference) compute it, so that they agree by construction on everything but which entries
//! they look at.
//!
//! Decides: for a family match, which pair of readings is the best evidence (every pair of equal
//! keys is graded; the best grade wins, then the earliest pair); for a near miss, the facts the
//! policy weighs; how two matches rank (outcome, then rule, then the earlier entry).

use super::normalize::{Counter, Reading};
use super::policy::{CounterMatch, Evidence, Grade, Namesakes, Policy, Reach};
use super::{Entry, EntryKind, MatchRule};

/// One reading of an entry as the index keeps it: key and counter as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryReading<'a> {
    pub key: &'a str,
    pub lead: &'a str,
    pub trail: &'a str,
    pub spelling: &'a str,
}

impl<'a> EntryReading<'a> {
    pub(crate) fn of(r: &'a Reading) -> EntryReading<'a> {
        EntryReading {
            key: &r.key,
            lead: &r.counter.lead,
            trail: &r.counter.trail,
            spelling: &r.spelling,
        }
    }

    /// What near misses are measured on: the spelling for user IDs, the key for display names.
    pub(crate) fn near_key(&self, kind: EntryKind) -> &'a str {
        if kind == EntryKind::UserId {
            self.spelling
        } else {
            self.key
        }
    }
}

/// [`EntryReading::near_key`] of a candidate's reading.
pub(crate) fn near_key(r: &Reading, kind: EntryKind) -> &str {
    if kind == EntryKind::UserId {
        &r.spelling
    } else {
        &r.key
    }
}

pub(crate) fn counter_match(candidate: &Counter, lead: &str, trail: &str) -> CounterMatch {
    let empty = lead.is_empty() && trail.is_empty();
    if candidate.lead == lead && candidate.trail == trail {
        if empty {
            CounterMatch::Neither
        } else {
            CounterMatch::Shared
        }
    } else {
        CounterMatch::Differs
    }
}

/// A graded match of a candidate against one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found<'a> {
    pub rule: MatchRule,
    pub grade: Grade,
    pub evidence: Evidence,
    pub candidate_key: &'a str,
    pub entry_key: &'a str,
}

fn key_chars(key: &str) -> u8 {
    key.chars().count().min(usize::from(u8::MAX)) as u8
}

/// The best family match of `candidate`'s readings against an entry's, if any pair of keys is
/// equal and grades as evidence.
///
/// A reading that keeps an edge digit as a letter (`7roll`) is leet evidence only against the
/// entry's own family key and when the counters then agree, and the name is as common as the
/// commoner of the two keys. When both sides carry counters and they still differ, the digit
/// may as well be a counter (`paul48` against `paula79`, `miro71` against `mir078`): two names
/// and two numbers, no evidence, unless the candidate writes digits inside the name too
/// (`7r0llk1ng99`). Against a name with no counter (`alic3_01` for `alice`) it still counts.
/// Two such readings are never compared with each other: both sides read digits as letters,
/// which says nothing their family keys do not.
///
/// The grade of a pair depends only on the candidate, the entry reading's key and counter
/// (the candidate's, none, or another), and whether that reading is the entry's family key; the
/// index files its tables by exactly that.
pub(crate) fn family<'a, 'b>(
    policy: &Policy,
    kind: EntryKind,
    same: MatchRule,
    candidate: &'b [Reading],
    entry: impl Iterator<Item = EntryReading<'a>> + Clone,
    memo: &mut Namesakes,
) -> Option<Found<'b>>
where
    'a: 'b,
{
    let mut best: Option<Found<'b>> = None;
    let inner_leet = candidate.first().is_some_and(|r| r.leet);
    let candidate_primary = candidate.first().map_or("", |r| r.key.as_str());
    for (ci, c) in candidate
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.key.is_empty())
    {
        for (ei, e) in entry.clone().enumerate() {
            if e.key != c.key || (ci > 0 && ei > 0) {
                continue;
            }
            let counter = counter_match(&c.counter, e.lead, e.trail);
            let entry_counted = !e.lead.is_empty() || !e.trail.is_empty();
            let both_counted = !c.counter.is_empty() && entry_counted;
            if (ci > 0 || ei > 0) && counter == CounterMatch::Differs && both_counted && !inner_leet
            {
                continue;
            }
            let edge_leet = ci > 0 && c.leet && counter != CounterMatch::Differs;
            let evidence = Evidence {
                counter,
                leet: inner_leet || edge_leet,
                first_letter_differs: false,
                last_letter_differs: false,
                last_letter_replaced: false,
                shared_digits: shared_digits(counter, &c.counter),
                key_chars: key_chars(e.key),
                candidate_counter: !c.counter.is_empty(),
            };
            let grade = if ci > 0 {
                policy.grade(
                    kind,
                    same,
                    &evidence,
                    &[e.key, candidate_primary],
                    &c.key,
                    memo,
                )
            } else {
                policy.grade(kind, same, &evidence, &[e.key], &c.key, memo)
            };
            let Some(grade) = grade else {
                continue;
            };
            if best
                .as_ref()
                .is_none_or(|b| grade.outcome > b.grade.outcome)
            {
                best = Some(Found {
                    rule: same,
                    grade,
                    evidence,
                    candidate_key: &c.key,
                    entry_key: e.key,
                });
            }
        }
    }
    best
}

/// The near-miss match of a candidate's family reading against an entry's, `d` edits apart on
/// their [`near_key`]s (already known to be within the entry's allowance), if it grades as
/// evidence.
pub(crate) fn near<'a>(
    policy: &Policy,
    kind: EntryKind,
    candidate: &'a Reading,
    entry: EntryReading<'a>,
    d: usize,
    memo: &mut Namesakes,
) -> Option<Found<'a>> {
    let rule = MatchRule::Distance(d.min(usize::from(u8::MAX)) as u8);
    let (mine, theirs) = (near_key(candidate, kind), entry.near_key(kind));
    let counter = counter_match(&candidate.counter, entry.lead, entry.trail);
    let evidence = Evidence {
        counter,
        leet: candidate.leet,
        first_letter_differs: d == 1 && edit_at_start(mine, theirs),
        last_letter_differs: d == 1 && edit_at_end(mine, theirs),
        last_letter_replaced: d == 1 && last_replaced(mine, theirs),
        shared_digits: shared_digits(counter, &candidate.counter),
        key_chars: key_chars(entry.spelling),
        candidate_counter: !candidate.counter.is_empty(),
    };
    let grade = policy.grade(kind, rule, &evidence, &[entry.key], &candidate.key, memo)?;
    Some(Found {
        rule,
        grade,
        evidence,
        candidate_key: mine,
        entry_key: theirs,
    })
}

/// Whether `a` and `b` differ only at their first letter: replaced, added or dropped.
fn edit_at_start(a: &str, b: &str) -> bool {
    fn rest(s: &str) -> &str {
        s.char_indices().nth(1).map_or("", |(i, _)| &s[i..])
    }
    rest(a) == rest(b) || rest(a) == b || a == rest(b)
}

/// `s` without its last letter.
fn init(s: &str) -> &str {
    s.char_indices().last().map_or("", |(i, _)| &s[..i])
}

/// Whether `a` and `b` differ only at their last letter: replaced, added or dropped.
fn edit_at_end(a: &str, b: &str) -> bool {
    init(a) == init(b) || init(a) == b || a == init(b)
}

/// Whether `a` and `b` differ only in their last letter, replaced (not added or dropped).
fn last_replaced(a: &str, b: &str) -> bool {
    a != b && a.chars().count() == b.chars().count() && init(a) == init(b)
}

/// Digits of the counter a candidate shares with an entry; 0 when they share none.
fn shared_digits(counter: CounterMatch, candidate: &Counter) -> u8 {
    if counter == CounterMatch::Shared {
        (candidate.lead.len() + candidate.trail.len()).min(usize::from(u8::MAX)) as u8
    } else {
        0
    }
}

/// How strong a rule is among matches of one outcome.
pub(crate) fn rule_rank(rule: MatchRule) -> u8 {
    match rule {
        MatchRule::Exact => 200,
        MatchRule::Glob => 199,
        MatchRule::Family | MatchRule::DisplayName => 198,
        MatchRule::Distance(d) => 197u8.saturating_sub(d),
    }
}

/// Whether a match of `rule` and `grade` on entry `index` beats the current best.
pub(crate) fn beats(
    grade: &Grade,
    rule: MatchRule,
    index: usize,
    best: Option<(&Grade, MatchRule, usize)>,
) -> bool {
    match best {
        None => true,
        Some((g, r, i)) => {
            let ours = (grade.outcome, rule_rank(rule));
            let theirs = (g.outcome, rule_rank(r));
            ours > theirs || (ours == theirs && index < i)
        }
    }
}

/// The reach of an entry: its own, or the policy's default for its primary reading.
pub(crate) fn effective_reach(entry: &Entry, primary: Option<&Reading>, policy: &Policy) -> Reach {
    entry.reach.unwrap_or_else(|| match primary {
        Some(r) => policy.default_reach(entry.kind, &r.key, &r.spelling, !r.counter.is_empty()),
        None => Reach::Exact,
    })
}
