//! The management room's poll over a scripted host: a repeated sync, a poll lost after it
//! acted but before it stored its token, moderators and others, and bulk actions with their
//! confirmation.

use std::cell::RefCell;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use serde_json::{json, Value};

use super::*;
use crate::domain::deployment::room_key;

const MGMT: &str = "!mgmt:hs";
const PUBLIC: &str = "!public:hs";
const NOW: u64 = 1_800_000_000_000;

/// Runs a future that never waits (the scripted host answers at once).
fn run<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the scripted host never waits"),
    }
}

fn config() -> Config {
    Config::from_lookup(|k| {
        match k {
            "NEW_ROOM_ID" => Some(PUBLIC),
            "MATRIX_BASE_URL" => Some("http://hs.test"),
            "MATRIX_ACCESS_TOKEN" => Some("t"),
            "MANAGEMENT_ROOM_ID" => Some(MGMT),
            _ => None,
        }
        .map(str::to_owned)
    })
    .expect("config")
}

#[derive(Default)]
struct Script {
    /// What `/sync` answers (the last one again once they run out).
    syncs: Vec<Value>,
    /// Events `/event/` can fetch, by id.
    events: Vec<Value>,
    /// What a room answers to a dry run: the names it would affect.
    names: Vec<String>,
}

#[derive(Default)]
struct Fake {
    script: Script,
    sync_calls: RefCell<usize>,
    /// Ops sent to rooms, as JSON.
    ops: RefCell<Vec<Value>>,
    /// Notices Knock posted: (transaction id, body, relation).
    posted: RefCell<Vec<(String, String, Value)>>,
    blocked: RefCell<Vec<String>>,
    /// Every state the poll saved, in order.
    saved: RefCell<Vec<Stored>>,
    logs: RefCell<Vec<String>>,
}

impl ManageHost for Fake {
    fn now(&self) -> u64 {
        NOW
    }
    fn log(&self, event: &str, _fields: &[(&str, Value)]) {
        self.logs.borrow_mut().push(event.to_owned());
    }
    async fn send(&self, req: HttpRequest) -> Result<Value, Failure> {
        let url = req.url.clone();
        if url.contains("/sync?") {
            let mut n = self.sync_calls.borrow_mut();
            let i = (*n).min(self.script.syncs.len() - 1);
            *n += 1;
            return Ok(self.script.syncs[i].clone());
        }
        if url.contains("/state/m.room.power_levels") {
            return Ok(if url.contains(&crate::matrix::encode(MGMT)) {
                json!({"users": {"@mod:hs": 50, "@mod2:hs": 50, "@bot:hs": 100}})
            } else {
                json!({"users": {"@roommod:hs": 50, "@bot:hs": 100}})
            });
        }
        if let Some(id) = url.split("/event/").nth(1) {
            let id = percent_encoding::percent_decode_str(id).decode_utf8_lossy();
            return self
                .script
                .events
                .iter()
                .find(|e| e["event_id"] == id.as_ref())
                .cloned()
                .ok_or_else(|| Failure::refused(404, "M_NOT_FOUND", "no such event"));
        }
        if let Some(txn) = url.split("/send/m.room.message/").nth(1) {
            let body: Value = serde_json::from_str(req.body.as_deref().unwrap_or("{}")).unwrap();
            self.posted.borrow_mut().push((
                txn.to_owned(),
                body["body"].as_str().unwrap_or_default().to_owned(),
                body["m.relates_to"].clone(),
            ));
            return Ok(json!({"event_id": format!("$answer{}", self.posted.borrow().len())}));
        }
        panic!("unscripted request {url}");
    }
    async fn call_room(&self, _room: &Config, op: &RoomOp) -> Result<Value, String> {
        let op = serde_json::to_value(op).unwrap();
        self.ops.borrow_mut().push(op.clone());
        let names = &self.script.names;
        Ok(match op["op"].as_str().unwrap_or_default() {
            "decide_held" => json!({"changed": 1}),
            "decide_wave" | "reject_held_since" if op["dry_run"] == true => {
                json!({"users": names.len(), "names": names})
            }
            "decide_wave" | "reject_held_since" => json!({"changed": names.len(), "blocked": 0}),
            "joined_since" => json!({"users": names.len(), "names": names}),
            "remove_many" => json!({"removed": op["users"].as_array().map_or(0, |u| u.len()),
                                    "left": 0}),
            other => panic!("unscripted op {other}"),
        })
    }
    async fn block(
        &self,
        _rooms: &[(String, Config)],
        entry: &Entry,
        _reach: Option<Reach>,
    ) -> Result<Option<Value>, String> {
        self.blocked.borrow_mut().push(entry.pattern.clone());
        Ok(Some(
            json!({"status": "blocked", "rooms": [{"action": "kicked"}]}),
        ))
    }
    async fn unblock(&self, _rooms: &[(String, Config)], _p: &str) -> Result<Value, String> {
        Ok(json!({"status": "unblocked"}))
    }
    async fn save(&self, stored: &Stored) -> Result<(), String> {
        self.saved.borrow_mut().push(stored.clone());
        Ok(())
    }
}

fn manager(host: &Fake) -> Manager<'_, Fake> {
    let cfg = config();
    Manager {
        host,
        api: Api::new("http://hs.test", ""),
        room: RoomId::parse(MGMT).unwrap(),
        bot: UserId::parse("@bot:hs").unwrap(),
        rooms: vec![("default".into(), cfg)],
    }
}

fn sync(next: &str, events: Vec<Value>) -> Value {
    json!({"next_batch": next, "rooms": {"join": {MGMT: {"timeline": {"events": events}}}}})
}

fn notice(id: &str, user: &str) -> Value {
    json!({"event_id": id, "sender": "@bot:hs", "type": "m.room.message",
           "content": {"msgtype": "m.notice", "body": "Held…",
                       "org.knock.notice": {"room_key": room_key(&RoomId::parse(PUBLIC).unwrap()),
                                            "user_id": user, "knock_id": 1}}})
}

fn digest(id: &str, wave: u64) -> Value {
    json!({"event_id": id, "sender": "@bot:hs", "type": "m.room.message",
           "content": {"msgtype": "m.notice", "body": "Join wave…",
                       "org.knock.digest": {"room_key": room_key(&RoomId::parse(PUBLIC).unwrap()),
                                            "wave": wave}}})
}

fn reaction(id: &str, sender: &str, on: &str, key: &str) -> Value {
    json!({"event_id": id, "sender": sender, "type": "m.reaction", "origin_server_ts": NOW,
           "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": on, "key": key}}})
}

fn say(id: &str, sender: &str, text: &str) -> Value {
    json!({"event_id": id, "sender": sender, "type": "m.room.message", "origin_server_ts": NOW,
           "content": {"msgtype": "m.text", "body": text}})
}

fn ops_named(host: &Fake, name: &str) -> Vec<Value> {
    host.ops
        .borrow()
        .iter()
        .filter(|o| o["op"] == name)
        .cloned()
        .collect()
}

fn started() -> Stored {
    Stored {
        since: Some("s0".into()),
        ..Stored::default()
    }
}

#[test]
fn a_reaction_that_a_repeated_sync_brings_again_is_applied_once() {
    let tap = reaction("$r1", "@mod:hs", "$n1", "✅");
    let host = Fake {
        script: Script {
            // The same batch twice: the homeserver answered the old token again.
            syncs: vec![sync("s1", vec![tap.clone()]), sync("s1", vec![tap])],
            events: vec![notice("$n1", "@ann:hs")],
            ..Script::default()
        },
        ..Fake::default()
    };
    let m = manager(&host);
    let mut stored = started();
    run(m.poll(&mut stored)).unwrap();
    stored.since = Some("s0".into());
    run(m.poll(&mut stored)).unwrap();
    let decided = ops_named(&host, "decide_held");
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0]["user_id"], "@ann:hs");
    assert_eq!(decided[0]["approve"], true);
    assert_eq!(decided[0]["by"], "@mod:hs");
    let posted = host.posted.borrow();
    assert_eq!(posted.len(), 1);
    assert!(posted[0].1.starts_with("Approved by @mod:hs"), "{posted:?}");
    assert_eq!(posted[0].2["rel_type"], "m.thread");
    assert_eq!(posted[0].2["event_id"], "$n1");
}

#[test]
fn a_poll_lost_after_it_acted_does_not_act_again_from_what_it_saved() {
    let tap = reaction("$r1", "@mod:hs", "$n1", "❌");
    let host = Fake {
        script: Script {
            syncs: vec![sync("s1", vec![tap])],
            events: vec![notice("$n1", "@ann:hs")],
            ..Script::default()
        },
        ..Fake::default()
    };
    let m = manager(&host);
    let mut stored = started();
    run(m.poll(&mut stored)).unwrap();
    // The instance is lost right after the first save (the action's), before the token's:
    // the next poll starts from what that save stored, and reads the same batch again.
    let mut after_action = host.saved.borrow()[0].clone();
    assert_eq!(
        after_action.since.as_deref(),
        Some("s0"),
        "the token was not saved yet"
    );
    run(m.poll(&mut after_action)).unwrap();
    assert_eq!(ops_named(&host, "decide_held").len(), 1);
    assert_eq!(after_action.since.as_deref(), Some("s1"));
}

#[test]
fn taps_and_commands_from_non_moderators_do_nothing() {
    let host = Fake {
        script: Script {
            syncs: vec![sync(
                "s1",
                vec![
                    reaction("$r1", "@stranger:hs", "$n1", "✅"),
                    say("$c1", "@stranger:hs", "!knock block @ann:hs"),
                ],
            )],
            events: vec![notice("$n1", "@ann:hs")],
            ..Script::default()
        },
        ..Fake::default()
    };
    let m = manager(&host);
    let mut stored = started();
    run(m.poll(&mut stored)).unwrap();
    assert!(host.ops.borrow().is_empty());
    assert!(host.blocked.borrow().is_empty());
    assert!(host.posted.borrow().is_empty());
    let logs = host.logs.borrow();
    assert!(logs.contains(&"reaction_ignored".to_owned()));
    assert!(logs.contains(&"command_ignored".to_owned()));
}

#[test]
fn the_hammer_never_blocks_a_moderator_of_either_room() {
    let host = Fake {
        script: Script {
            syncs: vec![sync(
                "s1",
                vec![
                    reaction("$r1", "@mod:hs", "$n1", "🔨"),
                    reaction("$r2", "@mod:hs", "$n2", "🔨"),
                ],
            )],
            events: vec![notice("$n1", "@roommod:hs"), notice("$n2", "@troll:hs")],
            ..Script::default()
        },
        ..Fake::default()
    };
    let m = manager(&host);
    let mut stored = started();
    run(m.poll(&mut stored)).unwrap();
    assert_eq!(*host.blocked.borrow(), vec!["@troll:hs".to_owned()]);
    let posted = host.posted.borrow();
    assert!(
        posted[0].1.starts_with("Not blocked: @roommod:hs"),
        "{posted:?}"
    );
    assert!(
        posted[1].1.starts_with("Blocked by @mod:hs: @troll:hs"),
        "{posted:?}"
    );
}

fn many(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("@raider{i}:hs")).collect()
}

#[test]
fn a_tap_on_a_big_digest_asks_first_and_only_its_moderator_confirms() {
    let host = Fake {
        script: Script {
            syncs: vec![
                sync("s1", vec![reaction("$r1", "@mod:hs", "$d1", "✅")]),
                sync("s2", vec![say("$c1", "@mod2:hs", "!knock confirm")]),
                sync("s3", vec![say("$c2", "@mod:hs", "!knock confirm")]),
            ],
            events: vec![digest("$d1", 42)],
            names: many(14),
        },
        ..Fake::default()
    };
    let m = manager(&host);
    let mut stored = started();
    run(m.poll(&mut stored)).unwrap();
    assert!(ops_named(&host, "decide_wave")
        .iter()
        .all(|o| o["dry_run"] == true));
    assert_eq!(stored.waiting.len(), 1);
    assert!(
        host.posted.borrow()[0]
            .1
            .starts_with("This would approve 14 people held by the join wave"),
        "{:?}",
        host.posted.borrow()
    );
    // Another moderator's confirmation confirms nothing of theirs.
    run(m.poll(&mut stored)).unwrap();
    assert_eq!(
        host.posted.borrow()[1].1,
        "Nothing is waiting for your confirmation."
    );
    run(m.poll(&mut stored)).unwrap();
    let done: Vec<Value> = ops_named(&host, "decide_wave")
        .into_iter()
        .filter(|o| o["dry_run"] == false)
        .collect();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0]["wave"], 42);
    assert_eq!(done[0]["approve"], true);
    assert_eq!(done[0]["by"], "@mod:hs");
    assert!(host.posted.borrow()[2]
        .1
        .starts_with("Approved by @mod:hs: 14 knock(s)"));
    assert!(stored.waiting.is_empty());
}

#[test]
fn a_small_digest_is_decided_at_once() {
    let host = Fake {
        script: Script {
            syncs: vec![sync("s1", vec![reaction("$r1", "@mod:hs", "$d1", "❌")])],
            events: vec![digest("$d1", 7)],
            names: many(3),
        },
        ..Fake::default()
    };
    let m = manager(&host);
    let mut stored = started();
    run(m.poll(&mut stored)).unwrap();
    let done: Vec<Value> = ops_named(&host, "decide_wave")
        .into_iter()
        .filter(|o| o["dry_run"] == false)
        .collect();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["approve"], false);
    assert_eq!(
        host.posted.borrow()[0].1,
        "Rejected by @mod:hs: 3 held knock(s)."
    );
}

#[test]
fn reject_held_since_asks_above_ten_then_rejects_from_that_instant() {
    let host = Fake {
        script: Script {
            syncs: vec![
                sync(
                    "s1",
                    vec![say("$c1", "@mod:hs", "!knock reject-held since 10m")],
                ),
                sync("s2", vec![say("$c2", "@mod:hs", "!knock confirm")]),
            ],
            names: many(12),
            ..Script::default()
        },
        ..Fake::default()
    };
    let m = manager(&host);
    let mut stored = started();
    run(m.poll(&mut stored)).unwrap();
    assert!(host.posted.borrow()[0]
        .1
        .starts_with("This would reject 12 people whose knocks are held"));
    run(m.poll(&mut stored)).unwrap();
    let done: Vec<Value> = ops_named(&host, "reject_held_since")
        .into_iter()
        .filter(|o| o["dry_run"] == false)
        .collect();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["since_ms"], NOW - 600_000);
    assert_eq!(
        host.posted.borrow()[1].2["m.in_reply_to"]["event_id"],
        "$c2"
    );
}

#[test]
fn kick_joined_since_never_removes_the_bot_or_a_moderator() {
    let mut names = many(3);
    names.push("@roommod:hs".into());
    names.push("@bot:hs".into());
    names.push("@mod2:hs".into());
    let host = Fake {
        script: Script {
            syncs: vec![sync(
                "s1",
                vec![say("$c1", "@mod:hs", "!knock kick-joined since 1h")],
            )],
            names,
            ..Script::default()
        },
        ..Fake::default()
    };
    let m = manager(&host);
    let mut stored = started();
    run(m.poll(&mut stored)).unwrap();
    let removed = ops_named(&host, "remove_many");
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0]["users"], json!(many(3)));
    assert_eq!(
        host.posted.borrow()[0].1,
        "Removed by @mod:hs: 3 member(s)."
    );
}

#[test]
fn the_first_read_acts_only_on_the_last_two_minutes() {
    let mut old = reaction("$r1", "@mod:hs", "$n1", "✅");
    old["origin_server_ts"] = json!(NOW - FIRST_READ_WINDOW_MS - 1);
    let host = Fake {
        script: Script {
            syncs: vec![sync("s1", vec![old])],
            events: vec![notice("$n1", "@ann:hs")],
            ..Script::default()
        },
        ..Fake::default()
    };
    let m = manager(&host);
    let mut stored = Stored::default();
    run(m.poll(&mut stored)).unwrap();
    assert!(host.ops.borrow().is_empty());
    assert_eq!(stored.since.as_deref(), Some("s1"));
}
