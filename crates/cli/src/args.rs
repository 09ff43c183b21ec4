//! Command-line shape. Every flag documents its default.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "unseen",
    version,
    about = "Detects previously unseen container images in Kubernetes from OpenTelemetry data",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Evaluate the rule over history files at one point in time, as one run of the
    /// Splunk search would.
    Scan(ScanArgs),
    /// Write a synthetic fleet history (OTLP protobuf, OTLP JSON, Splunk CSV) or replay it
    /// to a live server: for demos, load tests and benchmarks.
    Generate(crate::generate::GenerateArgs),
    /// Receive OTLP from OpenTelemetry Collectors and report each previously unseen
    /// image as it appears (gRPC :4317, HTTP :4318, admin :9464).
    Serve(crate::config::ServeArgs),
    /// Check the configuration of `serve` (file, UNSEEN_* variables, flags) and print
    /// the effective one.
    CheckConfig(crate::config::ServeArgs),
    /// Manage the state of `serve`: import history as the known baseline.
    Baseline(crate::baseline::BaselineArgs),
    /// Replay history through the streaming path of `serve`, in process: the baseline
    /// before --from, then one line per day of findings, incidents and notifications.
    Backtest(crate::backtest::BacktestArgs),
    /// Edit and try a suppression rules file: add, list, remove rules, and test them
    /// against recorded findings.
    Suppress(crate::suppress::SuppressArgs),
    /// List the incidents of a running `unseen serve` through its query API, filtered
    /// (token from UNSEEN_API_TOKEN).
    Incidents(crate::api_client::IncidentsArgs),
    /// Ask a running `unseen serve` whether it knows an image, since when and where; or
    /// list its image inventory (token from UNSEEN_API_TOKEN; exit 1: not known).
    Images(crate::api_client::ImagesArgs),
}

/// Key and window options shared by every command that evaluates the rule.
#[derive(Debug, Clone, Args)]
pub struct RuleArgs {
    /// Use the seed's exact key: `host.name`, `k8s.cluster.name`, `k8s.node.name`,
    /// `container.image.name` (default mode uses the node as host).
    #[arg(long)]
    pub strict: bool,
    /// Default mode: the cluster for points without `k8s.cluster.name`.
    #[arg(long, value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// Keys seen in [T − current, T) are candidates.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub current: String,
    /// Keys seen in [T − baseline, T − recent) are known.
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub baseline: String,
    /// The baseline stops this long before T.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub recent: String,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Evaluate at this time: RFC 3339 or Unix seconds [default: now]
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    #[command(flatten)]
    pub rule: RuleArgs,
    /// Input format; `auto` detects it from the content.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    pub format: FormatArg,
    /// `json`: one finding per line; `ocsf`: one OCSF Detection Finding (class 2004) per
    /// line; `table`: for people [default: table on a terminal, json otherwise]
    #[arg(long, value_enum)]
    pub output: Option<ScanOutput>,
    /// Suppression rules (TOML, `[[suppress]]` tables): matching findings are marked
    /// `suppressed` (see `unseen suppress`).
    #[arg(long, value_name = "FILE")]
    pub suppressions: Option<PathBuf>,
    /// Exit with status 3 if any record or point was malformed.
    #[arg(long)]
    pub fail_on_error: bool,
    /// Print at most this many malformed-input messages per file (all are counted).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub max_errors_shown: u64,
    /// Read OTLP protobuf files as streams instead of mapping them into memory. Mapping is
    /// faster; a mapped file that another process truncates while it is scanned kills the
    /// scan (SIGBUS), so use this for files that may shrink meanwhile.
    #[arg(long)]
    pub no_mmap: bool,
    /// Threads that read one CSV export, each a range of its rows (0: one per core). Files
    /// under 8 MiB, gzip, standard input, and the other formats are read on one thread.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// History files (OTLP JSON lines, OTLP protobuf, Splunk CSV; `.gz` is read
    /// transparently). `-` reads standard input.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Auto,
    OtlpJson,
    OtlpProto,
    Csv,
    OtlpYaml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScanOutput {
    Json,
    Table,
    Ocsf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputArg {
    Json,
    Table,
}

impl From<FormatArg> for unseen_ingest::Format {
    fn from(f: FormatArg) -> Self {
        use unseen_ingest::Format;
        match f {
            FormatArg::Auto => Format::Auto,
            FormatArg::OtlpJson => Format::OtlpJson,
            FormatArg::OtlpProto => Format::OtlpProto,
            FormatArg::Csv => Format::Csv,
            FormatArg::OtlpYaml => Format::OtlpYaml,
        }
    }
}
