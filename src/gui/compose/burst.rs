//! Compose's Burst: the box's template published N times at R a second by a task on the
//! runtime, with a progress bar, live counts and Cancel.

use std::sync::Arc;
use std::time::Duration;

use super::Compose;
use crate::gui::action::Action;
use crate::gui::{format, theme};
use crate::hub::Hub;
use crate::workbench::burst::{Burst, BurstSpec, BurstState, MAX_COUNT, MAX_RATE};
use crate::workbench::template::Template;

/// How often a running burst's progress is drawn again.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// The burst row's settings and the burst it started last.
pub(crate) struct BurstPanel {
    count: u64,
    /// Messages a second; 0: as fast as the hub takes them.
    rate: f64,
    pub(crate) last: Option<Arc<Burst>>,
}

impl Default for BurstPanel {
    fn default() -> Self {
        Self {
            count: 100,
            rate: 50.0,
            last: None,
        }
    }
}

impl Compose {
    /// The burst row: how many, how fast, Start; and the last burst's progress.
    pub(super) fn burst_ui(&mut self, ui: &mut egui::Ui, hub: &Hub, ready: bool) -> Option<Action> {
        let mut action = None;
        let running = self.burst.last.as_ref().is_some_and(|b| b.is_running());
        ui.horizontal(|ui| {
            let label = ui.label("Burst");
            ui.add(
                egui::DragValue::new(&mut self.burst.count)
                    .range(1..=MAX_COUNT)
                    .suffix(" messages"),
            )
            .labelled_by(label.id);
            let label = ui.label("at");
            ui.add(
                egui::DragValue::new(&mut self.burst.rate)
                    .range(0.0..=MAX_RATE)
                    .suffix(" /s"),
            )
            .labelled_by(label.id)
            .on_hover_text("0: as fast as the hub accepts them");
            let can_start = ready && !running && self.binary.is_none();
            let start = ui
                .add_enabled(can_start, egui::Button::new("Start burst"))
                .on_hover_text(
                    "Publish the box that many times, its variables rendered per message",
                )
                .on_disabled_hover_text("Needs a valid text payload, and no burst running");
            if start.clicked() {
                action = self
                    .burst_spec()
                    .map(|spec| Action::StartBurst(Box::new(spec)));
            }
            if running
                && ui.button("Cancel burst").clicked()
                && let Some(burst) = &self.burst.last
            {
                burst.cancel();
            }
        });
        if let Some(burst) = &self.burst.last {
            let progress = burst.progress(hub);
            let done = progress.sent as f32 / progress.count.max(1) as f32;
            ui.add(
                egui::ProgressBar::new(done)
                    .text(format!(
                        "burst {}: {} of {} sent ({})",
                        progress.id,
                        progress.sent,
                        progress.count,
                        progress.state.label()
                    ))
                    .desired_height(16.0),
            );
            ui.horizontal(|ui| {
                ui.label(format!("{} accepted", progress.accepted));
                ui.colored_label(theme::OK, format!("{} delivered", progress.delivered));
                ui.colored_label(theme::FAILED, format!("{} failed", progress.failed));
                ui.weak(format!("{} pending", progress.pending));
                if progress.refused > 0 {
                    ui.colored_label(theme::FAILED, format!("{} refused", progress.refused));
                }
            });
            if let Some(error) = &progress.error
                && progress.state != BurstState::Running
            {
                ui.colored_label(theme::FAILED, format::sentence(error));
            }
            // Deliveries go on after the last publish: follow them a while longer.
            if progress.state == BurstState::Running || progress.pending > 0 {
                ui.ctx().request_repaint_after(PROGRESS_EVERY);
            }
        }
        action
    }

    /// The burst the box describes: its text as the template (verbatim when Variables is
    /// off), its content type and topic.
    fn burst_spec(&mut self) -> Option<BurstSpec> {
        let topic = self.topic().ok()?;
        let source = if self.templated() {
            self.text.clone()
        } else {
            format!("{{% raw %}}{}{{% endraw %}}", self.text)
        };
        let template = match Template::parse(&source) {
            Ok(template) => template,
            Err(err) => {
                self.result = Some((format::sentence(&err.to_string()), false));
                return None;
            }
        };
        Some(BurstSpec {
            count: self.burst.count,
            rate: (self.burst.rate > 0.0).then_some(self.burst.rate),
            template,
            content_type: (self.content_type != "(none)").then(|| self.content_type.clone()),
            topic,
        })
    }
}
