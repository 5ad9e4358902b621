//! Tests of the parent module.
#![allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
use super::*;
use figment::Jail;

fn load_in_jail(file: Option<&str>) -> Result<Config, ConfigError> {
    load(file.map(Path::new))
}

#[test]
fn defaults_load() {
    Jail::expect_with(|_| {
        let c = load_in_jail(None).expect("defaults are valid");
        assert_eq!(c.kafka.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(c.topics.transactions, "transactions");
        assert_eq!(c.model.threshold, None);
        assert_eq!(c.metrics_listen.port(), 9898);
        Ok(())
    });
}

#[test]
fn file_then_env_override() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "c.toml",
            "[topics]\nalerts = \"from-file\"\npartitions = 2\n[kafka.librdkafka]\n\"sasl.password\" = \"hunter2\"\n\"linger.ms\" = 5\n",
        )?;
        jail.set_env("FRAUD__TOPICS__ALERTS", "alerts2");
        jail.set_env("FRAUD__KAFKA__GROUP_ID", "123");
        let c = load_in_jail(Some("c.toml")).expect("valid");
        assert_eq!(c.topics.alerts, "alerts2");
        assert_eq!(c.topics.partitions, 2);
        assert_eq!(c.kafka.group_id, "123");
        assert_eq!(c.kafka.librdkafka["linger.ms"].expose(), "5");
        assert_eq!(c.kafka.librdkafka["sasl.password"].expose(), "hunter2");
        let shown = format!("{:?}", c.kafka);
        assert!(!shown.contains("hunter2"), "{shown}");
        Ok(())
    });
}

#[test]
fn every_problem_is_listed() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "bad.toml",
            "[topics]\nalerts = \"transactions\"\npartitions = 0\nbogus = 1\n[state]\nmax_accounts = \"many\"\n[metrics]\nlisten = \"nowhere\"\n[shutdown]\ndrain_timeout_ms = 90000\n[kafka.librdkafka]\n\"group.id\" = \"x\"\n",
        )?;
        let e = load_in_jail(Some("bad.toml")).expect_err("invalid");
        let all = e.to_string();
        assert!(all.contains("topics.bogus: unknown key"), "{all}");
        assert!(
            all.contains("state.max_accounts: expected an integer, got \"many\""),
            "{all}"
        );
        // The range and cross-field checks run in the same round as the type errors.
        assert!(
            all.contains("topics.alerts: \"transactions\" is also topics.transactions"),
            "{all}"
        );
        assert!(
            all.contains("topics.partitions: must be in 1..=10000, got 0"),
            "{all}"
        );
        assert!(all.contains("metrics.listen"), "{all}");
        assert!(all.contains("drain_timeout_ms (90000)"), "{all}");
        assert!(all.contains("\"group.id\": set by fraudstream"), "{all}");
        assert!(
            all.contains(
                "metrics.stall_timeout_ms (30000) must be above shutdown.drain_timeout_ms (90000)"
            ),
            "{all}"
        );
        assert_eq!(e.problems.len(), 8, "{all}");
        assert!(
            all.starts_with("invalid configuration (8 problems):"),
            "{all}"
        );
        Ok(())
    });
}

#[test]
fn env_unknown_key_is_rejected() {
    Jail::expect_with(|jail| {
        jail.set_env("FRAUD__TOPICS__ALERT", "typo");
        let e = load_in_jail(None).expect_err("typo");
        assert_eq!(
            e.problems,
            vec!["topics.alert: unknown key; did you mean topics.alerts?".to_string()]
        );
        assert!(e.to_string().contains("(1 problem):"), "{e}");
        Ok(())
    });
}

#[test]
fn missing_file_is_named() {
    Jail::expect_with(|_| {
        let e = load_in_jail(Some("nope.toml")).expect_err("missing");
        assert!(e.to_string().contains("nope.toml"));
        Ok(())
    });
}

#[test]
fn secrets_are_masked_by_name_and_by_value() {
    for (name, value) in [
        ("sasl.password", "hunter2"),
        ("sasl.oauthbearer.config", "principal=fraud scope=x"),
        ("sasl.username", "fraud"),
        ("ssl.key.pem", "-----BEGIN"),
        ("ssl.keystore.password", "x"),
        ("ssl.key.location", "/etc/k.pem"),
        ("my.api.token", "abc"),
        (
            "sasl.oauthbearer.token.endpoint.url",
            "https://idp.example.com/token",
        ),
        ("client.id", "https://fraud:s3cret@idp.example.com/x"),
        ("plugin.config", "clientId=fraud clientSecret=abc"),
        ("plugin.config", "user=fraud password=abc"),
    ] {
        assert!(is_secret(name, value), "{name} = {value}");
    }
    for (name, value) in [
        ("linger.ms", "5"),
        ("security.protocol", "SASL_SSL"),
        ("client.id", "fraudstream-1"),
        ("client.id", "https://idp.example.com/token"),
        ("client.id", "mailto:fraud@example.com"),
    ] {
        assert!(!is_secret(name, value), "{name} = {value}");
    }
}

#[test]
fn masked_values_never_show() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "c.toml",
            "[kafka.librdkafka]\n\"sasl.oauthbearer.config\" = \"clientSecret=topsecret1\"\n\"client.id\" = \"https://u:topsecret2@host/x\"\n",
        )?;
        let c = load_in_jail(Some("c.toml")).expect("valid");
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert_eq!(
            c.kafka.librdkafka["client.id"].expose(),
            "https://u:topsecret2@host/x"
        );
        Ok(())
    });
}

#[test]
fn producer_guarantees_and_poll_interval_are_checked() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "c.toml",
            "[kafka.librdkafka]\nacks = 1\n\"enable.idempotence\" = false\n\"request.required.acks\" = 0\n\"max.poll.interval.ms\" = 6000\n",
        )?;
        let e = load_in_jail(Some("c.toml")).expect_err("refused");
        let all = e.to_string();
        assert!(all.contains("\"acks\": set by fraudstream"), "{all}");
        assert!(
            all.contains("\"enable.idempotence\": set by fraudstream"),
            "{all}"
        );
        assert!(
            all.contains("\"request.required.acks\": set by fraudstream"),
            "{all}"
        );
        assert!(
            all.contains(
                "\"max.poll.interval.ms\" (6000) must be at least kafka.session_timeout_ms (45000)"
            ),
            "{all}"
        );
        jail.create_file(
            "c.toml",
            "[kafka]\nsession_timeout_ms = 6000\n[shutdown]\ndrain_timeout_ms = 5000\n[metrics]\nstall_timeout_ms = 10000\n[kafka.librdkafka]\n\"max.poll.interval.ms\" = 6000\n",
        )?;
        let c = load_in_jail(Some("c.toml")).expect("valid");
        assert_eq!(c.kafka.librdkafka["max.poll.interval.ms"].expose(), "6000");
        Ok(())
    });
}

#[test]
fn threshold_override() {
    Jail::expect_with(|jail| {
        jail.set_env("FRAUD__MODEL__THRESHOLD", "0.9");
        assert_eq!(
            load_in_jail(None).expect("valid").model.threshold,
            Some(0.9)
        );
        jail.set_env("FRAUD__MODEL__THRESHOLD", "2");
        let e = load_in_jail(None).expect_err("out of range");
        assert!(e
            .to_string()
            .contains("model.threshold: must be in [0, 1], got 2"));
        Ok(())
    });
}

#[test]
fn misspelt_keys_get_a_suggestion() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "c.toml",
            "[kafka]\nbootstrap_server = \"x:1\"\n[topics]\ngroup_id = \"g\"\n[modle]\npath = \"m\"\n[state]\nzzzzzz = 1\n",
        )?;
        let e = load_in_jail(Some("c.toml")).expect_err("typos");
        let all = e.to_string();
        assert!(
            all.contains(
                "kafka.bootstrap_server: unknown key; did you mean kafka.bootstrap_servers?"
            ),
            "{all}"
        );
        assert!(
            all.contains("topics.group_id: unknown key; did you mean kafka.group_id?"),
            "{all}"
        );
        assert!(
            all.contains("modle: unknown key; did you mean model?"),
            "{all}"
        );
        assert!(
            all.contains("state.zzzzzz: unknown key\n")
                || all.ends_with("state.zzzzzz: unknown key"),
            "{all}"
        );
        Ok(())
    });
}

#[test]
fn metrics_listen_takes_a_host_name() {
    Jail::expect_with(|jail| {
        jail.set_env("FRAUD__METRICS__LISTEN", "localhost:9898");
        let c = load_in_jail(None).expect("localhost resolves");
        assert_eq!(c.metrics_listen.port(), 9898);
        assert!(c.metrics_listen.ip().is_loopback(), "{}", c.metrics_listen);
        jail.set_env("FRAUD__METRICS__LISTEN", "localhost");
        let e = load_in_jail(None).expect_err("no port");
        assert!(e.to_string().contains("metrics.listen"), "{e}");
        Ok(())
    });
}

/// check-config prints TOML with the file's key names and masked secrets, and that TOML
/// loads back into the same configuration.
#[test]
fn effective_config_prints_as_toml() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "c.toml",
            "[kafka.librdkafka]\n\"sasl.password\" = \"hunter2\"\n\"linger.ms\" = 5\n[model]\nthreshold = 0.25\npath = \"/abs/m.json\"\n",
        )?;
        let c = load_in_jail(Some("c.toml")).expect("valid");
        let text = c.to_toml();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("\"sasl.password\" = \"***\""), "{text}");
        assert!(
            text.contains("\n[metrics]\nlisten = \"127.0.0.1:9898\""),
            "{text}"
        );
        assert!(text.contains("drain_timeout_ms = 20000"), "{text}");
        assert!(!text.contains("metrics_listen"), "{text}");
        jail.create_file("back.toml", &text.replace("\"***\"", "\"hunter2\""))?;
        let back = load_in_jail(Some("back.toml")).expect("the printed TOML loads");
        assert_eq!(back.to_toml(), text);
        assert_eq!(back.model.threshold, Some(0.25));
        Ok(())
    });
}

/// A relative model.path in a config file is relative to that file; from the environment,
/// to the working directory; the default is found from anywhere.
#[test]
fn model_path_is_resolved_by_origin() {
    Jail::expect_with(|jail| {
        std::fs::create_dir_all(jail.directory().join("conf")).map_err(|e| e.to_string())?;
        jail.create_file("conf/c.toml", "[model]\npath = \"m/x.json\"\n")?;
        let c = load_in_jail(Some("conf/c.toml")).expect("valid");
        let dir = std::fs::canonicalize(jail.directory().join("conf")).expect("dir");
        assert_eq!(c.model.path, dir.join("m/x.json"));
        jail.set_env("FRAUD__MODEL__PATH", "rel/y.json");
        let c = load_in_jail(Some("conf/c.toml")).expect("valid");
        assert_eq!(c.model.path, PathBuf::from("rel/y.json"));
        jail.clear_env();
        // The jail's directory has no models/: the default resolves to the source tree's.
        let c = load_in_jail(None).expect("valid");
        assert!(c.model.path.is_absolute(), "{}", c.model.path.display());
        assert!(c.model.path.exists(), "{}", c.model.path.display());
        Ok(())
    });
}

#[test]
fn missing_model_names_the_setting() {
    Jail::expect_with(|jail| {
        jail.set_env("FRAUD__MODEL__PATH", "nowhere/m.json");
        let c = load_in_jail(None).expect("the config itself is valid");
        let e = check_model(&c).expect_err("no model file");
        let all = e.to_string();
        assert!(all.contains("nowhere/m.json"), "{all}");
        assert!(all.contains("model.path"), "{all}");
        assert!(all.contains("FRAUD__MODEL__PATH"), "{all}");
        jail.create_file("bad.json", "{\"not\": \"a model\"}")?;
        jail.set_env("FRAUD__MODEL__PATH", "bad.json");
        let c = load_in_jail(None).expect("valid");
        assert!(check_model(&c).is_err());
        Ok(())
    });
}

#[test]
fn edit_distances() {
    assert_eq!(edit_distance("alerts", "alerts"), 0);
    assert_eq!(edit_distance("alert", "alerts"), 1);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("", "abc"), 3);
}

#[test]
fn delivery_mode_from_env_and_misspelt_values() {
    Jail::expect_with(|jail| {
        let c = load_in_jail(None).expect("defaults");
        assert_eq!(c.kafka.delivery, Delivery::AtLeastOnce);
        assert_eq!(c.kafka.commit_interval_ms, 100);
        assert!(
            c.kafka
                .transactional_id
                .starts_with("fraudstream-fraudstream-"),
            "{}",
            c.kafka.transactional_id
        );
        jail.set_env("FRAUD__KAFKA__DELIVERY", "exactly_once");
        jail.set_env("FRAUD__KAFKA__TRANSACTIONAL_ID", "worker-7");
        let c = load_in_jail(None).expect("exactly once");
        assert_eq!(c.kafka.delivery, Delivery::ExactlyOnce);
        assert_eq!(c.kafka.transactional_id, "worker-7");
        assert!(c.to_toml().contains("delivery = \"exactly_once\""));
        jail.set_env("FRAUD__KAFKA__DELIVERY", "exactly-once");
        let e = load_in_jail(None).expect_err("misspelt");
        assert_eq!(
            e.problems,
            vec![
                "kafka.delivery: expected \"at_least_once\" or \"exactly_once\", got \"exactly-once\"; did you mean \"exactly_once\"?"
                    .to_string()
            ]
        );
        jail.set_env("FRAUD__KAFKA__DELIVERY", "exactly_once");
        jail.set_env("FRAUD__KAFKA__COMMIT_INTERVAL_MS", "20000");
        jail.set_env("FRAUD__KAFKA__TRANSACTION_TIMEOUT_MS", "10000");
        let e = load_in_jail(None).expect_err("interval above the timeout");
        assert_eq!(
            e.problems,
            vec![
                "kafka.transaction_timeout_ms (10000) must be above kafka.commit_interval_ms (20000)"
                    .to_string()
            ]
        );
        Ok(())
    });
}

#[test]
fn merchant_live_grace_is_checked_and_read_from_env() {
    Jail::expect_with(|jail| {
        assert_eq!(
            load_in_jail(None)
                .expect("defaults")
                .state
                .merchant_live_grace_ms,
            0
        );
        jail.set_env("FRAUD__STATE__MERCHANT_LIVE_GRACE_MS", "5");
        assert_eq!(
            load_in_jail(None)
                .expect("valid")
                .state
                .merchant_live_grace_ms,
            5
        );
        jail.set_env("FRAUD__STATE__MERCHANT_LIVE_GRACE_MS", "-1");
        let e = load_in_jail(None).expect_err("negative");
        assert_eq!(
            e.problems,
            vec!["state.merchant_live_grace_ms: must be in 0..=60000, got -1".to_string()]
        );
        Ok(())
    });
}
