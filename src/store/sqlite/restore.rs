//! Reading the store back at start: its instance id, the last message id it gave, the
//! subscribers it kept, and the messages the hub takes into its log.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

use super::read::load_message;
use crate::hub::{MessageId, Pattern, Restored, StoredSubscriber};
use crate::store::codec::time_of;

/// What the store holds at start, and its instance id (made and kept on first open).
pub(super) fn restore(conn: &mut Connection, window: usize) -> Result<Restored, rusqlite::Error> {
    let meta = |conn: &Connection, key: &str| -> Result<Option<String>, rusqlite::Error> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
            row.get(0)
        })
        .optional()
    };
    let instance = match meta(conn, "instance")? {
        Some(instance) => instance,
        None => {
            let instance = crate::hub::new_instance_id();
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('instance', ?1)",
                [&instance],
            )?;
            instance
        }
    };
    let newest: Option<i64> =
        conn.query_row("SELECT MAX(id) FROM messages", [], |row| row.get(0))?;
    let kept_last = meta(conn, "last_id")?.and_then(|id| id.parse::<i64>().ok());
    let last_id = newest.max(kept_last).unwrap_or(0).max(0) as MessageId;

    let subscribers = {
        let mut rows = conn.prepare(
            "SELECT key, topics, lease_ms, ordered, max_in_flight, secret, paused, pinned, \
             registered_ms, last_seen_ms FROM subscribers",
        )?;
        let rows = rows.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<i64>>(2)?,
                row.get::<_, bool>(3)?,
                row.get::<_, u32>(4)?,
                row.get::<_, Option<String>>(5)?,
                row.get::<_, bool>(6)?,
                row.get::<_, bool>(7)?,
                row.get::<_, i64>(8)?,
                row.get::<_, i64>(9)?,
            ))
        })?;
        let mut subscribers = Vec::new();
        for row in rows {
            let (
                key,
                topics,
                lease,
                ordered,
                max_in_flight,
                secret,
                paused,
                pinned,
                registered,
                seen,
            ) = row?;
            let topics = if topics.is_empty() {
                Vec::new()
            } else {
                Pattern::parse_list(&topics).unwrap_or_default()
            };
            subscribers.push(StoredSubscriber {
                key: key.into(),
                topics: topics.into(),
                lease: lease.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
                ordered,
                max_in_flight,
                secret: secret.and_then(|s| s.parse().ok()),
                paused,
                pinned,
                registered_at: time_of(registered),
                last_seen: time_of(seen),
            });
        }
        subscribers
    };

    // The newest messages for the log, and every one with a delivery still to make.
    let ids: Vec<i64> = {
        let mut rows = conn.prepare(
            "SELECT id FROM (SELECT id FROM messages ORDER BY id DESC LIMIT ?1) \
             UNION SELECT DISTINCT message_id FROM deliveries WHERE outcome IS NULL \
             UNION SELECT id FROM messages WHERE pinned = 1 \
             ORDER BY 1",
        )?;
        rows.query_map([i64::try_from(window).unwrap_or(i64::MAX)], |row| {
            row.get(0)
        })?
        .collect::<Result<_, _>>()?
    };
    let mut messages = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(message) = load_message(conn, id as MessageId)? {
            messages.push(message);
        }
    }
    Ok(Restored {
        instance: Some(instance),
        last_id,
        subscribers,
        messages,
    })
}
