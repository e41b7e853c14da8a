//! A group of changes as rows: what the writer thread writes in one transaction (messages
//! and their deliveries, attempts, outcomes, subscribers, pins) and what pruning deletes.

use std::sync::Arc;

use rusqlite::{Connection, Transaction, params};

use super::Op;
use crate::hub::{Change, MessageId, MessageRecord, Pattern, Topic};
use crate::store::codec::{headers_blob, millis, outcome_columns};

/// What one transaction did to the message count.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Written {
    pub(super) appended: u64,
    pub(super) deleted: u64,
}

/// Deletes messages with ids below `below`, their deliveries and attempts, sparing those
/// with a delivery still to make. Returns how many messages went.
pub(super) fn delete_below(tx: &Transaction<'_>, below: i64) -> Result<u64, rusqlite::Error> {
    if below <= 0 {
        return Ok(0);
    }
    // What stays: messages with a delivery still to make, and pinned ones.
    const STAYING: &str = "SELECT message_id FROM deliveries WHERE message_id < ?1 AND outcome IS NULL \
         UNION SELECT id FROM messages WHERE id < ?1 AND pinned = 1";
    tx.execute(
        &format!("DELETE FROM attempts WHERE message_id < ?1 AND message_id NOT IN ({STAYING})"),
        [below],
    )?;
    tx.execute(
        &format!("DELETE FROM deliveries WHERE message_id < ?1 AND message_id NOT IN ({STAYING})"),
        [below],
    )?;
    let gone = tx.execute(
        &format!("DELETE FROM messages WHERE id < ?1 AND id NOT IN ({STAYING})"),
        [below],
    )?;
    Ok(gone as u64)
}

/// Writes one group of changes in one transaction.
pub(super) fn write(conn: &mut Connection, batch: &[Op]) -> Result<Written, rusqlite::Error> {
    let tx = conn.transaction()?;
    let mut written = Written::default();
    let mut last_id = None;
    for op in batch {
        match op {
            Op::Append(message, subscribers, _) => {
                insert_message(&tx, message)?;
                insert_deliveries(&tx, message.id, 0, subscribers)?;
                written.appended += 1;
                last_id = Some(message.id);
            }
            Op::Change(change) | Op::Kept(change, _) => written.deleted += apply(&tx, change)?,
            Op::Flush(_) => {}
        }
    }
    if let Some(id) = last_id {
        // Kept apart from the messages: ids go on from here even once every message
        // was pruned or forgotten, so that a `webhook-id` is never given twice.
        tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_id', ?1)")?
            .execute([id.to_string()])?;
    }
    tx.commit()?;
    Ok(written)
}

fn insert_message(tx: &Transaction<'_>, message: &MessageRecord) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO messages (id, received_ms, source, topic, content_type, headers, traceparent, tracestate, body, replay_of) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        message.id as i64,
        millis(message.received_at),
        message.source.to_string(),
        message.topic.as_ref().map(Topic::as_str),
        message.content_type,
        headers_blob(&message.headers),
        message.trace.child(),
        message.trace.state,
        &message.body[..],
        message.replay_of.map(|id| id as i64),
    ])?;
    Ok(())
}

/// Adds pending deliveries of message `id`, in slots `first..`, one per address.
fn insert_deliveries(
    tx: &Transaction<'_>,
    id: MessageId,
    first: usize,
    subscribers: &[Arc<str>],
) -> Result<(), rusqlite::Error> {
    let mut insert = tx.prepare_cached(
        "INSERT OR REPLACE INTO deliveries (message_id, slot, subscriber) VALUES (?1, ?2, ?3)",
    )?;
    for (slot, address) in (first..).zip(subscribers) {
        insert.execute(params![id as i64, slot as i64, &**address])?;
    }
    Ok(())
}

/// Applies one change; returns how many messages it deleted.
fn apply(tx: &Transaction<'_>, change: &Change) -> Result<u64, rusqlite::Error> {
    match change {
        Change::Queued {
            id,
            first,
            subscribers,
        } => insert_deliveries(tx, *id, *first, subscribers)?,
        Change::Attempt { id, slot, attempt } => {
            let (kind, number, micros, detail) = outcome_columns(&attempt.outcome);
            let exchange = attempt.exchange.as_deref();
            let answer = exchange.and_then(|e| e.response.as_ref());
            tx.prepare_cached(
                "INSERT INTO attempts (message_id, slot, at_ms, outcome, number, micros, detail, url, \
                 request_headers, response_status, response_headers, response_body, truncated) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                *id as i64,
                *slot as i64,
                millis(attempt.at),
                kind,
                number,
                micros,
                detail,
                exchange.map(|e| &*e.url),
                exchange.map(|e| e.request_headers.as_text()),
                answer.map(|a| a.status),
                answer.map(|a| a.headers.as_text()),
                answer.map(|a| &a.body[..]),
                answer.map(|a| a.truncated),
            ])?;
        }
        Change::Finished { id, slot, outcome } => {
            let (kind, number, micros, detail) = outcome_columns(outcome);
            tx.prepare_cached(
                "UPDATE deliveries SET outcome = ?3, number = ?4, micros = ?5, detail = ?6 \
                 WHERE message_id = ?1 AND slot = ?2",
            )?
            .execute(params![
                *id as i64,
                *slot as i64,
                kind,
                number,
                micros,
                detail
            ])?;
        }
        Change::Subscriber(s) => {
            let topics: Vec<&str> = s.topics.iter().map(Pattern::as_str).collect();
            tx.prepare_cached(
                "INSERT OR REPLACE INTO subscribers (key, topics, lease_ms, ordered, max_in_flight, \
                 secret, paused, pinned, registered_ms, last_seen_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                &*s.key,
                topics.join(","),
                s.lease.map(|l| i64::try_from(l.as_millis()).unwrap_or(i64::MAX)),
                s.ordered,
                s.max_in_flight,
                s.secret.as_ref().map(crate::hub::Secret::expose),
                s.paused,
                s.pinned,
                millis(s.registered_at),
                millis(s.last_seen),
            ])?;
        }
        Change::Seen { key, at } => {
            tx.prepare_cached("UPDATE subscribers SET last_seen_ms = ?2 WHERE key = ?1")?
                .execute(params![&**key, millis(*at)])?;
        }
        Change::Removed { key } => {
            tx.prepare_cached("DELETE FROM subscribers WHERE key = ?1")?
                .execute([&**key])?;
        }
        Change::Forget => return delete_below(tx, i64::MAX),
        Change::Pinned { id, pinned } => {
            tx.prepare_cached("UPDATE messages SET pinned = ?2 WHERE id = ?1")?
                .execute(params![*id as i64, pinned])?;
        }
    }
    Ok(0)
}
