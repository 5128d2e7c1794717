//! normalise: raw HL7 v2 to canonical clinical events
