//! Arbitrary bytes into the HL7 v2 parser: no panic, and every property of
//! `sluice_hl7::fuzzing::check` holds (round trip, values inside the input, escapes reversible).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_hl7::fuzzing::check(data);
});
