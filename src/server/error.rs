//! One error type for the whole server. Seed routes and other plain paths get the seed's
//! plain-text `Error: ...` body; `/api` paths get JSON `{"error": "..."}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone)]
pub(super) struct HttpError {
    pub(super) status: StatusCode,
    pub(super) message: String,
    /// The exact body the Go design gave for this error, where it had one.
    seed_body: Option<String>,
    /// For 401: tells the client which scheme to use.
    pub(super) www_authenticate: bool,
}

impl HttpError {
    pub(super) fn new(status: StatusCode, message: String) -> Self {
        Self {
            status,
            message,
            seed_body: None,
            www_authenticate: false,
        }
    }

    /// An error the seed also gave, with its exact body (e.g. `Error:Wrong input address.`).
    pub(super) fn seed(status: StatusCode, body: String) -> Self {
        let message = body.trim_start_matches("Error:").trim_start().to_owned();
        Self {
            seed_body: Some(body),
            ..Self::new(status, message)
        }
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

    /// Renders for the route at `path`: JSON under `/api/`, the seed's text elsewhere.
    pub(super) fn render(self, path: &str) -> Response {
        let mut response = if path.starts_with("/api/") {
            (self.status, Json(json!({ "error": self.message }))).into_response()
        } else {
            let body = self
                .seed_body
                .unwrap_or_else(|| format!("Error: {}", self.message));
            super::seed::text(self.status, body)
        };
        if self.www_authenticate {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"herald\""),
            );
        }
        response
    }
}

/// Outside `/api`, errors render as the seed's plain text.
impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        self.render("/")
    }
}
