//! The workbench: what a developer tries a service with, shared by the console and the
//! JSON API and knowing neither. Bursts of templated messages, programmable test
//! subscribers, payload templates, payload diffs, and the log as NDJSON.
//!
//! - [`burst`]: `Bursts`, N messages from a template at a rate, as tasks on the runtime.
//! - [`template`]: payload templates (`minijinja` on a budget), rendered for bursts on a
//!   thread of their own at the lowest priority (`render`).
//! - [`diff`]: two payloads compared line by line.
//! - [`test_subscriber`]: `TestSubscribers`, loopback servers that answer as told.
//! - [`ndjson`]: the log exported and imported one message a line.

pub mod burst;
pub mod diff;
pub mod ndjson;
mod render;
pub mod template;
pub mod test_subscriber;

pub use test_subscriber::{
    Behaviour, BehaviourError, MAX_TEST_SUBSCRIBERS, Received, StartFailure, TestState,
    TestSubscriber, TestSubscribers,
};
