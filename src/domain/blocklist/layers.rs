//! How a change of the list is published: the whole compiled index, or only the entries added
//! since the last whole one (the **base**), which readers layer over the base they already hold
//! ([`BlockIndex::over`](super::BlockIndex::over)). A list of 100,000 entries compiles to tens of
//! megabytes, and every isolate would read all of it again after each block; the entries a block
//! adds are a few hundred bytes.
//!
//! Decides: for the list as stored and the base last published ([`Base`]), whether the next
//! publish is whole or a layer ([`plan`]). A layer is only ever the entries after the base's, so
//! the base's must be exactly the list's first entries: a removal, an entry changed in place (a
//! new reason or reach), a reordering, other matching settings or another index format all make
//! the next publish whole. So do more than [`MAX_LAYER_ENTRIES`] added entries, which keeps a
//! layer small to read and its lookups cheap. Whether the base's entries are still the list's
//! first is checked by a digest of them ([`digest`]), never assumed from the change that was made.
//!
//! Also: what is published and what is left to delete ([`Published`]), kept so that an object
//! that vanishes between two writes loses nothing and leaks nothing. The writer, for each
//! publish: [`Published::begin`] (the new blob is garbage until it is in use), saves the state,
//! writes the blob, writes the version that names it, [`Published::commit_whole`] or
//! [`Published::commit_layer`] (now what it replaced is garbage), saves, deletes
//! [`Published::to_delete`] one by one ([`Published::deleted`]), saves. What a publish cut short
//! left is deleted after the next one. Garbage is only deleted once the version names what
//! replaced it, so a blob the version names is never deleted, and a blob written is always either
//! named or deleted later (the simulation in the tests cuts publishes short at every step).
//!
//! Never does: IO, compiling (the caller compiles what the plan names), or clock reads.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::index::{encode_entry, FORMAT_VERSION};
use super::{Entry, Policy};

/// Most entries a layer holds before the next publish is whole again.
pub const MAX_LAYER_ENTRIES: usize = 2_000;

/// The whole index last published: what a layer may be laid over.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Base {
    /// The list version it was compiled from.
    pub version: u64,
    /// How many KV values hold it.
    pub chunks: usize,
    /// How many entries it holds: the list's first.
    pub entries: usize,
    /// [`digest`] of those entries.
    pub digest: String,
    /// The settings it was compiled under.
    pub policy: Policy,
    /// Its index format.
    pub format: u16,
}

impl Base {
    /// The base a whole publish of `entries` at `version` (in `chunks` values) makes.
    pub fn of(version: u64, chunks: usize, entries: &[Entry], policy: &Policy) -> Base {
        Base {
            version,
            chunks,
            entries: entries.len(),
            digest: digest(entries),
            policy: *policy,
            format: FORMAT_VERSION,
        }
    }
}

/// A blob in KV: a whole index or a layer, by version, in `chunks` values.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blob {
    pub layer: bool,
    pub version: u64,
    pub chunks: usize,
}

impl Base {
    /// Where it is.
    pub fn blob(&self) -> Blob {
        Blob {
            layer: false,
            version: self.version,
            chunks: self.chunks,
        }
    }
}

/// What the list object has published, and the blobs it still has to delete.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// The whole index layers go over (the version names it, or its layer).
    pub base: Option<Base>,
    /// The layer the version names, if it names one.
    pub layer: Option<Blob>,
    /// Written and not (or no longer) named: to delete.
    #[serde(default)]
    pub garbage: Vec<Blob>,
}

impl Published {
    fn same(a: &Blob, b: &Blob) -> bool {
        a.layer == b.layer && a.version == b.version
    }

    fn discard(&mut self, blob: Blob) {
        if !self.garbage.iter().any(|g| Published::same(g, &blob)) {
            self.garbage.push(blob);
        }
    }

    /// Before `blob` is written: until the version names it, it is garbage.
    pub fn begin(&mut self, blob: Blob) {
        self.discard(blob);
    }

    /// The version now names the whole index `base`: the old base and layer are garbage.
    pub fn commit_whole(&mut self, base: Base) {
        let new = base.blob();
        self.garbage.retain(|g| !Published::same(g, &new));
        if let Some(old) = self.base.take().map(|b| b.blob()) {
            if !Published::same(&old, &new) {
                self.discard(old);
            }
        }
        if let Some(old) = self.layer.take() {
            self.discard(old);
        }
        self.base = Some(base);
    }

    /// The version now names `layer` over the base: the previous layer is garbage.
    pub fn commit_layer(&mut self, layer: Blob) {
        self.garbage.retain(|g| !Published::same(g, &layer));
        if let Some(old) = self.layer.replace(layer) {
            if !Published::same(&old, &layer) {
                self.discard(old);
            }
        }
    }

    /// The state a publish starts from: the one saved (if any), its base and layer given up as
    /// garbage when KV's copy is of another index format (no layer of this format goes over
    /// them), and `legacy`, the whole index a release before layers published (it kept no
    /// state), as garbage too.
    pub fn resume(
        saved: Option<Published>,
        current_format: bool,
        legacy: Option<Blob>,
    ) -> Published {
        let mut state = saved.unwrap_or_default();
        if !current_format {
            if let Some(b) = state.base.take() {
                state.forget(b.blob());
            }
            if let Some(l) = state.layer.take() {
                state.forget(l);
            }
        }
        if let Some(blob) = legacy.filter(|_| state.base.is_none()) {
            state.forget(blob);
        }
        state
    }

    /// A blob written earlier and named by no version (it came from a release before the base
    /// was kept): garbage once the next publish is in use.
    pub fn forget(&mut self, blob: Blob) {
        if self
            .base
            .as_ref()
            .is_none_or(|b| !Published::same(&b.blob(), &blob))
            && self.layer.is_none_or(|l| !Published::same(&l, &blob))
        {
            self.discard(blob);
        }
    }

    /// Garbage that may be deleted now: never the base or the layer in use.
    pub fn to_delete(&self) -> Vec<Blob> {
        self.garbage
            .iter()
            .copied()
            .filter(|g| {
                self.base
                    .as_ref()
                    .is_none_or(|b| !Published::same(&b.blob(), g))
                    && self.layer.is_none_or(|l| !Published::same(&l, g))
            })
            .collect()
    }

    /// `blob` was deleted.
    pub fn deleted(&mut self, blob: Blob) {
        self.garbage.retain(|g| !Published::same(g, &blob));
    }
}

/// What the published version value says (KV's `blocklist:version`): `<version> <chunks>` for
/// a whole index of `version` in `chunks` values, or `<version> <chunks> <base> <layer_chunks>`
/// for the layer of `version` over the whole index of `base` (in `chunks` values). A value of
/// the first release, `<version>`, has no pieces; anything unreadable reads as nothing published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pointer {
    pub version: u64,
    /// The whole index's version: `version` itself, or the base a layer goes over.
    pub base: u64,
    /// Pieces of the whole index.
    pub chunks: usize,
    /// Pieces of the layer of `version` (0: none, the whole index is `version`'s).
    pub layer_chunks: usize,
}

impl Pointer {
    pub fn whole(version: u64, chunks: usize) -> Pointer {
        Pointer {
            version,
            base: version,
            chunks,
            layer_chunks: 0,
        }
    }

    pub fn parse(text: &str) -> Pointer {
        let mut parts = text.split_whitespace().map(|p| p.parse::<u64>().ok());
        let mut next = || parts.next().flatten();
        let version = next().unwrap_or(0);
        let chunks = next().unwrap_or(0) as usize;
        match (next(), next()) {
            (Some(base), Some(layer_chunks)) if layer_chunks > 0 && base < version => Pointer {
                version,
                base,
                chunks,
                layer_chunks: layer_chunks as usize,
            },
            _ => Pointer::whole(version, chunks),
        }
    }
}

impl std::fmt::Display for Pointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.layer_chunks == 0 {
            write!(f, "{} {}", self.version, self.chunks)
        } else {
            write!(
                f,
                "{} {} {} {}",
                self.version, self.chunks, self.base, self.layer_chunks
            )
        }
    }
}

/// What the next publish is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The whole list, compiled: it becomes the base.
    Whole,
    /// The entries from position `from` on (and the list's local exceptions), compiled as a
    /// layer over the base.
    Layer { from: usize },
}

/// Whether the list's `entries` can be published as a layer over `base` under `policy`.
pub fn plan(entries: &[Entry], base: Option<&Base>, policy: &Policy) -> Plan {
    let Some(base) = base else {
        return Plan::Whole;
    };
    let fits = base.format == FORMAT_VERSION
        && base.policy == *policy
        && entries.len() >= base.entries
        && entries.len() - base.entries <= MAX_LAYER_ENTRIES
        && digest(&entries[..base.entries]) == base.digest;
    if fits {
        Plan::Layer { from: base.entries }
    } else {
        Plan::Whole
    }
}

/// SHA-256 (hex) of entries as the index stores them, each prefixed by its length: equal only
/// for the same entries, with the same reasons, reaches and times, in the same order.
pub fn digest(entries: &[Entry]) -> String {
    let mut h = Sha256::new();
    for e in entries {
        let record = encode_entry(e);
        h.update((record.len() as u32).to_le_bytes());
        h.update(&record);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry::parse(&format!("@user{i}:x.org"), Some("spam".into()), 7).unwrap())
            .collect()
    }

    #[test]
    fn only_entries_added_after_the_base_make_a_layer() {
        let policy = Policy::default();
        let list = entries(10);
        assert_eq!(plan(&list, None, &policy), Plan::Whole);
        let base = Base::of(3, 1, &list[..8], &policy);
        assert_eq!(base.entries, 8);
        assert_eq!(plan(&list, Some(&base), &policy), Plan::Layer { from: 8 });
        // Nothing added (a local exception changed, say): an empty layer.
        assert_eq!(
            plan(&list[..8], Some(&base), &policy),
            Plan::Layer { from: 8 }
        );
        // A base entry removed, or changed in place, or the order changed: whole.
        let mut removed = list.clone();
        removed.remove(2);
        assert_eq!(plan(&removed, Some(&base), &policy), Plan::Whole);
        let mut changed = list.clone();
        changed[0].reason = Some("other".into());
        assert_eq!(plan(&changed, Some(&base), &policy), Plan::Whole);
        let mut reach = list.clone();
        reach[5] = reach[5]
            .clone()
            .with_reach(Some(super::super::Reach::Exact));
        assert_eq!(plan(&reach, Some(&base), &policy), Plan::Whole);
        let mut swapped = list.clone();
        swapped.swap(0, 1);
        assert_eq!(plan(&swapped, Some(&base), &policy), Plan::Whole);
        // Fewer entries than the base, other settings, another format: whole.
        assert_eq!(plan(&list[..5], Some(&base), &policy), Plan::Whole);
        let strict = Policy {
            shared_counter_min_digits: 0,
            ..Policy::default()
        };
        assert_eq!(plan(&list, Some(&base), &strict), Plan::Whole);
        let old = Base {
            format: FORMAT_VERSION.wrapping_add(1),
            ..base.clone()
        };
        assert_eq!(plan(&list, Some(&old), &policy), Plan::Whole);
    }

    #[test]
    fn a_layer_holds_at_most_its_limit() {
        let policy = Policy::default();
        let list = entries(MAX_LAYER_ENTRIES + 3);
        let base = Base::of(1, 1, &list[..3], &policy);
        assert_eq!(plan(&list, Some(&base), &policy), Plan::Layer { from: 3 });
        let base = Base::of(1, 1, &list[..2], &policy);
        assert_eq!(plan(&list, Some(&base), &policy), Plan::Whole);
    }

    /// KV as the simulation sees it: blobs, and the version value (what it names).
    #[derive(Default)]
    struct Kv {
        blobs: Vec<(bool, u64)>,
        named: Vec<(bool, u64)>,
    }

    /// One publish (whole or a layer of `version`), as the list object does it, stopping after
    /// `steps` steps when given (the object vanished). The state is what was last saved.
    fn publish(
        saved: &mut Published,
        kv: &mut Kv,
        version: u64,
        whole: bool,
        steps: Option<usize>,
    ) -> bool {
        let mut state = saved.clone();
        let mut left = steps.unwrap_or(usize::MAX);
        let mut step = || {
            if left == 0 {
                return false;
            }
            left -= 1;
            true
        };
        macro_rules! step {
            ($e:expr) => {
                if !step() {
                    return false;
                }
                $e;
                // Whatever the version names is there, after every step.
                for n in &kv.named {
                    assert!(kv.blobs.contains(n), "{n:?} named but gone");
                }
            };
        }
        let blob = Blob {
            layer: !whole,
            version,
            chunks: 1,
        };
        state.begin(blob);
        step!(*saved = state.clone());
        // Writing a key again replaces it.
        step!(if !kv.blobs.contains(&(blob.layer, version)) {
            kv.blobs.push((blob.layer, version))
        });
        let base = state.base.as_ref().map_or(version, |b| b.version);
        step!(
            kv.named = if whole {
                vec![(false, version)]
            } else {
                vec![(false, base), (true, version)]
            }
        );
        if whole {
            state.commit_whole(Base {
                version,
                chunks: 1,
                entries: 0,
                digest: String::new(),
                policy: Policy::default(),
                format: FORMAT_VERSION,
            });
        } else {
            state.commit_layer(blob);
        }
        step!(*saved = state.clone());
        for g in state.to_delete() {
            step!(kv.blobs.retain(|b| *b != (g.layer, g.version)));
            state.deleted(g);
            step!(*saved = state.clone());
        }
        true
    }

    #[test]
    fn a_publish_cut_short_at_any_step_never_loses_what_is_named_and_leaks_nothing_later() {
        // Sequences of publishes (whole, or a layer over the last whole; a version may be
        // published again, whole, as after a change of settings), each one cut short at every
        // step in turn and then run again in full, whole or as a layer (the next alarm plans
        // from the saved state, not from what was cut short).
        let plans: &[&[(bool, u64)]] = &[
            &[(true, 1), (false, 1), (false, 1), (true, 1), (false, 1)],
            &[(true, 1), (true, 1), (false, 1), (true, 0), (true, 1)],
            &[(true, 1), (false, 1), (true, 0), (false, 1), (false, 0)],
            &[(true, 1), (true, 0), (false, 1), (true, 0), (true, 0)],
        ];
        for plan in plans {
            for cut_at in 0..plan.len() {
                for steps in 0..12 {
                    for retry_whole in [true, false] {
                        let mut saved = Published::default();
                        let mut kv = Kv::default();
                        let mut version = 0;
                        for (i, &(whole, step)) in plan.iter().enumerate() {
                            version += step.max(u64::from(i == 0));
                            // A layer needs a base, over an older version.
                            let layerable = |p: &Published| {
                                p.base.as_ref().is_some_and(|b| b.version < version)
                            };
                            let whole = whole || !layerable(&saved);
                            let cut = (i == cut_at).then_some(steps);
                            let done = publish(&mut saved, &mut kv, version, whole, cut);
                            // Whatever the version names is there, at every point.
                            for n in &kv.named {
                                assert!(
                                    kv.blobs.contains(n),
                                    "{plan:?} cut at {cut_at}/{steps}: {n:?} named but gone"
                                );
                            }
                            if !done {
                                // The next alarm: the same version again, in full.
                                let whole = retry_whole || !layerable(&saved);
                                assert!(publish(&mut saved, &mut kv, version, whole, None));
                                for n in &kv.named {
                                    assert!(kv.blobs.contains(n), "{plan:?} retried: {n:?} gone");
                                }
                            }
                            // Once a publish ran in full, only what is named is left.
                            let mut left = kv.blobs.clone();
                            left.sort_unstable();
                            let mut named = kv.named.clone();
                            named.sort_unstable();
                            assert_eq!(left, named, "{plan:?} cut at {cut_at}/{steps}");
                            assert!(saved.garbage.is_empty(), "{:?}", saved.garbage);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_publish_resumes_from_the_saved_state_and_gives_up_another_formats_blobs() {
        let policy = Policy::default();
        let mut saved = Published::default();
        saved.commit_whole(Base::of(3, 1, &[], &policy));
        let layer = Blob {
            layer: true,
            version: 4,
            chunks: 1,
        };
        saved.commit_layer(layer);
        let legacy = Blob {
            layer: false,
            version: 2,
            chunks: 1,
        };
        // The same format: as saved; the legacy blob is not this state's to delete.
        let same = Published::resume(Some(saved.clone()), true, Some(legacy));
        assert_eq!(same, saved);
        // Another format: no base, and its base and layer are garbage.
        let other = Published::resume(Some(saved.clone()), false, None);
        assert_eq!((other.base.is_none(), other.layer), (true, None));
        assert_eq!(other.to_delete().len(), 2);
        // Nothing saved (a release before layers): its whole index is garbage.
        let before = Published::resume(None, false, Some(legacy));
        assert_eq!(before.to_delete(), vec![legacy]);
    }

    #[test]
    fn a_blob_from_before_the_base_was_kept_is_deleted_once_replaced() {
        let mut p = Published::default();
        let legacy = Blob {
            layer: false,
            version: 4,
            chunks: 2,
        };
        p.forget(legacy);
        assert_eq!(p.to_delete(), vec![legacy]);
        // The same version published again whole is the base: not garbage.
        p.commit_whole(Base::of(4, 2, &[], &Policy::default()));
        assert!(p.to_delete().is_empty());
        p.forget(legacy);
        assert!(p.to_delete().is_empty());
    }

    #[test]
    fn the_version_value_names_a_whole_index_or_a_layer_over_one() {
        let whole = Pointer::whole(7, 2);
        assert_eq!(whole.to_string(), "7 2");
        assert_eq!(Pointer::parse("7 2"), whole);
        let layer = Pointer {
            version: 9,
            base: 7,
            chunks: 2,
            layer_chunks: 1,
        };
        assert_eq!(layer.to_string(), "9 2 7 1");
        assert_eq!(Pointer::parse("9 2 7 1"), layer);
        // The first release's value, nothing, or nonsense; a layer over itself or a later base.
        assert_eq!(Pointer::parse("5"), Pointer::whole(5, 0));
        assert_eq!(Pointer::parse(""), Pointer::whole(0, 0));
        assert_eq!(Pointer::parse("x y"), Pointer::whole(0, 0));
        assert_eq!(Pointer::parse("9 2 9 1"), Pointer::whole(9, 2));
        assert_eq!(Pointer::parse("9 2 11 1"), Pointer::whole(9, 2));
        assert_eq!(Pointer::parse("9 2 7 0"), Pointer::whole(9, 2));
    }

    #[test]
    fn the_digest_tells_entries_apart() {
        let list = entries(3);
        assert_eq!(digest(&list), digest(&list.clone()));
        assert_ne!(digest(&list), digest(&list[..2]));
        assert_ne!(digest(&[]), digest(&list[..1]));
        assert_eq!(digest(&[]).len(), 64);
    }
}
