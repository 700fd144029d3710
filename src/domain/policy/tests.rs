use serde_json::{json, Value};

use super::index::{compile, IndexError, PolicyIndex, Source, FORMAT_VERSION};
use super::*;

fn ev(v: Value) -> StateEvent {
    serde_json::from_value(v).expect("a state event")
}

fn rule(t: &str, key: &str, content: Value) -> StateEvent {
    ev(json!({"type": t, "state_key": key, "sender": "@mod:lists.example", "content": content}))
}

fn set(e: &StateEvent) -> Rule {
    match read(e) {
        Change::Set(r) => r,
        other => panic!("not a rule: {other:?}"),
    }
}

#[test]
fn every_rule_type_and_its_legacy_names_are_read() {
    for (t, kind) in [
        ("m.policy.rule.user", Kind::User),
        ("m.room.rule.user", Kind::User),
        ("org.matrix.mjolnir.rule.user", Kind::User),
        ("m.policy.rule.server", Kind::Server),
        ("m.room.rule.server", Kind::Server),
        ("org.matrix.mjolnir.rule.server", Kind::Server),
        ("m.policy.rule.room", Kind::Room),
    ] {
        let r = set(&rule(
            t,
            "k",
            json!({"entity": "@Spam:X", "recommendation": "m.ban", "reason": "spam"}),
        ));
        assert_eq!(r.kind, kind, "{t}");
        assert_eq!(
            r.entity,
            Entity::Glob("@spam:x".into()),
            "entities are lower-cased"
        );
        assert_eq!(r.recommendation, Recommendation::Ban);
        assert_eq!(r.reason.as_deref(), Some("spam"));
        assert_eq!(
            (r.state_key.as_str(), r.sender.as_str()),
            ("k", "@mod:lists.example")
        );
    }
    assert_eq!(
        read(&rule("m.room.member", "@a:x", json!({}))),
        Change::Ignore
    );
    assert_eq!(
        read(&rule("m.policy.rule.alias", "k", json!({}))),
        Change::Ignore
    );
}

#[test]
fn ban_and_takedown_count_and_other_recommendations_remove_the_rule() {
    for (rec, want) in [
        ("m.ban", Recommendation::Ban),
        ("org.matrix.mjolnir.ban", Recommendation::Ban),
        ("m.takedown", Recommendation::Takedown),
        ("org.matrix.msc4204.takedown", Recommendation::Takedown),
    ] {
        let r = set(&rule(
            "m.policy.rule.user",
            "k",
            json!({"entity": "@a:x", "recommendation": rec}),
        ));
        assert_eq!(r.recommendation, want);
        assert_eq!(r.reason, None, "a takedown may come without a reason");
    }
    let muted = rule(
        "m.policy.rule.user",
        "k",
        json!({"entity": "@a:x", "recommendation": "org.example.mute"}),
    );
    assert!(matches!(read(&muted), Change::Remove { .. }));
}

#[test]
fn empty_content_and_redactions_remove_a_rule() {
    let mut rules = Rules::default();
    let ban = rule(
        "m.policy.rule.user",
        "rule1",
        json!({"entity": "@a:x", "recommendation": "m.ban"}),
    );
    assert!(rules.apply(read(&ban)));
    assert!(
        !rules.apply(read(&ban)),
        "the same event again changes nothing"
    );
    assert_eq!(rules.len(), 1);
    assert!(rules.apply(read(&rule("m.policy.rule.user", "rule1", json!({})))));
    assert!(rules.is_empty());
    rules.apply(read(&ban));
    let redacted = ev(json!({"type": "m.policy.rule.user", "state_key": "rule1",
        "sender": "@mod:x", "content": {}, "unsigned": {"redacted_because": {"type": "m.room.redaction"}}}));
    assert!(rules.apply(read(&redacted)));
    assert!(rules.is_empty());
    // Another state key or type is another rule.
    rules.apply(read(&ban));
    rules.apply(read(&rule(
        "m.policy.rule.server",
        "rule1",
        json!({"entity": "evil.example", "recommendation": "m.ban"}),
    )));
    assert_eq!(rules.len(), 2);
}

#[test]
fn a_hashed_entity_is_read_as_the_msc_shows_it() {
    let r = set(&rule(
        "m.policy.rule.user",
        "h",
        json!({"recommendation": "m.ban",
               "hashes": {"sha256": "VPqwbUV7mMMkOVto3kPwsNXXiALMs7VCKWh3OeqqjGs="}}),
    ));
    assert_eq!(r.entity, Entity::Sha256(sha256("@yarrgh:example.com")));
    // Unpadded base64 too; a hash of the wrong length is no entity.
    let unpadded = set(&rule(
        "m.policy.rule.user",
        "h",
        json!({"recommendation": "m.ban",
               "hashes": {"sha256": "VPqwbUV7mMMkOVto3kPwsNXXiALMs7VCKWh3OeqqjGs"}}),
    ));
    assert_eq!(unpadded.entity, r.entity);
    let short = rule(
        "m.policy.rule.user",
        "h",
        json!({"recommendation": "m.ban", "hashes": {"sha256": "AAAA"}}),
    );
    assert!(matches!(read(&short), Change::Remove { .. }));
}

fn index_of(events: &[StateEvent]) -> PolicyIndex {
    let mut rules = Rules::default();
    for e in events {
        rules.apply(read(e));
    }
    let blob = compile(&[Source {
        list: "#community-bans:lists.example",
        rules: &rules,
    }]);
    PolicyIndex::open(blob).expect("a fresh blob opens")
}

fn user_rule(key: &str, entity: &str) -> StateEvent {
    rule(
        "m.policy.rule.user",
        key,
        json!({"entity": entity, "recommendation": "m.ban", "reason": "spam"}),
    )
}

#[test]
fn globs_match_the_whole_user_id_as_the_spec_defines_them() {
    let idx = index_of(&[
        user_rule("g1", "@spam*:*"),
        user_rule("g2", "@bot??:example.org"),
        user_rule("g3", "*:evil.example"),
    ]);
    let hit = |u: &str| idx.judge(u).expect("intact").map(|f| f.state_key);
    assert_eq!(
        hit("@spam:x.org").as_deref(),
        Some("g1"),
        "* matches an empty run"
    );
    assert_eq!(hit("@spammer42:x.org").as_deref(), Some("g1"));
    assert_eq!(hit("@notspam:x.org"), None, "the glob covers the whole ID");
    assert_eq!(hit("@bot12:example.org").as_deref(), Some("g2"));
    assert_eq!(hit("@bot1:example.org"), None, "? is exactly one character");
    assert_eq!(hit("@bot123:example.org"), None);
    assert_eq!(hit("@anyone:evil.example").as_deref(), Some("g3"));
    assert_eq!(hit("@anyone:notevil.example"), None);
    assert_eq!(
        hit("@SPAMMER:X.ORG").as_deref(),
        Some("g1"),
        "case does not matter"
    );
}

#[test]
fn a_server_rule_applies_to_every_user_of_a_matching_server() {
    let idx = index_of(&[
        rule(
            "m.policy.rule.server",
            "s1",
            json!({"entity": "evil.example", "recommendation": "m.ban", "reason": "raids"}),
        ),
        rule(
            "m.policy.rule.server",
            "s2",
            json!({"entity": "*.spam.example", "recommendation": "m.ban"}),
        ),
    ]);
    let f = idx
        .judge("@anyone:evil.example")
        .unwrap()
        .expect("server rule");
    assert_eq!((f.kind, f.state_key.as_str()), (Kind::Server, "s1"));
    assert_eq!(
        idx.judge("@x:a.spam.example")
            .unwrap()
            .map(|f| f.state_key)
            .as_deref(),
        Some("s2")
    );
    assert!(idx.judge("@x:spam.example").unwrap().is_none());
    assert!(idx.judge("@evil.example:good.example").unwrap().is_none());
}

#[test]
fn hashed_rules_match_the_person_they_hash_and_name_their_source() {
    let idx = index_of(&[
        rule(
            "m.policy.rule.user",
            "hashed1",
            json!({"recommendation": "m.takedown",
                   "hashes": {"sha256": "VPqwbUV7mMMkOVto3kPwsNXXiALMs7VCKWh3OeqqjGs="}}),
        ),
        user_rule("plain", "@troll:x.org"),
    ]);
    let f = idx
        .judge("@yarrgh:example.com")
        .unwrap()
        .expect("hashed rule");
    assert_eq!(f.recommendation, Recommendation::Takedown);
    assert_eq!(f.list, "#community-bans:lists.example");
    assert_eq!(f.state_key, "hashed1");
    assert_eq!(f.sender, "@mod:lists.example");
    assert!(f
        .explain()
        .starts_with("user rule (hashed) in policy list #community-bans:lists.example (takedown"));
    let t = idx.judge("@troll:x.org").unwrap().expect("plain rule");
    assert_eq!(
        t.explain(),
        "user rule @troll:x.org in policy list #community-bans:lists.example (ban, state key \
         plain, set by @mod:lists.example): spam"
    );
    assert!(idx.judge("@yarrgh2:example.com").unwrap().is_none());
}

#[test]
fn room_rules_never_match_a_person() {
    let idx = index_of(&[rule(
        "m.policy.rule.room",
        "r",
        json!({"entity": "*", "recommendation": "m.ban"}),
    )]);
    assert_eq!(idx.rules(), 0);
    assert!(idx.judge("@a:x").unwrap().is_none());
}

#[test]
fn the_binary_index_round_trips_many_rules_across_lists() {
    let mut a = Rules::default();
    let mut b = Rules::default();
    for i in 0..2_000 {
        a.apply(read(&user_rule(
            &format!("a{i}"),
            &format!("@user{i}:a.example"),
        )));
        b.apply(read(&user_rule(
            &format!("b{i}"),
            &format!("@user{i}:b.example"),
        )));
    }
    let blob = compile(&[
        Source {
            list: "#a:x",
            rules: &a,
        },
        Source {
            list: "#b:x",
            rules: &b,
        },
    ]);
    let idx = PolicyIndex::open(blob.clone()).expect("opens");
    assert_eq!(idx.rules(), 4_000);
    assert_eq!(idx.size(), blob.len());
    for i in (0..2_000).step_by(97) {
        let f = idx
            .judge(&format!("@user{i}:b.example"))
            .unwrap()
            .expect("found");
        assert_eq!((f.list.as_str(), f.state_key), ("#b:x", format!("b{i}")));
    }
    assert!(idx.judge("@user2000:a.example").unwrap().is_none());
    idx.check_all().expect("every page intact");
    // The same rules compile to the same bytes.
    assert_eq!(
        compile(&[
            Source {
                list: "#a:x",
                rules: &a
            },
            Source {
                list: "#b:x",
                rules: &b
            }
        ]),
        blob
    );
}

#[test]
fn a_damaged_cut_or_old_blob_is_refused() {
    let mut rules = Rules::default();
    rules.apply(read(&user_rule("k", "@a:x")));
    let blob = compile(&[Source {
        list: "#l:x",
        rules: &rules,
    }]);
    assert!(PolicyIndex::open(blob.clone()).is_ok());
    // Any flipped byte is found: by the open (header, page table, section table), or by the
    // first lookup that reads its page, or by a full check; never a wrong answer.
    for i in 8..blob.len() {
        let mut bad = blob.clone();
        bad[i] ^= 0x40;
        let refused = match PolicyIndex::open(bad) {
            Err(_) => true,
            Ok(idx) => idx.judge("@a:x").is_err() || idx.check_all().is_err(),
        };
        assert!(refused, "a flip of byte {i} went unnoticed");
    }
    let cut = blob[..blob.len() - 3].to_vec();
    assert_eq!(PolicyIndex::open(cut).err(), Some(IndexError::Truncated));
    let mut old = blob.clone();
    old[4..6].copy_from_slice(&(FORMAT_VERSION - 1).to_le_bytes());
    assert_eq!(
        PolicyIndex::open(old).err(),
        Some(IndexError::OldFormat(FORMAT_VERSION - 1))
    );
    assert_eq!(
        PolicyIndex::open(b"{\"entries\":[]}".to_vec()).err(),
        Some(IndexError::NotAnIndex)
    );
    assert_eq!(
        PolicyIndex::open(Vec::new()).err(),
        Some(IndexError::NotAnIndex)
    );
}

#[test]
fn a_local_exception_overrides_a_subscribed_rule_for_that_one_person() {
    use crate::domain::blocklist::{BlockList, Outcome};
    use crate::domain::mxid::UserId;
    let lists = vec![std::rc::Rc::new(index_of(&[
        user_rule("u", "@bob:example.org"),
        user_rule("g", "@spam*:*"),
        rule(
            "m.policy.rule.server",
            "s",
            json!({"entity": "evil.example", "recommendation": "m.ban"}),
        ),
    ]))];
    let mut own = BlockList::new();
    own.import_text("@carol:example.org\n", 1);
    let bob = UserId::parse("@bob:example.org").unwrap();
    // Without an exception the subscribed rule names bob, with its source.
    let found = super::subscribed_rule(&lists, &own.index(), bob.as_str()).expect("bob matches");
    assert_eq!(found.state_key, "u");
    // A moderator's unblock here is an exception for bob only: the glob and the server rule still
    // catch everyone else, and Knock's own entries still apply to the person excepted.
    assert!(own.allow(&bob, Some("known to us".into()), 2));
    assert!(
        !own.allow(&bob, Some("known to us".into()), 3),
        "the same exception twice changes nothing"
    );
    let index = own.index();
    assert!(super::subscribed_rule(&lists, &index, "@BOB:example.org").is_none());
    assert!(super::subscribed_rule(&lists, &index, "@spammer:example.org").is_some());
    assert!(super::subscribed_rule(&lists, &index, "@bob:evil.example").is_some());
    let carol = UserId::parse("@carol:example.org").unwrap();
    own.allow(&carol, None, 4);
    assert_eq!(
        own.index().check_user(&carol).map(|v| v.outcome()),
        Some(Outcome::Block),
        "an exception never lifts Knock's own entry"
    );
    // Blocking bob here again drops the exception; it round-trips through both formats.
    assert!(own
        .export_text()
        .contains("allow: @bob:example.org  # known to us"));
    let mut copy = BlockList::new();
    let report = copy.import_text(&own.export_text(), 5);
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(copy.allowed.len(), 2);
    assert_eq!(
        BlockList::from_json(&own.to_json().unwrap())
            .unwrap()
            .allowed,
        own.allowed
    );
    own.import_text("@bob:example.org\n", 6);
    assert!(own.allowed.iter().all(|a| a.user_id != "@bob:example.org"));
    assert!(own.disallow("@carol:example.org"));
    assert!(!own.disallow("@carol:example.org"));
}

#[test]
fn a_list_trusted_with_fuzzy_matching_is_graded_as_knocks_own_and_names_its_source() {
    use crate::domain::blocklist::{BlockIndex, BlockList, Outcome, Policy};
    use crate::domain::mxid::UserId;
    let mut rules = Rules::default();
    for e in [
        user_rule("rule1", "@fuzzyvillain:localhost"),
        user_rule("g", "@spam*:*"),
        rule(
            "m.policy.rule.server",
            "s",
            json!({"entity": "evil.example", "recommendation": "m.ban"}),
        ),
    ] {
        rules.apply(read(&e));
    }
    let entries = super::fuzzy_entries("#trusted:lists.example", &rules);
    // User rules only: the literal ID and the glob; server rules stay exact.
    assert_eq!(entries.len(), 2, "{entries:?}");
    let fuzzy = vec![std::rc::Rc::new(BlockIndex::build_with(
        entries,
        Policy::default(),
    ))];
    let own = BlockList::new().index();
    let variant = UserId::parse("@fuzzyv1llain:localhost").unwrap();
    let (outcome, why) =
        super::graded(&own, &fuzzy, &variant, None).expect("the variant is caught");
    assert_eq!(outcome, Outcome::Block, "{why}");
    assert!(
        why.contains("matches blocked @fuzzyvillain:localhost")
            && why.contains("in policy list #trusted:lists.example")
            && why.contains("state key rule1"),
        "{why}"
    );
    assert!(
        super::graded(&own, &[], &variant, None).is_none(),
        "untrusted: exact only"
    );
    // A local exception passes the trusted list over too.
    let mut list = BlockList::new();
    list.allow(&variant, None, 1);
    assert!(super::graded(&list.index(), &fuzzy, &variant, None).is_none());
}
