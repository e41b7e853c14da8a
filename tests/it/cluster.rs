//! Cluster mode against a real `nats-server` (Debian's, with JetStream) on a free loopback
//! port with a store of its own: instances in this process and, for `kill -9`, herald
//! processes.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::binary::{herald, listening_url};
use crate::utils::{PATIENCE, Receiver, TempDir, TestHub, eventually, start_hub};

/// A `nats-server -js` of the test's own.
pub(crate) struct Nats {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Nats {
    pub(crate) async fn start() -> Self {
        let dir = TempDir::new("nats");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Self::spawn(&dir, port).await;
        Self { child, port, dir }
    }

    async fn spawn(dir: &TempDir, port: u16) -> Child {
        let child = Command::new("nats-server")
            .args(["-js", "-sd", dir.arg(), "-a", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server is not installed: apt-get install nats-server (.ci/run does)");
        let deadline = Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        child
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops it as an operator would (SIGTERM), so that it writes what it holds: one killed
    /// loses the consumers' latest acknowledgements, and hands those messages out again.
    async fn stop(&mut self) {
        let pid = self.child.id().unwrap().to_string();
        let status = Command::new("kill").arg(&pid).status().await.unwrap();
        assert!(status.success());
        self.child.wait().await.unwrap();
    }

    async fn restart(&mut self) {
        self.child = Self::spawn(&self.dir, self.port).await;
    }
}

/// An instance in this process.
pub(crate) async fn member(nats: &Nats, name: &str) -> TestHub {
    member_with(nats, name, |_| {}).await
}

/// An instance in this process, its flags changed by `configure` too.
pub(crate) async fn member_with(
    nats: &Nats,
    name: &str,
    configure: impl FnOnce(&mut herald::Config),
) -> TestHub {
    let url = nats.url();
    let hub = start_hub(|config| {
        config.cluster = Some(url);
        config.instance_name = Some(name.to_owned());
        config.delivery_timeout = Duration::from_secs(1);
        configure(config);
    })
    .await;
    until_connected(&hub.http, &hub.url).await;
    hub
}

async fn cluster_view(http: &reqwest::Client, url: &str) -> Value {
    http.get(format!("{url}/api/v1/cluster"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn until_connected(http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + PATIENCE;
    while cluster_view(http, url).await["connected"] != true {
        assert!(Instant::now() < deadline, "{url} did not join the cluster");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `hub` lists `address`: the registration reached it through the bucket.
pub(crate) async fn until_listed(hub: &TestHub, address: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !hub.listed().await.iter().any(|a| a == address) {
        assert!(
            Instant::now() < deadline,
            "{} never listed {address}",
            hub.url
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Registers `address` at `hub` with strict order (one message under way at a time).
async fn register_ordered(hub: &TestHub, address: &str) {
    let path = format!("/registerAndKeepAlive?address={address}&ordered=true");
    let (status, _) = hub.call("POST", &path).await;
    assert_eq!(status, StatusCode::OK);
}

async fn publish(http: &reqwest::Client, url: &str, body: String) -> StatusCode {
    http.post(format!("{url}/sendMessage"))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn registered_at_one_instance_and_published_at_another_each_message_arrives_once_in_order() {
    let nats = Nats::start().await;
    let a = member(&nats, "a").await;
    let b = member(&nats, "b").await;
    let c = member(&nats, "c").await;
    let mut receiver = Receiver::start().await;
    register_ordered(&a, &receiver.address()).await;
    until_listed(&c, &receiver.address()).await;
    for i in 0..20 {
        assert_eq!(
            publish(&b.http, &b.url, format!("m{i}")).await,
            StatusCode::OK
        );
    }
    for i in 0..20 {
        assert_eq!(receiver.recv().await.body, format!("m{i}"));
    }
    // Whichever instance delivered, the others record it: the same log everywhere.
    let delivered = |hub: &TestHub| {
        hub.hub()
            .message(20)
            .is_some_and(|m| m.summary().delivered == 1)
    };
    eventually("every instance shows the last message delivered", || {
        [&a, &b, &c].into_iter().all(delivered)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.drain().is_empty(), "a message arrived twice");
    let view = cluster_view(&a.http, &a.url).await;
    let names: Vec<&str> = view["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c"], "{view}");
    let deliverer = &view["deliverers"][0];
    assert_eq!(deliverer["subscriber"], receiver.address(), "{view}");
    assert!(names.contains(&deliverer["instance"].as_str().unwrap()));
    // A deregistration at any instance reaches them all.
    c.deregister(&receiver.address()).await;
    eventually("the others drop it", || a.hub().subscriber_count() == 0).await;
}

#[tokio::test]
async fn while_nats_is_down_publishes_answer_503_and_after_it_is_back_they_are_delivered() {
    let mut nats = Nats::start().await;
    let a = member(&nats, "a").await;
    let mut receiver = Receiver::start().await;
    a.register(&receiver.address()).await;
    assert_eq!(
        publish(&a.http, &a.url, "before".into()).await,
        StatusCode::OK
    );
    assert_eq!(receiver.recv().await.body, "before");
    nats.stop().await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = publish(&a.http, &a.url, "while down".into()).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert_eq!(status, StatusCode::OK, "neither accepted nor refused");
        assert!(Instant::now() < deadline, "publishes were still accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let view = cluster_view(&a.http, &a.url).await;
    assert_eq!(view["connected"], false, "{view}");
    nats.restart().await;
    until_connected(&a.http, &a.url).await;
    assert_eq!(
        publish(&a.http, &a.url, "after".into()).await,
        StatusCode::OK
    );
    // Any "while down" publish that was answered 200 before NATS went was kept too; the
    // last message received is the one published after the restart.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let received = receiver.recv().await;
        if received.body == "after" {
            break;
        }
        assert_eq!(received.body, "while down");
        assert!(Instant::now() < deadline);
    }
}

#[tokio::test]
async fn a_plain_nats_client_feeds_http_subscribers_and_reads_heralds_messages() {
    let nats = Nats::start().await;
    let a = member(&nats, "a").await;
    let mut receiver = Receiver::start().await;
    let (status, _) = a
        .call_json(
            "POST",
            "/api/v1/subscribers",
            serde_json::json!({"address": receiver.address(), "topics": ["orders.*"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut reader = client.subscribe("herald.>").await.unwrap();
    // Published on the stream's subject by a client that knows nothing of Herald.
    client
        .publish("herald.orders.paid", "from nats".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let received = receiver.recv().await;
    assert_eq!(received.body, "from nats");
    let logged = a.hub().messages(None, 1);
    assert_eq!(logged[0].source.to_string(), "nats");
    assert_eq!(logged[0].topic.as_ref().unwrap().to_string(), "orders.paid");
    // And what Herald accepts, a NATS consumer reads, on the topic's subject.
    let (status, _) = a
        .call_json(
            "POST",
            "/api/v1/messages?topic=orders.shipped",
            serde_json::json!({"n": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let read = loop {
        let message = tokio::time::timeout(PATIENCE, reader.next())
            .await
            .expect("no message on herald.>")
            .unwrap();
        if message.subject.as_str() == "herald.orders.shipped" {
            break message;
        }
    };
    assert_eq!(&read.payload[..], br#"{"n":1}"#);
    assert_eq!(receiver.recv().await.body, r#"{"n":1}"#);
}

#[tokio::test]
async fn killing_the_delivering_instance_loses_no_acknowledged_message() {
    let nats = Nats::start().await;
    let mut instances = BTreeMap::new();
    for name in ["a", "b", "c"] {
        let mut child = herald()
            .args(["--headless", "--bind", "127.0.0.1:0", "--cluster"])
            .arg(nats.url())
            .args(["--instance-name", name, "--delivery-timeout", "1s"])
            .spawn()
            .unwrap();
        let url = listening_url(&mut child).await;
        instances.insert(name, (child, url));
    }
    let http = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    for (_, url) in instances.values() {
        until_connected(&http, url).await;
    }
    // Slow enough that a message is always in flight when the kill comes.
    let mut receiver = Receiver::start().await;
    receiver.reply_with(crate::utils::Reply::status(200).after(Duration::from_millis(20)));
    let a = &instances["a"].1;
    let registered = http
        .post(format!(
            "{a}/registerAndKeepAlive?address={}&ordered=true",
            receiver.address()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::OK);
    let total = 200;
    for i in 0..total {
        assert_eq!(publish(&http, a, format!("m{i}")).await, StatusCode::OK);
    }
    let mut got: Vec<String> = Vec::new();
    while got.len() < 30 {
        got.push(String::from_utf8(receiver.recv().await.body.to_vec()).unwrap());
    }
    // The instance that made the newest delivery, killed with SIGKILL mid-stream.
    let view = cluster_view(&http, a).await;
    let victim = view["deliverers"][0]["instance"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut child, _) = instances.remove(victim.as_str()).unwrap();
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let deadline = Instant::now() + PATIENCE * 3;
    while !(0..total).all(|i| got.contains(&format!("m{i}"))) {
        assert!(
            Instant::now() < deadline,
            "after killing {victim}, missing: {:?}",
            (0..total)
                .map(|i| format!("m{i}"))
                .filter(|m| !got.contains(m))
                .collect::<Vec<_>>()
        );
        let received = tokio::time::timeout(PATIENCE, receiver.recv()).await;
        if let Ok(received) = received {
            got.push(String::from_utf8(received.body.to_vec()).unwrap());
        }
    }
    let duplicates = got.len() - total;
    println!("killed {victim}: {total} delivered, {duplicates} twice");
    // Only a delivery cut off by the kill may come twice.
    assert!(duplicates <= 1, "{duplicates} duplicates: {got:?}");
    // Order held: each message's first arrival follows the one before it.
    let firsts: Vec<usize> = (0..total)
        .map(|i| got.iter().position(|m| *m == format!("m{i}")).unwrap())
        .collect();
    assert!(
        firsts.windows(2).all(|w| w[0] < w[1]),
        "out of order: {got:?}"
    );
}

#[tokio::test]
async fn a_hub_outside_a_cluster_says_so_and_bad_cluster_flags_are_refused() {
    let hub = start_hub(|_| {}).await;
    let (status, body) = hub.call("GET", "/api/v1/cluster").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("--cluster nats://HOST:PORT"), "{body}");
    for (args, expected) in [
        (
            &["--headless", "--cluster", "http://127.0.0.1:4222"][..],
            "not a NATS URL",
        ),
        (&["--headless", "--cluster", "nats://"], "nats://HOST:PORT"),
        (
            &[
                "--headless",
                "--cluster",
                "nats://127.0.0.1:4222",
                "--data-dir",
                "/tmp/x",
            ],
            "cannot be used with",
        ),
        (&["--headless", "--instance-name", "a"], "--cluster"),
        (
            &[
                "--headless",
                "--cluster",
                "nats://127.0.0.1:1",
                "--instance-name",
                "a b",
            ],
            "letters, digits",
        ),
    ] {
        let output = herald().args(args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn an_instance_stopped_mid_stream_finishes_or_hands_back_its_delivery_never_twice() {
    let nats = Nats::start().await;
    let a = member(&nats, "a").await;
    let b = member(&nats, "b").await;
    let mut receiver = Receiver::start().await;
    receiver.reply_with(crate::utils::Reply::status(200).after(Duration::from_millis(20)));
    register_ordered(&a, &receiver.address()).await;
    until_listed(&b, &receiver.address()).await;
    let total = 100;
    for i in 0..total {
        assert_eq!(
            publish(&a.http, &a.url, format!("m{i}")).await,
            StatusCode::OK
        );
    }
    let mut got = Vec::new();
    while got.len() < 20 {
        got.push(String::from_utf8(receiver.recv().await.body.to_vec()).unwrap());
    }
    b.shutdown().await;
    while got.len() < total {
        got.push(String::from_utf8(receiver.recv().await.body.to_vec()).unwrap());
    }
    let expected: Vec<String> = (0..total).map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected, "each once, in order");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.drain().is_empty(), "one came twice");
}

#[tokio::test]
async fn a_failing_subscriber_without_order_does_not_hold_back_the_next_messages() {
    let nats = Nats::start().await;
    let a = member(&nats, "a").await;
    let b = member(&nats, "b").await;
    // The first answer fails (a retry comes much later); every later one succeeds.
    let mut receiver = Receiver::scripted(
        vec![crate::utils::Reply::status(500)],
        crate::utils::Reply::status(200),
    )
    .await;
    a.register(&receiver.address()).await;
    until_listed(&b, &receiver.address()).await;
    for i in 0..5 {
        assert_eq!(
            publish(&b.http, &b.url, format!("m{i}")).await,
            StatusCode::OK
        );
    }
    let mut got = Vec::new();
    while got.len() < 5 {
        got.push(String::from_utf8(receiver.recv().await.body.to_vec()).unwrap());
    }
    // The one that failed is retried later; the four after it went out meanwhile, as
    // the seed's hub sends every new message at once.
    assert_eq!(got[0], "m0", "{got:?}");
    let mut rest = got[1..].to_vec();
    rest.sort();
    assert_eq!(rest, ["m1", "m2", "m3", "m4"], "{got:?}");
}

#[tokio::test]
async fn many_subscribers_without_order_get_each_message_exactly_once_from_three_instances() {
    let nats = Nats::start().await;
    let a = member(&nats, "a").await;
    let b = member(&nats, "b").await;
    let c = member(&nats, "c").await;
    let mut receivers = Vec::new();
    for _ in 0..20 {
        let receiver = Receiver::start().await;
        a.register(&receiver.address()).await;
        receivers.push(receiver);
    }
    for hub in [&b, &c] {
        eventually("every instance has all 20", || {
            hub.hub().subscriber_count() == 20
        })
        .await;
    }
    let total = 300;
    for i in 0..total {
        let hub = [&a, &b, &c][i % 3];
        assert_eq!(
            publish(&hub.http, &hub.url, format!("m{i}")).await,
            StatusCode::OK
        );
    }
    for receiver in &mut receivers {
        let mut got = Vec::new();
        while got.len() < total {
            got.push(String::from_utf8(receiver.recv().await.body.to_vec()).unwrap());
        }
        got.sort();
        got.dedup();
        assert_eq!(
            got.len(),
            total,
            "{} got a message twice",
            receiver.address()
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for receiver in &mut receivers {
        assert!(
            receiver.drain().is_empty(),
            "{} got more",
            receiver.address()
        );
    }
}

/// A clustered hub keeps nothing itself, so the log's own starred messages are listed
/// even past the log's budget (it once passed for a durable store and left them out).
#[tokio::test]
async fn a_starred_message_beyond_the_log_is_listed_by_an_instance() {
    let nats = Nats::start().await;
    let url = nats.url();
    let hub = start_hub(|config| {
        config.cluster = Some(url);
        config.instance_name = Some("starring".to_owned());
        config.log_capacity = 2;
    })
    .await;
    until_connected(&hub.http, &hub.url).await;
    let starred = hub.publish("keep me", None).await;
    eventually("the shared log brought it back", || {
        hub.hub().message(starred).is_some()
    })
    .await;
    let (status, answer) = hub
        .call_json(
            "PATCH",
            &format!("/api/v1/messages/{starred}"),
            serde_json::json!({"pinned": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mut last = 0;
    for n in 0..4 {
        last = hub.publish(format!("later {n}"), None).await;
    }
    eventually("the later ones are logged", || {
        hub.hub().message(last).is_some()
    })
    .await;
    let (_, page) = hub
        .call_json("GET", "/api/v1/messages?limit=100", serde_json::json!(null))
        .await;
    let ids: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert!(ids.contains(&starred), "{ids:?} leave out {starred}");
    assert_eq!(ids.len(), 3, "the two newest and the starred one: {ids:?}");
    hub.shutdown().await;
}
