//! Intake as the platforms really send: one signed delivery per platform shape (the fixtures in
//! tests/fixtures/intake, made after each platform's documentation) invites the right person on
//! Synapse; a partial Typeform response invites nobody; signed deliveries are not limited per
//! address while browser posts are; a raid of 1,000 signed knocks loses none; Turnstile guards
//! the plain HTML form, failing closed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{repo_root, synapse, wait_until, Reply, Worker};
use crate::turnstile_stub::TurnstileStub;

const KEY: &str = "intake-e2e-key";
const TALLY: &str = "intake-tally-secret";
const TYPEFORM: &str = "intake-typeform-secret";
const FORMSPREE: &str = "intake-formspree-secret";
const SHARED: &str = "intake-shared-secret";

fn worker(extra: &[(&str, &str)]) -> (Worker, String) {
    let s = synapse();
    let room = s.create_knock_room(&s.bot);
    let mut vars: Vec<(String, String)> = Worker::base_vars(s)
        .into_iter()
        .filter(|(k, _)| k != "NEW_ROOM_ID")
        .collect();
    vars.push(("NEW_ROOM_ID".into(), room.clone()));
    vars.push(("API_KEY".into(), KEY.into()));
    for (k, v) in extra {
        vars.retain(|(name, _)| name != k);
        vars.push((k.to_string(), v.to_string()));
    }
    (Worker::start(&vars), room)
}

fn secrets() -> Vec<(&'static str, &'static str)> {
    vec![
        ("TALLY_SIGNING_SECRET", TALLY),
        ("TYPEFORM_SIGNING_SECRET", TYPEFORM),
        ("FORMSPREE_SIGNING_SECRET", FORMSPREE),
        ("WEBHOOK_SECRET", SHARED),
    ]
}

/// A fixture with its people moved onto the test homeserver.
fn fixture(name: &str) -> Vec<u8> {
    let path = repo_root().join("tests/fixtures/intake").join(name);
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    String::from_utf8_lossy(&text)
        .replace("example.org", "localhost")
        .into_bytes()
}

/// The boundary a multipart fixture uses (its first line, without the leading dashes).
fn boundary(body: &[u8]) -> String {
    let first = body.split(|b| *b == b'\r').next().unwrap_or_default();
    String::from_utf8_lossy(&first[2..]).into_owned()
}

enum Auth {
    Tally,
    Typeform,
    Formspree,
    Shared,
}

fn deliver(w: &Worker, body: &[u8], content_type: &str, auth: Auth) -> Reply {
    use knock::domain::signature::{sign_base64, sign_formspree};
    let now = crate::support::now_ms() / 1000;
    let (name, value) = match auth {
        Auth::Tally => ("Tally-Signature", sign_base64(TALLY, body)),
        Auth::Typeform => (
            "Typeform-Signature",
            format!("sha256={}", sign_base64(TYPEFORM, body)),
        ),
        Auth::Formspree => ("Formspree-Signature", sign_formspree(FORMSPREE, body, now)),
        Auth::Shared => ("X-Knock-Secret", SHARED.to_owned()),
    };
    w.post(
        "/invite_from_form",
        &[("Content-Type", content_type), (name, value.as_str())],
        body,
    )
}

/// A Tally delivery for `user_id`, signed, from `address`.
fn signed_tally(w: &Worker, event_id: &str, user_id: &str, address: &str) -> Reply {
    let body = json!({"eventId": event_id, "eventType": "FORM_RESPONSE",
        "data": {"fields": [{"key": "q1", "label": "Matrix ID", "type": "INPUT_TEXT",
                             "value": user_id}]}})
    .to_string();
    let sig = knock::domain::signature::sign_base64(TALLY, body.as_bytes());
    w.post(
        "/invite_from_form",
        &[
            ("Content-Type", "application/json"),
            ("Tally-Signature", &sig),
            ("CF-Connecting-IP", address),
        ],
        body.as_bytes(),
    )
}

fn knocks(w: &Worker) -> Vec<Value> {
    let mut all = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let path = match before {
            Some(b) => format!("/knocks?limit=1000&before={b}"),
            None => "/knocks?limit=1000".to_owned(),
        };
        let r = w.admin(KEY, &path, None);
        assert_eq!(r.status, 200, "{}", r.body);
        let page = r.json();
        all.extend(page["knocks"].as_array().cloned().unwrap_or_default());
        match page["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => return all,
        }
    }
}

#[test]
fn every_platform_as_it_really_sends_invites_the_right_person() {
    let s = synapse();
    let (w, room) = worker(&secrets());
    let json = "application/json";
    let cases: [(&str, String, Auth, &str); 10] = [
        (
            "tally-all-field-types.json",
            json.into(),
            Auth::Tally,
            "alice",
        ),
        (
            "tally-hidden-matrix-id.json",
            json.into(),
            Auth::Tally,
            "dana",
        ),
        (
            "typeform-example-payload.json",
            json.into(),
            Auth::Typeform,
            "laura",
        ),
        (
            "formspree-submission.json",
            json.into(),
            Auth::Formspree,
            "gina",
        ),
        ("fillout-submission.json", json.into(), Auth::Shared, "hana"),
        (
            "fillout-url-parameter.json",
            json.into(),
            Auth::Shared,
            "ivo",
        ),
        (
            "google-apps-script-namedvalues.json",
            json.into(),
            Auth::Shared,
            "jo",
        ),
        (
            "google-apps-script-flat.txt",
            "application/x-www-form-urlencoded".into(),
            Auth::Shared,
            "lee",
        ),
        (
            "jotform-webhook.multipart",
            format!(
                "multipart/form-data; boundary={}",
                boundary(&fixture("jotform-webhook.multipart"))
            ),
            Auth::Shared,
            "mia",
        ),
        (
            "html-form.multipart",
            format!(
                "multipart/form-data; boundary={}",
                boundary(&fixture("html-form.multipart"))
            ),
            Auth::Shared,
            "nia",
        ),
    ];
    for (name, content_type, auth, localpart) in cases {
        let user = s.register(localpart, false);
        let r = deliver(&w, &fixture(name), &content_type, auth);
        assert_eq!(r.status, 202, "{name}: {}", r.body);
        assert_eq!(r.json()["status"], "accepted", "{name}: {}", r.body);
        s.wait_for_membership(&room, &user.user_id, "invite");
    }
    // The phone-keyboard capital was folded, and the knock says so.
    let alice = knocks(&w)
        .into_iter()
        .find(|k| k["user_id"] == "@alice:localhost")
        .expect("alice's knock");
    assert!(
        alice["note"].as_str().unwrap_or("").contains("lower case"),
        "{alice}"
    );
}

#[test]
fn a_partial_typeform_response_invites_nobody() {
    let s = synapse();
    let (w, room) = worker(&secrets());
    let you = s.register("you", false);
    let body = fixture("typeform-partial-response.json");
    let r = deliver(&w, &body, "application/json", Auth::Typeform);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "ignored");
    std::thread::sleep(Duration::from_secs(2));
    assert!(knocks(&w).is_empty(), "nothing is stored");
    assert_eq!(s.membership(&room, &you.user_id), None);
    assert_eq!(s.membership(&room, "@laura:localhost"), None);
}

#[test]
fn signed_deliveries_are_limited_per_person_and_browsers_per_address() {
    let s = synapse();
    let (w, room) = worker(
        &[
            secrets(),
            vec![("MAX_REQUESTS_PER_WINDOW", "3"), ("WAVE_MAX_KNOCKS", "100")],
        ]
        .concat(),
    );
    // 30 people through Tally within a minute: Tally's few addresses are all one here.
    let users: Vec<_> = (0..30).map(|_| s.new_user("tallied")).collect();
    for u in &users {
        let r = signed_tally(
            &w,
            &format!("evt-{}", u.user_id),
            &u.user_id,
            "198.51.100.7",
        );
        assert_eq!(
            r.status, 202,
            "signed deliveries are never address-limited: {}",
            r.body
        );
    }
    for u in &users {
        s.wait_for_membership(&room, &u.user_id, "invite");
    }
    // 30 browser posts from one address: the address limit applies after 3.
    let mut limited = 0;
    for i in 0..30 {
        let body = format!("matrix_id=%40browser{i}%3Alocalhost");
        let r = w.post(
            "/invite_from_form",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("X-Knock-Secret", SHARED),
                ("Sec-Fetch-Mode", "navigate"),
                ("Accept", "text/html"),
                ("CF-Connecting-IP", "203.0.113.9"),
            ],
            body.as_bytes(),
        );
        match r.status {
            202 => assert!(
                r.body.contains("<html") || r.body.contains("<!doctype"),
                "{}",
                r.body
            ),
            429 => {
                limited += 1;
                assert!(r.headers.contains_key("retry-after"));
                assert!(r.body.contains("Try again in"), "{}", r.body);
            }
            other => panic!("{other}: {}", r.body),
        }
    }
    assert_eq!(limited, 27, "three per window, then the limit");
}

#[test]
fn a_raid_of_a_thousand_signed_knocks_loses_none() {
    let (w, _room) = worker(&[secrets(), vec![("WAVE_MAX_KNOCKS", "20")]].concat());
    let accepted = AtomicUsize::new(0);
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= 1000 {
                    return;
                }
                let r = signed_tally(
                    &w,
                    &format!("raid-{i}"),
                    &format!("@raider{i}:localhost"),
                    "192.0.2.200",
                );
                match r.status {
                    202 => {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                    429 => assert!(r.headers.contains_key("retry-after"), "{}", r.body),
                    other => panic!("a raid knock answered {other}: {}", r.body),
                }
            });
        }
    });
    let accepted = accepted.into_inner();
    assert!(accepted > 900, "{accepted} of 1000 accepted");
    let stored = knocks(&w);
    let mut ids: Vec<&str> = stored
        .iter()
        .filter_map(|k| k["user_id"].as_str())
        .collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(
        before,
        ids.len(),
        "each accepted knock is stored exactly once"
    );
    assert_eq!(
        ids.len(),
        accepted,
        "every accepted knock is stored, none lost"
    );
    let held = w.admin(KEY, "/held_knocks", None).json()["held"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(
        held >= accepted - 21,
        "the join-wave breaker holds the excess: {held} held"
    );
}

#[test]
fn turnstile_guards_the_plain_form_and_fails_closed() {
    let s = synapse();
    let stub = TurnstileStub::start();
    let (w, room) = worker(&[
        ("TURNSTILE_SECRET_KEY", "ts-secret"),
        ("TURNSTILE_VERIFY_URL", &stub.url),
    ]);
    let person = s.new_user("turnstiled");
    let post = |token: Option<&str>| {
        let mut body = format!("matrix_id={}", crate::support::enc(&person.user_id));
        if let Some(t) = token {
            body.push_str(&format!("&cf-turnstile-response={t}"));
        }
        w.post(
            "/invite_from_form",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Sec-Fetch-Mode", "navigate"),
                ("CF-Connecting-IP", "198.51.100.44"),
            ],
            body.as_bytes(),
        )
    };
    for (token, says) in [
        (None, "anti-spam check"),
        (Some("fail"), "did not pass"),
        (Some("garbage"), "could not be completed"),
        (Some("slow"), "could not be completed"),
    ] {
        let r = post(token);
        assert_eq!(r.status, 403, "{token:?}: {}", r.body);
        assert!(r.body.contains(says), "{token:?}: {}", r.body);
        assert!(
            r.body.contains("<html") || r.body.contains("<!doctype"),
            "a page for a person"
        );
    }
    assert_eq!(s.membership(&room, &person.user_id), None);
    let r = post(Some("pass"));
    assert_eq!(r.status, 202, "{}", r.body);
    s.wait_for_membership(&room, &person.user_id, "invite");
    let sent = stub.requests();
    assert!(
        sent.iter()
            .any(|b| b.contains("secret=ts-secret") && b.contains("response=pass")),
        "{sent:?}"
    );
    // With Turnstile on the webhook is not open, and `GET /` says so.
    assert_eq!(w.get("/", &[]).json()["webhook"], "protected");
}

#[test]
fn with_no_secret_at_all_the_health_check_says_the_webhook_is_open() {
    let (w, _room) = worker(&[]);
    let r = w.get("/", &[]);
    assert_eq!(r.json()["webhook"], "open", "{}", r.body);
    let r = w.post(
        "/invite_from_form",
        &[("Content-Type", "application/json")],
        br#"{"matrix_id":"@open:localhost"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    wait_until("the warning", Duration::from_secs(10), || {
        w.log().contains("\"event\":\"webhook_open\"").then_some(())
    });
}
