//! The block-list's Durable Object (SQLite-backed), one per list: the single writer.
//!
//! Admin routes change the list only through it, so concurrent changes never overwrite each
//! other: a change is read, applied and stored (rows, version, cached copy) with no `await` in
//! between, and is acknowledged once stored. Publishing the whole list to KV, where every
//! isolate reads it (see [`super::blocklist`]), happens afterwards in the object's alarm, which
//! retries until KV holds the stored version and coalesces a burst of changes into one write
//! (KV allows one write per second per key, and 1,000 a day on the free plan). Rooms that must
//! not act on a stale list ask this object for its version ([`ListOp::Version`]). Keyed by list
//! name, so subscribed lists can come later as more instances.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use std::collections::BTreeMap;

use serde_json::Value;

use super::blocklist::{
    chunks_for, delete_published, publish as publish_kv, publish_layer, BLOCKLIST_KV,
};
use super::log::Logger;
use super::meta;
use super::session_do;
use super::transport::FetchTransport;
use super::{env_lookup, now_ms};
use crate::domain::blocklist::layers::{self, Base, Blob, Plan, Published};
use crate::domain::blocklist::INDEX_FORMAT;
use crate::domain::blocklist::{
    AddOutcome, Allow, BlockIndex, BlockList, Entry, EntryKind, Policy,
};
use crate::domain::deployment::Site;
use crate::domain::mxid::UserId;
use crate::domain::policy::publish;
use crate::matrix::{classify, Api, Transport};

/// The list every room uses today.
pub const DEFAULT_LIST: &str = "default";

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ListOp {
    Get,
    /// The stored version (a block is in force once this moved).
    Version,
    Add {
        entry: Entry,
    },
    Remove {
        pattern: String,
    },
    Import {
        format: String,
        text: String,
    },
    /// A local exception for `user_id` to the subscribed policy lists.
    Allow {
        user_id: String,
        reason: Option<String>,
    },
    /// The list compiled under `policy` (bytes; the version in `x-version`): for an isolate
    /// whose KV copy is behind or was built under other settings.
    Index {
        policy: Policy,
    },
}

impl ListOp {
    /// Whether this op only reads the list.
    fn is_read(&self) -> bool {
        matches!(self, ListOp::Get | ListOp::Version | ListOp::Index { .. })
    }
}

/// An index compiled in this instance: the list's version, the policy it was compiled under, and
/// the blob.
type Compiled = (u64, Policy, Rc<Vec<u8>>);

#[durable_object]
pub struct ListDo {
    state: State,
    env: Env,
    list: RefCell<Option<BlockList>>,
    /// The last index compiled here.
    compiled: RefCell<Option<Compiled>>,
    /// Whether this instance has checked that KV's copy is of this release's format.
    format_checked: Cell<bool>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
  ord INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL,
  ident TEXT NOT NULL,
  json TEXT NOT NULL,
  UNIQUE (kind, ident)
);
CREATE TABLE IF NOT EXISTS published (state_key TEXT PRIMARY KEY, content TEXT NOT NULL);
";

fn kind_str(k: EntryKind) -> &'static str {
    match k {
        EntryKind::UserId => "user_id",
        EntryKind::Glob => "glob",
        EntryKind::DisplayName => "display_name",
    }
}

fn identity(e: &Entry) -> (&'static str, String) {
    let (k, ident) = e.identity();
    (kind_str(k), ident)
}

/// A local exception's row: kind `allow`, by lower-cased user ID.
const ALLOW: &str = "allow";

fn allow_identity(a: &Allow) -> (&'static str, String) {
    (ALLOW, a.user_id.to_ascii_lowercase())
}

/// Every row's identity: entries and local exceptions.
fn identities(list: &BlockList) -> HashSet<(&'static str, String)> {
    list.entries
        .iter()
        .map(identity)
        .chain(list.allowed.iter().map(allow_identity))
        .collect()
}

impl DurableObject for ListDo {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        if let Err(e) = sql
            .exec(SCHEMA, None)
            .and_then(|_| sql.exec(meta::SCHEMA, None))
        {
            worker::console_error!("list schema: {e}");
        }
        ListDo {
            state,
            env,
            list: RefCell::new(None),
            compiled: RefCell::new(None),
            format_checked: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let op: ListOp = req.json().await?;
        if !self.format_checked.replace(true)
            && self.meta_u64("version")? > 0
            && self.meta_u64("published_format")? != u64::from(INDEX_FORMAT)
        {
            // KV holds another release's copy (or none): publish this release's.
            self.schedule_publish(now_ms()).await?;
        }
        // Taken out while it changes: if anything below fails, the next request reloads the
        // rows instead of trusting a half-changed copy.
        let cached = self.list.borrow_mut().take();
        let mut list = match cached {
            Some(l) => l,
            None => self.load()?,
        };
        let now = now_ms();
        // Reads answer from the copy, without the identities a change compares (a set of every
        // row: tens of milliseconds at 100,000 entries, on every version check).
        let before = (!op.is_read()).then(|| identities(&list));
        let reply = match op {
            ListOp::Version => {
                let resp = Response::from_json(&json!({ "version": list.version }));
                *self.list.borrow_mut() = Some(list);
                return resp;
            }
            ListOp::Get => {
                let resp = Response::from_json(&list);
                *self.list.borrow_mut() = Some(list);
                return resp;
            }
            ListOp::Index { policy } => {
                let blob = self.compiled(&list, &policy);
                let version = list.version;
                *self.list.borrow_mut() = Some(list);
                let mut resp = Response::from_bytes(blob.to_vec())?;
                resp.headers_mut().set("x-version", &version.to_string())?;
                return Ok(resp);
            }
            ListOp::Add { entry } => {
                let outcome = list.add(entry);
                let stored = match outcome {
                    AddOutcome::Added => list.entries.last().cloned(),
                    AddOutcome::Duplicate { index } => list.entries.get(index).cloned(),
                    AddOutcome::Full => None,
                };
                json!({ "outcome": outcome, "entry": stored })
            }
            ListOp::Remove { pattern } => {
                let previous = list.entries.clone();
                let removed = list.remove(&pattern);
                let after: HashSet<(&'static str, String)> =
                    list.entries.iter().map(identity).collect();
                let gone: Vec<Entry> = previous
                    .into_iter()
                    .filter(|e| !after.contains(&identity(e)))
                    .collect();
                json!({ "removed": removed, "entries": gone })
            }
            ListOp::Allow { user_id, reason } => match UserId::parse(&user_id) {
                Ok(user) => json!({ "allowed": list.allow(&user, reason, now) }),
                Err(e) => json!({ "error": e.message() }),
            },
            ListOp::Import { format, text } => {
                let report = if format == "txt" {
                    list.import_text(&text, now)
                } else {
                    match list.import_json(&text, now) {
                        Ok(r) => r,
                        Err(e) => {
                            *self.list.borrow_mut() = Some(list);
                            return Response::from_json(&json!({
                                "error": format!("The body is not a block-list JSON document: {e}")
                            }));
                        }
                    }
                };
                json!({ "report": report })
            }
        };
        // Every read returned above, so a change always has its identities before.
        let changed = self.persist(&before.unwrap_or_default(), &list)?;
        let version = list.version;
        *self.list.borrow_mut() = Some(list);
        if changed {
            self.schedule_publish(now).await?;
        }
        let mut reply = reply;
        reply["version"] = version.into();
        Response::from_json(&reply)
    }

    async fn alarm(&self) -> Result<Response> {
        self.publish_owed().await?;
        self.publish_to_room().await?;
        if self.meta_u64("publish_failures")? > 0
            && self.meta_u64("published_version")? >= self.meta_u64("version")?
        {
            self.set_meta("publish_failures", "0")?;
        }
        Response::ok("published")
    }
}

impl ListDo {
    /// The list compiled under `policy`, compiled here once per version and policy.
    fn compiled(&self, list: &BlockList, policy: &Policy) -> Rc<Vec<u8>> {
        if let Some((v, p, blob)) = self.compiled.borrow().as_ref() {
            if *v == list.version && p == policy {
                return blob.clone();
            }
        }
        let blob = Rc::new(BlockIndex::compile(&list.entries, &list.allowed, policy));
        *self.compiled.borrow_mut() = Some((list.version, *policy, blob.clone()));
        blob
    }

    fn load(&self) -> Result<BlockList> {
        #[derive(Deserialize)]
        struct Row {
            kind: String,
            json: String,
        }
        #[derive(Deserialize)]
        struct V {
            v: String,
        }
        let sql = self.state.storage().sql();
        let rows: Vec<Row> = sql
            .exec("SELECT kind, json FROM entries ORDER BY ord", None)?
            .to_array()?;
        let version: Vec<V> = sql
            .exec("SELECT v FROM meta WHERE k = 'version'", None)?
            .to_array()?;
        let mut entries = Vec::with_capacity(rows.len());
        let mut allowed = Vec::new();
        for r in rows {
            if r.kind == ALLOW {
                allowed.push(serde_json::from_str::<Allow>(&r.json)?);
            } else {
                entries.push(serde_json::from_str::<Entry>(&r.json)?);
            }
        }
        Ok(BlockList {
            version: version.first().and_then(|v| v.v.parse().ok()).unwrap_or(0),
            entries,
            allowed,
        })
    }

    /// Writes the rows that changed and the version, synchronously. Returns whether anything
    /// changed.
    fn persist(&self, before: &HashSet<(&'static str, String)>, list: &BlockList) -> Result<bool> {
        let sql = self.state.storage().sql();
        let after = identities(list);
        if &after == before {
            return Ok(false);
        }
        for (kind, ident) in before.difference(&after) {
            sql.exec(
                "DELETE FROM entries WHERE kind = ? AND ident = ?",
                vec![(*kind).into(), ident.as_str().into()],
            )?;
        }
        let rows = list
            .entries
            .iter()
            .map(|e| (identity(e), serde_json::to_string(e)))
            .chain(
                list.allowed
                    .iter()
                    .map(|a| (allow_identity(a), serde_json::to_string(a))),
            );
        for ((kind, ident), json) in rows {
            if !before.contains(&(kind, ident.clone())) {
                sql.exec(
                    "INSERT OR REPLACE INTO entries (kind, ident, json) VALUES (?, ?, ?)",
                    vec![kind.into(), ident.into(), json?.into()],
                )?;
            }
        }
        self.set_meta("version", &list.version.to_string())?;
        Ok(true)
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        meta::set(&self.state.storage().sql(), key, value)
    }

    fn meta_u64(&self, key: &str) -> Result<u64> {
        meta::get_u64(&self.state.storage().sql(), key)
    }

    /// Publishing is owed: the alarm does it, no sooner than `PUBLISH_GAP_MS` after the last
    /// publish, so a burst of changes is one KV write.
    async fn schedule_publish(&self, now: u64) -> Result<()> {
        let at = now.max(self.meta_u64("published_at")? + PUBLISH_GAP_MS);
        let storage = self.state.storage();
        if storage.get_alarm().await?.is_none_or(|t| t as u64 > at) {
            storage.set_alarm(scheduled(at)).await?;
        }
        Ok(())
    }

    /// Publishes the stored list until KV holds its version; retried with back-off on failure.
    async fn publish_owed(&self) -> Result<()> {
        let list = match self.list.borrow().clone() {
            Some(l) => l,
            None => self.load()?,
        };
        let current_format = self.meta_u64("published_format")? == u64::from(INDEX_FORMAT);
        if self.meta_u64("published_version")? >= list.version && list.version > 0 && current_format
        {
            return Ok(());
        }
        let log = Logger::background("blocklist");
        let policy = Policy::from_vars(env_lookup(&self.env)).unwrap_or_default();
        let sql = self.state.storage().sql();
        // What is published, and what is left to delete (see `layers::Published`).
        let saved = meta::get(&sql, "published_state")?.and_then(|b| serde_json::from_str(&b).ok());
        let legacy = Some(Blob {
            layer: false,
            version: self.meta_u64("published_version")?,
            chunks: self.meta_u64("published_chunks")? as usize,
        })
        .filter(|b| b.version > 0);
        let mut state = Published::resume(saved, current_format, legacy);
        let kv = self.env.kv(BLOCKLIST_KV)?;
        let plan = layers::plan(&list.entries, state.base.as_ref(), &policy);
        let save = |state: &Published| -> Result<()> {
            self.set_meta("published_state", &serde_json::to_string(state)?)
        };
        let published = match (plan, state.base.clone()) {
            (Plan::Layer { from }, Some(base)) => {
                let blob = BlockIndex::compile(&list.entries[from..], &list.allowed, &policy);
                let layer = Blob {
                    layer: true,
                    version: list.version,
                    chunks: chunks_for(blob.len()),
                };
                state.begin(layer);
                save(&state)?;
                publish_layer(&kv, list.version, (base.version, base.chunks), &blob)
                    .await
                    .map(|chunks| {
                        state.commit_layer(Blob { chunks, ..layer });
                        (blob.len(), chunks, list.entries.len() - from, true)
                    })
            }
            _ => {
                let blob = self.compiled(&list, &policy);
                state.begin(Blob {
                    layer: false,
                    version: list.version,
                    chunks: chunks_for(blob.len()),
                });
                save(&state)?;
                publish_kv(&kv, list.version, &blob).await.map(|chunks| {
                    state.commit_whole(Base::of(list.version, chunks, &list.entries, &policy));
                    (blob.len(), chunks, list.entries.len(), false)
                })
            }
        };
        match published {
            Ok((bytes, chunks, entries, layered)) => {
                save(&state)?;
                if !layered {
                    // What a release before layers reads (and what a rollback would delete).
                    self.set_meta("published_chunks", &chunks.to_string())?;
                }
                self.set_meta("published_format", &INDEX_FORMAT.to_string())?;
                // A change stored while the write was under way is published by the next alarm.
                self.set_meta("published_at", &now_ms().to_string())?;
                let stored = self.meta_u64("version")?;
                self.set_meta("published_version", &list.version.to_string())?;
                if stored > list.version {
                    self.schedule_publish(now_ms()).await?;
                }
                // Now that the version names what replaced them: the blobs no version names.
                for blob in state.to_delete() {
                    delete_published(&kv, blob).await;
                    state.deleted(blob);
                    save(&state)?;
                }
                log.event(
                    "blocklist_published",
                    &[
                        ("version", list.version.into()),
                        ("bytes", bytes.into()),
                        ("chunks", chunks.into()),
                        ("layer", layered.into()),
                        ("entries", entries.into()),
                    ],
                );
                Ok(())
            }
            Err(e) => {
                let tries = self.meta_u64("publish_failures")? + 1;
                self.set_meta("publish_failures", &tries.to_string())?;
                let wait = (PUBLISH_GAP_MS << tries.min(8)).min(5 * 60_000);
                log.event(
                    "blocklist_publish_failed",
                    &[
                        ("error", e.to_string().into()),
                        ("retry_in_ms", wait.into()),
                    ],
                );
                let storage = self.state.storage();
                storage.set_alarm(scheduled(now_ms() + wait)).await?;
                Ok(())
            }
        }
    }
}

impl ListDo {
    /// With `POLICY_PUBLISH_ROOM`, brings that room's `m.policy.rule.user` state to the list:
    /// at most [`ROOM_PUBLISH_PER_RUN`] state events a run, each recorded once the homeserver
    /// took it; what is left (or failed) is sent by a later alarm.
    async fn publish_to_room(&self) -> Result<()> {
        let lookup = env_lookup(&self.env);
        let Ok(cfg) = Site::load(&lookup).and_then(|site| site.default_config(&lookup)) else {
            return Ok(());
        };
        let Some(room) = cfg.policy_publish_room.clone() else {
            return Ok(());
        };
        let list = match self.list.borrow().clone() {
            Some(l) => l,
            None => self.load()?,
        };
        #[derive(Deserialize)]
        struct Row {
            state_key: String,
            content: String,
        }
        let rows: Vec<Row> = self
            .state
            .storage()
            .sql()
            .exec("SELECT state_key, content FROM published", None)?
            .to_array()?;
        let published: BTreeMap<String, Value> = rows
            .into_iter()
            .filter_map(|r| Some((r.state_key, serde_json::from_str(&r.content).ok()?)))
            .collect();
        let steps = publish::plan(
            &publish::wanted(&list.entries),
            &published,
            ROOM_PUBLISH_PER_RUN,
        );
        if steps.is_empty() {
            return Ok(());
        }
        let log = Logger::background("blocklist");
        let token = match session_do::token(&self.env, &cfg).await {
            Ok(t) => t,
            Err(why) => {
                log.event("policy_publish_waiting", &[("why", why.into())]);
                return self.retry_room_publish().await;
            }
        };
        let api = Api::new(&cfg.matrix_base_url, "");
        let t = FetchTransport {
            timeout_ms: cfg.matrix_timeout_ms,
        };
        let mut sent = 0u64;
        for (key, content) in &steps {
            let req = api
                .put_state(&room, publish::RULE_TYPE, key, content)
                .with_token(&token);
            match classify(t.send(req).await) {
                Ok(_) => {
                    let sql = self.state.storage().sql();
                    if content.as_object().is_some_and(|o| o.is_empty()) {
                        sql.exec(
                            "DELETE FROM published WHERE state_key = ?",
                            vec![key.as_str().into()],
                        )?;
                    } else {
                        sql.exec(
                            "INSERT OR REPLACE INTO published (state_key, content) VALUES (?, ?)",
                            vec![key.as_str().into(), content.to_string().into()],
                        )?;
                    }
                    sent += 1;
                }
                Err(f) => {
                    log.event("policy_publish_failed", &[("detail", f.describe().into())]);
                    return self.retry_room_publish().await;
                }
            }
        }
        log.event("policy_published", &[("events", sent.into())]);
        if steps.len() == ROOM_PUBLISH_PER_RUN {
            // More to send: at once, by the next alarm.
            self.state
                .storage()
                .set_alarm(scheduled(now_ms() + 1_000))
                .await?;
        } else {
            self.set_meta("room_publish_failures", "0")?;
        }
        Ok(())
    }

    async fn retry_room_publish(&self) -> Result<()> {
        let tries = self.meta_u64("room_publish_failures")? + 1;
        self.set_meta("room_publish_failures", &tries.to_string())?;
        let wait = (PUBLISH_GAP_MS << tries.min(8)).min(5 * 60_000);
        let storage = self.state.storage();
        if storage.get_alarm().await?.is_none() {
            storage.set_alarm(scheduled(now_ms() + wait)).await?;
        }
        Ok(())
    }
}

/// Most state events one alarm sends to `POLICY_PUBLISH_ROOM` (subrequests are limited).
const ROOM_PUBLISH_PER_RUN: usize = 30;

/// The shortest gap between two KV publishes (KV takes one write per second per key).
const PUBLISH_GAP_MS: u64 = 1_500;

fn scheduled(ms: u64) -> worker::ScheduledTime {
    worker::ScheduledTime::new(js_sys::Date::new(&js_sys::Number::from(ms as f64)))
}
