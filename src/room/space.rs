//! A space target: a knock on the space invites into the space and into its child rooms.
//!
//! The space's object handles the knock like any room's (checks, invite into the space). Once
//! the space's invite went out, it owes the person one knock in each child room, recorded in the
//! same synchronous step as the invite's answer (the `outbox`, keyed by the parent knock and the
//! room), and delivered from its alarm to each child's own object, which checks, invites,
//! tracks and welcomes the person as in any room. A delivery that fails is retried; one that is
//! delivered twice is a repeat for the child (its delivery key is the parent knock's).
//!
//! A space that lists its children leaves them to the deployment (cron, blocks reach them
//! directly). A space that takes every `m.space.child` reads them from its state, and passes
//! cron runs, blocks, unblocks and forgetting on to them.

use serde_json::{json, Value};

use super::protocol::KnockIn;
use super::{Host, Result, Room, RoomOp};
use crate::domain::deployment::room_key;
use crate::domain::lifecycle::{Knock, Status};
use crate::domain::mxid::RoomId;
use crate::matrix::parse_space_children;

/// The children a space that takes every `m.space.child` re-reads at most this often.
const CHILDREN_TTL_MS: u64 = 10 * 60_000;

/// Spacing of retries of a child knock that could not be delivered (doubling, capped).
const RETRY_BASE_MS: u64 = 2_000;
const RETRY_MAX_MS: u64 = 5 * 60_000;

/// Transitions after which the person has (or is getting) the space's invite.
const INVITED: [&str; 4] = [
    "invite_sent",
    "invite_confirmed",
    "already_joined",
    "joined",
];

impl<H: Host> Room<H> {
    /// Called with every stored transition: once the space's invite went out, the child knocks
    /// are owed (in the same synchronous step, so they cannot be lost in between).
    pub(crate) fn owe_children(&self, name: &str, k: &Knock) -> Result<()> {
        let Some(space) = &self.cfg()?.space else {
            return Ok(());
        };
        if !INVITED.contains(&name) || !matches!(k.status, Status::Invited | Status::Joined) {
            return Ok(());
        }
        let rooms: Vec<String> = match &space.children {
            Some(list) => list.iter().map(|r| r.as_str().to_owned()).collect(),
            None => vec!["*".to_owned()],
        };
        let rooms: Vec<&str> = rooms.iter().map(String::as_str).collect();
        self.store()
            .owe_child_knocks(k.id, &k.user_id, &rooms, self.host.now())
    }

    /// The children this space serves itself (it takes every `m.space.child`): as last read,
    /// re-read from the homeserver when older than [`CHILDREN_TTL_MS`] or when `fresh`.
    /// Empty for a room that is no such space.
    pub(crate) async fn own_children(&self, fresh: bool) -> Result<Vec<RoomId>> {
        let cfg = self.cfg()?;
        match &cfg.space {
            Some(s) if s.children.is_none() => {}
            _ => return Ok(Vec::new()),
        }
        let now = self.host.now();
        let read_at = self.store().meta_u64("space_children_at")?;
        let cached: Vec<String> = self.store().meta("space_children")?.unwrap_or_default();
        if !fresh && read_at > 0 && now.saturating_sub(read_at) < CHILDREN_TTL_MS {
            return Ok(cached
                .iter()
                .filter_map(|r| RoomId::parse(r).ok())
                .collect());
        }
        match self.host.send(self.api()?.room_state(&cfg.room_id)).await {
            Ok(state) => {
                let children = parse_space_children(&state);
                let ids: Vec<&str> = children.iter().map(RoomId::as_str).collect();
                self.store().set_meta("space_children", &ids)?;
                self.store().set_meta("space_children_at", &now)?;
                Ok(children)
            }
            Err(f) => {
                self.host
                    .log("space_children_unread", &[("detail", f.describe().into())]);
                Ok(cached
                    .iter()
                    .filter_map(|r| RoomId::parse(r).ok())
                    .collect())
            }
        }
    }

    /// Delivers the child knocks that are due, within the run's budget. Returns how many went.
    pub(crate) async fn deliver_children(&self, calls: &mut usize, budget: usize) -> Result<usize> {
        let mut delivered = 0;
        let now = self.host.now();
        for owed in self.store().child_knocks_due(now, 20)? {
            if *calls >= budget {
                break;
            }
            if owed.room == "*" {
                *calls += 1;
                let children = self.own_children(true).await?;
                let ids: Vec<&str> = children.iter().map(RoomId::as_str).collect();
                self.store().resolve_child_knocks(
                    owed.parent_id,
                    &owed.user_id,
                    &ids,
                    self.host.now(),
                )?;
                continue;
            }
            let Ok(room) = RoomId::parse(&owed.room) else {
                self.store()
                    .child_knock_delivered(owed.parent_id, &owed.room, now)?;
                continue;
            };
            *calls += 1;
            let op = RoomOp::Knock(KnockIn {
                user_id: owed.user_id.clone(),
                source: "space".into(),
                delivery_key: format!(
                    "space:{}:{}",
                    room_key(&self.cfg()?.room_id),
                    owed.parent_id
                ),
                record_as: None,
                note: Some("knocked on the space".into()),
                answers: Vec::new(),
            });
            let answer = self.host.call_room(&room, &op).await;
            let now = self.host.now();
            match answer {
                Ok(out) if out["outcome"] != "limited" => {
                    self.store()
                        .child_knock_delivered(owed.parent_id, &owed.room, now)?;
                    self.host.log(
                        "space_child_knock",
                        &[
                            ("user_id", owed.user_id.clone().into()),
                            ("outcome", out["outcome"].clone()),
                        ],
                    );
                    delivered += 1;
                }
                other => {
                    let wait = match &other {
                        Ok(out) => out["retry_after_ms"].as_u64().unwrap_or(RETRY_BASE_MS),
                        Err(_) => (RETRY_BASE_MS << owed.attempts.clamp(0, 16)).min(RETRY_MAX_MS),
                    };
                    self.store().child_knock_retry(
                        owed.parent_id,
                        &owed.room,
                        now + wait.max(1),
                    )?;
                    self.host.log(
                        "space_child_knock_retry",
                        &[
                            ("user_id", owed.user_id.clone().into()),
                            ("detail", format!("{:?}", other.err()).into()),
                        ],
                    );
                }
            }
        }
        Ok(delivered)
    }

    /// Passes an operation on to the children this space serves itself (cron runs, blocks,
    /// unblocks, forgetting), and reports each child's answer by its position.
    pub(crate) async fn pass_to_children(&self, op: &RoomOp) -> Result<Option<Value>> {
        let children = self.own_children(false).await?;
        if children.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for (i, child) in children.iter().enumerate() {
            let answer = self.host.call_room(child, op).await;
            out.push(match answer {
                Ok(v) => json!({ "child": i + 1, "answer": v }),
                Err(e) => json!({ "child": i + 1, "error": e }),
            });
        }
        Ok(Some(Value::Array(out)))
    }
}
