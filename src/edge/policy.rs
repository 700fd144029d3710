//! Subscribed policy lists as the hot path sees them: each list's compiled index, read from KV
//! and opened (a header check, no rebuild) once per isolate per version.
//!
//! A check reads each list's small version value at most once per [`VERSION_TTL_MS`] per
//! isolate; only when it moved does the isolate read the blob. A blob that does not open (another
//! format, damaged) is never trusted: the check logs it and goes on without that list until its
//! object publishes a good one, which it does on its next change. Lists change on the
//! five-minute cron, so half a minute of staleness changes no guarantee.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use worker::{kv::KvStore, Env, Result};

use super::blocklist::{delete_blob, get_blob, parse_version, put_blob};
use super::log::Logger;
use super::now_ms;
use crate::domain::blocklist::layers::Pointer;
use crate::domain::blocklist::BlockIndex;
use crate::domain::config::Config;
use crate::domain::deployment::room_key;
use crate::domain::mxid::RoomId;
use crate::domain::policy::index::{Found, PolicyIndex};

/// KV binding name, as in `wrangler.toml` (the block-list's namespace, other keys).
pub const POLICY_KV: &str = super::blocklist::BLOCKLIST_KV;

/// How long the hot path trusts a list's version it last read from KV.
pub const VERSION_TTL_MS: u64 = 30_000;

struct Cached<T> {
    checked_at: u64,
    version: u64,
    index: Option<Rc<T>>,
}

type Cache<T> = RefCell<HashMap<String, Cached<T>>>;

thread_local! {
    static CACHE: Cache<PolicyIndex> = RefCell::new(HashMap::new());
    /// The fuzzy-trusted lists' block-list indexes (`POLICY_FUZZY_ROOMS`).
    static FUZZY: Cache<BlockIndex> = RefCell::new(HashMap::new());
}

/// The two blobs a list may have: its exact rules, and (when trusted with fuzzy matching) its
/// user rules as a block-list index.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Blob {
    Rules,
    Fuzzy,
}

/// The KV keys of a list (as `POLICY_ROOMS` names it): its version value (`<version> <chunks>`)
/// and its blob's prefix (pieces `<prefix>:<version>:<i>`, as the block-list's).
fn keys(list: &str, blob: Blob) -> (String, String) {
    // The same short key for an alias or an ID string; room_key wants a RoomId, so hash the
    // configured text the same way.
    let id = RoomId::parse(list)
        .map(|r| room_key(&r))
        .unwrap_or_else(|_| crate::domain::form::hex_sha256(list.as_bytes())[..16].to_owned());
    match blob {
        Blob::Rules => (format!("policy:{id}:version"), format!("policy:{id}:index")),
        Blob::Fuzzy => (
            format!("policy:{id}:fuzzy_version"),
            format!("policy:{id}:fuzzy"),
        ),
    }
}

/// Writes a list's blob, then its version, so a reader that sees a version finds a blob at
/// least that new; then deletes the blob the version replaced.
pub async fn publish(
    kv: &KvStore,
    list: &str,
    which: Blob,
    version: u64,
    blob: &[u8],
) -> Result<()> {
    let (version_key, blob_prefix) = keys(list, which);
    let previous = kv
        .get(&version_key)
        .text()
        .await?
        .map(|v| parse_version(&v));
    let chunks = put_blob(kv, &blob_prefix, version, blob).await?;
    kv.put(&version_key, Pointer::whole(version, chunks).to_string())?
        .execute()
        .await?;
    if let Some((old, old_chunks)) = previous.filter(|(old, _)| *old != version) {
        delete_blob(kv, &blob_prefix, old, old_chunks).await;
    }
    Ok(())
}

async fn index_of(kv: &KvStore, list: &str, log: &Logger) -> Result<Option<Rc<PolicyIndex>>> {
    load(kv, list, Blob::Rules, &CACHE, PolicyIndex::open, log).await
}

async fn load<T: 'static>(
    kv: &KvStore,
    list: &str,
    which: Blob,
    cache: &'static std::thread::LocalKey<Cache<T>>,
    open: impl Fn(Vec<u8>) -> std::result::Result<T, crate::domain::paged::IndexError>,
    log: &Logger,
) -> Result<Option<Rc<T>>> {
    let now = now_ms();
    let fresh = cache.with(|c| {
        c.borrow()
            .get(list)
            .filter(|e| now.saturating_sub(e.checked_at) < VERSION_TTL_MS)
            .map(|e| e.index.clone())
    });
    if let Some(index) = fresh {
        return Ok(index);
    }
    let (version_key, blob_prefix) = keys(list, which);
    let (version, chunks) = kv
        .get(&version_key)
        .text()
        .await?
        .map(|v| parse_version(&v))
        .unwrap_or((0, 0));
    let same = cache.with(|c| {
        let mut c = c.borrow_mut();
        match c.get_mut(list) {
            Some(e) if e.version == version => {
                e.checked_at = now;
                Some(e.index.clone())
            }
            _ => None,
        }
    });
    if let Some(index) = same {
        return Ok(index);
    }
    let index = match get_blob(kv, &blob_prefix, version, chunks).await? {
        None => None,
        Some(bytes) => match open(bytes) {
            Ok(i) => Some(Rc::new(i)),
            Err(e) => {
                log.event(
                    "policy_index_refused",
                    &[("list", list.into()), ("why", e.to_string().into())],
                );
                None
            }
        },
    };
    cache.with(|c| {
        c.borrow_mut().insert(
            list.to_owned(),
            Cached {
                checked_at: now,
                version,
                index: index.clone(),
            },
        )
    });
    Ok(index)
}

/// The room's subscribed lists trusted with fuzzy matching, as block-list indexes graded under
/// the room's block-list settings, that have a usable copy now.
pub async fn fuzzy_lists(env: &Env, cfg: &Config, log: &Logger) -> Vec<Rc<BlockIndex>> {
    if cfg.policy_fuzzy_rooms.is_empty() {
        return Vec::new();
    }
    let Ok(kv) = env.kv(POLICY_KV) else {
        return Vec::new();
    };
    let policy = cfg.blocklist;
    let mut out = Vec::new();
    for list in &cfg.policy_fuzzy_rooms {
        let open = |bytes: Vec<u8>| BlockIndex::open(bytes, &policy);
        match load(&kv, list, Blob::Fuzzy, &FUZZY, open, log).await {
            Ok(Some(i)) if i.damaged() => {
                FUZZY.with(|c| c.borrow_mut().remove(list.as_str()));
            }
            Ok(Some(i)) => out.push(i),
            Ok(None) => {}
            Err(e) => unavailable(log, list, &e),
        }
    }
    out
}

/// A list whose index could not be read from KV now (it is left out of this check).
fn unavailable(log: &Logger, list: &str, e: &worker::Error) {
    log.event(
        "policy_index_unavailable",
        &[("list", list.into()), ("error", e.to_string().into())],
    );
}

/// The room's subscribed lists that have a usable index now.
pub async fn lists(env: &Env, cfg: &Config, log: &Logger) -> Vec<Rc<PolicyIndex>> {
    let Ok(kv) = env.kv(POLICY_KV) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for list in &cfg.policy_rooms {
        match index_of(&kv, list, log).await {
            Ok(Some(i)) => out.push(i),
            Ok(None) => {}
            Err(e) => unavailable(log, list, &e),
        }
    }
    out
}

/// The first rule of the room's subscribed lists that matches `user_id`, if any, unless Knock's
/// own list (`own`) holds a local exception for them.
pub async fn judge(
    env: &Env,
    cfg: &Config,
    own: &BlockIndex,
    user_id: &str,
    log: &Logger,
) -> Result<Option<Found>> {
    if cfg.policy_rooms.is_empty() || own.allowed(user_id).is_some() {
        return Ok(None);
    }
    let kv = env.kv(POLICY_KV)?;
    for list in &cfg.policy_rooms {
        let Some(index) = index_of(&kv, list, log).await? else {
            continue;
        };
        match index.judge(user_id) {
            Ok(Some(found)) => return Ok(Some(found)),
            Ok(None) => {}
            Err(e) => {
                // A damaged page: forget this copy; the next check reads KV again.
                log.event(
                    "policy_index_refused",
                    &[
                        ("list", list.as_str().into()),
                        ("why", e.to_string().into()),
                    ],
                );
                CACHE.with(|c| c.borrow_mut().remove(list.as_str()));
            }
        }
    }
    Ok(None)
}
