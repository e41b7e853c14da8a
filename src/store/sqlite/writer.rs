//! The writer thread: the one connection that writes. It takes every change that has
//! arrived since its last commit and writes them in one transaction, and runs retention
//! every second.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Transaction};

use super::Op;
use super::rows::{delete_below, write};
use super::{disk_bytes, store_error};
use crate::hub::StoreError;
use crate::store::Retention;
use crate::store::codec::millis;

/// The most changes one transaction takes: a commit must not wait for an endless burst.
const MAX_BATCH: usize = 20_000;
/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(1);
/// The share of the messages deleted at a time while the store is over its size: small
/// enough not to take much more than needed, large enough to get there in a few steps.
const PRUNE_SHARE: i64 = 10;

/// What the writer tells the rest.
#[derive(Debug, Default)]
pub(super) struct Status {
    pub(super) failing: Mutex<Option<(Instant, StoreError)>>,
    pub(super) messages: AtomicU64,
    pub(super) bytes: AtomicU64,
}

impl Status {
    /// Counts messages in and out; only the writer changes the count.
    fn count(&self, appended: u64, deleted: u64) {
        let now = self.messages.load(Ordering::Relaxed);
        let next = (now + appended).saturating_sub(deleted);
        self.messages.store(next, Ordering::Relaxed);
    }
}

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) status: Arc<Status>,
    pub(super) place: String,
    pub(super) path: PathBuf,
    pub(super) retention: Retention,
}

impl Writer {
    pub(super) fn run(mut self, incoming: mpsc::Receiver<Op>) {
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
        if let Op::Append(_, _, waiter) | Op::Kept(_, waiter) | Op::Flush(waiter) = op {
            waiter.send(kept.clone()).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::connect;
    use super::*;
    use tokio::sync::oneshot;

    use crate::hub::{Change, Draft, MessageId, MessageRecord, Source};

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
        crate::store::schema::migrate(&mut conn).unwrap();
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
        let subscriber = crate::hub::StoredSubscriber::plain("127.0.0.1:9");
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
        crate::store::schema::migrate(&mut conn).unwrap();
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
