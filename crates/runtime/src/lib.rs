//! kafka runtime: transactional consume-transform-produce, telemetry, health, shutdown
