//! The fuzzy block-list and the moderation API, against the real worker and Synapse.

use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::support::{synapse, Reply, User, Worker};

const API_KEY: &str = "admin-e2e-key";

/// A worker of its own, so the entries blocked here touch no other test's users.
fn worker() -> &'static Worker {
    static W: OnceLock<Worker> = OnceLock::new();
    W.get_or_init(|| {
        let mut vars = Worker::base_vars(synapse());
        vars.push(("API_KEY".into(), API_KEY.into()));
        Worker::start(&vars)
    })
}

fn admin(w: &Worker, path: &str, body: Option<Value>) -> Reply {
    w.admin(API_KEY, path, body)
}

fn knock(w: &Worker, user_id: &str) -> Reply {
    let r = w.post(
        "/invite_from_form",
        &[("Content-Type", "application/json")],
        json!({ "matrix_id": user_id }).to_string().as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json(), json!({"status": "accepted"}));
    r
}

fn room() -> &'static str {
    &synapse().room_id
}

/// A fresh knock through `w` is invited; as the queue runs in order, earlier knocks are done.
fn settle(w: &Worker) {
    let s = synapse();
    let sentinel = s.new_user("settle");
    knock(w, &sentinel.user_id);
    s.wait_for_membership(room(), &sentinel.user_id, "invite");
}

/// Invites `user` straight from the bot, as if they got in some other way, and joins.
fn join_directly(user: &User) {
    let s = synapse();
    let r = s.client(
        "POST",
        &format!(
            "/_matrix/client/v3/rooms/{}/invite",
            crate::support::enc(room())
        ),
        &s.bot.token,
        Some(json!({"user_id": user.user_id})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    s.join(user, room());
    s.wait_for_membership(room(), &user.user_id, "join");
}

#[test]
fn variants_of_a_blocked_troll_are_accepted_but_never_invited() {
    let s = synapse();
    let w = worker();
    let r = admin(
        w,
        "/block_user",
        Some(json!({"user_id": "@trollking:localhost", "reason": "raids"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "blocked");
    let variants: Vec<User> = ["tr0llk1ng", "t.r.o.l.l.k.i.n.g", "trollking99"]
        .iter()
        .map(|n| s.register(n, false))
        .collect();
    let trolley = s.register("trolley", false);
    for v in &variants {
        knock(w, &v.user_id);
    }
    knock(w, &trolley.user_id);
    s.wait_for_membership(room(), &trolley.user_id, "invite");
    settle(w);
    for v in &variants {
        assert_eq!(
            s.membership(room(), &v.user_id),
            None,
            "{} must not be invited",
            v.user_id
        );
    }
}

#[test]
fn blocking_a_joined_member_kicks_them() {
    let s = synapse();
    let member = s.new_user("member");
    join_directly(&member);
    let r = admin(
        worker(),
        "/block_user",
        Some(json!({"user_id": member.user_id})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["membership_was"], "join", "{v}");
    assert_eq!(v["action"], "kicked", "{v}");
    assert_eq!(
        s.membership(room(), &member.user_id).as_deref(),
        Some("leave")
    );
    // Blocking again is reported as such and changes nothing.
    let again = admin(
        worker(),
        "/block_user",
        Some(json!({"user_id": member.user_id})),
    );
    assert_eq!(again.json()["status"], "already_blocked");
}

#[test]
fn blocking_an_invited_user_rescinds_the_invite() {
    let s = synapse();
    let w = worker();
    let invitee = s.new_user("invitee");
    knock(w, &invitee.user_id);
    s.wait_for_membership(room(), &invitee.user_id, "invite");
    let r = admin(w, "/block_user", Some(json!({"user_id": invitee.user_id})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["action"], "invite_rescinded", "{}", r.body);
    assert_eq!(
        s.membership(room(), &invitee.user_id).as_deref(),
        Some("leave")
    );
    // A new knock from them is now shadow-blocked.
    knock(w, &invitee.user_id);
    settle(w);
    assert_eq!(
        s.membership(room(), &invitee.user_id).as_deref(),
        Some("leave")
    );
}

#[test]
fn ban_mode_bans_and_unblocking_lifts_the_ban() {
    let s = synapse();
    let mut vars = Worker::base_vars(s);
    vars.push(("API_KEY".into(), API_KEY.into()));
    vars.push(("BLOCK_ACTION".into(), "ban".into()));
    let w = Worker::start(&vars);
    let member = s.new_user("banned");
    join_directly(&member);
    let r = admin(
        &w,
        "/block_user",
        Some(json!({"user_id": member.user_id, "reason": "spam"})),
    );
    assert_eq!(r.json()["action"], "banned", "{}", r.body);
    assert_eq!(
        s.membership(room(), &member.user_id).as_deref(),
        Some("ban")
    );
    let r = admin(
        &w,
        "/unblock_user",
        Some(json!({"user_id": member.user_id})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["status"], "unblocked", "{v}");
    assert_eq!(v["unbanned"], true, "{v}");
    assert_eq!(
        s.membership(room(), &member.user_id).as_deref(),
        Some("leave")
    );
}

#[test]
fn the_admin_api_needs_the_right_key_and_fails_closed_without_one() {
    let w = worker();
    for auth in ["Bearer wrong", "admin-e2e-key", ""] {
        let r = w.get("/blocklist", &[("Authorization", auth)]);
        assert_eq!(r.status, 401, "{auth:?}: {}", r.body);
    }
    let r = w.get("/blocklist", &[]);
    assert_eq!(r.status, 401);
    // A worker with no API_KEY set refuses every admin route.
    let open = Worker::start(&Worker::base_vars(synapse()));
    let r = open.post(
        "/block_user",
        &[
            ("Authorization", "Bearer anything"),
            ("Content-Type", "application/json"),
        ],
        br#"{"user_id":"@x:localhost"}"#,
    );
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "admin API disabled: set API_KEY");
}

#[test]
fn the_blocklist_imports_and_exports_as_json_and_text() {
    let w = worker();
    let auth = format!("Bearer {API_KEY}");
    let text = "# imported\n@importedzzq:example.org  # from the old bot\n*:evil.example\nnot an id at all\n";
    let r = w.post(
        "/blocklist",
        &[("Authorization", &auth), ("Content-Type", "text/plain")],
        text.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let report = r.json();
    assert_eq!(report["added"], 2, "{report}");
    assert_eq!(
        report["errors"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(report["errors"][0]["line"], 4, "{report}");

    let list = admin(w, "/blocklist", None).json();
    let patterns: Vec<&str> = list["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["pattern"].as_str())
        .collect();
    assert!(
        patterns.contains(&"@importedzzq:example.org"),
        "{patterns:?}"
    );
    assert!(patterns.contains(&"*:evil.example"), "{patterns:?}");
    let imported = list["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["pattern"] == "@importedzzq:example.org")
        .expect("imported entry");
    assert_eq!(imported["reason"], "from the old bot");
    assert!(imported["added_at"].as_u64().unwrap_or(0) > 1_600_000_000_000);

    let txt = w.get("/blocklist?format=txt", &[("Authorization", &auth)]);
    assert!(txt.headers["content-type"].starts_with("text/plain"));
    assert!(
        txt.body
            .lines()
            .any(|l| l.starts_with("@importedzzq:example.org")),
        "{}",
        txt.body
    );

    let json_import = json!(["@jsonimported:example.org", {"pattern": "@spam*:*", "kind": "glob"}]);
    let r = admin(w, "/blocklist", Some(json_import));
    assert_eq!(r.json()["added"], 2, "{}", r.body);

    let r = admin(
        w,
        "/unblock_user",
        Some(json!({"user_id": "@importedzzq:example.org"})),
    );
    assert_eq!(r.json()["status"], "unblocked", "{}", r.body);
    let txt = w.get("/blocklist?format=txt", &[("Authorization", &auth)]);
    assert!(
        !txt.body.contains("@importedzzq:example.org"),
        "{}",
        txt.body
    );
}

#[test]
fn a_glob_blocks_a_whole_server_shape() {
    let s = synapse();
    let w = worker();
    let r = admin(w, "/block_user", Some(json!({"user_id": "@spambot*:*"})));
    assert_eq!(r.status, 200, "{}", r.body);
    let bot = s.new_user("spambot");
    knock(w, &bot.user_id);
    settle(w);
    assert_eq!(s.membership(room(), &bot.user_id), None);
}

#[test]
fn an_impersonating_display_name_is_never_invited() {
    let s = synapse();
    let w = worker();
    let r = admin(
        w,
        "/block_user",
        Some(
            json!({"user_id": "Moderator Maxine", "display_name": true, "reason": "impersonation"}),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let impostor = s.new_user("impostor");
    // Cyrillic "М" and "а", and a doubled letter: the confusables skeleton reads through them.
    let r = s.client(
        "PUT",
        &format!(
            "/_matrix/client/v3/profile/{}/displayname",
            crate::support::enc(&impostor.user_id)
        ),
        &impostor.token,
        Some(json!({"displayname": "Мoderator Mаxxine"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let honest = s.new_user("maxfan");
    knock(w, &impostor.user_id);
    knock(w, &honest.user_id);
    s.wait_for_membership(room(), &honest.user_id, "invite");
    settle(w);
    assert_eq!(
        s.membership(room(), &impostor.user_id),
        None,
        "the impostor is never invited"
    );
}

/// The newest knock `user_id` has, as `GET /knocks` shows it.
fn latest_knock(w: &Worker, user_id: &str) -> Value {
    let r = admin(w, "/knocks?limit=1000", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["knocks"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["user_id"] == user_id).cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn a_namesake_of_a_blocked_person_is_held_and_a_moderators_approval_invites_them() {
    let s = synapse();
    let w = worker();
    let r = admin(
        w,
        "/block_user",
        Some(json!({"user_id": "@matthew41:localhost", "reason": "spam"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["preview"]["reach"], "fuzzy", "{}", r.body);
    // Only the counter differs, and matthew is a common name: a moderator decides.
    let namesake = s.register("matthew70", false);
    knock(w, &namesake.user_id);
    let held = admin(w, "/held_knocks", None).json();
    let entry = held["held"]
        .as_array()
        .and_then(|h| h.iter().find(|k| k["user_id"] == namesake.user_id.as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("{} is not held: {held}", namesake.user_id));
    let reason = entry["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("matches blocked @matthew41:localhost")
            && reason.contains("held for a moderator, not blocked"),
        "the held knock explains itself: {reason}"
    );
    // The preview answers what an entry would catch and changes nothing.
    let p = admin(
        w,
        "/blocklist/preview",
        Some(json!({"user_id": "@matthew70:localhost"})),
    );
    assert_eq!(p.status, 200, "{}", p.body);
    let caught = p.json()["preview"]["caught"].clone();
    assert!(
        caught.as_array().is_some_and(|c| c
            .iter()
            .any(|c| c["user_id"] == namesake.user_id.as_str()
                && c["seen"] == "knock"
                && c["outcome"] == "block")),
        "{caught}"
    );
    let list = admin(w, "/blocklist?format=text", None).body;
    assert!(
        !list.contains("matthew70"),
        "a preview stores nothing: {list}"
    );
    assert_eq!(latest_knock(w, &namesake.user_id)["verdict"], "held");
    // The moderator approves: the re-check before the invite lets the same weak evidence pass.
    let r = admin(
        w,
        "/approve_knock",
        Some(json!({"user_id": namesake.user_id})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    s.wait_for_membership(room(), &namesake.user_id, "invite");
    // The room records the invite once its answer is back, just after Synapse shows it.
    crate::support::wait_until(
        "the knock recorded as invited",
        std::time::Duration::from_secs(10),
        || (latest_knock(w, &namesake.user_id)["verdict"] == "invited").then_some(()),
    );
}

#[test]
fn a_leet_variant_of_a_distinctive_blocked_name_is_refused() {
    let s = synapse();
    let w = worker();
    let r = admin(
        w,
        "/block_user",
        Some(json!({"user_id": "@zorbatron:localhost", "reason": "raids"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let evader = s.register("z0rb4tr0n", false);
    knock(w, &evader.user_id);
    settle(w);
    assert_eq!(s.membership(room(), &evader.user_id), None);
    let k = latest_knock(w, &evader.user_id);
    assert_eq!(k["verdict"], "blocked", "{k}");
    assert!(
        k["reason"]
            .as_str()
            .is_some_and(|r| r.contains("matches blocked @zorbatron:localhost")),
        "{k}"
    );
}

/// Knock's log events called `name`, as JSON objects, in order.
fn events(w: &Worker, name: &str) -> Vec<Value> {
    let needle = format!("\"event\":\"{name}\"");
    w.log()
        .lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| l.find('{').and_then(|i| serde_json::from_str(&l[i..]).ok()))
        .collect()
}

/// Imports `text` (one entry a line); returns the list version it stored. An import, unlike
/// `block_user`, does not make the admin request's isolate take up the new list, so the next
/// knock reads what the list object published to KV.
fn import(w: &Worker, text: &str) -> u64 {
    let auth = format!("Bearer {API_KEY}");
    let r = w.post(
        "/blocklist",
        &[("Authorization", &auth), ("Content-Type", "text/plain")],
        text.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["version"].as_u64().expect("version")
}

/// The publish of `version`, once the list object logged it.
fn published(w: &Worker, version: u64) -> Value {
    crate::support::wait_until(
        "the list published",
        std::time::Duration::from_secs(30),
        || {
            events(w, "blocklist_published")
                .into_iter()
                .find(|e| e["version"] == version)
        },
    )
}

#[test]
fn a_block_added_to_a_published_list_is_published_alone_and_enforced_over_it() {
    let s = synapse();
    let mut vars = Worker::base_vars(s);
    vars.push(("API_KEY".into(), API_KEY.into()));
    let w = Worker::start(&vars);
    let early = s.register("layerearly", false);
    let later = s.register("layerlater", false);
    let forgiven = s.register("layerforgiven", false);
    // The first publish is the whole list: the base.
    let v1 = import(
        &w,
        &format!(
            "{}\n{}\n@layerfiller:example.org\n",
            early.user_id, forgiven.user_id
        ),
    );
    let whole = published(&w, v1);
    assert_eq!(whole["layer"], false, "{whole}");
    std::thread::sleep(std::time::Duration::from_millis(5_500));
    let first = s.new_user("layerprobe");
    knock(&w, &first.user_id);
    s.wait_for_membership(room(), &first.user_id, "invite");
    // One more entry: published alone, as a layer over the base.
    let v2 = import(&w, &format!("{}\n", later.user_id));
    let layer = published(&w, v2);
    assert_eq!(layer["layer"], true, "{layer}");
    assert_eq!(layer["entries"], 1, "{layer}");
    assert!(
        layer["bytes"].as_u64() < whole["bytes"].as_u64(),
        "{layer} vs {whole}"
    );
    // The hot path's version check is due: the next knock reads the layer only (this isolate
    // holds the base) and refuses the person it names; the base's entry still counts.
    std::thread::sleep(std::time::Duration::from_millis(5_500));
    knock(&w, &later.user_id);
    knock(&w, &early.user_id);
    settle(&w);
    for user in [&later, &early] {
        assert_eq!(
            s.membership(room(), &user.user_id),
            None,
            "{}",
            user.user_id
        );
        let k = latest_knock(&w, &user.user_id);
        assert_eq!(k["verdict"], "blocked", "{k}");
    }
    let opened = events(&w, "blocklist_index_opened");
    let took_up = opened
        .iter()
        .find(|e| e["version"] == v2)
        .unwrap_or_else(|| panic!("the layer was not opened: {opened:?}"));
    assert_eq!(took_up["base_version"], v1, "{took_up}");
    assert_eq!(took_up["bytes"], took_up["layer_bytes"], "{took_up}");
    // A removal changes the base's entries: the next publish is whole again, and the person
    // is let in.
    let r = admin(
        &w,
        "/unblock_user",
        Some(json!({"user_id": forgiven.user_id})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let again = crate::support::wait_until(
        "the removal published",
        std::time::Duration::from_secs(30),
        || {
            events(&w, "blocklist_published")
                .into_iter()
                .find(|e| e["version"].as_u64() > Some(v2))
        },
    );
    assert_eq!(again["layer"], false, "{again}");
    let back = s.register("layerearly2", false);
    let v4 = import(&w, &format!("{}\n", back.user_id));
    assert_eq!(published(&w, v4)["layer"], true);
    std::thread::sleep(std::time::Duration::from_millis(5_500));
    knock(&w, &forgiven.user_id);
    s.wait_for_membership(room(), &forgiven.user_id, "invite");
    knock(&w, &back.user_id);
    settle(&w);
    assert_eq!(s.membership(room(), &back.user_id), None);
    let k = latest_knock(&w, &back.user_id);
    assert_eq!(k["verdict"], "blocked", "{k}");
}
