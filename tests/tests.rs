//! Integration tests: one binary of modules. The Kafka tests run against the real Apache Kafka
//! that `scripts/kafka.sh start` runs (override the address with KAFKA_BOOTSTRAP); each test uses
//! its own random topics and group.

mod suite;
