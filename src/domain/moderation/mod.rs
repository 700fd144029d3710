//! Moderation: what Knock does to a person once they are blocked, and what moderators say to
//! it from a Matrix management room.
//!
//! Decides: given someone's current membership and the configured `BLOCK_ACTION`, whether to
//! kick, ban or leave them be, and how to describe it. The management room's parts, each pure:
//! [`commands`] (what a message asks for), [`moderators`] (who may ask, and whom Knock never acts
//! against), [`notices`] (what Knock posts about a knock). Never does: the homeserver calls.

pub mod bulk;
pub mod commands;
pub mod moderators;
pub mod notices;

use serde::Serialize;

/// `BLOCK_ACTION`: what blocking does to someone in (or invited to, or knocking on) the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockAction {
    Kick,
    Ban,
}

impl BlockAction {
    pub fn parse(s: &str) -> Option<BlockAction> {
        match s.trim().to_ascii_lowercase().as_str() {
            "kick" => Some(BlockAction::Kick),
            "ban" => Some(BlockAction::Ban),
            _ => None,
        }
    }
}

/// The homeserver call to make, and what to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Nothing to do: not in the room (and no ban wanted), or already banned.
    None,
    /// A joined member is removed.
    Kick,
    /// A pending invite is withdrawn (a kick of the invited user).
    RescindInvite,
    /// A pending knock is refused (a kick of the knocking user).
    RejectKnock,
    /// Banned: removed if present, and kept from knocking or joining again.
    Ban,
}

impl Enforcement {
    /// Which membership endpoint carries it out, if any.
    pub fn call(self) -> Option<&'static str> {
        match self {
            Enforcement::None => None,
            Enforcement::Ban => Some("ban"),
            _ => Some("kick"),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Enforcement::None => "none",
            Enforcement::Kick => "kicked",
            Enforcement::RescindInvite => "invite_rescinded",
            Enforcement::RejectKnock => "knock_rejected",
            Enforcement::Ban => "banned",
        }
    }
}

/// `membership` is the person's current membership (`join`, `invite`, `knock`, `leave`, `ban`),
/// or `None` if they never had one.
pub fn enforcement(membership: Option<&str>, action: BlockAction) -> Enforcement {
    match (membership, action) {
        (Some("ban"), _) => Enforcement::None,
        // A ban also works on people who are not in the room: it keeps them from knocking.
        (_, BlockAction::Ban) => Enforcement::Ban,
        (Some("join"), BlockAction::Kick) => Enforcement::Kick,
        (Some("invite"), BlockAction::Kick) => Enforcement::RescindInvite,
        (Some("knock"), BlockAction::Kick) => Enforcement::RejectKnock,
        (_, BlockAction::Kick) => Enforcement::None,
    }
}

/// The reason put on the kick or ban. It names the rule, never the room.
pub fn reason(explanation: &str) -> String {
    let mut r = format!("Blocked by Knock: {explanation}");
    r.truncate(400);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kicking_depends_on_the_membership() {
        let k = BlockAction::Kick;
        assert_eq!(enforcement(Some("join"), k), Enforcement::Kick);
        assert_eq!(enforcement(Some("invite"), k), Enforcement::RescindInvite);
        assert_eq!(enforcement(Some("knock"), k), Enforcement::RejectKnock);
        assert_eq!(enforcement(Some("leave"), k), Enforcement::None);
        assert_eq!(enforcement(None, k), Enforcement::None);
        assert_eq!(enforcement(Some("ban"), k), Enforcement::None);
    }

    #[test]
    fn banning_applies_to_anyone_not_already_banned() {
        let b = BlockAction::Ban;
        for m in [
            Some("join"),
            Some("invite"),
            Some("knock"),
            Some("leave"),
            None,
        ] {
            assert_eq!(enforcement(m, b), Enforcement::Ban, "{m:?}");
        }
        assert_eq!(enforcement(Some("ban"), b), Enforcement::None);
    }

    #[test]
    fn every_enforcement_maps_to_one_call() {
        assert_eq!(Enforcement::None.call(), None);
        assert_eq!(Enforcement::Ban.call(), Some("ban"));
        for e in [
            Enforcement::Kick,
            Enforcement::RescindInvite,
            Enforcement::RejectKnock,
        ] {
            assert_eq!(e.call(), Some("kick"));
        }
    }

    #[test]
    fn block_actions_parse_case_insensitively() {
        assert_eq!(BlockAction::parse(" BAN "), Some(BlockAction::Ban));
        assert_eq!(BlockAction::parse("kick"), Some(BlockAction::Kick));
        assert_eq!(BlockAction::parse("shun"), None);
    }

    #[test]
    fn reasons_are_bounded() {
        assert!(reason(&"x".repeat(1000)).len() <= 400);
        assert_eq!(reason("family match"), "Blocked by Knock: family match");
    }
}
