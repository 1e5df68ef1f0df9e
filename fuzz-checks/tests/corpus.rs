//! Replays every file of the checked-in fuzz corpus (`fuzz/corpus/<target>/`:
//! the seeds, and every input that once crashed a target, added there as a
//! regression) through the target's checks on the stable toolchain.
#![allow(clippy::disallowed_methods)] // reads the corpus from disk

use presence_fuzz_checks::TARGETS;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

#[test]
fn every_corpus_file_passes_its_target() {
    let mut failures = Vec::new();
    for (target, check) in TARGETS {
        let dir = corpus_dir(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("corpus entry").path())
            .collect();
        files.sort();
        assert!(
            files.len() >= 5,
            "{target}: a seed corpus of at least 5 files is checked in"
        );
        for file in files {
            let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if catch_unwind(AssertUnwindSafe(|| check(&bytes))).is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "corpus files that fail their target: {failures:#?}"
    );
}

#[test]
fn every_target_has_a_libfuzzer_binary_and_a_corpus() {
    let manifest = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/Cargo.toml"))
        .expect("fuzz/Cargo.toml");
    for (target, _) in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "{target} has no [[bin]] in fuzz/Cargo.toml"
        );
        assert!(corpus_dir(target).is_dir(), "{target} has no corpus directory");
    }
}
