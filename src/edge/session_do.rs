//! The bot's homeserver session, in a Durable Object keyed by homeserver and identity.
//!
//! It logs in (access token, password, or Beeper's email-code → JWT flow), keeps the access
//! token, device id and any reusable JWT in its storage, and hands the token only to other
//! Durable Objects of this worker. No reply to a person and no log line ever carries it. When a
//! token stops working it logs in again if it has the means, or reports that an operator is
//! needed.
//!
//! Requests are served one at a time (single flight): the object awaits logins and Beeper's
//! API, and another request would otherwise read the session while a login is under way, log in
//! a second time, and overwrite the first one's token when it stores.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use super::log::Logger;
use super::transport::FetchTransport;
use super::{stub, SESSIONS_BINDING};
use crate::domain::config::Config;
use crate::domain::form::hex_sha256;
use crate::matrix::login::{self, Credentials, Recovery};
use crate::matrix::Transport;

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SessionOp {
    /// A token to call the homeserver with, logging in first if needed.
    Token,
    /// The homeserver refused this token: drop it and log in again if possible.
    Recover {
        failed_token: String,
    },
    BeeperStart {
        email: Option<String>,
    },
    BeeperVerify {
        code: String,
    },
    /// Who the bot is and whether it can call the homeserver (no token).
    Status,
}

#[derive(Serialize, Deserialize, Default)]
pub struct TokenReply {
    pub token: Option<String>,
    /// Why there is no token, for the operator.
    pub detail: Option<String>,
}

pub async fn call<T: serde::de::DeserializeOwned>(
    env: &Env,
    cfg: &Config,
    op: &SessionOp,
) -> Result<T> {
    let name = cfg.login.session_name(&cfg.matrix_base_url);
    stub::call(env, SESSIONS_BINDING, &name, "/", op).await
}

/// The bot's access token for `cfg`'s homeserver (logging in first if needed), or why there is
/// none (an operator is needed). For the objects that call the homeserver as the bot.
pub async fn token(env: &Env, cfg: &Config) -> std::result::Result<String, String> {
    let reply: TokenReply = call(env, cfg, &SessionOp::Token)
        .await
        .map_err(|e| e.to_string())?;
    reply.token.ok_or_else(|| {
        reply
            .detail
            .unwrap_or_else(|| "homeserver login needed".into())
    })
}

/// What the session keeps. Serialized only into this object's own storage.
#[derive(Serialize, Deserialize, Default, Clone)]
struct Stored {
    access_token: Option<String>,
    device_id: Option<String>,
    user_id: Option<String>,
    /// A JWT that logged in before, for a later re-login (Beeper).
    jwt: Option<String>,
    /// The pending Beeper flow's request id.
    beeper_request: Option<String>,
    /// Hash of an env-provided token the homeserver refused, so it is not tried again.
    revoked_env_token: Option<String>,
    /// Hash of the BEEPER_LOGIN_CODE already spent (codes are single-use).
    spent_code: Option<String>,
    login_needed: Option<String>,
}

#[durable_object]
pub struct SessionDo {
    state: State,
    env: Env,
    /// Held from reading the session to storing it: one request at a time.
    one_at_a_time: futures_util::lock::Mutex<()>,
}

impl DurableObject for SessionDo {
    fn new(state: State, env: Env) -> Self {
        SessionDo {
            state,
            env,
            one_at_a_time: futures_util::lock::Mutex::new(()),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let op: SessionOp = req.json().await?;
        let _turn = self.one_at_a_time.lock().await;
        let cfg = super::domain_config(&self.env)?;
        let mut stored: Stored = self
            .state
            .storage()
            .get("session")
            .await?
            .unwrap_or_default();
        let log = Logger::background("session");
        let reply = match op {
            SessionOp::Token => {
                let r = self.token(&cfg, &mut stored, &log).await;
                serde_json::to_value(r)?
            }
            SessionOp::Recover { failed_token } => {
                if stored.access_token.as_deref() == Some(failed_token.as_str()) {
                    stored.access_token = None;
                }
                if cfg.access_token.as_deref() == Some(failed_token.as_str()) {
                    stored.revoked_env_token = Some(hex_sha256(failed_token.as_bytes()));
                }
                log.event(
                    "token_refused",
                    &[("mode", format!("{:?}", cfg.login.mode).into())],
                );
                let r = self.token(&cfg, &mut stored, &log).await;
                serde_json::to_value(r)?
            }
            SessionOp::BeeperStart { email } => self.beeper_start(&cfg, &mut stored, email).await?,
            SessionOp::BeeperVerify { code } => {
                self.beeper_verify(&cfg, &mut stored, &code, &log).await?
            }
            SessionOp::Status => {
                // A token replaced by the operator ends the degraded state.
                if cfg.login.mode != Credentials::Password && env_token(&cfg, &stored).is_some() {
                    stored.login_needed = None;
                }
                // Beeper with nothing to log in with yet: the email flow has to run first.
                if cfg.login.mode == Credentials::Beeper
                    && stored.access_token.is_none()
                    && env_token(&cfg, &stored).is_none()
                    && stored.jwt.is_none()
                    && cfg.login.beeper_jwt.is_none()
                    && stored.login_needed.is_none()
                {
                    stored.login_needed =
                        Some("Beeper login needed: POST /login/beeper/start, then /verify".into());
                }
                json!({
                "user_id": stored.user_id,
                "mode": mode_name(cfg.login.mode),
                "login_needed": stored.login_needed,
                "has_token": stored.access_token.is_some()
                    || env_token(&cfg, &stored).is_some(),
                })
            }
        };
        self.state.storage().put("session", &stored).await?;
        Response::from_json(&reply)
    }
}

fn mode_name(mode: Credentials) -> &'static str {
    match mode {
        Credentials::AccessToken => "access_token",
        Credentials::Password => "password",
        Credentials::Beeper => "beeper",
    }
}

/// The configured access token, unless the homeserver already refused that very token.
fn env_token(cfg: &Config, stored: &Stored) -> Option<String> {
    cfg.access_token
        .clone()
        .filter(|t| stored.revoked_env_token.as_deref() != Some(hex_sha256(t.as_bytes()).as_str()))
}

impl SessionDo {
    fn transport(cfg: &Config) -> FetchTransport {
        FetchTransport {
            timeout_ms: cfg.matrix_timeout_ms,
        }
    }

    /// A usable token: the stored one, the configured one, or a fresh login.
    async fn token(&self, cfg: &Config, stored: &mut Stored, log: &Logger) -> TokenReply {
        if let Some(t) = &stored.access_token {
            return TokenReply {
                token: Some(t.clone()),
                detail: None,
            };
        }
        if cfg.login.mode != Credentials::Password {
            if let Some(t) = env_token(cfg, stored) {
                stored.login_needed = None;
                return TokenReply {
                    token: Some(t),
                    detail: None,
                };
            }
        }
        let attempt = match cfg.login.mode {
            Credentials::AccessToken => {
                Err(login::needs_operator_message(cfg.login.mode).to_owned())
            }
            Credentials::Password => {
                let user = cfg.login.user_id.as_deref().unwrap_or_default();
                let password = cfg.login.password.as_deref().unwrap_or_default();
                let req = login::password_login(
                    &cfg.matrix_base_url,
                    user,
                    password,
                    stored.device_id.as_deref(),
                );
                login::parse_login(Self::transport(cfg).send(req).await).map_err(|e| e.message())
            }
            Credentials::Beeper => self.beeper_relogin(cfg, stored, log).await,
        };
        match attempt {
            Ok(session) => {
                log.event(
                    "logged_in",
                    &[
                        ("mode", mode_name(cfg.login.mode).into()),
                        ("user_id", session.user_id.clone().into()),
                    ],
                );
                stored.access_token = Some(session.access_token.clone());
                stored.device_id = session.device_id.clone();
                stored.user_id = Some(session.user_id.clone());
                stored.login_needed = None;
                TokenReply {
                    token: Some(session.access_token),
                    detail: None,
                }
            }
            Err(why) => {
                log.event("login_needed", &[("detail", why.clone().into())]);
                stored.login_needed = Some(why.clone());
                TokenReply {
                    token: None,
                    detail: Some(why),
                }
            }
        }
    }

    /// Beeper without a token: a stored or configured JWT, or a configured code for a flow
    /// already started.
    async fn beeper_relogin(
        &self,
        cfg: &Config,
        stored: &mut Stored,
        log: &Logger,
    ) -> std::result::Result<login::Session, String> {
        let recovery =
            login::recovery_after_unknown_token(Credentials::Beeper, stored.jwt.is_some());
        let jwt = match (recovery, &cfg.login.beeper_jwt) {
            (Recovery::ReLoginWithStoredJwt, _) => stored.jwt.clone(),
            (_, Some(j)) => Some(j.clone()),
            _ => None,
        };
        if let Some(jwt) = jwt {
            let req = login::jwt_login(&cfg.matrix_base_url, &jwt, stored.device_id.as_deref());
            match login::parse_login(Self::transport(cfg).send(req).await) {
                Ok(s) => return Ok(s),
                Err(e) => {
                    // A JWT is short-lived; a refused one is not tried again.
                    stored.jwt = None;
                    log.event("jwt_login_failed", &[("detail", e.message().into())]);
                }
            }
        }
        if let (Some(code), Some(_)) = (&cfg.login.beeper_code, &stored.beeper_request) {
            let hash = hex_sha256(code.as_bytes());
            if stored.spent_code.as_deref() != Some(hash.as_str()) {
                stored.spent_code = Some(hash);
                return self
                    .finish_beeper(cfg, stored, code)
                    .await
                    .map_err(|e| e.to_string());
            }
        }
        Err(login::needs_operator_message(Credentials::Beeper).to_owned())
    }

    async fn beeper_start(
        &self,
        cfg: &Config,
        stored: &mut Stored,
        email: Option<String>,
    ) -> Result<Value> {
        let Some(email) = email.or_else(|| cfg.login.beeper_email.clone()) else {
            return Ok(
                json!({ "error": "Give an email: set BEEPER_LOGIN_EMAIL or send {\"email\": ...}." }),
            );
        };
        let t = Self::transport(cfg);
        let base = &cfg.login.beeper_api_base;
        let request = match login::parse_beeper_start(t.send(login::beeper_start(base)).await) {
            Ok(r) => r,
            Err(e) => return Ok(json!({ "error": e.message() })),
        };
        if let Err(e) = login::parse_beeper_email(
            t.send(login::beeper_send_email(base, &request, &email))
                .await,
        ) {
            return Ok(json!({ "error": e.message() }));
        }
        stored.beeper_request = Some(request);
        Ok(json!({ "status": "code_sent", "email": email }))
    }

    async fn beeper_verify(
        &self,
        cfg: &Config,
        stored: &mut Stored,
        code: &str,
        log: &Logger,
    ) -> Result<Value> {
        if stored.beeper_request.is_none() {
            return Ok(
                json!({ "error": "No Beeper login is under way: POST /login/beeper/start first." }),
            );
        }
        let Some(code) = login::clean_code(code) else {
            return Ok(json!({ "error": "The code should be the 6 digits from Beeper's email." }));
        };
        match self.finish_beeper(cfg, stored, &code).await {
            Ok(s) => {
                log.event(
                    "logged_in",
                    &[
                        ("mode", "beeper".into()),
                        ("user_id", s.user_id.clone().into()),
                    ],
                );
                stored.access_token = Some(s.access_token.clone());
                stored.device_id = s.device_id.clone();
                stored.user_id = Some(s.user_id.clone());
                stored.login_needed = None;
                Ok(json!({ "status": "logged_in", "user_id": s.user_id }))
            }
            Err(e) => Ok(json!({ "error": e })),
        }
    }

    /// Code → JWT → homeserver login.
    async fn finish_beeper(
        &self,
        cfg: &Config,
        stored: &mut Stored,
        code: &str,
    ) -> std::result::Result<login::Session, String> {
        let t = Self::transport(cfg);
        let request = stored.beeper_request.clone().unwrap_or_default();
        let verify = login::beeper_verify(&cfg.login.beeper_api_base, &request, code);
        let jwt = match login::parse_beeper_verify(t.send(verify).await) {
            Ok(j) => j,
            Err(e) => {
                if e.must_start_again() {
                    stored.beeper_request = None;
                }
                return Err(e.message());
            }
        };
        stored.beeper_request = None;
        let req = login::jwt_login(&cfg.matrix_base_url, &jwt, stored.device_id.as_deref());
        let session = login::parse_login(t.send(req).await).map_err(|e| e.message())?;
        stored.jwt = Some(jwt);
        Ok(session)
    }
}
