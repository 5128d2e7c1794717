//! identifier-match service binary: the shared wiring in `sluice_runtime::service_main`, then the service.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_runtime::service_main(
        "sluice-identifier-match",
        "patient identity resolution to enterprise ids",
        sluice_identifier_match::run,
    )
    .await
}
