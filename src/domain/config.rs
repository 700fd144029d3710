//! Typed configuration, parsed once per request from the worker's variables and secrets.
//!
//! Decides: whether the settings are complete and valid, and their typed values and defaults.
//! Never does: read the environment itself; it is handed a lookup function, so tests and the
//! worker layer feed it the same way. Problems are collected and reported together, naming each
//! setting and its fix, never its value.

use super::blocklist::Policy;
use super::moderation::BlockAction;
use super::mxid::RoomId;
use super::rate_limit::{Quota, WaveConfig};
use super::signature::Secrets;
use super::watchdog::{KnockPolicy, WatchConfig};

/// Cloudflare Turnstile's siteverify endpoint.
pub const DEFAULT_TURNSTILE_VERIFY_URL: &str =
    "https://challenges.cloudflare.com/turnstile/v0/siteverify";

/// Cloudflare's documented test site key that always passes (for the sandbox form).
pub const TURNSTILE_TEST_SITE_KEY: &str = "1x00000000000000000000AA";

/// Original service's default homeserver (Beeper).
pub const DEFAULT_MATRIX_BASE_URL: &str = "https://matrix.beeper.com";

#[derive(Clone)]
pub struct Config {
    pub room_id: RoomId,
    pub matrix_base_url: String,
    pub access_token: Option<String>,
    pub api_key: Option<String>,
    /// Pause between two outbound homeserver calls of one room.
    pub request_delay_ms: u64,
    pub form_field: Option<String>,
    pub honeypot_fields: Vec<String>,
    pub thank_you_url: Option<String>,
    pub secrets: Secrets,
    /// Timeout of one homeserver call.
    pub matrix_timeout_ms: u64,
    /// What blocking someone does to them in the room.
    pub block_action: BlockAction,
    /// Knocks one client address may send per window.
    pub ip_quota: Quota,
    /// Knocks for one Matrix ID per window (a small fixed limit).
    pub mxid_quota: Quota,
    /// When a room-wide flood of knocks stops auto-inviting.
    pub wave: WaveConfig,
    /// Welcomes, reminders, expiry, native knocks.
    pub watch: WatchConfig,
    /// How often the invite checker and the block-list scan run.
    pub invite_check_interval_ms: u64,
    pub blocklist_scan_interval_ms: u64,
    /// `KNOCK_RETENTION`: how long a closed knock is kept before only its daily count remains.
    pub retention_ms: u64,
    /// Where Turnstile tokens are checked (`TURNSTILE_VERIFY_URL`; Cloudflare's by default).
    pub turnstile_verify_url: String,
    /// `TURNSTILE_SITE_KEY`, for the sandbox form's widget.
    pub turnstile_site_key: Option<String>,
    /// How Knock logs in: chosen from which settings are present.
    pub login: Login,
    /// `BLOCKLIST_*`: how the block-list grades evidence into block, hold or allow.
    pub blocklist: Policy,
    /// The room is a space (`KNOCK_ROOMS`, `"space": true`): a knock invites into it and into
    /// its child rooms.
    pub space: Option<SpaceTarget>,
    /// How the room is named to moderators (its alias in `KNOCK_ROOMS`, or `default`): never
    /// its ID.
    pub label: String,
    /// `MANAGEMENT_ROOM_ID`: the private, unencrypted room where Knock tells moderators about
    /// knocks (per room: `management_room_id`).
    pub management_room: Option<RoomId>,
    /// `MANAGEMENT_NOTIFY`: which knocks get a notice there.
    pub management_notify: Notify,
    /// `DENY_MESSAGE`: sent by direct message to a person a moderator rejected (never the rule
    /// that matched them); unset sends nothing. `{user_id}` and `{display_name}` are filled in.
    pub deny_message: Option<String>,
    /// `POLICY_PUBLISH_ROOM`: a room of the bot's where Knock mirrors its block-list as
    /// `m.policy.rule.user` state events, for other communities' moderation bots.
    pub policy_publish_room: Option<RoomId>,
    /// `POLICY_ROOMS`: policy rooms (IDs or aliases) whose rules Knock follows: a knock a rule
    /// matches is refused, with the rule's source in its verdict.
    pub policy_rooms: Vec<String>,
    /// `POLICY_FUZZY_ROOMS`: subscribed policy rooms trusted for Knock's fuzzy matching (family
    /// and near misses, graded as Knock's own list); each is also in `policy_rooms`.
    pub policy_fuzzy_rooms: Vec<String>,
}

/// `MANAGEMENT_NOTIFY`: which knocks Knock posts about in the management room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    /// Knocks waiting for a moderator (the default).
    Held,
    /// Also every accepted and every refused knock.
    All,
    None,
}

impl Notify {
    pub fn parse(s: &str) -> Option<Notify> {
        match s.trim().to_ascii_lowercase().as_str() {
            "held" => Some(Notify::Held),
            "all" => Some(Notify::All),
            "none" => Some(Notify::None),
            _ => None,
        }
    }
}

/// A space target's child rooms: the ones listed, or (`None`) every `m.space.child` it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceTarget {
    pub children: Option<Vec<RoomId>>,
}

/// Which credentials the operator configured, decided from which settings are present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// Only an access token: Knock can't get a new one by itself.
    AccessToken,
    /// A user name and password: Knock logs in again whenever it must.
    Password,
    /// Beeper's email-code login, done once by the operator.
    Beeper,
}

/// The bot's login settings. Which mode applies follows from what is set: a password wins, then
/// Beeper's email flow, then a bare access token (which Beeper mode may also start from).
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub mode: Credentials,
    pub user_id: Option<String>,
    pub password: Option<String>,
    pub beeper_api_base: String,
    pub beeper_email: Option<String>,
    /// A Beeper JWT to log in with directly (the original service's BEEPER_LOGIN_TOKEN).
    pub beeper_jwt: Option<String>,
    /// A 6-digit code for a Beeper flow already started.
    pub beeper_code: Option<String>,
}

impl Login {
    /// Names the identity a session belongs to, so a changed setting starts a new session.
    pub fn session_name(&self, base_url: &str) -> String {
        let who = match self.mode {
            Credentials::AccessToken => "token".to_owned(),
            Credentials::Password => {
                format!("password:{}", self.user_id.as_deref().unwrap_or(""))
            }
            Credentials::Beeper => {
                format!("beeper:{}", self.beeper_email.as_deref().unwrap_or(""))
            }
        };
        format!("{base_url}|{who}")
    }
}

pub const DEFAULT_WELCOME: &str = "Welcome, {display_name}! 👋";
pub const DEFAULT_REMINDER: &str =
    "Hi {display_name}, your invite to the room is still waiting for you. Accept it in your \
     Matrix client to join.";

/// The small fixed limit per Matrix ID: 5 knocks per 10 minutes, then lock-outs from 1 minute
/// doubling to 1 hour.
pub const MXID_QUOTA: Quota = Quota {
    max: 5,
    window_ms: 10 * 60_000,
    base_lockout_ms: 60_000,
    max_lockout_ms: 3_600_000,
};

/// The longest lock-out a misbehaving address gets.
pub const MAX_LOCKOUT_MS: u64 = 3_600_000;

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens, keys and the room ID never reach a log line, even by accident.
        f.debug_struct("Config")
            .field("matrix_base_url", &self.matrix_base_url)
            .field("access_token", &self.access_token.is_some())
            .field("api_key", &self.api_key.is_some())
            .field("login_mode", &self.login.mode)
            .field("request_delay_ms", &self.request_delay_ms)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

/// One bad or missing setting: its name and what to do about it. Never holds the value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub name: String,
    pub missing: bool,
    pub fix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn missing(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter(|p| p.missing)
            .map(|p| p.name.as_str())
            .collect()
    }
    pub fn invalid(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter(|p| !p.missing)
            .map(|p| p.name.as_str())
            .collect()
    }
    /// One sentence listing every problem, for 503 replies and logs.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|p| format!("{}: {}", p.name, p.fix))
            .collect();
        format!("Knock is not configured: {}", parts.join("; "))
    }
}

impl Config {
    /// Parses every setting through `get`, which returns a variable's or secret's value. Empty
    /// strings count as unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, Problems> {
        // A message set to the empty string turns that message off; unset means the default.
        let message = |name: &str, default: &str| match get(name) {
            Some(v) if v.trim().is_empty() => None,
            Some(v) => Some(v),
            None => Some(default.to_owned()),
        };
        let welcome_message = message("WELCOME_MESSAGE", DEFAULT_WELCOME);
        let reminder_message = message("REMINDER_MESSAGE", DEFAULT_REMINDER);
        let deny_message = get("DENY_MESSAGE").filter(|v| !v.trim().is_empty());
        let get = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut problems = Vec::new();
        let mut bad = |name: &str, missing: bool, fix: String| {
            problems.push(Problem {
                name: name.to_owned(),
                missing,
                fix,
            })
        };

        let room_id = match get("NEW_ROOM_ID") {
            None => {
                bad(
                    "NEW_ROOM_ID",
                    true,
                    "set it to the room's ID (like !abc123:example.org), in wrangler.toml [vars] \
                     or .dev.vars (or describe several rooms with KNOCK_ROOMS and KNOCK_FORMS)"
                        .into(),
                );
                None
            }
            Some(v) => match RoomId::parse(&v) {
                Ok(r) => Some(r),
                Err(why) => {
                    bad("NEW_ROOM_ID", false, format!("it {why}"));
                    None
                }
            },
        };

        let matrix_base_url = get("MATRIX_BASE_URL")
            .unwrap_or_else(|| DEFAULT_MATRIX_BASE_URL.to_owned())
            .trim_end_matches('/')
            .to_owned();
        if !(matrix_base_url.starts_with("https://") || matrix_base_url.starts_with("http://")) {
            bad(
                "MATRIX_BASE_URL",
                false,
                "it must be an http(s) URL, like https://matrix.example.org".into(),
            );
        }

        let access_token = get("MATRIX_ACCESS_TOKEN");
        let user_id = get("MATRIX_USER_ID");
        let password = get("MATRIX_PASSWORD");
        let beeper_email = get("BEEPER_LOGIN_EMAIL");
        let beeper_jwt = get("BEEPER_LOGIN_TOKEN");
        let beeper_code = get("BEEPER_LOGIN_CODE");
        let mode = if password.is_some() || user_id.is_some() {
            if user_id.is_none() {
                bad(
                    "MATRIX_USER_ID",
                    true,
                    "set the bot's user ID to log in with MATRIX_PASSWORD".into(),
                );
            }
            if password.is_none() {
                bad(
                    "MATRIX_PASSWORD",
                    true,
                    "set the bot's password: `wrangler secret put MATRIX_PASSWORD`".into(),
                );
            }
            Credentials::Password
        } else if beeper_email.is_some() || beeper_jwt.is_some() || beeper_code.is_some() {
            Credentials::Beeper
        } else {
            if access_token.is_none() {
                bad(
                    "MATRIX_ACCESS_TOKEN",
                    true,
                    "set the bot account's access token (`wrangler secret put MATRIX_ACCESS_TOKEN`, \
                     or MATRIX_ACCESS_TOKEN=... in .dev.vars), or MATRIX_USER_ID and \
                     MATRIX_PASSWORD, or BEEPER_LOGIN_EMAIL for Beeper"
                        .into(),
                );
            }
            Credentials::AccessToken
        };
        let login = Login {
            mode,
            user_id,
            password,
            beeper_api_base: get("BEEPER_API_BASE")
                .unwrap_or_else(|| crate::matrix::login::DEFAULT_BEEPER_API_BASE.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            beeper_email,
            beeper_jwt,
            beeper_code,
        };

        let mut duration = |name: &'static str, default_ms: u64| match get(name) {
            None => default_ms,
            Some(v) => parse_duration_ms(&v).unwrap_or_else(|| {
                bad(
                    name,
                    false,
                    "it must be a duration like 500ms, 45s, 30m, 12h, 7d or plain seconds".into(),
                );
                default_ms
            }),
        };
        let request_delay_ms = duration("REQUEST_DELAY", 500);
        let matrix_timeout_ms = duration("MATRIX_TIMEOUT", 8_000);

        let thank_you_url = get("THANK_YOU_URL");
        if let Some(u) = &thank_you_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                bad("THANK_YOU_URL", false, "it must be an http(s) URL".into());
            }
        }

        let block_action = match get("BLOCK_ACTION") {
            None => BlockAction::Kick,
            Some(v) => BlockAction::parse(&v).unwrap_or_else(|| {
                bad("BLOCK_ACTION", false, "it must be kick or ban".into());
                BlockAction::Kick
            }),
        };

        let mut count = |name: &'static str, default: u32| match get(name) {
            None => default,
            Some(v) => v.parse::<u32>().unwrap_or_else(|_| {
                bad(name, false, "it must be a whole number".into());
                default
            }),
        };
        let max_requests = count("MAX_REQUESTS_PER_WINDOW", 10);
        let wave_max = count("WAVE_MAX_KNOCKS", 20);
        let mut duration = |name: &'static str, default_ms: u64| match get(name) {
            None => default_ms,
            Some(v) => match parse_duration_ms(&v) {
                Some(ms) if ms > 0 => ms,
                _ => {
                    bad(
                        name,
                        false,
                        "it must be a positive duration like 45s, 30m or 12h".into(),
                    );
                    default_ms
                }
            },
        };
        let window_ms = duration("RATE_LIMIT_WINDOW", 60_000);
        let wave_window_ms = duration("WAVE_WINDOW", 5 * 60_000);
        let ip_quota = Quota {
            max: max_requests,
            window_ms,
            base_lockout_ms: window_ms,
            max_lockout_ms: MAX_LOCKOUT_MS.max(window_ms),
        };
        let wave = WaveConfig::new(wave_max, wave_window_ms);
        let reminder_after_ms = duration("REMINDER_AFTER", 86_400_000);
        let invite_expiry_ms = duration("INVITE_EXPIRY", 7 * 86_400_000);
        let invite_check_interval_ms = duration("INVITE_CHECK_INTERVAL", 5 * 60_000);
        let blocklist_scan_interval_ms = duration("BLOCKLIST_SCAN_INTERVAL", 10 * 60_000);
        let retention_ms = duration("KNOCK_RETENTION", 90 * 86_400_000);
        let knock_policy = match get("KNOCK_POLICY") {
            None => KnockPolicy::Auto,
            Some(v) => KnockPolicy::parse(&v).unwrap_or_else(|| {
                bad(
                    "KNOCK_POLICY",
                    false,
                    "it must be auto, manual or off".into(),
                );
                KnockPolicy::Auto
            }),
        };

        let honeypot_fields = get("HONEYPOT_FIELDS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();

        let secrets = global_secrets(&get);
        let turnstile_verify_url =
            get("TURNSTILE_VERIFY_URL").unwrap_or_else(|| DEFAULT_TURNSTILE_VERIFY_URL.to_owned());
        if !(turnstile_verify_url.starts_with("https://")
            || turnstile_verify_url.starts_with("http://"))
        {
            bad(
                "TURNSTILE_VERIFY_URL",
                false,
                "it must be an http(s) URL (default: Cloudflare's siteverify)".into(),
            );
        }

        let blocklist = Policy::from_vars(get).unwrap_or_else(|errors| {
            for e in errors {
                bad(e.name, false, e.message);
            }
            Policy::default()
        });

        let management_room = get("MANAGEMENT_ROOM_ID").and_then(|v| match RoomId::parse(&v) {
            Ok(r) => Some(r),
            Err(why) => {
                bad("MANAGEMENT_ROOM_ID", false, format!("it {why}"));
                None
            }
        });
        let policy_publish_room =
            get("POLICY_PUBLISH_ROOM").and_then(|v| match RoomId::parse(&v) {
                Ok(r) => Some(r),
                Err(why) => {
                    bad("POLICY_PUBLISH_ROOM", false, format!("it {why}"));
                    None
                }
            });
        let mut policy_rooms: Vec<String> = Vec::new();
        let mut policy_fuzzy_rooms: Vec<String> = Vec::new();
        for (name, fuzzy) in [("POLICY_ROOMS", false), ("POLICY_FUZZY_ROOMS", true)] {
            for r in get(name)
                .unwrap_or_default()
                .split([',', ' ', '\n'])
                .map(str::trim)
                .filter(|r| !r.is_empty())
            {
                let shaped = r.starts_with(['!', '#']) && r.contains(':') && r.len() <= 255;
                if !shaped {
                    bad(
                        name,
                        false,
                        "each entry must be a room ID (!id:server) or alias (#name:server)".into(),
                    );
                    continue;
                }
                if !policy_rooms.iter().any(|p| p == r) {
                    policy_rooms.push(r.to_owned());
                }
                if fuzzy && !policy_fuzzy_rooms.iter().any(|p| p == r) {
                    policy_fuzzy_rooms.push(r.to_owned());
                }
            }
        }
        let management_notify = match get("MANAGEMENT_NOTIFY") {
            None => Notify::Held,
            Some(v) => Notify::parse(&v).unwrap_or_else(|| {
                bad(
                    "MANAGEMENT_NOTIFY",
                    false,
                    "it must be held, all or none".into(),
                );
                Notify::Held
            }),
        };

        match (room_id, problems.is_empty()) {
            (Some(room_id), true) => Ok(Config {
                room_id,
                matrix_base_url,
                access_token,
                api_key: get("API_KEY"),
                request_delay_ms,
                form_field: get("FORM_FIELD"),
                honeypot_fields,
                thank_you_url,
                secrets,
                matrix_timeout_ms,
                block_action,
                ip_quota,
                mxid_quota: MXID_QUOTA,
                wave,
                watch: WatchConfig {
                    reminder_after_ms,
                    invite_expiry_ms,
                    reminder_message,
                    welcome_message,
                    knock_policy,
                    block_action,
                },
                invite_check_interval_ms,
                blocklist_scan_interval_ms,
                retention_ms,
                turnstile_verify_url,
                turnstile_site_key: get("TURNSTILE_SITE_KEY"),
                login,
                blocklist,
                space: None,
                label: "default".into(),
                management_room,
                management_notify,
                deny_message,
                policy_publish_room,
                policy_rooms,
                policy_fuzzy_rooms,
            }),
            _ => Err(Problems(problems)),
        }
    }
}

/// The deployment's own secrets (a form may have its own copies; see `deployment`). Empty
/// values count as unset.
pub fn global_secrets(get: &dyn Fn(&str) -> Option<String>) -> Secrets {
    let get = |name: &str| {
        get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    Secrets {
        tally: get("TALLY_SIGNING_SECRET"),
        typeform: get("TYPEFORM_SIGNING_SECRET"),
        formspree: get("FORMSPREE_SIGNING_SECRET"),
        shared: get("WEBHOOK_SECRET"),
        turnstile: get("TURNSTILE_SECRET_KEY"),
    }
}

/// Parses `500ms`, `45s`, `30m`, `12h`, `7d`, or plain (possibly fractional) seconds such as
/// `0.5`, into milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000.0)
    } else if let Some(n) = s.strip_suffix('d') {
        (n, 86_400_000.0)
    } else {
        (s, 1_000.0)
    };
    let num = num.trim();
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let ms = value * unit_ms;
    // Ten years is far beyond any sensible setting; refuse rather than overflow.
    (ms.is_finite() && ms <= 315_360_000_000.0).then(|| ms.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, Problems> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    const MINIMAL: [(&str, &str); 2] = [
        ("NEW_ROOM_ID", "!room:localhost"),
        ("MATRIX_ACCESS_TOKEN", "syt_secret"),
    ];

    #[test]
    fn durations_accept_every_documented_form() {
        assert_eq!(parse_duration_ms("45s"), Some(45_000));
        assert_eq!(parse_duration_ms("30m"), Some(1_800_000));
        assert_eq!(parse_duration_ms("12h"), Some(43_200_000));
        assert_eq!(parse_duration_ms("7d"), Some(604_800_000));
        assert_eq!(parse_duration_ms("90"), Some(90_000));
        assert_eq!(parse_duration_ms("0.5"), Some(500));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms(" 3s "), Some(3_000));
        assert_eq!(parse_duration_ms("0"), Some(0));
    }

    #[test]
    fn bad_durations_are_refused() {
        for bad in [
            "",
            "s",
            "-1",
            "1w",
            "abc",
            "1e9",
            "1.2.3s",
            "99999999999d",
            "NaN",
        ] {
            assert_eq!(parse_duration_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_minimal_config_gets_the_original_defaults() {
        let c = parse(&MINIMAL).unwrap();
        assert_eq!(c.room_id.as_str(), "!room:localhost");
        assert_eq!(c.matrix_base_url, "https://matrix.beeper.com");
        assert_eq!(c.request_delay_ms, 500);
        assert!(c.api_key.is_none());
        assert!(!c.secrets.any());
        assert!(c.honeypot_fields.is_empty());
        assert_eq!(c.block_action, BlockAction::Kick);
    }

    #[test]
    fn rate_limits_have_defaults_and_can_be_set() {
        let c = parse(&MINIMAL).unwrap();
        assert_eq!(c.ip_quota.max, 10);
        assert_eq!(c.ip_quota.window_ms, 60_000);
        assert_eq!(c.wave.max_knocks, 20);
        assert_eq!(c.wave.window_ms, 300_000);
        let mut vars = MINIMAL.to_vec();
        vars.extend([
            ("MAX_REQUESTS_PER_WINDOW", "5"),
            ("RATE_LIMIT_WINDOW", "4s"),
            ("WAVE_MAX_KNOCKS", "3"),
            ("WAVE_WINDOW", "1m"),
        ]);
        let c = parse(&vars).unwrap();
        assert_eq!((c.ip_quota.max, c.ip_quota.window_ms), (5, 4_000));
        assert_eq!((c.wave.max_knocks, c.wave.window_ms), (3, 60_000));
        vars.push(("RATE_LIMIT_WINDOW", "0"));
        vars.push(("WAVE_MAX_KNOCKS", "many"));
        let p = parse(&vars).unwrap_err();
        assert_eq!(p.invalid(), vec!["WAVE_MAX_KNOCKS", "RATE_LIMIT_WINDOW"]);
    }

    #[test]
    fn blocklist_grading_settings_are_read_and_a_bad_one_is_named() {
        let c = parse(&MINIMAL).unwrap();
        assert_eq!(c.blocklist, Policy::default());
        let mut vars = MINIMAL.to_vec();
        vars.extend([
            ("BLOCKLIST_HOLD_COMMON_PER_MILLION", "100"),
            ("BLOCKLIST_HOLD_EDITS", "1"),
        ]);
        let c = parse(&vars).unwrap();
        assert_eq!(c.blocklist.hold_common_per_million, 100);
        assert_eq!(c.blocklist.hold_edits, 1);
        assert_eq!(
            c.blocklist.block_min_chars,
            Policy::default().block_min_chars
        );
        vars.push(("BLOCKLIST_BLOCK_MIN_CHARS", "lots"));
        let p = parse(&vars).unwrap_err();
        assert_eq!(p.invalid(), vec!["BLOCKLIST_BLOCK_MIN_CHARS"]);
    }

    #[test]
    fn watchdog_settings_have_defaults_and_empty_messages_turn_them_off() {
        let c = parse(&MINIMAL).unwrap();
        assert_eq!(c.watch.reminder_after_ms, 86_400_000);
        assert_eq!(c.watch.invite_expiry_ms, 7 * 86_400_000);
        assert_eq!(c.watch.welcome_message.as_deref(), Some(DEFAULT_WELCOME));
        assert!(c.watch.reminder_message.is_some());
        assert_eq!(c.watch.knock_policy, KnockPolicy::Auto);
        assert_eq!(c.invite_check_interval_ms, 300_000);
        let mut vars = MINIMAL.to_vec();
        vars.extend([
            ("REMINDER_MESSAGE", ""),
            ("WELCOME_MESSAGE", "Hi {user_id}"),
            ("INVITE_EXPIRY", "3s"),
            ("KNOCK_POLICY", "manual"),
        ]);
        let c = parse(&vars).unwrap();
        assert_eq!(c.watch.reminder_message, None);
        assert_eq!(c.watch.welcome_message.as_deref(), Some("Hi {user_id}"));
        assert_eq!(c.watch.invite_expiry_ms, 3_000);
        assert_eq!(c.watch.knock_policy, KnockPolicy::Manual);
        vars.push(("KNOCK_POLICY", "sometimes"));
        assert_eq!(parse(&vars).unwrap_err().invalid(), vec!["KNOCK_POLICY"]);
    }

    #[test]
    fn the_login_mode_follows_the_settings_present() {
        let room = ("NEW_ROOM_ID", "!room:localhost");
        assert_eq!(
            parse(&MINIMAL).unwrap().login.mode,
            Credentials::AccessToken
        );
        let c = parse(&[
            room,
            ("MATRIX_USER_ID", "@bot:x"),
            ("MATRIX_PASSWORD", "pw"),
        ])
        .unwrap();
        assert_eq!(c.login.mode, Credentials::Password);
        assert!(c.access_token.is_none());
        let c = parse(&[room, ("BEEPER_LOGIN_EMAIL", "bot@example.org")]).unwrap();
        assert_eq!(c.login.mode, Credentials::Beeper);
        assert_eq!(c.login.beeper_api_base, "https://api.beeper.com");
        let p = parse(&[room, ("MATRIX_USER_ID", "@bot:x")]).unwrap_err();
        assert_eq!(p.missing(), vec!["MATRIX_PASSWORD"]);
        assert_ne!(
            c.login.session_name("https://a"),
            parse(&[room, ("BEEPER_LOGIN_EMAIL", "other@example.org")])
                .unwrap()
                .login
                .session_name("https://a")
        );
    }

    #[test]
    fn block_action_is_kick_or_ban() {
        let mut vars = MINIMAL.to_vec();
        vars.push(("BLOCK_ACTION", "Ban"));
        assert_eq!(parse(&vars).unwrap().block_action, BlockAction::Ban);
        vars.push(("BLOCK_ACTION", "shun"));
        assert_eq!(parse(&vars).unwrap_err().invalid(), vec!["BLOCK_ACTION"]);
    }

    #[test]
    fn missing_settings_are_all_named_together() {
        let p = parse(&[]).unwrap_err();
        assert_eq!(p.missing(), vec!["NEW_ROOM_ID", "MATRIX_ACCESS_TOKEN"]);
        assert!(p.summary().contains("NEW_ROOM_ID"));
        assert!(p
            .summary()
            .contains("wrangler secret put MATRIX_ACCESS_TOKEN"));
    }

    #[test]
    fn empty_values_count_as_missing() {
        let p = parse(&[("NEW_ROOM_ID", "  "), ("MATRIX_ACCESS_TOKEN", "t")]).unwrap_err();
        assert_eq!(p.missing(), vec!["NEW_ROOM_ID"]);
    }

    #[test]
    fn invalid_values_are_named_without_their_value() {
        let p = parse(&[
            ("NEW_ROOM_ID", "#alias:localhost"),
            ("MATRIX_ACCESS_TOKEN", "syt_secret"),
            ("REQUEST_DELAY", "soon"),
            ("MATRIX_BASE_URL", "ftp://x"),
        ])
        .unwrap_err();
        assert_eq!(
            p.invalid(),
            vec!["NEW_ROOM_ID", "MATRIX_BASE_URL", "REQUEST_DELAY"]
        );
        assert!(p.missing().is_empty());
        let summary = p.summary();
        assert!(
            !summary.contains("#alias") && !summary.contains("soon"),
            "{summary}"
        );
    }

    #[test]
    fn every_optional_setting_is_read() {
        let mut vars = MINIMAL.to_vec();
        vars.extend([
            ("MATRIX_BASE_URL", "http://127.0.0.1:8008/"),
            ("API_KEY", "k"),
            ("REQUEST_DELAY", "0"),
            ("FORM_FIELD", "Matrix ID"),
            ("HONEYPOT_FIELDS", " website, ,fax "),
            ("THANK_YOU_URL", "https://example.org/thanks"),
            ("TALLY_SIGNING_SECRET", "a"),
            ("TYPEFORM_SIGNING_SECRET", "b"),
            ("WEBHOOK_SECRET", "c"),
        ]);
        let c = parse(&vars).unwrap();
        assert_eq!(c.matrix_base_url, "http://127.0.0.1:8008");
        assert_eq!(c.api_key.as_deref(), Some("k"));
        assert_eq!(c.request_delay_ms, 0);
        assert_eq!(c.form_field.as_deref(), Some("Matrix ID"));
        assert_eq!(c.honeypot_fields, vec!["website", "fax"]);
        assert_eq!(
            c.thank_you_url.as_deref(),
            Some("https://example.org/thanks")
        );
        assert!(c.secrets.tally.is_some() && c.secrets.typeform.is_some());
        assert_eq!(c.secrets.shared.as_deref(), Some("c"));
    }

    #[test]
    fn debug_output_never_shows_secrets_or_the_room() {
        let mut vars = MINIMAL.to_vec();
        vars.push(("WEBHOOK_SECRET", "hunter2"));
        let c = parse(&vars).unwrap();
        let dbg = format!("{:?}", c.secrets);
        assert!(!dbg.contains("hunter2"));
        assert!(!format!("{:?}", c.room_id).contains("!room"));
    }
}
