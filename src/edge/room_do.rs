//! The room's Durable Object (SQLite-backed), one instance per room: it stores every knock
//! before any homeserver call, and works the queue off in alarms.
//!
//! It only loads rows, calls the core ([`crate::domain::invites`]) and stores what the core
//! returns; the homeserver calls go through a [`Transport`].

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use worker::{
    durable_object, DurableObject, Env, Request, Response, Result, ScheduledTime, SqlStorage,
    SqlStorageValue, State,
};

use super::blocklist;
use super::log::Logger;
use super::session_do::{self, SessionOp, TokenReply};
use super::stub;
use super::transport::FetchTransport;
use super::{env_lookup, now_ms, ROOMS_BINDING};
use crate::domain::config::Config;
use crate::domain::invites::{self, Intake, Knock, RetryPolicy, Status, Step};
use crate::domain::moderation::{self, Enforcement};
use crate::domain::mxid::UserId;
use crate::domain::rate_limit::{self, LimiterState, WaveState};
use crate::matrix::{classify, Api, Failure, Transport};

/// Homeserver calls one alarm run may make. The free plan allows 50 subrequests per
/// invocation; the rest of the queue is picked up by the next alarm, at once.
const CALLS_PER_RUN: usize = 40;

/// What the worker asks the room to store.
#[derive(Serialize, Deserialize)]
pub struct KnockIn {
    pub user_id: String,
    pub source: String,
    pub delivery_key: String,
    /// `None` to process; `Some(status)` to record only (spam).
    pub record_as: Option<Status>,
    pub note: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub struct KnockOut {
    /// `queued`, `repeat`, `recorded` or `limited`.
    pub outcome: String,
    pub knock_id: i64,
    /// With `limited`: how long the client must wait.
    #[serde(default)]
    pub retry_after_ms: u64,
}

impl KnockOut {
    fn new(outcome: &str, knock_id: i64) -> KnockOut {
        KnockOut {
            outcome: outcome.into(),
            knock_id,
            retry_after_ms: 0,
        }
    }
}

/// What the worker asks of a room.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RoomOp {
    Knock(KnockIn),
    /// Someone was just blocked: cancel their knocks and act on their membership.
    Enforce {
        user_id: String,
        reason: String,
    },
    /// Someone was unblocked: lift any ban Knock placed.
    Lift {
        user_id: String,
    },
    /// Knocks held in a join wave.
    Held,
    /// A moderator approves or rejects a user's held knocks.
    DecideHeld {
        user_id: String,
        approve: bool,
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
    /// Recent knocks, newest first.
    Knocks {
        limit: u32,
    },
}

/// Sends an operation to the room's Durable Object and waits for its answer.
pub async fn call<T: serde::de::DeserializeOwned>(
    env: &Env,
    cfg: &Config,
    op: &RoomOp,
) -> Result<T> {
    let path = match op {
        RoomOp::Knock(_) => "/knock",
        RoomOp::Enforce { .. } => "/enforce",
        RoomOp::Lift { .. } => "/lift",
        RoomOp::Held => "/held",
        RoomOp::DecideHeld { .. } => "/decide_held",
        RoomOp::Tick => "/tick",
        RoomOp::Rescind { .. } => "/rescind",
        RoomOp::Pending => "/pending",
        RoomOp::Members => "/members",
        RoomOp::State => "/state",
        RoomOp::Knocks { .. } => "/knocks",
    };
    stub::call(env, ROOMS_BINDING, cfg.room_id.as_str(), path, op).await
}

/// The Durable Object itself: a thin newtype whose events only delegate to [`Room`]. The room
/// sits behind an `Rc` so that work can continue after a reply (`State::wait_until`).
#[durable_object]
pub struct RoomDo {
    room: Rc<Room>,
}

pub(super) struct Room {
    pub(super) state: State,
    pub(super) env: Env,
    /// A watchdog run is under way (a second tick waits for the next one).
    pub(super) watching: Cell<bool>,
    /// The queue is being worked off; `again` asks that run to look once more before it ends.
    working: Cell<bool>,
    again: Cell<bool>,
    /// The bot's token, as last handed out by the session object.
    pub(super) token: TokenCache,
}

#[derive(Deserialize)]
pub(super) struct Row {
    id: i64,
    user_id: String,
    source: String,
    status: String,
    profile_checked: i64,
    attempts: i64,
    next_attempt_at: i64,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
    invited_at: Option<i64>,
}

impl Row {
    pub(super) fn into_knock(self) -> Knock {
        Knock {
            id: self.id,
            user_id: self.user_id,
            source: self.source,
            status: Status::parse(&self.status).unwrap_or(Status::Failed),
            profile_checked: self.profile_checked != 0,
            attempts: self.attempts.max(0) as u32,
            next_attempt_at: self.next_attempt_at.max(0) as u64,
            last_error: self.last_error,
            created_at: self.created_at.max(0) as u64,
            updated_at: self.updated_at.max(0) as u64,
            invited_at: self.invited_at.map(|t| t.max(0) as u64),
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS knocks (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id TEXT NOT NULL,
  source TEXT NOT NULL,
  status TEXT NOT NULL,
  profile_checked INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  last_error TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  invited_at INTEGER,
  display_name TEXT
);
CREATE INDEX IF NOT EXISTS knocks_by_user ON knocks(user_id, id);
CREATE INDEX IF NOT EXISTS knocks_due ON knocks(status, next_attempt_at);
CREATE TABLE IF NOT EXISTS deliveries (
  key TEXT PRIMARY KEY,
  knock_id INTEGER NOT NULL,
  received_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS members (
  user_id TEXT PRIMARY KEY,
  membership TEXT NOT NULL,
  display_name TEXT,
  event_id TEXT
);
CREATE TABLE IF NOT EXISTS bans (
  user_id TEXT PRIMARY KEY,
  reason TEXT NOT NULL,
  placed_at INTEGER NOT NULL
);
";

pub(super) const KNOCK_COLUMNS: &str = "id, user_id, source, status, profile_checked, attempts, \
                             next_attempt_at, last_error, created_at, updated_at, invited_at";

pub(super) fn int(v: u64) -> SqlStorageValue {
    SqlStorageValue::Integer(v.min(i64::MAX as u64) as i64)
}

fn at(ms: u64) -> ScheduledTime {
    ScheduledTime::new(js_sys::Date::new(&js_sys::Number::from(ms as f64)))
}

impl DurableObject for RoomDo {
    fn new(state: State, env: Env) -> Self {
        if let Err(e) = state.storage().sql().exec(SCHEMA, None) {
            worker::console_error!("room schema: {e}");
        }
        RoomDo {
            room: Rc::new(Room {
                state,
                env,
                watching: Cell::new(false),
                working: Cell::new(false),
                again: Cell::new(false),
                token: TokenCache::default(),
            }),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        self.room.fetch(req).await
    }

    async fn alarm(&self) -> Result<Response> {
        self.room.alarm().await
    }
}

impl Room {
    async fn fetch(self: &Rc<Self>, mut req: Request) -> Result<Response> {
        match req.json::<RoomOp>().await? {
            RoomOp::Knock(knock) => {
                let out = self.store_knock(knock, now_ms())?;
                if out.outcome == "queued" {
                    // Stored first; the alarm is the durable promise that it will be worked
                    // off. Starting at once, after the reply, saves the wait for the alarm.
                    self.wake_by(now_ms()).await?;
                    let room = Rc::clone(self);
                    self.state.wait_until(async move {
                        let log = Logger::background("room");
                        if let Err(e) = room.work_queue(&log).await {
                            log.event("queue_error", &[("error", e.to_string().into())]);
                        }
                    });
                }
                Response::from_json(&out)
            }
            RoomOp::Enforce { user_id, reason } => {
                Response::from_json(&self.enforce(&user_id, &reason).await?)
            }
            RoomOp::Lift { user_id } => Response::from_json(&self.lift(&user_id).await?),
            RoomOp::Held => Response::from_json(&json!({ "held": self.held()? })),
            RoomOp::DecideHeld { user_id, approve } => {
                Response::from_json(&self.decide_held(&user_id, approve).await?)
            }
            RoomOp::Tick => Response::from_json(&self.tick().await?),
            RoomOp::Rescind { user_id } => Response::from_json(&self.rescind(&user_id).await?),
            RoomOp::Pending => Response::from_json(&self.pending(now_ms())?),
            RoomOp::Members => Response::from_json(&self.members_now().await?),
            RoomOp::State => Response::from_json(&self.raw_state().await?),
            RoomOp::Knocks { limit } => Response::from_json(&self.recent_knocks(limit)?),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        let log = Logger::background("room");
        if let Err(e) = self.work_queue(&log).await {
            log.event("queue_error", &[("error", e.to_string().into())]);
            // Try again soon rather than lose the wake-up.
            self.wake_by(now_ms() + 30_000).await?;
        }
        if self.meta_u64("watch_continue")? == 1 {
            self.set_meta("watch_continue", "0")?;
            let report = self.tick().await?;
            log.event("watchdog_continued", &[("report", report)]);
        }
        Response::ok("done")
    }
}

/// The homeserver session of one Durable Object event: config, a token from the bot's session
/// object, and the transport. A refused token is exchanged once for a fresh login.
pub(super) struct Session {
    pub(super) cfg: Config,
    /// The room's copy of the bot's token, shared by every session of this object, so a queue
    /// run does not ask the session object each time. Refreshed after a refusal.
    token: TokenCache,
    env: Env,
    transport: FetchTransport,
}

pub(super) type TokenCache = Rc<std::cell::RefCell<Option<String>>>;

impl Session {
    pub(super) async fn open(
        env: &Env,
        cache: &TokenCache,
    ) -> std::result::Result<Session, String> {
        let cfg = Config::from_lookup(env_lookup(env)).map_err(|p| p.summary())?;
        if cache.borrow().is_none() {
            let reply: TokenReply = session_do::call(env, &cfg, &SessionOp::Token)
                .await
                .map_err(|e| e.to_string())?;
            *cache.borrow_mut() = reply.token;
        }
        Ok(Session {
            token: Rc::clone(cache),
            transport: FetchTransport {
                timeout_ms: cfg.matrix_timeout_ms,
            },
            env: env.clone(),
            cfg,
        })
    }

    pub(super) fn api(&self) -> Api {
        Api::new(
            &self.cfg.matrix_base_url,
            self.token.borrow().as_deref().unwrap_or_default(),
        )
    }

    /// Sends a request; on `M_UNKNOWN_TOKEN` asks the session object to log in again and, if it
    /// could, retries once with the new token.
    pub(super) async fn send(
        &self,
        req: crate::matrix::HttpRequest,
    ) -> std::result::Result<Value, Failure> {
        let first = classify(self.transport.send(req.clone()).await);
        let Err(Failure::Unauthorized { .. }) = &first else {
            return first;
        };
        let failed = self.token.borrow().clone().unwrap_or_default();
        let op = SessionOp::Recover {
            failed_token: failed.clone(),
        };
        match session_do::call::<TokenReply>(&self.env, &self.cfg, &op).await {
            Ok(TokenReply { token: Some(t), .. }) if t != failed => {
                *self.token.borrow_mut() = Some(t.clone());
                classify(self.transport.send(req.with_token(&t)).await)
            }
            _ => {
                // No usable token: ask the session object again next time.
                *self.token.borrow_mut() = None;
                first
            }
        }
    }

    /// A session and someone's current membership, or the admin reply saying what failed.
    pub(super) async fn with_membership(
        env: &Env,
        cache: &TokenCache,
        user: &UserId,
    ) -> std::result::Result<(Session, Option<String>), Value> {
        let session = Session::open(env, cache)
            .await
            .map_err(|why| json!({ "action": "failed", "detail": why }))?;
        let membership = session
            .membership(user)
            .await
            .map_err(|f| json!({ "action": "failed", "detail": f.describe() }))?;
        Ok((session, membership))
    }

    /// Someone's current membership, or `None` if they never had one.
    pub(super) async fn membership(
        &self,
        user: &UserId,
    ) -> std::result::Result<Option<String>, Failure> {
        match self
            .send(self.api().member_state(&self.cfg.room_id, user))
            .await
        {
            Ok(v) => Ok(v["membership"].as_str().map(str::to_owned)),
            Err(Failure::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Room {
    /// Works the queue off, one runner at a time: a call that finds a runner busy asks it to
    /// look again before it stops, so nothing is left waiting and nothing is sent twice.
    async fn work_queue(&self, log: &Logger) -> Result<()> {
        if self.working.get() {
            self.again.set(true);
            return Ok(());
        }
        self.working.set(true);
        let mut result = Ok(());
        loop {
            self.again.set(false);
            if let Err(e) = self.process_due(log).await {
                result = Err(e);
                break;
            }
            if !self.again.get() {
                break;
            }
        }
        self.working.set(false);
        result
    }

    pub(super) fn sql(&self) -> SqlStorage {
        self.state.storage().sql()
    }

    /// Cancels a newly blocked user's knocks, then kicks or bans them as `BLOCK_ACTION` says.
    async fn enforce(&self, user_id: &str, reason: &str) -> Result<Value> {
        let user = UserId::parse(user_id).map_err(|e| e.to_string())?;
        let now = now_ms();
        // Queued knocks must never turn into invites now; this runs before any await.
        self.sql().exec(
            "UPDATE knocks SET status = 'blocked', last_error = ?, updated_at = ? \
             WHERE user_id = ? AND status = 'queued'",
            vec![reason.into(), int(now), user.as_str().into()],
        )?;
        let (session, membership) =
            match Session::with_membership(&self.env, &self.token, &user).await {
                Ok(found) => found,
                Err(failed) => return Ok(failed),
            };
        let plan = moderation::enforcement(membership.as_deref(), session.cfg.block_action);
        if let Some(call) = plan.call() {
            let req = session
                .api()
                .moderate(&session.cfg.room_id, call, &user, Some(reason));
            if let Err(f) = session.send(req).await {
                return Ok(json!({
                    "membership_was": membership,
                    "action": "failed",
                    "detail": f.describe(),
                }));
            }
        }
        if plan == Enforcement::Ban {
            self.sql().exec(
                "INSERT OR REPLACE INTO bans (user_id, reason, placed_at) VALUES (?, ?, ?)",
                vec![user.as_str().into(), reason.into(), int(now_ms())],
            )?;
        }
        if plan != Enforcement::None {
            self.sql().exec(
                "UPDATE knocks SET status = 'rescinded', last_error = ?, updated_at = ? \
                 WHERE user_id = ? AND status IN ('invited', 'joined')",
                vec![reason.into(), int(now_ms()), user.as_str().into()],
            )?;
        }
        Ok(json!({ "membership_was": membership, "action": plan.describe() }))
    }

    /// Lifts the ban Knock placed on this user, if it placed one.
    async fn lift(&self, user_id: &str) -> Result<Value> {
        let user = UserId::parse(user_id).map_err(|e| e.to_string())?;
        #[derive(Deserialize)]
        struct Ban {
            #[allow(dead_code)]
            user_id: String,
        }
        let ours: Vec<Ban> = self
            .sql()
            .exec(
                "SELECT user_id FROM bans WHERE user_id = ?",
                vec![user.as_str().into()],
            )?
            .to_array()?;
        if ours.is_empty() {
            return Ok(json!({ "unbanned": false }));
        }
        let session = match Session::open(&self.env, &self.token).await {
            Ok(s) => s,
            Err(why) => return Ok(json!({ "unbanned": false, "detail": why })),
        };
        let req = session
            .api()
            .unban(&session.cfg.room_id, &user, Some("Unblocked in Knock"));
        match session.send(req).await {
            // Not banned any more (someone lifted it by hand): the record goes too.
            Ok(_) | Err(Failure::Refused { .. }) => {
                self.sql().exec(
                    "DELETE FROM bans WHERE user_id = ?",
                    vec![user.as_str().into()],
                )?;
                Ok(json!({ "unbanned": true }))
            }
            Err(f) => Ok(json!({ "unbanned": false, "detail": f.describe() })),
        }
    }

    /// A numeric meta value (timestamps, flags); 0 when unset.
    pub(super) fn meta_u64(&self, key: &str) -> Result<u64> {
        Ok(self.meta_json::<u64>(key)?.unwrap_or(0))
    }

    pub(super) fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.sql().exec(
            "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
            vec![key.into(), value.into()],
        )?;
        Ok(())
    }

    /// Stores a knock: de-duplicated by delivery, limited per Matrix ID, held in a join wave,
    /// de-duplicated by user. Synchronous SQL only, so it all runs without interleaving.
    pub(super) fn store_knock(&self, k: KnockIn, now: u64) -> Result<KnockOut> {
        let cfg = Config::from_lookup(env_lookup(&self.env)).map_err(|p| p.summary())?;
        let sql = self.sql();
        #[derive(Deserialize)]
        struct Id {
            knock_id: i64,
        }
        let seen: Vec<Id> = sql
            .exec(
                "SELECT knock_id FROM deliveries WHERE key = ?",
                vec![k.delivery_key.as_str().into()],
            )?
            .to_array()?;
        let previous_delivery = seen.first().map(|r| r.knock_id);
        let (limit, limiter) = if previous_delivery.is_some() {
            (rate_limit::Verdict::Allow { remaining: 0 }, None)
        } else {
            let key = format!("mxid:{}", k.user_id);
            let state: LimiterState = self.meta_json(&key)?.unwrap_or_default();
            let (verdict, next) = rate_limit::decide(&state, now, &cfg.mxid_quota);
            (verdict, Some((key, next)))
        };
        let wave_state: WaveState = self.meta_json("wave")?.unwrap_or_default();
        let (wave, next_wave) = rate_limit::record_knock(&wave_state, now, &cfg.wave);
        let latest: Vec<Row> = sql
            .exec(
                &format!(
                    "SELECT {KNOCK_COLUMNS} FROM knocks WHERE user_id = ? ORDER BY id DESC LIMIT 1"
                ),
                vec![k.user_id.as_str().into()],
            )?
            .to_array()?;
        let latest = latest.into_iter().next().map(Row::into_knock);
        let decision =
            invites::intake(previous_delivery, limit, wave, k.record_as, latest.as_ref());

        if let Some((key, next)) = limiter {
            self.set_meta_json(&key, &next)?;
        }
        if previous_delivery.is_none() {
            self.set_meta_json("wave", &next_wave)?;
        }
        let (outcome, knock_id, retry_after_ms) = match decision {
            Intake::RepeatDelivery(id) => return Ok(KnockOut::new("repeat", id)),
            Intake::Limited { retry_after_ms } => ("limited", 0, retry_after_ms),
            Intake::RepeatOf(id) => ("repeat", id, 0),
            Intake::Record(status) => {
                let reason = k.note.as_deref().unwrap_or(match status {
                    Status::Held => "held for a moderator: join wave",
                    other => other.as_str(),
                });
                let row = Knock::recorded(&k.user_id, &k.source, status, reason, now);
                ("recorded", self.insert_knock(&row)?, 0)
            }
            Intake::Queue => {
                let row = Knock::new(&k.user_id, &k.source, now);
                ("queued", self.insert_knock(&row)?, 0)
            }
        };
        if outcome != "limited" {
            sql.exec(
                "INSERT INTO deliveries (key, knock_id, received_at) VALUES (?, ?, ?)",
                vec![k.delivery_key.as_str().into(), knock_id.into(), int(now)],
            )?;
        }
        Ok(KnockOut {
            outcome: outcome.into(),
            knock_id,
            retry_after_ms,
        })
    }

    pub(super) fn meta_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        #[derive(Deserialize)]
        struct V {
            v: String,
        }
        let rows: Vec<V> = self
            .sql()
            .exec("SELECT v FROM meta WHERE k = ?", vec![key.into()])?
            .to_array()?;
        Ok(rows.first().and_then(|r| serde_json::from_str(&r.v).ok()))
    }

    pub(super) fn set_meta_json<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        self.set_meta(key, &serde_json::to_string(value)?)
    }

    /// Knocks waiting for a moderator, oldest first.
    fn held(&self) -> Result<Vec<Knock>> {
        let rows: Vec<Row> = self
            .sql()
            .exec(
                &format!("SELECT {KNOCK_COLUMNS} FROM knocks WHERE status = 'held' ORDER BY id"),
                None,
            )?
            .to_array()?;
        Ok(rows.into_iter().map(Row::into_knock).collect())
    }

    /// A moderator's decision on held knocks of one user: approve queues them for an invite,
    /// reject closes them.
    async fn decide_held(&self, user_id: &str, approve: bool) -> Result<Value> {
        let now = now_ms();
        let (status, note) = if approve {
            ("queued", "approved by a moderator")
        } else {
            ("rejected", "rejected by a moderator")
        };
        let cursor = self.sql().exec(
            "UPDATE knocks SET status = ?, last_error = ?, next_attempt_at = ?, updated_at = ? \
             WHERE user_id = ? AND status = 'held'",
            vec![
                status.into(),
                note.into(),
                int(now),
                int(now),
                user_id.into(),
            ],
        )?;
        let changed = cursor.rows_written();
        if approve && changed > 0 {
            self.wake_by(now).await?;
        }
        Ok(json!({ "changed": changed }))
    }

    pub(super) fn insert_knock(&self, k: &Knock) -> Result<i64> {
        #[derive(Deserialize)]
        struct Id {
            id: i64,
        }
        let rows: Vec<Id> = self
            .sql()
            .exec(
                "INSERT INTO knocks (user_id, source, status, profile_checked, attempts, \
                 next_attempt_at, last_error, created_at, updated_at, invited_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                vec![
                    k.user_id.as_str().into(),
                    k.source.as_str().into(),
                    k.status.as_str().into(),
                    (k.profile_checked as i64).into(),
                    (k.attempts as i64).into(),
                    int(k.next_attempt_at),
                    k.last_error.clone().into(),
                    int(k.created_at),
                    int(k.updated_at),
                    k.invited_at.map(int).unwrap_or(SqlStorageValue::Null),
                ],
            )?
            .to_array()?;
        rows.first()
            .map(|r| r.id)
            .ok_or_else(|| "insert returned no id".into())
    }

    pub(super) fn update_knock(&self, k: &Knock) -> Result<()> {
        self.sql().exec(
            "UPDATE knocks SET status = ?, profile_checked = ?, attempts = ?, \
             next_attempt_at = ?, last_error = ?, updated_at = ?, invited_at = ? WHERE id = ?",
            vec![
                k.status.as_str().into(),
                (k.profile_checked as i64).into(),
                (k.attempts as i64).into(),
                int(k.next_attempt_at),
                k.last_error.clone().into(),
                int(k.updated_at),
                k.invited_at.map(int).unwrap_or(SqlStorageValue::Null),
                k.id.into(),
            ],
        )?;
        Ok(())
    }

    /// Makes sure an alarm fires no later than `when`.
    pub(super) async fn wake_by(&self, when: u64) -> Result<()> {
        let storage = self.state.storage();
        let current = storage.get_alarm().await?;
        if current.is_none_or(|t| t as u64 > when) {
            storage.set_alarm(at(when)).await?;
        }
        Ok(())
    }

    fn due_knocks(&self, now: u64, limit: usize) -> Result<Vec<Knock>> {
        let rows: Vec<Row> = self
            .sql()
            .exec(
                &format!(
                    "SELECT {KNOCK_COLUMNS} FROM knocks WHERE status = 'queued' \
                     AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?"
                ),
                vec![int(now), (limit as i64).into()],
            )?
            .to_array()?;
        Ok(rows.into_iter().map(Row::into_knock).collect())
    }

    fn next_due_at(&self) -> Result<Option<u64>> {
        #[derive(Deserialize)]
        struct Next {
            t: Option<i64>,
        }
        let rows: Vec<Next> = self
            .sql()
            .exec(
                "SELECT MIN(next_attempt_at) AS t FROM knocks WHERE status = 'queued'",
                None,
            )?
            .to_array()?;
        Ok(rows.first().and_then(|r| r.t).map(|t| t.max(0) as u64))
    }

    /// Works off due knocks until the queue is empty, the room is paused, or the run's call
    /// budget is spent; then sets the alarm for whatever is due next.
    async fn process_due(&self, log: &Logger) -> Result<()> {
        let session = match Session::open(&self.env, &self.token).await {
            Ok(s) => s,
            Err(why) => {
                log.event("session_unavailable", &[("detail", why.into())]);
                return self.wake_by(now_ms() + 60_000).await;
            }
        };
        let cfg = &session.cfg;
        let policy = RetryPolicy::default();
        let room_server = cfg.room_id.as_str().split_once(':').map(|(_, s)| s);
        let mut calls = 0usize;

        'run: while calls < CALLS_PER_RUN {
            let now = now_ms();
            let paused_until = self.meta_u64("pause_until")?;
            if paused_until > now {
                break;
            }
            let batch = self.due_knocks(now, CALLS_PER_RUN - calls)?;
            if batch.is_empty() {
                break;
            }
            for mut knock in batch {
                while let Some(step) = invites::next_step(&knock) {
                    if calls >= CALLS_PER_RUN {
                        break 'run;
                    }
                    let Ok(user) = UserId::parse(&knock.user_id) else {
                        knock.status = Status::Failed;
                        knock.last_error = Some("stored user ID no longer parses".into());
                        self.update_knock(&knock)?;
                        break;
                    };
                    self.pace(cfg.request_delay_ms).await?;
                    let api = session.api();
                    let request = match step {
                        Step::CheckProfile => api.profile(&user),
                        Step::Invite => {
                            api.invite(&cfg.room_id, &user, Some("asked to join via Knock"))
                        }
                    };
                    calls += 1;
                    let outcome = session.send(request).await;
                    let now = now_ms();
                    // The profile names the person: an impersonating display name is caught
                    // here, before any invite, at no extra call.
                    let impersonation = match (&outcome, step) {
                        (Ok(profile), Step::CheckProfile) => {
                            match invites::profile_display_name(profile) {
                                Some(name) => blocklist::current(&self.env)
                                    .await?
                                    .check_display_name(name)
                                    .map(|v| v.explain()),
                                None => None,
                            }
                        }
                        _ => None,
                    };
                    if let Some(why) = impersonation {
                        self.update_knock(&invites::block(&knock, &why, now))?;
                        log.event(
                            "knock_verdict",
                            &[
                                ("user_id", knock.user_id.clone().into()),
                                ("verdict", "blocked".into()),
                                ("rule", why.into()),
                            ],
                        );
                        break;
                    }
                    let is_local = room_server == Some(user.server_name());
                    let applied = invites::apply(&knock, step, outcome, now, &policy, is_local);
                    self.update_knock(&applied.knock)?;
                    log.event(
                        applied.event,
                        &[
                            ("user_id", knock.user_id.clone().into()),
                            ("knock_id", knock.id.into()),
                            ("attempts", applied.knock.attempts.into()),
                            (
                                "detail",
                                applied
                                    .knock
                                    .last_error
                                    .clone()
                                    .map_or(Value::Null, Value::from),
                            ),
                        ],
                    );
                    if applied.login_needed {
                        self.set_meta("login_needed", "1")?;
                    } else if step == Step::Invite && applied.knock.status == Status::Invited {
                        self.set_meta("login_needed", "0")?;
                    }
                    if let Some(until) = applied.pause_room_until {
                        self.set_meta("pause_until", &until.to_string())?;
                        break 'run;
                    }
                    knock = applied.knock;
                }
            }
        }

        let paused_until = self.meta_u64("pause_until")?;
        if let Some(next) = self.next_due_at()? {
            self.state
                .storage()
                .set_alarm(at(next.max(paused_until).max(now_ms())))
                .await?;
        }
        Ok(())
    }

    /// Spaces homeserver calls by `REQUEST_DELAY`, across runs too.
    async fn pace(&self, delay_ms: u64) -> Result<()> {
        if delay_ms == 0 {
            return Ok(());
        }
        let last = self.meta_u64("last_call_at")?;
        let wait = (last + delay_ms).saturating_sub(now_ms());
        if wait > 0 {
            worker::Delay::from(Duration::from_millis(wait)).await;
        }
        self.set_meta("last_call_at", &now_ms().to_string())
    }
}
