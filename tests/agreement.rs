//! The Sluice parser against an independent one: for every HL7 v2 message of the shared corpus,
//! every value python-hl7 (the `hl7` package from PyPI) yields (each segment, field,
//! repetition, component and subcomponent, raw and unescaped) is compared with what the Sluice
//! parser yields for the same message. Any disagreement fails the test unless `explain` names
//! it as a known limit of python-hl7; the agreement rate is printed.
//!
//! python-hl7 splits segments on CR only, so it is given the message with CR, LF and CRLF
//! separators normalised to CR, while Sluice parses the bytes as received.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;

/// A value at one position: segment index, field, repetition, component, subcomponent.
type Pos = (usize, usize, usize, usize, usize);

/// Why python-hl7's value differs from ours, when that is a known limit of python-hl7 rather
/// than a Sluice bug. Each arm is one documented behaviour.
fn explain(kind: &str, ours: &str, theirs: &str, raw: &str, last_value: bool) -> Option<&'static str> {
    // python-hl7 strips whitespace from both ends of the whole message, so trailing blanks of
    // the last value are lost there; Sluice keeps every byte of a value
    if last_value && ours.trim_end() == theirs && ours != theirs {
        return Some("python-hl7 strips trailing whitespace of the message");
    }
    if kind != "text" {
        return None;
    }
    // python-hl7's unescape turns formatting escapes into its own stand-ins (\.br\ becomes
    // CR, \H\ and \N\ become `_`); Sluice keeps formatting as formatting: \.br\ is a line
    // break and \H\ \N\ \.sp\ ... are kept as written for the application to render
    if raw.contains("\\.") || raw.contains("\\H\\") || raw.contains("\\N\\") {
        return Some("python-hl7 replaces formatting escapes with stand-ins");
    }
    // locally defined (\Zxx\) and character-set switching (\Cxxyy\, \Mxxyyzz\) escapes:
    // python-hl7 logs an error and drops them; Sluice keeps them as written
    if raw.contains("\\Z") || raw.contains("\\C") || raw.contains("\\M") {
        return Some("python-hl7 drops \\Z, \\C and \\M escapes");
    }
    None
}

fn as_text(bytes: &[u8], utf8: bool) -> String {
    if utf8 {
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        bytes.iter().map(|b| *b as char).collect()
    }
}

struct Tally {
    compared: usize,
    agreed: usize,
    explained: BTreeMap<&'static str, usize>,
    unexplained: Vec<String>,
}

impl Tally {
    fn check(&mut self, kind: &str, at: Pos, file: &str, ours: &str, theirs: Option<&str>, raw: &str) {
        self.check_at_end(kind, at, file, ours, theirs, raw, false);
    }

    #[allow(clippy::too_many_arguments)]
    fn check_at_end(&mut self, kind: &str, at: Pos, file: &str, ours: &str, theirs: Option<&str>, raw: &str, last_value: bool) {
        self.compared += 1;
        let theirs = theirs.unwrap_or("<absent>");
        if ours == theirs {
            self.agreed += 1;
        } else if let Some(why) = explain(kind, ours, theirs, raw, last_value) {
            *self.explained.entry(why).or_default() += 1;
        } else if self.unexplained.len() < 40 {
            self.unexplained
                .push(format!("{file} {kind} at {at:?}: sluice {ours:?}, python-hl7 {theirs:?}"));
        } else {
            self.unexplained.push(String::new());
        }
    }
}

fn leaf(tree: &Value, r: usize, c: usize, s: usize) -> Option<&str> {
    tree.get(r)?.get(c)?.get(s)?.as_str()
}

#[test]
fn every_corpus_value_agrees_with_python_hl7() {
    let messages = corpus_messages();
    if messages.is_empty() {
        return;
    }
    let python = tool("venv/bin/python");
    let dir = tempfile::tempdir().unwrap();
    for (i, m) in messages.iter().enumerate() {
        let mut cr = Vec::with_capacity(m.len());
        let mut k = 0;
        while k < m.len() {
            match m[k] {
                b'\r' if m.get(k + 1) == Some(&b'\n') => {
                    cr.push(b'\r');
                    k += 1;
                }
                b'\n' => cr.push(b'\r'),
                b => cr.push(b),
            }
            k += 1;
        }
        std::fs::write(dir.path().join(format!("{i:05}.hl7")), cr).unwrap();
    }
    let out = std::process::Command::new(python)
        .arg(repo().join("tests/python/hl7_tree.py"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();
    if std::env::var_os("SLUICE_AGREEMENT_KEEP").is_some() {
        // keep the CR-normalised files (named by message index) for a closer look
        eprintln!("messages kept in {}", dir.keep().display());
    }

    let mut tally = Tally {
        compared: 0,
        agreed: 0,
        explained: BTreeMap::new(),
        unexplained: Vec::new(),
    };
    let mut python_failed = 0;
    let mut refused = 0;
    let mut messages_agreeing = 0;
    for (i, m) in messages.iter().enumerate() {
        let file = format!("{i:05}.hl7");
        let t = &theirs[&file];
        if t.get("error").is_some() {
            // python-hl7 could not parse it at all: nothing to compare against
            python_failed += 1;
            continue;
        }
        let before = (tally.agreed, tally.compared);
        let msg = sluice_hl7::Message::parse(m);
        if msg.fatal_problem().map(|p| p.code) == Some(sluice_hl7::ProblemCode::BadEncodingCharacters) {
            // Sluice refuses (AR) a header whose delimiters are corrupt; python-hl7 splits on
            // whatever characters are there, so there is no shared reading to compare
            refused += 1;
            continue;
        }
        let utf8 = std::str::from_utf8(m).is_ok();
        // python-hl7 keeps a blank line between segments (two separators in a row) as an empty
        // segment; Sluice skips blank lines, so those are left out of the comparison
        let all_segs = t["segments"].as_array().unwrap();
        let segs: Vec<&Value> = all_segs
            .iter()
            .filter(|s| s["name"] != "" || s["fields"].as_array().is_some_and(|f| !f.is_empty()))
            .collect();
        let blank = all_segs.len() - segs.len();
        if blank > 0 {
            *tally.explained.entry("python-hl7 keeps blank lines as empty segments").or_default() += blank;
        }
        let ours: Vec<_> = msg.segments().collect();
        tally.check(
            "segment count",
            (0, 0, 0, 0, 0),
            &file,
            &ours.len().to_string(),
            Some(&segs.len().to_string()),
            "",
        );
        for (si, (seg, theirs_seg)) in ours.iter().zip(segs.iter()).enumerate() {
            tally.check(
                "segment name",
                (si, 0, 0, 0, 0),
                &file,
                seg.name_str(),
                theirs_seg["name"].as_str(),
                "",
            );
            if si == 0 && seg.field_count() <= 2 {
                // a header that ends right after MSH-2: python-hl7 reads the encoding
                // characters without their last one and then the segment name as MSH-3
                *tally
                    .explained
                    .entry("python-hl7 misreads a header ending right after MSH-2")
                    .or_default() += 1;
                continue;
            }
            let fields = theirs_seg["fields"].as_array().unwrap();
            let texts = theirs_seg["text"].as_array().unwrap();
            let n = seg.field_count().max(fields.len());
            for f in 1..=n {
                let field = seg.field(f);
                let literal = matches!(seg.name_str(), "MSH" | "FHS" | "BHS") && f <= 2;
                let tf = &fields.get(f - 1).cloned().unwrap_or(Value::Null);
                let tt = &texts.get(f - 1).cloned().unwrap_or(Value::Null);
                if literal {
                    let ours = as_text(field.raw(), utf8);
                    tally.check("raw", (si, f, 0, 0, 0), &file, &ours, leaf(tf, 0, 0, 0), &ours);
                    continue;
                }
                let last_field = si + 1 == ours.len() && f == n;
                let reps = field.repetition_count();
                for (r, rep) in field.repetitions().enumerate() {
                    let comps = rep.components().count();
                    for (c, comp) in rep.components().enumerate() {
                        let subs = comp.subcomponents().count();
                        for (s, sub) in comp.subcomponents().enumerate() {
                            let at = (si, f, r + 1, c + 1, s + 1);
                            let last = last_field && r + 1 == reps && c + 1 == comps && s + 1 == subs;
                            let raw = as_text(sub, utf8);
                            tally.check_at_end("raw", at, &file, &raw, leaf(tf, r, c, s), &raw, last);
                            let text = msg.text(sub);
                            tally.check_at_end("text", at, &file, &text, leaf(tt, r, c, s), &raw, last);
                        }
                    }
                }
            }
        }
        if tally.agreed - before.0 == tally.compared - before.1 {
            messages_agreeing += 1;
        }
    }
    let explained: usize = tally.explained.values().sum();
    println!(
        "agreement with python-hl7: {} messages ({} python-hl7 could not parse, {refused} Sluice refuses for corrupt delimiters), \
         {messages_agreeing} agree on every value; \
         {} values compared, {} equal ({:.3}%), {explained} differ for known python-hl7 reasons {:?}, {} unexplained",
        messages.len(),
        python_failed,
        tally.compared,
        tally.agreed,
        100.0 * tally.agreed as f64 / tally.compared.max(1) as f64,
        tally.explained,
        tally.unexplained.len(),
    );
    assert!(
        tally.unexplained.is_empty(),
        "unexplained disagreements with python-hl7 ({}), first ones:\n{}",
        tally.unexplained.len(),
        tally
            .unexplained
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(python_failed * 20 < messages.len(), "python-hl7 failed on {python_failed} messages");
}
