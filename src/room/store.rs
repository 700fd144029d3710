//! The room's storage: a transactional store for the knock state machine, over any SQL engine
//! with the Durable Object's semantics (synchronous statements; no other request runs between
//! two statements that have no `await` between them).
//!
//! Decides nothing about knocks: it keeps the columns [`crate::domain::lifecycle`] derives
//! (`open`, `due_at`) so that queries never name a status rule, and every knock write is a
//! compare-and-set on the row's version, so a copy held across an `await` can never overwrite a
//! newer one. Beside it: the schema and its upgrades (`store/schema.rs`), owed work and form
//! answers (`store/owed.rs`), members, reviews and bans (`store/members.rs`), and the notices
//! and child-room knocks it owes (`store/side_queues.rs`).

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::domain::lifecycle::{self, Knock, Status, Withdraw};
use crate::domain::outcome::Member;

mod members;
mod owed;
mod schema;
mod side_queues;

pub use owed::{backoff, Owed};

pub use schema::SCHEMA_VERSION;

pub type Result<T> = std::result::Result<T, String>;

/// A value bound to a `?` placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Text(String),
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        SqlValue::Int(v)
    }
}
impl From<bool> for SqlValue {
    fn from(v: bool) -> Self {
        SqlValue::Int(v as i64)
    }
}
impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        SqlValue::Text(v.to_owned())
    }
}
impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        SqlValue::Text(v)
    }
}
impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(SqlValue::Null, Into::into)
    }
}

/// A timestamp or count as a SQL integer.
pub fn int(v: u64) -> SqlValue {
    SqlValue::Int(v.min(i64::MAX as u64) as i64)
}

/// The SQL engine: the Durable Object's `SqlStorage` in the worker, SQLite natively.
pub trait Sql {
    /// Runs one statement and returns its rows, each deserialized from a column-name map.
    fn query<T: DeserializeOwned>(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<T>>;
    /// Runs one statement and returns how many rows it wrote.
    fn exec(&self, sql: &str, params: &[SqlValue]) -> Result<u64>;
    /// Runs several statements without parameters (the schema).
    fn batch(&self, sql: &str) -> Result<()>;
}

const COLUMNS: &str = "id, version, user_id, source, status, profile_checked, approved, inviting, \
    withdraw, attempts, next_attempt_at, last_error, created_at, updated_at, invited_at, closed_at, \
    display_name, dm_room, note";

/// A knock row as one JSON text (`json_object` over [`COLUMNS`]), for reading a knock as one
/// column of a statement that reads other things too.
fn row_as_json() -> String {
    let pairs: Vec<String> = COLUMNS
        .split(',')
        .map(str::trim)
        .map(|c| format!("'{c}', {c}"))
        .collect();
    format!("json_object({})", pairs.join(", "))
}

/// What [`Store::intake_state`] reads.
pub struct IntakeState<L, M> {
    pub delivery: Option<i64>,
    pub limit: Option<L>,
    pub meta: Option<M>,
    pub latest: Option<Knock>,
}

impl<L, M> Default for IntakeState<L, M> {
    fn default() -> Self {
        IntakeState {
            delivery: None,
            limit: None,
            meta: None,
            latest: None,
        }
    }
}

#[derive(Deserialize)]
struct Row {
    id: i64,
    version: i64,
    user_id: String,
    source: String,
    status: String,
    profile_checked: i64,
    approved: i64,
    inviting: i64,
    withdraw: Option<String>,
    attempts: i64,
    next_attempt_at: i64,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
    invited_at: Option<i64>,
    closed_at: Option<i64>,
    display_name: Option<String>,
    dm_room: Option<String>,
    note: Option<String>,
}

pub(super) fn ms(v: i64) -> u64 {
    v.max(0) as u64
}

impl Row {
    fn into_knock(self) -> Knock {
        Knock {
            id: self.id,
            version: self.version,
            user_id: self.user_id,
            source: self.source,
            // A status this release does not know (written by a newer one, rolled back) is
            // shown as failed rather than acted on.
            status: Status::parse(&self.status).unwrap_or(Status::Failed),
            profile_checked: self.profile_checked != 0,
            approved: self.approved != 0,
            inviting: self.inviting != 0,
            withdraw: self.withdraw.as_deref().and_then(Withdraw::parse),
            attempts: self.attempts.clamp(0, u32::MAX as i64) as u32,
            next_attempt_at: ms(self.next_attempt_at),
            last_error: self.last_error,
            created_at: ms(self.created_at),
            updated_at: ms(self.updated_at),
            invited_at: self.invited_at.map(ms),
            closed_at: self.closed_at.map(ms),
            display_name: self.display_name,
            dm_room: self.dm_room,
            note: self.note,
        }
    }
}

/// Filters for reading knocks back, newest first.
#[derive(Debug, Clone, Default)]
pub struct KnockQuery {
    /// Only knocks older than this id (the cursor of the previous page).
    pub before: Option<i64>,
    pub limit: u32,
    pub status: Option<Status>,
    pub user_id: Option<String>,
}

/// What [`Store::forget`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Forgotten {
    pub knocks: u64,
    pub deliveries: u64,
}

/// A knock a space owes one of its child rooms.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChildKnock {
    pub parent_id: i64,
    /// The child's room ID, or `*` while the space's children are still to be read.
    pub room: String,
    pub user_id: String,
    pub attempts: i64,
}

/// A member the block-list scan reported for a moderator's look.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Review {
    pub user_id: String,
    pub why: String,
    #[serde(deserialize_with = "de_ms")]
    pub seen_at: u64,
}

fn de_ms<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    let v = <i64 as Deserialize>::deserialize(d)?;
    Ok(ms(v))
}

/// What [`Store::wake_inputs`] reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WakeInputs {
    pub pause_until: u64,
    pub earliest_due: Option<u64>,
    pub watch_continue: bool,
    pub child_next: Option<u64>,
    /// The next notice owed to the management room.
    pub notice_next: Option<u64>,
    /// The next owed direct message, digest or alert.
    pub owed_next: Option<u64>,
}

pub struct Store<S: Sql> {
    pub sql: S,
}

impl<S: Sql> Store<S> {
    /// Opens the store, creating or upgrading the schema first.
    pub fn open(sql: S) -> Result<Store<S>> {
        let store = Store { sql };
        store.migrate()?;
        Ok(store)
    }

    pub(super) fn all_knocks(&self) -> Result<Vec<Knock>> {
        self.knocks("SELECT {COLUMNS} FROM knocks ORDER BY id", &[])
    }

    fn knocks(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Knock>> {
        let rows: Vec<Row> = self.sql.query(&sql.replace("{COLUMNS}", COLUMNS), params)?;
        Ok(rows.into_iter().map(Row::into_knock).collect())
    }

    fn one(&self, sql: &str, params: &[SqlValue]) -> Result<Option<Knock>> {
        Ok(self.knocks(sql, params)?.into_iter().next())
    }

    /// Writes every column of `k` as it is, and the derived ones from it (migration only).
    pub(super) fn write_derived(&self, k: &Knock) -> Result<()> {
        let mut params = Self::values(k);
        params.push(k.id.into());
        self.sql.exec(&format!("{UPDATE} WHERE id = ?"), &params)?;
        Ok(())
    }

    fn values(k: &Knock) -> Vec<SqlValue> {
        vec![
            k.status.as_str().into(),
            k.profile_checked.into(),
            k.approved.into(),
            k.inviting.into(),
            k.withdraw.map(Withdraw::as_str).into(),
            (k.attempts as i64).into(),
            int(k.next_attempt_at),
            k.last_error.clone().into(),
            int(k.updated_at),
            k.invited_at.map(int).unwrap_or(SqlValue::Null),
            k.closed_at.map(int).unwrap_or(SqlValue::Null),
            k.display_name.clone().into(),
            k.dm_room.clone().into(),
            k.note.clone().into(),
            k.is_open().into(),
            k.due_at().map(int).unwrap_or(SqlValue::Null),
        ]
    }

    pub fn insert(&self, k: &Knock) -> Result<Knock> {
        #[derive(Deserialize)]
        struct Id {
            id: i64,
        }
        let mut params: Vec<SqlValue> = vec![k.user_id.as_str().into(), k.source.as_str().into()];
        params.extend(Self::values(k));
        params.push(int(k.created_at));
        let rows: Vec<Id> = self.sql.query(
            "INSERT INTO knocks (user_id, source, status, profile_checked, approved, inviting, \
             withdraw, attempts, next_attempt_at, last_error, updated_at, invited_at, closed_at, \
             display_name, dm_room, note, open, due_at, created_at, version) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) RETURNING id",
            &params,
        )?;
        let id = rows.first().map(|r| r.id).ok_or("insert returned no id")?;
        Ok(Knock {
            id,
            version: 1,
            ..k.clone()
        })
    }

    /// Compare-and-set: stores `k` only if the row still has `k.version`, and returns the row
    /// as stored (with its new version). `None` means someone changed it first: re-read and
    /// decide again.
    pub fn put(&self, k: &Knock) -> Result<Option<Knock>> {
        let mut params = Self::values(k);
        params.push(k.id.into());
        params.push(k.version.into());
        let written = self.sql.exec(
            &format!("{UPDATE}, version = version + 1 WHERE id = ? AND version = ?"),
            &params,
        )?;
        // Any row written means the one row with this id and version was (SQLite counts index
        // writes in some engines, so this is not `== 1`).
        Ok((written >= 1).then(|| Knock {
            version: k.version + 1,
            ..k.clone()
        }))
    }

    pub fn get(&self, id: i64) -> Result<Option<Knock>> {
        self.one("SELECT {COLUMNS} FROM knocks WHERE id = ?", &[id.into()])
    }

    pub fn latest_for(&self, user: &str) -> Result<Option<Knock>> {
        self.one(
            "SELECT {COLUMNS} FROM knocks WHERE user_id = ? ORDER BY id DESC LIMIT 1",
            &[user.into()],
        )
    }

    /// A user's knocks that are open or still owe work.
    pub fn live_for(&self, user: &str) -> Result<Vec<Knock>> {
        self.knocks(
            "SELECT {COLUMNS} FROM knocks WHERE user_id = ? \
             AND (open = 1 OR due_at IS NOT NULL OR inviting = 1) ORDER BY id",
            &[user.into()],
        )
    }

    /// Every knock that is open or still owes work (a glob block visits them all).
    pub fn live(&self) -> Result<Vec<Knock>> {
        self.knocks(
            "SELECT {COLUMNS} FROM knocks WHERE open = 1 OR due_at IS NOT NULL OR inviting = 1 \
             ORDER BY id",
            &[],
        )
    }

    /// Knocks due by `now`, earliest first.
    pub fn due(&self, now: u64, limit: u32) -> Result<Vec<Knock>> {
        self.knocks(
            "SELECT {COLUMNS} FROM knocks WHERE due_at IS NOT NULL AND due_at <= ? \
             ORDER BY due_at, id LIMIT ?",
            &[int(now), (limit as i64).into()],
        )
    }

    /// Knocks due by `now`, earliest first, unless the room is paused (`pause_until` after
    /// `now`): [`Store::due`] and the pause in one statement, since the queue asks before
    /// every step.
    pub fn due_unpaused(&self, now: u64, limit: u32) -> Result<Vec<Knock>> {
        self.knocks(
            "SELECT {COLUMNS} FROM knocks WHERE due_at IS NOT NULL AND due_at <= ? \
             AND COALESCE((SELECT CAST(v AS INTEGER) FROM meta WHERE k = 'pause_until'), 0) <= ? \
             ORDER BY due_at, id LIMIT ?",
            &[int(now), int(now), (limit as i64).into()],
        )
    }

    /// Knocks with work due later than `now`.
    pub fn waiting(&self, now: u64) -> Result<Vec<Knock>> {
        self.knocks(
            "SELECT {COLUMNS} FROM knocks WHERE due_at > ? ORDER BY due_at, id",
            &[int(now)],
        )
    }

    /// When the earliest owed work is due.
    pub fn earliest_due(&self) -> Result<Option<u64>> {
        #[derive(Deserialize)]
        struct T {
            t: Option<i64>,
        }
        let rows: Vec<T> = self.sql.query(
            "SELECT MIN(due_at) AS t FROM knocks WHERE due_at IS NOT NULL",
            &[],
        )?;
        Ok(rows.first().and_then(|r| r.t).map(ms))
    }

    /// The newest knock of every user (the watchdog's view).
    pub fn latest_per_user(&self) -> Result<Vec<Knock>> {
        self.knocks(
            "SELECT {COLUMNS} FROM knocks WHERE id IN \
             (SELECT MAX(id) FROM knocks GROUP BY user_id) ORDER BY id",
            &[],
        )
    }

    /// Open knocks, oldest first.
    pub fn open_knocks(&self) -> Result<Vec<Knock>> {
        self.knocks(
            "SELECT {COLUMNS} FROM knocks WHERE open = 1 ORDER BY id",
            &[],
        )
    }

    /// A page of knocks, newest first.
    pub fn page(&self, q: &KnockQuery) -> Result<Vec<Knock>> {
        let mut sql = String::from("SELECT {COLUMNS} FROM knocks WHERE 1 = 1");
        let mut params = Vec::new();
        if let Some(before) = q.before {
            sql.push_str(" AND id < ?");
            params.push(before.into());
        }
        if let Some(status) = q.status {
            sql.push_str(" AND status = ?");
            params.push(status.as_str().into());
        }
        if let Some(user) = &q.user_id {
            sql.push_str(" AND user_id = ?");
            params.push(user.as_str().into());
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        params.push((q.limit.clamp(1, 1000) as i64).into());
        self.knocks(&sql, &params)
    }

    /// Deletes what Knock stores about a person: knocks, deliveries, limiter state, membership
    /// record. A block-list entry and a ban record stay (they are the block itself).
    pub fn forget(&self, user: &str) -> Result<Forgotten> {
        // Counted first: some engines count index writes in what a statement wrote.
        #[derive(Deserialize)]
        struct N {
            n: i64,
        }
        let count = |sql: &str| -> Result<u64> {
            let rows: Vec<N> = self.sql.query(sql, &[user.into()])?;
            Ok(rows.first().map_or(0, |r| ms(r.n)))
        };
        let knocks = count("SELECT COUNT(*) AS n FROM knocks WHERE user_id = ?")?;
        let deliveries = count(
            "SELECT COUNT(*) AS n FROM deliveries WHERE knock_id IN \
             (SELECT id FROM knocks WHERE user_id = ?)",
        )?;
        self.sql.exec(
            "DELETE FROM deliveries WHERE knock_id IN (SELECT id FROM knocks WHERE user_id = ?)",
            &[user.into()],
        )?;
        self.sql
            .exec("DELETE FROM knocks WHERE user_id = ?", &[user.into()])?;
        self.sql.exec(
            "DELETE FROM limits WHERE key = ?",
            &[format!("mxid:{user}").into()],
        )?;
        self.sql
            .exec("DELETE FROM members WHERE user_id = ?", &[user.into()])?;
        self.drop_review(user)?;
        self.sql
            .exec("DELETE FROM outbox WHERE user_id = ?", &[user.into()])?;
        self.drop_orphans()?;
        Ok(Forgotten { knocks, deliveries })
    }

    /// Deletes closed knocks the lifecycle calls prunable, counting each by day and status
    /// first. At most `limit` a call, so a large backlog spreads over runs.
    pub fn prune(&self, now: u64, retention_ms: u64, limit: u32) -> Result<u64> {
        let cutoff = now.saturating_sub(retention_ms);
        let candidates = self.knocks(
            "SELECT {COLUMNS} FROM knocks WHERE open = 0 AND due_at IS NULL \
             AND COALESCE(closed_at, updated_at) <= ? ORDER BY id LIMIT ?",
            &[int(cutoff), (limit as i64).into()],
        )?;
        let mut pruned = 0;
        for k in candidates.iter().filter(|k| k.prunable(now, retention_ms)) {
            self.sql.exec(
                "INSERT INTO daily_counts (day, status, n) VALUES (?, ?, 1) \
                 ON CONFLICT(day, status) DO UPDATE SET n = n + 1",
                &[
                    int(lifecycle::day_of(k.created_at)),
                    k.status.as_str().into(),
                ],
            )?;
            self.sql
                .exec("DELETE FROM deliveries WHERE knock_id = ?", &[k.id.into()])?;
            if self
                .sql
                .exec("DELETE FROM knocks WHERE id = ?", &[k.id.into()])?
                > 0
            {
                pruned += 1;
            }
        }
        self.sql
            .exec("DELETE FROM deliveries WHERE expires_at <= ?", &[int(now)])?;
        self.sql
            .exec("DELETE FROM limits WHERE expires_at <= ?", &[int(now)])?;
        if pruned > 0 {
            self.drop_orphans()?;
        }
        Ok(pruned)
    }

    /// Counts of pruned knocks: `(day, status, n)`.
    pub fn daily_counts(&self) -> Result<Vec<(u64, String, u64)>> {
        #[derive(Deserialize)]
        struct C {
            day: i64,
            status: String,
            n: i64,
        }
        let rows: Vec<C> = self.sql.query(
            "SELECT day, status, n FROM daily_counts ORDER BY day, status",
            &[],
        )?;
        Ok(rows
            .into_iter()
            .map(|c| (ms(c.day), c.status, ms(c.n)))
            .collect())
    }

    // --- deliveries -----------------------------------------------------------------------

    /// The knock a delivery key was stored for, if it has not expired.
    pub fn delivery(&self, key: &str, now: u64) -> Result<Option<i64>> {
        #[derive(Deserialize)]
        struct D {
            knock_id: i64,
        }
        let rows: Vec<D> = self.sql.query(
            "SELECT knock_id FROM deliveries WHERE key = ? AND expires_at > ?",
            &[key.into(), int(now)],
        )?;
        Ok(rows.first().map(|d| d.knock_id))
    }

    pub fn put_delivery(&self, key: &str, knock_id: i64, now: u64) -> Result<()> {
        let expires = now.saturating_add(lifecycle::delivery_ttl_ms(key));
        self.sql.exec(
            "INSERT OR REPLACE INTO deliveries (key, knock_id, received_at, expires_at) \
             VALUES (?, ?, ?, ?)",
            &[key.into(), knock_id.into(), int(now), int(expires)],
        )?;
        Ok(())
    }

    // --- meta and limiter state -----------------------------------------------------------

    pub fn meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        #[derive(Deserialize)]
        struct V {
            v: String,
        }
        let rows: Vec<V> = self
            .sql
            .query("SELECT v FROM meta WHERE k = ?", &[key.into()])?;
        Ok(rows.first().and_then(|r| serde_json::from_str(&r.v).ok()))
    }

    pub fn set_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let v = serde_json::to_string(value).map_err(|e| e.to_string())?;
        self.sql.exec(
            "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
            &[key.into(), v.into()],
        )?;
        Ok(())
    }

    /// A numeric meta value (timestamps, flags); 0 when unset.
    pub fn meta_u64(&self, key: &str) -> Result<u64> {
        Ok(self.meta::<u64>(key)?.unwrap_or(0))
    }

    pub fn limit_state<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        #[derive(Deserialize)]
        struct V {
            state: String,
        }
        let rows: Vec<V> = self
            .sql
            .query("SELECT state FROM limits WHERE key = ?", &[key.into()])?;
        Ok(rows
            .first()
            .and_then(|r| serde_json::from_str(&r.state).ok()))
    }

    pub fn set_limit_state<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        expires_at: u64,
    ) -> Result<()> {
        let v = serde_json::to_string(value).map_err(|e| e.to_string())?;
        self.sql.exec(
            "INSERT OR REPLACE INTO limits (key, state, expires_at) VALUES (?, ?, ?)",
            &[key.into(), v.into(), int(expires_at)],
        )?;
        Ok(())
    }

    /// What intake reads before deciding, in one statement: the knock an unexpired delivery
    /// key was stored for, the limiter state under `limit_key`, the meta value `meta_key`, and
    /// `user`'s latest knock (as [`Store::latest_for`] reads it). One statement instead of
    /// two: on the Durable Object every statement is a call of its own, and intake is the hot
    /// path.
    pub fn intake_state<L: DeserializeOwned, M: DeserializeOwned>(
        &self,
        delivery_key: &str,
        now: u64,
        limit_key: &str,
        meta_key: &str,
        user: &str,
    ) -> Result<IntakeState<L, M>> {
        #[derive(Deserialize)]
        struct R {
            delivery: Option<i64>,
            limit: Option<String>,
            meta: Option<String>,
            latest: Option<String>,
        }
        let sql = format!(
            "SELECT (SELECT knock_id FROM deliveries WHERE key = ? AND expires_at > ?) AS delivery, \
             (SELECT state FROM limits WHERE key = ?) AS \"limit\", \
             (SELECT v FROM meta WHERE k = ?) AS meta, \
             (SELECT {} FROM knocks WHERE user_id = ? ORDER BY id DESC LIMIT 1) AS latest",
            row_as_json()
        );
        let rows: Vec<R> = self.sql.query(
            &sql,
            &[
                delivery_key.into(),
                int(now),
                limit_key.into(),
                meta_key.into(),
                user.into(),
            ],
        )?;
        let Some(r) = rows.into_iter().next() else {
            return Ok(IntakeState::default());
        };
        fn parse<T: DeserializeOwned>(v: Option<String>) -> Option<T> {
            v.and_then(|v| serde_json::from_str(&v).ok())
        }
        let latest = match r.latest {
            Some(json) => Some(
                serde_json::from_str::<Row>(&json)
                    .map_err(|e| format!("latest knock: {e}"))?
                    .into_knock(),
            ),
            None => None,
        };
        Ok(IntakeState {
            delivery: r.delivery,
            limit: parse(r.limit),
            meta: parse(r.meta),
            latest,
        })
    }

    /// What the next alarm depends on, in one statement: the pause (`pause_until`), the earliest
    /// owed knock work, whether a watchdog run is to continue (`watch_continue`), and the next
    /// undelivered child knock.
    pub fn wake_inputs(&self) -> Result<WakeInputs> {
        #[derive(Deserialize)]
        struct R {
            pause: Option<String>,
            due: Option<i64>,
            watch: Option<String>,
            child: Option<i64>,
            notice: Option<i64>,
            owed: Option<i64>,
        }
        let rows: Vec<R> = self.sql.query(
            "SELECT (SELECT v FROM meta WHERE k = 'pause_until') AS pause, \
             (SELECT MIN(due_at) FROM knocks WHERE due_at IS NOT NULL) AS due, \
             (SELECT v FROM meta WHERE k = 'watch_continue') AS watch, \
             (SELECT MIN(next_at) FROM outbox WHERE delivered_at IS NULL) AS child, \
             (SELECT MIN(next_at) FROM notices WHERE posted_at IS NULL) AS notice, \
             (SELECT MIN(next_at) FROM owed WHERE done_at IS NULL) AS owed",
            &[],
        )?;
        let u = |v: Option<String>| {
            v.and_then(|v| serde_json::from_str::<u64>(&v).ok())
                .unwrap_or(0)
        };
        Ok(rows
            .into_iter()
            .next()
            .map_or_else(WakeInputs::default, |r| WakeInputs {
                pause_until: u(r.pause),
                earliest_due: r.due.map(ms),
                watch_continue: u(r.watch) == 1,
                child_next: r.child.map(ms),
                notice_next: r.notice.map(ms),
                owed_next: r.owed.map(ms),
            }))
    }
}

const UPDATE: &str = "UPDATE knocks SET status = ?, profile_checked = ?, approved = ?, \
    inviting = ?, withdraw = ?, attempts = ?, next_attempt_at = ?, last_error = ?, \
    updated_at = ?, invited_at = ?, closed_at = ?, display_name = ?, dm_room = ?, note = ?, \
    open = ?, due_at = ?";
