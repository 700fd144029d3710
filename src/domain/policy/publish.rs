//! Knock's own block-list, published as a policy list (`POLICY_PUBLISH_ROOM`), so that
//! communities on Draupnir, Mjolnir or Meowlnir can subscribe to it.
//!
//! Decides: the `m.policy.rule.user` state event each entry stands for (an exact ID as its
//! entity, whatever its reach: fuzzy matching is Knock's own and other bots read exact IDs and
//! globs; a glob as the glob; display names are not publishable), its state key (`rule:<entity>`,
//! as Draupnir names its own), and which state events a run must send to bring the room from
//! what was published to what the list holds now (removals as empty content), at most so many a
//! run. Never does: IO.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::domain::blocklist::{Entry, EntryKind};

/// The event type Knock publishes.
pub const RULE_TYPE: &str = "m.policy.rule.user";

/// The state key of the rule for `entity`.
pub fn state_key(entity: &str) -> String {
    format!("rule:{entity}")
}

/// The rules the list stands for: state key → content.
pub fn wanted(entries: &[Entry]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for e in entries {
        if e.kind == EntryKind::DisplayName {
            continue;
        }
        let mut content = json!({ "entity": e.pattern, "recommendation": "m.ban" });
        if let Some(r) = e.reason.as_deref().filter(|r| !r.trim().is_empty()) {
            content["reason"] = r.into();
        }
        out.insert(state_key(&e.pattern), content);
    }
    out
}

/// The state events to send, oldest difference first, at most `max`: a new or changed rule's
/// content, or `{}` for a rule that is no longer on the list. `published` is what the room was
/// last sent (state key → content).
pub fn plan(
    wanted: &BTreeMap<String, Value>,
    published: &BTreeMap<String, Value>,
    max: usize,
) -> Vec<(String, Value)> {
    let removals = published
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .map(|k| (k.clone(), json!({})));
    let changes = wanted
        .iter()
        .filter(|(k, v)| published.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()));
    removals.chain(changes).take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(p: &str, reason: Option<&str>) -> Entry {
        Entry::parse(p, reason.map(str::to_owned), 0).expect("entry")
    }

    #[test]
    fn ids_and_globs_are_published_and_display_names_are_not() {
        let entries = vec![
            entry("@troll:x.org", Some("spam")),
            entry("@spam*:*", None),
            Entry::display_name("Free Crypto", None, 0).expect("name"),
        ];
        let w = wanted(&entries);
        assert_eq!(w.len(), 2);
        assert_eq!(
            w["rule:@troll:x.org"],
            json!({"entity": "@troll:x.org", "recommendation": "m.ban", "reason": "spam"})
        );
        assert_eq!(
            w["rule:@spam*:*"],
            json!({"entity": "@spam*:*", "recommendation": "m.ban"})
        );
    }

    #[test]
    fn a_run_sends_only_what_changed_and_removes_what_left_the_list() {
        let before = wanted(&[entry("@a:x", None), entry("@b:x", None)]);
        let now = wanted(&[entry("@b:x", Some("raids")), entry("@c:x", None)]);
        let steps = plan(&now, &before, 10);
        assert_eq!(
            steps,
            vec![
                ("rule:@a:x".to_owned(), json!({})),
                (
                    "rule:@b:x".to_owned(),
                    json!({"entity": "@b:x", "recommendation": "m.ban", "reason": "raids"})
                ),
                (
                    "rule:@c:x".to_owned(),
                    json!({"entity": "@c:x", "recommendation": "m.ban"})
                ),
            ]
        );
        assert_eq!(plan(&now, &now, 10), vec![]);
        assert_eq!(plan(&now, &BTreeMap::new(), 1).len(), 1, "bounded per run");
    }
}
