//! Deliveries per second and delivery latency over the last minute.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use egui_plot::{Line, Plot};

use super::theme;
use crate::hub::Hub;

const WINDOW: usize = 60;

#[derive(Default)]
pub(crate) struct Rates {
    /// (seconds since start, deliveries per second, mean latency in ms) per second.
    samples: VecDeque<[f64; 3]>,
    start: Option<Instant>,
    last: Option<(Instant, u64, u64, Duration)>,
}

impl Rates {
    /// Takes a sample once a second; cheap to call every frame.
    pub(crate) fn sample(&mut self, hub: &Hub) {
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        if self
            .last
            .is_some_and(|(at, ..)| now.duration_since(at) < Duration::from_secs(1))
        {
            return;
        }
        let totals = hub.totals();
        let metrics = hub.metrics();
        let finished = totals.delivered + totals.failed;
        if let Some((at, before, count_before, sum_before)) = self.last {
            let seconds = now.duration_since(at).as_secs_f64();
            let answered = metrics.latency_count.saturating_sub(count_before);
            let latency = if answered == 0 {
                0.0
            } else {
                (metrics.latency_sum.saturating_sub(sum_before)).as_secs_f64() * 1000.0
                    / answered as f64
            };
            if self.samples.len() == WINDOW {
                self.samples.pop_front();
            }
            self.samples.push_back([
                now.duration_since(start).as_secs_f64(),
                finished.saturating_sub(before) as f64 / seconds,
                latency,
            ]);
        }
        self.last = Some((now, finished, metrics.latency_count, metrics.latency_sum));
    }

    /// Whether anything was delivered in the last minute (so the plots still move).
    pub(crate) fn active(&self) -> bool {
        self.samples.iter().any(|s| s[1] > 0.0)
    }

    pub(crate) fn plots_ui(&self, ui: &mut egui::Ui) {
        let height = ui.available_height().max(60.0);
        let width = ui.available_width() / 2.0 - 6.0;
        ui.horizontal(|ui| {
            for (title, index, colour, id) in [
                ("deliveries/s", 1, theme::OK, "rate_plot"),
                ("latency ms", 2, theme::PENDING, "latency_plot"),
            ] {
                let points: Vec<[f64; 2]> = self.samples.iter().map(|s| [s[0], s[index]]).collect();
                ui.vertical(|ui| {
                    ui.label(
                        egui::RichText::new(format!("{title}, last minute"))
                            .small()
                            .weak(),
                    );
                    Plot::new(id)
                        .height(height - 18.0)
                        .width(width)
                        .allow_zoom(false)
                        .allow_drag(false)
                        .allow_scroll(false)
                        .include_y(0.0)
                        .include_y(1.0)
                        .show_background(false)
                        .show_x(false)
                        .show(ui, |plot| plot.line(Line::new(title, points).color(colour)));
                });
            }
        });
    }
}
