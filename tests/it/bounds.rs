use herald::hub::{DeliveryError, DeliveryState, Outcome};

use crate::utils::{Receiver, Reply, start_hub};

#[tokio::test]
async fn the_log_stays_within_its_byte_budget_whatever_is_published() {
    let hub = start_hub(|config| {
        config.log_max_bytes = 8 * 1024 * 1024;
        config.max_body = 2 * 1024 * 1024;
    })
    .await;
    let receiver = Receiver::start().await;
    hub.register(&receiver.address()).await;
    let mib = vec![b'x'; 1024 * 1024];
    let mut last = 0;
    for _ in 0..20 {
        last = hub.publish(mib.clone(), None).await;
        assert!(
            hub.hub().logged_bytes() <= 8 * 1024 * 1024,
            "{} bytes logged",
            hub.hub().logged_bytes()
        );
    }
    let logged = hub.hub().logged_messages();
    assert!((1..8).contains(&logged), "{logged} messages of 1 MiB kept");
    assert!(hub.hub().message(last).is_some(), "the newest is kept");
    let metrics = hub.call("GET", "/metrics").await.1;
    let bytes: usize = metrics
        .lines()
        .find_map(|line| line.strip_prefix("herald_log_bytes "))
        .expect("herald_log_bytes in /metrics")
        .parse()
        .unwrap();
    assert!(bytes <= 8 * 1024 * 1024, "{bytes}");
}

#[tokio::test]
async fn a_subscriber_cannot_make_its_records_large() {
    let hub = start_hub(|_| {}).await;
    let huge = format!("http://elsewhere.example/{}", "a".repeat(200_000));
    let receiver =
        Receiver::scripted(Vec::new(), Reply::status(302).header("location", huge)).await;
    hub.register(&receiver.address()).await;
    let id = hub.publish("follow me", None).await;
    let message = hub.until_failed(id, 1).await;
    let DeliveryState::Done(Outcome::Failed(DeliveryError::Redirect { location, .. })) =
        &message.deliveries()[0].state
    else {
        panic!("{:?}", message.deliveries()[0].state);
    };
    assert!(
        location.len() <= 2 * 1024 + 16,
        "{} bytes kept",
        location.len()
    );
    assert!(
        location.starts_with("http://elsewhere.example/aaa"),
        "{location}"
    );
    // The record is what the budget counts: far less than the 200 KB answer.
    assert!(
        hub.hub().logged_bytes() < 50_000,
        "{}",
        hub.hub().logged_bytes()
    );
}
