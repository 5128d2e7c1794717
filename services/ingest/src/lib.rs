//! ingest: MLLP listener producing raw HL7 v2 to Kafka
