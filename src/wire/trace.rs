//! W3C Trace Context: reading a publisher's `traceparent`, and writing one for each
//! delivery as its child (same trace id and flags, a new parent id). `tracestate` is
//! carried along unchanged.
//!
//! Written by hand: the format is four fixed-width hex fields, and all Herald does is
//! check them, keep the trace id and make child ids. The `opentelemetry` crates would
//! bring a whole SDK (context, propagators, exporters) for these few lines.
//!
//! See <https://www.w3.org/TR/trace-context/>: `version-traceid-parentid-flags`, e.g.
//! `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// The version Herald writes, and the only one whose layout it knows in full.
const VERSION: u8 = 0x00;
/// A version-00 header's length, and the least any version may have.
const LEN: usize = 55;
/// The one flag version 00 defines: the caller may have recorded trace data.
const SAMPLED: u8 = 0x01;

/// A trace id: 16 bytes, never all zero; shown as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

/// The trace a message belongs to, as its deliveries pass it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: TraceId,
    /// Passed on as they came (only the sampled bit from a header of a later version).
    pub flags: u8,
    /// `tracestate` as the publisher sent it (several fields joined with commas), passed
    /// on unchanged; only ever with a `traceparent` that was valid.
    pub state: Option<String>,
}

impl TraceContext {
    /// Reads a `traceparent` value. `None` when it is not valid by the W3C rules (the
    /// trace is then restarted): lowercase hex only, neither id all zeros, version `ff`
    /// forbidden, version 00 exactly 55 characters. A later version is read for its first
    /// four fields, as the spec asks, when the 55th character ends the value or a dash
    /// follows it.
    pub fn parse(traceparent: &str) -> Option<Self> {
        let text = traceparent.as_bytes();
        if text.len() < LEN || [2, 35, 52].iter().any(|&at| text[at] != b'-') {
            return None;
        }
        let [version] = hex::<1>(&text[..2])?;
        let fits = match version {
            VERSION => text.len() == LEN,
            0xff => false,
            _ => text.len() == LEN || text[LEN] == b'-',
        };
        let trace_id = hex::<16>(&text[3..35])?;
        let parent_id = hex::<8>(&text[36..52])?;
        let [flags] = hex::<1>(&text[53..55])?;
        if !fits || is_zero(&trace_id) || is_zero(&parent_id) {
            return None;
        }
        Some(Self {
            trace_id: TraceId(trace_id),
            flags: if version == VERSION {
                flags
            } else {
                flags & SAMPLED
            },
            state: None,
        })
    }

    /// A new trace, for a message published without one. Marked sampled: what Herald
    /// starts it wants seen, and a subscriber whose tracing follows its parent's decision
    /// (OpenTelemetry's default) would otherwise record nothing of it.
    pub fn new_root() -> Self {
        Self {
            trace_id: TraceId(random()),
            flags: SAMPLED,
            state: None,
        }
    }

    /// A `traceparent` for one outgoing request: this trace and flags, a new parent id.
    pub fn child(&self) -> String {
        // Built byte by byte rather than through `format!`: this runs once per delivery
        // attempt, and the formatting machinery was a visible share of that.
        let mut text = String::with_capacity(LEN);
        push_hex(&mut text, &[VERSION]);
        text.push('-');
        push_hex(&mut text, &self.trace_id.0);
        text.push('-');
        push_hex(&mut text, &random::<8>());
        text.push('-');
        push_hex(&mut text, &[self.flags]);
        text
    }

    /// The bytes it keeps besides itself, for the log's budget.
    pub fn heap_bytes(&self) -> usize {
        self.state.as_ref().map_or(0, String::len)
    }
}

/// Lowercase hex digits to `N` bytes; `None` for any other character or length.
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            _ => None,
        }
    }
    if digits.len() != 2 * N {
        return None;
    }
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(bytes)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let mut text = String::with_capacity(2 * bytes.len());
    push_hex(&mut text, bytes);
    f.write_str(&text)
}

fn push_hex(text: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&byte| byte == 0)
}

/// `N` random bytes, never all zero (an all-zero id is invalid).
fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    if getrandom::fill(&mut bytes).is_err() || is_zero(&bytes) {
        // No randomness from the OS (or all zeros, once in 2^64 or more): the clock and
        // a counter still give ids that differ from one call to the next.
        static CALLS: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mixed = (nanos ^ CALLS.fetch_add(1, Ordering::Relaxed).rotate_left(32)).to_le_bytes();
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = mixed[i % mixed.len()];
        }
        bytes[N - 1] |= 1;
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read() {
        let trace = TraceContext::parse(VALID).unwrap();
        assert_eq!(
            trace.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(trace.flags, 0x01);
        let unsampled = TraceContext::parse(&VALID.replace("-01", "-00")).unwrap();
        assert_eq!(unsampled.flags, 0x00);
        // Flags pass as they came, bits version 00 leaves undefined included.
        let other_bits = TraceContext::parse(&VALID.replace("-01", "-03")).unwrap();
        assert_eq!(other_bits.flags, 0x03);
    }

    #[test]
    fn what_the_rules_forbid_is_refused() {
        for invalid in [
            "",
            "00",
            "garbage",
            // Uppercase hex, in each field.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // The forbidden version, and version 00 with more after it.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
            // Fields too short or too long, other separators, other characters.
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-701",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            // A later version must have a dash after the flags if anything follows.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(TraceContext::parse(invalid), None, "{invalid:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_for_its_first_fields() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-follows";
        let trace = TraceContext::parse(later).unwrap();
        assert_eq!(
            trace.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(trace.flags, 0x01, "only the sampled bit is known");
        assert!(TraceContext::parse(&later[..LEN]).is_some());
    }

    #[test]
    fn a_child_keeps_the_trace_and_flags_with_a_new_parent() {
        let trace = TraceContext::parse(VALID).unwrap();
        let (first, second) = (trace.child(), trace.child());
        for child in [&first, &second] {
            let parsed = TraceContext::parse(child).expect("a child is valid");
            assert_eq!(parsed, trace);
            assert!(child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
            assert!(child.ends_with("-01"));
            assert_ne!(&child[36..52], "00f067aa0ba902b7");
        }
        assert_ne!(first, second, "every child has its own parent id");
    }

    #[test]
    fn new_traces_are_valid_sampled_and_differ() {
        let (a, b) = (TraceContext::new_root(), TraceContext::new_root());
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!(a.flags, SAMPLED);
        let child = TraceContext::parse(&a.child()).unwrap();
        assert_eq!(child.trace_id, a.trace_id);
    }

    #[test]
    fn random_ids_are_never_zero() {
        for _ in 0..1000 {
            assert!(!is_zero(&random::<8>()));
        }
    }
}
