//! The top bar: where the hub listens (or why it does not, with a field to try another
//! address), the totals, the theme and settings buttons, the last frame's time and the
//! latest notice.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use egui::RichText;

use super::action::Action;
use super::backend::{Backend, ListenState};
use super::theme;

/// How long a notice stays in the top bar.
const NOTICE_FOR: Duration = Duration::from_secs(8);

pub(crate) struct TopBar {
    /// The address typed in the "port busy" bar.
    retry_bind: String,
    notice: Option<(String, Instant)>,
}

impl TopBar {
    /// `bind` is where the hub is to listen: the bar offers the next port if it is busy.
    pub(crate) fn new(bind: &str) -> Self {
        Self {
            retry_bind: next_port(bind),
            notice: None,
        }
    }

    /// Shows `text` for a while.
    pub(crate) fn notify(&mut self, text: impl Into<String>) {
        self.notice = Some((text.into(), Instant::now()));
    }

    /// While a notice is up: how long until it is to go.
    pub(crate) fn notice_left(&self) -> Option<Duration> {
        let (_, at) = self.notice.as_ref()?;
        Some(NOTICE_FOR.saturating_sub(at.elapsed()))
    }

    pub(crate) fn top_bar_ui(
        &mut self,
        ui: &mut egui::Ui,
        backend: &Backend,
        dark: bool,
        frame_time: Duration,
        cluster: Option<&crate::cluster::ClusterView>,
    ) -> Option<Action> {
        let mut action = None;
        ui.horizontal_wrapped(|ui| {
            ui.heading(RichText::new("Herald").strong());
            ui.separator();
            action = self.listen_ui(ui, backend);
            ui.separator();
            if let Some(view) = cluster {
                if cluster_ui(ui, view) {
                    action = Some(Action::OpenCluster);
                }
                ui.separator();
            }
            totals_ui(ui, backend);
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui.button("Settings").clicked() {
                    action = Some(Action::OpenSettings);
                }
                if ui
                    .button("Topics")
                    .on_hover_text("Every topic published, and who it reaches")
                    .clicked()
                {
                    action = Some(Action::OpenTopics);
                }
                if ui
                    .button("Matrix")
                    .on_hover_text("Recent messages by subscribers: what became of each delivery")
                    .clicked()
                {
                    action = Some(Action::OpenMatrix);
                }
                let theme_label = if dark { "Light" } else { "Dark" };
                if ui
                    .button(theme_label)
                    .on_hover_text("Switch theme")
                    .clicked()
                {
                    action = Some(Action::ToggleTheme);
                }
                ui.label(
                    RichText::new(format!("frame {:.1} ms", frame_time.as_secs_f64() * 1000.0))
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
        action
    }

    fn listen_ui(&mut self, ui: &mut egui::Ui, backend: &Backend) -> Option<Action> {
        match backend.listen_state() {
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
                    let text = &self.retry_bind;
                    match text.trim().parse::<SocketAddr>() {
                        Ok(addr) => return Some(Action::Listen(addr)),
                        Err(_) => {
                            let notice = format!("{text:?} is not IP:PORT, e.g. 127.0.0.1:3001");
                            self.notify(notice);
                        }
                    }
                }
            }
        }
        None
    }
}

fn totals_ui(ui: &mut egui::Ui, backend: &Backend) {
    let hub = backend.hub();
    let totals = hub.totals();
    ui.label(format!(
        "{} subscribers · {} messages",
        hub.subscriber_count(),
        totals.messages
    ));
    ui.label(RichText::new(format!("{} ok", totals.delivered)).color(theme::OK));
    ui.label(
        RichText::new(format!("{} failed", totals.failed)).color(if totals.failed > 0 {
            theme::FAILED
        } else {
            ui.visuals().weak_text_color()
        }),
    );
    if hub.is_stopping() {
        ui.colored_label(theme::PENDING, "stopping");
    }
}

/// A small filled circle: green when listening, red when not.
/// The cluster's state in a word or two, and a button to its window; whether clicked.
fn cluster_ui(ui: &mut egui::Ui, view: &crate::cluster::ClusterView) -> bool {
    let (colour, text) = if view.connected {
        let n = view.instances.len();
        let noun = if n == 1 { "instance" } else { "instances" };
        (theme::OK, format!("{n} {noun}"))
    } else {
        (theme::FAILED, "NATS lost: publishes refused".to_owned())
    };
    status_dot(ui, colour).on_hover_text(&view.state);
    let clicked = ui
        .button("Cluster")
        .on_hover_text(format!(
            "{} at {}: instances and who delivers to whom",
            view.instance, view.url
        ))
        .clicked();
    ui.colored_label(colour, text);
    clicked
}

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
