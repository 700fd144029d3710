//! The watchdog: what one cron run should do in the room.
//!
//! Decides: from the room's members (as last observed), the knocks Knock tracks, the block-list's
//! verdicts and `now`, which actions to take: mark joins, welcome, remind, rescind expired or
//! blocked invites, remove blocked members, answer native knocks, adopt untracked invites. It
//! respects a per-run budget of homeserver calls and picks up where the last run stopped.
//! Never does: the calls themselves, or any clock read.

use serde::{Deserialize, Serialize};

use super::blocklist::Outcome;
use super::lifecycle::{Event, Knock, Status};
use super::moderation::{self, BlockAction, Enforcement};

/// `KNOCK_POLICY`: what to do with native Matrix knocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KnockPolicy {
    /// The same checks as the form flow; then invite or reject.
    Auto,
    /// Only list them for the admin API (held for a moderator).
    Manual,
    /// Ignore them.
    Off,
}

impl KnockPolicy {
    pub fn parse(s: &str) -> Option<KnockPolicy> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(KnockPolicy::Auto),
            "manual" => Some(KnockPolicy::Manual),
            "off" => Some(KnockPolicy::Off),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    pub reminder_after_ms: u64,
    pub invite_expiry_ms: u64,
    /// `None` turns reminders off (an empty `REMINDER_MESSAGE`).
    pub reminder_message: Option<String>,
    /// `None` turns welcomes off (an empty `WELCOME_MESSAGE`).
    pub welcome_message: Option<String>,
    pub knock_policy: KnockPolicy,
    pub block_action: BlockAction,
}

pub use super::outcome::Member;

/// Which tasks a cron run should do. The cron fires on one schedule; each task has its own
/// interval, and an unfinished member scan (a cursor is stored) always continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub invite_check: bool,
    pub member_scan: bool,
}

impl Due {
    pub fn any(self) -> bool {
        self.invite_check || self.member_scan
    }
}

pub fn due(
    now: u64,
    last_invite_check: u64,
    last_member_scan: u64,
    scan_unfinished: bool,
    invite_check_interval_ms: u64,
    member_scan_interval_ms: u64,
) -> Due {
    Due {
        invite_check: now >= last_invite_check.saturating_add(invite_check_interval_ms),
        member_scan: scan_unfinished
            || now >= last_member_scan.saturating_add(member_scan_interval_ms),
    }
}

/// The members a run's member pass looks at: everyone during a block-list scan; in between,
/// only those knocking or invited (native knocks and invite adoption do not wait for the scan).
pub fn members_to_visit(members: &[Member], member_scan: bool) -> Vec<Member> {
    members
        .iter()
        .filter(|m| member_scan || m.membership == "knock" || m.membership == "invite")
        .cloned()
        .collect()
}

/// One step the worker layer carries out. `calls` says how many homeserver calls it costs.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Something happened to a tracked knock: store the lifecycle's answer. Any kick it owes
    /// is carried out by the room's queue, durably.
    Lifecycle { knock_id: i64, event: Event },
    /// Send the welcome message (idempotent per knock through its transaction id).
    Welcome { knock_id: i64, text: String },
    /// Direct-message a latecomer, once.
    Remind {
        knock_id: i64,
        user_id: String,
        text: String,
        /// The direct chat opened by an earlier try, if any.
        dm_room: Option<String>,
    },
    /// Remove or ban someone on the block-list whom Knock does not track.
    Enforce {
        user_id: String,
        enforcement: Enforcement,
        reason: String,
    },
    /// An invite Knock does not know of: track it from now on.
    Adopt { user_id: String },
    /// A native knock to put through the same intake as a form knock. A refusal is owed as a
    /// kick on the knock's row, so it costs nothing here.
    NativeKnock { user_id: String, event_id: String },
    /// A member with hold-level block-list evidence: listed for a moderator, left alone.
    Report { user_id: String, why: String },
}

impl Action {
    pub fn calls(&self) -> usize {
        match self {
            Action::Lifecycle { .. }
            | Action::Adopt { .. }
            | Action::NativeKnock { .. }
            | Action::Report { .. } => 0,
            // A reminder opens a direct chat (unless an earlier try did) and sends a message.
            Action::Remind { dm_room: None, .. } => 2,
            Action::Enforce { enforcement, .. } if enforcement.call().is_none() => 0,
            _ => 1,
        }
    }
}

/// Fills a message template: `{user_id}` and `{display_name}` (the user ID when there is none).
pub fn render(template: &str, user_id: &str, display_name: Option<&str>) -> String {
    template
        .replace("{user_id}", user_id)
        .replace("{display_name}", display_name.unwrap_or(user_id))
}

/// The reason given when a native knock is refused: neutral, it reveals no rule.
pub const NEUTRAL_REJECTION: &str = "Your request to join was not accepted.";

/// The block-list's graded verdict and explanation for a user ID (and display name), if any.
pub type Judge<'a> = dyn Fn(&str, Option<&str>) -> Option<(Outcome, String)> + 'a;

/// Plans one run over the members as last observed (a run never plans on a failed
/// observation) and the newest knock of every user. `blocked` answers the block-list's
/// graded verdict (hold or block) and explanation for a user (and display name), if they match.
/// Block-level evidence closes a knock or removes a member; hold-level evidence only reports a
/// member (one whose knock a moderator approved is not asked about again).
///
/// The invite check (joins, declines, leaves, removals, welcomes, reminders, expiry, blocks
/// since) runs when `due.invite_check`; the member pass runs over `members_to_visit`, from
/// `cursor` (a user ID, exclusive) on. The plan stops when the call budget is spent and says
/// which tasks finished, so a task is recorded as done only when it was.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    now: u64,
    cfg: &WatchConfig,
    due: Due,
    members: &[Member],
    latest: &[Knock],
    blocked: &Judge<'_>,
    budget: usize,
    cursor: Option<&str>,
) -> Plan {
    let mut out = Plan::default();
    let ban = cfg.block_action == BlockAction::Ban;
    let spend = |out: &mut Plan, a: Action| -> bool {
        if out.calls + a.calls() > budget {
            return false;
        }
        out.calls += a.calls();
        out.actions.push(a);
        true
    };
    let member_of = |user: &str| members.iter().find(|m| m.user_id == user);
    let event = |k: &Knock, event: Event| Action::Lifecycle {
        knock_id: k.id,
        event,
    };
    let welcome = |k: &Knock, display: Option<&str>| match &cfg.welcome_message {
        Some(t) => Action::Welcome {
            knock_id: k.id,
            text: render(t, &k.user_id, display),
        },
        // Welcomes are off: joining is the end of the story.
        None => event(k, Event::Welcomed),
    };

    // 1. The invite check: every open knock against the membership the room shows.
    if due.invite_check {
        for k in latest.iter().filter(|k| k.is_open()) {
            let Some(m) = member_of(&k.user_id) else {
                continue;
            };
            let display = m.display_name.as_deref();
            let gone = |own: Event| {
                if m.membership == "ban" || m.by_someone_else() {
                    Event::RemovedByOther
                } else {
                    own
                }
            };
            let actions: Vec<Action> = match (k.status, m.membership.as_str()) {
                (s, "join") if s.is_pending_invite() => vec![
                    event(
                        k,
                        Event::Joined {
                            display_name: m.display_name.clone(),
                        },
                    ),
                    welcome(k, display),
                ],
                // Joined, but the welcome did not go out yet (or failed): send it.
                (Status::Joined, "join") => vec![welcome(k, display)],
                (s, "leave" | "ban") if s.is_pending_invite() => {
                    vec![event(k, gone(Event::Declined))]
                }
                (Status::Joined | Status::Welcomed, "leave" | "ban") => {
                    vec![event(k, gone(Event::Left))]
                }
                (s, "invite") if s.is_pending_invite() => {
                    let invited_at = k.invited_at.unwrap_or(k.updated_at);
                    let block = blocked(&k.user_id, display)
                        .filter(|(o, _)| o.for_knock(k.approved) == Outcome::Block);
                    if let Some((_, why)) = block {
                        vec![event(
                            k,
                            Event::Blocked {
                                reason: moderation::reason(&why),
                                ban,
                            },
                        )]
                    } else if now.saturating_sub(invited_at) >= cfg.invite_expiry_ms {
                        vec![event(k, Event::Expired)]
                    } else if s == Status::Invited
                        && now.saturating_sub(invited_at) >= cfg.reminder_after_ms
                    {
                        match &cfg.reminder_message {
                            Some(t) => vec![Action::Remind {
                                knock_id: k.id,
                                user_id: k.user_id.clone(),
                                text: render(t, &k.user_id, display),
                                dm_room: k.dm_room.clone(),
                            }],
                            None => vec![],
                        }
                    } else {
                        vec![]
                    }
                }
                _ => vec![],
            };
            for a in actions {
                if !spend(&mut out, a) {
                    out.exhausted = true;
                    return out;
                }
            }
        }
        out.invite_check_done = true;
    }

    // 2. Members, from the cursor on: block-list scan, native knocks, untracked invites.
    let visit = members_to_visit(members, due.member_scan);
    let start = visit
        .iter()
        .position(|m| cursor.is_none_or(|c| m.user_id.as_str() > c))
        .unwrap_or(visit.len());
    for m in &visit[start..] {
        let newest = latest.iter().find(|k| k.user_id == m.user_id);
        let open = newest.filter(|k| k.is_open());
        let action = match m.membership.as_str() {
            "join" | "invite" => match blocked(&m.user_id, m.display_name.as_deref()) {
                // A tracked member's knock is closed as blocked; the queue owes the kick.
                Some((Outcome::Block, why)) => Some(match open {
                    Some(k) => event(
                        k,
                        Event::Blocked {
                            reason: moderation::reason(&why),
                            ban,
                        },
                    ),
                    None => Action::Enforce {
                        user_id: m.user_id.clone(),
                        enforcement: moderation::enforcement(Some(&m.membership), cfg.block_action),
                        reason: moderation::reason(&why),
                    },
                }),
                // Weak evidence against a member: a moderator looks, nothing is done to them.
                Some((Outcome::Hold, why)) if !newest.is_some_and(|k| k.approved) => {
                    Some(Action::Report {
                        user_id: m.user_id.clone(),
                        why,
                    })
                }
                _ if m.membership == "invite" && newest.is_none() => Some(Action::Adopt {
                    user_id: m.user_id.clone(),
                }),
                _ => None,
            },
            "knock" if cfg.knock_policy != KnockPolicy::Off && open.is_none() => {
                m.event_id.as_ref().map(|e| Action::NativeKnock {
                    user_id: m.user_id.clone(),
                    event_id: e.clone(),
                })
            }
            _ => None,
        };
        if let Some(a) = action {
            if !spend(&mut out, a) {
                out.exhausted = true;
                out.cursor = Some(previous_user(&visit, &m.user_id));
                return out;
            }
        }
    }
    out.cursor = None;
    out.member_pass_done = true;
    out
}

/// The cursor that makes the next run start at `user`.
fn previous_user(members: &[Member], user: &str) -> String {
    members
        .iter()
        .map(|m| m.user_id.as_str())
        .filter(|u| *u < user)
        .max()
        .unwrap_or("")
        .to_owned()
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub calls: usize,
    /// The budget ran out; the next run continues (at `cursor` for the member pass).
    pub exhausted: bool,
    /// The invite check ran to its end.
    pub invite_check_done: bool,
    /// The member pass ran to its end.
    pub member_pass_done: bool,
    /// `Some(user)`: the next run's member pass starts after this user. `None`: from the top.
    pub cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::EXPIRED_REASON;

    const NOW: u64 = 1_700_000_000_000;
    const DAY: u64 = 86_400_000;
    const ALL: Due = Due {
        invite_check: true,
        member_scan: true,
    };

    fn cfg() -> WatchConfig {
        WatchConfig {
            reminder_after_ms: DAY,
            invite_expiry_ms: 7 * DAY,
            reminder_message: Some("Your invite is waiting, {display_name}.".into()),
            welcome_message: Some("Welcome, {display_name} ({user_id})!".into()),
            knock_policy: KnockPolicy::Auto,
            block_action: BlockAction::Kick,
        }
    }
    fn member(user: &str, membership: &str) -> Member {
        Member {
            user_id: user.into(),
            membership: membership.into(),
            display_name: None,
            event_id: Some(format!("$ev-{user}")),
            sender: Some(user.into()),
        }
    }
    fn invited(id: i64, user: &str, invited_at: u64) -> Knock {
        Knock {
            id,
            status: Status::Invited,
            invited_at: Some(invited_at),
            ..Knock::new(user, "tally", invited_at)
        }
    }
    fn none(_: &str, _: Option<&str>) -> Option<(Outcome, String)> {
        None
    }
    fn run(members: &[Member], tracked: &[Knock], now: u64) -> Plan {
        plan(now, &cfg(), ALL, members, tracked, &none, 40, None)
    }
    fn lifecycle(knock_id: i64, event: Event) -> Action {
        Action::Lifecycle { knock_id, event }
    }

    #[test]
    fn a_tracked_invitee_who_joined_is_marked_and_welcomed_by_name() {
        let mut m = member("@a:x", "join");
        m.display_name = Some("Alice".into());
        let p = run(&[m], &[invited(1, "@a:x", NOW)], NOW);
        assert_eq!(
            p.actions,
            vec![
                lifecycle(
                    1,
                    Event::Joined {
                        display_name: Some("Alice".into())
                    }
                ),
                Action::Welcome {
                    knock_id: 1,
                    text: "Welcome, Alice (@a:x)!".into()
                },
            ]
        );
        assert_eq!(p.calls, 1);
    }

    #[test]
    fn welcomes_follow_the_invite_check_not_the_member_scan() {
        let due = Due {
            invite_check: true,
            member_scan: false,
        };
        let p = plan(
            NOW,
            &cfg(),
            due,
            &[member("@a:x", "join")],
            &[invited(1, "@a:x", NOW)],
            &none,
            40,
            None,
        );
        assert!(matches!(p.actions[1], Action::Welcome { knock_id: 1, .. }));
        assert!(p.invite_check_done && p.member_pass_done);
    }

    #[test]
    fn with_welcomes_off_a_join_is_recorded_as_the_end_of_the_story() {
        let mut c = cfg();
        c.welcome_message = None;
        let p = plan(
            NOW,
            &c,
            ALL,
            &[member("@a:x", "join")],
            &[invited(1, "@a:x", NOW)],
            &none,
            40,
            None,
        );
        assert_eq!(p.actions[1], lifecycle(1, Event::Welcomed));
        assert_eq!(p.calls, 0);
    }

    #[test]
    fn a_welcomed_member_is_left_alone() {
        let mut k = invited(1, "@a:x", NOW);
        k.status = Status::Welcomed;
        assert!(run(&[member("@a:x", "join")], &[k], NOW).actions.is_empty());
    }

    #[test]
    fn a_welcome_that_did_not_go_out_is_tried_again() {
        let mut k = invited(1, "@a:x", NOW);
        k.status = Status::Joined;
        let p = run(&[member("@a:x", "join")], &[k], NOW);
        assert!(matches!(
            p.actions[..],
            [Action::Welcome { knock_id: 1, .. }]
        ));
    }

    #[test]
    fn declines_leaves_and_removals_by_others_are_told_apart() {
        let k = invited(1, "@a:x", NOW);
        assert_eq!(
            run(&[member("@a:x", "leave")], std::slice::from_ref(&k), NOW).actions,
            vec![lifecycle(1, Event::Declined)]
        );
        let mut kicked = member("@a:x", "leave");
        kicked.sender = Some("@mod:x".into());
        assert_eq!(
            run(std::slice::from_ref(&kicked), std::slice::from_ref(&k), NOW).actions,
            vec![lifecycle(1, Event::RemovedByOther)]
        );
        let welcomed = Knock {
            status: Status::Welcomed,
            ..k.clone()
        };
        assert_eq!(
            run(
                &[member("@a:x", "leave")],
                std::slice::from_ref(&welcomed),
                NOW
            )
            .actions,
            vec![lifecycle(1, Event::Left)]
        );
        assert_eq!(
            run(&[member("@a:x", "ban")], &[welcomed], NOW).actions,
            vec![lifecycle(1, Event::RemovedByOther)]
        );
        // A closed knock is not looked at again.
        let declined = Knock {
            status: Status::Declined,
            ..k
        };
        assert!(run(&[kicked], &[declined], NOW).actions.is_empty());
    }

    #[test]
    fn latecomers_are_reminded_once_then_expire() {
        let k = invited(1, "@a:x", NOW);
        let members = [member("@a:x", "invite")];
        assert!(run(&members, std::slice::from_ref(&k), NOW + DAY - 1)
            .actions
            .is_empty());
        let p = run(&members, std::slice::from_ref(&k), NOW + DAY);
        assert!(
            matches!(&p.actions[..], [Action::Remind { knock_id: 1, text, dm_room: None, .. }]
            if text == "Your invite is waiting, @a:x.")
        );
        assert_eq!(p.calls, 2);
        // A try that opened the chat but did not send: one call left to make.
        let opened = Knock {
            dm_room: Some("!dm:x".into()),
            ..k.clone()
        };
        assert_eq!(run(&members, &[opened], NOW + DAY).calls, 1);
        let reminded = Knock {
            status: Status::Reminded,
            ..k.clone()
        };
        assert!(
            run(&members, std::slice::from_ref(&reminded), NOW + 2 * DAY)
                .actions
                .is_empty()
        );
        assert_eq!(
            run(&members, &[reminded], NOW + 7 * DAY).actions,
            vec![lifecycle(1, Event::Expired)]
        );
        assert_eq!(EXPIRED_REASON, "Invite expired");
    }

    #[test]
    fn an_empty_reminder_message_turns_reminders_off() {
        let mut c = cfg();
        c.reminder_message = None;
        let p = plan(
            NOW + 2 * DAY,
            &c,
            ALL,
            &[member("@a:x", "invite")],
            &[invited(1, "@a:x", NOW)],
            &none,
            40,
            None,
        );
        assert!(p.actions.is_empty());
    }

    #[test]
    fn an_invitee_blocked_since_is_closed_at_once() {
        let blocked = |u: &str, _: Option<&str>| {
            (u == "@a:x").then(|| (Outcome::Block, "matches @a:x".to_owned()))
        };
        let p = plan(
            NOW,
            &cfg(),
            ALL,
            &[member("@a:x", "invite")],
            &[invited(1, "@a:x", NOW)],
            &blocked,
            40,
            None,
        );
        assert!(matches!(&p.actions[0],
            Action::Lifecycle { knock_id: 1, event: Event::Blocked { reason, ban: false } }
            if reason.contains("matches @a:x")));
    }

    #[test]
    fn weak_evidence_against_a_member_is_reported_never_acted_on() {
        let weak = |u: &str, _: Option<&str>| {
            (u == "@matthew70:x").then(|| (Outcome::Hold, "namesake of @matthew41:x".to_owned()))
        };
        let members = [member("@matthew70:x", "join")];
        let p = plan(NOW, &cfg(), ALL, &members, &[], &weak, 40, None);
        assert_eq!(
            p.actions,
            vec![Action::Report {
                user_id: "@matthew70:x".into(),
                why: "namesake of @matthew41:x".into()
            }]
        );
        assert_eq!(p.calls, 0);
        // An invitee with weak evidence keeps the invite; the member pass reports them.
        let invitee = [member("@matthew70:x", "invite")];
        let p = plan(
            NOW,
            &cfg(),
            ALL,
            &invitee,
            &[invited(3, "@matthew70:x", NOW)],
            &weak,
            40,
            None,
        );
        assert!(
            matches!(&p.actions[..], [Action::Report { .. }]),
            "{:?}",
            p.actions
        );
        // A moderator approved their knock: the same evidence is not raised again.
        let mut approved = invited(3, "@matthew70:x", NOW);
        approved.approved = true;
        let p = plan(NOW, &cfg(), ALL, &invitee, &[approved], &weak, 40, None);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
    }

    #[test]
    fn blocked_members_are_kicked_or_banned_with_the_rule_named() {
        let blocked = |u: &str, _: Option<&str>| {
            (u == "@troll:x").then(|| (Outcome::Block, "family of @tr0ll:y".to_owned()))
        };
        let members = [member("@ok:x", "join"), member("@troll:x", "join")];
        let p = plan(NOW, &cfg(), ALL, &members, &[], &blocked, 40, None);
        assert_eq!(
            p.actions,
            vec![Action::Enforce {
                user_id: "@troll:x".into(),
                enforcement: Enforcement::Kick,
                reason: "Blocked by Knock: family of @tr0ll:y".into()
            }]
        );
        let mut c = cfg();
        c.block_action = BlockAction::Ban;
        let p = plan(NOW, &c, ALL, &members, &[], &blocked, 40, None);
        assert!(matches!(
            p.actions[0],
            Action::Enforce {
                enforcement: Enforcement::Ban,
                ..
            }
        ));
        // A tracked member's knock is closed instead; the queue owes (and retries) the ban.
        let mut k = invited(4, "@troll:x", NOW);
        k.status = Status::Welcomed;
        let p = plan(NOW, &c, ALL, &members, &[k], &blocked, 40, None);
        assert!(matches!(
            p.actions[..],
            [Action::Lifecycle {
                knock_id: 4,
                event: Event::Blocked { ban: true, .. }
            }]
        ));
    }

    #[test]
    fn native_knocks_follow_the_policy_and_reopen_after_an_end() {
        let members = [member("@k:x", "knock")];
        let p = run(&members, &[], NOW);
        assert_eq!(
            p.actions,
            vec![Action::NativeKnock {
                user_id: "@k:x".into(),
                event_id: "$ev-@k:x".into()
            }]
        );
        let mut c = cfg();
        c.knock_policy = KnockPolicy::Off;
        assert!(plan(NOW, &c, ALL, &members, &[], &none, 40, None)
            .actions
            .is_empty());
        let mut k = Knock::new("@k:x", "native", NOW);
        k.id = 3;
        assert!(run(&members, std::slice::from_ref(&k), NOW)
            .actions
            .is_empty());
        // Declined earlier, knocking again: a new knock, through the same intake.
        k.status = Status::Declined;
        assert!(matches!(
            run(&members, &[k], NOW).actions[..],
            [Action::NativeKnock { .. }]
        ));
    }

    #[test]
    fn an_untracked_invite_is_adopted() {
        let p = run(&[member("@stray:x", "invite")], &[], NOW);
        assert_eq!(
            p.actions,
            vec![Action::Adopt {
                user_id: "@stray:x".into()
            }]
        );
    }

    #[test]
    fn the_budget_splits_a_big_scan_across_runs_without_skipping_anyone() {
        let members: Vec<Member> = (0..100)
            .map(|i| member(&format!("@t{i:03}:x"), "join"))
            .collect();
        let blocked = |_: &str, _: Option<&str>| Some((Outcome::Block, "everyone".to_owned()));
        let mut cursor: Option<String> = None;
        let mut kicked = Vec::new();
        let mut runs = 0;
        loop {
            let p = plan(
                NOW,
                &cfg(),
                ALL,
                &members,
                &[],
                &blocked,
                30,
                cursor.as_deref(),
            );
            assert!(p.calls <= 30);
            runs += 1;
            for a in &p.actions {
                if let Action::Enforce { user_id, .. } = a {
                    kicked.push(user_id.clone());
                }
            }
            if !p.exhausted {
                assert!(p.member_pass_done);
                break;
            }
            assert!(!p.member_pass_done);
            cursor = p.cursor;
        }
        assert_eq!(runs, 4);
        let expected: Vec<String> = members.iter().map(|m| m.user_id.clone()).collect();
        assert_eq!(kicked, expected);
    }

    #[test]
    fn a_budget_spent_in_the_invite_check_finishes_neither_task() {
        let members: Vec<Member> = (0..5)
            .map(|i| member(&format!("@j{i}:x"), "join"))
            .collect();
        let knocks: Vec<Knock> = (0..5)
            .map(|i| invited(i, &format!("@j{i}:x"), NOW))
            .collect();
        let p = plan(NOW, &cfg(), ALL, &members, &knocks, &none, 2, None);
        assert!(p.exhausted);
        assert!(!p.invite_check_done);
        assert!(!p.member_pass_done);
        assert_eq!(p.calls, 2);
    }

    #[test]
    fn each_task_is_due_on_its_own_interval() {
        let min = 60_000;
        let d = due(NOW, NOW - 5 * min, NOW - 5 * min, false, 5 * min, 10 * min);
        assert_eq!(
            d,
            Due {
                invite_check: true,
                member_scan: false
            }
        );
        let d = due(NOW, NOW - min, NOW - 10 * min, false, 5 * min, 10 * min);
        assert_eq!(
            d,
            Due {
                invite_check: false,
                member_scan: true
            }
        );
        assert!(!due(NOW, NOW - min, NOW - min, false, 5 * min, 10 * min).any());
        assert!(due(NOW, NOW, NOW, true, 5 * min, 10 * min).member_scan);
        assert_eq!(due(NOW, 0, 0, false, 5 * min, 10 * min), ALL);
    }

    #[test]
    fn between_scans_only_knocks_and_invites_are_visited() {
        let members = [
            member("@j:x", "join"),
            member("@i:x", "invite"),
            member("@k:x", "knock"),
            member("@l:x", "leave"),
        ];
        let ids = |v: Vec<Member>| v.into_iter().map(|m| m.user_id).collect::<Vec<_>>();
        assert_eq!(ids(members_to_visit(&members, false)), vec!["@i:x", "@k:x"]);
        assert_eq!(members_to_visit(&members, true).len(), 4);
    }

    #[test]
    fn templates_fill_in_the_name_or_fall_back_to_the_id() {
        assert_eq!(render("Hi {display_name}", "@a:x", Some("A")), "Hi A");
        assert_eq!(render("Hi {display_name}", "@a:x", None), "Hi @a:x");
        assert_eq!(render("{user_id}", "@a:x", None), "@a:x");
    }

    #[test]
    fn knock_policies_parse() {
        assert_eq!(KnockPolicy::parse("Manual"), Some(KnockPolicy::Manual));
        assert_eq!(KnockPolicy::parse("nope"), None);
    }
}
