#!/usr/bin/env bash
# The test command: set-up, formatting and lints, the Prometheus alerting rules (promtool), the
# local Kafka, every unit and integration test against the real broker, the eval report in
# headless Chromium, the Grafana dashboard against a real Prometheus, and the docs.
#   bash scripts/test.sh
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "== alerting rules: promtool check rules, promtool test rules"
(cd grafana/alerts && promtool check rules fraudstream-rules.yml && promtool test rules fraudstream-rules.test.yml)
echo "== dashboard structure (data-source variable, job/instance filters, units)"
python3 scripts/check_dashboard.py --lint --dashboard grafana/dashboards/fraudstream.json
echo "== kafka"
bash scripts/kafka.sh start
echo "== cargo test (unit + integration against the real broker)"
cargo test --locked
echo "== eval report: headless Chromium"
FRAUDSTREAM_BIN="$ROOT/target/debug/fraudstream" bash scripts/test_report.sh
echo "== rustdoc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --document-private-items --locked --quiet
echo "== dashboard: real Prometheus scraping a real worker"
FRAUDSTREAM_BIN="$ROOT/target/debug/fraudstream" bash scripts/test_dashboard.sh
