//! Logging in: password mode, token-only mode, and Beeper's email-code flow (against a local
//! stand-in for Beeper's API, with the real Synapse doing the final JWT login).

use std::time::Duration;

use serde_json::json;

use crate::beeper_stub::BeeperStub;
use crate::support::{synapse, wait_until, User, Worker, JWT_SECRET};

const API_KEY: &str = "login-e2e-key";

/// A bot of its own with a knock room of its own, so logging it out disturbs no other test.
fn own_bot(name: &str) -> (User, String) {
    let s = synapse();
    let bot = s.register(name, false);
    s.lift_rate_limits(&bot.user_id);
    let room = s.create_knock_room(&bot);
    (bot, room)
}

fn vars(room: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let s = synapse();
    let mut v: Vec<(String, String)> = Worker::base_vars(s)
        .into_iter()
        .filter(|(k, _)| k != "NEW_ROOM_ID" && k != "MATRIX_ACCESS_TOKEN")
        .collect();
    v.push(("NEW_ROOM_ID".into(), room.into()));
    v.push(("API_KEY".into(), API_KEY.into()));
    for (k, val) in extra {
        v.push((k.to_string(), val.to_string()));
    }
    v
}

fn knock(w: &Worker, user_id: &str) {
    let r = w.post(
        "/invite_from_form",
        &[("Content-Type", "application/json")],
        json!({ "matrix_id": user_id }).to_string().as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
}

fn wait_invited(token: &str, room: &str, user_id: &str) {
    let s = synapse();
    wait_until(
        &format!("{user_id} invited"),
        Duration::from_secs(30),
        || (s.membership_as(token, room, user_id).as_deref() == Some("invite")).then_some(()),
    );
}

fn whoami(w: &Worker) -> crate::support::Reply {
    w.admin(API_KEY, "/whoami", None)
}

#[test]
fn password_mode_logs_in_and_logs_in_again_after_the_token_is_revoked() {
    let s = synapse();
    let (bot, room) = own_bot("passwordbot");
    let w = Worker::start(&vars(
        &room,
        &[
            ("MATRIX_USER_ID", &bot.user_id),
            ("MATRIX_PASSWORD", &bot.password),
        ],
    ));
    let first = s.new_user("pwfirst");
    knock(&w, &first.user_id);
    wait_invited(&bot.token, &room, &first.user_id);

    let who = whoami(&w);
    assert_eq!(who.status, 200, "{}", who.body);
    assert_eq!(who.json()["user_id"], bot.user_id.as_str());
    assert_eq!(who.json()["mode"], "password");
    assert!(
        !who.body.contains("syt_"),
        "whoami must never show a token: {}",
        who.body
    );

    // Revoke every session of the bot, Knock's included.
    let r = s.client(
        "POST",
        "/_matrix/client/v3/logout/all",
        &bot.token,
        Some(json!({})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let checker = s.login(&bot);

    let second = s.new_user("pwsecond");
    knock(&w, &second.user_id);
    wait_invited(&checker, &room, &second.user_id);
    assert!(!w.log().contains("syt_"), "no token in the logs");
}

#[test]
fn token_only_mode_degrades_and_delivers_once_the_token_is_replaced() {
    let s = synapse();
    let (bot, room) = own_bot("tokenbot");
    let token = s.login(&bot);
    let mut w = Worker::start(&vars(&room, &[("MATRIX_ACCESS_TOKEN", &token)]));
    assert_eq!(w.get("/", &[]).json()["status"], "running");

    let r = s.client("POST", "/_matrix/client/v3/logout", &token, Some(json!({})));
    assert_eq!(r.status, 200, "{}", r.body);
    let waiting = s.new_user("tokwaiting");
    knock(&w, &waiting.user_id);
    wait_until(
        "the degraded health status",
        Duration::from_secs(30),
        || {
            let v = w.get("/", &[]).json();
            (v["status"] == "degraded" && v["reason"] == "homeserver login needed").then_some(())
        },
    );
    assert_eq!(s.membership_as(&bot.token, &room, &waiting.user_id), None);

    // The operator puts a new token in place (a redeploy); the queued knock goes through.
    let fresh = s.login(&bot);
    w.restart_with(&vars(&room, &[("MATRIX_ACCESS_TOKEN", &fresh)]));
    let r = w.get("/cdn-cgi/handler/scheduled?cron=*%2F5+*+*+*+*", &[]);
    assert_eq!(r.status, 200);
    wait_invited(&bot.token, &room, &waiting.user_id);
    assert_eq!(w.get("/", &[]).json()["status"], "running");
}

#[test]
fn beeper_mode_logs_in_with_the_emailed_code_and_invites() {
    let s = synapse();
    // Beeper's JWT names the localpart; the account exists already on the homeserver.
    let (bot, room) = own_bot("knockbeeper");
    let stub = BeeperStub::start(JWT_SECRET, "424242");
    let w = Worker::start(&vars(
        &room,
        &[
            ("BEEPER_API_BASE", &stub.url),
            ("BEEPER_LOGIN_EMAIL", "knockbeeper@example.org"),
        ],
    ));
    assert_eq!(
        w.get("/", &[]).json(),
        json!({"status": "degraded", "reason": "homeserver login needed", "webhook": "open"}),
        "no login yet"
    );
    let r = w.admin(API_KEY, "/login/beeper/start", Some(json!({})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "code_sent");
    assert_eq!(
        stub.last_email().as_deref(),
        Some("knockbeeper@example.org")
    );

    let wrong = w.admin(
        API_KEY,
        "/login/beeper/verify",
        Some(json!({"code": "000000"})),
    );
    assert_eq!(wrong.status, 400, "{}", wrong.body);
    assert!(
        wrong.json()["error"].as_str().unwrap_or("").contains("2"),
        "retries left: {}",
        wrong.body
    );

    let ok = w.admin(
        API_KEY,
        "/login/beeper/verify",
        Some(json!({"code": stub.code()})),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["user_id"], bot.user_id.as_str());
    assert!(!ok.body.contains("eyJ"), "no JWT in replies: {}", ok.body);

    let guest = s.new_user("beeperguest");
    knock(&w, &guest.user_id);
    wait_invited(&bot.token, &room, &guest.user_id);
    assert_eq!(whoami(&w).json()["mode"], "beeper");

    // Every call to Beeper carried its fixed bearer (the stub refuses any other).
    assert!(stub
        .calls()
        .iter()
        .any(|(p, _)| p == "/user/login/response"));

    // A brand-new Beeper account is refused with a clear message.
    stub.set_new_account(true);
    assert_eq!(
        w.admin(API_KEY, "/login/beeper/start", Some(json!({})))
            .status,
        200
    );
    let lead = w.admin(
        API_KEY,
        "/login/beeper/verify",
        Some(json!({"code": stub.code()})),
    );
    assert_eq!(lead.status, 400, "{}", lead.body);
    assert!(
        lead.json()["error"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains("new"),
        "{}",
        lead.body
    );
}

#[test]
fn concurrent_cold_requests_log_in_once() {
    let s = synapse();
    let (bot, room) = own_bot("singleflightbot");
    let w = Worker::start(&vars(
        &room,
        &[
            ("MATRIX_USER_ID", &bot.user_id),
            ("MATRIX_PASSWORD", &bot.password),
        ],
    ));
    // Nothing has logged in yet: eight requests that each need the session arrive together.
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                let who = whoami(&w);
                assert_eq!(who.status, 200, "{}", who.body);
                assert_eq!(who.json()["user_id"], bot.user_id.as_str());
            });
        }
    });
    let devices = s.client("GET", "/_matrix/client/v3/devices", &bot.token, None);
    assert_eq!(devices.status, 200, "{}", devices.body);
    let n = devices.json()["devices"].as_array().map_or(0, Vec::len);
    // The registration's device, and exactly one login by Knock.
    assert_eq!(n, 2, "{}", devices.body);
}
