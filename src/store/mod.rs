//! Durable storage behind the hub's `Store` seam: SQLite in a data directory.
//!
//! The directory holds `herald.db` (with SQLite's `-wal` and `-shm` beside it) and
//! `herald.lock`, which the running Herald holds locked so that a second one is refused
//! instead of writing into the same store.

pub(crate) mod codec;
mod schema;
mod sqlite;

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;
use thiserror::Error;

pub use sqlite::SqliteStore;

pub use crate::values::Retention;

use crate::hub::Restored;

pub(crate) const DB_FILE: &str = "herald.db";
const LOCK_FILE: &str = "herald.lock";

/// Why a data directory cannot be used. Each says what to do about it.
#[derive(Debug, Error)]
pub enum OpenError {
    #[error(
        "cannot use {dir} as the data directory: {error}; choose a writable directory with --data-dir, or run with --in-memory"
    )]
    Io {
        dir: PathBuf,
        // Not `source`: the message already says it, and error chains would repeat it.
        error: std::io::Error,
    },
    #[error(
        "the data directory {dir} is in use by another Herald{}; stop it, or give this one another --data-dir",
        pid.map(|pid| format!(" (process {pid})")).unwrap_or_default()
    )]
    InUse { dir: PathBuf, pid: Option<u32> },
    #[error(
        "{path} is not a readable Herald store ({detail}); move it away (Herald then starts an empty one) or choose another --data-dir"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "{path} {}; upgrade Herald, or choose another --data-dir",
        schema::SchemaError::Newer { found: *found }
    )]
    Newer { path: PathBuf, found: i64 },
    #[error("the disk holding {path} is full ({detail}); free some space, or run with --in-memory")]
    Full { path: PathBuf, detail: String },
    #[error(
        "cannot write the store {path}: {detail}; choose a writable directory with --data-dir, or run with --in-memory"
    )]
    NotWritable { path: PathBuf, detail: String },
    #[error("cannot open the store {path}: {detail}")]
    Sqlite { path: PathBuf, detail: String },
}

impl OpenError {
    fn from_sqlite(path: &Path, err: rusqlite::Error) -> Self {
        let path = path.to_owned();
        let detail = err.to_string();
        // Rows that do not read as what this schema wrote are damage too.
        if matches!(
            err,
            rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::IntegralValueOutOfRange(..)
        ) {
            return OpenError::Corrupt { path, detail };
        }
        match err.sqlite_error_code() {
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
                OpenError::Corrupt { path, detail }
            }
            Some(ErrorCode::DiskFull) => OpenError::Full { path, detail },
            Some(
                ErrorCode::ReadOnly
                | ErrorCode::CannotOpen
                | ErrorCode::PermissionDenied
                | ErrorCode::SystemIoFailure,
            ) => OpenError::NotWritable { path, detail },
            _ => OpenError::Sqlite { path, detail },
        }
    }
}

/// Where the console keeps its history unless told otherwise: `$XDG_DATA_HOME/herald`,
/// or `~/.local/share/herald`.
pub fn default_data_dir() -> Option<PathBuf> {
    crate::values::xdg_dir("XDG_DATA_HOME", ".local/share").map(|data| data.join("herald"))
}

/// Opens the store in `dir`, creating the directory if need be, and reads back what it
/// holds (the newest `window` messages, and every one with a delivery to make).
pub fn open(
    dir: &Path,
    retention: Retention,
    window: usize,
) -> Result<(SqliteStore, Restored), OpenError> {
    let io = |error| OpenError::Io {
        dir: dir.to_owned(),
        error,
    };
    create_private_dir(dir).map_err(io)?;
    let lock = take_lock(dir)?;
    SqliteStore::open(dir, lock, retention, window)
}

/// Creates `dir` readable by its owner only: it holds payloads and signing secrets.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    if dir.exists() && !dir.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "it is a file, not a directory",
        ));
    }
    builder.create(dir)
}

/// Locks `dir`'s lock file for as long as the returned file is open, and writes this
/// process's id into it for the next one to name.
fn take_lock(dir: &Path) -> Result<File, OpenError> {
    let io = |error| OpenError::Io {
        dir: dir.to_owned(),
        error,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            file.read_to_string(&mut pid).ok();
            return Err(OpenError::InUse {
                dir: dir.to_owned(),
                pid: pid.trim().parse().ok(),
            });
        }
        Err(std::fs::TryLockError::Error(err)) => return Err(io(err)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}
