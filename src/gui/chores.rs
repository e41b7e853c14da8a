//! Hub operations that may read the disk, kept off the GUI thread: a resend or a star of
//! a message that memory no longer holds reads it from the store. Each runs on a blocking
//! thread of the runtime; what it has to say comes back through a channel that the app
//! drains every frame, with a repaint request.

use std::sync::mpsc;

use tokio::runtime::Handle;

pub(crate) struct Chores {
    done: mpsc::Sender<String>,
    said: mpsc::Receiver<String>,
}

impl Default for Chores {
    fn default() -> Self {
        let (done, said) = mpsc::channel();
        Self { done, said }
    }
}

impl Chores {
    /// Runs `chore` on the runtime; its notice reaches [`Chores::said`].
    pub(crate) fn run(
        &self,
        runtime: &Handle,
        ctx: &egui::Context,
        chore: impl FnOnce() -> String + Send + 'static,
    ) {
        let (done, ctx) = (self.done.clone(), ctx.clone());
        runtime.spawn_blocking(move || {
            // The app is gone only when the window closed: nobody to tell.
            done.send(chore()).ok();
            ctx.request_repaint();
        });
    }

    /// What the finished chores said, oldest first.
    pub(crate) fn said(&self) -> impl Iterator<Item = String> + '_ {
        self.said.try_iter()
    }
}
