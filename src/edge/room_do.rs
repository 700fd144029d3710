//! The room's Durable Object (SQLite-backed), one instance per room: a thin newtype over
//! [`crate::room::Room`]. Its `fetch` and `alarm` only delegate; this file supplies the room's
//! host: the object's SQL and alarm, the clock, the bot's homeserver session (a token from the
//! session object, one re-login on refusal), the block-list (the list object's version, an
//! index at least that new) and the log.

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
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
use crate::domain::blocklist::BlockIndex;
use crate::domain::config::Config;
use crate::domain::deployment::Site;
use crate::domain::mxid::RoomId;
use crate::domain::outcome::Failure;
use crate::matrix::{classify, HttpRequest, Transport};
use crate::room::store::{Sql, SqlValue, Store};
use crate::room::{Host, Room, RoomOp};

/// The header that tells a room object which room it is (its name is the room ID, which an
/// object cannot read back from its own id).
const ROOM_HEADER: &str = "x-knock-room";

/// Sends an operation to the room's Durable Object (keyed by the room ID) and waits for its
/// answer.
pub async fn call<T: DeserializeOwned>(env: &Env, cfg: &Config, op: &RoomOp) -> Result<T> {
    let room = cfg.room_id.as_str();
    stub::call_with(
        env,
        ROOMS_BINDING,
        room,
        op.path(),
        op,
        &[(ROOM_HEADER, room)],
    )
    .await
}

#[durable_object]
pub struct RoomDo {
    room: Room<DoHost>,
}

impl DurableObject for RoomDo {
    fn new(state: State, env: Env) -> Self {
        let sql = DoSql(state.storage().sql());
        let store = Store::open(DoSql(state.storage().sql())).unwrap_or_else(|e| {
            worker::console_error!("room schema: {e}");
            Store { sql }
        });
        let host = DoHost {
            state,
            env,
            store,
            config: OnceCell::new(),
            token: RefCell::new(None),
            alarm_at: Cell::new(None),
            log: Logger::background("room"),
        };
        // An object that served a request before knows its room (an alarm has no header).
        if let Ok(Some(room)) = host.store.meta::<String>("room_id") {
            host.settle_config(Some(&room));
        }
        RoomDo {
            room: Room::new(host),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        if self.room.host.config.get().is_none() {
            let room = req.headers().get(ROOM_HEADER)?;
            self.room.host.settle_config(room.as_deref());
        }
        let op: RoomOp = req.json().await?;
        let reply = self
            .room
            .handle(op)
            .await
            .map_err(worker::Error::RustError)?;
        Response::from_json(&reply)
    }

    async fn alarm(&self) -> Result<Response> {
        // The alarm that woke this is spent (or, should this run fail, retried): not known
        // until the run sets or deletes one.
        self.room.host.alarm_at.set(None);
        let report = self.room.alarm().await;
        if report.is_err() {
            self.room.host.alarm_at.set(None);
        }
        let report = report.map_err(worker::Error::RustError)?;
        self.room.host.log("room_alarm", &[("report", report)]);
        Response::ok("done")
    }
}

pub struct DoHost {
    state: State,
    env: Env,
    store: Store<DoSql>,
    /// This room's configuration, settled once the object knows which room it is.
    config: OnceCell<std::result::Result<Config, String>>,
    /// The bot's token, as last handed out by the session object.
    token: RefCell<Option<String>>,
    /// The alarm as this instance last set, deleted or read it (`Some(None)`: none), while it
    /// is known: only this instance changes it, and an alarm that fires makes it unknown.
    alarm_at: Cell<Option<Option<u64>>>,
    log: Logger,
}

impl DoHost {
    /// Settles which room this object is, and so its configuration: the room a request named
    /// (remembered for alarms), else the one stored, else the default room (a first-release
    /// object, which served only `NEW_ROOM_ID`).
    fn settle_config(&self, room: Option<&str>) {
        let lookup = env_lookup(&self.env);
        let config = Site::load(&lookup)
            .map_err(|p| p.summary())
            .and_then(|site| {
                let named = room.and_then(|r| RoomId::parse(r).ok());
                let room = named
                    .clone()
                    .or_else(|| site.default_room())
                    .ok_or_else(|| "this room object does not know its room".to_owned())?;
                if named.is_some() {
                    if let Err(e) = self.store.set_meta("room_id", &room.as_str()) {
                        self.log("room_meta_failed", &[("error", e.into())]);
                    }
                }
                site.config_for(&room, &lookup).map_err(|p| p.summary())
            });
        let _ = self.config.set(config);
    }

    async fn token(&self, cfg: &Config) -> std::result::Result<String, Failure> {
        if let Some(t) = self.token.borrow().clone() {
            return Ok(t);
        }
        let reply: TokenReply = session_do::call(&self.env, cfg, &SessionOp::Token)
            .await
            .map_err(|_| Failure::Network)?;
        match reply.token {
            Some(t) => {
                *self.token.borrow_mut() = Some(t.clone());
                Ok(t)
            }
            None => Err(Failure::Unauthorized {
                errcode: "M_MISSING_TOKEN".into(),
            }),
        }
    }
}

impl Host for DoHost {
    type Sql = DoSql;

    fn store(&self) -> &Store<DoSql> {
        &self.store
    }

    fn now(&self) -> u64 {
        now_ms()
    }

    fn config(&self) -> std::result::Result<&Config, String> {
        match self.config.get() {
            Some(c) => c.as_ref().map_err(Clone::clone),
            None => {
                self.settle_config(None);
                match self.config.get() {
                    Some(c) => c.as_ref().map_err(Clone::clone),
                    None => Err("room configuration not settled".into()),
                }
            }
        }
    }

    async fn alarm(&self) -> Option<u64> {
        if let Some(known) = self.alarm_at.get() {
            return known;
        }
        match self.state.storage().get_alarm().await {
            Ok(t) => {
                let t = t.map(|t| t.max(0) as u64);
                self.alarm_at.set(Some(t));
                t
            }
            Err(_) => None,
        }
    }

    async fn set_alarm(&self, at: u64) {
        // Already set for exactly then: nothing to write.
        if self.alarm_at.get() == Some(Some(at)) {
            return;
        }
        let when = ScheduledTime::new(js_sys::Date::new(&js_sys::Number::from(at as f64)));
        self.alarm_at.set(None);
        match self.state.storage().set_alarm(when).await {
            Ok(()) => self.alarm_at.set(Some(Some(at))),
            Err(e) => self.log("alarm_failed", &[("error", e.to_string().into())]),
        }
    }

    async fn delete_alarm(&self) {
        self.alarm_at.set(None);
        match self.state.storage().delete_alarm().await {
            Ok(()) => self.alarm_at.set(Some(None)),
            Err(e) => self.log("alarm_failed", &[("error", e.to_string().into())]),
        }
    }

    /// Sends with the bot's token; on `M_UNKNOWN_TOKEN` asks the session object to log in again
    /// and, if it could, retries once with the new token.
    async fn send(&self, req: HttpRequest) -> std::result::Result<Value, Failure> {
        let cfg = self.config().map_err(|_| Failure::Network)?;
        let transport = FetchTransport {
            timeout_ms: cfg.matrix_timeout_ms,
        };
        let token = self.token(cfg).await?;
        let first = classify(transport.send(req.clone().with_token(&token)).await);
        let Err(Failure::Unauthorized { .. }) = &first else {
            return first;
        };
        let op = SessionOp::Recover {
            failed_token: token.clone(),
        };
        match session_do::call::<TokenReply>(&self.env, cfg, &op).await {
            Ok(TokenReply { token: Some(t), .. }) if t != token => {
                *self.token.borrow_mut() = Some(t.clone());
                classify(transport.send(req.with_token(&t)).await)
            }
            _ => {
                // No usable token: ask the session object again next time.
                *self.token.borrow_mut() = None;
                first
            }
        }
    }

    async fn list_version(&self) -> std::result::Result<u64, String> {
        blocklist::authoritative_version(&self.env)
            .await
            .map_err(|e| e.to_string())
    }

    async fn index(&self, version: u64) -> std::result::Result<Rc<BlockIndex>, String> {
        let policy = self.config()?.blocklist;
        blocklist::at_least(&self.env, version, &policy)
            .await
            .map_err(|e| e.to_string())
    }

    async fn sleep(&self, ms: u64) {
        worker::Delay::from(Duration::from_millis(ms)).await;
    }

    async fn policy_lists(&self) -> Vec<Rc<crate::domain::policy::index::PolicyIndex>> {
        match self.config() {
            Ok(cfg) => super::policy::lists(&self.env, cfg, &self.log).await,
            Err(_) => Vec::new(),
        }
    }

    async fn fuzzy_lists(&self) -> Vec<Rc<BlockIndex>> {
        match self.config() {
            Ok(cfg) => super::policy::fuzzy_lists(&self.env, cfg, &self.log).await,
            Err(_) => Vec::new(),
        }
    }

    fn log(&self, event: &str, fields: &[(&str, Value)]) {
        self.log.event(event, fields);
    }

    async fn call_room(&self, room: &RoomId, op: &RoomOp) -> std::result::Result<Value, String> {
        let lookup = env_lookup(&self.env);
        let cfg = Site::load(&lookup)
            .and_then(|site| site.config_for(room, &lookup))
            .map_err(|p| p.summary())?;
        call::<Value>(&self.env, &cfg, op)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The object's SQLite storage behind the room's [`Sql`] seam.
pub struct DoSql(SqlStorage);

fn bind(params: &[SqlValue]) -> Vec<SqlStorageValue> {
    params
        .iter()
        .map(|p| match p {
            SqlValue::Null => SqlStorageValue::Null,
            SqlValue::Int(i) => SqlStorageValue::Integer(*i),
            SqlValue::Text(s) => SqlStorageValue::String(s.clone()),
        })
        .collect()
}

impl Sql for DoSql {
    fn query<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &[SqlValue],
    ) -> std::result::Result<Vec<T>, String> {
        self.0
            .exec(sql, bind(params))
            .and_then(|c| c.to_array::<T>())
            .map_err(|e| e.to_string())
    }

    fn exec(&self, sql: &str, params: &[SqlValue]) -> std::result::Result<u64, String> {
        self.0
            .exec(sql, bind(params))
            .map(|c| c.rows_written() as u64)
            .map_err(|e| e.to_string())
    }

    fn batch(&self, sql: &str) -> std::result::Result<(), String> {
        self.0
            .exec(sql, None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
