//! The life of one knock, from the moment it is stored until it is invited or fails for good.
//!
//! Decides: whether a knock is new or a repeat, which homeserver call it needs next, and what a
//! call's outcome does to it (advance, retry later with back-off, pause the room, or stop with a
//! recorded reason). Never does: IO or clock reads; `now` (unix ms) is always passed in.
//!
//! A knock is stored before any homeserver call is made, so a crash at any point leaves a row
//! that the next alarm picks up again. Every call Knock repeats is safe to repeat: a profile
//! lookup is a read, and re-inviting an invited user is a no-op on the homeserver.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::matrix::Failure;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Stored; homeserver calls still to make.
    Queued,
    /// The homeserver accepted the invite.
    Invited,
    /// Invited, and reminded once by direct message.
    Reminded,
    /// In the room; the welcome is still to be sent.
    Joined,
    /// In the room and welcomed.
    Welcomed,
    /// The homeserver says the user does not exist. Nothing was sent.
    NoSuchUser,
    /// A honeypot field was filled. Nothing was sent.
    Spam,
    /// The homeserver refused for good, or retries ran out. `last_error` says why.
    Failed,
    /// On the block-list: recorded with the rule that matched, never invited.
    Blocked,
    /// Withdrawn by a moderator or by Knock (blocked since, or expired).
    Rescinded,
    /// Arrived during a join wave: waits for a moderator to approve or reject it.
    Held,
    /// A moderator rejected it.
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Invited => "invited",
            Status::Reminded => "reminded",
            Status::Joined => "joined",
            Status::Welcomed => "welcomed",
            Status::NoSuchUser => "no_such_user",
            Status::Spam => "spam",
            Status::Failed => "failed",
            Status::Blocked => "blocked",
            Status::Rescinded => "rescinded",
            Status::Held => "held",
            Status::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "queued" => Status::Queued,
            "invited" => Status::Invited,
            "reminded" => Status::Reminded,
            "joined" => Status::Joined,
            "welcomed" => Status::Welcomed,
            "no_such_user" => Status::NoSuchUser,
            "spam" => Status::Spam,
            "failed" => Status::Failed,
            "blocked" => Status::Blocked,
            "rescinded" => Status::Rescinded,
            "held" => Status::Held,
            "rejected" => Status::Rejected,
            _ => return None,
        })
    }

    /// A knock in one of these states makes a new knock by the same user a repeat.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Status::Queued
                | Status::Invited
                | Status::Reminded
                | Status::Joined
                | Status::Welcomed
                | Status::Held
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Knock {
    pub id: i64,
    pub user_id: String,
    /// Where it came from: `tally`, `typeform`, `json`, `html_form`.
    pub source: String,
    pub status: Status,
    /// The homeserver confirmed the user exists (or could not say, for a remote user).
    pub profile_checked: bool,
    /// Transient failures so far.
    pub attempts: u32,
    pub next_attempt_at: u64,
    pub last_error: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
    /// When the homeserver accepted the invite (the reminder and expiry clocks start here).
    pub invited_at: Option<u64>,
}

impl Knock {
    /// A freshly accepted knock, due at once.
    pub fn new(user_id: &str, source: &str, now: u64) -> Knock {
        Knock {
            id: 0,
            user_id: user_id.to_owned(),
            source: source.to_owned(),
            status: Status::Queued,
            profile_checked: false,
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
            created_at: now,
            updated_at: now,
            invited_at: None,
        }
    }

    /// A knock recorded for the record only (spam): never processed.
    pub fn recorded(user_id: &str, source: &str, status: Status, reason: &str, now: u64) -> Knock {
        Knock {
            status,
            last_error: Some(reason.to_owned()),
            ..Knock::new(user_id, source, now)
        }
    }
}

/// Whether a new knock needs a row of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    New,
    RepeatOf(i64),
}

/// `latest` is the newest knock stored for the same user, if any.
pub fn admit(latest: Option<&Knock>) -> Admission {
    match latest {
        Some(k) if k.status.is_active() => Admission::RepeatOf(k.id),
        _ => Admission::New,
    }
}

/// What storing a knock came to, decided from the room's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    /// A platform's retry of a delivery already stored.
    RepeatDelivery(i64),
    /// Over the per-Matrix-ID limit: answer 429.
    Limited { retry_after_ms: u64 },
    /// Stored for the record only (spam, blocked), or held in a join wave.
    Record(Status),
    /// The same person already has an active knock.
    RepeatOf(i64),
    /// A new knock, queued for the homeserver.
    Queue,
}

/// Orders the checks of a new delivery: de-duplication first (a retry is never counted),
/// then the per-ID limit (the same for everyone, so it reveals no verdict), then the join
/// wave, then the verdict it came with, then the per-user de-duplication.
pub fn intake(
    previous_delivery: Option<i64>,
    limit: crate::domain::rate_limit::Verdict,
    wave: crate::domain::rate_limit::WaveVerdict,
    record_as: Option<Status>,
    latest: Option<&Knock>,
) -> Intake {
    use crate::domain::rate_limit::{Verdict, WaveVerdict};
    if let Some(id) = previous_delivery {
        return Intake::RepeatDelivery(id);
    }
    if let Verdict::Deny { retry_after_ms } = limit {
        return Intake::Limited { retry_after_ms };
    }
    if let Some(status) = record_as {
        return Intake::Record(status);
    }
    match admit(latest) {
        Admission::RepeatOf(id) => Intake::RepeatOf(id),
        Admission::New if wave == WaveVerdict::Hold => Intake::Record(Status::Held),
        Admission::New => Intake::Queue,
    }
}

/// The next homeserver call a queued knock needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    CheckProfile,
    Invite,
}

pub fn next_step(k: &Knock) -> Option<Step> {
    match (k.status, k.profile_checked) {
        (Status::Queued, false) => Some(Step::CheckProfile),
        (Status::Queued, true) => Some(Step::Invite),
        _ => None,
    }
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

/// The display name in a profile reply, if any (`GET /profile/{user}` answers
/// `{"displayname": ..., "avatar_url": ...}`).
pub fn profile_display_name(profile: &Value) -> Option<&str> {
    profile
        .get("displayname")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
}

/// A queued knock whose profile turned out to match the block-list (impersonation by display
/// name): it is closed as blocked, with the rule, and never invited.
pub fn block(k: &Knock, explanation: &str, now: u64) -> Knock {
    Knock {
        status: Status::Blocked,
        last_error: Some(explanation.to_owned()),
        updated_at: now,
        ..k.clone()
    }
}

/// What applying a call's outcome produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub knock: Knock,
    /// Hold every call of the room until then (the homeserver asked us to slow down, or is down).
    pub pause_room_until: Option<u64>,
    /// The homeserver refused the bot's token.
    pub login_needed: bool,
    /// A short event name for the log: `invite_sent`, `retry`, `no_such_user`, ...
    pub event: &'static str,
}

/// Applies the outcome of `step` to the knock. `user_is_local` says whether the user lives on
/// the room's own homeserver, whose answers about its users are authoritative.
pub fn apply(
    k: &Knock,
    step: Step,
    outcome: Result<Value, Failure>,
    now: u64,
    policy: &RetryPolicy,
    user_is_local: bool,
) -> Applied {
    let mut next = k.clone();
    next.updated_at = now;
    let done = |knock: Knock, event| Applied {
        knock,
        pause_room_until: None,
        login_needed: false,
        event,
    };
    match (step, outcome) {
        (Step::CheckProfile, Ok(_)) => {
            next.profile_checked = true;
            next.next_attempt_at = now;
            done(next, "profile_found")
        }
        (Step::CheckProfile, Err(Failure::Refused { status: 404, .. })) => {
            next.status = Status::NoSuchUser;
            next.last_error = Some("the homeserver has no such user".into());
            done(next, "no_such_user")
        }
        // Profile lookups can be forbidden by server policy, or fail for an unreachable remote
        // server; neither proves absence, so the invite itself decides.
        (Step::CheckProfile, Err(Failure::Refused { .. })) => {
            next.profile_checked = true;
            next.next_attempt_at = now;
            done(next, "profile_unknown")
        }
        (Step::CheckProfile, Err(f))
            if f.is_transient()
                && !user_is_local
                && k.attempts + 1 >= policy.remote_profile_tries =>
        {
            next.profile_checked = true;
            next.next_attempt_at = now;
            next.last_error = Some(f.describe());
            done(next, "profile_unknown")
        }
        (Step::Invite, Ok(_)) => {
            next.status = Status::Invited;
            next.invited_at = Some(now);
            next.last_error = None;
            done(next, "invite_sent")
        }
        (Step::Invite, Err(Failure::Refused { errcode, error, .. }))
            if errcode == "M_FORBIDDEN" && error.contains("already in the room") =>
        {
            next.status = Status::Joined;
            next.last_error = None;
            done(next, "already_joined")
        }
        (_, Err(f @ Failure::Refused { .. })) => {
            next.status = Status::Failed;
            next.last_error = Some(f.describe());
            done(next, "invite_failed")
        }
        (_, Err(Failure::Unauthorized { errcode })) => {
            next.next_attempt_at = now + policy.login_wait_ms;
            next.last_error = Some(format!("homeserver login needed ({errcode})"));
            Applied {
                knock: next,
                pause_room_until: Some(now + policy.login_wait_ms),
                login_needed: true,
                event: "login_needed",
            }
        }
        (_, Err(f)) => {
            next.last_error = Some(f.describe());
            if now.saturating_sub(k.created_at) >= policy.give_up_after_ms {
                next.status = Status::Failed;
                return done(next, "gave_up");
            }
            let mut wait = policy.backoff_ms(k.attempts);
            if let Failure::RateLimited { retry_after_ms } = f {
                wait = wait.max(retry_after_ms);
            }
            next.attempts = k.attempts.saturating_add(1);
            next.next_attempt_at = now + wait;
            Applied {
                knock: next,
                pause_room_until: Some(now + wait),
                login_needed: false,
                event: "retry",
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: u64 = 1_700_000_000_000;

    fn queued() -> Knock {
        Knock {
            id: 7,
            ..Knock::new("@alice:localhost", "tally", T0)
        }
    }
    fn refused(status: u16, errcode: &str, error: &str) -> Failure {
        Failure::Refused {
            status,
            errcode: errcode.into(),
            error: error.into(),
        }
    }
    fn run(k: &Knock, outcome: Result<Value, Failure>, now: u64) -> Applied {
        let step = next_step(k).unwrap();
        apply(k, step, outcome, now, &RetryPolicy::default(), true)
    }

    #[test]
    fn a_new_knock_first_checks_the_profile_then_invites() {
        let k = queued();
        assert_eq!(next_step(&k), Some(Step::CheckProfile));
        let a = run(&k, Ok(json!({"displayname": "Alice"})), T0 + 5);
        assert_eq!(a.event, "profile_found");
        assert_eq!(next_step(&a.knock), Some(Step::Invite));
        let b = run(&a.knock, Ok(json!({})), T0 + 9);
        assert_eq!(b.knock.status, Status::Invited);
        assert_eq!(b.knock.updated_at, T0 + 9);
        assert_eq!(b.knock.invited_at, Some(T0 + 9));
        assert_eq!(next_step(&b.knock), None);
    }

    #[test]
    fn a_404_profile_means_no_such_user_and_no_invite() {
        let a = run(
            &queued(),
            Err(refused(404, "M_UNKNOWN", "Profile was not found")),
            T0,
        );
        assert_eq!(a.knock.status, Status::NoSuchUser);
        assert_eq!(next_step(&a.knock), None);
    }

    #[test]
    fn a_forbidden_profile_lookup_is_not_proof_of_absence() {
        let a = run(&queued(), Err(refused(403, "M_FORBIDDEN", "")), T0);
        assert_eq!(next_step(&a.knock), Some(Step::Invite));
    }

    #[test]
    fn an_unreachable_remote_server_eventually_lets_the_invite_decide() {
        let mut k = queued();
        let policy = RetryPolicy::default();
        for _ in 0..policy.remote_profile_tries {
            let a = apply(
                &k,
                Step::CheckProfile,
                Err(Failure::Timeout),
                T0,
                &policy,
                false,
            );
            k = a.knock;
        }
        assert_eq!(next_step(&k), Some(Step::Invite));
    }

    #[test]
    fn a_local_user_is_never_invited_without_a_profile_answer() {
        let mut k = queued();
        for i in 0..10 {
            k = apply(
                &k,
                Step::CheckProfile,
                Err(Failure::Timeout),
                T0 + i,
                &RetryPolicy::default(),
                true,
            )
            .knock;
        }
        assert_eq!(next_step(&k), Some(Step::CheckProfile));
        assert_eq!(k.attempts, 10);
    }

    #[test]
    fn transient_failures_back_off_exponentially_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_ms(0), 1_000);
        assert_eq!(p.backoff_ms(1), 2_000);
        assert_eq!(p.backoff_ms(3), 8_000);
        assert_eq!(p.backoff_ms(20), p.max_ms);
        assert_eq!(p.backoff_ms(u32::MAX), p.max_ms);
        let a = run(&queued(), Err(Failure::Server { status: 502 }), T0);
        assert_eq!(a.event, "retry");
        assert_eq!(a.knock.status, Status::Queued);
        assert_eq!(a.knock.attempts, 1);
        assert_eq!(a.knock.next_attempt_at, T0 + 1_000);
        assert_eq!(a.pause_room_until, Some(T0 + 1_000));
        let b = run(&a.knock, Err(Failure::Timeout), T0 + 1_000);
        assert_eq!(b.knock.next_attempt_at, T0 + 1_000 + 2_000);
    }

    #[test]
    fn a_rate_limit_waits_at_least_as_long_as_the_homeserver_asked() {
        let a = run(
            &queued(),
            Err(Failure::RateLimited {
                retry_after_ms: 9_816,
            }),
            T0,
        );
        assert_eq!(a.knock.next_attempt_at, T0 + 9_816);
        assert_eq!(a.pause_room_until, Some(T0 + 9_816));
    }

    #[test]
    fn retries_stop_after_the_give_up_window() {
        let p = RetryPolicy::default();
        let late = T0 + p.give_up_after_ms;
        let a = run(&queued(), Err(Failure::Network), late);
        assert_eq!(a.knock.status, Status::Failed);
        assert_eq!(a.event, "gave_up");
        assert_eq!(
            a.knock.last_error.as_deref(),
            Some("homeserver unreachable")
        );
    }

    #[test]
    fn a_bad_token_holds_the_knock_without_spending_attempts() {
        let a = run(
            &queued(),
            Err(Failure::Unauthorized {
                errcode: "M_UNKNOWN_TOKEN".into(),
            }),
            T0,
        );
        assert!(a.login_needed);
        assert_eq!(a.knock.status, Status::Queued);
        assert_eq!(a.knock.attempts, 0);
        assert!(a.knock.next_attempt_at > T0);
    }

    #[test]
    fn an_invite_refused_for_good_is_recorded_with_its_reason() {
        let mut k = queued();
        k.profile_checked = true;
        let a = run(&k, Err(refused(403, "M_BAD_STATE", "user is banned")), T0);
        assert_eq!(a.knock.status, Status::Failed);
        assert_eq!(
            a.knock.last_error.as_deref(),
            Some("403 M_BAD_STATE: user is banned")
        );
    }

    #[test]
    fn inviting_someone_already_in_the_room_marks_them_joined() {
        let mut k = queued();
        k.profile_checked = true;
        let a = run(
            &k,
            Err(refused(
                403,
                "M_FORBIDDEN",
                "@alice:localhost is already in the room.",
            )),
            T0,
        );
        assert_eq!(a.knock.status, Status::Joined);
    }

    #[test]
    fn repeats_of_an_active_knock_are_not_admitted() {
        let k = queued();
        assert_eq!(admit(Some(&k)), Admission::RepeatOf(7));
        let invited = Knock {
            status: Status::Invited,
            ..k.clone()
        };
        assert_eq!(admit(Some(&invited)), Admission::RepeatOf(7));
        for done in [
            Status::NoSuchUser,
            Status::Failed,
            Status::Spam,
            Status::Blocked,
            Status::Rescinded,
        ] {
            let old = Knock {
                status: done,
                ..k.clone()
            };
            assert_eq!(admit(Some(&old)), Admission::New, "{done:?}");
        }
        assert_eq!(admit(None), Admission::New);
    }

    #[test]
    fn a_profile_display_name_is_read_and_a_blocked_one_closes_the_knock() {
        assert_eq!(
            profile_display_name(&json!({"displayname": "Alice"})),
            Some("Alice")
        );
        assert_eq!(profile_display_name(&json!({"displayname": "  "})), None);
        assert_eq!(profile_display_name(&json!({})), None);
        let k = block(&queued(), "display name reads as Alice Admin", T0 + 1);
        assert_eq!(k.status, Status::Blocked);
        assert_eq!(next_step(&k), None);
        assert_eq!(
            k.last_error.as_deref(),
            Some("display name reads as Alice Admin")
        );
    }

    #[test]
    fn intake_checks_in_a_fixed_order() {
        use crate::domain::rate_limit::{Verdict, WaveVerdict};
        let allow = Verdict::Allow { remaining: 3 };
        let deny = Verdict::Deny {
            retry_after_ms: 5_000,
        };
        let normal = WaveVerdict::Normal;
        let hold = WaveVerdict::Hold;
        // A retried delivery wins over everything, even a limit.
        assert_eq!(
            intake(Some(3), deny, hold, None, None),
            Intake::RepeatDelivery(3)
        );
        // The limit applies whatever the verdict, so it reveals none.
        assert_eq!(
            intake(None, deny, normal, Some(Status::Blocked), None),
            Intake::Limited {
                retry_after_ms: 5_000
            }
        );
        assert_eq!(
            intake(None, allow, hold, Some(Status::Spam), None),
            Intake::Record(Status::Spam)
        );
        assert_eq!(
            intake(None, allow, hold, None, None),
            Intake::Record(Status::Held)
        );
        assert_eq!(intake(None, allow, normal, None, None), Intake::Queue);
        let active = queued();
        assert_eq!(
            intake(None, allow, hold, None, Some(&active)),
            Intake::RepeatOf(7)
        );
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for s in [
            Status::Queued,
            Status::Invited,
            Status::Reminded,
            Status::Joined,
            Status::Welcomed,
            Status::NoSuchUser,
            Status::Spam,
            Status::Failed,
            Status::Blocked,
            Status::Rescinded,
            Status::Held,
            Status::Rejected,
        ] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("nope"), None);
    }
}
