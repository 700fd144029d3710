//! The knock lifecycle end to end: knocks that end (declined, left, rescinded, expired) are
//! opened again by a new knock; a block that lands while the queue waits (paced, or stalled by
//! the homeserver) is never overtaken by an invite; a worker killed mid-queue delivers every
//! knock exactly once after a restart; homeserver errors that name the room never reach a log
//! line or an admin reply. Each scenario has a room of its own.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::fault_proxy::{Fault, FaultProxy};
use crate::support::{synapse, wait_until, User, Worker};

const KEY: &str = "lifecycle-e2e-key";

fn vars_for(room: &str, base_url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let s = synapse();
    let mut vars: Vec<(String, String)> = Worker::base_vars(s)
        .into_iter()
        .filter(|(k, _)| k != "NEW_ROOM_ID" && k != "MATRIX_BASE_URL")
        .collect();
    vars.push(("NEW_ROOM_ID".into(), room.into()));
    vars.push(("MATRIX_BASE_URL".into(), base_url.into()));
    vars.push(("API_KEY".into(), KEY.into()));
    for (k, v) in extra {
        vars.retain(|(name, _)| name != k);
        vars.push((k.to_string(), v.to_string()));
    }
    vars
}

fn room_worker(extra: &[(&str, &str)]) -> (Worker, String) {
    let s = synapse();
    let room = s.create_knock_room(&s.bot);
    (Worker::start(&vars_for(&room, &s.url, extra)), room)
}

fn knock(w: &Worker, user: &User) {
    let r = w.post(
        "/invite_from_form",
        &[("Content-Type", "application/json")],
        json!({ "matrix_id": user.user_id }).to_string().as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
}

fn cron(w: &Worker) {
    let r = w.get("/cdn-cgi/handler/scheduled?cron=*%2F5+*+*+*+*", &[]);
    assert_eq!(r.status, 200, "cron trigger: {}", r.body);
}

/// The newest knock of a user as `GET /knocks` shows it.
fn latest(w: &Worker, user: &User) -> Value {
    let r = w.admin(KEY, "/knocks?limit=1000", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["knocks"]
        .as_array()
        .expect("knocks")
        .iter()
        .find(|k| k["user_id"] == user.user_id.as_str())
        .cloned()
        .unwrap_or(Value::Null)
}

fn wait_for_verdict(w: &Worker, user: &User, verdict: &str) {
    wait_until(
        &format!("{} to be {verdict}", user.user_id),
        Duration::from_secs(30),
        || {
            cron(w);
            (latest(w, user)["verdict"] == verdict).then_some(())
        },
    );
}

fn leave(user: &User, room: &str) {
    let s = synapse();
    let r = s.client(
        "POST",
        &format!(
            "/_matrix/client/v3/rooms/{}/leave",
            crate::support::enc(room)
        ),
        &user.token,
        Some(json!({})),
    );
    assert_eq!(r.status, 200, "leave: {}", r.body);
}

fn invite_counts(room: &str) -> HashMap<String, usize> {
    let mut invites: HashMap<String, usize> = HashMap::new();
    for e in synapse().member_events(room) {
        if e["content"]["membership"] == "invite" {
            *invites
                .entry(e["state_key"].as_str().unwrap_or("").to_owned())
                .or_default() += 1;
        }
    }
    invites
}

#[test]
fn a_knock_that_ended_is_opened_again_by_a_new_one() {
    let s = synapse();
    let (w, room) = room_worker(&[
        ("INVITE_CHECK_INTERVAL", "1ms"),
        ("BLOCKLIST_SCAN_INTERVAL", "1h"),
        ("INVITE_EXPIRY", "4s"),
        ("REMINDER_AFTER", "1h"),
    ]);
    let decliner = s.new_user("decliner");
    let leaver = s.new_user("leaver");
    let rescinded = s.new_user("rescinded");
    let expired = s.new_user("expired");
    for u in [&decliner, &leaver, &rescinded, &expired] {
        knock(&w, u);
        s.wait_for_membership(&room, &u.user_id, "invite");
    }

    // Declined: the person turns the invite down.
    leave(&decliner, &room);
    wait_for_verdict(&w, &decliner, "declined");
    // Left: the person joins, is welcomed, then leaves.
    s.join(&leaver, &room);
    wait_for_verdict(&w, &leaver, "welcomed");
    leave(&leaver, &room);
    wait_for_verdict(&w, &leaver, "left");
    // Rescinded by a moderator.
    let r = w.admin(
        KEY,
        "/rescind_invite",
        Some(json!({ "user_id": rescinded.user_id })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["action"], "invite_rescinded");
    assert_eq!(latest(&w, &rescinded)["verdict"], "rescinded");
    // Expired: nobody accepted it in time.
    wait_for_verdict(&w, &expired, "expired");
    // The kick it owes is the queue's, right after.
    s.wait_for_membership(&room, &expired.user_id, "leave");

    // None of them is listed as pending any more.
    let pending = w.admin(KEY, "/pending_invites", None).json();
    let pending: Vec<&str> = pending["pending"]
        .as_array()
        .expect("pending")
        .iter()
        .filter_map(|p| p["user_id"].as_str())
        .collect();
    for u in [&decliner, &leaver, &rescinded, &expired] {
        assert!(
            !pending.contains(&u.user_id.as_str()),
            "{} pending",
            u.user_id
        );
    }

    // Each knocks again: a decline, a leave and an expiry are handled like any new knock...
    for u in [&decliner, &leaver, &expired] {
        knock(&w, u);
        s.wait_for_membership(&room, &u.user_id, "invite");
    }
    // ...and after a moderator's rescind the new knock waits for a moderator, who re-invites.
    knock(&w, &rescinded);
    wait_for_verdict(&w, &rescinded, "held");
    assert_eq!(
        s.membership(&room, &rescinded.user_id).as_deref(),
        Some("leave")
    );
    let r = w.admin(
        KEY,
        "/approve_knock",
        Some(json!({ "user_id": rescinded.user_id })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    s.wait_for_membership(&room, &rescinded.user_id, "invite");

    let invites = invite_counts(&room);
    for u in [&decliner, &leaver, &rescinded, &expired] {
        assert_eq!(
            invites.get(&u.user_id),
            Some(&2),
            "{} invited twice",
            u.user_id
        );
    }
}

#[test]
fn someone_blocked_while_the_queue_is_paced_is_never_invited() {
    let s = synapse();
    let (w, room) = room_worker(&[("REQUEST_DELAY", "2s")]);
    let first = s.new_user("paced");
    let second = s.new_user("paced");
    let blocked = s.new_user("pacedblock");
    for u in [&first, &second, &blocked] {
        knock(&w, u);
    }
    // Two calls per knock, two seconds apart: the third invite is ~10 s away. Block now.
    std::thread::sleep(Duration::from_millis(1500));
    let r = w.admin(
        KEY,
        "/block_user",
        Some(json!({ "user_id": blocked.user_id })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    s.wait_for_membership(&room, &first.user_id, "invite");
    s.wait_for_membership(&room, &second.user_id, "invite");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(latest(&w, &blocked)["verdict"], "blocked");
    assert_eq!(invite_counts(&room).get(&blocked.user_id), None);
}

#[test]
fn someone_blocked_while_the_homeserver_stalls_is_never_invited() {
    let s = synapse();
    let room = s.create_knock_room(&s.bot);
    let proxy = FaultProxy::start(&s.url);
    proxy.set_path_filter("/profile/");
    proxy.set_fault(Fault::Stall(Duration::from_secs(6)), 1.0);
    let w = Worker::start(&vars_for(&room, &proxy.url, &[("MATRIX_TIMEOUT", "4s")]));
    let blocked = s.new_user("stallblock");
    knock(&w, &blocked);
    // The profile check is stalled; the block lands meanwhile.
    std::thread::sleep(Duration::from_secs(1));
    let r = w.admin(
        KEY,
        "/block_user",
        Some(json!({ "user_id": blocked.user_id })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["knocks_closed"], 1, "{}", r.body);
    proxy.clear();
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(latest(&w, &blocked)["verdict"], "blocked");
    assert_eq!(invite_counts(&room).get(&blocked.user_id), None);
    assert_eq!(proxy.successes("/invite"), 0);
}

#[test]
fn a_worker_killed_mid_queue_delivers_every_knock_once_after_a_restart() {
    let s = synapse();
    // A short call timeout keeps the lease short: a lost run is picked up ~8 s later.
    let (mut w, room) = room_worker(&[("REQUEST_DELAY", "700ms"), ("MATRIX_TIMEOUT", "2s")]);
    let users: Vec<User> = (0..6).map(|_| s.new_user("killed")).collect();
    for u in &users {
        knock(&w, u);
    }
    // Some invites have gone out, others are still paced: stop the worker now.
    s.wait_for_membership(&room, &users[0].user_id, "invite");
    w.stop();
    let before = invite_counts(&room).len();
    assert!(
        before < users.len(),
        "the kill came mid-queue ({before} done)"
    );
    w.restart();
    wait_until("every knock invited", Duration::from_secs(90), || {
        users
            .iter()
            .all(|u| s.membership(&room, &u.user_id).as_deref() == Some("invite"))
            .then_some(())
    });
    let invites = invite_counts(&room);
    for u in &users {
        assert_eq!(
            invites.get(&u.user_id),
            Some(&1),
            "{} invited once",
            u.user_id
        );
    }
}

#[test]
fn a_homeserver_error_that_names_the_room_is_never_logged_or_shown() {
    let s = synapse();
    // A room the bot is not in: every invite is refused with Synapse's "not in room !…".
    let owner = s.new_user("roomowner");
    let room = s.create_knock_room(&owner);
    let w = Worker::start(&vars_for(&room, &s.url, &[]));
    let user = s.new_user("outsider");
    knock(&w, &user);
    wait_until("the invite to fail", Duration::from_secs(30), || {
        (latest(&w, &user)["verdict"] == "failed").then_some(())
    });
    let reason = latest(&w, &user)["reason"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(reason.starts_with("403 M_FORBIDDEN"), "{reason}");
    // Every admin reply is checked by the harness for the room ID; these are the ones that
    // carry homeserver text.
    for path in [
        "/knocks",
        "/pending_invites",
        "/held_knocks",
        "/room_members",
    ] {
        let r = w.admin(KEY, path, None);
        assert!(r.status < 500 || r.status == 502, "{path}: {}", r.body);
    }
    let opaque = room.trim_start_matches('!').split(':').next().unwrap_or("");
    let log = w.log();
    let ours: Vec<&str> = log.lines().filter(|l| l.contains("\"event\"")).collect();
    assert!(!ours.is_empty(), "Knock's logs are captured");
    for line in ours {
        assert!(!line.contains(opaque), "a log line names the room: {line}");
    }
}

#[test]
fn knocks_page_backwards_and_filter_by_verdict() {
    let s = synapse();
    let (w, _room) = room_worker(&[]);
    let users: Vec<User> = (0..5).map(|_| s.new_user("paged")).collect();
    for u in &users {
        knock(&w, u);
    }
    let r = w.admin(KEY, "/knocks?limit=2", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let page = r.json();
    let ids: Vec<i64> = page["knocks"]
        .as_array()
        .expect("knocks")
        .iter()
        .filter_map(|k| k["id"].as_i64())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] > ids[1], "newest first: {ids:?}");
    let next = page["next_before"].as_i64().expect("a cursor");
    let r = w.admin(KEY, &format!("/knocks?limit=10&before={next}"), None);
    let older: Vec<i64> = r.json()["knocks"]
        .as_array()
        .expect("knocks")
        .iter()
        .filter_map(|k| k["id"].as_i64())
        .collect();
    assert_eq!(older.len(), 3, "{}", r.body);
    assert!(older.iter().all(|id| *id < next));
    assert!(r.json()["next_before"].is_null());
    let r = w.admin(KEY, "/knocks?verdict=nonsense", None);
    assert_eq!(r.status, 400, "{}", r.body);
    for u in &users {
        s.wait_for_membership(&w.room_id, &u.user_id, "invite");
    }
    // Synapse shows an invite a moment before the room stores the answer to it.
    wait_until(
        "all five recorded as invited",
        Duration::from_secs(20),
        || {
            let r = w.admin(KEY, "/knocks?verdict=invited&limit=100", None);
            let invited = r.json()["knocks"].as_array().expect("knocks").len();
            (invited == 5).then_some(())
        },
    );
}

#[test]
fn forget_user_deletes_what_knock_stores_about_a_person() {
    let s = synapse();
    let (w, room) = room_worker(&[]);
    let user = s.new_user("forgotten");
    knock(&w, &user);
    s.wait_for_membership(&room, &user.user_id, "invite");
    let r = w.admin(KEY, "/block_user", Some(json!({ "user_id": user.user_id })));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = w.admin(
        KEY,
        "/forget_user",
        Some(json!({ "user_id": user.user_id })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let out = r.json();
    assert_eq!(out["status"], "forgotten");
    assert!(out["knocks"].as_u64().unwrap_or(0) >= 1, "{out}");
    assert_eq!(out["still_blocked"], true, "the block-list entry stays");
    assert_eq!(latest(&w, &user), Value::Null);
    let r = w.admin(KEY, "/forget_user", Some(json!({ "user_id": "not an id" })));
    assert_eq!(r.status, 400, "{}", r.body);
}
