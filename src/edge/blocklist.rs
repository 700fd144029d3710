//! The block-list as the hot path sees it: read from KV, compiled once per isolate per version.
//!
//! Each check reads one small KV value, the version. Only when it moved does the isolate read the
//! whole list and rebuild the index. KV shows a write at once in the location that made it (the
//! admin request's), and within about 60 s elsewhere. So the hot path (deciding a form knock's
//! verdict) reads KV, while a room about to change someone's membership asks the list object
//! itself ([`authoritative_version`]) and takes the list from it when KV is behind
//! ([`at_least`]).

use std::cell::RefCell;
use std::rc::Rc;

use worker::{kv::KvStore, Env, Result};

use super::list_do::{ListOp, DEFAULT_LIST};
use super::{stub, LISTS_BINDING};
use crate::domain::blocklist::{BlockIndex, BlockList, Policy};

/// KV binding name, as in `wrangler.toml`.
pub const BLOCKLIST_KV: &str = "BLOCKLIST";
const VERSION_KEY: &str = "blocklist:version";
const DOC_KEY: &str = "blocklist:doc";

thread_local! {
    static CACHE: RefCell<Option<(u64, Rc<BlockIndex>)>> = const { RefCell::new(None) };
}

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

/// The current index: from this isolate's cache when the stored version has not moved.
pub async fn current(env: &Env, policy: &Policy) -> Result<Rc<BlockIndex>> {
    let kv = env.kv(BLOCKLIST_KV)?;
    let version = kv
        .get(VERSION_KEY)
        .text()
        .await?
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
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

/// An index at least as new as `version`: this isolate's, KV's, or (when KV is still behind)
/// the list object's own.
pub async fn at_least(env: &Env, version: u64, policy: &Policy) -> Result<Rc<BlockIndex>> {
    let hit = cached(version, policy);
    if let Some(index) = hit {
        return Ok(index);
    }
    let kv = env.kv(BLOCKLIST_KV)?;
    let published = kv
        .get(VERSION_KEY)
        .text()
        .await?
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if published >= version {
        return current(env, policy).await;
    }
    let list: BlockList = stub::call(env, LISTS_BINDING, DEFAULT_LIST, "/", &ListOp::Get).await?;
    let loaded = list.version;
    let index = Rc::new(BlockIndex::build_with(list.entries, *policy));
    remember(loaded, &index);
    Ok(index)
}
