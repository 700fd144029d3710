//! What a homeserver's answer to one of a knock's calls does to it: the lifecycle's transitions
//! for `Event::Answered`. Decides retries and back-off, giving up, late answers for knocks closed
//! meanwhile, and what a profile or an invite reply means. Never does: IO.

use serde_json::Value;

use super::{Effect, Knock, RetryPolicy, Status, Step, Transition, Withdraw};
use crate::domain::outcome::Failure;

pub(super) fn answered(
    k: &Knock,
    mut next: Knock,
    step: Step,
    outcome: Result<Value, Failure>,
    user_is_local: bool,
    now: u64,
    policy: &RetryPolicy,
) -> Transition {
    let done = |knock: Knock, name, effects: Vec<Effect>| Transition {
        knock,
        effects,
        name,
    };
    let queued = k.status == Status::Queued;
    if let Err(f) = &outcome {
        if f.is_transient() {
            let f = f.clone();
            if !queued && step != Step::Withdraw {
                // A late answer for a closed knock: any owed removal was recorded at closing.
                next.inviting = false;
            }
            // A remote server that cannot be reached is no proof of absence: after a few tries
            // the invite itself decides.
            if step == Step::CheckProfile
                && queued
                && !user_is_local
                && k.attempts + 1 >= policy.remote_profile_tries
            {
                next.profile_checked = true;
                next.next_attempt_at = now;
                next.last_error = Some(f.describe());
                return done(next, "profile_unknown", vec![]);
            }
            next.last_error = Some(f.describe());
            if now.saturating_sub(k.created_at) >= policy.give_up_after_ms {
                next.attempts = 0;
                if step == Step::Withdraw {
                    next.withdraw = None;
                    next.last_error = Some(format!("could not remove them: {}", f.describe()));
                } else if queued {
                    next.close(Status::Failed, None, now);
                }
                next.inviting = false;
                return done(next, "gave_up", vec![]);
            }
            let mut wait = policy.backoff_ms(k.attempts);
            if let Failure::RateLimited { retry_after_ms } = f {
                wait = wait.max(retry_after_ms);
            }
            next.attempts = k.attempts.saturating_add(1);
            next.next_attempt_at = now + wait;
            return done(next, "retry", vec![Effect::PauseRoomUntil(now + wait)]);
        }
    }
    match (step, outcome) {
        // A withdrawal is done when it went through, or when there was nothing to remove.
        (Step::Withdraw, Ok(_)) => {
            let ban = next.withdraw.take() == Some(Withdraw::Ban);
            next.attempts = 0;
            let effects = if ban {
                vec![Effect::LoginWorks, Effect::RecordBan]
            } else {
                vec![Effect::LoginWorks]
            };
            done(next, "withdrawn", effects)
        }
        // Refused: there was nobody to remove (transient failures were handled above).
        (Step::Withdraw, Err(_)) => {
            next.withdraw = None;
            next.attempts = 0;
            done(next, "nothing_to_withdraw", vec![])
        }
        (_, Err(Failure::Unauthorized { errcode })) => {
            next.next_attempt_at = now + policy.login_wait_ms;
            next.last_error = Some(format!("homeserver login needed ({errcode})"));
            done(
                next,
                "login_needed",
                vec![
                    Effect::PauseRoomUntil(now + policy.login_wait_ms),
                    Effect::LoginNeeded,
                ],
            )
        }
        // The knock was closed while its call was in flight: the answer changes nothing, except
        // that an invite which went through is now owed back.
        (Step::Invite, Ok(_)) if !queued => {
            next.inviting = false;
            if next.withdraw.is_none() && !next.is_open() {
                next.owe_removal(Withdraw::Kick);
            }
            done(next, "invite_landed_after_close", vec![Effect::LoginWorks])
        }
        // The room turns a confirmation's answer into `InviteConfirmed`; a refusal (no member
        // event at all) means the attempt never landed.
        (Step::ConfirmInvite, Ok(_)) => done(next, "late_answer", vec![]),
        (Step::ConfirmInvite, Err(_)) => {
            next.inviting = false;
            next.invited_at = None;
            done(next, "invite_not_landed", vec![])
        }
        (Step::CheckProfile | Step::Invite, _) if !queued => {
            next.inviting = false;
            done(next, "late_answer", vec![])
        }
        (Step::CheckProfile, Ok(profile)) => {
            next.profile_checked = true;
            next.next_attempt_at = now;
            next.display_name = profile_display_name(&profile).map(str::to_owned);
            done(next, "profile_found", vec![Effect::LoginWorks])
        }
        (Step::CheckProfile, Err(Failure::Refused { status: 404, .. })) => {
            next.close(
                Status::NoSuchUser,
                Some("the homeserver has no such user".into()),
                now,
            );
            done(next, "no_such_user", vec![])
        }
        // Profile lookups can be forbidden by server policy; that proves nothing either way.
        (Step::CheckProfile, Err(_)) => {
            next.profile_checked = true;
            next.next_attempt_at = now;
            done(next, "profile_unknown", vec![])
        }
        (Step::Invite, Ok(_)) => {
            next.status = Status::Invited;
            next.inviting = false;
            next.invited_at = Some(now);
            next.attempts = 0;
            next.last_error = None;
            done(next, "invite_sent", vec![Effect::LoginWorks])
        }
        (Step::Invite, Err(f)) if f.is_already_joined() => {
            next.status = Status::Joined;
            next.inviting = false;
            next.last_error = None;
            done(next, "already_joined", vec![])
        }
        (Step::Invite, Err(f)) => {
            next.inviting = false;
            next.close(Status::Failed, Some(f.describe()), now);
            done(next, "invite_failed", vec![])
        }
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
