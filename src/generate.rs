//! Realistic synthetic HL7 v2 traffic: ADT (A01, A02, A03, A04, A08, A28, A31, A40) and lab
//! results (ORU^R01) and orders (ORM^O01) for a pool of synthetic patients. NHS numbers come
//! from the 999 test range and carry valid check digits. No real patient data.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(clap::Args)]
pub struct Args {
    /// Number of messages
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Random seed, for repeatable output
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output folder (one .hl7 file per message)
    #[arg(long, default_value = "generated")]
    pub out: std::path::PathBuf,
}

const FAMILY: &[&str] = &[
    "SMITH", "JONES", "TAYLOR", "BROWN", "WILLIAMS", "WILSON", "JOHNSON", "DAVIES", "PATEL", "WRIGHT", "KHAN", "EVANS",
];
const GIVEN: &[&str] = &[
    "OLIVIA", "AMELIA", "ISLA", "AVA", "OLIVER", "GEORGE", "HARRY", "NOAH", "MOHAMMED", "SOPHIE", "JACK", "GRACE",
];
const TESTS: &[(&str, &str, &str, &str, f64, f64)] = &[
    ("2345-7", "Glucose", "mmol/L", "3.5-5.5", 3.0, 9.0),
    ("2823-3", "Potassium", "mmol/L", "3.5-5.3", 2.8, 6.5),
    ("2951-2", "Sodium", "mmol/L", "133-146", 125.0, 150.0),
    ("718-7", "Haemoglobin", "g/L", "130-180", 90.0, 190.0),
    ("2160-0", "Creatinine", "umol/L", "59-104", 40.0, 300.0),
];

/// A synthetic NHS number in the 999 range with a valid modulus 11 check digit.
pub fn nhs_number(rng: &mut StdRng) -> String {
    loop {
        let mut d: Vec<u32> = vec![9, 9, 9];
        d.extend((0..6).map(|_| rng.random_range(0..10)));
        if let Some(c) = sluice_model::nhs::check_digit(&d) {
            d.push(c);
            return d.iter().map(|x| char::from_digit(*x, 10).unwrap_or('0')).collect();
        }
    }
}

struct Patient {
    mrn: String,
    nhs: String,
    family: &'static str,
    given: &'static str,
    dob: String,
    sex: &'static str,
}

fn ts(rng: &mut StdRng) -> String {
    format!(
        "2026{:02}{:02}{:02}{:02}00+0000",
        rng.random_range(1..=11),
        rng.random_range(1..=28),
        rng.random_range(0..24),
        rng.random_range(0..60)
    )
}

/// `count` messages from a pool of patients; the same seed gives the same messages.
pub fn messages(count: usize, seed: u64) -> Vec<Vec<u8>> {
    messages_for(count, (count / 4).max(1), seed)
}

/// `count` messages about `patients` synthetic patients; the same seed gives the same messages.
pub fn messages_for(count: usize, patients: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let pool: Vec<Patient> = (0..patients.max(1))
        .map(|i| Patient {
            mrn: format!("M{seed:03}{i:06}"),
            nhs: nhs_number(&mut rng),
            family: FAMILY[rng.random_range(0..FAMILY.len())],
            given: GIVEN[rng.random_range(0..GIVEN.len())],
            dob: format!(
                "{}{:02}{:02}",
                rng.random_range(1930..2024),
                rng.random_range(1..=12),
                rng.random_range(1..=28)
            ),
            sex: if rng.random_bool(0.5) { "F" } else { "M" },
        })
        .collect();
    (0..count)
        .map(|i| {
            let p = &pool[rng.random_range(0..pool.len())];
            let when = ts(&mut rng);
            let control = format!("SLC{seed}-{i:07}");
            let pid = format!(
                "PID|1||{}^^^RTH^MR~{}^^^NHS^NH||{}^{}^^^{}||{}|{}|||{} HIGH STREET^^LEEDS^^LS{} {}AB^GBR^H",
                p.mrn,
                p.nhs,
                p.family,
                p.given,
                if p.sex == "F" { "MS" } else { "MR" },
                p.dob,
                p.sex,
                rng.random_range(1..200),
                rng.random_range(1..30),
                rng.random_range(1..9)
            );
            let kind = rng.random_range(0..10);
            let body = match kind {
                0..=4 => {
                    let trig = ["A01", "A02", "A03", "A04", "A08", "A28", "A31"][rng.random_range(0..7)];
                    let class = ["I", "O", "E"][rng.random_range(0..3)];
                    format!("MSH|^~\\&|PAS|RTH|EPR|RTH|{when}||ADT^{trig}^ADT_A01|{control}|P|2.4|||AL|NE||UNICODE UTF-8\rEVN|{trig}|{when}\r{pid}\rPV1|1|{class}|WARD{}^BAY{}^BED{}^RTH||||C{}^CONSULTANT^A|||MED||||||||V{seed}{i:07}|||||||||||||||||||||||||{when}\r", rng.random_range(1..20), rng.random_range(1..6), rng.random_range(1..9), rng.random_range(100..999))
                }
                5..=8 => {
                    let (code, name, unit, range, lo, hi) = TESTS[rng.random_range(0..TESTS.len())];
                    let v: f64 = rng.random_range(lo..hi);
                    let (rlo, rhi) = range.split_once('-').map(|(a, b)| (a.parse::<f64>().unwrap_or(0.0), b.parse::<f64>().unwrap_or(0.0))).unwrap_or((0.0, 0.0));
                    let flag = if v < rlo { "L" } else if v > rhi { "H" } else { "N" };
                    let status = if rng.random_bool(0.1) { "C" } else { "F" };
                    format!("MSH|^~\\&|WINPATH|RTH|EPR|RTH|{when}||ORU^R01^ORU_R01|{control}|P|2.4|||AL|NE\r{pid}\rPV1|1|O\rOBR|1|PL{i:07}|FL{i:07}|{code}^{name}^LN|||{when}|||||||||||||||||{status}\rOBX|1|NM|{code}^{name}^LN||{v:.1}|{unit}^{unit}^UCUM|{range}|{flag}|||{status}|||{when}\rNTE|1||Sample received \\T\\ processed\r")
                }
                _ => format!("MSH|^~\\&|ICE|RTH|WINPATH|RTH|{when}||ORM^O01^ORM_O01|{control}|P|2.4\r{pid}\rORC|NW|PL{i:07}\rOBR|1|PL{i:07}||2345-7^Glucose^LN|||{when}\r"),
            };
            body.into_bytes()
        })
        .collect()
}

/// `count` synthetic FHIR R4 transaction Bundles (JSON): a Patient with a synthetic NHS number
/// and a laboratory result with its DiagnosticReport; the same seed gives the same Bundles.
pub fn fhir_bundles(count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xF1A5);
    (0..count)
        .map(|i| {
            let (code, name, unit, range, lo, hi) = TESTS[rng.random_range(0..TESTS.len())];
            let v: f64 = rng.random_range(lo..hi);
            let (rlo, rhi) = range.split_once('-').unwrap_or(("0", "0"));
            let when = format!("2026-{:02}-{:02}T{:02}:{:02}:00Z", rng.random_range(1..=11), rng.random_range(1..=28), rng.random_range(0..24), rng.random_range(0..60));
            let bundle = serde_json::json!({
                "resourceType": "Bundle",
                "type": "transaction",
                "identifier": {"system": "urn:sluice:demo:fhir-message", "value": format!("FHIR{seed}-{i:07}")},
                "entry": [
                    {"fullUrl": "urn:uuid:patient", "resource": {
                        "resourceType": "Patient",
                        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs_number(&mut rng)}],
                        "name": [{"family": FAMILY[rng.random_range(0..FAMILY.len())], "given": [GIVEN[rng.random_range(0..GIVEN.len())]]}],
                        "birthDate": format!("{}-{:02}-{:02}", rng.random_range(1930..2024), rng.random_range(1..=12), rng.random_range(1..=28))},
                     "request": {"method": "POST", "url": "Patient"}},
                    {"fullUrl": "urn:uuid:result", "resource": {
                        "resourceType": "Observation", "status": "final",
                        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": name}]},
                        "subject": {"reference": "urn:uuid:patient"}, "effectiveDateTime": when,
                        "valueQuantity": {"value": (v * 10.0).round() / 10.0, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
                        "referenceRange": [{"text": format!("{rlo}-{rhi}")}]},
                     "request": {"method": "POST", "url": "Observation"}},
                    {"resource": {
                        "resourceType": "DiagnosticReport", "status": "final", "code": {"text": name},
                        "subject": {"reference": "urn:uuid:patient"}, "result": [{"reference": "urn:uuid:result"}]},
                     "request": {"method": "POST", "url": "DiagnosticReport"}}
                ]
            });
            bundle.to_string().into_bytes()
        })
        .collect()
}

/// Messages that must be rejected: garbage, MSH missing its type or control id, broken encoding
/// characters, an empty frame.
pub fn malformed(count: usize) -> Vec<Vec<u8>> {
    let shapes: [&dyn Fn(usize) -> String; 5] = [
        &|i| format!("this is not an HL7 message {i}"),
        &|i| format!("MSH|^~\\&|PAS|RTH|EPR|RTH|20260101||||P|2.4\rPID|1||BAD{i}\r"),
        &|i| format!("MSH|^~\\&|PAS|RTH|EPR|RTH|20260101||ADT^A01||P|2.4\rPID|1||BAD{i}\r"),
        &|i| format!("MSHX^~\\&|PAS|{i}\r"),
        &|i| format!("PID|1||{i}\rPV1|1|I\r"),
    ];
    (0..count).map(|i| shapes[i % shapes.len()](i).into_bytes()).collect()
}

pub fn run(a: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.out)?;
    for (i, m) in messages(a.count, a.seed).iter().enumerate() {
        std::fs::write(a.out.join(format!("msg-{i:06}.hl7")), m)?;
    }
    println!("{} messages written to {}", a.count, a.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_messages_parse_and_carry_valid_test_range_nhs_numbers() {
        for m in messages(200, 7) {
            let p = sluice_hl7::Message::parse(&m);
            assert!(p.is_acceptable(), "{:?}", p.problems());
            let nhs = p.text_at("PID-3[2].1");
            assert!(nhs.starts_with("999") && sluice_model::nhs::is_valid(&nhs));
        }
        for m in malformed(10) {
            assert!(!sluice_hl7::Message::parse(&m).is_acceptable());
        }
        assert_eq!(messages(5, 3), messages(5, 3));
    }
}
