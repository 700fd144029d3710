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
//! Leniency for people typing into a form ([`UserId::parse_typed`] says what it did):
//! - invisible characters are dropped wherever they are (zero-width spaces and joiners, the BOM,
//!   soft hyphens, bidi marks) and Unicode spaces such as NBSP are trimmed from the ends;
//! - surrounding quotes (straight and curly), guillemets and angle brackets are taken off;
//! - a missing leading `@` is added;
//! - a `https://matrix.to/#/@user:server` link is unwrapped, percent-encoded or not
//!   (`#/%40user%3Aserver`), and so is a `matrix:u/user:server` URI (MSC2312), with any
//!   `?via=` or `?action=chat` query;
//! - an upper-case localpart is lowered (homeservers register lower-case localparts only, so
//!   `@Alice:x` can only mean `@alice:x`), and the result says so, so that a reply can tell the
//!   person that their phone capitalised it.

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

/// A user ID read from what a person typed, with what the reading changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedId {
    pub id: UserId,
    /// The localpart was typed with capitals (phone keyboards capitalise the first letter) and
    /// was folded to lower case.
    pub case_folded: bool,
    /// The text said outright that it is a Matrix ID: it started with `@`, or was a matrix.to
    /// link or a `matrix:` URI. A bare `name:server` also parses, but so does a time like `12:30`.
    pub explicit: bool,
}

/// The text of an ID once the decoration people and their apps put around it is taken off.
struct Unwrapped {
    text: String,
    explicit: bool,
}

/// Links that wrap a user ID, in lower case (they are matched case-insensitively).
const LINK_PREFIXES: [&str; 4] = [
    "https://matrix.to/#/",
    "http://matrix.to/#/",
    "matrix.to/#/",
    "matrix:u/",
];

/// Characters that render as nothing, yet are pasted along with IDs copied from apps and pages.
pub(crate) fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' // soft hyphen
        | '\u{034F}' // combining grapheme joiner
        | '\u{061C}' // Arabic letter mark
        | '\u{180E}' // Mongolian vowel separator
        | '\u{200B}'..='\u{200F}' // zero-width space, non-joiner, joiner; LRM, RLM
        | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
        | '\u{2060}'..='\u{2064}' // word joiner and invisible operators
        | '\u{2066}'..='\u{2069}' // bidi isolates
        | '\u{FEFF}' // byte order mark, zero-width no-break space
    )
}

/// Quotes and brackets that people (and their apps' autocorrect) put around an ID.
fn is_wrapper(c: char) -> bool {
    matches!(
        c,
        '"' | '\''
            | '`'
            | '<'
            | '>'
            | '\u{201C}'
            | '\u{201D}'
            | '\u{201E}'
            | '\u{201F}'
            | '\u{2018}'
            | '\u{2019}'
            | '\u{201A}'
            | '\u{201B}'
            | '\u{00AB}'
            | '\u{00BB}'
            | '\u{2039}'
            | '\u{203A}'
            | '\u{300C}'
            | '\u{300D}'
    )
}

/// Trims white space (Unicode's, NBSP included) and wrapping quotes, as often as they nest.
fn strip_wrappers(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || is_wrapper(c))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn unwrap_typed(input: &str) -> Unwrapped {
    let visible: String = input.chars().filter(|c| !is_invisible(*c)).collect();
    let s = strip_wrappers(&visible);
    for prefix in LINK_PREFIXES {
        if let Some(rest) = strip_prefix_ignore_case(s, prefix) {
            // The ID is one path segment; a query (`?via=`, `?action=chat`), a fragment or a
            // further segment (an event) follows it. A `/` inside the localpart would be
            // percent-encoded, so split before decoding.
            let segment = rest.split(['?', '#', '/']).next().unwrap_or("");
            let decoded = percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .map(|d| d.into_owned())
                .unwrap_or_else(|_| segment.to_owned());
            return Unwrapped {
                text: strip_wrappers(&decoded).to_owned(),
                explicit: true,
            };
        }
    }
    Unwrapped {
        text: s.to_owned(),
        explicit: s.starts_with('@'),
    }
}

impl UserId {
    /// Parses what a person typed, with the leniency described in the module doc.
    pub fn parse(input: &str) -> Result<UserId, MxidError> {
        UserId::parse_typed(input).map(|t| t.id)
    }

    /// Parses what a person typed, and says how it was read.
    pub fn parse_typed(input: &str) -> Result<TypedId, MxidError> {
        let unwrapped = unwrap_typed(input);
        let s = unwrapped.text.as_str();
        if s.is_empty() || s == "@" {
            return Err(MxidError::Empty);
        }
        let body = s.strip_prefix('@').unwrap_or(s);
        // Anything longer can never fit, whatever the checks below would say.
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
        Ok(TypedId {
            id: UserId {
                colon: local.len() + 1,
                full,
            },
            case_folded: local.bytes().any(|b| b.is_ascii_uppercase()),
            explicit: unwrapped.explicit,
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
    fn a_percent_encoded_matrix_to_link_is_decoded() {
        assert_eq!(
            ok("https://matrix.to/#/%40alice%3Aexample.org"),
            "@alice:example.org"
        );
        assert_eq!(
            ok("https://matrix.to/#/%40alice%3Aexample.org?via=example.org"),
            "@alice:example.org"
        );
        assert_eq!(
            ok("HTTPS://Matrix.To/#/@alice:example.org/"),
            "@alice:example.org"
        );
        // An encoded slash belongs to the localpart; a literal one ends the segment.
        assert_eq!(ok("https://matrix.to/#/@a%2Fb:x.org"), "@a/b:x.org");
    }

    #[test]
    fn a_matrix_uri_is_unwrapped_with_its_query() {
        for uri in [
            "matrix:u/alice:example.org",
            "matrix:u/alice:example.org?action=chat",
            "matrix:u/alice:example.org?via=example.org&action=chat",
            "Matrix:U/alice%3Aexample.org",
            "matrix:u/@alice:example.org",
        ] {
            assert_eq!(ok(uri), "@alice:example.org", "{uri}");
        }
    }

    #[test]
    fn a_capitalised_localpart_is_folded_and_the_fold_is_reported() {
        let typed = UserId::parse_typed("@Alice:example.org").unwrap();
        assert_eq!(typed.id.as_str(), "@alice:example.org");
        assert!(typed.case_folded);
        let plain = UserId::parse_typed("@alice:Example.org").unwrap();
        assert!(
            !plain.case_folded,
            "the server's case is not the localpart's"
        );
        assert!(
            UserId::parse_typed("https://matrix.to/#/@Bob:x.org")
                .unwrap()
                .case_folded
        );
    }

    #[test]
    fn quotes_and_angle_brackets_around_an_id_are_taken_off() {
        for typed in [
            "\"@alice:example.org\"",
            "'@alice:example.org'",
            "\u{201C}@alice:example.org\u{201D}",
            "\u{2018}@alice:example.org\u{2019}",
            "\u{00AB} @alice:example.org \u{00BB}",
            "<@alice:example.org>",
            "<https://matrix.to/#/@alice:example.org>",
            "\"<@alice:example.org>\"",
            "`@alice:example.org`",
        ] {
            assert_eq!(ok(typed), "@alice:example.org", "{typed}");
        }
    }

    #[test]
    fn invisible_characters_and_unicode_spaces_are_ignored() {
        for typed in [
            "\u{200B}@alice:example.org",
            "@ali\u{200B}ce:example.org",
            "@alice\u{200D}:example.org",
            "\u{FEFF}@alice:example.org",
            "\u{00A0}@alice:example.org\u{00A0}",
            "\u{2003}@alice:example.org\u{3000}",
            "\u{202F}@alice:exam\u{00AD}ple.org\u{2060}",
            "\u{200E}@alice:example.org\u{200F}",
        ] {
            assert_eq!(ok(typed), "@alice:example.org", "{typed:?}");
        }
        // A visible space inside is still a mistake the person must fix.
        assert_eq!(err("@ali ce:example.org"), MxidError::InvalidLocalpart);
        assert_eq!(
            err("@ali\u{00A0}ce:example.org"),
            MxidError::InvalidLocalpart
        );
    }

    #[test]
    fn only_a_sigil_link_or_uri_makes_an_id_explicit() {
        for typed in [
            "@a:x.org",
            "https://matrix.to/#/@a:x.org",
            "matrix:u/a:x.org",
        ] {
            assert!(UserId::parse_typed(typed).unwrap().explicit, "{typed}");
        }
        assert!(!UserId::parse_typed("a:x.org").unwrap().explicit);
        assert!(!UserId::parse_typed("12:30").unwrap().explicit);
    }

    #[test]
    fn an_unwrapped_id_still_obeys_the_length_limit() {
        let long = format!("https://matrix.to/#/%40{}%3Ax.org", "a".repeat(300));
        assert_eq!(err(&long), MxidError::TooLong);
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
