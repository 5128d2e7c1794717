//! route service binary: the shared wiring in `sluice_runtime::service_main`, then the service.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_runtime::service_main("sluice-route", "content-based routing of matched events", sluice_route::run).await
}
