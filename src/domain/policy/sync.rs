//! Following a policy room: the `/sync` request's filter and the reading of its answer, typed,
//! so that a large room's state never sits in memory as a generic JSON tree.
//!
//! Decides: which event types a policy room's sync asks for (every rule type Knock reads, as
//! state and as timeline), and the order its events apply in: the `state` section first (the
//! full state at the start of the timeline, or the delta before a gap), then the timeline's
//! state events as they happened. A first sync (no token) returns the room's whole current
//! state this way; later ones only what changed. Never does: IO.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Value};

use super::StateEvent;

/// Every policy rule type Knock reads.
pub const RULE_TYPES: [&str; 9] = [
    "m.policy.rule.user",
    "m.policy.rule.server",
    "m.policy.rule.room",
    "m.room.rule.user",
    "m.room.rule.server",
    "m.room.rule.room",
    "org.matrix.mjolnir.rule.user",
    "org.matrix.mjolnir.rule.server",
    "org.matrix.mjolnir.rule.room",
];

/// The sync filter for one policy room: its rule events only, nothing else.
pub fn filter(room_id: &str) -> Value {
    json!({
        "room": {
            "rooms": [room_id],
            "state": { "types": RULE_TYPES, "lazy_load_members": true },
            "timeline": { "types": RULE_TYPES, "limit": 1000 },
            "ephemeral": { "not_types": ["*"] },
            "account_data": { "not_types": ["*"] }
        },
        "presence": { "not_types": ["*"] },
        "account_data": { "not_types": ["*"] }
    })
}

#[derive(Deserialize, Default)]
struct Body {
    next_batch: Option<String>,
    #[serde(default)]
    rooms: Rooms,
}

#[derive(Deserialize, Default)]
struct Rooms {
    #[serde(default)]
    join: HashMap<String, Joined>,
}

#[derive(Deserialize, Default)]
struct Joined {
    #[serde(default)]
    state: Events,
    #[serde(default)]
    timeline: Events,
}

#[derive(Deserialize, Default)]
struct Events {
    #[serde(default)]
    events: Vec<StateEvent>,
}

/// What one sync says about a policy room: the next token and its rule events, in the order
/// they apply.
#[derive(Debug)]
pub struct Batch {
    pub next_batch: Option<String>,
    pub events: Vec<StateEvent>,
}

/// Reads a sync answer's events for `room_id` (timeline events that are not state are left out).
pub fn read_sync(body: &str, room_id: &str) -> Result<Batch, String> {
    let mut body: Body = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let mut events = Vec::new();
    if let Some(joined) = body.rooms.join.remove(room_id) {
        events.extend(joined.state.events);
        events.extend(
            joined
                .timeline
                .events
                .into_iter()
                .filter(|e| e.state_key.is_some()),
        );
    }
    Ok(Batch {
        next_batch: body.next_batch,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{read, Rules};
    use super::*;

    #[test]
    fn state_applies_before_the_timeline_and_the_latest_event_wins() {
        let body = json!({"next_batch": "s9", "rooms": {"join": {"!list:x": {
            "state": {"events": [
                {"type": "m.policy.rule.user", "state_key": "a", "sender": "@m:x",
                 "content": {"entity": "@a:x", "recommendation": "m.ban"}},
                {"type": "m.policy.rule.user", "state_key": "b", "sender": "@m:x",
                 "content": {"entity": "@b:x", "recommendation": "m.ban"}}
            ]},
            "timeline": {"events": [
                {"type": "m.policy.rule.user", "state_key": "a", "sender": "@m:x", "content": {}},
                {"type": "m.room.message", "sender": "@m:x", "content": {"body": "hi"}},
                {"type": "m.policy.rule.server", "state_key": "s", "sender": "@m:x",
                 "content": {"entity": "evil.example", "recommendation": "m.ban"}}
            ], "limited": true}
        }, "!other:x": {"state": {"events": [
                {"type": "m.policy.rule.user", "state_key": "z", "sender": "@m:x",
                 "content": {"entity": "@z:x", "recommendation": "m.ban"}}]}}}}});
        let batch = read_sync(&body.to_string(), "!list:x").expect("a sync");
        assert_eq!(batch.next_batch.as_deref(), Some("s9"));
        assert_eq!(batch.events.len(), 4, "the message is no state event");
        let mut rules = Rules::default();
        for e in &batch.events {
            rules.apply(read(e));
        }
        let mut keys: Vec<&str> = rules.iter().map(|r| r.state_key.as_str()).collect();
        keys.sort();
        assert_eq!(
            keys,
            vec!["b", "s"],
            "a was removed in the timeline; z is another room's"
        );
    }

    #[test]
    fn the_filter_asks_for_every_rule_type_of_that_room_only() {
        let f = filter("!list:x");
        assert_eq!(f["room"]["rooms"], json!(["!list:x"]));
        assert_eq!(
            f["room"]["state"]["types"].as_array().map(Vec::len),
            Some(9)
        );
        assert_eq!(f["room"]["timeline"]["types"], f["room"]["state"]["types"]);
    }

    #[test]
    fn an_answer_without_the_room_has_no_events() {
        let batch = read_sync(r#"{"next_batch": "s1"}"#, "!list:x").expect("a sync");
        assert!(batch.events.is_empty());
        assert!(read_sync("not json", "!list:x").is_err());
    }
}
