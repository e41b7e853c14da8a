//! The console window: a top bar, subscribers and compose on the left, the message log and
//! its details in the middle, plots at the bottom, settings in a window. This file lays
//! the panels out and carries out the [`Action`]s they return.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::action::Action;
use super::backend::{Backend, ListenState};
use super::chores::Chores;
use super::compose::Compose;
use super::dialogs::{FileDone, Files};
use super::format;
use super::log::LogPanel;
use super::plot::Rates;
use super::settings::{SETTINGS_KEY, Settings, SettingsWindow};
use super::subscribers::SubscribersPanel;
use super::test_subscriber::test_subscribers_ui;
use super::theme;
use super::top_bar::TopBar;
use super::topics::TopicsWindow;
use crate::hub::Hub;

pub struct HeraldApp {
    backend: Arc<Backend>,
    /// What is in force, saved when the window closes.
    settings: Settings,
    settings_window: SettingsWindow,
    top_bar: TopBar,
    subscribers: SubscribersPanel,
    log: LogPanel,
    compose: Compose,
    topics: TopicsWindow,
    diff: super::diff::DiffWindow,
    matrix: super::matrix::MatrixWindow,
    cluster: super::cluster::ClusterWindow,
    rates: Rates,
    files: Files,
    /// Resends and stars, which may read the store, on the runtime.
    chores: Chores,
    /// How long the last frame's UI code took.
    frame_time: Duration,
}

impl HeraldApp {
    pub fn new(backend: Arc<Backend>, settings: Settings, ctx: &egui::Context) -> Self {
        theme::set(ctx, settings.dark);
        // Panels are left unpainted and the frame is cleared to their colour instead (see
        // `clear_color`): one full-window layer less for a software renderer to fill.
        ctx.all_styles_mut(|style| style.visuals.panel_fill = egui::Color32::TRANSPARENT);
        Self {
            backend,
            top_bar: TopBar::new(&settings.bind),
            settings,
            settings_window: SettingsWindow::default(),
            subscribers: SubscribersPanel::default(),
            log: LogPanel::default(),
            compose: Compose::default(),
            topics: TopicsWindow::default(),
            diff: super::diff::DiffWindow::default(),
            matrix: super::matrix::MatrixWindow::default(),
            cluster: super::cluster::ClusterWindow::default(),
            rates: Rates::default(),
            files: Files::default(),
            chores: Chores::default(),
            frame_time: Duration::ZERO,
        }
    }

    pub fn hub(&self) -> &Hub {
        self.backend.hub()
    }

    /// The test subscribers the panel shows (shared with the API).
    pub fn test_subscribers(&self) -> &crate::workbench::TestSubscribers {
        self.backend.test_subscribers()
    }

    /// How long the last frame's UI code took.
    pub fn frame_time(&self) -> Duration {
        self.frame_time
    }

    /// The whole window. Called every frame; never waits on anything.
    pub fn ui_root(&mut self, ui: &mut egui::Ui) {
        let started = Instant::now();
        self.poll_files();
        for said in self.chores.said() {
            self.top_bar.notify(said);
        }
        self.rates.sample(self.backend.hub());
        egui::Panel::top("top_bar").show(ui, |ui| {
            let cluster = self.backend.cluster().map(|c| self.cluster.view(c));
            let action = self.top_bar.top_bar_ui(
                ui,
                &self.backend,
                self.settings.dark,
                self.frame_time,
                cluster,
            );
            self.handle(action, ui.ctx());
        });
        egui::Panel::left("left")
            .resizable(true)
            .default_size(600.0)
            .min_size(420.0)
            .show(ui, |ui| self.left_ui(ui));
        egui::CentralPanel::default().show(ui, |ui| self.central_ui(ui));
        let hub = self.backend.hub().clone();
        let action = self.settings_window.show(ui.ctx(), || hub.store_usage());
        self.handle(action, ui.ctx());
        let action = self.topics.show(ui.ctx(), &hub);
        self.handle(action, ui.ctx());
        let action = self.diff.show(ui.ctx());
        self.handle(action, ui.ctx());
        let action = self.matrix.show(ui.ctx(), &hub);
        self.handle(action, ui.ctx());
        if let Some(cluster) = self.backend.cluster() {
            self.cluster.show(ui.ctx(), cluster);
        }
        self.schedule_tick(ui.ctx());
        self.frame_time = started.elapsed();
    }

    /// Keep-alive ages, expiry bars and the plots move every second even when the hub is
    /// quiet, so while any of them is on screen the window redraws once a second.
    /// Otherwise it sleeps until the hub, the user or a background task wakes it.
    fn schedule_tick(&self, ctx: &egui::Context) {
        let hub = self.backend.hub();
        // The cluster's connection and instances change without a hub event.
        let moving =
            hub.subscriber_count() > 0 || self.rates.active() || self.backend.cluster().is_some();
        if moving {
            ctx.request_repaint_after(Duration::from_secs(1));
        } else if let Some(left) = self.top_bar.notice_left() {
            ctx.request_repaint_after(left);
        }
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
                let tests = self.backend.test_subscribers().clone();
                let action = test_subscribers_ui(ui, &tests);
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
            Action::Notice(text) => self.top_bar.notify(text),
            Action::Resend { id, to } => {
                let hub = hub.clone();
                self.chores
                    .run(runtime, ctx, move || match hub.resend(id, to.as_deref()) {
                        Ok(1) => "Resent to 1 subscriber".to_owned(),
                        Ok(n) => format!("Resent to {n} subscribers"),
                        Err(err) => format!("Not resent: {err}"),
                    });
            }
            Action::Star { id, starred } => {
                let hub = hub.clone();
                self.chores.run(runtime, ctx, move || {
                    // A blocking thread of the runtime: it may wait for the store.
                    let kept = hub
                        .pin_message(id, starred)
                        .map_err(|err| err.to_string())
                        .and_then(|commit| {
                            tokio::runtime::Handle::current()
                                .block_on(commit)
                                .map_err(|err| format!("not kept: {err}"))
                        });
                    match kept {
                        Ok(()) if starred => format!("Message {id} starred"),
                        Ok(()) => format!("Message {id} unstarred"),
                        Err(err) => format::sentence(&err),
                    }
                });
            }
            Action::ExportLog => self.files.export_log(hub, runtime, ctx),
            Action::ImportLog => self.files.import_log(hub, runtime, ctx),
            Action::ForgetHistory => {
                // Memory at once; the store's answer is waited for off this thread.
                let commit = hub.clear_log();
                self.chores.run(
                    runtime,
                    ctx,
                    move || match tokio::runtime::Handle::current().block_on(commit) {
                        Ok(()) => "History forgotten".to_owned(),
                        Err(err) => format::sentence(&format!(
                            "memory cleared, but the history on disk was not forgotten: {err}"
                        )),
                    },
                );
                self.log.forget_selection();
            }
            Action::LoadFile => self.files.load_file(runtime, ctx),
            Action::AddTestSubscriber => {
                let ctx = ctx.clone();
                let wake = Arc::new(move || ctx.request_repaint());
                let tests = self.backend.test_subscribers();
                if let Err(err) = tests.add(hub, runtime, Default::default(), wake) {
                    self.top_bar.notify(format::sentence(&err.to_string()));
                }
            }
            Action::RemoveTestSubscriber(id) => {
                self.backend.test_subscribers().remove(hub, id);
            }
            Action::Listen(addr) => {
                self.backend.listen(addr, ctx);
                self.settings.bind = addr.to_string();
            }
            Action::ToggleTheme => {
                self.settings.dark = !self.settings.dark;
                theme::set(ctx, self.settings.dark);
            }
            Action::OpenSettings => self.settings_window.open(&self.settings),
            Action::OpenTopics => self.topics.open = true,
            Action::OpenMatrix => self.matrix.open = true,
            Action::OpenCluster => self.cluster.open = true,
            Action::Inspect { id, subscriber } => self.log.inspect(id, subscriber),
            Action::StartBurst(spec) => match self.backend.bursts().start(hub, runtime, *spec) {
                Ok(burst) => self.compose.burst.last = Some(burst),
                Err(err) => self.top_bar.notify(err.to_string()),
            },
            Action::Compare(a, b) => {
                let comparisons = self.backend.comparisons();
                if !self.diff.open(hub, comparisons, runtime, ctx, (a, b)) {
                    self.top_bar
                        .notify(format!("Message {a} or {b} is no longer in the log"));
                }
            }
            Action::Replay(id) => match hub.message(id) {
                Some(message) => {
                    self.compose.load_replay(&message);
                    self.top_bar
                        .notify(format!("Message {id} opened in Compose, to replay"));
                }
                None => self
                    .top_bar
                    .notify(format!("Message {id} is no longer in the log")),
            },
            Action::Compose { id, topic } => match hub.message(id) {
                Some(message) => {
                    let content_type = message.content_type.as_deref();
                    let name = format!("message {id}");
                    self.compose
                        .load_message(name, &message.body, content_type, &topic);
                    self.top_bar
                        .notify(format!("Message {id} ({topic}) loaded into Compose"));
                }
                None => self.top_bar.notify(format!(
                    "Message {id}, the last on {topic}, is no longer in the log"
                )),
            },
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
        self.top_bar.notify("Settings applied");
    }

    fn poll_files(&mut self) {
        match self.files.poll() {
            Some(FileDone::Loaded { path, bytes }) => {
                let name = path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                let notice = format!("Loaded {name} ({})", format::size(bytes.len()));
                self.top_bar.notify(notice);
                self.compose.load(name, bytes);
            }
            Some(FileDone::Notice(text)) => self.top_bar.notify(text),
            None => {}
        }
    }
}

impl eframe::App for HeraldApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.ui_root(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, SETTINGS_KEY, &self.settings);
    }

    fn clear_color(&self, _visuals: &egui::Visuals) -> [f32; 4] {
        // From the app's own setting, not the visuals eframe passes: those did not follow
        // a switch to the light theme, which then drew light widgets on a dark ground.
        let theme = if self.settings.dark {
            egui::Visuals::dark()
        } else {
            egui::Visuals::light()
        };
        theme.panel_fill.to_normalized_gamma_f32()
    }
}
