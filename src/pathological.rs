//! Pathological inputs of a chosen size, and the work Sluice does on each: the shapes that turn a
//! careless parser quadratic (one segment with hundreds of thousands of fields, repetitions or
//! components; tens of thousands of segments; a frame dribbled byte by byte; an XML element with
//! tens of thousands of attributes; a Bundle with tens of thousands of entries). Used by the
//! linear-time tests and by `cargo bench --bench pathological`, which prints time per byte at
//! 10 KB, 100 KB and 1 MB: it must stay flat.

use std::time::{Duration, Instant};

/// One family of pathological input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A PID with N empty fields (`PID|||||...`), through parse and the normaliser.
    Fields,
    /// A PID-3 with N repetitions.
    Repetitions,
    /// A PID-5 with N components.
    Components,
    /// An ORU with N OBX segments under alternating ORC and OBR.
    Segments,
    /// One MLLP frame pushed into the decoder a byte at a time.
    Dribble,
    /// A FHIR XML element with N attributes, parsed.
    Attributes,
    /// A FHIR JSON Bundle with N Observation entries, parsed and normalised.
    Entries,
}

pub const SHAPES: [Shape; 7] = [
    Shape::Fields,
    Shape::Repetitions,
    Shape::Components,
    Shape::Segments,
    Shape::Dribble,
    Shape::Attributes,
    Shape::Entries,
];

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Fields => "hl7 fields",
            Shape::Repetitions => "hl7 repetitions",
            Shape::Components => "hl7 components",
            Shape::Segments => "hl7 segments",
            Shape::Dribble => "mllp dribble",
            Shape::Attributes => "xml attributes",
            Shape::Entries => "json bundle entries",
        }
    }

    /// An input of about `bytes` bytes.
    pub fn input(self, bytes: usize) -> Vec<u8> {
        let msh = "MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5\r";
        match self {
            Shape::Fields => format!("{msh}PID|1||X^^^A^MR{}", "|".repeat(bytes)).into_bytes(),
            Shape::Repetitions => format!("{msh}PID|1||{}", "X~".repeat(bytes / 2)).into_bytes(),
            Shape::Components => format!("{msh}PID|1||X^^^A^MR||{}", "N^".repeat(bytes / 2)).into_bytes(),
            Shape::Segments => {
                let group = "ORC|RE|P1\rOBR|1|P1|F1|X\rOBX|1|NM|X||1|u\r";
                format!("{msh}PID|1||X^^^A^MR\r{}", group.repeat(bytes / group.len())).into_bytes()
            }
            Shape::Dribble => {
                let seg = "OBX|1|NM|X||1|u\r";
                sluice_ingest::mllp::frame(format!("{msh}{}", seg.repeat(bytes / seg.len())).as_bytes())
            }
            Shape::Attributes => {
                let attrs: String = (0..bytes / 12).map(|i| format!(" a{i}=\"v\"")).collect();
                format!("<Patient xmlns=\"http://hl7.org/fhir\"><id value=\"1\"{attrs}/></Patient>").into_bytes()
            }
            Shape::Entries => {
                let entry = r#"{"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/p"}}},"#;
                let n = bytes / entry.len();
                let entries = entry.repeat(n.max(1));
                format!(
                    r#"{{"resourceType": "Bundle", "type": "collection", "entry": [{}]}}"#,
                    entries.trim_end_matches(',')
                )
                .into_bytes()
            }
        }
    }

    /// Does the work Sluice does on the input (what ingest and normalise would), and returns a
    /// number derived from the result so nothing is optimised away.
    pub fn work(self, input: &[u8]) -> usize {
        match self {
            Shape::Fields | Shape::Repetitions | Shape::Components | Shape::Segments => {
                let msg = sluice_hl7::Message::parse(input);
                let raw = sluice_model::RawMessage {
                    payload: input.to_vec(),
                    ..Default::default()
                };
                sluice_normalise::mapping::map_message(&msg, &raw, &Default::default())
                    .iter()
                    .map(|ev| ev.unmapped_fields.len() + ev.observations.len() + sluice_normalise::fhir::bundle(ev).to_string().len())
                    .sum()
            }
            Shape::Dribble => {
                let mut d = sluice_ingest::mllp::Decoder::new(16 << 20);
                let mut n = 0;
                for b in input {
                    d.push(std::slice::from_ref(b));
                    while let Some(f) = d.next_frame() {
                        n += matches!(f, sluice_ingest::mllp::Decoded::Frame(_)) as usize;
                    }
                }
                n
            }
            Shape::Attributes => sluice_fhir::parse(input).map_or(0, |(_, t)| t.to_string().len()),
            Shape::Entries => {
                let raw = sluice_model::RawMessage {
                    payload: input.to_vec(),
                    ..Default::default()
                };
                sluice_normalise::fhir_in::map_body(&raw, &Default::default()).map_or(0, |evs| evs.len())
            }
        }
    }

    /// The fastest of `runs` timings of [`Shape::work`] on an input of about `bytes` bytes, and
    /// the input's real size.
    pub fn time(self, bytes: usize, runs: usize) -> (Duration, usize) {
        let input = self.input(bytes);
        let mut best = Duration::MAX;
        for _ in 0..runs.max(1) {
            let t = Instant::now();
            std::hint::black_box(self.work(std::hint::black_box(&input)));
            best = best.min(t.elapsed());
        }
        (best, input.len())
    }
}
