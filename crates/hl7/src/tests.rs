use super::*;

const ADT: &[u8] = b"MSH|^~\\&|PAS|RTH|EPR|RTH|20240101120000+0000||ADT^A01^ADT_A01|MSG0001|P|2.5|||AL|NE||UNICODE UTF-8\rEVN|A01|20240101120000\rPID|1||12345^^^RTH^MR~9434765919^^^NHS^NH||SMITH^JOHN^^^MR||19800101|M\rPV1|1|I|WARD1^BED2\rZXY|custom|data\r";

#[test]
fn reads_fields_components_and_repetitions() {
    let m = Message::parse(ADT);
    assert!(m.is_acceptable(), "{:?}", m.problems());
    assert_eq!(m.segment_count(), 5);
    assert_eq!(m.get("MSH-9.1").unwrap(), b"ADT");
    assert_eq!(m.get("MSH-9.2").unwrap(), b"A01");
    assert_eq!(m.get("MSH-10").unwrap(), b"MSG0001");
    assert_eq!(m.get("MSH-1").unwrap(), b"|");
    assert_eq!(m.get("MSH-2").unwrap(), b"^~\\&");
    assert_eq!(m.get("PID-3[2].1").unwrap(), b"9434765919");
    assert_eq!(m.get("PID-3[1].4").unwrap(), b"RTH");
    assert_eq!(m.get("PID-5.2").unwrap(), b"JOHN");
    assert_eq!(m.get("ZXY-2").unwrap(), b"data");
    assert_eq!(m.get("PID-99").unwrap(), b"");
    assert_eq!(m.charset(), Charset::Utf8);
    assert_eq!(m.encode(), ADT);
}

#[test]
fn mixed_separators_bom_and_mllp_bytes() {
    let raw = b"\xEF\xBB\xBF\x0BMSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.3\r\nPID|1||X\nOBR|1\rOBX|1|NM|GLU||5.5|mmol/L\r\n\x1C\r";
    let m = Message::parse(raw);
    assert!(m.is_acceptable(), "{:?}", m.problems());
    assert_eq!(m.segment_count(), 4);
    assert_eq!(m.get("OBX-6").unwrap(), b"mmol/L");
    assert_eq!(m.encode(), raw);
}

#[test]
fn occurrence_paths() {
    let raw = b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.3\rOBX|1|NM|A\rOBX|2|NM|B\rOBX|3|NM|C&sub1&sub2\r";
    let m = Message::parse(raw);
    assert_eq!(m.get("OBX[2]-3").unwrap(), b"B");
    assert_eq!(m.get("OBX[3]-3.1.3").unwrap(), b"sub2");
    assert!(m.get("OBX-x").is_err());
}

#[test]
fn non_standard_delimiters() {
    let raw = b"MSH#*@!%#A#B#C#D#20240101##ADT*A01#1#P#2.4\rPID#1##1*2*3@4*5\r";
    let m = Message::parse(raw);
    assert!(m.is_acceptable(), "{:?}", m.problems());
    assert_eq!(m.get("MSH-9.2").unwrap(), b"A01");
    assert_eq!(m.get("PID-3[2].2").unwrap(), b"5");
    assert!(m.problems().iter().any(|p| p.code == ProblemCode::NonStandardDelimiters));
}

#[test]
fn escapes_are_decoded_and_formatting_kept() {
    let raw = b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.3\rNTE|1||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\.br\\g\\H\\bold\\N\\\\X41\\\r";
    let m = Message::parse(raw);
    assert_eq!(m.text_at("NTE-3"), "a|b^c&d~e\\f\ng\\H\\bold\\N\\A");
    assert_eq!(escape("a|b^c", m.delimiters()), "a\\F\\b\\S\\c");
}

#[test]
fn latin1_is_decoded_to_utf8() {
    let raw = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5|||||||8859/1\rPID|1||1||M\xFCller\r";
    let m = Message::parse(raw);
    assert_eq!(m.text_at("PID-5"), "M\u{fc}ller");
}

#[test]
fn fatal_problems_are_reported_not_panicked() {
    for raw in [
        &b""[..],
        b"   \r\n",
        b"PID|1\r",
        b"MSH|",
        b"MSH|^~\\&|A|B|C|D|2024||||P|2.5\r",
        b"MSHA^~\\&|",
    ] {
        let m = Message::parse(raw);
        assert!(!m.is_acceptable(), "{:?}", String::from_utf8_lossy(raw));
    }
    let m = Message::parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A01||P|2.5\r");
    assert_eq!(m.fatal_problem().map(|p| p.code), Some(ProblemCode::MissingControlId));
}

#[test]
fn separators_blanks_and_explicit_nulls_are_missing_type_and_control_id() {
    for typ in ["^", "~", "\"\"", " ", "^A01", "\t", " ^ ", "&"] {
        let raw = format!("MSH|^~\\&|A|B|C|D|2024||{typ}|1|P|2.5\r");
        let m = Message::parse(raw.as_bytes());
        assert_eq!(
            m.fatal_problem().map(|p| p.code),
            Some(ProblemCode::MissingMessageType),
            "MSH-9 {typ:?}"
        );
    }
    for id in [" ", "\t", "\"\"", "^", "~~", " \"\" "] {
        let raw = format!("MSH|^~\\&|A|B|C|D|2024||ADT^A01|{id}|P|2.5\r");
        let m = Message::parse(raw.as_bytes());
        assert_eq!(
            m.fatal_problem().map(|p| p.code),
            Some(ProblemCode::MissingControlId),
            "MSH-10 {id:?}"
        );
    }
    assert!(Message::parse(b"MSH|^~\\&|A|B|C|D|2024||ADT|C1|P|2.5\r").is_acceptable());
}

#[test]
fn corrupt_encoding_characters_are_refused_not_guessed() {
    for raw in [
        // a UTF-8 replacement character where `~` was: splitting on its bytes would re-shape fields
        &b"MSH|^\xEF\xBF\xBD\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rPID|||1^^^X&1.2&ISO\r"[..],
        b"MSH|foo|foo|A|B|C|2024||ADT^A01|1|P|2.5\r",
        b"MSH|^^\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\r",
        b"MSH{{{{{|A||B||2024||ADT^A01|1|P|2.5\r",
        b"MSH\t^~\\&\tA\tB\tC\tD\t2024\t\tADT^A01\t1\tP\t2.5\r",
    ] {
        let m = Message::parse(raw);
        assert_eq!(
            m.fatal_problem().map(|p| p.code),
            Some(ProblemCode::BadEncodingCharacters),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn explicit_null() {
    let m = Message::parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A08|1|P|2.5\rPID|1||1||\"\"\r");
    assert!(m.find("PID", 0).map(|s| s.field(5).is_null()).unwrap_or(false));
}

#[test]
fn batches_are_split() {
    let raw = b"FHS|^~\\&\rBHS|^~\\&\rMSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\rPID|1\rMSH|^~\\&|A|B|C|D|1||ADT^A01|2|P|2.5\rBTS|2\rFTS|1\r";
    let msgs = split_messages(raw);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0], b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\rPID|1\r");
    assert_eq!(msgs[1], b"MSH|^~\\&|A|B|C|D|1||ADT^A01|2|P|2.5\r");
}

/// Parse then encode gives back the same bytes, and no corpus message panics the parser.
#[test]
fn corpus_round_trip() {
    let Some(files) = crate::corpus::hl7v2_files() else { return };
    let mut n = 0;
    for path in files {
        let bytes = std::fs::read(&path).unwrap_or_default();
        for msg in split_messages(&bytes) {
            let m = Message::parse(msg);
            assert_eq!(m.encode(), msg);
            for seg in m.segments() {
                for f in 0..seg.field_count() + 1 {
                    for r in seg.field(f).repetitions() {
                        let _ = m.text(r.raw());
                    }
                }
            }
            n += 1;
        }
    }
    let listed = crate::corpus::manifest_hl7v2_messages().unwrap_or(0);
    // the manifest counts MSH segments heuristically (a bare `MSH` line is no message to it)
    assert!(n >= listed, "the manifest lists {listed} messages; only {n} were read");
}

/// The fuzz target's properties on the stable toolchain, in every test run: corpus messages and
/// synthetic ones, mutated the ways feeds break (flipped bytes, stray delimiters and escape
/// characters, cut and duplicated spans, MLLP bytes, mixed line ends). Deterministic.
#[test]
fn mutated_messages_keep_the_fuzz_properties() {
    let mut seeds: Vec<Vec<u8>> = vec![
        b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5|||||8859/1\rPID|1||1^^^X&1.2&ISO~2||N\\T\\\\S\\^G||M\rOBX|1|TX|||a\\.br\\b\\X41\\\\H\\x\\N\\\r".to_vec(),
        b"MSH#$%*@|A|B|C|D|2024||ADT$A01|2|P|2.5\nPID#1##a$b%c*d\n".to_vec(),
        b"FHS|^~\\&\rBHS|^~\\&\rMSH|^~\\&|A|B|C|D|2024||ADT^A01|3|P|2.5\rBTS|1\rFTS|1\r".to_vec(),
    ];
    if let Some(files) = crate::corpus::hl7v2_files() {
        for path in files.iter().step_by(3) {
            let bytes = std::fs::read(path).unwrap_or_default();
            seeds.extend(split_messages(&bytes).into_iter().map(<[u8]>::to_vec));
        }
    }
    let specials: &[u8] = b"|^~\\&#\r\n\x0b\x1c\"X.";
    let mut state: u64 = 0x5eed_1234_abcd_9876;
    let mut next = move |bound: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound.max(1) as u64) as usize
    };
    for _ in 0..10_000 {
        let mut m = seeds[next(seeds.len())].clone();
        for _ in 0..1 + next(4) {
            let at = next(m.len() + 1);
            match next(6) {
                0 if !m.is_empty() => {
                    let i = at.min(m.len() - 1);
                    m[i] ^= 1 << next(8);
                }
                1 => m.insert(at, specials[next(specials.len())]),
                2 => {
                    let end = (at + next(16)).min(m.len());
                    m.drain(at..end);
                }
                3 => {
                    let end = (at + next(32)).min(m.len());
                    let copy = m[at..end].to_vec();
                    m.splice(at..at, copy);
                }
                5 => {
                    m.splice(at..at, b"\\X0D0A\\".iter().copied());
                }
                4 => m.truncate(at),
                _ => {}
            }
        }
        crate::fuzzing::check(&m);
    }
}

#[test]
fn fields_iterator_matches_random_access() {
    for raw in [
        &b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rPID|1||x~y||N^G|\rZZ1\rNTE|\r"[..],
        b"MSH#$%*@|A|B\nOBX#1#2",
    ] {
        let m = Message::parse(raw);
        for seg in m.segments() {
            let via_iter: Vec<(usize, &[u8])> = seg.fields().map(|(n, f)| (n, f.raw())).collect();
            let via_index: Vec<(usize, &[u8])> = (1..=seg.field_count()).map(|n| (n, seg.field(n).raw())).collect();
            assert_eq!(via_iter, via_index, "{}", seg.name_str());
        }
    }
}
