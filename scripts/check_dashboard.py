#!/usr/bin/env python3
"""Evaluate every query of a Grafana dashboard against a Prometheus server.

    scripts/check_dashboard.py --prometheus http://127.0.0.1:9090 \
        --dashboard grafana/dashboards/fraudstream.json [--wait-seconds 60]

    scripts/check_dashboard.py --lint --dashboard grafana/dashboards/fraudstream.json

Each panel target's expr has its Grafana variables substituted ($__rate_interval,
$__interval -> 1m, $__range -> 5m, and the _s/_ms forms; dashboard variables such as
$job and $instance from --var NAME=VALUE), then runs as an instant query on
/api/v1/query. Prints one line per target:

    ok|EMPTY|ERROR <panel title>: <expr> (<n> series)

and exits 1 if any query errors or returns no series (2 on bad usage / unreadable
dashboard). A query comparing with the past (`offset 1w`) cannot have data on a
Prometheus younger than that: it must run without error, and the same query with the
offset shortened to 15s must return data. --wait-seconds N re-runs all queries until
every one has data or N seconds pass (rate() needs two scrapes inside its window).

--lint checks the structure instead (no Prometheus needed), for importing into any
Grafana: `__inputs` names a Prometheus data source, `editable` is false, the
templating has the variables datasource (type datasource), job and instance, every
panel and target uses the data source `${datasource}`, every non-row panel has a unit,
and every metric selector of every query filters on job=~"$job" and instance=~"$instance".
Stdlib only.
"""
import argparse
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

RANGE_SECONDS = 300
INTERVAL_SECONDS = 60
SUBSTITUTIONS = {
    "__rate_interval_ms": str(INTERVAL_SECONDS * 1000),
    "__rate_interval": "1m",
    "__interval_ms": str(INTERVAL_SECONDS * 1000),
    "__interval": "1m",
    "__range_ms": str(RANGE_SECONDS * 1000),
    "__range_s": str(RANGE_SECONDS),
    "__range": "5m",
}
# $name, ${name} or [[name]]; longest names first so $__range_s is not read as $__range + "_s".
_NAMES = "|".join(sorted(SUBSTITUTIONS, key=len, reverse=True))
VAR_RE = re.compile(r"\$\{(" + _NAMES + r")\}|\[\[(" + _NAMES + r")\]\]|\$(" + _NAMES + r")(?![A-Za-z0-9_])")
LEFTOVER_RE = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z_]")


def substitute(expr, variables=None):
    expr = VAR_RE.sub(lambda m: SUBSTITUTIONS[m.group(1) or m.group(2) or m.group(3)], expr)
    for name, value in sorted((variables or {}).items(), key=lambda kv: -len(kv[0])):
        expr = re.sub(r"\$\{" + re.escape(name) + r"\}|\[\[" + re.escape(name) + r"\]\]|\$"
                      + re.escape(name) + r"(?![A-Za-z0-9_])", lambda _m: value, expr)
    return expr


OFFSET_RE = re.compile(r"offset\s+(\d+)(w|d)")
SELECTOR_RE = re.compile(r"\b((?:fraud|process)_[a-z_]+|up)\b(\{[^}]*\})?")
REQUIRED_MATCHERS = ('job=~"$job"', 'instance=~"$instance"')
DS_UID = "${datasource}"


def lint(dashboard):
    """Problems with the dashboard's structure, as strings."""
    problems = []
    inputs = dashboard.get("__inputs") or []
    if not any(i.get("type") == "datasource" and i.get("pluginId") == "prometheus" for i in inputs):
        problems.append("__inputs: no Prometheus data source input")
    if dashboard.get("editable") is not False:
        problems.append(f"editable: expected false, got {dashboard.get('editable')!r}")
    variables = {v.get("name"): v for v in (dashboard.get("templating") or {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("templating: no variable 'datasource' of type datasource (prometheus)")
    for name in ("job", "instance"):
        v = variables.get(name)
        if not v:
            problems.append(f"templating: no variable {name!r}")
        elif (v.get("datasource") or {}).get("uid") != DS_UID:
            problems.append(f"templating: variable {name!r} does not query {DS_UID}")
    for panel in iter_panels(dashboard.get("panels")):
        title = panel.get("title") or f"panel {panel.get('id')}"
        if panel.get("type") == "row":
            continue
        if (panel.get("datasource") or {}).get("uid") != DS_UID:
            problems.append(f"{title}: panel datasource is {panel.get('datasource')!r}, not {DS_UID}")
        if not ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit"):
            problems.append(f"{title}: no unit (fieldConfig.defaults.unit)")
        for t in panel.get("targets") or []:
            if (t.get("datasource") or {}).get("uid") != DS_UID:
                problems.append(f"{title} [{t.get('refId')}]: target datasource is not {DS_UID}")
            expr = t.get("expr") or ""
            for m in SELECTOR_RE.finditer(expr):
                matchers = m.group(2) or ""
                missing = [r for r in REQUIRED_MATCHERS if r not in matchers]
                if missing:
                    problems.append(f"{title} [{t.get('refId')}]: {m.group(0)} lacks {', '.join(missing)}")
    return problems


def iter_panels(panels):
    for panel in panels or []:
        yield panel
        # Collapsed rows keep their children inside the row panel.
        yield from iter_panels(panel.get("panels"))


def collect_targets(dashboard):
    """[(title, refId, raw_expr, problem)] for every non-hidden target with an expr."""
    out = []
    for panel in iter_panels(dashboard.get("panels")):
        if panel.get("type") == "row":
            continue
        title = panel.get("title") or f"panel {panel.get('id')}"
        targets = panel.get("targets") or []
        if not targets:
            out.append((title, "-", "", "panel has no targets"))
        for t in targets:
            if t.get("hide"):
                continue
            expr = (t.get("expr") or "").strip()
            problem = None if expr else "target has no expr"
            ds = t.get("datasource") or panel.get("datasource") or {}
            if isinstance(ds, dict) and ds.get("type") not in (None, "prometheus", "datasource"):
                problem = f"datasource type {ds.get('type')!r} is not prometheus"
            out.append((title, t.get("refId", "?"), expr, problem))
    return out


def instant_query(base, expr, timeout):
    url = base.rstrip("/") + "/api/v1/query"
    data = urllib.parse.urlencode({"query": expr}).encode()
    req = urllib.request.Request(url, data=data,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as e:
        try:
            body = json.load(e)
        except Exception:  # noqa: BLE001 - report whatever came back
            return None, f"HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return None, f"request failed: {e}"
    if body.get("status") != "success":
        return None, f"{body.get('errorType', 'error')}: {body.get('error', body)}"
    result = body["data"]
    rtype, value = result.get("resultType"), result.get("result")
    if rtype in ("vector", "matrix"):
        series = value or []
    elif rtype in ("scalar", "string"):
        series = [{"value": value}]
    else:
        return None, f"unexpected resultType {rtype!r}"
    return series, None


def is_nan(sample):
    try:
        return math.isnan(float(sample["value"][1]))
    except (KeyError, IndexError, TypeError, ValueError):
        return False


def run_checks(base, targets, timeout, variables=None):
    rows = []
    for title, ref, raw, problem in targets:
        expr = substitute(raw, variables)
        if problem is None and LEFTOVER_RE.search(expr):
            problem = f"unresolved variable in {expr!r}"
        if problem:
            rows.append(("ERROR", title, ref, expr, problem))
            continue
        series, err = instant_query(base, expr, timeout)
        past = OFFSET_RE.search(expr)
        if err:
            rows.append(("ERROR", title, ref, expr, err))
        elif past and not series:
            # No data that old yet: the same query a few seconds back must have some.
            recent = OFFSET_RE.sub("offset 15s", expr)
            series, err = instant_query(base, recent, timeout)
            if err or not series:
                rows.append(("EMPTY", title, ref, recent, err or "0 series with offset 15s"))
            else:
                rows.append(("ok", title, ref, expr,
                             f"no data {past.group(0)} ago yet; {len(series)} series with offset 15s"))
        elif not series:
            rows.append(("EMPTY", title, ref, expr, "0 series"))
        else:
            nans = sum(1 for s in series if is_nan(s))
            note = f"{len(series)} series" + (f", {nans} NaN" if nans else "")
            rows.append(("ok", title, ref, expr, note))
    return rows


def main():
    ap = argparse.ArgumentParser(description="Run every dashboard query against Prometheus.")
    ap.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus base URL")
    ap.add_argument("--dashboard", default="grafana/dashboards/fraudstream.json")
    ap.add_argument("--wait-seconds", type=float, default=0,
                    help="retry until every query has data or this many seconds pass")
    ap.add_argument("--allow-empty", metavar="REGEX",
                    help="panels whose title matches may return no series (e.g. 'Errors|Dead letters')")
    ap.add_argument("--timeout", type=float, default=10, help="per-request timeout, seconds")
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                    help="value of a dashboard variable, e.g. --var job=fraudstream (repeatable)")
    ap.add_argument("--lint", action="store_true",
                    help="check the dashboard's structure only (no Prometheus)")
    args = ap.parse_args()
    variables = {}
    for v in args.var:
        name, sep, value = v.partition("=")
        if not sep or not name:
            print(f"--var {v!r}: expected NAME=VALUE", file=sys.stderr)
            return 2
        variables[name] = value

    try:
        with open(args.dashboard, encoding="utf-8") as f:
            dashboard = json.load(f)
    except (OSError, ValueError) as e:
        print(f"cannot read dashboard {args.dashboard}: {e}", file=sys.stderr)
        return 2
    dashboard = dashboard.get("dashboard", dashboard)  # accept API export wrappers too
    if args.lint:
        problems = lint(dashboard)
        for p in problems:
            print(f"LINT {p}")
        n = sum(1 for p in iter_panels(dashboard.get("panels")) if p.get("type") != "row")
        if problems:
            print(f"FAILED: {len(problems)} lint problems in {n} panels", file=sys.stderr)
            return 1
        print(f"lint: {n} panels ok (datasource variable, job/instance filters, units, __inputs, not editable)")
        return 0
    targets = collect_targets(dashboard)
    if not targets:
        print(f"no panel targets found in {args.dashboard}", file=sys.stderr)
        return 2
    allow = re.compile(args.allow_empty) if args.allow_empty else None

    def failing(rows):
        return [r for r in rows
                if r[0] == "ERROR" or (r[0] == "EMPTY" and not (allow and allow.search(r[1])))]

    deadline = time.monotonic() + args.wait_seconds
    attempt = 0
    while True:
        attempt += 1
        rows = run_checks(args.prometheus, targets, args.timeout, variables)
        bad = failing(rows)
        if not bad or time.monotonic() >= deadline:
            break
        print(f"attempt {attempt}: {len(bad)} of {len(rows)} queries not ready, retrying",
              file=sys.stderr, flush=True)
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))

    for status, title, ref, expr, note in rows:
        print(f"{status} {title} [{ref}]: {expr} ({note})")
    bad_titles = list(dict.fromkeys(r[1] for r in bad))
    if bad:
        print(f"FAILED: {len(bad)} of {len(rows)} queries; panels: " + "; ".join(bad_titles),
              file=sys.stderr)
        return 1
    print(f"all {len(rows)} queries of {len(set(r[1] for r in rows))} panels returned data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
