//! `herald --headless`: the hub without a window, until Ctrl-C or SIGTERM.

use crate::config::Config;
use crate::service::Service;

/// Runs the hub on a fresh multi-thread runtime until a stop signal arrives.
pub fn run(config: Config) -> anyhow::Result<()> {
    let runtime = crate::service::background_runtime()?;
    runtime.block_on(async {
        let service = Service::start(&config).await?;
        if let Some(url) = service.url() {
            tracing::info!("Herald listening on {url}");
        }
        if let Some(token) = service.token() {
            tracing::info!("every request needs the header `Authorization: Bearer {token}`");
        }
        stop_signal().await;
        tracing::info!("stopping");
        service.shutdown().await;
        Ok(())
    })
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM (what `docker stop` and CI runners send).
async fn stop_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {err}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::warn!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
