//! The m/u weights, thresholds and blocking rules: a versioned file (`weights/*.yaml`),
//! compiled in as the default and replaceable by a file named in the service's config.
//!
//! Each comparison has ordered levels, each with `m` (how often a true match is at this level)
//! and `u` (how often a non-match is). The weight of a level is `log2(m / u)`; a missing value
//! weighs 0. A pair's score is the sum of its weights (Fellegi-Sunter), compared with the two
//! thresholds. How the file was made (the estimation tool and its data) is written in it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The compared fields, in the order of [`crate::compare::Levels`].
pub const FIELDS: [&str; 8] = [
    "given_name",
    "family_name",
    "birth_date",
    "sex",
    "postcode",
    "address",
    "nhs_number",
    "mrn",
];

/// The level names of each field, best first. Index 0 of a field's levels is never "missing":
/// missing is [`MISSING`].
pub const LEVELS: [&[&str]; 8] = [
    &["exact", "other_name_exact", "close", "similar", "different"],
    &["exact", "other_name_exact", "close", "similar", "different"],
    &["exact", "day_month_transposed", "near", "different"],
    &["same", "different"],
    &["exact", "same_district", "different"],
    &["exact", "same_house_and_street", "different"],
    &["same", "different"],
    &["same_authority_other_number", "other_authority"],
];

/// The level code of a value missing on either side.
pub const MISSING: u8 = u8::MAX;

pub const DEFAULT_FILE: &str = include_str!("../weights/v1.yaml");

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    pub m: f64,
    pub u: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// A pair scoring at least this links automatically (hard rules permitting).
    pub link: f32,
    /// A record whose best candidate scores at least this, but below `link`, is held for review.
    pub review: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsFile {
    /// Written into every decision's evidence, so a decision can be traced to its weights.
    pub version: String,
    /// How the m/u values were made.
    pub method: String,
    pub thresholds: Thresholds,
    /// Blocks larger than this are not used to find candidates (a value too common to help).
    pub max_block: usize,
    /// Jaro-Winkler similarity at or above which two names are `close`, and `similar`.
    pub jaro_winkler_close: f64,
    pub jaro_winkler_similar: f64,
    pub comparisons: BTreeMap<String, BTreeMap<String, Level>>,
}

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("weights file is invalid: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("weights file has no level {level} for {field}")]
    MissingLevel { field: &'static str, level: &'static str },
    #[error("weights file level {field}.{level} needs 0 < m <= 1 and 0 < u <= 1")]
    Probability { field: &'static str, level: &'static str },
    #[error("weights file thresholds need review < link")]
    Thresholds,
}

/// Weights ready to use: one weight per (field, level).
#[derive(Debug, Clone)]
pub struct Weights {
    pub file: WeightsFile,
    table: [[f32; 8]; 8],
}

impl Weights {
    pub fn parse(text: &str) -> Result<Weights, WeightsError> {
        let file: WeightsFile = serde_yaml::from_str(text)?;
        Weights::from_file(file)
    }

    pub fn from_file(file: WeightsFile) -> Result<Weights, WeightsError> {
        let mut table = [[0f32; 8]; 8];
        for (f, field) in FIELDS.iter().enumerate() {
            for (l, level) in LEVELS[f].iter().enumerate() {
                let v = file
                    .comparisons
                    .get(*field)
                    .and_then(|c| c.get(*level))
                    .ok_or(WeightsError::MissingLevel { field, level })?;
                if !(v.m > 0.0 && v.m <= 1.0 && v.u > 0.0 && v.u <= 1.0) {
                    return Err(WeightsError::Probability { field, level });
                }
                table[f][l] = (v.m / v.u).log2() as f32;
            }
        }
        if file.thresholds.review >= file.thresholds.link {
            return Err(WeightsError::Thresholds);
        }
        Ok(Weights { file, table })
    }

    /// The weights compiled in (`weights/v1.yaml`).
    pub fn default_weights() -> Weights {
        // the compiled-in file is checked by a test
        #[allow(clippy::expect_used)]
        Weights::parse(DEFAULT_FILE).expect("the compiled-in weights file is valid")
    }

    pub fn weight(&self, field: usize, level: u8) -> f32 {
        if level == MISSING {
            return 0.0;
        }
        self.table
            .get(field)
            .and_then(|t| t.get(usize::from(level)))
            .copied()
            .unwrap_or(0.0)
    }

    pub fn link_at(&self) -> f32 {
        self.file.thresholds.link
    }

    pub fn review_at(&self) -> f32 {
        self.file.thresholds.review
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_file_is_valid_and_complete() {
        let w = Weights::parse(DEFAULT_FILE).expect("valid");
        assert!(w.weight(0, 0) > 0.0, "an exact given name is evidence for");
        assert!(w.weight(0, 4) < 0.0, "a different given name is evidence against");
        assert_eq!(w.weight(0, MISSING), 0.0);
    }
}
