//! `unseen scan`: every file through the decoders into one batch evaluation at `--at`.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::Path;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use unseen_detect::{BatchScan, Pipelined, Placement, Sighting};
use unseen_findings::{render_table, Decider, Finding, Suppressions, TriageSettings, TriageState};
use unseen_ingest::{
    read_bytes, read_head, read_source, read_split, Format, Issue, IssueKind, Limits, SourceStats,
    Visitor, MIN_RANGE_BYTES,
};
use unseen_model::{
    ctx, parse_duration, parse_time, unix_secs_from_nanos, PointRef, UnixSecs, Windows, SEED_RULE,
};
use unseen_normalize::image::CanonicalMemo;
use unseen_normalize::{key_of_raw, DropCounts, KeyMode};

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
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let new_range = || RangeScan {
        mode: &mode,
        // Image names are made canonical in default mode only.
        scan: Pipelined::new(
            BatchScan::new(windows, at),
            (!mode.strict).then(CanonicalMemo::default),
        ),
        drops: DropCounts::default(),
        placements: Placements::default(),
    };
    let mut visitor = new_range();
    let mut shown = Shown {
        shown: 0,
        max_shown: args.max_errors_shown,
        hidden: 0,
    };
    let mut totals = SourceStats::default();
    let mut bytes = 0u64;
    for path in &args.files {
        let name = path.display().to_string();
        shown.shown = 0;
        let stats = match open_input(path, args.format, !args.no_mmap, threads)? {
            Input::Split(file) => {
                let size = file.metadata().map_or(0, |m| m.len());
                let spinner = crate::progress::spinner(&name, stderr_is_terminal, size as usize);
                // Issues are held per range and shown in input order afterwards: no range
                // needs more than the ones shown.
                let keep = usize::try_from(args.max_errors_shown).unwrap_or(usize::MAX);
                let (_, parts) = read_split(
                    &name,
                    &file,
                    args.format.into(),
                    Limits::default(),
                    threads,
                    keep,
                    new_range,
                )?;
                if let Some(spinner) = spinner {
                    spinner.finish_and_clear();
                }
                bytes += size;
                let mut stats = SourceStats::default();
                for part in parts {
                    for issue in part.issues {
                        shown.issue(issue);
                    }
                    shown.hidden += part.more_issues;
                    add(&mut stats, &part.stats);
                    visitor.merge(part.visitor);
                }
                stats
            }
            Input::Mapped(map) => {
                let spinner = crate::progress::spinner(&name, stderr_is_terminal, map.len());
                let mut streamed = Streamed {
                    range: &mut visitor,
                    shown: &mut shown,
                    points: Rc::new(Cell::new(0)),
                };
                let (_, stats) = read_bytes(
                    &name,
                    &map,
                    args.format.into(),
                    Limits::default(),
                    &mut streamed,
                )?;
                if let Some(spinner) = spinner {
                    spinner.finish_and_clear();
                }
                bytes += map.len() as u64;
                stats
            }
            Input::Stream(input) => {
                let points = Rc::new(Cell::new(0));
                let mut progress = Progress::new(input, &name, stderr_is_terminal, points.clone());
                let mut streamed = Streamed {
                    range: &mut visitor,
                    shown: &mut shown,
                    points,
                };
                let (_, stats) = read_source(
                    &name,
                    &mut progress,
                    args.format.into(),
                    Limits::default(),
                    &mut streamed,
                )?;
                bytes += progress.finish();
                stats
            }
        };
        if shown.hidden > 0 {
            eprintln!(
                "warning: {name}: {} more malformed-input messages not shown (--max-errors-shown)",
                shown.hidden
            );
            shown.hidden = 0;
        }
        add(&mut totals, &stats);
    }

    let scan = visitor.scan.into_scan();
    let keys = scan.keys();
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
        scan.for_each_baseline_key_marked(|key| decider.know_baseline_key(&mut state, key));
    }
    let detections = scan.finish();
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

/// An input file, and how it is read.
enum Input {
    /// A CSV export read in ranges, on several threads ([`read_split`]).
    Split(File),
    /// OTLP protobuf, walked in place.
    Mapped(memmap2::Mmap),
    Stream(Box<dyn Read>),
}

/// Opens `path` for `scan`, and chooses how to read it from its first bytes.
///
/// - A CSV export of at least two ranges' worth ([`MIN_RANGE_BYTES`]) is read in ranges on
///   up to `threads` threads, each range through its own buffer with positioned reads: the
///   file is neither mapped nor copied twice, and memory stays a buffer per thread.
/// - A non-empty regular file of OTLP protobuf is mapped when `map` is set, so that the
///   decoder walks the page cache in place: that saves the copy out of the kernel, the
///   largest cost of a protobuf scan after the walk itself.
/// - Everything else is read as a stream: standard input, pipes, gzip, and the other text
///   files, whose decoders gain nothing from a map (measured in BENCHMARKS.md) and whose
///   files would then count in the process's RSS.
fn open_input(path: &Path, format: FormatArg, map: bool, threads: usize) -> Result<Input> {
    if path.as_os_str() == "-" {
        return open(path).map(Input::Stream);
    }
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = match file.metadata() {
        Ok(m) if m.is_file() && m.len() > 0 => m.len(),
        _ => return Ok(Input::Stream(Box::new(file))),
    };
    // As much as `read_source` looks at to tell the format, read where it lies: the
    // file's offset does not move, so a stream still starts at its first byte.
    let head = read_head(&file).with_context(|| format!("cannot read {}", path.display()))?;
    let format = match format {
        FormatArg::Auto => unseen_ingest::detect_format(&head),
        format => Some(Format::from(format)),
    };
    match format {
        Some(Format::Csv) if threads > 1 && size >= 2 * MIN_RANGE_BYTES => Ok(Input::Split(file)),
        Some(Format::OtlpProto) if map => {
            // SAFETY: the map is read only, and only while this scan holds it. If another
            // process truncates the file meanwhile, reading the lost pages raises SIGBUS:
            // `--no-mmap` is for files that may shrink while they are scanned.
            let Ok(mapped) = (unsafe { memmap2::Mmap::map(&file) }) else {
                return Ok(Input::Stream(Box::new(file)));
            };
            // Read once, front to back: let the kernel read ahead.
            let _ = mapped.advise(memmap2::Advice::Sequential);
            Ok(Input::Mapped(mapped))
        }
        _ => Ok(Input::Stream(Box::new(file))),
    }
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

/// What `scan` keeps of the points of one range of the input (or of all of it): the
/// batch evaluation and the counts. Ranges read on other threads are merged into the first
/// in input order ([`RangeScan::merge`]).
struct RangeScan<'m> {
    mode: &'m KeyMode,
    /// The batch evaluation, fed a few points behind; its memo of canonical image names
    /// serves the spellings it has not seen before.
    scan: Pipelined,
    drops: DropCounts,
    placements: Placements,
}

impl RangeScan<'_> {
    /// Adds what `other`, a range after everything this one has seen, saw.
    fn merge(&mut self, other: RangeScan<'_>) {
        let scan = self.scan.scan();
        let theirs = other.scan.into_scan();
        if scan.keys() == 0 {
            // Nothing to merge into: take its keys whole (the first range of a file).
            let empty = std::mem::replace(scan, theirs);
            scan.merge(empty);
        } else {
            scan.merge(theirs);
        }
        self.drops.merge(&other.drops);
        let p = other.placements;
        self.placements.in_windows += p.in_windows;
        self.placements.before_windows += p.before_windows;
        self.placements.after_at += p.after_at;
    }
}

impl Visitor for RangeScan<'_> {
    /// Points read together (a batch of CSV rows) go through the scan's steps together,
    /// each step over all of them, so that what one point's lookup needs is fetched while
    /// the others' are worked on.
    fn points(&mut self, points: &[PointRef<'_>]) {
        let mut sightings = Vec::with_capacity(points.len());
        for point in points {
            let key = match key_of_raw(&point.dims, self.mode) {
                Ok(key) => key,
                Err(reason) => {
                    self.drops.add(reason);
                    continue;
                }
            };
            let t = unix_secs_from_nanos(point.time_unix_nano);
            match self.scan.placement(t) {
                Placement::AfterT => {
                    self.placements.after_at += 1;
                    continue;
                }
                Placement::BeforeWindows => self.placements.before_windows += 1,
                _ => self.placements.in_windows += 1,
            }
            sightings.push(Sighting {
                key,
                tag: point.dims.context.get(ctx::IMAGE_TAG),
                t,
                host_name: point.dims.host_name,
                // Evidence only where findings carry it (default mode).
                evidence: (!self.mode.strict).then_some(&point.dims.context),
            });
        }
        self.scan.observe_all(&sightings);
    }

    #[inline]
    fn point(&mut self, point: PointRef<'_>) {
        match key_of_raw(&point.dims, self.mode) {
            Ok(key) => {
                let t = unix_secs_from_nanos(point.time_unix_nano);
                // Evidence only where findings carry it (default mode).
                let evidence = (!self.mode.strict).then_some(&point.dims.context);
                let tag = point.dims.context.get(ctx::IMAGE_TAG);
                match self
                    .scan
                    .observe_with(key, tag, t, point.dims.host_name, evidence)
                {
                    Placement::AfterT => self.placements.after_at += 1,
                    Placement::BeforeWindows => self.placements.before_windows += 1,
                    _ => self.placements.in_windows += 1,
                }
            }
            Err(reason) => self.drops.add(reason),
        }
    }

    /// Never called: [`read_split`] holds the issues of its ranges, and the other inputs'
    /// go through [`Streamed`].
    fn issue(&mut self, _: Issue) {}
}

/// Malformed-input messages of one file: the first `max_shown` are printed, the rest
/// counted.
struct Shown {
    shown: u64,
    max_shown: u64,
    hidden: u64,
}

impl Shown {
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

/// The visitor of a file read on one thread: its issues are printed as they come, and its
/// points counted for the progress bar.
struct Streamed<'a, 'm> {
    range: &'a mut RangeScan<'m>,
    shown: &'a mut Shown,
    /// Shared with the progress bar.
    points: Rc<Cell<u64>>,
}

impl Visitor for Streamed<'_, '_> {
    #[inline]
    fn point(&mut self, point: PointRef<'_>) {
        self.points.set(self.points.get() + 1);
        self.range.point(point);
    }

    fn points(&mut self, points: &[PointRef<'_>]) {
        self.points.set(self.points.get() + points.len() as u64);
        self.range.points(points);
    }

    fn issue(&mut self, issue: Issue) {
        self.shown.issue(issue);
    }
}
