//! The console window: a top bar, subscribers and compose on the left, the message log and
//! its details in the middle, plots at the bottom, settings in a window.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::RichText;

use super::action::Action;
use super::backend::{Backend, ListenState};
use super::compose::Compose;
use super::dialogs::{FileDone, Files};
use super::log::LogPanel;
use super::plot::Rates;
use super::settings::{SETTINGS_KEY, Settings, SettingsWindow};
use super::subscribers::SubscribersPanel;
use super::test_subscriber::test_subscriber_ui;
use super::{format, theme};
use crate::hub::Hub;
use crate::server::TestSubscriber;

/// How long a notice stays in the top bar.
const NOTICE_FOR: Duration = Duration::from_secs(8);

pub struct HeraldApp {
    backend: Arc<Backend>,
    settings: Settings,
    settings_window: SettingsWindow,
    subscribers: SubscribersPanel,
    log: LogPanel,
    compose: Compose,
    rates: Rates,
    test_subscriber: TestSubscriber,
    files: Files,
    notice: Option<(String, Instant)>,
    /// The address typed in the "port busy" bar.
    retry_bind: String,
    /// How long the last frame's UI code took.
    frame_time: Duration,
}

impl HeraldApp {
    pub fn new(backend: Arc<Backend>, settings: Settings, ctx: &egui::Context) -> Self {
        theme::set(ctx, settings.dark);
        // Panels are left unpainted and the frame is cleared to their colour instead (see
        // `clear_color`): one full-window layer less for a software renderer to fill.
        ctx.all_styles_mut(|style| style.visuals.panel_fill = egui::Color32::TRANSPARENT);
        let retry_bind = next_port(&settings.bind);
        Self {
            backend,
            settings,
            settings_window: SettingsWindow::default(),
            subscribers: SubscribersPanel::default(),
            log: LogPanel::default(),
            compose: Compose::default(),
            rates: Rates::default(),
            test_subscriber: TestSubscriber::default(),
            files: Files::default(),
            notice: None,
            retry_bind,
            frame_time: Duration::ZERO,
        }
    }

    pub fn hub(&self) -> &Hub {
        self.backend.hub()
    }

    pub fn test_subscriber(&self) -> &TestSubscriber {
        &self.test_subscriber
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// How long the last frame's UI code took.
    pub fn frame_time(&self) -> Duration {
        self.frame_time
    }

    /// The whole window. Called every frame; never waits on anything.
    pub fn ui_root(&mut self, ui: &mut egui::Ui) {
        let started = Instant::now();
        self.poll_files();
        self.rates.sample(self.backend.hub());
        egui::Panel::top("top_bar").show(ui, |ui| self.top_bar_ui(ui));
        egui::Panel::left("left")
            .resizable(true)
            .default_size(600.0)
            .min_size(420.0)
            .show(ui, |ui| self.left_ui(ui));
        egui::CentralPanel::default().show(ui, |ui| self.central_ui(ui));
        let action = self.settings_window.show(ui.ctx());
        self.handle(action, ui.ctx());
        self.schedule_tick(ui.ctx());
        self.frame_time = started.elapsed();
    }

    /// Keep-alive ages, expiry bars and the plots move every second even when the hub is
    /// quiet, so while any of them is on screen the window redraws once a second.
    /// Otherwise it sleeps until the hub, the user or a background task wakes it.
    fn schedule_tick(&self, ctx: &egui::Context) {
        let hub = self.backend.hub();
        let moving = hub.subscriber_count() > 0 || self.rates.active();
        if moving {
            ctx.request_repaint_after(Duration::from_secs(1));
        } else if let Some((_, at)) = &self.notice {
            ctx.request_repaint_after(NOTICE_FOR.saturating_sub(at.elapsed()));
        }
    }

    fn top_bar_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal_wrapped(|ui| {
            ui.heading(RichText::new("Herald").strong());
            ui.separator();
            match self.backend.listen_state() {
                ListenState::Listening { url, token } => {
                    status_dot(ui, theme::OK).on_hover_text("Listening");
                    ui.monospace(&url);
                    if ui
                        .small_button("Copy")
                        .on_hover_text("Copy the URL")
                        .clicked()
                    {
                        ui.ctx().copy_text(url.clone());
                        self.notify("URL copied");
                    }
                    if let Some(token) = token
                        && ui
                            .small_button("Copy token")
                            .on_hover_text("Requests need Authorization: Bearer <token>")
                            .clicked()
                    {
                        ui.ctx().copy_text(token);
                        self.notify("Token copied");
                    }
                }
                ListenState::Starting(addr) => {
                    ui.spinner();
                    ui.label(format!("Starting on {addr}…"));
                }
                ListenState::Failed { addr, error } => {
                    status_dot(ui, theme::FAILED);
                    ui.colored_label(
                        theme::FAILED,
                        format!("Not listening: port {addr} is busy or unavailable"),
                    )
                    .on_hover_text(error);
                    let label = ui.label("Listen on");
                    ui.add(egui::TextEdit::singleline(&mut self.retry_bind).desired_width(130.0))
                        .labelled_by(label.id);
                    if ui.button("Listen").clicked() {
                        self.listen_at(self.retry_bind.clone(), ui.ctx());
                    }
                }
            }
            ui.separator();
            let hub = self.backend.hub();
            let totals = hub.totals();
            ui.label(format!(
                "{} subscribers · {} messages",
                hub.subscriber_count(),
                totals.messages
            ));
            ui.label(RichText::new(format!("{} ok", totals.delivered)).color(theme::OK));
            ui.label(RichText::new(format!("{} failed", totals.failed)).color(
                if totals.failed > 0 {
                    theme::FAILED
                } else {
                    ui.visuals().weak_text_color()
                },
            ));
            if hub.is_closed() {
                ui.colored_label(theme::PENDING, "stopping");
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui.button("Settings").clicked() {
                    self.settings_window.open(&self.settings);
                }
                let theme_label = if self.settings.dark { "Light" } else { "Dark" };
                if ui
                    .button(theme_label)
                    .on_hover_text("Switch theme")
                    .clicked()
                {
                    self.settings.dark = !self.settings.dark;
                    theme::set(ui.ctx(), self.settings.dark);
                }
                ui.label(
                    RichText::new(format!(
                        "frame {:.1} ms",
                        self.frame_time.as_secs_f64() * 1000.0
                    ))
                    .small()
                    .weak(),
                )
                .on_hover_text("Time the last frame's UI code took");
                if let Some((notice, at)) = &self.notice {
                    if at.elapsed() < NOTICE_FOR {
                        ui.label(RichText::new(notice).italics());
                    } else {
                        self.notice = None;
                    }
                }
            });
        });
    }

    fn left_ui(&mut self, ui: &mut egui::Ui) {
        egui::Panel::bottom("compose_panel")
            .resizable(true)
            .default_size(300.0)
            .min_size(180.0)
            .show(ui, |ui| {
                ui.add_space(4.0);
                let busy = self.files.busy();
                let action = self.compose.compose_ui(ui, self.backend.hub(), busy);
                self.handle(action, ui.ctx());
            });
        egui::Panel::bottom("test_subscriber_panel")
            .resizable(false)
            .show(ui, |ui| {
                let action = test_subscriber_ui(ui, &self.test_subscriber);
                self.handle(action, ui.ctx());
            });
        self.subscribers.subscribers_ui(ui, self.backend.hub());
    }

    fn central_ui(&mut self, ui: &mut egui::Ui) {
        egui::Panel::bottom("plots")
            .exact_size(130.0)
            .show(ui, |ui| self.rates.plots_ui(ui));
        let (url, token) = match self.backend.listen_state() {
            ListenState::Listening { url, token } => (Some(url), token),
            _ => (None, None),
        };
        let hub = self.backend.hub().clone();
        egui::Panel::bottom("details")
            .resizable(true)
            .default_size(300.0)
            .min_size(120.0)
            .show(ui, |ui| {
                ui.add_space(4.0);
                let action = self
                    .log
                    .details_ui(ui, &hub, url.as_deref(), token.as_deref());
                self.handle(action, ui.ctx());
                // Claim the whole panel, or it shrinks to its content on the next frame.
                ui.expand_to_include_rect(ui.max_rect());
            });
        let action = self.log.log_ui(ui, &hub);
        self.handle(action, ui.ctx());
    }

    fn handle(&mut self, action: Option<Action>, ctx: &egui::Context) {
        let Some(action) = action else {
            return;
        };
        let (hub, runtime) = (self.backend.hub(), self.backend.runtime());
        match action {
            Action::Notice(text) => self.notify(text),
            Action::ExportLog => self.files.export_log(hub, runtime, ctx),
            Action::LoadFile => self.files.load_file(runtime, ctx),
            Action::StartTestSubscriber => {
                let ctx = ctx.clone();
                let wake = Arc::new(move || ctx.request_repaint());
                self.test_subscriber.start(hub, runtime, wake);
            }
            Action::StopTestSubscriber => self.test_subscriber.stop(),
            Action::ApplySettings(settings, bind) => self.apply_settings(settings, bind, ctx),
        }
    }

    fn apply_settings(&mut self, settings: Settings, bind: SocketAddr, ctx: &egui::Context) {
        let hub = self.backend.hub();
        hub.set_ttl(settings.ttl());
        hub.set_reap_every(settings.reap_every());
        self.backend
            .set_delivery_timeout(settings.delivery_timeout());
        theme::set(ctx, settings.dark);
        if settings.bind != self.settings.bind {
            self.backend.listen(bind, ctx);
        }
        self.settings = settings;
        self.notify("Settings applied");
    }

    fn listen_at(&mut self, text: String, ctx: &egui::Context) {
        match text.trim().parse::<SocketAddr>() {
            Ok(addr) => {
                self.backend.listen(addr, ctx);
                self.settings.bind = addr.to_string();
            }
            Err(_) => self.notify(format!("{text:?} is not IP:PORT, e.g. 127.0.0.1:3001")),
        }
    }

    fn poll_files(&mut self) {
        match self.files.poll() {
            Some(FileDone::Loaded { path, bytes }) => {
                let name = path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                self.notify(format!("Loaded {name} ({})", format::size(bytes.len())));
                self.compose.load(name, bytes);
            }
            Some(FileDone::Notice(text)) => self.notify(text),
            None => {}
        }
    }

    fn notify(&mut self, text: impl Into<String>) {
        self.notice = Some((text.into(), Instant::now()));
    }
}

impl eframe::App for HeraldApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.ui_root(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, SETTINGS_KEY, &self.settings);
    }

    fn clear_color(&self, visuals: &egui::Visuals) -> [f32; 4] {
        let theme = if visuals.dark_mode {
            egui::Visuals::dark()
        } else {
            egui::Visuals::light()
        };
        theme.panel_fill.to_normalized_gamma_f32()
    }
}

/// A small filled circle: green when listening, red when not.
fn status_dot(ui: &mut egui::Ui, colour: egui::Color32) -> egui::Response {
    let (rect, response) = ui.allocate_exact_size(egui::vec2(12.0, 12.0), egui::Sense::hover());
    ui.painter().circle_filled(rect.center(), 5.0, colour);
    response
}

/// The same address one port up: the likeliest free one next to a busy one.
fn next_port(bind: &str) -> String {
    match bind.parse::<SocketAddr>() {
        Ok(mut addr) => {
            addr.set_port(addr.port().wrapping_add(1).max(1));
            addr.to_string()
        }
        Err(_) => "127.0.0.1:3001".to_owned(),
    }
}
