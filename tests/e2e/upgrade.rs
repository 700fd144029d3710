//! An existing deployment upgrades in place: the worker starts on Durable Object state that the
//! first release (2de9d81) persisted (tests/fixtures/legacy-v1, see its README), migrates the
//! room's schema, and every knock keeps its meaning.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::support::{repo_root, Worker};

fn fixture() -> Value {
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures/legacy-v1/expected.json"))
        .expect("expected.json");
    serde_json::from_str(&text).expect("fixture JSON")
}

fn users(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .filter_map(|k| k["user_id"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn state_written_by_the_first_release_is_upgraded_and_every_knock_is_kept() {
    let expected = fixture();
    let key = expected["api_key"].as_str().expect("api key").to_owned();
    let mut vars: Vec<(String, String)> = expected["vars"]
        .as_object()
        .expect("vars")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
        .collect();
    // Nothing listens on port 9: the homeserver is unreachable, so nothing moves on its own.
    vars.push(("MATRIX_ACCESS_TOKEN".into(), "legacy-token".into()));
    // The fixture ages with the calendar: keep its closed knocks past the default 90 days, so a
    // watchdog run the old state may owe never prunes what this test counts.
    vars.push(("KNOCK_RETENTION".into(), "3650d".into()));
    let w = Worker::start_on_state(
        &vars,
        &repo_root().join("tests/fixtures/legacy-v1/state.tar.gz"),
    );

    let r = w.admin(&key, "/knocks?limit=1000", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let now = r.json();
    let got = now["knocks"].as_array().expect("knocks");
    let want = expected["knocks"].as_array().expect("expected knocks");
    assert_eq!(got.len(), want.len(), "every knock is still there");
    // Users whose queued knock has failed for good by now: no longer pending.
    let mut gave_up = BTreeSet::new();
    for old in want {
        let id = old["id"].as_i64().expect("id");
        let new = got
            .iter()
            .find(|k| k["id"] == id)
            .unwrap_or_else(|| panic!("knock {id} is gone"));
        for field in ["user_id", "source", "received_at"] {
            assert_eq!(new[field], old[field], "knock {id}: {field}");
        }
        let old_verdict = old["verdict"].as_str().expect("verdict");
        let want_verdict = match (old_verdict, old["reason"].as_str()) {
            // The first release recorded an expiry as a rescind with this reason.
            ("rescinded", Some("Invite expired")) => "expired",
            // Its queued knock is retried against the unreachable homeserver and fails for
            // good once it is 48 hours old.
            ("queued", _) => {
                let age = crate::support::now_ms()
                    .saturating_sub(old["received_at"].as_u64().expect("received_at"));
                if age >= 48 * 3_600_000 {
                    gave_up.insert(old["user_id"].as_str().expect("user_id").to_owned());
                    "failed"
                } else {
                    "queued"
                }
            }
            (v, _) => v,
        };
        assert_eq!(new["verdict"], want_verdict, "knock {id}: {new}");
        if old_verdict != "queued" {
            assert_eq!(new["reason"], old["reason"], "knock {id} keeps its reason");
            assert_eq!(
                new["updated_at"], old["updated_at"],
                "knock {id} was not rewritten"
            );
        }
        let closed = ![
            "queued", "held", "invited", "reminded", "joined", "welcomed",
        ]
        .contains(&want_verdict);
        assert_eq!(!new["closed_at"].is_null(), closed, "knock {id}: {new}");
    }

    let pending = w.admin(&key, "/pending_invites", None);
    assert_eq!(pending.status, 200, "{}", pending.body);
    // The fixture's pending list was read when its queued knock was young; once that knock has
    // failed for good (48 hours after it was received), it is no longer pending.
    let want_pending: BTreeSet<String> = users(&expected["pending"])
        .difference(&gave_up)
        .cloned()
        .collect();
    assert_eq!(users(&pending.json()["pending"]), want_pending);
    let held = w.admin(&key, "/held_knocks", None);
    assert_eq!(held.status, 200, "{}", held.body);
    assert_eq!(users(&held.json()["held"]), users(&expected["held"]));

    // Upgraded rows take the new writes: a moderator rejects a knock held by the old release.
    let held_user = users(&expected["held"])
        .into_iter()
        .next()
        .expect("a held knock");
    let r = w.admin(&key, "/reject_knock", Some(json!({ "user_id": held_user })));
    assert_eq!(r.status, 200, "{}", r.body);
    let after = w.admin(&key, "/held_knocks", None).json();
    assert!(!users(&after["held"]).contains(&held_user));
}
