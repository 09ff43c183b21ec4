//! `unseen backtest`: history replayed through the streaming path of `serve` (the same
//! point-to-sighting function, the same store `apply`, the same triage), in process and
//! in file order, with the points' own times as the clock. What lies before `--from` is
//! the baseline (applied, not reported); from `--from` to `--to` it reports, and prints
//! one line per UTC day: findings, incidents, notifications. This is how a user tunes the
//! grouping before going live, and how the noise of the rule is measured.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use unseen_findings::{IncidentKind, IncidentState, Record, Scope, TriageSettings};
use unseen_ingest::{read_source, Issue, Limits, Visitor};
use unseen_model::{format_rfc3339, parse_duration, parse_time, PointRef, UnixSecs, SEED_RULE};
use unseen_normalize::{DropCounts, KeyMode};
use unseen_server::{sighting, Unusable};
use unseen_store::{ApplyOptions, MemStore, Sighting, StateStore};

use crate::args::{FormatArg, OutputArg, RuleArgs};
use crate::scan::Outcome;

#[derive(Debug, Args)]
pub struct BacktestArgs {
    #[command(flatten)]
    pub rule: RuleArgs,
    /// Start of the reported period (RFC 3339 or Unix seconds); earlier points are the
    /// baseline.
    #[arg(long, value_name = "TIME")]
    pub from: String,
    /// End of the reported period (exclusive); later points are not read.
    #[arg(long, value_name = "TIME")]
    pub to: String,
    /// Further episodes of a new image join its incident for this long.
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub rollout_window: String,
    /// Known images on other nodes are gathered into one digest per cluster and window.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub digest_window: String,
    /// A host whose findings' risk scores add up past this within the risk window raises
    /// a `risk_threshold` incident (a notification); 0 turns it off.
    #[arg(long, value_name = "SCORE", default_value_t = 100)]
    pub risk_threshold: u32,
    /// The rolling window of the risk sum.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub risk_window: String,
    /// `json`: one object per UTC day; `table`: for people.
    #[arg(long, value_enum, default_value_t = OutputArg::Json)]
    pub output: OutputArg,
    /// Write every finding and incident record (JSON lines, in the order produced).
    #[arg(long, value_name = "PATH")]
    pub findings: Option<PathBuf>,
    /// Draw findings and notifications per day as an SVG chart.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Input format; `auto` detects it from the content.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    pub format: FormatArg,
    /// History files in time order (as exported or generated); `.gz` is read
    /// transparently, `-` reads standard input.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
}

/// One UTC day of the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Day {
    pub day: String,
    /// Episodes whose first point is in the day.
    pub findings: u64,
    /// Distinct incidents those findings belong to.
    pub incidents: u64,
    /// Incidents opened in the day: what alerting sinks were sent (in strict mode, one
    /// per finding).
    pub notifications: u64,
    pub by_scope: ByScope,
    /// `new_node` incidents opened in the day.
    pub new_nodes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ByScope {
    pub node: u64,
    pub cluster: u64,
    pub fleet: u64,
}

/// Sightings per `apply` at most; a batch also ends when its points span a minute, so
/// that the clock of a batch (its newest point) is never far from any of its points.
const BATCH: usize = 50_000;
const BATCH_SPAN: i64 = 60;

const DAY: i64 = 86_400;

pub fn run(args: BacktestArgs) -> Result<Outcome> {
    let (windows, mode) = crate::scan::rule_config(&args.rule)?;
    let from = parse_time(&args.from).context("--from")?;
    let to = parse_time(&args.to).context("--to")?;
    if to <= from {
        bail!("--to ({}) must be after --from ({})", args.to, args.from);
    }
    let settings = TriageSettings {
        rollout_window: parse_duration(&args.rollout_window).context("--rollout-window")?,
        digest_window: parse_duration(&args.digest_window).context("--digest-window")?,
        risk_threshold: args.risk_threshold,
        risk_window: parse_duration(&args.risk_window).context("--risk-window")?,
        ..TriageSettings::default()
    };
    if settings.rollout_window == 0 || settings.digest_window == 0 || settings.risk_window == 0 {
        bail!("--rollout-window, --digest-window and --risk-window must be longer than 0s");
    }
    let mut records_out = match &args.findings {
        Some(path) => {
            Some(BufWriter::new(File::create(path).with_context(|| {
                format!("cannot create {}", path.display())
            })?))
        }
        None => None,
    };
    let store = MemStore::new();
    store.register_sink("backtest")?;
    let mut replay = Replay {
        store: &store,
        mode: &mode,
        opts: ApplyOptions {
            rule: SEED_RULE,
            triage: settings,
            windows,
            mode: mode.clone(),
            now: from,
            report: false,
            suppressions: Default::default(),
            max_keys: u64::MAX,
            new_keys: None,
            notices: Vec::new(),
        },
        from,
        to,
        batch: Vec::with_capacity(BATCH),
        batch_start: None,
        days: BTreeMap::new(),
        incidents_by_day: BTreeMap::new(),
        records_out: records_out.as_mut(),
        drops: DropCounts::default(),
        shown: 0,
        error: None,
    };
    for path in &args.files {
        let name = path.display().to_string();
        let input = crate::scan::open(path)?;
        replay.shown = 0;
        read_source(
            &name,
            input,
            args.format.into(),
            Limits::default(),
            &mut replay,
        )?;
        replay.flush();
        if let Some(error) = replay.error.take() {
            return Err(error.context(name));
        }
    }
    let drops = replay.drops;
    let days = replay.report();
    if let Some(mut out) = records_out {
        out.flush().context("writing --findings")?;
    }
    for (reason, n) in drops.iter() {
        eprintln!(
            "warning: {n} points without `{}`: {}",
            reason.attribute(),
            reason.fix(&mode)
        );
    }
    write_report(&days, args.output).context("writing the report to standard output")?;
    let findings: u64 = days.iter().map(|d| d.findings).sum();
    let notifications: u64 = days.iter().map(|d| d.notifications).sum();
    eprintln!(
        "backtest {} to {}: {findings} findings, {notifications} notifications ({} days, {:.1} notifications a day{})",
        format_rfc3339(from),
        format_rfc3339(to),
        days.len(),
        notifications as f64 / days.len().max(1) as f64,
        if notifications > 0 {
            format!(", {:.1} findings per notification", findings as f64 / notifications as f64)
        } else {
            String::new()
        }
    );
    if let Some(path) = &args.plot {
        std::fs::write(path, plot(&days))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(Outcome::Clean)
}

struct Replay<'a, W: Write> {
    store: &'a MemStore,
    mode: &'a KeyMode,
    opts: ApplyOptions,
    from: UnixSecs,
    to: UnixSecs,
    batch: Vec<Sighting>,
    /// The first point time of the batch.
    batch_start: Option<UnixSecs>,
    days: BTreeMap<i64, Day>,
    /// Distinct incidents of each day's findings.
    incidents_by_day: BTreeMap<i64, BTreeSet<String>>,
    records_out: Option<&'a mut W>,
    drops: DropCounts,
    shown: u32,
    error: Option<anyhow::Error>,
}

impl<W: Write> Replay<'_, W> {
    fn flush(&mut self) {
        self.batch_start = None;
        if self.batch.is_empty() || self.error.is_some() {
            self.batch.clear();
            return;
        }
        // The clock of the batch: its newest point, as if each point arrived when it was
        // collected.
        self.opts.now = self.batch.iter().map(|s| s.time).max().unwrap_or(self.from);
        let applied = match self.store.apply(&self.batch, &self.opts) {
            Ok(applied) => applied,
            Err(e) => {
                self.error = Some(e.into());
                return;
            }
        };
        self.batch.clear();
        for (_, record) in &applied.records {
            self.count(record);
            if let Some(out) = self.records_out.as_mut() {
                let line = record.to_json_line();
                if let Err(e) = out
                    .write_all(line.as_bytes())
                    .and_then(|()| out.write_all(b"\n"))
                {
                    self.error = Some(anyhow::Error::new(e).context("writing --findings"));
                    return;
                }
            }
        }
        if let Some(&(last, _)) = applied.records.last() {
            // Lets the in-memory log drop what was read.
            if let Err(e) = self.store.ack("backtest", last) {
                self.error = Some(e.into());
            }
        }
    }

    fn day(&mut self, t: UnixSecs) -> &mut Day {
        let day = t.div_euclid(DAY);
        self.days.entry(day).or_default()
    }

    fn count(&mut self, record: &Record) {
        match record {
            Record::Finding(f) => {
                let Ok(t) = parse_time(&f.first_seen) else {
                    return;
                };
                let strict = f.triage.is_none();
                let day = self.day(t);
                day.findings += 1;
                if strict {
                    // Strict mode alerts once per finding.
                    day.notifications += 1;
                }
                if let Some(triage) = &f.triage {
                    match triage.scope {
                        Scope::Node => day.by_scope.node += 1,
                        Scope::Cluster => day.by_scope.cluster += 1,
                        Scope::Fleet => day.by_scope.fleet += 1,
                    }
                    if let Some(id) = &triage.incident_id {
                        self.incidents_by_day
                            .entry(t.div_euclid(DAY))
                            .or_default()
                            .insert(id.clone());
                    }
                }
            }
            Record::Incident(incident) => {
                if incident.state != IncidentState::Open {
                    return;
                }
                // Sent when it was opened: at its first member, the replay's clock then
                // (a digest's `opened_at` is its window's start instead).
                let Ok(t) = parse_time(&incident.detected_at) else {
                    return;
                };
                let new_node = incident.kind == IncidentKind::NewNode;
                let day = self.day(t);
                day.notifications += 1;
                if new_node {
                    day.new_nodes += 1;
                }
            }
        }
    }

    /// Every day from `from` to `to`, including quiet ones.
    fn report(mut self) -> Vec<Day> {
        let first = self.from.div_euclid(DAY);
        let last = (self.to - 1).div_euclid(DAY);
        (first..=last)
            .map(|d| {
                let mut day = self.days.remove(&d).unwrap_or_default();
                day.day = format_rfc3339(d * DAY)[..10].to_string();
                day.incidents = self.incidents_by_day.get(&d).map_or(0, |s| s.len() as u64);
                day
            })
            .collect()
    }
}

impl<W: Write> Visitor for Replay<'_, W> {
    fn point(&mut self, point: PointRef<'_>) {
        let t = unseen_model::unix_secs_from_nanos(point.time_unix_nano);
        if t >= self.to {
            return;
        }
        // The point's own time is the clock: no point is in the future.
        let s = match sighting(&point, self.mode, t, 0) {
            Ok(s) => s,
            Err(Unusable::Missing(reason)) => return self.drops.add(reason),
            Err(Unusable::Future(_)) => return,
        };
        let report = t >= self.from;
        let start = *self.batch_start.get_or_insert(t);
        if report != self.opts.report || t - start > BATCH_SPAN || self.batch.len() >= BATCH {
            self.flush();
            self.opts.report = report;
            self.batch_start = Some(t);
        }
        self.batch.push(s);
    }

    fn issue(&mut self, issue: Issue) {
        self.shown += 1;
        if self.shown <= 20 {
            eprintln!("warning: {issue}");
        }
    }
}

fn write_report(days: &[Day], output: OutputArg) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match output {
        OutputArg::Json => {
            for day in days {
                serde_json::to_writer(&mut out, day)?;
                out.write_all(b"\n")?;
            }
        }
        OutputArg::Table => {
            writeln!(
                out,
                "{:<10}  {:>8}  {:>9}  {:>13}  {:>6}  {:>7}  {:>5}  {:>9}",
                "DAY",
                "FINDINGS",
                "INCIDENTS",
                "NOTIFICATIONS",
                "NODE",
                "CLUSTER",
                "FLEET",
                "NEW NODES"
            )?;
            for d in days {
                writeln!(
                    out,
                    "{:<10}  {:>8}  {:>9}  {:>13}  {:>6}  {:>7}  {:>5}  {:>9}",
                    d.day,
                    d.findings,
                    d.incidents,
                    d.notifications,
                    d.by_scope.node,
                    d.by_scope.cluster,
                    d.by_scope.fleet,
                    d.new_nodes
                )?;
            }
        }
    }
    out.flush()
}

/// Findings and notifications per day, as grouped bars on a linear scale.
pub fn plot(days: &[Day]) -> String {
    const W: f64 = 960.0;
    const H: f64 = 420.0;
    const LEFT: f64 = 60.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 60.0;
    let max = days
        .iter()
        .map(|d| d.findings.max(d.notifications))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let slot = plot_w / days.len().max(1) as f64;
    let bar = (slot * 0.4).max(1.0);
    let y = |v: u64| TOP + plot_h - plot_h * v as f64 / max;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <title>unseen backtest: findings and notifications per day</title>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"22\" font-size=\"15\">Findings and notifications per day</text>\n"
    );
    // Axes and the scale.
    svg.push_str(&format!(
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n",
        b = TOP + plot_h,
        r = W - RIGHT
    ));
    for i in 0..=4u64 {
        let v = (max as u64 * i).div_ceil(4);
        svg.push_str(&format!(
            "<text x=\"{x}\" y=\"{y}\" text-anchor=\"end\">{v}</text>\n",
            x = LEFT - 6.0,
            y = y(v) + 4.0
        ));
    }
    let label_every = (days.len() / 10).max(1);
    for (i, d) in days.iter().enumerate() {
        let x = LEFT + slot * i as f64 + slot * 0.1;
        svg.push_str(&format!(
            "<rect x=\"{x:.1}\" y=\"{y1:.1}\" width=\"{bar:.1}\" height=\"{h1:.1}\" fill=\"#9aa5b1\"><title>{day}: {f} findings</title></rect>\n\
             <rect x=\"{x2:.1}\" y=\"{y2:.1}\" width=\"{bar:.1}\" height=\"{h2:.1}\" fill=\"#d64545\"><title>{day}: {n} notifications</title></rect>\n",
            y1 = y(d.findings),
            h1 = TOP + plot_h - y(d.findings),
            x2 = x + bar,
            y2 = y(d.notifications),
            h2 = TOP + plot_h - y(d.notifications),
            day = d.day,
            f = d.findings,
            n = d.notifications,
        ));
        if i % label_every == 0 {
            svg.push_str(&format!(
                "<text x=\"{x:.1}\" y=\"{ly}\">{}</text>\n",
                &d.day[5..],
                ly = TOP + plot_h + 18.0
            ));
        }
    }
    svg.push_str(&format!(
        "<rect x=\"{lx}\" y=\"{ly}\" width=\"12\" height=\"12\" fill=\"#9aa5b1\"/><text x=\"{tx}\" y=\"{ty}\">findings (episodes)</text>\n\
         <rect x=\"{lx2}\" y=\"{ly}\" width=\"12\" height=\"12\" fill=\"#d64545\"/><text x=\"{tx2}\" y=\"{ty}\">notifications (incidents opened)</text>\n\
         </svg>\n",
        lx = LEFT,
        ly = H - 24.0,
        tx = LEFT + 16.0,
        ty = H - 14.0,
        lx2 = LEFT + 170.0,
        tx2 = LEFT + 186.0,
    ));
    svg
}
