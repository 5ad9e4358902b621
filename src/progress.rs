//! Progress of the long offline commands (`produce`, `score`): a bar with total, rate and ETA
//! when stderr is a terminal; otherwise one quiet line every [`PLAIN_INTERVAL`] (for CI logs
//! and `nohup`), e.g.
//!
//! ```text
//! score: 120,000/1,000,000 lines (12%), 49,709/s, ETA 17s
//! ```

use std::cell::Cell;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

/// Interval of the plain progress lines when stderr is not a terminal.
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(5);

/// `1234567` → `1,234,567`.
pub fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `49708.9264` → `49,709/s` (one decimal below 10/s).
pub fn fmt_rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        return "0/s".to_string();
    }
    if per_sec < 10.0 {
        return format!("{per_sec:.1}/s");
    }
    format!("{}/s", fmt_count(per_sec.round() as u64))
}

/// `75 s` → `1m 15s`, `3700 s` → `1h 01m`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Lines of a `.jsonl` or `.jsonl.gz` file (for the total of a bar).
pub fn count_lines(path: &Path) -> std::io::Result<u64> {
    let mut r = crate::replay::open_lines(path).map_err(std::io::Error::other)?;
    let mut n = 0u64;
    let mut last = b'\n';
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        n += buf.iter().filter(|b| **b == b'\n').count() as u64;
        last = buf[buf.len() - 1];
        let len = buf.len();
        r.consume(len);
    }
    // A last line without its newline counts too.
    Ok(n + u64::from(last != b'\n'))
}

/// One progress display: a bar on a terminal, periodic lines elsewhere, nothing when hidden.
pub struct Progress {
    bar: Option<ProgressBar>,
    what: String,
    unit: &'static str,
    total: Option<u64>,
    pos: Cell<u64>,
    started: Instant,
    last_line: Cell<Instant>,
    interval: Option<Duration>,
}

impl Progress {
    /// Progress of `what` (e.g. "score") over `total` `unit`s (e.g. "lines"), drawn on stderr:
    /// a bar if it is a terminal, else a line every [`PLAIN_INTERVAL`].
    pub fn new(what: &str, total: Option<u64>, unit: &'static str) -> Progress {
        if std::io::stderr().is_terminal() {
            Progress::bar(what, total, unit)
        } else {
            Progress::plain(what, total, unit, PLAIN_INTERVAL)
        }
    }

    /// No output at all.
    pub fn hidden() -> Progress {
        Progress {
            bar: None,
            what: String::new(),
            unit: "",
            total: None,
            pos: Cell::new(0),
            started: Instant::now(),
            last_line: Cell::new(Instant::now()),
            interval: None,
        }
    }

    fn bar(what: &str, total: Option<u64>, unit: &'static str) -> Progress {
        let rate = |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&fmt_rate(s.per_sec()));
        };
        let template = if total.is_some() {
            "{prefix} [{bar:30}] {human_pos}/{human_len} {msg} ({rate}, ETA {eta})"
        } else {
            "{prefix} {spinner} {human_pos} {msg} ({rate})"
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("rate", rate)
            .progress_chars("=> ");
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::new_spinner(),
        };
        bar.set_style(style);
        bar.set_prefix(what.to_string());
        bar.set_message(unit);
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress {
            bar: Some(bar),
            ..Progress::plain(what, total, unit, Duration::MAX)
        }
    }

    /// Plain lines every `interval` (tests use a short one).
    pub fn plain(
        what: &str,
        total: Option<u64>,
        unit: &'static str,
        interval: Duration,
    ) -> Progress {
        Progress {
            bar: None,
            what: what.to_string(),
            unit,
            total,
            pos: Cell::new(0),
            started: Instant::now(),
            last_line: Cell::new(Instant::now()),
            interval: Some(interval),
        }
    }

    /// What is being done, shown after the counts (e.g. the topic written).
    pub fn set_message(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(format!("{} {msg}", self.unit));
        }
    }

    /// `n` more units done.
    pub fn inc(&self, n: u64) {
        let pos = self.pos.get() + n;
        self.pos.set(pos);
        if let Some(b) = &self.bar {
            b.inc(n);
            return;
        }
        let Some(every) = self.interval else { return };
        // Instant::now() costs ~20 ns: under 1 % of the time of a line.
        let now = Instant::now();
        if now.duration_since(self.last_line.get()) >= every {
            self.last_line.set(now);
            let _ = writeln!(std::io::stderr().lock(), "{}", self.line());
        }
    }

    /// The plain progress line for the current position.
    pub fn line(&self) -> String {
        let pos = self.pos.get();
        let secs = self.started.elapsed().as_secs_f64();
        let rate = pos as f64 / secs.max(1e-9);
        match self.total {
            Some(t) if t > 0 => {
                let left = t.saturating_sub(pos) as f64 / rate.max(1e-9);
                format!(
                    "{}: {}/{} {} ({}%), {}, ETA {}",
                    self.what,
                    fmt_count(pos),
                    fmt_count(t),
                    self.unit,
                    (pos.min(t) * 100) / t,
                    fmt_rate(rate),
                    fmt_duration(Duration::from_secs_f64(left.min(1e9)))
                )
            }
            _ => format!(
                "{}: {} {}, {}",
                self.what,
                fmt_count(pos),
                self.unit,
                fmt_rate(rate)
            ),
        }
    }

    /// Removes the bar (the command prints its own summary).
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_rates_are_readable() {
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(1000), "1,000");
        assert_eq!(fmt_count(1_234_567), "1,234,567");
        assert_eq!(fmt_rate(49_708.926_4), "49,709/s");
        assert_eq!(fmt_rate(3.25), "3.2/s");
        assert_eq!(fmt_rate(f64::NAN), "0/s");
        assert_eq!(fmt_duration(Duration::from_secs(75)), "1m 15s");
        assert_eq!(fmt_duration(Duration::from_secs(3700)), "1h 01m");
        assert_eq!(fmt_duration(Duration::from_secs(9)), "9s");
    }

    #[test]
    fn plain_line_has_total_percent_and_eta() {
        let p = Progress::plain("score", Some(1_000_000), "lines", Duration::MAX);
        p.inc(120_000);
        let l = p.line();
        assert!(
            l.starts_with("score: 120,000/1,000,000 lines (12%), "),
            "{l}"
        );
        assert!(l.contains("/s, ETA "), "{l}");
        let p = Progress::plain("produce", None, "messages", Duration::MAX);
        p.inc(5);
        assert!(
            p.line().starts_with("produce: 5 messages, "),
            "{}",
            p.line()
        );
    }

    #[test]
    fn lines_are_counted_with_or_without_a_last_newline() {
        let dir = std::env::temp_dir().join(format!("fs-progress-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let a = dir.join("a.jsonl");
        std::fs::write(&a, "x\ny\nz\n").expect("write");
        assert_eq!(count_lines(&a).expect("count"), 3);
        std::fs::write(&a, "x\ny\nz").expect("write");
        assert_eq!(count_lines(&a).expect("count"), 3);
        std::fs::write(&a, "").expect("write");
        assert_eq!(count_lines(&a).expect("count"), 0);
    }
}
