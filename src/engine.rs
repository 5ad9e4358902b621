//! The per-event path shared by `run`, `score` and `train`: state → features → model → decision.
//! Decoding happens before (the worker needs the raw bytes for dead letters) and the sink after.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use crate::config::StateConfig;
use crate::decide::Decision;
use crate::decode::{Label, Transaction};
use crate::features::{self, FeatureVector, MAX_DIM};
use crate::model::{Model, Predict};
use crate::state::{country_code, key_of, lock, LabelOutcome, State};

/// What observing one transaction found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// Features, from the state before the transaction.
    pub features: FeatureVector,
    /// Older than its account's or merchant's newest event by more than the allowed lateness:
    /// scored, but not applied to that entity's windows.
    pub late: bool,
}

/// Computes the features of `tx` from the state before it (then the `attributes` named), and
/// applies `tx` to the state.
pub fn observe(state: &State, tx: &Transaction<'_>, attributes: &[String]) -> Observed {
    let mut fv = [0.0f32; MAX_DIM];
    features::attribute_features(tx, attributes, &mut fv);
    let merchant_key = key_of(&tx.merchant_id);
    let mut late = false;
    {
        let acc = state.account(key_of(&tx.account_id));
        let mut a = lock(&acc);
        features::account_features(&a, tx, &mut fv);
        if !a.is_new() && tx.ts < a.w.max_ts_ms.saturating_sub(state.lateness_ms) {
            late = true;
        } else {
            a.w.add(tx.ts, tx.amount as f32);
            a.remember(
                key_of(&tx.tx_id),
                merchant_key,
                tx.ts.div_euclid(1000),
                country_code(tx.country.as_deref()),
            );
        }
    }
    {
        let m = state.merchant(merchant_key);
        let mut m = lock(&m);
        features::merchant_features(&m, tx, &mut fv);
        if m.w.max_ts_ms != i64::MIN && tx.ts < m.w.max_ts_ms.saturating_sub(state.lateness_ms) {
            late = true;
        } else {
            m.w.add(tx.ts, tx.amount as f32);
        }
    }
    Observed { features: fv, late }
}

/// State plus model: the whole per-event decision. The model can be swapped atomically while
/// events flow ([`Engine::swap`]): each event is scored by exactly one model, the one
/// [`Engine::current`] returned for it.
pub struct Engine {
    /// Windowed state.
    pub state: State,
    model: ArcSwap<Model>,
    threshold_override: Option<f32>,
}

impl Engine {
    /// An engine with empty state. `threshold` overrides the model's own (for every model).
    pub fn new(model: Model, threshold: Option<f64>, state: &StateConfig) -> Engine {
        Engine {
            state: State::new(state),
            model: ArcSwap::from_pointee(model),
            threshold_override: threshold.map(|t| t as f32),
        }
    }

    /// The model in use now (cheap: no allocation; hold it for one event).
    #[inline]
    pub fn current(&self) -> Guard<Arc<Model>> {
        self.model.load()
    }

    /// The model in use now, as an owned handle.
    pub fn model(&self) -> Arc<Model> {
        self.model.load_full()
    }

    /// Replaces the model for the events that follow; returns the previous one.
    pub fn swap(&self, model: Model) -> Arc<Model> {
        self.model.swap(Arc::new(model))
    }

    /// The alert threshold for `model`: the configured override, or the model's own.
    #[inline]
    pub fn threshold_for(&self, model: &Model) -> f32 {
        self.threshold_override.unwrap_or(model.threshold())
    }

    /// The alert threshold of the current model.
    pub fn threshold(&self) -> f32 {
        self.threshold_for(&self.current())
    }

    /// Observes and scores one transaction with `model`.
    #[inline]
    pub fn process_with(&self, model: &Model, tx: &Transaction<'_>) -> Decision {
        let o = observe(&self.state, tx, model.attributes());
        let score = model.score(&o.features);
        Decision {
            features: o.features,
            score,
            alert: score >= self.threshold_for(model),
            late: o.late,
        }
    }

    /// Observes and scores one transaction with the current model.
    #[inline]
    pub fn process(&self, tx: &Transaction<'_>) -> Decision {
        let m = self.current();
        self.process_with(&m, tx)
    }

    /// Makes a label visible to the state.
    pub fn apply_label(&self, label: &Label) -> LabelOutcome {
        self.state.apply_label(label)
    }

    /// Words for the features that pushed this decision's score up most, per `model`.
    pub fn reasons(&self, model: &Model, d: &Decision, k: usize) -> Vec<String> {
        model
            .explain(&d.features, k)
            .into_iter()
            .map(|(i, _)| {
                if i < features::N_FEATURES {
                    format!(
                        "{} (typical {})",
                        features::describe(i, d.features[i]),
                        features::format_value(i, model.typical(i))
                    )
                } else {
                    format!(
                        "{} = {:.3} (typical {:.3})",
                        model.input_name(i),
                        d.features[i],
                        model.typical(i)
                    )
                }
            })
            .collect()
    }
}
