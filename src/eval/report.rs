//! The `--report DIR` files: `metrics.json` (the [`super::EvalReport`]) and `report.html`, a
//! self-contained page (inline SVG drawn with `plotters` in [`super::charts`], inline CSS and a
//! few lines of inline JavaScript for the threshold picker; nothing is fetched). Element ids the browser test
//! (`scripts/test_report.sh`) looks for: `threshold`, `model-version`, `confusion`, `pr-curve`,
//! `roc-curve`, `sweep-chart`, `sweep-table`, `picker-out`, `histogram`, `amounts`, `missed`.

use std::fmt::Write as _;
use std::path::Path;

use super::charts::{alerts_svg, histogram_svg, pr_curve_svg, roc_curve_svg, sweep_svg};
use super::measures::{Analysis, SWEEP_TABLE_RATES, TOP_MISSED};
use super::{
    describe_window, fmt_amount, fmt_day, fmt_duration, fmt_metric, fmt_pct, fmt_rate, fmt_score,
    fmt_time, EvalError, EvalOptions,
};

/// Writes `metrics.json` and `report.html` into `dir` (created if missing; existing files are
/// replaced).
pub(super) fn write(
    dir: &Path,
    analysis: &Analysis,
    scores: &Path,
    labels: &Path,
    opts: &EvalOptions,
) -> Result<(), EvalError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EvalError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let json_path = dir.join("metrics.json");
    let mut json = serde_json::to_string_pretty(&analysis.report).map_err(|e| EvalError::Io {
        path: json_path.clone(),
        source: e.into(),
    })?;
    json.push('\n');
    std::fs::write(&json_path, json).map_err(io(&json_path))?;
    let html_path = dir.join("report.html");
    let html = render_html(analysis, scores, labels, opts)?;
    std::fs::write(&html_path, html).map_err(io(&html_path))?;
    Ok(())
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}\
    table{border-collapse:collapse;margin:1em 0}\
    td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}\
    td.n{text-align:right;font-variant-numeric:tabular-nums}\
    figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}\
    .warn{background:#fff3cd;border:1px solid #e0c36a;padding:.5em 1em}\
    .bar{display:inline-block;height:14px;vertical-align:middle}\
    tr.current{background:#fde2e2}\
    #picker-out{font-variant-numeric:tabular-nums}";

const PICKER_JS: &str = r#"(function () {
  var data = JSON.parse(document.getElementById("sweep-data").textContent);
  var range = document.getElementById("picker-range");
  var out = document.getElementById("picker-out");
  function f(v, n) { return v === null ? "n/a" : v.toFixed(n); }
  function show() {
    var p = data.points[Number(range.value)];
    out.textContent = "threshold " + f(p.threshold, 6) + ": " + p.alerts + " alerts (" +
      f(p.alerts_per_day, 1) + " per day), precision " + f(p.precision, 4) + ", recall " +
      f(p.recall, 4) + " (" + p.tp + " frauds caught, " + p.fp + " genuine alerted)";
  }
  range.max = String(data.points.length - 1);
  range.value = String(data.start);
  range.addEventListener("input", show);
  show();
  document.body.setAttribute("data-ready", "1");
})();"#;

fn render_html(
    a: &Analysis,
    scores: &Path,
    labels: &Path,
    opts: &EvalOptions,
) -> Result<String, EvalError> {
    let r = &a.report;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>fraudstream evaluation</title><style>{STYLE}</style></head><body>\n\
         <h1>fraudstream evaluation</h1>\n"
    );
    if !r.warnings.is_empty() {
        out.push_str("<div id=\"warnings\" class=\"warn\"><strong>Warnings</strong><ul>");
        for w in &r.warnings {
            let _ = write!(out, "<li>{}</li>", escape(w));
        }
        out.push_str("</ul></div>\n");
    }
    let row = |out: &mut String, id: Option<&str>, name: &str, value: String| {
        let id = id.map_or(String::new(), |i| format!(" id=\"{i}\""));
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td class=\"n\"{id}>{}</td></tr>",
            escape(name),
            escape(&value)
        );
    };
    out.push_str("<h2>Setup</h2><table id=\"setup\">\n");
    row(
        &mut out,
        Some("model-version"),
        "model",
        r.model_version
            .clone()
            .unwrap_or_else(|| "unknown (pass --model)".to_owned()),
    );
    if let Some(m) = &opts.model {
        row(&mut out, None, "model kind", m.kind.clone());
        row(
            &mut out,
            None,
            "training range",
            format!(
                "[{}, {})",
                fmt_time(m.trained_from_ms),
                fmt_time(m.trained_to_ms)
            ),
        );
    }
    row(
        &mut out,
        Some("threshold"),
        "threshold",
        r.threshold.map_or("n/a".to_owned(), fmt_score),
    );
    row(&mut out, None, "threshold from", r.threshold_source.clone());
    row(&mut out, None, "scores", scores.display().to_string());
    row(&mut out, None, "labels", labels.display().to_string());
    row(&mut out, Some("window"), "window", describe_window(opts));
    row(
        &mut out,
        None,
        "evaluated transactions from / to",
        format!(
            "{} / {}",
            r.window.first.as_deref().unwrap_or("-"),
            r.window.last.as_deref().unwrap_or("-")
        ),
    );
    row(
        &mut out,
        None,
        "label delay",
        fmt_duration(opts.label_delay_ms),
    );
    out.push_str("</table>\n<h2>Summary</h2><table id=\"summary\">\n");
    let share = 100.0 * r.positives as f64 / r.transactions as f64;
    row(
        &mut out,
        None,
        "transactions evaluated",
        r.transactions.to_string(),
    );
    row(
        &mut out,
        None,
        "frauds (positives)",
        format!("{} ({})", r.positives, fmt_pct(share)),
    );
    row(
        &mut out,
        None,
        "removed known-compromised accounts",
        r.removed_accounts.to_string(),
    );
    row(
        &mut out,
        None,
        "removed transactions",
        r.removed_transactions.to_string(),
    );
    row(&mut out, Some("roc-auc"), "ROC AUC", fmt_metric(r.roc_auc));
    row(
        &mut out,
        Some("average-precision"),
        "average precision",
        fmt_metric(r.average_precision),
    );
    row(&mut out, None, "alerts", r.alerts.to_string());
    row(&mut out, None, "alerts per day", fmt_rate(r.alerts_per_day));
    row(
        &mut out,
        None,
        "precision at threshold",
        fmt_metric(r.precision_at_threshold),
    );
    row(
        &mut out,
        None,
        "recall at threshold",
        fmt_metric(r.recall_at_threshold),
    );
    row(
        &mut out,
        None,
        &format!("card precision@{}", r.k),
        fmt_metric(r.card_precision_at_k),
    );
    row(&mut out, None, "days", r.days.to_string());
    out.push_str(
        "</table>\n<p>Card precision@k: per UTC day, accounts ranked by their highest score \
         of the day; share of the top min(k, accounts that day) with a fraud that day \
         (ties at the cut counted in expectation); mean over days.</p>\n",
    );

    // Confusion counts.
    let c = &r.counts;
    let _ = write!(
        out,
        "<h2>Confusion counts at the threshold</h2>\n<table id=\"confusion\">\
         <tr><th></th><th>alerted</th><th>not alerted</th></tr>\
         <tr><th>fraud</th><td class=\"n\" id=\"tp\">{}</td><td class=\"n\" id=\"fn\">{}</td></tr>\
         <tr><th>genuine</th><td class=\"n\" id=\"fp\">{}</td><td class=\"n\" id=\"tn\">{}</td></tr>\
         </table>\n",
        c.tp, c.fn_, c.fp, c.tn
    );

    // Amounts.
    out.push_str("<h2>Fraud amount caught and missed</h2>\n<div id=\"amounts\">");
    match &r.amounts {
        Some(am) => {
            let pct = |v: f64| {
                if am.fraud > 0.0 {
                    100.0 * v / am.fraud
                } else {
                    0.0
                }
            };
            let _ = write!(
                out,
                "<table><tr><th></th><th>frauds</th><th>amount</th><th>share of the fraud amount</th></tr>\
                 <tr><th>caught (alerted)</th><td class=\"n\">{}</td><td class=\"n\" id=\"amount-caught\">{}</td>\
                 <td><span class=\"bar\" style=\"width:{:.0}px;background:#d62728\"></span> {:.1}%</td></tr>\
                 <tr><th>missed</th><td class=\"n\">{}</td><td class=\"n\" id=\"amount-missed\">{}</td>\
                 <td><span class=\"bar\" style=\"width:{:.0}px;background:#999\"></span> {:.1}%</td></tr>\
                 <tr><th>all frauds</th><td class=\"n\">{}</td><td class=\"n\">{}</td><td></td></tr></table>",
                c.tp,
                fmt_amount(am.caught),
                3.0 * pct(am.caught),
                pct(am.caught),
                c.fn_,
                fmt_amount(am.missed),
                3.0 * pct(am.missed),
                pct(am.missed),
                c.tp + c.fn_,
                fmt_amount(am.fraud),
            );
        }
        None => out.push_str(
            "<p>The scores file has no <code>amount</code> column (written by <code>score</code> \
             since it was added): amounts unknown.</p>",
        ),
    }
    out.push_str("</div>\n");

    // Curves.
    out.push_str("<h2>Ranking</h2>\n");
    let _ = write!(
        out,
        "<figure id=\"pr-curve\">{}</figure>\n<figure id=\"roc-curve\">{}</figure>\n",
        pr_curve_svg(a)?,
        roc_curve_svg(a)?
    );

    // Sweep.
    out.push_str("<h2 id=\"sweep\">Choosing a threshold</h2>\n");
    let _ = writeln!(out, "<figure id=\"sweep-chart\">{}</figure>", sweep_svg(a)?);
    let start = r.threshold.map_or(0, |t| {
        a.sweep
            .iter()
            .enumerate()
            .min_by(|x, y| {
                (x.1.threshold - t)
                    .abs()
                    .total_cmp(&(y.1.threshold - t).abs())
            })
            .map_or(0, |(i, _)| i)
    });
    let data = serde_json::json!({ "start": start, "points": a.sweep });
    let data = data.to_string().replace("</", "<\\/");
    let _ = write!(
        out,
        "<p id=\"picker\"><label for=\"picker-range\">Try a threshold:</label> \
         <input type=\"range\" id=\"picker-range\" min=\"0\" max=\"0\" step=\"1\" value=\"0\" style=\"width:400px\"> \
         <output id=\"picker-out\">(needs JavaScript)</output></p>\n\
         <script type=\"application/json\" id=\"sweep-data\">{data}</script>\n\
         <script>{PICKER_JS}</script>\n"
    );
    out.push_str(
        "<table id=\"sweep-table\"><tr><th>alert budget (share of transactions)</th><th>threshold</th>\
         <th>alerts</th><th>alerts per day</th><th>precision</th><th>recall</th></tr>\n",
    );
    // The row of the threshold in use, in threshold order (the table runs downwards).
    let mut current = r.threshold;
    for (rate, p) in &a.sweep_table {
        if current.is_some_and(|t| p.threshold < t) {
            current_row(&mut out, r);
            current = None;
        }
        let _ = writeln!(
            out,
            "<tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            fmt_pct(rate * 100.0),
            fmt_score(p.threshold),
            p.alerts,
            fmt_rate(p.alerts_per_day),
            fmt_metric(p.precision),
            fmt_metric(p.recall)
        );
    }
    if current.is_some() {
        current_row(&mut out, r);
    }
    let _ = writeln!(
        out,
        "</table><p>Each budget row alerts on the highest-scored {} of the transactions \
         (ties included); the highlighted row is the threshold in use.</p>",
        SWEEP_TABLE_RATES
            .iter()
            .map(|r| fmt_pct(r * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Histograms.
    out.push_str("<h2>Score distributions</h2>\n<div id=\"histogram\">");
    for h in &a.histograms {
        let _ = write!(out, "<figure>{}</figure>", histogram_svg(a, h)?);
    }
    out.push_str("</div>\n");

    // Alerts per day.
    let _ = write!(
        out,
        "<h2>Per day</h2>\n<figure id=\"alerts-per-day\">{}</figure>\n",
        alerts_svg(a)?
    );

    // Missed frauds.
    let _ = write!(
        out,
        "<h2>Top missed frauds</h2>\n<table id=\"missed\"><tr><th>tx_id</th><th>account</th>\
         <th>time</th><th>amount</th><th>score</th></tr>\n"
    );
    for m in &a.missed {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&m.tx_id),
            escape(&m.account),
            fmt_time(m.ts_ms),
            fmt_amount(m.amount),
            fmt_score(m.score)
        );
    }
    let _ = writeln!(
        out,
        "</table><p>The {TOP_MISSED} frauds without an alert with the largest amounts (highest \
         score first when amounts are unknown), of {} missed.</p>",
        c.fn_
    );

    out.push_str("<details><summary>Per day</summary><table id=\"per-day\">\n<tr><th>day</th><th>transactions</th><th>frauds</th><th>alerts</th><th>frauds caught</th>");
    let _ = writeln!(out, "<th>card precision@{}</th></tr>", r.k);
    for d in &a.days {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            fmt_day(d.day),
            d.transactions,
            d.frauds,
            d.alerts,
            d.caught,
            fmt_metric(d.card_precision)
        );
    }
    out.push_str("</table></details>\n</body></html>\n");
    Ok(out)
}

fn current_row(out: &mut String, r: &super::EvalReport) {
    let _ = writeln!(
        out,
        "<tr class=\"current\"><td class=\"n\">{} (in use)</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
        fmt_pct(100.0 * r.alerts as f64 / r.transactions as f64),
        r.threshold.map_or("n/a".to_owned(), fmt_score),
        r.alerts,
        fmt_rate(r.alerts_per_day),
        fmt_metric(r.precision_at_threshold),
        fmt_metric(r.recall_at_threshold)
    );
}
