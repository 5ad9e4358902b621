#!/usr/bin/env python3
"""Reference models computed outside fraudstream's code (scikit-learn), on the protocol of
scripts/quality.sh, so that the README can say how far our models are from plain baselines.

Features (--features auto picks "attributes" when the transactions carry `attributes`):
  handbook    the 15 features of Le Borgne et al., Fraud Detection Handbook, ch. 3.4 "Baseline
              feature transformation": amount; weekend (Sat/Sun, UTC); night (hour <= 6, UTC);
              the account's number of transactions and mean amount over the last 1, 7, 30 days
              (the transaction included); the merchant's number of transactions and fraud rate
              over 1, 7, 30 days ending --delay-days before the transaction. A fraud counts in the
              merchant's rate only once its label is known (reported_at, or ts + --delay-days
              without one); with reported_at = ts + delay, as in the handbook data set, this is
              exactly the handbook's definition.
  attributes  amount and the transactions' `attributes` (ULB: Amount, V1..V28).
All inputs are standardised with the training period's mean and deviation.

Models (the handbook's baseline settings, ch. 3.5):
  random_forest        RandomForestClassifier(n_estimators=100, max_depth=None, random_state=0)
  logistic_regression  LogisticRegression(random_state=0) (max_iter 1000)
  isolation_forest     IsolationForest(n_estimators=100, random_state=0), unsupervised (labels not
                       used), score = -score_samples (higher = more anomalous)

Protocol: train on [--train-from, --train-to) with the true labels of those transactions; test
on [--test-from, --test-to); accounts with a fraud whose label is known (reported_at, or ts +
--delay-days) before --test-from are removed from the test, as `fraudstream eval` does.
--protocol handbook instead removes, on each test day, the accounts with a fraud known before that
day among transactions from --train-from on, and leaves out of a day's card precision the accounts
already detected (in the top k) on earlier test days: the handbook's own protocol, for checking
these numbers against the published ones.

Metrics: ROC AUC and average precision (scikit-learn); card precision@k: per UTC test day,
accounts ranked by their maximum score of the day, share with a fraud that day among the top k
(ties at the cut counted in expectation, as `fraudstream eval`), mean over days. A data set where
every transaction is its own account (ULB) makes this transaction precision@k per day.

Writes OUT/baseline-NAME-MODEL.json {auc, ap, cp100, train_s, score_s, ...} and prints a table.

usage: baselines.py --transactions T.jsonl --labels L.jsonl --train-from D --train-to D
                    --test-from D --test-to D [--delay-days 7] --out DIR --name DS
                    [--models random_forest,logistic_regression,isolation_forest]
"""
import argparse
import datetime as dt
import gzip
import json
import os
import subprocess
import sys
import time


def _ensure(module, package):
    """Import `module`, installing `package` into the user site first if it is missing."""
    import importlib
    import site

    try:
        return importlib.import_module(module)
    except ImportError:
        print(f"baselines.py: installing {package} (pip --user)", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--user", "-q", package])
        site.addsitedir(site.getusersitepackages())
        importlib.invalidate_caches()
        return importlib.import_module(module)


np = _ensure("numpy", "numpy")
_ensure("sklearn", "scikit-learn")
from sklearn.ensemble import IsolationForest, RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402

DAY = 86400
MODELS = ("random_forest", "logistic_regression", "isolation_forest")
TITLES = {
    "random_forest": "random forest",
    "logistic_regression": "logistic regression",
    "isolation_forest": "isolation forest",
}
SUPERVISED = {"random_forest": True, "logistic_regression": True, "isolation_forest": False}


def parse_time(value, what):
    """RFC 3339 string or epoch milliseconds -> epoch seconds (float)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value / 1000.0
    if isinstance(value, str):
        s = value.strip()
        if s.endswith("Z") or s.endswith("z"):
            s = s[:-1] + "+00:00"
        try:
            t = dt.datetime.fromisoformat(s)
        except ValueError:
            raise ValueError(f"invalid {what}: {value!r} is not RFC 3339 or epoch ms") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        return t.timestamp()
    raise ValueError(f"invalid {what}: {value!r} is not RFC 3339 or epoch ms")


def parse_date(value, flag):
    try:
        return parse_time(value if "T" in value else value + "T00:00:00Z", flag)
    except ValueError:
        raise SystemExit(f"baselines.py: {flag}: {value!r} is not a date (YYYY-MM-DD) or RFC 3339")


def open_text(path):
    return gzip.open(path, "rt") if str(path).endswith(".gz") else open(path)


def fast_ts(strings):
    """Vectorised RFC 3339 'YYYY-MM-DDTHH:MM:SS[.fff]Z' -> epoch seconds; None if another form."""
    a = np.asarray(strings)
    if a.dtype.kind != "U" or not np.all(np.char.endswith(a, "Z")):
        return None
    try:
        t = np.char.rstrip(a, "Z").astype("datetime64[ms]")
    except ValueError:
        return None
    return t.astype(np.int64) / 1000.0


def read_transactions(path):
    tx_id, ts, acc, mer, amount, attrs = [], [], [], [], [], []
    with open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                tx_id.append(r["tx_id"])
                ts.append(r["ts"])
                acc.append(r["account_id"])
                mer.append(r.get("merchant_id", ""))
                amount.append(float(r["amount"]))
                attrs.append(r.get("attributes"))
            except (ValueError, KeyError, TypeError) as e:
                raise SystemExit(f"baselines.py: {path}:{n}: bad transaction ({e!r})")
    secs = fast_ts(ts)
    if secs is None:
        secs = np.array([parse_time(v, "ts") for v in ts])
    return {
        "tx_id": tx_id,
        "ts": secs,
        "account": np.asarray(acc),
        "merchant": np.asarray(mer),
        "amount": np.asarray(amount, dtype=np.float64),
        "attributes": attrs,
    }


def read_labels(path, tx_index, ts, delay):
    """fraud flag per transaction and the time its label is known (inf when genuine)."""
    fraud = np.zeros(len(ts), dtype=bool)
    known = np.full(len(ts), np.inf)
    with open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                i = tx_index.get(r["tx_id"])
                if i is None or r.get("fraud") is not True:
                    continue
                rep = r.get("reported_at")
                k = parse_time(rep, "reported_at") if rep is not None else ts[i] + delay
            except (ValueError, KeyError, TypeError) as e:
                raise SystemExit(f"baselines.py: {path}:{n}: bad label ({e!r})")
            fraud[i] = True
            known[i] = min(known[i], k)
    return fraud, known


def group_codes(values):
    _, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int64)


def handbook_features(tx, fraud, known, delay):
    """The 15 features, for every transaction (windows over the whole stream)."""
    ts = tx["ts"]
    secs = np.floor(ts).astype(np.int64)
    amount = tx["amount"]
    weekday = ((secs // DAY) + 3) % 7  # 1970-01-01 was a Thursday (weekday 3, Monday = 0)
    hour = (secs % DAY) // 3600
    cols = {"amount": amount, "weekend": (weekday >= 5).astype(float), "night": (hour <= 6).astype(float)}
    shift = np.int64(1) << 34  # > any epoch second here: groups never overlap in the key

    # account: (t - w, t], the transaction included
    g = group_codes(tx["account"])
    order = np.lexsort((np.arange(len(ts)), secs, g))
    key = g[order] * shift + secs[order]
    csum = np.concatenate([[0.0], np.cumsum(amount[order])])
    pos = np.arange(len(order))
    for w in (1, 7, 30):
        lo = np.searchsorted(key, key - w * DAY, side="right")
        n = pos + 1 - lo
        mean = (csum[pos + 1] - csum[lo]) / n
        nb = np.empty(len(ts))
        av = np.empty(len(ts))
        nb[order] = n
        av[order] = mean
        cols[f"account_nb_tx_{w}d"] = nb
        cols[f"account_avg_amount_{w}d"] = av

    # merchant: transactions in (t - D - w, t - D]; frauds among them known by t
    d = int(round(delay))
    g = group_codes(tx["merchant"])
    order = np.lexsort((np.arange(len(ts)), secs, g))
    key = g[order] * shift + secs[order]
    f_sorted = fraud[order]
    fsum = np.concatenate([[0], np.cumsum(f_sorted)])
    hi = np.searchsorted(key, key - d, side="right")
    # frauds whose label is known later than ts + D are not yet known at some t: for such a
    # fraud at s, the merchant's transactions with t in [s + D, min(s + D + w, known)) must not
    # count it. Collected per window as a difference array over the sorted order.
    late = np.flatnonzero(f_sorted & (known[order] > ts[order] + d))
    for w in (1, 7, 30):
        lo = np.searchsorted(key, key - d - w * DAY, side="right")
        nb_tx = hi - lo
        nb_fraud = (fsum[hi] - fsum[lo]).astype(np.float64)
        if len(late):
            s = secs[order][late]
            gk = key[late] - s  # the group's base
            until = np.minimum(s + d + w * DAY, np.ceil(known[order][late]).astype(np.int64))
            a = np.searchsorted(key, gk + s + d, side="left")
            b = np.searchsorted(key, gk + until, side="left")
            diff = np.zeros(len(key) + 1)
            np.add.at(diff, a, -1.0)
            np.add.at(diff, b, 1.0)
            nb_fraud += np.cumsum(diff)[:-1]
        risk = np.where(nb_tx > 0, nb_fraud / np.maximum(nb_tx, 1), 0.0)
        nb = np.empty(len(ts))
        rk = np.empty(len(ts))
        nb[order] = nb_tx
        rk[order] = risk
        cols[f"merchant_nb_tx_{w}d"] = nb
        cols[f"merchant_risk_{w}d"] = rk
    names = list(cols)
    return np.column_stack([cols[c] for c in names]), names


def attribute_features(tx):
    names = sorted({k for a in tx["attributes"] if a for k in a}, key=lambda k: (len(k), k))
    if not names:
        raise SystemExit("baselines.py: --features attributes: no transaction has `attributes`")
    x = np.zeros((len(tx["ts"]), 1 + len(names)))
    x[:, 0] = tx["amount"]
    for i, a in enumerate(tx["attributes"]):
        if a:
            x[i, 1:] = [float(a.get(k, 0.0)) for k in names]
    return x, ["amount"] + names


def card_precision(day, account, score, fraud, k, drop_detected=False):
    """Mean over days of the share of compromised accounts among the top k (see module doc)."""
    per_day = []
    detected = set()
    for d in np.unique(day):
        m = day == d
        acc, sc, fr = account[m], score[m], fraud[m]
        if drop_detected and detected:
            keep = ~np.isin(acc, list(detected))
            acc, sc, fr = acc[keep], sc[keep], fr[keep]
        if len(acc) == 0:
            continue
        uniq, inv = np.unique(acc, return_inverse=True)
        best = np.full(len(uniq), -np.inf)
        np.maximum.at(best, inv, sc)
        comp = np.zeros(len(uniq), dtype=bool)
        np.logical_or.at(comp, inv, fr)
        o = np.argsort(-best, kind="stable")
        best, comp, uniq = best[o], comp[o], uniq[o]
        take = min(k, len(best))
        cut = best[take - 1]
        above = best > cut
        tied = best == cut
        room = take - above.sum()
        hits = comp[above].sum() + comp[tied].sum() * room / tied.sum()
        per_day.append(hits / take)
        if drop_detected:
            detected.update(uniq[:take][comp[:take]].tolist())
    return float(np.mean(per_day)) if per_day else float("nan")


def make_model(name, jobs):
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=100, max_depth=None, random_state=0, n_jobs=jobs)
    if name == "logistic_regression":
        return LogisticRegression(random_state=0, max_iter=1000)
    if name == "isolation_forest":
        return IsolationForest(n_estimators=100, random_state=0, n_jobs=jobs)
    raise SystemExit(f"baselines.py: --models: unknown model {name!r} (known: {', '.join(MODELS)})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transactions", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--train-from", required=True)
    p.add_argument("--train-to", required=True)
    p.add_argument("--test-from", required=True)
    p.add_argument("--test-to", required=True)
    p.add_argument("--delay-days", type=float, default=7.0)
    p.add_argument("--out", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--features", choices=("auto", "handbook", "attributes"), default="auto")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--protocol", choices=("fraudstream", "handbook"), default="fraudstream")
    p.add_argument("--jobs", type=int, default=1, help="cores for the forests (default 1)")
    a = p.parse_args(argv)
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    for m in models:
        make_model(m, 1)
    if a.delay_days < 0:
        p.error(f"--delay-days must be >= 0, got {a.delay_days}")
    if a.k < 1:
        p.error(f"--k must be >= 1, got {a.k}")
    tr0, tr1 = parse_date(a.train_from, "--train-from"), parse_date(a.train_to, "--train-to")
    te0, te1 = parse_date(a.test_from, "--test-from"), parse_date(a.test_to, "--test-to")
    if not tr0 < tr1 <= te0 < te1:
        p.error("need --train-from < --train-to <= --test-from < --test-to")
    delay = a.delay_days * DAY

    t = time.time()
    tx = read_transactions(a.transactions)
    index = {x: i for i, x in enumerate(tx["tx_id"])}
    fraud, known = read_labels(a.labels, index, tx["ts"], delay)
    read_s = time.time() - t
    t = time.time()
    kind = a.features
    if kind == "auto":
        kind = "attributes" if any(x for x in tx["attributes"][:1000]) else "handbook"
    if kind == "handbook":
        x, names = handbook_features(tx, fraud, known, delay)
    else:
        x, names = attribute_features(tx)
    feature_s = time.time() - t

    ts = tx["ts"]
    train = (ts >= tr0) & (ts < tr1)
    test = (ts >= te0) & (ts < te1)
    test_day = np.floor(ts / DAY).astype(np.int64)
    if a.protocol == "fraudstream":
        bad = np.unique(tx["account"][fraud & (known < te0)])
        removed = test & np.isin(tx["account"], bad)
    else:
        removed = np.zeros(len(ts), dtype=bool)
        cand = fraud & (ts >= tr0)
        for d in np.unique(test_day[test]):
            bad = np.unique(tx["account"][cand & (known < d * DAY)])
            m = test & (test_day == d)
            removed |= m & np.isin(tx["account"], bad)
    test &= ~removed
    if train.sum() == 0 or test.sum() == 0:
        raise SystemExit(f"baselines.py: empty train ({train.sum()}) or test ({test.sum()}) set")
    mu = x[train].mean(axis=0)
    sd = x[train].std(axis=0)
    sd[sd == 0] = 1.0
    xs = (x - mu) / sd
    xtr, ytr, xte, yte = xs[train], fraud[train], xs[test], fraud[test]
    if ytr.sum() == 0:
        raise SystemExit("baselines.py: no fraud in the training period: supervised models need some")

    os.makedirs(a.out, exist_ok=True)
    results = []
    for m in models:
        model = make_model(m, a.jobs)
        t = time.time()
        if SUPERVISED[m]:
            model.fit(xtr, ytr)
        else:
            model.fit(xtr)
        train_s = time.time() - t
        t = time.time()
        if SUPERVISED[m]:
            score = model.predict_proba(xte)[:, 1]
        else:
            score = -model.score_samples(xte)
        score_s = time.time() - t
        r = {
            "data_set": a.name,
            "model": m,
            "features": kind,
            "feature_names": names,
            "protocol": a.protocol,
            "train": [a.train_from, a.train_to],
            "test": [a.test_from, a.test_to],
            "delay_days": a.delay_days,
            "train_transactions": int(train.sum()),
            "train_frauds": int(ytr.sum()),
            "test_transactions": int(test.sum()),
            "test_frauds": int(yte.sum()),
            "removed_transactions": int(removed.sum()),
            "removed_accounts": int(len(np.unique(tx["account"][removed]))),
            "auc": float(roc_auc_score(yte, score)) if 0 < yte.sum() < len(yte) else None,
            "ap": float(average_precision_score(yte, score)) if yte.sum() > 0 else None,
            "cp100": card_precision(
                test_day[test], tx["account"][test], score, yte, a.k, a.protocol == "handbook"
            ),
            "k": a.k,
            "card_precision_kind": "card"
            if len(np.unique(tx["account"][test])) < test.sum()
            else "transaction (every transaction is its own account)",
            "train_s": round(train_s, 3),
            "score_s": round(score_s, 3),
            "read_s": round(read_s, 3),
            "feature_s": round(feature_s, 3),
        }
        with open(os.path.join(a.out, f"baseline-{a.name}-{m}.json"), "w") as f:
            json.dump(r, f, indent=1)
        results.append(r)

    def f3(v):
        return "–" if v is None else f"{v:.3f}"

    print(f"baselines on {a.name} ({kind} features, {len(names)}; protocol {a.protocol}): "
          f"train {results[0]['train_transactions']} tx / {results[0]['train_frauds']} frauds, "
          f"test {results[0]['test_transactions']} tx / {results[0]['test_frauds']} frauds "
          f"({results[0]['removed_accounts']} known-compromised accounts removed); "
          f"read {read_s:.1f}s, features {feature_s:.1f}s")
    print(f"| model | AUC | AP | {'card' if results[0]['card_precision_kind'] == 'card' else 'tx'} precision@{a.k} | train s | score s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {TITLES[r['model']]} | {f3(r['auc'])} | {f3(r['ap'])} | {f3(r['cp100'])} | {r['train_s']:.1f} | {r['score_s']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
