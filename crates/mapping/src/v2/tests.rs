use super::*;

fn raw() -> RawMessage {
    RawMessage {
        raw_id: "r".into(),
        transport: "mllp".into(),
        listener: "l".into(),
        peer: "p".into(),
        received_at: 0,
        detected_charset: "ascii".into(),
        payload: vec![],
        msh: None,
        warnings: vec![],
    }
}

#[test]
fn oru_maps_results_with_units_ranges_flags_status_and_offsets() {
    let m = Message::parse(
        b"MSH|^~\\&|LAB|RTH|EPR|RTH|20240630123000+0100||ORU^R01^ORU_R01|C1|P|2.5\rPID|1||123^^^RTH^MR~9434765919^^^NHS^NH||SMITH^ANN^^^MRS||19800101|F|||1 HIGH ST^^LEEDS^^LS1 1AA^GBR\rOBR|1|PL1|FL1|GLU^Glucose^L|||20240630120000+0100||||||||||||||||||F\rOBX|1|NM|GLU^Glucose^L||5.5|mmol/L^mmol/L^UCUM|3.5-5.0|H|||C|||20240630120000+0100\rNTE|1||repeat\\.br\\advised\rZLB|local|stuff\r",
    );
    let ev = map_message(&m, &raw(), &RawPosition::default()).remove(0);
    assert_eq!(ev.kind, "result");
    let p = ev.patient.as_ref().expect("patient");
    assert_eq!(p.identifiers.len(), 2);
    assert_eq!(p.identifiers[1].system.as_deref(), Some(NHS_NUMBER_SYSTEM));
    assert_eq!(p.identifiers[1].nhs_number_valid, Some(true));
    assert_eq!(p.addresses[0].postcode.as_deref(), Some("LS1 1AA"));
    let o = &ev.observations[0];
    assert_eq!(o.values, vec!["5.5"]);
    assert_eq!(o.units.as_ref().and_then(|u| u.code.as_deref()), Some("mmol/L"));
    assert_eq!(o.reference_range.as_deref(), Some("3.5-5.0"));
    assert_eq!(o.abnormal_flags, vec!["H"]);
    assert_eq!(o.result_status.as_deref(), Some("C"), "corrections keep their status");
    assert_eq!(o.observation_time.as_ref().and_then(|t| t.offset_minutes), Some(60));
    assert_eq!(o.notes, vec!["repeat\nadvised"]);
    assert_eq!(o.order_index, Some(0));
    assert_eq!(ev.orders[0].result_status.as_deref(), Some("F"));
    assert_eq!(ev.unmapped_segments.len(), 1);
    assert_eq!(ev.unmapped_segments[0].name, "ZLB");
    assert!(ev.unmapped_fields.is_empty(), "{:?}", ev.unmapped_fields);
}

#[test]
fn unmapped_fields_and_components_travel() {
    let m = Message::parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5|||||GBR\rPID|1||1^^^X^MR^^^^^extra||N\r");
    let ev = map_message(&m, &raw(), &RawPosition::default()).remove(0);
    let got: Vec<(String, i32)> = ev.unmapped_fields.iter().map(|f| (f.segment.clone(), f.field)).collect();
    assert!(got.contains(&("MSH".into(), 17)), "{got:?}");
    assert!(got.contains(&("PID".into(), 3)), "CX.10 is not mapped so PID-3 travels: {got:?}");
}

#[test]
fn merge_is_mapped_and_invalid_nhs_flagged() {
    let m = Message::parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A40|1|P|2.5\rPID|1||2^^^X^MR~9434765918^^^NHS^NH\rMRG|1^^^X^MR\r");
    let ev = map_message(&m, &raw(), &RawPosition::default()).remove(0);
    assert_eq!(ev.merge.as_ref().map(|mg| mg.prior_identifiers.len()), Some(1));
    assert_eq!(ev.patient.as_ref().map(|p| p.identifiers[1].nhs_number_valid), Some(Some(false)));
}

#[test]
fn iam_person_identifiers_and_obr_specimen_source() {
    let m = Message::parse(
        b"MSH|^~\\&|PAS|RTH|EPR|RTH|20240701||ADT^A60|C9|P|2.5\rPID|1||123^^^RTH^MR||X^Y||19800101|F|||||||||||123-45-6789|DL99^NY\r\
IAM|1|DA|PEN^Penicillin^L|SV|Hives|D|||||20240101||||||E\r",
    );
    let ev = map_message(&m, &raw(), &RawPosition::default()).remove(0);
    let ids = &ev.patient.as_ref().expect("patient").identifiers;
    let typed: Vec<(&str, Option<&str>)> = ids.iter().map(|i| (i.value.as_str(), i.type_code.as_deref())).collect();
    assert_eq!(typed, [("123", Some("MR")), ("123-45-6789", Some("SS")), ("DL99", Some("DL"))]);
    let a = &ev.allergies[0];
    assert_eq!(a.verification_status.as_deref(), Some("entered-in-error"), "IAM-6 D deletes");
    assert_eq!(a.identified_time.as_ref().map(|t| t.value.as_str()), Some("20240101"));
    assert_eq!(a.reactions, ["Hives"]);

    let m = Message::parse(
        b"MSH|^~\\&|LAB|RTH|EPR|RTH|20240701||ORU^R01|C8|P|2.3\rPID|1||123^^^RTH^MR\r\
OBR|1|P1|F1|CBC^Blood count^L|||20240701080000+0100|||||||20240701090000+0100|BLD&Blood&HL70070^^^LA&Left arm&HL70163||||||||||F\r",
    );
    let ev = map_message(&m, &raw(), &RawPosition::default()).remove(0);
    let s = &ev.specimens[0];
    assert_eq!(s.order_index, Some(0));
    assert_eq!(s.specimen_type.as_ref().and_then(|c| c.code.as_deref()), Some("BLD"));
    assert_eq!(s.source_site.as_ref().and_then(|c| c.text.as_deref()), Some("Left arm"));
    assert_eq!(s.received_time.as_ref().and_then(|t| t.offset_minutes), Some(60));
    assert!(ev.unmapped_fields.iter().all(|f| f.segment != "OBR"), "{:?}", ev.unmapped_fields);
}

#[test]
fn repeated_lines_of_one_test_each_keep_their_own_result_key_across_a_correction() {
    let msg = |status: &str| {
        format!(
            "MSH|^~\\&|LAB|RTH|EPR|RTH|20240630123000+0100||ORU^R01^ORU_R01|C{status}|P|2.5\rPID|1||123^^^RTH^MR||SMITH^ANN||19800101|F\rOBR|1|PL1|FL1|HIST^Histology^L|||20240630120000+0100||||||||||||||||||F\rOBX|1|TX|HIST^Histology^L||Line one|||||{status}\rOBX|2|TX|HIST^Histology^L||Line two|||||{status}\rOBX|3|TX|HIST^Histology^L||Line three|||||{status}\rOBX|4|NM|GLU^Glucose^L||5.5|mmol/L|||||{status}\r"
        )
    };
    let keys = |text: String| {
        let m = Message::parse(text.as_bytes());
        let ev = map_message(&m, &raw(), &RawPosition::default()).remove(0);
        ev.observations
            .iter()
            .map(|o| o.result_key.clone().expect("keyed"))
            .collect::<Vec<_>>()
    };
    let first = keys(msg("F"));
    let corrected = keys(msg("C"));
    assert_eq!(first.len(), 4);
    let distinct: std::collections::HashSet<&String> = first.iter().collect();
    assert_eq!(distinct.len(), 4, "three lines of one test and another test: four results");
    assert_eq!(
        first, corrected,
        "a correction repeating the lines keys each to the line it replaces"
    );
    // a lone result keys as it always did
    assert_eq!(
        first[3],
        results::result_key("RTH", Some("FL1"), Some("GLU"), Some("L"), None).expect("key")
    );
    assert_eq!(
        first[0],
        results::result_key("RTH", Some("FL1"), Some("HIST"), Some("L"), None).expect("key")
    );
}
