//! A subscribed policy room's Durable Object (SQLite-backed), one per room as `POLICY_ROOMS`
//! names it: the single writer of that list's rules and of its compiled index.
//!
//! On each five-minute cron run it joins the room once (resolving an alias first), reads what
//! changed with one incremental `/sync` filtered to the rule types (the room's whole current
//! state when it has no token yet), keeps the latest event per (type, state key) in its rows,
//! and, when the rules changed, compiles them into the binary index
//! ([`crate::domain::policy::index`]) and publishes it to KV, where every isolate opens it
//! without rebuilding anything ([`super::policy`]). Runs one at a time; a run that fails keeps
//! its old token, so the next one reads the same changes again (applying an event twice changes
//! nothing).

use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use super::log::Logger;
use super::meta;
use super::policy::Blob;
use super::policy::{self, POLICY_KV};
use super::session_do;
use super::transport::FetchTransport;
use super::{env_lookup, stub, POLICY_BINDING};
use crate::domain::blocklist::BlockIndex;
use crate::domain::deployment::Site;
use crate::domain::mxid::RoomId;
use crate::domain::policy::fuzzy_entries;
use crate::domain::policy::index::{compile, Source};
use crate::domain::policy::sync::{filter, read_sync};
use crate::domain::policy::{read, Change, Rules, StateEvent};
use crate::matrix::{classify, Api, HttpRequest, Transport};

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PolicyOp {
    /// Read the room's new rules; publish the index if they changed.
    Refresh { room: String },
}

/// Asks the object of policy room `room` (as configured) to refresh.
pub async fn refresh(env: &Env, room: &str) -> Result<Value> {
    let op = PolicyOp::Refresh {
        room: room.to_owned(),
    };
    stub::call(env, POLICY_BINDING, room, "/", &op).await
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rules (
  event_type TEXT NOT NULL,
  state_key TEXT NOT NULL,
  event TEXT NOT NULL,
  PRIMARY KEY (event_type, state_key)
);
";

#[durable_object]
pub struct PolicyDo {
    state: State,
    env: Env,
    rules: RefCell<Option<Rules>>,
    one_at_a_time: futures_util::lock::Mutex<()>,
}

impl DurableObject for PolicyDo {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        if let Err(e) = sql
            .exec(SCHEMA, None)
            .and_then(|_| sql.exec(meta::SCHEMA, None))
        {
            worker::console_error!("policy schema: {e}");
        }
        PolicyDo {
            state,
            env,
            rules: RefCell::new(None),
            one_at_a_time: futures_util::lock::Mutex::new(()),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let PolicyOp::Refresh { room } = req.json().await?;
        let _turn = self.one_at_a_time.lock().await;
        let report = match self.refresh(&room).await {
            Ok(v) => v,
            Err(e) => json!({ "error": e }),
        };
        Response::from_json(&report)
    }
}

impl PolicyDo {
    async fn refresh(&self, room: &str) -> std::result::Result<Value, String> {
        let lookup = env_lookup(&self.env);
        let site = Site::load(&lookup).map_err(|p| p.summary())?;
        let cfg = site.default_config(&lookup).map_err(|p| p.summary())?;
        let token = session_do::token(&self.env, &cfg).await?;
        let t = FetchTransport {
            timeout_ms: cfg.matrix_timeout_ms,
        };
        let send = |req: HttpRequest| {
            let req = req.with_token(&token);
            let t = &t;
            async move { t.send(req).await }
        };
        let api = Api::new(&cfg.matrix_base_url, "");
        let e = |x: worker::Error| x.to_string();

        // The room's ID (an alias is resolved once), and the bot in it (joined once).
        let room_id = match self.meta("room_id").map_err(e)? {
            Some(id) => id,
            None => {
                let id = if room.starts_with('#') {
                    let got = classify(send(api.resolve_alias(room)).await)
                        .map_err(|f| format!("resolving {room}: {}", f.describe()))?;
                    got["room_id"]
                        .as_str()
                        .ok_or("the alias names no room")?
                        .to_owned()
                } else {
                    room.to_owned()
                };
                self.set_meta("room_id", &id).map_err(e)?;
                id
            }
        };
        let room_id = RoomId::parse(&room_id).map_err(str::to_owned)?;
        if self.meta("joined").map_err(e)?.is_none() {
            classify(send(api.join(&room_id)).await)
                .map_err(|f| format!("joining {room}: {}", f.describe()))?;
            self.set_meta("joined", "1").map_err(e)?;
        }

        // What changed since the last token (everything, the first time).
        let since = self.meta("since").map_err(e)?;
        // Read as text: the answer is parsed into typed events, never a JSON tree.
        let reply = send(api.sync_with(&filter(room_id.as_str()), since.as_deref()))
            .await
            .map_err(|_| "the homeserver did not answer the sync".to_owned())?;
        if reply.status >= 300 {
            return Err(format!("sync: HTTP {}", reply.status));
        }
        let batch = read_sync(&reply.body, room_id.as_str())?;

        let mut rules = match self.rules.borrow_mut().take() {
            Some(r) => r,
            None => self.load().map_err(e)?,
        };
        let mut changed = 0u64;
        let sql = self.state.storage().sql();
        for ev in &batch.events {
            let change = read(ev);
            let row = match &change {
                Change::Set(r) => Some((r.event_type.clone(), r.state_key.clone(), true)),
                Change::Remove {
                    event_type,
                    state_key,
                } => Some((event_type.clone(), state_key.clone(), false)),
                Change::Ignore => None,
            };
            if rules.apply(change) {
                changed += 1;
                if let Some((t, k, set)) = row {
                    if set {
                        let text = serde_json::to_string(ev).map_err(|x| x.to_string())?;
                        sql.exec(
                            "INSERT OR REPLACE INTO rules (event_type, state_key, event) VALUES (?, ?, ?)",
                            vec![t.into(), k.into(), text.into()],
                        )
                        .map_err(e)?;
                    } else {
                        sql.exec(
                            "DELETE FROM rules WHERE event_type = ? AND state_key = ?",
                            vec![t.into(), k.into()],
                        )
                        .map_err(e)?;
                    }
                }
            }
        }
        let count = rules.len();
        let mut version: u64 = self
            .meta("version")
            .map_err(e)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let published: u64 = self
            .meta("published")
            .map_err(e)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if changed > 0 || version == 0 {
            version += 1;
            self.set_meta("version", &version.to_string()).map_err(e)?;
        }
        if let Some(next) = &batch.next_batch {
            self.set_meta("since", next).map_err(e)?;
        }
        let blob = (published < version).then(|| {
            compile(&[Source {
                list: room,
                rules: &rules,
            }])
        });
        // A list trusted with Knock's fuzzy matching also goes out as a block-list index of its
        // user rules, compiled here under the deployment's block-list settings.
        // (Published again when the list is newly trusted, or its rules changed.)
        let fuzzy_published: u64 = self
            .meta("fuzzy_published")
            .map_err(e)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let trusted = cfg.policy_fuzzy_rooms.iter().any(|r| r == room);
        let fuzzy = (trusted && fuzzy_published < version)
            .then(|| BlockIndex::compile(&fuzzy_entries(room, &rules), &[], &cfg.blocklist));
        *self.rules.borrow_mut() = Some(rules);
        if blob.is_some() || fuzzy.is_some() {
            let kv = self.env.kv(POLICY_KV).map_err(e)?;
            let size = blob.as_ref().map_or(0, Vec::len);
            if let Some(fuzzy) = &fuzzy {
                policy::publish(&kv, room, Blob::Fuzzy, version, fuzzy)
                    .await
                    .map_err(e)?;
                self.set_meta("fuzzy_published", &version.to_string())
                    .map_err(e)?;
            }
            if let Some(blob) = &blob {
                policy::publish(&kv, room, Blob::Rules, version, blob)
                    .await
                    .map_err(e)?;
                self.set_meta("published", &version.to_string())
                    .map_err(e)?;
            }
            Logger::background("policy").event(
                "policy_list_published",
                &[
                    ("list", room.into()),
                    ("rules", (count as u64).into()),
                    ("version", version.into()),
                    ("bytes", (size as u64).into()),
                    ("fuzzy_bytes", fuzzy.as_ref().map_or(0, Vec::len).into()),
                ],
            );
        }
        Ok(json!({ "list": room, "rules": count, "changed": changed, "version": version }))
    }

    fn load(&self) -> Result<Rules> {
        #[derive(Deserialize)]
        struct Row {
            event: String,
        }
        let rows: Vec<Row> = self
            .state
            .storage()
            .sql()
            .exec("SELECT event FROM rules", None)?
            .to_array()?;
        let mut rules = Rules::default();
        for r in rows {
            if let Ok(ev) = serde_json::from_str::<StateEvent>(&r.event) {
                rules.apply(read(&ev));
            }
        }
        Ok(rules)
    }

    fn meta(&self, key: &str) -> Result<Option<String>> {
        meta::get(&self.state.storage().sql(), key)
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        meta::set(&self.state.storage().sql(), key, value)
    }
}
