//! Small reply helpers and the bounded body reader.

use futures_util::StreamExt;
use serde_json::json;
use worker::{Request, Response, Result};

use crate::domain::moderation::notices::escape;

pub fn json(status: u16, value: &serde_json::Value) -> Result<Response> {
    Ok(Response::from_json(value)?.with_status(status))
}

pub fn json_error(status: u16, message: &str) -> Result<Response> {
    json(status, &json!({ "error": message }))
}

pub enum Body {
    Read(Vec<u8>),
    TooLarge,
}

/// Reads at most `limit` bytes. A declared or actual size over the limit stops reading at once,
/// so a 10 MB upload costs no more than the limit.
pub async fn read_limited(req: &mut Request, limit: usize) -> Result<Body> {
    if let Some(len) = req.headers().get("content-length")? {
        if len.trim().parse::<u64>().is_ok_and(|n| n > limit as u64) {
            return Ok(Body::TooLarge);
        }
    }
    let mut stream = match req.stream() {
        Ok(s) => s,
        // No body at all.
        Err(_) => return Ok(Body::Read(Vec::new())),
    };
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if buf.len() + chunk.len() > limit {
            return Ok(Body::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Body::Read(buf))
}

/// A small page for people who submitted a plain HTML form.
pub fn page(status: u16, title: &str, message: &str) -> Result<Response> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{t}</title><style>body{{font-family:system-ui,sans-serif;max-width:32rem;\
         margin:4rem auto;padding:0 1rem;line-height:1.5}}</style></head>\
         <body><h1>{t}</h1><p>{m}</p></body></html>",
        t = escape(title),
        m = escape(message)
    );
    Ok(Response::from_html(html)?.with_status(status))
}
