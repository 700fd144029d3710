//! Cron watchdogs and native knocks, against the real worker and Synapse. These tests use a
//! room of their own: the block-list scan and invite adoption look at every member.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{enc, synapse, wait_until, Reply, User, Worker};

const API_KEY: &str = "watch-e2e-key";

struct Setup {
    worker: Worker,
    room_id: String,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let s = synapse();
        let room_id = s.create_knock_room(&s.bot);
        let mut vars = Worker::base_vars(s);
        vars.retain(|(k, _)| k != "NEW_ROOM_ID");
        for (k, v) in [
            ("NEW_ROOM_ID", room_id.as_str()),
            ("API_KEY", API_KEY),
            ("INVITE_CHECK_INTERVAL", "1ms"),
            ("BLOCKLIST_SCAN_INTERVAL", "1ms"),
            ("REMINDER_AFTER", "2s"),
            ("INVITE_EXPIRY", "5s"),
            ("WELCOME_MESSAGE", "Welcome aboard, {display_name}!"),
            ("REMINDER_MESSAGE", "Your invite is waiting, {user_id}."),
        ] {
            vars.push((k.into(), v.into()));
        }
        Setup {
            worker: Worker::start(&vars),
            room_id,
        }
    })
}

fn room() -> &'static str {
    &setup().room_id
}

/// Runs the worker's cron handler once, as Cloudflare's scheduler would. A run that finds
/// another under way (tests run in parallel) does nothing, as in production.
fn cron() {
    let w = &setup().worker;
    let r = w.get("/cdn-cgi/handler/scheduled?cron=*%2F5+*+*+*+*", &[]);
    assert_eq!(r.status, 200, "cron trigger: {}", r.body);
}

/// Triggers cron runs until `f` sees the outcome.
fn cron_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    wait_until(what, Duration::from_secs(30), || {
        cron();
        f()
    })
}

fn admin(path: &str, body: Option<Value>) -> Reply {
    setup().worker.admin(API_KEY, path, body)
}

fn form_knock(user: &User) {
    let r = setup().worker.post(
        "/invite_from_form",
        &[("Content-Type", "application/json")],
        json!({ "matrix_id": user.user_id }).to_string().as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
}

fn set_display_name(user: &User, name: &str) {
    let s = synapse();
    let r = s.client(
        "PUT",
        &format!(
            "/_matrix/client/v3/profile/{}/displayname",
            enc(&user.user_id)
        ),
        &user.token,
        Some(json!({ "displayname": name })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Messages the bot sent to `room`, newest last.
fn bot_messages(room_id: &str) -> Vec<String> {
    let s = synapse();
    let filter = enc(r#"{"types":["m.room.message"]}"#);
    let r = s.client(
        "GET",
        &format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=200&filter={filter}",
            enc(room_id)
        ),
        &s.bot.token,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let mut out: Vec<String> = r.json()["chunk"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["sender"] == s.bot.user_id.as_str())
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    out.reverse();
    out
}

fn knock_natively(user: &User, room_id: &str) {
    let s = synapse();
    let r = s.client(
        "POST",
        &format!("/_matrix/client/v3/knock/{}", enc(room_id)),
        &user.token,
        Some(json!({ "reason": "please let me in, ROOM IS MINE" })),
    );
    assert_eq!(r.status, 200, "knock: {}", r.body);
    assert_eq!(
        s.membership(room_id, &user.user_id).as_deref(),
        Some("knock")
    );
}

#[test]
fn a_joiner_is_welcomed_by_name_exactly_once() {
    let s = synapse();
    let user = s.new_user("joiner");
    set_display_name(&user, "Joyful Joiner");
    form_knock(&user);
    s.wait_for_membership(room(), &user.user_id, "invite");
    s.join(&user, room());
    let welcomes = |msgs: Vec<String>| msgs.iter().filter(|m| m.contains("Joyful Joiner")).count();
    cron_until("the welcome", || {
        (welcomes(bot_messages(room())) >= 1).then_some(())
    });
    assert!(bot_messages(room()).contains(&"Welcome aboard, Joyful Joiner!".to_owned()));
    cron();
    cron();
    assert_eq!(
        welcomes(bot_messages(room())),
        1,
        "a second run must not welcome again"
    );
}

#[test]
fn an_ignored_invite_is_reminded_once_then_rescinded() {
    let s = synapse();
    let user = s.new_user("latecomer");
    form_knock(&user);
    s.wait_for_membership(room(), &user.user_id, "invite");
    std::thread::sleep(Duration::from_millis(2_200));
    let state_of = || -> Option<String> {
        admin("/pending_invites", None).json()["pending"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .find(|p| p["user_id"] == user.user_id.as_str())
            .and_then(|p| p["state"].as_str().map(str::to_owned))
    };
    cron_until("the reminder", || {
        (state_of().as_deref() == Some("reminded")).then_some(())
    });
    // The reminder is a direct message: the latecomer has an invite to a direct chat with it.
    let sync = s.sync_now(&user);
    let dms: Vec<String> = sync["rooms"]["invite"]
        .as_object()
        .map(|o| o.keys().filter(|r| r.as_str() != room()).cloned().collect())
        .unwrap_or_default();
    assert_eq!(dms.len(), 1, "exactly one direct chat: {sync}");
    assert!(bot_messages(&dms[0])
        .iter()
        .any(|m| m.contains(&user.user_id)));
    cron();
    let sync = s.sync_now(&user);
    let dm_count = sync["rooms"]["invite"].as_object().map_or(0, |o| o.len()) - 1;
    assert_eq!(dm_count, 1, "reminded once only");
    // Past INVITE_EXPIRY the invite is withdrawn.
    std::thread::sleep(Duration::from_millis(3_000));
    cron_until("the invite to be withdrawn", || {
        (s.membership(room(), &user.user_id).as_deref() == Some("leave")).then_some(())
    });
    assert_eq!(state_of(), None, "no longer pending");
}

#[test]
fn a_blocked_user_who_slipped_in_is_kicked_by_the_scan() {
    let s = synapse();
    let r = admin(
        "/block_user",
        Some(json!({ "user_id": "@raiderboss:localhost" })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let sneaky = s.register("r4iderboss", false);
    let invite = s.client(
        "POST",
        &format!("/_matrix/client/v3/rooms/{}/invite", enc(room())),
        &s.bot.token,
        Some(json!({ "user_id": sneaky.user_id })),
    );
    assert_eq!(invite.status, 200);
    s.join(&sneaky, room());
    cron_until("the scan to kick them", || {
        (s.membership(room(), &sneaky.user_id).as_deref() == Some("leave")).then_some(())
    });
    let knocks = admin("/knocks", None);
    assert!(knocks.status == 200, "{}", knocks.body);
}

#[test]
fn a_member_with_only_weak_evidence_is_reported_never_kicked() {
    let s = synapse();
    let r = admin(
        "/block_user",
        Some(json!({ "user_id": "@matthew19:localhost" })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // A namesake who got in some other way: only the counter differs on a common name.
    let namesake = s.register("matthew52", false);
    let invite = s.client(
        "POST",
        &format!("/_matrix/client/v3/rooms/{}/invite", enc(room())),
        &s.bot.token,
        Some(json!({ "user_id": namesake.user_id })),
    );
    assert_eq!(invite.status, 200, "{}", invite.body);
    s.join(&namesake, room());
    let listed = |v: &Value| {
        v["members_to_review"]
            .as_array()
            .and_then(|m| m.iter().find(|r| r["user_id"] == namesake.user_id.as_str()))
            .cloned()
    };
    let review = cron_until("the scan to report the namesake", || {
        listed(&admin("/held_knocks", None).json())
    });
    assert!(
        review["why"]
            .as_str()
            .is_some_and(|w| w.contains("held for a moderator, not blocked")),
        "{review}"
    );
    cron();
    assert_eq!(
        s.membership(room(), &namesake.user_id).as_deref(),
        Some("join"),
        "weak evidence never removes a member"
    );
    // The moderator keeps them: the report goes, and the next passes do not raise it again.
    let r = admin(
        "/approve_knock",
        Some(json!({ "user_id": namesake.user_id })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["member_kept"], true, "{}", r.body);
    cron();
    cron();
    assert_eq!(listed(&admin("/held_knocks", None).json()), None);
    assert_eq!(
        s.membership(room(), &namesake.user_id).as_deref(),
        Some("join")
    );
}

#[test]
fn native_knocks_are_answered_with_the_same_policy() {
    let s = synapse();
    let r = admin(
        "/block_user",
        Some(json!({ "user_id": "@knockvandal:localhost" })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let clean = s.new_user("nativeclean");
    let vandal = s.register("kn0ckvandal", false);
    knock_natively(&clean, room());
    knock_natively(&vandal, room());
    cron_until("the native knocks to be answered", || {
        let clean_in = s.membership(room(), &clean.user_id).as_deref() == Some("invite");
        let vandal_out = s.membership(room(), &vandal.user_id).as_deref() == Some("leave");
        (clean_in && vandal_out).then_some(())
    });
    // The knock reason was never posted into the room.
    assert!(bot_messages(room())
        .iter()
        .all(|m| !m.contains("ROOM IS MINE")));
    let knocks = admin("/knocks", None).json();
    let verdicts: Vec<(String, String)> = knocks["knocks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|k| k["source"] == "native")
        .map(|k| {
            (
                k["user_id"].as_str().unwrap_or("").to_owned(),
                k["verdict"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        verdicts.contains(&(vandal.user_id.clone(), "blocked".into())),
        "{verdicts:?}"
    );
    assert!(
        verdicts
            .iter()
            .any(|(u, v)| u == &clean.user_id && v == "invited"),
        "{verdicts:?}"
    );
}

#[test]
fn the_admin_routes_answer_with_the_room_as_synapse_sees_it() {
    let s = synapse();
    let pending_user = s.new_user("pendingone");
    form_knock(&pending_user);
    s.wait_for_membership(room(), &pending_user.user_id, "invite");

    let members = admin("/room_members", None);
    assert_eq!(members.status, 200, "{}", members.body);
    let list = members.json()["members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(list
        .iter()
        .any(|m| m["user_id"] == s.bot.user_id.as_str() && m["membership"] == "join"));
    assert!(list
        .iter()
        .any(|m| m["user_id"] == pending_user.user_id.as_str() && m["membership"] == "invite"));

    let pending = admin("/pending_invites", None).json();
    let entry = pending["pending"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .find(|p| p["user_id"] == pending_user.user_id.as_str())
        .expect("tracked");
    assert_eq!(entry["state"], "invited");
    assert!(entry["age_seconds"].is_u64());

    let knocks = admin("/knocks?limit=5", None).json();
    let newest = &knocks["knocks"][0];
    assert!(knocks["knocks"].as_array().map_or(0, Vec::len) <= 5);
    assert!(
        newest["verdict"].is_string() && newest["received_at"].is_u64(),
        "{knocks}"
    );

    // The raw state is the one reply allowed to show the room.
    let state = request_raw("/room_state");
    assert_eq!(state.status, 200);
    assert!(state.body.contains("m.room.join_rules"));

    let r = admin(
        "/rescind_invite",
        Some(json!({ "user_id": pending_user.user_id })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["action"], "invite_rescinded");
    assert_eq!(
        s.membership(room(), &pending_user.user_id).as_deref(),
        Some("leave")
    );
}

/// A GET that skips the no-room-ID check (for /room_state only).
fn request_raw(path: &str) -> Reply {
    let w = &setup().worker;
    crate::support::request(
        "GET",
        &format!("{}{}", w.url, path),
        &[("Authorization", &format!("Bearer {API_KEY}"))],
        None,
    )
}
