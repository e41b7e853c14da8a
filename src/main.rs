use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use herald::Config;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if !config.headless {
        eprintln!("herald: the desktop console is not built yet; run `herald --headless`");
        return ExitCode::from(2);
    }
    match herald::headless::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("herald: {err:#}");
            ExitCode::FAILURE
        }
    }
}
