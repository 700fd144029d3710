//! Homeserver faults and worker restarts: nothing accepted is lost, nothing is done twice, and
//! no 5xx reaches the form platform for an accepted knock.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::fault_proxy::{Fault, FaultProxy};
use crate::support::{synapse, wait_until, User, Worker};

/// A room of its own per scenario, so invite counts are exact.
fn scenario(extra: &[(&str, &str)]) -> (FaultProxy, Worker, String) {
    let s = synapse();
    let room = s.create_knock_room(&s.bot);
    let proxy = FaultProxy::start(&s.url);
    let mut vars: Vec<(String, String)> = Worker::base_vars(s)
        .into_iter()
        .filter(|(k, _)| k != "NEW_ROOM_ID" && k != "MATRIX_BASE_URL")
        .collect();
    vars.push(("NEW_ROOM_ID".into(), room.clone()));
    vars.push(("MATRIX_BASE_URL".into(), proxy.url.clone()));
    for (k, v) in extra {
        vars.push((k.to_string(), v.to_string()));
    }
    let w = Worker::start(&vars);
    (proxy, w, room)
}

fn knock_all(w: &Worker, users: &[User]) {
    for u in users {
        let r = w.post(
            "/invite_from_form",
            &[("Content-Type", "application/json")],
            json!({ "matrix_id": u.user_id }).to_string().as_bytes(),
        );
        assert_eq!(
            r.status, 202,
            "an accepted knock never gets a 5xx: {}",
            r.body
        );
    }
}

/// Every user invited exactly once, as Synapse's own timeline shows.
fn assert_each_invited_once(room: &str, users: &[User], within: Duration) {
    let s = synapse();
    wait_until("every knock to end in an invite", within, || {
        users
            .iter()
            .all(|u| s.membership(room, &u.user_id).as_deref() == Some("invite"))
            .then_some(())
    });
    let mut invites: HashMap<String, usize> = HashMap::new();
    for e in s.member_events(room) {
        if e["content"]["membership"] == "invite" {
            *invites
                .entry(e["state_key"].as_str().unwrap_or("").to_owned())
                .or_default() += 1;
        }
    }
    for u in users {
        assert_eq!(
            invites.get(&u.user_id),
            Some(&1),
            "{} invited exactly once",
            u.user_id
        );
    }
}

fn run_fault(fault: Fault, share: f64, extra: &[(&str, &str)], faulty_for: Duration) {
    let s = synapse();
    let (proxy, w, room) = scenario(extra);
    let users: Vec<User> = (0..30).map(|_| s.new_user("faulted")).collect();
    proxy.set_fault(fault, share);
    knock_all(&w, &users);
    std::thread::sleep(faulty_for);
    let (_, injected) = proxy.counts();
    assert!(injected > 0, "the scenario injected faults");
    proxy.clear();
    assert_each_invited_once(&room, &users, Duration::from_secs(120));
}

#[test]
fn thirty_knocks_survive_homeserver_rate_limits() {
    run_fault(
        Fault::RateLimit {
            retry_after_secs: 1,
        },
        0.3,
        &[],
        Duration::from_secs(4),
    );
}

#[test]
fn thirty_knocks_survive_homeserver_errors() {
    run_fault(Fault::ServerError, 0.3, &[], Duration::from_secs(4));
}

#[test]
fn thirty_knocks_survive_a_stalling_homeserver() {
    run_fault(
        Fault::Stall(Duration::from_secs(10)),
        0.2,
        &[("MATRIX_TIMEOUT", "2s")],
        Duration::from_secs(6),
    );
}

#[test]
fn thirty_knocks_survive_truncated_replies() {
    run_fault(Fault::Truncate, 0.3, &[], Duration::from_secs(4));
}

#[test]
fn a_backlog_survives_a_worker_restart() {
    let s = synapse();
    let (proxy, mut w, room) = scenario(&[]);
    let users: Vec<User> = (0..10).map(|_| s.new_user("backlog")).collect();
    // The homeserver is down: every knock is stored and waits.
    proxy.set_fault(Fault::ServerError, 1.0);
    knock_all(&w, &users);
    std::thread::sleep(Duration::from_secs(2));
    for u in &users {
        assert_eq!(s.membership(&room, &u.user_id), None);
    }
    // Stop the worker mid-backlog, bring the homeserver back, start the worker again.
    w.stop();
    proxy.clear();
    w.restart();
    assert_each_invited_once(&room, &users, Duration::from_secs(120));
}
