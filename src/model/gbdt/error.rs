//! Errors of [`super::Gbdt`]: bad training input or configuration, a booster that failed, and a
//! stored model whose structure is damaged. Each names the field or node and the value.

/// Why a gradient-boosted model cannot be fitted or loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GbdtError {
    /// A training parameter out of range, e.g. `learning_rate 0 is not in (0, 1]`.
    #[error("{name} {value} is not {expected}")]
    InvalidParams {
        /// The parameter (`n_trees`, `learning_rate`, `max_depth`, ..., `n_features`).
        name: &'static str,
        /// Its value.
        value: String,
        /// The accepted range, e.g. `in (0, 1]`.
        expected: &'static str,
    },
    /// `x`, `y` and `w` disagree on the number of rows.
    #[error(
        "length mismatch: x has {values} values ({rows} rows x {features} features expected from y), \
         y has {rows} labels, w has {weights} weights"
    )]
    LengthMismatch {
        /// Values in `x`.
        values: usize,
        /// Labels in `y` (the rows).
        rows: usize,
        /// Features per row.
        features: usize,
        /// Weights in `w`.
        weights: usize,
    },
    /// No row to train on.
    #[error("no training rows")]
    NoRows,
    /// A negative or non-finite sample weight.
    #[error("weight w[{index}] = {value} is not finite and >= 0")]
    BadWeight {
        /// Its row.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// One class has no weight: no positive or no negative labels.
    #[error(
        "both classes need positive total weight (positives {positives}, negatives {negatives})"
    )]
    OneClass {
        /// Total weight of the positive (fraud) rows.
        positives: f64,
        /// Total weight of the negative rows.
        negatives: f64,
    },
    /// The booster (forust) refused the data.
    #[error("training failed: {detail}")]
    Booster {
        /// forust's words.
        detail: String,
    },
    /// The booster panicked (caught).
    #[error("training failed: the booster panicked")]
    BoosterPanicked,
    /// A fitted tree that cannot be flattened.
    #[error("tree {tree}: {problem}")]
    Tree {
        /// The tree.
        tree: usize,
        /// What is wrong (`dangling child`, `cycle in tree`, ...).
        problem: &'static str,
    },
    /// More nodes than a `u32` index holds.
    #[error("model has too many nodes")]
    TooManyNodes,
    /// Stored feature count out of range.
    #[error("model has {n_features} features")]
    Features {
        /// The stored count.
        n_features: usize,
    },
    /// Stored base score not finite.
    #[error("model base score {value} is not finite")]
    BaseScore {
        /// The stored value.
        value: f64,
    },
    /// A tree root outside the nodes.
    #[error("tree root {root} outside the {nodes} nodes")]
    Root {
        /// The root index.
        root: u32,
        /// Nodes stored.
        nodes: usize,
    },
    /// A node whose value is NaN or infinite.
    #[error("node {node} has a non-finite value {value}")]
    NodeValue {
        /// The node.
        node: usize,
        /// Its value.
        value: f32,
    },
    /// A split on a feature the model does not have.
    #[error("node {node} splits on feature {feature} of {n_features}")]
    SplitFeature {
        /// The node.
        node: usize,
        /// Its feature.
        feature: usize,
        /// Features of the model.
        n_features: usize,
    },
    /// A split with a NaN threshold.
    #[error("node {node} has a NaN threshold")]
    Threshold {
        /// The node.
        node: usize,
    },
    /// Children not after their parent or outside the nodes.
    #[error("node {node} has invalid children at {left} (of {nodes} nodes)")]
    Children {
        /// The node.
        node: usize,
        /// Its left child (the right one follows).
        left: usize,
        /// Nodes stored.
        nodes: usize,
    },
    /// Stored per-node arrays of different lengths.
    #[error("gbdt: {field} has {len} entries, feature has {expected}")]
    WireLength {
        /// The array.
        field: &'static str,
        /// Its length.
        len: usize,
        /// Length of `feature`.
        expected: usize,
    },
    /// A stored feature index with the missing-left bit set.
    #[error("gbdt: node {node} has feature {feature}")]
    WireFeature {
        /// The node.
        node: usize,
        /// Its stored feature.
        feature: u32,
    },
    /// A stored model that fails the structure check.
    #[error("gbdt: {0}")]
    Stored(Box<GbdtError>),
}
