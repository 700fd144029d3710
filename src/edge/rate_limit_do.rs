//! The rate limiter's Durable Object: one instance per limited key (today, a client address).
//!
//! It loads the key's state, calls [`rate_limit::decide`] and stores the result; an alarm
//! deletes the state once the key has been idle long enough that it no longer matters.

use std::cell::RefCell;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use super::{now_ms, stub, LIMITS_BINDING};
use crate::domain::rate_limit::{self, LimiterState, Quota, Verdict};

#[derive(Serialize, Deserialize)]
pub struct Check {
    pub quota: Quota,
    /// Only ask: count nothing (the moderator page's sign-in, before it looks at a key).
    #[serde(default)]
    pub peek: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy)]
pub struct Answer {
    pub allow: bool,
    pub retry_after_ms: u64,
}

impl From<Verdict> for Answer {
    fn from(v: Verdict) -> Answer {
        match v {
            Verdict::Allow { .. } => Answer {
                allow: true,
                retry_after_ms: 0,
            },
            Verdict::Deny { retry_after_ms } => Answer {
                allow: false,
                retry_after_ms,
            },
        }
    }
}

thread_local! {
    /// Denials this isolate already knows about: key → the instant the client may come back.
    /// While one holds, the knock is refused without a round trip.
    static DENIED: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
}

/// Most keys remembered per isolate; past this the memory is simply cleared.
const MAX_REMEMBERED: usize = 10_000;

thread_local! {
    /// Keys whose limiter was last told of a violation, and when.
    static REPORTED: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
}

/// At most one violation report per key in this long: a client hammering while refused costs
/// one limiter round trip a second, not one a request, and its lock-out still doubles.
const REPORT_EVERY_MS: u64 = 1_000;

/// Tells the key's limiter, in the background, that the client knocked again while refused, so
/// its lock-out still doubles although this isolate answered alone.
pub fn report_violation(env: &Env, ctx: &worker::Context, key: &str, quota: Quota) {
    let now = now_ms();
    let due = REPORTED.with(|r| {
        let mut r = r.borrow_mut();
        if r.get(key)
            .is_some_and(|at| now.saturating_sub(*at) < REPORT_EVERY_MS)
        {
            return false;
        }
        if r.len() >= MAX_REMEMBERED {
            r.clear();
        }
        r.insert(key.to_owned(), now);
        true
    });
    if !due {
        return;
    }
    let env = env.clone();
    let key = key.to_owned();
    ctx.wait_until(async move {
        let _ = check(&env, &key, quota).await;
    });
}

/// Whether the key's limiter would deny now, without counting anything. One round trip.
pub async fn peek(env: &Env, key: &str, quota: Quota) -> Result<Answer> {
    stub::call(
        env,
        LIMITS_BINDING,
        key,
        "/check",
        &Check { quota, peek: true },
    )
    .await
}

/// A denial this isolate already knows about, if it still holds.
pub fn known_denial(key: &str, now: u64) -> Option<u64> {
    DENIED.with(|d| {
        d.borrow()
            .get(key)
            .filter(|until| **until > now)
            .map(|until| until - now)
    })
}

/// Asks the key's limiter. One round trip.
pub async fn check(env: &Env, key: &str, quota: Quota) -> Result<Answer> {
    let check = Check { quota, peek: false };
    let answer: Answer = stub::call(env, LIMITS_BINDING, key, "/check", &check).await?;
    let now = now_ms();
    DENIED.with(|d| {
        let mut d = d.borrow_mut();
        if answer.allow {
            d.remove(key);
        } else {
            if d.len() >= MAX_REMEMBERED {
                d.clear();
            }
            d.insert(key.to_owned(), now + answer.retry_after_ms);
        }
    });
    Ok(answer)
}

#[durable_object]
pub struct LimiterDo {
    state: State,
    #[allow(dead_code)]
    env: Env,
    /// This instance knows a clean-up alarm is pending (it set or saw one, and no alarm has run
    /// since), so it need not ask storage again.
    alarm_pending: std::cell::Cell<bool>,
}

impl DurableObject for LimiterDo {
    fn new(state: State, env: Env) -> Self {
        LimiterDo {
            state,
            env,
            alarm_pending: std::cell::Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let Check { quota, peek } = req.json().await?;
        let storage = self.state.storage();
        if peek {
            let stored: Option<(LimiterState, u64)> = storage.get("state").await?;
            let (state, _) = stored.unwrap_or_default();
            return Response::from_json(&Answer::from(rate_limit::peek(&state, now_ms(), &quota)));
        }
        // Storage calls hold the object's input gate, so this read-decide-write is atomic.
        let stored: Option<(LimiterState, u64)> = storage.get("state").await?;
        let fresh = stored.is_none();
        let (state, _) = stored.unwrap_or_default();
        let now = now_ms();
        let (verdict, next) = rate_limit::decide(&state, now, &quota);
        let idle_after = quota.window_ms.max(quota.max_lockout_ms);
        storage.put("state", &(next, idle_after)).await?;
        // One clean-up alarm at a time; it checks for idleness when it fires. A key with no
        // state has none worth keeping (the alarm that cleared it is spent), so only a known key
        // asks storage; setting one over a leftover is harmless, since it re-checks idleness.
        if !self.alarm_pending.get() {
            if fresh || storage.get_alarm().await?.is_none() {
                storage
                    .set_alarm(std::time::Duration::from_millis(idle_after))
                    .await?;
            }
            self.alarm_pending.set(true);
        }
        Response::from_json(&Answer::from(verdict))
    }

    async fn alarm(&self) -> Result<Response> {
        // The alarm that woke this is spent; a new one is known only once it is set.
        self.alarm_pending.set(false);
        let storage = self.state.storage();
        let Some((state, idle_after)) = storage.get::<(LimiterState, u64)>("state").await? else {
            return Response::ok("empty");
        };
        let quiet_for = now_ms().saturating_sub(state.last_seen());
        if quiet_for >= idle_after {
            // Idle for longer than any window or lock-out: nothing left worth keeping.
            storage.delete_all().await?;
            Response::ok("cleared")
        } else {
            storage
                .set_alarm(std::time::Duration::from_millis(idle_after - quiet_for))
                .await?;
            self.alarm_pending.set(true);
            Response::ok("still in use")
        }
    }
}
