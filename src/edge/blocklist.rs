//! The block-list as the hot path sees it: read from KV, compiled once per isolate per version.
//!
//! A check reads one small KV value, the version, at most once per [`VERSION_TTL_MS`] per
//! isolate (and at once after this isolate published a list). Only when it moved does the isolate
//! read the whole list and rebuild the index. KV shows a write at once in the location that made
//! it (the admin request's), and within about 60 s elsewhere, so a few seconds more staleness on
//! the hot path (deciding a form knock's verdict) changes no guarantee: a room about to change
//! someone's membership asks the list object itself ([`authoritative_version`]) and takes the list
//! from it when KV is behind ([`at_least`]), which never uses the cached version.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use worker::{kv::KvStore, Env, Result};

use super::list_do::{ListOp, DEFAULT_LIST};
use super::{now_ms, stub, LISTS_BINDING};
use crate::domain::blocklist::{BlockIndex, BlockList, Policy};

/// KV binding name, as in `wrangler.toml`.
pub const BLOCKLIST_KV: &str = "BLOCKLIST";
const VERSION_KEY: &str = "blocklist:version";
const DOC_KEY: &str = "blocklist:doc";

thread_local! {
    static CACHE: RefCell<Option<(u64, Rc<BlockIndex>)>> = const { RefCell::new(None) };
    /// The KV version as this isolate last read (or published) it, and when.
    static VERSION: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
}

/// How long the hot path trusts the version it last read from KV.
pub const VERSION_TTL_MS: u64 = 5_000;

/// This isolate's index, if it is at least as new as `version` and graded by `policy`.
fn cached(version: u64, policy: &Policy) -> Option<Rc<BlockIndex>> {
    CACHE.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(v, idx)| *v >= version && idx.policy() == policy)
            .map(|(_, idx)| idx.clone())
    })
}

/// Keeps `index` (of `version`) for this isolate, never replacing a newer copy that another
/// request put there meanwhile.
fn remember(version: u64, index: &Rc<BlockIndex>) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref()
            .is_none_or(|(v, old)| *v < version || old.policy() != index.policy())
        {
            *c = Some((version, index.clone()));
        }
    });
}

/// The version KV holds.
async fn published_version(kv: &KvStore) -> Result<u64> {
    let version = kv
        .get(VERSION_KEY)
        .text()
        .await?
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Ok(version)
}

/// The current index for the hot path: from this isolate's cache when the version (read from KV
/// at most every [`VERSION_TTL_MS`]) has not moved.
pub async fn current(env: &Env, policy: &Policy) -> Result<Rc<BlockIndex>> {
    let kv = env.kv(BLOCKLIST_KV)?;
    let now = now_ms();
    let fresh = VERSION.with(|v| {
        v.get()
            .filter(|(at, _)| now.saturating_sub(*at) < VERSION_TTL_MS)
            .map(|(_, version)| version)
    });
    let version = match fresh {
        Some(v) => v,
        None => {
            let v = published_version(&kv).await?;
            VERSION.with(|c| c.set(Some((now, v))));
            v
        }
    };
    from_kv(&kv, version, policy).await
}

/// An index at least as new as `version` (a version KV is known to hold): this isolate's, or
/// KV's list.
async fn from_kv(kv: &KvStore, version: u64, policy: &Policy) -> Result<Rc<BlockIndex>> {
    let hit = cached(version, policy);
    if let Some(index) = hit {
        return Ok(index);
    }
    let list = match kv.get(DOC_KEY).text().await? {
        Some(doc) => BlockList::from_json(&doc)?,
        None => BlockList::default(),
    };
    let loaded = list.version.max(version);
    let index = Rc::new(BlockIndex::build_with(list.entries, *policy));
    remember(loaded, &index);
    Ok(index)
}

/// Writes the list, then its version, so a reader that sees a version finds a list at least
/// that new.
pub async fn publish(kv: &KvStore, list: &BlockList) -> Result<()> {
    kv.put(DOC_KEY, list.to_json()?)?.execute().await?;
    kv.put(VERSION_KEY, list.version.to_string())?
        .execute()
        .await?;
    // This isolate's hot path sees the new version at once.
    VERSION.with(|v| v.set(Some((now_ms(), list.version))));
    Ok(())
}

/// The version the list object has stored: every block acknowledged so far is in it.
pub async fn authoritative_version(env: &Env) -> Result<u64> {
    #[derive(serde::Deserialize)]
    struct V {
        version: u64,
    }
    let v: V = stub::call(env, LISTS_BINDING, DEFAULT_LIST, "/", &ListOp::Version).await?;
    Ok(v.version)
}

/// Makes this isolate's hot path use a list at least as new as `version` (one the list object
/// just stored) from now on.
pub async fn adopt(env: &Env, version: u64, policy: &Policy) -> Result<()> {
    at_least(env, version, policy).await?;
    VERSION.with(|v| {
        if v.get().is_none_or(|(_, known)| known < version) {
            v.set(Some((now_ms(), version)));
        }
    });
    Ok(())
}

/// An index at least as new as `version`: this isolate's, KV's, or (when KV is still behind)
/// the list object's own.
pub async fn at_least(env: &Env, version: u64, policy: &Policy) -> Result<Rc<BlockIndex>> {
    let hit = cached(version, policy);
    if let Some(index) = hit {
        return Ok(index);
    }
    let kv = env.kv(BLOCKLIST_KV)?;
    let published = published_version(&kv).await?;
    if published >= version {
        return from_kv(&kv, published, policy).await;
    }
    let list: BlockList = stub::call(env, LISTS_BINDING, DEFAULT_LIST, "/", &ListOp::Get).await?;
    let loaded = list.version;
    let index = Rc::new(BlockIndex::build_with(list.entries, *policy));
    remember(loaded, &index);
    Ok(index)
}
