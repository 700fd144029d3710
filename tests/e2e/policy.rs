//! Shared ban lists against the real worker and Synapse: with `POLICY_PUBLISH_ROOM`, Knock's
//! own block-list appears in that room as `m.policy.rule.user` state events, which another
//! user reads back as any moderation bot would, and an unblock removes the rule.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{enc, synapse, wait_until, Worker};

const API_KEY: &str = "policy-e2e-key";

#[test]
fn blocking_publishes_a_policy_rule_that_another_bot_reads_and_unblocking_removes_it() {
    let s = synapse();
    let r = s.client(
        "POST",
        "/_matrix/client/v3/createRoom",
        &s.bot.token,
        Some(json!({"preset": "public_chat", "name": "Knock's ban list"})),
    );
    assert_eq!(r.status, 200, "createRoom: {}", r.body);
    let list_room = r.json()["room_id"].as_str().expect("room id").to_owned();
    let reader = s.new_user("listreader");
    s.join(&reader, &list_room);
    let mut vars = Worker::base_vars(s);
    vars.push(("API_KEY".into(), API_KEY.into()));
    vars.push(("POLICY_PUBLISH_ROOM".into(), list_room.clone()));
    let w = Worker::start(&vars);

    let rules = || -> Vec<Value> {
        let r = s.client(
            "GET",
            &format!("/_matrix/client/v3/rooms/{}/state", enc(&list_room)),
            &reader.token,
            None,
        );
        assert_eq!(r.status, 200, "state: {}", r.body);
        r.json()
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["type"] == "m.policy.rule.user")
            .collect()
    };
    for body in [
        json!({"user_id": "@pubtroll:evil.example", "reason": "raids", "reach": "fuzzy"}),
        json!({"user_id": "@spam*:*"}),
        json!({"user_id": "Free Crypto Giveaway", "display_name": true}),
    ] {
        let r = w.admin(API_KEY, "/block_user", Some(body));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let published = wait_until("the published rules", Duration::from_secs(30), || {
        let rs = rules();
        (rs.iter()
            .filter(|e| !e["content"]["entity"].is_null())
            .count()
            == 2)
            .then_some(rs)
    });
    let by_key = |k: &str| {
        published
            .iter()
            .find(|e| e["state_key"] == k)
            .map(|e| e["content"].clone())
    };
    // A fuzzy entry is published as its exact ID; a display name is not publishable.
    assert_eq!(
        by_key("rule:@pubtroll:evil.example"),
        Some(
            json!({"entity": "@pubtroll:evil.example", "recommendation": "m.ban",
                    "reason": "raids"})
        )
    );
    assert_eq!(
        by_key("rule:@spam*:*"),
        Some(json!({"entity": "@spam*:*", "recommendation": "m.ban"}))
    );
    assert!(published
        .iter()
        .all(|e| e["sender"] == s.bot.user_id.as_str()));
    let r = w.admin(
        API_KEY,
        "/unblock_user",
        Some(json!({"user_id": "@pubtroll:evil.example"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until("the rule's removal", Duration::from_secs(30), || {
        let rs = rules();
        rs.iter()
            .find(|e| e["state_key"] == "rule:@pubtroll:evil.example")
            .filter(|e| e["content"].as_object().is_some_and(|o| o.is_empty()))
            .map(|_| ())
    });
    // The glob's rule stays.
    assert!(rules()
        .iter()
        .any(|e| e["state_key"] == "rule:@spam*:*" && e["content"]["entity"] == "@spam*:*"));
}
