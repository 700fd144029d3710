//! HTTP routes. Each reads the request into typed values, asks the core, and replies.

use serde_json::json;
use worker::{Context, Env, Method, Request, Response, Result, Url};

use super::http::{self, Body};
use super::log::Logger;
use super::room_do;
use super::transport::FetchTransport;
use super::{admin, blocklist, rate_limit_do, session_do, web};
use super::{env_lookup, now_ms};
use crate::domain::blocklist::Outcome;
use crate::domain::config::{Config, Problems};
use crate::domain::deployment::Site;
use crate::domain::form::{self, FormError, MAX_BODY_BYTES};
use crate::domain::lifecycle::Status;
use crate::domain::rate_limit;
use crate::domain::rate_limit::retry_after_secs;
use crate::domain::signature::{self, AuthError, Gate, Presented, Proof};
use crate::matrix::Transport;
use crate::room::{KnockIn, KnockOut, RoomOp};
use crate::turnstile;

pub async fn handle(req: Request, env: &Env, ctx: &Context, log: &Logger) -> Result<Response> {
    let path = req.path();
    match (req.method(), path.as_str()) {
        (Method::Get, "/") | (Method::Head, "/") => health(env).await,
        (Method::Post, "/invite_from_form") => invite_from_form(req, None, env, ctx, log).await,
        (Method::Post, p) if p.starts_with("/invite_from_form/") => {
            let form = p["/invite_from_form/".len()..].to_owned();
            invite_from_form(req, Some(form), env, ctx, log).await
        }
        (Method::Get, "/form") if env_lookup(env)("SANDBOX").as_deref() == Some("1") => {
            sandbox_form(env)
        }
        // Never 404 or 410 here: Typeform disables a webhook for good on either.
        (_, p) if p == "/invite_from_form" || p.starts_with("/invite_from_form/") => {
            http::json_error(405, "Use POST to send a form submission.")
        }
        (_, p) if admin::ROUTES.contains(&p) => admin::handle(req, env, log).await,
        (_, p) if web::is_page(p) => web::handle(req, env, log).await,
        _ => http::json_error(404, "No such route."),
    }
}

thread_local! {
    /// The session's health as this isolate last heard it, and when: probes are frequent, and
    /// a few seconds' staleness is fine for a health status.
    static LOGIN_HEALTH: std::cell::RefCell<Option<(u64, bool)>> = const { std::cell::RefCell::new(None) };
}
const LOGIN_HEALTH_TTL_MS: u64 = 5_000;

pub(super) async fn health(env: &Env) -> Result<Response> {
    let lookup = env_lookup(env);
    let cfg = match Site::load(&lookup).and_then(|s| s.default_config(&lookup)) {
        Ok(c) => c,
        Err(p) => return http::json(200, &misconfigured(&p)),
    };
    let now = now_ms();
    let cached = LOGIN_HEALTH.with(|h| {
        h.borrow()
            .filter(|(at, _)| now.saturating_sub(*at) < LOGIN_HEALTH_TTL_MS)
            .map(|(_, needed)| needed)
    });
    let login_needed = match cached {
        Some(n) => n,
        None => {
            let status: serde_json::Value =
                session_do::call(env, &cfg, &session_do::SessionOp::Status).await?;
            let needed = !status["login_needed"].is_null();
            LOGIN_HEALTH.with(|h| *h.borrow_mut() = Some((now, needed)));
            needed
        }
    };
    // With no secret at all, anyone can post knocks: say so where an operator looks.
    let webhook = if cfg.secrets.any() {
        "protected"
    } else {
        "open"
    };
    let mut out = if login_needed {
        json!({ "status": "degraded", "reason": "homeserver login needed", "webhook": webhook })
    } else {
        json!({ "status": "running", "webhook": webhook })
    };
    let mut warnings = crate::domain::deployment::size_warnings(&lookup);
    if cfg.management_room.is_some() {
        let management = management_health(env, &cfg, now).await?;
        if management["status"] == "encrypted" {
            warnings.push(format!(
                "MANAGEMENT_ROOM_ID: {}",
                management["fix"].as_str().unwrap_or_default()
            ));
        }
        out["management"] = management;
    }
    if !warnings.is_empty() {
        out["warnings"] = warnings.into();
    }
    http::json(200, &out)
}

thread_local! {
    /// The management room's health as this isolate last heard it, and when.
    static MANAGEMENT_HEALTH: std::cell::RefCell<Option<(u64, serde_json::Value)>> =
        const { std::cell::RefCell::new(None) };
}
const MANAGEMENT_HEALTH_TTL_MS: u64 = 60_000;

/// Whether the default room's management room is usable, asked of its room object (which
/// checks the homeserver at most every ten minutes), at most once a minute per isolate.
async fn management_health(env: &Env, cfg: &Config, now: u64) -> Result<serde_json::Value> {
    let cached = MANAGEMENT_HEALTH.with(|h| {
        h.borrow()
            .as_ref()
            .filter(|(at, _)| now.saturating_sub(*at) < MANAGEMENT_HEALTH_TTL_MS)
            .map(|(_, v)| v.clone())
    });
    if let Some(v) = cached {
        return Ok(v);
    }
    let v: serde_json::Value = room_do::call(env, cfg, &RoomOp::Management).await?;
    MANAGEMENT_HEALTH.with(|h| *h.borrow_mut() = Some((now, v.clone())));
    Ok(v)
}

fn misconfigured(p: &Problems) -> serde_json::Value {
    json!({
        "status": "misconfigured",
        "missing": p.missing(),
        "invalid": p.invalid(),
        "fix": p.0.iter().map(|x| format!("{}: {}", x.name, x.fix)).collect::<Vec<_>>(),
    })
}

/// The minimal HTML form the sandbox serves, to knock from a browser. Production deployments
/// use their own form (any HTML form that posts `matrix_id` works the same way).
fn sandbox_form(env: &Env) -> Result<Response> {
    // The widget uses the configured site key, or Cloudflare's documented test key (always
    // passes). Its script loads only in a person's browser; the worker never fetches it.
    let site_key = env_lookup(env)("TURNSTILE_SITE_KEY")
        .unwrap_or_else(|| crate::domain::config::TURNSTILE_TEST_SITE_KEY.to_owned());
    let site_key: String = site_key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    Response::from_html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>Knock on the sandbox room</title><style>body{{font-family:system-ui,sans-serif;\
         max-width:32rem;margin:4rem auto;padding:0 1rem;line-height:1.5}}input,button{{font:inherit;\
         padding:.4rem}}.hp{{position:absolute;left:-10000px}}</style>\
         <script src=\"https://challenges.cloudflare.com/turnstile/v0/api.js\" async defer></script>\
         </head><body>\
         <h1>Ask to join the room</h1>\
         <form method=\"post\" action=\"/invite_from_form\">\
         <p><label>Your Matrix ID<br><input name=\"matrix_id\" required \
         placeholder=\"@demo:localhost\" size=\"30\"></label></p>\
         <p class=\"hp\" aria-hidden=\"true\"><label>Leave this empty\
         <input name=\"website\" tabindex=\"-1\" autocomplete=\"off\"></label></p>\
         <div class=\"cf-turnstile\" data-sitekey=\"{site_key}\"></div>\
         <p><button type=\"submit\">Knock</button></p></form></body></html>"
    ))
}

/// How the reply is dressed: JSON for programs, a small page for people (decided in the core
/// from `Accept`, `Sec-Fetch-Mode` and `Origin`).
use crate::domain::form::Audience;

fn reply_error(audience: Audience, status: u16, message: &str) -> Result<Response> {
    match audience {
        Audience::Webhook => http::json_error(status, message),
        Audience::Person => http::page(status, "Your request was not sent", message),
    }
}

fn reply_accepted(audience: Audience, cfg: &Config) -> Result<Response> {
    match (audience, &cfg.thank_you_url) {
        (Audience::Person, Some(url)) => {
            let url = Url::parse(url).map_err(|e| worker::Error::RustError(e.to_string()))?;
            Response::redirect_with_status(url, 303)
        }
        (Audience::Person, None) => http::page(
            202,
            "Thanks for knocking",
            "Your request was received. If it is approved, an invite will arrive in your Matrix \
             client shortly.",
        ),
        (Audience::Webhook, _) => http::json(202, &json!({ "status": "accepted" })),
    }
}

/// 429 with `Retry-After` in whole seconds (never 0) and a body that says when to come back.
fn too_many(audience: Audience, retry_after_ms: u64) -> Result<Response> {
    let secs = retry_after_secs(retry_after_ms);
    let message = format!("Too many requests. Try again in {secs} seconds.");
    let mut resp = match audience {
        Audience::Webhook => http::json(429, &json!({ "error": message, "retry_after": secs }))?,
        Audience::Person => http::page(429, "Please wait a moment", &message)?,
    };
    resp.headers_mut().set("retry-after", &secs.to_string())?;
    Ok(resp)
}

thread_local! {
    /// This isolate already warned that the webhook has no secret at all.
    static OPEN_WARNED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The reply to a signature or secret that does not match, and to a form id nobody configured:
/// the same, so a form id cannot be probed (and Typeform never sees a 404 or 410).
const MISMATCH: &str = "The signature or secret does not match.";

async fn invite_from_form(
    mut req: Request,
    form_id: Option<String>,
    env: &Env,
    ctx: &Context,
    log: &Logger,
) -> Result<Response> {
    let headers = req.headers();
    let audience = form::audience(
        headers.get("accept")?.as_deref(),
        headers.get("sec-fetch-mode")?.as_deref(),
        headers.get("origin")?.as_deref(),
    );
    let content_type = headers.get("content-type")?;
    let lookup = env_lookup(env);
    let site = match Site::load(&lookup) {
        Ok(s) => s,
        Err(p) => {
            log.event("misconfigured", &[("missing", json!(p.missing()))]);
            return reply_error(audience, 503, &p.summary());
        }
    };
    let cfg = match site.form_config(form_id.as_deref(), &lookup) {
        Some(Ok(c)) => Some(c),
        Some(Err(p)) => {
            log.event("misconfigured", &[("missing", json!(p.missing()))]);
            return reply_error(audience, 503, &p.summary());
        }
        None => None,
    };

    let body = match http::read_limited(&mut req, MAX_BODY_BYTES).await? {
        Body::Read(b) => b,
        Body::TooLarge => {
            log.event("knock_refused", &[("reason", "body too large".into())]);
            return reply_error(audience, 413, "The request body is larger than 64 KiB.");
        }
    };
    let Some(cfg) = cfg else {
        log.event("knock_refused", &[("reason", "unknown form".into())]);
        return reply_error(audience, 401, MISMATCH);
    };

    let headers = req.headers();
    let tally = headers.get("tally-signature")?;
    let typeform = headers.get("typeform-signature")?;
    let formspree = headers.get("formspree-signature")?;
    let shared_header = headers.get("x-knock-secret")?;
    let shared_query = req
        .url()?
        .query_pairs()
        .find(|(k, _)| k == "secret")
        .map(|(_, v)| v.into_owned());
    let presented = Presented {
        tally_signature: tally.as_deref(),
        typeform_signature: typeform.as_deref(),
        formspree_signature: formspree.as_deref(),
        shared_secret: shared_header.as_deref().or(shared_query.as_deref()),
        shared_in_header: shared_header.is_some(),
    };
    let gate = match signature::gate(&cfg.secrets, &presented, &body, now_ms() / 1000) {
        Ok(g) => g,
        Err(e) => {
            log.event("knock_refused", &[("reason", format!("{e:?}").into())]);
            let msg = match e {
                AuthError::Missing => "This webhook needs a signature or the shared secret.",
                AuthError::Stale => "The signature has expired; send a fresh delivery.",
                _ => MISMATCH,
            };
            return reply_error(audience, 401, msg);
        }
    };
    if gate == Gate::Proven(Proof::Open) && !OPEN_WARNED.with(|w| w.replace(true)) {
        log.event(
            "webhook_open",
            &[(
                "fix",
                "no secret is configured: anyone can post knocks. Set WEBHOOK_SECRET (sent as \
                 the X-Knock-Secret header), a platform's signing secret, or \
                 TURNSTILE_SECRET_KEY for a plain HTML form."
                    .into(),
            )],
        );
    }

    let address = req.headers().get("cf-connecting-ip")?;
    // A platform's signed delivery comes from a handful of its addresses and is retried: the
    // per-ID limit and the join-wave breaker limit it, never the address limit (its retries
    // must not double a lock-out). Everything else is limited per address (IPv6 per /64), in one
    // round trip, before anything that depends on the knock's verdict.
    let signed = matches!(gate, Gate::Proven(p) if p.is_platform_signature());
    let index = if signed {
        blocklist::current(env, &cfg.blocklist).await?
    } else {
        let key = rate_limit::address_key(address.as_deref().unwrap_or("unknown"));
        if let Some(wait) = rate_limit_do::known_denial(&key, now_ms()) {
            rate_limit_do::report_violation(env, ctx, &key, cfg.ip_quota);
            return too_many(audience, wait);
        }
        // The block-list is needed by every accepted knock: read it while the limiter answers.
        let (answer, index) = futures_util::future::join(
            rate_limit_do::check(env, &key, cfg.ip_quota),
            blocklist::current(env, &cfg.blocklist),
        )
        .await;
        let (answer, index) = (answer?, index?);
        if !answer.allow {
            log.event("knock_limited", &[("by", "address".into())]);
            return too_many(audience, answer.retry_after_ms);
        }
        index
    };

    let delivery = match form::body_kind(content_type.as_deref(), &body)
        .and_then(|kind| form::parse_delivery(kind, &body))
    {
        Ok(d) => d,
        Err(e) => return refuse(audience, log, &e),
    };
    let submission = match delivery {
        form::Delivery::Submission(s) => s,
        form::Delivery::Partial(p) => {
            // Someone left the form half-way: not a request to join. 200, so it is not retried.
            log.event(
                "knock_ignored",
                &[
                    ("source", p.platform.as_str().into()),
                    ("why", "partial response".into()),
                ],
            );
            return http::json(
                200,
                &json!({ "status": "ignored", "reason": "A partial response is not a submission." }),
            );
        }
    };

    let proof = match gate {
        Gate::Proven(p) => p,
        Gate::Turnstile => {
            match check_turnstile(&cfg, &submission, address.as_deref(), log).await {
                Ok(()) => Proof::Turnstile,
                Err(msg) => return reply_error(audience, 403, msg),
            }
        }
    };

    let source = submission.platform.as_str();
    let delivery_key = submission.delivery_key(&body);

    if submission.honeypot_filled(&cfg.honeypot_fields) {
        // Accepted in appearance only: recorded as spam, never invited.
        let raw = submission
            .matrix_id_text(cfg.form_field.as_deref())
            .unwrap_or("")
            .chars()
            .take(255)
            .collect::<String>();
        let knock = KnockIn {
            user_id: raw,
            source: source.into(),
            delivery_key,
            record_as: Some(Status::Spam),
            note: Some("honeypot field filled".into()),
            answers: Vec::new(),
        };
        let _: KnockOut = room_do::call(env, &cfg, &RoomOp::Knock(knock)).await?;
        log.event(
            "knock_verdict",
            &[("verdict", "spam".into()), ("source", source.into())],
        );
        return reply_accepted(audience, &cfg);
    }

    let choice = match submission.choose(cfg.form_field.as_deref()) {
        Ok(c) => c,
        Err(e) => return refuse(audience, log, &e),
    };
    let user = choice.id.clone();
    // One line per knock, written once its verdict is known: who, from where, how it was
    // proven, and what became of it. (Each line is a `console.log`, and costs.)
    let mut fields: Vec<(&str, serde_json::Value)> = vec![
        ("user_id", user.as_str().into()),
        ("source", source.into()),
        ("proof", format!("{proof:?}").into()),
        (
            "note",
            choice.note().map_or(serde_json::Value::Null, Into::into),
        ),
    ];
    // The block-list comes before anything else that costs a subrequest. A blocked knock is
    // recorded with its verdict and answered exactly like any other (a shadow block); weak
    // evidence (a namesake, say) holds the knock for a moderator, with the explanation.
    // Knock's own list, and the subscribed lists trusted with its fuzzy matching.
    let fuzzy = super::policy::fuzzy_lists(env, &cfg, log).await;
    let mut verdict = crate::domain::policy::graded(&index, &fuzzy, &user, None);
    if verdict.as_ref().is_none_or(|(o, _)| *o != Outcome::Block) {
        // A subscribed policy list's rule (exact, glob, server or hashed) refuses the knock,
        // its source named in the verdict.
        match super::policy::judge(env, &cfg, &index, user.as_str(), log).await {
            Ok(Some(found)) => verdict = Some((Outcome::Block, found.verdict())),
            Ok(None) => {}
            Err(e) => log.event("policy_check_failed", &[("error", e.to_string().into())]),
        }
    }
    let record_as = match &verdict {
        Some((Outcome::Block, _)) => Some(Status::Blocked),
        Some((Outcome::Hold, _)) => Some(Status::Held),
        _ => None,
    };
    if let (Some((outcome, why)), Some(_)) = (&verdict, record_as) {
        fields.push(("evidence", outcome.as_str().into()));
        fields.push(("rule", why.clone().into()));
    }
    let knock = KnockIn {
        user_id: user.as_str().into(),
        source: source.into(),
        delivery_key,
        record_as,
        note: match (record_as, verdict) {
            (Some(_), Some((_, why))) => Some(why),
            _ => choice.note().map(str::to_owned),
        },
        answers: submission.answers(choice.field, &cfg.honeypot_fields),
    };
    let out: KnockOut = match room_do::call(env, &cfg, &RoomOp::Knock(knock)).await {
        Ok(out) => out,
        Err(e) => {
            log.event("knock_failed", &fields);
            return Err(e);
        }
    };
    if out.outcome == "limited" {
        fields.insert(0, ("by", "matrix_id".into()));
        log.event("knock_limited", &fields);
        return too_many(audience, out.retry_after_ms);
    }
    // A recorded knock's verdict is the status it was stored with (blocked, held); otherwise
    // what the room did with it (queued, repeat).
    let shown = match (out.status, record_as) {
        (Some(status), _) | (None, Some(status)) => status.as_str().to_owned(),
        (None, None) => out.outcome.clone(),
    };
    fields.push(("verdict", shown.into()));
    fields.push(("outcome", out.outcome.into()));
    fields.push(("knock_id", out.knock_id.into()));
    log.event("knock_verdict", &fields);
    reply_accepted(audience, &cfg)
}

/// Checks the submission's Turnstile token with siteverify. Fails closed, with a sentence for
/// the person: a missing, invalid or spent token, and an unreachable siteverify.
async fn check_turnstile(
    cfg: &Config,
    submission: &form::Submission,
    address: Option<&str>,
    log: &Logger,
) -> std::result::Result<(), &'static str> {
    let Some(secret) = cfg.secrets.turnstile.as_deref() else {
        return Ok(());
    };
    let token = submission
        .fields
        .iter()
        .find(|f| f.answers_to(turnstile::TOKEN_FIELD))
        .map(|f| f.value.trim())
        .filter(|t| !t.is_empty() && t.len() <= 2048);
    let Some(token) = token else {
        log.event("knock_refused", &[("reason", "no Turnstile token".into())]);
        return Err(
            "This form needs its anti-spam check: go back, wait for the check to \
                    finish, and send the form again.",
        );
    };
    let transport = FetchTransport {
        timeout_ms: turnstile::TIMEOUT_MS,
    };
    let req = turnstile::siteverify(&cfg.turnstile_verify_url, secret, token, address);
    match turnstile::outcome(transport.send(req).await) {
        turnstile::Outcome::Valid => Ok(()),
        turnstile::Outcome::Invalid(codes) => {
            log.event(
                "knock_refused",
                &[
                    ("reason", "Turnstile refused".into()),
                    ("codes", json!(codes)),
                ],
            );
            Err(
                "The anti-spam check did not pass. Go back, reload the form, complete the check \
                 and send it again.",
            )
        }
        turnstile::Outcome::Unavailable => {
            log.event(
                "knock_refused",
                &[("reason", "Turnstile unavailable".into())],
            );
            Err(
                "The anti-spam check could not be completed just now. Go back and send the form \
                 again in a minute.",
            )
        }
    }
}

fn refuse(audience: Audience, log: &Logger, e: &FormError) -> Result<Response> {
    log.event("knock_refused", &[("reason", e.message().into())]);
    reply_error(audience, e.status(), &e.message())
}
