//! FHIR output keeps clinical meaning: the five faults found against public samples, each a test
//! (they failed before the mappers were fixed), plus a property over every corpus message: no
//! identifier in any Bundle keeps an HL7 delimiter.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use sluice_hl7::Message;
use sluice_mapping::fhir_out::{PRIOR_RESULT_EXTENSION, VALUE_ATTACHMENT_EXTENSION, bundle};
use sluice_model::{ClinicalEvent, RawMessage};

fn events(text: &str) -> Vec<ClinicalEvent> {
    let msg = Message::parse(text.as_bytes());
    assert!(msg.is_acceptable());
    sluice_mapping::v2::map_message(&msg, &RawMessage::default(), &Default::default())
}

fn of_type<'v>(b: &'v Value, t: &str) -> Vec<&'v Value> {
    b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == t)
        .collect()
}

fn golden(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn cwe_abnormal_flags_become_coded_interpretations_with_the_sent_coding_kept() {
    let b = bundle(&events(&golden("oru_r01_flags_repeats_identifiers.hl7"))[0]);
    let obs = of_type(&b, "Observation");
    let codings = |o: &Value| -> Vec<(String, String)> {
        o["interpretation"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|i| i["coding"].as_array().cloned().unwrap_or_default())
            .map(|c| {
                (
                    c["system"].as_str().unwrap_or_default().to_owned(),
                    c["code"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let v3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
    let v2 = "http://terminology.hl7.org/CodeSystem/v2-0078";
    // `A^A^HL70078^^^^2.5~B^B~QQ`: A and B coded in v3 and kept as sent; QQ kept as sent only
    let heart = codings(obs[1]);
    assert!(
        heart.contains(&(v3.into(), "A".into())) && heart.contains(&(v2.into(), "A".into())),
        "{heart:?}"
    );
    assert!(heart.contains(&(v3.into(), "B".into())));
    assert!(
        heart.iter().any(|(s, c)| c == "QQ" && s.is_empty()),
        "an unknown flag is kept as sent, no system claimed"
    );
    assert!(
        !obs[1]["interpretation"].to_string().contains("HL70078"),
        "no raw CWE text left: {}",
        obs[1]["interpretation"]
    );
    // CWE-9 original text is the text
    assert_eq!(obs[2]["interpretation"][0]["text"], "flagged by analyser");
    assert_eq!(
        obs[2]["interpretation"][0]["coding"][0]["system"], "urn:id:L",
        "the local system name is kept"
    );
}

#[test]
fn repeated_numeric_values_keep_their_units_as_components() {
    let b = bundle(&events(&golden("oru_r01_flags_repeats_identifiers.hl7"))[0]);
    let heart = of_type(&b, "Observation")[1];
    let components = heart["component"].as_array().unwrap();
    assert_eq!(components.len(), 2, "one component per OBX-5 repetition");
    for (c, v) in components.iter().zip([60, 120]) {
        assert_eq!(c["valueQuantity"]["value"], v);
        assert_eq!(c["valueQuantity"]["unit"], "beats per minute");
        assert_eq!(c["valueQuantity"]["code"], "/min");
        assert_eq!(c["referenceRange"][0]["text"], "70-80");
    }
    assert!(heart.get("valueString").is_none());
    // a unit sent with a value that has no Quantity form is kept too
    let text = of_type(&b, "Observation")[2];
    assert!(
        text.to_string().contains("hl7v2-units") && text.to_string().contains("mmol/L"),
        "{text}"
    );
}

#[test]
fn results_are_linked_to_their_orders_and_prior_results_are_never_current() {
    let b = bundle(&events(&golden("oru_r01_flags_repeats_identifiers.hl7"))[0]);
    let request = of_type(&b, "ServiceRequest")[0];
    let sr = format!("urn:uuid:{}", request["id"].as_str().unwrap());
    for o in of_type(&b, "Observation") {
        assert_eq!(o["basedOn"][0]["reference"], sr.as_str(), "observation not based on its order");
    }
    assert_eq!(of_type(&b, "DiagnosticReport")[0]["basedOn"][0]["reference"], sr.as_str());
    assert_eq!(of_type(&b, "Specimen")[0]["request"][0]["reference"], sr.as_str());

    let b = bundle(&events(&golden("oml_o21_prior_results.hl7"))[0]);
    let requests = of_type(&b, "ServiceRequest");
    assert_eq!(requests.len(), 2);
    let is_prior = |r: &Value| {
        r["extension"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x["url"] == PRIOR_RESULT_EXTENSION))
    };
    let (current, prior): (Vec<&Value>, Vec<&Value>) = requests.into_iter().partition(|r| !is_prior(r));
    assert_eq!((current.len(), prior.len()), (1, 1));
    let prior_obs: Vec<&Value> = of_type(&b, "Observation").into_iter().filter(|o| is_prior(o)).collect();
    assert_eq!(prior_obs.len(), 1, "the prior cholesterol is marked as prior");
    let support = current[0]["supportingInfo"].to_string();
    assert!(support.contains(prior[0]["id"].as_str().unwrap()) && support.contains(prior_obs[0]["id"].as_str().unwrap()));
    let ev = &events(&golden("oml_o21_prior_results.hl7"))[0];
    assert!(ev.orders.iter().filter(|o| o.prior).count() == 2 && ev.observations.iter().filter(|o| o.prior).count() == 1);
    assert_eq!(ev.allergies.len(), 0, "the prior group's allergy is not a new allergy");
}

#[test]
fn every_patient_of_a_message_becomes_a_patient() {
    let evs = events(&golden("bar_p02_two_patients.hl7"));
    assert_eq!(evs.len(), 2, "BAR^P02 with two PID groups: two events");
    let mrns: Vec<String> = evs
        .iter()
        .map(|e| e.patient.as_ref().unwrap().identifiers[0].value.clone())
        .collect();
    assert_eq!(mrns, ["RTH1111111", "RTH2222222"]);
    assert_ne!(evs[0].event_id, evs[1].event_id);
    assert_eq!(
        evs[1].encounter.as_ref().unwrap().visit_number.as_ref().unwrap().value,
        "V2002",
        "each visit with its patient"
    );
    for ev in &evs {
        assert!(ev.warnings.contains(&"message_has_several_patients".to_owned()));
        assert_eq!(of_type(&bundle(ev), "Patient").len(), 1);
    }
}

#[test]
fn identifiers_are_split_into_value_and_assigner() {
    let b = bundle(&events(&golden("oru_r01_flags_repeats_identifiers.hl7"))[0]);
    let request = of_type(&b, "ServiceRequest")[0];
    assert_eq!(request["identifier"][0]["value"], "845439");
    assert_eq!(request["identifier"][0]["assigner"]["display"], "GHH OE");
    assert_eq!(request["identifier"][1]["value"], "F998");
    assert_eq!(request["identifier"][1]["system"], "urn:oid:1.2.826.0.1.3680043");
    let specimen = of_type(&b, "Specimen")[0];
    assert_eq!(specimen["identifier"][0]["value"], "2017-PAT-123456-1");
    assert_eq!(specimen["accessionIdentifier"]["value"], "2017-PAT-123456");
}

#[test]
fn encapsulated_data_becomes_an_attachment() {
    let b = bundle(&events(&golden("oru_r01_flags_repeats_identifiers.hl7"))[0]);
    let obs = of_type(&b, "Observation");
    let attachment = |o: &Value| {
        o["extension"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["url"] == VALUE_ATTACHMENT_EXTENSION)
            .unwrap()["valueAttachment"]
            .clone()
    };
    assert_eq!(attachment(obs[3])["contentType"], "image/jpeg");
    assert_eq!(attachment(obs[3])["data"], "/9j/4AAQSkZJRgABAQ==");
    assert_eq!(attachment(obs[4])["url"], "https://images.example.org/slide/1");
    assert!(obs[3].get("valueString").is_none(), "not raw text");
    let report = of_type(&b, "DiagnosticReport")[0];
    assert_eq!(report["presentedForm"].as_array().unwrap().len(), 2);
}

/// Every Identifier (and masterIdentifier, accessionIdentifier, a reference's identifier) value in
/// a Bundle.
fn identifier_values(v: &Value, key: Option<&str>, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if matches!(key, Some("identifier" | "masterIdentifier" | "accessionIdentifier"))
                && let Some(s) = o.get("value").and_then(Value::as_str)
            {
                out.push(s.to_owned());
            }
            for (k, x) in o {
                identifier_values(x, Some(k), out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| identifier_values(x, key, out)),
        _ => {}
    }
}

#[test]
fn no_identifier_of_any_corpus_bundle_keeps_an_hl7_delimiter() {
    let mut messages: Vec<Vec<u8>> = std::fs::read_dir(format!("{}/tests/golden", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    messages.extend(sluice_hl7::corpus::hl7v2_messages());
    let mut checked = 0;
    for m in &messages {
        let msg = Message::parse(m);
        // a delimiter sent escaped (`\F\`, `\S\` ...) is data, and may stand in a value
        let escaped = [b"\\F\\", b"\\S\\", b"\\R\\", b"\\T\\"]
            .iter()
            .any(|e| m.windows(3).any(|w| w == *e));
        if !msg.is_acceptable() || escaped {
            continue;
        }
        // the message's own delimiters (a message may use others than ^~|&)
        let d = *msg.delimiters();
        let delimiters: Vec<char> = [Some(d.field), Some(d.component), Some(d.repetition), d.subcomponent]
            .into_iter()
            .flatten()
            .map(char::from)
            .collect();
        for ev in sluice_mapping::v2::map_message(&msg, &RawMessage::default(), &Default::default()) {
            let mut values = Vec::new();
            identifier_values(&bundle(&ev), None, &mut values);
            for v in values {
                checked += 1;
                assert!(!v.contains(delimiters.as_slice()), "identifier {v:?} keeps an HL7 delimiter");
            }
        }
    }
    assert!(checked > 0);
}
