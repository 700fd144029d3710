//! The room Durable Object's watchdog: observes the room's membership (incremental `/sync`, or a
//! full listing when there is no usable token), asks [`watchdog::plan`] what to do, and carries
//! the plan out within the run's budget of homeserver calls.

use serde::Deserialize;
use serde_json::{json, Value};
use worker::Result;

use super::blocklist;
use super::log::Logger;
use super::now_ms;
use super::room_do::{int, KnockIn, Room, Row, Session, KNOCK_COLUMNS};
use crate::domain::invites::{Knock, Status};
use crate::domain::moderation::Enforcement;
use crate::domain::mxid::UserId;
use crate::domain::watchdog::{self, Action, KnockPolicy, Member, NEUTRAL_REJECTION};
use crate::matrix::{parse_members, parse_sync, Failure};

/// Homeserver calls one watchdog run may make; the free plan allows 50 per invocation.
const WATCH_BUDGET: usize = 40;

impl Room {
    /// A cron run. Runs the watchdog if one of its tasks is due, and reports what it did.
    pub(super) async fn tick(&self) -> Result<Value> {
        if self.watching.get() {
            return Ok(json!({ "ran": false, "why": "a run is under way" }));
        }
        self.watching.set(true);
        let result = self.watch().await;
        self.watching.set(false);
        result
    }

    async fn watch(&self) -> Result<Value> {
        let log = Logger::background("watchdog");
        let session = match Session::open(&self.env, &self.token).await {
            Ok(s) => s,
            Err(why) => return Ok(json!({ "ran": false, "why": why })),
        };
        // A new token may have been configured since the homeserver refused the old one: let
        // the queue try again now rather than at the end of its pause.
        if self.meta_u64("login_needed")? == 1 {
            let now = now_ms();
            self.set_meta("pause_until", "0")?;
            self.sql().exec(
                "UPDATE knocks SET next_attempt_at = ? WHERE status = 'queued' \
                 AND last_error LIKE 'homeserver login needed%'",
                vec![int(now)],
            )?;
            self.wake_by(now).await?;
        }
        let now = now_ms();
        let cfg = &session.cfg;
        let cursor: Option<String> = self.meta_json("scan_cursor")?;
        let due = watchdog::due(
            now,
            self.meta_u64("last_invite_check")?,
            self.meta_u64("last_blocklist_scan")?,
            cursor.is_some(),
            cfg.invite_check_interval_ms,
            cfg.blocklist_scan_interval_ms,
        );
        if !due.any() {
            return Ok(json!({ "ran": false, "why": "nothing due" }));
        }
        let mut calls = self.observe(&session, &log).await?;
        let members = self.stored_members()?;
        let tracked = self.latest_knocks()?;
        let index = blocklist::current(&self.env).await?;
        let blocked = |user: &str, display: Option<&str>| -> Option<String> {
            let by_id = UserId::parse(user)
                .ok()
                .and_then(|u| index.check_user(&u).map(|v| v.explain()));
            by_id.or_else(|| display.and_then(|d| index.check_display_name(d).map(|v| v.explain())))
        };
        let scan_members = watchdog::members_to_visit(&members, due.member_scan);
        let plan = watchdog::plan(
            now,
            &cfg.watch,
            &scan_members,
            &tracked,
            &blocked,
            WATCH_BUDGET.saturating_sub(calls),
            cursor.as_deref(),
        );
        let mut done = Vec::new();
        for action in &plan.actions {
            calls += action.calls();
            let outcome = self.carry_out(&session, action).await;
            let (event, ok) = match &outcome {
                Ok(e) => (*e, true),
                Err(f) => (f.as_str(), false),
            };
            log.event(
                "watchdog_action",
                &[
                    ("action", format!("{action:?}").into()),
                    ("result", event.into()),
                    ("ok", ok.into()),
                ],
            );
            done.push(json!({ "action": format!("{action:?}"), "result": event }));
        }
        if due.invite_check {
            self.set_meta("last_invite_check", &now.to_string())?;
        }
        if due.member_scan {
            match &plan.cursor {
                Some(c) if plan.exhausted => self.set_meta_json("scan_cursor", &Some(c))?,
                _ => {
                    self.set_meta_json::<Option<String>>("scan_cursor", &None)?;
                    self.set_meta("last_blocklist_scan", &now.to_string())?;
                }
            }
        }
        if plan.exhausted {
            // More to do than one run may: an alarm picks it up at once, with a fresh budget.
            self.set_meta("watch_continue", "1")?;
            self.wake_by(now_ms()).await?;
        }
        Ok(json!({ "ran": true, "calls": calls, "actions": done, "more": plan.exhausted }))
    }

    /// Brings the `members` table up to date: incremental sync when it has a token, else a full
    /// listing and a fresh token. Returns the calls made.
    async fn observe(&self, session: &Session, log: &Logger) -> Result<usize> {
        let api = session.api();
        let room = &session.cfg.room_id;
        let since: Option<String> = self.meta_json("since")?;
        if let Some(token) = since {
            match session.send(api.sync(room, Some(&token))).await {
                Ok(body) => {
                    let synced = parse_sync(&body, room);
                    if !synced.limited {
                        for m in &synced.changes {
                            self.upsert_member(m)?;
                        }
                        self.set_meta_json("since", &synced.next_batch)?;
                        return Ok(1);
                    }
                    log.event("sync_gap", &[]);
                }
                Err(f) if f.is_transient() => {
                    log.event("sync_failed", &[("detail", f.describe().into())]);
                    return Ok(1);
                }
                // A token the server no longer knows: start over below.
                Err(f) => log.event("sync_token_stale", &[("detail", f.describe().into())]),
            }
        }
        // The token first, then the listing: a change that lands in between is then replayed
        // by the next incremental sync, instead of falling between the two and being missed.
        let token = match session.send(api.sync(room, None)).await {
            Ok(body) => parse_sync(&body, room).next_batch,
            Err(f) => {
                log.event("sync_failed", &[("detail", f.describe().into())]);
                None
            }
        };
        let listing = match session.send(api.members(room, None)).await {
            Ok(body) => parse_members(&body),
            Err(f) => {
                log.event("member_listing_failed", &[("detail", f.describe().into())]);
                return Ok(2);
            }
        };
        self.sql().exec("DELETE FROM members", None)?;
        for m in &listing {
            self.upsert_member(m)?;
        }
        self.set_meta_json("since", &token)?;
        Ok(3)
    }

    fn upsert_member(&self, m: &Member) -> Result<()> {
        self.sql().exec(
            "INSERT INTO members (user_id, membership, display_name, event_id) VALUES (?, ?, ?, ?) \
             ON CONFLICT(user_id) DO UPDATE SET membership = excluded.membership, \
             display_name = excluded.display_name, event_id = excluded.event_id",
            vec![
                m.user_id.as_str().into(),
                m.membership.as_str().into(),
                m.display_name.clone().into(),
                m.event_id.clone().into(),
            ],
        )?;
        Ok(())
    }

    fn stored_members(&self) -> Result<Vec<Member>> {
        self.sql()
            .exec(
                "SELECT user_id, membership, display_name, event_id FROM members ORDER BY user_id",
                None,
            )?
            .to_array()
    }

    /// The newest knock of every user.
    fn latest_knocks(&self) -> Result<Vec<Knock>> {
        let rows: Vec<Row> = self
            .sql()
            .exec(
                &format!(
                    "SELECT {KNOCK_COLUMNS} FROM knocks WHERE id IN \
                     (SELECT MAX(id) FROM knocks GROUP BY user_id) ORDER BY id"
                ),
                None,
            )?
            .to_array()?;
        Ok(rows.into_iter().map(Row::into_knock).collect())
    }

    fn set_status(&self, knock_id: i64, status: Status, note: Option<&str>) -> Result<()> {
        let now = now_ms();
        self.sql().exec(
            "UPDATE knocks SET status = ?, last_error = COALESCE(?, last_error), updated_at = ? \
             WHERE id = ?",
            vec![
                status.as_str().into(),
                note.map(str::to_owned).into(),
                int(now),
                knock_id.into(),
            ],
        )?;
        Ok(())
    }

    /// Carries out one action. `Err` names what failed; the next run tries again, because
    /// nothing is marked done until the homeserver said so.
    async fn carry_out(
        &self,
        session: &Session,
        action: &Action,
    ) -> std::result::Result<&'static str, String> {
        let api = session.api();
        let room = &session.cfg.room_id;
        let fail = |f: Failure| f.describe();
        let parse = |u: &str| UserId::parse(u).map_err(|e| e.to_string());
        let db = |r: Result<()>| r.map_err(|e| e.to_string());
        match action {
            Action::MarkJoined {
                knock_id,
                display_name,
            } => {
                db(self.set_status(*knock_id, Status::Joined, None))?;
                if let Some(name) = display_name {
                    db(self
                        .sql()
                        .exec(
                            "UPDATE knocks SET display_name = ? WHERE id = ?",
                            vec![name.as_str().into(), (*knock_id).into()],
                        )
                        .map(|_| ()))?;
                }
                Ok("joined")
            }
            Action::Welcome { knock_id, text } => {
                // The transaction id makes a repeat after a crash a no-op on the homeserver.
                let txn = format!("knock-welcome-{knock_id}");
                session
                    .send(api.send_text(room, &txn, text))
                    .await
                    .map_err(fail)?;
                db(self.set_status(*knock_id, Status::Welcomed, None))?;
                Ok("welcomed")
            }
            Action::Remind {
                knock_id,
                user_id,
                text,
            } => {
                let user = parse(user_id)?;
                let key = format!("dm:{user_id}");
                let dm_room = match self.meta_json::<String>(&key).map_err(|e| e.to_string())? {
                    Some(r) => r,
                    None => {
                        let created = session.send(api.create_dm(&user)).await.map_err(fail)?;
                        let id = created["room_id"].as_str().unwrap_or_default().to_owned();
                        db(self.set_meta_json(&key, &id))?;
                        id
                    }
                };
                let dm = crate::domain::mxid::RoomId::parse(&dm_room).map_err(str::to_owned)?;
                let txn = format!("knock-remind-{knock_id}");
                session
                    .send(api.send_text(&dm, &txn, text))
                    .await
                    .map_err(fail)?;
                db(self.set_status(*knock_id, Status::Reminded, None))?;
                Ok("reminded")
            }
            Action::Rescind {
                knock_id,
                user_id,
                reason,
            } => {
                let user = parse(user_id)?;
                session
                    .send(api.kick(room, &user, Some(reason)))
                    .await
                    .map_err(fail)?;
                db(self.set_status(*knock_id, Status::Rescinded, Some(reason)))?;
                Ok("rescinded")
            }
            Action::Enforce {
                user_id,
                enforcement,
                reason,
            } => {
                let user = parse(user_id)?;
                if let Some(call) = enforcement.call() {
                    session
                        .send(api.moderate(room, call, &user, Some(reason)))
                        .await
                        .map_err(fail)?;
                }
                if *enforcement == Enforcement::Ban {
                    db(self
                        .sql()
                        .exec(
                            "INSERT OR REPLACE INTO bans (user_id, reason, placed_at) VALUES (?, ?, ?)",
                            vec![user_id.as_str().into(), reason.as_str().into(), int(now_ms())],
                        )
                        .map(|_| ()))?;
                }
                db(self
                    .sql()
                    .exec(
                        "UPDATE knocks SET status = 'rescinded', last_error = ?, updated_at = ? \
                         WHERE user_id = ? AND status IN ('queued', 'invited', 'reminded', 'joined', 'welcomed')",
                        vec![reason.as_str().into(), int(now_ms()), user_id.as_str().into()],
                    )
                    .map(|_| ()))?;
                Ok(enforcement.describe())
            }
            Action::Adopt { user_id } => {
                let now = now_ms();
                let k = Knock {
                    status: Status::Invited,
                    profile_checked: true,
                    invited_at: Some(now),
                    last_error: Some("invited outside Knock; adopted".into()),
                    ..Knock::new(user_id, "adopted", now)
                };
                db(self.insert_knock(&k).map(|_| ()))?;
                Ok("adopted")
            }
            Action::NativeKnock { user_id, event_id } => {
                self.native_knock(session, user_id, event_id).await
            }
            Action::RejectKnock { user_id } => {
                let user = parse(user_id)?;
                session
                    .send(api.kick(room, &user, Some(NEUTRAL_REJECTION)))
                    .await
                    .map_err(fail)?;
                Ok("knock_rejected")
            }
        }
    }

    /// A native knock goes through the same intake as a form knock: block-list, per-ID limit,
    /// join wave. Its reason is outsider-written and is never posted anywhere.
    async fn native_knock(
        &self,
        session: &Session,
        user_id: &str,
        event_id: &str,
    ) -> std::result::Result<&'static str, String> {
        let index = blocklist::current(&self.env)
            .await
            .map_err(|e| e.to_string())?;
        let user = UserId::parse(user_id).map_err(|e| e.to_string())?;
        let verdict = index.check_user(&user).map(|v| v.explain());
        let (record_as, note) = match (&verdict, session.cfg.watch.knock_policy) {
            (Some(why), _) => (Some(Status::Blocked), Some(why.clone())),
            (None, KnockPolicy::Manual) => (
                Some(Status::Held),
                Some("native knock: waiting for a moderator".to_owned()),
            ),
            (None, _) => (None, None),
        };
        let knock = KnockIn {
            user_id: user.as_str().into(),
            source: "native".into(),
            delivery_key: format!("native:{event_id}"),
            record_as,
            note,
        };
        let out = self
            .store_knock(knock, now_ms())
            .map_err(|e| e.to_string())?;
        match (out.outcome.as_str(), record_as) {
            ("queued", _) => {
                self.wake_by(now_ms()).await.map_err(|e| e.to_string())?;
                Ok("knock_queued")
            }
            ("recorded", Some(Status::Blocked)) => {
                session
                    .send(
                        session
                            .api()
                            .kick(&session.cfg.room_id, &user, Some(NEUTRAL_REJECTION)),
                    )
                    .await
                    .map_err(|f| f.describe())?;
                Ok("knock_rejected")
            }
            ("recorded", _) => Ok("knock_held"),
            ("limited", _) => Ok("knock_limited"),
            _ => Ok("knock_repeat"),
        }
    }

    /// A moderator withdraws an invite, or removes someone who already joined.
    pub(super) async fn rescind(&self, user_id: &str) -> Result<Value> {
        let user = UserId::parse(user_id).map_err(|e| e.to_string())?;
        let (session, membership) =
            match Session::with_membership(&self.env, &self.token, &user).await {
                Ok(found) => found,
                Err(failed) => return Ok(failed),
            };
        let reason = "Invite withdrawn by a moderator";
        let action = match membership.as_deref() {
            Some("invite") => "invite_rescinded",
            Some("join") => "kicked",
            _ => "none",
        };
        if action != "none" {
            if let Err(f) = session
                .send(
                    session
                        .api()
                        .kick(&session.cfg.room_id, &user, Some(reason)),
                )
                .await
            {
                return Ok(
                    json!({ "membership_was": membership, "action": "failed", "detail": f.describe() }),
                );
            }
        }
        let cursor = self.sql().exec(
            "UPDATE knocks SET status = 'rescinded', last_error = ?, updated_at = ? \
             WHERE user_id = ? AND status IN ('queued', 'held', 'invited', 'reminded', 'joined', 'welcomed')",
            vec![reason.into(), int(now_ms()), user.as_str().into()],
        )?;
        Ok(json!({
            "membership_was": membership,
            "action": action,
            "knocks_closed": cursor.rows_written(),
        }))
    }

    /// Tracked invites not yet accepted, with their ages in seconds.
    pub(super) fn pending(&self, now: u64) -> Result<Value> {
        let rows: Vec<Row> = self
            .sql()
            .exec(
                &format!(
                    "SELECT {KNOCK_COLUMNS} FROM knocks WHERE status IN ('queued', 'invited', 'reminded') \
                     ORDER BY id"
                ),
                None,
            )?
            .to_array()?;
        let pending: Vec<Value> = rows
            .into_iter()
            .map(Row::into_knock)
            .map(|k| {
                json!({
                    "user_id": k.user_id,
                    "state": k.status.as_str(),
                    "source": k.source,
                    "age_seconds": now.saturating_sub(k.created_at) / 1000,
                    "invited_seconds_ago": k.invited_at.map(|t| now.saturating_sub(t) / 1000),
                    "last_error": k.last_error,
                })
            })
            .collect();
        Ok(json!({ "pending": pending }))
    }

    /// The room's members as the homeserver lists them now.
    pub(super) async fn members_now(&self) -> Result<Value> {
        let session = Session::open(&self.env, &self.token).await?;
        match session
            .send(session.api().members(&session.cfg.room_id, None))
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

    pub(super) async fn raw_state(&self) -> Result<Value> {
        let session = Session::open(&self.env, &self.token).await?;
        match session
            .send(session.api().room_state(&session.cfg.room_id))
            .await
        {
            Ok(body) => Ok(json!({ "state": body })),
            Err(f) => Ok(json!({ "error": f.describe() })),
        }
    }

    /// Recent knocks, form and native, newest first, with their verdicts and reasons.
    pub(super) fn recent_knocks(&self, limit: u32) -> Result<Value> {
        #[derive(Deserialize)]
        struct K {
            id: i64,
            user_id: String,
            source: String,
            status: String,
            last_error: Option<String>,
            created_at: i64,
            updated_at: i64,
        }
        let rows: Vec<K> = self
            .sql()
            .exec(
                "SELECT id, user_id, source, status, last_error, created_at, updated_at FROM knocks \
                 ORDER BY id DESC LIMIT ?",
                vec![(limit.clamp(1, 1000) as i64).into()],
            )?
            .to_array()?;
        let knocks: Vec<Value> = rows
            .into_iter()
            .map(|k| {
                json!({
                    "id": k.id, "user_id": k.user_id, "source": k.source, "verdict": k.status,
                    "reason": k.last_error, "received_at": k.created_at, "updated_at": k.updated_at,
                })
            })
            .collect();
        Ok(json!({ "knocks": knocks }))
    }
}
