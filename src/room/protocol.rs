//! What the worker asks of a room, and what the room answers: JSON in, JSON out, one round
//! trip. Intake (storing a knock) lives here too, since it is the protocol's hot path and makes
//! no homeserver call.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::store::KnockQuery;
use super::{Host, Result, Room};
use crate::domain::blocklist::{Entry, Reach};
use crate::domain::lifecycle::{self, Intake, Knock, Status};
use crate::domain::rate_limit::{self, LimiterState, WaveState};

/// What the worker asks the room to store.
/// Most people one [`RoomOp::RemoveMany`] removes (each is a homeserver call; the free plan
/// allows 50 subrequests per invocation).
pub const MAX_REMOVALS_PER_CALL: usize = 30;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KnockIn {
    pub user_id: String,
    pub source: String,
    pub delivery_key: String,
    /// `None` to process; `Some(status)` to record only (spam, blocked, held).
    pub record_as: Option<Status>,
    pub note: Option<String>,
    /// The form's answers for its moderators (label, value), bounded by the form core.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KnockOut {
    /// `queued`, `repeat`, `recorded` or `limited`.
    pub outcome: String,
    pub knock_id: i64,
    /// With `limited`: how long the client must wait.
    #[serde(default)]
    pub retry_after_ms: u64,
    /// With `recorded`: the status it was stored with.
    #[serde(default)]
    pub status: Option<Status>,
}

impl KnockOut {
    fn new(outcome: &str, knock_id: i64) -> KnockOut {
        KnockOut {
            outcome: outcome.into(),
            knock_id,
            retry_after_ms: 0,
            status: None,
        }
    }
}

/// What the worker asks of a room.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RoomOp {
    Knock(KnockIn),
    /// Someone was just blocked (a user ID or a glob): close their knocks and act on their
    /// membership.
    Enforce {
        pattern: String,
        reason: String,
        /// The entry's reach, if it names one.
        #[serde(default)]
        reach: Option<Reach>,
    },
    /// What a would-be entry catches among this room's recent knocks and current members.
    Preview {
        entry: Entry,
    },
    /// Someone was unblocked: cancel owed kicks, lift any ban Knock placed.
    Lift {
        user_id: String,
    },
    /// Knocks waiting for a moderator.
    Held,
    /// A moderator approves or rejects a user's held knocks.
    DecideHeld {
        user_id: String,
        approve: bool,
        /// Who decided (a moderator's user ID, or the admin API), for the audit trail.
        #[serde(default)]
        by: Option<String>,
        /// The moderator's reason for a rejection, kept with it (never sent to the person).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A moderator decides every knock a join wave still holds (its digest's tap). With
    /// `dry_run`, only says how many and who.
    DecideWave {
        wave: u64,
        approve: bool,
        #[serde(default)]
        by: Option<String>,
        #[serde(default)]
        dry_run: bool,
    },
    /// Raid clean-up: rejects every knock held since `since_ms` (`dry_run`: who it would be).
    RejectHeldSince {
        since_ms: u64,
        #[serde(default)]
        by: Option<String>,
        #[serde(default)]
        dry_run: bool,
    },
    /// Raid clean-up: the people Knock let in whose invite was sent since `since_ms` and who
    /// joined.
    JoinedSince {
        since_ms: u64,
    },
    /// Raid clean-up: removes these people (at most [`MAX_REMOVALS_PER_CALL`] a call).
    RemoveMany {
        users: Vec<String>,
        #[serde(default)]
        by: Option<String>,
    },
    /// A cron run: observe the room and run the watchdog tasks that are due.
    Tick,
    /// A moderator withdraws someone's invite (a kick if they already joined).
    Rescind {
        user_id: String,
    },
    /// Tracked invites still pending, with their ages.
    Pending,
    /// The room's current members.
    Members,
    /// The room's raw state (for debugging; the only reply that shows the room ID).
    State,
    /// Knocks, newest first, a page at a time.
    Knocks {
        limit: u32,
        #[serde(default)]
        before: Option<i64>,
        #[serde(default)]
        verdict: Option<String>,
        /// Only this person's knocks.
        #[serde(default)]
        user_id: Option<String>,
    },
    /// The room's health for `GET /rooms`: queue depth, held knocks, the last cron run.
    Status,
    /// Whether the management room is usable (configured, unencrypted).
    Management,
    /// Deletes what Knock stores about a person.
    Forget {
        user_id: String,
    },
}

impl RoomOp {
    /// The path of the Durable Object request that carries it (for logs and routing).
    pub fn path(&self) -> &'static str {
        match self {
            RoomOp::Knock(_) => "/knock",
            RoomOp::Enforce { .. } => "/enforce",
            RoomOp::Preview { .. } => "/preview",
            RoomOp::Lift { .. } => "/lift",
            RoomOp::Held => "/held",
            RoomOp::DecideHeld { .. } => "/decide_held",
            RoomOp::DecideWave { .. } => "/decide_wave",
            RoomOp::RejectHeldSince { .. } => "/reject_held_since",
            RoomOp::JoinedSince { .. } => "/joined_since",
            RoomOp::RemoveMany { .. } => "/remove_many",
            RoomOp::Tick => "/tick",
            RoomOp::Rescind { .. } => "/rescind",
            RoomOp::Pending => "/pending",
            RoomOp::Members => "/members",
            RoomOp::State => "/state",
            RoomOp::Knocks { .. } => "/knocks",
            RoomOp::Forget { .. } => "/forget",
            RoomOp::Status => "/status",
            RoomOp::Management => "/management",
        }
    }
}

/// A knock as admin replies show it. The reason is scrubbed when stored.
pub fn knock_json(k: &Knock) -> Value {
    json!({
        "id": k.id, "user_id": k.user_id, "source": k.source, "verdict": k.status.as_str(),
        "reason": k.last_error, "received_at": k.created_at, "updated_at": k.updated_at,
        "closed_at": k.closed_at, "approved": k.approved,
        "owes": k.withdraw.map(|w| w.as_str()), "note": k.note,
        "display_name": k.display_name,
    })
}

impl<H: Host> Room<H> {
    /// Handles one request.
    pub async fn handle(&self, op: RoomOp) -> Result<Value> {
        let to_json = |v: KnockOut| serde_json::to_value(v).map_err(|e| e.to_string());
        match op {
            RoomOp::Knock(k) => {
                let out = self.store_knock(k)?;
                // Stored first; the alarm is the one promise that it will be worked off.
                self.rearm().await?;
                to_json(out)
            }
            RoomOp::Enforce {
                pattern,
                reason,
                reach,
            } => {
                let op = RoomOp::Enforce {
                    pattern: pattern.clone(),
                    reason: reason.clone(),
                    reach,
                };
                let mut out = self.enforce(&pattern, &reason, reach).await?;
                if let Some(children) = self.pass_to_children(&op).await? {
                    out["children"] = children;
                }
                Ok(out)
            }
            RoomOp::Preview { entry } => self.preview(&entry),
            RoomOp::Lift { user_id } => {
                let mut out = self.lift(&user_id).await?;
                let op = RoomOp::Lift { user_id };
                if let Some(children) = self.pass_to_children(&op).await? {
                    out["children"] = children;
                }
                Ok(out)
            }
            RoomOp::Held => {
                let held = self.store().page(&KnockQuery {
                    limit: 1000,
                    status: Some(Status::Held),
                    ..Default::default()
                })?;
                // Oldest first, shown as `GET /knocks` shows a knock, with the form's answers.
                let mut out = Vec::with_capacity(held.len());
                for k in held.iter().rev() {
                    let mut v = knock_json(k);
                    let answers = self.store().answers(k.id)?;
                    if !answers.is_empty() {
                        v["answers"] = answers
                            .iter()
                            .map(|(q, a)| json!({ "question": q, "answer": a }))
                            .collect();
                    }
                    out.push(v);
                }
                let held = out;
                // Members the block-list scan found with weak evidence, while still members.
                let members = self.store().members()?;
                let present = |u: &str| {
                    members.iter().any(|m| {
                        m.user_id == u && matches!(m.membership.as_str(), "join" | "invite")
                    })
                };
                let reviews: Vec<_> = self
                    .store()
                    .reviews()?
                    .into_iter()
                    .filter(|r| present(&r.user_id))
                    .collect();
                Ok(json!({ "held": held, "members_to_review": reviews }))
            }
            RoomOp::DecideHeld {
                user_id,
                approve,
                by,
                reason,
            } => {
                self.decide_held_because(&user_id, approve, by, reason)
                    .await
            }
            RoomOp::DecideWave {
                wave,
                approve,
                by,
                dry_run,
            } => self.decide_wave(wave, approve, by, dry_run).await,
            RoomOp::RejectHeldSince {
                since_ms,
                by,
                dry_run,
            } => self.reject_held_since(since_ms, by, dry_run).await,
            RoomOp::JoinedSince { since_ms } => self.joined_since(since_ms),
            RoomOp::RemoveMany { users, by } => self.remove_many(&users, by).await,
            RoomOp::Tick => {
                self.note_wave_end()?;
                // Every tick re-arms the queue, whatever else it does.
                self.rearm().await?;
                let mut out = self.tick().await?;
                if let Some(children) = self.pass_to_children(&RoomOp::Tick).await? {
                    out["children"] = children;
                }
                Ok(out)
            }
            RoomOp::Rescind { user_id } => self.rescind(&user_id).await,
            RoomOp::Pending => self.pending(),
            RoomOp::Members => self.members_now().await,
            RoomOp::State => self.raw_state().await,
            RoomOp::Knocks {
                limit,
                before,
                verdict,
                user_id,
            } => self.page(limit, before, verdict.as_deref(), user_id),
            RoomOp::Status => self.status(),
            RoomOp::Management => self.management_health().await,
            RoomOp::Forget { user_id } => {
                let gone = self.store().forget(&user_id)?;
                let mut out = json!({ "forgotten": gone });
                let op = RoomOp::Forget { user_id };
                if let Some(children) = self.pass_to_children(&op).await? {
                    // A person forgotten here is forgotten in the rooms this space serves too.
                    let (mut k, mut d) = (gone.knocks, gone.deliveries);
                    for c in children.as_array().into_iter().flatten() {
                        k += c["answer"]["forgotten"]["knocks"].as_u64().unwrap_or(0);
                        d += c["answer"]["forgotten"]["deliveries"].as_u64().unwrap_or(0);
                    }
                    out = json!({ "forgotten": { "knocks": k, "deliveries": d } });
                }
                Ok(out)
            }
        }
    }

    /// Stores a knock: de-duplicated by delivery, limited per Matrix ID, held in a join wave or
    /// after a moderator's decision, de-duplicated by user. Synchronous SQL only, so it all runs
    /// without interleaving.
    pub fn store_knock(&self, k: KnockIn) -> Result<KnockOut> {
        let cfg = self.cfg()?;
        let store = self.store();
        let now = self.host.now();
        let limiter_key = format!("mxid:{}", k.user_id);
        // One statement for the delivery, the per-ID limiter, the join wave and the person's
        // latest knock.
        let state = store.intake_state::<LimiterState, WaveState>(
            &k.delivery_key,
            now,
            &limiter_key,
            "wave",
            &k.user_id,
        )?;
        let (delivery, limit_state, wave_state) = (state.delivery, state.limit, state.meta);
        let previous_delivery = match delivery {
            Some(id) => match store.get(id)? {
                Some(prev) if lifecycle::is_retry(&k.delivery_key, &prev) => Some(id),
                Some(_) => None,
                // Forgotten or pruned: a new knock.
                None => None,
            },
            None => None,
        };
        let (limit, limiter) = if previous_delivery.is_some() {
            (rate_limit::Verdict::Allow { remaining: 0 }, None)
        } else {
            let state = limit_state.unwrap_or_default();
            let (verdict, next) = rate_limit::decide(&state, now, &cfg.mxid_quota);
            (verdict, Some(next))
        };
        let wave_state = wave_state.unwrap_or_default();
        let (wave, next_wave) = rate_limit::record_knock(&wave_state, now, &cfg.wave);
        let latest = state.latest;
        let record_as = k.record_as.map(|status| {
            let reason = k.note.clone().unwrap_or_else(|| match status {
                Status::Held => "held for a moderator".to_owned(),
                other => other.as_str().to_owned(),
            });
            (status, reason)
        });
        let decision =
            lifecycle::intake(previous_delivery, limit, wave, record_as, latest.as_ref());

        if let Some(next) = limiter {
            let keep = now + cfg.mxid_quota.window_ms + cfg.mxid_quota.max_lockout_ms;
            store.set_limit_state(&limiter_key, &next, keep)?;
        }
        // Written only when it changed: a write costs.
        if previous_delivery.is_none() && next_wave != wave_state {
            store.set_meta("wave", &next_wave)?;
            if let Some(start) = next_wave
                .started_at()
                .filter(|s| Some(*s) != wave_state.started_at())
            {
                let text = format!(
                    "a join wave began: more than {} knocks within {} s. New knocks are held \
                     for a moderator until it has been quiet for {} s; one digest lists them",
                    cfg.wave.max_knocks,
                    cfg.wave.window_ms / 1000,
                    cfg.wave.quiet_ms / 1000
                );
                self.owe_alert(&format!("wave-start-{start}"), &text)?;
            }
        }
        let by_wave = matches!(&decision, Intake::Record(Status::Held, r) if r == lifecycle::WAVE_HOLD_REASON);
        let out = match decision {
            Intake::RepeatDelivery(id) => return Ok(KnockOut::new("repeat", id)),
            Intake::Limited { retry_after_ms } => {
                return Ok(KnockOut {
                    retry_after_ms,
                    ..KnockOut::new("limited", 0)
                })
            }
            Intake::RepeatOf(id) => KnockOut::new("repeat", id),
            Intake::Record(status, reason) => {
                if status == Status::Blocked {
                    // The verdict holds for the person's older knocks too (a block whose
                    // enforcement never reached this room is caught up here).
                    let ban = cfg.block_action == crate::domain::moderation::BlockAction::Ban;
                    for old in store.live_for(&k.user_id)? {
                        let e = lifecycle::Event::Blocked {
                            reason: reason.clone(),
                            ban,
                        };
                        self.transition(old.id, e)?;
                    }
                }
                let row = Knock::recorded(&k.user_id, &k.source, status, &reason, now);
                let stored = store.insert(&row)?;
                store.put_answers(stored.id, &k.answers)?;
                match next_wave.started_at().filter(|_| by_wave) {
                    // One digest for the wave instead of a notice per knock.
                    Some(wave) => self.owe_digest(wave, stored.id)?,
                    None => self.owe_notice(&stored)?,
                }
                KnockOut {
                    status: Some(status),
                    ..KnockOut::new("recorded", stored.id)
                }
            }
            Intake::Queue => {
                // A note that came with it (the ID was read in lower case) stays with it.
                let row = Knock {
                    note: k.note.clone(),
                    ..Knock::new(&k.user_id, &k.source, now)
                };
                let stored = store.insert(&row)?;
                store.put_answers(stored.id, &k.answers)?;
                self.owe_notice(&stored)?;
                KnockOut::new("queued", stored.id)
            }
        };
        store.put_delivery(&k.delivery_key, out.knock_id, now)?;
        Ok(out)
    }

    /// What `GET /rooms` shows of this room. Never its ID.
    fn status(&self) -> Result<Value> {
        let store = self.store();
        let open = store.open_knocks()?;
        let count = |f: &dyn Fn(&Knock) -> bool| open.iter().filter(|k| f(k)).count();
        let seen = |key: &str| -> Result<Option<u64>> {
            Ok(Some(store.meta_u64(key)?).filter(|t| *t > 0))
        };
        Ok(json!({
            "queued": count(&|k| k.due_at().is_some()),
            "held": count(&|k| k.status == Status::Held),
            "pending_invites": count(&|k| k.status.is_pending_invite()),
            "members_to_review": store.reviews()?.len(),
            "last_invite_check": seen("last_invite_check")?,
            "last_blocklist_scan": seen("last_blocklist_scan")?,
            "login_needed": store.meta_u64("login_needed")? == 1,
            "paused_until": seen("pause_until")?,
            "last_run": store.meta::<Value>("last_run")?,
        }))
    }

    /// Tracked invites not yet accepted (and knocks on their way to one), with their ages.
    fn pending(&self) -> Result<Value> {
        let now = self.host.now();
        let pending: Vec<Value> = self
            .store()
            .open_knocks()?
            .into_iter()
            .filter(|k| k.status.is_pending_invite() || k.status == Status::Queued)
            .map(|k| {
                json!({
                    "user_id": k.user_id,
                    "display_name": k.display_name,
                    "state": k.status.as_str(),
                    "source": k.source,
                    "age_seconds": now.saturating_sub(k.created_at) / 1000,
                    "invited_seconds_ago": k.invited_at.map(|t| now.saturating_sub(t) / 1000),
                    "reminded": k.status == Status::Reminded,
                    "last_error": k.last_error,
                })
            })
            .collect();
        Ok(json!({ "pending": pending }))
    }

    /// A page of knocks, newest first, with the cursor of the next page.
    fn page(
        &self,
        limit: u32,
        before: Option<i64>,
        verdict: Option<&str>,
        user_id: Option<String>,
    ) -> Result<Value> {
        let status = match verdict {
            None | Some("") => None,
            Some(v) => match Status::parse(v) {
                Some(s) => Some(s),
                None => {
                    let known: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
                    return Ok(json!({
                        "error": format!("unknown verdict {v:?}; use one of {}", known.join(", "))
                    }));
                }
            },
        };
        let limit = limit.clamp(1, 1000);
        let rows = self.store().page(&KnockQuery {
            before,
            limit,
            status,
            user_id,
        })?;
        let next = (rows.len() as u32 == limit)
            .then(|| rows.last().map(|k| k.id))
            .flatten();
        let knocks: Vec<Value> = rows.iter().map(knock_json).collect();
        Ok(json!({ "knocks": knocks, "next_before": next }))
    }
}
