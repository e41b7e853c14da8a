//! The JSON API as the subcommands use it, with errors that say what to do.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;

use super::HubArgs;

/// The longest any one call to the hub may take (the event stream excepted): a hub that
/// accepts a connection and never answers must not hang a terminal.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A running hub, reached over HTTP.
#[derive(Debug, Clone)]
pub struct HubClient {
    base: url::Url,
    http: reqwest::Client,
    token: Option<String>,
}

impl HubClient {
    pub fn new(args: &HubArgs) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("herald-cli/", env!("CARGO_PKG_VERSION")))
            // A hub on this machine must not be reached through a desktop's HTTP_PROXY.
            .no_proxy()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()?;
        Ok(Self {
            base: args.hub.clone(),
            http,
            token: args.token.clone(),
        })
    }

    pub fn url(&self) -> &url::Url {
        &self.base
    }

    /// `path` (with its query) on the hub.
    fn at(&self, path: &str) -> anyhow::Result<url::Url> {
        self.base
            .join(path)
            .with_context(|| format!("{path} does not make a URL with {}", self.base))
    }

    /// Sends a request and returns the answer if it is a success; otherwise an error with
    /// the hub's own words, or, when nothing answers, what to check.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Response> {
        let mut request = self
            .request(method, path)?
            .headers(headers)
            .timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.map_err(|err| self.unreachable(&err))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let said = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        if status == StatusCode::UNAUTHORIZED {
            bail!(
                "the hub at {} refused: {said} (give --token or HERALD_TOKEN)",
                self.base
            );
        }
        bail!("the hub at {} answered {status}: {said}", self.base)
    }

    /// The event stream: like [`HubClient::send`], with no time limit.
    pub async fn stream(&self, path: &str) -> anyhow::Result<Response> {
        let response = self
            .request(Method::GET, path)?
            .send()
            .await
            .map_err(|err| self.unreachable(&err))?;
        if !response.status().is_success() {
            bail!("the hub at {} answered {}", self.base, response.status());
        }
        Ok(response)
    }

    /// A request to `path` on the hub, with the token when there is one.
    fn request(&self, method: Method, path: &str) -> anyhow::Result<reqwest::RequestBuilder> {
        let mut request = self.http.request(method, self.at(path)?);
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        Ok(request)
    }

    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut headers = HeaderMap::new();
        let body = match body {
            Some(body) => {
                headers.insert(CONTENT_TYPE, "application/json".parse()?);
                Some(serde_json::to_vec(body)?)
            }
            None => None,
        };
        let response = self.send(method, path, headers, body).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let text = response.text().await?;
        serde_json::from_str(&text).map_err(|err| {
            anyhow!("the hub answered something that is not JSON ({err}): {text:.200}")
        })
    }

    fn unreachable(&self, err: &reqwest::Error) -> anyhow::Error {
        let cause = crate::delivery::root_cause(err);
        if err.is_builder() {
            return anyhow!(
                "cannot make a request to {}: {cause} (check --hub and --token)",
                self.base
            );
        }
        if err.is_timeout() {
            return anyhow!(
                "the hub at {} did not answer within {REQUEST_TIMEOUT:?}",
                self.base
            );
        }
        anyhow!(
            "no hub answers at {} ({cause}); start one with `herald` or `herald --headless`, or give --hub",
            self.base
        )
    }
}

/// `text` made safe for a URL path segment.
pub fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
