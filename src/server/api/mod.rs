//! The JSON API under `/api/v1`: everything the console shows, for scripts, CI jobs and
//! dashboards. Routes and their OpenAPI description come from the same declarations
//! (`utoipa`), so the document served at `/api/v1/openapi.json` cannot drift.

mod bursts;
mod cluster;
mod events;
mod messages;
mod pins;
mod replay;
mod store;
mod subscribers;
mod test_subscribers;
mod topics;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, Dialect, ErrorBody, HttpError};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "A desktop event hub for microservices: subscribers register a callback \
                       address and keep it alive; every published message is POSTed to every \
                       live subscriber that wants it (subscribers may name topics). This is its JSON API; the original plain-text routes \
                       (/registerAndKeepAlive, /deregister, /sendMessage, /listSubscribers) \
                       are served beside it unchanged.",
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "subscribers", description = "Who receives messages"),
        (name = "messages", description = "What was published and what became of it"),
        (name = "topics", description = "What messages are about, and who they reach"),
        (name = "events", description = "The hub, live"),
        (name = "cluster", description = "Instances sharing a NATS JetStream (--cluster)"),
    )
)]
struct ApiDoc;

/// Documents the bearer token that a hub bound beyond loopback (or started with
/// `--token`) requires.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
    }
}

/// The `/api/v1` routes and their OpenAPI document.
pub(super) fn router() -> Router<AppState> {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(subscribers::list, subscribers::register))
        .routes(routes!(subscribers::kick, subscribers::control))
        .routes(routes!(subscribers::expire))
        .routes(routes!(subscribers::set_topics))
        .routes(routes!(messages::list, messages::publish, store::forget))
        .routes(routes!(store::import))
        .routes(routes!(store::get))
        .routes(routes!(messages::get, pins::update))
        .routes(routes!(pins::compare))
        .routes(routes!(messages::resend))
        .routes(routes!(replay::replay))
        .routes(routes!(bursts::start))
        .routes(routes!(bursts::get, bursts::cancel))
        .routes(routes!(test_subscribers::add, test_subscribers::list))
        .routes(routes!(
            test_subscribers::get,
            test_subscribers::update,
            test_subscribers::remove
        ))
        .routes(routes!(test_subscribers::received))
        .routes(routes!(topics::list))
        .routes(routes!(topics::reach))
        .routes(routes!(events::stream))
        .routes(routes!(cluster::get))
        .split_for_parts();
    let document: Arc<str> = openapi
        .to_pretty_json()
        .expect("the OpenAPI document always serialises")
        .into();
    router
        .route(
            "/api/v1/openapi.json",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    document.to_string(),
                )
            }),
        )
        .layer(axum::middleware::map_response(method_not_allowed_as_json))
}

/// `Json<T>` whose rejections come back as [`ApiError`]s, and whose body is held to
/// `--max-body` like every other (the router sets axum's `DefaultBodyLimit` to it).
struct ApiJson<T>(T);

impl<T> FromRequest<AppState> for ApiJson<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            // axum boxes the limit's error once more than its causes show, so its status
            // is what tells.
            Err(JsonRejection::BytesRejection(err))
                if err.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(HttpError::too_large(state.config.max_body).into())
            }
            Err(JsonRejection::BytesRejection(err)) => {
                Err(HttpError::unreadable_body(&err, &state.config).into())
            }
            Err(rejection) => Err(rejection.into()),
        }
    }
}

/// axum answers a known path with the wrong method with an empty 405; give it the JSON
/// body every `/api` error has, keeping its `Allow` header.
async fn method_not_allowed_as_json(response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let mut json = HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method; the Allow header lists those it takes",
    )
    .render(Dialect::Json);
    // axum adds `Allow` after this layer runs; keep any that is already there.
    if let Some(allow) = response.headers().get(header::ALLOW) {
        json.headers_mut().insert(header::ALLOW, allow.clone());
    }
    json
}

/// RFC 3339 with milliseconds, in UTC.
use crate::wire::{millis, rfc3339 as time};
