//! The store's tables, versioned in SQLite's `user_version` and migrated forward at
//! open, one step at a time, each in its own transaction.

use rusqlite::Connection;

/// Each step takes the schema from the version before it (its index) to the next.
/// Append only: a step that shipped is never changed.
const MIGRATIONS: &[&str] = &[
    // 1: messages, their deliveries and attempts, subscribers, and the instance id.
    "
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        received_ms INTEGER NOT NULL,
        source TEXT NOT NULL,
        topic TEXT,
        content_type TEXT,
        headers BLOB NOT NULL,
        traceparent TEXT NOT NULL,
        tracestate TEXT,
        body BLOB NOT NULL
    );
    CREATE INDEX messages_by_time ON messages (received_ms);
    -- outcome NULL: the delivery has none yet, and is queued again at the next start.
    CREATE TABLE deliveries (
        message_id INTEGER NOT NULL,
        slot INTEGER NOT NULL,
        subscriber TEXT NOT NULL,
        outcome TEXT,
        number INTEGER,
        micros INTEGER,
        detail TEXT,
        PRIMARY KEY (message_id, slot)
    ) WITHOUT ROWID;
    CREATE INDEX deliveries_unfinished ON deliveries (message_id) WHERE outcome IS NULL;
    CREATE TABLE attempts (
        message_id INTEGER NOT NULL,
        slot INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        number INTEGER,
        micros INTEGER,
        detail TEXT,
        url TEXT,
        request_headers TEXT,
        response_status INTEGER,
        response_headers TEXT,
        response_body BLOB,
        truncated INTEGER
    );
    CREATE INDEX attempts_by_delivery ON attempts (message_id, slot);
    CREATE TABLE subscribers (
        key TEXT PRIMARY KEY,
        topics TEXT NOT NULL,
        lease_ms INTEGER,
        ordered INTEGER NOT NULL,
        max_in_flight INTEGER NOT NULL,
        secret TEXT,
        paused INTEGER NOT NULL,
        pinned INTEGER NOT NULL,
        registered_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
    // 2: replays name their original.
    "
    ALTER TABLE messages ADD COLUMN replay_of INTEGER;
    CREATE INDEX messages_by_original ON messages (replay_of) WHERE replay_of IS NOT NULL;
    ",
    // 3: starred messages, which retention keeps.
    "
    ALTER TABLE messages ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX messages_pinned ON messages (id) WHERE pinned = 1;
    ",
];

/// The version this build writes.
pub(crate) const VERSION: i64 = MIGRATIONS.len() as i64;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SchemaError {
    #[error(
        "it was written by a newer Herald (schema version {found}, this one knows up to {VERSION})"
    )]
    Newer { found: i64 },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Brings the schema up to [`VERSION`].
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), SchemaError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > VERSION {
        return Err(SchemaError::Newer { found });
    }
    for (from, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", from as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
