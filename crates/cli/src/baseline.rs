//! `unseen baseline import`: history files into the state, without findings, so that a
//! new installation knows what the cluster already runs and does not report all of it.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use unseen_ingest::{read_source, Issue, Limits, Visitor};
use unseen_model::{PointRef, SEED_RULE};
use unseen_normalize::{DropCounts, KeyMode};
use unseen_server::{now_secs, sighting, Unusable};
use unseen_store::{ApplyOptions, Refusal, Sighting, StateStore};

use crate::args::FormatArg;
use crate::config::{ServeArgs, Settings};

#[derive(Debug, Args)]
pub struct BaselineArgs {
    #[command(subcommand)]
    pub command: BaselineCommand,
}

#[derive(Debug, Subcommand)]
pub enum BaselineCommand {
    /// Load history files (the formats of `scan`) into the state of `serve` without
    /// reporting: the keys they hold count as already seen. Run it before the first
    /// `serve`, with the same --config (and so the same key mode and windows).
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The settings of `serve` (only `data`, the key mode, windows and limits matter here).
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Input format; `auto` detects it from the content.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    pub format: FormatArg,
    /// Exit with status 3 if any record or point was malformed.
    #[arg(long)]
    pub fail_on_error: bool,
    /// History files; `-` reads standard input, `.gz` is read transparently.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
}

/// Sightings per transaction.
const BATCH: usize = 100_000;

pub fn run(args: BaselineArgs) -> Result<crate::scan::Outcome> {
    let BaselineCommand::Import(args) = args.command;
    let settings = Settings::resolve(&args.serve)?;
    let store = crate::serve::open_store_for(&settings.store, &settings.data, &settings.mode)?;
    let now = now_secs();
    let before = store.key_count()?;
    let mut importer = Importer {
        store: store.as_ref(),
        mode: &settings.mode,
        opts: ApplyOptions {
            rule: SEED_RULE,
            triage: settings.triage,
            windows: settings.windows,
            mode: settings.mode.clone(),
            now,
            report: false,
            suppressions: Default::default(),
            max_keys: settings.limits.max_keys,
            new_keys: None,
            notices: Vec::new(),
        },
        max_clock_skew: settings.limits.max_clock_skew,
        batch: Vec::with_capacity(BATCH),
        drops: DropCounts::default(),
        future: 0,
        refused: 0,
        shown: 0,
        error: None,
    };
    let limits = Limits {
        max_dimension_bytes: settings.limits.max_dimension_bytes,
        ..Limits::default()
    };
    let (mut points, mut malformed) = (0u64, 0u64);
    for path in &args.files {
        let name = path.display().to_string();
        let input = crate::scan::open(path)?;
        importer.shown = 0;
        let (_, stats) = read_source(&name, input, args.format.into(), limits, &mut importer)?;
        importer.flush();
        if let Some(error) = importer.error.take() {
            bail!("{name}: {error}");
        }
        points += stats.ready_points;
        malformed += stats.malformed_records + stats.malformed_points;
    }
    let after = store.key_count()?;
    let mut dropped: Vec<String> = importer
        .drops
        .iter()
        .map(|(reason, n)| {
            format!(
                "{n} without `{}` ({})",
                reason.attribute(),
                reason.fix(&settings.mode)
            )
        })
        .collect();
    if importer.future > 0 {
        dropped.push(format!("{} in the future", importer.future));
    }
    if importer.refused > 0 {
        dropped.push(format!(
            "{} of new keys past max_keys ({})",
            importer.refused, settings.limits.max_keys
        ));
    }
    eprintln!(
        "imported {points} k8s.container.ready points from {} file(s) into {}: {after} keys tracked ({} new); no findings reported",
        args.files.len(),
        settings.data.display(),
        after.saturating_sub(before),
    );
    if !dropped.is_empty() {
        eprintln!("  not imported: {}", dropped.join("; "));
    }
    if malformed > 0 {
        eprintln!("  malformed: {malformed} records or points (see above)");
    }
    Ok(if args.fail_on_error && malformed > 0 {
        crate::scan::Outcome::MalformedInput
    } else {
        crate::scan::Outcome::Clean
    })
}

struct Importer<'a> {
    store: &'a dyn StateStore,
    mode: &'a KeyMode,
    opts: ApplyOptions,
    max_clock_skew: u64,
    batch: Vec<Sighting>,
    drops: DropCounts,
    future: u64,
    refused: u64,
    shown: u32,
    error: Option<anyhow::Error>,
}

impl Importer<'_> {
    fn flush(&mut self) {
        if self.batch.is_empty() || self.error.is_some() {
            self.batch.clear();
            return;
        }
        match self.store.apply(&self.batch, &self.opts) {
            Ok(applied) => {
                self.refused += applied
                    .refused
                    .iter()
                    .filter(|(_, r)| *r == Refusal::KeyCapReached)
                    .count() as u64;
                for warning in &applied.warnings {
                    tracing::warn!(%warning, "the state store's upkeep failed; the batch is committed and the next one tries again");
                }
            }
            Err(e) => self.error = Some(e.into()),
        }
        self.batch.clear();
    }
}

impl Visitor for Importer<'_> {
    fn point(&mut self, point: PointRef<'_>) {
        match sighting(&point, self.mode, self.opts.now, self.max_clock_skew) {
            Ok(sighting) => self.batch.push(sighting),
            Err(Unusable::Missing(reason)) => self.drops.add(reason),
            Err(Unusable::Future(_)) => self.future += 1,
        }
        if self.batch.len() >= BATCH {
            self.flush();
        }
    }

    fn issue(&mut self, issue: Issue) {
        self.shown += 1;
        if self.shown <= 20 {
            eprintln!("warning: {issue}");
        }
    }
}
