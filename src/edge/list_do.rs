//! The block-list's Durable Object (SQLite-backed), one per list: the single writer.
//!
//! Admin routes change the list only through it, so concurrent changes never overwrite each
//! other. It keeps one row per entry and, after every change, publishes the whole list to KV,
//! where every isolate reads it (see [`super::blocklist`]). Keyed by list name, so subscribed
//! lists can come later as more instances.

use std::cell::RefCell;
use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::json;
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use super::blocklist::{publish, BLOCKLIST_KV};
use super::now_ms;
use crate::domain::blocklist::{AddOutcome, BlockList, Entry, EntryKind};

/// The list every room uses today.
pub const DEFAULT_LIST: &str = "default";

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ListOp {
    Get,
    Add { entry: Entry },
    Remove { pattern: String },
    Import { format: String, text: String },
}

#[durable_object]
pub struct ListDo {
    state: State,
    env: Env,
    list: RefCell<Option<BlockList>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
  ord INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL,
  ident TEXT NOT NULL,
  json TEXT NOT NULL,
  UNIQUE (kind, ident)
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
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

impl DurableObject for ListDo {
    fn new(state: State, env: Env) -> Self {
        if let Err(e) = state.storage().sql().exec(SCHEMA, None) {
            worker::console_error!("list schema: {e}");
        }
        ListDo {
            state,
            env,
            list: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let op: ListOp = req.json().await?;
        // Taken out while it changes: if anything below fails, the next request reloads the
        // rows instead of trusting a half-changed copy.
        let cached = self.list.borrow_mut().take();
        let mut list = match cached {
            Some(l) => l,
            None => self.load()?,
        };
        let before: HashSet<(&'static str, String)> = list.entries.iter().map(identity).collect();
        let now = now_ms();
        let reply = match op {
            ListOp::Get => {
                let resp = Response::from_json(&list);
                *self.list.borrow_mut() = Some(list);
                return resp;
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
        self.persist(&before, &list).await?;
        let version = list.version;
        *self.list.borrow_mut() = Some(list);
        let mut reply = reply;
        reply["version"] = version.into();
        Response::from_json(&reply)
    }
}

impl ListDo {
    fn load(&self) -> Result<BlockList> {
        #[derive(Deserialize)]
        struct Row {
            json: String,
        }
        #[derive(Deserialize)]
        struct V {
            v: String,
        }
        let sql = self.state.storage().sql();
        let rows: Vec<Row> = sql
            .exec("SELECT json FROM entries ORDER BY ord", None)?
            .to_array()?;
        let version: Vec<V> = sql
            .exec("SELECT v FROM meta WHERE k = 'version'", None)?
            .to_array()?;
        let mut entries = Vec::with_capacity(rows.len());
        for r in rows {
            entries.push(serde_json::from_str::<Entry>(&r.json)?);
        }
        Ok(BlockList {
            version: version.first().and_then(|v| v.v.parse().ok()).unwrap_or(0),
            entries,
        })
    }

    /// Writes the rows that changed, then publishes the list to KV.
    async fn persist(
        &self,
        before: &HashSet<(&'static str, String)>,
        list: &BlockList,
    ) -> Result<()> {
        let sql = self.state.storage().sql();
        let after: HashSet<(&'static str, String)> = list.entries.iter().map(identity).collect();
        if &after == before {
            return Ok(());
        }
        for (kind, ident) in before.difference(&after) {
            sql.exec(
                "DELETE FROM entries WHERE kind = ? AND ident = ?",
                vec![(*kind).into(), ident.as_str().into()],
            )?;
        }
        for e in &list.entries {
            let (kind, ident) = identity(e);
            if !before.contains(&(kind, ident.clone())) {
                sql.exec(
                    "INSERT OR REPLACE INTO entries (kind, ident, json) VALUES (?, ?, ?)",
                    vec![kind.into(), ident.into(), serde_json::to_string(e)?.into()],
                )?;
            }
        }
        sql.exec(
            "INSERT INTO meta (k, v) VALUES ('version', ?) \
             ON CONFLICT(k) DO UPDATE SET v = excluded.v",
            vec![list.version.to_string().into()],
        )?;
        publish(&self.env.kv(BLOCKLIST_KV)?, list).await
    }
}
