//! What the room owes people and moderators besides its knocks' own steps, all through one
//! owed-work queue ([`super::store::Owed`]), each item owed in the same synchronous step as
//! the change that calls for it and sent from the alarm:
//!
//! - **`deny`**: with `DENY_MESSAGE`, a person a moderator rejected gets that text by direct
//!   message (never the rule that matched them). The direct chat is recorded before the message
//!   is sent, and the message's transaction id is the knock's, so a retry reuses both.
//! - **`digest`**: during a join wave, one notice in the management room lists the knocks the
//!   wave holds, and is edited in place (`m.replace`) as the wave grows, instead of a notice per
//!   knock. Edits are coalesced: many knocks between two runs make one edit.
//! - **`alert`**: a join wave began or ended, an invite keeps failing or failed for good, the
//!   homeserver login was needed (told once it works again: while it is needed, Knock cannot
//!   post at all).

use serde_json::json;

use super::{Host, Result, Room};
use crate::domain::config::Notify;
use crate::domain::deployment::room_key;
use crate::domain::lifecycle::Knock;
use crate::domain::moderation::notices::{self, NoticeKnock};
use crate::domain::mxid::{RoomId, UserId};
use crate::domain::outcome::Failure;
use crate::domain::rate_limit::{self, WaveState};
use crate::domain::watchdog::render;

pub(crate) const DENY: &str = "deny";
pub(crate) const DIGEST: &str = "digest";
pub(crate) const ALERT: &str = "alert";

/// A digest waits this long for more knocks before it is posted or edited.
pub const DIGEST_COALESCE_MS: u64 = 3_000;

/// After this many failed tries of one invite, the moderators hear of it (once).
pub const ALERT_AFTER_ATTEMPTS: u32 = 5;

impl<H: Host> Room<H> {
    /// Owes the person of knock `k` the deny message, if there is one.
    pub(crate) fn owe_denial(&self, k: &Knock) -> Result<()> {
        if self.cfg()?.deny_message.is_some() {
            let now = self.host.now();
            self.store().owe_once(DENY, &k.id.to_string(), None, now)?;
        }
        Ok(())
    }

    /// Knock `knock_id` was held by the join wave that began at `wave`: its digest is owed
    /// (again, if it was posted: an edit).
    pub(crate) fn owe_digest(&self, wave: u64, knock_id: i64) -> Result<()> {
        self.store().add_wave_knock(wave, knock_id)?;
        let cfg = self.cfg()?;
        if cfg.management_room.is_some() && cfg.management_notify != Notify::None {
            let at = self.host.now() + DIGEST_COALESCE_MS;
            self.store().owe(DIGEST, &wave.to_string(), None, at)?;
        }
        Ok(())
    }

    /// Owes the moderators an alert, once per `key`.
    pub(crate) fn owe_alert(&self, key: &str, text: &str) -> Result<()> {
        if self.cfg()?.management_room.is_some() {
            let now = self.host.now();
            if self.store().owe_once(ALERT, key, Some(text), now)? {
                self.host.log("alert_owed", &[("alert", key.into())]);
            }
        }
        Ok(())
    }

    /// At a cron run: a join wave that has gone quiet is over, and the moderators hear of it
    /// (once per wave). The wave's state itself is reset by the next knock.
    pub(crate) fn note_wave_end(&self) -> Result<()> {
        let cfg = self.cfg()?;
        let Some(state) = self.store().meta::<WaveState>("wave")? else {
            return Ok(());
        };
        let Some(start) = state.started_at() else {
            return Ok(());
        };
        if rate_limit::wave_active(&state, self.host.now(), &cfg.wave) {
            return Ok(());
        }
        let (held, total) = self.store().wave_held(start)?;
        let text = format!(
            "the join wave is over (quiet for {} s): it held {total} knock{}, {} still wait \
             for a moderator",
            cfg.wave.quiet_ms / 1000,
            if total == 1 { "" } else { "s" },
            held.len()
        );
        self.owe_alert(&format!("wave-end-{start}"), &text)
    }

    /// Sends what is owed and due, within the run's budget.
    pub(crate) async fn post_owed(&self, calls: &mut usize, budget: usize) -> Result<usize> {
        let mut sent = self.send_denials(calls, budget).await?;
        if let Some(room) = self.cfg()?.management_room.clone() {
            sent += self.post_digests(&room, calls, budget).await?;
            sent += self.post_alerts(&room, calls, budget).await?;
        }
        Ok(sent)
    }

    /// A failed try: retried later if it may work then, given up (and logged) if not.
    fn owed_failed(&self, kind: &str, key: &str, attempts: i64, f: &Failure) -> Result<()> {
        let now = self.host.now();
        let fields = [
            ("kind", kind.into()),
            ("key", key.into()),
            ("detail", f.describe().into()),
        ];
        if f.is_transient() || matches!(f, Failure::Unauthorized { .. }) {
            self.store().owed_retry(kind, key, attempts, now)?;
            self.host.log("owed_retry", &fields);
        } else {
            self.store()
                .owed_done(kind, key, Some(&format!("failed: {}", f.describe())), now)?;
            self.host.log("owed_failed", &fields);
        }
        Ok(())
    }

    async fn send_denials(&self, calls: &mut usize, budget: usize) -> Result<usize> {
        let cfg = self.cfg()?;
        let mut sent = 0;
        for o in self.store().owed_due(DENY, self.host.now(), 10)? {
            if *calls + 2 > budget {
                break;
            }
            let now = self.host.now();
            let (Some(text), Some(k)) = (
                cfg.deny_message.as_deref(),
                o.key
                    .parse()
                    .ok()
                    .and_then(|id| self.store().get(id).ok().flatten()),
            ) else {
                // Forgotten, or the message was turned off meanwhile.
                self.store().owed_done(DENY, &o.key, None, now)?;
                continue;
            };
            let Ok(user) = UserId::parse(&k.user_id) else {
                self.store().owed_done(DENY, &o.key, Some("no user"), now)?;
                continue;
            };
            let api = self.api()?;
            let dm = match o.result.clone().or(k.dm_room.clone()) {
                Some(dm) => dm,
                None => {
                    *calls += 1;
                    match self.host.send(api.create_dm(&user)).await {
                        Ok(reply) => {
                            let dm = reply["room_id"].as_str().unwrap_or_default().to_owned();
                            // Recorded before the message, so a retry reuses the chat.
                            self.store().owed_progress(DENY, &o.key, &dm)?;
                            dm
                        }
                        Err(f) => {
                            self.owed_failed(DENY, &o.key, o.attempts, &f)?;
                            continue;
                        }
                    }
                }
            };
            let Ok(dm_room) = RoomId::parse(&dm) else {
                self.store()
                    .owed_done(DENY, &o.key, Some("no direct chat"), now)?;
                continue;
            };
            let body = render(text, user.as_str(), k.display_name.as_deref());
            let txn = format!("knock-deny-{}-{}", room_key(&cfg.room_id), k.id);
            *calls += 1;
            match self.host.send(api.send_text(&dm_room, &txn, &body)).await {
                Ok(_) => {
                    self.store()
                        .owed_done(DENY, &o.key, Some(&dm), self.host.now())?;
                    self.host
                        .log("denial_sent", &[("user_id", k.user_id.clone().into())]);
                    sent += 1;
                }
                Err(f) => self.owed_failed(DENY, &o.key, o.attempts, &f)?,
            }
        }
        Ok(sent)
    }

    async fn post_digests(&self, room: &RoomId, calls: &mut usize, budget: usize) -> Result<usize> {
        let cfg = self.cfg()?;
        let mut sent = 0;
        for o in self.store().owed_due(DIGEST, self.host.now(), 5)? {
            if *calls >= budget {
                break;
            }
            let Ok(wave) = o.key.parse::<u64>() else {
                self.store()
                    .owed_done(DIGEST, &o.key, None, self.host.now())?;
                continue;
            };
            let (held, total) = self.store().wave_held(wave)?;
            let listed: Vec<NoticeKnock> = held
                .iter()
                .map(|k| NoticeKnock {
                    user_id: k.user_id.clone(),
                    display_name: k.display_name.clone(),
                    source: k.source.clone(),
                    answers: Vec::new(),
                    reason: None,
                })
                .collect();
            let notice = notices::digest(&listed, total, &cfg.label);
            let rk = room_key(&cfg.room_id);
            let api = self.api()?;
            *calls += 1;
            let (req, first) = match &o.result {
                None => {
                    let about = json!({ "org.knock.digest": { "room_key": rk, "wave": wave } });
                    let txn = format!("knock-digest-{rk}-{wave}");
                    let req = api.send_notice_with(room, &txn, &notice.body, &notice.html, about);
                    (req, true)
                }
                Some(original) => {
                    // One transaction per content: a retry of this edit is a no-op, a new
                    // state of the wave is a new edit.
                    let txn = format!("knock-digest-{rk}-{wave}-{total}-{}", held.len());
                    (
                        api.edit_notice(room, &txn, original, &notice.body, &notice.html),
                        false,
                    )
                }
            };
            match self.host.send(req).await {
                Ok(reply) => {
                    let now = self.host.now();
                    let event = reply["event_id"].as_str().unwrap_or_default();
                    // The original's id is what reactions point at; an edit keeps it.
                    let keep = if first { Some(event) } else { None };
                    self.store().owed_done(DIGEST, &o.key, keep, now)?;
                    sent += 1;
                }
                Err(f) => self.owed_failed(DIGEST, &o.key, o.attempts, &f)?,
            }
        }
        Ok(sent)
    }

    async fn post_alerts(&self, room: &RoomId, calls: &mut usize, budget: usize) -> Result<usize> {
        let cfg = self.cfg()?;
        let mut sent = 0;
        for o in self.store().owed_due(ALERT, self.host.now(), 5)? {
            if *calls >= budget {
                break;
            }
            let text = notices::clean(o.payload.as_deref().unwrap_or_default());
            let body = format!("⚠️ {}: {text}", notices::clean(&cfg.label));
            let html = format!(
                "<p>⚠️ <b>{}</b>: {}</p>",
                notices::escape(&notices::clean(&cfg.label)),
                notices::escape(&text)
            );
            let txn = format!("knock-alert-{}-{}", room_key(&cfg.room_id), o.key);
            *calls += 1;
            match self
                .host
                .send(self.api()?.send_notice(room, &txn, &body, &html))
                .await
            {
                Ok(reply) => {
                    let event = reply["event_id"].as_str().unwrap_or_default();
                    self.store()
                        .owed_done(ALERT, &o.key, Some(event), self.host.now())?;
                    sent += 1;
                }
                Err(f) => self.owed_failed(ALERT, &o.key, o.attempts, &f)?,
            }
        }
        Ok(sent)
    }
}
