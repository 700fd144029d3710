//! Notices to the management room (`MANAGEMENT_ROOM_ID`): a held knock, or with
//! `MANAGEMENT_NOTIFY=all` every knock, is owed a notice in the same synchronous step that
//! stored it; the queue posts owed notices from its alarm, each once (the transaction id is the
//! room's and the knock's, so a retry after a lost answer posts nothing new), and remembers the
//! notice's event id so a reaction to it finds the knock.

use serde_json::{json, Value};

use super::{Host, Result, Room};
use crate::domain::config::Notify;
use crate::domain::deployment::room_key;
use crate::domain::lifecycle::{Knock, Status};
use crate::domain::moderation::notices::{self, NoticeKnock};

/// How long the answer "is the management room encrypted?" is kept.
const ENCRYPTION_CHECK_TTL_MS: u64 = 10 * 60_000;

impl<H: Host> Room<H> {
    /// Owes a notice about `k` if the room has a management room and `k` is worth one.
    pub(crate) fn owe_notice(&self, k: &Knock) -> Result<()> {
        let cfg = self.cfg()?;
        if cfg.management_room.is_none() {
            return Ok(());
        }
        let wanted = match cfg.management_notify {
            Notify::None => false,
            Notify::Held => k.status == Status::Held,
            Notify::All => true,
        };
        if wanted {
            self.store().owe_notice(k.id, self.host.now())?;
        }
        Ok(())
    }

    /// Posts the owed notices that are due, within the run's budget.
    pub(crate) async fn post_notices(&self, calls: &mut usize, budget: usize) -> Result<usize> {
        let cfg = self.cfg()?;
        let Some(room) = cfg.management_room.clone() else {
            return Ok(0);
        };
        let mut posted = 0;
        for (knock_id, attempts) in self.store().notices_due(self.host.now(), 10)? {
            if *calls >= budget {
                break;
            }
            let Some(k) = self.store().get(knock_id)? else {
                // Forgotten or pruned meanwhile: nothing to say any more.
                self.store().notice_posted(knock_id, "", self.host.now())?;
                continue;
            };
            let notice = render(&k, &self.store().answers(k.id)?, &cfg.label);
            let txn = format!("knock-notice-{}-{knock_id}", room_key(&cfg.room_id));
            *calls += 1;
            // What the notice is about, for the reactions to it (the room by its key only).
            let about = json!({ "org.knock.notice": {
                "room_key": room_key(&cfg.room_id), "user_id": k.user_id, "knock_id": k.id,
            }});
            let req = self
                .api()?
                .send_notice_with(&room, &txn, &notice.body, &notice.html, about);
            let sent = self.host.send(req).await;
            let now = self.host.now();
            match sent {
                Ok(reply) => {
                    let event = reply["event_id"].as_str().unwrap_or_default();
                    self.store().notice_posted(knock_id, event, now)?;
                    posted += 1;
                }
                Err(f) => {
                    let wait = super::store::backoff(attempts);
                    self.store().notice_retry(knock_id, now + wait)?;
                    self.host.log(
                        "notice_failed",
                        &[
                            ("knock_id", knock_id.into()),
                            ("detail", f.describe().into()),
                        ],
                    );
                }
            }
        }
        Ok(posted)
    }

    /// Whether the management room is usable: it must be unencrypted (Knock has no end-to-end
    /// encryption, and would read nothing). Checked at most every ten minutes.
    pub(crate) async fn management_health(&self) -> Result<Value> {
        let cfg = self.cfg()?;
        let Some(room) = cfg.management_room.clone() else {
            return Ok(json!({ "configured": false }));
        };
        let now = self.host.now();
        let checked = self.store().meta_u64("management_checked_at")?;
        let cached: Option<bool> = self.store().meta("management_encrypted")?;
        let encrypted = match cached {
            Some(e) if now.saturating_sub(checked) < ENCRYPTION_CHECK_TTL_MS => Some(e),
            _ => {
                let req = self.api()?.state_event(&room, "m.room.encryption", "");
                let found = match self.host.send(req).await {
                    Ok(_) => Some(true),
                    Err(crate::domain::outcome::Failure::Refused { status: 404, .. }) => {
                        Some(false)
                    }
                    Err(f) => {
                        self.host.log(
                            "management_check_failed",
                            &[("detail", f.describe().into())],
                        );
                        None
                    }
                };
                if let Some(e) = found {
                    self.store().set_meta("management_encrypted", &e)?;
                    self.store().set_meta("management_checked_at", &now)?;
                    if e {
                        self.host.log(
                            "management_room_encrypted",
                            &[("fix", ENCRYPTED_FIX.into())],
                        );
                    }
                }
                found
            }
        };
        Ok(match encrypted {
            Some(true) => {
                json!({ "configured": true, "status": "encrypted", "fix": ENCRYPTED_FIX })
            }
            Some(false) => json!({ "configured": true, "status": "ok" }),
            None => json!({ "configured": true, "status": "unknown" }),
        })
    }
}

/// What to do about an encrypted management room.
pub const ENCRYPTED_FIX: &str = "the management room is end-to-end encrypted, and Knock cannot \
    read or write encrypted rooms: create an unencrypted private room (Beeper and Element \
    encrypt new rooms by default; turn it off when creating it), invite the bot, and set \
    MANAGEMENT_ROOM_ID to it";

/// The notice about knock `k` of the room named `label`.
fn render(k: &Knock, answers: &[(String, String)], label: &str) -> notices::Notice {
    let nk = NoticeKnock {
        user_id: k.user_id.clone(),
        display_name: k.display_name.clone(),
        source: k.source.clone(),
        answers: answers.to_vec(),
        reason: k.last_error.clone(),
    };
    if k.status == Status::Held {
        notices::held(&nk, label)
    } else {
        notices::decided(&nk, label, k.status.as_str())
    }
}
