//! The room's side queues: notices it owes the management room for its knocks, and the knocks
//! a space owes its child rooms. Each is retried until done.

use super::*;

impl<S: Sql> Store<S> {
    // --- notices for the management room -----------------------------------------------------

    /// Owes the management room a notice about knock `id` (once per knock).
    pub fn owe_notice(&self, knock_id: i64, now: u64) -> Result<()> {
        self.sql.exec(
            "INSERT OR IGNORE INTO notices (knock_id, next_at) VALUES (?, ?)",
            &[knock_id.into(), int(now)],
        )?;
        Ok(())
    }

    /// Notices due for posting: (knock id, attempts so far).
    pub fn notices_due(&self, now: u64, limit: u32) -> Result<Vec<(i64, i64)>> {
        #[derive(Deserialize)]
        struct N {
            knock_id: i64,
            attempts: i64,
        }
        let rows: Vec<N> = self.sql.query(
            "SELECT knock_id, attempts FROM notices WHERE posted_at IS NULL AND next_at <= ? \
             ORDER BY next_at, knock_id LIMIT ?",
            &[int(now), (limit as i64).into()],
        )?;
        Ok(rows.into_iter().map(|n| (n.knock_id, n.attempts)).collect())
    }

    pub fn notices_next(&self) -> Result<Option<u64>> {
        #[derive(Deserialize)]
        struct T {
            t: Option<i64>,
        }
        let rows: Vec<T> = self.sql.query(
            "SELECT MIN(next_at) AS t FROM notices WHERE posted_at IS NULL",
            &[],
        )?;
        Ok(rows.first().and_then(|r| r.t).map(ms))
    }

    pub fn notice_posted(&self, knock_id: i64, event_id: &str, now: u64) -> Result<()> {
        self.sql.exec(
            "UPDATE notices SET posted_at = ?, event_id = ? WHERE knock_id = ?",
            &[int(now), event_id.into(), knock_id.into()],
        )?;
        Ok(())
    }

    pub fn notice_retry(&self, knock_id: i64, at: u64) -> Result<()> {
        self.sql.exec(
            "UPDATE notices SET attempts = attempts + 1, next_at = ? WHERE knock_id = ?",
            &[int(at), knock_id.into()],
        )?;
        Ok(())
    }

    /// The knock a posted notice is about, by the notice's event id.
    pub fn notice_knock(&self, event_id: &str) -> Result<Option<i64>> {
        #[derive(Deserialize)]
        struct K {
            knock_id: i64,
        }
        let rows: Vec<K> = self.sql.query(
            "SELECT knock_id FROM notices WHERE event_id = ?",
            &[event_id.into()],
        )?;
        Ok(rows.first().map(|k| k.knock_id))
    }

    // --- a space's knocks for its child rooms -------------------------------------------------

    /// Owes knock `parent_id`'s person a knock in each of `rooms` (room IDs, or `*`: every child
    /// the space has, read when it is delivered). Owed once per parent and room.
    pub fn owe_child_knocks(
        &self,
        parent_id: i64,
        user: &str,
        rooms: &[&str],
        now: u64,
    ) -> Result<()> {
        for room in rooms {
            self.sql.exec(
                "INSERT OR IGNORE INTO outbox (parent_id, room, user_id, next_at) VALUES (?, ?, ?, ?)",
                &[parent_id.into(), (*room).into(), user.into(), int(now)],
            )?;
        }
        Ok(())
    }

    /// Child knocks due for delivery, oldest first.
    pub fn child_knocks_due(&self, now: u64, limit: u32) -> Result<Vec<ChildKnock>> {
        self.sql.query(
            "SELECT parent_id, room, user_id, attempts FROM outbox \
             WHERE delivered_at IS NULL AND next_at <= ? ORDER BY next_at, parent_id LIMIT ?",
            &[int(now), (limit as i64).into()],
        )
    }

    /// When the next undelivered child knock is due.
    pub fn child_knocks_next(&self) -> Result<Option<u64>> {
        #[derive(Deserialize)]
        struct T {
            t: Option<i64>,
        }
        let rows: Vec<T> = self.sql.query(
            "SELECT MIN(next_at) AS t FROM outbox WHERE delivered_at IS NULL",
            &[],
        )?;
        Ok(rows.first().and_then(|r| r.t).map(ms))
    }

    pub fn child_knock_delivered(&self, parent_id: i64, room: &str, now: u64) -> Result<()> {
        self.sql.exec(
            "UPDATE outbox SET delivered_at = ? WHERE parent_id = ? AND room = ?",
            &[int(now), parent_id.into(), room.into()],
        )?;
        Ok(())
    }

    pub fn child_knock_retry(&self, parent_id: i64, room: &str, at: u64) -> Result<()> {
        self.sql.exec(
            "UPDATE outbox SET attempts = attempts + 1, next_at = ? WHERE parent_id = ? AND room = ?",
            &[int(at), parent_id.into(), room.into()],
        )?;
        Ok(())
    }

    /// A `*` row resolved into the space's children: one row per child, then the `*` row goes.
    pub fn resolve_child_knocks(
        &self,
        parent_id: i64,
        user: &str,
        children: &[&str],
        now: u64,
    ) -> Result<()> {
        self.owe_child_knocks(parent_id, user, children, now)?;
        self.sql.exec(
            "DELETE FROM outbox WHERE parent_id = ? AND room = '*'",
            &[parent_id.into()],
        )?;
        Ok(())
    }
}
