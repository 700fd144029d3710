//! The room: what one room's Durable Object does, as plain Rust over four seams, so that the
//! same code runs in the worker and in the native simulation (`tests/sim`).
//!
//! - [`Host`]: the clock, the alarm, the homeserver (a session that handles the token), the
//!   block-list (the list object's version, and an index at least that new), a sleep, the log.
//! - [`store::Sql`]: synchronous SQL with the Durable Object's semantics.
//!
//! The room decides nothing itself: [`crate::domain::lifecycle`] says what an event does to a
//! knock, [`crate::domain::watchdog`] what a cron run should do. The room loads, asks, and stores,
//! and it is written for the Durable Object's concurrency: another request may run at every
//! `await`, so after each one it reads again what it acts on; every knock write is a
//! compare-and-set; alarms are the only scheduler, and a run holds its alarm as a lease so a
//! lost instance leaves an alarm behind.

pub mod messages;
pub mod moderate;
pub mod notify;
pub mod protocol;
pub mod queue;
pub mod space;
pub mod store;
pub mod watch;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;

use serde_json::Value;

use crate::domain::blocklist::BlockIndex;
use crate::domain::config::Config;
use crate::domain::lifecycle::{self, Event, Knock, RetryPolicy, Transition};
use crate::domain::mxid::RoomId;
use crate::domain::outcome::Failure;
use crate::matrix::{Api, HttpRequest};
use store::{Sql, Store};

pub use protocol::{KnockIn, KnockOut, RoomOp};

/// How long a run's lease lasts beyond one call's longest wait (its pacing and its timeout): an
/// instance lost mid-run is replaced by the alarm this soon after the call it was making.
pub const LEASE_MARGIN_MS: u64 = 5_000;

/// The lease a run takes before each call.
pub fn lease_ms(cfg: &Config) -> u64 {
    cfg.matrix_timeout_ms + cfg.request_delay_ms + LEASE_MARGIN_MS
}

/// Homeserver calls (and list-object checks) one run may make. The free plan allows 50
/// subrequests per invocation; the rest is picked up by the next alarm, at once.
pub const CALLS_PER_RUN: usize = 40;

/// What the room needs from its surroundings. Storage futures never let another request in
/// (the Durable Object's input gate holds them); `send`, `list_version`, `index` and `sleep`
/// do.
#[allow(async_fn_in_trait)]
pub trait Host {
    type Sql: Sql;
    fn store(&self) -> &Store<Self::Sql>;
    fn now(&self) -> u64;
    fn config(&self) -> std::result::Result<&Config, String>;
    async fn alarm(&self) -> Option<u64>;
    async fn set_alarm(&self, at: u64);
    async fn delete_alarm(&self);
    /// Sends a request (the session fills in the token, and logs in again once if refused).
    async fn send(&self, req: HttpRequest) -> std::result::Result<Value, Failure>;
    /// The block-list object's current version: a block is acknowledged once it is stored
    /// there, so this is "current", unlike a cache that may lag.
    async fn list_version(&self) -> std::result::Result<u64, String>;
    /// An index of the block-list at least as new as `version`.
    async fn index(&self, version: u64) -> std::result::Result<Rc<BlockIndex>, String>;
    async fn sleep(&self, ms: u64);
    /// The room's subscribed policy lists (`POLICY_ROOMS`), as compiled indexes.
    async fn policy_lists(&self) -> Vec<Rc<crate::domain::policy::index::PolicyIndex>> {
        Vec::new()
    }
    /// The subscribed lists trusted with fuzzy matching (`POLICY_FUZZY_ROOMS`), as block-list
    /// indexes of their user rules.
    async fn fuzzy_lists(&self) -> Vec<Rc<BlockIndex>> {
        Vec::new()
    }
    fn log(&self, event: &str, fields: &[(&str, Value)]);
    /// Sends an operation to another room's object (a space's child rooms) and returns its
    /// answer.
    async fn call_room(&self, room: &RoomId, op: &RoomOp) -> std::result::Result<Value, String>;
}

pub type Result<T> = std::result::Result<T, String>;

/// One room. What it keeps in memory is only coordination within this instance; everything
/// that matters is in the store, so a new instance carries on where a lost one stopped.
pub struct Room<H: Host> {
    pub host: H,
    /// A queue run holds the lease; `again` asks it to look once more before it ends.
    running: Cell<bool>,
    again: Cell<bool>,
    lease_until: Cell<u64>,
    /// A watchdog run is under way.
    watching: Cell<bool>,
    /// Users whose membership a moderator's request is changing right now: the queue leaves
    /// their owed kicks to that request (or, if this instance is lost, to the next run).
    busy: RefCell<HashSet<String>>,
    /// This instance read or wrote `login_needed` as 0 since it last wrote 1: a call that
    /// worked need not read it again (only this object writes its store, and only
    /// [`Room::after`] writes this key).
    login_known_ok: Cell<bool>,
}

impl<H: Host> Room<H> {
    pub fn new(host: H) -> Room<H> {
        Room {
            host,
            running: Cell::new(false),
            again: Cell::new(false),
            lease_until: Cell::new(0),
            watching: Cell::new(false),
            busy: RefCell::new(HashSet::new()),
            login_known_ok: Cell::new(false),
        }
    }

    pub fn store(&self) -> &Store<H::Sql> {
        self.host.store()
    }

    fn cfg(&self) -> Result<&Config> {
        self.host.config()
    }

    fn api(&self) -> Result<Api> {
        Ok(Api::new(&self.cfg()?.matrix_base_url, ""))
    }

    fn policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// Applies an event to the stored knock `id`, re-reading and re-deciding until the
    /// compare-and-set holds (no `await` happens in between, so it holds at once unless the
    /// caller's copy was stale). Returns the transition, or `None` if the knock is gone.
    pub(crate) fn transition(&self, id: i64, event: Event) -> Result<Option<Transition>> {
        for _ in 0..3 {
            let Some(k) = self.store().get(id)? else {
                return Ok(None);
            };
            let t = lifecycle::apply(&k, event.clone(), self.host.now(), &self.policy());
            if !t.changed(&k) {
                return Ok(Some(t));
            }
            if let Some(stored) = self.store().put(&t.knock)? {
                self.after(&t, &stored)?;
                return Ok(Some(Transition { knock: stored, ..t }));
            }
        }
        Err(format!("knock {id} kept changing under a write"))
    }

    /// [`Room::transition`], starting from `k`, a copy of the knock read earlier: if the row is
    /// still at `k.version` the compare-and-set holds without reading it again, and if not it
    /// fails and the knock is re-read as usual. A copy the event leaves unchanged says nothing
    /// about the row as stored, so that case reads it too.
    pub(crate) fn transition_from(&self, k: Knock, event: Event) -> Result<Option<Transition>> {
        let t = lifecycle::apply(&k, event.clone(), self.host.now(), &self.policy());
        if t.changed(&k) {
            if let Some(stored) = self.store().put(&t.knock)? {
                self.after(&t, &stored)?;
                return Ok(Some(Transition { knock: stored, ..t }));
            }
        }
        self.transition(k.id, event)
    }

    /// The room-wide effects of a transition.
    fn after(&self, t: &Transition, k: &Knock) -> Result<()> {
        use lifecycle::Effect;
        let now = self.host.now();
        self.owe_children(t.name, k)?;
        // Held by new evidence: the moderators hear of it.
        if t.name == "held" {
            self.owe_notice(k)?;
        }
        // An invite that keeps failing, or failed for good: so do they.
        if k.status == lifecycle::Status::Failed {
            let why = k.last_error.as_deref().unwrap_or("the homeserver refused");
            let text = format!("the invite of {} failed for good: {why}", k.user_id);
            self.owe_alert(&format!("invite-failed-{}", k.id), &text)?;
        } else if k.is_open() && k.attempts == messages::ALERT_AFTER_ATTEMPTS {
            let why = k
                .last_error
                .as_deref()
                .unwrap_or("the homeserver did not answer");
            let text = format!(
                "the invite of {} failed {} times so far ({why}); Knock keeps trying",
                k.user_id, k.attempts
            );
            self.owe_alert(&format!("invite-retrying-{}", k.id), &text)?;
        }
        for e in &t.effects {
            match *e {
                Effect::PauseRoomUntil(until) => {
                    let current = self.store().meta_u64("pause_until")?;
                    self.store().set_meta("pause_until", &until.max(current))?;
                }
                Effect::LoginNeeded => {
                    self.login_known_ok.set(false);
                    if self.store().meta_u64("login_needed")? == 0 {
                        self.store().set_meta("login_needed_since", &now)?;
                    }
                    self.store().set_meta("login_needed", &1)?
                }
                // Written only when it changes: most calls succeed, and a write costs (and
                // read only while this instance does not know it is 0).
                Effect::LoginWorks if self.login_known_ok.get() => {}
                Effect::LoginWorks => {
                    if self.store().meta_u64("login_needed")? != 0 {
                        self.store().set_meta("login_needed", &0)?;
                        // Told now: while the login was needed, Knock could not post at all.
                        let since = self.store().meta_u64("login_needed_since")?;
                        let minutes = now.saturating_sub(since) / 60_000;
                        let text = format!(
                            "the homeserver login was needed for about {minutes} min and works \
                             again; knocks that waited meanwhile are being worked now"
                        );
                        self.owe_alert(&format!("login-{since}"), &text)?;
                    }
                    self.login_known_ok.set(true);
                }
                Effect::RecordBan => self.store().record_ban(
                    &k.user_id,
                    k.last_error.as_deref().unwrap_or("blocked"),
                    now,
                )?,
            }
        }
        Ok(())
    }

    /// When the alarm must fire next, from the store alone: the earliest owed work (after any
    /// pause), or at once when a watchdog run is to continue.
    fn next_wake(&self) -> Result<Option<u64>> {
        let now = self.host.now();
        let w = self.store().wake_inputs()?;
        let due = w.earliest_due.map(|t| t.max(w.pause_until));
        let watch = w.watch_continue.then_some(now);
        // Notices wait out a pause too (they are homeserver calls); child knocks do not.
        let notices = w.notice_next.map(|t| t.max(w.pause_until));
        let owed = w.owed_next.map(|t| t.max(w.pause_until));
        Ok([due, watch, w.child_next, notices, owed]
            .into_iter()
            .flatten()
            .min())
    }

    /// Makes sure an alarm fires by the time work is owed. While a run holds the lease, the
    /// run itself picks new work up (it is told to look again), so the lease alarm stays.
    pub async fn rearm(&self) -> Result<()> {
        if self.running.get() {
            self.again.set(true);
            let lease = self.lease_until.get();
            if self.host.alarm().await.is_none_or(|t| t > lease) {
                self.host.set_alarm(lease).await;
            }
            return Ok(());
        }
        if let Some(wake) = self.next_wake()? {
            if self.host.alarm().await.is_none_or(|t| t > wake) {
                self.host.set_alarm(wake).await;
            }
        }
        Ok(())
    }

    /// Takes (or renews) the lease: the alarm is set before the work, so if this instance is
    /// lost mid-call a new one picks the run up when the lease runs out.
    async fn take_lease(&self) {
        let lease = self.cfg().map(lease_ms).unwrap_or(LEASE_MARGIN_MS);
        let now = self.host.now();
        // Renewed only once half of it is used up: one alarm write for several quick calls.
        if self.running.get() && self.lease_until.get() > now + lease / 2 {
            return;
        }
        let until = now + lease;
        self.lease_until.set(until);
        self.host.set_alarm(until).await;
    }

    /// The alarm: works the queue, continues a watchdog run that ran out of budget, prunes.
    /// A second alarm while a run is under way (alarms come at least once) only asks that run
    /// to look again.
    pub async fn alarm(&self) -> Result<Value> {
        if self.running.get() {
            // The run is alive (this instance still has it): keep a lease alarm ahead of now,
            // never one in the past, which would fire again at once.
            self.again.set(true);
            let lease = self.cfg().map(lease_ms).unwrap_or(LEASE_MARGIN_MS);
            let until = self.lease_until.get().max(self.host.now() + lease);
            self.lease_until.set(until);
            self.host.set_alarm(until).await;
            return Ok(serde_json::json!({ "ran": false, "why": "a run is under way" }));
        }
        self.running.set(true);
        // The alarm that woke this run is spent: a fresh lease, whatever an earlier run held.
        self.lease_until.set(0);
        self.take_lease().await;
        let result = self.run_queue().await;
        self.running.set(false);
        let mut report =
            serde_json::json!({ "queue": result.as_ref().map_err(|e| e.clone()).ok() });
        if let Err(e) = &result {
            self.host.log("queue_error", &[("error", e.clone().into())]);
        }
        if self.store().meta_u64("watch_continue")? == 1 {
            self.store().set_meta("watch_continue", &0)?;
            let watched = self.tick().await;
            report["watch"] = watched.unwrap_or_else(Value::from);
        }
        // Re-armed from the store alone: a knock stored during the run is due in it too.
        match self.next_wake()? {
            Some(wake) => self.host.set_alarm(wake).await,
            None if result.is_err() => self.host.set_alarm(self.host.now() + 30_000).await,
            // Nothing owed: the lease is given back, so an idle room costs nothing.
            None => self.host.delete_alarm().await,
        }
        Ok(report)
    }
}
