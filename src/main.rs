use std::io::IsTerminal as _;
use std::process::ExitCode;

use herald::cli::Herald;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let (Herald { command, config }, given) =
        herald::config::parse_noting_given::<Herald, _, _>(std::env::args_os());
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Some(command) = command {
        return herald::cli::run(command).unwrap_or_else(|err| {
            eprintln!("herald: {err:#}");
            ExitCode::FAILURE
        });
    }
    herald::service::raise_open_file_limit();
    let result = if config.headless {
        herald::headless::run(config)
    } else {
        herald::gui::run(config, given)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("herald: {err:#}");
            ExitCode::FAILURE
        }
    }
}
