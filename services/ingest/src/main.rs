//! ingest service binary: the shared wiring in `sluice_runtime::service_main`, then the service.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_runtime::service_main("sluice-ingest", "MLLP listener producing raw HL7 v2 to Kafka", sluice_ingest::run).await
}
