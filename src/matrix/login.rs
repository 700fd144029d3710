//! Logging the bot in: by password, by JWT, or through Beeper's email-code login.
//!
//! Decides: the method, URL, headers and JSON body of every login call (the homeserver's
//! `/login` and `/account/whoami`, and Beeper's private `/user/login` steps), what each reply
//! means as a typed result, and how the worker may recover when the homeserver forgets the
//! bot's access token. Never does: IO, clock reads, or storage; the caller sends the requests,
//! keeps the session, and decides which credentials are configured. Never puts a token,
//! password, JWT or code in `Debug` output or in an error message.

use std::fmt;

use serde_json::{json, Value};

use super::{
    classify, Api, Failure, HttpRequest, HttpResponse, Method, TransportError,
    DEFAULT_RATE_LIMIT_WAIT_MS,
};

/// The fixed bearer token Beeper's own tools send to its private login API.
pub const BEEPER_PRIVATE_BEARER: &str = "BEEPER-PRIVATE-API-PLEASE-DONT-USE";
/// Where Beeper's private login API lives.
pub const DEFAULT_BEEPER_API_BASE: &str = "https://api.beeper.com";
/// Beeper's homeserver, which accepts the JWT that Beeper's login API hands out.
pub const DEFAULT_BEEPER_HOMESERVER: &str = "https://matrix.beeper.com";
/// The device name a new login shows in the account's session list.
pub const DEVICE_DISPLAY_NAME: &str = "Knock";

// ----------------------------------------------------------------------------------------------
// Requests
// ----------------------------------------------------------------------------------------------

/// A JSON `POST`, with Beeper's bearer token when `bearer` is set and no `Authorization`
/// header otherwise.
fn post_json(url: String, body: Value, bearer: Option<&str>) -> HttpRequest {
    let mut headers = Vec::with_capacity(2);
    if let Some(token) = bearer {
        headers.push(("Authorization", format!("Bearer {token}")));
    }
    headers.push(("Content-Type", "application/json".to_owned()));
    HttpRequest {
        method: Method::Post,
        url,
        headers,
        body: Some(body.to_string()),
    }
}

fn login_url(base_url: &str) -> String {
    format!("{}/_matrix/client/v3/login", base_url.trim_end_matches('/'))
}

fn login_request(base_url: &str, mut body: Value, device_id: Option<&str>) -> HttpRequest {
    body["initial_device_display_name"] = Value::from(DEVICE_DISPLAY_NAME);
    if let Some(device) = device_id {
        body["device_id"] = Value::from(device);
    }
    post_json(login_url(base_url), body, None)
}

/// `POST /login` with `m.login.password`. `user` is a localpart or a full user ID, sent as
/// given. `device_id` reuses an earlier device instead of creating a new one.
pub fn password_login(
    base_url: &str,
    user: &str,
    password: &str,
    device_id: Option<&str>,
) -> HttpRequest {
    let body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
    });
    login_request(base_url, body, device_id)
}

/// `POST /login` with `org.matrix.login.jwt` (Synapse's `jwt_config`, and Beeper).
pub fn jwt_login(base_url: &str, jwt: &str, device_id: Option<&str>) -> HttpRequest {
    let body = json!({ "type": "org.matrix.login.jwt", "token": jwt });
    login_request(base_url, body, device_id)
}

/// `GET /account/whoami`: checks an access token and says whose it is.
pub fn whoami(base_url: &str, access_token: &str) -> HttpRequest {
    Api::new(base_url, access_token).whoami()
}

fn beeper_url(api_base: &str, path: &str) -> String {
    format!("{}{}", api_base.trim_end_matches('/'), path)
}

/// Beeper step 1: `POST /user/login` opens a login request.
pub fn beeper_start(api_base: &str) -> HttpRequest {
    post_json(
        beeper_url(api_base, "/user/login"),
        json!({}),
        Some(BEEPER_PRIVATE_BEARER),
    )
}

/// Beeper step 2: `POST /user/login/email` asks Beeper to email a code to `email`.
pub fn beeper_send_email(api_base: &str, request_id: &str, email: &str) -> HttpRequest {
    post_json(
        beeper_url(api_base, "/user/login/email"),
        json!({ "request": request_id, "email": email }),
        Some(BEEPER_PRIVATE_BEARER),
    )
}

/// Beeper step 3: `POST /user/login/response` trades the emailed code for a JWT. Pass the
/// code through [`clean_code`] first so a typo does not cost one of the few tries.
pub fn beeper_verify(api_base: &str, request_id: &str, code: &str) -> HttpRequest {
    post_json(
        beeper_url(api_base, "/user/login/response"),
        json!({ "request": request_id, "response": code }),
        Some(BEEPER_PRIVATE_BEARER),
    )
}

/// The emailed code as Beeper expects it: digits only, with the spaces or dashes a person may
/// type or paste removed. `None` if what is left is not 4 to 10 digits (Beeper sends 6).
pub fn clean_code(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    let plausible = (4..=10).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit());
    plausible.then_some(code)
}

// ----------------------------------------------------------------------------------------------
// Replies
// ----------------------------------------------------------------------------------------------

/// A logged-in session. `Debug` hides the access token.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: String,
    pub access_token: String,
    pub device_id: Option<String>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("user_id", &self.user_id)
            .field("access_token", &"<hidden>")
            .field("device_id", &self.device_id)
            .finish()
    }
}

/// Whose access token it is, from `/account/whoami`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub device_id: Option<String>,
}

/// Why a homeserver login (or token check) did not give a usable session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// 403 `M_FORBIDDEN` from `/login`: a wrong user name or password, or a JWT that is
    /// invalid, expired or already used.
    BadCredentials,
    /// 401 from `/account/whoami`: the access token is unknown (`M_UNKNOWN_TOKEN`) or was not
    /// sent (`M_MISSING_TOKEN`).
    UnknownToken { errcode: String },
    /// 429: wait this long, then try again.
    RateLimited { retry_after_ms: u64 },
    /// 5xx, 408, a timeout or no connection: try again later. `status` is `None` when no
    /// reply arrived at all.
    Unavailable { status: Option<u16> },
    /// A success without a usable user ID and access token, or a garbled body.
    Malformed,
    /// Any other refusal; asking again will not change it.
    Refused { status: u16, errcode: String },
}

impl LoginError {
    /// A clear sentence for the operator. Names no secret.
    pub fn message(&self) -> String {
        match self {
            LoginError::BadCredentials => "The homeserver refused the login: the user name or \
                password is wrong, or the login token is invalid, expired or already used."
                .into(),
            LoginError::UnknownToken { errcode } if errcode == "M_MISSING_TOKEN" => {
                "The homeserver received no access token.".into()
            }
            LoginError::UnknownToken { .. } => "The homeserver no longer accepts the bot's \
                access token: it was logged out or has expired."
                .into(),
            LoginError::RateLimited { retry_after_ms } => format!(
                "The homeserver is rate limiting logins; try again in {}.",
                seconds(*retry_after_ms)
            ),
            LoginError::Unavailable { status: None } => {
                "The homeserver did not answer; try again later.".into()
            }
            LoginError::Unavailable {
                status: Some(status),
            } => format!("The homeserver had an error (HTTP {status}); try again later."),
            LoginError::Malformed => "The homeserver's reply to the login was not what Knock \
                expected; check that the homeserver URL points at a Matrix server."
                .into(),
            LoginError::Refused { errcode, .. } if errcode == "M_USER_DEACTIVATED" => {
                "The homeserver refused the login: the bot's account has been deactivated.".into()
            }
            LoginError::Refused { status, errcode } if errcode.is_empty() => {
                format!("The homeserver refused the login (HTTP {status}).")
            }
            LoginError::Refused { status, errcode } => {
                format!("The homeserver refused the login (HTTP {status}, {errcode}).")
            }
        }
    }

    /// Whether trying the same login again later may succeed without the operator.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LoginError::RateLimited { .. } | LoginError::Unavailable { .. }
        )
    }
}

impl fmt::Display for LoginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for LoginError {}

/// Why a step of Beeper's email-code login failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeeperError {
    /// 403 on the code: wrong. `retries_left` is how many more codes Beeper will take for
    /// this request, when it says.
    WrongCode { retries_left: Option<u32> },
    /// The email has no finished Beeper account (Beeper answered with a `leadToken`). Knock
    /// can't complete a sign-up; the operator must finish it in the Beeper app first.
    NewAccount,
    /// The login request expired or is unknown (404 or 410): start again.
    Expired,
    /// 429: wait this long, then try again.
    RateLimited { retry_after_ms: u64 },
    /// 5xx, 408, a timeout or no connection: try again later.
    Unavailable { status: Option<u16> },
    /// A reply Knock does not understand: Beeper's private API may have changed.
    Malformed,
    /// Any other refusal.
    Refused { status: u16 },
}

impl BeeperError {
    /// A clear sentence for the operator. Names no secret.
    pub fn message(&self) -> String {
        match self {
            BeeperError::WrongCode {
                retries_left: Some(0),
            } => "That code is wrong and no tries are left; start the Beeper login again to \
                get a new code."
                .into(),
            BeeperError::WrongCode {
                retries_left: Some(1),
            } => "That code is wrong; 1 try left.".into(),
            BeeperError::WrongCode {
                retries_left: Some(n),
            } => format!("That code is wrong; {n} tries left."),
            BeeperError::WrongCode { retries_left: None } => "Beeper did not accept that code; \
                check it, or start the Beeper login again for a new one."
                .into(),
            BeeperError::NewAccount => "That email address has no finished Beeper account, \
                and Knock can't complete a new account's sign-up: finish signing up in the \
                Beeper app first, then log in again."
                .into(),
            BeeperError::Expired => {
                "The Beeper login request has expired; start the Beeper login again.".into()
            }
            BeeperError::RateLimited { retry_after_ms } => format!(
                "Beeper is rate limiting logins; try again in {}.",
                seconds(*retry_after_ms)
            ),
            BeeperError::Unavailable { status: None } => {
                "Beeper did not answer; try again later.".into()
            }
            BeeperError::Unavailable {
                status: Some(status),
            } => format!("Beeper had an error (HTTP {status}); try again later."),
            BeeperError::Malformed => "Beeper's reply was not what Knock expected; its private \
                login API may have changed."
                .into(),
            BeeperError::Refused {
                status: status @ (401 | 403),
            } => format!(
                "Beeper refused the request (HTTP {status}); its private login API may have \
                 changed."
            ),
            BeeperError::Refused { status } => {
                format!("Beeper refused the request (HTTP {status}).")
            }
        }
    }

    /// Whether trying the same step again later may succeed without the operator.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BeeperError::RateLimited { .. } | BeeperError::Unavailable { .. }
        )
    }

    /// Whether this login request is used up, so the next attempt must begin again with
    /// [`beeper_start`] (and a new emailed code).
    pub fn must_start_again(&self) -> bool {
        matches!(
            self,
            BeeperError::Expired
                | BeeperError::NewAccount
                | BeeperError::WrongCode {
                    retries_left: Some(0)
                }
        )
    }
}

impl fmt::Display for BeeperError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for BeeperError {}

/// "1 second", "30 seconds", "2 minutes": whole units, rounded up.
fn seconds(ms: u64) -> String {
    let secs = ms.div_ceil(1000).max(1);
    match secs {
        1 => "1 second".into(),
        s if s < 120 => format!("{s} seconds"),
        s => format!("{} minutes", s.div_ceil(60)),
    }
}

/// A reply, sorted the way every login step reads it.
enum Reply {
    /// 2xx. The body as JSON, or `Null` when it is empty or not JSON.
    Success(Value),
    RateLimited {
        retry_after_ms: u64,
    },
    Unavailable {
        status: Option<u16>,
    },
    /// Any other status, with its body as JSON (`Null` when it is not JSON).
    Refusal {
        status: u16,
        body: Value,
    },
}

fn read(result: Result<HttpResponse, TransportError>) -> Reply {
    let resp = match result {
        Ok(resp) => resp,
        Err(_) => return Reply::Unavailable { status: None },
    };
    let body = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
    match resp.status {
        200..=299 => Reply::Success(body),
        429 => {
            // The same reading of `Retry-After` and `retry_after_ms` as every other call.
            let retry_after_ms = match classify(Ok(resp)) {
                Err(Failure::RateLimited { retry_after_ms }) => retry_after_ms,
                _ => DEFAULT_RATE_LIMIT_WAIT_MS,
            };
            Reply::RateLimited { retry_after_ms }
        }
        status @ (408 | 500..=599) => Reply::Unavailable {
            status: Some(status),
        },
        status => Reply::Refusal { status, body },
    }
}

/// The reply's `errcode`, if it looks like one (letters, digits, `_` and `.`, at most 64).
fn errcode(body: &Value) -> String {
    body.get("errcode")
        .and_then(Value::as_str)
        .filter(|c| {
            c.len() <= 64
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        })
        .unwrap_or("")
        .to_owned()
}

/// A non-empty string field.
fn text<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A token fit to send back in a header or JSON: non-empty, visible ASCII, no spaces.
fn token_field(body: &Value, key: &str) -> Option<String> {
    text(body, key)
        .filter(|t| t.len() <= 8192 && t.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
}

/// `@localpart:server`, loosely: the homeserver is trusted to send its own user IDs.
fn user_id_field(body: &Value) -> Option<String> {
    text(body, "user_id")
        .filter(|u| u.starts_with('@') && u.len() > 1 && u.contains(':'))
        .map(str::to_owned)
}

fn device_id_field(body: &Value) -> Option<String> {
    text(body, "device_id").map(str::to_owned)
}

/// What a `/login` reply (password or JWT) means.
pub fn parse_login(result: Result<HttpResponse, TransportError>) -> Result<Session, LoginError> {
    match read(result) {
        Reply::Success(body) => Ok(Session {
            user_id: user_id_field(&body).ok_or(LoginError::Malformed)?,
            access_token: token_field(&body, "access_token").ok_or(LoginError::Malformed)?,
            device_id: device_id_field(&body),
        }),
        Reply::RateLimited { retry_after_ms } => Err(LoginError::RateLimited { retry_after_ms }),
        Reply::Unavailable { status } => Err(LoginError::Unavailable { status }),
        Reply::Refusal { status: 403, body } if errcode(&body) == "M_FORBIDDEN" => {
            Err(LoginError::BadCredentials)
        }
        Reply::Refusal { status, body } => Err(LoginError::Refused {
            status,
            errcode: errcode(&body),
        }),
    }
}

/// What a `/account/whoami` reply means. A 401 is [`LoginError::UnknownToken`].
pub fn parse_whoami(result: Result<HttpResponse, TransportError>) -> Result<Identity, LoginError> {
    match read(result) {
        Reply::Success(body) => Ok(Identity {
            user_id: user_id_field(&body).ok_or(LoginError::Malformed)?,
            device_id: device_id_field(&body),
        }),
        Reply::RateLimited { retry_after_ms } => Err(LoginError::RateLimited { retry_after_ms }),
        Reply::Unavailable { status } => Err(LoginError::Unavailable { status }),
        Reply::Refusal { status: 401, body } => Err(LoginError::UnknownToken {
            errcode: errcode(&body),
        }),
        Reply::Refusal { status, body } => Err(LoginError::Refused {
            status,
            errcode: errcode(&body),
        }),
    }
}

/// The failures every Beeper step reads the same way.
fn beeper_failure(reply: Reply) -> BeeperError {
    match reply {
        Reply::Success(_) => BeeperError::Malformed,
        Reply::RateLimited { retry_after_ms } => BeeperError::RateLimited { retry_after_ms },
        Reply::Unavailable { status } => BeeperError::Unavailable { status },
        Reply::Refusal { status, .. } => BeeperError::Refused { status },
    }
}

/// What Beeper's reply to [`beeper_start`] means: the login request's id.
pub fn parse_beeper_start(
    result: Result<HttpResponse, TransportError>,
) -> Result<String, BeeperError> {
    match read(result) {
        Reply::Success(body) => text(&body, "request")
            .map(str::to_owned)
            .ok_or(BeeperError::Malformed),
        other => Err(beeper_failure(other)),
    }
}

/// What Beeper's reply to [`beeper_send_email`] means. Any 2xx: the code is on its way.
pub fn parse_beeper_email(result: Result<HttpResponse, TransportError>) -> Result<(), BeeperError> {
    match read(result) {
        Reply::Success(_) => Ok(()),
        Reply::Refusal {
            status: 404 | 410, ..
        } => Err(BeeperError::Expired),
        other => Err(beeper_failure(other)),
    }
}

/// What Beeper's reply to [`beeper_verify`] means: the JWT for [`jwt_login`].
pub fn parse_beeper_verify(
    result: Result<HttpResponse, TransportError>,
) -> Result<String, BeeperError> {
    match read(result) {
        Reply::Success(body) => match token_field(&body, "token") {
            Some(jwt) => Ok(jwt),
            None if body.get("leadToken").is_some() => Err(BeeperError::NewAccount),
            None => Err(BeeperError::Malformed),
        },
        Reply::Refusal { status: 403, body } => Err(BeeperError::WrongCode {
            retries_left: body
                .get("retries")
                .and_then(Value::as_u64)
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        }),
        Reply::Refusal {
            status: 404 | 410, ..
        } => Err(BeeperError::Expired),
        other => Err(beeper_failure(other)),
    }
}

// ----------------------------------------------------------------------------------------------
// Recovery
// ----------------------------------------------------------------------------------------------

pub use crate::domain::config::Credentials;

/// What to do after the homeserver answered 401 `M_UNKNOWN_TOKEN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    ReLoginWithPassword,
    /// Try the JWT kept from the Beeper login. Beeper's JWTs may be single-use or short-lived:
    /// if that login fails with [`LoginError::BadCredentials`], the answer is
    /// [`Recovery::NeedsOperator`].
    ReLoginWithStoredJwt,
    /// Only the operator can fix it; see [`needs_operator_message`].
    NeedsOperator,
}

/// The recovery open to Knock once its access token is no longer accepted.
pub fn recovery_after_unknown_token(mode: Credentials, have_stored_jwt: bool) -> Recovery {
    match mode {
        Credentials::AccessToken => Recovery::NeedsOperator,
        Credentials::Password => Recovery::ReLoginWithPassword,
        Credentials::Beeper if have_stored_jwt => Recovery::ReLoginWithStoredJwt,
        Credentials::Beeper => Recovery::NeedsOperator,
    }
}

/// A sentence telling the operator what to do when Knock can't log in again by itself.
pub fn needs_operator_message(mode: Credentials) -> &'static str {
    match mode {
        Credentials::AccessToken => {
            "The homeserver no longer accepts the bot's access token; give Knock a new one."
        }
        Credentials::Password => {
            "Knock can't log the bot in with its password; check the user name and password."
        }
        Credentials::Beeper => {
            "Knock's Beeper login has ended and needs a new emailed code; log in to Beeper again."
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HS: &str = "http://127.0.0.1:8008/";
    const API: &str = "http://127.0.0.1:9000/";
    const PASSWORD: &str = "hunter2-correct-horse";
    const TOKEN: &str = "syt_a25vY2s_secretsecret_1AbCdE";
    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJrbm9jayJ9.c2lnbmF0dXJl";
    const CODE: &str = "482913";

    fn resp(status: u16, body: &str) -> Result<HttpResponse, TransportError> {
        Ok(HttpResponse {
            status,
            retry_after: None,
            body: body.into(),
        })
    }

    fn header<'a>(r: &'a HttpRequest, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn homeserver_calls() -> Vec<HttpRequest> {
        vec![
            password_login(HS, "knock", PASSWORD, None),
            password_login(HS, "@knock:localhost", PASSWORD, Some("KNOCKDEV")),
            jwt_login(HS, JWT, None),
            jwt_login(HS, JWT, Some("KNOCKDEV")),
        ]
    }

    fn beeper_calls() -> Vec<HttpRequest> {
        vec![
            beeper_start(API),
            beeper_send_email(API, "req-1", "bot@example.org"),
            beeper_verify(API, "req-1", CODE),
        ]
    }

    #[test]
    fn a_password_login_posts_the_user_and_password_as_json() {
        let r = password_login(HS, "knock", PASSWORD, None);
        assert_eq!(r.method, Method::Post);
        assert_eq!(r.url, "http://127.0.0.1:8008/_matrix/client/v3/login");
        assert_eq!(
            r.json(),
            json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "knock"},
                "password": PASSWORD,
                "initial_device_display_name": "Knock",
            })
        );
        assert_eq!(header(&r, "Content-Type"), Some("application/json"));
    }

    #[test]
    fn a_password_login_can_reuse_a_device_and_takes_a_full_user_id_as_given() {
        let r = password_login(HS, "@knock:localhost", PASSWORD, Some("KNOCKDEV"));
        let body = r.json();
        assert_eq!(body["identifier"]["user"], "@knock:localhost");
        assert_eq!(body["device_id"], "KNOCKDEV");
    }

    #[test]
    fn a_jwt_login_posts_the_token_with_the_jwt_login_type() {
        let r = jwt_login("https://matrix.beeper.com", JWT, None);
        assert_eq!(r.method, Method::Post);
        assert_eq!(r.url, "https://matrix.beeper.com/_matrix/client/v3/login");
        assert_eq!(
            r.json(),
            json!({
                "type": "org.matrix.login.jwt",
                "token": JWT,
                "initial_device_display_name": "Knock",
            })
        );
        assert_eq!(jwt_login(HS, JWT, Some("D")).json()["device_id"], "D");
    }

    #[test]
    fn whoami_is_a_get_with_the_access_token() {
        let r = whoami(HS, TOKEN);
        assert_eq!(r.method, Method::Get);
        assert_eq!(
            r.url,
            "http://127.0.0.1:8008/_matrix/client/v3/account/whoami"
        );
        assert_eq!(
            header(&r, "Authorization"),
            Some(&*format!("Bearer {TOKEN}"))
        );
        assert_eq!(r.body, None);
    }

    #[test]
    fn homeserver_logins_carry_no_authorization_header_at_all() {
        for r in homeserver_calls() {
            assert_eq!(header(&r, "Authorization"), None, "{r:?}");
            assert!(!r
                .headers
                .iter()
                .any(|(_, v)| v.contains(BEEPER_PRIVATE_BEARER)));
        }
        assert!(!whoami(HS, TOKEN)
            .headers
            .iter()
            .any(|(_, v)| v.contains(BEEPER_PRIVATE_BEARER)));
    }

    #[test]
    fn every_beeper_call_carries_the_private_bearer_and_json() {
        for r in beeper_calls() {
            assert_eq!(r.method, Method::Post);
            assert_eq!(
                header(&r, "Authorization"),
                Some("Bearer BEEPER-PRIVATE-API-PLEASE-DONT-USE"),
                "{r:?}"
            );
            assert_eq!(header(&r, "Content-Type"), Some("application/json"));
        }
    }

    #[test]
    fn the_beeper_steps_have_their_own_paths_and_bodies() {
        let [start, email, verify] = <[HttpRequest; 3]>::try_from(beeper_calls()).unwrap();
        assert_eq!(start.url, "http://127.0.0.1:9000/user/login");
        assert_eq!(start.json(), json!({}));
        assert_eq!(email.url, "http://127.0.0.1:9000/user/login/email");
        assert_eq!(
            email.json(),
            json!({"request": "req-1", "email": "bot@example.org"})
        );
        assert_eq!(verify.url, "http://127.0.0.1:9000/user/login/response");
        assert_eq!(verify.json(), json!({"request": "req-1", "response": CODE}));
        assert_eq!(
            beeper_start(DEFAULT_BEEPER_API_BASE).url,
            "https://api.beeper.com/user/login"
        );
    }

    #[test]
    fn codes_are_cleaned_of_spaces_and_dashes_and_must_be_digits() {
        assert_eq!(clean_code(" 482 913\n"), Some("482913".into()));
        assert_eq!(clean_code("482-913"), Some("482913".into()));
        assert_eq!(clean_code("48291a"), None);
        assert_eq!(clean_code("123"), None);
        assert_eq!(clean_code(""), None);
        assert_eq!(clean_code("１２３４５６"), None);
    }

    #[test]
    fn a_successful_login_gives_a_session() {
        let s = parse_login(resp(
            200,
            &format!(
                r#"{{"user_id":"@knock:localhost","access_token":"{TOKEN}","device_id":"ABC","home_server":"localhost"}}"#
            ),
        ))
        .unwrap();
        assert_eq!(
            s,
            Session {
                user_id: "@knock:localhost".into(),
                access_token: TOKEN.into(),
                device_id: Some("ABC".into()),
            }
        );
        let without_device = parse_login(resp(
            200,
            &format!(r#"{{"user_id":"@knock:localhost","access_token":"{TOKEN}"}}"#),
        ))
        .unwrap();
        assert_eq!(without_device.device_id, None);
    }

    #[test]
    fn a_success_without_a_usable_token_or_user_is_malformed() {
        for body in [
            r#"{"user_id":"@knock:localhost","device_id":"ABC"}"#,
            r#"{"user_id":"@knock:localhost","access_token":""}"#,
            r#"{"user_id":"@knock:localhost","access_token":"two words"}"#,
            r#"{"user_id":"@knock:localhost","access_token":42}"#,
            r#"{"user_id":"knock","access_token":"t"}"#,
            r#"{"access_token":"t"}"#,
            "",
            "[]",
        ] {
            let e = parse_login(resp(200, body)).unwrap_err();
            assert_eq!(e, LoginError::Malformed, "{body}");
            assert!(!e.is_transient());
        }
    }

    #[test]
    fn a_truncated_login_reply_is_malformed() {
        let r = parse_login(resp(200, r#"{"user_id":"@knock:localhost","access_tok"#));
        assert_eq!(r, Err(LoginError::Malformed));
    }

    #[test]
    fn a_wrong_password_or_bad_jwt_is_bad_credentials() {
        let e = parse_login(resp(
            403,
            r#"{"errcode":"M_FORBIDDEN","error":"Invalid username or password"}"#,
        ))
        .unwrap_err();
        assert_eq!(e, LoginError::BadCredentials);
        assert!(!e.is_transient());
        assert!(e.message().contains("password is wrong"));
    }

    #[test]
    fn other_login_refusals_keep_their_status_and_errcode() {
        assert_eq!(
            parse_login(resp(403, r#"{"errcode":"M_USER_DEACTIVATED"}"#)),
            Err(LoginError::Refused {
                status: 403,
                errcode: "M_USER_DEACTIVATED".into()
            })
        );
        let unknown_type = parse_login(resp(
            400,
            r#"{"errcode":"M_UNKNOWN","error":"Unknown login type"}"#,
        ))
        .unwrap_err();
        assert_eq!(
            unknown_type.message(),
            "The homeserver refused the login (HTTP 400, M_UNKNOWN)."
        );
        assert_eq!(
            parse_login(resp(404, "<html>not found</html>")),
            Err(LoginError::Refused {
                status: 404,
                errcode: String::new()
            })
        );
    }

    #[test]
    fn a_rate_limited_login_says_how_long_to_wait() {
        let with_header = Ok(HttpResponse {
            status: 429,
            retry_after: Some("10".into()),
            body: r#"{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":9816}"#.into(),
        });
        let e = parse_login(with_header).unwrap_err();
        assert_eq!(
            e,
            LoginError::RateLimited {
                retry_after_ms: 10_000
            }
        );
        assert!(e.is_transient());
        assert_eq!(
            e.message(),
            "The homeserver is rate limiting logins; try again in 10 seconds."
        );
        assert_eq!(
            parse_login(resp(
                429,
                r#"{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":1500}"#
            )),
            Err(LoginError::RateLimited {
                retry_after_ms: 1500
            })
        );
    }

    #[test]
    fn server_errors_timeouts_and_network_failures_make_the_login_unavailable() {
        assert_eq!(
            parse_login(resp(500, "")),
            Err(LoginError::Unavailable { status: Some(500) })
        );
        assert_eq!(
            parse_login(resp(502, "<html>bad gateway")),
            Err(LoginError::Unavailable { status: Some(502) })
        );
        assert_eq!(
            parse_login(Err(TransportError::Timeout)),
            Err(LoginError::Unavailable { status: None })
        );
        let e = parse_login(Err(TransportError::Network("connection reset".into()))).unwrap_err();
        assert!(e.is_transient());
        assert_eq!(
            e.message(),
            "The homeserver did not answer; try again later."
        );
    }

    #[test]
    fn whoami_names_the_user_and_device_or_reports_an_unknown_token() {
        assert_eq!(
            parse_whoami(resp(
                200,
                r#"{"user_id":"@knock:localhost","device_id":"ABC","is_guest":false}"#
            )),
            Ok(Identity {
                user_id: "@knock:localhost".into(),
                device_id: Some("ABC".into())
            })
        );
        let e = parse_whoami(resp(
            401,
            r#"{"errcode":"M_UNKNOWN_TOKEN","error":"Unknown access token","soft_logout":false}"#,
        ))
        .unwrap_err();
        assert_eq!(
            e,
            LoginError::UnknownToken {
                errcode: "M_UNKNOWN_TOKEN".into()
            }
        );
        assert!(!e.is_transient());
        assert_eq!(
            parse_whoami(resp(401, r#"{"errcode":"M_MISSING_TOKEN"}"#))
                .unwrap_err()
                .message(),
            "The homeserver received no access token."
        );
        assert_eq!(
            parse_whoami(resp(200, r#"{"device_id":"ABC"}"#)),
            Err(LoginError::Malformed)
        );
    }

    #[test]
    fn a_beeper_start_gives_the_request_id() {
        assert_eq!(
            parse_beeper_start(resp(
                200,
                r#"{"request":"abc123","type":["email"],"expires":"2030-01-01T00:00:00Z"}"#
            )),
            Ok("abc123".into())
        );
        for body in [
            r#"{"type":["email"]}"#,
            r#"{"request":""}"#,
            r#"{"requ"#,
            "",
        ] {
            assert_eq!(
                parse_beeper_start(resp(200, body)),
                Err(BeeperError::Malformed),
                "{body}"
            );
        }
    }

    #[test]
    fn a_refused_beeper_bearer_hints_that_the_private_api_changed() {
        let e = parse_beeper_start(resp(401, r#"{"error":"unauthorized"}"#)).unwrap_err();
        assert_eq!(e, BeeperError::Refused { status: 401 });
        assert!(e.message().contains("may have changed"));
        assert!(!e.is_transient());
        // A 404 on the first step means a wrong API base, not an expired request.
        assert_eq!(
            parse_beeper_start(resp(404, "")),
            Err(BeeperError::Refused { status: 404 })
        );
    }

    #[test]
    fn any_success_from_the_email_step_means_the_code_was_sent() {
        assert_eq!(parse_beeper_email(resp(200, "{}")), Ok(()));
        assert_eq!(parse_beeper_email(resp(204, "")), Ok(()));
        assert_eq!(parse_beeper_email(resp(202, "queued")), Ok(()));
        assert_eq!(
            parse_beeper_email(resp(404, r#"{"error":"unknown request"}"#)),
            Err(BeeperError::Expired)
        );
        assert_eq!(
            parse_beeper_email(resp(400, r#"{"error":"invalid email"}"#)),
            Err(BeeperError::Refused { status: 400 })
        );
    }

    #[test]
    fn the_right_code_gives_the_jwt() {
        assert_eq!(
            parse_beeper_verify(resp(
                200,
                &format!(r#"{{"token":"{JWT}","whoami":{{"userInfo":{{}}}}}}"#)
            )),
            Ok(JWT.into())
        );
    }

    #[test]
    fn a_wrong_code_says_how_many_tries_are_left() {
        let e = parse_beeper_verify(resp(403, r#"{"retries":2}"#)).unwrap_err();
        assert_eq!(
            e,
            BeeperError::WrongCode {
                retries_left: Some(2)
            }
        );
        assert_eq!(e.message(), "That code is wrong; 2 tries left.");
        assert!(!e.is_transient());
        assert!(!e.must_start_again());
        assert_eq!(
            parse_beeper_verify(resp(403, r#"{"retries":1}"#))
                .unwrap_err()
                .message(),
            "That code is wrong; 1 try left."
        );
        let last = parse_beeper_verify(resp(403, r#"{"retries":0}"#)).unwrap_err();
        assert!(last.must_start_again());
        assert!(last.message().contains("start the Beeper login again"));
        let unsaid = parse_beeper_verify(resp(403, "")).unwrap_err();
        assert_eq!(unsaid, BeeperError::WrongCode { retries_left: None });
        assert!(!unsaid.must_start_again());
    }

    #[test]
    fn a_new_account_is_refused_with_a_clear_message() {
        let e = parse_beeper_verify(resp(200, r#"{"leadToken":"lead-secret-123"}"#)).unwrap_err();
        assert_eq!(e, BeeperError::NewAccount);
        assert!(e.must_start_again());
        assert!(!e.is_transient());
        let m = e.message();
        assert!(m.contains("Beeper app"), "{m}");
        assert!(!m.contains("lead-secret-123"));
        assert!(!format!("{e:?}").contains("lead-secret-123"));
    }

    #[test]
    fn a_verify_success_without_a_token_is_malformed() {
        for body in [
            r#"{}"#,
            r#"{"token":""}"#,
            r#"{"token":"a b"}"#,
            r#"{"tok"#,
            "",
        ] {
            assert_eq!(
                parse_beeper_verify(resp(200, body)),
                Err(BeeperError::Malformed),
                "{body}"
            );
        }
    }

    #[test]
    fn an_expired_or_used_request_must_start_again() {
        for status in [404, 410] {
            let e =
                parse_beeper_verify(resp(status, r#"{"error":"no such request"}"#)).unwrap_err();
            assert_eq!(e, BeeperError::Expired);
            assert!(e.must_start_again());
        }
    }

    #[test]
    fn beeper_rate_limits_and_outages_are_transient() {
        let limited = Ok(HttpResponse {
            status: 429,
            retry_after: Some("30".into()),
            body: String::new(),
        });
        let e = parse_beeper_verify(limited).unwrap_err();
        assert_eq!(
            e,
            BeeperError::RateLimited {
                retry_after_ms: 30_000
            }
        );
        assert_eq!(
            e.message(),
            "Beeper is rate limiting logins; try again in 30 seconds."
        );
        assert!(e.is_transient());
        for r in [
            resp(500, ""),
            resp(503, "<html>"),
            Err(TransportError::Timeout),
            Err(TransportError::Network("dns".into())),
        ] {
            let e = parse_beeper_email(r).unwrap_err();
            assert!(
                matches!(e, BeeperError::Unavailable { .. }) && e.is_transient(),
                "{e:?}"
            );
        }
        assert_eq!(
            parse_beeper_start(resp(502, "")).unwrap_err().message(),
            "Beeper had an error (HTTP 502); try again later."
        );
    }

    #[test]
    fn waits_are_described_in_whole_units_rounded_up() {
        assert_eq!(seconds(1), "1 second");
        assert_eq!(seconds(1_001), "2 seconds");
        assert_eq!(seconds(119_000), "119 seconds");
        assert_eq!(seconds(3_600_000), "60 minutes");
    }

    #[test]
    fn no_secret_appears_in_debug_output_or_messages() {
        let secrets = [PASSWORD, TOKEN, JWT, CODE];
        let mut shown = Vec::new();
        for r in homeserver_calls()
            .into_iter()
            .chain(beeper_calls())
            .chain([whoami(HS, TOKEN)])
        {
            shown.push(format!("{r:?}"));
        }
        let session = Session {
            user_id: "@knock:localhost".into(),
            access_token: TOKEN.into(),
            device_id: None,
        };
        shown.push(format!("{session:?}"));
        // Replies that echo a secret back must not leak it into an error.
        let echoing = format!(r#"{{"errcode":"M_FORBIDDEN","error":"bad token {JWT} {TOKEN}"}}"#);
        let login_errors = [
            parse_login(resp(403, &echoing)).unwrap_err(),
            parse_login(resp(400, &echoing)).unwrap_err(),
            parse_login(resp(400, &format!(r#"{{"errcode":"{PASSWORD} {CODE}"}}"#))).unwrap_err(),
            parse_whoami(resp(401, &echoing)).unwrap_err(),
            parse_login(Err(TransportError::Network(TOKEN.into()))).unwrap_err(),
        ];
        for e in &login_errors {
            shown.push(format!("{e:?}"));
            shown.push(e.message());
        }
        let beeper_errors = [
            parse_beeper_verify(resp(403, &format!(r#"{{"retries":1,"error":"{CODE}"}}"#)))
                .unwrap_err(),
            parse_beeper_verify(resp(400, &format!(r#"{{"error":"{CODE} {JWT}"}}"#))).unwrap_err(),
            parse_beeper_verify(resp(200, &format!(r#"{{"leadToken":"{JWT}"}}"#))).unwrap_err(),
        ];
        for e in &beeper_errors {
            shown.push(format!("{e:?}"));
            shown.push(e.message());
        }
        for text in &shown {
            for secret in secrets {
                assert!(!text.contains(secret), "{text:?} shows a secret");
            }
        }
    }

    #[test]
    fn token_only_mode_needs_the_operator_after_an_unknown_token() {
        for stored in [false, true] {
            assert_eq!(
                recovery_after_unknown_token(Credentials::AccessToken, stored),
                Recovery::NeedsOperator
            );
        }
    }

    #[test]
    fn password_mode_logs_in_again() {
        for stored in [false, true] {
            assert_eq!(
                recovery_after_unknown_token(Credentials::Password, stored),
                Recovery::ReLoginWithPassword
            );
        }
    }

    #[test]
    fn beeper_mode_retries_with_a_stored_jwt_or_asks_the_operator() {
        assert_eq!(
            recovery_after_unknown_token(Credentials::Beeper, true),
            Recovery::ReLoginWithStoredJwt
        );
        assert_eq!(
            recovery_after_unknown_token(Credentials::Beeper, false),
            Recovery::NeedsOperator
        );
    }

    #[test]
    fn every_mode_has_a_sentence_for_the_operator() {
        for mode in [
            Credentials::AccessToken,
            Credentials::Password,
            Credentials::Beeper,
        ] {
            let m = needs_operator_message(mode);
            assert!(m.ends_with('.') && m.len() > 20, "{m}");
        }
    }
}
