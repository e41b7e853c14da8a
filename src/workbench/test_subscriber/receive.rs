//! A test subscriber answering a request as its behaviour says, and reading its body: no
//! more than its limit, keeping a copy of only the first [`MAX_KEPT_BODY`] bytes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use tower_http::timeout::TimeoutError;

use super::{MAX_KEPT_BODY, Received, TestState, TestSubscriber, Wake};
use crate::wire::MESSAGE_ID_HEADER;

pub(super) async fn receive(
    State((subscriber, wake)): State<(Arc<TestSubscriber>, Wake)>,
    request: Request,
) -> Response {
    let n = subscriber.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let behaviour = subscriber.behaviour();
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let message_id = request
        .headers()
        .get(MESSAGE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let limit = subscriber.max_body;
    let (body, size) = match read_body(request.into_body(), behaviour.read_delay, limit).await {
        Ok(read) => read,
        Err(unread) => return unread.answer(limit),
    };
    let mut received = Received {
        at: SystemTime::now(),
        content_type,
        message_id,
        body,
        size,
        status: None,
    };
    if behaviour.hang {
        subscriber.record(received);
        wake();
        // Held until Herald gives up on it, or the subscriber is removed.
        subscriber.stop.cancelled().await;
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if !behaviour.delay.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(behaviour.delay) => {}
            () = subscriber.stop.cancelled() => {}
        }
    }
    let status = if behaviour.gone_after.is_some_and(|after| n > after) {
        // Gone for good: its keep-alive must not register it again.
        *subscriber.state.lock() = TestState::Failed(format!(
            "answered 410 Gone after {n} deliveries, and was unsubscribed"
        ));
        subscriber.stop.cancel();
        StatusCode::GONE
    } else if behaviour.fail_percent > 0
        && getrandom::u32().map_or(0, |r| r % 100) < u32::from(behaviour.fail_percent)
    {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::from_u16(behaviour.status).unwrap_or(StatusCode::NO_CONTENT)
    };
    received.status = Some(status.as_u16());
    subscriber.record(received);
    wake();
    status.into_response()
}

/// Why a body was not taken.
enum Unread {
    /// Declared or found larger than the limit.
    TooLarge,
    /// Stalled for longer than the header timeout.
    Stalled,
    /// Broken off, or otherwise unreadable.
    Broken(String),
}

impl Unread {
    fn answer(self, limit: usize) -> Response {
        match self {
            Self::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "Error: the request body is larger than this test subscriber's limit of \
                     {limit} bytes (the hub's --max-body)\n"
                ),
            ),
            Self::Stalled => (
                StatusCode::REQUEST_TIMEOUT,
                "Error: the request body stalled for longer than the hub's --header-timeout\n"
                    .to_owned(),
            ),
            Self::Broken(err) => (
                StatusCode::BAD_REQUEST,
                format!("Error: the request body did not arrive whole ({err})\n"),
            ),
        }
        .into_response()
    }
}

/// The first [`MAX_KEPT_BODY`] bytes of `body`, copied, and its whole size, waiting
/// `delay` between its chunks. Reads no more than `limit`: a body declared larger is not
/// read at all.
async fn read_body(
    mut body: Body,
    delay: Duration,
    limit: usize,
) -> Result<(Bytes, usize), Unread> {
    let declared = hyper::body::Body::size_hint(&body).lower();
    if declared > u64::try_from(limit).unwrap_or(u64::MAX) {
        return Err(Unread::TooLarge);
    }
    let mut kept = Vec::new();
    let mut size = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| {
            if anyhow::Chain::new(&err).any(|cause| cause.is::<TimeoutError>()) {
                Unread::Stalled
            } else {
                Unread::Broken(err.to_string())
            }
        })?;
        if let Ok(data) = frame.into_data() {
            size = size.saturating_add(data.len());
            if size > limit {
                return Err(Unread::TooLarge);
            }
            let room = MAX_KEPT_BODY - kept.len();
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
    // Exactly as long as it is: the kept list counts what it holds.
    Ok((Bytes::copy_from_slice(&kept), size))
}
