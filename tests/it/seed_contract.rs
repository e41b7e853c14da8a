use std::collections::HashSet;

use axum::http::StatusCode;
use herald::hub::MAX_ADDRESS_LEN;

use crate::utils::{Receiver, raw_request, start_hub};

const BAD: StatusCode = StatusCode::BAD_REQUEST;

#[tokio::test]
async fn register_refresh_and_list() {
    let hub = start_hub(|_| {}).await;
    let response = hub
        .http
        .post(format!(
            "{}/registerAndKeepAlive?address=localhost:9001",
            hub.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(response.text().await.unwrap(), "success");
    hub.register("localhost:9001").await;
    hub.register("[::1]:9002").await;

    let (status, body) = hub.call("GET", "/listSubscribers").await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<&str> = body.split_inclusive('\n').collect();
    assert_eq!(lines.len(), 2, "one line per subscriber: {body:?}");
    for (line, address) in lines.iter().zip(["[::1]:9002", "localhost:9001"]) {
        let (listed, time) = line
            .strip_suffix('\n')
            .unwrap()
            .split_once("  :  ")
            .unwrap_or_else(|| panic!("line {line:?} is not `A  :  T`"));
        assert_eq!(listed, address);
        humantime::parse_rfc3339(time)
            .unwrap_or_else(|err| panic!("{time:?} is not RFC 3339: {err}"));
    }
}

#[tokio::test]
async fn wrong_methods_get_the_seed_errors() {
    let hub = start_hub(|_| {}).await;
    let cases = [
        (
            "GET",
            "/registerAndKeepAlive?address=a:1",
            "Error: Only POST accepted",
        ),
        (
            "PUT",
            "/registerAndKeepAlive?address=a:1",
            "Error: Only POST accepted",
        ),
        (
            "DELETE",
            "/registerAndKeepAlive?address=a:1",
            "Error: Only POST accepted",
        ),
        (
            "POST",
            "/deregister?address=a:1",
            "Error: Only DELETE accepted",
        ),
        (
            "GET",
            "/deregister?address=a:1",
            "Error: Only DELETE accepted",
        ),
        ("GET", "/sendMessage", "Error: Only POST accepted"),
        ("PATCH", "/sendMessage", "Error: Only POST accepted"),
        ("POST", "/listSubscribers", "Error: Only GET accepted"),
        ("DELETE", "/listSubscribers", "Error: Only GET accepted"),
    ];
    for (method, path, expected) in cases {
        let (status, body) = hub.call(method, path).await;
        assert_eq!((status, body.as_str()), (BAD, expected), "{method} {path}");
    }
    assert!(
        hub.listed().await.is_empty(),
        "a wrong method registered something"
    );
}

#[tokio::test]
async fn missing_or_unparsable_addresses_get_the_seed_errors() {
    let hub = start_hub(|_| {}).await;
    for (method, route) in [("POST", "/registerAndKeepAlive"), ("DELETE", "/deregister")] {
        let cases = [
            (route.to_string(), "Error:Wrong input address."),
            (format!("{route}?address="), "Error:Wrong input address."),
            (format!("{route}?other=x:1"), "Error:Wrong input address."),
            (
                format!("{route}?address=%zz"),
                r#"Error:invalid URL escape "%zz""#,
            ),
            (
                format!("{route}?address=a:1;b"),
                "Error:invalid semicolon separator in query",
            ),
        ];
        for (path, expected) in cases {
            let (status, body) = hub.call(method, &path).await;
            assert_eq!((status, body.as_str()), (BAD, expected), "{method} {path}");
        }
    }
}

#[tokio::test]
async fn malformed_addresses_are_refused_and_not_registered() {
    let hub = start_hub(|_| {}).await;
    let too_long = format!("{}:80", "a".repeat(MAX_ADDRESS_LEN));
    let cases = [
        ("localhost", "has no port"),
        ("localhost:0", "from 1 to 65535"),
        ("localhost:99999", "from 1 to 65535"),
        (
            "localhost:8080/hook",
            "write the full URL, for example http://localhost:8080/hook",
        ),
        ("ftp://files:21", "only http:// and https://"),
        ("not%20a%20host:80", "whitespace"),
        ("::1:80", "needs brackets"),
        (too_long.as_str(), "at most 2048 bytes"),
    ];
    for (address, expected) in cases {
        let (status, body) = hub
            .call("POST", &format!("/registerAndKeepAlive?address={address}"))
            .await;
        assert_eq!(status, BAD, "{address}: {body}");
        assert!(
            body.starts_with("Error:Wrong input address. ") && body.contains(expected),
            "{address}: {body:?} does not say {expected:?}"
        );
    }
    assert!(hub.listed().await.is_empty());
    assert_eq!(hub.hub().subscriber_count(), 0);
}

#[tokio::test]
async fn deregister_succeeds_for_known_and_unknown_addresses() {
    let hub = start_hub(|_| {}).await;
    hub.register("localhost:9001").await;
    hub.deregister("localhost:9001").await;
    hub.deregister("localhost:9001").await;
    hub.deregister("never-registered:1").await;
    assert!(hub.listed().await.is_empty());
}

#[tokio::test]
async fn send_message_answers_success_with_no_subscribers() {
    let hub = start_hub(|_| {}).await;
    let id = hub.publish("hello", None).await;
    let record = hub.hub().message(id).expect("message logged");
    assert_eq!(record.body.as_ref(), b"hello");
    assert!(record.deliveries().is_empty());
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let hub = start_hub(|_| {}).await;
    for path in [
        "/",
        "/nope",
        "/registerAndKeepAlive/",
        "/sendmessage",
        "/event",
    ] {
        for method in ["GET", "POST"] {
            let (status, body) = hub.call(method, path).await;
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::NOT_FOUND, "404 page not found\n"),
                "{method} {path}"
            );
        }
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_and_not_published() {
    let hub = start_hub(|config| config.max_body = 1024).await;
    let mut receiver = Receiver::start().await;
    hub.register(&receiver.address()).await;

    let at_limit = hub.publish(vec![b'x'; 1024], None).await;
    assert_eq!(receiver.recv().await.body.len(), 1024);

    let response = hub
        .http
        .post(format!("{}/sendMessage", hub.url))
        .body(vec![b'x'; 1025])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("1024 bytes") && body.contains("--max-body"),
        "{body}"
    );

    // Without a Content-Length the limit is enforced while reading.
    let chunk = "y".repeat(512);
    let chunked: String = (0..8).map(|_| format!("200\r\n{chunk}\r\n")).collect();
    let response = raw_request(
        hub.addr(),
        format!(
            "POST /sendMessage HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");

    assert_eq!(hub.hub().totals().messages, 1);
    assert_eq!(hub.hub().messages(None, 10)[0].id, at_limit);
}

#[tokio::test]
async fn concurrent_registrations_are_all_listed_once() {
    let hub = start_hub(|_| {}).await;
    let addresses: Vec<String> = (0..100)
        .map(|i| format!("svc-{i}.local:{}", 8000 + i))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for address in addresses.clone() {
        let http = hub.http.clone();
        let url = hub.url.clone();
        tasks.spawn(async move {
            // Each twice, concurrently: a refresh must not create a second entry.
            for _ in 0..2 {
                let response = http
                    .post(format!("{url}/registerAndKeepAlive?address={address}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
            }
        });
    }
    tasks.join_all().await;
    let listed = hub.listed().await;
    assert_eq!(listed.len(), 100);
    let unique: HashSet<_> = listed.iter().cloned().collect();
    assert_eq!(unique, addresses.into_iter().collect::<HashSet<_>>());
}

#[tokio::test]
async fn clients_that_half_close_still_get_their_answer() {
    let hub = start_hub(|_| {}).await;
    // Request sent, sending side shut down at once (as `nc -N` does), answer read after.
    // The server must not take the shutdown for a hang-up: a few in two hundred were lost
    // that way before half-close was allowed, so many rounds make the check dependable.
    for round in 0..200 {
        let answer = raw_request(
            hub.addr(),
            b"POST /registerAndKeepAlive?address=localhost:9001 HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )
        .await;
        assert!(answer.ends_with("success"), "round {round}: {answer:?}");
    }
}
