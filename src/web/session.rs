//! Sign-in sessions of the moderator page, decided without IO: random bytes and `now` are
//! passed in, and the session's Durable Object stores what comes out.
//!
//! A session is a random 256-bit id in an `HttpOnly; Secure; SameSite=Strict` cookie, signed
//! with the admin key so that only ids the worker made reach a Durable Object; the
//! session itself (its CSRF token, when it was last used) lives in one Durable Object per id.
//! It ends after [`IDLE_MS`] without use, or at once on logout. With the cookie, every request
//! that changes state must carry the session's CSRF token.

use serde::{Deserialize, Serialize};

use crate::domain::rate_limit::{address_key, Quota};
use crate::domain::signature::constant_time_eq;

/// The cookie's name.
pub const COOKIE: &str = "knock_admin";
/// A session unused for this long has ended.
pub const IDLE_MS: u64 = 12 * 3600 * 1000;
/// A session's last use is stored at most this often, so reading views costs few writes.
pub const TOUCH_EVERY_MS: u64 = 60_000;
/// Where a script sends the CSRF token, and a plain form's field for it.
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const CSRF_FIELD: &str = "csrf";

/// Failed sign-ins and failed admin keys, per client address: 10 in 15 minutes, then a
/// lock-out of 15 minutes that doubles with every try while locked out, up to 6 hours.
pub const FAILED_KEYS: Quota = Quota {
    max: 10,
    window_ms: 15 * 60 * 1000,
    base_lockout_ms: 15 * 60 * 1000,
    max_lockout_ms: 6 * 3600 * 1000,
};

/// The limiter key of a client's failed keys (apart from its knocks' key).
pub fn failure_key(address: &str) -> String {
    format!("admin-key:{}", address_key(address))
}

/// One signed-in session, as its Durable Object stores it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub csrf: String,
    pub created_at: u64,
    pub last_seen: u64,
}

/// What using a session at `now` means.
#[derive(Debug, PartialEq, Eq)]
pub enum Touch {
    /// Unused for too long: delete it.
    Expired,
    /// Still valid; `store` when its last use should be written.
    Valid { session: Session, store: bool },
}

impl Session {
    /// A new session whose CSRF token is made of `csrf_bytes` (random).
    pub fn new(csrf_bytes: &[u8; 32], now: u64) -> Session {
        Session {
            csrf: hex::encode(csrf_bytes),
            created_at: now,
            last_seen: now,
        }
    }

    /// When it ends unless it is used before.
    pub fn expires_at(&self) -> u64 {
        self.last_seen.saturating_add(IDLE_MS)
    }

    pub fn touch(&self, now: u64) -> Touch {
        if now >= self.expires_at() {
            return Touch::Expired;
        }
        let store = now.saturating_sub(self.last_seen) >= TOUCH_EVERY_MS;
        let mut session = self.clone();
        if store {
            session.last_seen = now;
        }
        Touch::Valid { session, store }
    }

    /// Whether a request may go ahead: reads always, anything else only with the token.
    pub fn allows(&self, method: &str, presented: Option<&str>) -> bool {
        if !changes_state(method) {
            return true;
        }
        presented
            .is_some_and(|t| !t.is_empty() && constant_time_eq(t.as_bytes(), self.csrf.as_bytes()))
    }
}

/// Every method but GET, HEAD and OPTIONS may change something.
pub fn changes_state(method: &str) -> bool {
    !matches!(
        method.to_ascii_uppercase().as_str(),
        "GET" | "HEAD" | "OPTIONS"
    )
}

/// A session id made of 32 random bytes.
pub fn new_id(bytes: &[u8; 32]) -> String {
    hex::encode(bytes)
}

/// Only ids this module makes are looked up (64 lower-case hex digits).
pub fn is_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Hex digits of the tag that follows the id in the cookie (128 bits of HMAC-SHA256).
const TAG_HEX: usize = 32;

/// The tag that proves the worker made `id`: HMAC-SHA256 under the admin key, so a made-up or
/// guessed id is refused before any Durable Object is asked (or created) for it, and changing
/// `API_KEY` ends every session at once.
fn tag(id: &str, api_key: &str) -> String {
    use hmac::Mac;
    let m = crate::domain::signature::mac(
        api_key.as_bytes(),
        &[b"knock admin session\0", id.as_bytes()],
    );
    let mut out = hex::encode(m.finalize().into_bytes());
    out.truncate(TAG_HEX);
    out
}

/// The cookie's value for session `id`: the id, a dot, its tag.
pub fn cookie_value(id: &str, api_key: &str) -> String {
    format!("{id}.{}", tag(id, api_key))
}

/// What a request's `Cookie` header presents of this module's cookie.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    /// No session cookie.
    Absent,
    /// A session cookie this worker did not sign under the current key (made up, or from
    /// before `API_KEY` changed, or with no key set): no session, and nothing to look up.
    Stale,
    /// The id of a session this worker made.
    Session(String),
}

impl Presented {
    /// The session id, when there is one to look up.
    pub fn session(self) -> Option<String> {
        match self {
            Presented::Session(id) => Some(id),
            _ => None,
        }
    }
}

/// Reads the session cookie of a `Cookie` header under `api_key` (its tag compared in constant
/// time).
pub fn presented(cookie_header: Option<&str>, api_key: &str) -> Presented {
    let mut values = cookie_header
        .into_iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|v| !v.is_empty())
        .peekable();
    if values.peek().is_none() {
        return Presented::Absent;
    }
    if api_key.is_empty() {
        return Presented::Stale;
    }
    values
        .filter_map(|v| v.split_once('.'))
        .find(|(id, t)| {
            is_id(id)
                && t.len() == TAG_HEX
                && constant_time_eq(t.as_bytes(), tag(id, api_key).as_bytes())
        })
        .map_or(Presented::Stale, |(id, _)| {
            Presented::Session(id.to_owned())
        })
}

/// The session id in a `Cookie` header, if it holds one this worker made under `api_key`.
pub fn session_id(cookie_header: Option<&str>, api_key: &str) -> Option<String> {
    presented(cookie_header, api_key).session()
}

/// The `Set-Cookie` that signs in. No `Max-Age`: the browser forgets it when it closes, and the
/// server ends it after [`IDLE_MS`] idle anyway.
pub fn set_cookie(id: &str, api_key: &str) -> String {
    format!(
        "{COOKIE}={}; Path=/; HttpOnly; Secure; SameSite=Strict",
        cookie_value(id, api_key)
    )
}

/// The `Set-Cookie` that forgets the session.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

/// Headers on every `/admin/` reply (and the admin API's): scripts, styles and requests only
/// from the worker itself, no framing, no referrer, nothing cached.
pub const SECURITY_HEADERS: [(&str, &str); 6] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
    ("cross-origin-opener-policy", "same-origin"),
];

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_session_ends_after_twelve_idle_hours_and_use_keeps_it_alive() {
        let s = Session::new(&[7; 32], 1_000);
        assert_eq!(s.csrf.len(), 64);
        match s.touch(1_000 + 30_000) {
            Touch::Valid { store, session } => {
                assert!(!store, "a use within a minute is not written");
                assert_eq!(session.last_seen, 1_000);
            }
            t => panic!("{t:?}"),
        }
        let later = 1_000 + IDLE_MS - 1;
        let Touch::Valid { session, store } = s.touch(later) else {
            panic!("still valid a moment before the end");
        };
        assert!(store);
        assert_eq!(session.last_seen, later);
        // Used just before the end: it lives another 12 hours from that use.
        assert!(matches!(
            session.touch(later + IDLE_MS - 1),
            Touch::Valid { .. }
        ));
        assert_eq!(session.touch(later + IDLE_MS), Touch::Expired);
        assert_eq!(s.touch(1_000 + IDLE_MS), Touch::Expired);
    }

    #[test]
    fn state_changing_requests_need_the_sessions_csrf_token() {
        let s = Session::new(&[1; 32], 0);
        assert!(s.allows("GET", None));
        assert!(s.allows("head", None));
        assert!(!s.allows("POST", None));
        assert!(!s.allows("POST", Some("")));
        assert!(!s.allows("POST", Some("0101")));
        assert!(!s.allows("DELETE", Some(&s.csrf[..63])));
        assert!(s.allows("POST", Some(&s.csrf)));
    }

    #[test]
    fn the_cookie_is_read_only_when_it_holds_a_session_id_this_worker_signed() {
        const KEY: &str = "the-admin-key";
        let v = cookie_value(ID, KEY);
        assert_eq!(v.len(), 64 + 1 + 32);
        assert_eq!(
            session_id(Some(&format!("a=1; {COOKIE}={v}")), KEY),
            Some(ID.into())
        );
        assert_eq!(
            session_id(Some(&format!("{COOKIE}=\"{v}\"")), KEY),
            Some(ID.into())
        );
        // A bare id (the cookie of an earlier release), or one with a made-up tag, is no
        // session: nothing is looked up for it.
        assert_eq!(session_id(Some(&format!("{COOKIE}={ID}")), KEY), None);
        let forged = format!("{ID}.{}", "0".repeat(32));
        assert_eq!(session_id(Some(&format!("{COOKIE}={forged}")), KEY), None);
        // Another id with this id's tag, or this cookie under another key, is refused.
        let other = new_id(&[0xcd; 32]);
        let swapped = format!("{other}.{}", &v[65..]);
        assert_eq!(session_id(Some(&format!("{COOKIE}={swapped}")), KEY), None);
        assert_eq!(
            session_id(Some(&format!("{COOKIE}={v}")), "a-rotated-key"),
            None
        );
        assert_eq!(session_id(Some(&format!("{COOKIE}={v}")), ""), None);
        assert_eq!(
            session_id(Some(&format!("{COOKIE}={}", v.to_uppercase())), KEY),
            None
        );
        assert_eq!(session_id(Some(&format!("{COOKIE}={v}x")), KEY), None);
        assert_eq!(session_id(Some(&format!("other={v}")), KEY), None);
        assert_eq!(session_id(Some(&format!("{COOKIE}=../../x")), KEY), None);
        assert_eq!(session_id(None, KEY), None);
        assert_eq!(new_id(&[0xab; 32]).len(), 64);
        assert!(is_id(&new_id(&[0xab; 32])));
        assert!(set_cookie(ID, KEY).starts_with(&format!("{COOKIE}={v}; ")));
        assert_eq!(
            presented(Some(&format!("a=1; {COOKIE}={ID}")), KEY),
            Presented::Stale
        );
        assert_eq!(
            presented(Some(&format!("{COOKIE}={v}")), ""),
            Presented::Stale
        );
        assert_eq!(
            presented(Some(&format!("{COOKIE}=; a=1")), KEY),
            Presented::Absent
        );
        assert_eq!(presented(Some("a=1"), KEY), Presented::Absent);
        assert_eq!(presented(None, KEY), Presented::Absent);
    }

    #[test]
    fn the_cookie_is_http_only_secure_and_strict() {
        let c = set_cookie(ID, "k");
        for part in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(part), "{c}");
        }
        assert!(clear_cookie().contains("Max-Age=0"));
    }

    #[test]
    fn the_headers_forbid_framing_referrers_and_outside_scripts() {
        let csp = SECURITY_HEADERS[0].1;
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(csp.contains("script-src 'self'"));
        assert!(!csp.contains("unsafe-inline"));
        assert!(SECURITY_HEADERS.contains(&("referrer-policy", "no-referrer")));
    }

    #[test]
    fn failed_keys_are_counted_per_address_apart_from_knocks() {
        assert_eq!(failure_key("203.0.113.9"), "admin-key:ip:203.0.113.9");
        assert_eq!(
            failure_key("2001:db8::1"),
            failure_key("2001:db8::ffff"),
            "an IPv6 client by its /64"
        );
    }
}
