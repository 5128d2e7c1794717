//! dead-letter service binary: the shared wiring in `sluice_runtime::service_main`, then the service.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_runtime::service_main(
        "sluice-dead-letter",
        "dead-letter quarantine, inspection and replay API",
        sluice_dead_letter::run,
    )
    .await
}
