//! Model reload: file watch and SIGHUP.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::Engine;
use crate::metrics::{self, Metrics};
use crate::model::Model;
use crate::shutdown::Hangup;

fn file_stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reloads the model when its file changes (checked every `model.watch_interval_ms`) or on
/// SIGHUP. A file that does not load (partly written, bad checksum, other features) is logged
/// and counted, and the current model stays.
pub(super) async fn model_watcher(
    cfg: Arc<Config>,
    mut hup: Hangup,
    engine: Arc<Engine>,
    metrics: Metrics,
    token: CancellationToken,
) {
    let path = cfg.model.path.clone();
    let mut stamp = file_stamp(&path);
    let every = Duration::from_millis(cfg.model.watch_interval_ms.max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            biased;
            _ = token.cancelled() => break,
            Some(()) = hup.recv() => true,
            _ = tick.tick(), if cfg.model.watch_interval_ms > 0 => false,
        };
        let now = file_stamp(&path);
        if !forced && now == stamp {
            continue;
        }
        stamp = now;
        let p = path.clone();
        match tokio::task::spawn_blocking(move || Model::load(&p)).await {
            Ok(Ok(m)) => {
                let new_version = m.version().to_string();
                let old = engine.swap(m);
                publish_model(&metrics, &engine);
                tracing::info!(from = old.version(), to = %new_version, threshold = engine.threshold(), "Model swapped.");
            }
            Ok(Err(e)) => {
                metrics.error(metrics::STAGE_PROCESSING, "model_reload");
                tracing::error!(error = %e, "Model not reloaded; keeping the current one.");
            }
            Err(e) => {
                metrics.error(metrics::STAGE_PROCESSING, "model_reload");
                tracing::error!(error = %e, "Model reload task failed.");
            }
        }
    }
}

/// The model in use, as metrics: version, threshold in use, the alert budget the model file
/// states (`trained.alert_rate`; none when absent or not positive) and the load time.
pub(super) fn publish_model(metrics: &Metrics, engine: &Engine) {
    let model = engine.current();
    let budget = model.body().trained.alert_rate;
    metrics.model_loaded(
        model.version(),
        f64::from(engine.threshold_for(&model)),
        (budget.is_finite() && budget > 0.0).then_some(budget),
    );
}
