//! Structured logs: one JSON object per line, readable in `wrangler tail`. Callers pass only
//! values that are safe to show: never a token, a secret or the room ID.

use serde_json::{Map, Value};
use worker::Request;

pub struct Logger {
    request_id: String,
}

impl Logger {
    pub fn for_request(req: &Request) -> Logger {
        let request_id = req
            .headers()
            .get("cf-ray")
            .ok()
            .flatten()
            .unwrap_or_else(random_id);
        Logger { request_id }
    }

    pub fn background(task: &str) -> Logger {
        Logger {
            request_id: format!("{task}-{}", random_id()),
        }
    }

    pub fn event(&self, event: &str, fields: &[(&str, Value)]) {
        let mut line = Map::new();
        line.insert("event".into(), event.into());
        line.insert("request_id".into(), self.request_id.clone().into());
        for (k, v) in fields {
            line.insert((*k).into(), v.clone());
        }
        worker::console_log!("{}", Value::Object(line));
    }
}

pub fn random_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return format!("{:x}", super::now_ms());
    }
    hex::encode(bytes)
}
