//! Rate limiting and flood protection: how often one client may knock, when a room is flooded
//! with knocks, and how Knock paces its own calls to a homeserver.
//!
//! Decides: whether one request for one key (a client address, a requested Matrix ID) is
//! admitted and, if not, how long the client must wait; whether a room is in a join wave, so that
//! knocks are held for a moderator instead of being auto-invited; when the next outbound Matrix
//! call for a room may start.
//! Never does: storage, IO, sleeping or reading the clock. Time comes in as `now`, in unix
//! milliseconds. A Durable Object loads one state per key as a JSON row, calls a function here
//! and stores the state it gets back.
//!
//! Windows are half-open: an event at `t` lies in the window of length `w` ending at `now` when
//! `now - w < t <= now`, so two events share a window exactly when they are less than `w` apart.
//!
//! Clocks that go backwards: [`LimiterState`] and [`WaveState`] remember the latest `now` they
//! have seen. A call with an earlier `now` first moves every stored instant back by the
//! difference, as if the new clock had been the clock all along. Waits already promised keep
//! their length, nothing underflows, and a jump never lengthens a wait.

use serde::{Deserialize, Serialize};

// Why a sliding log. The promise is exact: no window of `window_ms` admits more than `max`
// requests. GCRA (a token bucket holding `max` tokens, refilled at `max / window_ms`) breaks it: a
// burst of `max` at `t` followed by one request every `window_ms / max` admits `2 * max - 1`
// requests within `[t, t + window_ms)`. A two-bucket sliding-window counter estimates the previous
// bucket's share, so it either over-admits or, made conservative, turns away clients within quota.
// A log of admitted instants is exact by construction and only the newest `max` of them matter: a
// request is admitted when fewer than `max` logged instants lie in its window, and a full window
// frees its next slot when its oldest instant leaves it. The log costs about 14 bytes of JSON per
// slot: nothing for Knock's quotas (a handful per minute), but a `max` near 10 000 would approach
// the 128 KiB value limit of Durable Object key-value storage.

/// At most `max` admitted requests in any `window_ms`, and the lock-out for clients that ignore
/// the wait they were given. See [`decide`] for the exact rules.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Requests admitted per window. Zero denies every request.
    pub max: u32,
    pub window_ms: u64,
    /// Lock-out for the first violation; each further one doubles it.
    pub base_lockout_ms: u64,
    /// The longest lock-out, however many violations.
    pub max_lockout_ms: u64,
}

/// One key's limiter state, stored as one JSON row. `{}` (or [`Default`]) is a key never seen.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(default)]
pub struct LimiterState {
    /// Admitted instants still inside the window, oldest first; never more than `max`.
    admitted: Vec<u64>,
    strikes: u32,
    /// The instant the latest denial told the client to come back.
    retry_at: u64,
    /// Where the current run of clean windows began; only meaningful while `strikes > 0`.
    calm_since: u64,
    last_seen: u64,
}

impl LimiterState {
    /// Violations not yet forgiven.
    /// The latest instant this key was seen (0 for a key never seen).
    pub fn last_seen(&self) -> u64 {
        self.last_seen
    }

    pub fn strikes(&self) -> u32 {
        self.strikes
    }

    /// How many admitted instants the state holds (at most the quota's `max`).
    pub fn logged(&self) -> usize {
        self.admitted.len()
    }

    fn rebase(&mut self, now: u64) {
        let seen = self
            .last_seen
            .max(self.admitted.last().copied().unwrap_or(0));
        if now < seen {
            let back = seen - now;
            for t in &mut self.admitted {
                *t = t.saturating_sub(back);
            }
            self.retry_at = self.retry_at.saturating_sub(back);
            self.calm_since = self.calm_since.saturating_sub(back);
        }
        self.last_seen = now;
    }

    fn forget_expired(&mut self, now: u64, quota: &Quota) {
        self.admitted
            .retain(|&t| now.saturating_sub(t) < quota.window_ms);
        let max = quota.max as usize;
        if self.admitted.len() > max {
            let surplus = self.admitted.len() - max;
            self.admitted.drain(..surplus);
        }
    }

    fn forgive(&mut self, now: u64, window_ms: u64) {
        if self.strikes == 0 || now < self.calm_since {
            return;
        }
        if window_ms == 0 {
            self.strikes = 0;
            return;
        }
        let clean = (now - self.calm_since) / window_ms;
        self.strikes = u32::try_from(u64::from(self.strikes).saturating_sub(clean)).unwrap_or(0);
        self.calm_since += clean * window_ms;
    }

    /// `None` when a slot is free at `now`, else the instant the next one frees.
    fn slot_free_at(&self, now: u64, quota: &Quota) -> Option<u64> {
        if quota.max == 0 {
            return Some(now.saturating_add(quota.window_ms.max(1)));
        }
        if self.admitted.len() < quota.max as usize {
            return None;
        }
        self.admitted
            .first()
            .map(|oldest| oldest.saturating_add(quota.window_ms))
    }
}

/// The answer to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted; `remaining` more would be admitted right now.
    Allow { remaining: u32 },
    /// Refused; a request made `retry_after_ms` from now, and none before, is admitted.
    Deny { retry_after_ms: u64 },
}

impl Verdict {
    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow { .. })
    }
}

/// Strikes beyond this could not double the lock-out any further in a `u64`.
const MAX_STRIKES: u32 = 64;

fn lockout_ms(strikes: u32, quota: &Quota) -> u64 {
    if strikes == 0 {
        return 0;
    }
    let factor = 1u64.checked_shl(strikes - 1).unwrap_or(u64::MAX);
    quota
        .base_lockout_ms
        .saturating_mul(factor)
        .min(quota.max_lockout_ms)
}

/// The strike count at which the lock-out reaches `max_lockout_ms`; strikes stop there, so that
/// forgiveness starts working on the first clean window after the worst lock-out.
fn strike_cap(quota: &Quota) -> u32 {
    (1..=MAX_STRIKES)
        .find(|&k| lockout_ms(k, quota) >= quota.max_lockout_ms)
        .unwrap_or(MAX_STRIKES)
}

/// Decides one request for one key at `now`, returning the verdict and the state to store.
///
/// The rules, in order:
/// 1. Decay: each whole `window_ms` that passes without a violation, counted from the end of the
///    last violation's wait, forgives one strike (and so halves the next lock-out).
/// 2. A request that arrives before the instant the latest denial named is a violation. It adds a
///    strike (up to the count where the lock-out reaches its cap) and is denied until the latest
///    of: the previous wait's end, a slot freeing, and `now + base_lockout_ms * 2^(strikes - 1)`
///    with that lock-out capped at `max_lockout_ms`. So a client that hammers while denied waits
///    `base`, `2 * base`, `4 * base`, ... up to `max_lockout_ms`.
/// 3. Otherwise, a request that finds `max` admitted requests in its window is denied until the
///    oldest of them leaves the window. This plain denial is not a violation.
/// 4. Otherwise it is admitted and logged.
///
/// Denied requests never enter the log, so a client that honours its wait is admitted.
pub fn decide(state: &LimiterState, now: u64, quota: &Quota) -> (Verdict, LimiterState) {
    let mut next = state.clone();
    next.rebase(now);
    next.forget_expired(now, quota);
    next.forgive(now, quota.window_ms);
    let slot_free_at = next.slot_free_at(now, quota);

    if now < next.retry_at {
        next.strikes = next.strikes.saturating_add(1).min(strike_cap(quota));
        let lockout_end = now.saturating_add(lockout_ms(next.strikes, quota));
        next.retry_at = next
            .retry_at
            .max(lockout_end)
            .max(slot_free_at.unwrap_or(now));
        next.calm_since = next.retry_at;
        return (deny_until(next.retry_at, now), next);
    }

    match slot_free_at {
        Some(at) => {
            next.retry_at = at;
            (deny_until(at, now), next)
        }
        None => {
            next.admitted.push(now);
            let logged = u32::try_from(next.admitted.len()).unwrap_or(u32::MAX);
            let remaining = quota.max.saturating_sub(logged);
            (Verdict::Allow { remaining }, next)
        }
    }
}

/// What [`decide`] would answer now, without counting a request or a violation: a client that
/// is locked out, or whose window is full, is denied. The moderator page's sign-in asks this
/// before it looks at a key, and counts only the failures (with [`decide`]).
pub fn peek(state: &LimiterState, now: u64, quota: &Quota) -> Verdict {
    let mut next = state.clone();
    next.rebase(now);
    next.forget_expired(now, quota);
    next.forgive(now, quota.window_ms);
    if now < next.retry_at {
        return deny_until(next.retry_at, now);
    }
    match next.slot_free_at(now, quota) {
        Some(at) => deny_until(at, now),
        None => {
            let logged = u32::try_from(next.admitted.len()).unwrap_or(u32::MAX);
            Verdict::Allow {
                remaining: quota.max.saturating_sub(logged),
            }
        }
    }
}

fn deny_until(at: u64, now: u64) -> Verdict {
    Verdict::Deny {
        retry_after_ms: at.saturating_sub(now).max(1),
    }
}

/// A wait in whole seconds for a `Retry-After` header: rounded up, never zero.
/// The limiter key of a client address. An IPv6 client usually holds a whole /64, so it is keyed
/// by that prefix (any address in it is the same client); IPv4 by the full address. Text that is
/// no address at all is kept as it is, shortened.
pub fn address_key(address: &str) -> String {
    let a = address.trim();
    match a.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => format!("ip:{v4}"),
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = v6.segments();
                format!("ip6:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Err(_) => format!("ip:{}", a.chars().take(64).collect::<String>()),
    }
}

pub fn retry_after_secs(retry_after_ms: u64) -> u64 {
    retry_after_ms.div_ceil(1000).max(1)
}

/// When a room is in a join wave: more than `max_knocks` knocks within `window_ms`. The wave lasts
/// until no knock has arrived for `quiet_ms`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaveConfig {
    pub max_knocks: u32,
    pub window_ms: u64,
    pub quiet_ms: u64,
}

impl WaveConfig {
    /// A wave that ends after a quiet period as long as its window.
    pub fn new(max_knocks: u32, window_ms: u64) -> WaveConfig {
        WaveConfig {
            max_knocks,
            window_ms,
            quiet_ms: window_ms,
        }
    }
}

/// One room's join-wave state, stored as one JSON row. `{}` (or [`Default`]) is a quiet room.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(default)]
pub struct WaveState {
    /// The newest knocks inside the window, oldest first; never more than `max_knocks + 1`.
    recent: Vec<u64>,
    started_at: Option<u64>,
    last_knock: u64,
}

impl WaveState {
    /// When the current (or most recent) wave began, if the room has had one since it was last
    /// judged normal.
    pub fn started_at(&self) -> Option<u64> {
        self.started_at
    }

    /// How many knock instants the state holds (at most `max_knocks + 1`).
    pub fn logged(&self) -> usize {
        self.recent.len()
    }

    fn rebase(&mut self, now: u64) {
        let seen = self
            .last_knock
            .max(self.recent.last().copied().unwrap_or(0));
        if now < seen {
            let back = seen - now;
            for t in &mut self.recent {
                *t = t.saturating_sub(back);
            }
            self.started_at = self.started_at.map(|t| t.saturating_sub(back));
            self.last_knock = now;
        }
    }
}

/// What to do with one knock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaveVerdict {
    /// No wave: the knock may be auto-invited.
    Normal,
    /// A wave is on, or this knock started one: hold the knock for a moderator.
    Hold,
}

/// Whether the room is in a join wave at `now`: a wave started and no knock has arrived for
/// `quiet_ms` since.
pub fn wave_active(state: &WaveState, now: u64, cfg: &WaveConfig) -> bool {
    state.started_at.is_some() && now.saturating_sub(state.last_knock) < cfg.quiet_ms
}

/// Records one knock at `now` and decides it. A knock is held while a wave is active, and when it
/// is knock number `max_knocks + 1` or more within the trailing `window_ms` (itself included),
/// which starts a wave. Held knocks count, so a flood that keeps coming keeps the wave going.
pub fn record_knock(state: &WaveState, now: u64, cfg: &WaveConfig) -> (WaveVerdict, WaveState) {
    let mut next = state.clone();
    next.rebase(now);
    let ongoing = wave_active(&next, now, cfg);

    next.recent
        .retain(|&t| now.saturating_sub(t) < cfg.window_ms);
    next.recent.push(now);
    let keep = (cfg.max_knocks as usize).saturating_add(1);
    if next.recent.len() > keep {
        let surplus = next.recent.len() - keep;
        next.recent.drain(..surplus);
    }
    next.last_knock = now;

    if !ongoing {
        let flooded = next.recent.len() > cfg.max_knocks as usize;
        next.started_at = flooded.then_some(now);
    }
    let verdict = if next.started_at.is_some() {
        WaveVerdict::Hold
    } else {
        WaveVerdict::Normal
    };
    (verdict, next)
}

/// Paces outbound Matrix calls for one room: the earliest instant the next call may start.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(default)]
pub struct Pacer {
    pub next_free_at: u64,
}

/// Reserves the next start for a call wanted at `now`, keeping calls at least `request_delay_ms`
/// apart. Returns when the call may start (never before `now`) and the pacer to store.
pub fn pace(p: &Pacer, now: u64, request_delay_ms: u64) -> (u64, Pacer) {
    let start = p.next_free_at.max(now);
    let next = Pacer {
        next_free_at: start.saturating_add(request_delay_ms),
    };
    (start, next)
}

/// A homeserver 429 pauses the room: no call starts before `now + retry_after_ms`. A pause never
/// shortens one already in force.
pub fn pause_for(p: &Pacer, now: u64, retry_after_ms: u64) -> Pacer {
    Pacer {
        next_free_at: p.next_free_at.max(now.saturating_add(retry_after_ms)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn peeking_counts_nothing_and_sees_a_lockout() {
        let quota = Quota {
            max: 2,
            window_ms: 1_000,
            base_lockout_ms: 5_000,
            max_lockout_ms: 60_000,
        };
        let fresh = LimiterState::default();
        assert!(matches!(
            peek(&fresh, 10, &quota),
            Verdict::Allow { remaining: 2 }
        ));
        // Two failures fill the window; peeking neither adds one nor a strike.
        let (_, one) = decide(&fresh, 10, &quota);
        let (_, two) = decide(&one, 20, &quota);
        assert!(matches!(peek(&two, 30, &quota), Verdict::Deny { .. }));
        assert_eq!(peek(&two, 30, &quota), peek(&two, 30, &quota));
        // The window passes: allowed again.
        assert!(matches!(peek(&two, 1_100, &quota), Verdict::Allow { .. }));
        // A violation's lock-out outlives the window.
        let (_, denied) = decide(&two, 30, &quota);
        let (_, locked) = decide(&denied, 40, &quota);
        assert!(matches!(peek(&locked, 1_100, &quota), Verdict::Deny { .. }));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_slash_64_and_ipv4_by_the_address() {
        use super::address_key;
        assert_eq!(address_key("192.0.2.7"), "ip:192.0.2.7");
        assert_eq!(
            address_key("2001:db8:1:2:aaaa::1"),
            address_key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_eq!(address_key("2001:db8:1:2::1"), "ip6:2001:db8:1:2::/64");
        assert_ne!(
            address_key("2001:db8:1:2::1"),
            address_key("2001:db8:1:3::1")
        );
        assert_eq!(address_key("::ffff:192.0.2.7"), "ip:192.0.2.7");
        assert_eq!(address_key(" unknown "), "ip:unknown");
    }

    use super::*;
    use proptest::prelude::*;

    const MINUTE: u64 = 60_000;

    fn five_a_minute() -> Quota {
        Quota {
            max: 5,
            window_ms: MINUTE,
            base_lockout_ms: 10_000,
            max_lockout_ms: 80_000,
        }
    }

    /// One per second, so that lock-outs dwarf the window.
    fn one_a_second() -> Quota {
        Quota {
            max: 1,
            window_ms: 1_000,
            base_lockout_ms: 10_000,
            max_lockout_ms: 80_000,
        }
    }

    fn retry_after(v: Verdict) -> u64 {
        match v {
            Verdict::Deny { retry_after_ms } => retry_after_ms,
            Verdict::Allow { .. } => panic!("expected a denial, got {v:?}"),
        }
    }

    fn run(state: &mut LimiterState, now: u64, quota: &Quota) -> Verdict {
        let (v, next) = decide(state, now, quota);
        *state = next;
        v
    }

    fn knock(state: &mut WaveState, now: u64, cfg: &WaveConfig) -> WaveVerdict {
        let (v, next) = record_knock(state, now, cfg);
        *state = next;
        v
    }

    #[test]
    fn the_sixth_request_in_a_window_is_denied_with_a_positive_wait() {
        let q = five_a_minute();
        let mut s = LimiterState::default();
        for (i, now) in (0..5u64).map(|i| i * 1_000).enumerate() {
            let remaining = 4 - i as u32;
            assert_eq!(run(&mut s, now, &q), Verdict::Allow { remaining });
        }
        assert_eq!(retry_after(run(&mut s, 5_000, &q)), MINUTE - 5_000);
    }

    #[test]
    fn honouring_the_wait_admits_the_request() {
        let q = five_a_minute();
        let mut s = LimiterState::default();
        for now in 0..5 {
            run(&mut s, now, &q);
        }
        let wait = retry_after(run(&mut s, 10, &q));
        assert_eq!(run(&mut s, 10 + wait, &q), Verdict::Allow { remaining: 0 });
    }

    #[test]
    fn a_denied_request_does_not_use_up_quota() {
        let q = five_a_minute();
        let mut s = LimiterState::default();
        for now in 0..5 {
            run(&mut s, now, &q);
        }
        let before = s.clone();
        run(&mut s, 10, &q);
        assert_eq!(s.admitted, before.admitted);
        assert_eq!(s.strikes(), 0);
    }

    #[test]
    fn a_slot_frees_exactly_when_the_oldest_request_leaves_the_window() {
        let q = five_a_minute();
        let mut s = LimiterState::default();
        for now in [0, 100, 200, 300, 400] {
            run(&mut s, now, &q);
        }
        let mut early = s.clone();
        assert!(!run(&mut early, MINUTE - 1, &q).is_allow());
        assert!(run(&mut s, MINUTE, &q).is_allow());
        assert!(!run(&mut s, MINUTE + 99, &q).is_allow());
    }

    #[test]
    fn hammering_while_denied_doubles_the_lock_out_up_to_the_cap() {
        let q = one_a_second();
        let mut s = LimiterState::default();
        assert!(run(&mut s, 0, &q).is_allow());
        assert_eq!(retry_after(run(&mut s, 1, &q)), 999);
        let waits: Vec<u64> = (2..=7)
            .map(|now| retry_after(run(&mut s, now, &q)))
            .collect();
        assert_eq!(waits, [10_000, 20_000, 40_000, 80_000, 80_000, 80_000]);
        assert_eq!(s.strikes(), 4);
    }

    #[test]
    fn a_violation_never_shortens_the_wait_already_given() {
        let q = Quota {
            max: 1,
            window_ms: MINUTE,
            base_lockout_ms: 1_000,
            max_lockout_ms: 2_000,
        };
        let mut s = LimiterState::default();
        run(&mut s, 0, &q);
        assert_eq!(retry_after(run(&mut s, 10, &q)), MINUTE - 10);
        assert_eq!(retry_after(run(&mut s, 20, &q)), MINUTE - 20);
    }

    #[test]
    fn each_clean_window_after_a_lock_out_forgives_one_strike() {
        let q = one_a_second();
        let mut s = LimiterState::default();
        run(&mut s, 0, &q);
        for now in 1..=7 {
            run(&mut s, now, &q);
        }
        let back_at = 7 + 80_000;
        assert!(run(&mut s, back_at, &q).is_allow());
        assert_eq!(s.strikes(), 4);

        let later = back_at + 3 * 1_000;
        assert!(run(&mut s, later, &q).is_allow());
        assert_eq!(s.strikes(), 1);

        assert_eq!(retry_after(run(&mut s, later + 1, &q)), 999);
        assert_eq!(retry_after(run(&mut s, later + 2, &q)), 20_000);
    }

    #[test]
    fn enough_clean_windows_reset_the_lock_out_to_its_base() {
        let q = one_a_second();
        let mut s = LimiterState::default();
        for now in 0..=7 {
            run(&mut s, now, &q);
        }
        let much_later = 7 + 80_000 + 10 * 1_000;
        assert!(run(&mut s, much_later, &q).is_allow());
        assert_eq!(s.strikes(), 0);
        run(&mut s, much_later + 1, &q);
        assert_eq!(retry_after(run(&mut s, much_later + 2, &q)), 10_000);
    }

    #[test]
    fn a_clock_that_goes_backwards_neither_panics_nor_lengthens_the_wait() {
        let q = five_a_minute();
        let mut s = LimiterState::default();
        for now in 1_000_000..1_000_005 {
            run(&mut s, now, &q);
        }
        let wait = retry_after(run(&mut s, 1_000_005, &q));
        assert_eq!(retry_after(run(&mut s, 5, &q)), wait);

        let mut fresh = LimiterState::default();
        run(&mut fresh, 10, &q);
        assert!(run(&mut fresh, 0, &q).is_allow());
    }

    #[test]
    fn a_zero_quota_denies_everything_with_a_positive_wait() {
        let q = Quota {
            max: 0,
            window_ms: 0,
            base_lockout_ms: 0,
            max_lockout_ms: 0,
        };
        let mut s = LimiterState::default();
        assert_eq!(retry_after(run(&mut s, 0, &q)), 1);
        assert_eq!(retry_after(run(&mut s, 1, &q)), 1);
    }

    #[test]
    fn lowering_the_quota_trims_the_log_to_the_new_maximum() {
        let mut s = LimiterState::default();
        for now in 0..5 {
            run(&mut s, now, &five_a_minute());
        }
        let two = Quota {
            max: 2,
            ..five_a_minute()
        };
        assert_eq!(retry_after(run(&mut s, 10, &two)), 3 + MINUTE - 10);
        assert_eq!(s.logged(), 2);
    }

    #[test]
    fn limiter_state_round_trips_through_json_and_an_empty_row_is_a_new_key() {
        let q = one_a_second();
        let mut s = LimiterState::default();
        for now in 0..4 {
            run(&mut s, now, &q);
        }
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<LimiterState>(&json).unwrap(), s);
        assert_eq!(
            serde_json::from_str::<LimiterState>("{}").unwrap(),
            LimiterState::default()
        );
    }

    #[test]
    fn retry_after_secs_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(1_000), 1);
        assert_eq!(retry_after_secs(1_001), 2);
        assert_eq!(retry_after_secs(u64::MAX), u64::MAX / 1000 + 1);
    }

    #[test]
    fn a_wave_starts_at_knock_max_plus_one_and_holds_until_a_quiet_period() {
        let cfg = WaveConfig::new(3, MINUTE);
        let mut s = WaveState::default();
        for now in [0, 1_000, 2_000] {
            assert_eq!(knock(&mut s, now, &cfg), WaveVerdict::Normal);
        }
        assert!(!wave_active(&s, 2_500, &cfg));
        assert_eq!(knock(&mut s, 3_000, &cfg), WaveVerdict::Hold);
        assert_eq!(s.started_at(), Some(3_000));
        assert!(wave_active(&s, 3_001, &cfg));

        let last = 3_000 + MINUTE - 1;
        assert_eq!(knock(&mut s, last, &cfg), WaveVerdict::Hold);
        assert!(wave_active(&s, last + MINUTE - 1, &cfg));
        assert!(!wave_active(&s, last + MINUTE, &cfg));
        assert_eq!(knock(&mut s, last + MINUTE, &cfg), WaveVerdict::Normal);
        assert_eq!(s.started_at(), None);
    }

    #[test]
    fn a_wave_that_has_ended_restarts_if_the_window_is_still_crowded() {
        let cfg = WaveConfig {
            max_knocks: 2,
            window_ms: MINUTE,
            quiet_ms: 1_000,
        };
        let mut s = WaveState::default();
        for now in [0, 10, 20] {
            knock(&mut s, now, &cfg);
        }
        assert!(!wave_active(&s, 1_020, &cfg));
        assert_eq!(knock(&mut s, 1_020, &cfg), WaveVerdict::Hold);
        assert_eq!(s.started_at(), Some(1_020));
    }

    #[test]
    fn knocks_spread_wider_than_the_window_never_start_a_wave() {
        let cfg = WaveConfig::new(2, 1_000);
        let mut s = WaveState::default();
        for now in (0..50).map(|i| i * 500) {
            assert_eq!(knock(&mut s, now, &cfg), WaveVerdict::Normal);
        }
        assert!(s.logged() <= 3);
    }

    #[test]
    fn wave_state_round_trips_through_json_and_an_empty_row_is_a_quiet_room() {
        let cfg = WaveConfig::new(1, MINUTE);
        let mut s = WaveState::default();
        knock(&mut s, 0, &cfg);
        knock(&mut s, 1, &cfg);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<WaveState>(&json).unwrap(), s);
        assert_eq!(
            serde_json::from_str::<WaveState>("{}").unwrap(),
            WaveState::default()
        );
    }

    #[test]
    fn pacing_spaces_calls_by_the_request_delay() {
        let p = Pacer::default();
        let (first, p) = pace(&p, 1_000, 100);
        let (second, p) = pace(&p, 1_010, 100);
        let (third, _) = pace(&p, 5_000, 100);
        assert_eq!((first, second, third), (1_000, 1_100, 5_000));
    }

    #[test]
    fn a_homeserver_429_delays_the_next_call_and_never_shortens_a_pause() {
        let (_, p) = pace(&Pacer::default(), 0, 100);
        let p = pause_for(&p, 50, 5_000);
        assert_eq!(p.next_free_at, 5_050);
        assert_eq!(pause_for(&p, 60, 10).next_free_at, 5_050);
        assert_eq!(pace(&p, 200, 100).0, 5_050);
    }

    fn quotas() -> impl Strategy<Value = Quota> {
        (1u32..8, 0u64..5_000, 0u64..20_000, 0u64..100_000).prop_map(
            |(max, window_ms, base_lockout_ms, max_lockout_ms)| Quota {
                max,
                window_ms,
                base_lockout_ms,
                max_lockout_ms,
            },
        )
    }

    fn gaps() -> impl Strategy<Value = Vec<u64>> {
        prop::collection::vec(prop_oneof![0u64..10, 0u64..2_000, 0u64..20_000], 1..200)
    }

    fn most_in_any_window(times: &[u64], window_ms: u64) -> usize {
        times
            .iter()
            .map(|&a| {
                times
                    .iter()
                    .filter(|&&b| b >= a && b - a < window_ms)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    proptest! {
        #[test]
        fn no_window_ever_admits_more_than_max(q in quotas(), gaps in gaps()) {
            let mut s = LimiterState::default();
            let mut now = 0;
            let mut admitted = Vec::new();
            for gap in gaps {
                now += gap;
                if run(&mut s, now, &q).is_allow() {
                    admitted.push(now);
                }
            }
            prop_assert!(most_in_any_window(&admitted, q.window_ms) <= q.max as usize);
        }

        #[test]
        fn every_denial_names_a_positive_bounded_wait(q in quotas(), gaps in gaps()) {
            let mut s = LimiterState::default();
            let mut now = 0;
            for gap in gaps {
                now += gap;
                if let Verdict::Deny { retry_after_ms } = run(&mut s, now, &q) {
                    prop_assert!(retry_after_ms > 0);
                    prop_assert!(retry_after_secs(retry_after_ms) >= 1);
                    prop_assert!(retry_after_ms <= q.window_ms.max(q.max_lockout_ms).max(1));
                }
            }
        }

        #[test]
        fn honouring_a_denial_is_admitted(
            q in quotas(),
            steps in prop::collection::vec((0u64..3_000, any::<bool>()), 1..200),
        ) {
            let mut s = LimiterState::default();
            let mut now = 0;
            let mut last = Verdict::Allow { remaining: 0 };
            for (gap, honour) in steps {
                match last {
                    Verdict::Deny { retry_after_ms } if honour => {
                        now += retry_after_ms;
                        last = run(&mut s, now, &q);
                        prop_assert!(last.is_allow(), "honoured wait at {} was {:?}", now, last);
                    }
                    _ => {
                        now += gap;
                        last = run(&mut s, now, &q);
                    }
                }
            }
        }

        #[test]
        fn limiter_state_stays_bounded(q in quotas(), gaps in gaps()) {
            let mut s = LimiterState::default();
            let mut now = 0;
            for gap in gaps {
                now += gap;
                run(&mut s, now, &q);
                prop_assert!(s.logged() <= q.max as usize);
                prop_assert!(s.strikes() <= MAX_STRIKES);
            }
        }

        #[test]
        fn any_clock_even_one_going_backwards_gives_sane_answers(
            q in quotas(),
            times in prop::collection::vec(0u64..100_000, 1..200),
        ) {
            let mut s = LimiterState::default();
            for now in times {
                if let Verdict::Deny { retry_after_ms } = run(&mut s, now, &q) {
                    prop_assert!(retry_after_ms > 0);
                    prop_assert!(retry_after_ms <= q.window_ms.max(q.max_lockout_ms).max(1));
                }
                prop_assert!(s.logged() <= q.max as usize);
            }
        }

        #[test]
        fn the_wave_breaker_never_waves_through_a_crowded_window(
            max_knocks in 0u32..6,
            window_ms in 0u64..5_000,
            quiet_ms in 0u64..5_000,
            gaps in gaps(),
        ) {
            let cfg = WaveConfig { max_knocks, window_ms, quiet_ms };
            let mut s = WaveState::default();
            let mut now = 0;
            let mut knocks = Vec::new();
            for gap in gaps {
                now += gap;
                let was_active = wave_active(&s, now, &cfg);
                knocks.push(now);
                let trailing = knocks.iter().filter(|&&t| now - t < window_ms).count();
                let verdict = knock(&mut s, now, &cfg);
                let crowded = trailing > max_knocks as usize;
                prop_assert_eq!(verdict == WaveVerdict::Hold, crowded || was_active);
                prop_assert!(s.logged() <= max_knocks as usize + 1);
            }
        }

        #[test]
        fn paced_calls_never_start_early_or_too_close_together(
            delay in 0u64..1_000,
            gaps in gaps(),
        ) {
            let mut p = Pacer::default();
            let mut now = 0;
            let mut previous: Option<u64> = None;
            for gap in gaps {
                now += gap;
                let (start, next) = pace(&p, now, delay);
                prop_assert!(start >= now);
                if let Some(prev) = previous {
                    prop_assert!(start >= prev + delay);
                }
                previous = Some(start);
                p = next;
            }
        }
    }
}
