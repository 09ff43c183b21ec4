//! `unseen generate`: a synthetic fleet history to a file (or stdout) or to a live server.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use unseen_generate::{
    CsvMetrics, Encoder, EventCounts, Format, GenStats, Generator, Params, SendOptions, SendStats,
    SECS_PER_DAY,
};
use unseen_model::{parse_duration, parse_time};

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub clusters: u32,
    /// Nodes per cluster at the start; autoscaling and replacements move around it.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub nodes_per_cluster: u32,
    /// Application pods per node at the start (daemon set pods come on top).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub pods_per_node: u32,
    /// Size of the image catalog (distinct `container.image.name` values the history can use).
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub images: u32,
    /// Length of the history, in days.
    #[arg(long, value_name = "N", default_value_t = 7)]
    pub days: u32,
    /// The collection interval (the receiver's `collection_interval`).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub interval: String,
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// The first collection: RFC 3339, Unix seconds, or `now-<DURATION>` (e.g. `now-7d`, so
    /// that a replayed history ends now).
    #[arg(long, value_name = "TIME", default_value = "2026-01-01T00:00:00Z")]
    pub start: String,
    /// How long a returning image stays away [default: 35d when the history is at least
    /// 40 days, else a third of it].
    #[arg(long, value_name = "DURATION")]
    pub return_gap: Option<String>,
    /// Largest batch in data points, where a batch processor would split.
    #[arg(long, value_name = "N", default_value_t = 8192)]
    pub max_batch_points: usize,
    #[arg(long, value_enum, default_value_t = GenFormat::OtlpProto)]
    pub format: GenFormat,
    /// CSV only: `ready` writes the `k8s.container.ready` rows, `all` every metric.
    #[arg(long, value_enum, default_value_t = CsvMetricsArg::Ready)]
    pub csv_metrics: CsvMetricsArg,
    /// Where to write; `-` is standard output.
    #[arg(long, value_name = "PATH", required_unless_present = "send")]
    pub out: Option<PathBuf>,
    /// Replay to a live server over OTLP/HTTP protobuf instead, e.g. `http://127.0.0.1:4318`.
    #[arg(long, value_name = "URL", conflicts_with = "out")]
    pub send: Option<String>,
    /// With --send: data points (of every metric) per second [default: unlimited].
    #[arg(long, value_name = "N", requires = "send")]
    pub rate: Option<u64>,
    /// With --send: requests in flight at once (1 keeps time order).
    #[arg(long, value_name = "N", default_value_t = 2, requires = "send")]
    pub concurrency: usize,
    /// With --send: compress request bodies (`Content-Encoding: gzip`).
    #[arg(long, requires = "send")]
    pub gzip: bool,
    /// With --send: encode the whole history before sending, so that a load test measures
    /// the server rather than the generator (needs memory for every request body at once,
    /// about 440 bytes per data point).
    #[arg(long, requires = "send")]
    pub preload: bool,
    /// With --send: retries of a batch on 429/502/503/504 or a connection failure.
    #[arg(long, value_name = "N", default_value_t = 10, requires = "send")]
    pub max_retries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenFormat {
    OtlpProto,
    OtlpJson,
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CsvMetricsArg {
    Ready,
    All,
}

pub fn run(args: GenerateArgs, stderr_is_terminal: bool) -> Result<()> {
    let params = params(&args)?;
    let mut generator = Generator::new(params).context("generate")?;
    let started = Instant::now();
    let bar = stderr_is_terminal.then(|| {
        let bar = ProgressBar::with_draw_target(
            Some(generator.progress().1),
            ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} collections, {msg}, {elapsed} (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let show = |bar: &ProgressBar, g: &Generator, points: u64| {
        bar.set_position(g.progress().0);
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!("{points} points ({:.0}/s)", points as f64 / secs));
    };

    if let Some(endpoint) = &args.send {
        let options = SendOptions {
            endpoint: endpoint.clone(),
            rate: args.rate,
            gzip: args.gzip,
            concurrency: args.concurrency,
            max_retries: args.max_retries,
            preload: args.preload,
            ..SendOptions::default()
        };
        let mut calls = 0u64;
        let stats = unseen_generate::send_blocking(&mut generator, &options, &mut |s, g| {
            calls += 1;
            if let Some(bar) = &bar {
                if calls.is_multiple_of(16) {
                    show(bar, g, s.points);
                }
            }
        });
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        let stats = stats.with_context(|| format!("sending to {endpoint}"))?;
        eprint!("{}", send_summary(&stats));
        eprint!("{}", churn_summary(generator.events()));
        return Ok(());
    }

    let path = args
        .out
        .as_ref()
        .expect("clap requires --out without --send");
    let mut out: Box<dyn Write> = if path.as_os_str() == "-" {
        Box::new(BufWriter::with_capacity(1 << 20, io::stdout().lock()))
    } else {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        Box::new(BufWriter::with_capacity(1 << 20, file))
    };
    let format = match args.format {
        GenFormat::OtlpProto => Format::OtlpProto,
        GenFormat::OtlpJson => Format::OtlpJson,
        GenFormat::Csv => Format::Csv,
    };
    let csv_metrics = match args.csv_metrics {
        CsvMetricsArg::Ready => CsvMetrics::Ready,
        CsvMetricsArg::All => CsvMetrics::All,
    };
    let mut encoder = Encoder::new(format, csv_metrics);
    let mut bytes = 0u64;
    let write = |out: &mut Box<dyn Write>, buf: &[u8]| {
        out.write_all(buf)
            .with_context(|| format!("writing {}", path.display()))
    };
    let mut batches = 0u64;
    while let Some(batch) = generator.next_batch() {
        let buf = encoder.encode(&batch);
        bytes += buf.len() as u64;
        write(&mut out, buf)?;
        batches += 1;
        if batches.is_multiple_of(64) {
            if let Some(bar) = &bar {
                show(bar, &generator, generator.stats().points);
            }
        }
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    eprint!(
        "{}",
        write_summary(
            generator.stats(),
            bytes,
            started.elapsed(),
            args.format,
            csv_metrics
        )
    );
    eprint!("{}", churn_summary(generator.events()));
    Ok(())
}

fn params(args: &GenerateArgs) -> Result<Params> {
    let interval = parse_duration(&args.interval).context("--interval")?;
    let start = start_time(&args.start).context("--start")?;
    let return_gap = args
        .return_gap
        .as_deref()
        .map(parse_duration)
        .transpose()
        .context("--return-gap")?;
    Ok(Params {
        clusters: args.clusters,
        nodes_per_cluster: args.nodes_per_cluster,
        pods_per_node: args.pods_per_node,
        images: args.images,
        duration_secs: u64::from(args.days) * SECS_PER_DAY,
        interval_secs: interval,
        seed: args.seed,
        start_unix_secs: start,
        max_batch_points: args.max_batch_points,
        return_gap_secs: return_gap,
        ..Params::default()
    })
}

fn start_time(s: &str) -> Result<u64> {
    let secs = if let Some(rest) = s.trim().strip_prefix("now") {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let back = match rest.strip_prefix('-') {
            Some(d) => parse_duration(d)?,
            None if rest.is_empty() => 0,
            None => bail!("`{s}`: write `now` or `now-<DURATION>`, e.g. `now-7d`"),
        };
        now.saturating_sub(back) as i64
    } else {
        parse_time(s)?
    };
    u64::try_from(secs)
        .ok()
        .filter(|&s| s > 0)
        .with_context(|| format!("`{s}` is before 1970"))
}

fn write_summary(
    stats: GenStats,
    bytes: u64,
    elapsed: Duration,
    format: GenFormat,
    csv_metrics: CsvMetrics,
) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rows = match (format, csv_metrics) {
        (GenFormat::Csv, CsvMetrics::Ready) => format!(", {} CSV rows", stats.ready_points),
        (GenFormat::Csv, CsvMetrics::All) => format!(", {} CSV rows", stats.points),
        _ => String::new(),
    };
    format!(
        "generated {} batches, {} points ({} k8s.container.ready){rows}, {} bytes in {:.1} s ({:.0} points/s)\n",
        stats.batches,
        stats.points,
        stats.ready_points,
        bytes,
        secs,
        stats.points as f64 / secs
    )
}

fn send_summary(stats: &SendStats) -> String {
    let secs = stats.elapsed.as_secs_f64().max(1e-3);
    let ms = |d: Option<Duration>| {
        d.map_or("-".to_string(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1e3)
        })
    };
    let preload = if stats.preload.is_zero() {
        String::new()
    } else {
        format!(
            "encoded the history in {:.1} s before sending\n",
            stats.preload.as_secs_f64()
        )
    };
    format!(
        "{preload}sent {} requests, {} points ({} k8s.container.ready), {} bytes in {:.1} s: {:.0} points/s, \
         {:.0} ready points/s; latency p50 {}, p99 {}, max {}; {} retries, {} points rejected\n",
        stats.requests,
        stats.points,
        stats.ready_points,
        stats.bytes,
        secs,
        stats.points as f64 / secs,
        stats.ready_points as f64 / secs,
        ms(stats.latency.quantile(0.5)),
        ms(stats.latency.quantile(0.99)),
        ms(Some(stats.latency.max())),
        stats.retries,
        stats.rejected_points,
    )
}

fn churn_summary(e: EventCounts) -> String {
    format!(
        "churn: {} rollouts, {} image renames, {} new deployments, {} pod moves, {} node joins, \
         {} node leaves, {} node replacements, {} restarts, {} images away, {} images back\n",
        e.rollouts,
        e.image_renames,
        e.new_deployments,
        e.pod_moves,
        e.node_joins,
        e.node_leaves,
        e.node_replacements,
        e.restarts,
        e.suspensions,
        e.returns
    )
}
