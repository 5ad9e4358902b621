//! Errors of the model code below [`super::ModelError`]: stored parameters that cannot score
//! ([`ParamsError`], checked when a model file is loaded) and training that cannot fit
//! ([`FitError`]). Each message names the model, the field or option, and the value found.

use super::gbdt::GbdtError;

/// Stored parameters of a model that cannot score.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamsError {
    /// Logistic regression: one weight per input.
    #[error("logistic has {weights} weights, the model {inputs} inputs")]
    WeightCount {
        /// `weights` stored.
        weights: usize,
        /// Inputs of the model (features + attributes).
        inputs: usize,
    },
    /// A forest without trees.
    #[error("{model} has no trees")]
    NoTrees {
        /// `forest` or `isolation forest`.
        model: &'static str,
    },
    /// A split node whose input or children are outside the model or its tree.
    #[error(
        "{model} tree {tree} has a node out of range: node {node} splits on input {feature} \
         (the model has {inputs}) with children {left} and {right} (the tree has {nodes} nodes)"
    )]
    NodeOutOfRange {
        /// `forest` or `isolation`.
        model: &'static str,
        /// The tree.
        tree: usize,
        /// The node.
        node: usize,
        /// Its input.
        feature: u32,
        /// Its left child.
        left: u32,
        /// Its right child.
        right: u32,
        /// Nodes of the tree.
        nodes: usize,
        /// Inputs of the model.
        inputs: usize,
    },
    /// Score quantiles of the wrong length or out of order.
    #[error(
        "{model} needs {expected} ascending {what} quantiles: {field} has {len} values{}",
        if *.ascending { "" } else { ", not ascending" }
    )]
    Quantiles {
        /// `isolation forest` or `kmeans`.
        model: &'static str,
        /// `score` or `distance`.
        what: &'static str,
        /// The stored field (`score_quantiles`, `distance_quantiles`).
        field: &'static str,
        /// Values stored.
        len: usize,
        /// Values expected.
        expected: usize,
        /// Whether they are in ascending order.
        ascending: bool,
    },
    /// k-means: centroids missing or of the wrong length.
    #[error(
        "kmeans needs at least one centroid of {inputs} values: {centroids} centroids{}",
        match .bad { Some((i, n)) => format!(", centroid {i} has {n} values"), None => String::new() }
    )]
    Centroids {
        /// Inputs of the model.
        inputs: usize,
        /// Centroids stored.
        centroids: usize,
        /// The first centroid of the wrong length: (index, values).
        bad: Option<(usize, usize)>,
    },
    /// Isolation trees beyond the dense scoring layout.
    #[error(
        "isolation trees deeper than {max_depth} or over 255 inputs are not supported \
         (depth {depth}, {inputs} inputs)"
    )]
    TooDeep {
        /// Deepest supported.
        max_depth: usize,
        /// Depth found (at most `max_depth + 1`: the walk stops there).
        depth: usize,
        /// Inputs of the model.
        inputs: usize,
    },
}

/// Training that cannot fit a model.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// Too few training rows for the model.
    #[error("{rows} rows is too few for {model} (need at least {need})")]
    TooFewRows {
        /// Rows given.
        rows: usize,
        /// Rows needed.
        need: usize,
        /// What needs them, e.g. `16 clusters` or `an isolation forest`.
        model: String,
    },
    /// The alert rate the threshold is chosen for.
    #[error("alert rate {value} must be in (0, 1)")]
    AlertRate {
        /// The rate given.
        value: f64,
    },
    /// Feature rows and targets of different lengths.
    #[error("{rows} rows but {targets} targets")]
    TargetCount {
        /// Feature rows.
        rows: usize,
        /// Targets.
        targets: usize,
    },
    /// Fit, validation or training range outside the rows.
    #[error("ranges {ranges} outside {rows} rows")]
    Ranges {
        /// The split, as `Split`'s Debug.
        ranges: String,
        /// Rows.
        rows: usize,
    },
    /// Too few frauds (positive labels) in a range of a supervised split.
    #[error(
        "too few frauds to train a supervised model: {fit} in the fitting range, {validation} in the validation period, {train} in the training range (need 5, 2 and 5; {split}); widen --from/--to, start them later in the data, or train --kind iforest"
    )]
    TooFewFrauds {
        /// Frauds in the fitting range.
        fit: usize,
        /// Frauds in the validation period.
        validation: usize,
        /// Frauds in the training range.
        train: usize,
        /// The split, in words.
        split: String,
    },
    /// `--anomaly-inputs` names something that is not a feature.
    #[error("--anomaly-inputs: {name:?} is not a feature (see the README's feature table)")]
    UnknownInput {
        /// The name given.
        name: String,
    },
    /// A linfa algorithm refused the data.
    #[error("{model}: {detail}")]
    Linfa {
        /// `k-means`, `logistic regression` or `random forest`.
        model: &'static str,
        /// linfa's words.
        detail: String,
    },
    /// No hyperparameter candidate was fitted.
    #[error("no candidate")]
    NoCandidate,
    /// Gradient-boosted trees.
    #[error(transparent)]
    Trees(#[from] GbdtError),
    /// The fitted parameters do not make a scorer.
    #[error(transparent)]
    Params(#[from] ParamsError),
}
