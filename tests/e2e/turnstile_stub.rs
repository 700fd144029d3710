//! A local stand-in for Cloudflare Turnstile's siteverify, for end-to-end tests (Knock never
//! reaches the internet in tests). It answers by the token it is sent:
//! `pass` → `{"success": true}`; `fail` → `{"success": false, "error-codes":
//! ["invalid-input-response"]}`; `slow` → nothing for 8 s (longer than Knock waits);
//! `garbage` → a reply that is not Turnstile's JSON. Every request's form body is recorded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct TurnstileStub {
    pub url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl TurnstileStub {
    pub fn start() -> TurnstileStub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stand-in");
        let url = format!(
            "http://{}/turnstile/v0/siteverify",
            listener.local_addr().expect("address")
        );
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || serve(stream, &log));
            }
        });
        TurnstileStub { url, seen }
    }

    /// The form bodies siteverify was sent, oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

fn serve(stream: TcpStream, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length.min(1 << 16)];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    let token = form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "response")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if let Ok(mut v) = log.lock() {
        v.push(body);
    }
    let reply = match token.as_str() {
        "pass" => r#"{"success":true,"error-codes":[],"hostname":"localhost"}"#.to_owned(),
        "slow" => {
            std::thread::sleep(Duration::from_secs(8));
            r#"{"success":true}"#.to_owned()
        }
        "garbage" => "<html>Bad gateway</html>".to_owned(),
        _ => r#"{"success":false,"error-codes":["invalid-input-response"]}"#.to_owned(),
    };
    let mut out = stream;
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
}
