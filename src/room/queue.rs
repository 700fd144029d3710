//! The room's queue: works off owed homeserver calls (profile checks, invites, owed kicks and
//! bans), one knock and one call at a time, within a run's budget.
//!
//! Written for interleaving: the queue never holds a knock across an `await`. It picks the next
//! due knock from the store, and after pacing re-reads it; right before an invite it asks the
//! block-list object for its version, reloads the index if it moved, re-reads the knock again
//! and lets the lifecycle re-decide with that fresh state; only then, with no `await` left
//! before the send, it marks the invite as in flight and sends it. The answer is applied to the
//! knock as stored after the call, not to the copy that made it.

use serde_json::{json, Value};

use super::{Host, Result, Room, CALLS_PER_RUN};
use crate::domain::blocklist::Outcome;
use crate::domain::lifecycle::{Event, Knock, Step, Withdraw};
use crate::domain::moderation;
use crate::domain::mxid::UserId;

impl<H: Host> Room<H> {
    /// Works the queue until it is empty, the room is paused, or the run's budget is spent; a
    /// request that adds work meanwhile asks the run to look again.
    pub(crate) async fn run_queue(&self) -> Result<Value> {
        let mut calls = 0usize;
        let mut done = 0usize;
        loop {
            self.again.set(false);
            while calls < CALLS_PER_RUN {
                match self.work_one(&mut calls).await? {
                    Some(()) => done += 1,
                    None => break,
                }
            }
            if calls >= CALLS_PER_RUN || !self.again.get() {
                break;
            }
        }
        // A space's knocks for its child rooms, with what is left of the budget.
        let children = self.deliver_children(&mut calls, CALLS_PER_RUN).await?;
        // Notices for the management room, unless the homeserver asked to slow down.
        let (notices, messages) = if self.store().meta_u64("pause_until")? > self.host.now() {
            (0, 0)
        } else {
            let notices = self.post_notices(&mut calls, CALLS_PER_RUN).await?;
            (notices, self.post_owed(&mut calls, CALLS_PER_RUN).await?)
        };
        Ok(
            json!({ "calls": calls, "steps": done, "child_knocks": children, "notices": notices,
                   "messages": messages }),
        )
    }

    /// The next due knock nobody else is acting on, if the room is not paused.
    fn next_due(&self) -> Result<Option<Knock>> {
        let now = self.host.now();
        let busy = self.busy.borrow();
        Ok(self
            .store()
            .due_unpaused(now, 20)?
            .into_iter()
            .find(|k| !busy.contains(&k.user_id)))
    }

    /// One step of one knock. `None` when nothing is due.
    async fn work_one(&self, calls: &mut usize) -> Result<Option<()>> {
        let Some(k) = self.next_due()? else {
            return Ok(None);
        };
        let id = k.id;
        let Some(step) = k.next_step() else {
            return Ok(Some(()));
        };
        let Ok(user) = UserId::parse(&k.user_id) else {
            // Never stored by Knock itself; close it rather than retry forever.
            let e = Event::Rejected {
                reason: "stored user ID no longer parses".into(),
            };
            self.transition(id, e)?;
            return Ok(Some(()));
        };
        self.take_lease().await;
        // The lease is a storage call (the input gate keeps other requests out), so `k` is
        // still the row as stored unless the pacing wait let someone in.
        let waited = self.pace().await?;
        let mut known = k;
        if step == Step::Invite {
            // The fresh block-list check, then nothing but synchronous work before the send.
            *calls += 1;
            let index = match self.host.list_version().await {
                Ok(v) => self.host.index(v).await,
                Err(e) => Err(e),
            };
            let index = match index {
                Ok(i) => i,
                Err(e) => {
                    self.host
                        .log("blocklist_unavailable", &[("detail", e.into())]);
                    self.store()
                        .set_meta("pause_until", &(self.host.now() + 5_000))?;
                    return Ok(None);
                }
            };
            // Subscribed policy lists too (their copies change on the five-minute cron).
            let lists = self.host.policy_lists().await;
            let fuzzy = self.host.fuzzy_lists().await;
            let Some(fresh) = self.store().get(id)? else {
                return Ok(Some(()));
            };
            if fresh.next_step() != Some(Step::Invite)
                || self.busy.borrow().contains(&fresh.user_id)
            {
                return Ok(Some(()));
            }
            // A moderator's approval stands against hold-level evidence (they saw it), never
            // against block-level evidence.
            let verdict =
                crate::domain::policy::graded(&index, &fuzzy, &user, fresh.display_name.as_deref())
                    .map(|(o, why)| (o.for_knock(fresh.approved), why));
            // A subscribed rule is block-level evidence: an approval does not stand against it
            // (a moderator lets such a person in by unblocking them, a local exception).
            let verdict = match verdict {
                Some((Outcome::Block, _)) => verdict,
                other => {
                    match crate::domain::policy::subscribed_rule(&lists, &index, user.as_str()) {
                        Some(f) => Some((Outcome::Block, f.verdict())),
                        None => other,
                    }
                }
            };
            match verdict {
                Some((Outcome::Block, why)) => {
                    self.block_knock(id, &why)?;
                    return Ok(Some(()));
                }
                Some((Outcome::Hold, why)) => {
                    let t = self.transition(
                        id,
                        Event::Suspected {
                            reason: why.clone(),
                        },
                    )?;
                    if t.is_some_and(|t| t.name == "held") {
                        self.host.log(
                            "knock_verdict",
                            &[
                                ("user_id", user.as_str().into()),
                                ("verdict", "held".into()),
                                ("rule", why.into()),
                            ],
                        );
                    }
                    return Ok(Some(()));
                }
                _ => {}
            }
            match self.transition(id, Event::Inviting)? {
                Some(t) => known = t.knock,
                None => return Ok(Some(())),
            }
        } else if waited {
            // Re-read after the pacing wait: a block, rescind or decision may have landed.
            let Some(fresh) = self.store().get(id)? else {
                return Ok(Some(()));
            };
            if fresh.next_step() != Some(step) || self.busy.borrow().contains(&fresh.user_id) {
                return Ok(Some(()));
            }
            known = fresh;
        }
        let cfg = self.cfg()?;
        let api = self.api()?;
        if step == Step::ConfirmInvite {
            *calls += 2;
            let attempt = known.invited_at.unwrap_or(0);
            let event = match self.confirm_invite(&user, attempt).await {
                Ok((membership, ended)) => Event::InviteConfirmed { membership, ended },
                Err(f) => Event::Answered {
                    step,
                    outcome: Err(f),
                    user_is_local: true,
                },
            };
            if let Some(t) = self.transition_from(known, event)? {
                self.host.log(
                    t.name,
                    &[("user_id", t.knock.user_id.into()), ("knock_id", id.into())],
                );
            }
            return Ok(Some(()));
        }
        let request = match step {
            // Confirmations were sent and applied above.
            Step::ConfirmInvite => return Ok(Some(())),
            Step::CheckProfile => api.profile(&user),
            Step::Invite => api.invite(&cfg.room_id, &user, Some("asked to join via Knock")),
            Step::Withdraw => {
                let reason = withdraw_reason(&known);
                let action = match known.withdraw {
                    Some(Withdraw::Ban) => "ban",
                    _ => "kick",
                };
                api.moderate(&cfg.room_id, action, &user, Some(&reason))
            }
        };
        *calls += 1;
        let outcome = self.host.send(request).await;
        // The answer is applied to the knock as it is now, not as it was when the call started.
        let room_server = cfg.room_id.as_str().split_once(':').map(|(_, s)| s);
        let event = Event::Answered {
            step,
            outcome,
            user_is_local: room_server == Some(user.server_name()),
        };
        let Some(t) = self.transition_from(known, event)? else {
            return Ok(Some(()));
        };
        self.host.log(
            t.name,
            &[
                ("user_id", t.knock.user_id.clone().into()),
                ("knock_id", id.into()),
                ("attempts", t.knock.attempts.into()),
                (
                    "detail",
                    t.knock.last_error.clone().map_or(Value::Null, Value::from),
                ),
            ],
        );
        // An impersonating display name from the profile is caught by the check before the
        // invite, which reads the name stored with the answer.
        Ok(Some(()))
    }

    /// After an invite whose answer never came: the person's membership now, and how an invite
    /// made at or after `attempt` ended, if it did (see [`crate::matrix::invite_ended_since`]).
    async fn confirm_invite(
        &self,
        user: &UserId,
        attempt: u64,
    ) -> std::result::Result<
        (Option<String>, Option<crate::domain::outcome::InviteEnd>),
        crate::domain::outcome::Failure,
    > {
        use crate::domain::outcome::Failure;
        let cfg = self.cfg().map_err(|_| Failure::Network)?;
        let api = self.api().map_err(|_| Failure::Network)?;
        let membership = match self.host.send(api.member_state(&cfg.room_id, user)).await {
            Ok(v) => v["membership"].as_str().map(str::to_owned),
            Err(Failure::Refused { status: 404, .. }) => return Ok((None, None)),
            Err(f) => return Err(f),
        };
        if membership.as_deref() != Some("leave") {
            return Ok((membership, None));
        }
        let leaves = self
            .host
            .send(api.members(&cfg.room_id, Some("leave")))
            .await?;
        let ended = crate::matrix::invite_ended_since(&leaves, user, attempt);
        Ok((membership, ended))
    }

    /// Closes a knock as blocked with the rule that matched (and owes a kick if it gave the
    /// person anything).
    pub(crate) fn block_knock(&self, id: i64, why: &str) -> Result<()> {
        let ban = self.cfg()?.block_action == moderation::BlockAction::Ban;
        let t = self.transition(
            id,
            Event::Blocked {
                reason: why.to_owned(),
                ban,
            },
        )?;
        if let Some(t) = t {
            self.host.log(
                "knock_verdict",
                &[
                    ("user_id", t.knock.user_id.clone().into()),
                    ("verdict", "blocked".into()),
                    ("rule", why.into()),
                ],
            );
        }
        Ok(())
    }

    /// Spaces homeserver calls by `REQUEST_DELAY`, across runs too. Whether it waited (and so
    /// let other requests in).
    async fn pace(&self) -> Result<bool> {
        let delay = self.cfg()?.request_delay_ms;
        if delay == 0 {
            return Ok(false);
        }
        let last = self.store().meta_u64("last_call_at")?;
        let wait = (last + delay).saturating_sub(self.host.now());
        if wait > 0 {
            self.host.sleep(wait).await;
        }
        self.store().set_meta("last_call_at", &self.host.now())?;
        Ok(wait > 0)
    }
}

/// The reason put on an owed kick or ban: the knock's own reason (a rule, a moderator's note,
/// the expiry), never the room.
fn withdraw_reason(k: &Knock) -> String {
    let r = k.last_error.clone().unwrap_or_default();
    if r.is_empty() {
        "Removed by Knock".into()
    } else {
        r.chars().take(400).collect()
    }
}
