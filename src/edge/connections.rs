//! The inbound connections a listener holds, so that no client can hoard them: what each
//! one is doing (waiting for a request, reading a request's head, busy in a request) and
//! since when. A connection's task closes it once it has waited or read for too long; at
//! its cap the listener makes room by closing the one that has waited longest, and
//! refuses the newcomer only when every connection is busy.
//!
//! hyper's own `header_read_timeout` is not used: it also runs while a kept-alive
//! connection waits for its next request, so it cannot be shorter than the idle timeout.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest a request's head may take from its first byte, and longest its body may
    /// stall.
    pub header_timeout: Duration,
    /// Longest a connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for a request, none of which has arrived.
    Idle,
    /// Part of a request's head has arrived.
    Head,
    /// Serving a request: reading its body, answering, or streaming events.
    Busy,
}

/// Every open connection. Shared by the accept loop, each connection's task, its socket
/// and its requests, all on the HTTP thread, so the lock is never contended for long.
pub(super) struct Registry {
    limits: ConnectionLimits,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    /// Connections that may be closed to make room (idle or reading a head, and not
    /// already asked to close), longest waiting first.
    waiting: BTreeSet<(Instant, u64)>,
    /// Connections not asked to close: what the cap counts. One asked to close to make
    /// room stops counting at once, though its socket is closed an instant later.
    counted: usize,
}

struct Entry {
    phase: Phase,
    since: Instant,
    /// Requests whose responses are not finished. HTTP/1 serves one at a time, but a
    /// count cannot be confused by a response body dropped a moment late.
    requests: usize,
    /// Whether a request has come in on it: one that has not is spared for a moment.
    served: bool,
    /// Asked to close to make room.
    evicted: bool,
    signal: Arc<Signal>,
}

/// What a connection's task waits on besides the connection itself.
pub(super) struct Signal {
    /// Closes the connection: a child of the listener's stop token, also cancelled on its
    /// own to make room.
    pub(super) close: CancellationToken,
    /// Woken when the connection's phase changes, so that its task sets its timer anew
    /// (a head's first byte brings the deadline forward).
    pub(super) changed: Notify,
}

/// How long a new connection is safe from eviction before its first request.
const ADMISSION_GRACE: Duration = Duration::from_millis(500);

impl Registry {
    pub(super) fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            inner: Mutex::default(),
        })
    }

    /// Admits a new connection, first asking the one that has waited longest to close if
    /// the cap is reached; `None` when every connection is busy.
    pub(super) fn admit(self: &Arc<Self>, stop: &CancellationToken) -> Option<Admitted> {
        let mut inner = self.inner.lock();
        if inner.counted >= self.limits.max_connections {
            let &(since, oldest) = inner.waiting.first()?;
            // A connection just let in has had no chance to send its request: closing it
            // for the next newcomer would have newcomers reset each other in turn.
            let served = inner.entries.get(&oldest).is_some_and(|e| e.served);
            if !served && since.elapsed() < ADMISSION_GRACE {
                return None;
            }
            inner.waiting.pop_first();
            let entry = inner.entries.get_mut(&oldest)?;
            entry.evicted = true;
            entry.signal.close.cancel();
            inner.counted -= 1;
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let now = Instant::now();
        let signal = Arc::new(Signal {
            close: stop.child_token(),
            changed: Notify::new(),
        });
        inner.entries.insert(
            id,
            Entry {
                phase: Phase::Idle,
                since: now,
                requests: 0,
                served: false,
                evicted: false,
                signal: signal.clone(),
            },
        );
        inner.waiting.insert((now, id));
        inner.counted += 1;
        Some(Admitted {
            handle: Handle {
                registry: self.clone(),
                id,
            },
            signal,
        })
    }
}

impl Inner {
    fn set_phase(&mut self, id: u64, phase: Phase) {
        let Self {
            entries, waiting, ..
        } = self;
        let Some(entry) = entries.get_mut(&id) else {
            return;
        };
        if entry.phase == phase {
            return;
        }
        let now = Instant::now();
        if !entry.evicted {
            if entry.phase != Phase::Busy {
                waiting.remove(&(entry.since, id));
            }
            if phase != Phase::Busy {
                waiting.insert((now, id));
            }
        }
        entry.phase = phase;
        entry.since = now;
        entry.signal.changed.notify_one();
    }
}

/// A connection's place in the registry, for its socket and its requests to report on.
#[derive(Clone)]
pub(super) struct Handle {
    registry: Arc<Registry>,
    id: u64,
}

impl Handle {
    /// Bytes arrived: if the connection was idle, a request's head has begun.
    fn received(&self) {
        let mut inner = self.registry.inner.lock();
        if inner
            .entries
            .get(&self.id)
            .is_some_and(|e| e.phase == Phase::Idle)
        {
            inner.set_phase(self.id, Phase::Head);
        }
    }

    /// A request's head is complete: busy until the returned guard (held by the
    /// response body) is dropped.
    pub(super) fn busy(&self) -> Busy {
        let mut inner = self.registry.inner.lock();
        if let Some(entry) = inner.entries.get_mut(&self.id) {
            entry.requests += 1;
            entry.served = true;
        }
        inner.set_phase(self.id, Phase::Busy);
        Busy(self.clone())
    }
}

/// Keeps its connection busy while it lives.
pub(super) struct Busy(Handle);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut inner = self.0.registry.inner.lock();
        let Some(entry) = inner.entries.get_mut(&self.0.id) else {
            return;
        };
        entry.requests = entry.requests.saturating_sub(1);
        if entry.requests == 0 {
            inner.set_phase(self.0.id, Phase::Idle);
        }
    }
}

/// An admitted connection, counted until it is dropped.
pub(super) struct Admitted {
    handle: Handle,
    pub(super) signal: Arc<Signal>,
}

impl Admitted {
    pub(super) fn handle(&self) -> Handle {
        self.handle.clone()
    }

    pub(super) fn phase(&self) -> Phase {
        let inner = self.handle.registry.inner.lock();
        inner
            .entries
            .get(&self.handle.id)
            .map_or(Phase::Idle, |e| e.phase)
    }

    /// When the connection is to be closed unless its phase changes first, and that
    /// phase; `None` while it is busy.
    pub(super) fn deadline(&self) -> Option<(Instant, Phase)> {
        let limits = self.handle.registry.limits;
        let inner = self.handle.registry.inner.lock();
        let entry = inner.entries.get(&self.handle.id)?;
        let timeout = match entry.phase {
            Phase::Idle => limits.idle_timeout,
            Phase::Head => limits.header_timeout,
            Phase::Busy => return None,
        };
        Some((entry.since + timeout, entry.phase))
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut inner = self.handle.registry.inner.lock();
        if let Some(entry) = inner.entries.remove(&self.handle.id)
            && !entry.evicted
        {
            inner.counted -= 1;
            if entry.phase != Phase::Busy {
                inner.waiting.remove(&(entry.since, self.handle.id));
            }
        }
    }
}

/// A connection's socket, telling the registry when the first bytes of a request arrive.
pub(super) struct Watched<S> {
    stream: S,
    handle: Handle,
}

impl<S> Watched<S> {
    pub(super) fn new(stream: S, handle: Handle) -> Self {
        Self { stream, handle }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.handle.received();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max_connections: usize) -> Arc<Registry> {
        Registry::new(ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_longest_waiting_makes_room() {
        let registry = registry(3);
        let stop = CancellationToken::new();
        let first = registry.admit(&stop).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = registry.admit(&stop).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let third = registry.admit(&stop).unwrap();
        // The first becomes busy; later the second begins a head, so the third has now
        // waited longest (idle since it came), then the second.
        let busy = first.handle().busy();
        tokio::time::advance(Duration::from_secs(1)).await;
        second.handle().received();
        tokio::time::advance(Duration::from_secs(1)).await;

        let fourth = registry.admit(&stop).unwrap();
        assert!(third.signal.close.is_cancelled());
        assert!(!second.signal.close.is_cancelled());
        tokio::time::advance(Duration::from_secs(1)).await;
        let fifth = registry.admit(&stop).unwrap();
        assert!(second.signal.close.is_cancelled());
        assert!(!first.signal.close.is_cancelled());
        assert!(!fourth.signal.close.is_cancelled());

        // A busy connection is never chosen: once all are busy, a newcomer is refused.
        let _busy4 = fourth.handle().busy();
        let _busy5 = fifth.handle().busy();
        assert!(registry.admit(&stop).is_none());
        drop(busy);
        assert!(registry.admit(&stop).is_some());
        assert!(first.signal.close.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_phase() {
        let registry = registry(8);
        let stop = CancellationToken::new();
        let admitted = registry.admit(&stop).unwrap();
        let start = Instant::now();
        assert_eq!(
            admitted.deadline(),
            Some((start + Duration::from_secs(60), Phase::Idle))
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        admitted.handle().received();
        assert_eq!(
            admitted.deadline(),
            Some((start + Duration::from_secs(15), Phase::Head))
        );
        // More bytes of the same head do not extend it.
        tokio::time::advance(Duration::from_secs(1)).await;
        admitted.handle().received();
        assert_eq!(
            admitted.deadline().unwrap().0,
            start + Duration::from_secs(15)
        );
        let busy = admitted.handle().busy();
        assert_eq!(admitted.deadline(), None);
        tokio::time::advance(Duration::from_secs(100)).await;
        drop(busy);
        assert_eq!(
            admitted.deadline(),
            Some((start + Duration::from_secs(166), Phase::Idle))
        );
        stop.cancel();
        assert!(admitted.signal.close.is_cancelled());
    }

    #[tokio::test]
    async fn a_closed_connection_frees_its_place() {
        let registry = registry(1);
        let stop = CancellationToken::new();
        let only = registry.admit(&stop).unwrap();
        let _busy = only.handle().busy();
        assert!(registry.admit(&stop).is_none());
        drop(only);
        assert!(registry.admit(&stop).is_some());
    }
}
