//! Admitting a knock: whether a delivery repeats one already stored, whether a person's new knock
//! repeats an open one or reopens a closed one (and whether it must wait for a moderator), in
//! which order the checks run, and how long delivery keys and closed knocks are kept. Never
//! does: IO.

use super::{Knock, Status};
use crate::domain::rate_limit::{Verdict, WaveVerdict};

/// Whether a new knock needs a row of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The person already has an open knock.
    RepeatOf(i64),
    New,
    /// Their last knock ended by a moderator's decision or a removal: a new one waits for a
    /// moderator instead of being invited on its own.
    Hold(&'static str),
}

/// `latest` is the newest knock stored for the same user, if any. A closed knock can always be
/// opened again.
pub fn admit(latest: Option<&Knock>) -> Admission {
    match latest {
        Some(k) if k.is_open() => Admission::RepeatOf(k.id),
        Some(k) => match k.status {
            Status::Rejected => Admission::Hold("asked again after a moderator rejected them"),
            Status::Rescinded => {
                Admission::Hold("asked again after a moderator withdrew their invite")
            }
            Status::Removed => Admission::Hold("asked again after being removed from the room"),
            _ => Admission::New,
        },
        None => Admission::New,
    }
}

/// What storing a knock came to, decided from the room's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intake {
    /// A platform's retry of a delivery already stored.
    RepeatDelivery(i64),
    /// Over the per-Matrix-ID limit: answer 429.
    Limited { retry_after_ms: u64 },
    /// Stored with this status (spam, blocked, held) and reason.
    Record(Status, String),
    /// The same person already has an open knock.
    RepeatOf(i64),
    /// A new knock, queued for the homeserver.
    Queue,
}

/// Why a knock a join wave holds is held.
pub const WAVE_HOLD_REASON: &str = "held for a moderator: join wave";

/// Orders the checks of a new delivery: de-duplication first (a retry is never counted), then
/// the per-ID limit (the same for everyone, so it reveals no verdict), then the verdict it came
/// with, then the per-user de-duplication, then the join wave and the re-knock policy.
pub fn intake(
    previous_delivery: Option<i64>,
    limit: Verdict,
    wave: WaveVerdict,
    record_as: Option<(Status, String)>,
    latest: Option<&Knock>,
) -> Intake {
    if let Some(id) = previous_delivery {
        return Intake::RepeatDelivery(id);
    }
    if let Verdict::Deny { retry_after_ms } = limit {
        return Intake::Limited { retry_after_ms };
    }
    if let Some((status, reason)) = record_as {
        // Weak evidence holds a new knock; a person whose knock is already open (waiting,
        // approved, invited) keeps that one, which the queue re-checks before any invite.
        if status == Status::Held {
            if let Admission::RepeatOf(id) = admit(latest) {
                return Intake::RepeatOf(id);
            }
        }
        return Intake::Record(status, reason);
    }
    match admit(latest) {
        Admission::RepeatOf(id) => Intake::RepeatOf(id),
        Admission::Hold(why) => {
            Intake::Record(Status::Held, format!("held for a moderator: {why}"))
        }
        Admission::New if wave == WaveVerdict::Hold => {
            Intake::Record(Status::Held, WAVE_HOLD_REASON.into())
        }
        Admission::New => Intake::Queue,
    }
}

/// How long a delivery key is remembered: a platform's own delivery id for 7 days (platforms
/// retry for about a day), a body hash for 10 minutes (the same plain form sent again later is
/// a new request, not a retry).
pub fn delivery_ttl_ms(key: &str) -> u64 {
    if key.starts_with("sha256:") {
        10 * 60_000
    } else {
        7 * 86_400_000
    }
}

/// Whether a delivery whose key was seen before is a retry of it. A platform's own delivery id
/// always is; a body hash (a plain form has no id) only while its knock is open, so the same
/// form sent again after the knock ended opens a new one instead of being swallowed.
pub fn is_retry(key: &str, previous: &Knock) -> bool {
    !key.starts_with("sha256:") || previous.is_open()
}

/// The unix day of a timestamp, for the daily counts that outlive pruned knocks.
pub fn day_of(ms: u64) -> u64 {
    ms / 86_400_000
}
