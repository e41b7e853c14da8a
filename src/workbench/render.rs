//! Where bursts' templates are rendered: one thread of its own, outside the runtime, at
//! the lowest priority the OS has. A template may take milliseconds a message (fuel
//! allows loops), and a burst renders as fast as the hub takes messages: rendered on the
//! runtime, two bursts of a 15 ms template held its workers, and an unrelated
//! subscriber's deliveries waited seconds behind them (#24).
//!
//! So template work gets a bounded share of the CPU: one thread for every burst of the
//! hub (each burst waits for its turn, message by message), and on Linux that thread is
//! `SCHED_IDLE`, which any other thread preempts on waking, the runtime's `SCHED_BATCH`
//! workers included. A burst then goes as fast as the CPU the deliveries leave it; on a
//! machine busy with other work it slows down rather than taking the CPU from them.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::template::{Template, TemplateError};

/// What a rendering comes back as.
pub(crate) type Rendered = Result<String, TemplateError>;

/// The render thread, as those who queue work for it see it. The thread ends when this
/// is dropped and its queue is empty.
#[derive(Debug)]
pub(crate) struct Renderer {
    jobs: mpsc::Sender<Job>,
}

struct Job {
    template: Arc<Template>,
    seq: u64,
    done: oneshot::Sender<Rendered>,
}

impl Renderer {
    /// Starts the render thread.
    pub(crate) fn start() -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("herald-render".into())
            .spawn(move || {
                lower_priority();
                for job in queue {
                    // Its burst was cancelled while it waited.
                    if job.done.is_closed() {
                        continue;
                    }
                    // A panic in a template engine must fail one burst, not every burst
                    // that renders here after it.
                    let rendered = catch_unwind(AssertUnwindSafe(|| job.template.render(job.seq)))
                        .unwrap_or_else(|_| {
                            Err(TemplateError::Render("the template engine failed".into()))
                        });
                    job.done.send(rendered).ok();
                }
            })?;
        Ok(Self { jobs })
    }

    /// Queues message `seq` of `template`; the answer comes on the receiver, or it is
    /// closed if the thread is gone.
    pub(crate) fn render(&self, template: &Arc<Template>, seq: u64) -> oneshot::Receiver<Rendered> {
        let (done, rendered) = oneshot::channel();
        let job = Job {
            template: template.clone(),
            seq,
            done,
        };
        // A send fails only when the thread is gone: dropping the job closes the receiver,
        // which tells the burst.
        self.jobs.send(job).ok();
        rendered
    }
}

/// Makes the calling thread yield to every other one: `SCHED_IDLE` on Linux.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler reads `param` only; 0 names the calling thread.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
            tracing::debug!("could not lower the render thread's priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renders_off_the_runtime_in_order() {
        let renderer = Renderer::start().unwrap();
        let template = Arc::new(Template::parse("n={{ seq }}").unwrap());
        let first = renderer.render(&template, 1);
        let second = renderer.render(&template, 2);
        assert_eq!(second.await.unwrap().unwrap(), "n=2");
        assert_eq!(first.await.unwrap().unwrap(), "n=1");
        let failing = Arc::new(Template::parse("{{ missing }}").unwrap());
        assert!(renderer.render(&failing, 1).await.unwrap().is_err());
        // Still rendering after a failure.
        assert_eq!(renderer.render(&template, 3).await.unwrap().unwrap(), "n=3");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_render_thread_is_idle_work() {
        let policy = std::thread::spawn(|| {
            lower_priority();
            // SAFETY: sched_getscheduler only reads the calling thread's policy.
            unsafe { libc::sched_getscheduler(0) }
        })
        .join()
        .unwrap();
        assert_eq!(policy, libc::SCHED_IDLE);
    }
}
