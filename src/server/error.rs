//! The server's one error type, and the two dialects it is written in.
//!
//! Every failure is an [`HttpError`]: a status and a message, decided once per cause by the
//! `From` conversions below, so that handlers only write `?`. Who asked decides how it is
//! written: the seed's routes answer in the seed's plain text (`Error: ...`, with the exact
//! bodies its clients may match on), `/api` routes in JSON (`{"error": "..."}`). A handler
//! says which by its error type, [`SeedError`] or [`ApiError`]; answers given before any
//! route is chosen (the guard, the fallback) ask [`Dialect::of`].

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::LengthLimitError;
use serde::Serialize;
use tower_http::timeout::TimeoutError;
use utoipa::ToSchema;

use super::ServerConfig;
use crate::hub::{
    ControlError, PublishError, RegisterError, ReplayError, ResendError, SecretError, StoreError,
    TopicError,
};

pub(super) type Result<T, E = HttpError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// The seed's `text/plain` bodies.
    Seed,
    /// [`ErrorBody`].
    Json,
}

impl Dialect {
    /// The dialect of a request no route has claimed yet. The seed answered every path it
    /// did not know, so everything outside `/api/` keeps its text.
    pub(super) fn of(path: &str) -> Self {
        if path.starts_with("/api/") {
            Self::Json
        } else {
            Self::Seed
        }
    }
}

#[derive(Debug)]
pub(super) struct HttpError {
    status: StatusCode,
    /// What went wrong and what to change.
    message: String,
    /// The seed's exact body for this error, where it had one: its clients may compare it
    /// byte for byte.
    seed_body: Option<String>,
    /// Seconds to wait before trying again (`Retry-After`), for a refusal that passes.
    retry_after: Option<u32>,
}

impl HttpError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            seed_body: None,
            retry_after: None,
        }
    }

    /// An error only the seed's routes give, with its exact body (e.g.
    /// `Error:Wrong input address.`).
    pub(super) fn seed(status: StatusCode, body: String) -> Self {
        let message = body.trim_start_matches("Error:").trim_start().to_owned();
        Self::new(status, message).with_seed_body(body)
    }

    /// Answers seed clients with `body` instead of `Error: {message}`.
    pub(super) fn with_seed_body(mut self, body: impl Into<String>) -> Self {
        self.seed_body = Some(body.into());
        self
    }

    /// Tells the client when to try again: the refusal is for now, not for good.
    pub(super) fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub(super) fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than the hub's limit of {limit} bytes; \
                 send less or start Herald with a larger --max-body"
            ),
        )
    }

    /// Why a request body could not be read: larger than `--max-body` (413), stalled for
    /// longer than `--header-timeout` (408), or cut short (400). `err` is whatever reading
    /// it failed with; its causes tell which.
    pub(super) fn unreadable_body(
        err: &(dyn std::error::Error + 'static),
        config: &ServerConfig,
    ) -> Self {
        let causes = || anyhow::Chain::new(err);
        if causes().any(|cause| cause.is::<LengthLimitError>()) {
            return Self::too_large(config.max_body);
        }
        if causes().any(|cause| cause.is::<TimeoutError>()) {
            let timeout = humantime::format_duration(config.connections.header_timeout);
            return Self::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body stalled for longer than {timeout} (--header-timeout); \
                     nothing was done with it"
                ),
            );
        }
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("the request body did not arrive whole ({err}); nothing was done with it"),
        )
    }

    pub(super) fn render(self, dialect: Dialect) -> Response {
        let mut response = match dialect {
            Dialect::Seed => {
                let body = self
                    .seed_body
                    .unwrap_or_else(|| format!("Error: {}", self.message));
                text(self.status, body)
            }
            Dialect::Json => {
                let body = ErrorBody {
                    error: self.message,
                };
                (self.status, axum::Json(body)).into_response()
            }
        };
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // HTTP requires a 401 to name the scheme that would be accepted.
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"herald\""),
            );
        }
        response
    }
}

/// The JSON document every `/api` error has.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ErrorBody {
    /// What went wrong and what to change.
    error: String,
}

/// An error from a seed route: written as the seed wrote it.
#[derive(Debug)]
pub(super) struct SeedError(HttpError);

/// An error from an `/api` route: written as [`ErrorBody`].
#[derive(Debug)]
pub(super) struct ApiError(HttpError);

impl<E: Into<HttpError>> From<E> for SeedError {
    fn from(err: E) -> Self {
        Self(err.into())
    }
}

impl<E: Into<HttpError>> From<E> for ApiError {
    fn from(err: E) -> Self {
        Self(err.into())
    }
}

impl IntoResponse for SeedError {
    fn into_response(self) -> Response {
        self.0.render(Dialect::Seed)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.render(Dialect::Json)
    }
}

impl From<RegisterError> for HttpError {
    fn from(err: RegisterError) -> Self {
        match err {
            RegisterError::Address(_) | RegisterError::Target(_) => {
                let seed_body = format!("Error:Wrong input address. {err}");
                Self::new(StatusCode::BAD_REQUEST, err.to_string()).with_seed_body(seed_body)
            }
            RegisterError::MaxInFlight { .. } => {
                Self::new(StatusCode::BAD_REQUEST, err.to_string())
            }
            RegisterError::Topics(err) => err.into(),
            RegisterError::Banned { .. } => Self::new(StatusCode::FORBIDDEN, err.to_string()),
            RegisterError::Full { .. } | RegisterError::ShuttingDown => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
            }
        }
    }
}

impl From<ControlError> for HttpError {
    fn from(err: ControlError) -> Self {
        match err {
            ControlError::UnknownSubscriber(_) => Self::new(StatusCode::NOT_FOUND, err.to_string()),
            ControlError::Topics(err) => err.into(),
            ControlError::TooManyBans { .. } => Self::new(StatusCode::CONFLICT, err.to_string()),
        }
    }
}

impl From<TopicError> for HttpError {
    fn from(err: TopicError) -> Self {
        let status = match err {
            // The hub is full, not the request wrong: as for the subscriber limit.
            TopicError::HubFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
            TopicError::Topic { .. } | TopicError::Pattern { .. } | TopicError::TooMany { .. } => {
                StatusCode::BAD_REQUEST
            }
        };
        Self::new(status, err.to_string())
    }
}

impl From<SecretError> for HttpError {
    fn from(err: SecretError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, format!("bad secret: {err}"))
    }
}

/// A change the store did not keep (a star, a forget): answered as such, never as done.
impl From<StoreError> for HttpError {
    fn from(err: StoreError) -> Self {
        let status = match err {
            StoreError::Full { .. } => StatusCode::INSUFFICIENT_STORAGE,
            StoreError::Failed { .. } | StoreError::Closed => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, format!("not kept: {err}"))
    }
}

impl From<PublishError> for HttpError {
    fn from(err: PublishError) -> Self {
        let status = match err {
            // WebDAV's status for "no room to store it": the publisher learns that
            // retrying elsewhere or later is the cure, not fixing the request.
            PublishError::Store(StoreError::Full { .. })
            | PublishError::NotKept(StoreError::Full { .. }) => StatusCode::INSUFFICIENT_STORAGE,
            // Asked of a hub in a mode where it cannot be done: not worth retrying.
            PublishError::Relay(crate::hub::RelayError::Unsupported(_)) => StatusCode::CONFLICT,
            PublishError::ContentType(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, err.to_string())
    }
}

impl From<ReplayError> for HttpError {
    fn from(err: ReplayError) -> Self {
        match err {
            ReplayError::UnknownMessage(_) | ReplayError::UnknownSubscriber(_) => {
                Self::new(StatusCode::NOT_FOUND, err.to_string())
            }
            ReplayError::Publish(err) => err.into(),
        }
    }
}

impl From<ResendError> for HttpError {
    fn from(err: ResendError) -> Self {
        let status = match err {
            ResendError::UnknownMessage(_) | ResendError::UnknownSubscriber(_) => {
                StatusCode::NOT_FOUND
            }
            ResendError::TooManyDeliveries { .. } | ResendError::TooManyBytes { .. } => {
                StatusCode::CONFLICT
            }
            ResendError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, err.to_string())
    }
}

impl From<crate::workbench::diff::Busy> for HttpError {
    fn from(busy: crate::workbench::diff::Busy) -> Self {
        // A comparison runs for a fraction of a second: a second later there is room.
        Self::new(StatusCode::TOO_MANY_REQUESTS, busy.to_string()).retry_after(1)
    }
}

impl From<JsonRejection> for HttpError {
    fn from(rejection: JsonRejection) -> Self {
        // A body that does not fit the schema is a 400, the status the document promises,
        // rather than axum's 422.
        let status = match rejection.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            status => status,
        };
        let message = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                "send the request body as JSON with `Content-Type: application/json`".to_owned()
            }
            _ => rejection.body_text(),
        };
        Self::new(status, message)
    }
}

impl From<PathRejection> for HttpError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, rejection.body_text())
    }
}

impl From<QueryRejection> for HttpError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, rejection.body_text())
    }
}

/// A plain-text answer, as Go's `fmt.Fprint` on a `ResponseWriter` gives.
pub(super) fn text(status: StatusCode, body: impl Into<Body>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body.into(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::AddressError;

    async fn written(err: impl Into<HttpError>, dialect: Dialect) -> (StatusCode, String) {
        let response = err.into().render(dialect);
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn only_api_paths_are_json() {
        assert_eq!(Dialect::of("/api/v1/nope"), Dialect::Json);
        for path in ["/api", "/apis", "/", "/sendMessage"] {
            assert_eq!(Dialect::of(path), Dialect::Seed, "{path}");
        }
    }

    #[tokio::test]
    async fn one_refusal_in_each_dialect() {
        let refused = || RegisterError::Address(AddressError::Empty);
        let message = refused().to_string();
        assert_eq!(
            written(refused(), Dialect::Seed).await,
            (
                StatusCode::BAD_REQUEST,
                format!("Error:Wrong input address. {message}")
            )
        );
        assert_eq!(
            written(refused(), Dialect::Json).await,
            (
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": message }).to_string()
            )
        );
        let full = RegisterError::Full { max: 1 };
        let message = full.to_string();
        assert_eq!(
            written(full, Dialect::Seed).await,
            (StatusCode::SERVICE_UNAVAILABLE, format!("Error: {message}"))
        );
    }
}
