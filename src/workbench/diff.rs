//! Two payloads compared line by line (with `similar`), as the console's side-by-side
//! view and `GET /api/v1/diff` show them.
//!
//! JSON is pretty-printed first, so that two one-line documents differ by the fields that
//! differ rather than as one line; bytes that are not text are compared as a hex dump.
//!
//! Both are on a budget. Pretty-printing multiplies a deeply nested document by its
//! indent (a 2 MiB array 127 deep became hundreds of MiB a side), so a side whose rendered
//! form would pass [`MAX_RENDERED`] is not rendered: both sides are then compared as the
//! raw text they are, and the result says so ([`Diff::raw`], [`RAW_NOTE`]). And however
//! many ask, at most [`MAX_AT_ONCE`] comparisons run at a time ([`Comparisons`]): each
//! may hold a few times `MAX_RENDERED` while it runs.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use similar::{ChangeTag, TextDiff};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a comparison may take before it settles for a coarser answer.
const TIMEOUT: Duration = Duration::from_millis(200);
/// The most rows a comparison returns.
pub const MAX_ROWS: usize = 10_000;
/// The largest rendered form (pretty-printed JSON, a hex dump) of one side. Past it both
/// sides are compared as raw text, which is never larger than the payloads themselves.
pub const MAX_RENDERED: usize = 4 * 1024 * 1024;
/// Comparisons running at once, the console's and the API's together.
pub const MAX_AT_ONCE: usize = 2;
/// What a comparison made on the raw text says about itself.
pub const RAW_NOTE: &str = "compared as raw text: too large to pretty-print";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Same,
    /// Only in the first.
    Removed,
    /// Only in the second.
    Added,
}

impl Op {
    pub fn label(self) -> &'static str {
        match self {
            Op::Same => "same",
            Op::Removed => "removed",
            Op::Added => "added",
        }
    }
}

/// One line of the comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub op: Op,
    /// Its line number in the first payload and in the second, from 1.
    pub old: Option<usize>,
    pub new: Option<usize>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    pub rows: Vec<Row>,
    pub identical: bool,
    /// Rows beyond [`MAX_ROWS`] were left out.
    pub truncated: bool,
    /// Compared as raw text, since a side would have rendered to more than
    /// [`MAX_RENDERED`]: [`RAW_NOTE`].
    pub raw: bool,
}

impl Diff {
    /// What to tell whoever reads it about how it was compared, if anything.
    pub fn note(&self) -> Option<&'static str> {
        self.raw.then_some(RAW_NOTE)
    }
}

/// Compares two payloads. Callers that can be many (the API, the console) take a
/// [`Turn`] first, and call this on a thread that may block.
pub fn payloads(old: &[u8], new: &[u8]) -> Diff {
    // The second is rendered only if the first fits: either way both go raw otherwise.
    let rendered = render(old).and_then(|old| Some((old, render(new)?)));
    let (raw, (old, new)) = match rendered {
        Some(both) => (false, both),
        None => (
            true,
            (String::from_utf8_lossy(old), String::from_utf8_lossy(new)),
        ),
    };
    let diff = TextDiff::configure()
        .timeout(TIMEOUT)
        .diff_lines(old.as_ref(), new.as_ref());
    let mut rows = Vec::new();
    let mut truncated = false;
    for change in diff.iter_all_changes() {
        if rows.len() == MAX_ROWS {
            truncated = true;
            break;
        }
        let op = match change.tag() {
            ChangeTag::Equal => Op::Same,
            ChangeTag::Delete => Op::Removed,
            ChangeTag::Insert => Op::Added,
        };
        rows.push(Row {
            op,
            old: change.old_index().map(|i| i + 1),
            new: change.new_index().map(|i| i + 1),
            text: change.value().trim_end_matches(['\n', '\r']).to_owned(),
        });
    }
    Diff {
        identical: old == new,
        rows,
        truncated,
        raw,
    }
}

/// The lines a payload is compared by, or `None` when rendering it would pass
/// [`MAX_RENDERED`]. Text that is not JSON is compared as it is, without a copy.
fn render(bytes: &[u8]) -> Option<Cow<'_, str>> {
    if let Some(json) = pretty(bytes) {
        return json.map(Cow::Owned);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Some(Cow::Borrowed(text)),
        // Three characters a byte: "ff " or "ff\n".
        Err(_) if bytes.len() > MAX_RENDERED / 3 => None,
        Err(_) => Some(Cow::Owned(hex_dump(bytes))),
    }
}

/// JSON pretty-printed: `None` when it is not JSON, `Some(None)` when its pretty form
/// would pass [`MAX_RENDERED`].
fn pretty(bytes: &[u8]) -> Option<Option<String>> {
    // Checked before anything is built: a document nested deep enough passes the budget
    // on its indents alone, and its parsed form would cost ten times its size meanwhile.
    if pretty_floor(bytes) > MAX_RENDERED {
        return serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
            .is_ok()
            .then_some(None);
    }
    let json = serde_json::from_slice::<serde_json::Value>(bytes).ok()?;
    let mut out = Capped {
        text: Vec::new(),
        room: MAX_RENDERED,
    };
    if serde_json::to_writer_pretty(&mut out, &json).is_err() {
        return Some(None);
    }
    // serde_json writes UTF-8 only.
    Some(String::from_utf8(out.text).ok())
}

/// At most how long `serde_json` pretty-prints `json`, from below, without parsing it:
/// each comma between two elements becomes a line break and the next element's indent,
/// two spaces a level. (What is not JSON gets a meaningless number.)
fn pretty_floor(json: &[u8]) -> usize {
    let (mut depth, mut floor) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' => floor = floor.saturating_add(1 + 2 * depth),
            _ => {}
        }
    }
    floor
}

/// A writer that refuses to hold more than `room` bytes.
struct Capped {
    text: Vec<u8>,
    room: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.room {
            return Err(std::io::Error::other("past the rendering budget"));
        }
        self.room -= buf.len();
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sixteen bytes a line, as two hex digits each.
fn hex_dump(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(bytes.len() * 3);
    for (i, chunk) in bytes.chunks(16).enumerate() {
        if i > 0 {
            text.push('\n');
        }
        for (j, b) in chunk.iter().enumerate() {
            let gap = if j > 0 { " " } else { "" };
            // Writing to a String cannot fail.
            let _ = write!(text, "{gap}{b:02x}");
        }
    }
    text
}

/// Room for [`MAX_AT_ONCE`] comparisons, shared by the console and the API.
#[derive(Debug)]
pub struct Comparisons {
    running: Arc<Semaphore>,
}

impl Default for Comparisons {
    fn default() -> Self {
        Self {
            running: Arc::new(Semaphore::new(MAX_AT_ONCE)),
        }
    }
}

/// No room for another comparison now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{MAX_AT_ONCE} comparisons are running already; try again in a moment")]
pub struct Busy;

/// One comparison's room, given back when it is dropped.
#[derive(Debug)]
pub struct Turn {
    _room: OwnedSemaphorePermit,
}

impl Comparisons {
    /// Room for one comparison, or [`Busy`]: a caller is told to come back rather than
    /// queued, since each waiting one would hold its payloads meanwhile.
    pub fn try_start(&self) -> Result<Turn, Busy> {
        self.running
            .clone()
            .try_acquire_owned()
            .map(|room| Turn { _room: room })
            .map_err(|_| Busy)
    }
}

impl Turn {
    /// [`payloads`], the room held until it is done: up to 200 ms of work and a few MiB,
    /// so on a thread that may block.
    pub fn compare(self, old: &[u8], new: &[u8]) -> Diff {
        payloads(old, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_differs_by_the_fields_that_differ() {
        let diff = payloads(br#"{"a":1,"b":2,"c":3}"#, br#"{"a":1,"b":5,"c":3}"#);
        assert!(!diff.identical);
        let changed: Vec<(Op, &str)> = diff
            .rows
            .iter()
            .filter(|r| r.op != Op::Same)
            .map(|r| (r.op, r.text.as_str()))
            .collect();
        assert_eq!(
            changed,
            [(Op::Removed, r#"  "b": 2,"#), (Op::Added, r#"  "b": 5,"#)]
        );
        let same = payloads(b"x\ny", b"x\ny");
        assert!(same.identical && same.rows.iter().all(|r| r.op == Op::Same));
        let bytes = payloads(&[0xff, 0x00], &[0xff, 0x01]);
        assert!(
            bytes
                .rows
                .iter()
                .any(|r| r.text == "ff 01" && r.op == Op::Added)
        );
        assert!(!diff.raw && !same.raw && !bytes.raw);
    }

    #[test]
    fn what_would_render_too_large_is_compared_raw() {
        // 100,000 elements 100 deep: some 20 MiB pretty-printed, 200 KB as it is.
        let deep = |n: u8| {
            let inner = vec![n.to_string(); 100_000].join(",");
            format!("{}{inner}{}", "[".repeat(100), "]".repeat(100))
        };
        let (a, b) = (deep(1), deep(2));
        assert!(pretty_floor(a.as_bytes()) > MAX_RENDERED);
        let diff = payloads(a.as_bytes(), b.as_bytes());
        assert!(diff.raw && !diff.identical);
        assert_eq!(diff.note(), Some(RAW_NOTE));
        assert_eq!(diff.rows.len(), 2, "one raw line each");
        assert_eq!(diff.rows[0].text, a);
        // A side within the budget goes raw too when the other does not fit.
        let small = payloads(b"[1]", a.as_bytes());
        assert!(small.raw && small.rows[0].text == "[1]");
        // Bytes whose hex dump would pass the budget.
        let binary = vec![0xff; MAX_RENDERED / 3 + 1];
        assert!(payloads(&binary, &binary).raw);
        // The floor never passes what pretty-printing makes.
        for json in [r#"[1,[2,3],{"a":",","b":[]}]"#, r#"{"x":"\",","y":[1,2]}"#] {
            let value: serde_json::Value = serde_json::from_str(json).unwrap();
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            assert!(pretty_floor(json.as_bytes()) <= pretty.len(), "{json}");
        }
    }

    #[test]
    fn no_more_than_two_at_once() {
        let comparisons = Comparisons::default();
        let turns: Vec<Turn> = (0..MAX_AT_ONCE)
            .map(|_| comparisons.try_start().unwrap())
            .collect();
        let busy = comparisons.try_start().unwrap_err();
        assert!(busy.to_string().contains("try again"), "{busy}");
        let mut turns = turns.into_iter();
        let diff = turns.next().unwrap().compare(b"a", b"b");
        assert!(!diff.identical);
        assert!(
            comparisons.try_start().is_ok(),
            "a finished one gives its room back"
        );
    }
}
