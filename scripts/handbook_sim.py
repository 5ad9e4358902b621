#!/usr/bin/env python3
"""Transaction simulator of Le Borgne et al., "Reproducible Machine Learning for Credit Card
Fraud Detection - Practical Handbook" (Universite Libre de Bruxelles, 2022), chapter 3
"Transaction data simulator", re-implemented with numpy and written in fraudstream's formats.

It shares no code or parameters with `fraudstream generate`. The model, as published:

* customers: location x, y ~ U(0, 100); mean_amount ~ U(5, 100); std_amount = mean_amount / 2;
  mean_nb_tx_per_day ~ U(0, 4) (drawn in that order per customer, seed 0);
* terminals: location x, y ~ U(0, 100) (seed 1);
* a customer uses only the terminals at a Euclidean distance < r (default 5), uniformly;
* each day a customer makes Poisson(mean_nb_tx_per_day) transactions; the second of the day is
  int(N(43200, 20000)), transactions outside (0, 86400) are dropped; the amount is
  N(mean_amount, std_amount), a negative draw replaced by U(0, 2 * mean_amount), rounded to
  cents (customer c draws from its own generators seeded with c);
* frauds, applied in this order (a later scenario overwrites the scenario of an earlier one):
  1. every transaction with amount > 220 is fraud;
  2. on each day d (0 <= d < last day), 2 terminals (seed d) are compromised: all their
     transactions of days d .. d+27 are fraud;
  3. on each day d, 3 customers (seed d) are compromised: in days d .. d+13, a third of their
     transactions (chosen with seed d) get 5 times the amount and are fraud.

The random draws follow the published procedure call for call (numpy's legacy RandomState and
Python's `random`, same seeds), so with the defaults (`--seed 0`) the stream is the handbook's
data set; `--seed N` shifts every seed by N * 10^7 for another, equally distributed, stream.
Only the per-customer draws are a Python loop (they depend on each other); terminal lists,
fraud scenarios and output are vectorised. About 15 s for the defaults on one core.

Output (README "Data formats"), in OUT_DIR:
  transactions.jsonl  {"tx_id","ts","account_id":"c<id>","merchant_id":"t<id>","amount",
                      "currency":"EUR"}, time order (ties: customer, then draw order);
                      tx_id "tx<n>", n the rank in that order (the handbook's TRANSACTION_ID)
  labels.jsonl        one line per fraud: {"tx_id","account_id","fraud":true,
                      "reported_at": ts + --label-delay-days,"merchant_id","ts"}
  scenarios.csv       tx_id,scenario (1, 2 or 3) of every fraud
  stats.json          counts, fraud rate per scenario, parameters, generation time

usage: handbook_sim.py OUT_DIR [--customers 5000] [--terminals 10000] [--days 183]
                       [--start 2018-04-01] [--radius 5] [--seed 0] [--label-delay-days 7]
"""
import argparse
import datetime as dt
import json
import os
import random
import sys
import time

try:
    import numpy as np
except ImportError:  # pragma: no cover - environment setup
    sys.exit("handbook_sim.py needs numpy: python3 -m pip install --user numpy")

DAY = 86400
SEED_STRIDE = 10**7


def customer_profiles(n, seed):
    """(x, y, mean_amount, std_amount, mean_nb_tx_per_day) per customer.

    The handbook draws x, y, mean_amount, mean_nb_tx_per_day per customer in turn from one
    generator; drawing an (n, 4) block of uniforms gives the same numbers in the same order.
    """
    u = np.random.RandomState(seed).random_sample((n, 4))
    x = 0.0 + 100.0 * u[:, 0]
    y = 0.0 + 100.0 * u[:, 1]
    mean_amount = 5.0 + 95.0 * u[:, 2]
    std_amount = mean_amount / 2
    nb_per_day = 0.0 + 4.0 * u[:, 3]
    return x, y, mean_amount, std_amount, nb_per_day


def terminal_profiles(n, seed):
    u = np.random.RandomState(seed).random_sample((n, 2))
    return 100.0 * u[:, 0], 100.0 * u[:, 1]


def terminals_within(cx, cy, tx, ty, r, chunk=256):
    """For each customer, the ascending ids of the terminals at a distance < r."""
    txy = np.stack([tx, ty], axis=1)
    out = []
    for s in range(0, len(cx), chunk):
        cxy = np.stack([cx[s : s + chunk], cy[s : s + chunk]], axis=1)
        # the handbook's expression: sqrt(sum((c - t)^2)) over the two coordinates
        d = np.sqrt(np.sum(np.square(cxy[:, None, :] - txy[None, :, :]), axis=2))
        for row in d < r:
            out.append(np.flatnonzero(row).tolist())
    return out


def customer_transactions(cid, seed, mean_amount, std_amount, nb_per_day, terminals, nb_days):
    """One customer's transactions: lists of (second since start, terminal, amount)."""
    secs, terms, amounts = [], [], []
    if not terminals:
        return secs, terms, amounts
    rs = np.random.RandomState(seed)
    py = random.Random(seed)
    poisson, normal, uniform, choice = rs.poisson, rs.normal, rs.uniform, py.choice
    for day in range(nb_days):
        n = poisson(nb_per_day)
        base = day * DAY
        for _ in range(n):
            t = int(normal(DAY / 2, 20000))
            if 0 < t < DAY:
                a = normal(mean_amount, std_amount)
                if a < 0:
                    a = uniform(0, mean_amount * 2)
                secs.append(base + t)
                amounts.append(round(float(a) * 100) / 100)  # np.round(a, 2)
                terms.append(choice(terminals))
    return secs, terms, amounts


def first_k_of_permutation(n, k, seed):
    """pandas' Series.sample(n=k, random_state=seed) on a range index: a RandomState(seed)
    permutation's first k."""
    return np.random.RandomState(seed).permutation(n)[:k]


def add_frauds(day, cust, term, amount, n_customers, n_terminals, base_seed):
    """Scenarios 1-3 on time-ordered arrays; returns (scenario per tx, new amounts)."""
    scenario = np.zeros(len(day), dtype=np.int8)
    amount = amount.copy()
    # 1. large amounts
    scenario[amount > 220] = 1
    last = int(day.max())
    # 2. compromised terminals: terminal t is compromised on day D if chosen on d in (D-28, D]
    compromised = np.zeros((n_terminals, last + 28), dtype=bool)
    for d in range(last):
        for t in first_k_of_permutation(n_terminals, 2, base_seed + d):
            compromised[t, d : d + 28] = True
    scenario[compromised[term, day]] = 2
    # 3. compromised customers: sequential, since a transaction may be chosen twice (x25)
    order = np.argsort(cust, kind="stable")
    starts = np.searchsorted(cust[order], np.arange(n_customers + 1))
    for d in range(last):
        picked = first_k_of_permutation(n_customers, 3, base_seed + d)
        idx = np.concatenate([order[starts[c] : starts[c + 1]] for c in picked])
        idx = np.sort(idx[(day[idx] >= d) & (day[idx] < d + 14)])
        # random.sample's choice depends only on the population size and k
        chosen = idx[random.Random(base_seed + d).sample(range(len(idx)), k=len(idx) // 3)]
        amount[chosen] = amount[chosen] * 5
        scenario[chosen] = 3
    return scenario, amount


def rfc3339(secs, start):
    ts = np.datetime64(start, "s") + secs.astype("timedelta64[s]")
    return np.char.add(np.datetime_as_string(ts, unit="s"), "Z")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--customers", type=int, default=5000)
    p.add_argument("--terminals", type=int, default=10000)
    p.add_argument("--days", type=int, default=183)
    p.add_argument("--start", default="2018-04-01")
    p.add_argument("--radius", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0, help="0 = the handbook's seeds")
    p.add_argument("--label-delay-days", type=float, default=7.0)
    a = p.parse_args(argv)
    for name in ("customers", "terminals", "days"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(a, name)}")
    if a.radius <= 0:
        p.error(f"--radius must be > 0, got {a.radius}")
    try:
        dt.date.fromisoformat(a.start)
    except ValueError:
        p.error(f"--start must be a date YYYY-MM-DD, got {a.start!r}")
    base = a.seed * SEED_STRIDE
    if not 0 <= base + max(a.customers, a.days) < 2**32:
        p.error(f"--seed {a.seed} out of range")

    t0 = time.time()
    cx, cy, mean_amount, std_amount, nb_per_day = customer_profiles(a.customers, base + 0)
    tx, ty = terminal_profiles(a.terminals, base + 1)
    available = terminals_within(cx, cy, tx, ty, a.radius)
    t_profiles = time.time() - t0

    secs, terms, amounts, custs = [], [], [], []
    for c in range(a.customers):
        s, t, m = customer_transactions(
            c, base + c, mean_amount[c], std_amount[c], nb_per_day[c], available[c], a.days
        )
        secs += s
        terms += t
        amounts += m
        custs += [c] * len(s)
    t_draws = time.time() - t0 - t_profiles

    secs = np.asarray(secs, dtype=np.int64)
    order = np.argsort(secs, kind="stable")  # ties keep customer, then draw order
    secs = secs[order]
    cust = np.asarray(custs, dtype=np.int64)[order]
    term = np.asarray(terms, dtype=np.int64)[order]
    amount = np.asarray(amounts, dtype=np.float64)[order]
    day = secs // DAY
    if len(secs) == 0:
        sys.exit("handbook_sim.py: no transactions generated (check --customers/--days)")
    scenario, amount = add_frauds(day, cust, term, amount, a.customers, a.terminals, base)
    t_frauds = time.time() - t0 - t_profiles - t_draws

    os.makedirs(a.out, exist_ok=True)
    ts = rfc3339(secs, a.start)
    delay = int(round(a.label_delay_days * DAY))
    rep = rfc3339(secs + delay, a.start)
    with open(os.path.join(a.out, "transactions.jsonl"), "w") as f:
        f.writelines(
            f'{{"tx_id":"tx{i}","ts":"{ts[i]}","account_id":"c{cust[i]}",'
            f'"merchant_id":"t{term[i]}","amount":{amount[i]:.2f},"currency":"EUR"}}\n'
            for i in range(len(secs))
        )
    frauds = np.flatnonzero(scenario > 0)
    with open(os.path.join(a.out, "labels.jsonl"), "w") as f:
        f.writelines(
            f'{{"tx_id":"tx{i}","account_id":"c{cust[i]}","fraud":true,"reported_at":"{rep[i]}",'
            f'"merchant_id":"t{term[i]}","ts":"{ts[i]}"}}\n'
            for i in frauds
        )
    with open(os.path.join(a.out, "scenarios.csv"), "w") as f:
        f.write("tx_id,scenario\n")
        f.writelines(f"tx{i},{scenario[i]}\n" for i in frauds)
    t_total = time.time() - t0

    stats = {
        "source": "Le Borgne et al., Fraud Detection Handbook, ch. 3 simulator (scripts/handbook_sim.py)",
        "params": {k: getattr(a, k) for k in ("customers", "terminals", "days", "start", "radius", "seed", "label_delay_days")},
        "transactions": int(len(secs)),
        "frauds": int(len(frauds)),
        "fraud_rate": float(len(frauds) / len(secs)),
        "frauds_by_scenario": {str(s): int((scenario == s).sum()) for s in (1, 2, 3)},
        "customers_with_transactions": int(len(np.unique(cust))),
        "terminals_used": int(len(np.unique(term))),
        "mean_terminals_per_customer": float(np.mean([len(x) for x in available])),
        "first_ts": str(ts[0]),
        "last_ts": str(ts[-1]),
        "seconds": {
            "profiles": round(t_profiles, 2),
            "draws": round(t_draws, 2),
            "frauds": round(t_frauds, 2),
            "total": round(t_total, 2),
        },
    }
    with open(os.path.join(a.out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print(
        f"handbook: {stats['transactions']} transactions, {stats['frauds']} frauds "
        f"({100 * stats['fraud_rate']:.3f} %; by scenario {stats['frauds_by_scenario']}), "
        f"{a.days} days from {a.start}, {t_total:.1f}s -> {a.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
