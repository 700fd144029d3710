//! Checks the fault proxy of the end-to-end suite over real HTTP on 127.0.0.1, against a tiny
//! echoing upstream started here, without Synapse or the worker.

#[path = "e2e/fault_proxy.rs"]
mod fault_proxy;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use fault_proxy::{Fault, FaultProxy};

// ---------------------------------------------------------------------------------------------
// The upstream: answers every request with a JSON echo of it, one request per connection.
//
// * `/status/NNN...` answers with status NNN;
// * `/chunked...` answers with a chunked body (with a chunk extension and a trailer);
// * `/eof...` answers without `Content-Length` and ends the body by closing;
// * anything else answers 200 with `Content-Length`, plus `X-Upstream: echo` and a
//   `Keep-Alive` header that the proxy must not pass on.
//
// A request that reaches it with `Transfer-Encoding` is answered 400: the proxy must always
// send `Content-Length`.
// ---------------------------------------------------------------------------------------------

struct Upstream {
    url: String,
    authority: String,
    hits: Arc<AtomicU64>,
}

impl Upstream {
    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

fn start_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test upstream");
    let authority = listener.local_addr().unwrap().to_string();
    let hits = Arc::new(AtomicU64::new(0));
    {
        let hits = Arc::clone(&hits);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let hits = Arc::clone(&hits);
                std::thread::spawn(move || upstream_serve(stream, &hits));
            }
        });
    }
    Upstream {
        url: format!("http://{authority}"),
        authority,
        hits,
    }
}

fn upstream_serve(stream: TcpStream, hits: &AtomicU64) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let Some((request_line, headers)) = read_head(&mut reader) else {
        return;
    };
    hits.fetch_add(1, Ordering::SeqCst);
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let length: usize = find(&headers, "content-length")
        .map(|v| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();

    let echo = json!({
        "method": method,
        "target": target,
        "headers": headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), Value::from(v.as_str())))
            .collect::<serde_json::Map<_, _>>(),
        "body": String::from_utf8_lossy(&body),
    })
    .to_string();

    let response = if find(&headers, "transfer-encoding").is_some() {
        let text = "Transfer-Encoding reached the upstream";
        format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )
    } else if let Some(rest) = target.strip_prefix("/status/") {
        let status = &rest[..3];
        format!(
            "HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{echo}",
            echo.len()
        )
    } else if target.starts_with("/chunked") {
        let (a, rest) = echo.split_at(echo.len() / 3);
        let (b, c) = rest.split_at(rest.len() / 2);
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             {:x}\r\n{a}\r\n{:X};ext=1\r\n{b}\r\n{:x}\r\n{c}\r\n0\r\nX-Trailer: t\r\n\r\n",
            a.len(),
            b.len(),
            c.len()
        )
    } else if target.starts_with("/eof") {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{echo}"
        )
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Upstream: echo\r\n\
             Keep-Alive: timeout=5\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{echo}",
            echo.len()
        )
    };
    let _ = out.write_all(response.as_bytes());
    let _ = out.flush();
    let _ = out.shutdown(std::net::Shutdown::Both);
}

/// Reads a request or status line and its headers; `None` when the peer closed first.
fn read_head<R: BufRead>(reader: &mut R) -> Option<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    if reader.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Some((first.trim_end().to_owned(), headers));
        }
        let (name, value) = line.split_once(':').expect("a header line");
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

// ---------------------------------------------------------------------------------------------
// Clients.
// ---------------------------------------------------------------------------------------------

struct Reply {
    status: u16,
    /// Lower-cased names.
    headers: HashMap<String, String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(timeout).build()
}

fn try_call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let mut request = agent.request(method, url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let result = match body {
        Some(body) => request.send_string(body),
        None => request.call(),
    };
    let response = match result {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(e) => return Err(e.to_string()),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .map(|name| {
            let value = response.header(&name).unwrap_or("").to_owned();
            (name.to_ascii_lowercase(), value)
        })
        .collect();
    let body = response.into_string().map_err(|e| e.to_string())?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// One request on a fresh agent with a generous timeout; any transport error fails the test.
fn call(method: &str, url: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Reply {
    try_call(&agent(Duration::from_secs(10)), method, url, body, headers)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

fn get(proxy: &FaultProxy, path: &str) -> Reply {
    call("GET", &format!("{}{path}", proxy.url), None, &[])
}

/// A raw connection to the proxy, for what ureq would hide.
fn raw(proxy: &FaultProxy) -> TcpStream {
    let stream = TcpStream::connect(proxy.url.strip_prefix("http://").unwrap()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Reads one response with a `Content-Length` body from a raw connection.
fn read_raw_response<R: BufRead>(reader: &mut R) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let (status_line, headers) = read_head(reader).expect("a response");
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = find(&headers, "content-length")
        .expect("a Content-Length")
        .parse()
        .unwrap();
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, headers, body)
}

/// Reads until the proxy closes the connection; a reset counts as a close.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("the proxy did not close the connection; got {received:?}")
            }
            Err(_) => return received,
        }
    }
}

/// Waits until `check` holds, for up to 5 s.
fn wait_for(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn setup() -> (Upstream, FaultProxy) {
    let upstream = start_upstream();
    let proxy = FaultProxy::start(&upstream.url);
    (upstream, proxy)
}

// ---------------------------------------------------------------------------------------------
// Forwarding.
// ---------------------------------------------------------------------------------------------

#[test]
fn the_proxy_listens_on_loopback_and_its_url_has_no_trailing_slash() {
    let (_upstream, proxy) = setup();
    assert!(proxy.url.starts_with("http://127.0.0.1:"), "{}", proxy.url);
    assert!(!proxy.url.ends_with('/'));
}

#[test]
fn a_get_passes_through_with_its_query_headers_status_and_body() {
    let (upstream, proxy) = setup();
    let reply = call(
        "GET",
        &format!("{}/_matrix/client/v3/rooms?limit=5&dir=b", proxy.url),
        None,
        &[("X-Test", "one"), ("Authorization", "Bearer abc")],
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["x-upstream"], "echo");
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(
        reply.headers["content-length"],
        reply.body.len().to_string()
    );
    assert!(
        !reply.headers.contains_key("keep-alive"),
        "hop-by-hop header passed on"
    );
    let echo = reply.json();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["target"], "/_matrix/client/v3/rooms?limit=5&dir=b");
    assert_eq!(echo["headers"]["x-test"], "one");
    assert_eq!(echo["headers"]["authorization"], "Bearer abc");
    assert_eq!(echo["headers"]["host"], upstream.authority);
    assert_eq!(echo["body"], "");
    assert_eq!(upstream.hits(), 1);
}

#[test]
fn put_post_and_delete_bodies_reach_the_upstream_byte_for_byte() {
    let (_upstream, proxy) = setup();
    let put_body = json!({"user_id": "@alice:example.org", "reason": "knock knock"}).to_string();
    let reply = call(
        "PUT",
        &format!(
            "{}/_matrix/client/v3/rooms/%21r%3Ax/state/m.room.name/",
            proxy.url
        ),
        Some(&put_body),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(reply.status, 200);
    let echo = reply.json();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(
        echo["target"],
        "/_matrix/client/v3/rooms/%21r%3Ax/state/m.room.name/"
    );
    assert_eq!(echo["body"], put_body.as_str());
    assert_eq!(echo["headers"]["content-type"], "application/json");
    assert_eq!(
        echo["headers"]["content-length"],
        put_body.len().to_string()
    );

    let big = "x".repeat(300_000);
    let echo = call(
        "POST",
        &format!("{}/_matrix/big", proxy.url),
        Some(&big),
        &[],
    )
    .json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body"].as_str().unwrap().len(), big.len());

    let echo = call(
        "DELETE",
        &format!("{}/_matrix/thing", proxy.url),
        Some("{}"),
        &[],
    )
    .json();
    assert_eq!(echo["method"], "DELETE");
    assert_eq!(echo["body"], "{}");
}

#[test]
fn upstream_error_statuses_pass_through_and_are_not_counted_as_successes() {
    let (_upstream, proxy) = setup();
    let reply = get(&proxy, "/status/404/_matrix/client/v3/profile");
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.json()["target"],
        "/status/404/_matrix/client/v3/profile"
    );
    let reply = get(&proxy, "/status/201/_matrix/client/v3/profile");
    assert_eq!(reply.status, 201);
    assert_eq!(proxy.successes("/profile"), 1);
    assert_eq!(proxy.counts(), (2, 0));
}

#[test]
fn chunked_and_close_delimited_upstream_replies_are_decoded_and_given_a_content_length() {
    let (_upstream, proxy) = setup();

    let mut stream = raw(&proxy);
    stream
        .write_all(b"GET /chunked/_matrix/x?y=1 HTTP/1.1\r\nHost: proxy\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let (status, headers, body) = read_raw_response(&mut reader);
    assert_eq!(status, 200);
    assert!(find(&headers, "transfer-encoding").is_none(), "{headers:?}");
    assert!(find(&headers, "x-trailer").is_none(), "{headers:?}");
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["target"], "/chunked/_matrix/x?y=1");

    let reply = get(&proxy, "/eof/_matrix/y");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.headers["content-length"],
        reply.body.len().to_string()
    );
    assert_eq!(reply.json()["target"], "/eof/_matrix/y");
}

#[test]
fn a_chunked_request_body_is_decoded_and_sent_upstream_with_a_content_length() {
    let (_upstream, proxy) = setup();
    let mut stream = raw(&proxy);
    stream
        .write_all(
            b"POST /_matrix/client/v3/rooms/r/invite HTTP/1.1\r\nHost: proxy\r\n\
              Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
              7\r\n{\"user_\r\nB;name=value\r\nid\":\"@a:b\"}\r\n0\r\nX-Trailer: yes\r\n\r\n",
        )
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let (status, _, body) = read_raw_response(&mut reader);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["body"], r#"{"user_id":"@a:b"}"#);
    assert_eq!(echo["headers"]["content-length"], "18");
    assert!(echo["headers"].get("transfer-encoding").is_none());
    assert!(echo["headers"].get("x-trailer").is_none());
    assert_eq!(proxy.successes("/invite"), 1);
}

#[test]
fn one_client_connection_carries_several_requests_until_the_client_asks_to_close() {
    let (upstream, proxy) = setup();
    let mut stream = raw(&proxy);
    let mut reader = BufReader::new(stream.try_clone().unwrap());

    stream
        .write_all(b"GET /_matrix/one HTTP/1.1\r\nHost: proxy\r\n\r\n")
        .unwrap();
    let (status, headers, body) = read_raw_response(&mut reader);
    assert_eq!(status, 200);
    assert!(find(&headers, "connection").is_none(), "{headers:?}");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["target"],
        "/_matrix/one"
    );

    stream
        .write_all(b"PUT /_matrix/two HTTP/1.1\r\nHost: proxy\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    let (_, _, body) = read_raw_response(&mut reader);
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (echo["target"].as_str(), echo["body"].as_str()),
        (Some("/_matrix/two"), Some("hello"))
    );

    // Two requests in one write (pipelined).
    stream
        .write_all(
            b"GET /_matrix/three HTTP/1.1\r\nHost: proxy\r\n\r\n\
              GET /_matrix/four HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let (_, _, body) = read_raw_response(&mut reader);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["target"],
        "/_matrix/three"
    );
    let (_, headers, body) = read_raw_response(&mut reader);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["target"],
        "/_matrix/four"
    );
    assert_eq!(find(&headers, "connection"), Some("close"));
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(upstream.hits(), 4);
    assert_eq!(proxy.counts(), (4, 0));
}

// ---------------------------------------------------------------------------------------------
// Faults.
// ---------------------------------------------------------------------------------------------

#[test]
fn the_rate_limit_fault_answers_429_with_retry_after_and_a_matrix_error() {
    let (upstream, proxy) = setup();
    proxy.set_fault(
        Fault::RateLimit {
            retry_after_secs: 3,
        },
        1.0,
    );
    let reply = call(
        "POST",
        &format!("{}/_matrix/client/v3/rooms/r/invite", proxy.url),
        Some("{}"),
        &[],
    );
    assert_eq!(reply.status, 429);
    assert_eq!(reply.headers["retry-after"], "3");
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(
        reply.json(),
        json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests", "retry_after_ms": 3000})
    );
    assert_eq!(
        upstream.hits(),
        0,
        "a rate-limited request reached the upstream"
    );
    assert_eq!(proxy.counts(), (1, 1));
    assert_eq!(proxy.successes("/invite"), 0);
}

#[test]
fn the_server_error_fault_answers_500_with_a_matrix_error() {
    let (upstream, proxy) = setup();
    proxy.set_fault(Fault::ServerError, 1.0);
    let reply = get(&proxy, "/_matrix/client/v3/account/whoami");
    assert_eq!(reply.status, 500);
    assert_eq!(
        reply.json(),
        json!({"errcode": "M_UNKNOWN", "error": "Internal server error"})
    );
    assert_eq!(upstream.hits(), 0);
    assert_eq!(proxy.counts(), (1, 1));
}

#[test]
fn a_stalled_request_times_out_its_client_while_other_connections_are_still_served() {
    let (upstream, proxy) = setup();
    proxy.set_path_filter("/stall");
    proxy.set_fault(Fault::Stall(Duration::from_millis(300)), 1.0);

    let stalled_url = format!("{}/_matrix/stall", proxy.url);
    let stalled = std::thread::spawn(move || {
        let started = Instant::now();
        let result = try_call(
            &agent(Duration::from_millis(200)),
            "GET",
            &stalled_url,
            None,
            &[],
        );
        (result.map(|reply| reply.status), started.elapsed())
    });
    wait_for("the stall to begin", || proxy.counts().1 == 1);

    let started = Instant::now();
    let reply = get(&proxy, "/_matrix/fast");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["target"], "/_matrix/fast");
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "the normal request waited for the stall: {:?}",
        started.elapsed()
    );

    let (result, elapsed) = stalled.join().unwrap();
    assert!(
        result.is_err(),
        "the stalled request got an answer: {result:?}"
    );
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    assert_eq!(
        upstream.hits(),
        1,
        "only the normal request reaches the upstream"
    );
    assert_eq!(proxy.counts(), (2, 1));
}

#[test]
fn a_stall_sends_nothing_and_closes_the_connection_once_its_time_is_up() {
    let (_upstream, proxy) = setup();
    proxy.set_fault(Fault::Stall(Duration::from_millis(300)), 1.0);
    let mut stream = raw(&proxy);
    let started = Instant::now();
    stream
        .write_all(b"POST /_matrix/x HTTP/1.1\r\nHost: proxy\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    let received = read_until_closed(&mut stream);
    let elapsed = started.elapsed();
    assert!(
        received.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    assert!(
        elapsed >= Duration::from_millis(300),
        "closed after {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "closed after {elapsed:?}");
}

#[test]
fn a_truncated_reply_promises_the_whole_body_but_delivers_half_of_it() {
    let (upstream, proxy) = setup();
    proxy.set_fault(Fault::Truncate, 1.0);

    let result = try_call(
        &agent(Duration::from_secs(10)),
        "POST",
        &format!("{}/_matrix/client/v3/rooms/r/invite", proxy.url),
        Some(r#"{"user_id":"@a:b"}"#),
        &[],
    );
    match result {
        Err(e) => assert!(
            e.contains("closed before all bytes were read") || e.contains("Connection"),
            "{e}"
        ),
        Ok(reply) => {
            let promised: usize = reply.headers["content-length"].parse().unwrap();
            assert!(reply.body.len() < promised, "a whole body got through");
        }
    }

    let mut stream = raw(&proxy);
    stream
        .write_all(b"GET /_matrix/client/v3/rooms/r/invite HTTP/1.1\r\nHost: proxy\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let (status_line, headers) = read_head(&mut reader).unwrap();
    assert!(status_line.starts_with("HTTP/1.1 200 "), "{status_line}");
    let promised: usize = find(&headers, "content-length").unwrap().parse().unwrap();
    let mut body = Vec::new();
    let _ = reader.read_to_end(&mut body);
    assert!(promised > 10);
    assert_eq!(body.len(), promised / 2);

    // Both reached the upstream and count as successes there.
    assert_eq!(upstream.hits(), 2);
    assert_eq!(proxy.successes("/invite"), 2);
    assert_eq!(proxy.counts(), (2, 2));
}

#[test]
fn a_half_share_faults_exactly_five_of_ten_requests_in_a_fixed_pattern() {
    let (upstream, proxy) = setup();
    let statuses = |proxy: &FaultProxy| -> Vec<u16> {
        (0..10)
            .map(|i| get(proxy, &format!("/_matrix/n/{i}")).status)
            .collect()
    };
    proxy.set_fault(Fault::ServerError, 0.5);
    let first = statuses(&proxy);
    assert_eq!(first, [200, 500, 200, 500, 200, 500, 200, 500, 200, 500]);
    assert_eq!(proxy.counts(), (10, 5));
    assert_eq!(upstream.hits(), 5);

    // Setting the fault again restarts the pattern.
    proxy.set_fault(Fault::ServerError, 0.5);
    assert_eq!(statuses(&proxy), first);
    assert_eq!(proxy.counts(), (20, 10));
}

#[test]
fn other_shares_fault_their_exact_proportion() {
    let (_upstream, proxy) = setup();
    for (share, requests, expected) in [
        (0.0, 10, 0),
        (1.0, 10, 10),
        (0.3, 10, 3),
        (0.1, 30, 3),
        (0.29, 100, 29),
    ] {
        proxy.set_fault(Fault::ServerError, share);
        let before = proxy.counts().1;
        for i in 0..requests {
            get(&proxy, &format!("/_matrix/share/{i}"));
        }
        assert_eq!(proxy.counts().1 - before, expected, "share {share}");
    }
}

#[test]
fn only_paths_matching_the_filter_are_faulted_and_the_query_does_not_count() {
    let (_upstream, proxy) = setup();
    proxy.set_fault(Fault::ServerError, 1.0);
    // The default filter: everything under /_matrix/.
    assert_eq!(get(&proxy, "/health").status, 200);
    assert_eq!(get(&proxy, "/_matrix/client/versions").status, 500);

    proxy.set_path_filter("/invite");
    assert_eq!(
        get(&proxy, "/_matrix/client/v3/rooms/%21r%3Ax/invite").status,
        500
    );
    assert_eq!(
        get(&proxy, "/_matrix/client/v3/rooms/%21r%3Ax/join").status,
        200
    );
    assert_eq!(get(&proxy, "/_matrix/client/v3/x?next=/invite").status, 200);
    assert_eq!(proxy.counts(), (5, 2));
}

#[test]
fn clear_turns_faults_off_and_everything_is_forwarded_again() {
    let (upstream, proxy) = setup();
    proxy.set_fault(
        Fault::RateLimit {
            retry_after_secs: 1,
        },
        1.0,
    );
    assert_eq!(get(&proxy, "/_matrix/a").status, 429);
    proxy.clear();
    for _ in 0..3 {
        assert_eq!(get(&proxy, "/_matrix/a").status, 200);
    }
    assert_eq!(upstream.hits(), 3);
    assert_eq!(proxy.counts(), (4, 1));
}

#[test]
fn counts_and_successes_add_up_over_a_mixed_run() {
    let (_upstream, proxy) = setup();
    assert_eq!(proxy.counts(), (0, 0));
    let invite = "/_matrix/client/v3/rooms/r/invite";

    proxy.set_path_filter("/invite");
    proxy.set_fault(
        Fault::RateLimit {
            retry_after_secs: 2,
        },
        0.5,
    );
    for _ in 0..4 {
        call("POST", &format!("{}{invite}", proxy.url), Some("{}"), &[]);
    }
    get(&proxy, "/_matrix/client/v3/sync");
    get(&proxy, "/status/403/_matrix/client/v3/rooms/r/invite");
    proxy.clear();
    call("POST", &format!("{}{invite}", proxy.url), Some("{}"), &[]);

    // 7 requests; the 2nd and 4th invites were rate-limited. The 403 (the 5th candidate, so not
    // faulted) reached the upstream but did not succeed.
    assert_eq!(proxy.counts(), (7, 2));
    assert_eq!(proxy.successes("/invite"), 3);
    assert_eq!(proxy.successes("/sync"), 1);
    assert_eq!(proxy.successes("/_matrix/"), 4);
    assert_eq!(proxy.successes("/nothing"), 0);
}

// ---------------------------------------------------------------------------------------------
// Robustness.
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_requests_get_400_and_the_proxy_keeps_working() {
    let (upstream, proxy) = setup();
    let bad: [&[u8]; 6] = [
        b"HELLO\r\n\r\n",
        b"GET /_matrix/x HTTP/2.0\r\n\r\n",
        b"GET /_matrix/x HTTP/1.1\r\nno colon here\r\n\r\n",
        b"POST /_matrix/x HTTP/1.1\r\nContent-Length: lots\r\n\r\n",
        b"POST /_matrix/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /_matrix/x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    ];
    for request in bad {
        let mut stream = raw(&proxy);
        stream.write_all(request).unwrap();
        let received = read_until_closed(&mut stream);
        let text = String::from_utf8_lossy(&received);
        assert!(text.starts_with("HTTP/1.1 400 "), "{text:?}");
    }
    let mut stream = raw(&proxy);
    let _ = stream.write_all(&vec![b'a'; 100_000]);
    let text = String::from_utf8_lossy(&read_until_closed(&mut stream)).into_owned();
    assert!(text.starts_with("HTTP/1.1 400 "), "{text:?}");

    assert_eq!(get(&proxy, "/_matrix/still/here").status, 200);
    assert_eq!(upstream.hits(), 1);
    assert_eq!(proxy.counts(), (1, 0));
}

#[test]
fn clients_that_vanish_mid_request_or_mid_stall_do_not_break_the_proxy() {
    let (upstream, proxy) = setup();
    // Connect and leave at once.
    drop(raw(&proxy));
    // Leave halfway through the head.
    raw(&proxy).write_all(b"GET /_matrix/x HT").unwrap();
    // Leave halfway through a body.
    raw(&proxy)
        .write_all(b"PUT /_matrix/x HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort")
        .unwrap();
    // Leave halfway through a chunked body.
    raw(&proxy)
        .write_all(b"PUT /_matrix/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc")
        .unwrap();
    // Leave during a stall.
    proxy.set_path_filter("/stall");
    proxy.set_fault(Fault::Stall(Duration::from_millis(100)), 1.0);
    raw(&proxy)
        .write_all(b"GET /_matrix/stall HTTP/1.1\r\n\r\n")
        .unwrap();
    wait_for("the stall to begin", || proxy.counts().1 == 1);
    // Leave before a truncated reply arrives.
    proxy.set_path_filter("/truncate");
    proxy.set_fault(Fault::Truncate, 1.0);
    raw(&proxy)
        .write_all(b"GET /_matrix/truncate HTTP/1.1\r\n\r\n")
        .unwrap();
    wait_for("the truncated request to reach the upstream", || {
        proxy.counts().1 == 2 && upstream.hits() == 1
    });
    std::thread::sleep(Duration::from_millis(200));

    proxy.clear();
    let reply = get(&proxy, "/_matrix/still/here");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["target"], "/_matrix/still/here");
}

#[test]
fn an_unreachable_upstream_gives_502_and_no_success() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let proxy = FaultProxy::start(&format!("http://127.0.0.1:{port}/"));
    let reply = get(&proxy, "/_matrix/client/versions");
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json()["errcode"], "M_UNKNOWN");
    assert_eq!(proxy.successes("/_matrix/"), 0);
    assert_eq!(proxy.counts(), (1, 0));
}

#[test]
fn an_upstream_url_with_a_path_prefixes_every_forwarded_path() {
    let upstream = start_upstream();
    let proxy = FaultProxy::start(&format!("{}/status/207/", upstream.url));
    let reply = get(&proxy, "/_matrix/client/versions?x=1");
    assert_eq!(reply.status, 207);
    assert_eq!(
        reply.json()["target"],
        "/status/207/_matrix/client/versions?x=1"
    );
}

#[test]
fn dropping_the_proxy_closes_its_port_and_ends_open_connections_and_stalls() {
    let (_upstream, proxy) = setup();
    let address = proxy.url.strip_prefix("http://").unwrap().to_owned();

    // An idle kept-alive connection.
    let mut idle = raw(&proxy);
    idle.write_all(b"GET /_matrix/a HTTP/1.1\r\n\r\n").unwrap();
    let mut idle_reader = BufReader::new(idle.try_clone().unwrap());
    assert_eq!(read_raw_response(&mut idle_reader).0, 200);

    // A connection in a long stall.
    proxy.set_fault(Fault::Stall(Duration::from_secs(60)), 1.0);
    let mut stalled = raw(&proxy);
    stalled
        .write_all(b"GET /_matrix/b HTTP/1.1\r\n\r\n")
        .unwrap();
    wait_for("the stall to begin", || proxy.counts().1 == 1);

    let started = Instant::now();
    drop(proxy);
    assert!(read_until_closed(&mut stalled).is_empty());
    let mut rest = Vec::new();
    let _ = idle_reader.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(TcpStream::connect(&address).is_err(), "still listening");
}
