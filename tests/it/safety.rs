use std::time::{Duration, Instant};

use axum::http::StatusCode;
use herald::hub::{DeliveryError, DeliveryState, Outcome, RemovalReason};
use herald::{Config, Service};
use tokio::net::TcpListener;

use crate::utils::{Receiver, Reply, hanging_receiver, raw_request, start_hub};

#[tokio::test]
async fn bodies_over_the_limit_are_413_on_every_route() {
    let hub = start_hub(|config| config.max_body = 1024).await;
    let body = vec![b'x'; 2048];
    for (method, path) in [
        ("POST", "/registerAndKeepAlive?address=localhost:9"),
        ("DELETE", "/deregister?address=localhost:9"),
        ("POST", "/sendMessage"),
        ("GET", "/listSubscribers"),
        ("POST", "/no/such/route"),
    ] {
        let response = hub
            .http
            .request(method.parse().unwrap(), format!("{}{path}", hub.url))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "{method} {path}"
        );
        let text = response.text().await.unwrap();
        assert!(text.contains("--max-body"), "{text}");
    }
    assert!(hub.listed().await.is_empty());
    assert_eq!(hub.hub().totals().messages, 0);
}

#[tokio::test]
async fn a_foreign_host_is_refused_and_changes_nothing() {
    let hub = start_hub(|config| config.allow_hosts = vec!["herald.test".into()]).await;
    for (host, allowed) in [
        ("evil.example", false),
        ("evil.example:80", false),
        ("localhost.evil.example", false),
        ("localhost:1234", true),
        ("127.0.0.1", true),
        ("[::1]:3000", true),
        ("herald.test:3000", true),
    ] {
        let answer = raw_request(
            hub.addr(),
            format!(
                "POST /registerAndKeepAlive?address=victim.local:80 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        if allowed {
            assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
        } else {
            assert!(answer.starts_with("HTTP/1.1 400"), "{host}: {answer}");
            assert!(answer.contains("DNS rebinding"), "{answer}");
            assert!(
                !answer.to_lowercase().contains("access-control"),
                "{answer}"
            );
        }
    }
    let answer = raw_request(
        hub.addr(),
        b"POST /sendMessage HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(hub.hub().totals().messages, 0);
}

#[tokio::test]
async fn no_cors_headers_are_sent() {
    let hub = start_hub(|_| {}).await;
    let response = hub
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/sendMessage", hub.url))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .keys()
            .all(|name| !name.as_str().starts_with("access-control-")),
        "{:?}",
        response.headers()
    );
}

#[tokio::test]
async fn a_token_is_required_when_bound_beyond_loopback() {
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let service = Service::start_on(listener, &Config::default()).unwrap();
    let token = service.token().expect("a token is generated").to_owned();
    assert!(token.len() >= 32);
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/listSubscribers");
    for auth in [None, Some("Bearer wrong"), Some(token.as_str())] {
        let mut request = http.get(&url);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(response.headers().contains_key("www-authenticate"));
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("Authorization: Bearer")
        );
    }
    let response = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    service.shutdown().await;

    // On loopback no token is needed unless one is given.
    let loopback = start_hub(|_| {}).await;
    assert_eq!(
        loopback.call("GET", "/listSubscribers").await.0,
        StatusCode::OK
    );
    let guarded = start_hub(|config| config.token = Some("s3cret".into())).await;
    assert_eq!(
        guarded.call("GET", "/listSubscribers").await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn refused_targets_are_not_registered() {
    let hub = start_hub(|_| {}).await;
    let own = hub.addr().to_string();
    let own_localhost = format!("localhost:{}", hub.addr().port());
    for (address, why) in [
        ("169.254.169.254:80", "link-local"),
        ("http://2852039166/latest/meta-data", "link-local"),
        ("http://0xa9fea9fe/", "link-local"),
        ("[::ffff:169.254.169.254]:80", "link-local"),
        ("[fe80::1]:80", "link-local"),
        ("0.0.0.0:80", "unspecified"),
        ("224.0.0.1:80", "multicast"),
        ("255.255.255.255:80", "broadcast"),
        (own.as_str(), "own address"),
        (own_localhost.as_str(), "own address"),
    ] {
        let (status, body) = hub
            .call("POST", &format!("/registerAndKeepAlive?address={address}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{address}: {body}");
        assert!(body.contains(why), "{address}: {body}");
    }
    assert!(hub.listed().await.is_empty());
}

#[tokio::test]
async fn names_resolving_to_refused_addresses_are_blocked_at_delivery() {
    let hub = start_hub(|config| {
        config.deny_targets = vec!["127.0.0.0/8".parse().unwrap()];
        config.retry_schedule.0.clear();
    })
    .await;
    let receiver = Receiver::start().await;
    // A name passes registration; the address it resolves to is checked when connecting.
    let address = format!("localhost:{}", receiver.addr.port());
    hub.register(&address).await;
    let id = hub.publish("nope", None).await;
    let message = hub.until_failed(id, 1).await;
    let status = &message.deliveries()[0].state;
    assert!(
        matches!(status, DeliveryState::Done(Outcome::Failed(DeliveryError::Blocked(why))) if why.contains("--deny-target")),
        "{status:?}"
    );
    assert_eq!(receiver.connections(), 0);
}

#[tokio::test]
async fn the_hub_will_not_republish_its_own_deliveries() {
    let hub = start_hub(|_| {}).await;
    let instance = hub.hub().instance().to_owned();
    let response = hub
        .http
        .post(format!("{}/sendMessage", hub.url))
        .header("x-herald-instance", instance)
        .body("echo")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::LOOP_DETECTED);
    assert_eq!(hub.hub().totals().messages, 0);
}

#[tokio::test]
async fn shutdown_drains_queues_then_gives_up_on_hanging_subscribers() {
    let hub = start_hub(|config| config.delivery_timeout = Duration::from_secs(600)).await;
    let mut slow = Receiver::scripted(
        Vec::new(),
        Reply::status(200).after(Duration::from_millis(100)),
    )
    .await;
    let (hanging, _held) = hanging_receiver().await;
    hub.register(&slow.address()).await;
    hub.register(&hanging).await;
    let ids: Vec<u64> = futures_ids(&hub, 20).await;
    let inner = hub.hub().clone();
    let started = Instant::now();
    hub.shutdown().await;
    let took = started.elapsed();
    assert!(took <= Duration::from_secs(7), "shutdown took {took:?}");
    for id in ids {
        let deliveries = inner.message(id).unwrap().deliveries();
        for delivery in deliveries {
            let expected_ok = *delivery.subscriber == slow.address();
            match (&delivery.state, expected_ok) {
                (DeliveryState::Done(Outcome::Delivered { .. }), true) => {}
                (
                    DeliveryState::Done(Outcome::Failed(DeliveryError::Removed(
                        RemovalReason::Shutdown,
                    ))),
                    false,
                ) => {}
                (status, _) => panic!("{}: {status:?}", delivery.subscriber),
            }
        }
    }
    assert_eq!(slow.drain().len(), 20, "queued deliveries were not drained");
}

async fn futures_ids(hub: &crate::utils::TestHub, count: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in 0..count {
        ids.push(hub.publish(format!("m{i}"), None).await);
    }
    ids
}

#[tokio::test]
async fn a_large_fan_out_published_just_before_shutdown_is_delivered_in_full() {
    // Enough subscribers that the fan-out task, not the publishing thread, queues each
    // message. (That shutdown counts a fan-out not yet done is checked in `hub`'s unit
    // tests, where the task can be held back.)
    let hub = start_hub(|_| {}).await;
    let mut receiver = Receiver::scripted(
        Vec::new(),
        Reply::status(200).after(Duration::from_millis(20)),
    )
    .await;
    for i in 0..300 {
        hub.register(&format!("http://{}/event/{i}", receiver.address()))
            .await;
    }
    let ids = futures_ids(&hub, 3).await;
    let inner = hub.hub().clone();
    hub.shutdown().await;
    for id in ids {
        let deliveries = inner.message(id).unwrap().deliveries();
        assert_eq!(deliveries.len(), 300, "message {id} was not fanned out");
        for delivery in deliveries {
            assert!(
                matches!(
                    delivery.state,
                    DeliveryState::Done(Outcome::Delivered { .. })
                ),
                "{}: {:?}",
                delivery.subscriber,
                delivery.state
            );
        }
    }
    assert_eq!(receiver.drain().len(), 900);
}

#[tokio::test]
async fn passwords_in_addresses_are_never_shown() {
    let hub = start_hub(|_| {}).await;
    let mut receiver = Receiver::start().await;
    let registered = format!("http://user:s3cret@{}/event", receiver.address());
    let shown = format!("http://user:***@{}/event", receiver.address());
    let (status, _) = hub
        .call(
            "POST",
            &format!(
                "/registerAndKeepAlive?address={}",
                registered.replace(':', "%3A").replace('@', "%40")
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = hub.publish("for the basic-auth service", None).await;
    let received = receiver.recv().await;
    assert!(
        received.headers.contains_key("authorization"),
        "the password is still used to deliver"
    );
    hub.until_delivered(id, 1).await;
    let mut events = hub.hub().events();
    hub.register(&registered.replace(':', "%3A").replace('@', "%40"))
        .await;
    let refreshed = tokio::time::timeout(crate::utils::PATIENCE, events.recv())
        .await
        .unwrap()
        .unwrap();
    let views = [
        hub.call("GET", "/listSubscribers").await.1,
        hub.call("GET", "/api/v1/subscribers").await.1,
        hub.call("GET", &format!("/api/v1/messages/{id}")).await.1,
        format!("{:?}", hub.hub().subscribers()),
        format!("{:?}", hub.hub().activity()),
        format!("{refreshed:?}"),
    ];
    for view in &views {
        assert!(!view.contains("s3cret"), "the password shows in {view}");
        assert!(
            view.contains("user:***@"),
            "the subscriber is missing from {view}"
        );
    }
    // What listings show is enough to act on the subscriber.
    let encoded: String = shown
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    let (status, body) = hub
        .call("DELETE", &format!("/api/v1/subscribers/{encoded}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(hub.hub().subscriber_count(), 0);
}

/// A name other than localhost that /etc/hosts gives an IPv4 loopback address (the
/// machine's own name, usually), and that address.
fn loopback_alias() -> (String, std::net::IpAddr) {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    hosts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('#').next()?.split_whitespace();
            let ip: std::net::IpAddr = fields.next()?.parse().ok()?;
            (ip.is_ipv4() && ip.is_loopback())
                .then(|| fields.map(move |name| (name.to_owned(), ip)))
        })
        .flatten()
        .find(|(name, _)| !name.to_ascii_lowercase().contains("localhost"))
        .expect("this test needs /etc/hosts to give a name other than localhost a loopback address")
}

#[tokio::test]
async fn a_loop_through_a_host_alias_is_refused_when_connecting() {
    let (alias, ip) = loopback_alias();
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = Config {
        allow_hosts: vec![alias.clone()],
        retry_schedule: herald::config::RetrySchedule(Vec::new()),
        ..Config::default()
    };
    let service = Service::start_on(listener, &config).unwrap();
    let hub = service.hub().clone();
    // The alias passes registration, which sees only a name; the hub listens behind it.
    let address = format!("http://{alias}:{port}/api/v1/messages/1/resend");
    hub.subscribe(&address).unwrap();
    let id = hub
        .publish(
            herald::hub::Draft::new("around and around"),
            herald::hub::Source::Console,
        )
        .unwrap()
        .id()
        .unwrap();
    crate::utils::eventually("the delivery to finish", || {
        hub.message(id).unwrap().summary().pending == 0
    })
    .await;
    let deliveries = hub.message(id).unwrap().deliveries();
    assert_eq!(
        deliveries.len(),
        1,
        "the message was resent: {deliveries:?}"
    );
    let DeliveryState::Done(Outcome::Failed(DeliveryError::Blocked(why))) = &deliveries[0].state
    else {
        panic!("{:?}", deliveries[0].state);
    };
    assert!(why.contains("this hub's own address"), "{why}");
    assert_eq!(hub.totals().messages, 1);
    service.shutdown().await;
}
