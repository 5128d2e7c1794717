//! Estimating m/u weights from data, with valid NHS numbers as labels: two records that carry
//! the same valid NHS number are one person (m), two that carry different ones are two people
//! (u). Records without an NHS number are still matched with the weights; they just do not
//! teach them. Counts are smoothed so that no level has probability 0.
//!
//! The tool that runs this over a synthetic population and writes `weights/*.yaml` is
//! `sluice identity estimate`.

use crate::index::{Index, NodeId};
use crate::weights::{FIELDS, LEVELS, Level, MISSING, WeightsFile};
use std::collections::{BTreeMap, HashMap};

/// How many pairs taught the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub match_pairs: usize,
    pub non_match_pairs: usize,
}

/// A small deterministic generator (xorshift64*), so an estimate is repeatable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1) as u64) as usize
    }
}

/// New m/u values for `base` (its thresholds and settings kept) from the records `nodes` of
/// `ix` (built with [`Index::insert_record`], unclustered). `non_match_pairs` random pairs
/// with different NHS numbers are compared for u.
pub fn from_labels(ix: &Index, nodes: &[NodeId], base: &WeightsFile, non_match_pairs: usize, seed: u64) -> (WeightsFile, Counts) {
    let mut by_nhs: BTreeMap<u64, Vec<NodeId>> = BTreeMap::new();
    for n in nodes {
        let nhs = ix.node(*n).nhs;
        if nhs != 0 {
            by_nhs.entry(nhs).or_default().push(*n);
        }
    }
    let mut m_counts = vec![vec![0f64; 8]; 8];
    let mut u_counts = vec![vec![0f64; 8]; 8];
    let count = |counts: &mut Vec<Vec<f64>>, a: NodeId, b: NodeId| {
        let l = ix.compare(a, b);
        for (f, level) in l.0.iter().enumerate() {
            if *level != MISSING {
                counts[f][usize::from(*level)] += 1.0;
            }
        }
    };
    let mut matches = 0;
    for group in by_nhs.values() {
        for i in 0..group.len() {
            for j in i + 1..group.len() {
                count(&mut m_counts, group[i], group[j]);
                matches += 1;
            }
        }
    }
    let labelled: Vec<NodeId> = by_nhs.values().flatten().copied().collect();
    let mut rng = Rng(seed | 1);
    let mut non_matches = 0;
    let mut tries = 0;
    while non_matches < non_match_pairs && tries < non_match_pairs * 4 && labelled.len() > 1 {
        tries += 1;
        let (a, b) = (labelled[rng.below(labelled.len())], labelled[rng.below(labelled.len())]);
        if ix.node(a).nhs == ix.node(b).nhs {
            continue;
        }
        count(&mut u_counts, a, b);
        non_matches += 1;
    }
    let mut file = base.clone();
    let mut comparisons: BTreeMap<String, BTreeMap<String, Level>> = BTreeMap::new();
    for (f, field) in FIELDS.iter().enumerate() {
        let levels = LEVELS[f];
        let (mt, ut): (f64, f64) = (m_counts[f].iter().sum(), u_counts[f].iter().sum());
        let mut out = BTreeMap::new();
        for (l, level) in levels.iter().enumerate() {
            // add-one smoothing over the levels, then a floor: rare is not impossible
            let m = ((m_counts[f][l] + 1.0) / (mt + levels.len() as f64)).max(1e-4);
            let u = ((u_counts[f][l] + 1.0) / (ut + levels.len() as f64)).max(1e-7);
            out.insert((*level).to_owned(), Level { m: round(m), u: round(u) });
        }
        comparisons.insert((*field).to_owned(), out);
    }
    file.comparisons = comparisons;
    (
        file,
        Counts {
            match_pairs: matches,
            non_match_pairs: non_matches,
        },
    )
}

fn round(v: f64) -> f64 {
    let digits = 4 - v.log10().floor() as i32;
    let p = 10f64.powi(digits.max(0));
    (v * p).round() / p
}

/// Level frequencies of record pairs, for showing what an estimate learned.
pub fn describe(file: &WeightsFile) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for (field, levels) in &file.comparisons {
        for (level, v) in levels {
            out.insert(format!("{field}.{level}"), (v.m / v.u).log2());
        }
    }
    out
}
