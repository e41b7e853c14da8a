//! A log as NDJSON, one message a line: what the console's Export writes and what the
//! console's Import and `POST /api/v1/messages/import` read back. Each line is a message
//! as `GET /api/v1/messages/{id}` gives it (`wire::message_json`).

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::hub::{Draft, Hub, Topic};
use crate::wire::message_json::{DeliveryPage, message_json};

/// The message log in memory, oldest first, as NDJSON: each line one message with every
/// delivery. (Only memory's: the store may hold a gigabyte.)
pub fn export(hub: &Hub) -> Vec<u8> {
    let mut out = Vec::new();
    for message in hub.messages(None, usize::MAX).iter().rev() {
        let json = message_json(hub, message, DeliveryPage::all(message));
        if serde_json::to_writer(&mut out, &json).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

/// The most messages one import takes.
pub(crate) const MAX_IMPORT: usize = 100_000;

/// One line of an export, as `GET /api/v1/messages/{id}` gives a message; what else the
/// line holds (ids, deliveries) is not imported.
#[derive(Debug, Deserialize)]
struct ExportedLine {
    received_at: Option<String>,
    content_type: Option<String>,
    topic: Option<String>,
    body: String,
    body_encoding: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Line(String),
    #[error(transparent)]
    Publish(#[from] crate::hub::PublishError),
}

/// Reads an exported log and logs its messages (the API's import and the console's).
pub async fn import_ndjson(hub: &Hub, ndjson: &[u8]) -> Result<Vec<u64>, ImportError> {
    let mut messages = Vec::new();
    for (number, line) in ndjson.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if messages.len() == MAX_IMPORT {
            return Err(ImportError::Line(format!(
                "an import takes at most {MAX_IMPORT} messages; split the file"
            )));
        }
        let bad = |why: String| ImportError::Line(format!("line {}: {why}", number + 1));
        let line: ExportedLine = serde_json::from_slice(line)
            .map_err(|err| bad(format!("not an exported message ({err})")))?;
        let body = match line.body_encoding.as_deref() {
            None | Some("utf8") => line.body.into_bytes(),
            Some("base64") => STANDARD
                .decode(&line.body)
                .map_err(|err| bad(format!("body is not base64 ({err})")))?,
            Some(other) => {
                return Err(bad(format!(
                    "body_encoding {other:?} is neither \"utf8\" nor \"base64\""
                )));
            }
        };
        let received_at = match &line.received_at {
            None => SystemTime::now(),
            Some(text) => humantime::parse_rfc3339_weak(text).map_err(|err| {
                bad(format!(
                    "received_at {text:?} is not an RFC 3339 time ({err})"
                ))
            })?,
        };
        let topic = line
            .topic
            .as_deref()
            .map(Topic::parse)
            .transpose()
            .map_err(|err| bad(err.to_string()))?;
        let draft = Draft {
            body: body.into(),
            content_type: line.content_type,
            headers: Vec::new(),
            trace: None,
            topic,
        };
        crate::hub::sendable(&draft).map_err(|err| bad(err.to_string()))?;
        messages.push((draft, received_at));
    }
    Ok(hub.import(messages).await?)
}
