//! The same pipeline against Apache Kafka in Docker (testcontainers), for machines with a
//! Docker engine: `cargo test --features testcontainers --test testcontainers`.
#![cfg(feature = "testcontainers")]
#![allow(clippy::unwrap_used)]

use testcontainers_modules::kafka::apache::Kafka;
use testcontainers_modules::testcontainers::runners::AsyncRunner;

#[tokio::test]
async fn topology_applies_on_apache_kafka() {
    let kafka = Kafka::default().start().await.unwrap();
    let port = kafka
        .get_host_port_ipv4(testcontainers_modules::kafka::apache::KAFKA_PORT)
        .await
        .unwrap();
    let bootstrap = format!("127.0.0.1:{port}");
    let created = sluice::topology::apply(
        &sluice_runtime::config::KafkaConfig {
            bootstrap_servers: bootstrap,
            ..Default::default()
        },
        1,
    )
    .await
    .unwrap();
    assert_eq!(created, sluice_model::topology::Topology::load().unwrap().topics.len());
}
