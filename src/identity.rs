//! `sluice identity`: the patient-matching tools.
//!
//! - `estimate`: m/u weights from a synthetic population, with valid NHS numbers as labels,
//!   written as a versioned weights file (the compiled-in one is its output);
//! - `bench`: a synthetic population's ADT messages through the identity decisions in process
//!   (the same code as the identifier-match stage, after the real parser and normaliser), scored
//!   against the truth: overlays, pairwise recall of same-person records, share held for review,
//!   per scenario.

use crate::population::{self, Population, SCENARIOS};
use sluice_identifier_match::JsonCodec;
use sluice_identifier_match::resolve::{Out, Position, Resolver};
use sluice_matcher::{Index, Profile, Weights, keys_of};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Estimate m/u weights from a synthetic population and write a weights file
    Estimate {
        #[arg(long, default_value_t = 20_000)]
        people: usize,
        #[arg(long, default_value_t = 11)]
        seed: u64,
        /// Random pairs with different NHS numbers compared for u
        #[arg(long, default_value_t = 2_000_000)]
        pairs: usize,
        /// Thresholds and settings are kept from this file (default: the compiled-in one)
        #[arg(long)]
        base: Option<std::path::PathBuf>,
        #[arg(long)]
        version: String,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Score matching on a synthetic population, in process
    Bench {
        #[arg(long, default_value_t = 2_000)]
        people: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// A weights file (default: the compiled-in one)
        #[arg(long)]
        weights: Option<std::path::PathBuf>,
        /// A simulated reviewer works the queue this many times over the run (about daily over
        /// the population's ten months), deciding each open item by the truth; 0: nobody does
        #[arg(long, default_value_t = 300)]
        review_rounds: usize,
    },
}

pub fn run(c: Command) -> anyhow::Result<()> {
    match c {
        Command::Estimate {
            people,
            seed,
            pairs,
            base,
            version,
            out,
        } => {
            let base = load_weights(base.as_deref())?;
            let pop = population::generate(people, seed);
            let mut ix = Index::new(Arc::new(base.clone()));
            ix.set_journalling(false);
            let mut nodes = BTreeSet::new();
            for m in &pop.messages {
                let ev = map(&m.text)?;
                let Some(p) = &ev.patient else { continue };
                let (keys, _) = keys_of(&p.identifiers, &ev.source.sending_facility);
                if let Some(n) = ix.insert_record(&keys, &Profile::of(p, &keys)) {
                    nodes.insert(n);
                }
            }
            let nodes: Vec<_> = nodes.into_iter().collect();
            let (mut file, counts) = sluice_matcher::estimate::from_labels(&ix, &nodes, &base.file, pairs, seed);
            file.version = version;
            file.method = format!(
                "estimated with valid NHS numbers as labels: {} same-number record pairs (m), {} random different-number pairs (u), from `sluice identity estimate --people {people} --seed {seed} --pairs {pairs}` over {} records of the synthetic population (src/population.rs); thresholds kept from the base file",
                counts.match_pairs,
                counts.non_match_pairs,
                nodes.len()
            );
            let text = serde_yaml::to_string(&file)?;
            Weights::parse(&text)?;
            std::fs::write(
                &out,
                format!("# written by `sluice identity estimate`: edit the thresholds by hand, re-run for the m/u values\n{text}"),
            )?;
            println!(
                "{} same-number pairs, {} different-number pairs, written to {}",
                counts.match_pairs,
                counts.non_match_pairs,
                out.display()
            );
            for (field, levels) in &file.comparisons {
                let w: Vec<String> = levels.iter().map(|(l, v)| format!("{l} {:+.1}", (v.m / v.u).log2())).collect();
                println!("  {field}: {}", w.join(", "));
            }
            Ok(())
        }
        Command::Bench {
            people,
            seed,
            weights,
            review_rounds,
        } => {
            let w = load_weights(weights.as_deref())?;
            let pop = population::generate(people, seed);
            let report = bench(&pop, Arc::new(w), review_rounds)?;
            print!("{report}");
            Ok(())
        }
    }
}

fn load_weights(path: Option<&std::path::Path>) -> anyhow::Result<Weights> {
    Ok(match path {
        Some(p) => Weights::parse(&std::fs::read_to_string(p)?)?,
        None => Weights::default_weights(),
    })
}

/// The canonical event of a message, as normalise makes it.
pub fn map(text: &str) -> anyhow::Result<sluice_model::ClinicalEvent> {
    let msg = sluice_hl7::Message::parse(text.as_bytes());
    let raw = sluice_model::RawMessage {
        payload: text.as_bytes().to_vec(),
        ..Default::default()
    };
    sluice_mapping::v2::map_message(&msg, &raw, &Default::default())
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("a generated message made no event"))
}

/// The figures of one run: overall and per scenario.
#[derive(Debug, Default, Clone)]
pub struct Score {
    pub people: usize,
    pub messages: usize,
    pub held: usize,
    pub pairs: usize,
    pub pairs_linked: usize,
    pub cross_site_pairs: usize,
    pub cross_site_linked: usize,
    /// Enterprise ids holding records of more than one true person.
    pub overlays: usize,
}

impl Score {
    pub fn recall(&self) -> f64 {
        if self.pairs == 0 {
            1.0
        } else {
            self.pairs_linked as f64 / self.pairs as f64
        }
    }
    pub fn held_share(&self) -> f64 {
        if self.messages == 0 {
            0.0
        } else {
            self.held as f64 / self.messages as f64
        }
    }
}

pub struct Report {
    pub total: Score,
    pub by_scenario: BTreeMap<&'static str, Score>,
    /// Review items the simulated reviewer decided.
    pub decisions: usize,
    /// Events still held at the end.
    pub still_held: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<20} {:>7} {:>8} {:>9} {:>10} {:>11} {:>9}",
            "scenario", "people", "messages", "overlays", "recall", "cross-site", "held"
        )?;
        let line = |f: &mut std::fmt::Formatter<'_>, name: &str, s: &Score| {
            writeln!(
                f,
                "{:<20} {:>7} {:>8} {:>9} {:>9.2}% {:>10.2}% {:>8.2}%",
                name,
                s.people,
                s.messages,
                s.overlays,
                100.0 * s.recall(),
                if s.cross_site_pairs == 0 {
                    100.0
                } else {
                    100.0 * s.cross_site_linked as f64 / s.cross_site_pairs as f64
                },
                100.0 * s.held_share()
            )
        };
        for (name, s) in &self.by_scenario {
            line(f, name, s)?;
        }
        line(f, "all", &self.total)?;
        writeln!(
            f,
            "held: messages sent to review (held until decided); reviewer decisions: {}; events still held at the end: {}",
            self.decisions, self.still_held
        )
    }
}

/// The messages through the identity decisions in time order, in process, with the compiled-in
/// weights: every record's enterprise id at the end (by record key) and which messages were held.
pub fn run_in_process(pop: &Population, review_rounds: usize) -> anyhow::Result<(HashMap<String, String>, Vec<bool>)> {
    let (r, held, _) = drive(pop, Arc::new(Weights::default_weights()), review_rounds)?;
    let mut out = HashMap::new();
    for m in &pop.messages {
        let key = format!("mrn|{}|{}", m.site, m.mrn);
        if let Some(n) = r.index.find_key(&key) {
            out.insert(key, r.index.epi_of(n));
        }
    }
    Ok((out, held))
}

/// Runs the messages through the identity decisions in order and scores the result. A
/// simulated reviewer decides every open item `review_rounds` times over the run, by the truth.
pub fn bench(pop: &Population, weights: Arc<Weights>, review_rounds: usize) -> anyhow::Result<Report> {
    let (r, held, decisions) = drive(pop, weights, review_rounds)?;
    // the final enterprise id of every record
    let final_epi = |key: &str| r.index.find_key(key).map(|n| r.index.epi_of(n));
    let mut report = score(pop, &held, final_epi);
    report.decisions = decisions;
    report.still_held = r
        .view()
        .read()
        .map(|v| v.values().map(|i| i.held_event_ids.len()).sum())
        .unwrap_or(0);
    Ok(report)
}

fn drive(pop: &Population, weights: Arc<Weights>, review_rounds: usize) -> anyhow::Result<(Resolver, Vec<bool>, usize)> {
    let mut r = Resolver::new(Index::new(weights), Box::new(JsonCodec));
    let mut held: Vec<bool> = Vec::with_capacity(pop.messages.len());
    let person_of: HashMap<String, usize> = pop
        .messages
        .iter()
        .map(|m| (format!("mrn|{}|{}", m.site, m.mrn), m.person))
        .collect();
    let n = pop.messages.len().max(1);
    let mut round = 0;
    let mut decisions = 0usize;
    for (i, m) in pop.messages.iter().enumerate() {
        let ev = map(&m.text)?;
        let pos = Position {
            topic: "bench".into(),
            partition: 0,
            offset: i as i64,
        };
        let out = r.event(ev, i as i64, &pos);
        r.commit();
        held.push(out.iter().any(|o| matches!(o, Out::Review(_))));
        if review_rounds > 0 && (i + 1) * review_rounds / n > round {
            round = (i + 1) * review_rounds / n;
            decisions += review(&mut r, &person_of, i as i64);
        }
    }
    Ok((r, held, decisions))
}

/// The simulated reviewer: every open item about a record is decided by the truth (link to the
/// candidate that is the same person, else not the same person as any). Items without a record
/// (no usable identifier) stay.
fn review(r: &mut Resolver, person_of: &HashMap<String, usize>, now: i64) -> usize {
    let items: Vec<sluice_model::ReviewItem> = r.view().read().map(|v| v.values().cloned().collect()).unwrap_or_default();
    let mut n = 0;
    for item in items {
        let Some(subject) = item.record_key.as_ref().and_then(|k| person_of.get(k)) else {
            continue;
        };
        let same = item.candidates.iter().find(|c| person_of.get(&c.record_key) == Some(subject));
        let (action, target) = match same {
            Some(c) => ("link", Some(c.enterprise_id.clone())),
            None => ("new_patient", None),
        };
        let d = sluice_model::IdentityDecision {
            decision_id: format!("bench-{}-{action}", item.item_id),
            action: action.into(),
            item_id: Some(item.item_id.clone()),
            target_enterprise_id: target,
            reason: "simulated reviewer, by the truth".into(),
            actor: "bench-reviewer".into(),
            role: "reviewer".into(),
            at: now,
            ..Default::default()
        };
        let _ = r.decision(&d, now, &Position::default());
        r.commit();
        n += 1;
    }
    n
}

/// Scores final enterprise ids (by record key `mrn|<site>|<mrn>`) against the truth.
pub fn score(pop: &Population, held: &[bool], final_epi: impl Fn(&str) -> Option<String>) -> Report {
    let mut records: BTreeMap<(usize, &str), String> = BTreeMap::new();
    for m in &pop.messages {
        records
            .entry((m.person, m.site))
            .or_insert_with(|| format!("mrn|{}|{}", m.site, m.mrn));
    }
    let epi: HashMap<(usize, &str), Option<String>> = records.iter().map(|(k, key)| (*k, final_epi(key))).collect();
    let scenario_of = |p: usize| pop.people.get(p).map(|x| x.scenario).unwrap_or("plain");
    let mut by: BTreeMap<&'static str, Score> = SCENARIOS.iter().map(|s| (*s, Score::default())).collect();
    let mut total = Score::default();
    for p in &pop.people {
        for s in [by.entry(p.scenario).or_default(), &mut total] {
            s.people += 1;
        }
    }
    for (m, h) in pop.messages.iter().zip(held) {
        for s in [by.entry(scenario_of(m.person)).or_default(), &mut total] {
            s.messages += 1;
            s.held += usize::from(*h);
        }
    }
    // pairs of one person's records
    let mut per_person: BTreeMap<usize, Vec<(&str, Option<String>)>> = BTreeMap::new();
    for ((p, site), e) in &epi {
        per_person.entry(*p).or_default().push((site, e.clone()));
    }
    for (p, recs) in &per_person {
        for i in 0..recs.len() {
            for j in i + 1..recs.len() {
                let linked = recs[i].1.is_some() && recs[i].1 == recs[j].1;
                for s in [by.entry(scenario_of(*p)).or_default(), &mut total] {
                    s.pairs += 1;
                    s.pairs_linked += usize::from(linked);
                    s.cross_site_pairs += 1;
                    s.cross_site_linked += usize::from(linked);
                }
            }
        }
    }
    // enterprise ids shared by two true people
    let mut people_of: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for ((p, _), e) in &epi {
        if let Some(e) = e {
            people_of.entry(e.clone()).or_default().insert(*p);
        }
    }
    for ps in people_of.values().filter(|ps| ps.len() > 1) {
        total.overlays += 1;
        let scenarios: BTreeSet<&'static str> = ps.iter().map(|p| scenario_of(*p)).collect();
        for s in scenarios {
            by.entry(s).or_default().overlays += 1;
        }
    }
    Report {
        total,
        by_scenario: by,
        decisions: 0,
        still_held: 0,
    }
}
