//! Helpers for the real-broker tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fraudstream::config::{self, Config};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The broker under test.
pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

/// A unique suffix per test.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{name}-{}-{nanos}", std::process::id())
}

/// A free local port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Repo root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Defaults with random topics and group, `partitions` per topic, a free metrics port.
pub fn test_config(name: &str, partitions: i32) -> Config {
    let mut c = config::load(None).expect("default config");
    let id = unique(name);
    c.kafka.bootstrap_servers = bootstrap();
    c.kafka.group_id = format!("g-{id}");
    c.kafka.statistics_interval_ms = 1000;
    c.topics.transactions = format!("tx-{id}");
    c.topics.alerts = format!("alerts-{id}");
    c.topics.dead_letter = format!("dlq-{id}");
    c.topics.labels = format!("labels-{id}");
    c.topics.partitions = partitions;
    c.model.path = root().join("models/default.json");
    c.metrics_listen = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    c.drain_timeout_ms = 10_000;
    c
}

/// A worker running in this process.
pub struct Worker {
    pub token: CancellationToken,
    pub handle: JoinHandle<Result<(), fraudstream::pipeline::PipelineError>>,
    pub metrics_url: String,
    /// Stops the worker when the test drops it (a failed assertion): its blocking threads
    /// would otherwise keep the test's runtime, and the test, from ending.
    _stop_on_drop: tokio_util::sync::DropGuard,
}

impl Worker {
    pub fn start(cfg: &Config) -> Worker {
        let token = CancellationToken::new();
        let metrics_url = format!("http://{}", cfg.metrics_listen);
        let handle = tokio::spawn(fraudstream::pipeline::run(
            cfg.clone(),
            token.clone(),
            prometheus::Registry::new(),
        ));
        Worker {
            _stop_on_drop: token.clone().drop_guard(),
            token,
            handle,
            metrics_url,
        }
    }

    /// Waits until /readyz answers 200.
    pub async fn ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((200, _)) = http_get(&format!("{}/readyz", self.metrics_url)).await {
                return;
            }
            assert!(Instant::now() < deadline, "worker not ready in {timeout:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until /readyz answers 200 with partitions assigned (not a standby).
    pub async fn owns_partitions(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((200, body)) = http_get(&format!("{}/readyz", self.metrics_url)).await {
                if !body.contains("standby") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "worker owns no partition in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// /readyz: (status, body).
    pub async fn readyz(&self) -> (u16, String) {
        http_get(&format!("{}/readyz", self.metrics_url))
            .await
            .unwrap_or((0, String::new()))
    }

    /// The value of a metric line that starts with `prefix` (summed over matching lines).
    pub async fn metric(&self, prefix: &str) -> f64 {
        let (_, body) = http_get(&format!("{}/metrics", self.metrics_url))
            .await
            .unwrap_or((0, String::new()));
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Cancels (as SIGTERM does) and waits for a clean exit.
    pub async fn stop(self) {
        self.token.cancel();
        let r = tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("worker stops within 30 s")
            .expect("worker task joins");
        r.expect("worker exits cleanly");
    }
}

/// Minimal HTTP GET over a TCP socket: (status, body).
pub async fn http_get(url: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}")))?;
    let mut s = tokio::net::TcpStream::connect(host).await.ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Produces lines (key = account_id when the line has one) and waits for every ack.
pub async fn produce_lines(topic: &str, lines: &[Vec<u8>]) {
    produce_lines_to(&bootstrap(), topic, lines).await
}

/// [`produce_lines`] to the broker at `bootstrap`.
pub async fn produce_lines_to(bootstrap: &str, topic: &str, lines: &[Vec<u8>]) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut futs = Vec::new();
    for l in lines {
        let key = serde_json::from_slice::<serde_json::Value>(l)
            .ok()
            .and_then(|v| v.get("account_id")?.as_str().map(str::to_string));
        let p = p.clone();
        let topic = topic.to_string();
        let l = l.clone();
        futs.push(async move {
            let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic).payload(&l);
            if let Some(k) = &key {
                rec = rec.key(k.as_str());
            }
            p.send(rec, Duration::from_secs(30))
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        });
    }
    for r in futures::future::join_all(futs).await {
        r.expect("produced");
    }
}

/// Creates a topic (the worker would too; producers need it first).
pub async fn create_topics(cfg: &Config) {
    let c = cfg.clone();
    tokio::task::spawn_blocking(move || fraudstream::source::ensure_topics(&c))
        .await
        .expect("join")
        .expect("topics");
}

/// A consumed message: key, payload, headers.
#[derive(Debug, Clone)]
pub struct Got {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
    /// The message's timestamp (CreateTime: when the producer sent it), epoch ms.
    pub timestamp: Option<i64>,
}

/// Reads `topic` from the beginning until `want` messages or `timeout`.
pub fn read_topic(topic: &str, want: usize, timeout: Duration) -> Vec<Got> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning)
                .expect("tpl");
        }
    }
    c.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let mut headers = HashMap::new();
            if let Some(h) = m.headers() {
                for i in 0..h.count() {
                    let hd = h.get(i);
                    headers.insert(
                        hd.key.to_string(),
                        String::from_utf8_lossy(hd.value.unwrap_or_default()).to_string(),
                    );
                }
            }
            out.push(Got {
                key: m.key().map(|k| String::from_utf8_lossy(k).to_string()),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
                timestamp: m.timestamp().to_millis(),
            });
        }
    }
    out
}

/// Committed offsets of `group` on `topic`, by partition.
pub fn committed(group: &str, topic: &str, partitions: i32) -> HashMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    // A broker that has just started may not have its group coordinator yet (NotCoordinator,
    // CoordinatorLoadInProgress): ask again until it answers, for up to 60 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        match c.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(got) => break got,
            Err(e) if Instant::now() < deadline => {
                eprintln!("committed offsets not available yet ({e}); asking again");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("committed: {e:?}"),
        }
    };
    got.elements()
        .iter()
        .map(|e| {
            (
                e.partition(),
                match e.offset() {
                    Offset::Offset(o) => o,
                    _ => -1,
                },
            )
        })
        .collect()
}

/// Lines of a file.
pub fn file_lines(p: &Path) -> Vec<Vec<u8>> {
    std::fs::read_to_string(p)
        .expect("read")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// A generated data set in a temp folder.
pub fn generated(name: &str, accounts: usize, days: u32) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    let opts = fraudstream::generate::GenerateOptions {
        accounts,
        merchants: (accounts / 10).max(5),
        days,
        seed: 11,
        ..Default::default()
    };
    fraudstream::generate::generate(&opts, &dir).expect("generate");
    dir
}

/// A broker of a test's own (KRaft, one node) on free ports with its own data folder, from the
/// jars `scripts/kafka.sh` resolved (`.kafka/libs`, the main checkout's if this is a worktree,
/// or `FRAUDSTREAM_KAFKA_LIBS`): for fault
/// tests that kill it, and for SASL tests ([`OwnBroker::start_sasl`]). Killed on drop.
pub struct OwnBroker {
    child: Option<std::process::Child>,
    dir: PathBuf,
    libs: PathBuf,
    port: u16,
    /// The SASL_PLAINTEXT listener's port, when started with SASL users.
    sasl_port: Option<u16>,
}

/// `.kafka/libs` of this checkout, or of the main checkout when this is a git worktree (the
/// jars are resolved once, by `scripts/kafka.sh start` there).
fn kafka_libs() -> PathBuf {
    let here = root().join(".kafka/libs");
    if here.is_dir() {
        return here;
    }
    std::process::Command::new("git")
        .arg("-C")
        .arg(root())
        .args(["rev-parse", "--path-format=absolute", "--git-common-dir"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let common = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            Some(common.parent()?.join(".kafka/libs"))
        })
        .filter(|p| p.is_dir())
        .unwrap_or(here)
}

fn java() -> PathBuf {
    match std::env::var_os("JAVA_HOME") {
        Some(h) => PathBuf::from(h).join("bin/java"),
        None => PathBuf::from("java"),
    }
}

impl OwnBroker {
    /// Formats a data folder and starts the broker; waits until it answers.
    pub fn start(name: &str) -> OwnBroker {
        OwnBroker::start_with(name, &[])
    }

    /// [`OwnBroker::start`] with a second listener, SASL_PLAINTEXT with mechanism PLAIN, that
    /// accepts these `(user, password)` pairs (see [`OwnBroker::sasl_bootstrap`]). The
    /// PLAINTEXT listener stays, for the broker itself and the readiness probe.
    pub fn start_sasl(name: &str, users: &[(&str, &str)]) -> OwnBroker {
        assert!(!users.is_empty(), "a SASL broker needs a user");
        OwnBroker::start_with(name, users)
    }

    fn start_with(name: &str, sasl_users: &[(&str, &str)]) -> OwnBroker {
        let libs = std::env::var_os("FRAUDSTREAM_KAFKA_LIBS")
            .map(PathBuf::from)
            .unwrap_or_else(kafka_libs);
        assert!(
            libs.is_dir(),
            "no Kafka jars in {}: run scripts/kafka.sh start (or set FRAUDSTREAM_KAFKA_LIBS)",
            libs.display()
        );
        let dir = std::env::temp_dir().join(unique(name));
        std::fs::create_dir_all(dir.join("data")).expect("dir");
        let port = free_port();
        let controller = free_port();
        let sasl_port = (!sasl_users.is_empty()).then(free_port);
        // The SASL listener (PLAIN, users from a JAAS line) beside the plaintext one.
        let (sasl_listener, sasl_props) = match sasl_port {
            Some(p) => {
                let users: String = sasl_users
                    .iter()
                    .map(|(u, pw)| format!(" user_{u}=\"{pw}\""))
                    .collect();
                (
                    format!(",SASL_PLAINTEXT://127.0.0.1:{p}"),
                    format!(
                        "sasl.enabled.mechanisms=PLAIN\n\
                         listener.name.sasl_plaintext.plain.sasl.jaas.config=\
                         org.apache.kafka.common.security.plain.PlainLoginModule required{users};\n"
                    ),
                )
            }
            None => (String::new(), String::new()),
        };
        let props = format!(
            "process.roles=broker,controller\nnode.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port}{sasl_listener},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}{sasl_listener}\n\
             inter.broker.listener.name=PLAINTEXT\ncontroller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,\
             SASL_PLAINTEXT:SASL_PLAINTEXT\n{sasl_props}\
             log.dirs={}\nnum.partitions=1\nauto.create.topics.enable=false\n\
             offsets.topic.replication.factor=1\ntransaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\nshare.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("server.properties"), props).expect("props");
        let tool = |args: &[&str]| {
            let out = std::process::Command::new(java())
                .args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
                .arg(format!(
                    "-Dlog4j2.configurationFile={}",
                    root().join("scripts/kafka/log4j2-tools.xml").display()
                ))
                .arg("-cp")
                .arg(format!("{}/*", libs.display()))
                .args(args)
                .output()
                .expect("java runs");
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let id = tool(&["kafka.tools.StorageTool", "random-uuid"]);
        let props = dir.join("server.properties");
        tool(&[
            "kafka.tools.StorageTool",
            "format",
            "-t",
            &id,
            "-c",
            props.to_str().expect("utf-8 path"),
        ]);
        let mut b = OwnBroker {
            child: None,
            dir,
            libs,
            port,
            sasl_port,
        };
        b.launch();
        b
    }

    fn launch(&mut self) {
        let child = std::process::Command::new(java())
            .args(["-Xmx384m", "-Xms128m", "-XX:+UseSerialGC"])
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                root().join("scripts/kafka/log4j2-broker.xml").display()
            ))
            .arg(format!(
                "-Dkafka.logfile={}",
                self.dir.join("kafka.log").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", self.libs.display()))
            .arg("kafka.Kafka")
            .arg(self.dir.join("server.properties"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("broker starts");
        self.child = Some(child);
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("client");
        let deadline = Instant::now() + Duration::from_secs(90);
        while c.fetch_metadata(None, Duration::from_secs(2)).is_err() {
            assert!(
                Instant::now() < deadline,
                "own broker not up; see {}",
                self.dir.join("kafka.log").display()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Its address.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The SASL_PLAINTEXT listener's address (started with [`OwnBroker::start_sasl`]).
    pub fn sasl_bootstrap(&self) -> String {
        let p = self.sasl_port.expect("started with OwnBroker::start_sasl");
        format!("127.0.0.1:{p}")
    }

    /// kill -9, waiting until it is gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data; waits until it answers.
    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Creates `topic` with topic-level `settings` (before the worker creates the others).
pub async fn create_topic_with(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    settings: &[(&str, &str)],
) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    let mut t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in settings {
        t = t.set(k, v);
    }
    let r = admin
        .create_topics(&[t], &AdminOptions::new())
        .await
        .expect("create");
    for x in r {
        x.expect("topic created");
    }
}

/// Produces `payloads` (no key) with a producer allowed messages of `max_bytes`.
pub async fn produce_raw(topic: &str, payloads: &[Vec<u8>], max_bytes: usize) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("message.max.bytes", max_bytes.to_string())
        .create()
        .expect("producer");
    // In chunks sent together: one at a time, each waiting for its delivery (and the
    // producer's linger), 50,000 messages took minutes.
    for chunk in payloads.chunks(500) {
        let sends = chunk.iter().map(|l| {
            let rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).payload(l);
            p.send(rec, Duration::from_secs(30))
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e).expect("produced");
        }
    }
}
