//! The SQLite store: one writer thread that commits in groups, and a reading connection
//! beside it (WAL lets the two work at once).
//!
//! Every change goes down one channel, in the order the hub made it. The writer takes
//! whatever has arrived since its last commit (one publish, or the thousand that came
//! during the last sync) and writes it in one transaction with one sync; a publish's
//! commit resolves when its transaction has. Grouping is what keeps throughput: a sync
//! costs about the same for one row as for a thousand.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, params};
use tokio::sync::oneshot;

use super::codec::{headers_blob, headers_from, millis, outcome_columns, outcome_from, time_of};
use super::{OpenError, Retention};
use crate::hub::{
    Answer, Attempt, Change, Commit, Delivery, DeliveryError, DeliveryState, Draft, Exchange,
    Headers, MessageId, MessageRecord, Outcome, Pattern, Restored, Source, Store, StoreError,
    StoreUsage, StoredSubscriber, Topic,
};
use crate::wire::TraceContext;

/// The most changes one transaction takes: a commit must not wait for an endless burst.
const MAX_BATCH: usize = 20_000;
/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(1);
/// How long after a failed commit publishes are refused before one is let through to try
/// again.
const FAILING_FOR: Duration = Duration::from_secs(1);
/// The share of the messages deleted at a time while the store is over its size: small
/// enough not to take much more than needed, large enough to get there in a few steps.
const PRUNE_SHARE: i64 = 10;
/// Entries of `loaded` beyond which the dead ones are swept out.
const LOADED_SWEEP: usize = 4_096;
/// How far past the deliveries read so far a slot may be (the rest lost in a failed
/// commit) before it is taken for damage and skipped.
const MAX_SLOT_GAP: usize = 100_000;
/// How long a reader waits for the writer's lock on the database (checkpoints).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

type Waiter = oneshot::Sender<Result<(), StoreError>>;

enum Op {
    /// A message and the addresses of its publish round's deliveries.
    Append(Arc<MessageRecord>, Vec<Arc<str>>, Waiter),
    Change(Change),
    Flush(Waiter),
}

/// What the writer tells the rest.
#[derive(Debug, Default)]
struct Status {
    failing: Mutex<Option<(Instant, StoreError)>>,
    messages: AtomicU64,
    bytes: AtomicU64,
}

impl Status {
    /// Counts messages in and out; only the writer changes the count.
    fn count(&self, appended: u64, deleted: u64) {
        let now = self.messages.load(Ordering::Relaxed);
        let next = (now + appended).saturating_sub(deleted);
        self.messages.store(next, Ordering::Relaxed);
    }
}

/// What one transaction did to the message count.
#[derive(Debug, Default, PartialEq, Eq)]
struct Written {
    appended: u64,
    deleted: u64,
}

pub struct SqliteStore {
    ops: Mutex<Option<mpsc::Sender<Op>>>,
    reader: Mutex<Connection>,
    status: Arc<Status>,
    place: String,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Messages read back from disk, by id, while something holds them.
    loaded: Mutex<HashMap<MessageId, Weak<MessageRecord>>>,
    /// Held for as long as the store is open: another Herald finds the directory taken.
    _lock: std::fs::File,
}

impl SqliteStore {
    /// Opens (or creates) the store in `dir` and reads back what it holds: the newest
    /// `window` messages and every one with a delivery still to make.
    pub(crate) fn open(
        dir: &Path,
        lock: std::fs::File,
        retention: Retention,
        window: usize,
    ) -> Result<(Self, Restored), OpenError> {
        let path = dir.join(super::DB_FILE);
        let place = path.display().to_string();
        let fail = |source: rusqlite::Error| OpenError::from_sqlite(&path, source);
        let mut writer = connect(&path).map_err(fail)?;
        super::schema::migrate(&mut writer).map_err(|err| match err {
            super::schema::SchemaError::Newer { found } => OpenError::Newer {
                path: path.clone(),
                found,
            },
            super::schema::SchemaError::Sqlite(err) => fail(err),
        })?;
        let restored = restore(&mut writer, window).map_err(fail)?;
        let reader = connect(&path).map_err(fail)?;
        let status = Arc::new(Status::default());
        let messages: i64 = writer
            .query_row("SELECT COUNT(*) FROM messages", [], |row| row.get(0))
            .map_err(fail)?;
        status.messages.store(messages as u64, Ordering::Relaxed);
        status.bytes.store(disk_bytes(&path), Ordering::Relaxed);
        let (ops, incoming) = mpsc::channel();
        let thread = {
            let status = status.clone();
            let place = place.clone();
            std::thread::Builder::new()
                .name("herald-store".into())
                .spawn(move || {
                    Writer {
                        conn: writer,
                        status,
                        place,
                        path,
                        retention,
                    }
                    .run(incoming)
                })
                .map_err(|error| OpenError::Io {
                    dir: dir.to_owned(),
                    error,
                })?
        };
        Ok((
            Self {
                ops: Mutex::new(Some(ops)),
                reader: Mutex::new(reader),
                status,
                place,
                writer: Mutex::new(Some(thread)),
                loaded: Mutex::default(),
                _lock: lock,
            },
            restored,
        ))
    }

    fn send(&self, op: Op) -> Result<(), StoreError> {
        let ops = self.ops.lock();
        match ops.as_ref().map(|ops| ops.send(op)) {
            Some(Ok(())) => Ok(()),
            _ => Err(StoreError::Closed),
        }
    }

    fn failed(&self, err: rusqlite::Error) -> StoreError {
        store_error(&self.place, &err)
    }

    /// One message and its deliveries: the record already read, while anything still
    /// holds it (a resend's jobs), so that two resends add their deliveries to the same
    /// record, in distinct slots; or else read with the reading connection.
    fn read(
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

impl Drop for SqliteStore {
    /// Lets the writer finish what it was given, so that nothing handed to it is lost
    /// when the hub goes.
    fn drop(&mut self) {
        self.ops.lock().take();
        if let Some(writer) = self.writer.lock().take() {
            writer.join().ok();
        }
    }
}

impl Store for SqliteStore {
    fn append(&self, message: &Arc<MessageRecord>, subscribers: Vec<Arc<str>>) -> Commit {
        let (kept, commit) = oneshot::channel();
        // A store that closed drops the waiter with the op: the commit then says Closed.
        self.send(Op::Append(message.clone(), subscribers, kept))
            .ok();
        Commit::when(commit)
    }

    fn record(&self, change: Change) {
        if self.send(Op::Change(change)).is_err() {
            tracing::warn!("a change came after the store closed; not kept");
        }
    }

    fn failing(&self) -> Option<StoreError> {
        let failing = self.status.failing.lock();
        let (at, error) = failing.as_ref()?;
        (at.elapsed() < FAILING_FOR).then(|| error.clone())
    }

    fn page(
        &self,
        before: MessageId,
        limit: usize,
        pattern: Option<&Pattern>,
    ) -> Vec<Arc<MessageRecord>> {
        let conn = self.reader.lock();
        let mut page = Vec::new();
        let mut cursor = i64::try_from(before).unwrap_or(i64::MAX);
        // Ids and topics in chunks, and only the messages that match read whole: a
        // pattern that matches little must not load the store.
        while page.len() < limit {
            let rows: Result<Vec<(i64, Option<String>)>, _> = conn
                .prepare_cached(
                    "SELECT id, topic FROM messages WHERE id < ?1 ORDER BY id DESC LIMIT 1024",
                )
                .and_then(|mut rows| {
                    rows.query_map([cursor], |row| Ok((row.get(0)?, row.get(1)?)))?
                        .collect()
                });
            let rows = match rows {
                Ok(rows) => rows,
                Err(err) => {
                    tracing::warn!("cannot page the store: {}", self.failed(err));
                    break;
                }
            };
            let Some(&(last, _)) = rows.last() else {
                break;
            };
            cursor = last;
            let wanted = rows.into_iter().filter(|(_, topic)| {
                pattern.is_none_or(|p| {
                    topic
                        .as_deref()
                        .and_then(|t| Topic::parse(t).ok())
                        .is_some_and(|t| p.matches(&t))
                })
            });
            for (id, _) in wanted {
                match self.read(&conn, id as MessageId) {
                    Ok(Some(message)) => page.push(message),
                    Ok(None) => {}
                    Err(err) => tracing::warn!("cannot read message {id} from the store: {err}"),
                }
                if page.len() == limit {
                    break;
                }
            }
        }
        page
    }

    fn get(&self, id: MessageId) -> Option<Arc<MessageRecord>> {
        let conn = self.reader.lock();
        self.read(&conn, id)
            .inspect_err(|err| tracing::warn!("cannot read message {id} from the store: {err}"))
            .ok()
            .flatten()
    }

    fn usage(&self) -> StoreUsage {
        StoreUsage {
            place: Some(self.place.clone()),
            bytes: self.status.bytes.load(Ordering::Relaxed),
            messages: self.status.messages.load(Ordering::Relaxed),
        }
    }

    fn flush(&self) -> Commit {
        let (kept, commit) = oneshot::channel();
        if self.send(Op::Flush(kept)).is_err() {
            return Commit::done();
        }
        Commit::when(commit)
    }
}

fn connect(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers never wait for the writer, and a commit appends instead of rewriting.
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!("cannot switch the journal to WAL (it is {mode})")),
        ));
    }
    // FULL: a commit is synced to disk before it is acknowledged, so an acknowledged
    // publish survives a power cut too, not just a crash of the process.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// What the store occupies on disk: the database and its write-ahead log.
fn disk_bytes(path: &Path) -> u64 {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    [path, wal.as_path()]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

pub(crate) fn store_error(place: &str, err: &rusqlite::Error) -> StoreError {
    let detail = err.to_string();
    match err.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::Full {
            place: place.to_owned(),
            detail,
        },
        _ => StoreError::Failed {
            place: place.to_owned(),
            detail,
        },
    }
}

struct Writer {
    conn: Connection,
    status: Arc<Status>,
    place: String,
    path: PathBuf,
    retention: Retention,
}

impl Writer {
    fn run(mut self, incoming: mpsc::Receiver<Op>) {
        let mut next_prune = Instant::now() + PRUNE_EVERY;
        loop {
            let wait = next_prune.saturating_duration_since(Instant::now());
            match incoming.recv_timeout(wait) {
                Ok(first) => {
                    let mut batch = vec![first];
                    batch.extend(incoming.try_iter().take(MAX_BATCH));
                    self.commit(batch);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_prune {
                if let Err(err) = self.prune() {
                    tracing::warn!("retention could not prune the store: {err}");
                }
                self.status
                    .bytes
                    .store(disk_bytes(&self.path), Ordering::Relaxed);
                next_prune = Instant::now() + PRUNE_EVERY;
            }
        }
        // A last checkpoint, so that the next start reads one file rather than replaying
        // the log; failing it loses nothing.
        self.conn
            .pragma_update(None, "wal_checkpoint", "TRUNCATE")
            .ok();
    }

    fn commit(&mut self, batch: Vec<Op>) {
        let result = write(&mut self.conn, &batch);
        let result = result.map_err(|err| store_error(&self.place, &err));
        match result {
            Ok(written) => {
                self.status.failing.lock().take();
                self.status.count(written.appended, written.deleted);
                answer(batch, &Ok(()));
            }
            Err(error) => {
                *self.status.failing.lock() = Some((Instant::now(), error.clone()));
                // The new messages are refused; the changes about what was kept before
                // (outcomes, subscribers) get another try without them: a payload too
                // big for the disk must not take them down with it.
                let (appends, changes): (Vec<Op>, Vec<Op>) = batch
                    .into_iter()
                    .partition(|op| matches!(op, Op::Append(..)));
                tracing::error!("the store refused {} new messages: {error}", appends.len());
                answer(appends, &Err(error));
                let result =
                    write(&mut self.conn, &changes).map_err(|err| store_error(&self.place, &err));
                match &result {
                    Ok(written) => self.status.count(0, written.deleted),
                    Err(error) => {
                        tracing::error!(
                            "the store did not keep {} changes: {error}",
                            changes.len()
                        );
                    }
                }
                answer(changes, &result.map(|_| ()));
            }
        }
    }

    /// Deletes what retention no longer keeps: beyond the newest COUNT messages, older
    /// than AGE, and the oldest while the store is over SIZE. Never a message with a
    /// delivery still to make.
    fn prune(&mut self) -> Result<(), rusqlite::Error> {
        let Retention { count, bytes, age } = self.retention;
        let tx = self.conn.transaction()?;
        let mut below: i64 = tx
            .query_row(
                "SELECT id FROM messages ORDER BY id DESC LIMIT 1 OFFSET ?1",
                [i64::try_from(count).unwrap_or(i64::MAX)],
                |row| row.get::<_, i64>(0),
            )
            .optional()?
            .map_or(0, |id| id + 1);
        if let Some(oldest) = SystemTime::now().checked_sub(age) {
            let young: Option<i64> = tx.query_row(
                "SELECT MIN(id) FROM messages WHERE received_ms >= ?1",
                [millis(oldest)],
                |row| row.get(0),
            )?;
            let newest: Option<i64> =
                tx.query_row("SELECT MAX(id) FROM messages", [], |row| row.get(0))?;
            below = below.max(young.or(newest.map(|n| n + 1)).unwrap_or(0));
        }
        let mut deleted = delete_below(&tx, below)?;
        // Pages in use, not the file's size: SQLite reuses freed pages, so the file stops
        // growing once pruning keeps up.
        let used = |tx: &Transaction<'_>| -> Result<u64, rusqlite::Error> {
            let pages: i64 = tx.query_row("PRAGMA page_count", [], |row| row.get(0))?;
            let free: i64 = tx.query_row("PRAGMA freelist_count", [], |row| row.get(0))?;
            let size: i64 = tx.query_row("PRAGMA page_size", [], |row| row.get(0))?;
            Ok(((pages - free) * size).max(0) as u64)
        };
        while used(&tx)? > bytes {
            let (oldest, newest): (Option<i64>, Option<i64>) =
                tx.query_row("SELECT MIN(id), MAX(id) FROM messages", [], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?;
            let (Some(oldest), Some(newest)) = (oldest, newest) else {
                break;
            };
            if below > newest {
                // Only messages still to deliver are left: they stay, whatever the size.
                break;
            }
            // From the cutoff so far, not the oldest message: one still to deliver may
            // stay below it for ever, and the cutoff must move on past it.
            let from = below.max(oldest);
            below = from + (newest - from) / PRUNE_SHARE + 1;
            deleted += delete_below(&tx, below)?;
        }
        tx.commit()?;
        if deleted > 0 {
            self.status.count(0, deleted);
            tracing::debug!(deleted, "retention pruned the store");
        }
        Ok(())
    }
}

/// Tells those waiting on `ops` how their commit went.
fn answer(ops: Vec<Op>, kept: &Result<(), StoreError>) {
    for op in ops {
        if let Op::Append(_, _, waiter) | Op::Flush(waiter) = op {
            waiter.send(kept.clone()).ok();
        }
    }
}

/// Deletes messages with ids below `below`, their deliveries and attempts, sparing those
/// with a delivery still to make. Returns how many messages went.
fn delete_below(tx: &Transaction<'_>, below: i64) -> Result<u64, rusqlite::Error> {
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
fn write(conn: &mut Connection, batch: &[Op]) -> Result<Written, rusqlite::Error> {
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
            Op::Change(change) => written.deleted += apply(&tx, change)?,
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

/// Applies one change; returns how many messages it deleted.
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

/// What the store holds at start, and its instance id (made and kept on first open).
fn restore(conn: &mut Connection, window: usize) -> Result<Restored, rusqlite::Error> {
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

fn load_message(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Draft, Source};

    fn message(id: MessageId, bytes: usize) -> Arc<MessageRecord> {
        let draft = Draft::new(vec![b'x'; bytes]);
        Arc::new(MessageRecord::new(id, draft, Source::Console, 0))
    }

    fn writer(name: &str, retention: Retention) -> Writer {
        let dir = std::env::temp_dir().join(format!("herald-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("herald.db");
        let mut conn = connect(&path).unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        Writer {
            conn,
            status: Arc::default(),
            place: path.display().to_string(),
            path,
            retention,
        }
    }

    fn ids(writer: &Writer) -> Vec<i64> {
        let mut ids = writer
            .conn
            .prepare("SELECT id FROM messages ORDER BY id")
            .unwrap();
        ids.query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn pruning_by_size_ends_when_only_messages_still_to_deliver_are_left() {
        let mut writer = writer(
            "prune",
            Retention {
                count: 1_000,
                bytes: 1,
                age: Duration::from_secs(3600),
            },
        );
        let mut batch = Vec::new();
        for id in 1..=50 {
            let (kept, _) = oneshot::channel();
            // The first is owed to a subscriber that is down.
            let owed = if id == 1 {
                vec!["127.0.0.1:9".into()]
            } else {
                Vec::new()
            };
            batch.push(Op::Append(message(id, 10_000), owed, kept));
        }
        writer.commit(batch);
        assert_eq!(ids(&writer).len(), 50);
        // Over its size for ever, since the one message it keeps is never pruned: the
        // pruning must still end.
        writer.prune().unwrap();
        assert_eq!(ids(&writer), [1]);
        std::fs::remove_dir_all(writer.path.parent().unwrap()).ok();
    }

    #[test]
    fn a_refused_message_does_not_take_the_other_changes_of_its_group_with_it() {
        let mut writer = writer("refused", Retention::default());
        writer
            .conn
            .pragma_update(None, "max_page_count", 64)
            .unwrap();
        let (kept, refused) = oneshot::channel();
        let subscriber = crate::hub::StoredSubscriber {
            key: "127.0.0.1:9".into(),
            topics: Arc::new([]),
            lease: None,
            ordered: false,
            max_in_flight: 1,
            secret: None,
            paused: false,
            pinned: false,
            registered_at: SystemTime::now(),
            last_seen: SystemTime::now(),
        };
        writer.commit(vec![
            Op::Append(message(1, 1 << 20), Vec::new(), kept),
            Op::Change(Change::Subscriber(subscriber)),
        ]);
        let refused = refused.blocking_recv().unwrap();
        assert!(
            matches!(refused, Err(StoreError::Full { .. })),
            "{refused:?}"
        );
        let kept: i64 = writer
            .conn
            .query_row("SELECT COUNT(*) FROM subscribers", [], |row| row.get(0))
            .unwrap();
        assert_eq!(kept, 1, "the registration was kept");
        assert!(ids(&writer).is_empty());
        std::fs::remove_dir_all(writer.path.parent().unwrap()).ok();
    }

    #[test]
    fn a_full_disk_is_told_apart_from_other_failures() {
        let dir = std::env::temp_dir().join(format!("herald-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("herald.db");
        let mut conn = connect(&path).unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        // SQLite's own cap on the file answers exactly as a full disk does.
        conn.pragma_update(None, "max_page_count", 64).unwrap();
        let (kept, _) = oneshot::channel();
        let small = [Op::Append(message(1, 10), Vec::new(), kept)];
        assert_eq!(write(&mut conn, &small).unwrap().appended, 1);
        let (kept, _) = oneshot::channel();
        let large = [Op::Append(message(2, 1 << 20), Vec::new(), kept)];
        let err = write(&mut conn, &large).unwrap_err();
        let error = store_error(&path.display().to_string(), &err);
        assert!(matches!(error, StoreError::Full { .. }), "{error}");
        assert!(error.to_string().contains("free some space"), "{error}");
        // What was committed before is all there, and the store goes on.
        let count: i64 = conn
            .query_row("SELECT COUNT(*) FROM messages", [], |row| row.get(0))
            .unwrap();
        assert_eq!(count, 1);
        let (kept, _) = oneshot::channel();
        let more = write(&mut conn, &[Op::Append(message(3, 10), Vec::new(), kept)]).unwrap();
        assert_eq!(more.appended, 1);
        std::fs::remove_dir_all(&dir).ok();
    }
}
