//! The management room's read-only commands: `held`, `pending`, `knocks`, `status`, each over
//! every room of the deployment.

use super::{Answer, ManageHost, Manager};
use crate::domain::moderation::notices;
use crate::room::RoomOp;

impl<H: ManageHost> Manager<'_, H> {
    pub(super) async fn held(&self) -> Answer {
        let mut lines = Vec::new();
        for (label, cfg) in &self.rooms {
            let out = self.host.call_room(cfg, &RoomOp::Held).await?;
            for k in out["held"].as_array().into_iter().flatten().take(20) {
                lines.push(format!(
                    "{label}: {} — {}",
                    k["user_id"].as_str().unwrap_or_default(),
                    notices::clean(k["reason"].as_str().unwrap_or("held"))
                ));
            }
            for m in out["members_to_review"]
                .as_array()
                .into_iter()
                .flatten()
                .take(20)
            {
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

    pub(super) async fn pending(&self) -> Answer {
        let mut lines = Vec::new();
        for (label, cfg) in &self.rooms {
            let out = self.host.call_room(cfg, &RoomOp::Pending).await?;
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

    pub(super) async fn knocks(&self, n: u32) -> Answer {
        let mut lines = Vec::new();
        for (label, cfg) in &self.rooms {
            let op = RoomOp::Knocks {
                limit: n,
                before: None,
                verdict: None,
                user_id: None,
            };
            let out = self.host.call_room(cfg, &op).await?;
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

    pub(super) async fn status(&self) -> Answer {
        let mut lines = Vec::new();
        for (label, cfg) in &self.rooms {
            let st = self.host.call_room(cfg, &RoomOp::Status).await?;
            lines.push(format!(
                "{label}: {} queued, {} held, {} pending{}",
                st["queued"],
                st["held"],
                st["pending_invites"],
                if st["login_needed"] == true {
                    ", homeserver login needed"
                } else {
                    ""
                }
            ));
        }
        Ok(lines.join("\n"))
    }
}
