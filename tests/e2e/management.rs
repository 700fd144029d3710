//! The management room (`MANAGEMENT_ROOM_ID`), against the real worker and Synapse: a held
//! knock is posted there as a notice, and an encrypted management room is reported by `GET /`.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{enc, synapse, wait_until, User, Worker};

const API_KEY: &str = "management-e2e-key";

struct Setup {
    worker: Worker,
    management: String,
    room: String,
    /// A member of the management room at the `kick` level, and one below it.
    moderator: User,
    member: User,
}

/// A private room of the bot's, unencrypted unless `encrypted`.
fn private_room(encrypted: bool) -> String {
    let s = synapse();
    let mut state = vec![];
    if encrypted {
        state.push(json!({"type": "m.room.encryption", "state_key": "",
                          "content": {"algorithm": "m.megolm.v1.aes-sha2"}}));
    }
    let r = s.client(
        "POST",
        "/_matrix/client/v3/createRoom",
        &s.bot.token,
        Some(json!({"preset": "private_chat", "name": "Knock moderators",
                    "initial_state": state})),
    );
    assert_eq!(r.status, 200, "createRoom: {}", r.body);
    r.json()["room_id"].as_str().expect("room_id").to_owned()
}

const DENY: &str = "Sorry {user_id}, the moderators did not accept your request.";

/// A fresh public room, a management room with a moderator (power level 50) and a member
/// below it, and a worker for them with `extra` vars.
fn fresh_setup(extra: &[(&str, &str)]) -> Setup {
    let s = synapse();
    let room = s.create_knock_room(&s.bot);
    let management = private_room(false);
    let mut vars = Worker::base_vars(s);
    vars.retain(|(k, _)| k != "NEW_ROOM_ID" && !extra.iter().any(|(e, _)| e == k));
    for (k, v) in [
        ("NEW_ROOM_ID", room.as_str()),
        ("MANAGEMENT_ROOM_ID", management.as_str()),
        ("API_KEY", API_KEY),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        vars.push((k.into(), v.into()));
    }
    let moderator = s.new_user("mgmtmod");
    let member = s.new_user("mgmtmember");
    for u in [&moderator, &member] {
        let r = s.client(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&management)),
            &s.bot.token,
            Some(json!({"user_id": u.user_id})),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        s.join(u, &management);
    }
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
        enc(&management)
    );
    let mut levels = s.client("GET", &path, &s.bot.token, None).json();
    levels["users"][moderator.user_id.as_str()] = json!(50);
    let r = s.client("PUT", &path, &s.bot.token, Some(levels));
    assert_eq!(r.status, 200, "{}", r.body);
    Setup {
        worker: Worker::start(&vars),
        management,
        room,
        moderator,
        member,
    }
}

/// The worker most tests share (a deny message set).
fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| fresh_setup(&[("DENY_MESSAGE", DENY)]))
}

/// The bot's notices in `room`: (plain body, HTML body).
fn notices(room: &str) -> Vec<(String, String)> {
    notice_events(room)
        .iter()
        .map(|e| {
            (
                e["content"]["body"].as_str().unwrap_or_default().to_owned(),
                e["content"]["formatted_body"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// The bot's notices in `room`, as events, newest first.
fn notice_events(room: &str) -> Vec<Value> {
    let s = synapse();
    let filter = enc(r#"{"types":["m.room.message"]}"#);
    let r = s.client(
        "GET",
        &format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100&filter={filter}",
            enc(room)
        ),
        &s.bot.token,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["chunk"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["content"]["msgtype"] == "m.notice")
        .collect()
}

#[test]
fn a_held_knock_is_posted_to_the_management_room_with_its_reason() {
    let s = synapse();
    let st = setup();
    let r = st.worker.admin(
        API_KEY,
        "/block_user",
        Some(json!({"user_id": "@matthew41:localhost", "reason": "spam"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let namesake = s.register("matthew88", false);
    let r = st.worker.post(
        "/invite_from_form",
        &[("Content-Type", "application/json")],
        json!({"matrix_id": namesake.user_id, "why": "I like <b>rust</b>", "website": ""})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let (body, html) = wait_until("the held knock's notice", Duration::from_secs(30), || {
        notices(&st.management)
            .into_iter()
            .find(|(b, _)| b.contains(&namesake.user_id))
    });
    assert!(
        body.starts_with("Held for a moderator in default:"),
        "{body}"
    );
    assert!(
        body.contains("matches blocked @matthew41:localhost"),
        "{body}"
    );
    assert!(body.contains("React ✅ to approve"), "{body}");
    assert!(html.contains("<b>Held for a moderator</b>"), "{html}");
    // The form's other answers are shown, escaped in the HTML body; the ID and empty ones not.
    assert!(body.contains("\nwhy: I like <b>rust</b>"), "{body}");
    assert!(
        html.contains("why: I like &lt;b&gt;rust&lt;/b&gt;"),
        "{html}"
    );
    assert!(
        !body.contains("matrix_id:") && !body.contains("website"),
        "{body}"
    );
    let public_room = &st.worker.room_id;
    assert!(!body.contains(public_room.as_str()) && !html.contains(public_room.as_str()));
    // Posted once: the queue's later runs do not post it again.
    std::thread::sleep(Duration::from_secs(2));
    let copies = notices(&st.management)
        .iter()
        .filter(|(b, _)| b.contains(&namesake.user_id))
        .count();
    assert_eq!(copies, 1);
    // GET / says the management room is fine.
    let health: Value = st.worker.get("/", &[]).json();
    assert_eq!(health["management"]["status"], "ok", "{health}");
}

#[test]
fn an_encrypted_management_room_is_reported_with_the_fix() {
    let s = synapse();
    let mut vars = Worker::base_vars(s);
    vars.push(("MANAGEMENT_ROOM_ID".into(), private_room(true)));
    let w = Worker::start(&vars);
    let health: Value = w.get("/", &[]).json();
    assert_eq!(health["management"]["status"], "encrypted", "{health}");
    let warning = health["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("create an unencrypted private room"),
        "{health}"
    );
    // The log says so too (wrangler writes its log a moment after the reply).
    wait_until("the log line", Duration::from_secs(10), || {
        w.log().contains("management_room_encrypted").then_some(())
    });
}

/// A transaction id no other test's request can share: tests run in parallel with the same
/// users' tokens, and Synapse answers a repeated (token, transaction id) with the first event
/// instead of sending a new one.
fn unique_txn(kind: &str) -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{kind}-{}-{n}", crate::support::now_ms())
}

/// `user` reacts to `event` in the management room.
fn react(user: &User, event: &str, key: &str) {
    react_in(setup(), user, event, key)
}

fn react_in(st: &Setup, user: &User, event: &str, key: &str) {
    let s = synapse();
    let txn = unique_txn("react");
    let r = s.client(
        "PUT",
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.reaction/{txn}",
            enc(&st.management)
        ),
        &user.token,
        Some(json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": event, "key": key}})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Runs the one-minute cron (the management rooms' reactions) once.
fn poll() {
    poll_in(setup())
}

fn poll_in(st: &Setup) {
    let r = st
        .worker
        .get("/cdn-cgi/handler/scheduled?cron=*+*+*+*+*", &[]);
    assert_eq!(r.status, 200, "cron trigger: {}", r.body);
}

#[test]
fn a_moderators_tap_approves_a_held_knock_and_anyone_elses_does_nothing() {
    let s = synapse();
    let st = setup();
    let r = st.worker.admin(
        API_KEY,
        "/block_user",
        Some(json!({"user_id": "@matthew41:localhost", "reason": "spam"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let namesake = s.register("matthew66", false);
    let r = st.worker.post(
        "/invite_from_form",
        &[("Content-Type", "application/json")],
        json!({"matrix_id": namesake.user_id})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let notice = wait_until("the held knock's notice", Duration::from_secs(30), || {
        notice_events(&st.management).into_iter().find(|e| {
            e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains(&namesake.user_id))
        })
    });
    let notice_id = notice["event_id"].as_str().expect("event id").to_owned();
    // Someone below the kick level taps ✅: nothing happens.
    react(&st.member, &notice_id, "✅");
    poll();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(s.membership(&st.room, &namesake.user_id), None);
    // A moderator taps ✅: the person is invited, and Knock says so in the notice's thread.
    react(&st.moderator, &notice_id, "✅");
    wait_until("the moderator's approval", Duration::from_secs(30), || {
        poll();
        (s.membership(&st.room, &namesake.user_id).as_deref() == Some("invite")).then_some(())
    });
    let replies = || {
        notice_events(&st.management)
            .into_iter()
            .filter(|e| {
                e["content"]["m.relates_to"]["event_id"] == notice_id.as_str()
                    && e["content"]["m.relates_to"]["rel_type"] == "m.thread"
            })
            .count()
    };
    assert_eq!(replies(), 1);
    let text: Vec<String> = notices(&st.management)
        .into_iter()
        .map(|(b, _)| b)
        .collect();
    assert!(
        text.iter()
            .any(|b| b.starts_with("Approved by") && b.contains(&namesake.user_id)),
        "{text:?}"
    );
    // Later polls do not apply the same reaction again.
    poll();
    poll();
    assert_eq!(replies(), 1);
    // The knock records who approved it.
    let knocks = st.worker.admin(API_KEY, "/knocks", None).json();
    let k = knocks["knocks"]
        .as_array()
        .and_then(|ks| {
            ks.iter()
                .find(|k| k["user_id"] == namesake.user_id.as_str())
                .cloned()
        })
        .expect("the knock");
    assert_eq!(
        k["note"].as_str(),
        Some(format!("approved by {}", st.moderator.user_id).as_str()),
        "{k}"
    );
}

#[test]
fn a_moderators_hammer_blocks_the_person_a_notice_is_about() {
    let s = synapse();
    let st = setup();
    let r = st.worker.admin(
        API_KEY,
        "/block_user",
        Some(json!({"user_id": "@matthew41:localhost", "reason": "spam"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let namesake = s.register("matthew77", false);
    let r = st.worker.post(
        "/invite_from_form",
        &[("Content-Type", "application/json")],
        json!({"matrix_id": namesake.user_id})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let notice = wait_until("the held knock's notice", Duration::from_secs(30), || {
        notice_events(&st.management).into_iter().find(|e| {
            e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.starts_with("Held") && b.contains(&namesake.user_id))
        })
    });
    react(
        &st.moderator,
        notice["event_id"].as_str().expect("id"),
        "🔨",
    );
    let list = wait_until(
        "the block from the management room",
        Duration::from_secs(30),
        || {
            poll();
            let list = st
                .worker
                .admin(API_KEY, "/blocklist?format=text", None)
                .body;
            list.contains(&namesake.user_id).then_some(list)
        },
    );
    assert!(
        list.contains("blocked by @mgmtmod"),
        "the entry names who blocked: {list}"
    );
    let knocks = st.worker.admin(API_KEY, "/knocks", None).json();
    let k = knocks["knocks"]
        .as_array()
        .and_then(|ks| {
            ks.iter()
                .find(|k| k["user_id"] == namesake.user_id.as_str())
                .cloned()
        })
        .expect("the knock");
    assert_eq!(k["verdict"], "blocked", "{k}");
    assert_eq!(s.membership(&st.room, &namesake.user_id), None);
}

/// `user` says `text` in the management room.
fn say(user: &User, text: &str) -> String {
    say_in(setup(), user, text)
}

fn say_in(st: &Setup, user: &User, text: &str) -> String {
    let s = synapse();
    let txn = unique_txn("say");
    let r = s.client(
        "PUT",
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
            enc(&st.management)
        ),
        &user.token,
        Some(json!({"msgtype": "m.text", "body": text})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["event_id"].as_str().expect("event id").to_owned()
}

/// Knock's answers in the management room to the message `event`.
fn answers_to(event: &str) -> Vec<String> {
    answers_in(setup(), event)
}

fn answers_in(st: &Setup, event: &str) -> Vec<String> {
    notice_events(&st.management)
        .into_iter()
        .filter(|e| e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == event)
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_moderators_block_command_kicks_a_member_and_others_commands_are_ignored() {
    let s = synapse();
    let st = setup();
    let troll = s.new_user("mgmttroll");
    let r = s.client(
        "POST",
        &format!("/_matrix/client/v3/rooms/{}/invite", enc(&st.room)),
        &s.bot.token,
        Some(json!({"user_id": troll.user_id})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    s.join(&troll, &st.room);
    s.wait_for_membership(&st.room, &troll.user_id, "join");
    // Not a moderator: ignored, with no answer.
    let ignored = say(&st.member, &format!("!knock block {}", troll.user_id));
    // A malformed command gets its usage line.
    let bad = say(&st.moderator, "!knock approve nobody");
    let block = say(
        &st.moderator,
        &format!("!knock block {} raiding", troll.user_id),
    );
    wait_until("the block command", Duration::from_secs(30), || {
        poll();
        (s.membership(&st.room, &troll.user_id).as_deref() == Some("leave")).then_some(())
    });
    let said = answers_to(&block);
    assert!(
        said.iter()
            .any(|a| a.starts_with("Blocked by") && a.contains(&troll.user_id)),
        "{said:?}"
    );
    assert_eq!(
        answers_to(&bad),
        vec!["Usage: !knock approve <user>".to_owned()]
    );
    assert!(answers_to(&ignored).is_empty());
    // `held` answers too.
    let held = say(&st.moderator, "!knock help");
    wait_until("the help answer", Duration::from_secs(20), || {
        poll();
        answers_to(&held)
            .first()
            .filter(|a| a.contains("!knock reject-held since <duration>"))
            .cloned()
    });
}

/// Posts a form knock for `user` to `st`'s worker.
fn form_knock(st: &Setup, user: &User) {
    let r = st.worker.post(
        "/invite_from_form",
        &[("Content-Type", "application/json")],
        json!({"matrix_id": user.user_id}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
}

/// The held knock's notice about `user` in `st`'s management room.
fn held_notice(st: &Setup, user: &User) -> String {
    let notice = wait_until("the held knock's notice", Duration::from_secs(30), || {
        notice_events(&st.management).into_iter().find(|e| {
            e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.starts_with("Held") && b.contains(&user.user_id))
        })
    });
    notice["event_id"].as_str().expect("event id").to_owned()
}

/// The texts of the messages in the direct chats `user` was invited to (joining each).
fn direct_messages(user: &User) -> Vec<String> {
    let s = synapse();
    let sync = s.sync_now(user);
    let mut out = Vec::new();
    let invited: Vec<String> = sync["rooms"]["invite"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let joined: Vec<String> = sync["rooms"]["join"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    for room in invited.iter().chain(joined.iter()) {
        if invited.contains(room) {
            s.join(user, room);
        }
        let r = s.client(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20",
                enc(room)
            ),
            &user.token,
            None,
        );
        for e in r.json()["chunk"].as_array().into_iter().flatten() {
            if e["type"] == "m.room.message" && e["sender"] == s.bot.user_id.as_str() {
                out.push(e["content"]["body"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    out
}

#[test]
fn a_moderators_cross_rejects_a_held_knock_and_the_person_gets_the_deny_message_only() {
    let s = synapse();
    let st = setup();
    let r = st.worker.admin(
        API_KEY,
        "/block_user",
        Some(json!({"user_id": "@matthew41:localhost", "reason": "spam"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let namesake = s.register("matthew55", false);
    form_knock(st, &namesake);
    let notice = held_notice(st, &namesake);
    react(&st.moderator, &notice, "❌");
    let k = wait_until("the rejection", Duration::from_secs(30), || {
        poll();
        let knocks = st.worker.admin(API_KEY, "/knocks", None).json();
        knocks["knocks"].as_array().and_then(|ks| {
            ks.iter()
                .find(|k| k["user_id"] == namesake.user_id.as_str() && k["verdict"] == "rejected")
                .cloned()
        })
    });
    assert_eq!(
        k["reason"].as_str(),
        Some(format!("rejected by {}", st.moderator.user_id).as_str()),
        "{k}"
    );
    let said = wait_until("the deny message", Duration::from_secs(30), || {
        let said = direct_messages(&namesake);
        (!said.is_empty()).then_some(said)
    });
    assert_eq!(
        said,
        vec![format!(
            "Sorry {}, the moderators did not accept your request.",
            namesake.user_id
        )],
        "one message, the operator's text, never the rule"
    );
    assert_eq!(s.membership(&st.room, &namesake.user_id), None);
    // Later runs send nothing more.
    poll();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(direct_messages(&namesake).len(), 1);
}

/// The newest text of the digest notice in `st`'s management room (its latest edit), with the
/// original's event id.
fn digest(st: &Setup) -> Option<(String, String)> {
    let events = notice_events(&st.management);
    let original = events
        .iter()
        .find(|e| e["content"]["org.knock.digest"].is_object())?;
    let id = original["event_id"].as_str()?.to_owned();
    // Newest first: the first edit found is the latest.
    let text = events
        .iter()
        .find(|e| {
            e["content"]["m.relates_to"]["rel_type"] == "m.replace"
                && e["content"]["m.relates_to"]["event_id"] == id.as_str()
        })
        .map(|e| e["content"]["m.new_content"]["body"].clone())
        .unwrap_or_else(|| original["content"]["body"].clone());
    Some((id, text.as_str()?.to_owned()))
}

#[test]
fn a_join_wave_posts_one_digest_edited_in_place_and_a_tap_on_it_invites_everyone_it_lists() {
    let s = synapse();
    let st = fresh_setup(&[("WAVE_MAX_KNOCKS", "2"), ("WAVE_WINDOW", "10m")]);
    let users: Vec<User> = (0..7).map(|_| s.new_user("waver")).collect();
    for u in &users {
        form_knock(&st, u);
    }
    // The first two knocks are invited as usual; the third starts the wave.
    for u in &users[..2] {
        s.wait_for_membership(&st.room, &u.user_id, "invite");
    }
    let (digest_id, text) = wait_until("the digest of 5", Duration::from_secs(45), || {
        digest(&st).filter(|(_, t)| t.starts_with("Join wave in default: 5 knocks held"))
    });
    for u in &users[2..] {
        assert!(text.contains(&u.user_id), "{text}");
    }
    // One digest and no notice per knock; the moderators were told the wave began.
    let bodies: Vec<String> = notices(&st.management)
        .into_iter()
        .map(|(b, _)| b)
        .collect();
    assert_eq!(
        bodies.iter().filter(|b| b.starts_with("Held")).count(),
        0,
        "{bodies:?}"
    );
    assert_eq!(
        notice_events(&st.management)
            .iter()
            .filter(|e| e["content"]["org.knock.digest"].is_object())
            .count(),
        1
    );
    assert!(
        bodies
            .iter()
            .any(|b| b.starts_with("⚠️ default: a join wave began")),
        "{bodies:?}"
    );
    // A non-moderator's tap does nothing; a moderator's invites all five.
    react_in(&st, &st.member, &digest_id, "✅");
    poll_in(&st);
    react_in(&st, &st.moderator, &digest_id, "✅");
    wait_until("everyone invited", Duration::from_secs(45), || {
        poll_in(&st);
        users[2..]
            .iter()
            .all(|u| s.membership(&st.room, &u.user_id).as_deref() == Some("invite"))
            .then_some(())
    });
    // The digest now says nothing waits, and the thread says who approved.
    wait_until("the digest's last edit", Duration::from_secs(30), || {
        digest(&st).filter(|(_, t)| t.contains("0 knocks held for a moderator (5 of 5 decided"))
    });
    let bodies: Vec<String> = notices(&st.management)
        .into_iter()
        .map(|(b, _)| b)
        .collect();
    assert!(
        bodies
            .iter()
            .any(|b| b.starts_with(&format!("Approved by {}: 5 knock(s)", st.moderator.user_id))),
        "{bodies:?}"
    );
}

#[test]
fn reject_held_since_asks_for_confirmation_above_ten_then_clears_the_queue() {
    let s = synapse();
    let st = fresh_setup(&[("WAVE_MAX_KNOCKS", "1"), ("WAVE_WINDOW", "10m")]);
    let users: Vec<User> = (0..13).map(|_| s.new_user("raider")).collect();
    for u in &users {
        form_knock(&st, u);
    }
    let held = || {
        st.worker.admin(API_KEY, "/held_knocks", None).json()["held"]
            .as_array()
            .map_or(0, |h| h.len())
    };
    wait_until("12 held", Duration::from_secs(30), || {
        (held() == 12).then_some(())
    });
    let ask = say_in(&st, &st.moderator, "!knock reject-held since 10m");
    let question = wait_until("the question", Duration::from_secs(30), || {
        poll_in(&st);
        answers_in(&st, &ask).into_iter().next()
    });
    assert!(
        question.starts_with("This would reject 12 people whose knocks are held"),
        "{question}"
    );
    assert_eq!(held(), 12, "nothing happens before the confirmation");
    // Someone else's confirmation confirms nothing.
    let other = say_in(&st, &st.member, "!knock confirm");
    let confirm = say_in(&st, &st.moderator, "!knock confirm");
    let done = wait_until("the confirmation's answer", Duration::from_secs(30), || {
        poll_in(&st);
        answers_in(&st, &confirm).into_iter().next()
    });
    assert_eq!(
        done,
        format!("Rejected by {}: 12 held knock(s).", st.moderator.user_id)
    );
    assert!(
        answers_in(&st, &other).is_empty(),
        "a non-moderator is not answered"
    );
    assert_eq!(held(), 0);
    for u in &users[1..] {
        assert_eq!(s.membership(&st.room, &u.user_id), None);
    }
}

#[test]
fn kick_joined_since_removes_the_people_knock_let_in_but_never_a_moderator() {
    let s = synapse();
    let st = fresh_setup(&[]);
    let joiners: Vec<User> = (0..2).map(|_| s.new_user("joiner")).collect();
    for u in &joiners {
        form_knock(&st, u);
        s.wait_for_membership(&st.room, &u.user_id, "invite");
        s.join(u, &st.room);
    }
    // One of them is made a moderator of the public room meanwhile.
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
        enc(&st.room)
    );
    let mut levels = s.client("GET", &path, &s.bot.token, None).json();
    levels["users"][joiners[1].user_id.as_str()] = json!(50);
    let r = s.client("PUT", &path, &s.bot.token, Some(levels));
    assert_eq!(r.status, 200, "{}", r.body);
    // Knock learns of the joins at its next run.
    let r = st
        .worker
        .get("/cdn-cgi/handler/scheduled?cron=*%2F5+*+*+*+*", &[]);
    assert_eq!(r.status, 200);
    wait_until("the joins recorded", Duration::from_secs(30), || {
        let p = st.worker.admin(API_KEY, "/pending_invites", None).json();
        p["pending"]
            .as_array()
            .is_some_and(|p| p.is_empty())
            .then_some(())
    });
    let ask = say_in(&st, &st.moderator, "!knock kick-joined since 1h");
    let answer = wait_until("the answer", Duration::from_secs(30), || {
        poll_in(&st);
        answers_in(&st, &ask).into_iter().next()
    });
    assert_eq!(
        answer,
        format!("Removed by {}: 1 member(s).", st.moderator.user_id)
    );
    assert_eq!(
        s.membership(&st.room, &joiners[0].user_id).as_deref(),
        Some("leave")
    );
    assert_eq!(
        s.membership(&st.room, &joiners[1].user_id).as_deref(),
        Some("join"),
        "a moderator is never removed"
    );
}
