//! A fault-injecting HTTP/1.1 proxy for end-to-end tests.
//!
//! The worker under test reaches Synapse through this proxy (its `MATRIX_BASE_URL` points here).
//! The proxy forwards every request to the upstream it was started with, except that it can be
//! told to answer a chosen share of requests with a fault instead: a Matrix rate limit (429), a
//! server error (500), a stall that never answers, or a reply cut off halfway through its body.
//! Which requests are hit is decided by a counter, never by chance, so runs are repeatable.
//!
//! It only ever listens on 127.0.0.1, on a free port, and only speaks plain HTTP. Each client
//! connection gets its own thread; connections are kept alive until the client closes them or
//! asks for `Connection: close`. Every forwarded request opens a fresh upstream connection.
//! Request bodies may come with `Content-Length` or `Transfer-Encoding: chunked`; upstream
//! always gets `Content-Length`. Upstream replies are decoded (chunked or close-delimited) and
//! handed on with a recomputed `Content-Length`.
//!
//! Nothing a client or the upstream sends can make the proxy panic; problems are logged to
//! stderr and the affected connection is closed. Dropping the [`FaultProxy`] stops it: the
//! listener closes and every open connection is shut down, so all its threads end.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a faulted request gets instead of a normal answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// 429 `{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests","retry_after_ms": secs*1000}`
    /// with the header `Retry-After: secs`. The request does not reach the upstream.
    RateLimit { retry_after_secs: u64 },
    /// 500 `{"errcode":"M_UNKNOWN","error":"Internal server error"}`. The request does not reach
    /// the upstream.
    ServerError,
    /// Read the whole request, wait this long without answering, then close the connection
    /// without a reply. The request does not reach the upstream.
    Stall(Duration),
    /// Forward the request to the upstream (so it takes effect there), then send the upstream's
    /// status line and headers with the full body's `Content-Length` but only the first half of
    /// the body, and close the connection.
    Truncate,
}

/// The path filter in force until [`FaultProxy::set_path_filter`] changes it.
pub const DEFAULT_PATH_FILTER: &str = "/_matrix/";

/// Longest request line, status line or header line accepted.
const MAX_LINE: usize = 16 * 1024;
/// Most header lines accepted in one message.
const MAX_HEADERS: usize = 256;
/// Largest body accepted, in either direction.
const MAX_BODY: usize = 64 << 20;
/// How long a kept-alive client connection may sit idle between requests. Long on purpose:
/// closing a connection that workerd still holds in its pool could fail one of its fetches,
/// which would be a fault nobody asked for.
const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a client may take to send the rest of a request once it has started one.
const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(30);
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const UPSTREAM_IO_TIMEOUT: Duration = Duration::from_secs(120);
/// Shares are kept as parts per million, so that the fault counter is exact integer arithmetic.
const SHARE_SCALE: u128 = 1_000_000;

/// A running proxy. Dropping it stops it.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub url: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

/// Where forwarded requests go.
struct Upstream {
    /// `host:port`, for connecting and for the `Host` header.
    authority: String,
    /// A path to put in front of every request's path; empty or starting with `/`, never
    /// ending with `/`.
    prefix: String,
}

/// Fault settings and tallies.
struct State {
    fault: Option<Fault>,
    share_ppm: u128,
    /// Requests that matched the path filter since the fault was last set.
    candidates: u128,
    path_filter: String,
    seen: u64,
    faults: u64,
    /// Paths (without query) of forwarded requests the upstream answered with 2xx.
    ok_paths: Vec<String>,
}

impl State {
    /// Counts one request and decides whether it gets a fault.
    fn decide(&mut self, path: &str) -> Option<Fault> {
        self.seen += 1;
        let fault = self.fault.clone()?;
        if !path.contains(self.path_filter.as_str()) {
            return None;
        }
        let n = self.candidates;
        self.candidates += 1;
        let hit = (n + 1) * self.share_ppm / SHARE_SCALE > n * self.share_ppm / SHARE_SCALE;
        if hit {
            self.faults += 1;
            Some(fault)
        } else {
            None
        }
    }
}

struct Shared {
    upstream: Upstream,
    state: Mutex<State>,
    stop: AtomicBool,
    /// Paired with `wake` so that stalls end at once when the proxy is dropped.
    stop_lock: Mutex<()>,
    wake: Condvar,
    /// Every open socket (client and upstream side), so that dropping the proxy can shut them
    /// all down and unblock their threads.
    sockets: Mutex<HashMap<u64, TcpStream>>,
    next_socket: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A connection thread that somehow panicked must not take the proxy down with it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Registers a socket for shutdown on drop; `None` when the proxy is already stopping.
    fn register(&self, stream: &TcpStream) -> Option<Registration<'_>> {
        let clone = stream.try_clone().ok()?;
        let id = self.next_socket.fetch_add(1, Ordering::SeqCst);
        let mut sockets = lock(&self.sockets);
        if self.stopped() {
            let _ = stream.shutdown(Shutdown::Both);
            return None;
        }
        sockets.insert(id, clone);
        Some(Registration { shared: self, id })
    }

    /// Waits `how_long`, or less if the proxy is dropped meanwhile.
    fn wait(&self, how_long: Duration) {
        let deadline = Instant::now() + how_long;
        let mut guard = lock(&self.stop_lock);
        while !self.stopped() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            guard = match self.wake.wait_timeout(guard, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// Removes its socket from the registry when dropped.
struct Registration<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        lock(&self.shared.sockets).remove(&self.id);
    }
}

impl FaultProxy {
    /// Starts a proxy on a free port of 127.0.0.1 that forwards to `upstream`, a plain-HTTP
    /// base URL such as `http://127.0.0.1:8008` (a path after the authority is kept as a
    /// prefix). No faults until [`FaultProxy::set_fault`].
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream = parse_upstream(upstream);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let addr = listener.local_addr().expect("the fault proxy's address");
        let shared = Arc::new(Shared {
            upstream,
            state: Mutex::new(State {
                fault: None,
                share_ppm: 0,
                candidates: 0,
                path_filter: DEFAULT_PATH_FILTER.to_owned(),
                seen: 0,
                faults: 0,
                ok_paths: Vec::new(),
            }),
            stop: AtomicBool::new(false),
            stop_lock: Mutex::new(()),
            wake: Condvar::new(),
            sockets: Mutex::new(HashMap::new()),
            next_socket: AtomicU64::new(0),
        });
        let accept_thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("fault-proxy".into())
                .spawn(move || accept_loop(listener, shared))
                .expect("spawn the fault proxy")
        };
        FaultProxy {
            url: format!("http://{addr}"),
            addr,
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    /// From now on, answer `share` (0.0..=1.0) of the requests that match the path filter with
    /// `fault`. Deterministic: counting matching requests from 0 after this call, request `n`
    /// is hit when `floor((n+1)*share) > floor(n*share)`, so a share of 0.5 hits the 2nd, 4th,
    /// 6th... and a share of 1.0 hits every one. The share is rounded to millionths.
    pub fn set_fault(&self, fault: Fault, share: f64) {
        assert!(
            (0.0..=1.0).contains(&share),
            "a fault share must be within 0.0..=1.0, not {share}"
        );
        let mut state = lock(&self.shared.state);
        state.fault = Some(fault);
        state.share_ppm = (share * SHARE_SCALE as f64).round() as u128;
        state.candidates = 0;
    }

    /// Only requests whose path (without the query) contains `substring` are candidates for
    /// faults, e.g. `"/invite"`. The default is [`DEFAULT_PATH_FILTER`]; an empty string makes
    /// every request a candidate.
    pub fn set_path_filter(&self, substring: &str) {
        lock(&self.shared.state).path_filter = substring.to_owned();
    }

    /// Stops injecting faults: everything is forwarded again. The path filter is kept.
    pub fn clear(&self) {
        let mut state = lock(&self.shared.state);
        state.fault = None;
        state.share_ppm = 0;
        state.candidates = 0;
    }

    /// `(requests seen, faults injected)` since the proxy started. Every complete request read
    /// from a client counts as seen, whether it matched the filter or not.
    pub fn counts(&self) -> (u64, u64) {
        let state = lock(&self.shared.state);
        (state.seen, state.faults)
    }

    /// How many forwarded requests whose path (without the query) contains `substring` the
    /// upstream answered with a 2xx status. Requests hit by [`Fault::Truncate`] count too (the
    /// upstream did handle them); requests hit by the other faults never reach the upstream.
    pub fn successes(&self, substring: &str) -> u64 {
        let state = lock(&self.shared.state);
        state
            .ok_paths
            .iter()
            .filter(|path| path.contains(substring))
            .count() as u64
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _guard = lock(&self.shared.stop_lock);
            self.shared.wake.notify_all();
        }
        for (_, socket) in lock(&self.shared.sockets).drain() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so it sees the flag and drops the listener.
        let woke = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok();
        if let Some(thread) = self.accept_thread.take() {
            if woke {
                let _ = thread.join();
            }
        }
    }
}

fn parse_upstream(url: &str) -> Upstream {
    let rest = url.strip_prefix("http://").unwrap_or_else(|| {
        panic!("the fault proxy forwards to plain http:// upstreams only, not {url:?}")
    });
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    assert!(!authority.is_empty(), "no host in upstream URL {url:?}");
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Upstream {
        authority,
        prefix: path.trim_end_matches('/').to_owned(),
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stopped() {
            break;
        }
        match conn {
            Ok(stream) => {
                let shared = Arc::clone(&shared);
                let spawned = std::thread::Builder::new()
                    .name("fault-proxy-conn".into())
                    .spawn(move || {
                        let served = catch_unwind(AssertUnwindSafe(|| serve(&shared, stream)));
                        if served.is_err() {
                            eprintln!("fault proxy: a connection handler panicked");
                        }
                    });
                if let Err(e) = spawned {
                    eprintln!("fault proxy: could not spawn a connection thread: {e}");
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Why a message could not be read.
enum ReadError {
    /// The peer closed the connection (cleanly, or before the message was complete).
    Closed,
    Io(io::Error),
    /// The bytes received are not acceptable HTTP/1.1.
    Malformed(String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ReadError::Closed
        } else {
            ReadError::Io(e)
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => write!(f, "connection closed early"),
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Malformed(why) => write!(f, "malformed message: {why}"),
        }
    }
}

fn malformed(why: impl Into<String>) -> ReadError {
    ReadError::Malformed(why.into())
}

type Headers = Vec<(String, String)>;

fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether the comma-separated list in any `name` header contains `token`.
fn has_token(headers: &Headers, name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Headers that only concern one connection and must not be passed on, plus the framing
/// headers this proxy sets itself.
fn is_hop_by_hop(name: &str, connection_tokens: &[String]) -> bool {
    let lower = name.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "content-length"
    ) || lower.starts_with("proxy-")
        || connection_tokens
            .iter()
            .any(|t| t.eq_ignore_ascii_case(&lower))
}

fn connection_tokens(headers: &Headers) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Reads one line without its line ending; `None` at end of stream before any byte.
fn read_line<R: BufRead>(reader: &mut R) -> Result<Option<String>, ReadError> {
    let mut buf = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if n > MAX_LINE {
            malformed("line too long")
        } else {
            ReadError::Closed
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Reads header lines up to and including the empty line that ends them.
fn read_headers<R: BufRead>(reader: &mut R) -> Result<Headers, ReadError> {
    let mut headers = Headers::new();
    loop {
        let line = read_line(reader)?.ok_or(ReadError::Closed)?;
        if line.is_empty() {
            return Ok(headers);
        }
        if headers.len() >= MAX_HEADERS {
            return Err(malformed("too many headers"));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(malformed(format!("header line without a colon: {line:?}")));
        };
        if name.is_empty() || name.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return Err(malformed(format!("bad header name: {name:?}")));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
}

/// Reads a chunked body (and any trailers, which are dropped).
fn read_chunked<R: BufRead>(reader: &mut R) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?.ok_or(ReadError::Closed)?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        if size_text.is_empty() || !size_text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed(format!("bad chunk size line: {line:?}")));
        }
        let size = usize::from_str_radix(size_text, 16)
            .ok()
            .filter(|size| body.len().saturating_add(*size) <= MAX_BODY)
            .ok_or_else(|| malformed("chunked body too large"))?;
        if size == 0 {
            read_headers(reader)?;
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let end = read_line(reader)?.ok_or(ReadError::Closed)?;
        if !end.is_empty() {
            return Err(malformed("chunk data longer than its size"));
        }
    }
}

/// The single `Content-Length` of a message, if it has one.
fn content_length(headers: &Headers) -> Result<Option<usize>, ReadError> {
    let mut found: Option<usize> = None;
    for (_, value) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        for part in value.split(',') {
            let part = part.trim();
            let parsed = part
                .parse::<usize>()
                .ok()
                .filter(|_| part.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| malformed(format!("bad Content-Length: {value:?}")))?;
            if found.is_some_and(|earlier| earlier != parsed) {
                return Err(malformed("conflicting Content-Length headers"));
            }
            found = Some(parsed);
        }
    }
    if found.is_some_and(|len| len > MAX_BODY) {
        return Err(malformed("body too large"));
    }
    Ok(found)
}

fn read_exact_body<R: Read>(reader: &mut R, len: usize) -> Result<Vec<u8>, ReadError> {
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(body)
}

/// One request from a client, body decoded.
struct Request {
    method: String,
    /// Path and query, as sent (origin form).
    target: String,
    /// The target without its query, for the path filter and the success tally.
    path: String,
    version: String,
    headers: Headers,
    body: Vec<u8>,
    /// Whether the client framed a body (so upstream gets a `Content-Length`, even if 0).
    has_body: bool,
}

impl Request {
    fn keep_alive(&self) -> bool {
        if has_token(&self.headers, "connection", "close") {
            return false;
        }
        self.version != "HTTP/1.0" || has_token(&self.headers, "connection", "keep-alive")
    }
}

/// Reads the next request; `None` when the client closed the connection between requests.
/// Answers `Expect: 100-continue` through `out` before reading the body.
fn read_request<R: BufRead>(
    reader: &mut R,
    out: &mut TcpStream,
) -> Result<Option<Request>, ReadError> {
    // A few stray empty lines before a request line are tolerated (RFC 9112, 2.2).
    let mut line = String::new();
    for _ in 0..4 {
        match read_line(reader)? {
            None => return Ok(None),
            Some(l) if l.is_empty() => continue,
            Some(l) => {
                line = l;
                break;
            }
        }
    }
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(malformed(format!("bad request line: {line:?}")));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
        return Err(malformed(format!("bad method: {method:?}")));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(malformed(format!("unsupported version: {version:?}")));
    }
    let target = origin_form(target)?;
    let headers = read_headers(reader)?;

    let chunked = match header(&headers, "transfer-encoding") {
        None => false,
        Some(_) if has_token(&headers, "transfer-encoding", "chunked") => {
            let last = headers
                .iter()
                .rev()
                .find(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
                .and_then(|(_, v)| v.rsplit(',').next())
                .map(|t| t.trim().to_ascii_lowercase());
            if last.as_deref() != Some("chunked") {
                return Err(malformed("chunked is not the last transfer coding"));
            }
            true
        }
        Some(other) => return Err(malformed(format!("unsupported transfer coding {other:?}"))),
    };
    let length = if chunked {
        None
    } else {
        content_length(&headers)?
    };
    let has_body = chunked || length.is_some();
    if has_body
        && length != Some(0)
        && has_token(&headers, "expect", "100-continue")
        && version == "HTTP/1.1"
    {
        out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        out.flush()?;
    }
    let body = if chunked {
        read_chunked(reader)?
    } else {
        read_exact_body(reader, length.unwrap_or(0))?
    };
    let path = target.split('?').next().unwrap_or("").to_owned();
    Ok(Some(Request {
        method: method.to_owned(),
        target,
        path,
        version: version.to_owned(),
        headers,
        body,
        has_body,
    }))
}

/// Turns a request target into origin form (`/path?query`); absolute URLs lose their scheme
/// and authority.
fn origin_form(target: &str) -> Result<String, ReadError> {
    if target.starts_with('/') || target == "*" {
        return Ok(target.to_owned());
    }
    for scheme in ["http://", "https://"] {
        if let Some(rest) = target.strip_prefix(scheme) {
            return Ok(match rest.find(['/', '?']) {
                Some(i) if rest[i..].starts_with('/') => rest[i..].to_owned(),
                Some(i) => format!("/{}", &rest[i..]),
                None => "/".to_owned(),
            });
        }
    }
    Err(malformed(format!("bad request target: {target:?}")))
}

/// One response, body decoded.
struct Response {
    status: u16,
    reason: String,
    headers: Headers,
    body: Vec<u8>,
}

impl Response {
    fn json(status: u16, extra_headers: Headers, body: serde_json::Value) -> Response {
        let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
        headers.extend(extra_headers);
        Response {
            status,
            reason: reason_phrase(status).to_owned(),
            headers,
            body: body.to_string().into_bytes(),
        }
    }

    /// Status line and headers, ending with the empty line. `Content-Length` is `length`
    /// (or the upstream's own, for a `HEAD`), whatever the body held here.
    fn head_bytes(&self, request_method: &str, length: usize, close: bool) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, self.reason);
        let tokens = connection_tokens(&self.headers);
        for (name, value) in &self.headers {
            if !is_hop_by_hop(name, &tokens) {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        if request_method.eq_ignore_ascii_case("HEAD") {
            if let Some(len) = header(&self.headers, "content-length") {
                head.push_str(&format!("Content-Length: {len}\r\n"));
            }
        } else if !status_has_no_body(self.status) {
            head.push_str(&format!("Content-Length: {length}\r\n"));
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}

fn status_has_no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        _ => "",
    }
}

/// Sends `response` whole. Returns whether the connection is still usable.
fn send(out: &mut TcpStream, method: &str, response: &Response, close: bool) -> bool {
    let mut bytes = response.head_bytes(method, response.body.len(), close);
    if !method.eq_ignore_ascii_case("HEAD") && !status_has_no_body(response.status) {
        bytes.extend_from_slice(&response.body);
    }
    out.write_all(&bytes).and_then(|()| out.flush()).is_ok()
}

/// Sends `response`'s head with the full `Content-Length` but only half its body.
fn send_truncated(out: &mut TcpStream, method: &str, response: &Response) {
    let mut bytes = response.head_bytes(method, response.body.len(), true);
    bytes.extend_from_slice(&response.body[..response.body.len() / 2]);
    let _ = out.write_all(&bytes).and_then(|()| out.flush());
}

fn serve(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(CLIENT_READ_TIMEOUT));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let Some(_registration) = shared.register(&stream) else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        // Wait, possibly for long, for the first byte of the next request.
        if reader.buffer().is_empty() {
            let _ = reader.get_ref().set_read_timeout(Some(CLIENT_IDLE_TIMEOUT));
            match reader.fill_buf() {
                Ok(bytes) if !bytes.is_empty() => {}
                _ => break,
            }
        }
        let _ = reader.get_ref().set_read_timeout(Some(CLIENT_READ_TIMEOUT));
        let request = match read_request(&mut reader, &mut out) {
            Ok(Some(request)) => request,
            Ok(None) | Err(ReadError::Closed) | Err(ReadError::Io(_)) => break,
            Err(ReadError::Malformed(why)) => {
                eprintln!("fault proxy: refusing a malformed request: {why}");
                let refusal = Response::json(
                    400,
                    Vec::new(),
                    serde_json::json!({
                        "errcode": "M_UNKNOWN",
                        "error": format!("fault proxy: malformed request: {why}"),
                    }),
                );
                send(&mut out, "GET", &refusal, true);
                linger(&mut reader, &out);
                break;
            }
        };
        if shared.stopped() {
            break;
        }
        if !handle(shared, &request, &mut out) {
            break;
        }
    }
    let _ = out.shutdown(Shutdown::Both);
}

/// After refusing a request: stops sending, then reads and drops what the client still sends
/// for a moment, so that closing with unread data does not reset the connection before the
/// client has read the refusal.
fn linger<R: Read>(reader: &mut R, out: &TcpStream) {
    let _ = out.shutdown(Shutdown::Write);
    let _ = out.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 8192];
    let mut drained = 0usize;
    while drained < MAX_BODY {
        match reader.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// Answers one request. Returns whether to keep reading requests from this connection.
fn handle(shared: &Shared, request: &Request, out: &mut TcpStream) -> bool {
    let keep_alive = request.keep_alive();
    let method = request.method.as_str();
    let fault = lock(&shared.state).decide(&request.path);
    match fault {
        None => {
            let response = forward_tallied(shared, request).unwrap_or_else(upstream_failed);
            send(out, method, &response, !keep_alive) && keep_alive
        }
        Some(Fault::RateLimit { retry_after_secs }) => {
            let response = Response::json(
                429,
                vec![("Retry-After".to_owned(), retry_after_secs.to_string())],
                serde_json::json!({
                    "errcode": "M_LIMIT_EXCEEDED",
                    "error": "Too many requests",
                    "retry_after_ms": retry_after_secs.saturating_mul(1000),
                }),
            );
            send(out, method, &response, !keep_alive) && keep_alive
        }
        Some(Fault::ServerError) => {
            let response = Response::json(
                500,
                Vec::new(),
                serde_json::json!({"errcode": "M_UNKNOWN", "error": "Internal server error"}),
            );
            send(out, method, &response, !keep_alive) && keep_alive
        }
        Some(Fault::Stall(how_long)) => {
            shared.wait(how_long);
            false
        }
        Some(Fault::Truncate) => {
            match forward_tallied(shared, request) {
                Ok(response) => send_truncated(out, method, &response),
                Err(failure) => {
                    send(out, method, &upstream_failed(failure), true);
                }
            }
            false
        }
    }
}

/// Forwards `request` and tallies it if the upstream answers 2xx. Failures are logged.
fn forward_tallied(shared: &Shared, request: &Request) -> Result<Response, String> {
    match forward(shared, request) {
        Ok(response) => {
            if (200..300).contains(&response.status) {
                lock(&shared.state).ok_paths.push(request.path.clone());
            }
            Ok(response)
        }
        Err(why) => {
            eprintln!(
                "fault proxy: {} {} failed upstream: {why}",
                request.method, request.target
            );
            Err(why)
        }
    }
}

/// The 502 sent when the upstream cannot be reached or sends something unreadable.
fn upstream_failed(why: String) -> Response {
    Response::json(
        502,
        vec![("X-Fault-Proxy".to_owned(), "upstream-failed".to_owned())],
        serde_json::json!({
            "errcode": "M_UNKNOWN",
            "error": format!("fault proxy: upstream failed: {why}"),
        }),
    )
}

fn connect_upstream(authority: &str) -> io::Result<TcpStream> {
    let mut last_error = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{authority} did not resolve"),
    );
    for addr in authority.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, UPSTREAM_CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

fn forward(shared: &Shared, request: &Request) -> Result<Response, String> {
    let upstream = &shared.upstream;
    let stream = connect_upstream(&upstream.authority)
        .map_err(|e| format!("cannot connect to {}: {e}", upstream.authority))?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(UPSTREAM_IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(UPSTREAM_IO_TIMEOUT));
    let _registration = shared
        .register(&stream)
        .ok_or_else(|| "the proxy is stopping".to_owned())?;

    let target = if request.target == "*" {
        request.target.clone()
    } else {
        format!("{}{}", upstream.prefix, request.target)
    };
    let mut head = format!("{} {target} HTTP/1.1\r\n", request.method);
    head.push_str(&format!("Host: {}\r\n", upstream.authority));
    let tokens = connection_tokens(&request.headers);
    for (name, value) in &request.headers {
        let skip = is_hop_by_hop(name, &tokens)
            || name.eq_ignore_ascii_case("host")
            || name.eq_ignore_ascii_case("expect");
        if !skip {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    if request.has_body || !request.body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", request.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&request.body);

    let mut writer = &stream;
    writer
        .write_all(&bytes)
        .and_then(|()| writer.flush())
        .map_err(|e| format!("cannot send the request: {e}"))?;

    let mut reader = BufReader::new(&stream);
    read_response(&mut reader, &request.method).map_err(|e| format!("bad reply: {e}"))
}

/// Reads the upstream's final response (skipping 1xx interim ones) and decodes its body.
fn read_response<R: BufRead>(reader: &mut R, method: &str) -> Result<Response, ReadError> {
    loop {
        let line = read_line(reader)?.ok_or(ReadError::Closed)?;
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let status = parts.next().unwrap_or("");
        let reason = parts.next().unwrap_or("").to_owned();
        if !version.starts_with("HTTP/1.") || status.len() != 3 {
            return Err(malformed(format!("bad status line: {line:?}")));
        }
        let status: u16 = status
            .parse()
            .ok()
            .filter(|s| (100..600).contains(s))
            .ok_or_else(|| malformed(format!("bad status line: {line:?}")))?;
        let headers = read_headers(reader)?;
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let body = if method.eq_ignore_ascii_case("HEAD") || status_has_no_body(status) {
            Vec::new()
        } else if has_token(&headers, "transfer-encoding", "chunked") {
            read_chunked(reader)?
        } else if let Some(len) = content_length(&headers)? {
            read_exact_body(reader, len)?
        } else {
            let mut body = Vec::new();
            reader
                .by_ref()
                .take(MAX_BODY as u64 + 1)
                .read_to_end(&mut body)
                .map_err(ReadError::Io)?;
            if body.len() > MAX_BODY {
                return Err(malformed("body too large"));
            }
            body
        };
        return Ok(Response {
            status,
            reason,
            headers,
            body,
        });
    }
}
