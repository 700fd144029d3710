//! The management room's Durable Object, one per management room: reads the room's new
//! reactions on each one-minute cron run (an incremental `/sync` that returns at once; nothing
//! polls between runs, so it costs a few milliseconds a minute) and carries out the
//! moderators' taps on Knock's notices: ✅ approves, ❌ rejects the held knock the notice is
//! about, in the room the notice names (by its key); 🔨 blocks the person (an exact entry), in
//! every room, unless they are the bot or a moderator. Each reaction is applied once (its event id
//! is remembered), only from moderators (power level at or above the management room's `kick`),
//! and Knock answers in the notice's thread with what it did.
//!
//! Which taps count and what a notice is about are decided in
//! [`crate::domain::moderation::commands`]; this object reads, asks, and calls the room object.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use super::log::Logger;
use super::session_do::{self, SessionOp, TokenReply};
use super::transport::FetchTransport;
use super::{admin, env_lookup, now_ms, room_do, stub, MANAGE_BINDING};
use crate::domain::blocklist::{Entry, Reach};
use crate::domain::config::Config;
use crate::domain::deployment::Site;
use crate::domain::moderation::commands::{
    help_text, notice_about, parse, taps, Command, Tap, Usage,
};
use crate::domain::moderation::moderators::{may_act_against, PowerLevels};
use crate::domain::moderation::notices;
use crate::domain::mxid::{RoomId, UserId};
use crate::matrix::{classify, parse_timeline, Api, HttpRequest, Transport};
use crate::room::RoomOp;

/// Reactions and commands remembered as applied (the newest; a sync never replays older ones).
const REMEMBERED: usize = 2_000;

/// On the first read of a management room, only events this recent are acted on.
const FIRST_READ_WINDOW_MS: u64 = 120_000;

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

#[derive(Serialize, Deserialize, Default)]
struct Stored {
    since: Option<String>,
    handled: VecDeque<String>,
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
        Response::from_json(&report)
    }
}

impl ManageDo {
    async fn poll(&self, room: &RoomId) -> std::result::Result<Value, String> {
        let lookup = env_lookup(&self.env);
        let site = Site::load(&lookup).map_err(|p| p.summary())?;
        let cfg = site.default_config(&lookup).map_err(|p| p.summary())?;
        let log = Logger::background("manage");
        let token = self.token(&cfg).await?;
        let api = Api::new(&cfg.matrix_base_url, "");
        let send = |req: HttpRequest| {
            let t = FetchTransport {
                timeout_ms: cfg.matrix_timeout_ms,
            };
            let req = req.with_token(&token);
            async move { classify(t.send(req).await) }
        };
        let bot = self.bot(&api, &send).await?;
        let storage = self.state.storage();
        let mut stored: Stored = storage
            .get("manage")
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let types = ["m.reaction", "m.room.message"];
        let body = send(api.sync_timeline(room, stored.since.as_deref(), &types))
            .await
            .map_err(|f| f.describe())?;
        let (next, mut events, _limited) = parse_timeline(&body, room);
        if stored.since.is_none() {
            // The first read of the room returns its recent history: what is older than a
            // couple of minutes was said before Knock listened, and is not acted on now.
            let recent = now_ms().saturating_sub(FIRST_READ_WINDOW_MS);
            events.retain(|e| e["origin_server_ts"].as_u64().is_some_and(|t| t >= recent));
        }
        let mut done = Vec::new();
        if events.iter().any(|e| e["sender"] != bot.as_str()) {
            let levels = send(api.state_event(room, "m.room.power_levels", ""))
                .await
                .map(|c| PowerLevels::from_content(&c))
                .map_err(|f| f.describe())?;
            let (tapped, ignored) = taps(&events, &bot, &|u| levels.is_moderator(u));
            for who in ignored {
                log.event(
                    "reaction_ignored",
                    &[("sender", who.into()), ("why", "not a moderator".into())],
                );
            }
            for t in tapped {
                if stored.handled.contains(&t.reaction_id) {
                    continue;
                }
                let outcome = self
                    .apply(&site, &lookup, &api, &send, room, &bot, &levels, &t)
                    .await;
                let text = match &outcome {
                    Ok(what) => what.clone(),
                    Err(why) => format!("Could not act on {}'s reaction: {why}", t.sender),
                };
                let thread = json!({ "m.relates_to": {
                    "rel_type": "m.thread", "event_id": t.notice_id,
                    "is_falling_back": true, "m.in_reply_to": { "event_id": t.notice_id },
                }});
                let escaped = crate::domain::moderation::notices::escape(&text);
                let txn = format!("knock-react-{}", t.reaction_id);
                if let Err(f) =
                    send(api.send_notice_with(room, &txn, &text, &escaped, thread)).await
                {
                    log.event("reaction_reply_failed", &[("detail", f.describe().into())]);
                }
                log.event(
                    "reaction_applied",
                    &[
                        ("sender", t.sender.clone().into()),
                        ("result", text.clone().into()),
                    ],
                );
                stored.handled.push_back(t.reaction_id.clone());
                while stored.handled.len() > REMEMBERED {
                    stored.handled.pop_front();
                }
                done.push(json!({ "reaction": t.reaction_id, "result": text }));
            }
            let bot_id = UserId::parse(&bot).map_err(|e| e.to_string())?;
            for e in events.iter().filter(|e| e["type"] == "m.room.message") {
                let (Some(id), Some(sender), Some(text)) = (
                    e["event_id"].as_str(),
                    e["sender"].as_str(),
                    e["content"]["body"].as_str(),
                ) else {
                    continue;
                };
                if sender == bot || stored.handled.iter().any(|h| h == id) {
                    continue;
                }
                let answer = match parse(text, &bot_id) {
                    Ok(None) => continue,
                    _ if !levels.is_moderator(sender) => {
                        log.event(
                            "command_ignored",
                            &[("sender", sender.into()), ("why", "not a moderator".into())],
                        );
                        continue;
                    }
                    Err(Usage(usage)) => usage,
                    Ok(Some(cmd)) => self
                        .command(&site, &lookup, &api, &send, &bot, &levels, sender, cmd)
                        .await
                        .unwrap_or_else(|why| format!("Could not do that: {why}")),
                };
                let reply = json!({ "m.relates_to": { "m.in_reply_to": { "event_id": id } } });
                let html =
                    crate::domain::moderation::notices::escape(&answer).replace('\n', "<br>");
                let txn = format!("knock-cmd-{id}");
                if let Err(f) = send(api.send_notice_with(room, &txn, &answer, &html, reply)).await
                {
                    log.event("command_reply_failed", &[("detail", f.describe().into())]);
                }
                log.event(
                    "command_applied",
                    &[("sender", sender.into()), ("result", answer.clone().into())],
                );
                stored.handled.push_back(id.to_owned());
                while stored.handled.len() > REMEMBERED {
                    stored.handled.pop_front();
                }
                done.push(json!({ "command": id, "result": answer }));
            }
        }
        if next.is_some() {
            stored.since = next;
        }
        storage
            .put("manage", &stored)
            .await
            .map_err(|e| e.to_string())?;
        Ok(json!({ "acted": done }))
    }

    /// Carries out one tap; returns the sentence for the thread.
    #[allow(clippy::too_many_arguments)]
    async fn apply<F, Fut>(
        &self,
        site: &Site,
        lookup: &dyn Fn(&str) -> Option<String>,
        api: &Api,
        send: &F,
        room: &RoomId,
        bot: &str,
        levels: &PowerLevels,
        t: &crate::domain::moderation::commands::Tapped,
    ) -> std::result::Result<String, String>
    where
        F: Fn(HttpRequest) -> Fut,
        Fut: std::future::Future<
            Output = std::result::Result<Value, crate::domain::outcome::Failure>,
        >,
    {
        let notice = send(api.event(room, &t.notice_id))
            .await
            .map_err(|f| f.describe())?;
        let Some((room_key, user)) = notice_about(&notice, bot) else {
            return Err("that event is no notice of Knock's about a knock".into());
        };
        let target = site
            .by_key(&room_key)
            .ok_or("the notice's room is no longer in this deployment")?;
        let cfg = site.config_for(&target, lookup).map_err(|p| p.summary())?;
        let approve = match t.tap {
            Tap::Approve => true,
            Tap::Reject => false,
            Tap::Block => {
                // Never against the bot or a moderator (of this room or of the public room).
                let public = send(api.state_event(&cfg.room_id, "m.room.power_levels", ""))
                    .await
                    .map(|c| PowerLevels::from_content(&c))
                    .map_err(|f| f.describe())?;
                if !may_act_against(user.as_str(), bot, levels, &public) {
                    return Ok(format!(
                        "Not blocked: {} is the bot or a moderator, and Knock never acts against them.",
                        user.as_str()
                    ));
                }
                let entry = Entry::parse(
                    user.as_str(),
                    Some(format!("blocked by {} from the management room", t.sender)),
                    now_ms(),
                )
                .map_err(|e| e.message().to_owned())?
                .with_reach(Some(Reach::Exact));
                let rooms = admin::all_rooms(site, lookup).map_err(|p| p.summary())?;
                let log = Logger::background("manage");
                let reply =
                    admin::block_everywhere(&self.env, &rooms, &entry, Some(Reach::Exact), &log)
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or("the block-list is full")?;
                let removed = reply["rooms"]
                    .as_array()
                    .map(|rs| rs.iter().filter(|r| r["action"] != "none").count())
                    .unwrap_or(0);
                return Ok(format!(
                    "Blocked by {}: {} (removed from {removed} room{}).",
                    t.sender,
                    user.as_str(),
                    if removed == 1 { "" } else { "s" }
                ));
            }
        };
        let op = RoomOp::DecideHeld {
            user_id: user.as_str().to_owned(),
            approve,
            by: Some(t.sender.clone()),
        };
        let out: Value = room_do::call(&self.env, &cfg, &op)
            .await
            .map_err(|e| e.to_string())?;
        let who = user.as_str();
        Ok(
            match (
                out["changed"].as_u64().unwrap_or(0),
                &out["blocked"],
                approve,
            ) {
                (0, _, _) => format!("Nothing to do: {who} has no knock waiting for a moderator."),
                (_, Value::String(rule), _) => {
                    format!(
                        "Not invited: {who} is blocked now ({rule}). {} approved.",
                        t.sender
                    )
                }
                (_, _, true) => format!("Approved by {}: {who} will be invited.", t.sender),
                (_, _, false) => format!("Rejected by {}: {who} will not be invited.", t.sender),
            },
        )
    }

    /// Carries out a moderator's command; returns the answer.
    #[allow(clippy::too_many_arguments)]
    async fn command<F, Fut>(
        &self,
        site: &Site,
        lookup: &dyn Fn(&str) -> Option<String>,
        api: &Api,
        send: &F,
        bot: &str,
        levels: &PowerLevels,
        sender: &str,
        cmd: Command,
    ) -> std::result::Result<String, String>
    where
        F: Fn(HttpRequest) -> Fut,
        Fut: std::future::Future<
            Output = std::result::Result<Value, crate::domain::outcome::Failure>,
        >,
    {
        let rooms = admin::all_rooms(site, lookup).map_err(|p| p.summary())?;
        let log = Logger::background("manage");
        let call = |cfg: &Config, op: RoomOp| {
            let cfg = cfg.clone();
            async move {
                room_do::call::<Value>(&self.env, &cfg, &op)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        match cmd {
            Command::Help => Ok(help_text()),
            Command::Approve(_) | Command::Reject { .. } => {
                let (user, approve) = match &cmd {
                    Command::Approve(u) => (u.clone(), true),
                    Command::Reject { user, .. } => (user.clone(), false),
                    _ => unreachable!("matched above"),
                };
                // The user's held knock, in whichever room holds one.
                for (label, cfg) in &rooms {
                    let op = RoomOp::DecideHeld {
                        user_id: user.as_str().to_owned(),
                        approve,
                        by: Some(sender.to_owned()),
                    };
                    let out = call(cfg, op).await?;
                    if out["changed"].as_u64().unwrap_or(0) == 0 && out["member_kept"] != true {
                        continue;
                    }
                    return Ok(match (&out["blocked"], approve) {
                        (Value::String(rule), _) => {
                            format!("Not invited: {user} is blocked now ({rule}).")
                        }
                        (_, true) => format!("Approved by {sender}: {user} will be invited to {label}."),
                        (_, false) => format!("Rejected by {sender}: {user} will not be invited to {label}."),
                    });
                }
                Ok(format!("Nothing to do: {user} has no knock waiting for a moderator."))
            }
            Command::Block { pattern, reason } => {
                if let Ok(user) = UserId::parse(&pattern) {
                    let default = &rooms.first().ok_or("no room")?.1;
                    let public = send(api.state_event(&default.room_id, "m.room.power_levels", ""))
                        .await
                        .map(|c| PowerLevels::from_content(&c))
                        .map_err(|f| f.describe())?;
                    if !may_act_against(user.as_str(), bot, levels, &public) {
                        return Ok(format!(
                            "Not blocked: {user} is the bot or a moderator, and Knock never acts against them."
                        ));
                    }
                }
                let reason = reason.unwrap_or_else(|| format!("blocked by {sender} from the management room"));
                let entry = Entry::parse(&pattern, Some(reason), now_ms()).map_err(|e| e.message().to_owned())?;
                let reply = admin::block_everywhere(&self.env, &rooms, &entry, None, &log)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("the block-list is full")?;
                let removed = reply["rooms"]
                    .as_array()
                    .map(|rs| rs.iter().filter(|r| r["action"] != "none").count())
                    .unwrap_or(0);
                Ok(match reply["status"].as_str() {
                    Some("already_blocked") => format!("{pattern} was blocked already."),
                    _ => format!("Blocked by {sender}: {pattern} (acted in {removed} room{}).", if removed == 1 { "" } else { "s" }),
                })
            }
            Command::Unblock(pattern) => {
                let reply = admin::unblock_everywhere(&self.env, &rooms, &pattern, &log)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(if reply["status"] == "unblocked" {
                    format!("Unblocked by {sender}: {pattern}.")
                } else {
                    format!("{pattern} was not blocked.")
                })
            }
            Command::Held => {
                let mut lines = Vec::new();
                for (label, cfg) in &rooms {
                    let out = call(cfg, RoomOp::Held).await?;
                    for k in out["held"].as_array().into_iter().flatten().take(20) {
                        lines.push(format!(
                            "{label}: {} — {}",
                            k["user_id"].as_str().unwrap_or_default(),
                            notices::clean(k["reason"].as_str().unwrap_or("held"))
                        ));
                    }
                    for m in out["members_to_review"].as_array().into_iter().flatten().take(20) {
                        lines.push(format!(
                            "{label}: member {} to review — {}",
                            m["user_id"].as_str().unwrap_or_default(),
                            notices::clean(m["why"].as_str().unwrap_or_default())
                        ));
                    }
                }
                Ok(if lines.is_empty() {
                    "Nothing is waiting for a moderator.".into()
                } else {
                    format!("Waiting for a moderator:\n{}", lines.join("\n"))
                })
            }
            Command::Pending => {
                let mut lines = Vec::new();
                for (label, cfg) in &rooms {
                    let out = call(cfg, RoomOp::Pending).await?;
                    for p in out["pending"].as_array().into_iter().flatten().take(20) {
                        lines.push(format!(
                            "{label}: {} ({}, {} s)",
                            p["user_id"].as_str().unwrap_or_default(),
                            p["state"].as_str().unwrap_or_default(),
                            p["age_seconds"].as_u64().unwrap_or(0)
                        ));
                    }
                }
                Ok(if lines.is_empty() {
                    "No invite is pending.".into()
                } else {
                    format!("Pending:\n{}", lines.join("\n"))
                })
            }
            Command::Knocks(n) => {
                let mut lines = Vec::new();
                for (label, cfg) in &rooms {
                    let op = RoomOp::Knocks { limit: n, before: None, verdict: None, user_id: None };
                    let out = call(cfg, op).await?;
                    for k in out["knocks"].as_array().into_iter().flatten() {
                        lines.push(format!(
                            "{label}: {} — {}",
                            k["user_id"].as_str().unwrap_or_default(),
                            k["verdict"].as_str().unwrap_or_default()
                        ));
                    }
                }
                Ok(if lines.is_empty() {
                    "No knocks yet.".into()
                } else {
                    format!("Newest knocks:\n{}", lines.join("\n"))
                })
            }
            Command::Status => {
                let mut lines = Vec::new();
                for (label, cfg) in &rooms {
                    let st = call(cfg, RoomOp::Status).await?;
                    lines.push(format!(
                        "{label}: {} queued, {} held, {} pending{}",
                        st["queued"], st["held"], st["pending_invites"],
                        if st["login_needed"] == true { ", homeserver login needed" } else { "" }
                    ));
                }
                Ok(lines.join("\n"))
            }
            Command::RejectHeldSince { .. } | Command::KickJoinedSince { .. } | Command::Confirm => {
                Ok("Raid clean-up from Matrix is not available yet: use the admin API (/held_knocks, /reject_knock, /rescind_invite).".into())
            }
        }
    }

    async fn token(&self, cfg: &Config) -> std::result::Result<String, String> {
        let reply: TokenReply = session_do::call(&self.env, cfg, &SessionOp::Token)
            .await
            .map_err(|e| e.to_string())?;
        reply.token.ok_or_else(|| {
            reply
                .detail
                .unwrap_or_else(|| "homeserver login needed".into())
        })
    }

    /// The bot's own user ID (its reactions are never taps, its notices are the only ones),
    /// as the homeserver knows the token.
    async fn bot<F, Fut>(&self, api: &Api, send: &F) -> std::result::Result<String, String>
    where
        F: Fn(HttpRequest) -> Fut,
        Fut: std::future::Future<
            Output = std::result::Result<Value, crate::domain::outcome::Failure>,
        >,
    {
        let me = send(api.whoami()).await.map_err(|f| f.describe())?;
        me["user_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "the homeserver did not say who the bot is".into())
    }
}
