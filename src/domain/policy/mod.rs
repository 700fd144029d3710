//! Matrix moderation policy lists ("Moderation policy lists" in the client-server spec): the
//! rules other communities publish as state events in a policy room, read into typed rules.
//!
//! Decides: what one state event of a policy room says (a user or server rule with its entity,
//! recommendation and reason; or the removal of the rule under that type and state key), which
//! event types and recommendations count (the spec's `m.policy.rule.*`, the legacy `m.room.rule.*`
//! and `org.matrix.mjolnir.rule.*`; `m.ban`, `org.matrix.mjolnir.ban`, and MSC4204's takedown,
//! which may come without a reason), and MSC4205's hashed entities. A list's current rules are
//! the latest event per (type, state key); [`index`] compiles them into a compact binary index
//! that answers "which rule matches this user" without being rebuilt per isolate.
//!
//! Matching follows the spec: an entity is a glob over the whole user ID (`*` any run, `?` one
//! character) for a user rule, over the server name for a server rule; a hashed entity is the
//! base64 SHA-256 of the full user ID (or server name). Fuzzy matching never applies here.
//! Never does: IO.

pub mod index;
pub mod publish;
pub mod sync;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    User,
    Server,
    /// Room rules are read (so their removals are too) but never match a person.
    Room,
}

impl Kind {
    /// The kind an event type stands for, if it is a policy rule at all.
    pub fn of_event_type(t: &str) -> Option<Kind> {
        let tail = t
            .strip_prefix("m.policy.rule.")
            .or_else(|| t.strip_prefix("m.room.rule."))
            .or_else(|| t.strip_prefix("org.matrix.mjolnir.rule."))?;
        match tail {
            "user" => Some(Kind::User),
            "server" => Some(Kind::Server),
            "room" => Some(Kind::Room),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Server => "server",
            Kind::Room => "room",
        }
    }
}

/// What the list recommends doing about the entity. Other recommendations are not Knock's to
/// carry out and are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recommendation {
    Ban,
    /// MSC4204: the entity is removed everywhere, often without a public reason.
    Takedown,
}

impl Recommendation {
    pub fn parse(s: &str) -> Option<Recommendation> {
        match s {
            "m.ban" | "org.matrix.mjolnir.ban" => Some(Recommendation::Ban),
            "m.takedown" | "org.matrix.msc4204.takedown" => Some(Recommendation::Takedown),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Recommendation::Ban => "ban",
            Recommendation::Takedown => "takedown",
        }
    }
}

/// What a rule names: a glob (or plain text, a glob without wildcards), or a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entity {
    /// Lower-cased; may contain `*` and `?`.
    Glob(String),
    /// MSC4205: the SHA-256 of the entity.
    Sha256([u8; 32]),
}

impl Entity {
    pub fn is_literal(&self) -> bool {
        matches!(self, Entity::Glob(g) if !g.contains(['*', '?']))
    }
}

/// One rule of a policy list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub kind: Kind,
    pub entity: Entity,
    pub recommendation: Recommendation,
    pub reason: Option<String>,
    /// The event's type and state key: the rule's identity in its room.
    pub event_type: String,
    pub state_key: String,
    /// Who set it.
    pub sender: String,
}

/// A policy room's state event, as far as Knock reads it (typed, so that a large room's state
/// is never held as a generic JSON tree).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StateEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    pub state_key: Option<String>,
    #[serde(default)]
    pub sender: String,
    #[serde(default)]
    pub content: Content,
    #[serde(default)]
    pub unsigned: Unsigned,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Content {
    pub entity: Option<String>,
    pub recommendation: Option<String>,
    pub reason: Option<String>,
    pub hashes: Option<Hashes>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Hashes {
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Unsigned {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redacted_because: Option<serde_json::Value>,
}

/// What one state event does to its list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The rule under (type, state key) is now this one.
    Set(Rule),
    /// The rule under (type, state key) is gone: empty content, a redaction, or content Knock
    /// cannot use (an unknown recommendation replaces a ban just as well).
    Remove {
        event_type: String,
        state_key: String,
    },
    /// Not a policy rule.
    Ignore,
}

/// Longest reason kept (characters).
pub const MAX_REASON_CHARS: usize = 300;

/// Reads one state event.
pub fn read(e: &StateEvent) -> Change {
    let Some(kind) = Kind::of_event_type(&e.event_type) else {
        return Change::Ignore;
    };
    let Some(state_key) = e.state_key.clone() else {
        return Change::Ignore;
    };
    let remove = Change::Remove {
        event_type: e.event_type.clone(),
        state_key: state_key.clone(),
    };
    if e.unsigned.redacted_because.is_some() {
        return remove;
    }
    let c = &e.content;
    let Some(recommendation) = c.recommendation.as_deref().and_then(Recommendation::parse) else {
        return remove;
    };
    let entity = match (c.entity.as_deref().map(str::trim), hashed(c)) {
        (Some(g), _) if !g.is_empty() && g.len() <= 255 => Entity::Glob(g.to_lowercase()),
        (_, Some(h)) => Entity::Sha256(h),
        _ => return remove,
    };
    let reason = c
        .reason
        .as_deref()
        .map(|r| {
            let flat: String = r
                .chars()
                .map(|ch| if ch.is_control() { ' ' } else { ch })
                .take(MAX_REASON_CHARS)
                .collect();
            flat.trim().to_owned()
        })
        .filter(|r| !r.is_empty());
    Change::Set(Rule {
        kind,
        entity,
        recommendation,
        reason,
        event_type: e.event_type.clone(),
        state_key,
        sender: e.sender.clone(),
    })
}

fn hashed(c: &Content) -> Option<[u8; 32]> {
    let b64 = c.hashes.as_ref()?.sha256.as_deref()?.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
        .ok()?;
    bytes.try_into().ok()
}

/// MSC4205's hash of an entity (the full user ID, or a server name), as the index stores it.
pub fn sha256(entity: &str) -> [u8; 32] {
    Sha256::digest(entity.as_bytes()).into()
}

/// The server name of a user ID (after the first `:`), lower-cased.
pub fn server_of(user_id: &str) -> &str {
    user_id.split_once(':').map_or("", |(_, s)| s)
}

/// A list's rules, as its room's current state holds them: the latest event per (type, state
/// key). Applying a full state read or an incremental one gives the same list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    rules: std::collections::BTreeMap<(String, String), Rule>,
}

impl Rules {
    /// Applies one change; returns whether the list changed.
    pub fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Set(rule) => {
                let key = (rule.event_type.clone(), rule.state_key.clone());
                self.rules.insert(key, rule.clone()) != Some(rule)
            }
            Change::Remove {
                event_type,
                state_key,
            } => self.rules.remove(&(event_type, state_key)).is_some(),
            Change::Ignore => false,
        }
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.values()
    }
}

#[cfg(test)]
mod tests;

/// The first subscribed rule that names `user`, unless Knock's own list holds a local exception
/// for them: a moderator's unblock here overrides a subscribed rule for that one person (and
/// Knock's own entries still apply to them). A list whose copy cannot be read is passed over;
/// its loader replaces it.
pub fn subscribed_rule(
    lists: &[std::rc::Rc<index::PolicyIndex>],
    own: &crate::domain::blocklist::BlockIndex,
    user: &str,
) -> Option<index::Found> {
    if own.allowed(user).is_some() {
        return None;
    }
    lists.iter().find_map(|l| l.judge(user).ok().flatten())
}

/// A subscribed list's user rules as block-list entries, for a list the operator trusts with
/// Knock's fuzzy matching (`POLICY_FUZZY_ROOMS`): each literal user ID and each glob, its reason
/// naming the rule's source. Server rules and hashed entities stay exact (they are matched by
/// the list's own index); an entity that is no valid entry is left out.
pub fn fuzzy_entries(list: &str, rules: &Rules) -> Vec<crate::domain::blocklist::Entry> {
    use crate::domain::blocklist::{Entry, EntryKind, MAX_REASON_BYTES};
    let mut out = Vec::new();
    for r in rules.iter().filter(|r| r.kind == Kind::User) {
        let Entity::Glob(entity) = &r.entity else {
            continue;
        };
        let found = index::Found {
            list: list.to_owned(),
            kind: r.kind,
            recommendation: r.recommendation,
            entity: entity.clone(),
            state_key: r.state_key.clone(),
            reason: r.reason.clone(),
            sender: r.sender.clone(),
        };
        let mut reason: String = found
            .explain()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        while reason.len() > MAX_REASON_BYTES {
            reason.pop();
        }
        let kind = if r.entity.is_literal() {
            EntryKind::UserId
        } else {
            EntryKind::Glob
        };
        if let Ok(e) = Entry::new(entity, kind, Some(reason), 0) {
            out.push(e);
        }
    }
    out
}

/// Knock's own verdict and those of the subscribed lists trusted with fuzzy matching (graded as
/// Knock's own list), the strongest outcome; on a tie, Knock's own, then the first list. A local
/// exception passes the subscribed lists over.
pub fn graded(
    own: &crate::domain::blocklist::BlockIndex,
    fuzzy: &[std::rc::Rc<crate::domain::blocklist::BlockIndex>],
    user: &crate::domain::mxid::UserId,
    display_name: Option<&str>,
) -> Option<(crate::domain::blocklist::Outcome, String)> {
    use crate::domain::blocklist::Outcome;
    let mut best = own
        .judge(user, display_name)
        .map(|v| (v.outcome(), v.explain()));
    if best.as_ref().is_some_and(|(o, _)| *o == Outcome::Block)
        || fuzzy.is_empty()
        || own.allowed(user.as_str()).is_some()
    {
        return best;
    }
    for list in fuzzy {
        if let Some(v) = list.judge(user, display_name) {
            if best.as_ref().is_none_or(|(o, _)| v.outcome() > *o) {
                best = Some((v.outcome(), v.explain()));
            }
            if v.outcome() == Outcome::Block {
                break;
            }
        }
    }
    best
}
