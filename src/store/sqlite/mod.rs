//! The SQLite store: one writer thread that commits in groups, and a reading connection
//! beside it (WAL lets the two work at once).
//!
//! Every change goes down one channel, in the order the hub made it. The writer takes
//! whatever has arrived since its last commit (one publish, or the thousand that came
//! during the last sync) and writes it in one transaction with one sync; a publish's
//! commit resolves when its transaction has. Grouping is what keeps throughput: a sync
//! costs about the same for one row as for a thousand.
//!
//! - `writer`: the writer thread: the changes it is sent, group commit, and retention
//!   every second.
//! - `rows`: a group of changes as rows in one transaction, and what pruning deletes.
//! - `read`: the reading connection's work: a message read back whole (with its
//!   deliveries and attempts) for a page or a get.
//! - `restore`: what the store holds, read back once at start.

mod read;
mod restore;
mod rows;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, ErrorCode};
use tokio::sync::oneshot;

use super::{OpenError, Retention};
use crate::hub::{
    Change, Commit, Keeps, MessageId, MessageRecord, Pattern, Restored, Store, StoreError,
    StoreUsage, Topic,
};
use restore::restore;
use writer::{Status, Writer};

/// How long after a failed commit publishes are refused before one is let through to try
/// again.
const FAILING_FOR: Duration = Duration::from_secs(1);
/// How long a reader waits for the writer's lock on the database (checkpoints).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers an append or a flush once its group is committed (or failed).
type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// What the store sends its writer thread, in the order the hub made it.
pub(super) enum Op {
    /// A message and the addresses of its publish round's deliveries.
    Append(Arc<MessageRecord>, Vec<Arc<str>>, Waiter),
    Change(Change),
    /// A change whose waiter is told whether it was kept.
    Kept(Change, Waiter),
    Flush(Waiter),
}

pub struct SqliteStore {
    ops: Mutex<Option<mpsc::Sender<Op>>>,
    reader: Mutex<Connection>,
    status: Arc<Status>,
    place: String,
    /// What `--retain` keeps, for the store's usage to say.
    retention: Retention,
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
                retention,
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

    fn keep(&self, change: Change) -> Commit {
        let (kept, commit) = oneshot::channel();
        // A store that closed drops the waiter with the op: the commit then says Closed.
        self.send(Op::Kept(change, kept)).ok();
        Commit::when(commit)
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

    fn backlog(
        &self,
        subscriber: &str,
        from: (MessageId, usize),
        to: (MessageId, usize),
        limit: usize,
    ) -> Vec<(MessageId, usize)> {
        let conn = self.reader.lock();
        read::backlog(&conn, subscriber, (from, to), limit)
            .inspect_err(
                |err| tracing::warn!(%subscriber, "cannot read a backlog from the store: {err}"),
            )
            .unwrap_or_default()
    }

    fn usage(&self) -> StoreUsage {
        StoreUsage {
            place: Some(self.place.clone()),
            bytes: self.status.bytes.load(Ordering::Relaxed),
            messages: self.status.messages.load(Ordering::Relaxed),
            keeps: Some(Keeps {
                messages: self.retention.count,
                bytes: self.retention.bytes,
                age: self.retention.age,
            }),
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
