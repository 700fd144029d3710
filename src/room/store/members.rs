//! The room's members as the watchdog last saw them, the members the block-list scan reported
//! for a moderator's look, and the bans Knock made (so an unblock lifts only its own).

use super::*;

impl<S: Sql> Store<S> {
    // --- members and bans -----------------------------------------------------------------

    pub fn upsert_member(&self, m: &Member) -> Result<()> {
        self.sql.exec(
            "INSERT INTO members (user_id, membership, display_name, event_id, sender) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT(user_id) DO UPDATE SET \
             membership = excluded.membership, display_name = excluded.display_name, \
             event_id = excluded.event_id, sender = excluded.sender",
            &[
                m.user_id.as_str().into(),
                m.membership.as_str().into(),
                m.display_name.clone().into(),
                m.event_id.clone().into(),
                m.sender.clone().into(),
            ],
        )?;
        Ok(())
    }

    pub fn replace_members(&self, members: &[Member]) -> Result<()> {
        self.sql.exec("DELETE FROM members", &[])?;
        members.iter().try_for_each(|m| self.upsert_member(m))
    }

    pub fn members(&self) -> Result<Vec<Member>> {
        self.sql.query(
            "SELECT user_id, membership, display_name, event_id, sender FROM members \
             ORDER BY user_id",
            &[],
        )
    }

    // --- members to review ------------------------------------------------------------------

    /// A member the block-list scan found with hold-level evidence. Seen again with the same
    /// explanation, a dismissed review stays dismissed; new evidence asks again.
    /// Returns whether a moderator has something new to look at.
    pub fn report_member(&self, user: &str, why: &str, now: u64) -> Result<bool> {
        #[derive(Deserialize)]
        struct W {
            why: String,
        }
        let before: Vec<W> = self
            .sql
            .query("SELECT why FROM reviews WHERE user_id = ?", &[user.into()])?;
        self.sql.exec(
            "INSERT INTO reviews (user_id, why, seen_at, dismissed) VALUES (?, ?, ?, 0) \
             ON CONFLICT(user_id) DO UPDATE SET seen_at = excluded.seen_at, \
             dismissed = CASE WHEN reviews.why = excluded.why THEN reviews.dismissed ELSE 0 END, \
             why = excluded.why",
            &[user.into(), why.into(), int(now)],
        )?;
        Ok(before.first().is_none_or(|b| b.why != why))
    }

    /// Members waiting for a moderator's look, oldest report first.
    pub fn reviews(&self) -> Result<Vec<Review>> {
        self.sql.query(
            "SELECT user_id, why, seen_at FROM reviews WHERE dismissed = 0 ORDER BY seen_at, user_id",
            &[],
        )
    }

    /// A moderator kept the member: not asked again for the same evidence.
    pub fn dismiss_review(&self, user: &str) -> Result<bool> {
        let open: Vec<Review> = self.sql.query(
            "SELECT user_id, why, seen_at FROM reviews WHERE user_id = ? AND dismissed = 0",
            &[user.into()],
        )?;
        self.sql.exec(
            "UPDATE reviews SET dismissed = 1 WHERE user_id = ?",
            &[user.into()],
        )?;
        Ok(!open.is_empty())
    }

    pub fn drop_review(&self, user: &str) -> Result<()> {
        self.sql
            .exec("DELETE FROM reviews WHERE user_id = ?", &[user.into()])?;
        Ok(())
    }

    /// Reviews a whole member pass that began at `pass_start` did not report again: the member
    /// left, or the evidence is gone.
    pub fn prune_reviews(&self, pass_start: u64) -> Result<()> {
        self.sql
            .exec("DELETE FROM reviews WHERE seen_at < ?", &[int(pass_start)])?;
        Ok(())
    }

    // --- bans Knock made ---

    pub fn record_ban(&self, user: &str, reason: &str, now: u64) -> Result<()> {
        self.sql.exec(
            "INSERT OR REPLACE INTO bans (user_id, reason, placed_at) VALUES (?, ?, ?)",
            &[user.into(), reason.into(), int(now)],
        )?;
        Ok(())
    }

    pub fn has_ban(&self, user: &str) -> Result<bool> {
        #[derive(Deserialize)]
        struct B {
            #[allow(dead_code)]
            user_id: String,
        }
        let rows: Vec<B> = self
            .sql
            .query("SELECT user_id FROM bans WHERE user_id = ?", &[user.into()])?;
        Ok(!rows.is_empty())
    }

    pub fn drop_ban(&self, user: &str) -> Result<()> {
        self.sql
            .exec("DELETE FROM bans WHERE user_id = ?", &[user.into()])?;
        Ok(())
    }
}
