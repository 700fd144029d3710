//! Several rooms, forms and spaces in one deployment: `KNOCK_ROOMS` and `KNOCK_FORMS`.
//!
//! Decides: what the two variables say (each a JSON object, from a `[vars]` table or a JSON
//! string secret), which form delivers into which room, which secrets a form accepts (its own,
//! named `<GLOBAL>_<FORM ID>`, or else the global ones), and which form `/invite_from_form`
//! without an id means (`default`, else `NEW_ROOM_ID`'s room). Every problem names the room or
//! form and the key. Never does: read the environment (a lookup is passed in), or show a value.
//!
//! [`Site`] (in `site.rs`) is the whole deployment the worker serves: which room a form or
//! `?room=` means, and each room's configuration (its own settings over the global variables).

mod site;

pub use site::{RoomLabel, Site};

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::config::{global_secrets, Config, Problem as ConfigProblem, Problems, SpaceTarget};
use super::mxid::RoomId;
use super::signature::Secrets;

/// The global secret names a form can have its own copy of.
pub const FORM_SECRETS: [&str; 5] = [
    "TALLY_SIGNING_SECRET",
    "TYPEFORM_SIGNING_SECRET",
    "FORMSPREE_SIGNING_SECRET",
    "WEBHOOK_SECRET",
    "TURNSTILE_SECRET_KEY",
];

/// Cloudflare's free plan: 5 KB per variable, 64 variables per Worker.
pub const MAX_VAR_BYTES: usize = 5 * 1024;
pub const MAX_VARS: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct RoomEntry {
    pub alias: String,
    pub room_id: RoomId,
    /// A space: a knock invites into it and into `children` (all `m.space.child` when `None`).
    pub space: bool,
    pub children: Option<Vec<RoomId>>,
    /// Per-room settings, as given; absent ones inherit the global variables.
    pub settings: BTreeMap<String, Value>,
}

#[derive(Clone, PartialEq)]
pub struct FormEntry {
    pub id: String,
    pub room: RoomId,
    pub form_field: Option<String>,
    pub honeypot_fields: Option<Vec<String>>,
    pub thank_you_url: Option<String>,
    /// What this form accepts: its own secret for a platform where it has one, else the global.
    pub secrets: Secrets,
}

impl std::fmt::Debug for FormEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FormEntry")
            .field("id", &self.id)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Deployment {
    pub rooms: Vec<RoomEntry>,
    pub forms: Vec<FormEntry>,
}

/// One problem, naming the variable, the entry and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub name: String,
    pub fix: String,
}

/// The per-room keys a room entry may carry besides `room_id`, `space` and `rooms`.
const ROOM_KEYS: [&str; 9] = [
    "welcome_message",
    "reminder_message",
    "reminder_after",
    "invite_expiry",
    "knock_policy",
    "block_action",
    "management_room_id",
    "management_notify",
    "deny_message",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForm {
    room: String,
    #[serde(default)]
    form_field: Option<String>,
    #[serde(default)]
    honeypot_fields: Option<Value>,
    #[serde(default)]
    thank_you_url: Option<String>,
}

/// The name of a form's own copy of a global secret: `TALLY_SIGNING_SECRET` for form `join-us`
/// is `TALLY_SIGNING_SECRET_JOIN_US`.
pub fn secret_name(global: &str, form_id: &str) -> String {
    let suffix: String = form_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{global}_{suffix}")
}

fn object(name: &str, text: Option<&str>, problems: &mut Vec<Problem>) -> BTreeMap<String, Value> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return BTreeMap::new();
    };
    if text.len() > MAX_VAR_BYTES {
        problems.push(Problem {
            name: name.into(),
            fix: format!(
                "it is {} bytes; Cloudflare allows {MAX_VAR_BYTES} per variable (a secret too) \
                 on the free plan: shorten it (short aliases and form ids, messages left to \
                 the global variables)",
                text.len()
            ),
        });
    }
    match serde_json::from_str::<BTreeMap<String, Value>>(text) {
        Ok(map) => map,
        Err(e) => {
            problems.push(Problem {
                name: name.into(),
                fix: format!("it must be a JSON object (or a TOML table in [vars]): {e}"),
            });
            BTreeMap::new()
        }
    }
}

/// Parses both variables. `default_room` is `NEW_ROOM_ID`'s room, if set; `lookup` reads a
/// form's own secrets; `global` are the deployment's secrets, which forms inherit.
pub fn parse(
    rooms: Option<&str>,
    forms: Option<&str>,
    default_room: Option<&RoomId>,
    lookup: &dyn Fn(&str) -> Option<String>,
    global: &Secrets,
) -> Result<Deployment, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut out = Deployment::default();
    for (alias, v) in object("KNOCK_ROOMS", rooms, &mut problems) {
        let at = |key: &str| format!("KNOCK_ROOMS.{alias}.{key}");
        let Some(entry) = v.as_object() else {
            problems.push(Problem {
                name: format!("KNOCK_ROOMS.{alias}"),
                fix: "each room is an object like {\"room_id\": \"!abc:example.org\"}".into(),
            });
            continue;
        };
        let room_id = match entry.get("room_id").and_then(Value::as_str) {
            Some(id) => match RoomId::parse(id) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(Problem {
                        name: at("room_id"),
                        fix: format!("not a room ID ({e}); it looks like !abc123:example.org"),
                    });
                    continue;
                }
            },
            None => {
                problems.push(Problem {
                    name: at("room_id"),
                    fix: "every room needs its room ID".into(),
                });
                continue;
            }
        };
        let space = match entry.get("space") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                problems.push(Problem {
                    name: at("space"),
                    fix: "true or false".into(),
                });
                false
            }
        };
        let children = match entry.get("rooms") {
            None => None,
            Some(Value::Array(ids)) if space => {
                let mut rooms = Vec::new();
                for id in ids {
                    match id.as_str().map(RoomId::parse) {
                        Some(Ok(r)) => rooms.push(r),
                        _ => problems.push(Problem {
                            name: at("rooms"),
                            fix: "a list of the space's child room IDs".into(),
                        }),
                    }
                }
                Some(rooms)
            }
            Some(_) => {
                problems.push(Problem {
                    name: at("rooms"),
                    fix: "only a space (\"space\": true) lists child rooms, as an array of IDs"
                        .into(),
                });
                None
            }
        };
        let mut settings = BTreeMap::new();
        for (k, v) in entry {
            match k.as_str() {
                "room_id" | "space" | "rooms" => {}
                k if ROOM_KEYS.contains(&k) => {
                    settings.insert(k.to_owned(), v.clone());
                }
                other => problems.push(Problem {
                    name: at(other),
                    fix: format!(
                        "unknown key; a room takes room_id, space, rooms, {}",
                        ROOM_KEYS.join(", ")
                    ),
                }),
            }
        }
        out.rooms.push(RoomEntry {
            alias,
            room_id,
            space,
            children,
            settings,
        });
    }

    let mut secret_owner: BTreeMap<String, String> = BTreeMap::new();
    for (id, v) in object("KNOCK_FORMS", forms, &mut problems) {
        let at = |key: &str| format!("KNOCK_FORMS.{id}.{key}");
        // Two ids that map to one secret name could never have secrets of their own.
        let own = secret_name("WEBHOOK_SECRET", &id);
        if let Some(other) = secret_owner.insert(own.clone(), id.clone()) {
            problems.push(Problem {
                name: format!("KNOCK_FORMS.{id}"),
                fix: format!(
                    "forms {other:?} and {id:?} would share secret names like {own}: rename one"
                ),
            });
        }
        let raw: RawForm = match serde_json::from_value(v) {
            Ok(r) => r,
            Err(e) => {
                problems.push(Problem {
                    name: format!("KNOCK_FORMS.{id}"),
                    fix: format!(
                        "a form is {{\"room\": <alias or room ID>, \"form_field\"?, \
                         \"honeypot_fields\"?, \"thank_you_url\"?}}: {e}"
                    ),
                });
                continue;
            }
        };
        let room = out
            .rooms
            .iter()
            .find(|r| r.alias == raw.room)
            .map(|r| r.room_id.clone())
            .or_else(|| RoomId::parse(&raw.room).ok());
        let Some(room) = room else {
            problems.push(Problem {
                name: at("room"),
                fix: "name a room of KNOCK_ROOMS by its alias, or give a room ID".into(),
            });
            continue;
        };
        let honeypot_fields = match raw.honeypot_fields {
            None => None,
            Some(Value::String(s)) => Some(
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            Some(Value::Array(a)) => Some(
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            ),
            Some(_) => {
                problems.push(Problem {
                    name: at("honeypot_fields"),
                    fix: "a list of field names, or one comma-separated string".into(),
                });
                None
            }
        };
        // A form with a signing or shared secret of its own accepts only its own: none of the
        // deployment's signing secrets is valid for it. The Turnstile key is no proof of origin,
        // so it is inherited unless the form has its own.
        let own = |name: &str| {
            lookup(&secret_name(name, &id))
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mine = Secrets {
            tally: own("TALLY_SIGNING_SECRET"),
            typeform: own("TYPEFORM_SIGNING_SECRET"),
            formspree: own("FORMSPREE_SIGNING_SECRET"),
            shared: own("WEBHOOK_SECRET"),
            turnstile: own("TURNSTILE_SECRET_KEY"),
        };
        let has_own = mine.tally.is_some()
            || mine.typeform.is_some()
            || mine.formspree.is_some()
            || mine.shared.is_some();
        let secrets = if has_own {
            Secrets {
                turnstile: mine.turnstile.clone().or_else(|| global.turnstile.clone()),
                ..mine
            }
        } else {
            Secrets {
                turnstile: mine.turnstile.or_else(|| global.turnstile.clone()),
                ..global.clone()
            }
        };
        out.forms.push(FormEntry {
            id,
            room,
            form_field: raw.form_field.filter(|f| !f.trim().is_empty()),
            honeypot_fields,
            thank_you_url: raw.thank_you_url.filter(|u| !u.trim().is_empty()),
            secrets,
        });
    }
    if out.forms.iter().all(|f| f.id != "default") {
        if let Some(room) = default_room {
            out.forms.push(FormEntry {
                id: "default".into(),
                room: room.clone(),
                form_field: None,
                honeypot_fields: None,
                thank_you_url: None,
                secrets: global.clone(),
            });
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

impl Deployment {
    /// The form a delivery is for: `/invite_from_form/{id}`, or `default` without an id. An
    /// unknown id is `None`, which the route answers like a wrong secret.
    pub fn form(&self, id: Option<&str>) -> Option<&FormEntry> {
        let id = id.unwrap_or("default");
        self.forms.iter().find(|f| f.id == id)
    }

    /// A room by alias or room ID.
    pub fn room(&self, alias_or_id: &str) -> Option<&RoomEntry> {
        self.rooms
            .iter()
            .find(|r| r.alias == alias_or_id || r.room_id.as_str() == alias_or_id)
    }
}

/// Warnings for `GET /`: a deployment variable close to Cloudflare's 5 KB per variable (from
/// 80 % on; over it is a configuration problem).
pub fn size_warnings(get: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    ["KNOCK_ROOMS", "KNOCK_FORMS"]
        .iter()
        .filter_map(|name| {
            let len = get(name)?.len();
            (len * 5 >= MAX_VAR_BYTES * 4 && len <= MAX_VAR_BYTES).then(|| {
                format!(
                    "{name} is {len} bytes of the {MAX_VAR_BYTES} Cloudflare allows per variable \
                     on the free plan"
                )
            })
        })
        .collect()
}

/// A short, stable name for a room where its ID must not appear (transaction and delivery
/// keys, the notices of the management room): the first 8 bytes of its SHA-256, in hex.
pub fn room_key(room: &RoomId) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(room.as_str().as_bytes());
    hex::encode(&digest[..8])
}

/// Which rooms (indexes into [`Site::rooms`]) cron run number `turn` calls: all when they fit in
/// `per_run`, else a window that moves on each run, so every room gets its turn.
pub fn cron_window(rooms: usize, per_run: usize, turn: usize) -> Vec<usize> {
    if rooms <= per_run {
        return (0..rooms).collect();
    }
    let start = (turn * per_run) % rooms;
    (0..per_run).map(|k| (start + k) % rooms).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global() -> Secrets {
        Secrets {
            tally: Some("global-tally".into()),
            shared: Some("global-shared".into()),
            ..Default::default()
        }
    }

    fn none(_: &str) -> Option<String> {
        None
    }

    fn names(p: &[Problem]) -> Vec<&str> {
        p.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn new_room_id_alone_is_a_complete_setup_with_a_default_form() {
        let room = RoomId::parse("!one:x").unwrap();
        let d = parse(None, None, Some(&room), &none, &global()).unwrap();
        let f = d.form(None).expect("the default form");
        assert_eq!(f.room, room);
        assert_eq!(f.secrets, global());
        assert!(d.form(Some("other")).is_none());
        assert!(parse(None, None, None, &none, &global())
            .unwrap()
            .form(None)
            .is_none());
    }

    #[test]
    fn forms_point_at_rooms_by_alias_or_id_and_inherit_the_globals() {
        let rooms = r#"{"main": {"room_id": "!main:x", "welcome_message": "Hi"},
                        "hq": {"room_id": "!space:x", "space": true, "rooms": ["!a:x", "!b:x"]}}"#;
        let forms = r#"{"join-us": {"room": "main", "form_field": "Matrix"},
                        "team": {"room": "hq", "honeypot_fields": ["website", "url"]},
                        "raw": {"room": "!direct:x"}}"#;
        let d = parse(Some(rooms), Some(forms), None, &none, &global()).unwrap();
        assert_eq!(d.form(Some("join-us")).unwrap().room.as_str(), "!main:x");
        assert_eq!(
            d.form(Some("join-us")).unwrap().form_field.as_deref(),
            Some("Matrix")
        );
        assert_eq!(d.form(Some("raw")).unwrap().room.as_str(), "!direct:x");
        let hq = d.room("hq").unwrap();
        assert!(hq.space);
        assert_eq!(hq.children.as_ref().map(Vec::len), Some(2));
        assert_eq!(d.room("!main:x").unwrap().settings["welcome_message"], "Hi");
        assert_eq!(
            d.form(Some("team")).unwrap().honeypot_fields,
            Some(vec!["website".to_owned(), "url".to_owned()])
        );
    }

    #[test]
    fn a_form_with_its_own_secret_accepts_only_that_one() {
        let forms = r#"{"join-us": {"room": "!a:x"}, "other": {"room": "!b:x"}}"#;
        let lookup =
            |name: &str| (name == "TALLY_SIGNING_SECRET_JOIN_US").then(|| "form-tally".to_owned());
        let d = parse(None, Some(forms), None, &lookup, &global()).unwrap();
        let own = &d.form(Some("join-us")).unwrap().secrets;
        assert_eq!(own.tally.as_deref(), Some("form-tally"));
        assert_eq!(
            own.shared, None,
            "no secret of the deployment's is valid for a form with its own"
        );
        let other = &d.form(Some("other")).unwrap().secrets;
        assert_eq!(other.tally.as_deref(), Some("global-tally"));
        assert_eq!(
            secret_name("WEBHOOK_SECRET", "join-us.v2"),
            "WEBHOOK_SECRET_JOIN_US_V2"
        );
    }

    #[test]
    fn problems_name_the_entry_and_the_key() {
        let rooms = r#"{"bad": {"room_id": "nope"}, "missing": {}, "typo": {"room_id": "!t:x",
                        "welcom_message": "x"}, "notspace": {"room_id": "!n:x", "rooms": ["!c:x"]}}"#;
        let forms = r#"{"a-b": {"room": "nowhere"}, "a_b": {"room": "!x:x"}, "odd": {"room": "!x:x", "colour": 1}}"#;
        let err = parse(Some(rooms), Some(forms), None, &none, &global()).unwrap_err();
        let n = names(&err);
        for want in [
            "KNOCK_ROOMS.bad.room_id",
            "KNOCK_ROOMS.missing.room_id",
            "KNOCK_ROOMS.typo.welcom_message",
            "KNOCK_ROOMS.notspace.rooms",
            "KNOCK_FORMS.a-b.room",
            "KNOCK_FORMS.a_b",
            "KNOCK_FORMS.odd",
        ] {
            assert!(n.contains(&want), "{want} in {n:?}");
        }
        assert!(
            err.iter().all(|p| !p.fix.contains("!x:x")),
            "a fix never shows a value"
        );
    }

    #[test]
    fn a_variable_must_be_a_json_object_within_the_free_plan_size() {
        let err = parse(Some("[1, 2]"), None, None, &none, &global()).unwrap_err();
        assert_eq!(names(&err), vec!["KNOCK_ROOMS"]);
        let big = format!(
            r#"{{"r": {{"room_id": "!r:x", "welcome_message": "{}"}}}}"#,
            "x".repeat(6000)
        );
        let err = parse(Some(&big), None, None, &none, &global()).unwrap_err();
        assert!(err[0].fix.contains("5120 per variable"), "{err:?}");
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn new_room_id_alone_is_still_a_complete_one_room_setup() {
        let vars = [
            ("NEW_ROOM_ID", "!one:x"),
            ("WELCOME_MESSAGE", "hi"),
            ("MATRIX_ACCESS_TOKEN", "t"),
        ];
        let site = Site::load(&env(&vars)).unwrap();
        let room = RoomId::parse("!one:x").unwrap();
        assert_eq!(site.default_room(), Some(room.clone()));
        assert_eq!(site.rooms(), vec![room.clone()]);
        assert_eq!(site.label(&room), "default");
        let cfg = site.form_config(None, &env(&vars)).unwrap().unwrap();
        assert_eq!(cfg.room_id, room);
        assert_eq!(cfg.watch.welcome_message.as_deref(), Some("hi"));
        assert!(site.form_config(Some("nope"), &env(&vars)).is_none());
        // Nothing configured at all names the one-room setting.
        let p = Site::load(&env(&[])).unwrap_err();
        assert_eq!(p.missing(), vec!["NEW_ROOM_ID", "MATRIX_ACCESS_TOKEN"]);
    }

    #[test]
    fn each_room_inherits_the_globals_and_overrides_its_own_keys() {
        let rooms = r#"{"lobby": {"room_id": "!l:x", "welcome_message": "Welcome to the lobby",
                        "reminder_message": null, "invite_expiry": "2d"},
                       "dev": {"room_id": "!d:x", "knock_policy": "manual"}}"#;
        let forms = r#"{"join": {"room": "lobby", "form_field": "handle"},
                       "hackers": {"room": "dev", "thank_you_url": "https://example.org/thanks"}}"#;
        let vars = [
            ("KNOCK_ROOMS", rooms),
            ("KNOCK_FORMS", forms),
            ("WELCOME_MESSAGE", "Hello"),
            ("FORM_FIELD", "matrix"),
            ("TALLY_SIGNING_SECRET", "global"),
            ("TALLY_SIGNING_SECRET_HACKERS", "own"),
            ("MATRIX_ACCESS_TOKEN", "t"),
        ];
        let get = env(&vars);
        let site = Site::load(&get).unwrap();
        let lobby = RoomId::parse("!l:x").unwrap();
        let dev = RoomId::parse("!d:x").unwrap();
        assert_eq!(site.rooms(), vec![dev.clone(), lobby.clone()]);
        assert_eq!(site.resolve("lobby"), Some(lobby.clone()));
        assert_eq!(site.resolve("!d:x"), Some(dev.clone()));
        assert_eq!(
            site.resolve("!elsewhere:x"),
            None,
            "only the deployment's rooms"
        );
        assert_eq!(site.label(&dev), "dev");
        let l = site.config_for(&lobby, &get).unwrap();
        assert_eq!(
            l.watch.welcome_message.as_deref(),
            Some("Welcome to the lobby")
        );
        assert_eq!(l.watch.reminder_message, None, "null turns a message off");
        assert_eq!(l.watch.invite_expiry_ms, 2 * 86_400_000);
        let d = site.config_for(&dev, &get).unwrap();
        assert_eq!(
            d.watch.welcome_message.as_deref(),
            Some("Hello"),
            "inherited"
        );
        assert_eq!(
            d.watch.knock_policy,
            crate::domain::watchdog::KnockPolicy::Manual
        );
        let join = site.form_config(Some("join"), &get).unwrap().unwrap();
        assert_eq!(
            (join.room_id.as_str(), join.form_field.as_deref()),
            ("!l:x", Some("handle"))
        );
        assert_eq!(join.secrets.tally.as_deref(), Some("global"));
        let hackers = site.form_config(Some("hackers"), &get).unwrap().unwrap();
        assert_eq!(hackers.form_field.as_deref(), Some("matrix"), "inherited");
        assert_eq!(hackers.secrets.tally.as_deref(), Some("own"));
        assert_eq!(
            hackers.thank_you_url.as_deref(),
            Some("https://example.org/thanks")
        );
        // No `default` form and no NEW_ROOM_ID: the first room by alias is the default room.
        assert_eq!(site.default_room(), Some(dev));
        assert!(site.form_config(None, &get).is_none(), "no default form");
        // A bad per-room value is named like the global variable it stands for.
        let bad = r#"{"lobby": {"room_id": "!l:x", "invite_expiry": "soon"}}"#;
        let vars = [("KNOCK_ROOMS", bad), ("MATRIX_ACCESS_TOKEN", "t")];
        let site = Site::load(&env(&vars)).unwrap();
        let p = site
            .config_for(&RoomId::parse("!l:x").unwrap(), &env(&vars))
            .unwrap_err();
        assert_eq!(p.invalid(), vec!["INVITE_EXPIRY"]);
    }

    #[test]
    fn cron_calls_every_room_or_takes_turns_past_the_budget() {
        assert_eq!(cron_window(3, 40, 7), vec![0, 1, 2]);
        let mut seen = std::collections::BTreeSet::new();
        for turn in 0..3 {
            let w = cron_window(100, 40, turn);
            assert_eq!(w.len(), 40);
            seen.extend(w);
        }
        assert_eq!(seen.len(), 100, "three runs reach every one of 100 rooms");
    }

    #[test]
    fn get_warns_as_a_deployment_variable_nears_the_limit() {
        let near = "x".repeat(4_200);
        let small = "{}".to_owned();
        let get = |name: &str| match name {
            "KNOCK_ROOMS" => Some(near.clone()),
            "KNOCK_FORMS" => Some(small.clone()),
            _ => None,
        };
        let w = size_warnings(&get);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("KNOCK_ROOMS is 4200 bytes"), "{w:?}");
    }

    #[test]
    fn a_space_is_configured_with_its_children_and_they_are_rooms_of_the_deployment() {
        let rooms = r#"{"hub": {"room_id": "!s:x", "space": true, "rooms": ["!c1:x", "!c2:x"]},
                       "all": {"room_id": "!t:x", "space": true}}"#;
        let vars = [("KNOCK_ROOMS", rooms), ("MATRIX_ACCESS_TOKEN", "t")];
        let get = env(&vars);
        let site = Site::load(&get).unwrap();
        let id = |s: &str| RoomId::parse(s).unwrap();
        let hub = site.config_for(&id("!s:x"), &get).unwrap();
        assert_eq!(
            hub.space,
            Some(SpaceTarget {
                children: Some(vec![id("!c1:x"), id("!c2:x")])
            })
        );
        let all = site.config_for(&id("!t:x"), &get).unwrap();
        assert_eq!(all.space, Some(SpaceTarget { children: None }));
        assert_eq!(site.config_for(&id("!c1:x"), &get).unwrap().space, None);
        let rooms = site.rooms();
        assert!(rooms.contains(&id("!c2:x")), "listed children are served");
        assert_eq!(site.label(&id("!c2:x")), "hub/2");
        assert_eq!(site.resolve("hub/1"), Some(id("!c1:x")));
    }
}
