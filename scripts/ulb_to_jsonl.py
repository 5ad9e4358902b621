#!/usr/bin/env python3
"""Convert the ULB credit-card data set (creditcard.csv: Time, V1..V28, Amount, Class) into
fraudstream's input: one transaction per row, in time order, as one stream.

The data set has no account or merchant ids. Each row becomes its own account (`u<row>`), all
rows share one merchant (`ulb`: the merchant windows are then the whole stream's), `ts` is
2013-09-01T00:00:00Z plus `Time` seconds, `amount` is `Amount`, and V1..V28 arrive in the
optional `attributes` object. Frauds (Class 1) go to the labels file, reported one day later.

usage: ulb_to_jsonl.py creditcard.csv OUT_DIR
"""
import csv
import datetime as dt
import json
import os
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    t0 = dt.datetime(2013, 9, 1, tzinfo=dt.timezone.utc)
    n = frauds = 0
    with open(src, newline="") as f, open(os.path.join(out, "transactions.jsonl"), "w") as tx, open(
        os.path.join(out, "labels.jsonl"), "w"
    ) as lb:
        rows = csv.DictReader(f)
        for i, r in enumerate(rows):
            secs = float(r["Time"])
            ts = t0 + dt.timedelta(seconds=secs)
            rec = {
                "tx_id": f"ulb{i}",
                "ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "account_id": f"u{i}",
                "merchant_id": "ulb",
                "amount": float(r["Amount"]),
                "currency": "EUR",
                "attributes": {f"V{k}": float(r[f"V{k}"]) for k in range(1, 29)},
            }
            tx.write(json.dumps(rec, separators=(",", ":")) + "\n")
            n += 1
            if r["Class"].strip().strip('"') == "1":
                frauds += 1
                rep = (ts + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
                lb.write(json.dumps({"tx_id": f"ulb{i}", "account_id": f"u{i}", "fraud": True, "reported_at": rep}) + "\n")
    print(f"ulb: {n} transactions, {frauds} frauds -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
