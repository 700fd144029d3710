//! What the homeserver said, in words the core understands: a leaf module that imports nothing
//! from the rest of the crate but the identifiers, so `domain` never depends on `matrix`.
//!
//! Decides: which failures are worth retrying, how a failure is described for records and logs,
//! and what outsider or homeserver text must never be stored as it came (room IDs, aliases,
//! token-like strings are scrubbed). Never does: IO, or parsing HTTP replies (that is
//! [`crate::matrix::classify`]'s job).

use serde::{Deserialize, Serialize};

/// Why a homeserver call did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// 429: wait this long, then try again.
    RateLimited {
        retry_after_ms: u64,
    },
    /// 5xx, or 408: the server is struggling; try again later.
    Server {
        status: u16,
    },
    Timeout,
    Network,
    /// 401: the access token is missing or no longer valid.
    Unauthorized {
        errcode: String,
    },
    /// Any other 4xx: the homeserver refused, and asking again will not change that. `error` is
    /// already scrubbed (see [`scrub`]).
    Refused {
        status: u16,
        errcode: String,
        error: String,
    },
}

impl Failure {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Failure::RateLimited { .. }
                | Failure::Server { .. }
                | Failure::Timeout
                | Failure::Network
        )
    }

    /// A refusal with the homeserver's text scrubbed: the one way to build one from a reply.
    pub fn refused(status: u16, errcode: &str, error: &str) -> Failure {
        Failure::Refused {
            status,
            errcode: scrub(errcode),
            error: scrub(error),
        }
    }

    /// A short description for records and logs: the status and errcode, and the homeserver's
    /// own words only as scrubbed text. Never a token, a room ID or an alias.
    pub fn describe(&self) -> String {
        match self {
            Failure::RateLimited { retry_after_ms } => {
                format!("rate limited by the homeserver for {retry_after_ms} ms")
            }
            Failure::Server { status } => format!("homeserver error {status}"),
            Failure::Timeout => "homeserver timed out".into(),
            Failure::Network => "homeserver unreachable".into(),
            Failure::Unauthorized { errcode } => format!("homeserver login needed ({errcode})"),
            Failure::Refused {
                status,
                errcode,
                error,
            } => format!("{status} {errcode}: {}", scrub(error)),
        }
    }

    /// The homeserver's refusal says the user is already in the room.
    pub fn is_already_joined(&self) -> bool {
        matches!(self, Failure::Refused { errcode, error, .. }
            if errcode == "M_FORBIDDEN" && error.contains("already in the room"))
    }
}

/// A room member as a listing or a sync reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: String,
    pub membership: String,
    pub display_name: Option<String>,
    /// The membership event, for de-duplicating native knocks.
    pub event_id: Option<String>,
    /// Who sent the membership event: the member themself (a join, a decline, a leave) or
    /// someone else (an invite, a kick, a ban).
    #[serde(default)]
    pub sender: Option<String>,
}

impl Member {
    /// The change was made by someone other than the member (a kick or ban, not a leave).
    pub fn by_someone_else(&self) -> bool {
        self.sender.as_deref().is_some_and(|s| s != self.user_id)
    }
}

/// How an invite that landed has ended since, as the room's history shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteEnd {
    /// The person turned it down.
    Declined,
    /// The person joined, then left.
    Left,
    /// Someone else withdrew it or removed them.
    Removed,
}

const ROOM_ID: &str = "[a room]";
const ALIAS: &str = "[a room alias]";
const TOKEN: &str = "[redacted]";

/// Removes what must never be stored, logged or shown from homeserver or outsider text: anything
/// shaped like a room ID (`!opaque:server`), a room alias (`#name:server`), or a token (`syt_…`,
/// `mat_…`, long runs of base64 or hex). Everything else is kept, so the text still explains.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if (c == '!' || c == '#') && i + 1 < chars.len() && !is_break(chars[i + 1]) {
            // A sigil followed by an identifier with a `:server` part.
            let end = run_end(&chars, i + 1);
            let word: String = chars[i + 1..end].iter().collect();
            if word.contains(':') {
                out.push_str(if c == '!' { ROOM_ID } else { ALIAS });
                i = end;
                continue;
            }
        }
        if !is_break(c) && (i == 0 || is_break(chars[i - 1])) {
            let end = run_end(&chars, i);
            let word: String = chars[i..end].iter().collect();
            if looks_like_token(&word) {
                out.push_str(TOKEN);
                i = end;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

fn is_break(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '"' | '\'' | '(' | ')' | '[' | ']' | '{' | '}' | '<' | '>' | ',' | ';'
        )
}

fn run_end(chars: &[char], from: usize) -> usize {
    let mut end = from;
    while end < chars.len() && !is_break(chars[end]) {
        end += 1;
    }
    // A sentence's closing full stop is not part of the identifier.
    while end > from && matches!(chars[end - 1], '.' | '!' | '?') {
        end -= 1;
    }
    end
}

fn looks_like_token(word: &str) -> bool {
    let w = word.trim_end_matches(['.', ':']);
    if ["syt_", "syl_", "mat_", "mct_", "Bearer"]
        .iter()
        .any(|p| w.starts_with(p))
        && w.len() > 8
    {
        return true;
    }
    // A long unbroken run of token alphabet with letters and digits mixed: base64, hex, JWTs.
    w.len() >= 24
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '/' | '=' | '.'))
        && w.chars().any(|c| c.is_ascii_digit())
        && w.chars().any(|c| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_and_aliases_are_removed_from_homeserver_text() {
        assert_eq!(
            scrub("User @bot:localhost not in room !AbCdEf123:localhost."),
            "User @bot:localhost not in room [a room]."
        );
        assert_eq!(
            scrub("Unknown room #secret-room:example.org"),
            "Unknown room [a room alias]"
        );
        assert_eq!(scrub("(!x:y)"), "([a room])");
        assert_eq!(scrub("\"!x:y.org:8448\""), "\"[a room]\"");
    }

    #[test]
    fn ordinary_punctuation_and_user_ids_survive() {
        let plain = "You are not invited to this room! Ask again #2 later.";
        assert_eq!(scrub(plain), plain);
        assert_eq!(
            scrub("@alice:localhost is already in the room."),
            "@alice:localhost is already in the room."
        );
    }

    #[test]
    fn token_like_strings_are_redacted() {
        assert_eq!(
            scrub("bad token syt_a25vY2tib3Q_abcDEFghiJKL_0a1b2c"),
            "bad token [redacted]"
        );
        assert_eq!(
            scrub("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib3QifQ.c2lnbmF0dXJl1 end"),
            "jwt [redacted] end"
        );
        assert_eq!(scrub("M_UNKNOWN_TOKEN"), "M_UNKNOWN_TOKEN");
    }

    #[test]
    fn a_refusal_is_scrubbed_when_it_is_built_and_when_it_is_described() {
        let f = Failure::refused(403, "M_FORBIDDEN", "User not in room !abc:localhost");
        assert_eq!(f.describe(), "403 M_FORBIDDEN: User not in room [a room]");
        let raw = Failure::Refused {
            status: 403,
            errcode: "M_FORBIDDEN".into(),
            error: "not in room !abc:localhost".into(),
        };
        assert!(!raw.describe().contains("!abc"));
    }

    #[test]
    fn a_change_by_someone_else_is_told_from_the_members_own() {
        let mut m = Member {
            user_id: "@a:x".into(),
            membership: "leave".into(),
            display_name: None,
            event_id: None,
            sender: Some("@a:x".into()),
        };
        assert!(!m.by_someone_else());
        m.sender = Some("@mod:x".into());
        assert!(m.by_someone_else());
        m.sender = None;
        assert!(!m.by_someone_else());
    }
}
