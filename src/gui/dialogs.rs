//! File dialogs and file I/O, kept off the GUI thread.
//!
//! The synchronous `rfd` dialog runs on a blocking worker thread of the runtime, then
//! reads or writes the file there too; the result comes back through a channel that the
//! GUI polls each frame, with a repaint request.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::SystemTime;

use tokio::runtime::Handle;

use crate::hub::Hub;

/// What a finished file task reports.
#[derive(Debug)]
pub(crate) enum FileDone {
    /// A file was loaded for the compose box.
    Loaded { path: PathBuf, bytes: Vec<u8> },
    /// Something to tell the user: a save went through, or why nothing happened.
    Notice(String),
}

/// One file task in flight at a time; the GUI polls it every frame.
#[derive(Default)]
pub(crate) struct Files {
    pending: Option<mpsc::Receiver<FileDone>>,
}

impl Files {
    pub(crate) fn busy(&self) -> bool {
        self.pending.is_some()
    }

    /// The task's result, once it has one.
    pub(crate) fn poll(&mut self) -> Option<FileDone> {
        let done = self.pending.as_ref()?.try_recv();
        match done {
            Ok(done) => {
                self.pending = None;
                Some(done)
            }
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => {
                self.pending = None;
                None
            }
        }
    }

    /// Asks where to save the message log, then writes it there as NDJSON. Without any
    /// file dialog on this desktop it saves to the home folder and says so.
    pub(crate) fn export_log(&mut self, hub: &Hub, runtime: &Handle, ctx: &egui::Context) {
        let hub = hub.clone();
        self.run(runtime, ctx, move || {
            let name = format!("herald-log-{}.ndjson", file_stamp());
            let (path, fallback) = if dialog_available() {
                match rfd::FileDialog::new()
                    .set_title("Export the message log")
                    .set_file_name(&name)
                    .add_filter("NDJSON", &["ndjson", "jsonl"])
                    .save_file()
                {
                    Some(path) => (path, false),
                    None => return FileDone::Notice("Export cancelled".to_owned()),
                }
            } else {
                (home().join(&name), true)
            };
            let ndjson = crate::workbench::ndjson::export(&hub);
            match std::fs::write(&path, &ndjson) {
                Ok(()) if fallback => FileDone::Notice(format!(
                    "No file dialog available (install xdg-desktop-portal or zenity); \
                     exported {} bytes to {}",
                    ndjson.len(),
                    path.display()
                )),
                Ok(()) => FileDone::Notice(format!("Exported to {}", path.display())),
                Err(err) => FileDone::Notice(format!("Could not write {}: {err}", path.display())),
            }
        });
    }

    /// Asks for an exported log and logs its messages (sent nowhere).
    pub(crate) fn import_log(&mut self, hub: &Hub, runtime: &Handle, ctx: &egui::Context) {
        let hub = hub.clone();
        let handle = runtime.clone();
        self.run(runtime, ctx, move || {
            if !dialog_available() {
                return FileDone::Notice(
                    "No file dialog available: install xdg-desktop-portal or zenity, or POST the file to /api/v1/messages/import".to_owned(),
                );
            }
            let Some(path) = rfd::FileDialog::new()
                .set_title("Import an exported log")
                .add_filter("NDJSON", &["ndjson", "jsonl"])
                .pick_file()
            else {
                return FileDone::Notice("Import cancelled".to_owned());
            };
            let bytes = match read(&path) {
                FileDone::Loaded { bytes, .. } => bytes,
                notice => return notice,
            };
            // On a blocking thread of the runtime, where waiting for the commit is fine.
            match handle.block_on(crate::workbench::ndjson::import_ndjson(&hub, &bytes)) {
                Ok(ids) => FileDone::Notice(format!(
                    "Imported {} messages from {}",
                    ids.len(),
                    path.display()
                )),
                Err(err) => FileDone::Notice(format!("Could not import {}: {err}", path.display())),
            }
        });
    }

    /// Asks for a file to publish and reads it.
    pub(crate) fn load_file(&mut self, runtime: &Handle, ctx: &egui::Context) {
        self.run(runtime, ctx, || {
            if !dialog_available() {
                return FileDone::Notice(
                    "No file dialog available: install xdg-desktop-portal or zenity".to_owned(),
                );
            }
            let Some(path) = rfd::FileDialog::new()
                .set_title("Load a payload to publish")
                .pick_file()
            else {
                return FileDone::Notice("Load cancelled".to_owned());
            };
            read(&path)
        });
    }

    fn run(
        &mut self,
        runtime: &Handle,
        ctx: &egui::Context,
        task: impl FnOnce() -> FileDone + Send + 'static,
    ) {
        if self.busy() {
            return;
        }
        let (done, pending) = mpsc::channel();
        self.pending = Some(pending);
        let ctx = ctx.clone();
        runtime.spawn_blocking(move || {
            done.send(task()).ok();
            ctx.request_repaint();
        });
    }
}

/// Payloads larger than this are refused rather than loaded into the editor.
const MAX_LOAD: u64 = 16 * 1024 * 1024;

fn read(path: &Path) -> FileDone {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() > MAX_LOAD => {
            return FileDone::Notice(format!(
                "{} is {} bytes; files up to {MAX_LOAD} bytes can be loaded",
                path.display(),
                meta.len()
            ));
        }
        Err(err) => return FileDone::Notice(format!("Cannot read {}: {err}", path.display())),
        Ok(_) => {}
    }
    match std::fs::read(path) {
        Ok(bytes) => FileDone::Loaded {
            path: path.to_owned(),
            bytes,
        },
        Err(err) => FileDone::Notice(format!("Cannot read {}: {err}", path.display())),
    }
}

/// rfd needs the desktop portal (over the D-Bus session bus) or zenity; with neither it
/// returns "cancelled" at once, which would read as the user's choice.
fn dialog_available() -> bool {
    let session_bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some();
    let zenity = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("zenity").is_file()));
    session_bus || zenity
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// `20261127-184205`, for file names.
fn file_stamp() -> String {
    let text = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    text.chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect::<String>()
        .replace('T', "-")
}
