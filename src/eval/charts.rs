//! The SVG charts of `report.html`, drawn with `plotters` (SVG backend, no font files: text
//! is laid out by the browser): precision–recall and ROC curves, the threshold sweep, score
//! histograms and alerts per day.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::measures::{Analysis, Histogram};
use super::{fmt_day, fmt_metric, fmt_score, EvalError};

const SIZE: (u32, u32) = (640, 400);
const BLUE: RGBColor = RGBColor(31, 95, 168);
const RED: RGBColor = RGBColor(214, 39, 40);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const GREY: RGBColor = RGBColor(150, 150, 150);
const FONT: &str = "sans-serif";

type DrawResult = Result<(), Box<dyn std::error::Error>>;

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

pub(super) fn pr_curve_svg(a: &Analysis) -> Result<String, EvalError> {
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

pub(super) fn roc_curve_svg(a: &Analysis) -> Result<String, EvalError> {
    let r = &a.report;
    let fpr = {
        let c = &r.counts;
        crate::ranking::ratio(c.fp, c.fp + c.tn)
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

pub(super) fn sweep_svg(a: &Analysis) -> Result<String, EvalError> {
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

pub(super) fn histogram_svg(a: &Analysis, h: &Histogram) -> Result<String, EvalError> {
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

pub(super) fn alerts_svg(a: &Analysis) -> Result<String, EvalError> {
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
