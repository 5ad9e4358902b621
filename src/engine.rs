//! The per-event path shared by `run`, `score` and `train`: state → features → model → decision.
//! Decoding happens before (the worker needs the raw bytes for dead letters) and the sink after.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use crate::config::StateConfig;
use crate::decode::{Label, Transaction};
use crate::features::{self, FeatureSpec, FeatureVector, MAX_DIM};
use crate::model::{Model, Predict};
use crate::reasons::{self, Reason};
use crate::state::{country_code, key_of, LabelOutcome, State};

/// The verdict on one transaction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Features the model saw.
    pub features: FeatureVector,
    /// Score in [0, 1].
    pub score: f32,
    /// score >= threshold.
    pub alert: bool,
    /// Not applied to the state of its account or merchant: older than the 30-day span, or
    /// more than `state.max_future_secs` ahead (scored all the same).
    pub late: bool,
}

/// What observing one transaction found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// Features, from the state before the transaction.
    pub features: FeatureVector,
    /// Not applied to its account's or its merchant's state: older than that entity's 30-day
    /// span, or too far ahead (`ahead`). Scored all the same.
    pub late: bool,
    /// More than `state.max_future_secs` ahead of the newest event time and of the wall clock:
    /// applied to no state.
    pub ahead: bool,
}

/// Who applies merchant events to the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merchants {
    /// This call: the merchant's windows see the transactions of this stream only (`score`, and
    /// the worker with `state.merchant_scope = "partition"`).
    Apply,
    /// Someone else ([`apply_merchant`], fed from every partition of the topic): this call only
    /// reads the merchant's windows.
    ReadOnly,
}

/// Computes the features of `tx` from the state before it (then the attributes `spec` names),
/// and applies `tx` to the state: to every window whose span still covers it, whatever the
/// arrival order ([`crate::state`]).
#[inline]
pub fn observe(state: &State, tx: &Transaction<'_>, spec: &FeatureSpec) -> Observed {
    observe_with(state, tx, spec, Merchants::Apply)
}

/// [`observe`], with the merchant's windows applied here or by someone else.
#[inline]
pub fn observe_with(
    state: &State,
    tx: &Transaction<'_>,
    spec: &FeatureSpec,
    merchants: Merchants,
) -> Observed {
    observe_full(state, tx, spec, merchants, true)
}

/// [`observe_with`]; with `apply_account` false the account's state is read and not changed
/// (it already holds `tx`: restored from the state changelog, see `pipeline::changelog`).
#[inline]
pub fn observe_full(
    state: &State,
    tx: &Transaction<'_>,
    spec: &FeatureSpec,
    merchants: Merchants,
    apply_account: bool,
) -> Observed {
    let mut fv = [0.0f32; MAX_DIM];
    features::attribute_features(tx, &spec.attributes, &mut fv);
    features::time_features(tx, &mut fv);
    let merchant_key = key_of(&tx.merchant_id);
    let ahead = state.too_far_ahead(tx.ts);
    let acct_late = observe_account(state, tx, merchant_key, ahead, apply_account, &mut fv);
    let merch_late = state.with_merchant(merchant_key, |m| {
        features::merchant_features(m, tx, spec.feedback_delay_days, &mut fv);
        merchants == Merchants::Apply && !ahead && apply_merchant_locked(m, tx.ts, tx.amount as f32)
    });
    if !ahead {
        state.applied(tx.ts);
    }
    Observed {
        features: fv,
        late: ahead || acct_late || merch_late,
        ahead,
    }
}

/// Applies `tx` to its account only (the merchant's windows are someone else's), for a state
/// warm-up of account history. True if it was not applied (too old for the account's 30-day
/// span, or too far ahead).
pub fn observe_account_only(state: &State, tx: &Transaction<'_>) -> bool {
    let mut fv = [0.0f32; MAX_DIM];
    let ahead = state.too_far_ahead(tx.ts);
    let late = observe_account(state, tx, key_of(&tx.merchant_id), ahead, true, &mut fv);
    if !ahead {
        state.applied(tx.ts);
    }
    ahead || late
}

/// Account features into `fv`, then, unless `ahead`, `tx` applied to the account (and the label
/// lookup). True if it was not applied to the account's windows.
#[inline]
fn observe_account(
    state: &State,
    tx: &Transaction<'_>,
    merchant_key: u64,
    ahead: bool,
    apply: bool,
    fv: &mut FeatureVector,
) -> bool {
    if !ahead {
        state.remember_tx(
            key_of(&tx.tx_id).max(1),
            merchant_key,
            tx.ts.div_euclid(1000),
        );
    }
    let amount = tx.amount as f32;
    state.with_account(key_of(&tx.account_id), |a| {
        features::account_features(a, tx, merchant_key, fv);
        if !apply {
            return false;
        }
        if ahead || !a.w.add(tx.ts, amount) {
            return true;
        }
        a.remember(merchant_key, country_code(tx.country.as_deref()));
        false
    })
}

/// Applies one transaction of merchant `merchant_key` (at `ts_ms`, for `amount`) to the
/// merchant's windows, as [`observe`] does. True if it was not applied (too old for the
/// merchant's 30-day span, or too far ahead).
pub fn apply_merchant(state: &State, merchant_key: u64, ts_ms: i64, amount: f32) -> bool {
    if state.too_far_ahead(ts_ms) {
        return true;
    }
    let late = state.with_merchant(merchant_key, |m| apply_merchant_locked(m, ts_ms, amount));
    state.applied(ts_ms);
    late
}

#[inline]
fn apply_merchant_locked(m: &mut crate::state::MerchantState, ts_ms: i64, amount: f32) -> bool {
    m.feedback.add_tx(ts_ms.div_euclid(1000));
    !m.w.add(ts_ms, amount)
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
        self.process_merchants(model, tx, Merchants::Apply)
    }

    /// [`Engine::process_with`], with the merchant's windows applied here or by someone else.
    #[inline]
    pub fn process_merchants(
        &self,
        model: &Model,
        tx: &Transaction<'_>,
        merchants: Merchants,
    ) -> Decision {
        self.process_full(model, tx, merchants, true)
    }

    /// [`Engine::process_merchants`]; the account's state only read when `apply_account` is
    /// false ([`observe_full`]).
    #[inline]
    pub fn process_full(
        &self,
        model: &Model,
        tx: &Transaction<'_>,
        merchants: Merchants,
        apply_account: bool,
    ) -> Decision {
        let o = observe_full(&self.state, tx, model.spec(), merchants, apply_account);
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

    /// The reasons of this decision: the inputs that pushed `model`'s score up most, on the
    /// suspicious side of typical, in words and structured ([`crate::reasons`]).
    pub fn reasons(
        &self,
        model: &Model,
        tx: &Transaction<'_>,
        d: &Decision,
        k: usize,
    ) -> Vec<Reason> {
        reasons::reasons(model, tx, &d.features, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn tx(id: String, ts_s: i64, merchant: &str, amount: f64) -> Transaction<'static> {
        Transaction {
            tx_id: Cow::Owned(id),
            ts: ts_s * 1000,
            account_id: Cow::Borrowed("c1"),
            merchant_id: Cow::Owned(merchant.to_string()),
            amount,
            currency: Cow::Borrowed("EUR"),
            card_id: None,
            mcc: None,
            country: Some(Cow::Borrowed("FR")),
            channel: None,
            device_id: None,
            lat: None,
            lon: None,
            attributes: None,
        }
    }

    fn observe_default(s: &State, t: &Transaction<'_>) -> Observed {
        observe(s, t, &FeatureSpec::default())
    }

    /// Issue 8: events out of order within the 30-day span are applied as if in order: the
    /// same events in time order and newest first leave the same windows.
    #[test]
    fn out_of_order_within_the_span_is_applied_as_in_order() {
        let t0 = 1_700_000_000i64;
        let events: Vec<_> = (0..40i64)
            .map(|k| (t0 + k * 17_000 + (k * 7_919) % 600, 10.0 + (k % 9) as f64))
            .collect();
        let in_order = State::new(&StateConfig::default());
        let shuffled = State::new(&StateConfig::default());
        for (i, (ts, a)) in events.iter().enumerate() {
            assert!(!observe_default(&in_order, &tx(format!("a{i}"), *ts, "m1", *a)).late);
        }
        for (i, (ts, a)) in events.iter().enumerate().rev() {
            let o = observe_default(&shuffled, &tx(format!("a{i}"), *ts, "m1", *a));
            assert!(
                !o.late,
                "event {i}, {} s behind, is within the span",
                events[39].0 - ts
            );
        }
        let probe = tx("p".into(), t0 + 40 * 17_000, "m1", 50.0);
        let a = observe_default(&in_order, &probe).features;
        let b = observe_default(&shuffled, &probe).features;
        for i in 0..crate::features::N_FEATURES {
            approx::assert_abs_diff_eq!(a[i], b[i], epsilon = 1e-3);
        }
        assert_eq!(a[13], 40.0, "30-day count");
    }

    /// Issue 8: an event older than its entity's 30-day span, or more than
    /// `state.max_future_secs` ahead of the newest event and of the wall clock, is scored,
    /// flagged, and applied to nothing; in particular it does not move time forward.
    #[test]
    fn too_old_or_too_far_ahead_is_not_applied() {
        let s = State::new(&StateConfig::default());
        let t0 = 1_700_000_000i64;
        assert!(!observe_default(&s, &tx("a".into(), t0, "m1", 10.0)).late);
        let old = observe_default(&s, &tx("old".into(), t0 - 31 * 86_400, "m1", 10.0));
        assert!(old.late && !old.ahead);
        let now_s = chrono::Utc::now().timestamp();
        let far = observe_default(&s, &tx("far".into(), now_s + 86_400, "m1", 10.0));
        assert!(far.late && far.ahead);
        let next = observe_default(&s, &tx("b".into(), t0 + 60, "m1", 10.0));
        assert!(!next.late);
        assert_eq!(next.features[13], 1.0, "only the first event counts");
        assert_eq!(
            next.features[20], 60.0,
            "time since the previous: not moved forward"
        );
        assert_eq!(
            next.features[37], 1.0,
            "merchant: only the first event counts"
        );
        // Within the bound of the wall clock is fine (a live stream).
        let soon = observe_default(&s, &tx("soon".into(), now_s + 60, "m1", 10.0));
        assert!(!soon.late && !soon.ahead);
    }

    /// An amount far below the account's usual is not a fraud reason (the unsupervised default
    /// model finds it unusual; the reasons keep only the suspicious side).
    #[test]
    fn an_amount_far_below_the_usual_is_not_listed() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default.json");
        let model = Model::load(&path).expect("models/default.json loads");
        let e = Engine::new(model, None, &StateConfig::default());
        let t0 = 1_525_132_800;
        for i in 0..120i64 {
            let amount = 300.0 + ((i * 37) % 21) as f64;
            e.process(&tx(
                format!("u{i}"),
                t0 + i * 43_200,
                &format!("m{}", i % 5),
                amount,
            ));
        }
        let small = tx("small".into(), t0 + 120 * 43_200, "m2", 0.3);
        let d = e.process(&small);
        let m = e.model();
        let all = m.explain(&d.features, m.dim());
        let amount_inputs = [
            "amount",
            "acct_amount_ratio_7d",
            "acct_amount_ratio_30d",
            "acct_amount_zscore_30d",
        ];
        assert!(
            all.iter()
                .any(|(i, _)| amount_inputs.contains(&m.input_name(*i))),
            "the model credits the small amount: {all:?}"
        );
        let r = e.reasons(&m, &small, &d, 50);
        assert!(
            r.iter()
                .all(|r| !amount_inputs.contains(&r.feature.as_str())),
            "{r:#?}"
        );
    }

    /// The shipped default model ranks a transaction of 10x the account's usual amount above
    /// every one of the account's usual transactions.
    #[test]
    fn default_model_ranks_a_10x_amount_above_usual_ones() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default.json");
        let model = Model::load(&path).expect("models/default.json loads");
        let e = Engine::new(model, None, &StateConfig::default());
        let t0 = 1_525_132_800; // 2018-05-01
        let mut usual = Vec::new();
        // Two months of a customer's life: about two purchases a day around 40, at a few shops.
        for i in 0..120i64 {
            let amount = 30.0 + ((i * 37) % 21) as f64;
            let ts = t0 + i * 43_200 + (i * 977) % 3_600;
            let d = e.process(&tx(format!("u{i}"), ts, &format!("m{}", i % 5), amount));
            if i >= 60 {
                usual.push(d.score);
            }
        }
        let ts = t0 + 120 * 43_200 + 1_800;
        let big = e.process(&tx("big".into(), ts, "m2", 400.0)).score;
        let max_usual = usual.iter().copied().fold(0.0f32, f32::max);
        assert!(
            big > max_usual,
            "10x amount scored {big}, the account's usual ones up to {max_usual}"
        );
    }
}
