//! Arbitrary bytes as an HL7 v2 message through the normaliser and FHIR out: no panic; the
//! explicit null `""` is never an identifier or a value; the event id is stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let msg = sluice_hl7::Message::parse(data);
    if !msg.is_acceptable() {
        return;
    }
    let raw = sluice_model::RawMessage {
        payload: data.to_vec(),
        ..Default::default()
    };
    let ev = sluice_mapping::v2::map_message(&msg, &raw, &Default::default());
    if let Some(p) = &ev.patient {
        assert!(p.identifiers.iter().all(|i| i.value != "\"\"" && !i.value.is_empty()));
    }
    assert!(ev.observations.iter().all(|o| o.values.iter().all(|v| v != "\"\"")));
    assert_eq!(ev.event_id, sluice_model::ids::hl7_event_id(&msg));
    let _ = sluice_mapping::fhir_out::bundle(&ev).to_string();
});
