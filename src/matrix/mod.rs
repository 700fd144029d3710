//! The Matrix client-server API as data.
//!
//! Decides: the method, URL and JSON body of every call Knock makes, and what a homeserver's
//! reply means (success, retry later, log in again, or a final refusal). Never does: IO. The
//! wasm build sends an [`HttpRequest`] through `worker::Fetch`; native tests use any
//! [`Transport`]; end-to-end tests use a real Synapse.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use crate::domain::mxid::{RoomId, UserId};
use crate::domain::outcome::InviteEnd;

pub mod login;

/// Characters left as they are in a path segment or query value (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

/// A request ready to send. `Debug` leaves out the headers, which carry the token.
#[derive(Clone, PartialEq)]
pub struct HttpRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<String>,
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method.as_str(), self.url)
    }
}

impl HttpRequest {
    /// The same request with another access token (after a re-login).
    pub fn with_token(mut self, token: &str) -> HttpRequest {
        for (name, value) in &mut self.headers {
            if *name == "Authorization" {
                *value = format!("Bearer {token}");
            }
        }
        self
    }

    /// The JSON body, parsed (for tests and logs).
    pub fn json(&self) -> Value {
        self.body
            .as_deref()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    Timeout,
    Network(String),
}

/// Sends one request. Implemented over `worker::Fetch` in the wasm build.
#[allow(async_fn_in_trait)]
pub trait Transport {
    async fn send(&self, req: HttpRequest) -> Result<HttpResponse, TransportError>;
}

/// Builds the requests of one homeserver session.
#[derive(Clone)]
pub struct Api {
    base_url: String,
    access_token: String,
}

impl Api {
    pub fn new(base_url: &str, access_token: &str) -> Self {
        Api {
            base_url: base_url.trim_end_matches('/').to_owned(),
            access_token: access_token.to_owned(),
        }
    }

    fn req(&self, method: Method, path: String, body: Option<Value>) -> HttpRequest {
        let mut headers = vec![("Authorization", format!("Bearer {}", self.access_token))];
        if body.is_some() {
            headers.push(("Content-Type", "application/json".into()));
        }
        HttpRequest {
            method,
            url: format!("{}/_matrix/client/v3{}", self.base_url, path),
            headers,
            body: body.map(|b| b.to_string()),
        }
    }

    fn room(&self, room: &RoomId, rest: &str) -> String {
        format!("/rooms/{}{}", encode(room.as_str()), rest)
    }

    pub fn profile(&self, user: &UserId) -> HttpRequest {
        self.req(
            Method::Get,
            format!("/profile/{}", encode(user.as_str())),
            None,
        )
    }

    pub fn invite(&self, room: &RoomId, user: &UserId, reason: Option<&str>) -> HttpRequest {
        self.moderate(room, "invite", user, reason)
    }

    pub fn kick(&self, room: &RoomId, user: &UserId, reason: Option<&str>) -> HttpRequest {
        self.moderate(room, "kick", user, reason)
    }

    pub fn ban(&self, room: &RoomId, user: &UserId, reason: Option<&str>) -> HttpRequest {
        self.moderate(room, "ban", user, reason)
    }

    pub fn unban(&self, room: &RoomId, user: &UserId, reason: Option<&str>) -> HttpRequest {
        self.moderate(room, "unban", user, reason)
    }

    /// A membership change by name (`"invite"`, `"kick"`, `"ban"`, `"unban"`): the same
    /// `{user_id, reason?}` body on `/rooms/{id}/{action}`.
    pub fn moderate(
        &self,
        room: &RoomId,
        action: &str,
        user: &UserId,
        reason: Option<&str>,
    ) -> HttpRequest {
        let mut body = json!({ "user_id": user.as_str() });
        if let Some(r) = reason {
            body["reason"] = Value::from(r);
        }
        self.req(
            Method::Post,
            self.room(room, &format!("/{action}")),
            Some(body),
        )
    }

    /// `GET /rooms/{id}/members`, optionally filtered to one membership.
    pub fn members(&self, room: &RoomId, membership: Option<&str>) -> HttpRequest {
        let q = membership
            .map(|m| format!("?membership={}", encode(m)))
            .unwrap_or_default();
        self.req(Method::Get, self.room(room, &format!("/members{q}")), None)
    }

    /// `GET /rooms/{id}/state/m.room.member/{user}`: someone's current membership event
    /// content, or 404 if they never had one.
    pub fn member_state(&self, room: &RoomId, user: &UserId) -> HttpRequest {
        let path = self.room(
            room,
            &format!("/state/m.room.member/{}", encode(user.as_str())),
        );
        self.req(Method::Get, path, None)
    }

    pub fn joined_members(&self, room: &RoomId) -> HttpRequest {
        self.req(Method::Get, self.room(room, "/joined_members"), None)
    }

    pub fn room_state(&self, room: &RoomId) -> HttpRequest {
        self.req(Method::Get, self.room(room, "/state"), None)
    }

    /// `PUT /rooms/{id}/send/m.room.message/{txn}`: idempotent per transaction id.
    pub fn send_text(&self, room: &RoomId, txn_id: &str, text: &str) -> HttpRequest {
        let body = json!({ "msgtype": "m.text", "body": text });
        let path = self.room(room, &format!("/send/m.room.message/{}", encode(txn_id)));
        self.req(Method::Put, path, Some(body))
    }

    /// An `m.notice` with an HTML body, idempotent per transaction id (the management room's
    /// notices).
    pub fn send_notice(&self, room: &RoomId, txn_id: &str, body: &str, html: &str) -> HttpRequest {
        self.send_notice_with(room, txn_id, body, html, json!({}))
    }

    /// [`Api::send_notice`] with more content fields: what the notice is about (for the
    /// reactions to it), or `m.relates_to` (a reply in a notice's thread).
    pub fn send_notice_with(
        &self,
        room: &RoomId,
        txn_id: &str,
        body: &str,
        html: &str,
        extra: Value,
    ) -> HttpRequest {
        let mut content = json!({
            "msgtype": "m.notice",
            "body": body,
            "format": "org.matrix.custom.html",
            "formatted_body": html,
        });
        if let (Some(c), Some(more)) = (content.as_object_mut(), extra.as_object()) {
            for (k, v) in more {
                c.insert(k.clone(), v.clone());
            }
        }
        let path = self.room(room, &format!("/send/m.room.message/{}", encode(txn_id)));
        self.req(Method::Put, path, Some(content))
    }

    /// Replaces the text of the notice `original` (an `m.replace` edit; clients show the new
    /// text in place of the old, and reactions stay on the original).
    pub fn edit_notice(
        &self,
        room: &RoomId,
        txn_id: &str,
        original: &str,
        body: &str,
        html: &str,
    ) -> HttpRequest {
        let new = json!({
            "msgtype": "m.notice",
            "body": body,
            "format": "org.matrix.custom.html",
            "formatted_body": html,
        });
        let content = json!({
            "msgtype": "m.notice",
            "body": format!("* {body}"),
            "format": "org.matrix.custom.html",
            "formatted_body": format!("* {html}"),
            "m.new_content": new,
            "m.relates_to": { "rel_type": "m.replace", "event_id": original },
        });
        let path = self.room(room, &format!("/send/m.room.message/{}", encode(txn_id)));
        self.req(Method::Put, path, Some(content))
    }

    /// Sets a state event (an empty object removes a policy rule, as the spec says).
    pub fn put_state(
        &self,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) -> HttpRequest {
        let path = self.room(
            room,
            &format!("/state/{}/{}", encode(event_type), encode(state_key)),
        );
        self.req(Method::Put, path, Some(content.clone()))
    }

    /// One state event of a room (`state_key` empty for most).
    pub fn state_event(&self, room: &RoomId, event_type: &str, state_key: &str) -> HttpRequest {
        let path = self.room(
            room,
            &format!("/state/{}/{}", encode(event_type), encode(state_key)),
        );
        self.req(Method::Get, path, None)
    }

    /// An incremental `/sync` that returns at once, filtered to one room's membership events.
    pub fn sync(&self, room: &RoomId, since: Option<&str>) -> HttpRequest {
        self.sync_filtered(room, since, &["m.room.member"], &["m.room.member"])
    }

    /// An incremental `/sync` that returns at once, filtered to one room's timeline events of
    /// these types (the management room's reactions and messages).
    pub fn sync_timeline(&self, room: &RoomId, since: Option<&str>, types: &[&str]) -> HttpRequest {
        self.sync_filtered(room, since, types, &["m.room.power_levels"])
    }

    /// The room an alias names.
    pub fn resolve_alias(&self, alias: &str) -> HttpRequest {
        self.req(
            Method::Get,
            format!("/directory/room/{}", encode(alias)),
            None,
        )
    }

    /// The bot joins a room (a no-op if it is in already).
    pub fn join(&self, room: &RoomId) -> HttpRequest {
        self.req(
            Method::Post,
            format!("/join/{}", encode(room.as_str())),
            Some(json!({})),
        )
    }

    /// `/sync` with `timeout=0` and this filter, from `since` (or from the start).
    pub fn sync_with(&self, filter: &Value, since: Option<&str>) -> HttpRequest {
        let mut q = format!("?timeout=0&filter={}", encode(&filter.to_string()));
        if let Some(s) = since {
            q.push_str(&format!("&since={}", encode(s)));
        }
        self.req(Method::Get, format!("/sync{q}"), None)
    }

    /// `/sync` with `timeout=0`, one room, these timeline and state event types, nothing else.
    fn sync_filtered(
        &self,
        room: &RoomId,
        since: Option<&str>,
        timeline: &[&str],
        state: &[&str],
    ) -> HttpRequest {
        let filter = json!({
            "room": {
                "rooms": [room.as_str()],
                "timeline": { "types": timeline, "limit": 100 },
                "state": { "types": state },
                "ephemeral": { "not_types": ["*"] },
                "account_data": { "not_types": ["*"] }
            },
            "presence": { "not_types": ["*"] },
            "account_data": { "not_types": ["*"] }
        });
        self.sync_with(&filter, since)
    }

    /// One event of a room.
    pub fn event(&self, room: &RoomId, event_id: &str) -> HttpRequest {
        self.req(
            Method::Get,
            self.room(room, &format!("/event/{}", encode(event_id))),
            None,
        )
    }

    /// Opens a direct chat with `user` (they get an invite to it).
    pub fn create_dm(&self, user: &UserId) -> HttpRequest {
        let body = json!({
            "is_direct": true,
            "invite": [user.as_str()],
            "preset": "trusted_private_chat",
        });
        self.req(Method::Post, "/createRoom".into(), Some(body))
    }

    pub fn whoami(&self) -> HttpRequest {
        self.req(Method::Get, "/account/whoami".into(), None)
    }
}

/// A room member as a listing or a sync reports them.
pub use crate::domain::outcome::Member;

fn member_from_event(e: &Value) -> Option<Member> {
    if e.get("type")?.as_str()? != "m.room.member" {
        return None;
    }
    let content = e.get("content")?;
    Some(Member {
        user_id: e.get("state_key")?.as_str()?.to_owned(),
        membership: content.get("membership")?.as_str()?.to_owned(),
        display_name: content
            .get("displayname")
            .and_then(Value::as_str)
            .map(str::to_owned),
        event_id: e.get("event_id").and_then(Value::as_str).map(str::to_owned),
        sender: e.get("sender").and_then(Value::as_str).map(str::to_owned),
    })
}

/// A space's child rooms in its `GET /rooms/{id}/state` reply: every `m.space.child` event whose
/// content has a non-empty `via` (an empty content removes a child), in the order given.
pub fn parse_space_children(state: &Value) -> Vec<RoomId> {
    state
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == "m.space.child")
                .filter(|e| {
                    e["content"]["via"]
                        .as_array()
                        .is_some_and(|v| !v.is_empty())
                })
                .filter_map(|e| e["state_key"].as_str().and_then(|k| RoomId::parse(k).ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// The members in a `GET /rooms/{id}/members` reply.
pub fn parse_members(body: &Value) -> Vec<Member> {
    body.get("chunk")
        .and_then(Value::as_array)
        .map(|c| c.iter().filter_map(member_from_event).collect())
        .unwrap_or_default()
}

/// How an invite made at or after `since` (unix ms) ended, if a `GET /members?membership=leave`
/// reply shows it: a leave at or after `since` out of an invite or a join means the invite
/// landed, and the sender says who ended it.
pub fn invite_ended_since(body: &Value, user: &UserId, since: u64) -> Option<InviteEnd> {
    let e = body
        .get("chunk")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|e| {
            e["state_key"] == user.as_str()
                && e["content"]["membership"] == "leave"
                && e["origin_server_ts"].as_u64().is_some_and(|t| t >= since)
        })?;
    let by_self = e["sender"] == user.as_str();
    match e["unsigned"]["prev_content"]["membership"].as_str() {
        Some("invite") if by_self => Some(InviteEnd::Declined),
        Some("join") if by_self => Some(InviteEnd::Left),
        Some("invite" | "join") => Some(InviteEnd::Removed),
        _ => None,
    }
}

/// What an incremental sync says about one room's membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedMembers {
    pub next_batch: Option<String>,
    /// Membership changes, oldest first (state before timeline).
    pub changes: Vec<Member>,
    /// The timeline has a gap: some changes were left out, so list the members in full.
    pub limited: bool,
}

pub fn parse_sync(body: &Value, room: &RoomId) -> SyncedMembers {
    let joined = body
        .get("rooms")
        .and_then(|r| r.get("join"))
        .and_then(|j| j.get(room.as_str()));
    let events = |section: &str| -> Vec<Member> {
        joined
            .and_then(|r| r.get(section))
            .and_then(|s| s.get("events"))
            .and_then(Value::as_array)
            .map(|evs| evs.iter().filter_map(member_from_event).collect())
            .unwrap_or_default()
    };
    let mut changes = events("state");
    changes.extend(events("timeline"));
    SyncedMembers {
        next_batch: body
            .get("next_batch")
            .and_then(Value::as_str)
            .map(str::to_owned),
        changes,
        limited: joined
            .and_then(|r| r.get("timeline"))
            .and_then(|t| t.get("limited"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
    }
}

/// A room's timeline in a `/sync` reply: the next token, the events, and whether the server
/// left some out (`limited`).
pub fn parse_timeline(body: &Value, room: &RoomId) -> (Option<String>, Vec<Value>, bool) {
    let joined = &body["rooms"]["join"][room.as_str()];
    let events = joined["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    (
        body["next_batch"].as_str().map(str::to_owned),
        events,
        joined["timeline"]["limited"].as_bool().unwrap_or(false),
    )
}

/// What a homeserver's reply means for the caller: the core's neutral words for it.
pub use crate::domain::outcome::Failure;

/// Used when a 429 names no delay at all.
pub const DEFAULT_RATE_LIMIT_WAIT_MS: u64 = 5_000;

/// Classifies a reply. `Ok` carries the parsed JSON body (`{}` when the body is empty); a
/// success whose body is not JSON (truncated, garbled) counts as a transient server failure.
pub fn classify(result: Result<HttpResponse, TransportError>) -> Result<Value, Failure> {
    let resp = match result {
        Ok(r) => r,
        Err(TransportError::Timeout) => return Err(Failure::Timeout),
        Err(TransportError::Network(_)) => return Err(Failure::Network),
    };
    let body: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
    let errcode = || {
        body.get("errcode")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    match resp.status {
        200..=299 => {
            // A truncated or garbled success body is not a success we can rely on.
            if body.is_null() && !resp.body.trim().is_empty() {
                Err(Failure::Server {
                    status: resp.status,
                })
            } else if body.is_null() {
                Ok(Value::Object(Default::default()))
            } else {
                Ok(body)
            }
        }
        429 => Err(Failure::RateLimited {
            retry_after_ms: retry_after_ms(resp.retry_after.as_deref(), &body),
        }),
        401 => Err(Failure::Unauthorized { errcode: errcode() }),
        408 | 500..=599 => Err(Failure::Server {
            status: resp.status,
        }),
        status => Err(Failure::refused(
            status,
            &errcode(),
            &body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(200)
                .collect::<String>(),
        )),
    }
}

/// The `Retry-After` header (spec v1.10+) in seconds, else the body's `retry_after_ms`.
fn retry_after_ms(header: Option<&str>, body: &Value) -> u64 {
    header
        .and_then(|h| h.trim().parse::<u64>().ok())
        .map(|s| s.saturating_mul(1000))
        .or_else(|| body.get("retry_after_ms").and_then(Value::as_u64))
        .unwrap_or(DEFAULT_RATE_LIMIT_WAIT_MS)
        .clamp(1, 3_600_000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_space_lists_only_the_children_it_still_has() {
        let state = serde_json::json!([
            {"type": "m.room.create", "state_key": "", "content": {"type": "m.space"}},
            {"type": "m.space.child", "state_key": "!a:x", "content": {"via": ["x"]}},
            {"type": "m.space.child", "state_key": "!gone:x", "content": {}},
            {"type": "m.space.child", "state_key": "!b:x", "content": {"via": ["x"], "order": "2"}},
            {"type": "m.space.child", "state_key": "not a room", "content": {"via": ["x"]}},
        ]);
        let ids: Vec<String> = parse_space_children(&state)
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect();
        assert_eq!(ids, vec!["!a:x", "!b:x"]);
    }

    use super::*;

    fn room() -> RoomId {
        RoomId::parse("!secret:localhost").unwrap()
    }
    fn user() -> UserId {
        UserId::parse("@alice:localhost").unwrap()
    }
    fn api() -> Api {
        Api::new("http://127.0.0.1:8008/", "syt_token")
    }
    fn resp(status: u16, body: &str) -> Result<HttpResponse, TransportError> {
        Ok(HttpResponse {
            status,
            retry_after: None,
            body: body.into(),
        })
    }

    #[test]
    fn an_invite_is_a_post_with_the_user_in_the_body() {
        let r = api().invite(&room(), &user(), Some("via form"));
        assert_eq!(r.method, Method::Post);
        assert_eq!(
            r.url,
            "http://127.0.0.1:8008/_matrix/client/v3/rooms/%21secret%3Alocalhost/invite"
        );
        assert_eq!(
            r.json(),
            json!({"user_id": "@alice:localhost", "reason": "via form"})
        );
        assert!(r
            .headers
            .contains(&("Authorization", "Bearer syt_token".into())));
    }

    #[test]
    fn kick_ban_and_unban_share_the_membership_shape() {
        for (r, action) in [
            (api().kick(&room(), &user(), None), "kick"),
            (api().ban(&room(), &user(), None), "ban"),
            (api().unban(&room(), &user(), None), "unban"),
        ] {
            assert!(r.url.ends_with(&format!("/{action}")));
            assert_eq!(r.json(), json!({"user_id": "@alice:localhost"}));
        }
    }

    #[test]
    fn the_profile_lookup_encodes_the_user_id() {
        let r = api().profile(&UserId::parse("@a/b+c:localhost").unwrap());
        assert_eq!(r.method, Method::Get);
        assert_eq!(
            r.url,
            "http://127.0.0.1:8008/_matrix/client/v3/profile/%40a%2Fb%2Bc%3Alocalhost"
        );
        assert_eq!(r.body, None);
    }

    #[test]
    fn messages_are_puts_keyed_by_transaction() {
        let r = api().send_text(&room(), "welcome-1", "hi");
        assert_eq!(r.method, Method::Put);
        assert!(r.url.ends_with("/send/m.room.message/welcome-1"));
        assert_eq!(r.json(), json!({"msgtype": "m.text", "body": "hi"}));
    }

    #[test]
    fn a_single_membership_is_read_from_room_state() {
        let r = api().member_state(&room(), &user());
        assert!(r
            .url
            .ends_with("/rooms/%21secret%3Alocalhost/state/m.room.member/%40alice%3Alocalhost"));
        assert_eq!(
            api().moderate(&room(), "ban", &user(), Some("r")),
            api().ban(&room(), &user(), Some("r"))
        );
    }

    #[test]
    fn a_sync_is_filtered_to_the_room_and_returns_at_once() {
        let r = api().sync(&room(), Some("s72_1"));
        assert!(r.url.contains("/sync?timeout=0&filter="));
        assert!(r.url.ends_with("&since=s72_1"));
        assert!(r.url.contains("m.room.member"));
        assert!(!api().sync(&room(), None).url.contains("since"));
    }

    #[test]
    fn sync_replies_yield_membership_changes_in_order() {
        let body = json!({
            "next_batch": "s9",
            "rooms": {"join": {"!secret:localhost": {
                "state": {"events": [
                    {"type": "m.room.member", "state_key": "@a:x", "event_id": "$1",
                     "content": {"membership": "invite"}}]},
                "timeline": {"limited": false, "events": [
                    {"type": "m.room.member", "state_key": "@a:x", "event_id": "$2",
                     "content": {"membership": "join", "displayname": "A"}},
                    {"type": "m.room.message", "content": {"body": "hi"}},
                    {"type": "m.room.member", "state_key": "@k:x", "event_id": "$3",
                     "content": {"membership": "knock", "reason": "let me in"}}]}
            }}}
        });
        let s = parse_sync(&body, &room());
        assert_eq!(s.next_batch.as_deref(), Some("s9"));
        assert!(!s.limited);
        let seen: Vec<(&str, &str)> = s
            .changes
            .iter()
            .map(|m| (m.user_id.as_str(), m.membership.as_str()))
            .collect();
        assert_eq!(
            seen,
            vec![("@a:x", "invite"), ("@a:x", "join"), ("@k:x", "knock")]
        );
        assert_eq!(s.changes[1].display_name.as_deref(), Some("A"));
        let gap = json!({"next_batch": "s10", "rooms": {"join": {"!secret:localhost": {
            "timeline": {"limited": true, "events": []}}}}});
        assert!(parse_sync(&gap, &room()).limited);
        let other_room = parse_sync(&json!({"next_batch": "s1"}), &room());
        assert!(other_room.changes.is_empty());
    }

    #[test]
    fn member_listings_parse_every_membership() {
        let body = json!({"chunk": [
            {"type": "m.room.member", "state_key": "@a:x", "content": {"membership": "join"}},
            {"type": "m.room.member", "state_key": "@b:x", "content": {"membership": "ban"}},
            {"type": "m.room.member", "content": {"membership": "join"}}
        ]});
        let m = parse_members(&body);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].membership, "ban");
        assert!(parse_members(&json!({})).is_empty());
    }

    #[test]
    fn an_invite_that_ended_after_the_attempt_says_who_ended_it() {
        let leave = |sender: &str, prev: &str, ts: u64| {
            json!({"chunk": [{"type": "m.room.member", "state_key": "@alice:localhost",
                "sender": sender, "origin_server_ts": ts, "content": {"membership": "leave"},
                "unsigned": {"prev_content": {"membership": prev}}}]})
        };
        let u = user();
        let ended = |b: &Value| invite_ended_since(b, &u, 100);
        assert_eq!(
            ended(&leave("@alice:localhost", "invite", 200)),
            Some(InviteEnd::Declined)
        );
        assert_eq!(
            ended(&leave("@alice:localhost", "join", 200)),
            Some(InviteEnd::Left)
        );
        assert_eq!(
            ended(&leave("@mod:localhost", "invite", 200)),
            Some(InviteEnd::Removed)
        );
        assert_eq!(
            ended(&leave("@mod:localhost", "join", 200)),
            Some(InviteEnd::Removed)
        );
        assert_eq!(ended(&leave("@alice:localhost", "invite", 50)), None);
        assert_eq!(ended(&leave("@alice:localhost", "knock", 200)), None);
        assert_eq!(ended(&json!({})), None);
    }

    #[test]
    fn member_listings_can_filter_by_membership() {
        assert!(api()
            .members(&room(), Some("knock"))
            .url
            .ends_with("/members?membership=knock"));
        assert!(api().members(&room(), None).url.ends_with("/members"));
    }

    #[test]
    fn debug_output_hides_the_token() {
        let r = api().whoami();
        assert!(!format!("{r:?}").contains("syt_token"));
    }

    #[test]
    fn success_bodies_are_parsed() {
        assert_eq!(classify(resp(200, "{}")), Ok(json!({})));
        assert_eq!(classify(resp(200, "")), Ok(json!({})));
        assert_eq!(
            classify(resp(200, r#"{"displayname":"A"}"#)),
            Ok(json!({"displayname":"A"}))
        );
    }

    #[test]
    fn a_truncated_success_body_is_a_transient_failure() {
        let r = classify(resp(200, r#"{"chunk":[{"ty"#));
        assert_eq!(r, Err(Failure::Server { status: 200 }));
        assert!(r.unwrap_err().is_transient());
    }

    #[test]
    fn rate_limits_prefer_the_header_then_the_body() {
        let with_header = Ok(HttpResponse {
            status: 429,
            retry_after: Some("10".into()),
            body: r#"{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":9816}"#.into(),
        });
        assert_eq!(
            classify(with_header),
            Err(Failure::RateLimited {
                retry_after_ms: 10_000
            })
        );
        assert_eq!(
            classify(resp(
                429,
                r#"{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":9816}"#
            )),
            Err(Failure::RateLimited {
                retry_after_ms: 9816
            })
        );
        assert_eq!(
            classify(resp(429, "")),
            Err(Failure::RateLimited {
                retry_after_ms: DEFAULT_RATE_LIMIT_WAIT_MS
            })
        );
    }

    #[test]
    fn server_errors_and_timeouts_are_transient() {
        for r in [
            resp(500, ""),
            resp(502, "<html>"),
            resp(408, ""),
            Err(TransportError::Timeout),
            Err(TransportError::Network("reset".into())),
        ] {
            assert!(classify(r).unwrap_err().is_transient());
        }
    }

    #[test]
    fn a_bad_token_asks_for_login() {
        let r = classify(resp(
            401,
            r#"{"errcode":"M_UNKNOWN_TOKEN","soft_logout":false}"#,
        ));
        assert_eq!(
            r,
            Err(Failure::Unauthorized {
                errcode: "M_UNKNOWN_TOKEN".into()
            })
        );
        assert!(!r.unwrap_err().is_transient());
    }

    #[test]
    fn other_client_errors_are_final_refusals() {
        let r = classify(resp(
            403,
            r#"{"errcode":"M_FORBIDDEN","error":"@a:x is already in the room."}"#,
        ));
        assert_eq!(
            r,
            Err(Failure::Refused {
                status: 403,
                errcode: "M_FORBIDDEN".into(),
                error: "@a:x is already in the room.".into()
            })
        );
    }
}
