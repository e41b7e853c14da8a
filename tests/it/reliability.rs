use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use herald::hub::{
    DeliveryError, DeliveryState, HubEvent, Outcome, RemovalReason, SubscriberState,
};

use crate::utils::{Receiver, Reply, TestHub, eventually, hanging_receiver, start_hub};

/// A hub whose retries come quickly, so tests do not sit through the real schedule.
async fn quick_retries() -> TestHub {
    start_hub(|config| {
        config.retry_schedule.0 = vec![Duration::from_millis(50); 3];
    })
    .await
}

fn state_of(hub: &TestHub, id: u64) -> DeliveryState {
    hub.hub().message(id).unwrap().deliveries()[0].state.clone()
}

#[tokio::test]
async fn a_subscriber_that_fails_twice_then_succeeds_gets_one_delivery_in_three_attempts() {
    let hub = quick_retries().await;
    let mut receiver = Receiver::scripted(
        vec![Reply::status(503), Reply::status(500)],
        Reply::status(200),
    )
    .await;
    hub.register(&receiver.address()).await;
    let id = hub.publish("persist", None).await;
    for _ in 0..3 {
        assert_eq!(receiver.recv().await.body, "persist");
    }
    let message = hub.until_delivered(id, 1).await;
    let delivery = &message.deliveries()[0];
    let statuses: Vec<Option<u16>> = delivery
        .attempts
        .iter()
        .map(|a| match &a.outcome {
            Outcome::Delivered { status, .. } => Some(*status),
            Outcome::Failed(DeliveryError::Status { status, .. }) => Some(*status),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, [Some(503), Some(500), Some(200)]);
    assert_eq!(hub.hub().totals().delivered, 1);
    assert_eq!(hub.hub().totals().failed, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.drain().is_empty(), "delivered more than once");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let hub = quick_retries().await;
    let mut receiver = Receiver::scripted(
        vec![Reply::status(429).header("retry-after", "1")],
        Reply::status(200),
    )
    .await;
    hub.register(&receiver.address()).await;
    let id = hub.publish("later", None).await;
    let first = receiver.recv().await.at;
    let second = receiver.recv().await.at;
    // The schedule alone would retry after ~50 ms.
    assert!(
        second - first >= Duration::from_millis(950),
        "retried after {:?} despite Retry-After: 1",
        second - first
    );
    hub.until_delivered(id, 1).await;
}

#[tokio::test]
async fn retries_are_exhausted_then_the_message_fails_and_can_be_resent() {
    let hub = quick_retries().await;
    let mut receiver = Receiver::answering(axum::http::StatusCode::BAD_GATEWAY).await;
    hub.register(&receiver.address()).await;
    let id = hub.publish("doomed", None).await;
    for _ in 0..4 {
        receiver.recv().await;
    }
    let message = hub.until_failed(id, 1).await;
    assert_eq!(message.deliveries()[0].attempts.len(), 4);

    receiver.reply_with(Reply::status(204));
    assert_eq!(hub.hub().resend(id, None).unwrap(), 1);
    assert_eq!(receiver.recv().await.body, "doomed");
    eventually("the resend is delivered", || {
        message.summary().delivered == 1
    })
    .await;
    assert_eq!(
        message.deliveries().len(),
        2,
        "the resend is a second delivery"
    );
}

#[tokio::test]
async fn other_client_errors_are_final() {
    let hub = quick_retries().await;
    let mut receiver = Receiver::answering(axum::http::StatusCode::UNPROCESSABLE_ENTITY).await;
    hub.register(&receiver.address()).await;
    let id = hub.publish("bad", None).await;
    receiver.recv().await;
    let message = hub.until_failed(id, 1).await;
    assert_eq!(message.deliveries()[0].attempts.len(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.drain().is_empty(), "a 422 was retried");
}

#[tokio::test]
async fn gone_unsubscribes() {
    let hub = quick_retries().await;
    let mut receiver = Receiver::answering(axum::http::StatusCode::GONE).await;
    hub.register(&receiver.address()).await;
    hub.publish("bye", None).await;
    receiver.recv().await;
    let hub_ref = hub.hub();
    eventually("the subscriber is removed", || {
        hub_ref.subscriber_count() == 0
    })
    .await;
    let recorded = hub_ref.activity().iter().any(|a| {
        matches!(
            a.event,
            HubEvent::Removed {
                reason: RemovalReason::Gone,
                ..
            }
        )
    });
    assert!(recorded, "{:?}", hub_ref.activity());
    let id = hub.publish("after", None).await;
    assert!(hub_ref.message(id).unwrap().deliveries().is_empty());
}

#[tokio::test]
async fn redirects_are_recorded_not_followed() {
    let hub = quick_retries().await;
    let mut elsewhere = Receiver::start().await;
    let location = format!("http://{}/event", elsewhere.address());
    let mut receiver = Receiver::answering(axum::http::StatusCode::TEMPORARY_REDIRECT).await;
    receiver.reply_with(Reply::status(307).header("location", location.clone()));
    hub.register(&receiver.address()).await;
    let id = hub.publish("where?", None).await;
    receiver.recv().await;
    hub.until_failed(id, 1).await;
    assert_eq!(
        state_of(&hub, id),
        DeliveryState::Done(Outcome::Failed(DeliveryError::Redirect {
            status: 307,
            location
        }))
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(elsewhere.drain().is_empty(), "the redirect was followed");
}

#[tokio::test]
async fn a_hanging_subscriber_times_out_and_others_are_unaffected() {
    let hub = start_hub(|config| {
        config.retry_schedule.0.clear();
        config.delivery_timeout = Duration::from_millis(300);
    })
    .await;
    let (hanging, _held) = hanging_receiver().await;
    let mut fast = Receiver::start().await;
    hub.register(&hanging).await;
    hub.register(&fast.address()).await;
    let id = hub.publish("tick", None).await;
    assert_eq!(fast.recv().await.body, "tick");
    let message = hub.until_failed(id, 1).await;
    let timed_out = message.deliveries().into_iter().any(|d| {
        *d.subscriber == hanging
            && d.state
                == DeliveryState::Done(Outcome::Failed(DeliveryError::Timeout(
                    Duration::from_millis(300),
                )))
    });
    assert!(timed_out, "{:?}", message.deliveries());
}

#[tokio::test]
async fn repeated_failures_suspend_and_a_probe_resumes() {
    let hub = start_hub(|config| config.retry_schedule.0.clear()).await;
    let mut receiver = Receiver::answering(axum::http::StatusCode::SERVICE_UNAVAILABLE).await;
    let address = receiver.address();
    hub.register(&address).await;
    let hub_ref = hub.hub();
    let state = || {
        hub_ref
            .subscribers()
            .into_iter()
            .find(|s| *s.address == address)
            .map(|s| s.state)
    };
    for i in 0..5 {
        hub.publish(format!("m{i}"), None).await;
        receiver.recv().await;
    }
    eventually("the subscriber is suspended", || {
        state() == Some(SubscriberState::Suspended)
    })
    .await;

    // While suspended, deliveries wait and the subscriber is probed; once it answers,
    // the waiting message goes through and it resumes.
    receiver.reply_with(Reply::status(200));
    let id = hub.publish("waiting", None).await;
    assert_eq!(receiver.recv().await.body, "waiting");
    eventually("the subscriber resumes", || {
        state() == Some(SubscriberState::Active)
    })
    .await;
    hub.until_delivered(id, 1).await;
    let events: Vec<_> = hub_ref
        .activity()
        .into_iter()
        .filter_map(|a| match a.event {
            HubEvent::Suspended { .. } => Some("suspended"),
            HubEvent::Resumed { .. } => Some("resumed"),
            _ => None,
        })
        .collect();
    assert_eq!(events, ["suspended", "resumed"]);
}

#[tokio::test]
async fn re_registering_resumes_a_suspended_subscriber_at_once() {
    // Probes so far apart that only a re-registration can get the message through in time.
    let hub = start_hub(|config| {
        config.retry_schedule.0.clear();
        config.probe_backoff.0 = vec![Duration::from_secs(600)];
    })
    .await;
    let mut receiver = Receiver::answering(axum::http::StatusCode::SERVICE_UNAVAILABLE).await;
    let address = receiver.address();
    hub.register(&address).await;
    for i in 0..5 {
        hub.publish(format!("m{i}"), None).await;
        receiver.recv().await;
    }
    let hub_ref = hub.hub();
    eventually("the subscriber is suspended", || {
        hub_ref.subscribers()[0].state == SubscriberState::Suspended
    })
    .await;
    receiver.reply_with(Reply::status(200));
    let id = hub.publish("back", None).await;
    hub.register(&address).await;
    assert_eq!(hub_ref.subscribers()[0].state, SubscriberState::Active);
    assert_eq!(receiver.recv().await.body, "back");
    hub.until_delivered(id, 1).await;
}

/// Checks a Standard Webhooks signature the way a receiver would, independently of
/// Herald's own signing code.
fn verify(secret: &str, received: &crate::utils::Received) -> bool {
    let header = |name: &str| received.headers[name].to_str().unwrap().to_owned();
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let signed = format!(
        "{}.{}.{}",
        header("webhook-id"),
        header("webhook-timestamp"),
        String::from_utf8_lossy(&received.body)
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    header("webhook-signature").split(' ').any(|candidate| {
        candidate
            .strip_prefix("v1,")
            .and_then(|b64| STANDARD.decode(b64).ok())
            .is_some_and(|tag| hmac::verify(&key, signed.as_bytes(), &tag).is_ok())
    })
}

#[tokio::test]
async fn deliveries_are_signed_with_the_hub_or_the_subscriber_secret() {
    const HUB_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const OWN_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let hub = start_hub(|config| {
        config.signing_secret = Some(HUB_SECRET.parse().unwrap());
        config.retry_schedule.0 = vec![Duration::from_millis(50)];
    })
    .await;
    let mut plain = Receiver::scripted(vec![Reply::status(500)], Reply::status(200)).await;
    let mut own = Receiver::start().await;
    hub.register(&plain.address()).await;
    let encoded = OWN_SECRET.replace('+', "%2B");
    hub.register(&format!("{}&secret={encoded}", own.address()))
        .await;

    hub.publish(r#"{"event":"signed"}"#, Some("application/json"))
        .await;
    let first = plain.recv().await;
    let retry = plain.recv().await;
    let mine = own.recv().await;
    assert!(
        verify(HUB_SECRET, &first),
        "hub-signed delivery does not verify"
    );
    assert!(verify(HUB_SECRET, &retry));
    assert!(!verify(OWN_SECRET, &first));
    assert!(
        verify(OWN_SECRET, &mine),
        "own-secret delivery does not verify"
    );
    assert!(!verify(HUB_SECRET, &mine));
    assert_eq!(
        first.headers["webhook-id"], retry.headers["webhook-id"],
        "the id must be stable across retries"
    );
    assert_eq!(first.headers["webhook-id"], mine.headers["webhook-id"]);

    let (status, body) = hub
        .call(
            "POST",
            "/registerAndKeepAlive?address=localhost:9&secret=hunter2",
        )
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("whsec_"), "{body}");
}
