//! `/metrics` (Prometheus text), `/healthz` (alive) and `/readyz` (partitions assigned and model
//! loaded).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Health flags behind `/readyz`, set by the pipeline.
#[derive(Clone, Default)]
pub struct Health {
    /// The model is loaded.
    pub model_loaded: Arc<AtomicBool>,
    /// Partitions are assigned.
    pub assigned: Arc<std::sync::Mutex<std::collections::HashSet<(String, i32)>>>,
}

impl Health {
    /// Ready once partitions are assigned and the model is loaded.
    pub fn ready(&self) -> bool {
        self.model_loaded.load(Ordering::Acquire) && !crate::state::lock(&self.assigned).is_empty()
    }
}

#[derive(Clone)]
struct App {
    metrics: Metrics,
    health: Health,
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<App>) -> (StatusCode, &'static str) {
    if app.health.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Serves until `token` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    m: Metrics,
    health: Health,
    token: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(App { metrics: m, health });
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(token.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "HTTP server failed.");
    }
}
