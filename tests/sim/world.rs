//! The simulated world around one room: a clock, the object's alarm, a homeserver that keeps
//! real membership state and answers in Matrix's own JSON, a block-list object, and the pending
//! IO of every task. All of it is driven by the scheduler in `main.rs`; nothing here is random.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use knock::domain::blocklist::{BlockIndex, Entry};
use knock::matrix::{HttpRequest, HttpResponse, Method, TransportError};
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

pub const ROOM: &str = "!simroom:localhost";
pub const BOT: &str = "@bot:localhost";
pub const MODERATOR: &str = "@mod:localhost";

/// What a pending IO waits for.
#[derive(Debug)]
pub enum Io {
    Http(HttpRequest),
    ListVersion,
    Index(u64),
    Timer(u64),
}

pub enum Answer {
    Http(Result<HttpResponse, TransportError>),
    Version(u64),
    Index(Rc<BlockIndex>),
    Timer,
}

pub type Slot = Rc<RefCell<Option<Answer>>>;

pub struct PendingIo {
    pub task: u64,
    pub io: Io,
    pub slot: Slot,
}

/// The block-list object: every version it ever stored, so an index "at version v" is exact.
#[derive(Default)]
pub struct SimList {
    pub versions: Vec<Vec<Entry>>,
    indexes: RefCell<HashMap<u64, Rc<BlockIndex>>>,
}

impl SimList {
    /// The compiled index of version `v` (built once: the seeds ask for it often).
    pub fn index_at(&self, v: u64) -> Rc<BlockIndex> {
        self.indexes
            .borrow_mut()
            .entry(v)
            .or_insert_with(|| Rc::new(BlockIndex::build(self.entries_at(v))))
            .clone()
    }
    pub fn index(&self) -> Rc<BlockIndex> {
        self.index_at(self.version())
    }
    pub fn version(&self) -> u64 {
        self.versions.len() as u64
    }
    pub fn entries_at(&self, v: u64) -> Vec<Entry> {
        if v == 0 {
            return vec![];
        }
        self.versions
            .get(v as usize - 1)
            .cloned()
            .unwrap_or_default()
    }
    pub fn current(&self) -> Vec<Entry> {
        self.entries_at(self.version())
    }
    pub fn store(&mut self, entries: Vec<Entry>) {
        self.versions.push(entries);
    }
}

/// A homeserver with one room, real membership rules, and a timeline of member events.
#[derive(Default)]
pub struct Homeserver {
    pub existing: Vec<String>,
    /// user → (membership, sender of the last change)
    pub members: BTreeMap<String, (String, String)>,
    /// user → (when the last change happened, the membership before it)
    pub changed: BTreeMap<String, (u64, Option<String>)>,
    /// The homeserver's clock, set by the scheduler before each request.
    pub now: u64,
    pub events: Vec<Value>,
    /// Invite events per user (a re-invite of someone invited makes none, as on Synapse).
    pub invites: HashMap<String, usize>,
    pub sent_txns: HashMap<String, usize>,
    /// Native knocks per user: each is a request of its own.
    pub knocks: HashMap<String, usize>,
    pub dms: usize,
    next_event: u64,
}

fn resp(status: u16, body: Value) -> HttpResponse {
    HttpResponse {
        status,
        retry_after: None,
        body: body.to_string(),
    }
}

fn err(status: u16, errcode: &str, error: &str) -> HttpResponse {
    resp(status, json!({ "errcode": errcode, "error": error }))
}

impl Homeserver {
    pub fn membership(&self, user: &str) -> Option<&str> {
        self.members.get(user).map(|(m, _)| m.as_str())
    }

    pub fn set(&mut self, user: &str, membership: &str, sender: &str) -> String {
        self.next_event += 1;
        let event_id = format!("$ev{}", self.next_event);
        if membership == "invite" && self.membership(user) != Some("invite") {
            *self.invites.entry(user.to_owned()).or_default() += 1;
        }
        if membership == "knock" {
            *self.knocks.entry(user.to_owned()).or_default() += 1;
        }
        let prev = self.membership(user).map(str::to_owned);
        self.changed.insert(user.to_owned(), (self.now, prev));
        self.members
            .insert(user.to_owned(), (membership.to_owned(), sender.to_owned()));
        self.events.push(json!({
            "type": "m.room.member", "state_key": user, "sender": sender, "event_id": event_id,
            "content": { "membership": membership },
        }));
        event_id
    }

    fn member_event(&self, user: &str) -> Value {
        let (m, sender) = &self.members[user];
        let (ts, prev) = self.changed.get(user).cloned().unwrap_or((0, None));
        json!({ "type": "m.room.member", "state_key": user, "sender": sender,
                "event_id": format!("$state-{user}"), "content": { "membership": m },
                "origin_server_ts": ts, "unsigned": { "prev_content": { "membership": prev } } })
    }

    /// Answers one request as Synapse would.
    pub fn handle(&mut self, req: &HttpRequest) -> HttpResponse {
        let url = req.url.split("/_matrix/client/v3").nth(1).unwrap_or("");
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let seg: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let body = req.json();
        let target = body["user_id"].as_str().unwrap_or("").to_owned();
        let seg: Vec<&str> = seg.iter().map(String::as_str).collect();
        match (req.method, seg.as_slice()) {
            (Method::Get, ["profile", user]) => {
                if self.existing.iter().any(|u| u == user) {
                    resp(200, json!({ "displayname": user.trim_start_matches('@') }))
                } else {
                    err(404, "M_UNKNOWN", "Profile was not found")
                }
            }
            (Method::Post, ["rooms", room, action]) if *room == ROOM => {
                let current = self.membership(&target).map(str::to_owned);
                match (*action, current.as_deref()) {
                    ("invite", Some("ban")) => err(403, "M_BAD_STATE", "user is banned"),
                    ("invite", Some("join")) => err(
                        403,
                        "M_FORBIDDEN",
                        &format!("{target} is already in the room."),
                    ),
                    ("invite", _) => {
                        if current.as_deref() != Some("invite") {
                            self.set(&target, "invite", BOT);
                        }
                        resp(200, json!({}))
                    }
                    ("kick", Some("invite" | "join" | "knock")) => {
                        self.set(&target, "leave", BOT);
                        resp(200, json!({}))
                    }
                    // Synapse names the room in this refusal: Knock must scrub it.
                    ("kick", _) => err(
                        403,
                        "M_FORBIDDEN",
                        &format!("The target user is not in the room {ROOM}"),
                    ),
                    ("ban", _) => {
                        self.set(&target, "ban", BOT);
                        resp(200, json!({}))
                    }
                    ("unban", Some("ban")) => {
                        self.set(&target, "leave", BOT);
                        resp(200, json!({}))
                    }
                    ("unban", _) => err(403, "M_FORBIDDEN", "The target user is not banned"),
                    _ => err(404, "M_UNRECOGNIZED", "unknown"),
                }
            }
            (Method::Get, ["rooms", room, "state", "m.room.member", user]) if *room == ROOM => {
                match self.members.get(*user) {
                    Some((m, _)) => resp(200, json!({ "membership": m })),
                    None => err(404, "M_NOT_FOUND", &format!("no member event in {ROOM}")),
                }
            }
            (Method::Get, ["rooms", room, "members"]) if *room == ROOM => {
                let only = query.strip_prefix("membership=");
                let chunk: Vec<Value> = self
                    .members
                    .iter()
                    .filter(|(_, (m, _))| only.is_none_or(|o| o == m))
                    .map(|(u, _)| self.member_event(u))
                    .collect();
                resp(200, json!({ "chunk": chunk }))
            }
            (Method::Get, ["sync"]) => {
                let since = query
                    .split('&')
                    .find_map(|p| p.strip_prefix("since="))
                    .and_then(|s| s.trim_start_matches('s').parse::<usize>().ok());
                let next = format!("s{}", self.events.len());
                match since {
                    None => resp(200, json!({ "next_batch": next, "rooms": {} })),
                    Some(from) => {
                        let events: Vec<Value> =
                            self.events.get(from..).unwrap_or_default().to_vec();
                        resp(
                            200,
                            json!({ "next_batch": next, "rooms": { "join": { ROOM: {
                                "timeline": { "events": events, "limited": false } } } } }),
                        )
                    }
                }
            }
            (Method::Put, ["rooms", _room, "send", "m.room.message", txn]) => {
                *self.sent_txns.entry((*txn).to_owned()).or_default() += 1;
                resp(200, json!({ "event_id": format!("$msg-{txn}") }))
            }
            (Method::Post, ["createRoom"]) => {
                self.dms += 1;
                resp(
                    200,
                    json!({ "room_id": format!("!dm{}:localhost", self.dms) }),
                )
            }
            _ => err(404, "M_UNRECOGNIZED", &format!("unknown path {path}")),
        }
    }
}

/// Everything the scheduler and the room's host share.
#[derive(Default)]
pub struct World {
    pub now: Cell<u64>,
    pub alarm: Cell<Option<u64>>,
    pub pending: RefCell<Vec<PendingIo>>,
    pub hs: RefCell<Homeserver>,
    pub list: RefCell<SimList>,
    /// The task being polled: the host tags its IO with it.
    pub current_task: Cell<u64>,
    /// The list version each task last learnt from the list object.
    pub version_seen: RefCell<HashMap<u64, u64>>,
    /// Block-list entries whose enforcement the room has begun (the block is acknowledged).
    pub acknowledged: RefCell<Vec<Entry>>,
    pub violations: RefCell<Vec<String>>,
    pub trace: RefCell<Vec<String>>,
    pub verbose: Cell<bool>,
}

impl World {
    pub fn note(&self, line: String) {
        if self.verbose.get() {
            eprintln!("{:>9} {line}", self.now.get() % 1_000_000_000);
        }
        let mut t = self.trace.borrow_mut();
        t.push(line);
        if t.len() > 60 {
            t.remove(0);
        }
    }

    pub fn violation(&self, what: String) {
        self.note(format!("VIOLATION {what}"));
        self.violations.borrow_mut().push(what);
    }

    pub fn register(&self, io: Io) -> Slot {
        let slot: Slot = Rc::new(RefCell::new(None));
        self.pending.borrow_mut().push(PendingIo {
            task: self.current_task.get(),
            io,
            slot: slot.clone(),
        });
        slot
    }
}
