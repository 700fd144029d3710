//! Several rooms and forms in one deployment (`KNOCK_ROOMS`, `KNOCK_FORMS`), against the real
//! worker and Synapse: each form invites into its own room with its own secret, cron serves
//! every room, a block applies in every room, and the admin API never shows a room ID.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{enc, synapse, wait_until, Reply, User, Worker};

const API_KEY: &str = "rooms-e2e-key";
const SECRET_A: &str = "tally-secret-of-form-a";
const SECRET_B: &str = "tally-secret-of-form-b";
const SECRET_HUB: &str = "tally-secret-of-the-hub-form";

struct Setup {
    worker: Worker,
    alpha: String,
    beta: String,
    /// A space that takes every `m.space.child`, and its two children.
    hub: String,
    children: [String; 2],
}

/// A knock-only space with `children` as its `m.space.child` rooms.
fn create_space(children: &[&str]) -> String {
    let s = synapse();
    let mut state: Vec<Value> = children
        .iter()
        .map(
            |c| json!({"type": "m.space.child", "state_key": c, "content": {"via": ["localhost"]}}),
        )
        .collect();
    state.push(json!({"type": "m.room.join_rules", "state_key": "",
                      "content": {"join_rule": "knock"}}));
    let r = s.client(
        "POST",
        "/_matrix/client/v3/createRoom",
        &s.bot.token,
        Some(json!({
            "preset": "private_chat",
            "room_version": "10",
            "name": "Knock test space",
            "creation_content": {"type": "m.space"},
            "initial_state": state,
        })),
    );
    assert_eq!(r.status, 200, "createRoom (space): {}", r.body);
    r.json()["room_id"].as_str().expect("room_id").to_owned()
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let s = synapse();
        let alpha = s.create_knock_room(&s.bot);
        let beta = s.create_knock_room(&s.bot);
        let children = [s.create_knock_room(&s.bot), s.create_knock_room(&s.bot)];
        let hub = create_space(&[&children[0], &children[1]]);
        let mut vars = Worker::base_vars(s);
        // No NEW_ROOM_ID: the two variables describe the whole deployment.
        vars.retain(|(k, _)| k != "NEW_ROOM_ID");
        // KNOCK_ROOMS as a TOML table in [vars] (wrangler passes an object), KNOCK_FORMS as a
        // JSON string (as a secret would hold it): both ways are read.
        let rooms = json!({
            "alpha": {"room_id": alpha, "welcome_message": "Welcome to alpha, {user_id}!"},
            "beta": {"room_id": beta, "welcome_message": "Welcome to beta, {user_id}!"},
            "hub": {"room_id": hub, "space": true},
        });
        let forms = json!({
            "form-a": {"room": "alpha"},
            "form-b": {"room": "beta"},
            "hub-form": {"room": "hub"},
        });
        for (k, v) in [
            ("KNOCK_ROOMS@table", rooms.to_string()),
            ("KNOCK_FORMS", forms.to_string()),
            ("TALLY_SIGNING_SECRET_FORM_A", SECRET_A.into()),
            ("TALLY_SIGNING_SECRET_FORM_B", SECRET_B.into()),
            ("TALLY_SIGNING_SECRET_HUB_FORM", SECRET_HUB.into()),
            ("API_KEY", API_KEY.into()),
            ("INVITE_CHECK_INTERVAL", "1ms".into()),
            ("BLOCKLIST_SCAN_INTERVAL", "1ms".into()),
        ] {
            vars.push((k.into(), v));
        }
        Setup {
            worker: Worker::start(&vars),
            alpha,
            beta,
            hub,
            children,
        }
    })
}

fn tally_body(event_id: &str, user_id: &str) -> String {
    json!({"eventId": event_id, "eventType": "FORM_RESPONSE",
        "data": {"fields": [{"key": "q1", "label": "Matrix ID", "type": "INPUT_TEXT",
                             "value": user_id}]}})
    .to_string()
}

/// A Tally delivery to `/invite_from_form/{form}`, signed with `secret`.
fn deliver(form: &str, secret: &str, event_id: &str, user_id: &str) -> Reply {
    let body = tally_body(event_id, user_id);
    let sig = knock::domain::signature::sign_base64(secret, body.as_bytes());
    setup().worker.post(
        &format!("/invite_from_form/{form}"),
        &[
            ("Content-Type", "application/json"),
            ("Tally-Signature", &sig),
        ],
        body.as_bytes(),
    )
}

fn admin(path: &str, body: Option<Value>) -> Reply {
    setup().worker.admin(API_KEY, path, body)
}

/// No reply shows either room's ID, or its opaque part.
fn no_room_ids(r: &Reply) {
    let st = setup();
    for room in [
        &st.alpha,
        &st.beta,
        &st.hub,
        &st.children[0],
        &st.children[1],
    ] {
        let opaque = room
            .trim_start_matches('!')
            .split(':')
            .next()
            .unwrap_or(room);
        assert!(
            !r.body.contains(room.as_str()) && !r.body.contains(opaque),
            "a reply leaked a room ID: {}",
            r.body
        );
    }
}

fn cron() {
    let r = setup()
        .worker
        .get("/cdn-cgi/handler/scheduled?cron=*%2F5+*+*+*+*", &[]);
    assert_eq!(r.status, 200, "cron trigger: {}", r.body);
}

/// Messages the bot sent to `room`.
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
    r.json()["chunk"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["sender"] == s.bot.user_id.as_str())
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// Invites `user` into `room` straight from the bot, and joins.
fn join_directly(user: &User, room: &str) {
    let s = synapse();
    let r = s.client(
        "POST",
        &format!("/_matrix/client/v3/rooms/{}/invite", enc(room)),
        &s.bot.token,
        Some(json!({"user_id": user.user_id})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    s.join(user, room);
    s.wait_for_membership(room, &user.user_id, "join");
}

#[test]
fn each_form_invites_into_its_own_room_with_its_own_secret() {
    let s = synapse();
    let st = setup();
    let ann = s.new_user("roomsann");
    let bob = s.new_user("roomsbob");
    let r = deliver("form-a", SECRET_A, "evt-rooms-ann", &ann.user_id);
    assert_eq!(r.status, 202, "{}", r.body);
    let r = deliver("form-b", SECRET_B, "evt-rooms-bob", &bob.user_id);
    assert_eq!(r.status, 202, "{}", r.body);
    s.wait_for_membership(&st.alpha, &ann.user_id, "invite");
    s.wait_for_membership(&st.beta, &bob.user_id, "invite");
    assert_eq!(s.membership(&st.beta, &ann.user_id), None);
    assert_eq!(s.membership(&st.alpha, &bob.user_id), None);
    // Each room keeps its own knocks: `?room=` picks one, by alias.
    let beta = admin("/knocks?room=beta", None);
    assert_eq!(beta.status, 200, "{}", beta.body);
    assert!(beta.body.contains(&bob.user_id), "{}", beta.body);
    assert!(!beta.body.contains(&ann.user_id), "{}", beta.body);
    let alpha = admin("/knocks?room=alpha", None).body;
    assert!(!alpha.contains(&bob.user_id), "{alpha}");
}

#[test]
fn a_delivery_signed_for_one_form_is_refused_by_another_like_an_unknown_form() {
    let s = synapse();
    let st = setup();
    let eve = s.new_user("roomseve");
    let wrong = deliver("form-b", SECRET_A, "evt-rooms-eve", &eve.user_id);
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    // An unknown form id gets exactly the answer a wrong secret gets: never 404 or 410.
    let unknown = deliver("no-such-form", SECRET_A, "evt-rooms-eve-2", &eve.user_id);
    assert_eq!(unknown.status, 401, "{}", unknown.body);
    assert_eq!(unknown.body, wrong.body);
    // No default form here (no NEW_ROOM_ID, none named `default`): the same answer again.
    let body = tally_body("evt-rooms-eve-3", &eve.user_id);
    let sig = knock::domain::signature::sign_base64(SECRET_A, body.as_bytes());
    let bare = st.worker.post(
        "/invite_from_form",
        &[
            ("Content-Type", "application/json"),
            ("Tally-Signature", &sig),
        ],
        body.as_bytes(),
    );
    assert_eq!((bare.status, &bare.body), (401, &wrong.body));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.membership(&st.alpha, &eve.user_id), None);
    assert_eq!(s.membership(&st.beta, &eve.user_id), None);
}

#[test]
fn cron_welcomes_joiners_in_every_room() {
    let s = synapse();
    let st = setup();
    let cat = s.new_user("roomscat");
    let dan = s.new_user("roomsdan");
    assert_eq!(
        deliver("form-a", SECRET_A, "evt-rooms-cat", &cat.user_id).status,
        202
    );
    assert_eq!(
        deliver("form-b", SECRET_B, "evt-rooms-dan", &dan.user_id).status,
        202
    );
    s.wait_for_membership(&st.alpha, &cat.user_id, "invite");
    s.wait_for_membership(&st.beta, &dan.user_id, "invite");
    s.join(&cat, &st.alpha);
    s.join(&dan, &st.beta);
    let welcomed = |room: &str, text: &str| bot_messages(room).iter().any(|m| m == text);
    let in_alpha = format!("Welcome to alpha, {}!", cat.user_id);
    let in_beta = format!("Welcome to beta, {}!", dan.user_id);
    wait_until(
        "both rooms welcome their joiner",
        Duration::from_secs(30),
        || {
            cron();
            (welcomed(&st.alpha, &in_alpha) && welcomed(&st.beta, &in_beta)).then_some(())
        },
    );
    assert!(
        !welcomed(&st.alpha, &in_beta),
        "each room has its own welcome"
    );
}

#[test]
fn a_block_removes_the_person_from_every_room() {
    let s = synapse();
    let st = setup();
    let troll = s.register("roomstrollmaster", false);
    join_directly(&troll, &st.alpha);
    join_directly(&troll, &st.beta);
    let r = admin("/block_user", Some(json!({"user_id": troll.user_id})));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let rooms = v["rooms"].as_array().cloned().unwrap_or_default();
    let answer = |alias: &str| rooms.iter().find(|r| r["room"] == alias).cloned();
    for alias in ["alpha", "beta"] {
        let one = answer(alias).unwrap_or_else(|| panic!("no answer for {alias}: {v}"));
        assert_eq!(one["membership_was"], "join", "{v}");
        assert_eq!(one["action"], "kicked", "{v}");
    }
    // A room they were never in answers too, with nothing to do.
    assert_eq!(
        answer("hub").map(|h| h["action"].clone()),
        Some(json!("none")),
        "{v}"
    );
    assert_eq!(
        v["action"], "kicked",
        "the default room's answer stays at the top: {v}"
    );
    assert_eq!(
        s.membership(&st.alpha, &troll.user_id).as_deref(),
        Some("leave")
    );
    assert_eq!(
        s.membership(&st.beta, &troll.user_id).as_deref(),
        Some("leave")
    );
    no_room_ids(&r);
}

#[test]
fn the_rooms_route_lists_rooms_and_forms_without_their_ids() {
    setup();
    cron();
    let r = admin("/rooms", None);
    assert_eq!(r.status, 200, "{}", r.body);
    no_room_ids(&r);
    let v = r.json();
    let rooms = v["rooms"].as_array().cloned().unwrap_or_default();
    let find = |alias: &str| {
        rooms
            .iter()
            .find(|x| x["room"] == alias)
            .cloned()
            .unwrap_or_else(|| panic!("{alias} missing: {v}"))
    };
    assert_eq!(find("alpha")["forms"], json!(["form-a"]));
    assert_eq!(find("beta")["forms"], json!(["form-b"]));
    assert!(find("beta")["status"]["queued"].is_u64(), "{v}");
    wait_until("a cron run is recorded", Duration::from_secs(20), || {
        cron();
        let v = admin("/rooms", None).json();
        v["rooms"]
            .as_array()
            .is_some_and(|rs| rs.iter().all(|x| !x["status"]["last_run"]["at"].is_null()))
            .then_some(())
    });
    // An unknown room is a clear 400.
    let r = admin("/pending_invites?room=gamma", None);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("GET /rooms"), "{}", r.body);
}

#[test]
fn a_space_form_invites_into_the_space_and_every_child_room() {
    let s = synapse();
    let st = setup();
    let fay = s.new_user("roomsfay");
    let r = deliver("hub-form", SECRET_HUB, "evt-rooms-fay", &fay.user_id);
    assert_eq!(r.status, 202, "{}", r.body);
    s.wait_for_membership(&st.hub, &fay.user_id, "invite");
    for child in &st.children {
        s.wait_for_membership(child, &fay.user_id, "invite");
    }
    // Each child room tracks its own knock: joining one is welcomed there, by the cron run
    // the space passes on to its children.
    s.join(&fay, &st.children[0]);
    let localpart = fay
        .user_id
        .trim_start_matches('@')
        .split(':')
        .next()
        .unwrap_or_default();
    wait_until(
        "the child room welcomes the joiner",
        Duration::from_secs(30),
        || {
            cron();
            bot_messages(&st.children[0])
                .iter()
                .any(|m| m.starts_with("Welcome,") && m.contains(localpart))
                .then_some(())
        },
    );
    // A block reaches the space's children too.
    let r = admin("/block_user", Some(json!({"user_id": fay.user_id})));
    assert_eq!(r.status, 200, "{}", r.body);
    no_room_ids(&r);
    s.wait_for_membership(&st.children[0], &fay.user_id, "leave");
    s.wait_for_membership(&st.children[1], &fay.user_id, "leave");
    s.wait_for_membership(&st.hub, &fay.user_id, "leave");
}
