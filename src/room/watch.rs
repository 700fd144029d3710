//! The room's watchdog: observes the room's membership (incremental `/sync`, or a full listing
//! when there is no usable token), asks [`watchdog::plan`] what to do, and carries the plan out
//! within the run's budget. A failed observation ends the run: nothing is decided on stale
//! membership. Lifecycle events are stored at once; any kick they owe is the queue's to make.

use serde_json::{json, Value};

use super::protocol::KnockIn;
use super::{Host, Result, Room, CALLS_PER_RUN};
use crate::domain::blocklist::Outcome;
use crate::domain::lifecycle::{Event, Knock, Status, NATIVE};
use crate::domain::moderation::Enforcement;
use crate::domain::mxid::{RoomId, UserId};
use crate::domain::watchdog::{self, Action, KnockPolicy};
use crate::matrix::{parse_members, parse_sync};

/// Closed knocks pruned per run at most.
const PRUNE_PER_RUN: u32 = 500;

impl<H: Host> Room<H> {
    /// A cron run (or its continuation). Runs the watchdog if one of its tasks is due.
    pub async fn tick(&self) -> Result<Value> {
        if self.watching.get() {
            return Ok(json!({ "ran": false, "why": "a run is under way" }));
        }
        self.watching.set(true);
        let result = self.watch().await;
        self.watching.set(false);
        // What the last run did, for `GET /rooms`.
        if let Ok(report) = &result {
            let last = json!({
                "at": self.host.now(),
                "ran": report["ran"],
                "actions": report["actions"].as_array().map_or(0, Vec::len),
                "calls": report["calls"],
                "why": report["why"],
            });
            self.store().set_meta("last_run", &last)?;
        }
        self.rearm().await?;
        result
    }

    async fn watch(&self) -> Result<Value> {
        let now = self.host.now();
        let cfg = self.cfg()?;
        let store = self.store();
        let pruned = store.prune(now, cfg.retention_ms, PRUNE_PER_RUN)?;
        // A new token may have been configured since the homeserver refused the old one: let
        // the queue try again now rather than at the end of its pause.
        if store.meta_u64("login_needed")? == 1 {
            store.set_meta("pause_until", &0)?;
            for k in store.waiting(now)? {
                if k.last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("homeserver login needed"))
                {
                    self.transition(k.id, Event::RetryNow)?;
                }
            }
        }
        let cursor: Option<String> = store.meta("scan_cursor")?.flatten();
        let due = watchdog::due(
            now,
            store.meta_u64("last_invite_check")?,
            store.meta_u64("last_blocklist_scan")?,
            cursor.is_some(),
            cfg.invite_check_interval_ms,
            cfg.blocklist_scan_interval_ms,
        );
        if !due.any() {
            return Ok(json!({ "ran": false, "why": "nothing due", "pruned": pruned }));
        }
        let (mut calls, observed) = self.observe().await?;
        if !observed {
            return Ok(
                json!({ "ran": false, "why": "the room could not be observed", "calls": calls }),
            );
        }
        let version = self.host.list_version().await?;
        let index = self.host.index(version).await?;
        calls += 1;
        let members = self.store().members()?;
        let latest = self.store().latest_per_user()?;
        // Subscribed lists' rules (often globs and server rules) never touch the bot or a
        // moderator of the room, and a pass they would remove more than ten members in only
        // reports them, for a moderator to confirm.
        let lists = self.host.policy_lists().await;
        let fuzzy = self.host.fuzzy_lists().await;
        let spared = if (lists.is_empty() && fuzzy.is_empty()) || !due.member_scan {
            None
        } else {
            calls += 2;
            Some(self.spared().await?)
        };
        let subscribed = |user: &str| -> Option<String> {
            let (bot, levels) = spared.as_ref()?;
            if user == bot || levels.is_moderator(user) {
                return None;
            }
            if let Some(f) = crate::domain::policy::subscribed_rule(&lists, &index, user) {
                return Some(f.verdict());
            }
            // A list trusted with fuzzy matching acts on block-level evidence, as Knock's own.
            let id = UserId::parse(user).ok()?;
            if fuzzy.is_empty() || index.allowed(user).is_some() {
                return None;
            }
            fuzzy.iter().find_map(|l| {
                l.check_user(&id)
                    .filter(|v| v.outcome() == Outcome::Block)
                    .map(|v| v.explain())
            })
        };
        let removable = members
            .iter()
            .filter(|m| matches!(m.membership.as_str(), "join" | "invite" | "knock"))
            .filter(|m| subscribed(&m.user_id).is_some())
            .count();
        let confirm_first = removable > crate::domain::moderation::commands::CONFIRM_ABOVE;
        let blocked = |user: &str, display: Option<&str>| -> Option<(Outcome, String)> {
            let id = UserId::parse(user).ok()?;
            let own = index
                .judge(&id, display)
                .map(|v| (v.outcome(), v.explain()));
            if matches!(own, Some((Outcome::Block, _))) {
                return own;
            }
            match subscribed(user) {
                Some(why) if confirm_first => Some((
                    Outcome::Hold,
                    format!(
                        "{why}; held for a moderator: the subscribed lists would remove \
                         {removable} members at once"
                    ),
                )),
                Some(why) => Some((Outcome::Block, why)),
                None => own,
            }
        };
        // A member pass that starts from the top: reviews it does not raise again are stale.
        if due.member_scan && cursor.is_none() {
            store.set_meta("scan_started_at", &now)?;
        }
        let plan = watchdog::plan(
            self.host.now(),
            &cfg.watch,
            due,
            &members,
            &latest,
            &blocked,
            CALLS_PER_RUN.saturating_sub(calls),
            cursor.as_deref(),
        );
        let mut done = Vec::new();
        for action in &plan.actions {
            calls += action.calls();
            let outcome = self.carry_out(action).await;
            // An action may have left owed work (a kick after an expiry, a queued native
            // knock): its alarm is set before the next `await`.
            self.rearm().await?;
            let (result, ok) = match &outcome {
                // Seen again on every pass, and already in the held list: nothing to say.
                Ok("already_reported") => continue,
                Ok(e) => (e.to_string(), true),
                Err(f) => (f.clone(), false),
            };
            self.host.log(
                "watchdog_action",
                &[
                    ("action", format!("{action:?}").into()),
                    ("result", result.clone().into()),
                    ("ok", ok.into()),
                ],
            );
            done.push(json!({ "action": format!("{action:?}"), "result": result }));
        }
        let store = self.store();
        if due.invite_check && plan.invite_check_done {
            store.set_meta("last_invite_check", &now)?;
        }
        if due.member_scan {
            if plan.member_pass_done {
                store.prune_reviews(store.meta_u64("scan_started_at")?)?;
                store.set_meta::<Option<String>>("scan_cursor", &None)?;
                store.set_meta("last_blocklist_scan", &now)?;
            } else if let Some(c) = &plan.cursor {
                store.set_meta("scan_cursor", &Some(c))?;
            }
        }
        if plan.exhausted {
            // More to do than one run may: an alarm picks it up at once, with a fresh budget.
            store.set_meta("watch_continue", &1)?;
        }
        Ok(
            json!({ "ran": true, "calls": calls, "actions": done, "more": plan.exhausted,
                   "pruned": pruned }),
        )
    }

    /// Brings the stored membership up to date: incremental sync when it has a token, else a
    /// full listing and a fresh token. Returns the calls made and whether it succeeded.
    async fn observe(&self) -> Result<(usize, bool)> {
        let api = self.api()?;
        let room = &self.cfg()?.room_id;
        let since: Option<String> = self.store().meta::<Option<String>>("since")?.flatten();
        let mut calls = 0;
        if let Some(token) = since {
            calls += 1;
            match self.host.send(api.sync(room, Some(&token))).await {
                Ok(body) => {
                    let synced = parse_sync(&body, room);
                    if !synced.limited {
                        for m in &synced.changes {
                            self.store().upsert_member(m)?;
                        }
                        self.store().set_meta("since", &synced.next_batch)?;
                        return Ok((calls, true));
                    }
                    self.host.log("sync_gap", &[]);
                }
                Err(f) if f.is_transient() => {
                    self.host
                        .log("sync_failed", &[("detail", f.describe().into())]);
                    return Ok((calls, false));
                }
                // A token the server no longer knows: start over below.
                Err(f) => self
                    .host
                    .log("sync_token_stale", &[("detail", f.describe().into())]),
            }
        }
        // The token first, then the listing: a change that lands in between is then replayed
        // by the next incremental sync, instead of falling between the two and being missed.
        calls += 2;
        let token = match self.host.send(api.sync(room, None)).await {
            Ok(body) => parse_sync(&body, room).next_batch,
            Err(f) => {
                self.host
                    .log("sync_failed", &[("detail", f.describe().into())]);
                return Ok((calls - 1, false));
            }
        };
        let listing = match self.host.send(api.members(room, None)).await {
            Ok(body) => parse_members(&body),
            Err(f) => {
                self.host
                    .log("member_listing_failed", &[("detail", f.describe().into())]);
                return Ok((calls, false));
            }
        };
        self.store().replace_members(&listing)?;
        self.store().set_meta("since", &token)?;
        Ok((calls, true))
    }

    /// Carries out one action. `Err` names what failed; the next run tries again, because
    /// nothing is recorded as done until the homeserver said so.
    async fn carry_out(&self, action: &Action) -> std::result::Result<&'static str, String> {
        let api = self.api()?;
        let room = &self.cfg()?.room_id;
        let parse = |u: &str| UserId::parse(u).map_err(|e| e.to_string());
        match action {
            Action::Lifecycle { knock_id, event } => Ok(self
                .transition(*knock_id, event.clone())?
                .map_or("gone", |t| t.name)),
            Action::Welcome { knock_id, text } => {
                // The transaction id makes a repeat after a crash a no-op on the homeserver.
                let txn = format!("knock-welcome-{knock_id}");
                self.host
                    .send(api.send_text(room, &txn, text))
                    .await
                    .map_err(|f| f.describe())?;
                self.transition(*knock_id, Event::Welcomed)?;
                Ok("welcomed")
            }
            Action::Remind {
                knock_id,
                user_id,
                text,
                dm_room,
            } => {
                let user = parse(user_id)?;
                let dm_room = match dm_room {
                    Some(r) => r.clone(),
                    None => {
                        let created = self
                            .host
                            .send(api.create_dm(&user))
                            .await
                            .map_err(|f| f.describe())?;
                        let id = created["room_id"].as_str().unwrap_or_default().to_owned();
                        // Recorded before the message, so a retry reuses the chat.
                        self.transition(
                            *knock_id,
                            Event::DmOpened {
                                dm_room: id.clone(),
                            },
                        )?;
                        id
                    }
                };
                let dm = RoomId::parse(&dm_room).map_err(str::to_owned)?;
                let txn = format!("knock-remind-{knock_id}");
                self.host
                    .send(api.send_text(&dm, &txn, text))
                    .await
                    .map_err(|f| f.describe())?;
                self.transition(*knock_id, Event::Reminded)?;
                Ok("reminded")
            }
            Action::Enforce {
                user_id,
                enforcement,
                reason,
            } => {
                let user = parse(user_id)?;
                if let Some(call) = enforcement.call() {
                    self.host
                        .send(api.moderate(room, call, &user, Some(reason)))
                        .await
                        .map_err(|f| f.describe())?;
                }
                if *enforcement == Enforcement::Ban {
                    self.store().record_ban(user_id, reason, self.host.now())?;
                }
                Ok(enforcement.describe())
            }
            Action::Adopt { user_id } => {
                let now = self.host.now();
                let k = Knock {
                    status: Status::Invited,
                    profile_checked: true,
                    invited_at: Some(now),
                    last_error: Some("invited outside Knock; adopted".into()),
                    ..Knock::new(user_id, "adopted", now)
                };
                self.store().insert(&k)?;
                Ok("adopted")
            }
            Action::NativeKnock { user_id, event_id } => self.native_knock(user_id, event_id).await,
            Action::Report { user_id, why } => {
                let new = self.store().report_member(user_id, why, self.host.now())?;
                Ok(if new { "reported" } else { "already_reported" })
            }
        }
    }

    /// Whom subscribed lists never act against: the bot (as the homeserver knows its token)
    /// and the room's moderators (power level at or above its `kick`).
    async fn spared(
        &self,
    ) -> std::result::Result<(String, crate::domain::moderation::moderators::PowerLevels), String>
    {
        let api = self.api()?;
        let me = self
            .host
            .send(api.whoami())
            .await
            .map_err(|f| f.describe())?;
        let bot = me["user_id"].as_str().unwrap_or_default().to_owned();
        let room = &self.cfg()?.room_id;
        let levels = self
            .host
            .send(api.state_event(room, "m.room.power_levels", ""))
            .await
            .map(|c| crate::domain::moderation::moderators::PowerLevels::from_content(&c))
            .map_err(|f| f.describe())?;
        Ok((bot, levels))
    }

    /// A native knock goes through the same intake as a form knock: block-list, per-ID limit,
    /// join wave, re-knock policy. Its reason is outsider-written and is never posted anywhere.
    /// A refusal is owed as a kick on its row, which the queue carries out.
    async fn native_knock(
        &self,
        user_id: &str,
        event_id: &str,
    ) -> std::result::Result<&'static str, String> {
        let version = self.host.list_version().await?;
        let index = self.host.index(version).await?;
        let user = UserId::parse(user_id).map_err(|e| e.to_string())?;
        let fuzzy = self.host.fuzzy_lists().await;
        let mut verdict = crate::domain::policy::graded(&index, &fuzzy, &user, None);
        if !matches!(verdict, Some((Outcome::Block, _))) {
            let lists = self.host.policy_lists().await;
            if let Some(f) = crate::domain::policy::subscribed_rule(&lists, &index, user.as_str()) {
                verdict = Some((Outcome::Block, f.verdict()));
            }
        }
        let (record_as, note) = match (verdict, self.cfg()?.watch.knock_policy) {
            (Some((Outcome::Block, why)), _) => (Some(Status::Blocked), Some(why)),
            (Some((Outcome::Hold, why)), _) => (Some(Status::Held), Some(why)),
            (_, KnockPolicy::Manual) => (
                Some(Status::Held),
                Some("native knock: waiting for a moderator".to_owned()),
            ),
            _ => (None, None),
        };
        let out = self.store_knock(KnockIn {
            user_id: user.as_str().into(),
            source: NATIVE.into(),
            delivery_key: format!("native:{event_id}"),
            record_as,
            note,
            answers: Vec::new(),
        })?;
        Ok(match (out.outcome.as_str(), out.status) {
            ("queued", _) => "knock_queued",
            ("recorded", Some(Status::Blocked)) => "knock_rejected",
            ("recorded", _) => "knock_held",
            ("limited", _) => "knock_limited",
            _ => "knock_repeat",
        })
    }

    /// The room's members as the homeserver lists them now.
    pub(crate) async fn members_now(&self) -> Result<Value> {
        let api = self.api()?;
        match self
            .host
            .send(api.members(&self.cfg()?.room_id, None))
            .await
        {
            Ok(body) => {
                let members: Vec<Value> = parse_members(&body)
                    .into_iter()
                    .map(|m| json!({ "user_id": m.user_id, "membership": m.membership, "display_name": m.display_name }))
                    .collect();
                Ok(json!({ "members": members }))
            }
            Err(f) => Ok(json!({ "error": f.describe() })),
        }
    }

    pub(crate) async fn raw_state(&self) -> Result<Value> {
        let api = self.api()?;
        match self.host.send(api.room_state(&self.cfg()?.room_id)).await {
            Ok(body) => Ok(json!({ "state": body })),
            Err(f) => Ok(json!({ "error": f.describe() })),
        }
    }
}
