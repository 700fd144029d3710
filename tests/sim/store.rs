//! The room's store on real SQLite: the upgrade of a first-release database, compare-and-set
//! writes, retention, and forgetting a person.

use std::rc::Rc;

use knock::domain::lifecycle::{self, Event, Knock, RetryPolicy, Status, Withdraw};
use knock::room::store::{KnockQuery, Sql, Store};

use crate::SimSql;

const T0: u64 = 1_800_000_000_000;
const DAY: u64 = 86_400_000;

fn fresh() -> (Rc<rusqlite::Connection>, Store<SimSql>) {
    let db = Rc::new(rusqlite::Connection::open_in_memory().expect("sqlite"));
    let store = Store::open(SimSql(db.clone())).expect("schema");
    (db, store)
}

/// The first release's schema and rows, exactly as it wrote them.
const FIRST_RELEASE: &str = "
CREATE TABLE knocks (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,
  source TEXT NOT NULL, status TEXT NOT NULL, profile_checked INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL, last_error TEXT,
  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, invited_at INTEGER, display_name TEXT);
CREATE INDEX knocks_by_user ON knocks(user_id, id);
CREATE INDEX knocks_due ON knocks(status, next_attempt_at);
CREATE TABLE deliveries (key TEXT PRIMARY KEY, knock_id INTEGER NOT NULL, received_at INTEGER NOT NULL);
CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE members (user_id TEXT PRIMARY KEY, membership TEXT NOT NULL, display_name TEXT, event_id TEXT);
CREATE TABLE bans (user_id TEXT PRIMARY KEY, reason TEXT NOT NULL, placed_at INTEGER NOT NULL);
INSERT INTO knocks (user_id, source, status, profile_checked, attempts, next_attempt_at, last_error, created_at, updated_at, invited_at) VALUES
  ('@q:x', 'tally', 'queued', 1, 2, 1800000005000, 'homeserver error 502', 1800000000000, 1800000001000, NULL),
  ('@i:x', 'json', 'invited', 1, 0, 1800000000000, NULL, 1800000000000, 1800000002000, 1800000002000),
  ('@r:x', 'json', 'reminded', 1, 0, 1800000000000, NULL, 1800000000000, 1800000003000, 1800000002000),
  ('@w:x', 'native', 'welcomed', 1, 0, 1800000000000, NULL, 1800000000000, 1800000004000, 1800000002000),
  ('@e:x', 'json', 'rescinded', 1, 0, 1800000000000, 'Invite expired', 1800000000000, 1800000005000, 1800000002000),
  ('@m:x', 'json', 'rescinded', 1, 0, 1800000000000, 'Invite withdrawn by a moderator', 1800000000000, 1800000006000, 1800000002000),
  ('@h:x', 'html_form', 'held', 0, 0, 1800000000000, 'held for a moderator: join wave', 1800000000000, 1800000000000, NULL),
  ('@b:x', 'json', 'blocked', 0, 0, 1800000000000, 'matches blocked @b:x (exact)', 1800000000000, 1800000000000, NULL),
  ('@s:x', 'html_form', 'spam', 0, 0, 1800000000000, 'honeypot field filled', 1800000000000, 1800000000000, NULL);
INSERT INTO deliveries VALUES ('tally:evt1', 1, 1800000000000), ('sha256:ab', 2, 1800000000000);
INSERT INTO meta VALUES ('dm:@r:x', '\"!dm1:x\"'), ('mxid:@q:x', '{\"log\":[1800000000000]}'), ('since', '\"s42\"');
INSERT INTO members VALUES ('@w:x', 'join', 'W', '$1');
";

#[test]
fn a_first_release_database_is_upgraded_in_place_and_every_knock_keeps_its_meaning() {
    let db = Rc::new(rusqlite::Connection::open_in_memory().expect("sqlite"));
    db.execute_batch(FIRST_RELEASE).expect("first release");
    let store = Store::open(SimSql(db.clone())).expect("upgrade");
    let all = store
        .page(&KnockQuery {
            limit: 100,
            ..Default::default()
        })
        .expect("read");
    let by_user = |u: &str| all.iter().find(|k| k.user_id == u).expect(u).clone();
    let q = by_user("@q:x");
    assert_eq!(q.status, Status::Queued);
    assert_eq!(q.attempts, 2);
    assert_eq!(q.due_at(), Some(1_800_000_005_000), "queued work stays due");
    assert_eq!(store.earliest_due().expect("due"), Some(1_800_000_005_000));
    assert_eq!(by_user("@i:x").status, Status::Invited);
    assert!(by_user("@i:x").is_open());
    let r = by_user("@r:x");
    assert_eq!(r.status, Status::Reminded);
    assert_eq!(
        r.dm_room.as_deref(),
        Some("!dm1:x"),
        "the DM moved onto the knock"
    );
    assert_eq!(by_user("@w:x").status, Status::Welcomed);
    let e = by_user("@e:x");
    assert_eq!(
        e.status,
        Status::Expired,
        "the old release's expiry is named"
    );
    assert_eq!(e.closed_at, Some(1_800_000_005_000));
    assert_eq!(by_user("@m:x").status, Status::Rescinded);
    assert_eq!(by_user("@h:x").status, Status::Held);
    assert_eq!(by_user("@b:x").status, Status::Blocked);
    assert_eq!(by_user("@s:x").status, Status::Spam);
    for k in &all {
        assert_eq!(k.version, 0, "untouched rows start at version 0");
        assert_eq!(k.withdraw, None);
        assert!(!k.inviting);
        if !k.is_open() {
            assert!(k.closed_at.is_some(), "{} has a closing time", k.user_id);
        }
    }
    // Deliveries got their expiry; meta keys moved into their tables.
    assert_eq!(store.delivery("tally:evt1", T0 + DAY).expect("d"), Some(1));
    assert_eq!(
        store.delivery("sha256:ab", T0 + 11 * 60_000).expect("d"),
        None
    );
    assert!(store.meta::<String>("dm:@r:x").expect("meta").is_none());
    assert!(store
        .limit_state::<serde_json::Value>("mxid:@q:x")
        .expect("limit")
        .is_some());
    assert_eq!(
        store.meta::<Option<String>>("since").expect("meta"),
        Some(Some("s42".into()))
    );
    assert_eq!(store.members().expect("members").len(), 1);
    // Opening again is a no-op, and the upgraded rows take compare-and-set writes.
    let again = Store::open(SimSql(db)).expect("reopen");
    let stored = again.put(&q).expect("put").expect("a fresh copy writes");
    assert_eq!(stored.version, 1);
}

#[test]
fn a_stale_copy_can_never_overwrite_a_newer_row() {
    let (_db, store) = fresh();
    let k = store
        .insert(&Knock::new("@a:x", "json", T0))
        .expect("insert");
    let policy = RetryPolicy::default();
    let blocked = lifecycle::apply(
        &k,
        Event::Blocked {
            reason: "rule".into(),
            ban: false,
        },
        T0 + 1,
        &policy,
    )
    .knock;
    assert!(store.put(&blocked).expect("put").is_some());
    // The copy read before the block still says queued: its write is refused.
    let stale = lifecycle::apply(&k, Event::Inviting, T0 + 2, &policy).knock;
    assert!(store.put(&stale).expect("put").is_none());
    assert_eq!(
        store.get(k.id).expect("get").expect("row").status,
        Status::Blocked
    );
}

#[test]
fn closed_knocks_are_pruned_into_daily_counts_and_owing_ones_are_kept() {
    let (_db, store) = fresh();
    let policy = RetryPolicy::default();
    let mut ids = Vec::new();
    for (user, event) in [
        ("@d:x", Event::Declined),
        ("@e:x", Event::Expired),
        ("@f:x", Event::Declined),
    ] {
        let k = store
            .insert(&Knock {
                status: Status::Invited,
                invited_at: Some(T0),
                ..Knock::new(user, "json", T0)
            })
            .expect("insert");
        let t = lifecycle::apply(&k, event, T0, &policy).knock;
        ids.push(store.put(&t).expect("put").expect("stored").id);
    }
    let open = store.insert(&Knock::new("@o:x", "json", T0)).expect("open");
    store
        .put_delivery("sha256:x", ids[0], T0)
        .expect("delivery");
    assert_eq!(store.prune(T0 + 89 * DAY, 90 * DAY, 100).expect("prune"), 0);
    // The expired one still owes its kick: it stays, whatever its age.
    assert_eq!(store.prune(T0 + 90 * DAY, 90 * DAY, 100).expect("prune"), 2);
    assert!(store.get(ids[1]).expect("get").is_some());
    assert!(store.get(open.id).expect("get").is_some());
    assert_eq!(
        store.daily_counts().expect("counts"),
        vec![(lifecycle::day_of(T0), "declined".to_owned(), 2)]
    );
    let owed = store.get(ids[1]).expect("get").expect("row");
    assert_eq!(owed.withdraw, Some(Withdraw::Kick));
}

#[test]
fn forgetting_a_person_leaves_nothing_of_theirs_but_others_untouched() {
    let (db, store) = fresh();
    let a = store.insert(&Knock::new("@a:x", "json", T0)).expect("a");
    store
        .insert(&Knock::new("@a:x", "json", T0 + 1))
        .expect("a2");
    let b = store.insert(&Knock::new("@b:x", "json", T0)).expect("b");
    store.put_delivery("tally:1", a.id, T0).expect("d");
    store.put_delivery("tally:2", b.id, T0).expect("d");
    store
        .set_limit_state("mxid:@a:x", &serde_json::json!({}), T0 + DAY)
        .expect("limit");
    let gone = store.forget("@a:x").expect("forget");
    assert_eq!(gone.knocks, 2);
    assert_eq!(gone.deliveries, 1);
    assert!(store.latest_for("@a:x").expect("read").is_none());
    assert!(store.latest_for("@b:x").expect("read").is_some());
    assert_eq!(store.delivery("tally:2", T0).expect("d"), Some(b.id));
    let sql = SimSql(db);
    let left: Vec<serde_json::Value> = sql
        .query("SELECT key FROM limits WHERE key = 'mxid:@a:x'", &[])
        .expect("limits");
    assert!(left.is_empty());
}

#[test]
fn a_reported_member_stays_dismissed_until_the_evidence_changes_and_stale_reports_go() {
    let (_db, store) = fresh();
    let why = "@matthew52:x matches blocked @matthew19:x; held for a moderator, not blocked";
    assert!(store
        .report_member("@matthew52:x", why, T0)
        .expect("report"));
    assert!(!store
        .report_member("@matthew52:x", why, T0 + 1)
        .expect("again"));
    assert_eq!(store.reviews().expect("reviews")[0].user_id, "@matthew52:x");
    assert!(store.dismiss_review("@matthew52:x").expect("dismiss"));
    assert!(!store.dismiss_review("@matthew52:x").expect("twice"));
    // The same evidence on the next pass: still dismissed.
    store
        .report_member("@matthew52:x", why, T0 + 2)
        .expect("pass");
    assert!(store.reviews().expect("reviews").is_empty());
    // New evidence asks again.
    assert!(store
        .report_member("@matthew52:x", "another entry", T0 + 3)
        .expect("new"));
    assert_eq!(store.reviews().expect("reviews").len(), 1);
    // A whole pass that began after the last report did not see them again: the report goes.
    store
        .report_member("@other:x", why, T0 + 10)
        .expect("other");
    store.prune_reviews(T0 + 5).expect("prune");
    let left: Vec<String> = store
        .reviews()
        .expect("reviews")
        .into_iter()
        .map(|r| r.user_id)
        .collect();
    assert_eq!(left, vec!["@other:x".to_owned()]);
    // Forgetting a person removes their report too.
    store.forget("@other:x").expect("forget");
    assert!(store.reviews().expect("reviews").is_empty());
}

#[test]
fn owed_work_is_owed_once_retried_with_back_off_and_keeps_what_it_got_back() {
    let (_db, store) = fresh();
    assert!(store.owe_once("deny", "7", None, T0).expect("owe"));
    assert!(
        !store.owe_once("deny", "7", None, T0 + 5).expect("owe"),
        "owed once"
    );
    let due = store.owed_due("deny", T0, 10).expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].attempts, 0);
    assert_eq!(store.owed_next().expect("next"), Some(T0));
    // A direct chat was opened, then the message failed: the retry waits, and reuses the chat.
    store.owed_progress("deny", "7", "!dm:x").expect("progress");
    store.owed_retry("deny", "7", 0, T0).expect("retry");
    assert!(store.owed_due("deny", T0 + 1, 10).expect("due").is_empty());
    let wait = knock::room::store::backoff(0);
    let again = store.owed_due("deny", T0 + wait, 10).expect("due");
    assert_eq!(again[0].result.as_deref(), Some("!dm:x"));
    assert_eq!(again[0].attempts, 1);
    store.owed_done("deny", "7", None, T0 + wait).expect("done");
    assert_eq!(store.owed_next().expect("next"), None);
    assert_eq!(
        store.owed_result("deny", "7").expect("result").as_deref(),
        Some("!dm:x")
    );
    // A digest that grows is owed again (an edit), and keeps its event id; its next try is
    // never postponed by a later owe.
    store.owe("digest", "42", None, T0 + 100).expect("owe");
    store
        .owed_done("digest", "42", Some("$d"), T0 + 100)
        .expect("done");
    store.owe("digest", "42", None, T0 + 200).expect("owe");
    store.owe("digest", "42", None, T0 + 900).expect("owe");
    assert!(
        store
            .owed_due("digest", T0 + 199, 10)
            .expect("due")
            .is_empty(),
        "an edit waits for its own time, not the first post's"
    );
    let d = store.owed_due("digest", T0 + 200, 10).expect("due");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].result.as_deref(), Some("$d"));
}

#[test]
fn a_knocks_answers_and_owed_messages_go_when_the_person_is_forgotten() {
    let (_db, store) = fresh();
    let a = store.insert(&Knock::new("@a:x", "tally", T0)).expect("a");
    let b = store.insert(&Knock::new("@b:x", "tally", T0)).expect("b");
    let answers = vec![("Why?".to_owned(), "to chat".to_owned())];
    store.put_answers(a.id, &answers).expect("answers");
    store.put_answers(b.id, &answers).expect("answers");
    store
        .owe_once("deny", &a.id.to_string(), None, T0)
        .expect("owe");
    store.add_wave_knock(T0, a.id).expect("wave");
    store.forget("@a:x").expect("forget");
    assert!(store.answers(a.id).expect("read").is_empty());
    assert_eq!(store.answers(b.id).expect("read"), answers);
    assert!(store.owed_due("deny", T0, 10).expect("due").is_empty());
    assert_eq!(store.wave_held(T0).expect("wave").1, 0);
}

#[test]
fn intake_reads_the_latest_knock_in_its_one_statement_exactly_as_latest_for_reads_it() {
    let (_db, store) = fresh();
    let nothing = store
        .intake_state::<serde_json::Value, serde_json::Value>("k", T0, "mxid:@a:x", "wave", "@a:x")
        .expect("intake state");
    assert!(nothing.latest.is_none() && nothing.delivery.is_none());
    store.insert(&Knock::new("@a:x", "json", T0)).expect("a");
    // A newer one with every optional column set, text that needs escaping included.
    let mut k = Knock::new("@a:x", "tally", T0 + 1);
    k.last_error = Some("a \"quoted\" reason, \\ and ünïcode".into());
    k.display_name = Some("A".into());
    k.note = Some("read in lower case".into());
    k.invited_at = Some(T0 + 2);
    let stored = store.insert(&k).expect("a2");
    store
        .insert(&Knock::new("@b:x", "json", T0 + 3))
        .expect("b");
    store.put_delivery("tally:1", stored.id, T0).expect("d");
    store
        .set_limit_state("mxid:@a:x", &serde_json::json!({"n": 1}), T0 + DAY)
        .expect("limit");
    store
        .set_meta("wave", &serde_json::json!({"w": 2}))
        .expect("meta");
    let s = store
        .intake_state::<serde_json::Value, serde_json::Value>(
            "tally:1",
            T0,
            "mxid:@a:x",
            "wave",
            "@a:x",
        )
        .expect("intake state");
    assert_eq!(s.delivery, Some(stored.id));
    assert_eq!(s.limit, Some(serde_json::json!({"n": 1})));
    assert_eq!(s.meta, Some(serde_json::json!({"w": 2})));
    assert_eq!(s.latest, store.latest_for("@a:x").expect("latest"));
    assert_eq!(s.latest.map(|k| k.id), Some(stored.id));
}

#[test]
fn the_queue_sees_no_due_knock_while_the_room_is_paused() {
    let (_db, store) = fresh();
    let k = store.insert(&Knock::new("@a:x", "json", T0)).expect("a");
    assert_eq!(
        store.due_unpaused(T0, 20).expect("due"),
        store.due(T0, 20).expect("due")
    );
    assert_eq!(store.due_unpaused(T0, 20).expect("due")[0].id, k.id);
    store.set_meta("pause_until", &(T0 + 10)).expect("pause");
    assert!(store.due_unpaused(T0, 20).expect("due").is_empty());
    assert!(store.due_unpaused(T0 + 9, 20).expect("due").is_empty());
    assert_eq!(store.due_unpaused(T0 + 10, 20).expect("due").len(), 1);
}
