//! Locating the shared public test corpus (`../shared/corpus` beside the repository, or
//! `SLUICE_CORPUS`) for tests and benchmarks in every crate. The corpus is read in place and
//! never copied into the repository (its licences vary).
//!
//! Without it, callers skip with a message; under `CI=true` its absence is a failure.

use std::path::{Path, PathBuf};

/// The corpus folder, or `None` (after printing why) when it is absent outside CI.
///
/// # Panics
/// When the corpus is absent and `CI=true`.
pub fn root() -> Option<PathBuf> {
    // SLUICE_CORPUS, else `shared/corpus` beside the checkout: found from the working
    // directory (tests run in their package's directory) and from where this crate was built
    let root = std::env::var_os("SLUICE_CORPUS").map(PathBuf::from).unwrap_or_else(|| {
        let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
        std::env::current_dir()
            .ok()
            .and_then(|cwd| {
                cwd.ancestors()
                    .map(|a| a.join("shared/corpus"))
                    .find(|c| c.join("manifest.tsv").exists())
            })
            .unwrap_or(built)
    });
    if root.join("manifest.tsv").exists() {
        return Some(root);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "corpus not found at {} (set SLUICE_CORPUS)",
        root.display()
    );
    eprintln!(
        "skipping the corpus part: corpus not found at {} (set SLUICE_CORPUS)",
        root.display()
    );
    None
}

/// The HL7 v2 files listed in the corpus manifest, or `None` as for [`root`].
pub fn hl7v2_files() -> Option<Vec<PathBuf>> {
    files_of_kind(&["hl7v2", "hl7v2-literal"])
}

/// The FHIR files of the corpus: R4 examples (JSON), UK Core examples (XML), expected outputs
/// of converters and other FHIR JSON; `None` as for [`root`].
pub fn fhir_files() -> Option<Vec<PathBuf>> {
    files_of_kind(&["fhir-r4", "fhir-r4-ukcore-xml", "fhir-expected", "fhir/json"])
}

/// The manifest rows (columns split) whose `kind` is one of `kinds`, with the corpus root.
fn rows_of_kind(kinds: &[&str]) -> Option<(PathBuf, Vec<Vec<String>>)> {
    let root = root()?;
    let manifest = std::fs::read_to_string(root.join("manifest.tsv")).ok()?;
    let rows = manifest
        .lines()
        .skip(1)
        .map(|l| l.split('\t').map(str::to_owned).collect::<Vec<_>>())
        .filter(|cols| cols.get(2).is_some_and(|k| kinds.contains(&k.as_str())))
        .collect();
    Some((root, rows))
}

/// The files whose manifest `kind` is one of `kinds`.
pub fn files_of_kind(kinds: &[&str]) -> Option<Vec<PathBuf>> {
    let (root, rows) = rows_of_kind(kinds)?;
    Some(rows.iter().map(|cols| root.join(&cols[0])).collect())
}

/// How many HL7 v2 messages the corpus manifest says its files hold (its `messages` column, a
/// heuristic count of lines starting `MSH`), or `None` as for [`root`]. Tests check they read at
/// least this many, so they judge that every message was read, whatever the corpus's size.
pub fn manifest_hl7v2_messages() -> Option<usize> {
    let (_, rows) = rows_of_kind(&["hl7v2", "hl7v2-literal"])?;
    Some(
        rows.iter()
            .filter_map(|cols| cols.get(5).and_then(|n| n.parse::<usize>().ok()))
            .sum(),
    )
}

/// Every HL7 v2 message of the corpus (files split into messages), empty without the corpus.
pub fn hl7v2_messages() -> Vec<Vec<u8>> {
    hl7v2_files()
        .unwrap_or_default()
        .iter()
        .filter_map(|f| std::fs::read(f).ok())
        .flat_map(|bytes| crate::split_messages(&bytes).into_iter().map(<[u8]>::to_vec).collect::<Vec<_>>())
        .collect()
}
