//! The window Herald opens when its hub cannot start (a data directory in use, full or
//! unreadable): the reason, what to do about it, and a way to go on in memory.

use std::sync::{Arc, OnceLock};

use tokio::runtime::Handle;

use super::{Backend, HeraldApp, Settings};
use crate::config::Config;

/// What it takes to start the console after all, in memory.
pub(crate) struct Retry {
    pub(crate) config: Config,
    pub(crate) runtime: Handle,
    pub(crate) settings: Settings,
    /// Where the started backend goes, for shutdown once the window closes.
    pub(crate) slot: Arc<OnceLock<Arc<Backend>>>,
}

pub(crate) struct StartProblem {
    problem: String,
    retry: Option<Retry>,
    /// The console, once started in memory.
    app: Option<HeraldApp>,
}

impl StartProblem {
    pub(crate) fn new(problem: String, retry: Retry) -> Self {
        Self {
            problem,
            retry: Some(retry),
            app: None,
        }
    }

    fn start_in_memory(&mut self, ctx: &egui::Context) {
        let Some(mut retry) = self.retry.take() else {
            return;
        };
        retry.config.in_memory = true;
        match Backend::start(&retry.config, retry.runtime.clone()) {
            Ok(backend) => {
                let backend = Arc::new(backend);
                backend.repaint_on_hub_events(ctx);
                backend.listen(retry.config.bind, ctx);
                retry.slot.set(backend.clone()).ok();
                self.app = Some(HeraldApp::new(backend, retry.settings, ctx));
            }
            Err(err) => self.problem = err.to_string(),
        }
    }
}

impl eframe::App for StartProblem {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        if let Some(app) = &mut self.app {
            app.ui(ui, frame);
            return;
        }
        let mut start = false;
        egui::CentralPanel::default().show(ui, |ui| {
            ui.add_space(24.0);
            ui.heading("Herald could not start");
            ui.add_space(8.0);
            ui.label(&self.problem);
            ui.add_space(16.0);
            ui.horizontal(|ui| {
                if self.retry.is_some() {
                    start = ui
                        .button("Start in memory")
                        .on_hover_text("Run without keeping history: nothing is written to disk")
                        .clicked();
                }
                if ui.button("Quit").clicked() {
                    ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
        });
        if start {
            self.start_in_memory(ui.ctx());
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        if let Some(app) = &mut self.app {
            app.save(storage);
        }
    }
}
