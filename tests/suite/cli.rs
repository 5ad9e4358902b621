//! The binary's offline commands and configuration checks.

use std::process::Command;

use super::util::{root, unique};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fraudstream"));
    c.current_dir(root());
    c
}

#[test]
fn check_config_lists_every_problem_and_exits_2() {
    let dir = std::env::temp_dir().join(unique("cfg"));
    std::fs::create_dir_all(&dir).expect("dir");
    let f = dir.join("bad.toml");
    std::fs::write(
        &f,
        "[topics]\npartitions = 0\nalerts = \"transactions\"\n[metrics]\nlisten = \"nope\"\n",
    )
    .expect("write");
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&f)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("topics.partitions"), "{err}");
    assert!(err.contains("topics.alerts"), "{err}");
    assert!(err.contains("metrics.listen"), "{err}");
    let ok = bin().arg("check-config").output().expect("runs");
    assert!(ok.status.success());
}

#[test]
fn env_override_typo_is_refused() {
    let out = bin()
        .arg("check-config")
        .env("FRAUD__TOPICS__ALERTZ", "x")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("topics.alertz: unknown key"));
}

/// `score` over the committed fixture prints a score per valid transaction and reports the bad
/// lines with their line numbers.
#[test]
fn score_fixture_writes_a_row_per_valid_transaction() {
    let out_csv = std::env::temp_dir().join(format!("{}.csv", unique("score")));
    let out = bin()
        .args([
            "score",
            "--transactions",
            "fixtures/transactions.jsonl",
            "--labels",
            "fixtures/labels.jsonl",
            "--model",
            "models/default.json",
            "--out",
        ])
        .arg(&out_csv)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let lines =
        std::fs::read_to_string(root().join("fixtures/transactions.jsonl")).expect("fixture");
    let total = lines.lines().filter(|l| !l.trim().is_empty()).count();
    let bad = err
        .lines()
        .filter(|l| l.contains("fixtures/transactions.jsonl:"))
        .count();
    assert!(bad >= 3, "the fixture has bad lines: {err}");
    let csv = std::fs::read_to_string(&out_csv).expect("csv");
    assert_eq!(
        csv.lines().next(),
        Some("tx_id,score,alert,ts,account_id,amount")
    );
    assert_eq!(csv.lines().count() - 1, total - bad);
    for row in csv.lines().skip(1) {
        let cols: Vec<&str> = row.split(',').collect();
        let s: f32 = cols[1].parse().expect("score");
        assert!((0.0..=1.0).contains(&s));
        assert!(cols[2] == "0" || cols[2] == "1");
    }
}

#[test]
fn train_then_score_round_trip() {
    let dir = std::env::temp_dir().join(unique("train"));
    let model = dir.join("m.json");
    let out = bin()
        .args([
            "train",
            "--transactions",
            "fixtures/transactions.jsonl",
            "--labels",
            "fixtures/labels.jsonl",
            "--from",
            "2018-04-05",
            "--to",
            "2018-04-15",
            "--model",
            "kmeans",
            "--clusters",
            "4",
            "--out",
        ])
        .arg(&model)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fraudstream::model::Model::load(&model).expect("the trained model loads");
    // Supervised training on too few frauds says so, naming the remedy.
    let out = bin()
        .args([
            "train",
            "--transactions",
            "fixtures/transactions.jsonl",
            "--labels",
            "fixtures/labels.jsonl",
            "--from",
            "2018-04-05",
            "--to",
            "2018-04-06",
            "--out",
        ])
        .arg(dir.join("t.json"))
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("too few frauds"));
}

/// `eval` over `score`'s output prints the measures and writes the report.
#[test]
fn eval_writes_measures_and_report() {
    let dir = std::env::temp_dir().join(unique("eval"));
    std::fs::create_dir_all(&dir).expect("dir");
    let csv = dir.join("s.csv");
    let ok = bin()
        .args([
            "score",
            "--transactions",
            "fixtures/transactions.jsonl",
            "--labels",
            "fixtures/labels.jsonl",
            "--model",
            "models/default.json",
            "--out",
        ])
        .arg(&csv)
        .output()
        .expect("runs");
    assert!(ok.status.success());
    // Twice into the same directory: the second run replaces the files.
    for _ in 0..2 {
        let out = bin()
            .args(["eval", "--scores"])
            .arg(&csv)
            .args([
                "--labels",
                "fixtures/labels.jsonl",
                "--from",
                "2018-04-10",
                "--model",
                "models/default.json",
                "--report",
            ])
            .arg(dir.join("rep"))
            .output()
            .expect("runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}{err}");
        assert!(text.contains("ROC AUC"), "{text}");
        assert!(text.contains("card precision@100"), "{text}");
        assert!(text.contains("threshold"), "{text}");
        // The committed model was trained on the fixture's period.
        assert!(
            err.contains("warning:") && err.contains("training range"),
            "{err}"
        );
    }
    let html = std::fs::read_to_string(dir.join("rep/report.html")).expect("report");
    assert!(html.contains("<svg"));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("rep/metrics.json")).expect("json"))
            .expect("metrics.json");
    assert!(m["transactions"].as_u64().unwrap_or(0) > 0);
    let model =
        fraudstream::model::Model::load(&root().join("models/default.json")).expect("model");
    assert_eq!(m["model_version"], model.version());
    assert!(m["threshold"].as_f64().is_some());
    let c = &m["counts"];
    let sum: u64 = ["tp", "fp", "fn", "tn"]
        .iter()
        .map(|k| c[k].as_u64().expect("count"))
        .sum();
    assert_eq!(Some(sum), m["transactions"].as_u64());
    assert_eq!(m["window"]["from"], "2018-04-10T00:00:00Z");
}

/// SIGHUP reloads the model file in the real binary.
#[test]
fn sighup_reloads_the_model() {
    use fraudstream::model::Model;
    let dir = std::env::temp_dir().join(unique("hup"));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("m.json");
    let mut body = Model::load(&root().join("models/default.json"))
        .expect("model")
        .body()
        .clone();
    body.version = "hup-A".into();
    Model::save(&body, &path).expect("save");
    let port = crate::suite::util::free_port();
    let id = unique("hup");
    let mut child = bin()
        .arg("run")
        .env("FRAUD__MODEL__PATH", &path)
        .env("FRAUD__MODEL__WATCH_INTERVAL_MS", "0")
        .env("FRAUD__METRICS__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "FRAUD__KAFKA__BOOTSTRAP_SERVERS",
            crate::suite::util::bootstrap(),
        )
        .env("FRAUD__KAFKA__GROUP_ID", format!("g-{id}"))
        .env("FRAUD__TOPICS__TRANSACTIONS", format!("tx-{id}"))
        .env("FRAUD__TOPICS__ALERTS", format!("al-{id}"))
        .env("FRAUD__TOPICS__DEAD_LETTER", format!("dl-{id}"))
        .env("FRAUD__TOPICS__LABELS", format!("lb-{id}"))
        .env("FRAUD__TOPICS__PARTITIONS", "1")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // The log, to wait on what the worker did.
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    {
        use std::io::BufRead;
        let log = log.clone();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                log.lock().expect("log").push(line);
            }
        });
    }
    let swaps = || {
        log.lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains("Model swapped."))
            .count()
    };
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let has = |needle: &str| {
        rt.block_on(crate::suite::util::http_get(&metrics))
            .is_some_and(|(_, b)| b.contains(needle))
    };
    let wait = |needle: &str| {
        for _ in 0..300 {
            if has(needle) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    };
    // The handlers are installed before the HTTP server answers: a SIGHUP right now (model
    // loading, topics not yet checked: the window that used to kill the worker) is a reload.
    assert!(wait("model_version=\"hup-A\""), "worker up with model A");
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-HUP", &pid]).status();
    let ready = format!("http://127.0.0.1:{port}/readyz");
    let is_ready = || {
        rt.block_on(crate::suite::util::http_get(&ready))
            .is_some_and(|(s, _)| s == 200)
    };
    let mut up = false;
    for _ in 0..600 {
        if is_ready() {
            up = true;
            break;
        }
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "an early SIGHUP killed the worker"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(up, "worker ready after the early SIGHUP");
    for _ in 0..300 {
        if swaps() >= 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        swaps(),
        1,
        "the early SIGHUP reloaded the model (file A again)"
    );
    // The file changed while watching is off: only a SIGHUP loads it. The worker has since
    // joined the group and become ready (seconds), and still runs model A.
    body.version = "hup-B".into();
    Model::save(&body, &path).expect("save");
    assert!(
        has("model_version=\"hup-A\""),
        "no reload without SIGHUP when watching is off"
    );
    let _ = Command::new("kill").args(["-HUP", &pid]).status();
    assert!(wait("model_version=\"hup-B\""), "SIGHUP reloaded the model");
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = child.wait().expect("exit");
    assert!(status.success(), "exit 0 on SIGTERM: {status:?}");
}

/// `score` reads gzip-compressed files too, with the same results.
#[test]
fn score_reads_gzip() {
    use std::io::Write;
    let dir = std::env::temp_dir().join(unique("gz"));
    std::fs::create_dir_all(&dir).expect("dir");
    let gz = dir.join("t.jsonl.gz");
    let raw = std::fs::read(root().join("fixtures/transactions.jsonl")).expect("fixture");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).expect("create"),
        flate2::Compression::fast(),
    );
    enc.write_all(&raw).expect("write");
    enc.finish().expect("finish");
    let run = |input: &std::path::Path, out: &std::path::Path| {
        let o = bin()
            .args(["score", "--transactions"])
            .arg(input)
            .args(["--model", "models/default.json", "--out"])
            .arg(out)
            .output()
            .expect("runs");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(out).expect("csv")
    };
    let plain = run(
        &root().join("fixtures/transactions.jsonl"),
        &dir.join("a.csv"),
    );
    let zipped = run(&gz, &dir.join("b.csv"));
    assert_eq!(plain, zipped);
    assert!(plain.lines().count() > 2000);
}

/// Runs the binary with `args`, returning (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = bin().args(args).output().expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Bad arguments exit 2 and name the flag; the README's exit codes hold.
#[test]
fn argument_errors_exit_2() {
    let dir = std::env::temp_dir().join(unique("args"));
    std::fs::create_dir_all(&dir).expect("dir");
    let out = dir.join("x").display().to_string();
    let csv = dir.join("s.csv").display().to_string();
    std::fs::write(&csv, "tx_id,score,alert,ts,account_id\n").expect("write");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "eval",
                "--scores",
                &csv,
                "--labels",
                "fixtures/labels.jsonl",
                "--from",
                "yesterday",
            ],
            "--from",
        ),
        (
            vec![
                "eval",
                "--scores",
                &csv,
                "--labels",
                "fixtures/labels.jsonl",
                "--to",
                "2018-13-45",
            ],
            "--to",
        ),
        (
            vec![
                "eval",
                "--scores",
                &csv,
                "--labels",
                "fixtures/labels.jsonl",
                "--from",
                "2018-04-10",
                "--to",
                "2018-04-01",
            ],
            "must be before --to",
        ),
        (vec!["generate", "--out", &out, "--days", "0"], "--days"),
        (
            vec!["generate", "--out", &out, "--accounts", "0"],
            "--accounts",
        ),
        (
            vec!["generate", "--out", &out, "--start", "someday"],
            "--start",
        ),
        (
            vec![
                "score",
                "--transactions",
                "fixtures/transactions.jsonl",
                "--model",
                "models/default.json",
                "--out",
                &out,
                "--threshold",
                "2",
            ],
            "--threshold",
        ),
        (
            vec![
                "score",
                "--transactions",
                "/nonexistent.jsonl",
                "--model",
                "models/default.json",
                "--out",
                &out,
            ],
            "--transactions /nonexistent.jsonl",
        ),
        (
            vec![
                "score",
                "--transactions",
                "fixtures/transactions.jsonl",
                "--model",
                "/nonexistent-model.json",
                "--out",
                &out,
            ],
            "--model",
        ),
        (
            vec![
                "train",
                "--transactions",
                "fixtures/transactions.jsonl",
                "--from",
                "yesterday",
                "--to",
                "2018-04-05",
                "--out",
                &out,
            ],
            "--from",
        ),
        (
            vec![
                "train",
                "--transactions",
                "fixtures/transactions.jsonl",
                "--from",
                "2018-04-01",
                "--to",
                "2018-04-05",
                "--out",
                &out,
                "--anomaly-inputs",
                "amount,bogus",
            ],
            "--anomaly-inputs: \"bogus\" is not a feature",
        ),
        (vec!["frobnicate"], "unrecognized subcommand"),
        (vec!["run", "--log-format", "xml"], "--log-format"),
    ];
    for (args, needle) in cases {
        let (code, _, err) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?} should mention {needle:?}: {err}"
        );
    }
    assert!(
        !dir.join("x").exists(),
        "nothing written on an argument error"
    );
}

/// `score` over a file with no valid transaction (here the labels file) scores nothing and
/// fails, printing at most 20 bad lines and then how many more there were.
#[test]
fn score_with_nothing_valid_fails() {
    let dir = std::env::temp_dir().join(unique("novalid"));
    std::fs::create_dir_all(&dir).expect("dir");
    let input = dir.join("bad.jsonl");
    let lines: Vec<String> = (0..60).map(|i| format!("not json {i}")).collect();
    std::fs::write(&input, lines.join("\n")).expect("write");
    let out = dir.join("s.csv");
    let (code, _, err) = run(&[
        "score",
        "--transactions",
        input.to_str().expect("utf-8"),
        "--model",
        "models/default.json",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no valid transaction"), "{err}");
    let printed = err.lines().filter(|l| l.ends_with("(not_json)")).count();
    assert_eq!(printed, 20, "{err}");
    assert!(
        err.contains("40 more bad lines not shown (60 in all)"),
        "{err}"
    );
    // The labels file is not transactions either.
    let (code, _, err) = run(&[
        "score",
        "--transactions",
        "fixtures/labels.jsonl",
        "--model",
        "models/default.json",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no valid transaction"), "{err}");
}

/// `score --threshold` overrides the model's threshold: 0 alerts on everything, 1 on (almost)
/// nothing; the summary names the threshold used.
#[test]
fn score_threshold_overrides_the_model() {
    let dir = std::env::temp_dir().join(unique("thr"));
    std::fs::create_dir_all(&dir).expect("dir");
    let alerts = |t: &str| {
        let out = dir.join(format!("s{t}.csv"));
        let (code, _, err) = run(&[
            "score",
            "--transactions",
            "fixtures/transactions.jsonl",
            "--model",
            "models/default.json",
            "--threshold",
            t,
            "--out",
            out.to_str().expect("utf-8"),
        ]);
        assert_eq!(code, Some(0), "{err}");
        assert!(err.contains(&format!("(threshold {t})")), "{err}");
        let csv = std::fs::read_to_string(&out).expect("csv");
        let rows = csv.lines().count() - 1;
        let alerted = csv
            .lines()
            .skip(1)
            .filter(|r| r.split(',').nth(2) == Some("1"))
            .count();
        (rows, alerted)
    };
    let (rows, all) = alerts("0");
    assert_eq!(all, rows);
    let (_, none) = alerts("1");
    assert!(none < rows / 100, "{none} of {rows}");
}

/// Topic names on the shared broker.
fn list_topics() -> std::collections::BTreeSet<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", crate::suite::util::bootstrap())
        .create()
        .expect("client");
    let md = c
        .fetch_metadata(None, std::time::Duration::from_secs(15))
        .expect("metadata");
    md.topics().iter().map(|t| t.name().to_string()).collect()
}

/// `produce` with a missing input exits 2 before touching the cluster: no topic is created
/// (the topic list before and after is the same). With a good file it creates the topics it
/// writes and no other (no alerts, dead-letter or, without --labels, labels topic).
#[test]
fn produce_checks_inputs_before_the_cluster_and_creates_only_its_topics() {
    let id = unique("prod");
    let topic = |t: &str| format!("{t}-{id}");
    let envs = [
        (
            "FRAUD__KAFKA__BOOTSTRAP_SERVERS",
            crate::suite::util::bootstrap(),
        ),
        ("FRAUD__TOPICS__TRANSACTIONS", topic("tx")),
        ("FRAUD__TOPICS__ALERTS", topic("al")),
        ("FRAUD__TOPICS__DEAD_LETTER", topic("dl")),
        ("FRAUD__TOPICS__LABELS", topic("lb")),
        ("FRAUD__TOPICS__PARTITIONS", "1".to_string()),
    ];
    let produce = |args: &[&str]| {
        let out = bin()
            .arg("produce")
            .args(args)
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let before = list_topics();
    let (code, err) = produce(&["--transactions", "/nonexistent.jsonl"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--transactions /nonexistent.jsonl"), "{err}");
    let (code, err) = produce(&[
        "--transactions",
        "fixtures/transactions.jsonl",
        "--labels",
        "/nonexistent-labels.jsonl",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--labels /nonexistent-labels.jsonl"), "{err}");
    let after = list_topics();
    // Other tests create topics meanwhile: compare this test's own.
    let own = |v: &std::collections::BTreeSet<String>| {
        v.iter()
            .filter(|t| t.contains(&id))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        own(&before),
        own(&after),
        "a failing produce left the cluster as it was"
    );

    let (code, err) = produce(&["--transactions", "fixtures/transactions.jsonl"]);
    assert_eq!(code, Some(0), "{err}");
    let now = list_topics();
    assert!(now.contains(&topic("tx")), "transactions topic created");
    for t in ["al", "dl", "lb"] {
        assert!(!now.contains(&topic(t)), "{} must not be created", topic(t));
    }
    // Not a terminal: quiet lines at most, never a spinner's control characters.
    assert!(!err.contains('\r'), "{err:?}");
}

/// `check-config` prints the effective configuration as TOML with the file's keys, resolves a
/// host name in metrics.listen, suggests the key meant, says "1 problem", and fails (exit 2) on
/// a missing model file naming the setting.
#[test]
fn check_config_prints_toml_and_checks_the_model() {
    let (code, out, err) = run(&["check-config"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("[kafka]\nbootstrap_servers = "), "{out}");
    assert!(
        out.contains("[metrics]\nlisten = \"127.0.0.1:9898\""),
        "{out}"
    );
    assert!(!out.contains("metrics_listen"), "{out}");
    let parsed: toml::Table = toml::from_str(&out).expect("the output is TOML");
    assert!(parsed.contains_key("shutdown"));

    let o = bin()
        .arg("check-config")
        .env("FRAUD__METRICS__LISTEN", "localhost:9898")
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let o = bin()
        .arg("check-config")
        .env("FRAUD__TOPICS__ALERT", "x")
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("(1 problem):"), "{err}");
    assert!(err.contains("did you mean topics.alerts?"), "{err}");

    let o = bin()
        .arg("check-config")
        .env("FRAUD__MODEL__PATH", "/nonexistent/model.json")
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("/nonexistent/model.json"), "{err}");
    assert!(err.contains("FRAUD__MODEL__PATH"), "{err}");
}

/// The default model is found from any working directory (not only the repo's).
#[test]
fn default_model_is_found_from_another_directory() {
    let o = Command::new(env!("CARGO_BIN_EXE_fraudstream"))
        .arg("check-config")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `--log-format json` (or FRAUD_LOG_FORMAT=json) writes one JSON object per log line (here
/// `produce`'s "Created topic." on a fresh topic).
#[test]
fn json_logs() {
    for (flag, env) in [(true, None), (false, Some("json"))] {
        let id = unique("jsonlog");
        let mut c = bin();
        if flag {
            c.args(["--log-format", "json"]);
        }
        if let Some(v) = env {
            c.env("FRAUD_LOG_FORMAT", v);
        }
        let o = c
            .args(["produce", "--transactions", "fixtures/transactions.jsonl"])
            .env(
                "FRAUD__KAFKA__BOOTSTRAP_SERVERS",
                crate::suite::util::bootstrap(),
            )
            .env("FRAUD__TOPICS__TRANSACTIONS", format!("tx-{id}"))
            .env("FRAUD__TOPICS__PARTITIONS", "1")
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        let logs: Vec<serde_json::Value> = err
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).expect("a JSON log line"))
            .collect();
        assert!(
            logs.iter().any(|l| l["message"] == "Created topic."
                && l["level"] == "INFO"
                && l["topic"] == format!("tx-{id}").as_str()),
            "{err}"
        );
    }
}

/// Incident (issue 9): every clean shutdown logged `WARN Final commit failed … NoOffset`. A
/// worker stopped with nothing left to commit exits 0 without that warning.
#[test]
fn clean_shutdown_does_not_warn_about_the_final_commit() {
    let port = crate::suite::util::free_port();
    let id = unique("nooffset");
    let child = bin()
        .arg("run")
        .env("FRAUD__METRICS__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "FRAUD__KAFKA__BOOTSTRAP_SERVERS",
            crate::suite::util::bootstrap(),
        )
        .env("FRAUD__KAFKA__GROUP_ID", format!("g-{id}"))
        .env("FRAUD__TOPICS__TRANSACTIONS", format!("tx-{id}"))
        .env("FRAUD__TOPICS__ALERTS", format!("al-{id}"))
        .env("FRAUD__TOPICS__DEAD_LETTER", format!("dl-{id}"))
        .env("FRAUD__TOPICS__LABELS", format!("lb-{id}"))
        .env("FRAUD__TOPICS__PARTITIONS", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let ready = format!("http://127.0.0.1:{port}/readyz");
    let mut up = false;
    for _ in 0..300 {
        if let Some((200, _)) = rt.block_on(crate::suite::util::http_get(&ready)) {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let out = child.wait_with_output().expect("exit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(up, "worker ready: {err}");
    assert!(out.status.success(), "exit 0 on SIGTERM: {err}");
    assert!(err.contains("Draining"), "{err}");
    assert!(!err.contains("Final commit failed"), "{err}");
    assert!(!err.contains("NoOffset"), "{err}");
}
