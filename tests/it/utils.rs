use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::serve::ListenerExt as _;
use herald::hub::MessageRecord;
use herald::{Config, Hub, Service};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Longest a test waits for something that should happen in milliseconds. Generous, since
/// CI machines are shared; tests never assert on speed.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct TestHub {
    service: Option<Service>,
    pub url: String,
    pub http: reqwest::Client,
}

/// A Herald on 127.0.0.1:0, configured from the defaults by `configure`.
pub async fn start_hub(configure: impl FnOnce(&mut Config)) -> TestHub {
    let mut config = Config::default();
    configure(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service = Service::start_on(listener, &config).unwrap();
    TestHub {
        url: service.url().unwrap(),
        service: Some(service),
        http: reqwest::Client::builder()
            .timeout(PATIENCE)
            .build()
            .unwrap(),
    }
}

impl TestHub {
    pub fn hub(&self) -> &Hub {
        self.service.as_ref().unwrap().hub()
    }

    pub fn addr(&self) -> SocketAddr {
        self.service.as_ref().unwrap().local_addr().unwrap()
    }

    pub async fn shutdown(mut self) {
        self.service.take().unwrap().shutdown().await;
    }

    /// Sends `method path` with an optional body and returns the status and body text.
    pub async fn call(&self, method: &str, path: &str) -> (StatusCode, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = self
            .http
            .request(method, format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// Sends `method path` with `body` as JSON (none for `Value::Null`), and returns the
    /// status and the answer as JSON.
    pub async fn call_json(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("{path} answered {status} with no JSON ({err}): {text}"));
        (status, json)
    }

    pub async fn register(&self, address: &str) {
        let (status, body) = self
            .call("POST", &format!("/registerAndKeepAlive?address={address}"))
            .await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "success"),
            "registering {address}"
        );
    }

    pub async fn deregister(&self, address: &str) {
        let (status, body) = self
            .call("DELETE", &format!("/deregister?address={address}"))
            .await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "success"),
            "deregistering {address}"
        );
    }

    /// Publishes through `/sendMessage` and returns the hub's message id.
    pub async fn publish(&self, body: impl Into<reqwest::Body>, content_type: Option<&str>) -> u64 {
        let mut request = self
            .http
            .post(format!("{}/sendMessage", self.url))
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let id = response.headers()["x-herald-message-id"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(response.text().await.unwrap(), "success");
        id
    }

    /// Waits until message `id` has `count` deliveries delivered, and returns it.
    pub async fn until_delivered(&self, id: u64, count: usize) -> Arc<MessageRecord> {
        let message = self.hub().message(id).expect("the message is logged");
        eventually(&format!("message {id} has {count} delivered"), || {
            message.summary().delivered == count
        })
        .await;
        message
    }

    /// Waits until message `id` has `count` deliveries failed, and returns it.
    pub async fn until_failed(&self, id: u64, count: usize) -> Arc<MessageRecord> {
        let message = self.hub().message(id).expect("the message is logged");
        eventually(&format!("message {id} has {count} failed"), || {
            message.summary().failed == count
        })
        .await;
        message
    }

    pub async fn listed(&self) -> Vec<String> {
        let (status, body) = self.call("GET", "/listSubscribers").await;
        assert_eq!(status, StatusCode::OK);
        body.lines()
            .map(|line| line.split("  :  ").next().unwrap().to_owned())
            .collect()
    }
}

/// What a subscriber server received in one request.
#[derive(Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: std::time::Instant,
}

impl Received {
    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap())
    }
}

/// One answer of a [`Receiver`].
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, String)>,
    /// How long to think before answering.
    pub delay: Duration,
    pub body: Bytes,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap(),
            headers: Vec::new(),
            delay: Duration::ZERO,
            body: Bytes::new(),
        }
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// A real subscriber: an HTTP server on 127.0.0.1:0 that records every request and
/// answers from a script, then with its standing reply.
pub struct Receiver {
    pub addr: SocketAddr,
    received: mpsc::UnboundedReceiver<Received>,
    connections: Arc<AtomicUsize>,
    replies: Arc<Replies>,
    in_flight: Arc<InFlight>,
}

/// Requests being answered right now, and the most there ever were at once.
#[derive(Debug, Default)]
struct InFlight {
    now: AtomicUsize,
    most: AtomicUsize,
}

#[derive(Debug)]
struct Replies {
    script: parking_lot::Mutex<std::collections::VecDeque<Reply>>,
    standing: parking_lot::Mutex<Reply>,
}

#[derive(Clone)]
struct ReceiverState {
    tx: mpsc::UnboundedSender<Received>,
    replies: Arc<Replies>,
    in_flight: Arc<InFlight>,
}

impl Receiver {
    pub async fn start() -> Self {
        Self::answering(StatusCode::OK).await
    }

    pub async fn answering(status: StatusCode) -> Self {
        Self::scripted(Vec::new(), Reply::status(status.as_u16())).await
    }

    /// Answering 200 at `addr` (a subscriber that comes back where it was).
    pub async fn at(addr: SocketAddr) -> Self {
        Self::scripted_at(addr, Vec::new(), Reply::status(200)).await
    }

    /// Answers with `script` in order, then with `standing` for ever.
    pub async fn scripted(script: Vec<Reply>, standing: Reply) -> Self {
        Self::scripted_at(SocketAddr::from(([127, 0, 0, 1], 0)), script, standing).await
    }

    async fn scripted_at(addr: SocketAddr, script: Vec<Reply>, standing: Reply) -> Self {
        let replies = Arc::new(Replies {
            script: parking_lot::Mutex::new(script.into()),
            standing: parking_lot::Mutex::new(standing),
        });
        let (tx, received) = mpsc::unbounded_channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = listener.tap_io(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let in_flight = Arc::new(InFlight::default());
        let app = Router::new().fallback(record).with_state(ReceiverState {
            tx,
            replies: replies.clone(),
            in_flight: in_flight.clone(),
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            received,
            connections,
            replies,
            in_flight,
        }
    }

    /// Changes the standing reply (the script, if any, still comes first).
    pub fn reply_with(&self, reply: Reply) {
        *self.replies.standing.lock() = reply;
    }

    /// The address to register: `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// The next request, or a panic after [`PATIENCE`].
    pub async fn recv(&mut self) -> Received {
        tokio::time::timeout(PATIENCE, self.received.recv())
            .await
            .unwrap_or_else(|_| panic!("{} received nothing within {PATIENCE:?}", self.addr))
            .unwrap()
    }

    /// Whatever arrived so far, without waiting.
    pub fn drain(&mut self) -> Vec<Received> {
        std::iter::from_fn(|| self.received.try_recv().ok()).collect()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The most requests this receiver was answering at one time.
    pub fn most_in_flight(&self) -> usize {
        self.in_flight.most.load(Ordering::SeqCst)
    }
}

async fn record(State(state): State<ReceiverState>, request: Request) -> axum::response::Response {
    let at = std::time::Instant::now();
    let now = state.in_flight.now.fetch_add(1, Ordering::SeqCst) + 1;
    state.in_flight.most.fetch_max(now, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    state
        .tx
        .send(Received {
            path: parts.uri.path().to_owned(),
            headers: parts.headers,
            body,
            at,
        })
        .ok();
    let reply = state
        .replies
        .script
        .lock()
        .pop_front()
        .unwrap_or_else(|| state.replies.standing.lock().clone());
    tokio::time::sleep(reply.delay).await;
    state.in_flight.now.fetch_sub(1, Ordering::SeqCst);
    let mut response = axum::response::Response::new(axum::body::Body::from(reply.body));
    *response.status_mut() = reply.status;
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

/// A subscriber that accepts connections and never answers. Holds the sockets open for as
/// long as the returned task lives.
pub async fn hanging_receiver() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr.to_string(), task)
}

/// An address on loopback where nothing listens.
pub async fn dead_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

/// Polls `condition` until it holds, or panics with `what` after [`PATIENCE`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `request` as-is on a fresh connection and returns whatever the server answered
/// before closing. For requests a client library refuses to send (cut-short bodies,
/// hand-made chunking, foreign `Host` headers). A complete request should say
/// `Connection: close`; a cut-short one is followed by closing the writing half, which is
/// what makes it cut short.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let text = String::from_utf8_lossy(request);
    if !text.to_ascii_lowercase().contains("connection: close") {
        stream.shutdown().await.unwrap();
    }
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the server neither answered nor closed")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A directory of its own under the system's temporary one, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("herald-it-{name}-{}-{n}", std::process::id()));
        std::fs::remove_dir_all(&path).ok();
        Self(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    pub fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}
