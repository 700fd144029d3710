//! A local stand-in for Beeper's private login API, for end-to-end tests.
//!
//! It speaks just enough HTTP/1.1 on 127.0.0.1 (one thread per connection, `Content-Length`
//! bodies, `Connection: close`) to play the three steps Knock uses:
//!
//! 1. `POST /user/login` → `{"request": id, "type": ["email"], "expires": ...}`
//! 2. `POST /user/login/email` `{"request", "email"}` → `{}`; the code "is emailed"
//! 3. `POST /user/login/response` `{"request", "response"}` → `{"token": <HS256 JWT>}`, or
//!    `{"leadToken": ...}` for a new account, or 403 `{"retries": n}` for a wrong code.
//!
//! Every known endpoint first checks `Authorization: Bearer BEEPER-PRIVATE-API-PLEASE-DONT-USE`
//! and a JSON content type. The JWT's `sub` is the email's local part, lower-cased and cut down
//! to what a Synapse localpart allows, so Synapse's `jwt_config` with the same secret accepts it.
//! The bearer string is spelled out here on purpose, independently of `knock::matrix::login`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// The `Authorization` header every call must carry.
pub const EXPECTED_AUTHORIZATION: &str = "Bearer BEEPER-PRIVATE-API-PLEASE-DONT-USE";
/// Wrong codes a login request takes before it dies.
pub const CODE_TRIES: u32 = 3;
/// How long a minted JWT is valid.
pub const JWT_LIFETIME_SECS: u64 = 300;
/// How long a login request claims to be valid (only reported, never enforced).
pub const REQUEST_LIFETIME_SECS: u64 = 1800;
/// The `iss` claim of every minted JWT.
pub const ISSUER: &str = "beeper-stub";

const MAX_BODY: usize = 1 << 20;

/// One login request, from `/user/login` until its code is used or its tries run out.
struct LoginRequest {
    email: Option<String>,
    retries_left: u32,
}

struct State {
    jwt_secret: String,
    code: String,
    new_account: bool,
    /// Live requests. A used or dead request is removed (used) or kept with no tries (dead).
    requests: HashMap<String, LoginRequest>,
    next_id: u64,
    calls: Vec<(String, Value)>,
    last_email: Option<String>,
}

pub struct BeeperStub {
    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub url: String,
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A handler thread that panicked must not take the whole stub down with it.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl BeeperStub {
    /// Starts the stub on a free port. `code` is the code it "emails" for every request;
    /// `jwt_secret` signs the JWTs (HS256), as Synapse's `jwt_config.secret` would check them.
    pub fn start(jwt_secret: &str, code: &str) -> BeeperStub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Beeper stub");
        let addr = listener.local_addr().expect("the Beeper stub's address");
        let state = Arc::new(Mutex::new(State {
            jwt_secret: jwt_secret.to_owned(),
            code: code.to_owned(),
            new_account: false,
            requests: HashMap::new(),
            next_id: 1,
            calls: Vec::new(),
            last_email: None,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("beeper-stub".into())
                .spawn(move || accept_loop(listener, state, stop))
                .expect("spawn the Beeper stub")
        };
        BeeperStub {
            url: format!("http://{addr}"),
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// From now on, a right code answers `{"leadToken": ...}` (an unfinished sign-up) instead
    /// of `{"token": ...}`.
    pub fn set_new_account(&self, yes: bool) {
        lock(&self.state).new_account = yes;
    }

    /// Every request received, in order: its path (without query) and JSON body (`Null` when
    /// absent or not JSON). Includes refused ones.
    pub fn calls(&self) -> Vec<(String, Value)> {
        lock(&self.state).calls.clone()
    }

    /// The address of the last accepted `/user/login/email` call.
    pub fn last_email(&self) -> Option<String> {
        lock(&self.state).last_email.clone()
    }

    /// The code this stub "emails".
    pub fn code(&self) -> String {
        lock(&self.state).code.clone()
    }
}

impl Drop for BeeperStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and drops the listener.
        let woke = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok();
        if let Some(thread) = self.thread.take() {
            if woke {
                let _ = thread.join();
            }
        }
    }
}

fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            Ok(stream) => {
                let state = Arc::clone(&state);
                let _ = std::thread::Builder::new()
                    .name("beeper-stub-conn".into())
                    .spawn(move || serve(stream, &state));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A parsed request: what the handlers need and nothing more.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let (status, body) = match read_request(BufReader::new(stream)) {
        Ok(req) => handle(&req, state),
        Err(status) => (status, json!({ "error": "could not read the request" })),
    };
    let _ = write_response(write_half, status, &body);
}

fn read_request(mut reader: BufReader<TcpStream>) -> Result<Request, u16> {
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|_| 400u16)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(400);
    };
    let method = method.to_owned();
    let path = target.split('?').next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).map_err(|_| 400u16)?;
        let line = line.trim_end_matches(['\r', '\n']);
        if n == 0 || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| v.parse::<usize>().map_err(|_| 400u16))
        .transpose()?
        .unwrap_or(0);
    if length > MAX_BODY {
        return Err(413);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).map_err(|_| 400u16)?;
    Ok(Request {
        method,
        path,
        headers,
        body,
    })
}

fn write_response(mut stream: TcpStream, status: u16, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        _ => "Error",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn error(status: u16, message: &str) -> (u16, Value) {
    (status, json!({ "error": message }))
}

fn handle(req: &Request, state: &Mutex<State>) -> (u16, Value) {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let mut state = lock(state);
    state.calls.push((req.path.clone(), body.clone()));

    let known = matches!(
        req.path.as_str(),
        "/user/login" | "/user/login/email" | "/user/login/response"
    );
    if !known {
        return error(404, "no such endpoint");
    }
    if req.header("Authorization") != Some(EXPECTED_AUTHORIZATION) {
        return error(401, "missing or wrong authorization");
    }
    if req.method != "POST" {
        return error(405, "only POST is allowed");
    }
    let json_type = req
        .header("Content-Type")
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("application/json"));
    if !json_type || !body.is_object() {
        return error(
            400,
            "the body must be a JSON object sent as application/json",
        );
    }
    match req.path.as_str() {
        "/user/login" => start(&mut state),
        "/user/login/email" => send_email(&mut state, &body),
        _ => verify(&mut state, &body),
    }
}

fn start(state: &mut State) -> (u16, Value) {
    let now = unix_now();
    let id = format!(
        "stub-{:04}-{:x}",
        state.next_id,
        now.wrapping_mul(2_654_435_761)
    );
    state.next_id += 1;
    state.requests.insert(
        id.clone(),
        LoginRequest {
            email: None,
            retries_left: CODE_TRIES,
        },
    );
    (
        200,
        json!({
            "request": id,
            "type": ["email"],
            "expires": rfc3339(now + REQUEST_LIFETIME_SECS),
        }),
    )
}

fn send_email(state: &mut State, body: &Value) -> (u16, Value) {
    let id = body.get("request").and_then(Value::as_str).unwrap_or("");
    let Some(email) = body
        .get("email")
        .and_then(Value::as_str)
        .filter(|e| e.contains('@'))
    else {
        return error(400, "an email address is required");
    };
    match state.requests.get_mut(id) {
        Some(req) if req.retries_left > 0 => {
            req.email = Some(email.to_owned());
            state.last_email = Some(email.to_owned());
            (200, json!({}))
        }
        _ => error(404, "unknown or expired login request"),
    }
}

fn verify(state: &mut State, body: &Value) -> (u16, Value) {
    let id = body.get("request").and_then(Value::as_str).unwrap_or("");
    let Some(response) = body.get("response").and_then(Value::as_str) else {
        return error(400, "a response (the emailed code) is required");
    };
    let Some(req) = state.requests.get_mut(id) else {
        return error(404, "unknown or expired login request");
    };
    if req.retries_left == 0 {
        return (403, json!({ "retries": 0 }));
    }
    let Some(email) = req.email.clone() else {
        return error(400, "no code was sent for this login request");
    };
    if response != state.code {
        req.retries_left -= 1;
        return (403, json!({ "retries": req.retries_left }));
    }
    // The code is single-use: the request is gone once it succeeds.
    state.requests.remove(id);
    if state.new_account {
        return (200, json!({ "leadToken": format!("lead-{}", unix_now()) }));
    }
    let now = unix_now();
    let claims = json!({
        "sub": localpart_for(&email),
        "iat": now,
        "exp": now + JWT_LIFETIME_SECS,
        "iss": ISSUER,
    });
    (
        200,
        json!({ "token": mint_hs256(&state.jwt_secret, &claims) }),
    )
}

/// The Matrix localpart for an email: its local part, lower-cased, keeping only
/// `a-z 0-9 . _ = -` ("Knock.Bot@example.org" → "knock.bot").
pub fn localpart_for(email: &str) -> String {
    let local = email.rsplit_once('@').map_or(email, |(l, _)| l);
    let cleaned: String = local
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._=-".contains(*c))
        .collect();
    if cleaned.is_empty() {
        "beeper-user".into()
    } else {
        cleaned
    }
}

/// A compact HS256 JWT: base64url (no padding) of header, claims, and their HMAC-SHA256.
pub fn mint_hs256(secret: &str, claims: &Value) -> String {
    let header = json!({ "alg": "HS256", "typ": "JWT" });
    let signing_input = format!(
        "{}.{}",
        B64URL.encode(header.to_string()),
        B64URL.encode(claims.to_string())
    );
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    let signature = B64URL.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (proleptic Gregorian calendar, UTC).
fn rfc3339(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01, counting in 400-year eras that start on March 1.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn dates_are_formatted_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
