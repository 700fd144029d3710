//! The moderator page at `/admin/`: sign-in, sign-out and the views. Thin: it reads the
//! request, calls the admin API's own handlers in process ([`admin::dispatch`]), and renders
//! their answers with [`crate::web::page`]. The page's script calls the admin API itself.

use serde_json::Value;
use worker::{Env, Method, Request, Response, Result};

use super::admin::{self, Caller};
use super::admin_session_do::{self, AdminSessionOp};
use super::everywhere;
use super::http::{self, Body};
use super::log::Logger;
use super::{env_lookup, now_ms, rate_limit_do, routes};
use crate::domain::deployment::Site;
use crate::domain::signature::constant_time_eq;
use crate::web::session::{self, Session};
use crate::web::{page, CSS, JS};

const FAVICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\">\
<rect width=\"16\" height=\"16\" rx=\"3\" fill=\"#0b57d0\"/><path d=\"M5 3v10M5 8l6-5M5 8l6 5\" \
stroke=\"#fff\" stroke-width=\"2\" fill=\"none\"/></svg>";

/// The paths the page answers.
pub fn is_page(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

pub async fn handle(req: Request, env: &Env, log: &Logger) -> Result<Response> {
    let mut resp = route(req, env, log).await?;
    for (name, value) in session::SECURITY_HEADERS {
        resp.headers_mut().set(name, value)?;
    }
    Ok(resp)
}

fn html(status: u16, body: String) -> Result<Response> {
    Ok(Response::from_html(body)?.with_status(status))
}

fn redirect(location: &str) -> Result<Response> {
    let mut r = Response::empty()?.with_status(303);
    r.headers_mut().set("location", location)?;
    Ok(r)
}

fn asset(body: &str, content_type: &str) -> Result<Response> {
    let mut r = Response::ok(body)?;
    r.headers_mut().set("content-type", content_type)?;
    Ok(r)
}

async fn route(mut req: Request, env: &Env, log: &Logger) -> Result<Response> {
    let path = req.path();
    match (req.method(), path.as_str()) {
        (Method::Get, "/admin") => redirect("/admin/"),
        (Method::Get, "/admin/app.css") => asset(CSS, "text/css; charset=utf-8"),
        (Method::Get, "/admin/favicon.svg") => asset(FAVICON, "image/svg+xml"),
        (Method::Get, "/admin/login") => {
            if signed_in(&req, env).await?.is_some() {
                return redirect("/admin/");
            }
            html(200, page::login(None))
        }
        (Method::Post, "/admin/login") => sign_in(&mut req, env, log).await,
        (Method::Post, "/admin/logout") => sign_out(&mut req, env, log).await,
        (Method::Get, p) => {
            let Some(s) = signed_in(&req, env).await? else {
                return redirect("/admin/login");
            };
            if p == "/admin/app.js" {
                return asset(JS, "text/javascript; charset=utf-8");
            }
            view(&req, p, env, log, &s).await
        }
        _ => html(
            405,
            page::problem("Not allowed", "This page does not take that method."),
        ),
    }
}

/// The session the request's cookie names, while it is valid.
async fn signed_in(req: &Request, env: &Env) -> Result<Option<Session>> {
    let api_key = env_lookup(env)("API_KEY").unwrap_or_default();
    match session::session_id(req.headers().get("cookie")?.as_deref(), &api_key) {
        Some(id) => admin_session_do::touch(env, &id).await,
        None => Ok(None),
    }
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn too_many(retry_after_ms: u64) -> Result<Response> {
    let secs = crate::domain::rate_limit::retry_after_secs(retry_after_ms);
    let mut r = html(
        429,
        page::login(Some(&format!(
            "Too many wrong keys from this address. Try again in {secs} seconds."
        ))),
    )?;
    r.headers_mut().set("retry-after", &secs.to_string())?;
    Ok(r)
}

/// The admin key, once, for a session cookie. The address's limiter is asked first (without
/// counting), so a locked-out address cannot go on guessing; only failures are counted.
async fn sign_in(req: &mut Request, env: &Env, log: &Logger) -> Result<Response> {
    let Some(api_key) = env_lookup(env)("API_KEY").filter(|k| !k.is_empty()) else {
        return html(
            503,
            page::problem(
                "The admin API is disabled",
                "Set the API_KEY secret to use the moderator page.",
            ),
        );
    };
    let address = req
        .headers()
        .get("cf-connecting-ip")?
        .unwrap_or_else(|| "unknown".into());
    let failures = session::failure_key(&address);
    let asked = rate_limit_do::peek(env, &failures, session::FAILED_KEYS).await?;
    if !asked.allow {
        return too_many(asked.retry_after_ms);
    }
    let body = match http::read_limited(req, 4096).await? {
        Body::Read(b) => b,
        Body::TooLarge => return html(413, page::login(Some("That is far too long for a key."))),
    };
    let key = form_field(&body, "key").unwrap_or_default();
    if key.is_empty() || !constant_time_eq(key.trim().as_bytes(), api_key.as_bytes()) {
        log.event("admin_sign_in_failed", &[]);
        let answer = rate_limit_do::check(env, &failures, session::FAILED_KEYS).await?;
        if !answer.allow {
            return too_many(answer.retry_after_ms);
        }
        return html(401, page::login(Some("That is not the admin key.")));
    }
    let (mut id, mut csrf) = ([0u8; 32], [0u8; 32]);
    for buf in [&mut id, &mut csrf] {
        getrandom::fill(buf).map_err(|e| worker::Error::RustError(e.to_string()))?;
    }
    let id = session::new_id(&id);
    let op = AdminSessionOp::Create {
        session: Session::new(&csrf, now_ms()),
    };
    let _: Value = admin_session_do::call(env, &id, &op).await?;
    log.event("admin_signed_in", &[]);
    let mut r = redirect("/admin/")?;
    r.headers_mut()
        .set("set-cookie", &session::set_cookie(&id, &api_key))?;
    Ok(r)
}

/// Ends the session at once (with its CSRF token, so no other site can sign a moderator out).
async fn sign_out(req: &mut Request, env: &Env, log: &Logger) -> Result<Response> {
    let api_key = env_lookup(env)("API_KEY").unwrap_or_default();
    let id = session::session_id(req.headers().get("cookie")?.as_deref(), &api_key);
    let body = match http::read_limited(req, 4096).await? {
        Body::Read(b) => b,
        Body::TooLarge => Vec::new(),
    };
    if let Some(id) = id {
        if let Some(s) = admin_session_do::touch(env, &id).await? {
            let token = form_field(&body, session::CSRF_FIELD);
            if !s.allows("POST", token.as_deref()) {
                return html(
                    403,
                    page::problem(
                        "Not signed out",
                        "The sign-out form lacked its CSRF token. Reload the page and try again.",
                    ),
                );
            }
            let _: Value = admin_session_do::call(env, &id, &AdminSessionOp::End).await?;
            log.event("admin_signed_out", &[]);
        }
    }
    let mut r = redirect("/admin/login")?;
    r.headers_mut()
        .set("set-cookie", &session::clear_cookie())?;
    Ok(r)
}

/// One admin API call made in process: its status and JSON answer.
async fn api(env: &Env, log: &Logger, path_and_query: &str) -> Result<(u16, Value)> {
    let req = Request::new(
        &format!("https://knock.internal{path_and_query}"),
        Method::Get,
    )?;
    let mut resp = admin::dispatch(req, env, log, Caller::Page).await?;
    let status = resp.status_code();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

fn api_problem(status: u16, v: &Value) -> Result<Response> {
    let msg = v["error"]
        .as_str()
        .unwrap_or("The admin API gave no answer.");
    html(status, page::problem("Knock could not answer", msg))
}

async fn view(req: &Request, path: &str, env: &Env, log: &Logger, s: &Session) -> Result<Response> {
    let url = req.url()?;
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let lookup = env_lookup(env);
    let rooms = match Site::load(&lookup).and_then(|site| everywhere::all_rooms(&site, &lookup)) {
        Ok(rooms) => rooms
            .into_iter()
            .map(|(label, _)| label)
            .collect::<Vec<_>>(),
        Err(p) => return html(503, page::problem("Knock is misconfigured", &p.summary())),
    };
    let room = param("room");
    let ctx = page::Ctx {
        room: room.as_deref(),
        rooms: &rooms,
        csrf: &s.csrf,
        now: now_ms(),
    };
    let at = |p: &str, extra: &[(&str, &str)]| page::link(p, room.as_deref(), extra);
    match path {
        "/admin/" => match api(env, log, &at("/held_knocks", &[])).await? {
            (200, v) => html(200, page::held(&ctx, &v)),
            (st, v) => api_problem(st, &v),
        },
        "/admin/knocks" => {
            let (verdict, user) = (param("verdict"), param("user_id"));
            let mut extra = vec![("limit", "100")];
            let before = param("before");
            for (k, v) in [
                ("verdict", &verdict),
                ("user_id", &user),
                ("before", &before),
            ] {
                if let Some(v) = v {
                    extra.push((k, v.as_str()));
                }
            }
            let (st, v) = api(env, log, &at("/knocks", &extra)).await?;
            let status = if st == 400 { 400 } else { 200 };
            if st != 200 && st != 400 {
                return api_problem(st, &v);
            }
            html(
                status,
                page::knocks(&ctx, &v, verdict.as_deref(), user.as_deref()),
            )
        }
        "/admin/blocklist" => match api(env, log, "/blocklist").await? {
            (200, v) => html(200, page::blocklist(&ctx, &v, param("q").as_deref())),
            (st, v) => api_problem(st, &v),
        },
        "/admin/invites" => match api(env, log, &at("/pending_invites", &[])).await? {
            (200, v) => html(200, page::invites(&ctx, &v)),
            (st, v) => api_problem(st, &v),
        },
        "/admin/health" => {
            let mut health = routes::health(env).await?;
            let health: Value = health.json().await.unwrap_or(Value::Null);
            let rooms = api(env, log, "/rooms").await.map(|(_, v)| v);
            let whoami = api(env, log, &at("/whoami", &[])).await.map(|(_, v)| v);
            let or_error = |r: Result<Value>| {
                r.unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
            };
            html(
                200,
                page::health(&ctx, &health, &or_error(rooms), &or_error(whoami)),
            )
        }
        _ => html(
            404,
            page::problem(
                "No such page",
                "The moderator page has no view at this address.",
            ),
        ),
    }
}
