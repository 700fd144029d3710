//! Commands moderators type in the management room, and the reactions they tap.
//!
//! Decides: whether a message is addressed to Knock (`!knock …`, or a mention of the bot as the
//! message's first word: its user ID, or its localpart followed by `:`), which command it is,
//! and the one-line usage to answer when it is malformed; which action a reaction key asks for;
//! whether an action on this many people needs a confirming reply first. Never does: IO, or
//! checking who sent it (see [`super::moderators`]).

use crate::domain::config::parse_duration_ms;
use crate::domain::mxid::UserId;

/// Above this many people, a bulk action waits for a confirming reply.
pub const CONFIRM_ABOVE: usize = 10;

/// What a moderator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Approve(UserId),
    Reject {
        user: UserId,
        reason: Option<String>,
    },
    /// A user ID or a glob.
    Block {
        pattern: String,
        reason: Option<String>,
    },
    Unblock(String),
    Held,
    Pending,
    /// The newest knocks, this many (1–50; 10 when not given).
    Knocks(u32),
    Status,
    Help,
    /// Rejects every knock held within this long (raid clean-up).
    RejectHeldSince {
        ms: u64,
    },
    /// Kicks everyone who joined within this long (raid clean-up).
    KickJoinedSince {
        ms: u64,
    },
    /// Confirms the bulk action a notice asked about (a reply `!knock confirm`).
    Confirm,
}

/// A message for Knock that it cannot carry out: answered with this usage line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage(pub String);

/// The usage line of every command, as `help` lists it.
pub const HELP: &[(&str, &str)] = &[
    ("approve <user>", "invite a held knock's person"),
    ("reject <user> [reason]", "refuse a held knock"),
    (
        "block <user|glob> [reason]",
        "block-list someone, in every room",
    ),
    ("unblock <user|glob>", "remove a block-list entry"),
    ("held", "knocks waiting for a moderator"),
    ("pending", "invites not yet accepted"),
    ("knocks [n]", "the newest knocks and their verdicts"),
    ("status", "login, queue and last run"),
    (
        "reject-held since <duration>",
        "refuse every knock held within that time (a raid)",
    ),
    (
        "kick-joined since <duration>",
        "remove everyone Knock let in who joined within that time (a raid)",
    ),
    ("confirm", "carry out the bulk action Knock asked about"),
    ("help", "this list"),
];

fn usage(cmd: &str) -> Usage {
    let line = HELP
        .iter()
        .find(|(u, _)| u.split_whitespace().next() == Some(cmd))
        .map(|(u, _)| *u)
        .unwrap_or("help");
    Usage(format!("Usage: !knock {line}"))
}

/// The text after the address, if the message is addressed to Knock: `!knock …`, or the bot's
/// user ID or `localpart:` as the first word.
fn addressed<'a>(body: &'a str, bot: &UserId) -> Option<&'a str> {
    let text = body.trim();
    let first = text.split_whitespace().next()?;
    let rest = || text[first.len()..].trim_start();
    let lower = first.to_lowercase();
    if lower == "!knock" {
        return Some(rest());
    }
    let word = lower.trim_end_matches([':', ',']);
    if word == bot.as_str().to_lowercase()
        || word == bot.localpart().to_lowercase() && lower != word
    {
        return Some(rest());
    }
    None
}

/// Reads a message. `Ok(None)`: not for Knock (chatter in the room). `Err(usage)`: for Knock,
/// but malformed.
pub fn parse(body: &str, bot: &UserId) -> Result<Option<Command>, Usage> {
    let Some(text) = addressed(body, bot) else {
        return Ok(None);
    };
    let mut words = text.split_whitespace();
    let Some(cmd) = words.next().map(str::to_lowercase) else {
        return Ok(Some(Command::Help));
    };
    let rest: Vec<&str> = words.collect();
    let reason = |from: usize| {
        let r = rest.get(from..).map(|w| w.join(" ")).unwrap_or_default();
        (!r.trim().is_empty()).then(|| r.trim().to_owned())
    };
    let user = |i: usize| rest.get(i).and_then(|u| UserId::parse(u).ok());
    let since = || match (rest.first(), rest.get(1)) {
        (Some(s), Some(d)) if s.eq_ignore_ascii_case("since") && rest.len() == 2 => {
            parse_duration_ms(d).filter(|ms| *ms > 0)
        }
        _ => None,
    };
    let command = match cmd.as_str() {
        "approve" if rest.len() == 1 => user(0).map(Command::Approve),
        "reject" if !rest.is_empty() => user(0).map(|u| Command::Reject {
            user: u,
            reason: reason(1),
        }),
        "block" if !rest.is_empty() => Some(Command::Block {
            pattern: rest[0].to_owned(),
            reason: reason(1),
        }),
        "unblock" if rest.len() == 1 => Some(Command::Unblock(rest[0].to_owned())),
        "held" if rest.is_empty() => Some(Command::Held),
        "pending" if rest.is_empty() => Some(Command::Pending),
        "knocks" if rest.is_empty() => Some(Command::Knocks(10)),
        "knocks" if rest.len() == 1 => rest[0]
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=50).contains(n))
            .map(Command::Knocks),
        "status" if rest.is_empty() => Some(Command::Status),
        "help" => Some(Command::Help),
        "reject-held" => since().map(|ms| Command::RejectHeldSince { ms }),
        "kick-joined" => since().map(|ms| Command::KickJoinedSince { ms }),
        "confirm" if rest.is_empty() => Some(Command::Confirm),
        _ => None,
    };
    match command {
        Some(c) => Ok(Some(c)),
        None if HELP
            .iter()
            .any(|(u, _)| u.split_whitespace().next() == Some(&cmd)) =>
        {
            Err(usage(&cmd))
        }
        None => Err(Usage(format!("Unknown command {cmd:?}. Try: !knock help"))),
    }
}

/// What a reaction on a notice asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tap {
    Approve,
    Reject,
    /// Block the person (an exact entry).
    Block,
}

/// The action a reaction key stands for: ✅ approves, ❌ rejects, 🔨 blocks (with or without
/// the emoji variation selector). Other keys mean nothing.
pub fn tap(key: &str) -> Option<Tap> {
    match key.trim().trim_end_matches('\u{fe0f}') {
        "✅" | "✔" | "☑" => Some(Tap::Approve),
        "❌" | "✖" => Some(Tap::Reject),
        "🔨" => Some(Tap::Block),
        _ => None,
    }
}

/// Whether an action on `affected` people waits for a confirming reply.
pub fn needs_confirmation(affected: usize) -> bool {
    affected > CONFIRM_ABOVE
}

/// The help text, one command per line.
pub fn help_text() -> String {
    let mut out = String::from("Knock commands (also as a mention of the bot):");
    for (u, what) in HELP {
        out.push_str(&format!("\n!knock {u} — {what}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bot() -> UserId {
        UserId::parse("@knockbot:example.org").unwrap()
    }

    fn p(s: &str) -> Result<Option<Command>, Usage> {
        parse(s, &bot())
    }

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn chatter_is_not_a_command() {
        assert_eq!(p("hello everyone"), Ok(None));
        assert_eq!(
            p("knockbot is great"),
            Ok(None),
            "a bare name is no address"
        );
        assert_eq!(p(""), Ok(None));
    }

    #[test]
    fn commands_are_read_with_the_prefix_or_a_mention() {
        assert_eq!(
            p("!knock approve @ann:x.org"),
            Ok(Some(Command::Approve(user("@ann:x.org"))))
        );
        assert_eq!(
            p("@knockbot:example.org approve @ann:x.org"),
            Ok(Some(Command::Approve(user("@ann:x.org"))))
        );
        assert_eq!(
            p("KnockBot: approve @ann:x.org"),
            Ok(Some(Command::Approve(user("@ann:x.org"))))
        );
        assert_eq!(
            p("!Knock reject @bob:x.org spam, sorry"),
            Ok(Some(Command::Reject {
                user: user("@bob:x.org"),
                reason: Some("spam, sorry".into())
            }))
        );
        assert_eq!(
            p("!knock block @spam*:* raid"),
            Ok(Some(Command::Block {
                pattern: "@spam*:*".into(),
                reason: Some("raid".into())
            }))
        );
        assert_eq!(p("!knock knocks"), Ok(Some(Command::Knocks(10))));
        assert_eq!(p("!knock knocks 25"), Ok(Some(Command::Knocks(25))));
        assert_eq!(
            p("!knock reject-held since 10m"),
            Ok(Some(Command::RejectHeldSince { ms: 600_000 }))
        );
        assert_eq!(
            p("!knock kick-joined since 2h"),
            Ok(Some(Command::KickJoinedSince { ms: 7_200_000 }))
        );
        assert_eq!(p("!knock"), Ok(Some(Command::Help)));
        assert_eq!(p("!knock confirm"), Ok(Some(Command::Confirm)));
    }

    #[test]
    fn a_malformed_command_gets_its_usage_line() {
        assert_eq!(
            p("!knock approve ann"),
            Err(Usage("Usage: !knock approve <user>".into()))
        );
        assert_eq!(
            p("!knock knocks 500"),
            Err(Usage("Usage: !knock knocks [n]".into()))
        );
        assert_eq!(
            p("!knock reject-held 10m"),
            Err(Usage("Usage: !knock reject-held since <duration>".into()))
        );
        assert_eq!(
            p("!knock frobnicate"),
            Err(Usage(
                "Unknown command \"frobnicate\". Try: !knock help".into()
            ))
        );
    }

    #[test]
    fn reactions_map_to_actions_with_or_without_the_variation_selector() {
        assert_eq!(tap("✅"), Some(Tap::Approve));
        assert_eq!(tap("✔\u{fe0f}"), Some(Tap::Approve));
        assert_eq!(tap("❌"), Some(Tap::Reject));
        assert_eq!(tap("🔨"), Some(Tap::Block));
        assert_eq!(tap("👍"), None);
    }

    #[test]
    fn more_than_ten_people_need_a_confirmation() {
        assert!(!needs_confirmation(10));
        assert!(needs_confirmation(11));
        assert!(help_text().contains("!knock reject-held since <duration>"));
    }
}

/// A moderator's tap on a notice, found in the management room's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tapped {
    /// The reaction's event id: an action is applied once per reaction.
    pub reaction_id: String,
    /// The notice it reacts to.
    pub notice_id: String,
    pub tap: Tap,
    pub sender: String,
}

/// The taps in a timeline that Knock acts on: reactions (`m.annotation`) with a known key, from
/// a moderator (`is_moderator`), never from the bot itself. Returns them in timeline order, and
/// the senders of taps that were ignored because they are no moderators.
pub fn taps(
    events: &[serde_json::Value],
    bot: &str,
    is_moderator: &dyn Fn(&str) -> bool,
) -> (Vec<Tapped>, Vec<String>) {
    let mut out = Vec::new();
    let mut ignored = Vec::new();
    for e in events {
        if e["type"] != "m.reaction" {
            continue;
        }
        let rel = &e["content"]["m.relates_to"];
        if rel["rel_type"] != "m.annotation" {
            continue;
        }
        let (Some(id), Some(notice), Some(key), Some(sender)) = (
            e["event_id"].as_str(),
            rel["event_id"].as_str(),
            rel["key"].as_str(),
            e["sender"].as_str(),
        ) else {
            continue;
        };
        let Some(tap) = tap(key) else { continue };
        if sender == bot {
            continue;
        }
        if !is_moderator(sender) {
            ignored.push(sender.to_owned());
            continue;
        }
        out.push(Tapped {
            reaction_id: id.to_owned(),
            notice_id: notice.to_owned(),
            tap,
            sender: sender.to_owned(),
        });
    }
    (out, ignored)
}

/// What a notice of Knock's is about, as it wrote it in the notice (`org.knock.notice`): the
/// room (its key, never its ID) and the person. `None` for any other event, or one the bot did
/// not send.
pub fn notice_about(event: &serde_json::Value, bot: &str) -> Option<About> {
    if event["sender"] != bot {
        return None;
    }
    let content = &event["content"];
    let about = &content["org.knock.notice"];
    if let (Some(room), Some(user)) = (about["room_key"].as_str(), about["user_id"].as_str()) {
        return Some(About::Knock {
            room_key: room.to_owned(),
            user: UserId::parse(user).ok()?,
        });
    }
    let digest = &content["org.knock.digest"];
    Some(About::Wave {
        room_key: digest["room_key"].as_str()?.to_owned(),
        wave: digest["wave"].as_u64()?,
    })
}

/// What one of Knock's notices is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum About {
    /// One person's knock, in the room with this key.
    Knock { room_key: String, user: UserId },
    /// A join wave's digest: every knock the wave that began at `wave` holds.
    Wave { room_key: String, wave: u64 },
}

#[cfg(test)]
mod tap_tests {
    use super::*;
    use serde_json::json;

    fn reaction(id: &str, sender: &str, key: &str) -> serde_json::Value {
        json!({"type": "m.reaction", "event_id": id, "sender": sender,
               "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$notice",
                                            "key": key}}})
    }

    #[test]
    fn only_moderators_taps_count_and_never_the_bots() {
        let events = vec![
            reaction("$1", "@mod:x", "✅"),
            reaction("$2", "@stranger:x", "✅"),
            reaction("$3", "@bot:x", "❌"),
            reaction("$4", "@mod:x", "👍"),
            json!({"type": "m.room.message", "sender": "@mod:x", "content": {"body": "hi"}}),
        ];
        let (taps, ignored) = taps(&events, "@bot:x", &|u| u == "@mod:x");
        assert_eq!(
            taps,
            vec![Tapped {
                reaction_id: "$1".into(),
                notice_id: "$notice".into(),
                tap: Tap::Approve,
                sender: "@mod:x".into()
            }]
        );
        assert_eq!(ignored, vec!["@stranger:x".to_owned()]);
    }

    #[test]
    fn a_notice_says_what_it_is_about_only_when_the_bot_wrote_it() {
        let notice = json!({"sender": "@bot:x", "content": {"body": "Held…",
            "org.knock.notice": {"room_key": "abc", "user_id": "@ann:x", "knock_id": 3}}});
        let Some(About::Knock { room_key, user }) = notice_about(&notice, "@bot:x") else {
            panic!("a knock's notice");
        };
        assert_eq!((room_key.as_str(), user.as_str()), ("abc", "@ann:x"));
        let forged = json!({"sender": "@mod:x", "content": notice["content"].clone()});
        assert_eq!(notice_about(&forged, "@bot:x"), None);
        let digest = json!({"sender": "@bot:x", "content": {"body": "Join wave…",
            "org.knock.digest": {"room_key": "abc", "wave": 1700000000000u64}}});
        assert_eq!(
            notice_about(&digest, "@bot:x"),
            Some(About::Wave {
                room_key: "abc".into(),
                wave: 1_700_000_000_000
            })
        );
        let plain = json!({"sender": "@bot:x", "content": {"body": "Approved by …"}});
        assert_eq!(notice_about(&plain, "@bot:x"), None);
    }
}
