use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use clap::Parser as _;
use herald::Config;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::utils::{
    PATIENCE, Receiver, TestHub, eventually, hanging_receiver, raw_request, start_hub,
};

/// `POST /sendMessage` as a web page would send it (a "simple" request: no preflight),
/// with `headers` added.
async fn send_as_page(hub: &TestHub, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut request = hub
        .http
        .post(format!("{}{path}", hub.url))
        .header("content-type", "text/plain")
        .body("from a page");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn web_pages_on_other_sites_cannot_drive_the_hub() {
    let hub = start_hub(|_| {}).await;
    let mut receiver = Receiver::start().await;
    hub.register(&receiver.address()).await;
    let own_port = hub.addr().port();

    for headers in [
        &[("origin", "https://evil.example")][..],
        &[("origin", "null")],
        &[
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ],
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site")],
    ] {
        for path in ["/sendMessage", "/registerAndKeepAlive?address=localhost:9"] {
            let (status, body) = send_as_page(&hub, path, headers).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path} {headers:?}: {body}");
            assert!(body.starts_with("Error: "), "{body}");
            assert!(body.contains("--allow-origin"), "{body}");
        }
    }
    let (status, body) = send_as_page(
        &hub,
        "/api/v1/messages",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(error["error"].as_str().unwrap().contains("--allow-origin"));
    assert_eq!(hub.hub().totals().messages, 0, "a refused page published");
    assert_eq!(hub.listed().await, [receiver.address()]);

    // The hub's own origin, in each loopback spelling, and pages that say so.
    for origin in [
        format!("http://127.0.0.1:{own_port}"),
        format!("http://localhost:{own_port}"),
        format!("http://[::1]:{own_port}"),
    ] {
        let (status, body) = send_as_page(
            &hub,
            "/sendMessage",
            &[("origin", &origin), ("sec-fetch-site", "same-origin")],
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "success"),
            "{origin}"
        );
    }
    assert_eq!(receiver.recv().await.body, "from a page");
}

#[tokio::test]
async fn an_allowed_origin_may_drive_the_hub() {
    let hub = start_hub(|config| {
        config.allow_origins = vec!["https://evil.example".parse().unwrap()];
    })
    .await;
    for headers in [
        &[("origin", "https://evil.example")][..],
        &[
            ("origin", "https://evil.example:443"),
            ("sec-fetch-site", "cross-site"),
        ],
    ] {
        let (status, body) = send_as_page(&hub, "/sendMessage", headers).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "success"),
            "{headers:?}"
        );
    }
    let (status, _) =
        send_as_page(&hub, "/sendMessage", &[("origin", "https://other.example")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(hub.hub().totals().messages, 2);
}

#[tokio::test]
async fn allowed_origins_are_checked_at_start() {
    for bad in ["evil.example", "http://evil.example/path", "null", ""] {
        let parsed = Config::try_parse_from(["herald", "--allow-origin", bad]);
        let err = parsed.expect_err(bad).to_string();
        assert!(err.contains("scheme://host:port"), "{bad}: {err}");
    }
}

#[tokio::test]
async fn no_route_accepts_the_hubs_own_deliveries() {
    let hub = start_hub(|_| {}).await;
    let mut receiver = Receiver::start().await;
    hub.register(&receiver.address()).await;
    let id = hub.publish("once", None).await;
    hub.until_delivered(id, 1).await;
    receiver.recv().await;
    let instance = hub.hub().instance().to_owned();
    for (method, path) in [
        ("POST", format!("/api/v1/messages/{id}/resend")),
        (
            "POST",
            "/registerAndKeepAlive?address=localhost:9".to_owned(),
        ),
        ("GET", "/listSubscribers".to_owned()),
    ] {
        let response = hub
            .http
            .request(method.parse().unwrap(), format!("{}{path}", hub.url))
            .header("x-herald-instance", &instance)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::LOOP_DETECTED,
            "{method} {path}"
        );
    }
    // Another hub's deliveries are fine.
    let response = hub
        .http
        .post(format!("{}/api/v1/messages/{id}/resend", hub.url))
        .header("x-herald-instance", "someone-else")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let message = hub.until_delivered(id, 2).await;
    assert_eq!(message.deliveries().len(), 2, "a looped resend was queued");
    assert_eq!(receiver.drain().len(), 1);
    assert_eq!(hub.listed().await, [receiver.address()]);
}

#[tokio::test]
async fn a_stopping_hub_refuses_new_connections_at_once() {
    let hub = start_hub(|config| config.delivery_timeout = Duration::from_secs(600)).await;
    // A delivery that hangs keeps shutdown draining for its whole grace period.
    let (hanging, _held) = hanging_receiver().await;
    hub.register(&hanging).await;
    hub.publish("stuck", None).await;
    let addr = hub.addr();
    // A request still in flight (its body stalled) keeps the server finishing requests.
    let mut in_flight = TcpStream::connect(addr).await.unwrap();
    in_flight
        .write_all(
            b"POST /sendMessage HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nabc",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let inner = hub.hub().clone();
    let shutdown = tokio::spawn(hub.shutdown());
    eventually("shutdown begins", || inner.is_stopping()).await;
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match TcpStream::connect(addr).await {
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => break,
            result => assert!(
                Instant::now() < deadline,
                "still accepting after shutdown began: {result:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !shutdown.is_finished(),
        "the drain was not busy: nothing was proven"
    );
    shutdown.await.unwrap();
}

/// Sends `head` and then a chunked body of `size` bytes of JSON-ish filler on a fresh
/// connection, reading the answer meanwhile (the hub may answer and close before the
/// body is all sent), and returns the answer.
async fn send_chunked(addr: SocketAddr, head: &str, size: usize) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let head = format!("{head}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0;
        write.write_all(b"1\r\n{\r\n").await?;
        while sent < size {
            let len = chunk.len().min(size - sent);
            write.write_all(format!("{len:x}\r\n").as_bytes()).await?;
            write.write_all(&chunk[..len]).await?;
            write.write_all(b"\r\n").await?;
            sent += len;
        }
        write.write_all(b"1\r\n}\r\n0\r\n\r\n").await?;
        io::Result::Ok(write)
    });
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, read.read_to_end(&mut answer))
        .await
        .expect("no answer")
        .ok();
    // The hub may have stopped reading: a failed write is expected.
    writer.await.unwrap().ok();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn every_route_holds_chunked_bodies_to_max_body() {
    let hub = start_hub(|config| config.max_body = 1024 * 1024).await;
    let too_large = 1024 * 1024 + 512 * 1024;
    for (head, json) in [
        (
            "POST /api/v1/subscribers HTTP/1.1\r\nContent-Type: application/json\r\n",
            true,
        ),
        ("POST /api/v1/messages HTTP/1.1\r\n", true),
        ("POST /sendMessage HTTP/1.1\r\n", false),
    ] {
        let head = format!("{head}Host: localhost\r\n");
        let answer = send_chunked(hub.addr(), &head, too_large).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{head}: {answer}");
        assert!(answer.contains("--max-body"), "{answer}");
        assert!(answer.contains("1048576 bytes"), "{answer}");
        assert_eq!(answer.contains("{\"error\":"), json, "{answer}");
    }
    assert_eq!(hub.hub().totals().messages, 0);
    // Under the limit, the same route reads the body (and finds it is no subscription).
    let answer = send_chunked(
        hub.addr(),
        "POST /api/v1/subscribers HTTP/1.1\r\nContent-Type: application/json\r\nHost: localhost\r\n",
        512 * 1024,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[tokio::test]
async fn connection_flags_are_checked_at_start() {
    let config = Config::default();
    assert_eq!(config.header_timeout, Duration::from_secs(10));
    assert_eq!(config.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.max_connections, 1024);
    for (flag, value, expected) in [
        ("--header-timeout", "0s", "longer than zero"),
        ("--header-timeout", "10000000000000000000s", "at most 1day"),
        ("--idle-timeout", "0ms", "longer than zero"),
        ("--idle-timeout", "soon", "500ms"),
        ("--idle-timeout", "25h", "at most 1day"),
        ("--max-connections", "0", "0"),
        ("--max-connections", "2000000", "2000000"),
    ] {
        let err = Config::try_parse_from(["herald", flag, value])
            .expect_err(value)
            .to_string();
        assert!(
            err.contains(flag) && err.contains(expected),
            "{flag} {value}: {err}"
        );
    }
}

/// Reads one response's head and, if it says how long its body is, the body.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut byte = [0; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut byte))
            .await
            .expect("no answer")
            .unwrap();
        assert_eq!(
            read,
            1,
            "closed mid-answer: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.push(byte[0]);
    }
    let head = String::from_utf8(answer).unwrap();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .map_or(0, |len| len.parse().unwrap());
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    head + &String::from_utf8_lossy(&body)
}

/// A connection that sent `GET path` and read the answer's head (and its body, if it has
/// a length), kept open.
async fn after_get(addr: SocketAddr, path: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = read_response(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    (stream, answer)
}

/// A connection that made one request and keeps the connection open for more.
async fn kept_alive(addr: SocketAddr) -> TcpStream {
    after_get(addr, "/healthz").await.0
}

/// A connection following `/api/v1/events`.
async fn event_stream(addr: SocketAddr) -> TcpStream {
    let (stream, head) = after_get(addr, "/api/v1/events").await;
    assert!(head.contains("text/event-stream"), "{head}");
    stream
}

/// Whether the hub has closed `stream`, waiting up to `wait` for it to.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // An event or a keep-alive comment: still open.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_request_head_sent_a_byte_at_a_time_is_dropped() {
    let hub = start_hub(|config| config.header_timeout = Duration::from_millis(300)).await;
    let stream = TcpStream::connect(hub.addr()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slow\r\n\r\n";
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for byte in request {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // All sent (about 3 s): hold the connection until the hub closes it.
        std::future::pending::<()>().await;
    });
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, read.read_to_end(&mut answer))
        .await
        .expect("the slow head was never dropped")
        .ok();
    writer.abort();
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_nothing_is_published() {
    let hub = start_hub(|config| config.header_timeout = Duration::from_millis(300)).await;
    for (head, json) in [
        ("POST /sendMessage HTTP/1.1\r\n", false),
        ("POST /api/v1/messages HTTP/1.1\r\n", true),
        (
            "POST /api/v1/subscribers HTTP/1.1\r\nContent-Type: application/json\r\n",
            true,
        ),
    ] {
        let mut stream = TcpStream::connect(hub.addr()).await.unwrap();
        stream
            .write_all(
                format!("{head}Host: localhost\r\nContent-Length: 100\r\n\r\n{{\"ad").as_bytes(),
            )
            .await
            .unwrap();
        let answer = read_response(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{head}: {answer}");
        assert!(answer.contains("--header-timeout"), "{answer}");
        assert_eq!(answer.contains("{\"error\":"), json, "{answer}");
        assert!(closed_within(&mut stream, PATIENCE).await);
    }
    assert_eq!(hub.hub().totals().messages, 0);
    assert!(hub.listed().await.is_empty());
}

#[tokio::test]
async fn an_idle_keep_alive_is_closed_but_an_event_stream_is_not() {
    let idle_timeout = Duration::from_millis(300);
    let hub = start_hub(|config| config.idle_timeout = idle_timeout).await;
    let mut events = event_stream(hub.addr()).await;
    let mut idle = kept_alive(hub.addr()).await;
    let answered = Instant::now();
    assert!(
        closed_within(&mut idle, PATIENCE).await,
        "an idle connection was kept"
    );
    assert!(answered.elapsed() >= idle_timeout);

    // Long past the idle timeout, the stream still carries events.
    tokio::time::sleep(3 * idle_timeout).await;
    hub.publish("still there?", None).await;
    let mut seen = Vec::new();
    let mut buf = [0; 4096];
    while !String::from_utf8_lossy(&seen).contains("event: published") {
        let read = tokio::time::timeout(PATIENCE, events.read(&mut buf))
            .await
            .expect("no event")
            .unwrap();
        assert!(read > 0, "the event stream was closed");
        seen.extend_from_slice(&buf[..read]);
    }
}

#[tokio::test]
async fn at_the_cap_the_longest_idle_connection_makes_room() {
    let hub = start_hub(|config| config.max_connections = 8).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(kept_alive(hub.addr()).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut receiver = Receiver::start().await;
    // A new client is served at once, and deliveries still go out.
    let fresh = reqwest::Client::new();
    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(1),
        fresh
            .post(format!(
                "{}/registerAndKeepAlive?address={}",
                hub.url,
                receiver.address()
            ))
            .send(),
    )
    .await
    .expect("a new client waited over a second")
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let took = started.elapsed();
    // The room was made by closing the connection idle the longest, and only that one.
    assert!(
        closed_within(&mut held[0], PATIENCE).await,
        "the oldest was kept"
    );
    for stream in &mut held[1..] {
        assert!(!closed_within(stream, Duration::from_millis(50)).await);
    }
    let id = hub.publish("through the cap", None).await;
    assert_eq!(receiver.recv().await.body, "through the cap");
    hub.until_delivered(id, 1).await;
    println!("a new client at the cap was served in {took:?}");
}

#[tokio::test]
async fn at_the_cap_with_every_connection_busy_a_newcomer_gets_503() {
    let hub = start_hub(|config| config.max_connections = 8).await;
    let mut streams = Vec::new();
    for _ in 0..8 {
        streams.push(event_stream(hub.addr()).await);
    }
    let answer = raw_request(
        hub.addr(),
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("--max-connections"), "{answer}");
    // Busy connections were not closed to make room.
    for stream in &mut streams {
        assert!(!closed_within(stream, Duration::from_millis(50)).await);
    }
}

#[tokio::test]
async fn a_message_answers_a_page_of_its_deliveries() {
    let hub = start_hub(|_| {}).await;
    let mut receiver = Receiver::start().await;
    hub.register(&receiver.address()).await;
    let id = hub.publish("again and again", None).await;
    receiver.recv().await;
    for _ in 0..249 {
        hub.hub().resend(id, None).unwrap();
    }
    let message = hub.until_delivered(id, 250).await;
    assert_eq!(message.deliveries().len(), 250);

    let get = |query: String| {
        let http = hub.http.clone();
        let url = format!("{}/api/v1/messages/{id}{query}", hub.url);
        async move {
            let response = http.get(url).send().await.unwrap();
            let status = response.status();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let slots = |page: &serde_json::Value| -> Vec<u64> {
        page["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["slot"].as_u64().unwrap())
            .collect()
    };
    let (status, first) = get(String::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(slots(&first), (0..100).collect::<Vec<_>>());
    assert_eq!(first["deliveries_total"], 250);
    assert_eq!(first["next_deliveries_after"], 99);
    assert_eq!(first["delivery_counts"]["delivered"], 250);

    let (_, second) = get("?deliveries_after=99&deliveries_limit=1000".into()).await;
    assert_eq!(slots(&second), (100..250).collect::<Vec<_>>());
    assert_eq!(second["next_deliveries_after"], serde_json::Value::Null);
    let (_, past) = get(format!("?deliveries_after={}", u64::MAX)).await;
    assert!(slots(&past).is_empty());

    for query in [
        "?deliveries_limit=0",
        "?deliveries_limit=1001",
        "?deliveries_after=-1",
    ] {
        let (status, body) = get(query.into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
    // The export still has every delivery.
    let exported = herald::workbench::ndjson::export(hub.hub());
    let line: serde_json::Value =
        serde_json::from_slice(exported.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["deliveries"].as_array().unwrap().len(), 250);
}
