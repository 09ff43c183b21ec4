//! The decoder fuzz targets' checked-in corpora (`fuzz/corpus/<target>/`, what
//! `scripts/fuzz.sh` kept of its runs), replayed on every CI run with the targets' own
//! invariants (`fuzz/src/invariants.rs`): every input that once found new code still
//! decodes without a panic, with counts that agree with what the visitor saw.

#[path = "../../../fuzz/src/invariants.rs"]
mod invariants;

use std::path::PathBuf;

use unseen_ingest::{BodyEncoding, Format};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = format!("{}/../../fuzz/corpus/{target}", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 50, "{dir}: only {} inputs", files.len());
    files
}

/// Runs `check` on every input of `target`; names every input that panics.
fn replay(target: &str, check: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    let failed: Vec<String> = corpus(target)
        .into_iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap();
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: these inputs fail: {failed:#?}"
    );
}

#[test]
fn auto() {
    replay("auto", |d| invariants::run(d, Format::Auto));
}

#[test]
fn csv() {
    replay("csv", |d| invariants::run(d, Format::Csv));
}

#[test]
fn otlp_json() {
    replay("otlp_json", |d| invariants::run(d, Format::OtlpJson));
}

#[test]
fn otlp_proto() {
    replay("otlp_proto", |d| invariants::run(d, Format::OtlpProto));
}

#[test]
fn otlp_yaml() {
    replay("otlp_yaml", |d| invariants::run(d, Format::OtlpYaml));
}

#[test]
fn otlp_proto_request() {
    replay("otlp_proto_request", |d| {
        invariants::run_request(d, BodyEncoding::Protobuf)
    });
}
