//! The management room's Durable Object, one per management room. On each one-minute cron
//! run it loads what it keeps (the sync token, the reactions and commands already applied, bulk
//! actions waiting for confirmation), runs [`crate::manage::Manager::poll`] (an incremental
//! `/sync` that returns at once; nothing polls between runs, so it costs a few milliseconds a
//! minute), and stores what the poll hands back after each action. Polls run one at a time.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, ScheduledTime, State};

use super::log::Logger;
use super::session_do;
use super::transport::FetchTransport;
use super::{env_lookup, everywhere, now_ms, room_do, stub, MANAGE_BINDING};
use crate::domain::blocklist::{Entry, Reach};
use crate::domain::config::Config;
use crate::domain::deployment::Site;
use crate::domain::mxid::{RoomId, UserId};
use crate::domain::outcome::Failure;
use crate::manage::{ManageHost, Manager, Stored, BETWEEN_CRON_POLLS_MS};
use crate::matrix::{classify, Api, HttpRequest, Transport};
use crate::room::RoomOp;

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ManageOp {
    /// Read the management room's new events and act on them.
    Poll { room: String },
}

/// Asks the management room's object to poll.
pub async fn poll(env: &Env, room: &RoomId) -> Result<Value> {
    let op = ManageOp::Poll {
        room: room.as_str().to_owned(),
    };
    stub::call(env, MANAGE_BINDING, room.as_str(), "/", &op).await
}

#[durable_object]
pub struct ManageDo {
    state: State,
    env: Env,
    /// Polls run one at a time: two overlapping cron runs would otherwise both read the same
    /// sync token and remembered reactions, and the later write could bring back an older one.
    one_at_a_time: futures_util::lock::Mutex<()>,
}

impl DurableObject for ManageDo {
    fn new(state: State, env: Env) -> Self {
        ManageDo {
            state,
            env,
            one_at_a_time: futures_util::lock::Mutex::new(()),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let ManageOp::Poll { room } = req.json().await?;
        let _turn = self.one_at_a_time.lock().await;
        let room = RoomId::parse(&room).map_err(|e| worker::Error::RustError(e.into()))?;
        let report = match self.poll(&room).await {
            Ok(v) => v,
            Err(e) => json!({ "error": e }),
        };
        // One more poll half-way to the next cron run, so that a tap waits at most half a
        // minute (the alarm's own poll does not set another).
        let storage = self.state.storage();
        storage.put("room", room.as_str()).await?;
        if storage.get_alarm().await?.is_none() {
            let at = now_ms() + BETWEEN_CRON_POLLS_MS;
            let when = ScheduledTime::new(js_sys::Date::new(&js_sys::Number::from(at as f64)));
            storage.set_alarm(when).await?;
        }
        Response::from_json(&report)
    }

    async fn alarm(&self) -> Result<Response> {
        let _turn = self.one_at_a_time.lock().await;
        let room: Option<String> = self.state.storage().get("room").await?;
        let Some(room) = room.and_then(|r| RoomId::parse(&r).ok()) else {
            return Response::ok("no room");
        };
        let report = match self.poll(&room).await {
            Ok(v) => v,
            Err(e) => json!({ "error": e }),
        };
        Logger::background("manage").event("management_polled", &[("report", report)]);
        Response::ok("done")
    }
}

impl ManageDo {
    async fn poll(&self, room: &RoomId) -> std::result::Result<Value, String> {
        let lookup = env_lookup(&self.env);
        let site = Site::load(&lookup).map_err(|p| p.summary())?;
        let cfg = site.default_config(&lookup).map_err(|p| p.summary())?;
        let rooms = everywhere::all_rooms(&site, &lookup).map_err(|p| p.summary())?;
        let token = session_do::token(&self.env, &cfg).await?;
        let host = Edge {
            env: &self.env,
            state: &self.state,
            token,
            timeout_ms: cfg.matrix_timeout_ms,
            log: Logger::background("manage"),
        };
        let api = Api::new(&cfg.matrix_base_url, "");
        let me = host.send(api.whoami()).await.map_err(|f| f.describe())?;
        let bot = me["user_id"]
            .as_str()
            .and_then(|u| UserId::parse(u).ok())
            .ok_or("the homeserver did not say who the bot is")?;
        let mut stored: Stored = self
            .state
            .storage()
            .get("manage")
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let manager = Manager {
            host: &host,
            api,
            room: room.clone(),
            bot,
            rooms,
        };
        manager.poll(&mut stored).await
    }
}

/// The worker's side of the poll: the bot's token, the room objects, the block-list, storage.
struct Edge<'a> {
    env: &'a Env,
    state: &'a State,
    token: String,
    timeout_ms: u64,
    log: Logger,
}

impl ManageHost for Edge<'_> {
    fn now(&self) -> u64 {
        now_ms()
    }

    fn log(&self, event: &str, fields: &[(&str, Value)]) {
        self.log.event(event, fields);
    }

    async fn send(&self, req: HttpRequest) -> std::result::Result<Value, Failure> {
        let t = FetchTransport {
            timeout_ms: self.timeout_ms,
        };
        classify(t.send(req.with_token(&self.token)).await)
    }

    async fn call_room(&self, room: &Config, op: &RoomOp) -> std::result::Result<Value, String> {
        room_do::call::<Value>(self.env, room, op)
            .await
            .map_err(|e| e.to_string())
    }

    async fn block(
        &self,
        rooms: &[(String, Config)],
        entry: &Entry,
        reach: Option<Reach>,
    ) -> std::result::Result<Option<Value>, String> {
        everywhere::block_everywhere(self.env, rooms, entry, reach, &self.log)
            .await
            .map_err(|e| e.to_string())
    }

    async fn unblock(
        &self,
        rooms: &[(String, Config)],
        pattern: &str,
    ) -> std::result::Result<Value, String> {
        everywhere::unblock_everywhere(self.env, rooms, pattern, &self.log)
            .await
            .map_err(|e| e.to_string())
    }

    async fn save(&self, stored: &Stored) -> std::result::Result<(), String> {
        self.state
            .storage()
            .put("manage", stored)
            .await
            .map_err(|e| e.to_string())
    }
}
