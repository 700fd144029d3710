//! The room's schema, and the one upgrade path: a new object starts from the first release's
//! schema too, and every version's changes are applied in order, rows included. Runs in the
//! object's constructor, with no `await`, so it is atomic.

use serde::Deserialize;

use super::{int, ms, Result, Sql, Store};
use crate::domain::lifecycle::{self, Status};

/// The schema of the first release, kept as it was: a new object starts from it too, so that
/// there is exactly one upgrade path.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS knocks (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id TEXT NOT NULL,
  source TEXT NOT NULL,
  status TEXT NOT NULL,
  profile_checked INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  last_error TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  invited_at INTEGER,
  display_name TEXT
);
CREATE INDEX IF NOT EXISTS knocks_by_user ON knocks(user_id, id);
CREATE TABLE IF NOT EXISTS deliveries (
  key TEXT PRIMARY KEY,
  knock_id INTEGER NOT NULL,
  received_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS members (
  user_id TEXT PRIMARY KEY,
  membership TEXT NOT NULL,
  display_name TEXT,
  event_id TEXT
);
CREATE TABLE IF NOT EXISTS bans (
  user_id TEXT PRIMARY KEY,
  reason TEXT NOT NULL,
  placed_at INTEGER NOT NULL
);
";

/// Version 2: row versions and the lifecycle's derived columns; deliveries that expire; per-ID
/// limiter state in its own bounded table; daily counts that outlive pruned knocks.
const SCHEMA_V2: &str = "
ALTER TABLE knocks ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE knocks ADD COLUMN open INTEGER NOT NULL DEFAULT 0;
ALTER TABLE knocks ADD COLUMN due_at INTEGER;
ALTER TABLE knocks ADD COLUMN closed_at INTEGER;
ALTER TABLE knocks ADD COLUMN approved INTEGER NOT NULL DEFAULT 0;
ALTER TABLE knocks ADD COLUMN inviting INTEGER NOT NULL DEFAULT 0;
ALTER TABLE knocks ADD COLUMN withdraw TEXT;
ALTER TABLE knocks ADD COLUMN dm_room TEXT;
ALTER TABLE knocks ADD COLUMN note TEXT;
DROP INDEX IF EXISTS knocks_due;
CREATE INDEX IF NOT EXISTS knocks_due_at ON knocks(due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS knocks_closed ON knocks(open, closed_at);
ALTER TABLE deliveries ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS deliveries_expiry ON deliveries(expires_at);
CREATE INDEX IF NOT EXISTS deliveries_by_knock ON deliveries(knock_id);
ALTER TABLE members ADD COLUMN sender TEXT;
CREATE TABLE IF NOT EXISTS limits (key TEXT PRIMARY KEY, state TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS limits_expiry ON limits(expires_at);
CREATE TABLE IF NOT EXISTS daily_counts (day INTEGER NOT NULL, status TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (day, status));
";

/// Version 3: members the block-list scan found with hold-level evidence, for a moderator.
const SCHEMA_V3: &str = "
CREATE TABLE IF NOT EXISTS reviews (
  user_id TEXT PRIMARY KEY,
  why TEXT NOT NULL,
  seen_at INTEGER NOT NULL,
  dismissed INTEGER NOT NULL DEFAULT 0
);
";

/// Version 4: a space's knocks owed to its child rooms (delivered to each child's own object),
/// and notices owed to the management room.
const SCHEMA_V4: &str = "
CREATE TABLE IF NOT EXISTS outbox (
  parent_id INTEGER NOT NULL,
  room TEXT NOT NULL,
  user_id TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at INTEGER NOT NULL,
  delivered_at INTEGER,
  PRIMARY KEY (parent_id, room)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(next_at) WHERE delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS notices (
  knock_id INTEGER PRIMARY KEY,
  next_at INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  event_id TEXT,
  posted_at INTEGER
);
CREATE INDEX IF NOT EXISTS notices_due ON notices(next_at) WHERE posted_at IS NULL;
";

/// Version 5: one queue for the other work the room owes (direct messages to rejected
/// people, join-wave digests, alerts), the form answers kept with a knock, and which knocks
/// each join wave held (its digest lists them).
const SCHEMA_V5: &str = "
CREATE TABLE IF NOT EXISTS owed (
  kind TEXT NOT NULL,
  key TEXT NOT NULL,
  next_at INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  payload TEXT,
  result TEXT,
  done_at INTEGER,
  PRIMARY KEY (kind, key)
);
CREATE INDEX IF NOT EXISTS owed_due ON owed(next_at) WHERE done_at IS NULL;
CREATE TABLE IF NOT EXISTS answers (
  knock_id INTEGER PRIMARY KEY,
  answers TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS wave_knocks (
  wave INTEGER NOT NULL,
  knock_id INTEGER NOT NULL,
  PRIMARY KEY (wave, knock_id)
);
";

pub const SCHEMA_VERSION: u64 = 5;

impl<S: Sql> Store<S> {
    pub(super) fn migrate(&self) -> Result<()> {
        self.sql.batch(SCHEMA_V1)?;
        let version = self.meta::<u64>("schema")?.unwrap_or(1);
        if version >= SCHEMA_VERSION {
            return Ok(());
        }
        if version < 2 {
            self.sql.batch(SCHEMA_V2)?;
            self.upgrade_v1_rows()?;
        }
        self.sql.batch(SCHEMA_V3)?;
        self.sql.batch(SCHEMA_V4)?;
        self.sql.batch(SCHEMA_V5)?;
        self.set_meta("schema", &SCHEMA_VERSION)
    }

    /// Gives every knock of the first release the columns its lifecycle derives, moves per-user
    /// meta keys into their tables, and dates every delivery's expiry.
    fn upgrade_v1_rows(&self) -> Result<()> {
        for mut k in self.all_knocks()? {
            // The first release recorded expiry as a rescind with a fixed reason.
            if k.status == Status::Rescinded
                && k.last_error.as_deref() == Some(lifecycle::EXPIRED_REASON)
            {
                k.status = Status::Expired;
            }
            if !k.is_open() && k.closed_at.is_none() {
                k.closed_at = Some(k.updated_at);
            }
            self.write_derived(&k)?;
        }
        #[derive(Deserialize)]
        struct Kv {
            k: String,
            v: String,
        }
        let keys: Vec<Kv> = self.sql.query(
            "SELECT k, v FROM meta WHERE k LIKE 'dm:%' OR k LIKE 'mxid:%'",
            &[],
        )?;
        for kv in keys {
            if let Some(user) = kv.k.strip_prefix("dm:") {
                if let Ok(room) = serde_json::from_str::<String>(&kv.v) {
                    self.sql.exec(
                        "UPDATE knocks SET dm_room = ? WHERE id = \
                         (SELECT MAX(id) FROM knocks WHERE user_id = ?)",
                        &[room.into(), user.into()],
                    )?;
                }
            } else {
                // Limiter state: kept for a day, far longer than any window it counts.
                self.sql.exec(
                    "INSERT OR REPLACE INTO limits (key, state, expires_at) VALUES (?, ?, ?)",
                    &[kv.k.as_str().into(), kv.v.into(), i64::MAX.into()],
                )?;
            }
            self.sql
                .exec("DELETE FROM meta WHERE k = ?", &[kv.k.into()])?;
        }
        #[derive(Deserialize)]
        struct D {
            key: String,
            received_at: i64,
        }
        let deliveries: Vec<D> = self
            .sql
            .query("SELECT key, received_at FROM deliveries", &[])?;
        for d in deliveries {
            let expires = ms(d.received_at).saturating_add(lifecycle::delivery_ttl_ms(&d.key));
            self.sql.exec(
                "UPDATE deliveries SET expires_at = ? WHERE key = ?",
                &[int(expires), d.key.into()],
            )?;
        }
        Ok(())
    }
}
