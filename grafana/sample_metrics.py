#!/usr/bin/env python3
"""Serve a synthetic sample of every fraudstream metric on /metrics (Prometheus text format).

Counters and histograms grow with wall-clock time so rate()/increase() have data
after two scrapes. For checking grafana/dashboards/fraudstream.json without a
running worker or Kafka:

    python3 grafana/sample_metrics.py --port 0 --port-file /tmp/port &

Stdlib only.
"""
import argparse
import os
import http.server
import time

START = time.time()
DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
SCORE_BUCKETS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
DISCARD_REASONS = ["not_utf8", "not_json", "missing_field", "invalid_field",
                   "invalid_amount", "oversized", "future_timestamp"]


def fmt_labels(labels):
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"


def fmt_le(b):
    return "+Inf" if b == float("inf") else repr(float(b))


def counter(out, name, help_, series):
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} counter")
    for labels, value in series:
        out.append(f"{name}{fmt_labels(labels)} {value}")


def gauge(out, name, help_, series):
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} gauge")
    for labels, value in series:
        out.append(f"{name}{fmt_labels(labels)} {value}")


def histogram(out, name, help_, buckets, fractions, count, mean):
    """fractions: cumulative share of observations <= each bucket bound."""
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} histogram")
    for b, f in zip(buckets, fractions):
        out.append(f'{name}_bucket{{le="{fmt_le(b)}"}} {int(count * f)}')
    out.append(f'{name}_bucket{{le="+Inf"}} {count}')
    out.append(f"{name}_sum {count * mean:.6f}")
    out.append(f"{name}_count {count}")


def render():
    t = time.time() - START
    n = 1000 + int(200 * t)  # messages processed so far
    out = []
    counter(out, "fraud_messages_received_total", "Messages received from Kafka.",
            [((("topic", "transactions"), ("partition", str(p))), n // 3 + p * 7) for p in range(3)]
            + [((("topic", "transactions-replay"), ("partition", "0")), n // 10)])
    counter(out, "fraud_errors_total", "Errors by pipeline stage.",
            [((("stage", "receiving"), ("error_code", "kafka_timeout")), 1 + int(t / 4)),
             ((("stage", "processing"), ("error_code", "model")), 2 + int(t / 6)),
             ((("stage", "sending"), ("error_code", "queue_full")), int(t / 9))])
    counter(out, "fraud_messages_discarded_total", "Messages sent to the dead-letter topic.",
            [((("reason", r),), (i + 1) * (1 + int(t / (2 + i)))) for i, r in enumerate(DISCARD_REASONS)])
    alerts = 30 + int(6 * t)
    counter(out, "fraud_decisions_total", "Decisions made.",
            [((("decision", "alert"),), alerts), ((("decision", "pass"),), n - alerts)])
    counter(out, "fraud_late_events_total", "Events older than the open window.", [((), 5 + int(t / 3))])
    lat = [0.30, 0.55, 0.80, 0.92, 0.97, 0.99, 0.995, 0.999, 1.0, 1.0, 1.0]
    histogram(out, "fraud_processing_duration_seconds", "Per-message processing time.",
              DEFAULT_BUCKETS, lat, n, 0.012)
    histogram(out, "fraud_model_inference_duration_seconds", "Model inference time.",
              DEFAULT_BUCKETS, [0.6, 0.85, 0.95, 0.99, 0.999, 1, 1, 1, 1, 1, 1], n, 0.006)
    histogram(out, "fraud_event_lag_seconds", "Now minus event timestamp.",
              DEFAULT_BUCKETS, [0.0, 0.01, 0.05, 0.2, 0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0], n, 0.3)
    histogram(out, "fraud_model_score", "Model score.",
              SCORE_BUCKETS, [0.45, 0.7, 0.82, 0.89, 0.93, 0.95, 0.965, 0.975, 0.985, 1.0], n, 0.17)
    gauge(out, "fraud_window_entries", "Accounts plus merchants held in state.", [((), 4000 + int(t) % 500)])
    gauge(out, "fraud_kafka_consumer_lag", "Consumer lag in messages.",
          [((("topic", "transactions"), ("partition", str(p))), 10 * p + int(t) % 17) for p in range(3)]
          + [((("topic", "transactions-replay"), ("partition", "0")), 3)])
    gauge(out, "fraud_build_info", "Build information.",
          [((("version", "0.1.0"), ("model_version", "sample-2024-01")), 1)])
    return ("\n".join(out) + "\n").encode()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        body = render()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--port-file", help="write the bound port here once listening")
    ap.add_argument("--max-seconds", type=float, default=3600, help="exit after this long")
    args = ap.parse_args()
    srv = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    srv.timeout = 1
    port = srv.server_address[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(f"{port}\n")
        os.replace(args.port_file + ".tmp", args.port_file)
    print(f"serving sample metrics on http://{args.host}:{port}/metrics", flush=True)
    deadline = time.time() + args.max_seconds
    while time.time() < deadline:
        srv.handle_request()


if __name__ == "__main__":
    main()
