use super::*;
use crate::domain::rate_limit::{Verdict, WaveVerdict};
use serde_json::json;

const T0: u64 = 1_700_000_000_000;

fn queued() -> Knock {
    Knock {
        id: 7,
        ..Knock::new("@alice:localhost", "tally", T0)
    }
}
fn with(status: Status) -> Knock {
    Knock {
        status,
        profile_checked: true,
        invited_at: Some(T0),
        ..queued()
    }
}
fn refused(status: u16, errcode: &str, error: &str) -> Failure {
    Failure::refused(status, errcode, error)
}
fn ev(k: &Knock, e: Event, now: u64) -> Transition {
    apply(k, e, now, &RetryPolicy::default())
}
fn answer(k: &Knock, outcome: Result<Value, Failure>, now: u64) -> Transition {
    let step = k.next_step().expect("a step");
    ev(
        k,
        Event::Answered {
            step,
            outcome,
            user_is_local: true,
        },
        now,
    )
}

#[test]
fn a_new_knock_first_checks_the_profile_then_invites() {
    let k = queued();
    assert_eq!(k.next_step(), Some(Step::CheckProfile));
    assert_eq!(k.due_at(), Some(T0));
    let a = answer(&k, Ok(json!({"displayname": "Alice"})), T0 + 5);
    assert_eq!(a.name, "profile_found");
    assert_eq!(a.knock.display_name.as_deref(), Some("Alice"));
    assert_eq!(a.knock.next_step(), Some(Step::Invite));
    let sending = ev(&a.knock, Event::Inviting, T0 + 6).knock;
    assert!(sending.inviting);
    // Until its answer comes, the invite's fate is unknown: the next step would confirm it.
    assert_eq!(sending.next_step(), Some(Step::ConfirmInvite));
    let b = ev(
        &sending,
        Event::Answered {
            step: Step::Invite,
            outcome: Ok(json!({})),
            user_is_local: true,
        },
        T0 + 9,
    );
    assert_eq!(b.knock.status, Status::Invited);
    assert!(!b.knock.inviting);
    assert_eq!(b.knock.invited_at, Some(T0 + 9));
    assert_eq!(b.knock.next_step(), None);
    assert_eq!(b.knock.due_at(), None);
    assert!(b.effects.contains(&Effect::LoginWorks));
}

#[test]
fn a_404_profile_means_no_such_user_and_no_invite() {
    let a = answer(
        &queued(),
        Err(refused(404, "M_UNKNOWN", "Profile was not found")),
        T0,
    );
    assert_eq!(a.knock.status, Status::NoSuchUser);
    assert_eq!(a.knock.closed_at, Some(T0));
    assert_eq!(a.knock.next_step(), None);
}

#[test]
fn a_forbidden_profile_lookup_is_not_proof_of_absence() {
    let a = answer(&queued(), Err(refused(403, "M_FORBIDDEN", "")), T0);
    assert_eq!(a.knock.next_step(), Some(Step::Invite));
}

#[test]
fn an_unreachable_remote_server_eventually_lets_the_invite_decide() {
    let mut k = queued();
    let policy = RetryPolicy::default();
    for _ in 0..policy.remote_profile_tries {
        let e = Event::Answered {
            step: Step::CheckProfile,
            outcome: Err(Failure::Timeout),
            user_is_local: false,
        };
        k = apply(&k, e, T0, &policy).knock;
    }
    assert_eq!(k.next_step(), Some(Step::Invite));
}

#[test]
fn a_local_user_is_never_invited_without_a_profile_answer() {
    let mut k = queued();
    for i in 0..10 {
        k = answer(&k, Err(Failure::Timeout), T0 + i).knock;
    }
    assert_eq!(k.next_step(), Some(Step::CheckProfile));
    assert_eq!(k.attempts, 10);
}

#[test]
fn transient_failures_back_off_exponentially_up_to_the_cap() {
    let p = RetryPolicy::default();
    assert_eq!(p.backoff_ms(0), 1_000);
    assert_eq!(p.backoff_ms(3), 8_000);
    assert_eq!(p.backoff_ms(u32::MAX), p.max_ms);
    let a = answer(&queued(), Err(Failure::Server { status: 502 }), T0);
    assert_eq!(a.name, "retry");
    assert_eq!(a.knock.status, Status::Queued);
    assert_eq!(a.knock.attempts, 1);
    assert_eq!(a.knock.due_at(), Some(T0 + 1_000));
    assert_eq!(a.effects, vec![Effect::PauseRoomUntil(T0 + 1_000)]);
    let b = answer(&a.knock, Err(Failure::Timeout), T0 + 1_000);
    assert_eq!(b.knock.next_attempt_at, T0 + 1_000 + 2_000);
}

#[test]
fn a_rate_limit_waits_at_least_as_long_as_the_homeserver_asked() {
    let a = answer(
        &queued(),
        Err(Failure::RateLimited {
            retry_after_ms: 9_816,
        }),
        T0,
    );
    assert_eq!(a.knock.next_attempt_at, T0 + 9_816);
}

#[test]
fn retries_stop_after_the_give_up_window() {
    let late = T0 + RetryPolicy::default().give_up_after_ms;
    let a = answer(&queued(), Err(Failure::Network), late);
    assert_eq!(a.knock.status, Status::Failed);
    assert_eq!(a.name, "gave_up");
    assert_eq!(
        a.knock.last_error.as_deref(),
        Some("homeserver unreachable")
    );
}

#[test]
fn a_bad_token_holds_the_knock_without_spending_attempts() {
    let a = answer(
        &queued(),
        Err(Failure::Unauthorized {
            errcode: "M_UNKNOWN_TOKEN".into(),
        }),
        T0,
    );
    assert!(a.effects.contains(&Effect::LoginNeeded));
    assert_eq!(a.knock.status, Status::Queued);
    assert_eq!(a.knock.attempts, 0);
    assert!(a.knock.next_attempt_at > T0);
}

#[test]
fn an_invite_refused_for_good_is_recorded_with_its_reason() {
    let k = Knock {
        profile_checked: true,
        ..queued()
    };
    let a = answer(&k, Err(refused(403, "M_BAD_STATE", "user is banned")), T0);
    assert_eq!(a.knock.status, Status::Failed);
    assert_eq!(
        a.knock.last_error.as_deref(),
        Some("403 M_BAD_STATE: user is banned")
    );
}

#[test]
fn a_refusal_that_names_the_room_is_stored_without_it() {
    let k = Knock {
        profile_checked: true,
        ..queued()
    };
    let a = answer(
        &k,
        Err(refused(
            403,
            "M_FORBIDDEN",
            "User @knockbot:localhost not in room !Xyz:localhost",
        )),
        T0,
    );
    let why = a.knock.last_error.unwrap();
    assert!(!why.contains("!Xyz"), "{why}");
    assert!(why.starts_with("403 M_FORBIDDEN"));
}

#[test]
fn inviting_someone_already_in_the_room_marks_them_joined() {
    let k = Knock {
        profile_checked: true,
        ..queued()
    };
    let a = answer(
        &k,
        Err(refused(
            403,
            "M_FORBIDDEN",
            "@alice:localhost is already in the room.",
        )),
        T0,
    );
    assert_eq!(a.knock.status, Status::Joined);
}

#[test]
fn every_ending_closes_the_knock_so_a_new_one_is_not_a_repeat() {
    let cases = [
        (with(Status::Invited), Event::Declined, Status::Declined),
        (with(Status::Reminded), Event::Declined, Status::Declined),
        (with(Status::Joined), Event::Left, Status::Left),
        (with(Status::Welcomed), Event::Left, Status::Left),
        (
            with(Status::Welcomed),
            Event::RemovedByOther,
            Status::Removed,
        ),
        (
            with(Status::Invited),
            Event::RemovedByOther,
            Status::Removed,
        ),
        (with(Status::Invited), Event::Expired, Status::Expired),
        (
            with(Status::Reminded),
            Event::Rescinded { reason: "r".into() },
            Status::Rescinded,
        ),
        (
            with(Status::Welcomed),
            Event::Rescinded { reason: "r".into() },
            Status::Rescinded,
        ),
        (
            with(Status::Welcomed),
            Event::Blocked {
                reason: "rule".into(),
                ban: false,
            },
            Status::Blocked,
        ),
        (
            with(Status::Reminded),
            Event::Blocked {
                reason: "rule".into(),
                ban: false,
            },
            Status::Blocked,
        ),
        (
            with(Status::Held),
            Event::Rejected {
                reason: "no".into(),
            },
            Status::Rejected,
        ),
    ];
    for (k, e, want) in cases {
        let t = ev(&k, e.clone(), T0 + 10);
        assert_eq!(t.knock.status, want, "{:?} + {e:?}", k.status);
        assert!(!t.knock.is_open(), "{want:?} must be closed");
        assert_eq!(t.knock.closed_at, Some(T0 + 10));
        assert_ne!(admit(Some(&t.knock)), Admission::RepeatOf(7), "{want:?}");
    }
}

#[test]
fn closing_a_knock_that_gave_someone_a_membership_owes_its_removal() {
    for (k, e) in [
        (with(Status::Invited), Event::Expired),
        (
            with(Status::Joined),
            Event::Rescinded { reason: "r".into() },
        ),
        (
            with(Status::Welcomed),
            Event::Blocked {
                reason: "x".into(),
                ban: false,
            },
        ),
    ] {
        let t = ev(&k, e, T0 + 10).knock;
        assert_eq!(t.withdraw, Some(Withdraw::Kick));
        assert_eq!(t.next_step(), Some(Step::Withdraw));
        assert_eq!(t.due_at(), Some(T0 + 10));
    }
    // A queued form knock gave nobody anything: closing it owes nothing.
    let t = ev(
        &queued(),
        Event::Blocked {
            reason: "x".into(),
            ban: false,
        },
        T0,
    );
    assert_eq!(t.knock.withdraw, None);
    assert_eq!(t.knock.due_at(), None);
    // With BLOCK_ACTION=ban Knock bans even people who never got in.
    let t = ev(
        &queued(),
        Event::Blocked {
            reason: "x".into(),
            ban: true,
        },
        T0,
    );
    assert_eq!(t.knock.withdraw, Some(Withdraw::Ban));
}

#[test]
fn an_invite_in_flight_when_the_knock_closes_is_owed_back() {
    let k = Knock {
        profile_checked: true,
        ..queued()
    };
    let sending = ev(&k, Event::Inviting, T0).knock;
    let blocked = ev(
        &sending,
        Event::Blocked {
            reason: "rule".into(),
            ban: false,
        },
        T0 + 1,
    )
    .knock;
    assert_eq!(blocked.withdraw, Some(Withdraw::Kick));
    // The invite's answer arrives afterwards: it changes nothing but the in-flight flag.
    let landed = ev(
        &blocked,
        Event::Answered {
            step: Step::Invite,
            outcome: Ok(json!({})),
            user_is_local: true,
        },
        T0 + 2,
    );
    assert_eq!(landed.knock.status, Status::Blocked);
    assert!(!landed.knock.inviting);
    assert_eq!(landed.knock.next_step(), Some(Step::Withdraw));
    // The kick goes through; Knock owes nothing more.
    let gone = answer(&landed.knock, Ok(json!({})), T0 + 3);
    assert_eq!(gone.knock.withdraw, None);
    assert_eq!(gone.knock.due_at(), None);
}

#[test]
fn a_withdrawal_with_nobody_to_remove_is_done() {
    let k = ev(&with(Status::Invited), Event::Expired, T0).knock;
    let t = answer(
        &k,
        Err(refused(
            403,
            "M_FORBIDDEN",
            "The target user is not in the room",
        )),
        T0 + 1,
    );
    assert_eq!(t.name, "nothing_to_withdraw");
    assert_eq!(t.knock.withdraw, None);
}

#[test]
fn a_ban_that_went_through_is_recorded_as_knocks_own() {
    let k = ev(
        &with(Status::Joined),
        Event::Blocked {
            reason: "x".into(),
            ban: true,
        },
        T0,
    )
    .knock;
    let t = answer(&k, Ok(json!({})), T0 + 1);
    assert!(t.effects.contains(&Effect::RecordBan));
}

#[test]
fn an_unblock_before_the_kick_cancels_it() {
    let k = ev(
        &with(Status::Joined),
        Event::Blocked {
            reason: "x".into(),
            ban: false,
        },
        T0,
    )
    .knock;
    let t = ev(&k, Event::Unblocked, T0 + 1).knock;
    assert_eq!(t.withdraw, None);
    assert_eq!(t.status, Status::Blocked);
}

#[test]
fn a_refused_native_knock_owes_the_homeserver_a_kick() {
    let k = Knock::recorded("@a:x", NATIVE, Status::Blocked, "rule", T0);
    assert_eq!(k.withdraw, Some(Withdraw::Kick));
    let form = Knock::recorded("@a:x", "tally", Status::Blocked, "rule", T0);
    assert_eq!(form.withdraw, None);
    let held = Knock::recorded("@a:x", NATIVE, Status::Held, "manual", T0);
    assert!(held.is_open());
    let rejected = ev(
        &held,
        Event::Rejected {
            reason: "no".into(),
        },
        T0 + 1,
    )
    .knock;
    assert_eq!(rejected.withdraw, Some(Withdraw::Kick));
}

#[test]
fn an_approval_queues_a_held_knock_and_only_a_held_one() {
    let held = with(Status::Held);
    let t = ev(&held, Event::Approved { by: None }, T0 + 5);
    assert_eq!(t.knock.status, Status::Queued);
    assert!(t.knock.approved);
    assert_eq!(
        t.knock.last_error.as_deref(),
        Some("approved by a moderator")
    );
    let named = ev(
        &held,
        Event::Approved {
            by: Some("@mod:x".into()),
        },
        T0 + 5,
    );
    assert_eq!(
        named.knock.last_error.as_deref(),
        Some("approved by @mod:x")
    );
    assert_eq!(
        named.knock.note.as_deref(),
        Some("approved by @mod:x"),
        "who approved is kept where the invite does not clear it"
    );
    assert_eq!(t.knock.due_at(), Some(T0 + 5));
    let blocked = with(Status::Blocked);
    let t = ev(&blocked, Event::Approved { by: None }, T0 + 5);
    assert_eq!(t.name, "unchanged");
    assert_eq!(t.knock, blocked);
}

#[test]
fn weak_evidence_holds_a_queued_knock_but_never_an_approved_one() {
    let why = || Event::Suspected {
        reason: "namesake of a blocked person".into(),
    };
    let t = ev(&queued(), why(), T0 + 5);
    assert_eq!(t.name, "held");
    assert_eq!(t.knock.status, Status::Held);
    assert_eq!(t.knock.due_at(), None, "a held knock waits for a moderator");
    assert_eq!(
        t.knock.last_error.as_deref(),
        Some("namesake of a blocked person")
    );
    // The moderator approves: the same weak evidence no longer holds it.
    let approved = ev(&t.knock, Event::Approved { by: None }, T0 + 6).knock;
    let again = ev(&approved, why(), T0 + 7);
    assert_eq!(again.name, "unchanged");
    assert_eq!(again.knock.status, Status::Queued);
    // An invite already on its way, or already sent, is not taken back by weak evidence.
    let inviting = ev(&queued(), Event::Inviting, T0 + 1).knock;
    assert_eq!(ev(&inviting, why(), T0 + 2).name, "unchanged");
    assert_eq!(ev(&with(Status::Invited), why(), T0 + 2).name, "unchanged");
}

#[test]
fn joins_welcomes_and_reminders_move_forward_once() {
    let j = ev(
        &with(Status::Invited),
        Event::Joined {
            display_name: Some("Al".into()),
        },
        T0,
    );
    assert_eq!(j.knock.status, Status::Joined);
    assert_eq!(j.knock.display_name.as_deref(), Some("Al"));
    let w = ev(&j.knock, Event::Welcomed, T0 + 1).knock;
    assert_eq!(w.status, Status::Welcomed);
    assert_eq!(ev(&w, Event::Welcomed, T0 + 2).name, "unchanged");
    assert_eq!(
        ev(&w, Event::Joined { display_name: None }, T0 + 2).name,
        "unchanged"
    );
    let r = ev(&with(Status::Invited), Event::Reminded, T0).knock;
    assert_eq!(r.status, Status::Reminded);
    assert_eq!(ev(&r, Event::Reminded, T0).name, "unchanged");
}

#[test]
fn a_closed_knock_is_reopened_by_a_new_one_held_after_a_moderators_decision() {
    assert_eq!(admit(Some(&queued())), Admission::RepeatOf(7));
    assert_eq!(admit(Some(&with(Status::Welcomed))), Admission::RepeatOf(7));
    for done in [
        Status::Declined,
        Status::Left,
        Status::Expired,
        Status::NoSuchUser,
        Status::Failed,
        Status::Spam,
        Status::Blocked,
    ] {
        assert_eq!(admit(Some(&with(done))), Admission::New, "{done:?}");
    }
    for moderated in [Status::Rejected, Status::Rescinded, Status::Removed] {
        assert!(
            matches!(admit(Some(&with(moderated))), Admission::Hold(_)),
            "{moderated:?}"
        );
    }
    assert_eq!(admit(None), Admission::New);
}

#[test]
fn intake_checks_in_a_fixed_order() {
    let allow = Verdict::Allow { remaining: 3 };
    let deny = Verdict::Deny {
        retry_after_ms: 5_000,
    };
    let normal = WaveVerdict::Normal;
    let hold = WaveVerdict::Hold;
    assert_eq!(
        intake(Some(3), deny, hold, None, None),
        Intake::RepeatDelivery(3)
    );
    assert_eq!(
        intake(
            None,
            deny,
            normal,
            Some((Status::Blocked, "x".into())),
            None
        ),
        Intake::Limited {
            retry_after_ms: 5_000
        }
    );
    assert_eq!(
        intake(None, allow, hold, Some((Status::Spam, "hp".into())), None),
        Intake::Record(Status::Spam, "hp".into())
    );
    assert!(matches!(
        intake(None, allow, hold, None, None),
        Intake::Record(Status::Held, _)
    ));
    assert_eq!(intake(None, allow, normal, None, None), Intake::Queue);
    assert_eq!(
        intake(None, allow, hold, None, Some(&queued())),
        Intake::RepeatOf(7)
    );
    let rejected = with(Status::Rejected);
    assert!(matches!(
        intake(None, allow, normal, None, Some(&rejected)),
        Intake::Record(Status::Held, _)
    ));
    let declined = with(Status::Declined);
    assert_eq!(
        intake(None, allow, normal, None, Some(&declined)),
        Intake::Queue
    );
    // Weak block-list evidence holds a new knock, but never opens a second one beside an open
    // knock (which the queue re-checks before inviting); a block always records.
    let weak = || Some((Status::Held, "namesake".to_owned()));
    assert_eq!(
        intake(None, allow, normal, weak(), None),
        Intake::Record(Status::Held, "namesake".into())
    );
    assert_eq!(
        intake(None, allow, normal, weak(), Some(&queued())),
        Intake::RepeatOf(7)
    );
    assert_eq!(
        intake(
            None,
            allow,
            normal,
            Some((Status::Blocked, "b".into())),
            Some(&queued())
        ),
        Intake::Record(Status::Blocked, "b".into())
    );
}

#[test]
fn closed_knocks_are_pruned_after_the_retention_and_never_while_work_is_owed() {
    let day = 86_400_000;
    let closed = ev(&with(Status::Invited), Event::Declined, T0).knock;
    assert!(!closed.prunable(T0 + 89 * day, 90 * day));
    assert!(closed.prunable(T0 + 90 * day, 90 * day));
    let owing = ev(&with(Status::Invited), Event::Expired, T0).knock;
    assert!(!owing.prunable(T0 + 900 * day, 90 * day));
    assert!(!with(Status::Welcomed).prunable(T0 + 900 * day, 90 * day));
}

#[test]
fn delivery_ids_are_remembered_for_a_week_and_body_hashes_for_ten_minutes() {
    assert_eq!(delivery_ttl_ms("tally:abc"), 7 * 86_400_000);
    assert_eq!(delivery_ttl_ms("native:$ev"), 7 * 86_400_000);
    assert_eq!(delivery_ttl_ms("sha256:00ff"), 600_000);
}

#[test]
fn statuses_round_trip_through_their_names() {
    for s in Status::ALL {
        assert_eq!(Status::parse(s.as_str()), Some(s));
    }
    assert_eq!(Status::parse("nope"), None);
    for w in [Withdraw::Kick, Withdraw::Ban] {
        assert_eq!(Withdraw::parse(w.as_str()), Some(w));
    }
}

#[test]
fn a_body_hash_seen_before_is_a_retry_only_while_its_knock_is_open() {
    let open = queued();
    let closed = with(Status::Declined);
    assert!(is_retry("sha256:ab", &open));
    assert!(!is_retry("sha256:ab", &closed));
    assert!(is_retry("tally:evt", &closed));
}

#[test]
fn an_invite_whose_answer_never_came_is_confirmed_before_it_is_sent_again() {
    let k = Knock {
        profile_checked: true,
        ..queued()
    };
    let sending = ev(&k, Event::Inviting, T0).knock;
    assert_eq!(sending.invited_at, Some(T0));
    let lost = ev(
        &sending,
        Event::Answered {
            step: Step::Invite,
            outcome: Err(Failure::Timeout),
            user_is_local: true,
        },
        T0 + 1,
    )
    .knock;
    assert_eq!(lost.next_step(), Some(Step::ConfirmInvite));
    let confirm = |membership: Option<&str>, ended| {
        ev(
            &lost,
            Event::InviteConfirmed {
                membership: membership.map(str::to_owned),
                ended,
            },
            T0 + 2,
        )
        .knock
    };
    assert_eq!(confirm(Some("invite"), None).status, Status::Invited);
    assert_eq!(confirm(Some("join"), None).status, Status::Joined);
    assert_eq!(
        confirm(Some("leave"), Some(InviteEnd::Declined)).status,
        Status::Declined
    );
    assert_eq!(
        confirm(Some("leave"), Some(InviteEnd::Left)).status,
        Status::Left
    );
    assert_eq!(
        confirm(Some("leave"), Some(InviteEnd::Removed)).status,
        Status::Removed
    );
    // It never landed: invite again.
    let again = confirm(Some("leave"), None);
    assert_eq!(again.status, Status::Queued);
    assert_eq!(again.next_step(), Some(Step::Invite));
    let none = confirm(None, None);
    assert_eq!(none.next_step(), Some(Step::Invite));
}
