//! The block-list policy's settings: the [`Policy`] thresholds, their variables and defaults
//! ([`SETTINGS`]), and reading them from `BLOCKLIST_*` variables ([`Policy::from_vars`]).
//! The decisions they drive are in [`super::policy`]. Never does: IO.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Thresholds of the policy. Every field is a setting; see [`SETTINGS`] for names and defaults.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(default)]
pub struct Policy {
    /// `BLOCKLIST_HOLD_COMMON_PER_MILLION`: a name at least this common (people in a million
    /// who bear it, alone or as a two-part handle) is held rather than blocked when only its
    /// counter, separators or a repeated letter set it apart from a blocked one; and a near miss
    /// at least this common is taken for another person's name.
    pub hold_common_per_million: u32,
    /// `BLOCKLIST_HOLD_COUNTER_PER_MILLION`: a name at least this common (as above) is held
    /// rather than blocked when only its counter sets it apart from a blocked one
    /// (`kuhnert44` for `kuhnert09`): a rare surname still has namesakes, and they pick their
    /// own numbers. The default, 0, holds every counter-only difference, because the table's
    /// tail is cut: a name it does not know may be a rare surname as well as an invented handle
    /// (`trollking`). 32 (`hold_common_per_million`) blocks counter-only variants of rare and
    /// unknown names.
    pub hold_counter_per_million: u32,
    /// `BLOCKLIST_BLOCK_MIN_CHARS`: family keys shorter than this never block on the name alone
    /// (only with the same counter, or with digits for letters); they are held.
    pub block_min_chars: u8,
    /// `BLOCKLIST_HOLD_EDITS`: near misses this many edits away, or more, are held, not blocked.
    pub hold_edits: u8,
    /// `BLOCKLIST_NEAR_MIN_CHARS`: near misses of names shorter than this (as spelled, double
    /// letters kept) count only when the counter is the same too (`anna83`, `anan83`); longer
    /// ones count on the name alone.
    pub near_min_chars: u8,
    /// `BLOCKLIST_FAMILY_MIN_CHARS`: an entry with no counter whose family key is shorter than
    /// this reaches only its exact ID unless it names a reach.
    pub family_min_chars: u8,
    /// `BLOCKLIST_SHARED_COUNTER_MIN_DIGITS`: a shared counter shorter than this is no evidence
    /// for a near miss that is a common name of its own (`tina8` for `nina8`: one digit is
    /// shared by chance one time in ten); 0 or 1 counts every shared counter.
    pub shared_counter_min_digits: u8,
}

/// `(variable, default, what it sets)` of every policy setting.
pub const SETTINGS: &[(&str, &str, &str)] = &[
    (
        "BLOCKLIST_HOLD_COMMON_PER_MILLION",
        "32",
        "names at least this common (per million people) are held, not blocked, when only a counter or the spelling differs",
    ),
    (
        "BLOCKLIST_HOLD_COUNTER_PER_MILLION",
        "0",
        "names at least this common (per million people; 0: every name, known to the table or not) are held, not blocked, when only the counter differs",
    ),
    (
        "BLOCKLIST_BLOCK_MIN_CHARS",
        "5",
        "family keys shorter than this are held, not blocked, unless the counter is the same too",
    ),
    (
        "BLOCKLIST_HOLD_EDITS",
        "2",
        "near misses this many edits away or more are held, not blocked",
    ),
    (
        "BLOCKLIST_NEAR_MIN_CHARS",
        "5",
        "near misses of shorter names (as spelled, double letters kept) count only when the counter is the same too",
    ),
    (
        "BLOCKLIST_FAMILY_MIN_CHARS",
        "3",
        "entries with no counter and a shorter family key match only their exact ID unless they name a reach",
    ),
    (
        "BLOCKLIST_SHARED_COUNTER_MIN_DIGITS",
        "2",
        "a shared counter of fewer digits is no evidence for a near miss that is a common name of its own",
    ),
];

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            hold_common_per_million: 32,
            hold_counter_per_million: 0,
            block_min_chars: 5,
            hold_edits: 2,
            near_min_chars: 5,
            family_min_chars: 3,
            shared_counter_min_digits: 2,
        }
    }
}

/// A policy setting that is not a whole number in its range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub name: &'static str,
    pub message: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl Policy {
    /// The policy from configuration variables (`get` returns a variable's value, if set); unset
    /// ones keep their defaults. Every bad value is reported, and the rest still read.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Policy, Vec<SettingError>> {
        let mut policy = Policy::default();
        let mut errors = Vec::new();
        let mut read = |name: &'static str, min: u32, max: u32| -> Option<u32> {
            let value = get(name)?;
            match value.trim().parse::<u32>() {
                Ok(n) if (min..=max).contains(&n) => Some(n),
                _ => {
                    errors.push(SettingError {
                        name,
                        message: format!("it must be a whole number from {min} to {max}"),
                    });
                    None
                }
            }
        };
        if let Some(n) = read("BLOCKLIST_HOLD_COMMON_PER_MILLION", 0, 1_000_000) {
            policy.hold_common_per_million = n;
        }
        if let Some(n) = read("BLOCKLIST_HOLD_COUNTER_PER_MILLION", 0, 1_000_000) {
            policy.hold_counter_per_million = n;
        }
        if let Some(n) = read("BLOCKLIST_BLOCK_MIN_CHARS", 1, 32) {
            policy.block_min_chars = n as u8;
        }
        if let Some(n) = read("BLOCKLIST_HOLD_EDITS", 1, 3) {
            policy.hold_edits = n as u8;
        }
        if let Some(n) = read("BLOCKLIST_NEAR_MIN_CHARS", 1, 32) {
            policy.near_min_chars = n as u8;
        }
        if let Some(n) = read("BLOCKLIST_FAMILY_MIN_CHARS", 1, 32) {
            policy.family_min_chars = n as u8;
        }
        if let Some(n) = read("BLOCKLIST_SHARED_COUNTER_MIN_DIGITS", 0, 32) {
            policy.shared_counter_min_digits = n as u8;
        }
        if errors.is_empty() {
            Ok(policy)
        } else {
            Err(errors)
        }
    }
}
