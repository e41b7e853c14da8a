//! The routes of the Go design Herald grew from, byte-compatible so its clients work
//! unchanged: same paths, same status codes, same plain-text bodies.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::any;

use super::AppState;
use super::error::{HttpError, Result, SeedError, text};
use super::publish::publish;
use super::query::{first, parse_query};
use crate::hub::{MAX_IN_FLIGHT, Pattern, RemovalReason, Secret, Subscription};
use crate::wire::{MESSAGE_ID_HEADER, SUBSCRIBERS_HEADER};

pub(super) fn router() -> Router<AppState> {
    // `any`, not `post`/`get`: the seed answers a wrong method with 400 and its own text,
    // where a method router would answer 405.
    Router::new()
        .route("/registerAndKeepAlive", any(register_and_keep_alive))
        .route("/deregister", any(deregister))
        .route("/sendMessage", any(send_message))
        .route("/listSubscribers", any(list_subscribers))
}

fn success() -> Response {
    text(StatusCode::OK, "success")
}

type SeedResult = Result<Response, SeedError>;

/// Refuses any other method with the seed's 400 and text.
fn only(method: Method, request: &Request) -> Result<()> {
    if *request.method() == method {
        return Ok(());
    }
    Err(HttpError::seed(
        StatusCode::BAD_REQUEST,
        format!("Error: Only {method} accepted"),
    ))
}

/// The query's pairs, and its `address`, as the seed read them.
fn address(request: &Request) -> Result<(String, Vec<(String, String)>)> {
    let pairs = parse_query(request.uri().query().unwrap_or(""))
        .map_err(|err| HttpError::seed(StatusCode::BAD_REQUEST, format!("Error:{err}")))?;
    match first(&pairs, "address") {
        "" => Err(HttpError::seed(
            StatusCode::BAD_REQUEST,
            "Error:Wrong input address.".to_owned(),
        )),
        address => Ok((address.to_owned(), pairs)),
    }
}

async fn register_and_keep_alive(State(state): State<AppState>, request: Request) -> SeedResult {
    only(Method::POST, &request)?;
    let (address, query) = address(&request)?;
    // Herald's addition: `&secret=whsec_...` signs this subscriber's deliveries.
    let secret = match first(&query, "secret") {
        "" => None,
        text => Some(text.parse::<Secret>()?),
    };
    // Also opt-in: `&ordered=true` (a retrying delivery holds back the later ones) and
    // `&max_in_flight=N` (up to N deliveries at once).
    let ordered = match first(&query, "ordered") {
        "" => None,
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        other => {
            let message = format!("ordered must be true or false, not {other:?}");
            return Err(HttpError::new(StatusCode::BAD_REQUEST, message).into());
        }
    };
    let max_in_flight = match first(&query, "max_in_flight") {
        "" => None,
        text => Some(text.parse::<u32>().map_err(|_| {
            let message =
                format!("max_in_flight must be a number from 1 to {MAX_IN_FLIGHT}, not {text:?}");
            HttpError::new(StatusCode::BAD_REQUEST, message)
        })?),
    };
    // `&topics=orders.*,payments.%3E`: comma-separated patterns, replacing those it had
    // (an empty value: every message again). Left out, a keep-alive keeps its patterns.
    let topics = match query
        .iter()
        .find(|(key, _)| key == "topics")
        .map(|(_, v)| v.as_str())
    {
        None => None,
        Some("") => Some(Vec::new()),
        Some(list) => {
            let texts: Vec<&str> = list.split(',').map(str::trim).collect();
            Some(Pattern::parse_all(&texts)?)
        }
    };
    let subscription = Subscription {
        secret,
        ordered,
        max_in_flight,
        topics,
        ..Subscription::new(&address)
    };
    state.hub.subscribe(subscription)?;
    Ok(success())
}

async fn deregister(State(state): State<AppState>, request: Request) -> SeedResult {
    only(Method::DELETE, &request)?;
    let (address, _) = address(&request)?;
    // Unknown addresses are fine: the seed answered "success" for them too.
    state.hub.remove(&address, RemovalReason::Deregistered);
    Ok(success())
}

async fn send_message(State(state): State<AppState>, request: Request) -> SeedResult {
    only(Method::POST, &request)?;
    let published = publish(&state, request).await?;
    let mut response = success();
    let headers = response.headers_mut();
    headers.insert(MESSAGE_ID_HEADER, published.id.into());
    headers.insert(SUBSCRIBERS_HEADER, published.subscribers.into());
    Ok(response)
}

async fn list_subscribers(State(state): State<AppState>, request: Request) -> SeedResult {
    only(Method::GET, &request)?;
    let mut body = String::new();
    for subscriber in state.hub.subscribers() {
        // Go's `Fprintln(w, a, " : ", t)` puts a space between operands: "A  :  T\n".
        let seen = humantime::format_rfc3339_seconds(subscriber.last_seen);
        body.push_str(&format!("{}  :  {seen}\n", subscriber.address));
    }
    Ok(text(StatusCode::OK, body))
}
