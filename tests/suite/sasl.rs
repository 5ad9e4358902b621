//! SASL/PLAIN against a real broker of the test's own (a SASL_PLAINTEXT listener with users
//! `admin` and `alice`): refused credentials stop `produce` and `run` quickly with a message
//! naming the user and the mechanism (README, "Kafka security"), and the right ones work.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use super::util::{free_port, root, unique, OwnBroker};

const ALICE_PASSWORD: &str = "alice-secret";
const WRONG_PASSWORD: &str = "not-alices-password";
/// Refused credentials used to end after librdkafka's 15 s metadata timeout; the README
/// promises about a second.
const FAIL_WITHIN: Duration = Duration::from_secs(10);

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fraudstream"));
    c.current_dir(root());
    c
}

/// A configuration file for the SASL listener as `alice` with `password`.
fn config_file(dir: &Path, name: &str, bootstrap: &str, topic: &str, password: &str) -> PathBuf {
    let f = dir.join(format!("{name}.toml"));
    let text = format!(
        "[kafka]\nbootstrap_servers = \"{bootstrap}\"\ngroup_id = \"g-{topic}\"\n\
         [kafka.librdkafka]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
         \"sasl.mechanisms\" = \"PLAIN\"\n\"sasl.username\" = \"alice\"\n\
         \"sasl.password\" = \"{password}\"\n\
         [topics]\ntransactions = \"{topic}\"\nalerts = \"{topic}-alerts\"\n\
         dead_letter = \"{topic}-dlq\"\nlabels = \"{topic}-labels\"\npartitions = 1\n\
         [model]\npath = \"{}\"\n\
         [metrics]\nlisten = \"127.0.0.1:{}\"\n",
        root().join("models/default.json").display(),
        free_port()
    );
    std::fs::write(&f, text).expect("config file");
    f
}

/// Runs `cmd` until it exits, killing it (and failing) after `limit`; (output, time taken).
fn run_within(mut cmd: Command, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    loop {
        if child.try_wait().expect("wait").is_some() {
            let out = child.wait_with_output().expect("output");
            return (out, started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "still running after {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Messages in partition 0 of `topic`, read as `alice` over SASL.
fn high_watermark(bootstrap: &str, topic: &str) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanisms", "PLAIN")
        .set("sasl.username", "alice")
        .set("sasl.password", ALICE_PASSWORD)
        .create()
        .expect("client");
    let (_, high) = c
        .fetch_watermarks(topic, 0, Duration::from_secs(15))
        .expect("watermarks");
    high
}

/// Incident: a wrong SASL/PLAIN password ended after about 15 s with
/// `Meta data fetch error: BrokerTransportFailure`. Now `produce` and `run` stop within
/// seconds (exit 1) naming the user, the mechanism and the settings to check, never the
/// password; with the right password `produce` writes every transaction.
#[test]
fn sasl_plain_wrong_password_fails_fast_naming_user_and_mechanism() {
    let broker = OwnBroker::start_sasl(
        "sasl",
        &[("admin", "admin-secret"), ("alice", ALICE_PASSWORD)],
    );
    let bootstrap = broker.sasl_bootstrap();
    let dir = std::env::temp_dir().join(unique("sasl-cfg"));
    std::fs::create_dir_all(&dir).expect("dir");
    let topic = unique("sasl-tx");
    let wrong = config_file(&dir, "wrong", &bootstrap, &topic, WRONG_PASSWORD);
    let right = config_file(&dir, "right", &bootstrap, &topic, ALICE_PASSWORD);
    let expected = format!(
        "authentication failed at {bootstrap} for user \"alice\" with SASL mechanism PLAIN"
    );

    let mut produce = bin();
    produce
        .arg("produce")
        .args(["--transactions", "fixtures/transactions.jsonl", "--config"])
        .arg(&wrong);
    let (out, took) = run_within(produce, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&expected), "{err}");
    assert!(err.contains("\"sasl.password\""), "{err}");
    assert!(
        !err.contains(WRONG_PASSWORD),
        "the password is never printed: {err}"
    );
    assert!(!err.contains("BrokerTransportFailure"), "{err}");
    assert!(took < FAIL_WITHIN, "produce failed after {took:?}: {err}");
    eprintln!(
        "produce, wrong password: exit 1 after {:.2} s",
        took.as_secs_f64()
    );

    let mut run = bin();
    run.arg("run").arg("--config").arg(&wrong);
    let (out, took) = run_within(run, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&expected), "{err}");
    assert!(
        !err.contains(WRONG_PASSWORD),
        "the password is never printed: {err}"
    );
    assert!(took < FAIL_WITHIN, "run failed after {took:?}: {err}");
    eprintln!(
        "run, wrong password: exit 1 after {:.2} s",
        took.as_secs_f64()
    );

    let mut produce = bin();
    produce
        .arg("produce")
        .args(["--transactions", "fixtures/transactions.jsonl", "--config"])
        .arg(&right);
    let (out, _) = run_within(produce, Duration::from_secs(120));
    let (stdout, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{err}");
    let sent: i64 = stdout
        .strip_prefix("produced ")
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {stdout:?}"));
    assert!(sent > 0, "{stdout}");
    assert_eq!(high_watermark(&bootstrap, &topic), sent, "{stdout}");
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}
