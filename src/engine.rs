//! The per-event path shared by `run`, `score` and `train`: state → features → model → decision.
//! Decoding happens before (the worker needs the raw bytes for dead letters) and the sink after.

use std::sync::Arc;

use crate::config::StateConfig;
use crate::decide::Decision;
use crate::decode::{Label, Transaction};
use crate::features::{self, FeatureVector, N_FEATURES};
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

/// Computes the features of `tx` from the state before it, then applies `tx` to the state.
pub fn observe(state: &State, tx: &Transaction<'_>) -> Observed {
    let mut fv = [0.0f32; N_FEATURES];
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

/// State plus model: the whole per-event decision.
pub struct Engine {
    /// Windowed state.
    pub state: State,
    model: Arc<Model>,
    threshold: f32,
}

impl Engine {
    /// An engine with empty state. `threshold` overrides the model's own.
    pub fn new(model: Model, threshold: Option<f64>, state: &StateConfig) -> Engine {
        let threshold = threshold.map(|t| t as f32).unwrap_or(model.threshold());
        Engine {
            state: State::new(state),
            model: Arc::new(model),
            threshold,
        }
    }

    /// The model in use.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The alert threshold in use.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Observes and scores one transaction.
    #[inline]
    pub fn process(&self, tx: &Transaction<'_>) -> Decision {
        let o = observe(&self.state, tx);
        let score = self.model.score(&o.features);
        Decision {
            features: o.features,
            score,
            alert: score >= self.threshold,
            late: o.late,
        }
    }

    /// Makes a label visible to the state.
    pub fn apply_label(&self, label: &Label) -> LabelOutcome {
        self.state.apply_label(label)
    }

    /// Words for the features that pushed this decision's score up most.
    pub fn reasons(&self, d: &Decision, k: usize) -> Vec<String> {
        self.model
            .explain(&d.features, k)
            .into_iter()
            .map(|(i, _)| {
                format!(
                    "{} (typical {})",
                    features::describe(i, d.features[i]),
                    features::format_value(i, self.model.typical(i))
                )
            })
            .collect()
    }
}
