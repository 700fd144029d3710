//! Bulk actions from the management room: a tap on a join wave's digest, `reject-held since`,
//! `kick-joined since`; asked about first above ten people (the decision is
//! [`crate::domain::moderation::bulk`]'s), then carried out in every room they concern.

use serde_json::Value;

use super::{Answer, ManageHost, Manager, Stored};
use crate::domain::config::Config;
use crate::domain::moderation::bulk::{self, Bulk, Waiting};
use crate::domain::moderation::commands::needs_confirmation;
use crate::domain::moderation::moderators::{may_act_against, PowerLevels};
use crate::room::RoomOp;

impl<H: ManageHost> Manager<'_, H> {
    /// A bulk action: asked about first when it affects more than ten people (unless
    /// `confirmed`), then carried out in every room it concerns.
    pub(super) async fn bulk(
        &self,
        action: Bulk,
        sender: &str,
        levels: &PowerLevels,
        stored: &mut Stored,
        confirmed: bool,
    ) -> Answer {
        let affected = self.affected(&action, levels).await?;
        let n: usize = affected.iter().map(|(_, users)| users.len()).sum();
        if n == 0 {
            return Ok(format!("Nothing to do: that would {}.", action.describe(0)));
        }
        if !confirmed && needs_confirmation(n) {
            bulk::wait(
                &mut stored.waiting,
                Waiting {
                    action: action.clone(),
                    by: sender.to_owned(),
                    asked_at: self.host.now(),
                    affected: n,
                },
            );
            return Ok(bulk::ask(&action, n));
        }
        let mut changed = 0u64;
        let mut blocked = 0u64;
        let mut left = 0u64;
        for (cfg, users) in &affected {
            let op = match &action {
                Bulk::Wave { wave, approve, .. } => RoomOp::DecideWave {
                    wave: *wave,
                    approve: *approve,
                    by: Some(sender.to_owned()),
                    dry_run: false,
                },
                Bulk::RejectHeldSince { since_ms } => RoomOp::RejectHeldSince {
                    since_ms: *since_ms,
                    by: Some(sender.to_owned()),
                    dry_run: false,
                },
                Bulk::KickJoinedSince { .. } => RoomOp::RemoveMany {
                    users: users.clone(),
                    by: Some(sender.to_owned()),
                },
            };
            let out = self.host.call_room(cfg, &op).await?;
            changed += out["changed"]
                .as_u64()
                .or(out["removed"].as_u64())
                .unwrap_or(0);
            blocked += out["blocked"].as_u64().unwrap_or(0);
            left += out["left"].as_u64().unwrap_or(0);
        }
        let mut text = match &action {
            Bulk::Wave { approve: true, .. } => {
                format!(
                    "Approved by {sender}: {changed} knock(s) of the join wave will be invited."
                )
            }
            Bulk::Wave { approve: false, .. } | Bulk::RejectHeldSince { .. } => {
                format!("Rejected by {sender}: {changed} held knock(s).")
            }
            Bulk::KickJoinedSince { .. } => format!("Removed by {sender}: {changed} member(s)."),
        };
        if blocked > 0 {
            text.push_str(&format!(
                " {blocked} not invited: the block-list has strong evidence against them."
            ));
        }
        if left > 0 {
            text.push_str(&format!(
                " {left} more to go: send the command again for the rest."
            ));
        }
        Ok(text)
    }

    /// The rooms a bulk action concerns, and whom it affects in each (for a removal, only
    /// people Knock may act against).
    pub(super) async fn affected(
        &self,
        action: &Bulk,
        levels: &PowerLevels,
    ) -> Result<Vec<(&Config, Vec<String>)>, String> {
        let names = |out: &Value| -> Vec<String> {
            out["names"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        let mut out = Vec::new();
        match action {
            Bulk::Wave {
                room_key,
                wave,
                approve,
            } => {
                let cfg = self.room_by_key(room_key)?;
                let op = RoomOp::DecideWave {
                    wave: *wave,
                    approve: *approve,
                    by: None,
                    dry_run: true,
                };
                let reply = self.host.call_room(cfg, &op).await?;
                out.push((cfg, names(&reply)));
            }
            Bulk::RejectHeldSince { since_ms } => {
                for (_, cfg) in &self.rooms {
                    let op = RoomOp::RejectHeldSince {
                        since_ms: *since_ms,
                        by: None,
                        dry_run: true,
                    };
                    let reply = self.host.call_room(cfg, &op).await?;
                    out.push((cfg, names(&reply)));
                }
            }
            Bulk::KickJoinedSince { since_ms } => {
                for (_, cfg) in &self.rooms {
                    let op = RoomOp::JoinedSince {
                        since_ms: *since_ms,
                    };
                    let reply = self.host.call_room(cfg, &op).await?;
                    let users = names(&reply);
                    if users.is_empty() {
                        continue;
                    }
                    let public = self.power_levels(&cfg.room_id).await?;
                    let bot = self.bot.as_str();
                    let users = users
                        .into_iter()
                        .filter(|u| may_act_against(u, bot, levels, &public))
                        .collect();
                    out.push((cfg, users));
                }
            }
        }
        out.retain(|(_, users)| !users.is_empty());
        Ok(out)
    }
}
