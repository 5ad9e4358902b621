//! `produce --labels` against the real broker: labels replayed in event time.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use fraudstream::decode::parse_ts;

use super::util::{bootstrap, generated, read_topic, root, unique};

#[derive(serde::Deserialize)]
struct Head {
    tx_id: String,
    ts: String,
}

/// Every label arrives after the transaction it refers to, and only once the transactions
/// produced before it reach its reported_at (or the transaction's time + --label-delay); it is
/// sent right then, interleaved with the transactions, not all at the end.
#[test]
fn labels_are_replayed_in_event_time() {
    let dir = generated("prodlabels", 80, 10);
    let tx_lines: Vec<String> = std::fs::read_to_string(dir.join("transactions.jsonl"))
        .expect("transactions")
        .lines()
        .take(400)
        .map(str::to_string)
        .collect();
    let heads: Vec<Head> = tx_lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("generated line"))
        .collect();
    let ts_of: HashMap<&str, i64> = heads
        .iter()
        .map(|h| (h.tx_id.as_str(), parse_ts(&h.ts).expect("ts")))
        .collect();
    let delay = 2 * 86_400_000;
    // Every 25th transaction labelled: reported a day later, with no reported_at (the
    // delay applies), or "reported" before the transaction (sent with it, never before it).
    let mut labels = Vec::new();
    let mut due: HashMap<String, i64> = HashMap::new();
    for (k, h) in heads.iter().enumerate().filter(|(i, _)| i % 25 == 3) {
        let ts = ts_of[h.tx_id.as_str()];
        let (line, at) = match k % 3 {
            0 => {
                let r = ts + 86_400_000;
                (
                    format!(
                        r#"{{"tx_id":"{}","account_id":"x","fraud":true,"reported_at":{r}}}"#,
                        h.tx_id
                    ),
                    r,
                )
            }
            1 => (
                format!(r#"{{"tx_id":"{}","account_id":"x","fraud":true}}"#, h.tx_id),
                ts + delay,
            ),
            _ => (
                format!(
                    r#"{{"tx_id":"{}","account_id":"x","fraud":false,"reported_at":{}}}"#,
                    h.tx_id,
                    ts - 3_600_000
                ),
                ts,
            ),
        };
        labels.push(line);
        due.insert(h.tx_id.clone(), at);
    }
    let id = unique("prodlab");
    let tx_file = dir.join("tx400.jsonl");
    let label_file = dir.join("labels-test.jsonl");
    std::fs::write(&tx_file, tx_lines.join("\n") + "\n").expect("write");
    std::fs::write(&label_file, labels.join("\n") + "\n").expect("write");
    let (tx_topic, label_topic) = (format!("tx-{id}"), format!("lb-{id}"));
    let out = Command::new(env!("CARGO_BIN_EXE_fraudstream"))
        .current_dir(root())
        .args(["produce", "--transactions"])
        .arg(&tx_file)
        .arg("--labels")
        .arg(&label_file)
        .args(["--label-delay", "2d", "--rate", "300"])
        .env("FRAUD__KAFKA__BOOTSTRAP_SERVERS", bootstrap())
        .env("FRAUD__TOPICS__TRANSACTIONS", &tx_topic)
        .env("FRAUD__TOPICS__LABELS", &label_topic)
        .env("FRAUD__TOPICS__PARTITIONS", "1")
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "produced 400 transactions to {tx_topic} and {} labels",
            labels.len()
        )),
        "{stdout}"
    );

    let txs = read_topic(&tx_topic, 400, Duration::from_secs(30));
    let got = read_topic(&label_topic, labels.len(), Duration::from_secs(30));
    assert_eq!((txs.len(), got.len()), (400, labels.len()));
    // (send time, event time) of each transaction message, in the order sent.
    let mut sent: Vec<(i64, i64, String)> = txs
        .iter()
        .map(|m| {
            let h: Head = serde_json::from_slice(&m.payload).expect("tx");
            let ts = parse_ts(&h.ts).expect("ts");
            (m.timestamp.expect("timestamp"), ts, h.tx_id)
        })
        .collect();
    sent.sort_by_key(|(at, _, _)| *at);
    let last_event = sent.iter().map(|(_, ts, _)| *ts).max().expect("sent");
    let last_send = sent.last().expect("sent").0;
    let (mut interleaved, mut after_end) = (0, 0);
    for m in &got {
        let l: fraudstream::decode::Label =
            fraudstream::decode::decode_label(&m.payload).expect("label");
        let at_send = m.timestamp.expect("timestamp");
        let (own_sent, _, _) = sent
            .iter()
            .find(|(_, _, id)| *id == l.tx_id)
            .expect("its transaction was produced");
        assert!(
            *own_sent <= at_send,
            "label of {} sent at {at_send}, before its transaction ({own_sent})",
            l.tx_id
        );
        let due_at = due[&l.tx_id];
        if due_at > last_event {
            // The transactions never reach its time: sent after all of them.
            assert!(
                at_send >= last_send,
                "label of {} due after the end",
                l.tx_id
            );
            after_end += 1;
            continue;
        }
        let event_time = sent
            .iter()
            .filter(|(t, _, _)| *t <= at_send)
            .map(|(_, ts, _)| *ts)
            .max()
            .expect("transactions before the label");
        assert!(
            event_time >= due_at,
            "label of {} sent at event time {event_time}, before its time {due_at}",
            l.tx_id
        );
        // Sent as soon as due: before the transaction after the one that reached its time.
        let reached = sent.iter().position(|(_, ts, _)| *ts >= due_at);
        if let Some(next) = reached.and_then(|i| sent.get(i + 1)) {
            assert!(
                at_send <= next.0,
                "label of {} held back: sent at {at_send}, after {} at {}",
                l.tx_id,
                next.2,
                next.0
            );
            interleaved += 1;
        }
    }
    assert!(
        interleaved >= labels.len() / 2,
        "{interleaved} of {} interleaved",
        labels.len()
    );
    assert!(
        stdout.contains(&format!("({after_end} of them after the last transaction")),
        "{stdout}"
    );
}
