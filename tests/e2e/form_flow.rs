//! The out-of-band invite flow: a form platform's webhook leads to a real invite.

use std::sync::OnceLock;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::{synapse, Reply, Worker};

const TALLY_SECRET: &str = "tally-e2e-secret";
const TYPEFORM_SECRET: &str = "typeform-e2e-secret";
const SHARED_SECRET: &str = "shared-e2e-secret";

fn worker() -> &'static Worker {
    static W: OnceLock<Worker> = OnceLock::new();
    W.get_or_init(|| {
        let mut vars = Worker::base_vars(synapse());
        for (k, v) in [
            ("TALLY_SIGNING_SECRET", TALLY_SECRET),
            ("TYPEFORM_SIGNING_SECRET", TYPEFORM_SECRET),
            ("WEBHOOK_SECRET", SHARED_SECRET),
            ("HONEYPOT_FIELDS", "website"),
        ] {
            vars.push((k.into(), v.into()));
        }
        Worker::start(&vars)
    })
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn tally_body(user_id: &str, event_id: &str) -> Vec<u8> {
    let mut v: Value =
        serde_json::from_str(include_str!("../fixtures/tally.json")).expect("fixture");
    v["eventId"] = event_id.into();
    v["data"]["fields"][1]["value"] = user_id.into();
    serde_json::to_vec(&v).expect("json")
}

fn post_tally(body: &[u8]) -> Reply {
    let sig = sign(TALLY_SECRET, body);
    worker().post(
        "/invite_from_form",
        &[
            ("Content-Type", "application/json"),
            ("Tally-Signature", &sig),
        ],
        body,
    )
}

fn post_generic(value: Value) -> Reply {
    worker().post(
        "/invite_from_form",
        &[
            ("Content-Type", "application/json"),
            ("X-Knock-Secret", SHARED_SECRET),
        ],
        value.to_string().as_bytes(),
    )
}

fn assert_accepted(r: &Reply) {
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json(), json!({"status": "accepted"}));
}

fn room() -> &'static str {
    &synapse().room_id
}

/// Proves that earlier knocks were fully processed without an invite: a fresh valid knock sent
/// afterwards is invited, and the queue works in arrival order, so by then the users named
/// here would have been invited too if Knock were going to.
fn assert_never_invited(user_ids: &[&str]) {
    let s = synapse();
    let sentinel = s.new_user("sentinel");
    assert_accepted(&post_generic(json!({"matrix_id": sentinel.user_id})));
    s.wait_for_membership(room(), &sentinel.user_id, "invite");
    for u in user_ids {
        assert_eq!(s.membership(room(), u), None, "{u} must not be invited");
    }
}

#[test]
fn health_probe_reports_running() {
    let r = worker().get("/", &[]);
    assert_eq!(r.status, 200);
    // The shared worker has a secret: the webhook is not open.
    assert_eq!(
        r.json(),
        json!({"status": "running", "webhook": "protected"})
    );
}

#[test]
fn a_signed_tally_payload_invites_the_user() {
    let s = synapse();
    let alice = s.new_user("alice");
    let r = post_tally(&tally_body(&alice.user_id, "tally-evt-1"));
    assert_accepted(&r);
    s.wait_for_membership(room(), &alice.user_id, "invite");
}

#[test]
fn a_signed_typeform_payload_invites_the_user() {
    let s = synapse();
    let bob = s.new_user("bob");
    let mut v: Value =
        serde_json::from_str(include_str!("../fixtures/typeform.json")).expect("fixture");
    v["event_id"] = "typeform-evt-1".into();
    v["form_response"]["answers"][1]["text"] = bob.user_id.clone().into();
    let body = serde_json::to_vec(&v).expect("json");
    let sig = format!("sha256={}", sign(TYPEFORM_SECRET, &body));
    let r = worker().post(
        "/invite_from_form",
        &[
            ("Content-Type", "application/json"),
            ("Typeform-Signature", &sig),
        ],
        &body,
    );
    assert_accepted(&r);
    s.wait_for_membership(room(), &bob.user_id, "invite");
}

#[test]
fn a_plain_html_form_invites_the_user_and_gets_a_page() {
    let s = synapse();
    let dave = s.new_user("dave");
    // The localpart alone, as a person might type it, with the server and no sigil.
    let typed = dave.user_id.trim_start_matches('@').to_owned();
    let body = format!(
        "name=Dave&matrix_id={}&website=",
        crate::support::enc(&typed)
    );
    let r = worker().post(
        &format!("/invite_from_form?secret={SHARED_SECRET}"),
        // A browser submitting a form says so: that, not the content type, earns a page.
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Sec-Fetch-Mode", "navigate"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(
        r.headers["content-type"].starts_with("text/html"),
        "{:?}",
        r.headers
    );
    assert!(r.body.contains("Thanks for knocking"), "{}", r.body);
    s.wait_for_membership(room(), &dave.user_id, "invite");
}

#[test]
fn a_tampered_signature_is_refused_and_nobody_is_invited() {
    let s = synapse();
    let eve = s.new_user("eve");
    let body = tally_body(&eve.user_id, "tally-evt-tampered");
    let sig = sign(TALLY_SECRET, &body);
    let mut tampered = body.clone();
    let pos = tampered.len() - 3;
    tampered[pos] = b' ';
    let r = worker().post(
        "/invite_from_form",
        &[
            ("Content-Type", "application/json"),
            ("Tally-Signature", &sig),
        ],
        &tampered,
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.json()["error"]
        .as_str()
        .unwrap_or("")
        .contains("does not match"));
    // No proof at all is refused too.
    let r = worker().post(
        "/invite_from_form",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert_never_invited(&[&eve.user_id]);
}

#[test]
fn the_same_delivery_five_times_gives_exactly_one_invite() {
    let s = synapse();
    let frank = s.new_user("frank");
    let body = tally_body(&frank.user_id, "tally-evt-repeat");
    // Two sequential, then three at once, as a platform retrying in a hurry might.
    for _ in 0..2 {
        assert_accepted(&post_tally(&body));
    }
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || post_tally(&body))
        })
        .collect();
    for h in handles {
        assert_accepted(&h.join().expect("thread"));
    }
    s.wait_for_membership(room(), &frank.user_id, "invite");
    // Let any straggling duplicate reach Synapse before counting.
    assert_never_invited(&[]);
    assert_eq!(s.invite_count(room(), &frank.user_id), 1);
}

#[test]
fn different_deliveries_for_the_same_user_give_one_invite() {
    let s = synapse();
    let gina = s.new_user("gina");
    for i in 0..3 {
        assert_accepted(&post_tally(&tally_body(
            &gina.user_id,
            &format!("gina-evt-{i}"),
        )));
    }
    s.wait_for_membership(room(), &gina.user_id, "invite");
    assert_never_invited(&[]);
    assert_eq!(s.invite_count(room(), &gina.user_id), 1);
}

#[test]
fn a_nonexistent_user_is_accepted_but_never_invited() {
    let ghost = "@ghost-never-registered:localhost";
    assert_accepted(&post_generic(json!({"matrix_id": ghost})));
    assert_never_invited(&[ghost]);
}

#[test]
fn an_invalid_matrix_id_gets_a_clear_400() {
    for (id, wanted) in [
        ("not an id", "server part"),
        ("@:localhost", "empty"),
        ("@bad name:localhost", "a-z"),
    ] {
        let r = post_generic(json!({"matrix_id": id}));
        assert_eq!(r.status, 400, "{id}: {}", r.body);
        let msg = r.json()["error"].as_str().unwrap_or("").to_owned();
        assert!(msg.contains(wanted), "{id}: {msg}");
    }
    let r = post_generic(json!({"note": "no id here"}));
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]
        .as_str()
        .unwrap_or("")
        .contains("No Matrix ID"));
}

#[test]
fn a_filled_honeypot_is_accepted_silently_and_never_invited() {
    let s = synapse();
    let bot = s.new_user("spambot");
    let body = format!(
        "matrix_id={}&website=http%3A%2F%2Fspam.example",
        crate::support::enc(&bot.user_id)
    );
    let r = worker().post(
        &format!("/invite_from_form?secret={SHARED_SECRET}"),
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(r.body.contains("Thanks for knocking"));
    assert_never_invited(&[&bot.user_id]);
}

#[test]
fn a_body_over_64_kib_gets_413() {
    let big = format!(
        r#"{{"matrix_id":"@a:localhost","pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let r = worker().post(
        "/invite_from_form",
        &[
            ("Content-Type", "application/json"),
            ("X-Knock-Secret", SHARED_SECRET),
        ],
        big.as_bytes(),
    );
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap_or("").contains("64 KiB"));
}

#[test]
fn an_unreadable_content_type_gets_415() {
    let r = worker().post(
        "/invite_from_form",
        &[
            ("Content-Type", "text/plain"),
            ("X-Knock-Secret", SHARED_SECRET),
        ],
        b"@a:localhost",
    );
    assert_eq!(r.status, 415, "{}", r.body);
}

#[test]
fn unknown_routes_get_json_404_and_the_webhook_never_does() {
    let r = worker().get("/nope", &[]);
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
    let r = worker().get("/invite_from_form", &[]);
    assert_eq!(r.status, 405);
}

#[test]
fn a_worker_without_settings_names_what_is_missing() {
    let w = Worker::start(&[]);
    let r = w.get("/", &[]);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "misconfigured");
    assert_eq!(v["missing"], json!(["NEW_ROOM_ID", "MATRIX_ACCESS_TOKEN"]));
    let r = w.post(
        "/invite_from_form",
        &[("Content-Type", "application/json")],
        br#"{"matrix_id":"@a:localhost"}"#,
    );
    assert_eq!(r.status, 503);
    assert!(r.json()["error"]
        .as_str()
        .unwrap_or("")
        .contains("NEW_ROOM_ID"));
}

#[test]
fn logs_never_contain_the_room_id_or_a_token() {
    let s = synapse();
    let user = s.new_user("logged");
    assert_accepted(&post_tally(&tally_body(&user.user_id, "tally-evt-logs")));
    s.wait_for_membership(room(), &user.user_id, "invite");
    // Knock's own lines are JSON objects; wrangler's start-up banner (which lists [vars]) is not
    // Knock's to control.
    let knock_lines = || -> String {
        worker()
            .log()
            .lines()
            .filter(|l| l.starts_with("{\""))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let needle = "\"event\":\"invite_sent\"";
    crate::support::wait_until(
        "the invite in the log",
        std::time::Duration::from_secs(10),
        || knock_lines().contains(&user.user_id).then_some(()),
    );
    let log = knock_lines();
    assert!(log.contains(needle), "structured logs are written: {log}");
    assert!(!log.contains(room()), "the room ID leaked into the logs");
    assert!(
        !log.contains(&s.bot.token),
        "the access token leaked into the logs"
    );
    assert!(!log.contains(TALLY_SECRET) && !log.contains(SHARED_SECRET));
}
