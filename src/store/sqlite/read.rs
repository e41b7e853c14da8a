//! The reading connection's work: a message read back whole, with its deliveries and
//! their attempts, for a page of the log or a get by id.

use std::sync::{Arc, Weak};

use rusqlite::{Connection, OptionalExtension};

use super::SqliteStore;
use crate::hub::{
    Answer, Attempt, Delivery, DeliveryError, DeliveryState, Draft, Exchange, Headers, MessageId,
    MessageRecord, Outcome, Source, StoreError, Topic,
};
use crate::store::codec::{headers_from, outcome_from, time_of};
use crate::wire::TraceContext;

/// Entries of `loaded` beyond which the dead ones are swept out.
const LOADED_SWEEP: usize = 4_096;
/// How far past the deliveries read so far a slot may be (the rest lost in a failed
/// commit) before it is taken for damage and skipped.
const MAX_SLOT_GAP: usize = 100_000;

impl SqliteStore {
    /// One message and its deliveries: the record already read, while anything still
    /// holds it (a resend's jobs), so that two resends add their deliveries to the same
    /// record, in distinct slots; or else read with the reading connection.
    pub(super) fn read(
        &self,
        conn: &Connection,
        id: MessageId,
    ) -> Result<Option<Arc<MessageRecord>>, StoreError> {
        if let Some(live) = self.loaded.lock().get(&id).and_then(Weak::upgrade) {
            return Ok(Some(live));
        }
        let message = load_message(conn, id).map_err(|err| self.failed(err))?;
        if let Some(message) = &message {
            let mut loaded = self.loaded.lock();
            if loaded.len() >= LOADED_SWEEP {
                loaded.retain(|_, record| record.strong_count() > 0);
            }
            loaded.insert(id, Arc::downgrade(message));
        }
        Ok(message)
    }
}

/// Up to `limit` deliveries to `subscriber` without an outcome, from `(message id, slot)`
/// `from` to `to` (inclusive), in that order. The partial index of unfinished deliveries
/// keeps it to the pending rows, however long the history.
pub(super) fn backlog(
    conn: &Connection,
    subscriber: &str,
    (from, to): ((MessageId, usize), (MessageId, usize)),
    limit: usize,
) -> Result<Vec<(MessageId, usize)>, rusqlite::Error> {
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let (from_id, from_slot) = (int(from.0), int(from.1 as u64));
    let (to_id, to_slot) = (int(to.0), int(to.1 as u64));
    let limit = int(limit as u64);
    conn.prepare_cached(
        "SELECT message_id, slot FROM deliveries \
         WHERE outcome IS NULL AND subscriber = ?1 \
         AND message_id BETWEEN ?2 AND ?4 \
         AND (message_id > ?2 OR slot >= ?3) \
         AND (message_id < ?4 OR slot <= ?5) \
         ORDER BY message_id, slot LIMIT ?6",
    )?
    .query_map(
        rusqlite::params![subscriber, from_id, from_slot, to_id, to_slot, limit],
        |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
    )?
    .map(|row| row.map(|(id, slot)| (id as MessageId, slot as usize)))
    .collect()
}

pub(super) fn load_message(
    conn: &Connection,
    id: MessageId,
) -> Result<Option<Arc<MessageRecord>>, rusqlite::Error> {
    let row = conn
        .prepare_cached(
            "SELECT received_ms, source, topic, content_type, headers, traceparent, tracestate, body, \
             replay_of, pinned FROM messages WHERE id = ?1",
        )?
        .query_row([id as i64], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, Vec<u8>>(4)?,
                row.get::<_, String>(5)?,
                row.get::<_, Option<String>>(6)?,
                row.get::<_, Vec<u8>>(7)?,
                row.get::<_, Option<i64>>(8)?,
                row.get::<_, bool>(9)?,
            ))
        })
        .optional()?;
    let Some((
        received,
        source,
        topic,
        content_type,
        headers,
        traceparent,
        tracestate,
        body,
        replay_of,
        pinned,
    )) = row
    else {
        return Ok(None);
    };
    let replays: Vec<MessageId> = conn
        .prepare_cached("SELECT id FROM messages WHERE replay_of = ?1 ORDER BY id")?
        .query_map([id as i64], |row| row.get::<_, i64>(0))?
        .map(|id| id.map(|id| id as MessageId))
        .collect::<Result<_, _>>()?;
    let mut deliveries: Vec<Delivery> = Vec::new();
    {
        let mut rows = conn.prepare_cached(
            "SELECT slot, subscriber, outcome, number, micros, detail FROM deliveries \
             WHERE message_id = ?1 ORDER BY slot",
        )?;
        let rows = rows.query_map([id as i64], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, Option<i64>>(3)?,
                row.get::<_, Option<i64>>(4)?,
                row.get::<_, Option<String>>(5)?,
            ))
        })?;
        for row in rows {
            let (slot, subscriber, outcome, number, micros, detail) = row?;
            let Ok(slot) = usize::try_from(slot) else {
                continue;
            };
            if slot > deliveries.len() + MAX_SLOT_GAP || slot < deliveries.len() {
                continue;
            }
            // A slot whose record a failed commit lost: shown, never sent again.
            while deliveries.len() < slot {
                deliveries.push(lost_delivery());
            }
            let state = match outcome {
                None => DeliveryState::Pending,
                Some(kind) => outcome_from(&kind, number, micros, detail)
                    .map_or(DeliveryState::Pending, DeliveryState::Done),
            };
            deliveries.push(Delivery {
                subscriber: subscriber.into(),
                state,
                attempts: Vec::new(),
            });
        }
    }
    {
        let mut rows = conn.prepare_cached(
            "SELECT slot, at_ms, outcome, number, micros, detail, url, request_headers, \
             response_status, response_headers, response_body, truncated \
             FROM attempts WHERE message_id = ?1 ORDER BY rowid",
        )?;
        let rows = rows.query_map([id as i64], |row| {
            let outcome = outcome_from(
                &row.get::<_, String>(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
            );
            let url: Option<String> = row.get(6)?;
            let exchange = url.map(|url| -> Result<Exchange, rusqlite::Error> {
                let status: Option<u16> = row.get(8)?;
                let response = status
                    .map(|status| -> Result<Answer, rusqlite::Error> {
                        Ok(Answer {
                            status,
                            headers: Headers::from_text(
                                row.get::<_, Option<String>>(9)?.unwrap_or_default(),
                            ),
                            body: row
                                .get::<_, Option<Vec<u8>>>(10)?
                                .unwrap_or_default()
                                .into(),
                            truncated: row.get::<_, Option<bool>>(11)?.unwrap_or(false),
                        })
                    })
                    .transpose()?;
                Ok(Exchange {
                    method: "POST",
                    url: url.into(),
                    request_headers: Headers::from_text(
                        row.get::<_, Option<String>>(7)?.unwrap_or_default(),
                    ),
                    response,
                    not_kept: false,
                })
            });
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                outcome,
                exchange.transpose()?,
            ))
        })?;
        for row in rows {
            let (slot, at, outcome, exchange) = row?;
            let delivery = usize::try_from(slot)
                .ok()
                .and_then(|slot| deliveries.get_mut(slot));
            if let (Some(delivery), Some(outcome)) = (delivery, outcome) {
                delivery.attempts.push(Attempt {
                    at: time_of(at),
                    outcome,
                    exchange: exchange.map(Arc::new),
                });
            }
        }
    }
    let draft = Draft {
        body: body.into(),
        content_type,
        headers: headers_from(&headers),
        trace: TraceContext::parse(&traceparent).map(|trace| TraceContext {
            state: tracestate,
            ..trace
        }),
        topic: topic.and_then(|t| Topic::parse(&t).ok()),
    };
    let record = MessageRecord::restored(
        id,
        time_of(received),
        draft,
        Source::parse(&source),
        deliveries,
    );
    let replay_of = replay_of.and_then(|id| MessageId::try_from(id).ok());
    let record = record.linked(replay_of, replays);
    record.set_pinned(pinned);
    Ok(Some(Arc::new(record)))
}

fn lost_delivery() -> Delivery {
    Delivery {
        subscriber: "(unknown)".into(),
        state: DeliveryState::Done(Outcome::Failed(DeliveryError::Crashed(
            "the store lost this delivery's record in a failed commit".into(),
        ))),
        attempts: Vec::new(),
    }
}
