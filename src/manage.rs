//! The management room's poll: what one management room's Durable Object does on each
//! one-minute cron run, as plain Rust over a [`ManageHost`] seam, so that the same code runs in
//! the worker and in native tests (a repeated sync, a crash between two writes).
//!
//! Each poll reads the room's new reactions and messages with one incremental `/sync` (which
//! returns at once) and carries out the moderators' taps on Knock's notices and their `!knock`
//! commands: ✅ approves and ❌ rejects the held knock a notice is about (or, on a join wave's
//! digest, every knock the wave still holds), 🔨 blocks the person; commands are parsed by
//! [`crate::domain::moderation::commands`]. Each reaction and command is applied once: its event
//! id is remembered, and saved right after it is acted on, so a sync that brings it again (a
//! lost sync token, an instance lost before it stored the new one) does nothing. Only
//! moderators (power level at or above the management room's `kick`) count; Knock never acts
//! against the bot or a moderator; every action is answered in the notice's thread or as a reply.
//! Actions on more than ten people wait for the same moderator's `!knock confirm`.
//!
//! Never does: read the clock or the network itself; everything goes through the host.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::domain::blocklist::{Entry, Reach};
use crate::domain::config::Config;
use crate::domain::deployment::room_key;
use crate::domain::moderation::bulk::{self, Bulk, Waiting};
use crate::domain::moderation::commands::{
    help_text, notice_about, parse, taps, About, Command, Tap, Tapped, Usage,
};
use crate::domain::moderation::moderators::{may_act_against, PowerLevels};
use crate::domain::moderation::notices;
use crate::domain::mxid::{RoomId, UserId};
use crate::domain::outcome::Failure;
use crate::matrix::{parse_timeline, Api, HttpRequest};
use crate::room::RoomOp;

/// Reactions and commands remembered as applied (the newest; a sync never replays older ones).
pub const REMEMBERED: usize = 2_000;

/// Each cron poll (once a minute) is followed by one more this much later, from the
/// management room's own alarm: a moderator's tap waits at most about half a minute.
pub const BETWEEN_CRON_POLLS_MS: u64 = 30_000;

/// On the first read of a management room, only events this recent are acted on.
pub const FIRST_READ_WINDOW_MS: u64 = 120_000;

/// What a management room's object keeps between polls.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
pub struct Stored {
    /// The sync token to read on from.
    pub since: Option<String>,
    /// The event ids of reactions and commands already applied.
    pub handled: VecDeque<String>,
    /// Bulk actions waiting for a moderator's confirmation.
    #[serde(default)]
    pub waiting: Vec<Waiting>,
}

impl Stored {
    fn remember(&mut self, id: &str) {
        self.handled.push_back(id.to_owned());
        while self.handled.len() > REMEMBERED {
            self.handled.pop_front();
        }
    }

    fn knows(&self, id: &str) -> bool {
        self.handled.iter().any(|h| h == id)
    }
}

/// What the poll needs from its surroundings.
#[allow(async_fn_in_trait)]
pub trait ManageHost {
    fn now(&self) -> u64;
    fn log(&self, event: &str, fields: &[(&str, Value)]);
    /// A homeserver call as the bot.
    async fn send(&self, req: HttpRequest) -> Result<Value, Failure>;
    /// A request to a room's object.
    async fn call_room(&self, room: &Config, op: &RoomOp) -> Result<Value, String>;
    /// Blocks `entry` in every room (`None`: the block-list is full).
    async fn block(
        &self,
        rooms: &[(String, Config)],
        entry: &Entry,
        reach: Option<Reach>,
    ) -> Result<Option<Value>, String>;
    async fn unblock(&self, rooms: &[(String, Config)], pattern: &str) -> Result<Value, String>;
    /// Stores what the poll keeps (after each action, so none is applied twice).
    async fn save(&self, stored: &Stored) -> Result<(), String>;
}

/// One management room's poll, over the deployment's rooms (label, settings).
pub struct Manager<'a, H: ManageHost> {
    pub host: &'a H,
    pub api: Api,
    /// The management room.
    pub room: RoomId,
    /// The bot's user ID.
    pub bot: UserId,
    /// Every room of the deployment, the default first.
    pub rooms: Vec<(String, Config)>,
}

type Answer = Result<String, String>;

impl<H: ManageHost> Manager<'_, H> {
    /// Reads the room's new events and acts on them. Returns what it did.
    pub async fn poll(&self, stored: &mut Stored) -> Result<Value, String> {
        let types = ["m.reaction", "m.room.message"];
        let body = self
            .host
            .send(
                self.api
                    .sync_timeline(&self.room, stored.since.as_deref(), &types),
            )
            .await
            .map_err(|f| f.describe())?;
        let (next, mut events, limited) = parse_timeline(&body, &self.room);
        if limited {
            // More happened than one sync returns: the oldest of it is not read.
            self.host.log(
                "management_sync_limited",
                &[("events", events.len().into())],
            );
        }
        if stored.since.is_none() {
            // The first read of the room returns its recent history: what is older than a
            // couple of minutes was said before Knock listened, and is not acted on now.
            let recent = self.host.now().saturating_sub(FIRST_READ_WINDOW_MS);
            events.retain(|e| e["origin_server_ts"].as_u64().is_some_and(|t| t >= recent));
        }
        let bot = self.bot.as_str();
        let mut done = Vec::new();
        if events.iter().any(|e| e["sender"] != bot) {
            let levels = self
                .host
                .send(self.api.state_event(&self.room, "m.room.power_levels", ""))
                .await
                .map(|c| PowerLevels::from_content(&c))
                .map_err(|f| f.describe())?;
            let (tapped, ignored) = taps(&events, bot, &|u| levels.is_moderator(u));
            for who in ignored {
                self.host.log(
                    "reaction_ignored",
                    &[("sender", who.into()), ("why", "not a moderator".into())],
                );
            }
            for t in tapped {
                if stored.knows(&t.reaction_id) {
                    continue;
                }
                let text = match self.tap(&levels, &t, stored).await {
                    Ok(what) => what,
                    Err(why) => format!("Could not act on {}'s reaction: {why}", t.sender),
                };
                let thread = json!({ "m.relates_to": {
                    "rel_type": "m.thread", "event_id": t.notice_id,
                    "is_falling_back": true, "m.in_reply_to": { "event_id": t.notice_id },
                }});
                self.answer(&format!("knock-react-{}", t.reaction_id), &text, thread)
                    .await;
                self.host.log(
                    "reaction_applied",
                    &[
                        ("sender", t.sender.clone().into()),
                        ("result", text.clone().into()),
                    ],
                );
                stored.remember(&t.reaction_id);
                self.host.save(stored).await?;
                done.push(json!({ "reaction": t.reaction_id, "result": text }));
            }
            for e in events.iter().filter(|e| e["type"] == "m.room.message") {
                let (Some(id), Some(sender), Some(text)) = (
                    e["event_id"].as_str(),
                    e["sender"].as_str(),
                    e["content"]["body"].as_str(),
                ) else {
                    continue;
                };
                if sender == bot || stored.knows(id) {
                    continue;
                }
                let answer = match parse(text, &self.bot) {
                    Ok(None) => continue,
                    _ if !levels.is_moderator(sender) => {
                        self.host.log(
                            "command_ignored",
                            &[("sender", sender.into()), ("why", "not a moderator".into())],
                        );
                        continue;
                    }
                    Err(Usage(usage)) => usage,
                    Ok(Some(cmd)) => self
                        .command(&levels, sender, cmd, stored)
                        .await
                        .unwrap_or_else(|why| format!("Could not do that: {why}")),
                };
                let reply = json!({ "m.relates_to": { "m.in_reply_to": { "event_id": id } } });
                self.answer(&format!("knock-cmd-{id}"), &answer, reply)
                    .await;
                self.host.log(
                    "command_applied",
                    &[("sender", sender.into()), ("result", answer.clone().into())],
                );
                stored.remember(id);
                self.host.save(stored).await?;
                done.push(json!({ "command": id, "result": answer }));
            }
        }
        if next.is_some() && next != stored.since {
            stored.since = next;
            self.host.save(stored).await?;
        }
        Ok(json!({ "acted": done }))
    }

    /// Posts Knock's answer (its transaction id makes a repeat a no-op on the homeserver).
    async fn answer(&self, txn: &str, text: &str, relation: Value) {
        let html = notices::escape(text).replace('\n', "<br>");
        let req = self
            .api
            .send_notice_with(&self.room, txn, text, &html, relation);
        if let Err(f) = self.host.send(req).await {
            self.host
                .log("answer_failed", &[("detail", f.describe().into())]);
        }
    }

    fn room_by_key(&self, key: &str) -> Result<&Config, String> {
        self.rooms
            .iter()
            .map(|(_, c)| c)
            .find(|c| room_key(&c.room_id) == key)
            .ok_or_else(|| "the notice's room is no longer in this deployment".to_owned())
    }

    fn default_room(&self) -> Result<&Config, String> {
        self.rooms
            .first()
            .map(|(_, c)| c)
            .ok_or_else(|| "no room".to_owned())
    }

    async fn power_levels(&self, room: &RoomId) -> Result<PowerLevels, String> {
        self.host
            .send(self.api.state_event(room, "m.room.power_levels", ""))
            .await
            .map(|c| PowerLevels::from_content(&c))
            .map_err(|f| f.describe())
    }

    /// Carries out one tap; returns the sentence for the thread.
    async fn tap(&self, levels: &PowerLevels, t: &Tapped, stored: &mut Stored) -> Answer {
        let notice = self
            .host
            .send(self.api.event(&self.room, &t.notice_id))
            .await
            .map_err(|f| f.describe())?;
        let about = notice_about(&notice, self.bot.as_str())
            .ok_or("that event is no notice of Knock's about a knock")?;
        let (room_key, user) = match about {
            About::Knock { room_key, user } => (room_key, user),
            About::Wave { room_key, wave } => {
                let approve = match t.tap {
                    Tap::Approve => true,
                    Tap::Reject => false,
                    Tap::Block => {
                        return Ok("🔨 blocks one person: use it on a knock's own notice, or \
                                   !knock block <user>."
                            .into())
                    }
                };
                let action = Bulk::Wave {
                    room_key,
                    wave,
                    approve,
                };
                return self.bulk(action, &t.sender, levels, stored, false).await;
            }
        };
        let cfg = self.room_by_key(&room_key)?;
        let approve = match t.tap {
            Tap::Approve => true,
            Tap::Reject => false,
            Tap::Block => return self.block_one(levels, cfg, &user, &t.sender).await,
        };
        let op = RoomOp::DecideHeld {
            user_id: user.as_str().to_owned(),
            approve,
            by: Some(t.sender.clone()),
            reason: None,
        };
        let out = self.host.call_room(cfg, &op).await?;
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

    /// 🔨 on a knock's notice: an exact entry, in every room; never the bot or a moderator.
    async fn block_one(
        &self,
        levels: &PowerLevels,
        cfg: &Config,
        user: &UserId,
        sender: &str,
    ) -> Answer {
        let public = self.power_levels(&cfg.room_id).await?;
        if !may_act_against(user.as_str(), self.bot.as_str(), levels, &public) {
            return Ok(format!(
                "Not blocked: {} is the bot or a moderator, and Knock never acts against them.",
                user.as_str()
            ));
        }
        let entry = Entry::parse(
            user.as_str(),
            Some(format!("blocked by {sender} from the management room")),
            self.host.now(),
        )
        .map_err(|e| e.message().to_owned())?
        .with_reach(Some(Reach::Exact));
        let reply = self
            .host
            .block(&self.rooms, &entry, Some(Reach::Exact))
            .await?
            .ok_or("the block-list is full")?;
        let removed = acted_in(&reply);
        Ok(format!(
            "Blocked by {sender}: {} (removed from {removed} room{}).",
            user.as_str(),
            if removed == 1 { "" } else { "s" }
        ))
    }

    /// Carries out a moderator's command; returns the answer.
    async fn command(
        &self,
        levels: &PowerLevels,
        sender: &str,
        cmd: Command,
        stored: &mut Stored,
    ) -> Answer {
        let now = self.host.now();
        match cmd {
            Command::Help => Ok(help_text()),
            Command::Approve(user) => self.decide(&user, true, sender, None).await,
            Command::Reject { user, reason } => {
                self.decide(&user, false, sender, reason.as_deref()).await
            }
            Command::Block { pattern, reason } => {
                if let Ok(user) = UserId::parse(&pattern) {
                    let public = self.power_levels(&self.default_room()?.room_id).await?;
                    if !may_act_against(user.as_str(), self.bot.as_str(), levels, &public) {
                        return Ok(format!(
                            "Not blocked: {user} is the bot or a moderator, and Knock never \
                             acts against them."
                        ));
                    }
                }
                let reason = reason
                    .unwrap_or_else(|| format!("blocked by {sender} from the management room"));
                let entry = Entry::parse(&pattern, Some(reason), now)
                    .map_err(|e| e.message().to_owned())?;
                let reply = self
                    .host
                    .block(&self.rooms, &entry, None)
                    .await?
                    .ok_or("the block-list is full")?;
                let removed = acted_in(&reply);
                Ok(match reply["status"].as_str() {
                    Some("already_blocked") => format!("{pattern} was blocked already."),
                    _ => format!(
                        "Blocked by {sender}: {pattern} (acted in {removed} room{}).",
                        if removed == 1 { "" } else { "s" }
                    ),
                })
            }
            Command::Unblock(pattern) => {
                let reply = self.host.unblock(&self.rooms, &pattern).await?;
                Ok(if reply["status"] == "unblocked" {
                    format!("Unblocked by {sender}: {pattern}.")
                } else {
                    format!("{pattern} was not blocked.")
                })
            }
            Command::Held => self.held().await,
            Command::Pending => self.pending().await,
            Command::Knocks(n) => self.knocks(n).await,
            Command::Status => self.status().await,
            Command::RejectHeldSince { ms } => {
                let action = Bulk::RejectHeldSince {
                    since_ms: now.saturating_sub(ms),
                };
                self.bulk(action, sender, levels, stored, false).await
            }
            Command::KickJoinedSince { ms } => {
                let action = Bulk::KickJoinedSince {
                    since_ms: now.saturating_sub(ms),
                };
                self.bulk(action, sender, levels, stored, false).await
            }
            Command::Confirm => match bulk::confirm(&mut stored.waiting, sender, now) {
                Some(w) => self.bulk(w.action, sender, levels, stored, true).await,
                None => Ok("Nothing is waiting for your confirmation.".into()),
            },
        }
    }

    /// `approve` / `reject`: the user's held knock, in whichever room holds one.
    async fn decide(
        &self,
        user: &UserId,
        approve: bool,
        sender: &str,
        reason: Option<&str>,
    ) -> Answer {
        for (label, cfg) in &self.rooms {
            let op = RoomOp::DecideHeld {
                user_id: user.as_str().to_owned(),
                approve,
                by: Some(sender.to_owned()),
                reason: reason.map(notices::clean),
            };
            let out = self.host.call_room(cfg, &op).await?;
            if out["changed"].as_u64().unwrap_or(0) == 0 && out["member_kept"] != true {
                continue;
            }
            return Ok(match (&out["blocked"], approve) {
                (Value::String(rule), _) => format!("Not invited: {user} is blocked now ({rule})."),
                (_, true) => format!("Approved by {sender}: {user} will be invited to {label}."),
                (_, false) => {
                    format!("Rejected by {sender}: {user} will not be invited to {label}.")
                }
            });
        }
        Ok(format!(
            "Nothing to do: {user} has no knock waiting for a moderator."
        ))
    }
}

/// In how many rooms a block acted (kicked, banned, rescinded…).
fn acted_in(reply: &Value) -> usize {
    reply["rooms"]
        .as_array()
        .map(|rs| rs.iter().filter(|r| r["action"] != "none").count())
        .unwrap_or(0)
}

mod bulk_actions;
mod report;

#[cfg(test)]
mod tests;
