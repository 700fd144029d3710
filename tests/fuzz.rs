//! Property-based fuzzing of every parser that reads untrusted input: webhook bodies and their
//! content types, Matrix IDs, signature headers, block-list text and names, homeserver replies
//! and configuration values. Every target must never panic, whatever it is fed, and the
//! properties its module documents must hold.
//!
//! Why proptest and not `cargo fuzz`: `cargo fuzz` (libFuzzer) needs a nightly toolchain, and
//! this project builds on stable Rust only. Proptest is coverage-blind, but it is bounded,
//! deterministic per seed, shrinks a failure to a small input, and runs in CI as a plain test.
//!
//! Run length: each property runs `KNOCK_FUZZ_CASES` cases (default [`DEFAULT_CASES`], sized so
//! that the whole `cargo test --test fuzz` stays well under a minute in the debug profile; the
//! few costly properties run half as many). The seed is fixed, so CI always runs the same cases;
//! set `PROPTEST_RNG_SEED=<u64>` to explore others. For a long local run:
//!
//! ```text
//! KNOCK_FUZZ_CASES=100000 cargo test --release --test fuzz
//! ```
//!
//! Corpus: `tests/fuzz_corpus/` holds interesting inputs, one per file (any name, any
//! extension, the file's exact bytes are the input), and so does `tests/fixtures/intake/`. Every run replays each of them through every
//! target ([`check_everything`]) in addition to the generated cases. When a generated case finds a
//! bug, save the shrunk input there as a file so it stays a regression case. Proptest also records
//! the seed of a failure on its own (for an integration test, in
//! `tests/fuzz.proptest-regressions`), and replays it first on the next run.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::RngSeed;
use serde_json::{json, Map, Number, Value};

use knock::domain::blocklist::{
    display_readings, family_key, family_readings, fold_free_text, glob_match, osa_distance,
    BlockIndex, BlockList, Entry, EntryKind, LinearScan, MatchRule,
};
use knock::domain::config::{parse_duration_ms, Config, Problems};
use knock::domain::form::{
    body_kind, parse_submission, BodyKind, Boundary, FormError, Platform, Submission,
};
use knock::domain::mxid::{is_valid_server_name, RoomId, UserId, MAX_USER_ID_BYTES};
use knock::domain::signature::{
    check_bearer, parse_formspree_header, sign_base64, sign_formspree, verify, verify_formspree,
    verify_tally, verify_typeform, AdminAuth, AuthError, Presented, Proof, Secrets,
    FORMSPREE_TOLERANCE_SECS,
};
use knock::matrix::{classify, Failure, HttpResponse, TransportError};

// ---------------------------------------------------------------------------------------------
// Run length
// ---------------------------------------------------------------------------------------------

/// Cases per property when `KNOCK_FUZZ_CASES` is not set.
const DEFAULT_CASES: u32 = 256;

/// The RNG seed when `PROPTEST_RNG_SEED` is not set.
const DEFAULT_SEED: u64 = 0x4b4e_4f43_4b21;

fn fuzz_cases() -> u32 {
    std::env::var("KNOCK_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_CASES)
}

/// The proptest configuration of a property that costs `weight` times an ordinary one: it runs
/// `1 / weight` of the cases.
fn config(weight: u32) -> ProptestConfig {
    let base = ProptestConfig::default();
    // A fixed seed keeps CI deterministic; `PROPTEST_RNG_SEED=<u64>` explores other cases.
    let rng_seed = match std::env::var_os("PROPTEST_RNG_SEED") {
        Some(_) => base.rng_seed,
        None => RngSeed::Fixed(DEFAULT_SEED),
    };
    ProptestConfig {
        cases: (fuzz_cases() / weight).max(1),
        rng_seed,
        ..base
    }
}

// ---------------------------------------------------------------------------------------------
// Input generators
// ---------------------------------------------------------------------------------------------

/// Characters that have broken, or are likely to break, text handling somewhere: separators of
/// the grammars under test, white space and line breaks, zero-width and bidi controls, case
/// mappings that change length, confusables, compatibility forms and other scripts' digits.
const SPECIAL_CHARS: &[char] = &[
    '@', ':', '.', '*', '?', '#', '$', '|', '!', '/', '+', '=', '_', '-', '[', ']', '%', '&', ';',
    ',', '"', '\\', '{', '}', ' ', '\t', '\r', '\n', '\0', '\u{7f}', '\u{85}', '\u{a0}',
    '\u{200b}', '\u{200d}', '\u{202e}', '\u{2028}', '\u{feff}', '\u{fffd}', 'İ', 'ı', 'ß', 'ẞ',
    'ﬀ', 'ǅ', 'Σ', 'ς', 'Ⱥ', 'K', 'а', 'о', 'е', 'ѕ', 'Ａ', 'ａ', '＠', 'Ⓐ', 'ⓐ', '①', '٣', '０',
    '１', '\u{301}', '\u{307}', '\u{fdfa}', '𝐀', '🙂', 'l', 'I', '1', '0', 'O', 'o', 'é', 'é',
];

fn interesting_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        4 => proptest::char::range(' ', '~'),
        4 => select(SPECIAL_CHARS),
        1 => proptest::char::range('\0', '\u{1f}'),
    ]
}

/// Any text of up to `max` characters, biased towards [`SPECIAL_CHARS`] and ASCII.
fn text(max: usize) -> impl Strategy<Value = String> {
    vec(interesting_char(), 0..=max).prop_map(|cs| cs.into_iter().collect())
}

/// Text in the Matrix ID alphabet, with a few characters that must be refused and the prefixes
/// the parser unwraps.
fn mxid_like() -> impl Strategy<Value = String> {
    let grammar: Vec<char> = "abcxyzABCXYZ0189._=-/+".chars().collect();
    let bad: Vec<char> = " \t\r\n\0é#!?%А\u{200b}".chars().collect();
    let ch = prop_oneof![
        10 => select(grammar),
        3 => Just(':'),
        1 => Just('@'),
        1 => Just('['),
        1 => Just(']'),
        1 => select(bad),
    ];
    let prefix = select(vec![
        "",
        "",
        "@",
        "@",
        " @",
        "https://matrix.to/#/@",
        "http://matrix.to/#/",
        "matrix.to/#/@",
        "matrix:u/",
    ]);
    let suffix = select(vec!["", "", "", " ", ":8448", "?via=x.org", "/", "\n"]);
    (prefix, vec(ch, 0..40), suffix)
        .prop_map(|(p, body, s)| format!("{p}{}{s}", body.into_iter().collect::<String>()))
}

fn localpart() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._=/+-]{1,40}"
}

/// A server name built from the spec's grammar: DNS name, IPv4 or bracketed IPv6, optional port.
fn server_name() -> impl Strategy<Value = String> {
    let dns = vec("[a-zA-Z0-9-]{1,12}", 1..5).prop_map(|labels| labels.join("."));
    let ipv4 = any::<[u8; 4]>().prop_map(|b| format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]));
    let ipv6 = "[0-9a-fA-F:.]{2,45}".prop_map(|l| format!("[{l}]"));
    let host = prop_oneof![4 => dns, 1 => ipv4, 1 => ipv6];
    (host, proptest::option::of("[0-9]{1,5}")).prop_map(|(h, port)| match port {
        Some(p) => format!("{h}:{p}"),
        None => h,
    })
}

/// A valid user ID, as a person might type it (any case in the localpart).
fn valid_user_id() -> impl Strategy<Value = UserId> {
    (localpart(), server_name()).prop_filter_map("longer than 255 bytes", |(l, s)| {
        UserId::parse(&format!("@{l}:{s}")).ok()
    })
}

/// Key names a form payload may use, the meaningful ones most often.
fn json_key() -> impl Strategy<Value = String> {
    let known = select(vec![
        "matrix_id",
        "user_id",
        "mxid",
        "Matrix ID",
        "MATRIX",
        "website",
        "eventId",
        "event_id",
        "responseId",
        "key",
        "label",
        "value",
        "type",
        "field",
        "id",
        "ref",
        "choice",
        "data",
        "fields",
        "form_response",
        "answers",
        "hidden",
        "definition",
        "title",
        "token",
        "submission",
        "questions",
        "urlParameters",
        "submissionId",
        "keys",
        "form",
        "namedValues",
        "",
    ])
    .prop_map(str::to_owned);
    prop_oneof![2 => known, 1 => text(12)]
}

fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("not finite", |f| Number::from_f64(f).map(Value::Number)),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        2 => json_number(),
        3 => text(24).prop_map(Value::String),
        3 => mxid_like().prop_map(Value::String),
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> BoxedStrategy<Value> {
    json_leaf()
        .prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Value::Array),
                vec((json_key(), inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
}

/// A JSON value, or nothing at all (the key is left out).
fn maybe(s: impl Strategy<Value = Value>) -> impl Strategy<Value = Option<Value>> {
    proptest::option::weighted(0.8, s)
}

fn put(obj: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        obj.insert(key.to_owned(), v);
    }
}

fn string_or_any() -> impl Strategy<Value = Value> {
    prop_oneof![3 => json_key().prop_map(Value::String), 1 => json_value()]
}

fn answer_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => mxid_like().prop_map(Value::String),
        2 => json_value(),
        1 => vec(json_leaf(), 0..4).prop_map(Value::Array),
    ]
}

/// A Tally-shaped payload, with every part optional or of the wrong type now and then.
fn tally_payload() -> impl Strategy<Value = Value> {
    let field = (
        maybe(string_or_any()),
        maybe(string_or_any()),
        maybe(select(vec!["INPUT_TEXT", "HIDDEN_FIELDS", "CHECKBOXES", ""]).prop_map(Value::from)),
        maybe(answer_value()),
    )
        .prop_map(|(key, label, kind, value)| {
            let mut f = Map::new();
            put(&mut f, "key", key);
            put(&mut f, "label", label);
            put(&mut f, "type", kind);
            put(&mut f, "value", value);
            Value::Object(f)
        });
    let fields = vec(prop_oneof![8 => field, 1 => json_value()], 0..6);
    (maybe(string_or_any()), maybe(string_or_any()), fields).prop_map(
        |(event, response, fields)| {
            let mut data = Map::new();
            put(&mut data, "responseId", response);
            data.insert("fields".into(), Value::Array(fields));
            let mut top = Map::new();
            put(&mut top, "eventId", event);
            top.insert("eventType".into(), json!("FORM_RESPONSE"));
            top.insert("data".into(), Value::Object(data));
            Value::Object(top)
        },
    )
}

/// A Typeform-shaped payload: answers of every type, field definitions, hidden fields.
fn typeform_payload() -> impl Strategy<Value = Value> {
    let kinds = select(vec![
        "text", "email", "choice", "choices", "number", "boolean", "url", "", "field",
    ]);
    let answer = (
        kinds,
        maybe(string_or_any()),
        maybe(string_or_any()),
        answer_value(),
        maybe(answer_value()),
    )
        .prop_map(|(kind, id, reference, value, label)| {
            let mut field = Map::new();
            put(&mut field, "id", id);
            put(&mut field, "ref", reference);
            let mut a = Map::new();
            a.insert("type".into(), Value::from(kind));
            a.insert("field".into(), Value::Object(field));
            if kind == "choice" {
                let mut choice = Map::new();
                put(&mut choice, "label", label);
                a.insert("choice".into(), Value::Object(choice));
            } else if !kind.is_empty() {
                a.insert(kind.into(), value);
            }
            Value::Object(a)
        });
    let definition = vec((maybe(string_or_any()), maybe(string_or_any())), 0..4).prop_map(|fs| {
        let fields = fs
            .into_iter()
            .map(|(id, title)| {
                let mut f = Map::new();
                put(&mut f, "id", id);
                put(&mut f, "title", title);
                Value::Object(f)
            })
            .collect();
        json!({ "fields": Value::Array(fields) })
    });
    let hidden = vec((json_key(), answer_value()), 0..4)
        .prop_map(|kv| Value::Object(kv.into_iter().collect()));
    (
        maybe(string_or_any()),
        maybe(string_or_any()),
        maybe(definition),
        maybe(hidden),
        vec(prop_oneof![8 => answer, 1 => json_value()], 0..6),
    )
        .prop_map(|(event, token, definition, hidden, answers)| {
            let mut resp = Map::new();
            put(&mut resp, "token", token);
            put(&mut resp, "definition", definition);
            put(&mut resp, "hidden", hidden);
            resp.insert("answers".into(), Value::Array(answers));
            let mut top = Map::new();
            put(&mut top, "event_id", event);
            top.insert("form_response".into(), Value::Object(resp));
            Value::Object(top)
        })
}

/// Any JSON object: what a custom form backend might post.
fn generic_payload() -> impl Strategy<Value = Value> {
    vec((json_key(), answer_value()), 0..8).prop_map(|kv| Value::Object(kv.into_iter().collect()))
}

/// Which platform the module doc says a JSON object is read as.
fn expected_platform(v: &Value) -> Platform {
    let obj = v.as_object().expect("payloads are objects");
    let tally = obj
        .get("data")
        .and_then(Value::as_object)
        .and_then(|d| d.get("fields"))
        .is_some_and(Value::is_array);
    let typeform = obj.get("form_response").is_some_and(Value::is_object);
    let submission = obj.get("submission").and_then(Value::as_object);
    let wrapped_fillout =
        submission.is_some_and(|s| s.get("questions").is_some_and(Value::is_array));
    let bare_fillout = submission.is_none()
        && obj.contains_key("submissionId")
        && obj.get("questions").is_some_and(Value::is_array);
    let formspree = submission.is_some()
        && (obj
            .get("keys")
            .is_some_and(|k| k.as_array().is_some_and(|k| k.iter().any(Value::is_string)))
            || obj.get("form").is_some_and(Value::is_string));
    if tally {
        Platform::Tally
    } else if typeform {
        Platform::Typeform
    } else if wrapped_fillout || bare_fillout {
        Platform::Fillout
    } else if formspree {
        Platform::Formspree
    } else if obj.get("namedValues").is_some_and(Value::is_object) {
        Platform::GoogleForms
    } else {
        Platform::Json
    }
}

/// One random edit of a byte string: flip, insert, delete or truncate.
fn mutate(bytes: &mut Vec<u8>, how: u8, at: usize, byte: u8) {
    if bytes.is_empty() {
        bytes.push(byte);
        return;
    }
    let at = at % bytes.len();
    match how % 4 {
        0 => bytes[at] ^= byte.max(1),
        1 => bytes.insert(at, byte),
        2 => {
            bytes.remove(at);
        }
        _ => bytes.truncate(at),
    }
}

/// Field names that neither mention "matrix" nor are a generic ID key.
fn neutral_name() -> impl Strategy<Value = String> {
    "[a-z][a-z _]{0,14}".prop_filter("names a Matrix ID field", |n| {
        !n.contains("matrix") && !["user_id", "mxid"].contains(&n.trim())
    })
}

/// Text that the ID detection can never take for an ID (it has no `@`).
fn neutral_value() -> impl Strategy<Value = String> {
    text(20).prop_map(|t| t.replace('@', ""))
}

fn content_type() -> impl Strategy<Value = String> {
    let essence = select(vec![
        "application/json",
        "Application/JSON",
        "APPLICATION/JSON",
        "application/x-www-form-urlencoded",
        "application/vnd.api+json",
        "application/+json",
        "application/",
        "+json",
        "text/plain",
        "text/json",
        "multipart/form-data",
        "",
        " ",
    ]);
    let params = select(vec![
        "",
        "; charset=utf-8",
        ";charset=\"utf-8\"",
        "; boundary=x",
        ";",
        ";;;",
        "\r\nX-Injected: 1",
    ]);
    prop_oneof![
        2 => (essence, params, text(8)).prop_map(|(e, p, junk)| format!("{e}{p}{junk}")),
        1 => text(40),
    ]
}

/// A `t=..,v1=..` header, with values that are almost, but not quite, digits and hex.
fn formspree_like() -> impl Strategy<Value = String> {
    let t = prop_oneof![
        4 => "t=[0-9]{1,12}",
        1 => "t=[0-9]{0,14}",
        1 => "t=[+ -]?[0-9]{1,4}",
        1 => text(5).prop_map(|x| format!("t={x}")),
    ];
    let pair = prop_oneof![
        4 => "[0-9a-fA-F]{2}",
        1 => "[+][0-9a-fA-F]",
        1 => "[ +-][0-9a-f]",
        1 => "[0-9a-f][ g+_]",
        1 => "[0-9a-f]é",
    ];
    let v1 = vec(pair, 0..8).prop_map(|ps| format!("v1={}", ps.concat()));
    let junk = prop_oneof!["[a-z0-9]{1,3}=[a-z0-9=]{0,6}", "[tv1= ]{0,4}"];
    let part = prop_oneof![2 => v1, 1 => junk];
    (t, vec(part, 1..4), any::<usize>()).prop_map(|(t, mut parts, at)| {
        parts.insert(at % (parts.len() + 1), t);
        parts.join(",")
    })
}

fn signature_header() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        "t=[0-9]{0,14}",
        "t=[0-9a-f+ -]{0,6}",
        "v1=[0-9a-fA-F]{0,70}",
        "v1=[0-9a-f+ -]{0,8}",
        "v1=[0-9a-fé]{0,8}",
        "[a-z0-9]{0,3}=[a-z0-9=]{0,8}",
        "[tv1= ]{0,4}",
        text(10),
    ];
    prop_oneof![
        3 => formspree_like(),
        2 => vec(part, 0..5).prop_map(|ps| ps.join(",")),
        1 => "(sha256=)?[A-Za-z0-9+/=]{0,90}",
        1 => text(60),
    ]
}

/// A pattern that may be a glob, biased towards the length limit and its neighbours.
fn glob_like() -> impl Strategy<Value = String> {
    let clean: Vec<char> = "abcxyz019.-_=/+:@*?A".chars().collect();
    let dirty: Vec<char> = "ab*?# \té\u{0}".chars().collect();
    let chars = prop_oneof![
        3 => vec(select(clean.clone()), 260),
        1 => vec(prop_oneof![4 => select(clean), 1 => select(dirty)], 260),
    ];
    let len =
        prop_oneof![3 => 0usize..24, 1 => 240usize..=260, 1 => Just(254usize), 1 => Just(255usize)];
    let prefix = select(vec!["", "", "@", "*", "?", " "]);
    (prefix, len, chars).prop_map(|(p, len, cs)| p.chars().chain(cs).take(len).collect())
}

/// What an administrator might type as an entry: a user ID, a glob or a display name.
fn entry_text() -> impl Strategy<Value = String> {
    prop_oneof![mxid_like(), glob_like(), text(30)]
}

/// Arbitrary stored entries, as a corrupted or hand-edited KV document could hold them.
fn raw_entry() -> impl Strategy<Value = Entry> {
    let kind = select(vec![
        EntryKind::UserId,
        EntryKind::Glob,
        EntryKind::DisplayName,
    ]);
    let pattern = prop_oneof![mxid_like(), glob_like(), text(20), "[a-z0-9]{1,12}"];
    (kind, pattern, proptest::option::of(text(10)), any::<u64>()).prop_map(
        |(kind, pattern, reason, added_at)| Entry {
            pattern,
            kind,
            reason,
            added_at,
            reach: None,
        },
    )
}

fn retry_after() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        "[0-9]{1,25}",
        "-[0-9]{1,5}",
        "[0-9]{1,3}\\.[0-9]",
        Just("Wed, 21 Oct 2015 07:28:00 GMT".to_owned()),
        Just("0".to_owned()),
        text(12),
    ])
}

fn reply_body() -> impl Strategy<Value = String> {
    let errcode = select(vec![
        "M_LIMIT_EXCEEDED",
        "M_FORBIDDEN",
        "M_UNKNOWN_TOKEN",
        "",
    ]);
    let retry_ms = prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        json_number(),
        text(6).prop_map(Value::String),
        Just(Value::Null),
    ];
    let structured = (errcode, text(300), retry_ms).prop_map(|(e, error, ms)| {
        json!({ "errcode": e, "error": error, "retry_after_ms": ms }).to_string()
    });
    prop_oneof![
        2 => structured,
        1 => json_value().prop_map(|v| v.to_string()),
        1 => text(60),
        1 => Just(String::new()),
    ]
}

/// Every variable `Config::from_lookup` reads today.
const CONFIG_VARS: &[&str] = &[
    "NEW_ROOM_ID",
    "MATRIX_BASE_URL",
    "MATRIX_ACCESS_TOKEN",
    "API_KEY",
    "REQUEST_DELAY",
    "MATRIX_TIMEOUT",
    "FORM_FIELD",
    "HONEYPOT_FIELDS",
    "THANK_YOU_URL",
    "BLOCK_ACTION",
    "MAX_REQUESTS_PER_WINDOW",
    "WAVE_MAX_KNOCKS",
    "RATE_LIMIT_WINDOW",
    "WAVE_WINDOW",
    "TALLY_SIGNING_SECRET",
    "TYPEFORM_SIGNING_SECRET",
    "FORMSPREE_SIGNING_SECRET",
    "WEBHOOK_SECRET",
];

/// Marks a value that no problem report, summary or `Debug` output may ever show.
const MARKER: &str = "\u{1f511}";

fn duration_like() -> impl Strategy<Value = String> {
    "[ ]{0,2}-?[0-9]{0,25}(\\.[0-9]{0,4})?[ ]{0,2}(ms|s|m|h|d|w|S|)[ ]{0,2}"
}

fn config_value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => duration_like(),
        1 => "[0-9]{1,12}",
        1 => "!?[a-zA-Z0-9]{0,10}:?[a-z0-9.:\\[\\]]{0,12}",
        1 => "(https?://)?[a-z0-9./:]{0,20}",
        1 => select(vec!["kick", "Ban", " BAN ", "shun", "", "  "]).prop_map(str::to_owned),
        1 => "[a-z, ]{0,20}",
        2 => text(30),
        1 => text(10).prop_map(|t| format!("{t}{MARKER}")),
    ]
}

// ---------------------------------------------------------------------------------------------
// Checks: each takes one input, calls a target and asserts what its module documents. They are
// shared by the generated cases and the corpus replay.
// ---------------------------------------------------------------------------------------------

const LOCALPART_BYTES: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789._=-/+";

fn check_user_id(input: &str) {
    let Ok(id) = UserId::parse(input) else {
        return;
    };
    let s = id.as_str();
    assert!(s.len() <= MAX_USER_ID_BYTES, "{s:?} is over 255 bytes");
    assert_eq!(UserId::parse(s), Ok(id.clone()), "re-parsing {s:?}");
    assert_eq!(format!("@{}:{}", id.localpart(), id.server_name()), s);
    assert!(!id.localpart().is_empty());
    assert!(id.localpart().bytes().all(|b| LOCALPART_BYTES.contains(&b)));
    assert!(is_valid_server_name(id.server_name()), "{s:?}");
    assert!(s.bytes().all(|b| b.is_ascii_graphic()), "{s:?}");
    assert_eq!(id.to_string(), s);
    let json = serde_json::to_string(&id).expect("serialises");
    assert_eq!(serde_json::from_str::<UserId>(&json).ok(), Some(id));
}

fn check_room_id(input: &str) {
    let Ok(room) = RoomId::parse(input) else {
        return;
    };
    let s = room.as_str();
    assert!(s.len() <= MAX_USER_ID_BYTES && s.starts_with('!'), "{s:?}");
    assert!(s.bytes().all(|b| b.is_ascii_graphic()), "{s:?}");
    assert_eq!(RoomId::parse(s).ok().as_ref().map(RoomId::as_str), Some(s));
    assert!(!format!("{room:?}").contains(s));
}

fn check_server_name(input: &str) {
    if is_valid_server_name(input) {
        assert!(input.bytes().all(|b| b.is_ascii_graphic()), "{input:?}");
        if input.len() <= MAX_USER_ID_BYTES - 3 {
            assert!(UserId::parse(&format!("@a:{input}")).is_ok(), "{input:?}");
        }
    }
}

fn check_content_type(ct: &str) {
    let a = body_kind(Some(ct), b"{\"a\":1}");
    let b = body_kind(Some(ct), b"a=b");
    if ct.trim().is_empty() {
        return;
    }
    // A present header decides alone; the media type's case and other parameters do not
    // matter (a multipart boundary's case does, so only the kind is compared).
    assert_eq!(a, b, "{ct:?}");
    let kind = |r: &Result<BodyKind, FormError>| r.as_ref().map(std::mem::discriminant).ok();
    let upper = body_kind(Some(&ct.to_ascii_uppercase()), b"");
    assert_eq!(kind(&upper), kind(&a), "{ct:?}");
    assert_eq!(
        body_kind(Some(&format!("{ct}; charset=utf-8")), b""),
        a,
        "{ct:?}"
    );
    match a {
        Err(FormError::MissingBoundary) => assert_eq!(
            ct.split(';').next().map(|e| e.trim().to_ascii_lowercase()),
            Some("multipart/form-data".into())
        ),
        Err(e) => assert_eq!(e.status(), 415),
        Ok(_) => {}
    }
}

/// Everything a handler does with a parsed submission.
fn check_submission(s: &Submission, raw: &[u8], extra_name: &str) {
    let mut wanted: Vec<Option<&str>> = vec![None, Some(extra_name), Some(""), Some("matrix_id")];
    for f in s.fields.iter().take(4) {
        wanted.extend(f.names().map(Some));
    }
    for w in wanted {
        let text = s.matrix_id_text(w);
        match s.matrix_id(w) {
            Ok(id) => {
                let raw_id = text.expect("an ID comes from a field");
                assert_eq!(UserId::parse(raw_id), Ok(id.clone()));
                check_user_id(id.as_str());
            }
            Err(e) => {
                assert!(!e.message().is_empty());
                assert!(matches!(e.status(), 400 | 415));
            }
        }
    }
    let names: Vec<String> = s
        .fields
        .iter()
        .flat_map(|f| f.names().map(str::to_owned))
        .collect();
    s.honeypot_filled(&names);
    s.honeypot_filled(&[extra_name.to_owned(), "website".into()]);
    assert!(!s.honeypot_filled(&[]));
    let key = s.delivery_key(raw);
    assert_eq!(key, s.delivery_key(raw), "delivery keys are stable");
    match s.delivery_id.as_deref() {
        Some(id) if id.len() <= 128 => {
            assert_eq!(key, format!("{}:{id}", s.platform.as_str()));
        }
        _ => {
            assert!(key.starts_with("sha256:") && key.len() == 7 + 64, "{key:?}");
        }
    }
    for f in &s.fields {
        f.display_name();
    }
}

fn check_body(bytes: &[u8]) {
    let multipart = BodyKind::Multipart(Boundary::new("b").expect("a valid boundary"));
    for kind in [BodyKind::Json, BodyKind::UrlEncoded, multipart] {
        match parse_submission(kind, bytes) {
            Ok(s) => {
                if kind == BodyKind::UrlEncoded {
                    assert_eq!(s.platform, Platform::HtmlForm);
                    assert_eq!(s.delivery_id, None);
                }
                check_submission(&s, bytes, "Matrix ID");
            }
            Err(e) => {
                // A partial response is refused with 200: it is not a submission.
                assert!(matches!(e.status(), 400 | 200), "{e:?}");
                assert!(!e.message().is_empty());
            }
        }
    }
    if let Ok(kind) = body_kind(None, bytes) {
        if let Ok(s) = parse_submission(kind, bytes) {
            check_submission(&s, bytes, "matrix");
        }
    }
}

fn check_json_payload(v: &Value) {
    let bytes = serde_json::to_vec(v).expect("serialises");
    let s = parse_submission(BodyKind::Json, &bytes).expect("a JSON object always parses");
    assert_eq!(s.platform, expected_platform(v));
    check_submission(&s, &bytes, "matrix");
    assert_eq!(body_kind(None, &bytes), Ok(BodyKind::Json));
}

fn check_formspree_header(header: &str) {
    let Ok(parsed) = parse_formspree_header(header) else {
        return;
    };
    assert!(parsed.timestamp <= 999_999_999_999, "{header:?}");
    assert!(!parsed.signatures.is_empty());
    // Every `v1` value is hex, and decodes to the signature the parser kept, in order.
    let mut expected = Vec::new();
    for part in header.split(',') {
        if let Some(("v1", v)) = part.trim().split_once('=') {
            match hex::decode(v) {
                Ok(bytes) => expected.push(bytes),
                Err(_) => panic!("{header:?} was accepted with the non-hex v1 value {v:?}"),
            }
        }
    }
    assert_eq!(parsed.signatures, expected, "{header:?}");
}

/// A header nobody signed, against the secret `secret`: it must be refused without panicking.
fn check_signature_inputs(header: &str, body: &[u8]) {
    let secret = "fuzz-secret-never-used-to-sign";
    let now = 1_700_000_000;
    assert!(verify_tally(secret, header, body).is_err());
    assert!(verify_typeform(secret, header, body).is_err());
    assert!(verify_formspree(secret, header, body, now).is_err());
    check_formspree_header(header);
    let secrets = Secrets {
        tally: Some(secret.into()),
        typeform: Some(secret.into()),
        formspree: Some(secret.into()),
        shared: Some(secret.into()),
        turnstile: None,
    };
    let presented = Presented {
        tally_signature: Some(header),
        typeform_signature: Some(header),
        formspree_signature: Some(header),
        shared_secret: Some(header),
        shared_in_header: true,
    };
    if header != secret {
        assert!(verify(&secrets, &presented, body, now).is_err());
    }
    assert_eq!(
        verify(&Secrets::default(), &presented, body, now),
        Ok(Proof::Open)
    );
    if check_bearer(Some(secret), Some(header)) == AdminAuth::Allowed {
        assert!(header.contains(secret), "{header:?} was allowed");
    }
    let _ = check_bearer(Some(header), Some(header));
    let _ = check_bearer(Some(header), None);
    assert_eq!(check_bearer(None, Some(header)), AdminAuth::Disabled);
}

/// The normaliser's documented properties: idempotence, only letters and digits, no ASCII digit
/// left in a family key (each is stripped or read as a letter), no repeated letter, and output no
/// longer than the input.
fn check_name(s: &str) {
    let chars = s.chars().count();
    let key = family_key(s);
    assert_eq!(family_key(&key), key, "family_key is idempotent for {s:?}");
    assert!(key.chars().count() <= chars, "{s:?} -> {key:?}");
    assert!(key.chars().all(char::is_alphanumeric), "{s:?} -> {key:?}");
    assert!(!key.chars().any(|c| c.is_ascii_digit()), "{s:?} -> {key:?}");
    let kc: Vec<char> = key.chars().collect();
    assert!(kc.windows(2).all(|w| w[0] != w[1]), "{s:?} -> {key:?}");

    let folded = fold_free_text(s);
    assert_eq!(
        fold_free_text(&folded),
        folded,
        "fold_free_text is idempotent for {s:?}"
    );
    assert!(
        folded.chars().all(char::is_alphanumeric),
        "{s:?} -> {folded:?}"
    );
    // The longest fold of one character is 15 (U+FDFA); folding works per character.
    assert!(folded.chars().count() <= 18 * chars, "{s:?} -> {folded:?}");

    for (readings, of) in [
        (family_readings(s), s.to_owned()),
        (display_readings(s), folded),
    ] {
        assert!(
            !readings.is_empty() && readings.len() <= 9,
            "{s:?}: {readings:?}"
        );
        assert_eq!(readings[0], family_key(&of), "{s:?}: {readings:?}");
        for (i, r) in readings.iter().enumerate() {
            assert!(!readings[..i].contains(r), "{s:?}: {readings:?} repeats");
            assert!(r.chars().count() <= of.chars().count());
        }
    }
}

/// Optimal string alignment distance by the full textbook table: the reference for
/// [`osa_distance`].
fn osa_reference(a: &[char], b: &[char]) -> usize {
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// `s` with a few characters replaced, deleted or inserted (positions taken modulo its length).
fn edit_chars(s: &str, edits: &[(usize, u8, char)]) -> String {
    let mut cs: Vec<char> = s.chars().collect();
    for &(at, how, c) in edits {
        let at = at % (cs.len() + 1);
        match how % 3 {
            0 if at < cs.len() => cs[at] = c,
            1 if at < cs.len() => {
                cs.remove(at);
            }
            _ => cs.insert(at, c),
        }
    }
    cs.into_iter().collect()
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, char)>> {
    let letter = prop_oneof![
        interesting_char(),
        proptest::char::range('a', 'z'),
        proptest::char::range('а', 'я'),
        proptest::char::range('α', 'ω'),
    ];
    vec((any::<usize>(), any::<u8>(), letter), 0..3)
}

/// A display name with enough letters for near misses to count.
fn display_name_like() -> impl Strategy<Value = String> {
    prop_oneof![text(24), "[a-zA-Z0-9а-яА-Яα-ω _.-]{6,24}"]
}

/// Glob matching, by the obvious quadratic table: the reference for [`glob_match`].
fn glob_reference(p: &[u8], t: &[u8]) -> bool {
    let mut row = vec![false; t.len() + 1];
    row[0] = true;
    for &pc in p {
        let mut next = vec![false; t.len() + 1];
        if pc == b'*' {
            next[0] = row[0];
        }
        for j in 1..=t.len() {
            next[j] = match pc {
                b'*' => next[j - 1] || row[j],
                b'?' => row[j - 1],
                c => row[j - 1] && t[j - 1] == c,
            };
        }
        row = next;
    }
    row[t.len()]
}

fn timed<T>(what: &str, limit: Duration, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    assert!(took < limit, "{what} took {took:?}, over {limit:?}");
    out
}

fn check_glob(pattern: &[u8], text: &[u8]) {
    let limit = Duration::from_secs(5);
    let got = timed("glob_match", limit, || glob_match(pattern, text));
    if pattern.len() * text.len() <= 1 << 16 {
        assert_eq!(
            got,
            glob_reference(pattern, text),
            "{pattern:?} vs {text:?}"
        );
    }
}

/// An accepted entry is stable: validating its stored form again gives the same entry (the index
/// and every import validate stored entries again, so anything else would silently drop it).
fn check_entry(e: &Entry) {
    let again = Entry::new(&e.pattern, e.kind, e.reason.clone(), e.added_at);
    assert_eq!(
        again.as_ref(),
        Ok(e),
        "{e:?} is not accepted again as stored"
    );
    assert!(!e.pattern.is_empty());
    if e.kind == EntryKind::UserId {
        let id = UserId::parse(&e.pattern).expect("a user ID entry holds a user ID");
        assert_eq!(id.as_str().to_ascii_lowercase(), e.pattern);
    }
    if e.kind != EntryKind::DisplayName {
        assert!(e.pattern.len() <= MAX_USER_ID_BYTES, "{e:?}");
    }
    let index = BlockIndex::build(vec![e.clone()]);
    if e.kind == EntryKind::UserId {
        let id = UserId::parse(&e.pattern).unwrap();
        let v = index.check_user(&id).expect("an entry blocks its own ID");
        assert_eq!(v.rule, MatchRule::Exact);
        assert!(!v.explain().is_empty());
    }
    if e.kind == EntryKind::DisplayName {
        let v = index
            .check_display_name(&e.pattern)
            .expect("an entry blocks its own display name");
        assert_eq!(v.rule, MatchRule::DisplayName);
        assert!(!v.explain().is_empty());
    }
}

fn check_entry_text(s: &str) {
    for e in [
        Entry::parse(s, None, 1),
        Entry::parse(s, Some(s.to_owned()), 1),
        Entry::display_name(s, None, 1),
        Entry::new(s, EntryKind::Glob, None, 1),
        Entry::new(s, EntryKind::UserId, None, 1),
    ] {
        match e {
            Ok(e) => check_entry(&e),
            Err(err) => assert!(!err.message().is_empty()),
        }
    }
}

/// Lines the text format counts as entries: not blank, not a comment.
fn entry_lines(text: &str) -> usize {
    text.lines()
        .filter(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
        .count()
}

fn check_import_text(text: &str) {
    let mut list = BlockList::new();
    let report = list.import_text(text, 7);
    assert_eq!(
        report.added + report.duplicates + report.errors.len(),
        entry_lines(text),
        "every line is added, a duplicate, or reported: {text:?}"
    );
    assert_eq!(list.entries.len(), report.added);
    assert_eq!(list.version, u64::from(report.added > 0));
    let lines = text.lines().count();
    for e in &report.errors {
        assert!(e.line >= 1 && e.line <= lines, "{e:?}");
        assert!(!e.error.message().is_empty());
    }
    for e in &list.entries {
        check_entry(e);
    }
    let index = list.index();
    assert_eq!(index.len(), list.entries.len());
}

fn check_import_json(text: &str) {
    let mut list = BlockList::new();
    if let Ok(report) = list.import_json(text, 7) {
        assert_eq!(list.entries.len(), report.added);
        for e in &list.entries {
            check_entry(e);
        }
    } else {
        assert!(list.entries.is_empty());
    }
    let _ = BlockList::from_json(text);
}

fn check_duration(s: &str) {
    if let Some(ms) = parse_duration_ms(s) {
        assert!(ms <= 315_360_000_000, "{s:?} -> {ms}");
    }
}

/// `Config::from_lookup` over `vars` (unknown names get `fallback`): a valid config is coherent,
/// and no problem report or `Debug` output shows a value.
fn check_config(vars: &HashMap<&str, String>, fallback: Option<&str>) {
    let lookup = |name: &str| {
        vars.get(name)
            .cloned()
            .or_else(|| fallback.map(str::to_owned))
    };
    match Config::from_lookup(lookup) {
        Ok(c) => {
            assert!(RoomId::parse(c.room_id.as_str()).is_ok());
            assert!(
                c.matrix_base_url.starts_with("https://")
                    || c.matrix_base_url.starts_with("http://")
            );
            assert!(!c.matrix_base_url.ends_with('/'));
            for ms in [c.request_delay_ms, c.matrix_timeout_ms] {
                assert!(ms <= 315_360_000_000);
            }
            assert!(c.ip_quota.window_ms > 0 && c.wave.window_ms > 0);
            let token = c
                .access_token
                .as_deref()
                .expect("a valid config has a token");
            let optional = [
                Some(token),
                c.api_key.as_deref(),
                c.form_field.as_deref(),
                c.thank_you_url.as_deref(),
                c.secrets.tally.as_deref(),
                c.secrets.typeform.as_deref(),
                c.secrets.formspree.as_deref(),
                c.secrets.shared.as_deref(),
            ];
            for v in optional.into_iter().flatten() {
                assert!(!v.is_empty() && v.trim() == v, "{v:?}");
            }
            for h in &c.honeypot_fields {
                assert!(!h.is_empty() && h.trim() == h);
            }
            let shown = format!("{c:?}");
            for secret in optional.into_iter().flatten() {
                if secret.contains(MARKER) {
                    assert!(!shown.contains(secret), "Debug shows a secret: {shown}");
                }
            }
            assert!(!shown.contains(c.room_id.as_str()), "Debug shows the room");
        }
        Err(problems) => {
            assert!(!problems.0.is_empty());
            let summary = problems.summary();
            assert!(!summary.contains(MARKER), "a value leaked: {summary}");
            for p in &problems.0 {
                assert!(!p.fix.contains(MARKER), "a value leaked: {p:?}");
            }
        }
    }
}

/// Every setting of a parse result, secrets included, to compare two results.
fn config_fields(r: &Result<Config, Problems>) -> String {
    match r {
        Err(p) => format!("{p:?}"),
        Ok(c) => format!(
            "{} {} {:?} {:?} {} {} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            c.room_id.as_str(),
            c.matrix_base_url,
            c.access_token,
            c.api_key,
            c.request_delay_ms,
            c.matrix_timeout_ms,
            c.form_field,
            c.honeypot_fields,
            c.thank_you_url,
            c.block_action,
            c.ip_quota,
            c.wave,
            c.secrets.tally,
            c.secrets.typeform,
            c.secrets.formspree,
            c.secrets.shared,
        ),
    }
}

/// `s` as every variable at once, then as each variable of an otherwise valid config.
fn check_config_everywhere(s: &str) {
    let all: HashMap<&str, String> = CONFIG_VARS.iter().map(|&k| (k, s.to_owned())).collect();
    check_config(&all, Some(s));
    for &name in CONFIG_VARS {
        let mut vars: HashMap<&str, String> = HashMap::new();
        vars.insert("NEW_ROOM_ID", "!room:localhost".into());
        vars.insert("MATRIX_ACCESS_TOKEN", "syt_token".into());
        vars.insert(name, s.to_owned());
        check_config(&vars, None);
    }
}

fn check_reply(status: u16, body: &str, retry_after: Option<&str>) {
    let result = classify(Ok(HttpResponse {
        status,
        retry_after: retry_after.map(str::to_owned),
        body: body.to_owned(),
    }));
    match status {
        429 => match result {
            Err(Failure::RateLimited { retry_after_ms }) => {
                assert!(
                    retry_after_ms > 0 && retry_after_ms <= 3_600_000,
                    "{retry_after_ms}"
                );
            }
            other => panic!("429 gave {other:?}"),
        },
        200..=299 => match result {
            Ok(v) => assert!(!v.is_null()),
            Err(f) => assert_eq!(f, Failure::Server { status }),
        },
        401 => assert!(matches!(result, Err(Failure::Unauthorized { .. }))),
        408 | 500..=599 => assert_eq!(result, Err(Failure::Server { status })),
        400..=499 => match result {
            Err(Failure::Refused {
                status: s, error, ..
            }) => {
                assert_eq!(s, status);
                assert!(error.chars().count() <= 200);
            }
            other => panic!("{status} gave {other:?}"),
        },
        _ => {}
    }
    if let Err(f) = &classify(Ok(HttpResponse {
        status,
        retry_after: None,
        body: body.to_owned(),
    })) {
        assert!(!f.describe().is_empty());
        f.is_transient();
    }
}

/// Feeds one input to every target: the corpus replay, and the catch-all for random bytes.
fn check_everything(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let text = text.as_ref();
    check_body(bytes);
    check_content_type(text);
    check_user_id(text);
    check_room_id(text);
    check_server_name(text);
    check_signature_inputs(text, bytes);
    check_name(text);
    check_entry_text(text);
    check_import_text(text);
    check_import_json(text);
    // Globs are at most 256 bytes once stored; a longer pattern only costs more time.
    let pattern = &bytes[..bytes.len().min(512)];
    check_glob(pattern, bytes);
    check_glob(pattern, "a".repeat(10_000).as_bytes());
    check_glob(b"*a*a*a*a*a*b", bytes);
    check_duration(text);
    check_config_everywhere(text);
    for status in [
        200, 204, 400, 401, 403, 404, 408, 429, 500, 503, 0, 100, 302, 999,
    ] {
        check_reply(status, text, Some(text));
        check_reply(status, text, None);
    }
    let _ = classify(Err(TransportError::Network(text.to_owned())));
    let index = BlockIndex::build(vec![
        Entry::parse("@troll:example.org", None, 0).unwrap(),
        Entry::parse("*:evil.example", None, 0).unwrap(),
        Entry::display_name("Alice Admin", None, 0).unwrap(),
    ]);
    index.check_display_name(text).map(|v| v.explain());
    if let Ok(id) = UserId::parse(text) {
        index.check_user(&id).map(|v| v.explain());
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------------------------

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus")
}

#[test]
fn every_input_in_the_corpus_passes_every_check() {
    // The platform fixtures are interesting inputs too.
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/intake");
    let mut files: Vec<PathBuf> = [corpus_dir(), fixtures]
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).expect("the corpus directories exist"))
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "the corpus has only {} files",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let bytes = std::fs::read(path).expect("readable corpus file");
        if catch_unwind(AssertUnwindSafe(|| check_everything(&bytes))).is_err() {
            failures.push(path.display().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "corpus inputs that fail: {failures:#?}"
    );
}

#[test]
fn a_pathological_glob_over_ten_thousand_characters_finishes_quickly() {
    let text = "a".repeat(10_000);
    let limit = Duration::from_secs(2);
    let hit = timed("*a*a*a*a*a*b", limit, || {
        glob_match(b"*a*a*a*a*a*b", text.as_bytes())
    });
    assert!(!hit);
    let long = format!("{}b", "*a".repeat(127));
    assert!(!timed("a 255-byte *a*a...b", limit, || {
        glob_match(long.as_bytes(), text.as_bytes())
    }));
    assert!(timed("*a*a*a*a*a", limit, || {
        glob_match(b"*a*a*a*a*a", text.as_bytes())
    }));
}

// ---------------------------------------------------------------------------------------------
// Generated cases
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1))]

    // 1. Payload extractors.

    #[test]
    fn the_json_extractor_never_panics_on_any_bytes(bytes in vec(any::<u8>(), 0..512)) {
        check_body(&bytes);
    }

    #[test]
    fn the_extractors_never_panic_on_json_like_text(s in "[{}\\[\\]\":,a-z0-9@. \\\\u-]{0,200}") {
        check_body(s.as_bytes());
    }

    #[test]
    fn the_urlencoded_extractor_never_panics_on_any_text(
        s in "([a-z_%+=&@:.]|%[0-9a-fA-F]{2}|%[^0-9a-fA-F]{0,2}){0,60}",
        junk in text(40),
    ) {
        check_body(s.as_bytes());
        check_body(format!("{s}&{junk}={junk}").as_bytes());
    }

    #[test]
    fn the_content_type_reader_never_panics_and_ignores_the_body(ct in content_type()) {
        check_content_type(&ct);
        let _ = body_kind(None, ct.as_bytes());
    }

    #[test]
    fn a_tally_payload_with_any_values_is_read_as_tally(v in tally_payload()) {
        check_json_payload(&v);
    }

    #[test]
    fn a_typeform_payload_with_any_values_is_read_as_typeform(v in typeform_payload()) {
        check_json_payload(&v);
    }

    #[test]
    fn any_json_object_is_read_as_its_documented_platform(v in generic_payload()) {
        check_json_payload(&v);
    }

    #[test]
    fn a_mutated_payload_never_panics(
        v in prop_oneof![tally_payload(), typeform_payload(), generic_payload()],
        edits in vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = serde_json::to_vec(&v).unwrap();
        for (how, at, byte) in edits {
            mutate(&mut bytes, how, at, byte);
        }
        check_body(&bytes);
    }

    #[test]
    fn the_one_matrix_named_tally_field_gives_the_id(
        id in valid_user_id(),
        others in vec((neutral_name(), neutral_name(), answer_value()), 0..5),
        at in any::<usize>(),
        label in select(vec!["Matrix ID", "Your matrix account", "MATRIX"]),
    ) {
        let mut fields: Vec<Value> = others
            .into_iter()
            .map(|(key, label, value)| json!({"key": key, "label": label, "value": value}))
            .collect();
        let mine = json!({"key": "question_x", "label": label, "value": format!(" {id} ")});
        fields.insert(at % (fields.len() + 1), mine);
        let body = json!({"eventId": "e", "data": {"fields": fields}}).to_string();
        let s = parse_submission(BodyKind::Json, body.as_bytes()).unwrap();
        prop_assert_eq!(s.matrix_id(None), Ok(id.clone()));
        prop_assert_eq!(s.matrix_id(Some(label)), Ok(id));
    }

    #[test]
    fn an_html_form_round_trips_its_fields_and_finds_the_id(
        id in valid_user_id(),
        others in vec((neutral_name(), neutral_value()), 0..5),
        at in any::<usize>(),
        honeypot in proptest::option::of(neutral_value()),
    ) {
        let mut pairs = others;
        pairs.insert(at % (pairs.len() + 1), ("matrix_id".into(), id.to_string()));
        if let Some(h) = &honeypot {
            pairs.push(("website".into(), h.clone()));
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter())
            .finish();
        let s = parse_submission(BodyKind::UrlEncoded, body.as_bytes()).unwrap();
        let got: Vec<(String, String)> = s
            .fields
            .iter()
            .map(|f| (f.names().collect::<String>(), f.value.clone()))
            .collect();
        prop_assert_eq!(&got, &pairs);
        prop_assert_eq!(s.matrix_id(None), Ok(id));
        let filled = honeypot.is_some_and(|h| !h.trim().is_empty());
        prop_assert_eq!(s.honeypot_filled(&["website".to_owned()]), filled);
    }

    #[test]
    fn a_jotform_body_never_panics_and_finds_its_one_matrix_question(
        id in valid_user_id(),
        others in vec((neutral_name(), answer_value()), 0..5),
        flat in vec((neutral_name(), neutral_value()), 0..3),
        at in any::<usize>(),
        edits in vec((any::<u8>(), any::<usize>(), any::<u8>()), 0..3),
    ) {
        let mut raw: Map<String, Value> = others
            .into_iter()
            .enumerate()
            .map(|(i, (name, v))| (format!("q{}_{}", i + 10, name.replace(' ', "")), v))
            .collect();
        raw.insert("q3_yourMatrixId".into(), Value::String(id.to_string()));
        raw.insert("slug".into(), json!("submit/1/"));
        let mut parts = vec![
            ("formID".to_owned(), "1".to_owned()),
            ("submissionID".to_owned(), "2".to_owned()),
            ("rawRequest".to_owned(), Value::Object(raw).to_string()),
        ];
        for (i, (name, v)) in flat.into_iter().enumerate() {
            parts.insert(at % (parts.len() + 1), (format!("q{}_{}", i + 50, name.replace(' ', "")), v));
        }
        let mut body = Vec::new();
        for (name, value) in &parts {
            body.extend_from_slice(b"--XbX\r\nContent-Disposition: form-data; name=\"");
            body.extend_from_slice(name.as_bytes());
            body.extend_from_slice(b"\"\r\n\r\n");
            body.extend_from_slice(value.as_bytes());
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--XbX--\r\n");
        let kind = body_kind(Some("multipart/form-data; boundary=XbX"), &body).unwrap();
        let s = parse_submission(kind, &body);
        // A neutral value may happen to hold the boundary line; then the body is malformed.
        if let Ok(s) = s {
            prop_assert_eq!(s.platform, Platform::Jotform);
            prop_assert_eq!(s.delivery_id.as_deref(), Some("2"));
            prop_assert_eq!(s.matrix_id(None), Ok(id));
            check_submission(&s, &body, "yourMatrixId");
        }
        for (how, at, byte) in edits {
            mutate(&mut body, how, at, byte);
        }
        check_body(&body);
        let _ = parse_submission(kind, &body);
    }

    #[test]
    fn a_generic_object_prefers_its_matrix_id_key(
        id in valid_user_id(),
        others in vec((neutral_name(), neutral_value()), 0..6),
    ) {
        let mut obj: BTreeMap<String, Value> = others
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        obj.insert("matrix_id".into(), Value::String(id.to_string()));
        let body = serde_json::to_vec(&obj).unwrap();
        let s = parse_submission(BodyKind::Json, &body).unwrap();
        prop_assert_eq!(s.platform, Platform::Json);
        prop_assert_eq!(s.matrix_id(None), Ok(id));
    }

    // 2. The MXID parser.

    #[test]
    fn the_mxid_parser_never_panics_on_any_text(s in text(300)) {
        check_user_id(&s);
        check_room_id(&s);
        check_server_name(&s);
    }

    #[test]
    fn a_parsed_mxid_re_parses_to_itself_and_splits_cleanly(s in mxid_like()) {
        check_user_id(&s);
        check_room_id(&format!("!{s}"));
        if let Some((_, server)) = s.split_once(':') {
            check_server_name(server);
        }
    }

    #[test]
    fn the_parser_accepts_every_id_built_from_the_grammar(
        local in localpart(),
        server in server_name(),
        pad in select(vec!["", " ", "\t", "\n "]),
        sigil in any::<bool>(),
    ) {
        let typed = format!("{pad}{}{local}:{server}{pad}", if sigil { "@" } else { "" });
        let canonical = format!("@{}:{server}", local.to_ascii_lowercase());
        let literal_ok = server.strip_prefix('[').is_none_or(|rest| {
            let lit = &rest[..rest.find(']').unwrap()];
            lit.len() >= 2
        });
        match UserId::parse(&typed) {
            Ok(id) => prop_assert_eq!(id.as_str(), canonical.as_str()),
            Err(e) => {
                // Only the length limit or a host the grammar itself rules out may refuse it.
                let dotted = server.contains("..") || server.starts_with('.');
                prop_assert!(
                    canonical.len() > MAX_USER_ID_BYTES || !literal_ok || dotted,
                    "{:?} refused: {:?}", typed, e
                );
            }
        }
        check_user_id(&typed);
        // A link is unwrapped to the same ID (a '/' in the localpart would end the link's path).
        if canonical.len() <= MAX_USER_ID_BYTES && literal_ok && !local.contains('/') {
            for link in [
                format!("https://matrix.to/#/@{local}:{server}"),
                format!("https://matrix.to/#/@{local}:{server}?via=example.org"),
                format!("matrix:u/{local}:{server}?action=chat"),
            ] {
                prop_assert_eq!(
                    UserId::parse(&link).map(|id| id.to_string()),
                    Ok(canonical.clone()),
                    "{}", link
                );
            }
        }
    }

    #[test]
    fn ten_thousand_character_ids_are_refused_quickly(
        c in interesting_char(),
        n in 250usize..10_000,
        server in server_name(),
    ) {
        let long = format!("@{}:{server}", c.to_string().repeat(n));
        let r = timed("a long ID", Duration::from_secs(1), || UserId::parse(&long));
        prop_assert!(r.is_err() || long.trim().len() <= MAX_USER_ID_BYTES);
        check_user_id(&long);
    }

    // 3. Signatures.

    #[test]
    fn signature_checks_never_panic_on_any_header_or_body(
        header in signature_header(),
        body in vec(any::<u8>(), 0..256),
    ) {
        check_signature_inputs(&header, &body);
    }

    #[test]
    fn a_signed_body_verifies_and_any_flipped_byte_fails(
        secret in text(20),
        body in vec(any::<u8>(), 0..512),
        t in 0u64..=999_999_999_999,
        skew in -(FORMSPREE_TOLERANCE_SECS as i64)..=(FORMSPREE_TOLERANCE_SECS as i64),
        flip_at in any::<usize>(),
        flip in 1u8..=255,
    ) {
        let now = t.saturating_add_signed(skew);
        let sig = sign_base64(&secret, &body);
        let typeform = format!("sha256={sig}");
        let formspree = sign_formspree(&secret, &body, t);
        prop_assert_eq!(verify_tally(&secret, &sig, &body), Ok(()));
        prop_assert_eq!(verify_tally(&secret, &format!(" {sig}\t"), &body), Ok(()));
        prop_assert_eq!(verify_typeform(&secret, &typeform, &body), Ok(()));
        prop_assert_eq!(verify_formspree(&secret, &formspree, &body, now), Ok(()));
        let parsed = parse_formspree_header(&formspree).unwrap();
        prop_assert_eq!(parsed.timestamp, t);
        check_formspree_header(&formspree);
        // Secret rotation: any one of several `v1` values may match.
        let real = formspree.split_once(",v1=").unwrap().1;
        let rotated = format!("t={t},v1={},v1={real}", "0".repeat(64));
        prop_assert_eq!(verify_formspree(&secret, &rotated, &body, now), Ok(()));

        let secrets = Secrets { formspree: Some(secret.clone()), ..Secrets::default() };
        let presented = Presented { formspree_signature: Some(&formspree), ..Presented::default() };
        prop_assert_eq!(verify(&secrets, &presented, &body, now), Ok(Proof::Formspree));
        prop_assert_eq!(
            verify_formspree(&secret, &formspree, &body, t.saturating_add(FORMSPREE_TOLERANCE_SECS + 1)),
            Err(AuthError::Stale)
        );

        if !body.is_empty() {
            let mut tampered = body.clone();
            tampered[flip_at % body.len()] ^= flip;
            prop_assert_eq!(verify_tally(&secret, &sig, &tampered), Err(AuthError::BadSignature));
            prop_assert_eq!(verify_typeform(&secret, &typeform, &tampered), Err(AuthError::BadSignature));
            prop_assert_eq!(
                verify_formspree(&secret, &formspree, &tampered, now),
                Err(AuthError::BadSignature)
            );
        }
    }

    #[test]
    fn the_bearer_check_allows_exactly_the_key(key in text(30), header in text(40)) {
        let _ = check_bearer(Some(&key), Some(&header));
        let key = key.trim();
        if key.is_empty() {
            prop_assert_eq!(check_bearer(Some(key), Some("Bearer ")), AdminAuth::Disabled);
        } else {
            prop_assert_eq!(check_bearer(Some(key), Some(&format!("Bearer {key}"))), AdminAuth::Allowed);
            prop_assert_eq!(check_bearer(Some(key), Some(&format!("Bearer {key}x"))), AdminAuth::Denied);
            prop_assert_eq!(check_bearer(Some(key), Some(key)), AdminAuth::Denied);
        }
    }

    // 4. The block list.

    #[test]
    fn the_normaliser_is_idempotent_and_bounded_on_any_text(s in text(40)) {
        check_name(&s);
    }

    #[test]
    fn the_normaliser_is_idempotent_on_name_like_text(s in "[a-zA-Z0-9._=/+$@|! -]{0,30}") {
        check_name(&s);
    }

    #[test]
    fn glob_match_agrees_with_a_reference_matcher(
        pattern in "[ab?*]{0,12}",
        text in "[ab?*]{0,16}",
    ) {
        check_glob(pattern.as_bytes(), text.as_bytes());
    }

    #[test]
    fn glob_match_finishes_quickly_on_any_pattern_and_long_text(
        pattern in vec(select(b"ab*?".to_vec()), 0..256),
        unit in "[ab]{1,3}",
        extra in vec(any::<u8>(), 0..64),
    ) {
        let text = unit.repeat(10_000 / unit.len());
        check_glob(&pattern, text.as_bytes());
        check_glob(&extra, &pattern);
    }

    #[test]
    fn entry_parsing_never_panics_and_accepted_entries_stay_valid(
        s in entry_text(),
        reason in proptest::option::of(text(20)),
    ) {
        check_entry_text(&s);
        if let Ok(e) = Entry::parse(&s, reason, 3) {
            check_entry(&e);
        }
    }

    #[test]
    fn text_import_accounts_for_every_line(
        lines in vec(
            (entry_text(), proptest::option::of(text(12)), select(vec!["", "display: ", "DISPLAY:", "# "])),
            0..12,
        ),
        crlf in any::<bool>(),
    ) {
        let text: Vec<String> = lines
            .into_iter()
            .map(|(pattern, reason, prefix)| match reason {
                Some(r) => format!("{prefix}{pattern}  # {r}"),
                None => format!("{prefix}{pattern}"),
            })
            .collect();
        check_import_text(&text.join(if crlf { "\r\n" } else { "\n" }));
    }

    #[test]
    fn json_import_never_panics_on_any_text(s in text(80), v in json_value()) {
        check_import_json(&s);
        check_import_json(&v.to_string());
        check_import_json(&json!({"entries": [v.clone()]}).to_string());
        check_import_json(&json!([v]).to_string());
    }

    #[test]
    fn json_import_never_panics_on_entry_shaped_json(
        entries in vec(
            (
                prop_oneof![entry_text().prop_map(Value::from), json_value()],
                select(vec!["user_id", "glob", "display_name", "other"]),
                maybe(prop_oneof![text(20).prop_map(Value::from), json_value()]),
                maybe(json_number()),
            ),
            0..8,
        ),
    ) {
        let entries: Vec<Value> = entries
            .into_iter()
            .map(|(pattern, kind, reason, at)| {
                let mut e = Map::new();
                e.insert("pattern".into(), pattern);
                e.insert("kind".into(), Value::from(kind));
                put(&mut e, "reason", reason);
                put(&mut e, "added_at", at);
                Value::Object(e)
            })
            .collect();
        check_import_json(&json!({"version": 3, "entries": entries}).to_string());
    }
}

proptest! {
    #![proptest_config(config(2))]

    #[test]
    fn any_bytes_pass_every_check(bytes in vec(any::<u8>(), 0..160)) {
        check_everything(&bytes);
    }

    #[test]
    fn any_text_passes_every_check(s in prop_oneof![text(80), mxid_like(), glob_like()]) {
        check_everything(s.as_bytes());
    }

    #[test]
    fn the_block_index_agrees_with_the_linear_reference_on_any_entries(
        entries in vec(raw_entry(), 0..10),
        typed in vec(entry_text(), 0..6),
        users in vec(valid_user_id(), 1..6),
        names in vec(display_name_like(), 1..6),
        globbed in vec((any::<usize>(), vec((any::<usize>(), any::<u8>(), select(vec!['*', '?', '*', 'x'])), 1..4)), 0..4),
        near_users in vec((any::<usize>(), edits()), 0..4),
        near_names in vec((any::<usize>(), edits()), 0..4),
        exact in vec(any::<usize>(), 0..2),
    ) {
        let mut entries = entries;
        entries.extend(typed.iter().filter_map(|t| Entry::parse(t, None, 0).ok()));
        entries.extend(typed.iter().filter_map(|t| Entry::display_name(t, None, 0).ok()));
        // Entries derived from the candidates, so that every rule gets to fire: globs with
        // wildcards put into a candidate ID, and near misses of its localpart and of names.
        for pick in &exact {
            entries.extend(Entry::parse(users[pick % users.len()].as_str(), None, 0));
        }
        for (pick, wild) in &globbed {
            let id = users[pick % users.len()].as_str();
            entries.extend(Entry::parse(&edit_chars(id, wild), None, 0));
        }
        for (pick, e) in &near_users {
            let id = &users[pick % users.len()];
            let local = edit_chars(id.localpart(), e);
            entries.extend(Entry::parse(&format!("@{local}:other.example"), None, 0));
        }
        for (pick, e) in &near_names {
            entries.extend(Entry::display_name(&edit_chars(&names[pick % names.len()], e), None, 0));
        }
        let index = BlockIndex::build(entries.clone());
        let scan = LinearScan::new(&entries);
        let mut users = users;
        users.extend(typed.iter().filter_map(|t| UserId::parse(t).ok()));
        for u in &users {
            let got = index.check_user(u);
            prop_assert_eq!(&got, &scan.check_user(u), "user {}", u);
            if let Some(v) = got {
                prop_assert!(!v.explain().is_empty());
            }
        }
        for n in names.iter().chain(typed.iter()) {
            let got = index.check_display_name(n);
            prop_assert_eq!(&got, &scan.check_display_name(n), "name {:?}", n);
            if let Some(v) = got {
                prop_assert!(!v.explain().is_empty());
            }
        }
        let _ = index.stats();
    }

    #[test]
    fn an_exported_list_imports_back_unchanged(
        typed in vec((entry_text(), proptest::option::of(text(16)), any::<bool>()), 0..10),
    ) {
        let mut list = BlockList::new();
        for (t, reason, display) in typed {
            let entry = if display {
                Entry::display_name(&t, reason, 5)
            } else {
                Entry::parse(&t, reason, 5)
            };
            if let Ok(e) = entry {
                list.add(e);
            }
        }
        let json = list.to_json().unwrap();
        prop_assert_eq!(&BlockList::from_json(&json).unwrap(), &list);
        let mut again = BlockList::new();
        let report = again.import_json(&json, 9).unwrap();
        prop_assert!(report.errors.is_empty(), "{:?}", report.errors);
        prop_assert_eq!(&again.entries, &list.entries);

        // The text format cannot hold a display name with a '#' after a space (module doc);
        // the export's own "display: " counts as that space.
        let representable = list.entries.iter().all(|e| {
            e.kind != EntryKind::DisplayName || {
                let cs: Vec<char> = e.pattern.chars().collect();
                !e.pattern.starts_with('#')
                    && !cs.windows(2).any(|w| w[0].is_whitespace() && w[1] == '#')
            }
        });
        if representable {
            let mut from_text = BlockList::new();
            let report = from_text.import_text(&list.export_text(), 5);
            prop_assert!(report.errors.is_empty(), "{:?}", report.errors);
            prop_assert_eq!(&from_text.entries, &list.entries);
        }
    }

    #[test]
    fn osa_distance_agrees_with_the_textbook_table_and_is_symmetric(a in text(60), b in text(60)) {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        let d = osa_distance(&a, &b);
        prop_assert_eq!(d, osa_reference(&a, &b));
        prop_assert_eq!(d, osa_distance(&b, &a));
        let near = edit_chars(&a.iter().collect::<String>(), &[(b.len(), 2, 'x')]);
        let near: Vec<char> = near.chars().collect();
        prop_assert_eq!(osa_distance(&a, &near), osa_reference(&a, &near));
        prop_assert!(d <= a.len().max(b.len()) && d >= a.len().abs_diff(b.len()));
        prop_assert_eq!(osa_distance(&a, &a), 0);
    }
}

proptest! {
    #![proptest_config(config(1))]

    // 5. Homeserver replies.

    #[test]
    fn classify_never_panics_and_a_429_always_waits(
        status in prop_oneof![any::<u16>(), 100u16..600, Just(429u16), Just(200u16)],
        body in reply_body(),
        retry in retry_after(),
    ) {
        check_reply(status, &body, retry.as_deref());
        check_reply(429, &body, retry.as_deref());
    }

    // 6. Configuration.

    #[test]
    fn durations_never_panic_and_stay_under_ten_years(s in prop_oneof![duration_like(), text(30)]) {
        check_duration(&s);
    }

    #[test]
    fn whole_durations_read_as_documented(
        n in 0u64..1_000_000,
        unit in select(vec![
            ("ms", 1u64),
            ("s", 1_000),
            ("m", 60_000),
            ("h", 3_600_000),
            ("d", 86_400_000),
            ("", 1_000),
        ]),
    ) {
        let ms = n * unit.1;
        let got = parse_duration_ms(&format!(" {n}{} ", unit.0));
        prop_assert_eq!(got, (ms <= 315_360_000_000).then_some(ms));
    }

    #[test]
    fn a_blank_setting_counts_as_unset(
        name in select(CONFIG_VARS.to_vec()),
        blank in "[ \\t\\r\\n\\u{a0}\\u{2028}\\u{3000}]{0,4}",
    ) {
        let mut vars: HashMap<&str, String> = HashMap::new();
        vars.insert("NEW_ROOM_ID", "!room:localhost".into());
        vars.insert("MATRIX_ACCESS_TOKEN", "syt_token".into());
        let unset = Config::from_lookup(|k| vars.get(k).cloned().filter(|_| k != name));
        vars.insert(name, blank);
        let blank = Config::from_lookup(|k| vars.get(k).cloned());
        prop_assert_eq!(config_fields(&blank), config_fields(&unset));
    }

    #[test]
    fn config_from_any_values_is_coherent_and_never_shows_a_value(
        values in vec(proptest::option::of(config_value()), CONFIG_VARS.len()),
        fallback in proptest::option::of(config_value()),
        minimal in any::<bool>(),
    ) {
        let mut vars: HashMap<&str, String> = HashMap::new();
        if minimal {
            vars.insert("NEW_ROOM_ID", "!room:localhost".into());
            vars.insert("MATRIX_ACCESS_TOKEN", "syt_token".into());
        }
        for (&name, v) in CONFIG_VARS.iter().zip(values) {
            if let Some(v) = v {
                vars.insert(name, v);
            }
        }
        check_config(&vars, fallback.as_deref());
    }

    // Homeserver text, Turnstile replies and client addresses.

    #[test]
    fn scrubbing_never_panics_and_never_leaves_a_room_id_behind(
        before in "[a-zA-Z .,:()]{0,40}",
        opaque in "[a-zA-Z0-9]{1,20}",
        server in "[a-z0-9.]{1,20}(:[0-9]{1,5})?",
        after in "[a-zA-Z .,:()]{0,40}",
        noise in vec(any::<char>(), 0..80),
    ) {
        let text = format!("{before} !{opaque}:{server} {after}");
        let clean = knock::domain::outcome::scrub(&text);
        let room_id = format!("!{opaque}:{server}");
        prop_assert!(!clean.contains(&room_id), "{clean:?}");
        let noisy: String = noise.into_iter().collect();
        let _ = knock::domain::outcome::scrub(&noisy);
    }

    #[test]
    fn a_turnstile_reply_is_valid_only_when_it_says_success_true(
        status in 100u16..600,
        body in r#"[{}\[\]":,a-z0-9 -]{0,120}"#,
    ) {
        use knock::turnstile::{outcome, Outcome};
        let r = outcome(Ok(knock::matrix::HttpResponse { status, retry_after: None, body: body.clone() }));
        if r == Outcome::Valid {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            prop_assert_eq!(v.get("success"), Some(&serde_json::Value::Bool(true)));
            prop_assert!((200..300).contains(&status));
        }
    }

    #[test]
    fn any_client_address_gets_a_short_key(address in "[0-9a-fA-F:.]{0,60}|.{0,80}") {
        let key = knock::domain::rate_limit::address_key(&address);
        prop_assert!(key.starts_with("ip:") || key.starts_with("ip6:"));
        prop_assert!(key.chars().count() <= 70, "{key}");
    }
}
