//! Calls from the worker to a Durable Object: JSON in, JSON (or bytes) out, one round trip.

use serde::{de::DeserializeOwned, Serialize};
use worker::{Env, Headers, Method, Request, RequestInit, Result};

/// POSTs `body` to `path` on the object named `name` of `binding` and parses its JSON reply.
pub async fn call<T: DeserializeOwned>(
    env: &Env,
    binding: &str,
    name: &str,
    path: &str,
    body: &impl Serialize,
) -> Result<T> {
    call_with(env, binding, name, path, body, &[]).await
}

/// [`call`], with request headers (the room object learns its room from one).
pub async fn call_with<T: DeserializeOwned>(
    env: &Env,
    binding: &str,
    name: &str,
    path: &str,
    body: &impl Serialize,
    headers: &[(&str, &str)],
) -> Result<T> {
    let mut resp = send(env, binding, name, path, body, headers).await?;
    resp.json().await
}

/// POSTs `body` and returns the reply's bytes and its `x-version` header (a compiled index).
pub async fn call_raw(
    env: &Env,
    binding: &str,
    name: &str,
    path: &str,
    body: &impl Serialize,
) -> Result<(u64, Vec<u8>)> {
    let mut resp = send(env, binding, name, path, body, &[]).await?;
    let version = resp
        .headers()
        .get("x-version")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((version, resp.bytes().await?))
}

async fn send(
    env: &Env,
    binding: &str,
    name: &str,
    path: &str,
    body: &impl Serialize,
    headers: &[(&str, &str)],
) -> Result<worker::Response> {
    let stub = env
        .durable_object(binding)?
        .id_from_name(name)?
        .get_stub()?;
    let mut init = RequestInit::new();
    let h = Headers::new();
    for (k, v) in headers {
        h.set(k, v)?;
    }
    init.with_method(Method::Post)
        .with_headers(h)
        .with_body(Some(serde_json::to_string(body)?.into()));
    let req = Request::new_with_init(&format!("https://object.internal{path}"), &init)?;
    let mut resp = stub.fetch_with_request(req).await?;
    if resp.status_code() != 200 {
        let text = resp.text().await.unwrap_or_default();
        return Err(format!("{binding}{path} answered {}: {text}", resp.status_code()).into());
    }
    Ok(resp)
}
