//! Supervised models — logistic regression (linfa-logistic), random forest (linfa-ensemble of
//! linfa-trees) and gradient-boosted trees ([`super::gbdt`]) — and their training: class
//! imbalance handled by undersampling genuine transactions (logistic, forest) or by weights
//! (trees), hyperparameters chosen on the last quarter of the training range (time-ordered,
//! never later data), the threshold chosen for an alert budget or a precision.

use linfa::prelude::*;
use linfa::DatasetBase;
use linfa_ensemble::EnsembleLearnerParams;
use linfa_logistic::LogisticRegression;
use linfa_trees::{DecisionTree, TreeNode};
use ndarray::{Array1, Array2};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::gbdt::{Gbdt, GbdtConfig};
use super::training::{fit_scaler, mask, version_of, TrainMeta};
use super::{standardise, FitError, ModelBody, ModelError, Params, ParamsError, Scaler, TrainInfo};
use crate::features::{FeatureVector, MAX_DIM, N_FEATURES};

/// Stored logistic regression: P(fraud) = σ(w·z + b) on standardised inputs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogisticParams {
    /// Weights.
    pub weights: Vec<f32>,
    /// Intercept.
    pub intercept: f32,
    /// L2 penalty used.
    pub alpha: f64,
}

/// One node of a stored tree: a split (`feature < threshold` goes left) or a leaf.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Node {
    /// Input index; `u32::MAX` for a leaf.
    pub feature: u32,
    /// Split value (leaf: the leaf's value).
    pub value: f32,
    /// Left child index.
    pub left: u32,
    /// Right child index.
    pub right: u32,
}

/// Stored random forest: the share of trees voting fraud.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ForestParams {
    /// Trees, each a node array whose root is node 0.
    pub trees: Vec<Vec<Node>>,
    /// Depth limit used.
    pub max_depth: usize,
}

/// Stored gradient-boosted trees.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TreesParams {
    /// The booster.
    pub model: Gbdt,
    /// Its configuration.
    pub config: GbdtConfig,
}

/// Ready-to-score logistic regression.
#[derive(Debug, Clone)]
pub struct Logistic {
    w: Vec<f32>,
    b: f32,
}

impl Logistic {
    /// Checks the shape.
    pub fn new(p: &LogisticParams, dim: usize) -> Result<Logistic, ParamsError> {
        if p.weights.len() != dim {
            return Err(ParamsError::WeightCount {
                weights: p.weights.len(),
                inputs: dim,
            });
        }
        Ok(Logistic {
            w: p.weights.clone(),
            b: p.intercept,
        })
    }

    /// P(fraud).
    #[inline]
    pub fn predict(&self, z: &[f32]) -> f32 {
        let t: f32 = self.b + z.iter().zip(&self.w).map(|(a, b)| a * b).sum::<f32>();
        1.0 / (1.0 + (-t).exp())
    }

    /// Inputs by their positive contribution w·z.
    pub fn explain(&self, z: &[f32], k: usize) -> Vec<(usize, f32)> {
        top_k(z.iter().zip(&self.w).map(|(a, b)| a * b).enumerate(), k)
    }
}

/// Ready-to-score random forest.
#[derive(Debug, Clone)]
pub struct Forest {
    trees: Vec<Vec<Node>>,
}

const LEAF: u32 = u32::MAX;

fn leaf_of<'a>(tree: &'a [Node], z: &[f32], mut visit: impl FnMut(&Node)) -> Option<&'a Node> {
    let mut i = 0usize;
    for _ in 0..=tree.len() {
        let n = tree.get(i)?;
        if n.feature == LEAF {
            return Some(n);
        }
        visit(n);
        let v = z.get(n.feature as usize).copied().unwrap_or(0.0);
        i = if v < n.value { n.left } else { n.right } as usize;
    }
    None
}

impl Forest {
    /// Checks every reference.
    pub fn new(p: &ForestParams, dim: usize) -> Result<Forest, ParamsError> {
        for (t, tree) in p.trees.iter().enumerate() {
            for (i, n) in tree.iter().enumerate() {
                if n.feature != LEAF
                    && (n.feature as usize >= dim
                        || n.left as usize >= tree.len()
                        || n.right as usize >= tree.len())
                {
                    return Err(ParamsError::NodeOutOfRange {
                        model: "forest",
                        tree: t,
                        node: i,
                        feature: n.feature,
                        left: n.left,
                        right: n.right,
                        nodes: tree.len(),
                        inputs: dim,
                    });
                }
            }
        }
        if p.trees.is_empty() {
            return Err(ParamsError::NoTrees { model: "forest" });
        }
        Ok(Forest {
            trees: p.trees.clone(),
        })
    }

    /// Share of trees voting fraud.
    #[inline]
    pub fn predict(&self, z: &[f32]) -> f32 {
        vote_share(&self.trees, z)
    }

    /// Inputs split on along the paths of the trees voting fraud, by how many such trees use them.
    pub fn explain(&self, z: &[f32], k: usize) -> Vec<(usize, f32)> {
        let mut count = vec![0.0f32; z.len()];
        for t in &self.trees {
            let mut used = Vec::new();
            if let Some(leaf) = leaf_of(t, z, |n| used.push(n.feature as usize)) {
                if leaf.value > 0.5 {
                    used.sort_unstable();
                    used.dedup();
                    for f in used {
                        if let Some(c) = count.get_mut(f) {
                            *c += 1.0;
                        }
                    }
                }
            }
        }
        top_k(count.into_iter().enumerate(), k)
    }
}

/// Share of `trees` whose leaf for `z` votes fraud.
#[inline]
fn vote_share(trees: &[Vec<Node>], z: &[f32]) -> f32 {
    let votes: f32 = trees
        .iter()
        .filter_map(|t| leaf_of(t, z, |_| {}).map(|n| n.value))
        .sum();
    votes / trees.len().max(1) as f32
}

fn top_k(it: impl Iterator<Item = (usize, f32)>, k: usize) -> Vec<(usize, f32)> {
    let mut v: Vec<(usize, f32)> = it.filter(|(_, c)| *c > 0.0).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.truncate(k);
    v
}

/// The supervised kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Logistic regression.
    Logistic,
    /// Random forest.
    Forest,
    /// Gradient-boosted trees (recommended).
    Trees,
}

impl Kind {
    /// The name `train --model` takes.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Logistic => "logistic",
            Kind::Forest => "forest",
            Kind::Trees => "trees",
        }
    }
}

/// How the threshold is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdTarget {
    /// Alert on this share of transactions like the training ones.
    AlertRate(f64),
    /// The lowest threshold whose precision on the held-out quarter reaches this.
    Precision(f64),
}

/// Average precision (sklearn's definition, ties grouped).
pub fn average_precision(scores: &[f32], y: &[bool]) -> f64 {
    crate::ranking::average_precision(scores, y)
}

struct Data {
    z: Vec<f32>,
    dim: usize,
}

impl Data {
    fn row(&self, i: usize) -> &[f32] {
        &self.z[i * self.dim..(i + 1) * self.dim]
    }
}

/// Genuine rows kept per fraud row when undersampling.
const NEG_PER_POS: usize = 20;

fn undersample(idx: &[usize], y: &[bool], seed: u64) -> Vec<usize> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let pos: Vec<usize> = idx.iter().copied().filter(|i| y[*i]).collect();
    let mut neg: Vec<usize> = idx.iter().copied().filter(|i| !y[*i]).collect();
    neg.shuffle(&mut rng);
    neg.truncate((pos.len() * NEG_PER_POS).max(1000));
    let mut all = pos;
    all.extend(neg);
    all.sort_unstable();
    all
}

fn matrix(d: &Data, idx: &[usize]) -> Array2<f64> {
    let mut m = Array2::<f64>::zeros((idx.len(), d.dim));
    for (r, &i) in idx.iter().enumerate() {
        for (c, v) in d.row(i).iter().enumerate() {
            m[[r, c]] = *v as f64;
        }
    }
    m
}

fn fit_logistic(
    d: &Data,
    y: &[bool],
    idx: &[usize],
    alpha: f64,
    seed: u64,
) -> Result<Logistic, FitError> {
    let rows = undersample(idx, y, seed);
    let x = matrix(d, &rows);
    let t: Array1<bool> = rows.iter().map(|i| y[*i]).collect();
    let fitted = LogisticRegression::default()
        .alpha(alpha)
        .max_iterations(200)
        .fit(&DatasetBase::new(x, t))
        .map_err(|e| FitError::Linfa {
            model: "logistic regression",
            detail: e.to_string(),
        })?;
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    Ok(Logistic {
        w: fitted.params().iter().map(|v| (sign * v) as f32).collect(),
        b: (sign * fitted.intercept()) as f32,
    })
}

fn convert_tree(root: &TreeNode<f64, usize>, features: &[usize]) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::new();
    fn walk(n: &TreeNode<f64, usize>, features: &[usize], out: &mut Vec<Node>) -> u32 {
        let me = out.len();
        out.push(Node {
            feature: LEAF,
            value: 0.0,
            left: 0,
            right: 0,
        });
        if n.is_leaf() {
            out[me].value = if n.prediction() == Some(1) { 1.0 } else { 0.0 };
            return me as u32;
        }
        let (f, v, _) = n.split();
        let kids = n.children();
        let (Some(Some(l)), Some(Some(r))) = (kids.first().copied(), kids.get(1).copied()) else {
            out[me].value = 0.0;
            return me as u32;
        };
        let li = walk(l, features, out);
        let ri = walk(r, features, out);
        out[me] = Node {
            feature: features.get(f).copied().unwrap_or(f) as u32,
            value: v as f32,
            left: li,
            right: ri,
        };
        me as u32
    }
    walk(root, features, &mut out);
    out
}

fn fit_forest(
    d: &Data,
    y: &[bool],
    idx: &[usize],
    depth: usize,
    seed: u64,
) -> Result<ForestParams, FitError> {
    let rows = undersample(idx, y, seed);
    let x = matrix(d, &rows);
    let t: Array1<usize> = rows.iter().map(|i| usize::from(y[*i])).collect();
    let rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let forest = EnsembleLearnerParams::new_fixed_rng(
        DecisionTree::params()
            .max_depth(Some(depth))
            .min_weight_leaf(2.0),
        rng,
    )
    .ensemble_size(60)
    .bootstrap_proportion(0.7)
    .feature_proportion(0.6)
    .fit(&DatasetBase::new(x, t))
    .map_err(|e| FitError::Linfa {
        model: "random forest",
        detail: e.to_string(),
    })?;
    let trees = forest
        .models
        .iter()
        .zip(&forest.model_features)
        .map(|(m, f)| convert_tree(m.root_node(), f))
        .collect();
    Ok(ForestParams {
        trees,
        max_depth: depth,
    })
}

fn fit_trees(d: &Data, y: &[bool], idx: &[usize], cfg: &GbdtConfig) -> Result<Gbdt, FitError> {
    let pos = idx.iter().filter(|i| y[**i]).count().max(1) as f32;
    let neg = (idx.len() as f32 - pos).max(1.0);
    // Square-root balancing: up-weights frauds without flattening the ranking of genuine ones.
    let w_pos = (neg / pos).sqrt();
    let mut x = Vec::with_capacity(idx.len() * d.dim);
    let mut t = Vec::with_capacity(idx.len());
    let mut w = Vec::with_capacity(idx.len());
    for &i in idx {
        x.extend_from_slice(d.row(i));
        t.push(y[i]);
        w.push(if y[i] { w_pos } else { 1.0 });
    }
    Ok(Gbdt::fit(&x, d.dim, &t, &w, cfg)?)
}

enum Fitted {
    Logistic(Logistic, f64),
    Forest(ForestParams),
    Trees(Gbdt, GbdtConfig),
}

impl Fitted {
    fn predict(&self, z: &[f32]) -> f32 {
        match self {
            Fitted::Logistic(m, _) => m.predict(z),
            Fitted::Forest(p) => vote_share(&p.trees, z),
            Fitted::Trees(m, _) => m.predict(z),
        }
    }
}

/// Fits one configuration on the given rows.
type FitFn = Box<dyn Fn(&Data, &[bool], &[usize]) -> Result<Fitted, FitError>>;

/// Most boosting rounds; early stopping on the validation period picks fewer.
pub const MAX_TREES: usize = 400;
/// Early stopping looks at the validation AP every this many trees.
const STOP_STEP: usize = 20;

fn candidates(kind: Kind, seed: u64) -> Vec<(String, FitFn)> {
    match kind {
        Kind::Logistic => [0.01, 0.1, 1.0]
            .into_iter()
            .map(|alpha| {
                let f: FitFn = Box::new(move |d, y, idx| {
                    fit_logistic(d, y, idx, alpha, seed).map(|m| Fitted::Logistic(m, alpha))
                });
                (format!("alpha={alpha}"), f)
            })
            .collect(),
        Kind::Forest => [8usize, 14]
            .into_iter()
            .map(|depth| {
                let f: FitFn = Box::new(move |d, y, idx| {
                    fit_forest(d, y, idx, depth, seed).map(Fitted::Forest)
                });
                (format!("max_depth={depth}"), f)
            })
            .collect(),
        // Regularised: shallow trees, a minimum hessian per leaf, row and column subsampling;
        // the number of trees comes from early stopping on the validation period.
        Kind::Trees => [(0.05f32, 3usize, 5.0f32), (0.05, 5, 10.0), (0.1, 4, 20.0)]
            .into_iter()
            .map(|(lr, depth, mcw)| {
                let cfg = GbdtConfig {
                    n_trees: MAX_TREES,
                    learning_rate: lr,
                    max_depth: depth,
                    min_child_weight: mcw,
                    subsample: 0.7,
                    colsample: 0.7,
                    seed,
                };
                let name = format!("learning_rate={lr},max_depth={depth},min_child_weight={mcw}");
                let f: FitFn = Box::new(move |d, y, idx| {
                    fit_trees(d, y, idx, &cfg).map(|m| Fitted::Trees(m, cfg.clone()))
                });
                (name, f)
            })
            .collect(),
    }
}

/// Where a supervised model learns and is validated, as row ranges of the time-ordered rows.
///
/// `fit` is the training range shifted back so that `val` (the validation period) follows it
/// after a gap as long as the label delay, as a deployed model meets data: hyperparameters,
/// the number of trees and the threshold are chosen on `val`, never on rows interleaved with
/// training. `train` is the range the final model is refitted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Rows the candidates are fitted on.
    pub fit: std::ops::Range<usize>,
    /// Rows they are validated on (after the gap).
    pub val: std::ops::Range<usize>,
    /// Rows the final model is fitted on.
    pub train: std::ops::Range<usize>,
    /// Words for the report, e.g. "fit [a, b), gap 7 d, validate [c, d)".
    pub describe: String,
}

/// Average precisions of a trained model, side by side.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quality {
    /// The final model on its own training rows (optimistic by construction).
    pub train_ap: f64,
    /// The chosen candidate on the validation period.
    pub validation_ap: f64,
}

fn ap_by_prefix(m: &Gbdt, d: &Data, val: &std::ops::Range<usize>, y: &[bool]) -> Vec<(usize, f64)> {
    let mut margin: Vec<f64> = vec![m.base_score(); val.len()];
    let mut out = Vec::new();
    let yv = &y[val.clone()];
    for t in 0..m.n_trees() {
        for (k, i) in val.clone().enumerate() {
            margin[k] += m.tree_margin(t, d.row(i));
        }
        if (t + 1) % STOP_STEP == 0 || t + 1 == m.n_trees() {
            let s: Vec<f32> = margin.iter().map(|v| *v as f32).collect();
            out.push((t + 1, average_precision(&s, yv)));
        }
    }
    out
}

/// Trains a supervised model on `rows` (in time order) with targets `y`, choosing on
/// `split.val` (see [`Split`]).
pub fn train(
    kind: Kind,
    rows: &[FeatureVector],
    y: &[bool],
    split: &Split,
    meta: &TrainMeta<'_>,
    target: ThresholdTarget,
) -> Result<(ModelBody, Quality), ModelError> {
    if rows.len() != y.len() {
        return Err(FitError::TargetCount {
            rows: rows.len(),
            targets: y.len(),
        }
        .into());
    }
    let within = |r: &std::ops::Range<usize>| r.start <= r.end && r.end <= rows.len();
    if !(within(&split.fit) && within(&split.val) && within(&split.train)) {
        return Err(FitError::Ranges {
            ranges: format!("{split:?}"),
            rows: rows.len(),
        }
        .into());
    }
    let dim = N_FEATURES + meta.attributes.len();
    let pos = |r: &std::ops::Range<usize>| y[r.clone()].iter().filter(|v| **v).count();
    let (pos_fit, pos_val, pos_train) = (pos(&split.fit), pos(&split.val), pos(&split.train));
    if pos_fit < 5 || pos_val < 2 || pos_train < 5 {
        return Err(FitError::TooFewFrauds {
            fit: pos_fit,
            validation: pos_val,
            train: pos_train,
            split: split.describe.clone(),
        }
        .into());
    }
    let mut scaler: Scaler = fit_scaler(&rows[split.train.clone()], dim);
    mask(&mut scaler, meta);
    let mut z = Vec::with_capacity(rows.len() * dim);
    let mut buf = [0.0f32; MAX_DIM];
    for r in rows {
        standardise(r, &scaler, &mut buf);
        z.extend_from_slice(&buf[..dim]);
    }
    let d = Data { z, dim };
    let fit_idx: Vec<usize> = split.fit.clone().collect();
    let train_idx: Vec<usize> = split.train.clone().collect();
    let val_y = &y[split.val.clone()];
    let mut grid = Vec::new();
    // (validation AP, candidate, trees kept, held-out scores)
    let mut best: Option<(f64, usize, usize, Vec<f32>)> = None;
    let cands = candidates(kind, meta.seed);
    for (c, (name, fit)) in cands.iter().enumerate() {
        let mut m = fit(&d, y, &fit_idx)?;
        let mut trees_kept = 0;
        if let Fitted::Trees(g, _) = &mut m {
            let by_prefix = ap_by_prefix(g, &d, &split.val, y);
            let (k, _) =
                by_prefix
                    .iter()
                    .copied()
                    .fold((g.n_trees(), f64::MIN), |(bk, ba), (k, a)| {
                        if a > ba + 1e-4 {
                            (k, a)
                        } else {
                            (bk, ba)
                        }
                    });
            g.truncate(k);
            trees_kept = k;
        }
        let s: Vec<f32> = split.val.clone().map(|i| m.predict(d.row(i))).collect();
        let ap = average_precision(&s, val_y);
        tracing::info!(model = kind.name(), params = %name, trees = trees_kept, validation_ap = ap, "Candidate fitted.");
        grid.push(serde_json::json!({"params": name, "trees": trees_kept, "validation_ap": ap}));
        if best.as_ref().is_none_or(|(b, ..)| ap > *b) {
            best = Some((ap, c, trees_kept, s));
        }
    }
    let (best_ap, best_c, trees_kept, held_out) = best.ok_or(FitError::NoCandidate)?;
    // Refit on the training range with the chosen configuration (and number of trees).
    let mut fitted = cands[best_c].1(&d, y, &train_idx)?;
    if let Fitted::Trees(g, cfg) = &mut fitted {
        g.truncate(trees_kept);
        cfg.n_trees = trees_kept.max(1);
    }
    let train_scores: Vec<f32> = split
        .train
        .clone()
        .map(|i| fitted.predict(d.row(i)))
        .collect();
    let train_ap = average_precision(&train_scores, &y[split.train.clone()]);
    let threshold = match target {
        ThresholdTarget::AlertRate(r) => {
            // On the final model's own scores over its training range: the share of traffic
            // above a threshold is a property of the model that will score (another fit's
            // scores, even held out, sit on another scale). Genuine transactions, nearly all of
            // the budget, score much the same in and out of sample.
            let mut s = train_scores.clone();
            s.sort_by(|a, b| b.total_cmp(a));
            let k = ((s.len() as f64 * r).ceil() as usize).clamp(1, s.len().max(1));
            s.get(k - 1).copied().unwrap_or(1.0)
        }
        ThresholdTarget::Precision(p) => threshold_for_precision(&held_out, val_y, p),
    };
    let (params, name) = match fitted {
        Fitted::Logistic(m, alpha) => (
            Params::Logistic(LogisticParams {
                weights: m.w,
                intercept: m.b,
                alpha,
            }),
            kind.name(),
        ),
        Fitted::Forest(p) => (Params::Forest(p), kind.name()),
        Fitted::Trees(m, cfg) => (
            Params::Trees(TreesParams {
                model: m,
                config: cfg,
            }),
            kind.name(),
        ),
    };
    let (version, created_at) = version_of(name, meta, split.train.len());
    let alert_rate = match target {
        ThresholdTarget::AlertRate(r) => r,
        ThresholdTarget::Precision(_) => {
            held_out.iter().filter(|s| **s >= threshold).count() as f64
                / held_out.len().max(1) as f64
        }
    };
    // The score above which a tenth of the alert budget falls (the alert's `high` risk band),
    // on the final model's own scores like the threshold.
    let high_risk = {
        let mut s = train_scores.clone();
        s.sort_by(|a, b| b.total_cmp(a));
        let k = ((s.len() as f64 * alert_rate / 10.0).ceil() as usize).clamp(1, s.len().max(1));
        s.get(k - 1).copied().unwrap_or(1.0).max(threshold)
    };
    let body = ModelBody {
        version,
        feature_names: ModelBody::expected_names(meta.attributes),
        attributes: meta.attributes.to_vec(),
        transforms: super::Model::transform_names(),
        threshold: threshold.clamp(0.0, 1.0),
        feedback_delay_days: meta.feedback_delay_days,
        scaler,
        params,
        trained: TrainInfo {
            from: meta.from.to_string(),
            to: meta.to.to_string(),
            rows: split.train.len() as u64,
            alert_rate,
            created_at,
        },
        validation: Some(serde_json::json!({
            "scheme": split.describe,
            "fit_rows": split.fit.len(),
            "fit_frauds": pos_fit,
            "validation_rows": split.val.len(),
            "validation_frauds": pos_val,
            "chosen": cands[best_c].0,
            "trees": trees_kept,
            "validation_average_precision": best_ap,
            "high_risk_threshold": high_risk,
            "train_average_precision": train_ap,
            "grid": grid,
        })),
    };
    Ok((
        body,
        Quality {
            train_ap,
            validation_ap: best_ap,
        },
    ))
}

/// The lowest threshold whose precision over `scores` reaches `p` (1.0 if none does).
pub fn threshold_for_precision(scores: &[f32], y: &[bool], p: f64) -> f32 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let (mut tp, mut n) = (0.0f64, 0.0f64);
    let mut best = 1.0f32;
    for i in idx {
        n += 1.0;
        if y[i] {
            tp += 1.0;
        }
        if tp / n >= p {
            best = scores[i];
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_precision_matches_sklearn() {
        // sklearn.metrics.average_precision_score([0,0,1,1], [0.1,0.4,0.35,0.8]) = 0.8333
        let ap = average_precision(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]);
        approx::assert_abs_diff_eq!(ap, 0.833_333, epsilon = 1e-5);
    }

    #[test]
    fn precision_threshold() {
        let s = [0.9, 0.8, 0.7, 0.6];
        let y = [true, false, true, false];
        assert_eq!(threshold_for_precision(&s, &y, 1.0), 0.9);
        assert_eq!(threshold_for_precision(&s, &y, 0.6), 0.7);
    }

    fn synthetic(n: usize) -> (Vec<FeatureVector>, Vec<bool>) {
        use rand::Rng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for _ in 0..n {
            let mut r = [0.0f32; MAX_DIM];
            for v in r.iter_mut().take(N_FEATURES) {
                *v = rng.gen_range(0.0..5.0);
            }
            // Fraud when amount (0) is high and the 30-day ratio (18) is high: nonlinear.
            let f = r[0] > 4.0 && r[18] > 3.5 && rng.gen_bool(0.9);
            if f {
                r[0] *= 20.0;
            }
            rows.push(r);
            y.push(f);
        }
        (rows, y)
    }

    #[test]
    fn every_kind_learns_and_round_trips() {
        let (rows, y) = synthetic(6000);
        let meta = TrainMeta {
            attributes: &[],
            from: "a",
            to: "b",
            alert_rate: 0.05,
            seed: 1,
            attributes_only: false,
            feedback_delay_days: 7,
        };
        let split = Split {
            fit: 0..3000,
            val: 3500..6000,
            train: 0..6000,
            describe: "test".into(),
        };
        for kind in [Kind::Logistic, Kind::Forest, Kind::Trees] {
            let (body, q) = train(
                kind,
                &rows,
                &y,
                &split,
                &meta,
                ThresholdTarget::AlertRate(0.05),
            )
            .expect("train");
            assert!(q.validation_ap > 0.3 && q.train_ap > 0.3, "{kind:?}: {q:?}");
            let text = super::super::Model::to_file_text(&body).expect("json");
            let m = super::super::Model::parse(&text, std::path::Path::new("m")).expect("loads");
            use super::super::Predict;
            let s: Vec<f32> = rows.iter().map(|r| m.score(r)).collect();
            let ap = average_precision(&s, &y);
            assert!(ap > 0.5, "{kind:?}: AP {ap}");
            let fraud = rows
                .iter()
                .zip(&y)
                .find(|(_, y)| **y)
                .map(|(r, _)| r)
                .expect("a fraud");
            assert!(!m.explain(fraud, 3).is_empty(), "{kind:?} explains");
            // Risk bands from the alert budget (5 %): about 5 % of the validation rows are at
            // least medium; the high band's threshold (a tenth of the budget, on the final model's
            // own scores) is stored and above the threshold. (This data is separable: the frauds'
            // scores saturate near 1, so the share above it is not a tenth here.)
            let val = &s[split.val.clone()];
            use crate::alert::{high_risk_threshold, risk_band, RiskBand};
            let at_least_medium = val
                .iter()
                .filter(|x| risk_band(&m, **x) != RiskBand::Low)
                .count() as f64
                / val.len() as f64;
            assert!(
                (0.03..=0.08).contains(&at_least_medium),
                "{kind:?}: {at_least_medium} at least medium"
            );
            let h = high_risk_threshold(&m).expect("stored at training");
            assert!(h >= m.threshold(), "{kind:?}: high {h} below the threshold");
            assert_eq!(risk_band(&m, 1.0), RiskBand::High, "{kind:?}");
        }
    }
}
