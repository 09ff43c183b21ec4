//! `unseen scan`: every file through the decoders into one batch evaluation at `--at`.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::Path;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use unseen_detect::{BatchScan, Placement};
use unseen_findings::{render_table, Decider, Finding, Suppressions, TriageSettings, TriageState};
use unseen_ingest::{
    read_bytes, read_source, Format, Issue, IssueKind, Limits, SourceStats, Visitor,
};
use unseen_model::{
    parse_duration, parse_time, unix_secs_from_nanos, PointRef, UnixSecs, Windows, SEED_RULE,
};
use unseen_normalize::image::CanonicalMemo;
use unseen_normalize::{key_of_memo, DropCounts, KeyMode};

use crate::args::{FormatArg, RuleArgs, ScanArgs, ScanOutput};
use crate::progress::Progress;
use crate::summary::Summary;

pub enum Outcome {
    Clean,
    /// Malformed input was seen and `--fail-on-error` was given.
    MalformedInput,
}

/// Windows and key mode from the command line, validated.
pub fn rule_config(args: &RuleArgs) -> Result<(Windows, KeyMode)> {
    let current = parse_duration(&args.current).context("--current")?;
    let baseline = parse_duration(&args.baseline).context("--baseline")?;
    let recent = parse_duration(&args.recent).context("--recent")?;
    let windows = Windows::new(current, baseline, recent)?;
    let mode = KeyMode {
        strict: args.strict,
        cluster_name: args.cluster_name.clone().filter(|c| !c.is_empty()),
    };
    Ok((windows, mode))
}

pub fn run(args: ScanArgs, stderr_is_terminal: bool) -> Result<Outcome> {
    let (windows, mode) = rule_config(&args.rule)?;
    let at = match &args.at {
        Some(t) => parse_time(t).context("--at")?,
        None => now(),
    };
    let output = args.output.unwrap_or(if io::stdout().is_terminal() {
        ScanOutput::Table
    } else {
        ScanOutput::Json
    });

    let started = Instant::now();
    let mut visitor = ScanVisitor {
        memo: CanonicalMemo::default(),
        mode: &mode,
        scan: BatchScan::new(windows, at),
        drops: DropCounts::default(),
        placements: Default::default(),
        shown: 0,
        max_shown: args.max_errors_shown,
        hidden: 0,
        points: Rc::new(Cell::new(0)),
    };
    let mut totals = SourceStats::default();
    let mut bytes = 0u64;
    for path in &args.files {
        let name = path.display().to_string();
        visitor.shown = 0;
        let stats = match open_mapped(path, args.format, !args.no_mmap)? {
            Input::Mapped(map) => {
                let spinner = crate::progress::spinner(&name, stderr_is_terminal, map.len());
                let (_, stats) = read_bytes(
                    &name,
                    &map,
                    args.format.into(),
                    Limits::default(),
                    &mut visitor,
                )?;
                if let Some(spinner) = spinner {
                    spinner.finish_and_clear();
                }
                bytes += map.len() as u64;
                stats
            }
            Input::Stream(input) => {
                let mut progress =
                    Progress::new(input, &name, stderr_is_terminal, visitor.points.clone());
                let (_, stats) = read_source(
                    &name,
                    &mut progress,
                    args.format.into(),
                    Limits::default(),
                    &mut visitor,
                )?;
                bytes += progress.finish();
                stats
            }
        };
        if visitor.hidden > 0 {
            eprintln!(
                "warning: {name}: {} more malformed-input messages not shown (--max-errors-shown)",
                visitor.hidden
            );
            visitor.hidden = 0;
        }
        add(&mut totals, &stats);
    }

    let keys = visitor.scan.keys();
    let settings = TriageSettings::default();
    let suppressions = match &args.suppressions {
        Some(path) => crate::suppress::load(path)?,
        None => Suppressions::default(),
    };
    let decider = Decider {
        rule: &SEED_RULE,
        mode: &mode,
        windows,
        settings: &settings,
        suppressions: &suppressions,
        now: at,
        report: true,
    };
    // What the fleet knew, streamed into the triage's index (an entry per distinct
    // image, cluster image, registry and node): never a copy per baseline key.
    let mut state = TriageState::untracked();
    if !mode.strict {
        visitor.scan.for_each_baseline_key(|cluster, node, image| {
            decider.know_baseline(&mut state, cluster, node, image)
        });
    }
    let detections = visitor.scan.finish();
    let findings: Vec<Finding> = decider.batch_with(detections, state);
    write_findings(&findings, output).context("writing findings to standard output")?;

    let summary = Summary {
        at,
        windows,
        mode: &mode,
        files: args.files.len(),
        bytes,
        stats: totals,
        drops: visitor.drops,
        placements: visitor.placements,
        keys,
        findings: findings.len(),
        elapsed: started.elapsed(),
    };
    eprint!("{}", summary.render());

    let malformed = totals.malformed_records + totals.malformed_points;
    Ok(if args.fail_on_error && malformed > 0 {
        Outcome::MalformedInput
    } else {
        Outcome::Clean
    })
}

fn now() -> UnixSecs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as UnixSecs)
}

/// An input file, mapped or as a stream.
enum Input {
    Mapped(memmap2::Mmap),
    Stream(Box<dyn Read>),
}

/// Opens `path` for `scan`. A non-empty regular file of OTLP protobuf (the format given, or
/// detected) is mapped when `map` is set, so that the decoder walks the page cache in place:
/// that saves the copy out of the kernel, the largest cost of a protobuf scan after the
/// walk itself. Everything else is read as a stream: standard input, pipes, gzip, and the
/// text formats, whose decoders gain nothing from a map (measured in BENCHMARKS.md) and
/// whose files would then count in the process's RSS.
fn open_mapped(path: &Path, format: FormatArg, map: bool) -> Result<Input> {
    if !map || path.as_os_str() == "-" {
        return open(path).map(Input::Stream);
    }
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if !file.metadata().is_ok_and(|m| m.is_file() && m.len() > 0) {
        return Ok(Input::Stream(Box::new(file)));
    }
    // SAFETY: the map is read only, and only while this scan holds it. If another process
    // truncates the file meanwhile, reading the lost pages raises SIGBUS: `--no-mmap` is for
    // files that may shrink while they are scanned.
    let Ok(mapped) = (unsafe { memmap2::Mmap::map(&file) }) else {
        return Ok(Input::Stream(Box::new(file)));
    };
    // As much as `read_source` looks at to tell the format.
    let head = &mapped[..mapped.len().min(64 << 10)];
    let protobuf = match format {
        FormatArg::Auto => unseen_ingest::detect_format(head) == Some(Format::OtlpProto),
        format => Format::from(format) == Format::OtlpProto,
    };
    if !protobuf {
        // The map did not move the file's offset: the stream starts at its first byte.
        return Ok(Input::Stream(Box::new(file)));
    }
    // Read once, front to back: let the kernel read ahead.
    let _ = mapped.advise(memmap2::Advice::Sequential);
    Ok(Input::Mapped(mapped))
}

pub fn open(path: &Path) -> Result<Box<dyn Read>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(io::stdin().lock()));
    }
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Box::new(file))
}

fn add(total: &mut SourceStats, s: &SourceStats) {
    total.records += s.records;
    total.ready_points += s.ready_points;
    total.other_points += s.other_points;
    total.malformed_records += s.malformed_records;
    total.malformed_points += s.malformed_points;
}

fn write_findings(findings: &[Finding], output: ScanOutput) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match output {
        ScanOutput::Json => {
            for f in findings {
                out.write_all(f.to_json_line().as_bytes())?;
                out.write_all(b"\n")?;
            }
        }
        ScanOutput::Ocsf => {
            for f in findings {
                serde_json::to_writer(&mut out, &unseen_findings::ocsf::finding(f))?;
                out.write_all(b"\n")?;
            }
        }
        ScanOutput::Table => out.write_all(render_table(findings).as_bytes())?,
    }
    out.flush()
}

/// Where points fell relative to the windows, for the summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct Placements {
    pub in_windows: u64,
    pub before_windows: u64,
    pub after_at: u64,
}

struct ScanVisitor<'m> {
    mode: &'m KeyMode,
    /// The image names' canonical forms, parsed once per name rather than per point.
    memo: CanonicalMemo,
    scan: BatchScan,
    drops: DropCounts,
    placements: Placements,
    shown: u64,
    max_shown: u64,
    hidden: u64,
    /// Shared with the progress bar.
    points: Rc<Cell<u64>>,
}

impl Visitor for ScanVisitor<'_> {
    fn point(&mut self, point: PointRef<'_>) {
        self.points.set(self.points.get() + 1);
        match key_of_memo(&point.dims, self.mode, &mut self.memo) {
            Ok(key) => {
                let t = unix_secs_from_nanos(point.time_unix_nano);
                // Evidence only where findings carry it (default mode).
                let evidence = (!self.mode.strict).then(|| {
                    (
                        &point.dims.context,
                        point.dims.image_name.unwrap_or_default(),
                    )
                });
                match self
                    .scan
                    .observe_with(key, t, point.dims.host_name, evidence)
                {
                    Placement::AfterT => self.placements.after_at += 1,
                    Placement::BeforeWindows => self.placements.before_windows += 1,
                    _ => self.placements.in_windows += 1,
                }
            }
            Err(reason) => self.drops.add(reason),
        }
    }

    fn issue(&mut self, issue: Issue) {
        if self.shown < self.max_shown {
            self.shown += 1;
            let what = match issue.kind {
                IssueKind::MalformedRecord => "skipped record",
                IssueKind::MalformedPoint => "skipped point",
            };
            eprintln!("warning: {what}: {issue}");
        } else {
            self.hidden += 1;
        }
    }
}
