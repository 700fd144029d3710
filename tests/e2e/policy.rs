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

/// The state of one rule event in `room`, set by `owner`.
fn set_rule(owner: &crate::support::User, room: &str, event_type: &str, key: &str, content: Value) {
    let s = synapse();
    let r = s.client(
        "PUT",
        &format!(
            "/_matrix/client/v3/rooms/{}/state/{event_type}/{}",
            enc(room),
            enc(key)
        ),
        &owner.token,
        Some(content),
    );
    assert_eq!(r.status, 200, "rule {key}: {}", r.body);
}

#[test]
fn a_subscribed_policy_list_refuses_knocks_its_rules_match_and_names_the_source() {
    use base64::Engine;
    use sha2::Digest;
    let s = synapse();
    // Another community's list: a user rule, a glob, a server rule and a hashed rule.
    let owner = s.new_user("listowner");
    let alias_name = format!("knockbans{}", crate::support::now_ms());
    let r = s.client(
        "POST",
        "/_matrix/client/v3/createRoom",
        &owner.token,
        Some(json!({"preset": "public_chat", "name": "Community bans",
                    "room_alias_name": alias_name})),
    );
    assert_eq!(r.status, 200, "createRoom: {}", r.body);
    let list = r.json()["room_id"].as_str().expect("room id").to_owned();
    let alias = format!("#{alias_name}:localhost");
    let banned = s.new_user("polbanned");
    let hashed = s.new_user("polhashed");
    let honest = s.new_user("polhonest");
    set_rule(
        &owner,
        &list,
        "m.policy.rule.user",
        "rule1",
        json!({"entity": banned.user_id, "recommendation": "m.ban", "reason": "spam"}),
    );
    set_rule(
        &owner,
        &list,
        "m.policy.rule.user",
        "glob1",
        json!({"entity": "@polspam*:*", "recommendation": "m.ban", "reason": "spam wave"}),
    );
    set_rule(
        &owner,
        &list,
        "org.matrix.mjolnir.rule.server",
        "srv1",
        json!({"entity": "evil.example", "recommendation": "org.matrix.mjolnir.ban"}),
    );
    let hash = base64::engine::general_purpose::STANDARD
        .encode(sha2::Sha256::digest(hashed.user_id.as_bytes()));
    set_rule(
        &owner,
        &list,
        "m.policy.rule.user",
        "hash1",
        json!({"recommendation": "m.takedown", "hashes": {"sha256": hash}}),
    );

    let room = s.create_knock_room(&s.bot);
    let mut vars = Worker::base_vars(s);
    vars.retain(|(k, _)| k != "NEW_ROOM_ID");
    vars.push(("NEW_ROOM_ID".into(), room.clone()));
    vars.push(("API_KEY".into(), API_KEY.into()));
    vars.push(("POLICY_ROOMS".into(), alias.clone()));
    let w = Worker::start(&vars);
    let cron = || {
        let r = w.get("/cdn-cgi/handler/scheduled?cron=*%2F5+*+*+*+*", &[]);
        assert_eq!(r.status, 200, "cron: {}", r.body);
    };
    cron();
    wait_until("the list published", Duration::from_secs(30), || {
        w.log().contains("policy_list_published").then_some(())
    });
    let knock = |user_id: &str| {
        let r = w.post(
            "/invite_from_form",
            &[("Content-Type", "application/json")],
            json!({"matrix_id": user_id}).to_string().as_bytes(),
        );
        assert_eq!(r.status, 202, "{}", r.body);
    };
    let verdict = |user_id: &str| -> Value {
        let ks = w.admin(API_KEY, "/knocks", None).json();
        ks["knocks"]
            .as_array()
            .and_then(|ks| ks.iter().find(|k| k["user_id"] == user_id).cloned())
            .unwrap_or(Value::Null)
    };
    let checked_at = std::time::Instant::now();
    for u in [
        banned.user_id.as_str(),
        "@polspammer9:localhost",
        "@anyone:evil.example",
        hashed.user_id.as_str(),
        honest.user_id.as_str(),
    ] {
        knock(u);
    }
    let reason = |u: &str| verdict(u)["reason"].as_str().unwrap_or_default().to_owned();
    assert_eq!(verdict(&banned.user_id)["verdict"], "blocked");
    assert_eq!(
        reason(&banned.user_id),
        format!(
            "matches user rule {} in policy list {alias} (ban, state key rule1, set by {}): spam",
            banned.user_id, owner.user_id
        )
    );
    assert!(reason("@polspammer9:localhost").contains("user rule @polspam*:* in policy list"));
    assert!(reason("@anyone:evil.example").contains("server rule evil.example"));
    assert!(
        reason(&hashed.user_id).contains("user rule (hashed)")
            && reason(&hashed.user_id).contains("takedown, state key hash1"),
        "{}",
        reason(&hashed.user_id)
    );
    s.wait_for_membership(&room, &honest.user_id, "invite");
    for u in [&banned, &hashed] {
        assert_eq!(
            s.membership(&room, &u.user_id),
            None,
            "{} never invited",
            u.user_id
        );
    }
    // A moderator's unblock here overrides the subscribed rule for that one person (a local
    // exception): the reply names the rule it overrides, and their next knock is invited.
    let r = w.admin(
        API_KEY,
        "/unblock_user",
        Some(json!({ "user_id": hashed.user_id })),
    );
    assert_eq!(r.status, 200, "unblock_user: {}", r.body);
    assert_eq!(r.json()["status"], "unblocked", "{}", r.body);
    assert!(
        r.json()["allowed_over"]
            .as_str()
            .is_some_and(|o| o.contains("state key hash1")),
        "{}",
        r.body
    );
    let exported = w.admin(API_KEY, "/blocklist?format=txt", None);
    assert!(
        exported
            .body
            .contains(&format!("allow: {}", hashed.user_id.to_lowercase())),
        "{}",
        exported.body
    );
    knock(&hashed.user_id);
    s.wait_for_membership(&room, &hashed.user_id, "invite");
    // Everyone else the list names is still refused.
    knock("@polspammer10:localhost");
    assert_eq!(verdict("@polspammer10:localhost")["verdict"], "blocked");
    // The list drops its rule: at the next run the person may knock and is invited.
    set_rule(&owner, &list, "m.policy.rule.user", "rule1", json!({}));
    cron();
    wait_until(
        "the rule's removal published",
        Duration::from_secs(30),
        || (w.log().matches("policy_list_published").count() >= 2).then_some(()),
    );
    // The hot path reads a list's version at most every 30 s.
    std::thread::sleep(Duration::from_secs(31).saturating_sub(checked_at.elapsed()));
    knock(&banned.user_id);
    s.wait_for_membership(&room, &banned.user_id, "invite");
}

#[test]
fn a_member_a_new_rule_matches_is_removed_at_the_next_run_but_never_the_bot_or_a_moderator() {
    let s = synapse();
    let owner = s.new_user("listowner");
    let r = s.client(
        "POST",
        "/_matrix/client/v3/createRoom",
        &owner.token,
        Some(json!({"preset": "public_chat", "name": "Community bans"})),
    );
    assert_eq!(r.status, 200, "createRoom: {}", r.body);
    let list = r.json()["room_id"].as_str().expect("room id").to_owned();
    let room = s.create_knock_room(&s.bot);
    let member = s.new_user("polmember");
    let moderator = s.new_user("polmod");
    for u in [&member, &moderator] {
        let r = s.client(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            &s.bot.token,
            Some(json!({"user_id": u.user_id})),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        s.join(u, &room);
    }
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
        enc(&room)
    );
    let mut levels = s.client("GET", &path, &s.bot.token, None).json();
    levels["users"][moderator.user_id.as_str()] = json!(50);
    let r = s.client("PUT", &path, &s.bot.token, Some(levels));
    assert_eq!(r.status, 200, "{}", r.body);

    let mut vars = Worker::base_vars(s);
    vars.retain(|(k, _)| k != "NEW_ROOM_ID");
    for (k, v) in [
        ("NEW_ROOM_ID", room.as_str()),
        ("API_KEY", API_KEY),
        ("POLICY_ROOMS", list.as_str()),
        ("BLOCKLIST_SCAN_INTERVAL", "1ms"),
        ("INVITE_CHECK_INTERVAL", "1ms"),
    ] {
        vars.push((k.into(), v.into()));
    }
    let w = Worker::start(&vars);
    let cron = || {
        let r = w.get("/cdn-cgi/handler/scheduled?cron=*%2F5+*+*+*+*", &[]);
        assert_eq!(r.status, 200, "cron: {}", r.body);
    };
    // A first run with an empty list: everyone stays.
    cron();
    assert_eq!(
        s.membership(&room, &member.user_id).as_deref(),
        Some("join")
    );
    // The list now names the member, the moderator and the bot itself.
    for (key, who) in [
        ("m1", member.user_id.as_str()),
        ("m2", moderator.user_id.as_str()),
        ("m3", s.bot.user_id.as_str()),
    ] {
        set_rule(
            &owner,
            &list,
            "m.policy.rule.user",
            key,
            json!({"entity": who, "recommendation": "m.ban", "reason": "raids"}),
        );
    }
    wait_until("the member's removal", Duration::from_secs(60), || {
        cron();
        (s.membership(&room, &member.user_id).as_deref() == Some("leave")).then_some(())
    });
    let kick = s
        .member_events(&room)
        .into_iter()
        .rev()
        .find(|e| e["state_key"] == member.user_id.as_str())
        .expect("the kick");
    let reason = kick["content"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("in policy list {list}")) && reason.contains("state key m1"),
        "the kick names its source: {reason}"
    );
    assert_eq!(
        s.membership(&room, &moderator.user_id).as_deref(),
        Some("join"),
        "a moderator is never removed"
    );
    assert_eq!(
        s.membership(&room, &s.bot.user_id).as_deref(),
        Some("join"),
        "nor the bot"
    );
}

#[test]
fn a_list_trusted_with_fuzzy_matching_catches_variants_and_an_untrusted_one_matches_exactly() {
    let s = synapse();
    let owner = s.new_user("fuzzyowner");
    let stamp = crate::support::now_ms();
    let mut aliases = Vec::new();
    for (name, villain) in [("trusted", "fuzzyvillain"), ("exact", "exactvillain")] {
        let alias_name = format!("knock{name}{stamp}");
        let r = s.client(
            "POST",
            "/_matrix/client/v3/createRoom",
            &owner.token,
            Some(
                json!({"preset": "public_chat", "name": format!("{name} bans"),
                        "room_alias_name": alias_name}),
            ),
        );
        assert_eq!(r.status, 200, "createRoom: {}", r.body);
        let room = r.json()["room_id"].as_str().expect("room id").to_owned();
        set_rule(
            &owner,
            &room,
            "m.policy.rule.user",
            "rule1",
            json!({"entity": format!("@{villain}:localhost"), "recommendation": "m.ban",
                   "reason": "ban evasion"}),
        );
        aliases.push(format!("#{alias_name}:localhost"));
    }
    let room = s.create_knock_room(&s.bot);
    let mut vars = Worker::base_vars(s);
    vars.retain(|(k, _)| k != "NEW_ROOM_ID");
    vars.push(("NEW_ROOM_ID".into(), room.clone()));
    vars.push(("API_KEY".into(), API_KEY.into()));
    // The trusted list is subscribed through POLICY_FUZZY_ROOMS alone.
    vars.push(("POLICY_ROOMS".into(), aliases[1].clone()));
    vars.push(("POLICY_FUZZY_ROOMS".into(), aliases[0].clone()));
    let w = Worker::start(&vars);
    let r = w.get("/cdn-cgi/handler/scheduled?cron=*%2F5+*+*+*+*", &[]);
    assert_eq!(r.status, 200, "cron: {}", r.body);
    wait_until("both lists published", Duration::from_secs(30), || {
        (w.log().matches("policy_list_published").count() >= 2).then_some(())
    });
    for user_id in ["@fuzzyv1llain:localhost", "@exactv1llain:localhost"] {
        let r = w.post(
            "/invite_from_form",
            &[("Content-Type", "application/json")],
            json!({ "matrix_id": user_id }).to_string().as_bytes(),
        );
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let knocks = w.admin(API_KEY, "/knocks", None).json();
    let of = |u: &str| -> Value {
        knocks["knocks"]
            .as_array()
            .and_then(|ks| ks.iter().find(|k| k["user_id"] == u).cloned())
            .unwrap_or(Value::Null)
    };
    // Knock's family rule (leet folded) caught the trusted list's rule, naming its source.
    let trusted = of("@fuzzyv1llain:localhost");
    assert_eq!(trusted["verdict"], "blocked", "{trusted}");
    let reason = trusted["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("matches blocked @fuzzyvillain:localhost")
            && reason.contains(&format!("in policy list {}", aliases[0]))
            && reason.contains("state key rule1"),
        "{reason}"
    );
    // The untrusted list's rules match exactly, as the spec says: the variant is not refused.
    let exact = of("@exactv1llain:localhost");
    assert_ne!(exact["verdict"], "blocked", "{exact}");
    assert!(!exact.is_null(), "the knock was stored: {knocks}");
}
