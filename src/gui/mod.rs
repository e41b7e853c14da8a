//! The desktop console: an egui window over the live hub.
//!
//! The window runs on the main thread; the hub, its server and its deliveries run on a
//! tokio runtime on background threads. The GUI reads the hub through its non-blocking
//! methods and hands anything slow (binding a port, file dialogs, file I/O) to the
//! runtime. Hub events wake the window; otherwise it repaints once a second for the
//! ticking keep-alive ages.

mod action;
mod app;
mod backend;
mod chores;
mod cluster;
mod compose;
mod dialogs;
mod diff;
mod format;
mod inspector;
mod log;
mod matrix;
mod plot;
mod search;
mod settings;
mod starting;
mod subscribers;
mod test_subscriber;
mod theme;
mod top_bar;
mod topics;

use std::sync::{Arc, OnceLock};

pub use app::HeraldApp;
pub use backend::Backend;
pub use settings::{SETTINGS_KEY, Settings};

use crate::config::Config;

const ICON: &[u8] = include_bytes!("../../assets/icon.png");

/// Opens the window and runs until it is closed, then shuts the hub down (draining
/// deliveries for up to 5 s). `given` names the flags the user typed, which win over
/// remembered settings.
pub fn run(config: Config, given: Vec<String>) -> anyhow::Result<()> {
    if let Some(missing) = no_display() {
        anyhow::bail!("{missing}");
    }
    let runtime = crate::service::background_runtime()?;
    let handle = runtime.handle().clone();
    let started: Arc<OnceLock<Arc<Backend>>> = Arc::default();
    let slot = started.clone();

    let mut viewport = egui::ViewportBuilder::default()
        .with_title("Herald")
        .with_app_id("herald")
        .with_inner_size([1280.0, 800.0])
        .with_min_inner_size([960.0, 600.0]);
    match eframe::icon_data::from_png_bytes(ICON) {
        Ok(icon) => viewport = viewport.with_icon(icon),
        Err(err) => tracing::warn!("the window icon is unreadable: {err}"),
    }
    let options = eframe::NativeOptions {
        viewport,
        renderer: eframe::Renderer::Glow,
        // Dithering costs a software renderer (Xvfb, remote desktops) a tenth of each
        // frame and buys nothing on this UI's flat colours.
        dithering: false,
        ..Default::default()
    };
    eframe::run_native(
        "Herald",
        options,
        Box::new(move |cc| {
            let settings: Settings = cc
                .storage
                .and_then(|storage| eframe::get_value(storage, SETTINGS_KEY))
                .unwrap_or_else(|| Settings::from_config(&config));
            let mut config = config;
            settings.apply_to(&mut config, &given);
            // What is in force now: remembered values, overridden by flags given now.
            let settings = Settings {
                dark: settings.dark,
                ..Settings::from_config(&config)
            };
            // The console keeps its history unless told not to; the headless hub, only
            // when given a directory.
            if config.data_dir.is_none() && !config.in_memory && config.cluster.is_none() {
                config.data_dir = crate::store::default_data_dir();
            }
            let starting = starting::Starting::new(config, handle, settings, slot, &cc.egui_ctx);
            Ok(Box::new(starting))
        }),
    )
    .map_err(|err| anyhow::anyhow!("cannot open the window: {err}"))?;

    if let Some(service) = started.get().and_then(|backend| backend.take_service()) {
        tracing::info!("window closed; stopping");
        runtime.block_on(service.shutdown());
    }
    Ok(())
}

/// Why no window can open here, if none can: on Linux and the BSDs a window needs an X
/// server or a Wayland compositor, which the environment names. Said in Herald's words,
/// with the way to run without one, rather than in the windowing library's.
fn no_display() -> Option<String> {
    if !cfg!(all(unix, not(target_os = "macos"))) {
        return None;
    }
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if ["DISPLAY", "WAYLAND_DISPLAY", "WAYLAND_SOCKET"]
        .iter()
        .any(|name| set(name))
    {
        return None;
    }
    Some(
        "no display to open the window on (neither DISPLAY nor WAYLAND_DISPLAY nor \
         WAYLAND_SOCKET is set); run the hub without a window with `herald --headless`, or \
         start Herald from a desktop session (or under Xvfb)"
            .to_owned(),
    )
}
