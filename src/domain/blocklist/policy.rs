//! The block-list policy: how strong the evidence of a match is, and what follows from it.
//!
//! Decides: for one match between a candidate and an entry, one of three [`Outcome`]s and the
//! reason ([`Why`]): **block** (the same ID, a glob, or evidence no namesake would leave: the same
//! counter, digits written for letters, a distinctive name spelled otherwise); **hold** (weak
//! evidence: only the counter differs, only the spelling differs on a short or common name, only
//! the initial at either end differs, a near miss two edits away; a moderator decides); or nothing (an honest namesake is likelier than an
//! evasion, e.g. a near miss that is itself a common name). How common a name is comes from
//! [`super::commonness`]. Also: which [`Reach`] an entry has when it names none, what a knock a
//! moderator approved gets ([`Outcome::for_knock`]), and what the member scan does
//! ([`Outcome::for_member`]). Thresholds are [`Policy`] settings with documented defaults, read
//! from `BLOCKLIST_*` variables by [`Policy::from_vars`] (in [`super::settings`]).
//!
//! Never does: matching (the index finds the evidence), IO, or clock reads.

use serde::{Deserialize, Serialize};

use super::commonness::{namesakes_per_million, share};
use super::normalize::allowed_distance;
pub use super::settings::{Policy, SettingError, SETTINGS};
use super::{EntryKind, MatchRule};

/// What a match leads to. Ordered: `Allow < Hold < Block`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Hold,
    Block,
}

/// What the block-list scan does with a member.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MemberAction {
    /// Block-level evidence: kick or ban, as configured.
    Remove,
    /// Hold-level evidence: tell the moderators, touch nothing.
    Report,
    Keep,
}

impl Outcome {
    /// What a knock gets once a moderator approved it: approval overrides hold-level evidence
    /// (the moderator has seen it), never block-level evidence (found later, it still stops it).
    pub fn for_knock(self, approved: bool) -> Outcome {
        match self {
            Outcome::Hold if approved => Outcome::Allow,
            other => other,
        }
    }

    /// What the block-list scan does with a member whose strongest match has this outcome.
    pub fn for_member(self) -> MemberAction {
        match self {
            Outcome::Block => MemberAction::Remove,
            Outcome::Hold => MemberAction::Report,
            Outcome::Allow => MemberAction::Keep,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Hold => "hold",
            Outcome::Block => "block",
        }
    }
}

/// How far an entry reaches beyond its own ID. Stored with the entry as `"reach"`; an entry
/// without one gets [`Policy::default_reach`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    /// Only the ID itself (or, for a display name, its folded family).
    Exact,
    /// Also IDs of the same family: leet, separators, repeated letters, counters, other servers.
    Family,
    /// Also near misses of the family key (one or two edits).
    Fuzzy,
}

impl Reach {
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Exact => "exact",
            Reach::Family => "family",
            Reach::Fuzzy => "fuzzy",
        }
    }
}

/// How the counters (digits at either end) of a candidate and an entry compare.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum CounterMatch {
    /// Both carry the same digits: `matthew41` and `m4tthew41`.
    Shared,
    /// Neither has any.
    Neither,
    /// One has digits the other lacks, or other digits: `matthew41` and `matthew70`.
    Differs,
}

/// The facts of one match, found by the matcher, weighed by [`Policy::grade`].
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    pub counter: CounterMatch,
    /// The candidate writes digits inside the name (`m4tthew`).
    pub leet: bool,
    /// Near misses only: the one edit is at the first letter (`vgautier`, `zgautier`; `gautier`,
    /// `agautier`).
    pub first_letter_differs: bool,
    /// Near misses only: the one edit is at the last letter (`annas`, `annak`; `akemi`,
    /// `akemim`). Whether that letter is an initial after a given name is the policy's to weigh.
    pub last_letter_differs: bool,
    /// Near misses only: the last letter, as spelled, is another one, not dropped or added
    /// (`musilovaj`, `musilovan`; `hardiansyahh`, `hardiansyahb`).
    pub last_letter_replaced: bool,
    /// Digits in the counter both carry, when they share one (0 otherwise): one shared digit is
    /// a coincidence one time in ten.
    pub shared_digits: u8,
    /// Characters of the entry's key that was compared; for a near miss, of its spelling (double
    /// letters kept: `meesk` is five letters long, though its family key `mesk` has four).
    pub key_chars: u8,
    /// The candidate carries a counter of its own.
    pub candidate_counter: bool,
}

impl Evidence {
    /// The evidence of an exact or glob match: nothing to weigh.
    pub(crate) fn plain() -> Evidence {
        Evidence {
            counter: CounterMatch::Neither,
            leet: false,
            first_letter_differs: false,
            last_letter_differs: false,
            last_letter_replaced: false,
            shared_digits: 0,
            key_chars: 0,
            candidate_counter: false,
        }
    }
}

/// Why a match got its outcome.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum Why {
    ExactId,
    Glob,
    /// Same folded display name.
    LookAlike,
    /// The same counter as well as the name: no namesake picks the same number by chance often.
    SameCounter,
    /// Digits written for letters inside the name.
    Leet,
    /// The name is rare and long enough that a namesake is unlikely.
    Distinctive {
        per_million: u32,
    },
    /// Hold: only the counter or the spelling differs, and the name is common.
    CommonName {
        per_million: u32,
    },
    /// Hold: only the counter differs, on a name that is not common (or that the name table does
    /// not know: its tail is cut, so a rare surname is missing from it): its namesakes carry
    /// other numbers.
    Namesake {
        per_million: u32,
    },
    /// Hold: the key is too short to tell a namesake from an evasion.
    ShortKey {
        chars: u8,
    },
    /// Hold: only the first letter differs (often an initial: `vgautier`, `zgautier`).
    FirstLetter,
    /// Hold: only the last letter differs, after a given name (an initial: `annas`, `annak`).
    LastLetter,
    /// Hold: only the last letter is another one, after a name that is not a common given name
    /// (a surname and another initial: `musilovaj`, `musilovan`), where the evidence would
    /// otherwise block: an initial is one letter, at either end.
    EndLetter,
    /// Hold: the near miss is this many edits away.
    Edits {
        edits: u8,
    },
    /// Hold: the near miss is itself a common name, or reads as two names.
    OtherName {
        per_million: u32,
    },
    /// Hold: a near miss with another counter as well: two things differ.
    CounterToo,
    /// Hold: the index this lookup read is damaged.
    IndexDamaged,
}

/// An outcome and its reason.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grade {
    pub outcome: Outcome,
    #[serde(flatten)]
    pub why: Why,
}

impl Grade {
    /// A block for this reason.
    pub(crate) fn blocking(why: Why) -> Grade {
        Grade {
            outcome: Outcome::Block,
            why,
        }
    }

    fn block(why: Why) -> Option<Grade> {
        Some(Grade {
            outcome: Outcome::Block,
            why,
        })
    }

    fn hold(why: Why) -> Option<Grade> {
        Some(Grade {
            outcome: Outcome::Hold,
            why,
        })
    }

    /// For a hold, the clause that says why it is not a block; `None` for a block.
    pub fn hold_clause(&self, entry_key: &str, candidate_key: &str) -> Option<String> {
        if self.outcome != Outcome::Hold {
            return None;
        }
        let why = match self.why {
            Why::CommonName { per_million } => format!(
                "only the counter or spelling differs, and {entry_key} is a common name ({})",
                in_a_million(per_million)
            ),
            Why::Namesake { per_million } => format!(
                "only the counter differs, and even a rare name like {entry_key} ({}) has \
                 namesakes, who pick their own numbers",
                if per_million == 0 {
                    "not in the name table".to_owned()
                } else {
                    in_a_million(per_million)
                }
            ),
            Why::ShortKey { chars } => format!(
                "{entry_key} is too short ({chars} letters) to tell a namesake from an evasion"
            ),
            Why::FirstLetter => "only the first letter (an initial?) differs".to_owned(),
            Why::LastLetter => {
                "only the last letter differs, after a given name (an initial?)".to_owned()
            }
            Why::EndLetter => "only the last letter (an initial?) differs".to_owned(),
            Why::Edits { edits } => format!("{edits} edits apart is too far to be sure"),
            Why::CounterToo => "the counter differs as well as a letter".to_owned(),
            Why::OtherName { per_million } => format!(
                "{candidate_key} is itself a common name ({})",
                in_a_million(per_million)
            ),
            Why::IndexDamaged => {
                "the block-list index could not be read, so nothing was decided".to_owned()
            }
            _ => "the evidence is weak".to_owned(),
        };
        Some(format!("held for a moderator, not blocked: {why}"))
    }
}

/// What two keys one edit apart at their last letter share: the shorter key's letters but its
/// last, or all of it when the other only adds a letter (`osamun`, `osamum`: `osamu`; `akemi`,
/// `akemim`: `akemi`).
fn given_stem<'k>(a: &'k str, b: &'k str) -> &'k str {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if long.starts_with(short) {
        short
    } else {
        let cut = short.char_indices().last().map_or(0, |(i, _)| i);
        &short[..cut]
    }
}

fn in_a_million(per_million: u32) -> String {
    if per_million >= 1_000 {
        format!("about {} in a thousand", per_million / 1_000)
    } else {
        format!("about {per_million} in a million")
    }
}

/// Commonness looked up during one lookup, so that a candidate weighed against many entries is
/// looked up once.
#[derive(Debug, Default)]
pub struct Namesakes {
    seen: Vec<(Box<str>, u32, u32)>,
}

impl Namesakes {
    /// `(share as one name, namesakes per million)` of a key.
    fn of(&mut self, key: &str) -> (u32, u32) {
        if let Some(&(_, one, all)) = self.seen.iter().find(|(k, _, _)| &**k == key) {
            return (one, all);
        }
        let found = (share(key).either(), namesakes_per_million(key));
        self.seen.push((key.into(), found.0, found.1));
        found
    }
}

impl Policy {
    /// The reach of an entry that names none, from its family key and counter: only the exact
    /// ID for a key shorter than `family_min_chars` with no counter (`@al`); the family for one common name with no
    /// counter (`@anna`: near misses of it are mostly other people's names, and there is no
    /// number to share); near misses too for everything else, two-part names included. Display
    /// names always reach near misses. `spelling` is the key with double letters kept: one that
    /// starts or ends with a double letter is an initial and a name that meet (`jjohnson`,
    /// `atsushii`), not the name alone, however common the name.
    pub fn default_reach(
        &self,
        kind: EntryKind,
        key: &str,
        spelling: &str,
        has_counter: bool,
    ) -> Reach {
        let doubled = |mut letters: std::iter::Peekable<std::str::Chars<'_>>| {
            letters.next().is_some_and(|a| letters.peek() == Some(&a))
        };
        let ends: String = spelling.chars().rev().collect();
        let initial_meets_name =
            doubled(spelling.chars().peekable()) || doubled(ends.chars().peekable());
        match kind {
            EntryKind::Glob => Reach::Exact,
            EntryKind::DisplayName => Reach::Fuzzy,
            EntryKind::UserId => {
                if !has_counter && key.chars().count() < usize::from(self.family_min_chars) {
                    Reach::Exact
                } else if !has_counter
                    && !initial_meets_name
                    && share(key).either() >= self.hold_common_per_million
                {
                    Reach::Family
                } else {
                    Reach::Fuzzy
                }
            }
        }
    }

    /// The grade of one match, or `None` when it is no evidence worth acting on (the candidate
    /// is likelier a namesake). `names` are the entry's names whose commonness counts (the key
    /// compared, and for a reading that reads an edge digit as a letter, both primary keys too);
    /// `candidate_key` is the candidate's key that was compared.
    pub fn grade(
        &self,
        kind: EntryKind,
        rule: MatchRule,
        evidence: &Evidence,
        names: &[&str],
        candidate_key: &str,
        memo: &mut Namesakes,
    ) -> Option<Grade> {
        let chars = evidence.key_chars;
        let common = |memo: &mut Namesakes| names.iter().map(|n| memo.of(n).1).max().unwrap_or(0);
        match (kind, rule) {
            (_, MatchRule::Exact) => Grade::block(Why::ExactId),
            (_, MatchRule::Glob) => Grade::block(Why::Glob),
            (EntryKind::DisplayName, MatchRule::DisplayName | MatchRule::Family) => {
                Grade::block(Why::LookAlike)
            }
            (EntryKind::DisplayName, MatchRule::Distance(d)) => {
                if d >= self.hold_edits {
                    Grade::hold(Why::Edits { edits: d })
                } else {
                    Grade::block(Why::Distinctive { per_million: 0 })
                }
            }
            (_, MatchRule::Family | MatchRule::DisplayName) => {
                if evidence.counter == CounterMatch::Shared {
                    return Grade::block(Why::SameCounter);
                }
                if evidence.leet {
                    return Grade::block(Why::Leet);
                }
                if chars < self.block_min_chars {
                    return Grade::hold(Why::ShortKey { chars });
                }
                let per_million = common(memo);
                if per_million >= self.hold_common_per_million {
                    Grade::hold(Why::CommonName { per_million })
                } else if evidence.counter == CounterMatch::Differs
                    && per_million >= self.hold_counter_per_million
                {
                    Grade::hold(Why::Namesake { per_million })
                } else {
                    Grade::block(Why::Distinctive { per_million })
                }
            }
            (_, MatchRule::Distance(d)) => {
                if evidence.counter == CounterMatch::Shared {
                    // One shared digit is a coincidence one time in ten: a near miss that is a
                    // common name of its own (`tina8` for `nina8`) is likelier its own person.
                    if !evidence.leet
                        && evidence.shared_digits < self.shared_counter_min_digits
                        && memo.of(candidate_key).0 >= self.hold_common_per_million
                    {
                        return None;
                    }
                    let other = memo.of(candidate_key).1;
                    return if other >= self.hold_common_per_million {
                        Grade::hold(Why::OtherName { per_million: other })
                    } else {
                        Grade::block(Why::SameCounter)
                    };
                }
                if chars < self.near_min_chars {
                    return None;
                }
                if evidence.leet {
                    return Grade::block(Why::Leet);
                }
                let differs = evidence.counter == CounterMatch::Differs;
                // Only an initial differs (`vgautier`, `zgautier`; `gautier`, `agautier`): held.
                // With another counter of its own as well, held (`ldominique71` for
                // `dominique98`) unless the near miss reads as a common name or handle of its own
                // (`elena05` for `helena33`). Without a counter, it is what an initial and a
                // surname look like beside the surname with digits (`ahenck`, `henck21`): no
                // evidence.
                // The same at the other end: a given name and an initial (`annas7`, `annak3`;
                // `akemi1969`, `akemim22`) read as two people whose names share the given name;
                // with a counter of its own as well, no evidence (two things that people pick
                // differ).
                let initial = if evidence.first_letter_differs {
                    Some(Why::FirstLetter)
                } else if evidence.last_letter_differs
                    && share(given_stem(
                        names.first().copied().unwrap_or(""),
                        candidate_key,
                    ))
                    .given
                        >= self.hold_common_per_million
                {
                    Some(Why::LastLetter)
                } else {
                    None
                };
                if let Some(why) = initial {
                    return if !differs {
                        Grade::hold(why)
                    } else if !evidence.candidate_counter
                        || why == Why::LastLetter
                        || memo.of(candidate_key).1 >= self.hold_common_per_million
                    {
                        None
                    } else {
                        Grade::hold(Why::CounterToo)
                    };
                }
                // A near miss that is itself a common name is likelier its own person
                // (`karoline` for `karolina`, `troy` for `trowy`); one that reads as two names,
                // or as a part of the blocked one, is held.
                if memo.of(candidate_key).0 >= self.hold_common_per_million {
                    return None;
                }
                // Two edits and another counter (`sonyajones77` for `sofiajones729`): three
                // things differ, which is what another person's handle looks like.
                let other = memo.of(candidate_key).1;
                if other >= self.hold_common_per_million {
                    return if d >= self.hold_edits {
                        None
                    } else {
                        Grade::hold(Why::OtherName { per_million: other })
                    };
                }
                if d >= self.hold_edits {
                    return if differs {
                        None
                    } else {
                        Grade::hold(Why::Edits { edits: d })
                    };
                }
                let per_million = common(memo);
                if per_million >= self.hold_common_per_million {
                    Grade::hold(Why::CommonName { per_million })
                } else if chars < self.block_min_chars
                    || allowed_distance(usize::from(chars)) < usize::from(d)
                {
                    Grade::hold(Why::ShortKey { chars })
                } else if differs {
                    Grade::hold(Why::CounterToo)
                } else if evidence.last_letter_replaced {
                    // Another last letter (`musilova_j`, `musilova_n`; `smithj`, `smithk`) reads
                    // as a surname and another initial, two people of one family, like another
                    // initial before it: held. A last letter dropped or added (`trollkin` for
                    // `trollking`) is the name spelled otherwise, and still blocks.
                    Grade::hold(Why::EndLetter)
                } else {
                    Grade::block(Why::Distinctive { per_million })
                }
            }
        }
    }
}
