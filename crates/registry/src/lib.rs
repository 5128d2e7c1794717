//! schema registry: client for the Confluent REST API and the embedded server
