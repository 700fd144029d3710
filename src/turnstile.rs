//! Cloudflare Turnstile's siteverify call, as data: the request Knock sends to check a
//! `cf-turnstile-response` token, and what the reply means.
//!
//! Decides: the request's method, URL and body, and the outcome of a reply. A missing token, an
//! invalid or spent one, a reply that is not Turnstile's JSON and a timeout all fail closed; only
//! `{"success": true}` lets a delivery through. Never does: IO (the edge sends the request with
//! its fetch transport; tests use a local stand-in at `TURNSTILE_VERIFY_URL`).

use serde_json::Value;

use crate::matrix::{HttpRequest, HttpResponse, Method, TransportError};

/// The form field the widget posts its token in.
pub const TOKEN_FIELD: &str = "cf-turnstile-response";

/// How long to wait for siteverify before failing closed.
pub const TIMEOUT_MS: u64 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Valid,
    /// Turnstile said no; its error codes say why (`invalid-input-response`,
    /// `timeout-or-duplicate`, ...).
    Invalid(Vec<String>),
    /// No answer could be had (timeout, network, a reply that is not Turnstile's).
    Unavailable,
}

/// `POST <verify_url>` with the form body `secret`, `response`, and `remoteip` when known.
pub fn siteverify(
    verify_url: &str,
    secret: &str,
    token: &str,
    remote_ip: Option<&str>,
) -> HttpRequest {
    let mut body = form_urlencoded::Serializer::new(String::new());
    body.append_pair("secret", secret)
        .append_pair("response", token);
    if let Some(ip) = remote_ip {
        body.append_pair("remoteip", ip);
    }
    HttpRequest {
        method: Method::Post,
        url: verify_url.to_owned(),
        headers: vec![(
            "Content-Type",
            "application/x-www-form-urlencoded".to_owned(),
        )],
        body: Some(body.finish()),
    }
}

/// What a siteverify reply means.
pub fn outcome(reply: Result<HttpResponse, TransportError>) -> Outcome {
    let Ok(resp) = reply else {
        return Outcome::Unavailable;
    };
    if !(200..300).contains(&resp.status) {
        return Outcome::Unavailable;
    }
    let Ok(body) = serde_json::from_str::<Value>(&resp.body) else {
        return Outcome::Unavailable;
    };
    match body.get("success").and_then(Value::as_bool) {
        Some(true) => Outcome::Valid,
        Some(false) => Outcome::Invalid(
            body.get("error-codes")
                .and_then(Value::as_array)
                .map(|codes| {
                    codes
                        .iter()
                        .filter_map(Value::as_str)
                        .take(5)
                        .map(|c| c.chars().take(60).collect())
                        .collect()
                })
                .unwrap_or_default(),
        ),
        None => Outcome::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Result<HttpResponse, TransportError> {
        Ok(HttpResponse {
            status,
            retry_after: None,
            body: body.into(),
        })
    }

    #[test]
    fn the_check_is_a_form_post_with_the_secret_the_token_and_the_address() {
        let r = siteverify(
            "http://127.0.0.1:9/siteverify",
            "s3cret",
            "tok en",
            Some("192.0.2.1"),
        );
        assert_eq!(r.method, Method::Post);
        assert_eq!(r.url, "http://127.0.0.1:9/siteverify");
        assert_eq!(
            r.body.as_deref(),
            Some("secret=s3cret&response=tok+en&remoteip=192.0.2.1")
        );
        assert!(r
            .headers
            .contains(&("Content-Type", "application/x-www-form-urlencoded".into())));
        assert_eq!(
            siteverify("u", "s", "t", None).body.as_deref(),
            Some("secret=s&response=t")
        );
    }

    #[test]
    fn only_an_explicit_success_lets_a_delivery_through() {
        assert_eq!(outcome(reply(200, r#"{"success":true}"#)), Outcome::Valid);
        assert_eq!(
            outcome(reply(
                200,
                r#"{"success":false,"error-codes":["timeout-or-duplicate"]}"#
            )),
            Outcome::Invalid(vec!["timeout-or-duplicate".into()])
        );
        for unusable in [
            reply(200, "<html>"),
            reply(200, r#"{"succes":true}"#),
            reply(200, r#"{"success":"true"}"#),
            reply(500, r#"{"success":true}"#),
            Err(TransportError::Timeout),
            Err(TransportError::Network("reset".into())),
        ] {
            assert_eq!(outcome(unusable), Outcome::Unavailable);
        }
    }
}
