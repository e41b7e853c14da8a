//! The window while the hub starts: opening the store (which reads back the history) is
//! done on a blocking thread of the runtime, not the GUI thread. If it fails (a data
//! directory in use, full or damaged), the window says why and offers to start in
//! memory instead.

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use tokio::runtime::Handle;

use super::{Backend, HeraldApp, Settings};
use crate::config::Config;
use crate::service::StartError;

enum State {
    Opening(mpsc::Receiver<Result<Backend, StartError>>),
    Problem(String),
    Running(Box<HeraldApp>),
}

pub(crate) struct Starting {
    state: State,
    config: Config,
    runtime: Handle,
    /// Handed to the console once it runs.
    settings: Option<Settings>,
    /// Where the started backend goes, for shutdown once the window closes.
    slot: Arc<OnceLock<Arc<Backend>>>,
}

impl Starting {
    pub(crate) fn new(
        config: Config,
        runtime: Handle,
        settings: Settings,
        slot: Arc<OnceLock<Arc<Backend>>>,
        ctx: &egui::Context,
    ) -> Self {
        let state = open(&config, &runtime, ctx);
        Self {
            state,
            config,
            runtime,
            settings: Some(settings),
            slot,
        }
    }

    fn run(&mut self, backend: Backend, ctx: &egui::Context) {
        let backend = Arc::new(backend);
        backend.repaint_on_hub_events(ctx);
        backend.listen(self.config.bind, ctx);
        self.slot.set(backend.clone()).ok();
        let settings = self.settings.take().unwrap_or_default();
        self.state = State::Running(Box::new(HeraldApp::new(backend, settings, ctx)));
    }
}

/// Starts the backend on a blocking thread; the result comes back through the channel.
fn open(config: &Config, runtime: &Handle, ctx: &egui::Context) -> State {
    let (done, opening) = mpsc::channel();
    let (config, handle, ctx) = (config.clone(), runtime.clone(), ctx.clone());
    runtime.spawn_blocking(move || {
        done.send(Backend::start(&config, handle)).ok();
        ctx.request_repaint();
    });
    State::Opening(opening)
}

impl eframe::App for Starting {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        if let State::Opening(opening) = &self.state {
            match opening.try_recv() {
                Ok(Ok(backend)) => self.run(backend, &ctx),
                Ok(Err(err)) => {
                    tracing::error!("{err}");
                    self.state = State::Problem(err.to_string());
                }
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.state = State::Problem("the hub's start was cut short".to_owned());
                }
            }
        }
        let mut in_memory = false;
        match &mut self.state {
            State::Running(app) => app.ui(ui, frame),
            State::Opening(_) => {
                egui::CentralPanel::default().show(ui, |ui| {
                    ui.add_space(24.0);
                    ui.horizontal(|ui| {
                        ui.spinner();
                        let place = self.config.data_dir.as_deref();
                        ui.label(match place {
                            Some(dir) => format!("Opening the history in {}…", dir.display()),
                            None => "Starting…".to_owned(),
                        });
                    });
                });
            }
            State::Problem(problem) => {
                egui::CentralPanel::default().show(ui, |ui| {
                    ui.add_space(24.0);
                    ui.heading("Herald could not start");
                    ui.add_space(8.0);
                    ui.label(problem.as_str());
                    ui.add_space(16.0);
                    ui.horizontal(|ui| {
                        if !self.config.in_memory {
                            in_memory = ui
                                .button("Start in memory")
                                .on_hover_text(
                                    "Run without keeping history: nothing is written to disk",
                                )
                                .clicked();
                        }
                        if ui.button("Quit").clicked() {
                            ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
                        }
                    });
                });
            }
        }
        if in_memory {
            self.config.in_memory = true;
            self.state = open(&self.config, &self.runtime, &ctx);
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        if let State::Running(app) = &mut self.state {
            app.save(storage);
        }
    }

    fn clear_color(&self, visuals: &egui::Visuals) -> [f32; 4] {
        match &self.state {
            State::Running(app) => app.clear_color(visuals),
            _ => visuals.panel_fill.to_normalized_gamma_f32(),
        }
    }
}
