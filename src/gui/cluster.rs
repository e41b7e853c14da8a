//! The Cluster window (cluster mode only): the NATS connection, the instances sharing
//! it, and which instance made each subscriber's last delivery.

use std::time::{Duration, Instant};

use egui::RichText;
use egui_extras::{Column, TableBuilder};

use super::theme;
use crate::cluster::{Cluster, ClusterView};

/// How often the view is read again: instances announce themselves every 2 s.
const REFRESH_EVERY: Duration = Duration::from_millis(500);

#[derive(Default)]
pub(crate) struct ClusterWindow {
    pub(crate) open: bool,
    view: Option<(Instant, ClusterView)>,
}

impl ClusterWindow {
    /// The view as last read (read again if older than half a second): the top bar's
    /// indicator and the window share it.
    pub(crate) fn view(&mut self, cluster: &Cluster) -> &ClusterView {
        if self
            .view
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= REFRESH_EVERY)
        {
            self.view = Some((Instant::now(), cluster.view()));
        }
        &self.view.as_ref().expect("read above").1
    }

    pub(crate) fn show(&mut self, ctx: &egui::Context, cluster: &Cluster) {
        if !self.open {
            return;
        }
        let mut open = self.open;
        let view = self.view(cluster);
        egui::Window::new("Cluster")
            .open(&mut open)
            .default_size([620.0, 420.0])
            .show(ctx, |ui| view_ui(ui, view));
        self.open = open;
    }
}

fn view_ui(ui: &mut egui::Ui, view: &ClusterView) {
    egui::Grid::new("cluster-facts")
        .num_columns(2)
        .show(ui, |ui| {
            ui.weak("NATS");
            ui.monospace(&view.url);
            ui.end_row();
            ui.weak("Connection");
            let colour = if view.connected {
                theme::OK
            } else {
                theme::FAILED
            };
            ui.colored_label(colour, &view.state);
            ui.end_row();
            ui.weak("This instance");
            ui.label(&view.instance);
            ui.end_row();
            ui.weak("Delivered again");
            ui.label(format!("{}", view.redelivered)).on_hover_text(
                "Deliveries another instance had been handed first (it died or did not answer \
             in time): each may have reached its subscriber twice, with the same webhook-id",
            );
            ui.end_row();
        });
    if !view.connected {
        ui.colored_label(
            theme::FAILED,
            "Publishes are refused (503) until the connection is back: nothing is accepted \
             that might not be kept.",
        );
    }
    ui.separator();
    ui.strong(format!("Instances ({})", view.instances.len()));
    let widths = [140.0, 200.0];
    table(
        ui,
        "instances",
        ["Name", "API", "Last seen"],
        widths,
        view.instances.len(),
        |i, ui, col| {
            let instance = &view.instances[i];
            match col {
                0 => {
                    let name = RichText::new(&instance.name);
                    ui.label(if instance.name == view.instance {
                        name.strong()
                    } else {
                        name
                    });
                }
                1 => {
                    ui.monospace(instance.url.as_deref().unwrap_or("not listening"));
                }
                _ => {
                    ui.label(format!("{:.1} s ago", instance.seen_ms_ago as f64 / 1000.0));
                }
            }
        },
    );
    ui.separator();
    ui.strong("Who delivers to whom");
    ui.weak(
        "JetStream hands each subscriber's messages to one instance at a time; this is the \
         instance that made its last delivery.",
    );
    let headers = ["Subscriber", "Instance", "Message"];
    table(
        ui,
        "deliverers",
        headers,
        [220.0, 140.0],
        view.deliverers.len(),
        |i, ui, col| {
            let deliverer = &view.deliverers[i];
            match col {
                0 => ui.monospace(&deliverer.subscriber),
                1 => ui.label(&deliverer.instance),
                _ => ui.label(format!("#{}", deliverer.message)),
            };
        },
    );
}

/// A striped table of three columns (the first two at least `widths` wide), a row per
/// index, each cell drawn by `cell(row, ui, column)`.
fn table(
    ui: &mut egui::Ui,
    salt: &str,
    headers: [&str; 3],
    widths: [f32; 2],
    rows: usize,
    mut cell: impl FnMut(usize, &mut egui::Ui, usize),
) {
    let row_height = ui.text_style_height(&egui::TextStyle::Body) + 4.0;
    ui.push_id(salt, |ui| {
        TableBuilder::new(ui)
            .striped(true)
            .column(Column::auto().at_least(widths[0]))
            .column(Column::auto().at_least(widths[1]))
            .column(Column::remainder())
            .header(row_height, |mut header| {
                for title in headers {
                    header.col(|ui| {
                        ui.strong(title);
                    });
                }
            })
            .body(|body| {
                body.rows(row_height, rows, |mut row| {
                    let index = row.index();
                    for column in 0..3 {
                        row.col(|ui| cell(index, ui, column));
                    }
                });
            });
    });
}
