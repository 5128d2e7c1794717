//! HL7 tables the mappers read values through.

/// HL7 table 0078 (interpretation codes) with the display of the v3 ObservationInterpretation
/// code it maps to (the same code; v2-to-FHIR concept map InterpretationCodes). Codes of the
/// table without a v3 target have an empty display.
const TABLE_0078: &[(&str, &str)] = &[
    ("<", "Off scale low"),
    (">", "Off scale high"),
    ("A", "Abnormal"),
    ("AA", "Critical abnormal"),
    ("AC", ""),
    ("B", "Better"),
    ("CAR", "Carrier"),
    ("D", "Significant change down"),
    ("DET", "Detected"),
    ("E", "Equivocal"),
    ("EX", "outside threshold"),
    ("EXP", "Expected"),
    ("H", "High"),
    ("HH", "Critical high"),
    ("HM", ""),
    ("HU", "Significantly high"),
    ("I", "Intermediate"),
    ("IE", "Insufficient evidence"),
    ("IND", "Indeterminate"),
    ("L", "Low"),
    ("LL", "Critical low"),
    ("LU", "Significantly low"),
    ("MS", "moderately susceptible"),
    ("N", "Normal"),
    ("NCL", "No CLSI defined breakpoint"),
    ("ND", "Not detected"),
    ("NEG", "Negative"),
    ("NR", "Non-reactive"),
    ("NS", "Non-susceptible"),
    ("OBX", ""),
    ("POS", "Positive"),
    ("QCF", ""),
    ("R", "Resistant"),
    ("RR", "Reactive"),
    ("S", "Susceptible"),
    ("SDD", "Susceptible-dose dependent"),
    ("SYN-R", "Synergy - resistant"),
    ("SYN-S", "Synergy - susceptible"),
    ("TOX", ""),
    ("U", "Significant change up"),
    ("UNE", "Unexpected"),
    ("VS", "very susceptible"),
    ("W", "Worse"),
    ("WR", "Weakly reactive"),
];

/// A table 0078 code (trimmed) and the display of its v3 interpretation (empty when it has none);
/// `None` when the code is not in the table.
pub fn interpretation_0078(code: &str) -> Option<(&'static str, &'static str)> {
    let code = code.trim();
    TABLE_0078.iter().find(|(c, _)| *c == code).copied()
}
