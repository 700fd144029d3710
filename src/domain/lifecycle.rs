//! The life of one knock: one pure state machine, `(knock, event, now, policy) -> (knock',
//! effects)`.
//!
//! Decides: which statuses are open, which transitions exist, what a homeserver answer does to
//! a knock, which call a knock needs next (and when), whether a new knock repeats an open one or
//! opens a closed one again, and how long records are kept. Nothing else in Knock names a status
//! rule: the store keeps the columns this module derives (`open`, `due_at`), never a list of
//! statuses. Never does: IO or clock reads; `now` (unix ms) is always passed in.
//!
//! Two flags make every membership change durable. `inviting` is written *before* an invite is
//! sent, so a knock closed while its invite is in flight (or after a crash) knows the person may
//! be invited. `withdraw` says Knock still owes a kick or ban (a rescinded invite, a blocked
//! member, a refused native knock); the room's queue carries it out and retries it like an
//! invite, so a crash or a failed call never leaves someone in the room who should not be.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::outcome::{Failure, InviteEnd};

/// Where a native Matrix knock comes from (its `source`).
pub const NATIVE: &str = "native";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Knock {
    pub id: i64,
    /// The stored row's version: every write is a compare-and-set on it.
    pub version: i64,
    pub user_id: String,
    /// Where it came from: `tally`, `typeform`, `json`, `html_form`, `native`, `adopted`.
    pub source: String,
    pub status: Status,
    /// The homeserver confirmed the user exists (or could not say, for a remote user).
    pub profile_checked: bool,
    /// A moderator approved it: weak evidence found later does not hold it again.
    pub approved: bool,
    /// An invite may be on its way (written before it is sent).
    pub inviting: bool,
    /// A kick or ban Knock still owes.
    pub withdraw: Option<Withdraw>,
    /// Transient failures so far.
    pub attempts: u32,
    pub next_attempt_at: u64,
    /// Why it is where it is (a verdict's rule, a refusal, a moderator's note). Scrubbed.
    pub last_error: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
    /// When the homeserver accepted the invite (the reminder and expiry clocks start here).
    pub invited_at: Option<u64>,
    /// When it reached an end state.
    pub closed_at: Option<u64>,
    pub display_name: Option<String>,
    /// The direct chat a reminder went to.
    pub dm_room: Option<String>,
    /// What Knock noticed about the request itself (an ID read in lower case), kept whatever
    /// happens next.
    #[serde(default)]
    pub note: Option<String>,
}

impl Knock {
    /// A freshly accepted knock, due at once.
    pub fn new(user_id: &str, source: &str, now: u64) -> Knock {
        Knock {
            id: 0,
            version: 0,
            user_id: user_id.to_owned(),
            source: source.to_owned(),
            status: Status::Queued,
            profile_checked: false,
            approved: false,
            inviting: false,
            withdraw: None,
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
            created_at: now,
            updated_at: now,
            invited_at: None,
            closed_at: None,
            display_name: None,
            dm_room: None,
            note: None,
        }
    }

    /// A knock stored with a verdict (spam, blocked, held) instead of being queued. A refused
    /// native knock still has to be answered on the homeserver: Knock owes the kick.
    pub fn recorded(user_id: &str, source: &str, status: Status, reason: &str, now: u64) -> Knock {
        let mut k = Knock {
            status,
            last_error: Some(reason.to_owned()),
            ..Knock::new(user_id, source, now)
        };
        if !status.is_open() {
            k.closed_at = Some(now);
        }
        if status == Status::Blocked && source == NATIVE {
            k.withdraw = Some(Withdraw::Kick);
        }
        k
    }

    pub fn is_open(&self) -> bool {
        self.status.is_open()
    }

    /// The person has a membership in the room that came from this knock, or may have one: an
    /// invite on its way, an accepted invite, or (native) the knock itself.
    fn may_hold_membership(&self) -> bool {
        self.status.holds_membership()
            || self.inviting
            || (self.source == NATIVE && matches!(self.status, Status::Queued | Status::Held))
    }

    /// The homeserver call this knock needs next, if any. An owed withdrawal comes first.
    pub fn next_step(&self) -> Option<Step> {
        if self.withdraw.is_some() {
            return Some(Step::Withdraw);
        }
        match (self.status, self.profile_checked, self.inviting) {
            (Status::Queued, false, _) => Some(Step::CheckProfile),
            // An earlier invite's fate is unknown (a timeout, a lost instance): find out before
            // inviting again, so a person who declined meanwhile is not invited twice.
            (Status::Queued, true, true) => Some(Step::ConfirmInvite),
            (Status::Queued, true, false) => Some(Step::Invite),
            _ => None,
        }
    }

    /// When the room's queue must next work on this knock: the alarm must fire by then.
    pub fn due_at(&self) -> Option<u64> {
        self.next_step().map(|_| self.next_attempt_at)
    }

    /// Old enough, closed, and owing nothing: only its daily count needs to remain.
    pub fn prunable(&self, now: u64, retention_ms: u64) -> bool {
        !self.is_open()
            && self.due_at().is_none()
            && !self.inviting
            && self
                .closed_at
                .unwrap_or(self.updated_at)
                .saturating_add(retention_ms)
                <= now
    }

    fn close(&mut self, status: Status, reason: Option<String>, now: u64) {
        self.status = status;
        if reason.is_some() {
            self.last_error = reason;
        }
        self.closed_at = Some(now);
    }

    /// A closing event on a knock that may have given the person a membership: Knock owes its
    /// removal.
    fn owe_removal(&mut self, how: Withdraw) {
        self.withdraw = Some(match (self.withdraw, how) {
            (Some(Withdraw::Ban), _) | (_, Withdraw::Ban) => Withdraw::Ban,
            _ => Withdraw::Kick,
        });
        self.next_attempt_at = self.updated_at;
    }
}

/// A homeserver call a knock needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    CheckProfile,
    Invite,
    /// Reads the person's membership after an invite whose answer never came.
    ConfirmInvite,
    /// The kick or ban in `withdraw`.
    Withdraw,
}

/// How retries are spaced and when they stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base_ms: u64,
    pub max_ms: u64,
    /// A knock still failing this long after it arrived fails for good.
    pub give_up_after_ms: u64,
    /// How long to wait before trying again while the homeserver wants a new login.
    pub login_wait_ms: u64,
    /// Transient profile failures after which a *remote* user is invited anyway: an unreachable
    /// remote server is not proof that the user does not exist.
    pub remote_profile_tries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_ms: 1_000,
            max_ms: 5 * 60_000,
            give_up_after_ms: 48 * 3_600_000,
            login_wait_ms: 60_000,
            remote_profile_tries: 3,
        }
    }
}

impl RetryPolicy {
    /// Exponential back-off: base, 2×base, 4×base, ... capped at `max_ms`.
    pub fn backoff_ms(&self, attempts: u32) -> u64 {
        let factor = 1u64.checked_shl(attempts.min(40)).unwrap_or(u64::MAX);
        self.base_ms.saturating_mul(factor).min(self.max_ms)
    }
}

/// Something that happened to a knock.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The homeserver answered the call `step` made.
    Answered {
        step: Step,
        outcome: Result<Value, Failure>,
        /// The user lives on the room's own homeserver, whose answers about its users are
        /// authoritative.
        user_is_local: bool,
    },
    /// An invite is about to be sent.
    Inviting,
    /// What the room shows after an invite whose answer never came: the membership now, and
    /// how an invite made since the attempt ended, if it already did.
    InviteConfirmed {
        membership: Option<String>,
        ended: Option<InviteEnd>,
    },
    /// The person's profile or ID matched the block-list.
    Blocked {
        reason: String,
        ban: bool,
    },
    /// Weak block-list evidence turned up before the invite (a namesake of a blocked person,
    /// say): a knock no moderator approved waits for one. Approval stands against it.
    Suspected {
        reason: String,
    },
    /// Their block-list entry was removed.
    Unblocked,
    /// A moderator withdrew the invite (or removed them).
    Rescinded {
        reason: String,
    },
    /// The invite was not accepted in time.
    Expired,
    /// A moderator's decision on a held knock; `by` names who (the audit trail).
    Approved {
        by: Option<String>,
    },
    Rejected {
        reason: String,
    },
    /// Membership changes the room showed.
    Joined {
        display_name: Option<String>,
    },
    Declined,
    Left,
    RemovedByOther,
    /// The welcome went out.
    Welcomed,
    /// A reminder's direct chat exists (recorded before the message is sent).
    DmOpened {
        dm_room: String,
    },
    /// The reminder went out.
    Reminded,
    /// Someone else already carried out the owed kick or ban (a moderator's call did it).
    Withdrawn,
    /// The reason to wait is gone (a new login was configured): owed work is due at once.
    RetryNow,
}

/// What the room must do besides storing the knock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Hold every call of the room until then (the homeserver asked to slow down, or is down).
    PauseRoomUntil(u64),
    /// The homeserver refused the bot's token.
    LoginNeeded,
    /// A call went through: any earlier login trouble is over.
    LoginWorks,
    /// A ban Knock placed: remember it, so an unblock lifts exactly Knock's own bans.
    RecordBan,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub knock: Knock,
    pub effects: Vec<Effect>,
    /// A short event name for the log: `invite_sent`, `retry`, `no_such_user`, ...
    pub name: &'static str,
}

impl Transition {
    /// Whether the knock changed at all (no write is needed otherwise).
    pub fn changed(&self, before: &Knock) -> bool {
        self.knock != *before
    }
}

/// Applies one event. Events that do not fit the knock's state change nothing: a late answer, a
/// second join, an approval of a knock that is no longer held.
pub fn apply(k: &Knock, event: Event, now: u64, policy: &RetryPolicy) -> Transition {
    let mut next = k.clone();
    next.updated_at = now;
    let mut effects = Vec::new();
    let name = match event {
        Event::Answered {
            step,
            outcome,
            user_is_local,
        } => return answer::answered(k, next, step, outcome, user_is_local, now, policy),
        Event::Inviting => {
            next.inviting = true;
            // The attempt's time, to tell a decline of this invite from an older leave.
            next.invited_at = next.invited_at.or(Some(now));
            "inviting"
        }
        Event::InviteConfirmed { membership, ended } => {
            if next.status != Status::Queued || !next.inviting {
                "unchanged"
            } else {
                next.inviting = false;
                next.attempts = 0;
                match membership.as_deref() {
                    Some("invite") => {
                        next.status = Status::Invited;
                        next.last_error = None;
                        "invite_confirmed"
                    }
                    Some("join") => {
                        next.status = Status::Joined;
                        next.last_error = None;
                        "already_joined"
                    }
                    Some("ban") => {
                        next.close(Status::Failed, Some("banned from the room".into()), now);
                        "invite_failed"
                    }
                    Some("leave") if ended.is_some() => {
                        let (status, why, name) = match ended {
                            Some(InviteEnd::Declined) => {
                                (Status::Declined, "declined the invite", "declined")
                            }
                            Some(InviteEnd::Left) => (Status::Left, "left the room", "left"),
                            _ => (
                                Status::Removed,
                                "removed from the room by someone else",
                                "removed",
                            ),
                        };
                        next.close(status, Some(why.into()), now);
                        name
                    }
                    // The attempt never landed: the next step is the invite again.
                    _ => {
                        next.invited_at = None;
                        "invite_not_landed"
                    }
                }
            }
        }
        Event::Blocked { reason, ban } => {
            if next.is_open() {
                let removal = next.may_hold_membership();
                next.close(Status::Blocked, Some(reason), now);
                if ban {
                    next.owe_removal(Withdraw::Ban);
                } else if removal {
                    next.owe_removal(Withdraw::Kick);
                }
                "blocked"
            } else if ban && next.withdraw == Some(Withdraw::Kick) {
                next.owe_removal(Withdraw::Ban);
                "blocked"
            } else {
                "unchanged"
            }
        }
        Event::Suspected { reason } => {
            if next.status == Status::Queued && !next.approved && !next.inviting {
                next.status = Status::Held;
                next.last_error = Some(reason);
                "held"
            } else {
                "unchanged"
            }
        }
        Event::Unblocked => {
            if next.status == Status::Blocked && next.withdraw.is_some() {
                next.withdraw = None;
                "unblocked"
            } else {
                "unchanged"
            }
        }
        Event::Rescinded { reason } => {
            if next.is_open() {
                let removal = next.may_hold_membership();
                next.close(Status::Rescinded, Some(reason), now);
                if removal {
                    next.owe_removal(Withdraw::Kick);
                }
                "rescinded"
            } else {
                "unchanged"
            }
        }
        Event::Expired => {
            if next.status.is_pending_invite() {
                next.close(Status::Expired, Some(EXPIRED_REASON.into()), now);
                next.owe_removal(Withdraw::Kick);
                "expired"
            } else {
                "unchanged"
            }
        }
        Event::Approved { by } => {
            if next.status == Status::Held {
                next.status = Status::Queued;
                next.approved = true;
                next.attempts = 0;
                next.next_attempt_at = now;
                let who = format!("approved by {}", by.as_deref().unwrap_or("a moderator"));
                // Kept in the note too, which outlives the invite (the reason is cleared by it).
                next.note = Some(match next.note.take() {
                    Some(n) => format!("{n}; {who}"),
                    None => who.clone(),
                });
                next.last_error = Some(who);
                "approved"
            } else {
                "unchanged"
            }
        }
        Event::Rejected { reason } => {
            if next.status == Status::Held {
                let removal = next.may_hold_membership();
                // A moderator's decision: kept in the note too, which outlives the reason (a
                // retry of the owed kick writes its own).
                next.note = Some(match next.note.take() {
                    Some(n) => format!("{n}; {reason}"),
                    None => reason.clone(),
                });
                next.close(Status::Rejected, Some(reason), now);
                if removal {
                    next.owe_removal(Withdraw::Kick);
                }
                "rejected"
            } else {
                "unchanged"
            }
        }
        Event::Joined { display_name } => {
            let was_invited =
                next.status.is_pending_invite() || (next.status == Status::Queued && next.inviting);
            if was_invited {
                next.status = Status::Joined;
                next.inviting = false;
                next.invited_at = next.invited_at.or(Some(now));
                if display_name.is_some() {
                    next.display_name = display_name;
                }
                "joined"
            } else {
                "unchanged"
            }
        }
        Event::Declined => {
            if next.status.is_pending_invite() {
                next.close(Status::Declined, Some("declined the invite".into()), now);
                "declined"
            } else {
                "unchanged"
            }
        }
        Event::Left => {
            if matches!(next.status, Status::Joined | Status::Welcomed) {
                next.close(Status::Left, Some("left the room".into()), now);
                "left"
            } else {
                "unchanged"
            }
        }
        Event::RemovedByOther => {
            if next.is_open() && next.may_hold_membership() {
                next.close(
                    Status::Removed,
                    Some("removed from the room by someone else".into()),
                    now,
                );
                next.inviting = false;
                "removed"
            } else {
                "unchanged"
            }
        }
        Event::Welcomed => {
            if next.status == Status::Joined {
                next.status = Status::Welcomed;
                "welcomed"
            } else {
                "unchanged"
            }
        }
        Event::DmOpened { dm_room } => {
            next.dm_room = Some(dm_room);
            "dm_opened"
        }
        Event::Reminded => {
            if next.status == Status::Invited {
                next.status = Status::Reminded;
                "reminded"
            } else {
                "unchanged"
            }
        }
        Event::RetryNow => {
            if next.next_step().is_some() && next.next_attempt_at > now {
                next.next_attempt_at = now;
                "retry_now"
            } else {
                "unchanged"
            }
        }
        // An invite still in flight may land after the removal: the debt stays until its
        // answer comes.
        Event::Withdrawn if next.inviting => "unchanged",
        Event::Withdrawn => {
            if let Some(w) = next.withdraw.take() {
                if w == Withdraw::Ban {
                    effects.push(Effect::RecordBan);
                }
                "withdrawn"
            } else {
                "unchanged"
            }
        }
    };
    if name == "unchanged" {
        next = k.clone();
    }
    Transition {
        knock: next,
        effects,
        name,
    }
}

pub const EXPIRED_REASON: &str = "Invite expired";

mod answer;
mod intake;
mod status;

pub use answer::profile_display_name;
pub use intake::{
    admit, day_of, delivery_ttl_ms, intake, is_retry, Admission, Intake, WAVE_HOLD_REASON,
};
pub use status::{Status, Withdraw};

#[cfg(test)]
mod tests;
