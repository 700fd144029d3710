//! A moderator's requests to the room: block (a user ID or a glob), unblock, rescind, and
//! decisions on held knocks.
//!
//! Each closes or reopens knocks through the lifecycle first, synchronously, so the queue can
//! never act on the old state; what the moderator's change owes on the homeserver is recorded
//! on the knocks and carried out by the queue. For one exact user the request also acts at once
//! (so its reply says what happened), marking the user busy meanwhile so the queue does not
//! make the same call twice; if this instance is lost, the owed work is still on the rows.

use serde_json::{json, Value};

use super::{Host, Result, Room};
use crate::domain::blocklist::{preview, BlockIndex, Entry, EntryKind, Outcome, Reach};
use crate::domain::lifecycle::{Event, Status};
use crate::domain::moderation::{self, BlockAction, Enforcement};
use crate::domain::mxid::UserId;

/// Releases a user marked busy when the request ends, however it ends.
struct Busy<'a> {
    set: &'a std::cell::RefCell<std::collections::HashSet<String>>,
    user: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.set.borrow_mut().remove(&self.user);
    }
}

impl<H: Host> Room<H> {
    fn mark_busy(&self, user: &str) -> Busy<'_> {
        self.busy.borrow_mut().insert(user.to_owned());
        Busy {
            set: &self.busy,
            user: user.to_owned(),
        }
    }

    /// Someone's current membership, or `None` if they never had one.
    async fn membership(&self, user: &UserId) -> std::result::Result<Option<String>, String> {
        let req = self.api()?.member_state(&self.cfg()?.room_id, user);
        match self.host.send(req).await {
            Ok(v) => Ok(v["membership"].as_str().map(str::to_owned)),
            Err(crate::domain::outcome::Failure::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e.describe()),
        }
    }

    /// A block-list entry was stored: close every live knock it catches with block-level
    /// evidence, exactly as the block-list will match it, hold the queued ones it catches with
    /// hold-level evidence, then, for an exact user, act on their membership now.
    pub(crate) async fn enforce(
        &self,
        pattern: &str,
        reason: &str,
        reach: Option<Reach>,
    ) -> Result<Value> {
        let ban = self.cfg()?.block_action == BlockAction::Ban;
        let entry = Entry::parse(pattern, None, 0)
            .map_err(|e| e.to_string())?
            .with_reach(reach);
        let exact = entry.kind == EntryKind::UserId;
        let _busy = exact.then(|| self.mark_busy(&entry.pattern));
        let index = BlockIndex::build_with(vec![entry.clone()], self.cfg()?.blocklist);
        // Every live knock the entry catches, not only the exact user's: an exact entry also
        // catches its family and near misses (the block-list's point is ban evasion).
        let live = self.store().live()?;
        let (mut closed, mut held) = (0, 0);
        for k in live {
            let Ok(user) = UserId::parse(&k.user_id) else {
                continue;
            };
            let Some(v) = index.judge(&user, k.display_name.as_deref()) else {
                continue;
            };
            let (e, counts) = match v.outcome().for_knock(k.approved) {
                Outcome::Block => (
                    Event::Blocked {
                        reason: reason.to_owned(),
                        ban,
                    },
                    "blocked",
                ),
                Outcome::Hold => (
                    Event::Suspected {
                        reason: v.explain(),
                    },
                    "held",
                ),
                Outcome::Allow => continue,
            };
            if self.transition(k.id, e)?.is_some_and(|t| t.name == counts) {
                if counts == "blocked" {
                    closed += 1;
                } else {
                    held += 1;
                }
            }
        }
        if !exact {
            // A glob reaches members Knock does not track: the block-list scan starts now.
            self.store().set_meta("last_blocklist_scan", &0)?;
            self.store()
                .set_meta::<Option<String>>("scan_cursor", &None)?;
            self.store().set_meta("watch_continue", &1)?;
            self.rearm().await?;
            return Ok(
                json!({ "action": "scan_started", "knocks_closed": closed, "knocks_held": held }),
            );
        }
        self.rearm().await?;
        let user = UserId::parse(&entry.pattern).map_err(|e| e.to_string())?;
        let membership = match self.membership(&user).await {
            Ok(m) => m,
            Err(why) => {
                return Ok(
                    json!({ "action": "failed", "detail": why, "knocks_closed": closed,
                                  "knocks_held": held }),
                )
            }
        };
        let plan = moderation::enforcement(membership.as_deref(), self.cfg()?.block_action);
        if let Some(call) = plan.call() {
            let req = self
                .api()?
                .moderate(&self.cfg()?.room_id, call, &user, Some(reason));
            if let Err(f) = self.host.send(req).await {
                return Ok(json!({
                    "membership_was": membership, "action": "failed", "detail": f.describe(),
                    "knocks_closed": closed, "knocks_held": held,
                }));
            }
        }
        if plan == Enforcement::Ban {
            self.store()
                .record_ban(user.as_str(), reason, self.host.now())?;
        }
        // What the knocks owed is done (or there was nothing to remove).
        for k in self.store().live_for(user.as_str())? {
            if k.withdraw.is_some() && k.status == Status::Blocked {
                self.transition(k.id, Event::Withdrawn)?;
            }
        }
        self.store().drop_review(user.as_str())?;
        Ok(
            json!({ "membership_was": membership, "action": plan.describe(),
                   "knocks_closed": closed, "knocks_held": held }),
        )
    }

    /// Who `entry` would catch among the room's recent knocks (each person's newest) and its
    /// members as last observed. Changes nothing.
    pub(crate) fn preview(&self, entry: &Entry) -> Result<Value> {
        let knocks: Vec<UserId> = self
            .store()
            .latest_per_user()?
            .iter()
            .filter_map(|k| UserId::parse(&k.user_id).ok())
            .collect();
        let members: Vec<(UserId, Option<String>)> = self
            .store()
            .members()?
            .into_iter()
            .filter(|m| matches!(m.membership.as_str(), "join" | "invite" | "knock"))
            .filter_map(|m| Some((UserId::parse(&m.user_id).ok()?, m.display_name)))
            .collect();
        let out = preview(entry, &knocks, &members, &self.cfg()?.blocklist);
        serde_json::to_value(out).map_err(|e| e.to_string())
    }

    /// An entry was removed: owed kicks of the user's blocked knocks are cancelled, and a ban
    /// Knock placed is lifted.
    pub(crate) async fn lift(&self, user_id: &str) -> Result<Value> {
        let user = UserId::parse(user_id).map_err(|e| e.to_string())?;
        for k in self.store().live_for(user.as_str())? {
            self.transition(k.id, Event::Unblocked)?;
        }
        if !self.store().has_ban(user.as_str())? {
            return Ok(json!({ "unbanned": false }));
        }
        let req = self
            .api()?
            .unban(&self.cfg()?.room_id, &user, Some("Unblocked in Knock"));
        match self.host.send(req).await {
            // Not banned any more (someone lifted it by hand): the record goes too.
            Ok(_) | Err(crate::domain::outcome::Failure::Refused { .. }) => {
                self.store().drop_ban(user.as_str())?;
                Ok(json!({ "unbanned": true }))
            }
            Err(f) => Ok(json!({ "unbanned": false, "detail": f.describe() })),
        }
    }

    /// A moderator's decision on a user's held knocks, or on a member the block-list scan
    /// reported. An approval is checked against the current block-list first: block-level
    /// evidence closes the knock as blocked; hold-level evidence is what the moderator saw, and
    /// the approval stands. Rejecting a reported member removes them, as a rescind does.
    pub(crate) async fn decide_held(
        &self,
        user_id: &str,
        approve: bool,
        by: Option<String>,
    ) -> Result<Value> {
        self.decide_held_because(user_id, approve, by, None).await
    }

    /// [`Room::decide_held`], with the moderator's reason for a rejection.
    pub(crate) async fn decide_held_because(
        &self,
        user_id: &str,
        approve: bool,
        by: Option<String>,
        because: Option<String>,
    ) -> Result<Value> {
        let held: Vec<_> = self
            .store()
            .live_for(user_id)?
            .into_iter()
            .filter(|k| k.status == Status::Held)
            .collect();
        if held.is_empty() {
            if approve {
                let kept = self.store().dismiss_review(user_id)?;
                return Ok(json!({ "changed": 0, "member_kept": kept }));
            }
            if self.store().reviews()?.iter().any(|r| r.user_id == user_id) {
                self.store().drop_review(user_id)?;
                let removed = self.rescind(user_id).await?;
                return Ok(json!({ "changed": 0, "member_removed": removed }));
            }
            return Ok(json!({ "changed": 0 }));
        }
        let blocked = if approve {
            let version = self.host.list_version().await?;
            let index = self.host.index(version).await?;
            UserId::parse(user_id).ok().and_then(|u| {
                index
                    .judge(&u, None)
                    .filter(|v| v.outcome() == Outcome::Block)
                    .map(|v| v.explain())
            })
        } else {
            None
        };
        let mut changed = 0;
        for k in &held {
            let event = match (&blocked, approve) {
                (Some(why), _) => Event::Blocked {
                    reason: why.clone(),
                    ban: self.cfg()?.block_action == BlockAction::Ban,
                },
                (None, true) => Event::Approved { by: by.clone() },
                (None, false) => Event::Rejected {
                    reason: match &because {
                        Some(why) => format!(
                            "rejected by {}: {why}",
                            by.as_deref().unwrap_or("a moderator")
                        ),
                        None => {
                            format!("rejected by {}", by.as_deref().unwrap_or("a moderator"))
                        }
                    },
                },
            };
            // Re-read after the block-list check: only knocks still held are decided.
            if let Some(t) = self
                .transition(k.id, event)?
                .filter(|t| t.name != "unchanged")
            {
                changed += 1;
                if t.name == "rejected" {
                    // In the same step as the rejection: the message cannot be lost.
                    self.owe_denial(&t.knock)?;
                }
            }
        }
        self.rearm().await?;
        Ok(json!({ "changed": changed, "blocked": blocked }))
    }

    /// Decides every person in `users` as [`Room::decide_held`] does, one after the other.
    async fn decide_users(
        &self,
        users: &[String],
        approve: bool,
        by: Option<String>,
    ) -> Result<Value> {
        let (mut changed, mut blocked) = (0u64, 0u64);
        for u in users {
            let out = self.decide_held(u, approve, by.clone()).await?;
            changed += out["changed"].as_u64().unwrap_or(0);
            blocked += u64::from(out["blocked"].is_string());
        }
        Ok(json!({ "users": users.len(), "changed": changed, "blocked": blocked }))
    }

    /// A tap on a join wave's digest: every knock the wave still holds.
    pub(crate) async fn decide_wave(
        &self,
        wave: u64,
        approve: bool,
        by: Option<String>,
        dry_run: bool,
    ) -> Result<Value> {
        let (held, _) = self.store().wave_held(wave)?;
        let users = unique_users(held.iter().map(|k| k.user_id.as_str()));
        let out = if dry_run {
            json!({ "users": users.len() })
        } else {
            let out = self.decide_users(&users, approve, by).await?;
            // The digest shows what is left.
            let at = self.host.now();
            if self.cfg()?.management_room.is_some() {
                self.store()
                    .owe(super::messages::DIGEST, &wave.to_string(), None, at)?;
                self.rearm().await?;
            }
            out
        };
        Ok(with_names(out, &users))
    }

    /// `reject-held since <duration>`: every knock held since `since_ms`.
    pub(crate) async fn reject_held_since(
        &self,
        since_ms: u64,
        by: Option<String>,
        dry_run: bool,
    ) -> Result<Value> {
        let held = self.store().page(&crate::room::store::KnockQuery {
            limit: 1000,
            status: Some(Status::Held),
            ..Default::default()
        })?;
        let users = unique_users(
            held.iter()
                .filter(|k| k.created_at >= since_ms)
                .map(|k| k.user_id.as_str()),
        );
        let out = if dry_run {
            json!({ "users": users.len() })
        } else {
            self.decide_users(&users, false, by).await?
        };
        Ok(with_names(out, &users))
    }

    /// `kick-joined since <duration>`: the people Knock invited since `since_ms` who joined.
    pub(crate) fn joined_since(&self, since_ms: u64) -> Result<Value> {
        let mut knocks = Vec::new();
        for status in [Status::Joined, Status::Welcomed] {
            knocks.extend(self.store().page(&crate::room::store::KnockQuery {
                limit: 1000,
                status: Some(status),
                ..Default::default()
            })?);
        }
        let users = unique_users(
            knocks
                .iter()
                .filter(|k| k.invited_at.unwrap_or(k.created_at) >= since_ms)
                .map(|k| k.user_id.as_str()),
        );
        Ok(with_names(json!({ "users": users.len() }), &users))
    }

    /// Removes each of `users` (a kick for a member, a withdrawn invite otherwise), at most
    /// [`super::protocol::MAX_REMOVALS_PER_CALL`] of them; says how many are left.
    pub(crate) async fn remove_many(&self, users: &[String], by: Option<String>) -> Result<Value> {
        let max = super::protocol::MAX_REMOVALS_PER_CALL;
        let mut removed = 0;
        for u in users.iter().take(max) {
            let out = self.rescind(u).await?;
            if out["action"] != "none" {
                removed += 1;
            }
        }
        self.host.log(
            "members_removed",
            &[
                ("removed", (removed as u64).into()),
                ("by", by.unwrap_or_default().into()),
            ],
        );
        Ok(json!({ "removed": removed, "left": users.len().saturating_sub(max) }))
    }

    /// A moderator withdraws an invite, or removes someone who already joined.
    pub(crate) async fn rescind(&self, user_id: &str) -> Result<Value> {
        let user = UserId::parse(user_id).map_err(|e| e.to_string())?;
        let _busy = self.mark_busy(user.as_str());
        let reason = "Invite withdrawn by a moderator";
        let mut closed = 0;
        for k in self.store().live_for(user.as_str())? {
            let e = Event::Rescinded {
                reason: reason.into(),
            };
            if self
                .transition(k.id, e)?
                .is_some_and(|t| t.name == "rescinded")
            {
                closed += 1;
            }
        }
        self.rearm().await?;
        let membership = match self.membership(&user).await {
            Ok(m) => m,
            Err(why) => {
                return Ok(json!({ "action": "failed", "detail": why, "knocks_closed": closed }))
            }
        };
        let action = match membership.as_deref() {
            Some("invite") => "invite_rescinded",
            Some("join") => "kicked",
            _ => "none",
        };
        if action != "none" {
            let req = self.api()?.kick(&self.cfg()?.room_id, &user, Some(reason));
            if let Err(f) = self.host.send(req).await {
                return Ok(json!({
                    "membership_was": membership, "action": "failed", "detail": f.describe(),
                    "knocks_closed": closed,
                }));
            }
        }
        for k in self.store().live_for(user.as_str())? {
            if k.withdraw.is_some() && k.status == Status::Rescinded {
                self.transition(k.id, Event::Withdrawn)?;
            }
        }
        Ok(json!({ "membership_was": membership, "action": action, "knocks_closed": closed }))
    }
}

/// Each user once, in first-seen order.
fn unique_users<'a>(users: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for u in users {
        if !out.iter().any(|o| o == u) {
            out.push(u.to_owned());
        }
    }
    out
}

/// `out` with the user IDs it is about (the first 50).
fn with_names(mut out: Value, users: &[String]) -> Value {
    out["names"] = json!(users.iter().take(50).collect::<Vec<_>>());
    out
}
