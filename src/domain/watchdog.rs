//! The watchdog: what one cron run should do in the room.
//!
//! Decides: from the room's members (as last observed), the knocks Knock tracks, the block-list's
//! verdicts and `now`, which actions to take: mark joins, welcome, remind, rescind expired or
//! blocked invites, remove blocked members, answer native knocks, adopt untracked invites. It
//! respects a per-run budget of homeserver calls and picks up where the last run stopped.
//! Never does: the calls themselves, or any clock read.

use serde::{Deserialize, Serialize};

use super::invites::{Knock, Status};
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

/// A room member as last observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: String,
    pub membership: String,
    pub display_name: Option<String>,
    /// The membership event, for de-duplicating native knocks.
    pub event_id: Option<String>,
}

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

/// The members a run looks at: everyone during a block-list scan; in between, only those
/// knocking or invited (native knocks and invite adoption do not wait for the scan).
pub fn members_to_visit(members: &[Member], member_scan: bool) -> Vec<Member> {
    members
        .iter()
        .filter(|m| member_scan || m.membership == "knock" || m.membership == "invite")
        .cloned()
        .collect()
}

/// One step the worker layer carries out. `calls` says how many homeserver calls it costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A tracked invitee is now in the room.
    MarkJoined {
        knock_id: i64,
        display_name: Option<String>,
    },
    /// Send the welcome message (idempotent per knock through its transaction id).
    Welcome { knock_id: i64, text: String },
    /// Direct-message a latecomer, once.
    Remind {
        knock_id: i64,
        user_id: String,
        text: String,
    },
    /// Withdraw an invite (a kick), with a reason.
    Rescind {
        knock_id: i64,
        user_id: String,
        reason: String,
    },
    /// Remove or ban someone on the block-list.
    Enforce {
        user_id: String,
        enforcement: Enforcement,
        reason: String,
    },
    /// An invite Knock does not know of: track it from now on.
    Adopt { user_id: String },
    /// A native knock to put through the same intake as a form knock.
    NativeKnock { user_id: String, event_id: String },
    /// Refuse a native knock again (an earlier rejection did not take).
    RejectKnock { user_id: String },
}

impl Action {
    pub fn calls(&self) -> usize {
        match self {
            Action::MarkJoined { .. } | Action::Adopt { .. } | Action::NativeKnock { .. } => 0,
            // A reminder opens a direct chat and sends a message.
            Action::Remind { .. } => 2,
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
pub const EXPIRED_REASON: &str = "Invite expired";

/// Plans one run. `blocked` answers the block-list's explanation for a user (and display name),
/// if they match. Members are visited from `cursor` (a user ID, exclusive) in order; the plan
/// stops when the call budget is spent and returns where the next run should go on.
pub fn plan(
    now: u64,
    cfg: &WatchConfig,
    members: &[Member],
    tracked: &[Knock],
    blocked: &dyn Fn(&str, Option<&str>) -> Option<String>,
    budget: usize,
    cursor: Option<&str>,
) -> Plan {
    let mut out = Plan::default();
    let spend = |out: &mut Plan, a: Action| -> bool {
        if out.calls + a.calls() > budget {
            return false;
        }
        out.calls += a.calls();
        out.actions.push(a);
        true
    };
    let member_of = |user: &str| members.iter().find(|m| m.user_id == user);
    let welcome = |out: &mut Plan, k: &Knock, display: Option<&str>| match &cfg.welcome_message {
        Some(t) => spend(
            out,
            Action::Welcome {
                knock_id: k.id,
                text: render(t, &k.user_id, display),
            },
        ),
        // Welcomes are off: joining is the end of the story.
        None => true,
    };

    // 1. Tracked invites: joins, welcomes, blocks since, expiry, reminders.
    for k in tracked {
        let member = member_of(&k.user_id);
        let membership = member.map(|m| m.membership.as_str());
        let display = member.and_then(|m| m.display_name.clone());
        let ok = match (k.status, membership) {
            (Status::Invited | Status::Reminded, Some("join")) => {
                spend(
                    &mut out,
                    Action::MarkJoined {
                        knock_id: k.id,
                        display_name: display.clone(),
                    },
                );
                welcome(&mut out, k, display.as_deref())
            }
            // Joined, but the welcome did not go out yet (or failed): send it.
            (Status::Joined, Some("join")) => welcome(&mut out, k, display.as_deref()),
            (Status::Invited | Status::Reminded, Some("invite")) => {
                let invited_at = k.invited_at.unwrap_or(k.updated_at);
                if let Some(why) = blocked(&k.user_id, display.as_deref()) {
                    spend(
                        &mut out,
                        Action::Rescind {
                            knock_id: k.id,
                            user_id: k.user_id.clone(),
                            reason: moderation::reason(&why),
                        },
                    )
                } else if now.saturating_sub(invited_at) >= cfg.invite_expiry_ms {
                    spend(
                        &mut out,
                        Action::Rescind {
                            knock_id: k.id,
                            user_id: k.user_id.clone(),
                            reason: EXPIRED_REASON.into(),
                        },
                    )
                } else if k.status == Status::Invited
                    && now.saturating_sub(invited_at) >= cfg.reminder_after_ms
                {
                    match &cfg.reminder_message {
                        Some(t) => spend(
                            &mut out,
                            Action::Remind {
                                knock_id: k.id,
                                user_id: k.user_id.clone(),
                                text: render(t, &k.user_id, display.as_deref()),
                            },
                        ),
                        None => true,
                    }
                } else {
                    true
                }
            }
            _ => true,
        };
        if !ok {
            out.exhausted = true;
            return out;
        }
    }

    // 2. Members, from the cursor on: block-list scan, native knocks, untracked invites.
    let start = members
        .iter()
        .position(|m| cursor.is_none_or(|c| m.user_id.as_str() > c))
        .unwrap_or(members.len());
    for m in &members[start..] {
        let latest = tracked_latest(tracked, &m.user_id);
        let action = match m.membership.as_str() {
            "join" | "invite" => match blocked(&m.user_id, m.display_name.as_deref()) {
                Some(why) => Some(Action::Enforce {
                    user_id: m.user_id.clone(),
                    enforcement: moderation::enforcement(Some(&m.membership), cfg.block_action),
                    reason: moderation::reason(&why),
                }),
                None if m.membership == "invite" && latest.is_none() => Some(Action::Adopt {
                    user_id: m.user_id.clone(),
                }),
                None => None,
            },
            "knock" if cfg.knock_policy != KnockPolicy::Off => match latest.map(|k| k.status) {
                Some(Status::Rejected | Status::Blocked) => Some(Action::RejectKnock {
                    user_id: m.user_id.clone(),
                }),
                Some(s) if s.is_active() => None,
                _ => m.event_id.as_ref().map(|e| Action::NativeKnock {
                    user_id: m.user_id.clone(),
                    event_id: e.clone(),
                }),
            },
            _ => None,
        };
        if let Some(a) = action {
            if !spend(&mut out, a) {
                out.exhausted = true;
                out.cursor = Some(previous_user(members, &m.user_id));
                return out;
            }
        }
    }
    out.cursor = None;
    out
}

fn tracked_latest<'a>(tracked: &'a [Knock], user: &str) -> Option<&'a Knock> {
    tracked
        .iter()
        .filter(|k| k.user_id == user)
        .max_by_key(|k| k.id)
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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub calls: usize,
    /// The budget ran out; the next run continues at `cursor`.
    pub exhausted: bool,
    /// `Some(user)`: the next run's member scan starts after this user. `None`: from the top.
    pub cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;
    const DAY: u64 = 86_400_000;

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
    fn none(_: &str, _: Option<&str>) -> Option<String> {
        None
    }
    fn run(members: &[Member], tracked: &[Knock], now: u64) -> Plan {
        plan(now, &cfg(), members, tracked, &none, 40, None)
    }

    #[test]
    fn a_tracked_invitee_who_joined_is_marked_and_welcomed_by_name() {
        let mut m = member("@a:x", "join");
        m.display_name = Some("Alice".into());
        let p = run(&[m], &[invited(1, "@a:x", NOW)], NOW);
        assert_eq!(
            p.actions,
            vec![
                Action::MarkJoined {
                    knock_id: 1,
                    display_name: Some("Alice".into())
                },
                Action::Welcome {
                    knock_id: 1,
                    text: "Welcome, Alice (@a:x)!".into()
                },
            ]
        );
        assert_eq!(p.calls, 1);
    }

    #[test]
    fn a_welcomed_member_is_left_alone() {
        let mut k = invited(1, "@a:x", NOW);
        k.status = Status::Welcomed;
        k.invited_at = Some(NOW);
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
    fn latecomers_are_reminded_once_then_rescinded_at_expiry() {
        let k = invited(1, "@a:x", NOW);
        let members = [member("@a:x", "invite")];
        assert!(run(&members, &[k.clone()], NOW + DAY - 1)
            .actions
            .is_empty());
        let p = run(&members, &[k.clone()], NOW + DAY);
        assert!(
            matches!(&p.actions[..], [Action::Remind { knock_id: 1, text, .. }]
            if text == "Your invite is waiting, @a:x.")
        );
        assert_eq!(p.calls, 2);
        let reminded = Knock {
            status: Status::Reminded,
            ..k.clone()
        };
        assert!(run(&members, &[reminded.clone()], NOW + 2 * DAY)
            .actions
            .is_empty());
        let p = run(&members, &[reminded], NOW + 7 * DAY);
        assert_eq!(
            p.actions,
            vec![Action::Rescind {
                knock_id: 1,
                user_id: "@a:x".into(),
                reason: EXPIRED_REASON.into()
            }]
        );
    }

    #[test]
    fn an_empty_reminder_message_turns_reminders_off() {
        let mut c = cfg();
        c.reminder_message = None;
        let p = plan(
            NOW + 2 * DAY,
            &c,
            &[member("@a:x", "invite")],
            &[invited(1, "@a:x", NOW)],
            &none,
            40,
            None,
        );
        assert!(p.actions.is_empty());
    }

    #[test]
    fn an_invitee_blocked_since_is_rescinded_at_once() {
        let blocked = |u: &str, _: Option<&str>| (u == "@a:x").then(|| "matches @a:x".to_owned());
        let p = plan(
            NOW,
            &cfg(),
            &[member("@a:x", "invite")],
            &[invited(1, "@a:x", NOW)],
            &blocked,
            40,
            None,
        );
        assert!(
            matches!(&p.actions[0], Action::Rescind { reason, .. } if reason.contains("matches @a:x"))
        );
    }

    #[test]
    fn blocked_members_are_kicked_or_banned_with_the_rule_named() {
        let blocked =
            |u: &str, _: Option<&str>| (u == "@troll:x").then(|| "family of @tr0ll:y".to_owned());
        let members = [member("@ok:x", "join"), member("@troll:x", "join")];
        let p = plan(NOW, &cfg(), &members, &[], &blocked, 40, None);
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
        let p = plan(NOW, &c, &members, &[], &blocked, 40, None);
        assert!(matches!(
            p.actions[0],
            Action::Enforce {
                enforcement: Enforcement::Ban,
                ..
            }
        ));
    }

    #[test]
    fn native_knocks_follow_the_policy() {
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
        assert!(plan(NOW, &c, &members, &[], &none, 40, None)
            .actions
            .is_empty());
        // Already queued: nothing new. Rejected but still knocking: refuse again.
        let mut k = Knock::new("@k:x", "native", NOW);
        k.id = 3;
        assert!(run(&members, &[k.clone()], NOW).actions.is_empty());
        k.status = Status::Rejected;
        assert_eq!(
            run(&members, &[k], NOW).actions,
            vec![Action::RejectKnock {
                user_id: "@k:x".into()
            }]
        );
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
        let blocked = |_: &str, _: Option<&str>| Some("everyone".to_owned());
        let mut cursor: Option<String> = None;
        let mut kicked = Vec::new();
        let mut runs = 0;
        loop {
            let p = plan(NOW, &cfg(), &members, &[], &blocked, 30, cursor.as_deref());
            assert!(p.calls <= 30);
            runs += 1;
            for a in &p.actions {
                if let Action::Enforce { user_id, .. } = a {
                    kicked.push(user_id.clone());
                }
            }
            if !p.exhausted {
                break;
            }
            cursor = p.cursor;
        }
        assert_eq!(runs, 4);
        let expected: Vec<String> = members.iter().map(|m| m.user_id.clone()).collect();
        assert_eq!(kicked, expected);
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
        let d = due(NOW, NOW - min, NOW - min, false, 5 * min, 10 * min);
        assert!(!d.any());
        // An unfinished scan continues whatever its interval says; a first run does everything.
        assert!(due(NOW, NOW, NOW, true, 5 * min, 10 * min).member_scan);
        assert_eq!(
            due(NOW, 0, 0, false, 5 * min, 10 * min),
            Due {
                invite_check: true,
                member_scan: true
            }
        );
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
