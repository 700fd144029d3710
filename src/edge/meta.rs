//! The `meta (k, v)` table a SQLite-backed Durable Object keeps its small facts in (versions,
//! tokens, counters), for the objects that have one.

use serde::Deserialize;
use worker::{Result, SqlStorage};

/// The table, for an object's schema.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);";

pub fn get(sql: &SqlStorage, key: &str) -> Result<Option<String>> {
    #[derive(Deserialize)]
    struct V {
        v: String,
    }
    let rows: Vec<V> = sql
        .exec("SELECT v FROM meta WHERE k = ?", vec![key.into()])?
        .to_array()?;
    Ok(rows.into_iter().next().map(|r| r.v))
}

/// A number kept there (0 when absent or unreadable).
pub fn get_u64(sql: &SqlStorage, key: &str) -> Result<u64> {
    Ok(get(sql, key)?.and_then(|v| v.parse().ok()).unwrap_or(0))
}

pub fn set(sql: &SqlStorage, key: &str, value: &str) -> Result<()> {
    sql.exec(
        "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
        vec![key.into(), value.into()],
    )?;
    Ok(())
}
