//! Configuration of `unseen serve`: flags, `UNSEEN_*` environment variables, a TOML
//! file, defaults; in that order of precedence.
//!
//! Every flag has a key of the same name in the file (with `_` for `-`) and an
//! environment variable (`UNSEEN_` + the key in capitals). The file rejects unknown
//! keys, so a typo is an error, not a silently ignored setting. The file is read only
//! from the path given (`--config` / `UNSEEN_CONFIG`), never from a default place.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use unseen_findings::{RiskModifiers, Suppressions, TriageSettings};
use unseen_model::{format_duration, parse_duration, Windows};
use unseen_normalize::KeyMode;
use unseen_server::{Config, Limits};
use unseen_sinks::SinkConfig;

/// The value of `findings` that turns the JSON-lines output off.
pub const FINDINGS_OFF: &str = "off";

#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file; flags and UNSEEN_* variables override it.
    #[arg(long, value_name = "FILE", env = "UNSEEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// OTLP/gRPC listen address [default: 0.0.0.0:4317]
    #[arg(long, value_name = "ADDR", env = "UNSEEN_OTLP_GRPC")]
    pub otlp_grpc: Option<String>,
    /// OTLP/HTTP listen address [default: 0.0.0.0:4318]
    #[arg(long, value_name = "ADDR", env = "UNSEEN_OTLP_HTTP")]
    pub otlp_http: Option<String>,
    /// Admin address: /healthz, /readyz, /metrics [default: 127.0.0.1:9464]
    #[arg(long, value_name = "ADDR", env = "UNSEEN_ADMIN")]
    pub admin: Option<String>,
    /// State directory [default: ./unseen-data]
    #[arg(long, value_name = "DIR", env = "UNSEEN_DATA")]
    pub data: Option<PathBuf>,
    /// Findings as JSON lines: a file, `-` for stdout, `off` for none [default: -]
    #[arg(long, value_name = "PATH", env = "UNSEEN_FINDINGS")]
    pub findings: Option<String>,
    /// POST each batch of findings (a JSON array) to this URL, with retries.
    #[arg(long, value_name = "URL", env = "UNSEEN_WEBHOOK")]
    pub webhook: Option<String>,
    /// Per-request timeout of the webhook [default: 10s]
    #[arg(long, value_name = "DURATION", env = "UNSEEN_WEBHOOK_TIMEOUT")]
    pub webhook_timeout: Option<String>,
    /// Use the seed's exact key (`host.name` as host, no cluster fallback) [default: false]
    #[arg(long, value_name = "BOOL", env = "UNSEEN_STRICT", num_args = 0..=1, default_missing_value = "true")]
    pub strict: Option<bool>,
    /// Default mode: the cluster for points without `k8s.cluster.name`.
    #[arg(long, value_name = "NAME", env = "UNSEEN_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Current window C [default: 24h]
    #[arg(long, value_name = "DURATION", env = "UNSEEN_CURRENT")]
    pub current: Option<String>,
    /// Baseline window B [default: 30d]
    #[arg(long, value_name = "DURATION", env = "UNSEEN_BASELINE")]
    pub baseline: Option<String>,
    /// Recent gap R [default: 1h]
    #[arg(long, value_name = "DURATION", env = "UNSEEN_RECENT")]
    pub recent: Option<String>,
    /// Record sightings without reporting for this long after the first start
    /// (persisted: a restart does not restart it) [default: 0s, no learning]
    #[arg(long, value_name = "DURATION", env = "UNSEEN_LEARN")]
    pub learn: Option<String>,
    /// Largest request body, received and decompressed, in bytes [default: 67108864]
    #[arg(long, value_name = "BYTES", env = "UNSEEN_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest dimension value (an image name, ...), in bytes [default: 4096]
    #[arg(long, value_name = "BYTES", env = "UNSEEN_MAX_DIMENSION_BYTES")]
    pub max_dimension_bytes: Option<usize>,
    /// Keys tracked at most; points of new keys past it are rejected [default: 5000000]
    #[arg(long, value_name = "N", env = "UNSEEN_MAX_KEYS")]
    pub max_keys: Option<u64>,
    /// Points further ahead of the server clock are rejected [default: 5m]
    #[arg(long, value_name = "DURATION", env = "UNSEEN_MAX_CLOCK_SKEW")]
    pub max_clock_skew: Option<String>,
    /// Requests waiting for a commit at most; more are told to retry [default: 1024]
    #[arg(long, value_name = "N", env = "UNSEEN_QUEUE_REQUESTS")]
    pub queue_requests: Option<usize>,
    /// Points per durable commit at most [default: 200000]
    #[arg(long, value_name = "N", env = "UNSEEN_MAX_BATCH_POINTS")]
    pub max_batch_points: Option<usize>,
    /// How long shutdown waits for requests in flight [default: 30s]
    #[arg(long, value_name = "DURATION", env = "UNSEEN_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<String>,
    /// Further episodes of a new image join its incident for this long [default: 15m]
    #[arg(long, value_name = "DURATION", env = "UNSEEN_ROLLOUT_WINDOW")]
    pub rollout_window: Option<String>,
    /// Known images on other nodes are gathered into one digest per cluster and window
    /// [default: 24h]
    #[arg(long, value_name = "DURATION", env = "UNSEEN_DIGEST_WINDOW")]
    pub digest_window: Option<String>,
    /// A host whose findings' risk scores add up past this within the risk window raises
    /// a `risk_threshold` incident; 0 turns it off [default: 100]
    #[arg(long, value_name = "SCORE", env = "UNSEEN_RISK_THRESHOLD")]
    pub risk_threshold: Option<u32>,
    /// The rolling window of the risk sum [default: 24h]
    #[arg(long, value_name = "DURATION", env = "UNSEEN_RISK_WINDOW")]
    pub risk_window: Option<String>,
    /// Suppression rules file (TOML, `[[suppress]]` tables), reloaded when it changes;
    /// its rules come after the config's `[[suppress]]` tables.
    #[arg(long, value_name = "FILE", env = "UNSEEN_SUPPRESSIONS")]
    pub suppressions: Option<PathBuf>,
    /// Log format [default: text]
    #[arg(long, value_enum, value_name = "FORMAT", env = "UNSEEN_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `unseen_server=debug` [default: info]
    #[arg(long, value_name = "FILTER", env = "UNSEEN_LOG_LEVEL")]
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The file: the flags' names, every key optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub otlp_grpc: Option<String>,
    pub otlp_http: Option<String>,
    pub admin: Option<String>,
    pub data: Option<PathBuf>,
    pub findings: Option<String>,
    pub webhook: Option<String>,
    pub webhook_timeout: Option<String>,
    pub strict: Option<bool>,
    pub cluster_name: Option<String>,
    pub current: Option<String>,
    pub baseline: Option<String>,
    pub recent: Option<String>,
    pub learn: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub max_dimension_bytes: Option<usize>,
    pub max_keys: Option<u64>,
    pub max_clock_skew: Option<String>,
    pub queue_requests: Option<usize>,
    pub max_batch_points: Option<usize>,
    pub shutdown_grace: Option<String>,
    pub rollout_window: Option<String>,
    pub digest_window: Option<String>,
    pub risk_threshold: Option<u32>,
    pub risk_window: Option<String>,
    pub suppressions: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    /// Risk modifiers (`[risk]`, file only): added to the rule's score in default mode.
    pub risk: Option<RiskModifiers>,
    /// Suppression rules (`[[suppress]]` tables, file only), always in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppress: Vec<toml::Table>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "config file {}: {}",
                path.display(),
                e.to_string().trim_end()
            )
        })
    }

    /// Flags (and their environment variables) over the file.
    fn overlay(self, a: &ServeArgs) -> FileConfig {
        fn pick<T: Clone>(flag: &Option<T>, file: Option<T>) -> Option<T> {
            flag.clone().or(file)
        }
        FileConfig {
            otlp_grpc: pick(&a.otlp_grpc, self.otlp_grpc),
            otlp_http: pick(&a.otlp_http, self.otlp_http),
            admin: pick(&a.admin, self.admin),
            data: pick(&a.data, self.data),
            findings: pick(&a.findings, self.findings),
            webhook: pick(&a.webhook, self.webhook),
            webhook_timeout: pick(&a.webhook_timeout, self.webhook_timeout),
            strict: pick(&a.strict, self.strict),
            cluster_name: pick(&a.cluster_name, self.cluster_name),
            current: pick(&a.current, self.current),
            baseline: pick(&a.baseline, self.baseline),
            recent: pick(&a.recent, self.recent),
            learn: pick(&a.learn, self.learn),
            max_body_bytes: pick(&a.max_body_bytes, self.max_body_bytes),
            max_dimension_bytes: pick(&a.max_dimension_bytes, self.max_dimension_bytes),
            max_keys: pick(&a.max_keys, self.max_keys),
            max_clock_skew: pick(&a.max_clock_skew, self.max_clock_skew),
            queue_requests: pick(&a.queue_requests, self.queue_requests),
            max_batch_points: pick(&a.max_batch_points, self.max_batch_points),
            shutdown_grace: pick(&a.shutdown_grace, self.shutdown_grace),
            rollout_window: pick(&a.rollout_window, self.rollout_window),
            digest_window: pick(&a.digest_window, self.digest_window),
            risk_threshold: pick(&a.risk_threshold, self.risk_threshold),
            risk_window: pick(&a.risk_window, self.risk_window),
            risk: self.risk,
            suppressions: pick(&a.suppressions, self.suppressions),
            suppress: self.suppress,
            log_format: pick(&a.log_format, self.log_format),
            log_level: pick(&a.log_level, self.log_level),
        }
    }
}

/// Everything resolved and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub admin: SocketAddr,
    pub data: PathBuf,
    /// `None`: the JSON-lines output is off.
    pub findings: Option<String>,
    pub webhook: Option<String>,
    pub webhook_timeout: Duration,
    pub windows: Windows,
    pub mode: KeyMode,
    pub learn: u64,
    pub limits: Limits,
    pub shutdown_grace: Duration,
    pub triage: TriageSettings,
    /// The config's own rules (checked), and the rules file.
    pub suppress: Suppressions,
    pub suppressions: Option<PathBuf>,
    pub log_format: LogFormat,
    pub log_level: String,
}

impl Settings {
    /// Reads the file named by `--config` (if any), applies flags and environment over
    /// it, fills defaults and checks everything. Errors name the setting.
    pub fn resolve(args: &ServeArgs) -> Result<Settings> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Settings::from_file(file.overlay(args))
    }

    pub fn from_file(c: FileConfig) -> Result<Settings> {
        let defaults = Limits::default();
        let duration = |name: &str, value: Option<&str>, default: &str| -> Result<u64> {
            let text = value.unwrap_or(default);
            parse_duration(text).with_context(|| format!("setting `{name}`"))
        };
        let current = duration("current", c.current.as_deref(), "24h")?;
        let baseline = duration("baseline", c.baseline.as_deref(), "30d")?;
        let recent = duration("recent", c.recent.as_deref(), "1h")?;
        let windows = Windows::new(current, baseline, recent)
            .context("settings `current`, `baseline`, `recent`")?;
        let findings = match c.findings.as_deref() {
            None => Some("-".to_string()),
            Some(FINDINGS_OFF) => None,
            Some("") => bail!(
                "setting `findings` is empty: use a path, `-` for stdout, or `{FINDINGS_OFF}`"
            ),
            Some(path) => Some(path.to_string()),
        };
        let webhook = match c.webhook {
            Some(url) if url.is_empty() => None,
            Some(url) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    bail!("setting `webhook`: `{url}` is not an http:// or https:// URL");
                }
                Some(url)
            }
            None => None,
        };
        if findings.is_none() && webhook.is_none() {
            bail!("settings `findings` is `{FINDINGS_OFF}` and no `webhook` is set: findings would go nowhere");
        }
        let positive = |name: &str, v: Option<u64>, default: u64| -> Result<u64> {
            let v = v.unwrap_or(default);
            if v == 0 {
                bail!("setting `{name}` must be greater than 0");
            }
            Ok(v)
        };
        let limits = Limits {
            max_body_bytes: positive(
                "max_body_bytes",
                c.max_body_bytes.map(|v| v as u64),
                defaults.max_body_bytes as u64,
            )? as usize,
            max_dimension_bytes: positive(
                "max_dimension_bytes",
                c.max_dimension_bytes.map(|v| v as u64),
                defaults.max_dimension_bytes as u64,
            )? as usize,
            max_keys: positive("max_keys", c.max_keys, defaults.max_keys)?,
            max_clock_skew: duration(
                "max_clock_skew",
                c.max_clock_skew.as_deref(),
                &format_duration(defaults.max_clock_skew),
            )?,
            queue_requests: positive(
                "queue_requests",
                c.queue_requests.map(|v| v as u64),
                defaults.queue_requests as u64,
            )? as usize,
            max_batch_points: positive(
                "max_batch_points",
                c.max_batch_points.map(|v| v as u64),
                defaults.max_batch_points as u64,
            )? as usize,
        };
        Ok(Settings {
            otlp_grpc: address(
                "otlp_grpc",
                c.otlp_grpc.as_deref().unwrap_or("0.0.0.0:4317"),
            )?,
            otlp_http: address(
                "otlp_http",
                c.otlp_http.as_deref().unwrap_or("0.0.0.0:4318"),
            )?,
            admin: address("admin", c.admin.as_deref().unwrap_or("127.0.0.1:9464"))?,
            data: c.data.unwrap_or_else(|| PathBuf::from("unseen-data")),
            findings,
            webhook,
            webhook_timeout: Duration::from_secs(positive(
                "webhook_timeout",
                c.webhook_timeout
                    .as_deref()
                    .map(|t| parse_duration(t).context("setting `webhook_timeout`"))
                    .transpose()?,
                10,
            )?),
            windows,
            mode: KeyMode {
                strict: c.strict.unwrap_or(false),
                cluster_name: c.cluster_name.filter(|n| !n.is_empty()),
            },
            learn: duration("learn", c.learn.as_deref(), "0s")?,
            limits,
            shutdown_grace: Duration::from_secs(duration(
                "shutdown_grace",
                c.shutdown_grace.as_deref(),
                "30s",
            )?),
            triage: TriageSettings {
                rollout_window: positive(
                    "rollout_window",
                    Some(duration(
                        "rollout_window",
                        c.rollout_window.as_deref(),
                        "15m",
                    )?),
                    1,
                )?,
                digest_window: positive(
                    "digest_window",
                    Some(duration(
                        "digest_window",
                        c.digest_window.as_deref(),
                        "24h",
                    )?),
                    1,
                )?,
                risk: c.risk.unwrap_or_default(),
                risk_threshold: c.risk_threshold.unwrap_or(100),
                risk_window: positive(
                    "risk_window",
                    Some(duration("risk_window", c.risk_window.as_deref(), "24h")?),
                    1,
                )?,
            },
            suppress: Suppressions::from_tables("config `[[suppress]]`", c.suppress.clone())?,
            suppressions: c.suppressions.clone(),
            log_format: c.log_format.unwrap_or(LogFormat::Text),
            log_level: c.log_level.unwrap_or_else(|| "info".to_string()),
        })
    }

    /// The server's configuration.
    pub fn server_config(&self) -> Config {
        let mut sinks = Vec::new();
        if let Some(path) = &self.findings {
            sinks.push(SinkConfig::findings(path));
        }
        if let Some(url) = &self.webhook {
            let mut hook = SinkConfig::webhook(url.clone());
            if let SinkConfig::Webhook { timeout, .. } = &mut hook {
                *timeout = self.webhook_timeout;
            }
            sinks.push(hook);
        }
        Config {
            triage: self.triage,
            windows: self.windows,
            mode: self.mode.clone(),
            learn: (self.learn > 0).then_some(self.learn),
            sinks,
            limits: self.limits,
            shutdown_grace: self.shutdown_grace,
            suppressions: self.suppress.clone(),
            suppressions_file: self.suppressions.clone(),
        }
    }

    /// The effective configuration as a config file (what `check-config` prints).
    pub fn to_file(&self) -> FileConfig {
        FileConfig {
            otlp_grpc: Some(self.otlp_grpc.to_string()),
            otlp_http: Some(self.otlp_http.to_string()),
            admin: Some(self.admin.to_string()),
            data: Some(self.data.clone()),
            findings: Some(
                self.findings
                    .clone()
                    .unwrap_or_else(|| FINDINGS_OFF.to_string()),
            ),
            webhook: Some(self.webhook.clone().unwrap_or_default()),
            webhook_timeout: Some(format_duration(self.webhook_timeout.as_secs())),
            strict: Some(self.mode.strict),
            cluster_name: Some(self.mode.cluster_name.clone().unwrap_or_default()),
            current: Some(format_duration(self.windows.current)),
            baseline: Some(format_duration(self.windows.baseline)),
            recent: Some(format_duration(self.windows.recent)),
            learn: Some(format_duration(self.learn)),
            max_body_bytes: Some(self.limits.max_body_bytes),
            max_dimension_bytes: Some(self.limits.max_dimension_bytes),
            max_keys: Some(self.limits.max_keys),
            max_clock_skew: Some(format_duration(self.limits.max_clock_skew)),
            queue_requests: Some(self.limits.queue_requests),
            max_batch_points: Some(self.limits.max_batch_points),
            shutdown_grace: Some(format_duration(self.shutdown_grace.as_secs())),
            rollout_window: Some(format_duration(self.triage.rollout_window)),
            digest_window: Some(format_duration(self.triage.digest_window)),
            risk_threshold: Some(self.triage.risk_threshold),
            risk_window: Some(format_duration(self.triage.risk_window)),
            risk: Some(self.triage.risk),
            suppressions: self.suppressions.clone(),
            suppress: self
                .suppress
                .rules
                .iter()
                .filter_map(|r| r.to_toml().parse::<toml::Table>().ok())
                .filter_map(|mut t| match t.remove("suppress") {
                    Some(toml::Value::Array(mut a)) => match a.pop() {
                        Some(toml::Value::Table(t)) => Some(t),
                        _ => None,
                    },
                    _ => None,
                })
                .collect(),
            log_format: Some(self.log_format),
            log_level: Some(self.log_level.clone()),
        }
    }
}

fn address(name: &str, value: &str) -> Result<SocketAddr> {
    value
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .with_context(|| {
            format!("setting `{name}`: `{value}` is not an address (expected HOST:PORT, e.g. 0.0.0.0:4317)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/unseen.toml");

    #[test]
    fn the_example_config_loads_and_sets_every_key() {
        let file = FileConfig::load(Path::new(EXAMPLE)).expect("the example config loads");
        let settings = Settings::from_file(file.clone()).expect("the example config is valid");
        // Every key appears in the example, so it documents them all.
        let example: toml::Table =
            toml::from_str(&std::fs::read_to_string(EXAMPLE).unwrap()).unwrap();
        let all: toml::Table =
            toml::from_str(&toml::to_string(&settings.to_file()).unwrap()).unwrap();
        let missing: Vec<_> = all.keys().filter(|k| !example.contains_key(*k)).collect();
        assert!(
            missing.is_empty(),
            "keys missing from the example config: {missing:?}"
        );
        assert_eq!(settings.otlp_grpc.port(), 4317);
        assert_eq!(settings.windows.baseline, 30 * 86400);
        assert_eq!(settings.suppress.rules[0].name, "ci-runners");
        // The example rules file it names is valid too.
        let rules = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/suppressions.toml"
        );
        let rules = crate::suppress::load(Path::new(rules)).expect("the example rules load");
        assert_eq!(rules.rules.len(), 2);
    }

    #[test]
    fn printed_settings_read_back_to_the_same_settings() {
        let args = ServeArgs {
            cluster_name: Some("prod".into()),
            learn: Some("7d".into()),
            findings: Some("findings.jsonl".into()),
            webhook: Some("https://soc.example/hook".into()),
            max_keys: Some(1000),
            ..ServeArgs::default()
        };
        let settings = Settings::resolve(&args).unwrap();
        let text = toml::to_string(&settings.to_file()).unwrap();
        let again = Settings::from_file(toml::from_str(&text).unwrap()).unwrap();
        assert_eq!(format!("{:?}", again), format!("{:?}", settings));
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "cluster_name = \"from-file\"\nlearn = \"1d\"\nmax_keys = 7\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            cluster_name: Some("from-flag".into()),
            ..ServeArgs::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.mode.cluster_name.as_deref(), Some("from-flag"));
        assert_eq!(s.learn, 86400);
        assert_eq!(s.limits.max_keys, 7);
        assert_eq!(s.limits.max_body_bytes, 64 << 20);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_that_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "clustr_name = \"x\"\n").unwrap();
        let err = FileConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field `clustr_name`"), "{err}");
        assert!(err.contains("c.toml"), "{err}");

        let bad = |file: FileConfig| Settings::from_file(file).unwrap_err();
        let e = bad(FileConfig {
            baseline: Some("30x".into()),
            ..Default::default()
        });
        assert!(format!("{e:#}").contains("setting `baseline`"), "{e:#}");
        let e = bad(FileConfig {
            otlp_http: Some("nowhere".into()),
            ..Default::default()
        });
        assert!(
            format!("{e:#}").contains("setting `otlp_http`: `nowhere` is not an address"),
            "{e:#}"
        );
        let e = bad(FileConfig {
            max_keys: Some(0),
            ..Default::default()
        });
        assert!(
            format!("{e:#}").contains("`max_keys` must be greater than 0"),
            "{e:#}"
        );
        let e = bad(FileConfig {
            webhook: Some("ftp://x".into()),
            ..Default::default()
        });
        assert!(
            format!("{e:#}").contains("not an http:// or https:// URL"),
            "{e:#}"
        );
        let e = bad(FileConfig {
            findings: Some("off".into()),
            ..Default::default()
        });
        assert!(
            format!("{e:#}").contains("findings would go nowhere"),
            "{e:#}"
        );
        let e = bad(FileConfig {
            recent: Some("40d".into()),
            ..Default::default()
        });
        assert!(
            format!("{e:#}").contains("`current`, `baseline`, `recent`"),
            "{e:#}"
        );
    }
}
