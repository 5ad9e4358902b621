//! Tests of `eval`: inputs, measures and the report files.
use super::measures::card_precision;
use super::*;
use crate::decode::parse_ts;
use approx::assert_relative_eq;
use std::sync::atomic::{AtomicUsize, Ordering};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fraudstream-eval-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ms(ts: &str) -> i64 {
    parse_ts(ts).expect("test timestamp")
}

fn run(csv: &str, labels: &str, opts: &EvalOptions) -> Result<EvalReport, EvalError> {
    let dir = TempDir::new("run");
    let scores = dir.write("scores.csv", csv);
    let labels = dir.write("labels.jsonl", labels);
    evaluate(&scores, &labels, opts, None)
}

/// Builds a scores CSV and labels from (tx, score, alert, ts, account, fraud).
fn dataset(rows: &[(&str, f64, u8, &str, &str, bool)]) -> (String, String) {
    let mut csv = String::from("tx_id,score,alert,ts,account_id\n");
    let mut labels = String::new();
    for (tx, score, alert, ts, account, fraud) in rows {
        csv.push_str(&format!("{tx},{score},{alert},{ts},{account}\n"));
        if *fraud {
            labels.push_str(&format!(
                "{{\"tx_id\":\"{tx}\",\"account_id\":\"{account}\",\"fraud\":true}}\n"
            ));
        }
    }
    (csv, labels)
}

#[test]
fn undefined_metrics_are_nan_and_serialise_as_null() {
    let (csv, _) = dataset(&[
        ("t1", 0.3, 0, "2018-04-01T00:00:00Z", "A", false),
        ("t2", 0.7, 1, "2018-04-01T00:00:00Z", "B", false),
    ]);
    let r = run(&csv, "", &EvalOptions::default()).expect("evaluate");
    assert_eq!((r.transactions, r.positives, r.alerts), (2, 0, 1));
    let json = serde_json::to_value(&r).expect("serialise");
    assert!(json["roc_auc"].is_null());
    assert!(json["recall_at_threshold"].is_null());
    assert_eq!(json["precision_at_threshold"], 0.0);
    assert!(r.to_text().contains("ROC AUC                  n/a"));
}

#[test]
fn card_precision_on_two_days() {
    // Day 1: A .9 (fraud), B .8 and .1 (the .1 one is fraud), C .3 (fraud).
    // Day 2: A .2 (genuine: A's fraud was on day 1), D .95 (fraud).
    let (csv, labels) = dataset(&[
        ("a1", 0.9, 1, "2018-04-01T01:00:00Z", "A", true),
        ("b1", 0.8, 1, "2018-04-01T02:00:00Z", "B", false),
        ("b2", 0.1, 0, "2018-04-01T03:00:00Z", "B", true),
        ("c1", 0.3, 0, "2018-04-01T23:59:59.999Z", "C", true),
        ("a2", 0.2, 0, "2018-04-02T00:00:00Z", "A", false),
        ("d1", 0.95, 1, "2018-04-02T02:00:00Z", "D", true),
    ]);
    let opts = |k| EvalOptions {
        k,
        ..EvalOptions::default()
    };
    // k=2: day 1 top {A, B} both compromised → 1; day 2 {D, A} → 1/2.
    let r = run(&csv, &labels, &opts(2)).expect("evaluate");
    assert_eq!(r.days, 2);
    assert_eq!(r.k, 2);
    assert_relative_eq!(r.card_precision_at_k, 0.75);
    // k=1: A on day 1, D on day 2.
    let r = run(&csv, &labels, &opts(1)).expect("evaluate");
    assert_relative_eq!(r.card_precision_at_k, 1.0);
    // k=100: day 1 has 3 accounts, all compromised → 1; day 2 → 1/2.
    let r = run(&csv, &labels, &opts(100)).expect("evaluate");
    assert_relative_eq!(r.card_precision_at_k, 0.75);
    assert_eq!((r.transactions, r.positives, r.alerts), (6, 4, 3));
    assert_relative_eq!(r.precision_at_threshold, 2.0 / 3.0);
    assert_relative_eq!(r.recall_at_threshold, 0.5);
    // k=0 is undefined.
    let r = run(&csv, &labels, &opts(0)).expect("evaluate");
    assert!(r.card_precision_at_k.is_nan());
}

#[test]
fn card_precision_ties_at_the_cut_count_in_expectation() {
    let mut accounts = vec![(0.5, true), (0.5, false), (0.9, false)];
    assert_relative_eq!(card_precision(&mut accounts, 2), 0.25);
    let mut accounts = vec![(0.5, true), (0.5, false)];
    assert_relative_eq!(card_precision(&mut accounts, 1), 0.5);
    assert_relative_eq!(card_precision(&mut accounts, 2), 0.5);
}

#[test]
fn known_compromised_accounts_are_removed() {
    let csv = "tx_id,score,alert,ts,account_id\n\
        a1,0.9,1,2018-04-01T00:00:00Z,A\n\
        a2,0.8,1,2018-04-10T05:00:00Z,A\n\
        b1,0.9,1,2018-04-05T00:00:00Z,B\n\
        b2,0.2,0,2018-04-11T00:00:00Z,B\n\
        c2,0.3,0,2018-04-11T00:00:00Z,C\n\
        c3,0.4,0,2018-04-12T00:00:00Z,C\n\
        d2,0.7,1,2018-04-11T00:00:00Z,D\n\
        e2,0.1,0,2018-04-11T00:00:00Z,E\n\
        f1,0.6,0,2018-04-05T00:00:00Z,F\n\
        f2,0.5,0,2018-04-13T00:00:00Z,F\n";
    let e_reported = ms("2018-04-09T12:00:00Z");
    let labels = [
        // A: tx before from, ts + 7d = 04-08 < from → removed.
        r#"{"tx_id":"a1","account_id":"A","fraud":true}"#.to_owned(),
        // B: ts + 7d = 04-12 ≥ from → kept.
        r#"{"tx_id":"b1","account_id":"B","fraud":true}"#.to_owned(),
        // C: tx not scored, but reported before from → removed.
        r#"{"tx_id":"cX","account_id":"C","fraud":true,"reported_at":"2018-04-09T00:00:00Z"}"#
            .to_owned(),
        // D: tx not scored, no reported_at → ignored for removal.
        r#"{"tx_id":"dX","account_id":"D","fraud":true}"#.to_owned(),
        r#"{"tx_id":"d2","account_id":"D","fraud":true}"#.to_owned(),
        // E: reported_at as epoch milliseconds → removed.
        format!(r#"{{"tx_id":"eX","account_id":"E","fraud":true,"reported_at":{e_reported}}}"#),
        // F: reported_at wins over ts + delay (04-12) → kept.
        r#"{"tx_id":"f1","account_id":"F","fraud":true,"reported_at":"2018-04-12T00:00:00Z"}"#
            .to_owned(),
        r#"{"tx_id":"b2","account_id":"B","fraud":false}"#.to_owned(),
    ]
    .join("\n");
    let opts = EvalOptions {
        from_ms: Some(ms("2018-04-10T00:00:00Z")),
        ..EvalOptions::default()
    };
    let r = run(csv, &labels, &opts).expect("evaluate");
    // Window: a2 b2 c2 c3 d2 e2 f2; A, C (reported_at) and E (epoch ms) removed.
    assert_eq!(r.removed_accounts, 3);
    assert_eq!(r.removed_transactions, 4);
    assert_eq!(r.transactions, 3);
    assert_eq!(r.positives, 1);

    // Without --from nothing is removed.
    let r = run(csv, &labels, &EvalOptions::default()).expect("evaluate");
    assert_eq!((r.removed_accounts, r.removed_transactions), (0, 0));
    assert_eq!(r.transactions, 10);
    assert_eq!(r.positives, 4);

    // A longer label delay keeps A too.
    let opts = EvalOptions {
        from_ms: Some(ms("2018-04-10T00:00:00Z")),
        label_delay_ms: 10 * DAY_MS,
        ..EvalOptions::default()
    };
    let r = run(csv, &labels, &opts).expect("evaluate");
    assert_eq!((r.removed_accounts, r.removed_transactions), (2, 3));
}

#[test]
fn from_to_window_is_half_open() {
    let (csv, labels) = dataset(&[
        ("t0", 0.9, 1, "2018-03-31T23:59:59.999Z", "A", true),
        ("t1", 0.8, 1, "2018-04-01T00:00:00Z", "B", true),
        ("t2", 0.2, 0, "2018-04-01T12:00:00.500Z", "C", false),
        ("t3", 0.7, 1, "2018-04-02T00:00:00Z", "D", true),
        ("t4", 0.1, 0, "2018-04-02T00:00:00+02:00", "E", false),
    ]);
    let opts = EvalOptions {
        from_ms: Some(ms("2018-04-01T00:00:00Z")),
        to_ms: Some(ms("2018-04-02T00:00:00Z")),
        ..EvalOptions::default()
    };
    let r = run(&csv, &labels, &opts).expect("evaluate");
    // t1, t2 and t4 (22:00Z on 04-01) are inside.
    assert_eq!((r.transactions, r.positives, r.days), (3, 1, 1));
    assert_relative_eq!(r.roc_auc, 1.0);

    let opts = EvalOptions {
        from_ms: Some(ms("2019-01-01T00:00:00Z")),
        ..EvalOptions::default()
    };
    match run(&csv, &labels, &opts) {
        Err(EvalError::Empty(msg)) => assert!(msg.contains("window"), "{msg}"),
        other => panic!("expected Empty, got {other:?}"),
    }
}

#[test]
fn quoted_fields_and_crlf() {
    let csv = "score,tx_id,alert,ts,account_id,extra\r\n\
        0.9,\"t,1 \"\"x\"\"\",1,2018-04-01T00:00:31Z,A,\r\n\
        0.2,\"multi\r\nline\",0,2018-04-01T00:00:32Z,\"B\",z\r\n\
        \r\n\
        0.4,t3,0, 2018-04-01T00:00:33Z ,C,\"\"\r\n";
    let labels = "{\"tx_id\":\"t,1 \\\"x\\\"\",\"account_id\":\"A\",\"fraud\":true}\n\
                  {\"tx_id\":\"multi\\r\\nline\",\"account_id\":\"B\",\"fraud\":true}\n";
    let r = run(csv, labels, &EvalOptions::default()).expect("evaluate");
    assert_eq!((r.transactions, r.positives, r.alerts), (3, 2, 1));
}

fn parse_error(csv: &str) -> (u64, String) {
    match run(csv, "", &EvalOptions::default()) {
        Err(EvalError::Parse { line, detail, .. }) => (line, detail),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn bad_csv_lines_are_reported_with_line_numbers() {
    let head = "tx_id,score,alert,ts,account_id\n";
    let ok = "t1,0.5,0,2018-04-01T00:00:00Z,A\n";
    let (line, detail) = parse_error(&format!("{head}{ok}t2,abc,0,2018-04-01T00:00:00Z,A\n"));
    assert_eq!(line, 3);
    assert!(detail.contains("score"), "{detail}");
    // A record spanning two lines shifts the numbering.
    let (line, detail) = parse_error(&format!(
        "{head}\"t\n1\",0.5,0,2018-04-01T00:00:00Z,A\nt2,0.5,0,yesterday,A\n"
    ));
    assert_eq!(line, 4);
    assert!(detail.contains("ts"), "{detail}");
    let (line, detail) = parse_error(&format!("{head}{ok}{ok}t3,0.5,0\n"));
    assert_eq!(line, 4);
    assert!(detail.contains("expected 5 fields, found 3"), "{detail}");
    let (line, detail) = parse_error(&format!("{head}t1,1.5,0,2018-04-01T00:00:00Z,A\n"));
    assert_eq!(line, 2);
    assert!(detail.contains("outside"), "{detail}");
    let (line, detail) = parse_error(&format!("{head}t1,NaN,0,2018-04-01T00:00:00Z,A\n"));
    assert_eq!(line, 2);
    assert!(detail.contains("outside"), "{detail}");
    let (line, detail) = parse_error(&format!("{head}t1,0.5,2,2018-04-01T00:00:00Z,A\n"));
    assert_eq!(line, 2);
    assert!(detail.contains("alert"), "{detail}");
    let (line, detail) = parse_error(&format!("{head}{ok}\"t2,0.5,0,2018-04-01T00:00:00Z,A\n"));
    // An unterminated quote runs to the end of the file: one field.
    assert_eq!(line, 3);
    assert!(detail.contains("expected 5 fields, found 1"), "{detail}");
    let (line, detail) = parse_error(&format!("{head}{ok}t2,0.5,0,2018-04-01T00:00:00Z,A,\n"));
    assert_eq!(line, 3);
    assert!(detail.contains("expected 5 fields, found 6"), "{detail}");
    let with_amount = "tx_id,score,alert,ts,account_id,amount\n";
    let (line, detail) = parse_error(&format!(
        "{with_amount}t1,0.5,0,2018-04-01T00:00:00Z,A,12.5\nt2,0.5,0,2018-04-01T00:00:00Z,A,-1\n"
    ));
    assert_eq!(line, 3);
    assert!(detail.contains("amount \"-1\""), "{detail}");
    let (line, detail) = parse_error("tx_id,score,ts,account_id\n");
    assert_eq!(line, 1);
    assert!(detail.contains("\"alert\""), "{detail}");
    let (line, detail) = parse_error(&format!("{head}{ok},0.5,0,2018-04-01T00:00:00Z,A\n"));
    assert_eq!(line, 3);
    assert!(detail.contains("tx_id"), "{detail}");

    let err = run(head, "", &EvalOptions::default()).expect_err("no rows");
    assert!(matches!(err, EvalError::Empty(_)), "{err}");
    let err = run("", "", &EvalOptions::default()).expect_err("empty");
    assert!(matches!(err, EvalError::Empty(_)), "{err}");
}

#[test]
fn bad_label_lines_are_reported_with_line_numbers() {
    let csv = "tx_id,score,alert,ts,account_id\nt1,0.5,0,2018-04-01T00:00:00Z,A\n";
    for (labels, line, needle) in [
        (
            "{\"tx_id\":\"t1\",\"account_id\":\"A\",\"fraud\":true}\n\n{\"tx_id\":\"t2\"\n",
            3,
            "not a JSON object",
        ),
        (
            "{\"tx_id\":\"t1\",\"account_id\":\"A\",\"fraud\":\"yes\"}\n",
            1,
            "invalid field fraud",
        ),
        (
            "{\"tx_id\":\"t1\",\"account_id\":\"A\",\"fraud\":true,\"reported_at\":\"yesterday\"}\n",
            1,
            "RFC 3339",
        ),
        (
            "{\"tx_id\":\"t1\",\"account_id\":\"A\",\"fraud\":true,\"reported_at\":[1]}\n",
            1,
            "reported_at",
        ),
        // The worker's label decoder: account_id is required.
        (
            "{\"tx_id\":\"t1\",\"fraud\":true}\n",
            1,
            "missing field account_id",
        ),
        ] {
        match run(csv, labels, &EvalOptions::default()) {
            Err(EvalError::Parse {
                line: l, detail, ..
            }) => {
                assert_eq!(l, line, "{detail}");
                assert!(detail.contains(needle), "{detail}");
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }
    let dir = TempDir::new("missing");
    let err = evaluate(
        &dir.write("s.csv", csv),
        &dir.0.join("nope.jsonl"),
        &EvalOptions::default(),
        None,
    )
    .expect_err("missing labels");
    assert!(matches!(err, EvalError::Io { .. }), "{err}");
}

#[test]
fn report_files_are_written_and_valid() {
    let dir = TempDir::new("report");
    let mut rows = Vec::new();
    let names: Vec<String> = (0..200).map(|i| format!("t{i}")).collect();
    let accounts: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
    let times: Vec<String> = (0..200)
        .map(|i| format!("2018-04-{:02}T{:02}:00:00Z", 1 + i % 5, i % 24))
        .collect();
    for i in 0..200 {
        let fraud = i % 10 == 0;
        let score = if fraud {
            0.6 + (i % 7) as f64 * 0.05
        } else {
            (i % 50) as f64 / 60.0
        };
        let alert = u8::from(score > 0.7);
        rows.push((
            names[i].as_str(),
            score,
            alert,
            times[i].as_str(),
            accounts[i % 40].as_str(),
            fraud,
        ));
    }
    let (csv, labels) = dataset(&rows);
    let scores = dir.write("scores <&>.csv", &csv);
    let labels = dir.write("labels.jsonl", &labels);
    let out = dir.0.join("out").join("nested");
    let opts = EvalOptions {
        k: 5,
        ..EvalOptions::default()
    };
    let r = evaluate(&scores, &labels, &opts, Some(&out)).expect("evaluate");
    assert_eq!((r.transactions, r.positives, r.days), (200, 20, 5));

    let json = std::fs::read_to_string(out.join("metrics.json")).expect("metrics.json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid json");
    assert_eq!(v["transactions"], 200);
    assert_eq!(v["k"], 5);
    assert_relative_eq!(v["roc_auc"].as_f64().expect("number"), r.roc_auc);

    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    // PR, ROC, sweep, one histogram (the threshold is not near 1), alerts per day.
    assert_eq!(html.matches("<svg").count(), 5);
    assert_eq!(html.matches("</svg>").count(), 5);
    assert_self_contained(&html);
    assert!(html.contains("scores &lt;&amp;&gt;.csv"));
    for id in [
        "threshold",
        "confusion",
        "pr-curve",
        "roc-curve",
        "sweep-chart",
        "sweep-table",
        "picker-out",
        "histogram",
        "amounts",
        "missed",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "no element {id}");
    }
    assert!(!html.contains("NaN"));
    assert!(r.to_text().contains("card precision@5"));

    // Still valid without frauds (NaN metrics), into the existing directory: files replaced.
    std::fs::write(out.join("report.html"), "stale").expect("write");
    let none = dir.write("none.jsonl", "");
    let r = evaluate(&scores, &none, &opts, Some(&out)).expect("evaluate into an existing dir");
    assert!(r.roc_auc.is_nan());
    let json = std::fs::read_to_string(out.join("metrics.json")).expect("metrics.json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid json");
    assert!(v["average_precision"].is_null());
    assert_eq!(v["positives"], 0);
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert_eq!(html.matches("</svg>").count(), 5);
    assert!(!html.contains("NaN"));
}

/// Nothing in the page is fetched: no external resources of any kind.
fn assert_self_contained(html: &str) {
    for needle in [
        "src=",
        "href=",
        "url(",
        "@import",
        "fetch(",
        "XMLHttpRequest",
        "<link",
    ] {
        assert!(!html.contains(needle), "the report contains {needle:?}");
    }
}

/// Six transactions over two days, with amounts; alerts at 0.8.
const WITH_AMOUNTS: &str = "tx_id,score,alert,ts,account_id,amount
t1,0.950000,1,2018-04-01T10:00:00Z,A,100
t2,0.900000,1,2018-04-01T11:00:00Z,B,20
t3,0.600000,0,2018-04-02T10:00:00Z,C,300
t4,0.400000,0,2018-04-02T11:00:00Z,D,50.5
t5,0.200000,0,2018-04-02T12:00:00Z,E,10
t6,0.100000,0,2018-04-02T13:00:00Z,F,5
";
const WITH_AMOUNTS_LABELS: &str = r#"{"tx_id":"t1","account_id":"A","fraud":true}
{"tx_id":"t3","account_id":"C","fraud":true}
{"tx_id":"t4","account_id":"D","fraud":true}
{"tx_id":"t5","account_id":"E","fraud":false}
"#;

fn model(threshold: f64, from: &str, to: &str) -> ModelInfo {
    ModelInfo {
        version: "trees-test-1".to_owned(),
        kind: "trees".to_owned(),
        threshold,
        trained_from_ms: ms(from),
        trained_to_ms: ms(to),
    }
}

#[test]
fn threshold_counts_amounts_and_missed_frauds() {
    let opts = EvalOptions {
        model: Some(model(0.8, "2018-03-01", "2018-03-15")),
        ..EvalOptions::default()
    };
    let r = run(WITH_AMOUNTS, WITH_AMOUNTS_LABELS, &opts).expect("evaluate");
    assert_eq!(r.threshold, Some(0.8));
    assert_eq!(r.threshold_source, "model file");
    assert_eq!(r.model_version.as_deref(), Some("trees-test-1"));
    assert_eq!(
        r.counts,
        Confusion {
            tp: 1,
            fp: 1,
            fn_: 2,
            tn: 2
        }
    );
    assert_relative_eq!(r.alerts_per_day, 1.0);
    let a = r.amounts.expect("amounts");
    assert_relative_eq!(a.fraud, 450.5);
    assert_relative_eq!(a.caught, 100.0);
    assert_relative_eq!(a.missed, 350.5);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(r.window.first.as_deref(), Some("2018-04-01T10:00:00Z"));
    assert_eq!(r.window.last.as_deref(), Some("2018-04-02T13:00:00Z"));
    let text = r.to_text();
    assert!(text.contains("trees-test-1"), "{text}");
    assert!(text.contains("tp 1 fp 1 fn 2 tn 2"), "{text}");
    assert!(text.contains("0.800000"), "{text}");

    let json = serde_json::to_value(&r).expect("serialise");
    assert_eq!(json["threshold"], 0.8);
    assert_eq!(
        json["counts"],
        serde_json::json!({"tp": 1, "fp": 1, "fn": 2, "tn": 2})
    );
    assert!(json["window"]["from"].is_null());
    assert_eq!(json["window"]["first"], "2018-04-01T10:00:00Z");
    assert_eq!(json["amounts"]["missed"], 350.5);

    // The report: missed frauds by amount, the sweep starting at the threshold.
    let dir = TempDir::new("amounts");
    let scores = dir.write("s.csv", WITH_AMOUNTS);
    let labels = dir.write("l.jsonl", WITH_AMOUNTS_LABELS);
    let out = dir.0.join("rep");
    evaluate(&scores, &labels, &opts, Some(&out)).expect("evaluate");
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    let missed = &html[html.find("id=\"missed\"").expect("missed table")..];
    let (t3, t4) = (
        missed.find("<td>t3</td>").expect("t3"),
        missed.find("<td>t4</td>").expect("t4"),
    );
    assert!(t3 < t4, "largest missed amount first");
    assert!(!missed[..missed.find("</table>").expect("end")].contains("<td>t1</td>"));
    assert!(html.contains("id=\"tp\">1<") && html.contains("id=\"fn\">2<"));
    assert!(html.contains("id=\"threshold\">0.800000<"));
    assert!(html.contains("id=\"model-version\">trees-test-1<"));
    assert!(html.contains("id=\"amount-missed\">350.50<"));
    let data = &html[html.find("id=\"sweep-data\">").expect("sweep data")..];
    let data = &data[data.find('>').expect(">") + 1..data.find("</script>").expect("end")];
    let data: serde_json::Value = serde_json::from_str(data).expect("sweep json");
    let first = &data["points"][0];
    assert_eq!(first["threshold"], 0.8);
    assert_eq!(
        (first["tp"].as_u64(), first["fp"].as_u64()),
        (Some(1), Some(1))
    );
    assert_relative_eq!(first["recall"].as_f64().expect("recall"), 1.0 / 3.0);
    assert_eq!(data["start"], 0);
    assert_self_contained(&html);
}

#[test]
fn evaluating_on_the_training_range_or_another_threshold_warns() {
    // Training ended at noon on the first day: t1 and t2 are in it.
    let opts = EvalOptions {
        model: Some(model(0.8, "2018-03-01", "2018-04-01T12:00:00Z")),
        ..EvalOptions::default()
    };
    let r = run(WITH_AMOUNTS, WITH_AMOUNTS_LABELS, &opts).expect("evaluate");
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(r.warnings[0].contains("2 of the 6"), "{}", r.warnings[0]);
    assert!(
        r.warnings[0].contains("training range"),
        "{}",
        r.warnings[0]
    );
    assert!(r.warnings[0].contains("trees-test-1"), "{}", r.warnings[0]);
    // Evaluated from the end of training: no warning.
    let opts = EvalOptions {
        from_ms: Some(ms("2018-04-01T12:00:00Z")),
        ..opts
    };
    let r = run(WITH_AMOUNTS, WITH_AMOUNTS_LABELS, &opts).expect("evaluate");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);

    // t2 (0.90) was alerted, which a threshold of 0.92 would not do.
    let opts = EvalOptions {
        model: Some(model(0.92, "2018-03-01", "2018-03-15")),
        ..EvalOptions::default()
    };
    let r = run(WITH_AMOUNTS, WITH_AMOUNTS_LABELS, &opts).expect("evaluate");
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(
        r.warnings[0].contains("alert column of 1 transactions"),
        "{}",
        r.warnings[0]
    );
    // Counts still follow the alert column.
    assert_eq!(r.counts.tp + r.counts.fp, 2);
}

#[test]
fn without_a_model_the_threshold_is_the_lowest_alerted_score() {
    let r = run(WITH_AMOUNTS, WITH_AMOUNTS_LABELS, &EvalOptions::default()).expect("evaluate");
    assert_eq!(r.threshold, Some(0.9));
    assert!(
        r.threshold_source.contains("--model"),
        "{}",
        r.threshold_source
    );
    assert!(r.model_version.is_none());
    // Without an amount column, amounts are unknown.
    let csv: String = WITH_AMOUNTS
        .lines()
        .map(|l| l.rsplit_once(',').expect("comma").0.to_owned() + "\n")
        .collect();
    let r = run(&csv, WITH_AMOUNTS_LABELS, &EvalOptions::default()).expect("evaluate");
    assert!(r.amounts.is_none());
    assert_eq!(
        serde_json::to_value(&r).expect("json")["amounts"],
        serde_json::Value::Null
    );
}

#[test]
fn a_threshold_near_one_gets_a_zoomed_histogram() {
    let opts = EvalOptions {
        model: Some(model(0.94, "2018-03-01", "2018-03-15")),
        ..EvalOptions::default()
    };
    let csv = WITH_AMOUNTS.replace("t2,0.900000,1", "t2,0.900000,0");
    let dir = TempDir::new("zoom");
    let scores = dir.write("s.csv", &csv);
    let labels = dir.write("l.jsonl", WITH_AMOUNTS_LABELS);
    let out = dir.0.join("rep");
    let r = evaluate(&scores, &labels, &opts, Some(&out)).expect("evaluate");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert_eq!(html.matches("</svg>").count(), 6);
    assert!(html.contains("around the threshold"));
}

#[test]
fn labels_are_read_from_gzip() {
    use std::io::Write as _;
    let dir = TempDir::new("gz");
    let scores = dir.write("s.csv", WITH_AMOUNTS);
    let path = dir.0.join("l.jsonl.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).expect("create"),
        flate2::Compression::default(),
    );
    gz.write_all(WITH_AMOUNTS_LABELS.as_bytes()).expect("write");
    gz.finish().expect("finish");
    let r = evaluate(&scores, &path, &EvalOptions::default(), None).expect("evaluate");
    assert_eq!(r.positives, 3);
}
