#!/usr/bin/env bash
# The eval report in a real browser: generates a small stream, scores it with the committed
# model, writes `eval --report` (twice into the same directory: the second run replaces the
# files), opens report.html in Debian's headless Chromium and checks that the threshold, the
# confusion counts, the PR and ROC curves, the threshold sweep (chart, table and the JavaScript
# picker, which must have run) and the histograms are in the rendered DOM, and that the page
# logged nothing to the console (no script error, no failed load). Saves a screenshot to
# target/eval-report.png (the report itself stays in target/eval-report/).
#   bash scripts/test_report.sh        (FRAUDSTREAM_BIN and CHROMIUM override the binaries)
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${FRAUDSTREAM_BIN:-$ROOT/target/debug/fraudstream}"
CHROMIUM="${CHROMIUM:-chromium}"
REPORT="$ROOT/target/eval-report"
SHOT="$ROOT/target/eval-report.png"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

fail() {
    echo "test_report: FAIL: $*" >&2
    exit 1
}

command -v "$CHROMIUM" >/dev/null || fail "$CHROMIUM not found (bash scripts/setup.sh installs Debian's chromium)"
[[ -x "$BIN" ]] || fail "$BIN not built (cargo build)"

"$BIN" generate --out "$WORK/data" --accounts 400 --merchants 40 --days 21 --seed 7 >/dev/null
"$BIN" score --transactions "$WORK/data/transactions.jsonl" --labels "$WORK/data/labels.jsonl" \
    --model models/default.json --out "$WORK/scores.csv" 2>"$WORK/score.err" ||
    fail "score: $(cat "$WORK/score.err")"
mkdir -p "$REPORT"
echo stale >"$REPORT/report.html"
for run in 1 2; do
    "$BIN" eval --scores "$WORK/scores.csv" --labels "$WORK/data/labels.jsonl" \
        --model models/default.json --from 2018-04-08 --report "$REPORT" \
        >"$WORK/eval.out" 2>"$WORK/eval.err" ||
        fail "eval run $run: $(cat "$WORK/eval.err")"
done
grep -q "threshold" "$WORK/eval.out" || fail "eval printed no threshold: $(cat "$WORK/eval.out")"
# The committed model was trained on the generator's first two months: eval must say so.
grep -q "training range" "$WORK/eval.err" || fail "no training-range warning: $(cat "$WORK/eval.err")"

browser() {
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$WORK/profile-$1" --enable-logging=stderr --v=0 "${@:2}" \
        "file://$REPORT/report.html"
}
browser dom --dump-dom >"$WORK/dom.html" 2>"$WORK/dom.log" || fail "chromium failed: $(tail -5 "$WORK/dom.log")"
browser shot --hide-scrollbars --window-size=1400,7000 --screenshot="$SHOT" \
    >/dev/null 2>"$WORK/shot.log" || fail "chromium screenshot failed: $(tail -5 "$WORK/shot.log")"

# Any console message (errors, uncaught exceptions, failed loads) fails: the page logs nothing.
if grep -h ":CONSOLE" "$WORK/dom.log" "$WORK/shot.log"; then
    fail "the report logged to the browser console (above)"
fi
for id in threshold model-version confusion tp fp fn tn pr-curve roc-curve sweep-chart \
    sweep-table picker-out histogram amounts missed; do
    grep -q "id=\"$id\"" "$WORK/dom.html" || fail "element #$id not rendered"
done
python3 - "$WORK/dom.html" "$REPORT/metrics.json" <<'PY' || fail "rendered content check"
import json, re, sys
dom = open(sys.argv[1], encoding="utf-8").read()
m = json.load(open(sys.argv[2]))
def cell(i):
    g = re.search(r'id="%s"[^>]*>([^<]*)<' % i, dom)
    if not g:
        sys.exit(f"no #{i}")
    return g.group(1)
assert m["threshold"] is not None, "metrics.json has no threshold"
assert cell("threshold") == f'{m["threshold"]:.6f}', (cell("threshold"), m["threshold"])
for k in ("tp", "fp", "fn", "tn"):
    assert cell(k) == str(m["counts"][k]), (k, cell(k), m["counts"])
assert m["model_version"] and cell("model-version") == m["model_version"]
for k in ("from", "to", "first", "last"):
    assert k in m["window"], k
# Each chart figure holds an SVG with a drawn curve.
for fig in ("pr-curve", "roc-curve", "sweep-chart"):
    g = re.search(r'<figure id="%s">(.*?)</figure>' % fig, dom, re.S)
    assert g and "<svg" in g.group(1) and ("<polyline" in g.group(1) or "<path" in g.group(1)), fig
# The picker's script ran: it replaced the placeholder with the threshold in use.
out = cell("picker-out")
assert out.startswith("threshold ") and "precision" in out, out
assert 'data-ready="1"' in dom, "picker script did not finish"
print(f"test_report: rendered: threshold {cell('threshold')}, tp {cell('tp')} fp {cell('fp')} "
      f"fn {cell('fn')} tn {cell('tn')}; picker: {out}")
PY
[[ -s "$SHOT" ]] || fail "no screenshot"
grep -q stale "$REPORT/report.html" && fail "the second eval did not replace report.html"
echo "test_report: ok (report $REPORT/report.html, screenshot $SHOT)"
