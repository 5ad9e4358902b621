//! The `--report DIR` files: `metrics.json` (the [`super::EvalReport`]) and `report.html`, a
//! self-contained page (inline SVG drawn with `plotters`, inline CSS and a few lines of inline
//! JavaScript for the threshold picker; nothing is fetched). Element ids the browser test
//! (`scripts/test_report.sh`) looks for: `threshold`, `model-version`, `confusion`, `pr-curve`,
//! `roc-curve`, `sweep-chart`, `sweep-table`, `picker-out`, `histogram`, `amounts`, `missed`.

use std::fmt::Write as _;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::measures::{Analysis, Histogram, SWEEP_TABLE_RATES, TOP_MISSED};
use super::{
    describe_window, fmt_amount, fmt_day, fmt_duration, fmt_metric, fmt_pct, fmt_rate, fmt_score,
    fmt_time, EvalError, EvalOptions,
};

const SIZE: (u32, u32) = (640, 400);
const BLUE: RGBColor = RGBColor(31, 95, 168);
const RED: RGBColor = RGBColor(214, 39, 40);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const GREY: RGBColor = RGBColor(150, 150, 150);
const FONT: &str = "sans-serif";

type DrawResult = Result<(), Box<dyn std::error::Error>>;

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

/// Draws one chart into an SVG string.
fn svg(
    chart: &'static str,
    draw: impl for<'a> FnOnce(&DrawingArea<SVGBackend<'a>, Shift>) -> DrawResult,
) -> Result<String, EvalError> {
    let fail = |e: &dyn std::fmt::Display| EvalError::Chart {
        chart,
        detail: e.to_string(),
    };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        draw(&root).map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(out)
}

fn unit_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
) -> Result<
    ChartContext<
        'a,
        SVGBackend<'b>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    Box<dyn std::error::Error>,
> {
    let mut chart = ChartBuilder::on(root)
        .caption(caption, (FONT, 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .light_line_style(RGBColor(238, 238, 238))
        .draw()?;
    Ok(chart)
}

fn pr_curve_svg(a: &Analysis) -> Result<String, EvalError> {
    let r = &a.report;
    svg("precision-recall", |root| {
        let caption = format!(
            "Precision-recall curve (AP {})",
            fmt_metric(r.average_precision)
        );
        let mut chart = unit_chart(root, &caption, "recall", "precision")?;
        if r.positives > 0 {
            let base = r.positives as f64 / r.transactions as f64;
            chart
                .draw_series(DashedLineSeries::new(
                    [(0.0, base), (1.0, base)],
                    4,
                    4,
                    GREY.into(),
                ))?
                .label(format!("fraud rate {base:.5}"))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], GREY));
        }
        if let Some(&(_, p0)) = a.pr_curve.first() {
            chart
                .draw_series(LineSeries::new(
                    std::iter::once((0.0, p0)).chain(a.pr_curve.iter().copied()),
                    BLUE.stroke_width(2),
                ))?
                .label("model")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE.stroke_width(2)));
        }
        let (rec, prec) = (r.recall_at_threshold, r.precision_at_threshold);
        if rec.is_finite() && prec.is_finite() {
            chart
                .draw_series([Circle::new((rec, prec), 6, RED.filled())])?
                .label(format!(
                    "threshold: precision {}, recall {}",
                    fmt_metric(prec),
                    fmt_metric(rec)
                ))
                .legend(|(x, y)| Circle::new((x + 8, y), 5, RED.filled()));
        }
        legend(&mut chart)
    })
}

fn legend<'a, 'b: 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, CT>,
) -> DrawResult {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(204, 204, 204))
        .label_font((FONT, 12))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}

fn roc_curve_svg(a: &Analysis) -> Result<String, EvalError> {
    let r = &a.report;
    let fpr = {
        let c = &r.counts;
        super::super::ranking::ratio(c.fp, c.fp + c.tn)
    };
    svg("roc", |root| {
        let caption = format!("ROC curve (AUC {})", fmt_metric(r.roc_auc));
        let mut chart = unit_chart(root, &caption, "false positive rate", "true positive rate")?;
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                4,
                4,
                GREY.into(),
            ))?
            .label("random")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], GREY));
        if !a.roc_curve.is_empty() {
            chart
                .draw_series(LineSeries::new(
                    a.roc_curve.iter().copied(),
                    BLUE.stroke_width(2),
                ))?
                .label("model")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE.stroke_width(2)));
        }
        let tpr = r.recall_at_threshold;
        if tpr.is_finite() && fpr.is_finite() {
            chart
                .draw_series([Circle::new((fpr, tpr), 6, RED.filled())])?
                .label(format!(
                    "threshold: recall {}, false positive rate {}",
                    fmt_metric(tpr),
                    fmt_score(fpr)
                ))
                .legend(|(x, y)| Circle::new((x + 8, y), 5, RED.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(204, 204, 204))
            .label_font((FONT, 12))
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
        Ok(())
    })
}

fn sweep_svg(a: &Analysis) -> Result<String, EvalError> {
    let r = &a.report;
    let lo = a.sweep.first().map_or(0.0, |p| p.threshold);
    let mut hi = a.sweep.last().map_or(1.0, |p| p.threshold);
    if hi <= lo {
        hi = lo + 1e-6;
    }
    let max_rate = a
        .sweep
        .iter()
        .map(|p| p.alerts_per_day)
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.05;
    svg("threshold sweep", |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Threshold sweep: precision, recall and alerts per day",
                (FONT, 16),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .right_y_label_area_size(60)
            .build_cartesian_2d(lo..hi, 0.0..1.0)?
            .set_secondary_coord(lo..hi, 0.0..max_rate);
        let fmt_x = |x: &f64| format!("{x:.4}");
        chart
            .configure_mesh()
            .x_desc("threshold (alert when score >= threshold)")
            .y_desc("precision, recall")
            .x_labels(6)
            .x_label_formatter(&fmt_x)
            .light_line_style(RGBColor(238, 238, 238))
            .draw()?;
        chart
            .configure_secondary_axes()
            .y_desc("alerts per day")
            .draw()?;
        let finite = |v: f64| v.is_finite();
        chart
            .draw_series(LineSeries::new(
                a.sweep
                    .iter()
                    .filter(|p| finite(p.precision))
                    .map(|p| (p.threshold, p.precision)),
                BLUE.stroke_width(2),
            ))?
            .label("precision")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(
                a.sweep
                    .iter()
                    .filter(|p| finite(p.recall))
                    .map(|p| (p.threshold, p.recall)),
                RED.stroke_width(2),
            ))?
            .label("recall")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED.stroke_width(2)));
        chart
            .draw_secondary_series(LineSeries::new(
                a.sweep.iter().map(|p| (p.threshold, p.alerts_per_day)),
                GREEN.stroke_width(2),
            ))?
            .label("alerts per day (right axis)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], GREEN.stroke_width(2)));
        if let Some(t) = r.threshold.filter(|t| (lo..=hi).contains(t)) {
            chart
                .draw_series(DashedLineSeries::new(
                    [(t, 0.0), (t, 1.0)],
                    6,
                    3,
                    BLACK.into(),
                ))?
                .label(format!("threshold {}", fmt_score(t)))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK));
        }
        legend(&mut chart)
    })
}

fn histogram_svg(a: &Analysis, h: &Histogram) -> Result<String, EvalError> {
    let threshold = a.report.threshold;
    let width = h.bin_width();
    svg("histogram", |root| {
        let caption = if h.lo == 0.0 {
            "Scores of frauds and genuine transactions (share of each class per bin)".to_owned()
        } else {
            format!(
                "Scores in [{:.4}, 1], around the threshold ({} frauds, {} genuine below)",
                h.lo, h.below.0, h.below.1
            )
        };
        let (title, body) = root.split_vertically(30);
        title.draw(&Text::new(
            caption,
            (10, 8),
            (FONT, 15).into_font().color(&BLACK),
        ))?;
        let panels = body.split_evenly((2, 1));
        for (panel, counts, name, color) in [
            (&panels[0], &h.fraud, "fraud", RED),
            (&panels[1], &h.genuine, "genuine", BLUE),
        ] {
            let total: u64 = counts.iter().sum::<u64>()
                + if name == "fraud" {
                    h.below.0
                } else {
                    h.below.1
                };
            let share = |c: u64| {
                if total == 0 {
                    0.0
                } else {
                    c as f64 / total as f64
                }
            };
            let top = counts
                .iter()
                .map(|&c| share(c))
                .fold(0.0, f64::max)
                .max(1e-9)
                * 1.1;
            let mut chart = ChartBuilder::on(panel)
                .margin_left(12)
                .margin_right(12)
                .x_label_area_size(30)
                .y_label_area_size(64)
                .build_cartesian_2d(h.lo..h.hi, 0.0..top)?;
            let fmt_x = |x: &f64| format!("{x:.3}");
            let decimals = if top >= 0.05 {
                0
            } else if top >= 0.005 {
                1
            } else {
                2
            };
            let fmt_y = |y: &f64| format!("{:.*}%", decimals, y * 100.0);
            chart
                .configure_mesh()
                .y_desc(format!("{name} ({total})"))
                .x_labels(8)
                .y_labels(4)
                .x_label_formatter(&fmt_x)
                .y_label_formatter(&fmt_y)
                .light_line_style(RGBColor(238, 238, 238))
                .draw()?;
            if let Some(t) = threshold.filter(|t| *t <= h.hi) {
                let t0 = t.max(h.lo);
                chart.draw_series([Rectangle::new(
                    [(t0, 0.0), (h.hi, top)],
                    RGBColor(255, 200, 200).mix(0.35).filled(),
                )])?;
            }
            chart.draw_series(counts.iter().enumerate().filter(|(_, &c)| c > 0).map(
                |(b, &c)| {
                    let x0 = h.lo + b as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width, share(c))], color.mix(0.7).filled())
                },
            ))?;
            if let Some(t) = threshold.filter(|t| (h.lo..=h.hi).contains(t)) {
                chart.draw_series(DashedLineSeries::new(
                    [(t, 0.0), (t, top)],
                    6,
                    3,
                    BLACK.stroke_width(2),
                ))?;
                // The label on the side of the line with more room.
                let right = t > (h.lo + h.hi) / 2.0;
                let (anchor, x, label) = if right {
                    (
                        HPos::Right,
                        t - (h.hi - h.lo) * 0.01,
                        format!("threshold {}, alert region →", fmt_score(t)),
                    )
                } else {
                    (
                        HPos::Left,
                        t + (h.hi - h.lo) * 0.01,
                        format!("threshold {}, alert region", fmt_score(t)),
                    )
                };
                chart.draw_series([Text::new(
                    label,
                    (x, top * 0.97),
                    (FONT, 12)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(anchor, VPos::Top)),
                )])?;
            }
        }
        Ok(())
    })
}

fn alerts_svg(a: &Analysis) -> Result<String, EvalError> {
    let n = a.days.len().max(1);
    let max = a.days.iter().map(|d| d.alerts).max().unwrap_or(0).max(1) as f64 * 1.1;
    svg("alerts per day", |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Alerts and frauds caught per day (UTC)", (FONT, 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..n as f64, 0.0..max)?;
        let label_every = n.div_ceil(6).max(1);
        let fmt_x = |x: &f64| {
            let i = x.floor() as usize;
            match a.days.get(i) {
                Some(d) if i % label_every == 0 => fmt_day(d.day),
                _ => String::new(),
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n.min(40))
            .x_label_formatter(&fmt_x)
            .y_desc("transactions")
            .light_line_style(RGBColor(238, 238, 238))
            .draw()?;
        for (value, color, name) in [
            (
                &(|d: &super::measures::DayStat| d.alerts)
                    as &dyn Fn(&super::measures::DayStat) -> u64,
                BLUE,
                "alerts",
            ),
            (
                &|d: &super::measures::DayStat| d.caught,
                RED,
                "frauds caught",
            ),
        ] {
            chart
                .draw_series(a.days.iter().enumerate().map(|(i, d)| {
                    Rectangle::new(
                        [(i as f64 + 0.1, 0.0), (i as f64 + 0.9, value(d) as f64)],
                        color.filled(),
                    )
                }))?
                .label(name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
        }
        legend(&mut chart)
    })
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
