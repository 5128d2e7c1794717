//! Arbitrary bytes as an HL7 v2 message through the normaliser and FHIR out: no panic; the
//! explicit null `""` is never an identifier or a value; the first event's id is the message's
//! and every event of a message (one per patient) has its own.
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
    let events = sluice_mapping::v2::map_message(&msg, &raw, &Default::default());
    assert!(!events.is_empty(), "a message always makes an event");
    assert_eq!(events[0].event_id, sluice_model::ids::hl7_event_id(&msg));
    let mut ids = std::collections::HashSet::new();
    for ev in &events {
        assert!(ids.insert(ev.event_id.clone()), "two events of one message share an id");
        if let Some(p) = &ev.patient {
            assert!(p.identifiers.iter().all(|i| i.value != "\"\"" && !i.value.is_empty()));
        }
        assert!(ev.observations.iter().all(|o| o.values.iter().all(|v| v != "\"\"")));
        let _ = sluice_mapping::fhir_out::bundle(ev).to_string();
    }
});
