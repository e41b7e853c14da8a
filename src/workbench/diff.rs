//! Two payloads compared line by line (with `similar`), as the console's side-by-side
//! view and `GET /api/v1/diff` show them.
//!
//! JSON is pretty-printed first, so that two one-line documents differ by the fields that
//! differ rather than as one line; bytes that are not text are compared as a hex dump.

use std::time::Duration;

use similar::{ChangeTag, TextDiff};

/// How long a comparison may take before it settles for a coarser answer.
const TIMEOUT: Duration = Duration::from_millis(200);
/// The most rows a comparison returns.
pub const MAX_ROWS: usize = 10_000;

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
}

/// Compares two payloads.
pub fn payloads(old: &[u8], new: &[u8]) -> Diff {
    let (old, new) = (lines_of(old), lines_of(new));
    let diff = TextDiff::configure()
        .timeout(TIMEOUT)
        .diff_lines(&old, &new);
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
    }
}

/// The lines a payload is compared by.
fn lines_of(bytes: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Ok(pretty) = serde_json::to_string_pretty(&json)
    {
        return pretty;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => bytes
            .chunks(16)
            .map(|chunk| {
                let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
                hex.join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n"),
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
    }
}
