//! Herald from the terminal: subcommands of the one binary that talk to a running hub
//! over its JSON API, never to its internals (so they work as well against a hub on
//! another machine as against the window beside them).
//!
//! - `listen`: a receiver in the terminal, registered and kept alive with a hub.
//! - `publish`: one message, or a burst of them.
//! - `subscribers`, `messages`, `resend`: the API, readable.
//! - `check`: a service's webhook endpoint against real-world delivery (no hub needed).
//! - `completions`, `man`: generated from the same clap definitions as the flags.

mod check;
mod client;
mod listen;
mod publish;
mod read;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;

pub use check::CheckArgs;
pub use client::HubClient;
pub use listen::ListenArgs;
pub use publish::PublishArgs;
pub use read::{MessagesArgs, ResendArgs};

/// Herald: a desktop event hub for microservices. Services register a callback address and
/// keep it alive; every message published to the hub is POSTed to every live subscriber.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "herald",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Herald {
    /// Without one, the hub itself (the window, or --headless).
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Receive deliveries in the terminal: serves a receiver, registers it with a running
    /// hub, keeps it alive, prints each delivery, and deregisters on Ctrl-C.
    Listen(ListenArgs),
    /// Publish a message to a running hub, and say whom it reached.
    Publish(PublishArgs),
    /// List a running hub's subscribers.
    Subscribers(ReadArgs),
    /// List a running hub's messages, or follow what happens in it (--follow).
    Messages(MessagesArgs),
    /// Deliver a logged message again, to all or one subscriber.
    Resend(ResendArgs),
    /// Test a service's webhook endpoint against real-world delivery: a normal event,
    /// forged, stale and unsigned ones (with --secret), a repeated id, an oversized body,
    /// 100 at once, the timeout. Exits with the number of failures.
    Check(CheckArgs),
    /// Print a shell completion script: `herald completions bash > /etc/bash_completion.d/herald`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `herald man > herald.1 && man ./herald.1`.
    Man,
}

/// Which hub a subcommand talks to.
#[derive(Debug, Clone, Args)]
pub struct HubArgs {
    /// The running hub's URL.
    #[arg(
        long,
        env = "HERALD_HUB",
        default_value = "http://127.0.0.1:3000",
        value_name = "URL",
        value_parser = hub_url
    )]
    pub hub: url::Url,
    /// Its bearer token, when it asks for one (bound beyond loopback, or --token).
    #[arg(
        long,
        env = "HERALD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

fn hub_url(text: &str) -> Result<url::Url, String> {
    match url::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
        _ => Err(format!(
            "{text:?} is not a hub URL; give one like http://127.0.0.1:3000"
        )),
    }
}

/// For subcommands that only read.
#[derive(Debug, Clone, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub hub: HubArgs,
    /// Print the API's JSON as it is, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Runs a subcommand to its end: its exit status, or why it could not run.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Completions { shell } => {
            let mut cli = <Herald as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cli, "herald", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man => {
            let cli = <Herald as clap::CommandFactory>::command();
            clap_mangen::Man::new(cli).render(&mut std::io::stdout())?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            Command::Listen(args) => listen::run(args).await,
            Command::Publish(args) => publish::run(args).await,
            Command::Subscribers(args) => read::subscribers(args).await,
            Command::Messages(args) => read::messages(args).await,
            Command::Resend(args) => read::resend(args).await,
            Command::Check(args) => check::run(args).await,
            Command::Completions { .. } | Command::Man => unreachable!("handled above"),
        }
    })
}
