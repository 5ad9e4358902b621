//! Signals → one [`CancellationToken`] for the whole worker. SIGINT/SIGTERM cancel it; a second
//! one exits at once. SIGHUP asks for a model reload.
//!
//! [`install`] registers the three handlers synchronously, before the worker does anything that
//! can be observed from outside (listening on HTTP, joining the group): a signal sent as soon as
//! the worker answers is never met by the default action, which would kill the process.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// SIGHUP deliveries, handed to the model watcher. Deliveries that arrive before the watcher
/// listens are kept (one pending reload).
pub struct Hangup(Signal);

impl Hangup {
    /// Waits for the next SIGHUP; `None` once the signal driver is gone.
    pub async fn recv(&mut self) -> Option<()> {
        self.0.recv().await
    }
}

/// Registers SIGINT, SIGTERM and SIGHUP handlers now, and a task that cancels `token` on the
/// first SIGINT/SIGTERM and exits the process (130) on the second. Call inside a tokio runtime.
pub fn install(token: CancellationToken) -> std::io::Result<Hangup> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        for n in 0..2 {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
            if n == 0 {
                tracing::info!("Signal received: draining, then exiting.");
                token.cancel();
            } else {
                tracing::warn!("Second signal: exiting now.");
                std::process::exit(130);
            }
        }
    });
    Ok(Hangup(hup))
}
