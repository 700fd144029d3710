//! The block-list as the hot path sees it: the compiled index the list object publishes to KV,
//! opened (a header check, no rebuild) once per isolate per version.
//!
//! A check reads one small KV value, the version, at most once per [`VERSION_TTL_MS`] per
//! isolate (and at once after this isolate published a list). Only when it moved does the isolate
//! read the index blob ([`BlockIndex::open`]: pages are checked as lookups read them). A blob
//! built under other matching settings, of another format, or missing is never trusted: the
//! isolate takes the list object's own compiled copy instead. KV shows a write at once in the
//! location that made it (the admin request's), and within about 60 s elsewhere, so a few seconds
//! more staleness on the hot path (deciding a form knock's verdict) changes no guarantee: a room
//! about to change someone's membership asks the list object itself ([`authoritative_version`])
//! and takes the index from it when KV is behind ([`at_least`]), which never uses the cached
//! version.
//!
//! KV layout: `blocklist:version` holds `<version> <chunks>` when the whole index of that version
//! is published: the blob is in `chunks` values `blocklist:index:<version>:<i>` of at most
//! [`KV_CHUNK`] bytes each (a KV value holds 25 MiB), keyed by version so that a reader never
//! joins two versions' pieces. When only the entries added since a whole index (the base) are
//! published (see [`crate::domain::blocklist::layers`]), it holds `<version> <chunks>
//! <base_version> <layer_chunks>`: the base is `blocklist:index:<base_version>:*` (in `chunks`
//! values) and the layer `blocklist:layer:<version>:*`. An isolate that holds the base reads only
//! the layer; the base it keeps apart from the current index, so the next layer finds it too.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use worker::{kv::KvStore, Env, Result};

use super::list_do::{ListOp, DEFAULT_LIST};
use super::log::Logger;
use super::{now_ms, stub, LISTS_BINDING};
use crate::domain::blocklist::layers::{Blob, Pointer};
use crate::domain::blocklist::{BlockIndex, Policy};

/// KV binding name, as in `wrangler.toml`.
pub const BLOCKLIST_KV: &str = "BLOCKLIST";
const VERSION_KEY: &str = "blocklist:version";
const INDEX_PREFIX: &str = "blocklist:index";
const LAYER_PREFIX: &str = "blocklist:layer";
/// The largest KV value Knock writes (KV's limit is 25 MiB).
pub const KV_CHUNK: usize = 20 * 1024 * 1024;

thread_local! {
    static CACHE: RefCell<Option<(u64, Rc<BlockIndex>)>> = const { RefCell::new(None) };
    /// The last whole index this isolate opened from KV, by version: what layers go over.
    static BASE: RefCell<Option<(u64, Rc<BlockIndex>)>> = const { RefCell::new(None) };
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

/// Writes `bytes` as `<prefix>:<version>:<i>` values of at most [`KV_CHUNK`] bytes; returns
/// how many.
pub async fn put_blob(kv: &KvStore, prefix: &str, version: u64, bytes: &[u8]) -> Result<usize> {
    let mut n = 0;
    for (i, chunk) in bytes.chunks(KV_CHUNK).enumerate() {
        kv.put_bytes(&format!("{prefix}:{version}:{i}"), chunk)?
            .execute()
            .await?;
        n = i + 1;
    }
    Ok(n)
}

/// The blob [`put_blob`] wrote, if every piece is there.
pub async fn get_blob(
    kv: &KvStore,
    prefix: &str,
    version: u64,
    chunks: usize,
) -> Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    for i in 0..chunks {
        match kv.get(&format!("{prefix}:{version}:{i}")).bytes().await? {
            Some(b) => out.extend_from_slice(&b),
            None => return Ok(None),
        }
    }
    Ok((chunks > 0).then_some(out))
}

/// Deletes a blob [`put_blob`] wrote (an older version's), best effort.
pub async fn delete_blob(kv: &KvStore, prefix: &str, version: u64, chunks: usize) {
    for i in 0..chunks {
        let _ = kv.delete(&format!("{prefix}:{version}:{i}")).await;
    }
}

/// A version value `<version> <chunks>` (see [`Pointer`], which also reads a layer's).
pub fn parse_version(text: &str) -> (u64, usize) {
    let p = Pointer::parse(text);
    (p.version, p.chunks)
}

/// What KV says is published.
async fn published(kv: &KvStore) -> Result<Pointer> {
    Ok(Pointer::parse(
        &kv.get(VERSION_KEY).text().await?.unwrap_or_default(),
    ))
}

/// The version KV holds.
async fn published_version(kv: &KvStore) -> Result<u64> {
    Ok(published(kv).await?.version)
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
    from_kv(env, &kv, version, policy).await
}

/// An index at least as new as `version` (a version KV is known to hold): this isolate's, KV's
/// blob, or (when that blob does not open under `policy`) the list object's.
async fn from_kv(env: &Env, kv: &KvStore, version: u64, policy: &Policy) -> Result<Rc<BlockIndex>> {
    let hit = cached(version, policy);
    if let Some(index) = hit {
        return Ok(index);
    }
    let p = published(kv).await?;
    if p.version >= version {
        if let Some(index) = open_published(kv, &p, policy).await? {
            remember(p.version, &index);
            return Ok(index);
        }
    }
    from_list_object(env, policy).await
}

/// The index `p` names, opened: the whole one, or its layer over the base (this isolate's, or
/// read too). `None` when a piece is missing (a newer publish deleted it) or refused.
async fn open_published(
    kv: &KvStore,
    p: &Pointer,
    policy: &Policy,
) -> Result<Option<Rc<BlockIndex>>> {
    let log = Logger::background("blocklist");
    let refused = |version: u64, e: &dyn std::fmt::Display| {
        log.event(
            "blocklist_index_refused",
            &[("version", version.into()), ("why", e.to_string().into())],
        )
    };
    let held = BASE.with(|b| {
        b.borrow()
            .as_ref()
            .filter(|(v, idx)| *v == p.base && idx.policy() == policy)
            .map(|(_, idx)| idx.clone())
    });
    let (base, base_bytes) = match held {
        Some(base) => (base, 0),
        None => {
            let Some(bytes) = get_blob(kv, INDEX_PREFIX, p.base, p.chunks).await? else {
                return Ok(None);
            };
            let size = bytes.len();
            match BlockIndex::open(bytes, policy) {
                Ok(index) => {
                    let index = Rc::new(index);
                    BASE.with(|b| *b.borrow_mut() = Some((p.base, index.clone())));
                    (index, size)
                }
                Err(e) => {
                    refused(p.base, &e);
                    return Ok(None);
                }
            }
        }
    };
    if p.layer_chunks == 0 {
        log.event(
            "blocklist_index_opened",
            &[("version", p.version.into()), ("bytes", base_bytes.into())],
        );
        return Ok(Some(base));
    }
    let Some(bytes) = get_blob(kv, LAYER_PREFIX, p.version, p.layer_chunks).await? else {
        return Ok(None);
    };
    let size = bytes.len();
    match BlockIndex::open(bytes, policy).and_then(|layer| BlockIndex::over(base, layer)) {
        Ok(index) => {
            log.event(
                "blocklist_index_opened",
                &[
                    ("version", p.version.into()),
                    ("bytes", (base_bytes + size).into()),
                    ("base_version", p.base.into()),
                    ("layer_bytes", size.into()),
                ],
            );
            Ok(Some(Rc::new(index)))
        }
        Err(e) => {
            refused(p.version, &e);
            Ok(None)
        }
    }
}

/// The list object's compiled index under `policy` (it compiles where the list is written).
async fn from_list_object(env: &Env, policy: &Policy) -> Result<Rc<BlockIndex>> {
    let resp = stub::call_raw(
        env,
        LISTS_BINDING,
        DEFAULT_LIST,
        "/",
        &ListOp::Index { policy: *policy },
    )
    .await?;
    let version = resp.0;
    let index = BlockIndex::open(resp.1, policy)
        .map_err(|e| worker::Error::RustError(format!("the list object's index: {e}")))?;
    let index = Rc::new(index);
    remember(version, &index);
    Ok(index)
}

/// How many KV values a blob of `len` bytes takes (a layer or index always takes one at least).
pub fn chunks_for(len: usize) -> usize {
    len.div_ceil(KV_CHUNK).max(1)
}

/// Writes the whole compiled index of `version`, then the version that names it, so that a
/// reader that sees a version finds its pieces. Deletes nothing: what it replaced is the list
/// object's to delete (see [`crate::domain::blocklist::layers::Published`]).
pub async fn publish(kv: &KvStore, version: u64, blob: &[u8]) -> Result<usize> {
    let chunks = put_blob(kv, INDEX_PREFIX, version, blob).await?;
    kv.put(VERSION_KEY, Pointer::whole(version, chunks).to_string())?
        .execute()
        .await?;
    // This isolate's hot path sees the new version at once.
    VERSION.with(|v| v.set(Some((now_ms(), version))));
    Ok(chunks)
}

/// Writes the layer of `version` over the whole index `base` (version, chunks), then the version
/// that names both. Returns the layer's chunks.
pub async fn publish_layer(
    kv: &KvStore,
    version: u64,
    base: (u64, usize),
    layer: &[u8],
) -> Result<usize> {
    let chunks = put_blob(kv, LAYER_PREFIX, version, layer).await?;
    let pointer = Pointer {
        version,
        base: base.0,
        chunks: base.1,
        layer_chunks: chunks,
    };
    kv.put(VERSION_KEY, pointer.to_string())?.execute().await?;
    VERSION.with(|v| v.set(Some((now_ms(), version))));
    Ok(chunks)
}

/// Deletes a whole index or a layer that no version names any more (best effort: a piece left
/// is never read, its key names an old version).
pub async fn delete_published(kv: &KvStore, blob: Blob) {
    let prefix = if blob.layer {
        LAYER_PREFIX
    } else {
        INDEX_PREFIX
    };
    delete_blob(kv, prefix, blob.version, blob.chunks).await;
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
        return from_kv(env, &kv, published, policy).await;
    }
    from_list_object(env, policy).await
}
