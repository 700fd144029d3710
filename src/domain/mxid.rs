//! Matrix user IDs: the spec's grammar, parsed once into a type that cannot be invalid.
//!
//! Decides: whether text a person typed into a form is a Matrix user ID, and its canonical form.
//! Never does: any network lookup. Whether the user *exists* is the homeserver's answer.
//!
//! Grammar (Matrix spec, "User Identifiers" and "Server Name"):
//! `@localpart:server_name`, at most 255 bytes in all; the localpart uses `a-z 0-9 . _ = - / +`;
//! the server name is a DNS name, an IPv4 address or a bracketed IPv6 literal, with an optional
//! port.
//!
//! Leniency for people typing into a form: surrounding white space is trimmed, a missing leading
//! `@` is added, a `https://matrix.to/#/@user:server` link is unwrapped, and an upper-case localpart
//! is lowered (homeservers register lower-case localparts only, so `@Alice:x` can only mean
//! `@alice:x`).

use std::fmt;

/// Longest user ID the spec allows, in bytes, sigil and server name included.
pub const MAX_USER_ID_BYTES: usize = 255;

/// A syntactically valid Matrix user ID. Only [`UserId::parse`] builds one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId {
    full: String,
    colon: usize,
}

/// Why a piece of text is not a Matrix user ID. Each has a sentence fit to show a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MxidError {
    Empty,
    TooLong,
    MissingColon,
    EmptyLocalpart,
    InvalidLocalpart,
    EmptyServerName,
    InvalidServerName,
}

impl MxidError {
    /// A clear sentence for the person who typed the ID.
    pub fn message(self) -> &'static str {
        match self {
            MxidError::Empty => "No Matrix ID was given. It looks like @name:example.org.",
            MxidError::TooLong => "That Matrix ID is too long: a Matrix ID has at most 255 bytes.",
            MxidError::MissingColon => {
                "That is not a Matrix ID: it needs a server part, like @name:example.org."
            }
            MxidError::EmptyLocalpart => {
                "That is not a Matrix ID: the name before the colon is empty."
            }
            MxidError::InvalidLocalpart => {
                "That is not a Matrix ID: the name may only use a-z, 0-9 and . _ = - / +"
            }
            MxidError::EmptyServerName => {
                "That is not a Matrix ID: the server after the colon is empty."
            }
            MxidError::InvalidServerName => {
                "That is not a Matrix ID: the server part is not a valid host name."
            }
        }
    }
}

impl fmt::Display for MxidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for MxidError {}

impl UserId {
    /// Parses what a person typed, with the leniency described in the module doc.
    pub fn parse(input: &str) -> Result<UserId, MxidError> {
        let mut s = input.trim();
        for prefix in [
            "https://matrix.to/#/",
            "http://matrix.to/#/",
            "matrix.to/#/",
        ] {
            if let Some(rest) = s.strip_prefix(prefix) {
                s = rest.split(['?', '/']).next().unwrap_or("").trim();
                break;
            }
        }
        if let Some(rest) = s.strip_prefix("matrix:u/") {
            s = rest.split(['?', '/']).next().unwrap_or("").trim();
        }
        if s.is_empty() || s == "@" {
            return Err(MxidError::Empty);
        }
        let body = s.strip_prefix('@').unwrap_or(s);
        // Cheap bound before any allocation: anything longer can never fit.
        if body.len() + 1 > MAX_USER_ID_BYTES {
            return Err(MxidError::TooLong);
        }
        let (local, server) = body.split_once(':').ok_or(MxidError::MissingColon)?;
        if local.is_empty() {
            return Err(MxidError::EmptyLocalpart);
        }
        if server.is_empty() {
            return Err(MxidError::EmptyServerName);
        }
        if !local
            .bytes()
            .all(|b| is_localpart_byte(b.to_ascii_lowercase()))
        {
            return Err(MxidError::InvalidLocalpart);
        }
        if !is_valid_server_name(server) {
            return Err(MxidError::InvalidServerName);
        }
        let mut full = String::with_capacity(body.len() + 1);
        full.push('@');
        full.push_str(&local.to_ascii_lowercase());
        full.push(':');
        full.push_str(server);
        Ok(UserId {
            colon: local.len() + 1,
            full,
        })
    }

    /// The whole ID, `@localpart:server`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The part between `@` and the first `:`.
    pub fn localpart(&self) -> &str {
        &self.full[1..self.colon]
    }

    /// The part after the first `:` (host, with port if any).
    pub fn server_name(&self) -> &str {
        &self.full[self.colon + 1..]
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.full)
    }
}

impl std::str::FromStr for UserId {
    type Err = MxidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserId::parse(s)
    }
}

impl serde::Serialize for UserId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> serde::Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UserId::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn is_localpart_byte(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+')
}

/// `server_name = hostname [ ":" port ]`, where hostname is an IPv4 address, a bracketed IPv6
/// literal, or a DNS name of letters, digits, `-` and `.`.
pub fn is_valid_server_name(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return false;
        };
        let literal = &rest[..end];
        if literal.len() < 2
            || literal.len() > 45
            || !literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        let after = &rest[end + 1..];
        match after.strip_prefix(':') {
            Some(p) => (&s[..end + 2], Some(p)),
            None if after.is_empty() => (s, None),
            None => return false,
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if host.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !host.starts_with('.')
        && !host.ends_with("..")
        && !host.contains("..")
}

/// A Matrix room ID (`!opaque:server`). Knock treats it as a secret: it is never shown in replies
/// or logs, and its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct RoomId(String);

impl RoomId {
    pub fn parse(input: &str) -> Result<RoomId, &'static str> {
        let s = input.trim();
        let Some(rest) = s.strip_prefix('!') else {
            return Err("must be a room ID that starts with '!', like !abc123:example.org");
        };
        if s.len() > MAX_USER_ID_BYTES {
            return Err("is longer than 255 bytes");
        }
        let Some((opaque, server)) = rest.split_once(':') else {
            return Err("must have a server part, like !abc123:example.org");
        };
        if opaque.is_empty() || !opaque.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("has an empty or invalid opaque part");
        }
        if !is_valid_server_name(server) {
            return Err("has an invalid server part");
        }
        Ok(RoomId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RoomId(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        UserId::parse(s).unwrap().to_string()
    }
    fn err(s: &str) -> MxidError {
        UserId::parse(s).unwrap_err()
    }

    #[test]
    fn a_plain_user_id_is_accepted_unchanged() {
        assert_eq!(ok("@alice:example.org"), "@alice:example.org");
    }

    #[test]
    fn surrounding_spaces_are_trimmed() {
        assert_eq!(ok("  @alice:example.org \n"), "@alice:example.org");
    }

    #[test]
    fn a_missing_sigil_is_added() {
        assert_eq!(ok("alice:example.org"), "@alice:example.org");
    }

    #[test]
    fn an_upper_case_localpart_is_lowered_but_the_server_is_kept() {
        assert_eq!(ok("@Alice:Example.org"), "@alice:Example.org");
    }

    #[test]
    fn a_matrix_to_link_is_unwrapped() {
        assert_eq!(
            ok("https://matrix.to/#/@alice:example.org"),
            "@alice:example.org"
        );
        assert_eq!(
            ok("matrix:u/alice:example.org?action=chat"),
            "@alice:example.org"
        );
    }

    #[test]
    fn every_allowed_localpart_character_is_accepted() {
        assert_eq!(ok("@a.b_c=d-e/f+g9:x.y"), "@a.b_c=d-e/f+g9:x.y");
    }

    #[test]
    fn parts_are_split_at_the_first_colon() {
        let id = UserId::parse("@bob:localhost:8448").unwrap();
        assert_eq!(id.localpart(), "bob");
        assert_eq!(id.server_name(), "localhost:8448");
    }

    #[test]
    fn ip_literals_and_ports_are_valid_servers() {
        ok("@a:127.0.0.1");
        ok("@a:127.0.0.1:8008");
        ok("@a:[::1]");
        ok("@a:[2001:db8::1]:8448");
    }

    #[test]
    fn empty_input_is_rejected() {
        assert_eq!(err(""), MxidError::Empty);
        assert_eq!(err("   "), MxidError::Empty);
        assert_eq!(err("@"), MxidError::Empty);
    }

    #[test]
    fn an_id_without_a_server_is_rejected() {
        assert_eq!(err("@alice"), MxidError::MissingColon);
        assert_eq!(err("@alice:"), MxidError::EmptyServerName);
        assert_eq!(err("@:example.org"), MxidError::EmptyLocalpart);
    }

    #[test]
    fn forbidden_localpart_characters_are_rejected() {
        for bad in [
            "@al ice:x.org",
            "@al!ce:x.org",
            "@ålice:x.org",
            "@a\u{0}b:x.org",
            "@a#b:x",
        ] {
            assert_eq!(err(bad), MxidError::InvalidLocalpart, "{bad}");
        }
    }

    #[test]
    fn bad_server_names_are_rejected() {
        for bad in [
            "@a:exa mple.org",
            "@a:example.org:",
            "@a:example.org:123456",
            "@a:example.org:80a",
            "@a:[::1",
            "@a:[zz]",
            "@a:[::1]x",
            "@a:ex..ample",
            "@a:.example",
            "@a:exämple.org",
        ] {
            assert_eq!(err(bad), MxidError::InvalidServerName, "{bad}");
        }
    }

    #[test]
    fn the_255_byte_limit_counts_the_whole_id() {
        let server = "example.org";
        let room = MAX_USER_ID_BYTES - 2 - server.len();
        let fits = format!("@{}:{server}", "a".repeat(room));
        assert_eq!(fits.len(), 255);
        ok(&fits);
        let over = format!("@{}:{server}", "a".repeat(room + 1));
        assert_eq!(err(&over), MxidError::TooLong);
        // The limit applies even when the sigil was left out.
        assert_eq!(err(&over[1..]), MxidError::TooLong);
    }

    #[test]
    fn a_ten_thousand_character_id_is_rejected_as_too_long() {
        assert_eq!(
            err(&format!("@{}:x.org", "a".repeat(10_000))),
            MxidError::TooLong
        );
    }

    #[test]
    fn user_ids_round_trip_through_json() {
        let id = UserId::parse("@alice:example.org").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"@alice:example.org\"");
        let back: UserId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<UserId>("\"nope\"").is_err());
    }

    #[test]
    fn room_ids_are_validated_and_never_printed_by_debug() {
        let r = RoomId::parse("!abc:localhost").unwrap();
        assert_eq!(r.as_str(), "!abc:localhost");
        assert_eq!(format!("{r:?}"), "RoomId(<redacted>)");
        assert!(RoomId::parse("#alias:localhost").is_err());
        assert!(RoomId::parse("!abc").is_err());
        assert!(RoomId::parse("!:x").is_err());
    }
}
