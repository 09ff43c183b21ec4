//! Data-driven end-to-end tests of the real `unseen` binary.
//!
//! Each folder under `tests/cases/` is one run:
//! - `args`: the arguments, one per line; `$FIXTURES` is the shared fixtures folder and
//!   `$CASE` this case's folder;
//! - `stdin` (optional): fed to the binary;
//! - `stdout`, `stderr`, `status`: what it must print and exit with.
//!
//! Every `scan` case but the usage errors runs twice: as written (files mapped into memory)
//! and with `--no-mmap` (files read as streams), to the same expectations.
//!
//! Timings in the summary vary from run to run and are masked. Run with
//! `UNSEEN_BLESS=1` to rewrite the expectations after a deliberate change, then review
//! the diff like code.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn fixtures() -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures"
    ))
    .canonicalize()
    .expect("the shared fixtures folder beside the repository")
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases")
}

/// Masks what changes between runs: durations, throughput, and the absolute paths of
/// this checkout.
fn normalize(text: &str, case: &Path) -> String {
    let text = text
        .replace(&fixtures().display().to_string(), "$FIXTURES")
        .replace(&case.display().to_string(), "$CASE");
    text.lines()
        .map(|line| match line.rfind(" in ") {
            Some(i) if line.trim_start().starts_with("read ") => {
                format!("{} in <elapsed>", &line[..i])
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + if text.ends_with('\n') { "\n" } else { "" }
}

fn run_case(case: &Path, extra: Option<&str>) -> Result<(), String> {
    let args_text = fs::read_to_string(case.join("args")).map_err(|e| format!("args: {e}"))?;
    let mut args: Vec<String> = args_text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.replace("$FIXTURES", &fixtures().display().to_string())
                .replace("$CASE", &case.display().to_string())
        })
        .collect();
    if let Some(extra) = extra {
        // Right after the subcommand, where it cannot be taken for a file.
        args.insert(1, extra.to_string());
    }
    let stdin = fs::read(case.join("stdin")).ok();
    let mut child = Command::new(env!("CARGO_BIN_EXE_unseen"))
        .args(&args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(&input)
            .map_err(|e| format!("stdin: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("wait: {e}"))?;
    let got = [
        (
            "stdout",
            normalize(&String::from_utf8_lossy(&out.stdout), case),
        ),
        (
            "stderr",
            normalize(&String::from_utf8_lossy(&out.stderr), case),
        ),
        ("status", format!("{}\n", out.status.code().unwrap_or(-1))),
    ];
    let bless = std::env::var_os("UNSEEN_BLESS").is_some() && extra.is_none();
    let mut failures = Vec::new();
    for (name, text) in got {
        let path = case.join(name);
        if bless {
            fs::write(&path, &text).map_err(|e| format!("{name}: {e}"))?;
            continue;
        }
        let want = fs::read_to_string(&path).unwrap_or_default();
        if want != text {
            failures.push(format!("--- {name} expected\n{want}--- {name} got\n{text}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

#[test]
fn cases() {
    let mut dirs: Vec<PathBuf> = fs::read_dir(cases_dir())
        .expect("tests/cases")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 10,
        "expected the case folders, found {}",
        dirs.len()
    );
    let mut failed = Vec::new();
    let mut streamed = 0;
    for dir in &dirs {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        if let Err(e) = run_case(dir, None) {
            failed.push(format!("case {name}:\n{e}"));
        }
        let args = fs::read_to_string(dir.join("args")).unwrap_or_default();
        // A usage error (status 2) prints the usage line, which would name the flag.
        let usage_error = fs::read_to_string(dir.join("status")).unwrap_or_default() == "2\n";
        if args.lines().next() == Some("scan") && !usage_error {
            streamed += 1;
            if let Err(e) = run_case(dir, Some("--no-mmap")) {
                failed.push(format!("case {name}, with --no-mmap:\n{e}"));
            }
        }
    }
    assert!(streamed >= 10, "expected the scan cases, found {streamed}");
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        dirs.len(),
        failed.join("\n\n")
    );
}
