//! The Cloudflare layer: reads `Env` and requests into typed values, calls the core, and carries
//! out the effects it returns. No decision is made here that the core could make.

mod admin;
mod blocklist;
mod http;
mod list_do;
mod log;
mod rate_limit_do;
mod room_do;
mod routes;
mod session_do;
mod stub;
mod transport;

use worker::{event, Context, Env, Request, Response, Result, ScheduleContext, ScheduledEvent};

/// Binding names, as in `wrangler.toml`.
pub const ROOMS_BINDING: &str = "ROOMS";
pub const LISTS_BINDING: &str = "LISTS";
pub const LIMITS_BINDING: &str = "LIMITS";
pub const SESSIONS_BINDING: &str = "SESSIONS";

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

/// One cron schedule drives every background task: each run asks the room's Durable Object to
/// run whatever is due (invite checker, block-list scan, native knocks). It never panics; a
/// failure is logged and the next run tries again.
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let log = log::Logger::background("cron");
    let cfg = match domain_config(&env) {
        Ok(c) => c,
        Err(summary) => {
            log.event("cron_skipped", &[("why", summary.into())]);
            return;
        }
    };
    match room_do::call::<serde_json::Value>(&env, &cfg, &crate::room::RoomOp::Tick).await {
        Ok(report) => log.event("cron_run", &[("report", report)]),
        Err(e) => log.event("cron_failed", &[("error", e.to_string().into())]),
    }
}

fn domain_config(env: &Env) -> std::result::Result<crate::domain::config::Config, String> {
    crate::domain::config::Config::from_lookup(env_lookup(env)).map_err(|p| p.summary())
}

/// Wall-clock time in unix milliseconds: the one place the worker layer reads the clock.
pub fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

/// Reads a variable or secret; both are plain strings in `Env`.
pub fn env_lookup(env: &Env) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| env.var(name).ok().map(|v| v.to_string())
}
