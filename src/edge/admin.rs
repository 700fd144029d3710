//! The admin API (bearer `API_KEY`): block, unblock, and the block-list itself.

use serde::Deserialize;
use serde_json::{json, Value};
use worker::{Env, Method, Request, Response, Result};

use super::everywhere::{all_rooms, block_everywhere, preview_everywhere, unblock_everywhere};
use super::http::{self, Body};
use super::list_do::{ListOp, DEFAULT_LIST};
use super::log::Logger;
use super::room_do;
use super::session_do::{self, SessionOp};
use super::{env_lookup, now_ms, rate_limit_do, stub, LISTS_BINDING};
use crate::domain::blocklist::{BlockList, Entry, EntryRequest};
use crate::domain::config::Config;
use crate::domain::deployment::Site;
use crate::domain::form::MAX_BODY_BYTES;
use crate::domain::moderation;
use crate::domain::signature::{check_bearer, AdminAuth};
use crate::room::RoomOp;

/// Paths the admin API answers.
pub const ROUTES: [&str; 17] = [
    "/rooms",
    "/login/beeper/start",
    "/login/beeper/verify",
    "/whoami",
    "/block_user",
    "/unblock_user",
    "/blocklist",
    "/blocklist/preview",
    "/held_knocks",
    "/approve_knock",
    "/reject_knock",
    "/rescind_invite",
    "/pending_invites",
    "/room_members",
    "/room_state",
    "/knocks",
    "/forget_user",
];

/// A bulk import may be as large as the list's KV value.
const MAX_IMPORT_BYTES: usize = 24 * 1024 * 1024;

/// Who is calling the admin API.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// `Authorization: Bearer <API_KEY>`.
    Key,
    /// The moderator page: a signed-in session's cookie (and its CSRF token for changes).
    Page,
}

impl Caller {
    /// How a decision records who made it.
    fn name(self) -> &'static str {
        match self {
            Caller::Key => "the admin API",
            Caller::Page => "the moderator page",
        }
    }
}

pub async fn handle(req: Request, env: &Env, log: &Logger) -> Result<Response> {
    let mut resp = match authorize(&req, env, log).await? {
        Ok(caller) => dispatch(req, env, log, caller).await?,
        Err(refused) => refused,
    };
    // Admin answers are never cached, framed or sent on with a referrer.
    for (name, value) in crate::web::session::SECURITY_HEADERS {
        resp.headers_mut().set(name, value)?;
    }
    Ok(resp)
}

/// Lets a request in with the bearer key, or with the moderator page's session cookie and, for
/// anything that changes state, the session's CSRF token. A wrong key counts against the
/// client's address; too many and it is refused for a while (429), the right key too.
async fn authorize(
    req: &Request,
    env: &Env,
    log: &Logger,
) -> Result<std::result::Result<Caller, Response>> {
    use crate::web::session::{self, Presented};
    let lookup = env_lookup(env);
    let api_key = lookup("API_KEY");
    let authorization = req.headers().get("authorization")?;
    let cookie = session::presented(
        req.headers().get("cookie")?.as_deref(),
        api_key.as_deref().unwrap_or_default(),
    );
    let address = req
        .headers()
        .get("cf-connecting-ip")?
        .unwrap_or_else(|| "unknown".into());
    let failures = session::failure_key(&address);
    let refused = |status, msg: &str| http::json_error(status, msg).map(Err);
    match (authorization.as_deref(), cookie) {
        // A session cookie this worker did not sign under the current key (made up, or from
        // before `API_KEY` changed): refused without asking any Durable Object.
        (None, Presented::Stale) if api_key.as_deref().is_some_and(|k| !k.is_empty()) => refused(
            401,
            "Your moderator page session has ended: sign in again at /admin/login.",
        ),
        // (A session is only ever read under a set key; with none, the bearer check below
        // answers that the admin API is disabled.)
        (None, Presented::Session(id)) => {
            let Some(s) = super::admin_session_do::touch(env, &id).await? else {
                return refused(
                    401,
                    "Your moderator page session has ended: sign in again at /admin/login.",
                );
            };
            let token = req.headers().get(session::CSRF_HEADER)?;
            if !s.allows(req.method().as_ref(), token.as_deref()) {
                log.event("admin_csrf_refused", &[("path", req.path().into())]);
                return refused(
                    403,
                    "A change made with the moderator page's session needs its CSRF token \
                     (the X-CSRF-Token header).",
                );
            }
            Ok(Ok(Caller::Page))
        }
        (presented, _) => match check_bearer(api_key.as_deref(), presented) {
            AdminAuth::Disabled => refused(503, "admin API disabled: set API_KEY"),
            AdminAuth::Allowed => match rate_limit_do::known_denial(&failures, now_ms()) {
                Some(wait) => too_many_keys(wait).map(Err),
                None => Ok(Ok(Caller::Key)),
            },
            AdminAuth::Denied => {
                log.event("admin_denied", &[("path", req.path().into())]);
                // Only a key that was tried counts as a failure.
                if presented.is_some() {
                    let answer = rate_limit_do::check(env, &failures, session::FAILED_KEYS).await?;
                    if !answer.allow {
                        return too_many_keys(answer.retry_after_ms).map(Err);
                    }
                }
                refused(401, "A valid `Authorization: Bearer <API_KEY>` is needed.")
            }
        },
    }
}

/// 429 after too many wrong admin keys from one address.
pub fn too_many_keys(retry_after_ms: u64) -> Result<Response> {
    let secs = crate::domain::rate_limit::retry_after_secs(retry_after_ms);
    let mut resp = http::json_error(
        429,
        &format!("Too many wrong admin keys from this address. Try again in {secs} seconds."),
    )?;
    resp.headers_mut().set("retry-after", &secs.to_string())?;
    Ok(resp)
}

/// Answers an admin request that [`authorize`] let in. The moderator page's views call this in
/// process, so the page and the API share one code path.
pub async fn dispatch(
    mut req: Request,
    env: &Env,
    log: &Logger,
    caller: Caller,
) -> Result<Response> {
    let lookup = env_lookup(env);
    let site = match Site::load(&lookup) {
        Ok(s) => s,
        Err(p) => return http::json_error(503, &p.summary()),
    };
    // Every room's configuration, the default room's first; `?room=` picks the one a
    // room-specific route is about.
    let rooms = match all_rooms(&site, &lookup) {
        Ok(r) => r,
        Err(p) => return http::json_error(503, &p.summary()),
    };
    let default = site.default_room();
    let asked = req
        .url()?
        .query_pairs()
        .find(|(k, _)| k == "room")
        .map(|(_, v)| v.into_owned());
    let chosen = match &asked {
        None => default.clone(),
        Some(name) => match site.resolve(name) {
            Some(r) => Some(r),
            None => {
                return http::json_error(
                    400,
                    &format!("No room {name:?} in this deployment; GET /rooms lists them."),
                )
            }
        },
    };
    let Some(cfg) = rooms
        .iter()
        .find(|(_, c)| Some(&c.room_id) == chosen.as_ref())
        .map(|(_, c)| c.clone())
    else {
        return http::json_error(503, "Knock is not configured: no room");
    };
    let path = req.path();
    match (req.method(), path.as_str()) {
        (Method::Get, "/rooms") => list_rooms(env, &site, &rooms).await,
        (Method::Post, "/block_user") => block_user(&mut req, env, &rooms, log).await,
        (Method::Post, "/blocklist/preview") => {
            let (_, entry) = match read_entry(&mut req).await {
                Ok(e) => e,
                Err(reply) => return reply,
            };
            let out = preview_everywhere(env, &rooms, &entry).await?;
            http::json(200, &json!({ "status": "preview", "preview": out }))
        }
        (Method::Post, "/unblock_user") => unblock_user(&mut req, env, &rooms, log).await,
        (Method::Get, "/blocklist") => export(&req, env).await,
        (Method::Post, "/blocklist") => import(&mut req, env, log).await,
        (Method::Get, "/held_knocks") => {
            let held: Value = room_do::call(env, &cfg, &RoomOp::Held).await?;
            http::json(200, &held)
        }
        (Method::Post, "/approve_knock") => {
            decide_held(&mut req, env, &cfg, log, true, caller).await
        }
        (Method::Post, "/reject_knock") => {
            decide_held(&mut req, env, &cfg, log, false, caller).await
        }
        (Method::Post, "/rescind_invite") => {
            let user = match read_user(&mut req).await {
                Ok(u) => u,
                Err(reply) => return reply,
            };
            let op = RoomOp::Rescind {
                user_id: user.as_str().into(),
            };
            let out: Value = room_do::call(env, &cfg, &op).await?;
            log.event(
                "rescinded",
                &[("user_id", user.as_str().into()), ("result", out.clone())],
            );
            http::json(200, &out)
        }
        (Method::Post, "/login/beeper/start") => {
            #[derive(Deserialize, Default)]
            struct Start {
                email: Option<String>,
            }
            let body: Start = read_json(&mut req).await.unwrap_or_default();
            let op = SessionOp::BeeperStart { email: body.email };
            session_reply(session_do::call(env, &cfg, &op).await?)
        }
        (Method::Post, "/login/beeper/verify") => {
            #[derive(Deserialize)]
            struct Verify {
                code: String,
            }
            let body: Verify = match read_json(&mut req).await {
                Ok(b) => b,
                Err(msg) => return http::json_error(400, &msg),
            };
            let op = SessionOp::BeeperVerify { code: body.code };
            session_reply(session_do::call(env, &cfg, &op).await?)
        }
        (Method::Get, "/whoami") => {
            let mut status: Value = session_do::call(env, &cfg, &SessionOp::Status).await?;
            if status["user_id"].is_null() {
                // Token mode never logged in itself: ask the homeserver who the token is.
                let _: Value = session_do::call(env, &cfg, &SessionOp::Token).await?;
                status = session_do::call(env, &cfg, &SessionOp::Status).await?;
            }
            http::json(200, &status)
        }
        (Method::Get, "/pending_invites") => room_json(env, &cfg, &RoomOp::Pending).await,
        (Method::Get, "/room_members") => room_json(env, &cfg, &RoomOp::Members).await,
        (Method::Get, "/room_state") => room_json(env, &cfg, &RoomOp::State).await,
        (Method::Get, "/knocks") => {
            let url = req.url()?;
            let param = |name: &str| {
                url.query_pairs()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned())
            };
            let number = |name: &str| param(name).map(|v| v.trim().parse::<i64>());
            let limit = match number("limit") {
                None => 100,
                Some(Ok(n)) if (1..=1000).contains(&n) => n as u32,
                Some(_) => return http::json_error(400, "limit must be a number from 1 to 1000."),
            };
            let before = match number("before") {
                None => None,
                Some(Ok(n)) if n > 0 => Some(n),
                Some(_) => {
                    return http::json_error(400, "before must be a knock id (a positive number).")
                }
            };
            // `?user_id=`: one person's knocks, the ID read as it is stored (canonical).
            let user_id = match param("user_id").filter(|u| !u.trim().is_empty()) {
                None => None,
                Some(u) => match crate::domain::mxid::UserId::parse(u.trim()) {
                    Ok(id) => Some(id.as_str().to_owned()),
                    Err(e) => return http::json_error(400, e.message()),
                },
            };
            let op = RoomOp::Knocks {
                limit,
                before,
                verdict: param("verdict"),
                user_id,
            };
            let out: Value = room_do::call(env, &cfg, &op).await?;
            if let Some(err) = out.get("error").and_then(Value::as_str) {
                return http::json_error(400, err);
            }
            http::json(200, &out)
        }
        (Method::Post, "/forget_user") => {
            let user = match read_user(&mut req).await {
                Ok(u) => u,
                Err(reply) => return reply,
            };
            let op = RoomOp::Forget {
                user_id: user.as_str().into(),
            };
            // A person is forgotten in every room of the deployment.
            let (mut knocks, mut deliveries) = (0, 0);
            for (_, room_cfg) in &rooms {
                let one: Value = room_do::call(env, room_cfg, &op).await?;
                knocks += one["forgotten"]["knocks"].as_u64().unwrap_or(0);
                deliveries += one["forgotten"]["deliveries"].as_u64().unwrap_or(0);
            }
            let out = json!({ "forgotten": { "knocks": knocks, "deliveries": deliveries } });
            log.event("user_forgotten", &[("result", out["forgotten"].clone())]);
            let entries: BlockList =
                stub::call(env, LISTS_BINDING, DEFAULT_LIST, "/", &ListOp::Get).await?;
            let index = crate::domain::blocklist::BlockIndex::build(entries.entries);
            http::json(
                200,
                &json!({
                    "status": "forgotten",
                    "knocks": out["forgotten"]["knocks"],
                    "deliveries": out["forgotten"]["deliveries"],
                    "still_blocked": index.check_user(&user).is_some(),
                }),
            )
        }
        _ => http::json_error(405, "Method not allowed on this admin route."),
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    req: &mut Request,
) -> std::result::Result<T, String> {
    let body = match http::read_limited(req, MAX_BODY_BYTES).await {
        Ok(Body::Read(b)) => b,
        Ok(Body::TooLarge) => return Err("The request body is larger than 64 KiB.".into()),
        Err(e) => return Err(e.to_string()),
    };
    serde_json::from_slice(&body)
        .map_err(|e| format!("The body is not the JSON this route takes: {e}"))
}

/// The body of `block_user` and `blocklist/preview`, and the entry it asks for.
async fn read_entry(
    req: &mut Request,
) -> std::result::Result<(EntryRequest, Entry), Result<Response>> {
    let body: EntryRequest = read_json(req)
        .await
        .map_err(|msg| http::json_error(400, &msg))?;
    let entry = body
        .to_entry(now_ms())
        .map_err(|e| http::json_error(400, e.message()))?;
    Ok((body, entry))
}

async fn block_user(
    req: &mut Request,
    env: &Env,
    rooms: &[(String, Config)],
    log: &Logger,
) -> Result<Response> {
    let (body, entry) = match read_entry(req).await {
        Ok(e) => e,
        Err(reply) => return reply,
    };
    match block_everywhere(env, rooms, &entry, body.reach, log).await? {
        Some(reply) => http::json(200, &reply),
        None => http::json_error(507, "The block-list is full."),
    }
}

/// `GET /rooms`: every room with its forms, health, queue depth and last cron run; never a
/// room ID.
async fn list_rooms(env: &Env, site: &Site, rooms: &[(String, Config)]) -> Result<Response> {
    let labels = site.labels();
    let calls = rooms.iter().map(|(label, cfg)| async move {
        (
            label,
            room_do::call::<Value>(env, cfg, &RoomOp::Status).await,
        )
    });
    let mut out = Vec::new();
    for (label, status) in futures_util::future::join_all(calls).await {
        let mut one = serde_json::to_value(labels.iter().find(|l| &l.room == label))?;
        match status {
            Ok(s) => one["status"] = s,
            Err(e) => one["status"] = json!({ "error": e.to_string() }),
        }
        out.push(one);
    }
    http::json(200, &json!({ "rooms": out }))
}

fn session_reply(out: Value) -> Result<Response> {
    match out.get("error").and_then(Value::as_str) {
        Some(err) => http::json_error(400, err),
        None => http::json(200, &out),
    }
}

async fn room_json(env: &Env, cfg: &Config, op: &RoomOp) -> Result<Response> {
    let out: Value = room_do::call(env, cfg, op).await?;
    if let Some(err) = out.get("error").and_then(Value::as_str) {
        return http::json_error(502, &format!("The homeserver did not answer: {err}"));
    }
    http::json(200, &out)
}

async fn decide_held(
    req: &mut Request,
    env: &Env,
    cfg: &Config,
    log: &Logger,
    approve: bool,
    caller: Caller,
) -> Result<Response> {
    let body: UnblockRequest = match read_json(req).await {
        Ok(b) => b,
        Err(msg) => return http::json_error(400, &msg),
    };
    let user = match crate::domain::mxid::UserId::parse(&body.user_id) {
        Ok(u) => u,
        Err(e) => return http::json_error(400, e.message()),
    };
    // The moderator's reason, cleaned like any outside text, is kept with the knock: its note
    // reads "approved by the moderator page (known from the forum)", or its reason "rejected by
    // the moderator page: why".
    let reason = body
        .reason
        .as_deref()
        .map(moderation::notices::clean)
        .filter(|r| !r.trim().is_empty());
    // A rejection's reason goes where the room keeps it ("rejected by …: why"); an approval's
    // is kept beside who approved.
    let by = match (&reason, approve) {
        (Some(r), true) => format!("{} ({})", caller.name(), r.trim()),
        _ => caller.name().to_owned(),
    };
    let op = RoomOp::DecideHeld {
        user_id: user.as_str().into(),
        approve,
        by: Some(by),
        reason: if approve { None } else { reason.clone() },
    };
    let out: Value = room_do::call(env, cfg, &op).await?;
    // A member the block-list scan reported (weak evidence): kept, or removed.
    if out["member_kept"] == true || out.get("member_removed").is_some() {
        let status = if approve {
            "member_kept"
        } else {
            "member_removed"
        };
        log.event(
            "member_review_decided",
            &[
                ("user_id", user.as_str().into()),
                ("decision", status.into()),
            ],
        );
        let mut reply = json!({ "status": status, "user_id": user.as_str(),
                                "member_kept": approve });
        if let Some(removed) = out.get("member_removed") {
            reply["action"] = removed["action"].clone();
        }
        return http::json(200, &reply);
    }
    if out["changed"].as_u64().unwrap_or(0) == 0 {
        return http::json_error(
            409,
            "That user has no knock held for a moderator and no membership to review.",
        );
    }
    // An approval of someone the block-list now matches closes the knock as blocked instead.
    let status = match (&out["blocked"], approve) {
        (Value::String(_), _) => "blocked",
        (_, true) => "approved",
        (_, false) => "rejected",
    };
    log.event(
        "held_knock_decided",
        &[
            ("user_id", user.as_str().into()),
            ("decision", status.into()),
            ("by", caller.name().into()),
            ("reason", reason.clone().map_or(Value::Null, Value::from)),
        ],
    );
    let mut reply = json!({ "status": status, "user_id": user.as_str() });
    if let Value::String(rule) = &out["blocked"] {
        reply["rule"] = rule.clone().into();
    }
    http::json(200, &reply)
}

/// A body `{"user_id"}` read into a user ID, or the 400 that says what is wrong with it.
async fn read_user(
    req: &mut Request,
) -> std::result::Result<crate::domain::mxid::UserId, Result<Response>> {
    let body: UnblockRequest = read_json(req)
        .await
        .map_err(|msg| http::json_error(400, &msg))?;
    crate::domain::mxid::UserId::parse(&body.user_id)
        .map_err(|e| http::json_error(400, e.message()))
}

#[derive(Deserialize)]
struct UnblockRequest {
    user_id: String,
    /// Why a moderator decided (approve and reject); kept in the log line.
    #[serde(default)]
    reason: Option<String>,
}

async fn unblock_user(
    req: &mut Request,
    env: &Env,
    rooms: &[(String, Config)],
    log: &Logger,
) -> Result<Response> {
    let body: UnblockRequest = match read_json(req).await {
        Ok(b) => b,
        Err(msg) => return http::json_error(400, &msg),
    };
    let reply = unblock_everywhere(env, rooms, &body.user_id, log).await?;
    http::json(200, &reply)
}

async fn export(req: &Request, env: &Env) -> Result<Response> {
    let list: BlockList = stub::call(env, LISTS_BINDING, DEFAULT_LIST, "/", &ListOp::Get).await?;
    let text = req
        .url()?
        .query_pairs()
        .any(|(k, v)| k == "format" && (v == "txt" || v == "text"));
    if text {
        let mut resp = Response::ok(list.export_text())?;
        resp.headers_mut()
            .set("content-type", "text/plain; charset=utf-8")?;
        Ok(resp)
    } else {
        http::json(200, &serde_json::to_value(&list)?)
    }
}

async fn import(req: &mut Request, env: &Env, log: &Logger) -> Result<Response> {
    let content_type = req.headers().get("content-type")?.unwrap_or_default();
    let body = match http::read_limited(req, MAX_IMPORT_BYTES).await? {
        Body::Read(b) => b,
        Body::TooLarge => return http::json_error(413, "The import is larger than 24 MiB."),
    };
    let Ok(text) = String::from_utf8(body) else {
        return http::json_error(400, "The import is not valid UTF-8 text.");
    };
    let format = if content_type.to_ascii_lowercase().contains("json") {
        "json"
    } else {
        "txt"
    };
    let out: Value = stub::call(
        env,
        LISTS_BINDING,
        DEFAULT_LIST,
        "/",
        &ListOp::Import {
            format: format.into(),
            text,
        },
    )
    .await?;
    if let Some(err) = out.get("error").and_then(Value::as_str) {
        return http::json_error(400, err);
    }
    log.event("blocklist_imported", &[("report", out["report"].clone())]);
    let mut reply = out["report"].clone();
    reply["version"] = out["version"].clone();
    http::json(200, &reply)
}
