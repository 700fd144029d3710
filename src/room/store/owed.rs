//! Work the room owes the homeserver besides its knocks' own steps, in one queue: a direct
//! message to a rejected person (`deny`), a join wave's digest in the management room
//! (`digest`), an alert to the moderators (`alert`). Each item is keyed by its kind and a key
//! of the kind's choosing, owed once, retried with back-off until done, and remembers what the
//! homeserver answered (an event or room id) so a retry or an edit reuses it.
//!
//! Also here: the form answers kept with a knock for its moderators.

use serde::Deserialize;

use super::{int, ms, Result, Sql, Store};
use crate::domain::lifecycle::Knock;

/// The first retry of owed work waits this long; each later one twice as long as the last.
const RETRY_BASE_MS: u64 = 5_000;
/// No retry of owed work waits longer than this.
const RETRY_MAX_MS: u64 = 10 * 60_000;

/// How long to wait before the next try of work that failed `attempts` times already.
pub fn backoff(attempts: i64) -> u64 {
    (RETRY_BASE_MS << attempts.clamp(0, 16)).min(RETRY_MAX_MS)
}

/// One owed item, due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    pub key: String,
    pub attempts: i64,
    /// What it carries (an alert's text), if anything.
    pub payload: Option<String>,
    /// What an earlier try or an earlier round of it got back (an event or room id).
    pub result: Option<String>,
}

impl<S: Sql> Store<S> {
    /// Owes `kind`/`key` (again, if it was done: a digest that grew is owed an edit). Keeps
    /// what an earlier round got back.
    pub fn owe(&self, kind: &str, key: &str, payload: Option<&str>, now: u64) -> Result<()> {
        self.sql.exec(
            "INSERT INTO owed (kind, key, next_at, payload) VALUES (?, ?, ?, ?) \
             ON CONFLICT(kind, key) DO UPDATE SET \
             next_at = CASE WHEN owed.done_at IS NULL THEN MIN(owed.next_at, excluded.next_at) \
                       ELSE excluded.next_at END, \
             attempts = CASE WHEN owed.done_at IS NULL THEN owed.attempts ELSE 0 END, \
             done_at = NULL, \
             payload = COALESCE(excluded.payload, owed.payload)",
            &[kind.into(), key.into(), int(now), payload.into()],
        )?;
        Ok(())
    }

    /// Owes `kind`/`key` once: nothing changes if it is owed or was done already.
    pub fn owe_once(&self, kind: &str, key: &str, payload: Option<&str>, now: u64) -> Result<bool> {
        Ok(self.sql.exec(
            "INSERT OR IGNORE INTO owed (kind, key, next_at, payload) VALUES (?, ?, ?, ?)",
            &[kind.into(), key.into(), int(now), payload.into()],
        )? > 0)
    }

    /// The items of `kind` due at `now`, oldest first.
    pub fn owed_due(&self, kind: &str, now: u64, limit: u32) -> Result<Vec<Owed>> {
        #[derive(Deserialize)]
        struct R {
            key: String,
            attempts: i64,
            payload: Option<String>,
            result: Option<String>,
        }
        let rows: Vec<R> = self.sql.query(
            "SELECT key, attempts, payload, result FROM owed \
             WHERE kind = ? AND done_at IS NULL AND next_at <= ? ORDER BY next_at, key LIMIT ?",
            &[kind.into(), int(now), (limit as i64).into()],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| Owed {
                key: r.key,
                attempts: r.attempts,
                payload: r.payload,
                result: r.result,
            })
            .collect())
    }

    /// Records what a try got back, without closing the item (a direct chat was opened; the
    /// message is still to be sent).
    pub fn owed_progress(&self, kind: &str, key: &str, result: &str) -> Result<()> {
        self.sql.exec(
            "UPDATE owed SET result = ? WHERE kind = ? AND key = ?",
            &[result.into(), kind.into(), key.into()],
        )?;
        Ok(())
    }

    /// The item is done; `result` (if any) is kept for a later round.
    pub fn owed_done(&self, kind: &str, key: &str, result: Option<&str>, now: u64) -> Result<()> {
        self.sql.exec(
            "UPDATE owed SET done_at = ?, result = COALESCE(?, result) WHERE kind = ? AND key = ?",
            &[int(now), result.into(), kind.into(), key.into()],
        )?;
        Ok(())
    }

    /// The try failed: the next one waits [`backoff`].
    pub fn owed_retry(&self, kind: &str, key: &str, attempts: i64, now: u64) -> Result<()> {
        self.sql.exec(
            "UPDATE owed SET attempts = attempts + 1, next_at = ? WHERE kind = ? AND key = ?",
            &[int(now + backoff(attempts)), kind.into(), key.into()],
        )?;
        Ok(())
    }

    /// What the item got back so far, if it exists.
    pub fn owed_result(&self, kind: &str, key: &str) -> Result<Option<String>> {
        #[derive(Deserialize)]
        struct R {
            result: Option<String>,
        }
        let rows: Vec<R> = self.sql.query(
            "SELECT result FROM owed WHERE kind = ? AND key = ?",
            &[kind.into(), key.into()],
        )?;
        Ok(rows.into_iter().next().and_then(|r| r.result))
    }

    /// When the earliest owed item is due.
    pub fn owed_next(&self) -> Result<Option<u64>> {
        #[derive(Deserialize)]
        struct T {
            t: Option<i64>,
        }
        let rows: Vec<T> = self.sql.query(
            "SELECT MIN(next_at) AS t FROM owed WHERE done_at IS NULL",
            &[],
        )?;
        Ok(rows.first().and_then(|r| r.t).map(ms))
    }

    // --- the form's answers -------------------------------------------------------------------

    /// Keeps a knock's form answers (label, value) for its moderators.
    pub fn put_answers(&self, knock_id: i64, answers: &[(String, String)]) -> Result<()> {
        if answers.is_empty() {
            return Ok(());
        }
        let text = serde_json::to_string(answers).map_err(|e| e.to_string())?;
        self.sql.exec(
            "INSERT OR REPLACE INTO answers (knock_id, answers) VALUES (?, ?)",
            &[knock_id.into(), text.into()],
        )?;
        Ok(())
    }

    /// A knock's form answers (none for a native knock).
    pub fn answers(&self, knock_id: i64) -> Result<Vec<(String, String)>> {
        #[derive(Deserialize)]
        struct R {
            answers: String,
        }
        let rows: Vec<R> = self.sql.query(
            "SELECT answers FROM answers WHERE knock_id = ?",
            &[knock_id.into()],
        )?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|r| serde_json::from_str(&r.answers).ok())
            .unwrap_or_default())
    }

    // --- join waves ----------------------------------------------------------------------------

    /// Knock `knock_id` was held by the join wave that began at `wave`.
    pub fn add_wave_knock(&self, wave: u64, knock_id: i64) -> Result<()> {
        self.sql.exec(
            "INSERT OR IGNORE INTO wave_knocks (wave, knock_id) VALUES (?, ?)",
            &[int(wave), knock_id.into()],
        )?;
        Ok(())
    }

    /// The wave's knocks that still wait for a moderator, oldest first, and how many it held
    /// in all.
    pub fn wave_held(&self, wave: u64) -> Result<(Vec<Knock>, u64)> {
        let held = self.knocks(
            "SELECT {COLUMNS} FROM knocks WHERE status = 'held' AND id IN \
             (SELECT knock_id FROM wave_knocks WHERE wave = ?) ORDER BY id",
            &[int(wave)],
        )?;
        #[derive(Deserialize)]
        struct N {
            n: i64,
        }
        let rows: Vec<N> = self.sql.query(
            "SELECT COUNT(*) AS n FROM wave_knocks WHERE wave = ?",
            &[int(wave)],
        )?;
        Ok((held, rows.first().map_or(0, |r| r.n.max(0) as u64)))
    }

    /// Drops answers and owed messages of knocks that no longer exist (forgotten or pruned).
    pub(super) fn drop_orphans(&self) -> Result<()> {
        self.sql.exec(
            "DELETE FROM answers WHERE knock_id NOT IN (SELECT id FROM knocks)",
            &[],
        )?;
        self.sql.exec(
            "DELETE FROM owed WHERE kind = 'deny' AND CAST(key AS INTEGER) NOT IN (SELECT id FROM knocks)",
            &[],
        )?;
        self.sql.exec(
            "DELETE FROM notices WHERE knock_id NOT IN (SELECT id FROM knocks)",
            &[],
        )?;
        self.sql.exec(
            "DELETE FROM wave_knocks WHERE knock_id NOT IN (SELECT id FROM knocks)",
            &[],
        )?;
        Ok(())
    }
}
