//! Arbitrary bytes as a received message: the ACK built for it is always one well-formed frame
//! (MSH then MSA, at most an ERR, no MLLP byte or line feed inside), whatever the header holds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let msg = sluice_hl7::Message::parse(data);
    let code = if msg.is_acceptable() { "AA" } else { "AR" };
    let ack = sluice_ingest::ack::build(&msg, code, Some(("100", "x")));
    assert!(!ack.iter().any(|b| matches!(b, 0x0B | 0x1C | b'\n')));
    let segs: Vec<&[u8]> = ack.split(|b| *b == b'\r').filter(|s| !s.is_empty()).collect();
    assert!((2..=3).contains(&segs.len()));
    assert!(segs[0].starts_with(b"MSH|^~\\&|") && segs[1].starts_with(b"MSA|"));
    assert!(sluice_hl7::Message::parse(&ack).is_acceptable());
});
