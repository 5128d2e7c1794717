//! normalise service binary: the shared wiring in `sluice_runtime::service_main`, then the service.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_runtime::service_main("sluice-normalise", "raw HL7 v2 to canonical clinical events", sluice_normalise::run).await
}
