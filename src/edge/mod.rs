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
mod stub;
mod transport;

use worker::{event, Context, Env, Request, Response, Result};

/// Binding names, as in `wrangler.toml`.
pub const ROOMS_BINDING: &str = "ROOMS";
pub const LISTS_BINDING: &str = "LISTS";
pub const LIMITS_BINDING: &str = "LIMITS";

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

/// Wall-clock time in unix milliseconds: the one place the worker layer reads the clock.
pub fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

/// Reads a variable or secret; both are plain strings in `Env`.
pub fn env_lookup(env: &Env) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| env.var(name).ok().map(|v| v.to_string())
}
