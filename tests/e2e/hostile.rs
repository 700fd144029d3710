//! Hostile requests against the running worker: each gets a defined 4xx, nothing panics, and
//! the worker keeps serving afterwards.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::json;

use crate::support::{synapse, Reply, Worker};

fn worker() -> &'static Worker {
    static W: OnceLock<Worker> = OnceLock::new();
    W.get_or_init(|| Worker::start(&Worker::base_vars(synapse())))
}

fn post(content_type: &str, body: &[u8]) -> Reply {
    worker().post("/invite_from_form", &[("Content-Type", content_type)], body)
}

/// Sends raw bytes on a fresh connection and returns the status code of the reply (0 if the
/// connection was dropped without one).
/// Sends a request by hand; the reply's status (0 when nothing was read) and body.
fn raw(request_head: &str, body_chunks: &[&[u8]]) -> (u16, String) {
    let addr = worker().url.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    // Read while writing: the server may answer and close before the body is all sent, and a
    // reset would then swallow a reply read only afterwards.
    let mut reader = s.try_clone().expect("clone");
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = answered.clone();
    let replies = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = reader.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        buf
    });
    let _ = s.write_all(request_head.as_bytes());
    // Like a real client: send in pieces, and stop once the server has answered (a server that
    // refuses early closes with the rest unread, and the reset can discard an unread reply).
    'send: for c in body_chunks {
        for piece in c.chunks(64 * 1024) {
            if answered.load(std::sync::atomic::Ordering::SeqCst) || s.write_all(piece).is_err() {
                break 'send;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let buf = replies.join().expect("reader");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

/// Whether a reply came from Knock: every answer Knock gives a program is JSON (its own
/// failures are a 503 with an `error`), so a 500 without one is the local proxy in front of
/// workerd failing to pass the reply on, which the test treats like a reset.
fn from_knock(reply: &(u16, String)) -> bool {
    reply.0 != 0 && (reply.0 != 500 || reply.1.contains("\"error\""))
}

#[test]
fn hostile_requests_get_defined_4xx_answers_and_the_worker_keeps_serving() {
    let long_id = format!("@{}:localhost", "a".repeat(10_000));
    let bomb = format!(
        "{{\"matrix_id\":{}1{}}}",
        "[".repeat(30_000),
        "]".repeat(30_000)
    );
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        (
            "nested-JSON bomb",
            "application/json",
            bomb.into_bytes(),
            400,
        ),
        (
            "invalid UTF-8",
            "application/json",
            b"{\"matrix_id\":\"@a\xff\xfe:localhost\"}".to_vec(),
            400,
        ),
        (
            "invalid UTF-8 in a form",
            "application/x-www-form-urlencoded",
            b"matrix_id=%40a\xff".to_vec(),
            400,
        ),
        (
            "a 10,000-character Matrix ID",
            "application/json",
            json!({"matrix_id": long_id}).to_string().into_bytes(),
            400,
        ),
        (
            "control characters",
            "application/json",
            b"{\"matrix_id\":\"@a\\u0000b\\u0007:localhost\"}".to_vec(),
            400,
        ),
        (
            "duplicate keys, the last invalid",
            "application/json",
            br#"{"matrix_id":"@ok:localhost","matrix_id":"no id"}"#.to_vec(),
            400,
        ),
        (
            "a wrong Content-Type",
            "text/xml",
            b"<knock>@a:localhost</knock>".to_vec(),
            415,
        ),
        (
            "a broken multipart body",
            "multipart/form-data; boundary=x",
            b"--x\r\n".to_vec(),
            400,
        ),
        (
            "multipart without a boundary",
            "multipart/form-data",
            b"--x\r\n".to_vec(),
            400,
        ),
        (
            "header injection in a form value",
            "application/x-www-form-urlencoded",
            b"matrix_id=%40a%3Alocalhost%0D%0AX-Injected%3A%201".to_vec(),
            400,
        ),
        ("a JSON array", "application/json", b"[1,2,3]".to_vec(), 400),
        ("an empty body", "application/json", b"".to_vec(), 400),
    ];
    for (name, ct, body, want) in &cases {
        let r = post(ct, body);
        assert_eq!(r.status, *want, "{name}: {}", r.body);
        // Programs get JSON (these requests carry no browser headers, whatever their content
        // type); the page for people is tested in form_flow.
        let clear = r.json()["error"].is_string();
        assert!(clear, "{name}: a clear error: {}", r.body);
        assert!(!r.headers.contains_key("x-injected"), "{name}");
    }

    // 10 MB with an honest Content-Length: refused before it is read.
    let big = vec![b'x'; 10 * 1024 * 1024];
    let r = post("application/json", &big);
    assert_eq!(r.status, 413);

    // 10 MB sent chunked, with no Content-Length at all.
    let head =
        "POST /invite_from_form HTTP/1.1\r\nHost: knock\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, "x".repeat(1 << 20));
    let chunks: Vec<&[u8]> = std::iter::repeat_n(chunk.as_bytes(), 10)
        .chain([&b"0\r\n\r\n"[..]])
        .collect();
    // A reset can still discard the reply on a busy machine (status 0: nothing was read), and
    // wrangler's local proxy can answer 500 itself when workerd refuses before the body is all
    // sent; only then is the request sent again. Any answer Knock gave must be the 413.
    let mut tries = Vec::new();
    for _ in 0..3 {
        let reply = raw(head, &chunks);
        let done = from_knock(&reply);
        tries.push(reply);
        if done {
            break;
        }
    }
    let last = tries.last().expect("one try");
    assert_eq!(last.0, 413, "chunked 10 MB, every try: {tries:?}");

    // A false Content-Length: it claims 50 bytes and sends 10 MB. Only the declared bytes are
    // the request; they are not a valid payload, and the rest is never read as one.
    let head =
        "POST /invite_from_form HTTP/1.1\r\nHost: knock\r\nContent-Type: application/json\r\n\
                Content-Length: 50\r\nConnection: close\r\n\r\n";
    let (status, body) = raw(head, &[&big]);
    assert!(
        (400..500).contains(&status),
        "false Content-Length got {status}: {body}"
    );

    // Still serving, and nothing panicked.
    let r = worker().get("/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "running");
    let log = worker().log();
    assert!(
        !log.to_lowercase().contains("panicked"),
        "a panic in the log"
    );
}
