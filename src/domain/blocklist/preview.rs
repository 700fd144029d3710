//! What blocking an entry would catch, before it is added: `POST /blocklist/preview`.
//!
//! Decides: for a would-be entry (the body `POST /block_user` takes) and the people Knock has
//! seen lately (recent knocks' user IDs, current members with their display names), who would be
//! caught, with which rule, what outcome and why. Never does: IO, or touching the stored list;
//! the caller brings the knocks and members.

use serde::{Deserialize, Serialize};

use super::policy::{Outcome, Policy, Reach};
use super::{BlockIndex, Entry, EntryError, MatchRule};
use crate::domain::mxid::UserId;

/// The body of `POST /block_user` and `POST /blocklist/preview`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct EntryRequest {
    pub user_id: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// `true` to block a display name (impersonation) instead of a Matrix ID.
    #[serde(default)]
    pub display_name: bool,
    /// `"exact"`, `"family"` or `"fuzzy"`; absent: the policy's default for the name.
    #[serde(default)]
    pub reach: Option<Reach>,
}

impl EntryRequest {
    /// The entry the request asks for, stamped `now`.
    pub fn to_entry(&self, now: u64) -> Result<Entry, EntryError> {
        let entry = if self.display_name {
            Entry::display_name(&self.user_id, self.reason.clone(), now)
        } else {
            Entry::parse(&self.user_id, self.reason.clone(), now)
        }?;
        Ok(entry.with_reach(self.reach))
    }
}

/// Where a caught person was seen.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Seen {
    Knock,
    Member,
}

/// One person the entry would catch.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Caught {
    pub seen: Seen,
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub outcome: Outcome,
    pub rule: MatchRule,
    pub explanation: String,
}

/// The answer: the entry's reach (its own or the default), and everyone caught, blocks first.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Preview {
    pub reach: Reach,
    pub blocked: usize,
    pub held: usize,
    pub caught: Vec<Caught>,
}

/// Who `entry` would catch among recent `knocks` and current `members` (ID and display name),
/// under `policy`. A member is checked by ID and, for a display-name entry, by display name; the
/// stronger match counts. Each person is listed once per list they appear in.
pub fn preview(
    entry: &Entry,
    knocks: &[UserId],
    members: &[(UserId, Option<String>)],
    policy: &Policy,
) -> Preview {
    let index = BlockIndex::build_with(vec![entry.clone()], *policy);
    let reach = index.reach_of(0).unwrap_or(Reach::Exact);
    let mut caught = Vec::new();
    let people = knocks
        .iter()
        .map(|u| (Seen::Knock, u, None))
        .chain(members.iter().map(|(u, d)| (Seen::Member, u, d.as_deref())));
    for (seen, user, display) in people {
        let best = index.judge(user, display);
        if let Some(v) = best {
            caught.push(Caught {
                seen,
                user_id: user.as_str().to_owned(),
                display_name: display.map(str::to_owned),
                outcome: v.outcome(),
                rule: v.rule,
                explanation: v.explain(),
            });
        }
    }
    caught.sort_by_key(|c| std::cmp::Reverse(c.outcome));
    Preview {
        reach,
        blocked: caught
            .iter()
            .filter(|c| c.outcome == Outcome::Block)
            .count(),
        held: caught.iter().filter(|c| c.outcome == Outcome::Hold).count(),
        caught,
    }
}
