//! [`Transport`] over `worker::Fetch`, with a timeout.

use std::time::Duration;

use futures_util::future::{select, Either};
use wasm_bindgen::JsValue;
use worker::{Delay, Fetch, Headers, Method as WMethod, Request, RequestInit};

use crate::matrix::{HttpRequest, HttpResponse, Method, Transport, TransportError};

pub struct FetchTransport {
    pub timeout_ms: u64,
}

impl Transport for FetchTransport {
    async fn send(&self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
        let net = |e: worker::Error| TransportError::Network(e.to_string());
        let headers = Headers::new();
        for (k, v) in &req.headers {
            headers.set(k, v).map_err(net)?;
        }
        let mut init = RequestInit::new();
        init.with_method(match req.method {
            Method::Get => WMethod::Get,
            Method::Post => WMethod::Post,
            Method::Put => WMethod::Put,
        })
        .with_headers(headers);
        if let Some(body) = &req.body {
            init.with_body(Some(JsValue::from_str(body)));
        }
        let request = Request::new_with_init(&req.url, &init).map_err(net)?;
        let call = async move {
            let mut resp = Fetch::Request(request).send().await.map_err(net)?;
            let retry_after = resp.headers().get("retry-after").ok().flatten();
            let status = resp.status_code();
            // A body cut off mid-way surfaces here as an error, or as truncated text that
            // `classify` refuses to trust.
            let body = resp.text().await.map_err(net)?;
            Ok(HttpResponse {
                status,
                retry_after,
                body,
            })
        };
        let timeout = Delay::from(Duration::from_millis(self.timeout_ms));
        match select(Box::pin(call), Box::pin(timeout)).await {
            Either::Left((result, _)) => result,
            Either::Right(_) => Err(TransportError::Timeout),
        }
    }
}
