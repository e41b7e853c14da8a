//! The settings window and what it edits, remembered across restarts. A flag given on
//! the command line beats a remembered setting.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::action::Action;
use super::theme;
use crate::config::Config;
use crate::hub::StoreUsage;

/// Where eframe keeps the settings between runs.
pub const SETTINGS_KEY: &str = "herald.settings";

/// What the settings window edits, remembered across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub(crate) ttl_secs: f64,
    pub(crate) reap_every_secs: f64,
    pub(crate) delivery_timeout_secs: f64,
    pub(crate) connect_timeout_secs: f64,
    pub(crate) bind: String,
    pub(crate) dark: bool,
}

/// Puts one setting into a config.
type CopyInto = fn(&Settings, &mut Config);

/// Each setting a flag overrides: the flag's clap id, and how the setting goes into the
/// config. Ids are strings to clap, so a test checks each against the real command line:
/// a renamed flag would otherwise let a saved setting beat it without a word.
const FLAGS: [(&str, CopyInto); 5] = [
    ("ttl", |s, config| config.ttl = s.ttl()),
    ("reap_every", |s, config| config.reap_every = s.reap_every()),
    ("delivery_timeout", |s, config| {
        config.delivery_timeout = s.delivery_timeout();
    }),
    ("connect_timeout", |s, config| {
        config.connect_timeout = s.connect_timeout();
    }),
    ("bind", |s, config| {
        if let Ok(bind) = s.bind.parse() {
            config.bind = bind;
        }
    }),
];

impl Default for Settings {
    fn default() -> Self {
        Self::from_config(&Config::default())
    }
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            ttl_secs: config.ttl.as_secs_f64(),
            reap_every_secs: config.reap_every.as_secs_f64(),
            delivery_timeout_secs: config.delivery_timeout.as_secs_f64(),
            connect_timeout_secs: config.connect_timeout.as_secs_f64(),
            bind: config.bind.to_string(),
            dark: true,
        }
    }

    /// Puts remembered settings into `config`, except where the command line said
    /// otherwise: a flag given now (its clap id is in `given`) wins over what was saved.
    pub(crate) fn apply_to(&self, config: &mut Config, given: &[String]) {
        for (id, apply) in FLAGS {
            if !given.iter().any(|g| g == id) {
                apply(self, config);
            }
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        seconds(self.ttl_secs)
    }

    pub(crate) fn reap_every(&self) -> Duration {
        seconds(self.reap_every_secs)
    }

    pub(crate) fn delivery_timeout(&self) -> Duration {
        seconds(self.delivery_timeout_secs)
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        seconds(self.connect_timeout_secs)
    }
}

/// Saved files can hold anything: `Duration::from_secs_f64` panics on a negative, a NaN
/// or an overflow, and no setting takes more than a day here (the window's own limit).
fn seconds(secs: f64) -> Duration {
    const DAY: f64 = 86_400.0;
    let secs = if secs.is_nan() { 1.0 } else { secs };
    Duration::from_secs_f64(secs.clamp(0.001, DAY))
}

/// The settings window, open while it holds a draft.
#[derive(Default)]
pub(crate) struct SettingsWindow {
    /// The edits, applied with the Apply button.
    draft: Option<Settings>,
    error: Option<String>,
}

impl SettingsWindow {
    pub(crate) fn open(&mut self, settings: &Settings) {
        self.draft = Some(settings.clone());
        self.error = None;
    }

    /// Draws the window while it is open; asks for the draft to be applied once Apply was
    /// clicked with a valid draft, and closes.
    /// `store` is read only while the window is open.
    pub(crate) fn show(
        &mut self,
        ctx: &egui::Context,
        store: impl FnOnce() -> StoreUsage,
    ) -> Option<Action> {
        let draft = self.draft.as_mut()?;
        let store = store();
        let mut open = true;
        let mut apply = false;
        let mut forget = false;
        egui::Window::new("Settings")
            .open(&mut open)
            .resizable(false)
            .collapsible(false)
            .show(ctx, |ui| {
                egui::Grid::new("settings_grid")
                    .num_columns(2)
                    .spacing([12.0, 8.0])
                    .show(ui, |ui| fields_ui(ui, draft));
                if let Some(error) = &self.error {
                    ui.colored_label(theme::FAILED, error);
                }
                ui.horizontal(|ui| {
                    apply = ui.button("Apply").clicked();
                    ui.weak("Remembered for next time");
                });
                ui.separator();
                forget = history_ui(ui, &store);
            });
        if !open {
            self.draft = None;
            return None;
        }
        if forget {
            return Some(Action::ForgetHistory);
        }
        if !apply {
            return None;
        }
        let draft = self.draft.take()?;
        match draft.bind.parse::<SocketAddr>() {
            Ok(bind) => {
                self.error = None;
                Some(Action::ApplySettings(draft, bind))
            }
            Err(_) => {
                self.error = Some(format!(
                    "{:?} is not an address to listen on; write IP:PORT, e.g. 127.0.0.1:3000",
                    draft.bind
                ));
                self.draft = Some(draft);
                None
            }
        }
    }
}

/// Where the history is kept, and its "forget" button; returns whether it was clicked.
fn history_ui(ui: &mut egui::Ui, store: &StoreUsage) -> bool {
    ui.strong("History");
    match &store.place {
        Some(place) => {
            ui.label(format!(
                "{} messages, {}, in {place}",
                store.messages,
                super::format::size(usize::try_from(store.bytes).unwrap_or(usize::MAX))
            ));
            ui.button("Forget history")
                .on_hover_text(
                    "Delete every logged message, here and on disk (those with a delivery \
                     still to make are kept)",
                )
                .clicked()
        }
        None => {
            ui.weak(
                "In memory only: the log ends with the window (start with --data-dir to keep it)",
            );
            false
        }
    }
}

fn fields_ui(ui: &mut egui::Ui, draft: &mut Settings) {
    let seconds = |ui: &mut egui::Ui, value: &mut f64| {
        ui.add(
            egui::DragValue::new(value)
                .range(0.1..=86_400.0)
                .speed(0.5)
                .suffix(" s"),
        );
    };
    ui.label("Keep-alive TTL");
    seconds(ui, &mut draft.ttl_secs);
    ui.end_row();
    ui.label("Check for expired every");
    seconds(ui, &mut draft.reap_every_secs);
    ui.end_row();
    ui.label("Delivery timeout");
    seconds(ui, &mut draft.delivery_timeout_secs);
    ui.end_row();
    ui.label("Connect timeout");
    ui.horizontal(|ui| {
        seconds(ui, &mut draft.connect_timeout_secs);
        ui.weak("(at next start)");
    });
    ui.end_row();
    ui.label("Listen on");
    ui.text_edit_singleline(&mut draft.bind);
    ui.end_row();
    ui.label("Theme");
    ui.horizontal(|ui| {
        ui.radio_value(&mut draft.dark, true, "Dark");
        ui.radio_value(&mut draft.dark, false, "Light");
    });
    ui.end_row();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn a_saved_file_cannot_hold_a_duration_that_panics() {
        for secs in [f64::NAN, f64::INFINITY, -5.0, 1e300] {
            assert!(seconds(secs) <= Duration::from_secs(86_400), "{secs}");
        }
        assert_eq!(seconds(2.5), Duration::from_millis(2500));
    }

    #[test]
    fn every_overriding_flag_is_a_real_argument() {
        let command = Config::command();
        for (id, _) in FLAGS {
            assert!(
                command.get_arguments().any(|arg| arg.get_id() == id),
                "{id:?} is not an argument of the command line; was the flag renamed?"
            );
        }
    }

    #[test]
    fn a_flag_beats_a_saved_setting() {
        let saved = Settings {
            ttl_secs: 7.0,
            reap_every_secs: 8.0,
            delivery_timeout_secs: 9.0,
            connect_timeout_secs: 3.0,
            bind: "127.0.0.1:4000".to_owned(),
            dark: false,
        };
        let (mut config, given) =
            // An empty config file, so that none on this machine plays a part.
            crate::config::parse_noting_given::<Config, _, _>([
                "herald",
                "--config",
                "/dev/null",
                "--ttl",
                "5s",
                "--bind",
                "127.0.0.1:4100",
            ]);
        saved.apply_to(&mut config, &given);
        assert_eq!(config.ttl, Duration::from_secs(5));
        assert_eq!(config.bind, "127.0.0.1:4100".parse().unwrap());
        assert_eq!(config.reap_every, Duration::from_secs(8));
        assert_eq!(config.delivery_timeout, Duration::from_secs(9));
        assert_eq!(config.connect_timeout, Duration::from_secs(3));
    }
}
