//! One [`CancellationToken`] for the whole worker, cancelled by SIGINT/SIGTERM or a fatal error.
//! A second signal exits at once.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGINT/SIGTERM; exits the process (130) on the second.
pub fn install(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "Cannot listen for SIGTERM.");
                    return;
                }
            };
        for n in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
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
}
