//! Black-box tests over loopback: a real Herald on 127.0.0.1:0, real subscriber servers
//! started by the tests on port 0, real HTTP in between. One binary, one module per area.

/// Test helpers: starting a hub, subscriber servers, polling.
mod utils;

/// Every row of the seed wire-contract table, bad addresses, 404s and body limits.
mod seed_contract;

/// Fan-out: identical bytes, per-subscriber order, isolation, connection reuse, failures.
mod fanout;

/// Deregistration, keep-alive refresh and expiry, kicks.
mod keepalive;

/// Subscriber control: pause and resume, pin, expire now, kick and ban.
mod control;

/// The `herald` binary itself: flags, busy port, the listening line, signal shutdown.
mod binary;

/// Retries, Retry-After, 410, redirects, timeouts, suspension, resend, signatures.
mod reliability;

/// Retries that do not hold back later messages, strict order, several in flight.
mod flow;

/// Body limits, Host checks, tokens, target policy, loops, bounded shutdown.
mod safety;

/// Trace context and `--forward-header`: what of a publish's headers reaches deliveries.
mod forwarding;

/// The message log's budgets: bytes, records, what one subscriber answer may cost.
mod bounds;

/// The edge: cross-site requests, loops on every route, connection limits and timeouts,
/// one body limit, a listener that closes at stop.
mod edge;

/// Topics: publishing with one, subscribing to patterns, the API, events and metrics.
mod topics;

/// The subcommands: listen, publish, subscribers, messages, resend.
mod cli;

/// The durable store: restarts after a kill, retention, bad data directories, import.
mod store;

/// The console as a workbench, through the API: replay with edits.
mod workbench;

/// The JSON API, the event stream, the OpenAPI document, metrics and health.
mod api;

/// Hostile input against the newer surfaces: deep templates, empty tokens.
mod attacks;

/// The desktop console, driven through egui_kittest.
mod console;

/// Cluster mode: instances sharing a real nats-server's JetStream.
mod cluster;
