//! Arbitrary bytes as a FHIR body (JSON or XML): no panic or stack overflow; a body that parses
//! names a known R4 resource type and nests no deeper than the limit; and whatever parses maps
//! to canonical events and back to FHIR Bundles without a panic.
#![no_main]

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok((_, tree)) = sluice_fhir::parse(data) else { return };
    let t = sluice_fhir::resource_type(&tree).expect("a parsed body has a resource type");
    assert!(sluice_fhir::R4_RESOURCE_TYPES.contains(&t));
    // an XML element becomes a list holding an object: two levels per element
    assert!(depth(&tree) <= 2 * sluice_fhir::MAX_DEPTH + 2, "deeper than the limit");
    let raw = sluice_model::RawMessage {
        payload: data.to_vec(),
        ..Default::default()
    };
    if let Ok(evs) = sluice_mapping::fhir_in::map_body(&raw, &Default::default()) {
        for ev in &evs {
            let _ = sluice_mapping::fhir_out::bundle(ev).to_string();
        }
    }
});
