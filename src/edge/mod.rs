//! The Cloudflare layer: reads `Env` and requests into typed values, calls the core, and carries
//! out the effects it returns. No decision is made here that the core could make.

mod admin;
mod admin_session_do;
mod blocklist;
mod everywhere;
mod http;
mod list_do;
mod log;
mod manage_do;
mod meta;
mod policy;
mod policy_do;
mod rate_limit_do;
mod room_do;
mod routes;
mod session_do;
mod stub;
mod transport;
mod web;

use worker::{event, Context, Env, Request, Response, Result, ScheduleContext, ScheduledEvent};

use crate::domain::config::{Config, Problems};
use crate::domain::deployment::Site;

/// Binding names, as in `wrangler.toml`.
pub const ROOMS_BINDING: &str = "ROOMS";
pub const LISTS_BINDING: &str = "LISTS";
pub const LIMITS_BINDING: &str = "LIMITS";
pub const SESSIONS_BINDING: &str = "SESSIONS";
pub const MANAGE_BINDING: &str = "MANAGE";
pub const ADMIN_SESSIONS_BINDING: &str = "ADMIN_SESSIONS";
pub const POLICY_BINDING: &str = "POLICY";

/// Most subscribed policy lists one cron run refreshes (one subrequest each, beside the rooms').
pub const POLICY_LISTS_PER_RUN: usize = 5;

/// The one-minute schedule: the management rooms' reactions (so a tap takes effect within a
/// minute). The five-minute one runs the rooms' background tasks.
pub const MANAGEMENT_CRON: &str = "* * * * *";

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let log = log::Logger::for_request(&req);
    match routes::handle(req, &env, &ctx, &log).await {
        Ok(resp) => Ok(resp),
        Err(e) => {
            // Internal detail goes to the log, never to the caller.
            log.event("internal_error", &[("error", e.to_string().into())]);
            http::json_error(
                503,
                "Knock could not handle this request right now; try again.",
            )
        }
    }
}

/// Room calls one cron invocation makes at most (Cloudflare's free plan allows 50 subrequests;
/// the rest is headroom). A deployment with more rooms is served in turns, a window per run.
const CRON_ROOMS_PER_RUN: usize = 40;

/// One cron schedule drives every background task: each run asks every room's Durable Object to
/// run whatever is due (invite checker, block-list scan, native knocks), one call per room. It
/// never panics; a failure is logged per room and the next run tries again.
#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let log = log::Logger::background("cron");
    let site = match site(&env) {
        Ok(s) => s,
        Err(p) => {
            log.event("cron_skipped", &[("why", p.summary().into())]);
            return;
        }
    };
    let lookup = env_lookup(&env);
    if event.cron() == MANAGEMENT_CRON {
        // Every management room of the deployment, once.
        let mut managed: Vec<crate::domain::mxid::RoomId> = Vec::new();
        for room in site.rooms() {
            if let Ok(cfg) = site.config_for(&room, &lookup) {
                if let Some(m) = cfg.management_room {
                    if !managed.contains(&m) {
                        managed.push(m);
                    }
                }
            }
        }
        for m in managed.iter().take(CRON_ROOMS_PER_RUN) {
            match manage_do::poll(&env, m).await {
                Ok(report) => log.event("management_polled", &[("report", report)]),
                Err(e) => log.event("management_poll_failed", &[("error", e.to_string().into())]),
            }
        }
        return;
    }
    // Subscribed policy lists first, so the rooms' runs judge members by their new rules.
    if let Ok(cfg) = site.default_config(&lookup) {
        for list in cfg.policy_rooms.iter().take(POLICY_LISTS_PER_RUN) {
            match policy_do::refresh(&env, list).await {
                Ok(report) => log.event("policy_list_refreshed", &[("report", report)]),
                Err(e) => log.event(
                    "policy_list_refresh_failed",
                    &[
                        ("list", list.as_str().into()),
                        ("error", e.to_string().into()),
                    ],
                ),
            }
        }
    }
    let rooms = site.rooms();
    // More rooms than one run may call: each run takes the next window (runs are 5 min apart).
    let turn = (event.schedule() as u64 / 300_000) as usize;
    let window = crate::domain::deployment::cron_window(rooms.len(), CRON_ROOMS_PER_RUN, turn);
    let calls = window.into_iter().map(|i| {
        let room = rooms[i].clone();
        let label = site.label(&room);
        let cfg = site.config_for(&room, &lookup);
        let env = &env;
        async move {
            let report = match cfg {
                Err(p) => Err(p.summary()),
                Ok(cfg) => {
                    room_do::call::<serde_json::Value>(env, &cfg, &crate::room::RoomOp::Tick)
                        .await
                        .map_err(|e| e.to_string())
                }
            };
            (label, report)
        }
    });
    for (label, report) in futures_util::future::join_all(calls).await {
        match report {
            Ok(report) => log.event("cron_run", &[("room", label.into()), ("report", report)]),
            Err(e) => log.event(
                "cron_failed",
                &[("room", label.into()), ("error", e.into())],
            ),
        }
    }
}

/// The deployment as the environment describes it.
pub fn site(env: &Env) -> std::result::Result<Site, Problems> {
    Site::load(&env_lookup(env))
}

/// The default room's configuration (for the session, health, and the admin API without
/// `?room=`).
pub(crate) fn domain_config(env: &Env) -> std::result::Result<Config, String> {
    let lookup = env_lookup(env);
    Site::load(&lookup)
        .and_then(|s| s.default_config(&lookup))
        .map_err(|p| p.summary())
}

/// Wall-clock time in unix milliseconds: the one place the worker layer reads the clock.
pub fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

/// Reads a variable or secret. Both are plain strings in `Env`, except a TOML table in
/// `[vars]` (`KNOCK_ROOMS`, `KNOCK_FORMS`), which wrangler passes as an object: read as JSON.
pub fn env_lookup(env: &Env) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| match env.var(name) {
        Ok(v) => Some(v.to_string()),
        Err(_) => env
            .object_var::<serde_json::Value>(name)
            .ok()
            .filter(|v| v.is_object())
            .map(|v| v.to_string()),
    }
}
