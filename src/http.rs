//! `/metrics` (Prometheus text), `/healthz` (the process makes progress) and `/readyz` (it
//! decides events now), and the [`Health`] the pipeline reports into.
//!
//! `/readyz` answers 200 with `ready: N partitions assigned`, or `ready: standby, no partitions
//! assigned` for a worker that joined the group and got nothing (more workers than partitions:
//! it is healthy and takes over on the next rebalance). It answers 503 with the first reason
//! that holds: `not ready: model not loaded`, `broker unreachable`, a task that died (`labels
//! task stopped: ...`), `waiting for partition assignment`, `warming up N of M partitions`.
//! `/healthz` answers 503 `not live: ...` once the poll loop has not run for
//! `metrics.stall_timeout_ms`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::state::lock;

/// A partition as `/readyz` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartitionHealth {
    /// Assignment generation (a partition assigned again is a new one).
    epoch: u64,
    /// Its state warm-up is done.
    warmed: bool,
}

#[derive(Default)]
struct Inner {
    model_loaded: AtomicBool,
    joined: AtomicBool,
    broker_down: AtomicBool,
    /// Wall-clock ms of the last poll-loop turn; 0 before the loop starts.
    last_poll_ms: AtomicI64,
    stall_timeout_ms: AtomicI64,
    partitions: Mutex<HashMap<(String, i32), PartitionHealth>>,
    /// Problems that make the worker not ready, by what reported them.
    problems: Mutex<BTreeMap<String, String>>,
}

/// What `/healthz` and `/readyz` report; cheap to clone, shared by the pipeline's parts.
#[derive(Clone, Default)]
pub struct Health(Arc<Inner>);

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Health {
    /// A health with the given stall timeout for `/healthz`.
    pub fn new(stall_timeout_ms: u64) -> Health {
        let h = Health::default();
        h.0.stall_timeout_ms.store(
            stall_timeout_ms.min(i64::MAX as u64) as i64,
            Ordering::Relaxed,
        );
        h
    }

    /// The model is loaded.
    pub fn set_model_loaded(&self) {
        self.0.model_loaded.store(true, Ordering::Release);
    }

    /// The consumer took part in a rebalance (possibly with no partitions for it).
    pub fn set_joined(&self) {
        self.0.joined.store(true, Ordering::Release);
    }

    /// True once the consumer took part in a rebalance.
    pub fn joined(&self) -> bool {
        self.0.joined.load(Ordering::Acquire)
    }

    /// The broker connection state, from librdkafka's error callback and statistics.
    pub fn set_broker_down(&self, down: bool) {
        let was = self.0.broker_down.swap(down, Ordering::AcqRel);
        if was != down {
            if down {
                tracing::warn!("All brokers are down: not ready.");
            } else {
                tracing::info!("Broker reachable again.");
            }
        }
    }

    /// The poll loop ran now.
    pub fn polled(&self) {
        self.0.last_poll_ms.store(now_ms(), Ordering::Release);
    }

    /// A partition was assigned (generation `epoch`); not warmed yet.
    pub fn partition_assigned(&self, topic: &str, partition: i32, epoch: u64) {
        lock(&self.0.partitions).insert(
            (topic.to_string(), partition),
            PartitionHealth {
                epoch,
                warmed: false,
            },
        );
    }

    /// A partition was revoked or lost.
    pub fn partition_revoked(&self, topic: &str, partition: i32) {
        lock(&self.0.partitions).remove(&(topic.to_string(), partition));
    }

    /// The warm-up of generation `epoch` of a partition is done.
    pub fn partition_warmed(&self, topic: &str, partition: i32, epoch: u64) {
        if let Some(p) = lock(&self.0.partitions).get_mut(&(topic.to_string(), partition)) {
            if p.epoch == epoch {
                p.warmed = true;
            }
        }
    }

    /// The current generation of an assigned partition.
    pub fn epoch(&self, topic: &str, partition: i32) -> Option<u64> {
        lock(&self.0.partitions)
            .get(&(topic.to_string(), partition))
            .map(|p| p.epoch)
    }

    /// Partitions assigned now.
    pub fn assigned(&self) -> usize {
        lock(&self.0.partitions).len()
    }

    /// True once the worker joined and every assigned partition is warmed up: the moment the
    /// labels topic may be applied on top of the rebuilt state.
    pub fn warm(&self) -> bool {
        self.0.joined.load(Ordering::Acquire) && lock(&self.0.partitions).values().all(|p| p.warmed)
    }

    /// Records (`Some`) or clears (`None`) a problem reported by `who`.
    pub fn set_problem(&self, who: &str, problem: Option<String>) {
        let mut p = lock(&self.0.problems);
        match problem {
            Some(text) => {
                p.insert(who.to_string(), text);
            }
            None => {
                p.remove(who);
            }
        }
    }

    /// `(ready, body)` for `/readyz`.
    pub fn readiness(&self) -> (bool, String) {
        let i = &self.0;
        if !i.model_loaded.load(Ordering::Acquire) {
            return (false, "not ready: model not loaded".into());
        }
        if i.broker_down.load(Ordering::Acquire) {
            return (false, "not ready: broker unreachable".into());
        }
        if let Some(p) = lock(&i.problems).values().next() {
            return (false, format!("not ready: {p}"));
        }
        if !i.joined.load(Ordering::Acquire) {
            return (false, "not ready: waiting for partition assignment".into());
        }
        let parts = lock(&i.partitions);
        let warming = parts.values().filter(|p| !p.warmed).count();
        if warming > 0 {
            return (
                false,
                format!(
                    "not ready: warming up {warming} of {} partitions",
                    parts.len()
                ),
            );
        }
        if parts.is_empty() {
            return (true, "ready: standby, no partitions assigned".into());
        }
        let n = parts.len();
        let plural = if n == 1 { "" } else { "s" };
        (true, format!("ready: {n} partition{plural} assigned"))
    }

    /// `(live, body)` for `/healthz` at wall-clock `now_ms`.
    pub fn liveness_at(&self, now_ms: i64) -> (bool, String) {
        let last = self.0.last_poll_ms.load(Ordering::Acquire);
        let stall = self.0.stall_timeout_ms.load(Ordering::Relaxed);
        if last > 0 && stall > 0 && now_ms - last > stall {
            return (
                false,
                format!(
                    "not live: the poll loop has not run for {:.1} s",
                    (now_ms - last) as f64 / 1000.0
                ),
            );
        }
        (true, "ok".into())
    }

    /// Ready now.
    pub fn ready(&self) -> bool {
        self.readiness().0
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

fn answer((ok, body): (bool, String)) -> (StatusCode, String) {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, format!("{body}\n"))
}

async fn healthz(State(app): State<App>) -> (StatusCode, String) {
    answer(app.health.liveness_at(now_ms()))
}

async fn readyz(State(app): State<App>) -> (StatusCode, String) {
    answer(app.health.readiness())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_the_first_reason() {
        let h = Health::new(30_000);
        assert_eq!(h.readiness(), (false, "not ready: model not loaded".into()));
        h.set_model_loaded();
        assert_eq!(
            h.readiness(),
            (false, "not ready: waiting for partition assignment".into())
        );
        h.set_joined();
        assert_eq!(
            h.readiness(),
            (true, "ready: standby, no partitions assigned".into())
        );
        assert!(h.warm(), "a standby applies labels at once");
        h.partition_assigned("tx", 0, 1);
        h.partition_assigned("tx", 1, 2);
        assert_eq!(
            h.readiness(),
            (false, "not ready: warming up 2 of 2 partitions".into())
        );
        assert!(!h.warm());
        h.partition_warmed("tx", 0, 1);
        h.partition_warmed("tx", 1, 1); // an older generation: ignored
        assert_eq!(
            h.readiness(),
            (false, "not ready: warming up 1 of 2 partitions".into())
        );
        h.partition_warmed("tx", 1, 2);
        assert_eq!(h.readiness(), (true, "ready: 2 partitions assigned".into()));
        assert!(h.warm());
        h.set_broker_down(true);
        assert_eq!(
            h.readiness(),
            (false, "not ready: broker unreachable".into())
        );
        h.set_broker_down(false);
        h.set_problem("labels", Some("labels task stopped: boom".into()));
        assert_eq!(
            h.readiness(),
            (false, "not ready: labels task stopped: boom".into())
        );
        h.set_problem("labels", None);
        h.partition_revoked("tx", 1);
        assert_eq!(h.readiness(), (true, "ready: 1 partition assigned".into()));
        assert_eq!(h.epoch("tx", 0), Some(1));
        assert_eq!(h.epoch("tx", 1), None);
    }

    #[test]
    fn liveness_fails_when_the_poll_loop_stalls() {
        let h = Health::new(30_000);
        assert!(h.liveness_at(now_ms()).0, "live before the loop starts");
        h.polled();
        let t = h.0.last_poll_ms.load(Ordering::Acquire);
        assert!(h.liveness_at(t + 29_000).0);
        let (live, body) = h.liveness_at(t + 31_000);
        assert!(!live);
        assert_eq!(body, "not live: the poll loop has not run for 31.0 s");
    }

    #[test]
    fn health_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Health>();
    }
}
