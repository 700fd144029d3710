//! Actions on many people at once from the management room, and their confirmation.
//!
//! Decides: which bulk action a moderator asked for (a tap on a join wave's digest,
//! `reject-held since`, `kick-joined since`), whether it waits for a confirming `!knock confirm`
//! (more than [`super::commands::CONFIRM_ABOVE`] people), which waiting action a confirmation
//! confirms (the same moderator's newest, within [`CONFIRM_WITHIN_MS`]), and the sentences that
//! ask and answer. Never does: IO.

use serde::{Deserialize, Serialize};

/// How long a bulk action waits for its confirmation.
pub const CONFIRM_WITHIN_MS: u64 = 10 * 60_000;

/// Most bulk actions waiting for a confirmation at once (older ones are dropped).
pub const MAX_WAITING: usize = 20;

/// A bulk action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Bulk {
    /// A tap on a join wave's digest: decide every knock it still holds.
    Wave {
        room_key: String,
        wave: u64,
        approve: bool,
    },
    /// Reject every knock held since this instant, in every room.
    RejectHeldSince { since_ms: u64 },
    /// Remove everyone Knock let in since this instant who joined, in every room.
    KickJoinedSince { since_ms: u64 },
}

impl Bulk {
    /// What it does to `n` people, as a sentence's verb phrase.
    pub fn describe(&self, n: usize) -> String {
        let people = if n == 1 { "1 person" } else { "" }.to_owned();
        let people = if people.is_empty() {
            format!("{n} people")
        } else {
            people
        };
        match self {
            Bulk::Wave { approve: true, .. } => {
                format!("approve {people} held by the join wave (they will be invited)")
            }
            Bulk::Wave { approve: false, .. } => {
                format!("reject {people} held by the join wave")
            }
            Bulk::RejectHeldSince { .. } => format!("reject {people} whose knocks are held"),
            Bulk::KickJoinedSince { .. } => format!("remove {people} who joined"),
        }
    }
}

/// A bulk action waiting for its moderator's confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub action: Bulk,
    /// The moderator who asked; only they can confirm it.
    pub by: String,
    pub asked_at: u64,
    /// How many people it affected when asked.
    pub affected: usize,
}

/// The question asked before a bulk action on `affected` people.
pub fn ask(action: &Bulk, affected: usize) -> String {
    format!(
        "This would {}. Send \"!knock confirm\" within {} minutes to go ahead.",
        action.describe(affected),
        CONFIRM_WITHIN_MS / 60_000
    )
}

/// Adds `w` to the waiting actions: expired ones and the same moderator's older ones go
/// (a moderator confirms what they asked last), and at most [`MAX_WAITING`] are kept.
pub fn wait(waiting: &mut Vec<Waiting>, w: Waiting) {
    let now = w.asked_at;
    waiting.retain(|o| o.by != w.by && now.saturating_sub(o.asked_at) < CONFIRM_WITHIN_MS);
    waiting.push(w);
    if waiting.len() > MAX_WAITING {
        let surplus = waiting.len() - MAX_WAITING;
        waiting.drain(..surplus);
    }
}

/// Takes the action `by` confirms at `now`, if one is waiting and not expired.
pub fn confirm(waiting: &mut Vec<Waiting>, by: &str, now: u64) -> Option<Waiting> {
    let i = waiting
        .iter()
        .rposition(|w| w.by == by && now.saturating_sub(w.asked_at) < CONFIRM_WITHIN_MS)?;
    let w = waiting.remove(i);
    waiting.retain(|o| o.by != by);
    Some(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(by: &str, at: u64, since_ms: u64) -> Waiting {
        Waiting {
            action: Bulk::RejectHeldSince { since_ms },
            by: by.into(),
            asked_at: at,
            affected: 12,
        }
    }

    #[test]
    fn only_the_moderator_who_asked_confirms_and_only_in_time() {
        let mut waiting = Vec::new();
        wait(&mut waiting, w("@a:x", 1_000, 1));
        assert_eq!(confirm(&mut waiting, "@b:x", 2_000), None);
        assert_eq!(
            confirm(&mut waiting, "@a:x", 1_000 + CONFIRM_WITHIN_MS),
            None
        );
        wait(&mut waiting, w("@a:x", 5_000, 2));
        let got = confirm(&mut waiting, "@a:x", 6_000).expect("waiting");
        assert_eq!(got.action, Bulk::RejectHeldSince { since_ms: 2 });
        assert_eq!(confirm(&mut waiting, "@a:x", 6_000), None, "confirmed once");
    }

    #[test]
    fn a_newer_question_replaces_the_same_moderators_older_one() {
        let mut waiting = Vec::new();
        wait(&mut waiting, w("@a:x", 1_000, 1));
        wait(&mut waiting, w("@b:x", 1_500, 9));
        wait(&mut waiting, w("@a:x", 2_000, 2));
        assert_eq!(waiting.len(), 2);
        assert_eq!(
            confirm(&mut waiting, "@a:x", 3_000).map(|w| w.action),
            Some(Bulk::RejectHeldSince { since_ms: 2 })
        );
        assert!(confirm(&mut waiting, "@b:x", 3_000).is_some());
    }

    #[test]
    fn waiting_actions_are_bounded() {
        let mut waiting = Vec::new();
        for i in 0..50 {
            wait(&mut waiting, w(&format!("@m{i}:x"), 1_000 + i, i));
        }
        assert_eq!(waiting.len(), MAX_WAITING);
        assert_eq!(waiting[0].by, "@m30:x");
    }

    #[test]
    fn the_question_says_what_and_how_to_confirm() {
        let q = ask(
            &Bulk::Wave {
                room_key: "k".into(),
                wave: 1,
                approve: true,
            },
            14,
        );
        assert_eq!(
            q,
            "This would approve 14 people held by the join wave (they will be invited). \
             Send \"!knock confirm\" within 10 minutes to go ahead."
        );
        assert!(ask(&Bulk::KickJoinedSince { since_ms: 0 }, 1).contains("remove 1 person"));
    }
}
