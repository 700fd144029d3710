//! A knock's statuses and the membership change Knock may owe: their names, and which statuses
//! are open. Never does: transitions (those are [`super::apply`]'s).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Stored; homeserver calls still to make.
    Queued,
    /// Waits for a moderator to approve or reject it.
    Held,
    /// The homeserver accepted the invite.
    Invited,
    /// Invited, and reminded once by direct message.
    Reminded,
    /// In the room; the welcome is still to be sent.
    Joined,
    /// In the room and welcomed.
    Welcomed,
    /// The homeserver says the user does not exist. Nothing was sent.
    NoSuchUser,
    /// A honeypot field was filled. Nothing was sent.
    Spam,
    /// The homeserver refused for good, or retries ran out. The reason says why.
    Failed,
    /// On the block-list: recorded with the rule that matched.
    Blocked,
    /// Withdrawn by a moderator.
    Rescinded,
    /// A moderator rejected it.
    Rejected,
    /// The person turned the invite down.
    Declined,
    /// The person joined, then left.
    Left,
    /// Kicked or banned by someone other than Knock.
    Removed,
    /// The invite was not accepted in time and was withdrawn.
    Expired,
}

impl Status {
    pub const ALL: [Status; 16] = [
        Status::Queued,
        Status::Held,
        Status::Invited,
        Status::Reminded,
        Status::Joined,
        Status::Welcomed,
        Status::NoSuchUser,
        Status::Spam,
        Status::Failed,
        Status::Blocked,
        Status::Rescinded,
        Status::Rejected,
        Status::Declined,
        Status::Left,
        Status::Removed,
        Status::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Held => "held",
            Status::Invited => "invited",
            Status::Reminded => "reminded",
            Status::Joined => "joined",
            Status::Welcomed => "welcomed",
            Status::NoSuchUser => "no_such_user",
            Status::Spam => "spam",
            Status::Failed => "failed",
            Status::Blocked => "blocked",
            Status::Rescinded => "rescinded",
            Status::Rejected => "rejected",
            Status::Declined => "declined",
            Status::Left => "left",
            Status::Removed => "removed",
            Status::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// An open knock makes a new knock by the same person a repeat.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            Status::Queued
                | Status::Held
                | Status::Invited
                | Status::Reminded
                | Status::Joined
                | Status::Welcomed
        )
    }

    /// The person is invited to or in the room because of this knock.
    pub fn holds_membership(self) -> bool {
        matches!(
            self,
            Status::Invited | Status::Reminded | Status::Joined | Status::Welcomed
        )
    }

    /// Waiting for the person to accept the invite.
    pub fn is_pending_invite(self) -> bool {
        matches!(self, Status::Invited | Status::Reminded)
    }
}

/// A membership change Knock still owes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Withdraw {
    /// Withdraw an invite, refuse a knock, or remove a member.
    Kick,
    /// Ban: also keeps them from knocking or joining again.
    Ban,
}

impl Withdraw {
    pub fn as_str(self) -> &'static str {
        match self {
            Withdraw::Kick => "kick",
            Withdraw::Ban => "ban",
        }
    }

    pub fn parse(s: &str) -> Option<Withdraw> {
        match s {
            "kick" => Some(Withdraw::Kick),
            "ban" => Some(Withdraw::Ban),
            _ => None,
        }
    }
}
