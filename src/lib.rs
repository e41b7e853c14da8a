//! Herald: a desktop event hub for people who build microservices.
//!
//! Microservices register a callback address and keep it alive; every message published
//! to the hub is POSTed to every live subscriber. The HTTP routes stay wire-compatible with
//! the small Go design Herald grew from.
//!
//! # Layout
//! - [`hub`]: the domain: subscribers, keep-alive expiry, the message log, delivery
//!   outcomes. No HTTP framework or GUI in it.
//! - [`delivery`]: fan-out: one worker and one bounded queue per subscriber, one shared
//!   HTTP client.
//! - [`server`]: the axum router (seed-compatible routes) and serving it.
//! - [`edge`]: serving any router with bounds no client can get past (timeouts, a cap
//!   on connections): the hub's listener and each test subscriber's.
//! - [`service`]: hub + server + workers + reaper, started and stopped as one.
//! - [`gui`]: the desktop console (eframe/egui) over the same hub.
//! - [`config`]: the command line.
//! - [`cli`]: the subcommands that talk to a running hub (`listen`, `publish`, ...).
//! - [`headless`]: `herald --headless`.
//! - [`values`]: the values settings are made of (durations, sizes, retention...),
//!   parsed; a leaf that every layer may import.
//! - [`wire`]: header names and ids that clients and receivers depend on.
//! - [`workbench`]: bursts, test subscribers, templates, diffs and NDJSON export/import,
//!   shared by the console and the API.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod edge;
pub mod gui;
pub mod headless;
pub mod hub;
pub mod server;
pub mod service;
pub mod store;
pub mod values;
pub mod wire;
pub mod workbench;

pub use config::Config;
pub use hub::Hub;
pub use service::Service;
