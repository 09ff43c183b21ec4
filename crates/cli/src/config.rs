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
use std::collections::BTreeMap;
use unseen_findings::{RiskModifiers, Suppressions, TriageSettings};
use unseen_model::{format_duration, parse_duration, Windows};
use unseen_normalize::KeyMode;
use unseen_server::{Config, Limits};

use unseen_sinks::alertmanager::AlertmanagerConfig;
use unseen_sinks::hec::HecConfig;
use unseen_sinks::webhook::WebhookConfig;
use unseen_sinks::{Format, Secret, SinkConfig};

/// The value of `findings` that turns the JSON-lines output off.
pub const FINDINGS_OFF: &str = "off";
/// The value of `api` that turns the query API off.
const OFF: &str = "off";

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
    /// Query API and console address, or `off` [default: 127.0.0.1:9465]
    #[arg(long, value_name = "ADDR", env = "UNSEEN_API")]
    pub api: Option<String>,
    /// How long the query API keeps findings and incidents [default: 90d]
    #[arg(long, value_name = "DURATION", env = "UNSEEN_HISTORY")]
    pub history: Option<String>,
    /// State directory [default: ./unseen-data]
    #[arg(long, value_name = "DIR", env = "UNSEEN_DATA")]
    pub data: Option<PathBuf>,
    /// Keep the state in PostgreSQL instead of --data, shared by replicas: a
    /// `postgres://USER@HOST/DB` URL (the password from --store-password-file)
    #[arg(long, value_name = "URL", env = "UNSEEN_STORE")]
    pub store: Option<String>,
    /// PostgreSQL schema of the state [default: unseen]
    #[arg(long, value_name = "NAME", env = "UNSEEN_STORE_SCHEMA")]
    pub store_schema: Option<String>,
    /// File holding the PostgreSQL password (never put it in the URL: URLs get logged)
    #[arg(long, value_name = "FILE", env = "UNSEEN_STORE_PASSWORD_FILE")]
    pub store_password_file: Option<PathBuf>,
    /// PEM file of the CA that signed PostgreSQL's certificate: TLS to the database,
    /// required and verified (certificate and host name)
    #[arg(long, value_name = "FILE", env = "UNSEEN_STORE_CA_FILE")]
    pub store_ca_file: Option<PathBuf>,
    /// Findings as JSON lines: a file, `-` for stdout, `off` for none [default: -]
    #[arg(long, value_name = "PATH", env = "UNSEEN_FINDINGS")]
    pub findings: Option<String>,
    /// POST each batch of findings (a JSON array) to this URL, with retries.
    #[arg(long, value_name = "URL", env = "UNSEEN_WEBHOOK")]
    pub webhook: Option<String>,
    /// Per-request timeout of the webhook [default: 10s]
    #[arg(long, value_name = "DURATION", env = "UNSEEN_WEBHOOK_TIMEOUT")]
    pub webhook_timeout: Option<String>,
    /// Format of the findings output: unseen's JSON or OCSF Detection Findings [default: json]
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        env = "UNSEEN_FINDINGS_FORMAT"
    )]
    pub findings_format: Option<OutputFormat>,
    /// Format of the webhook's records [default: json]
    #[arg(long, value_enum, value_name = "FORMAT", env = "UNSEEN_WEBHOOK_FORMAT")]
    pub webhook_format: Option<OutputFormat>,
    /// File holding the webhook's HMAC-SHA256 key: every request is signed
    /// (`X-Unseen-Signature`)
    #[arg(long, value_name = "FILE", env = "UNSEEN_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// File holding a token the webhook sends as `Authorization: Bearer <token>`
    #[arg(long, value_name = "FILE", env = "UNSEEN_WEBHOOK_BEARER_TOKEN_FILE")]
    pub webhook_bearer_token_file: Option<PathBuf>,
    /// Prometheus Alertmanager base URL (e.g. http://127.0.0.1:9093): one alert per incident
    #[arg(
        long = "alertmanager",
        value_name = "URL",
        env = "UNSEEN_ALERTMANAGER_URL"
    )]
    pub alertmanager_url: Option<String>,
    /// How often firing alerts are re-sent to Alertmanager [default: 60s]
    #[arg(long, value_name = "DURATION", env = "UNSEEN_ALERTMANAGER_RESEND")]
    pub alertmanager_resend: Option<String>,
    /// Splunk HTTP Event Collector URL (e.g. https://splunk.example:8088)
    #[arg(long, value_name = "URL", env = "UNSEEN_HEC_URL")]
    pub hec_url: Option<String>,
    /// File holding the HEC token (re-read when Splunk refuses it)
    #[arg(long, value_name = "FILE", env = "UNSEEN_HEC_TOKEN_FILE")]
    pub hec_token_file: Option<PathBuf>,
    /// Splunk index of the events [default: the token's default index]
    #[arg(long, value_name = "INDEX", env = "UNSEEN_HEC_INDEX")]
    pub hec_index: Option<String>,
    /// Sourcetype of findings; incidents get `…:incident` [default: unseen:finding]
    #[arg(long, value_name = "SOURCETYPE", env = "UNSEEN_HEC_SOURCETYPE")]
    pub hec_sourcetype: Option<String>,
    /// TLS certificate chain (PEM) for every listener (receivers and admin); with
    /// --tls-key. Reloaded when the file changes
    #[arg(long, value_name = "FILE", env = "UNSEEN_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert
    #[arg(long, value_name = "FILE", env = "UNSEEN_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM): clients must present a certificate it signed (mTLS)
    #[arg(long, value_name = "FILE", env = "UNSEEN_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Bearer tokens bound to clusters (TOML `[[token]]`: name, sha256, clusters); with
    /// it, every request needs a listed token. Reloaded when the file changes
    #[arg(long, value_name = "FILE", env = "UNSEEN_TOKENS")]
    pub tokens: Option<PathBuf>,
    /// Base URL of links in alerts (`<URL>/incidents/<id>`) [default: no link]
    #[arg(long, value_name = "URL", env = "UNSEEN_CONSOLE_URL")]
    pub console_url: Option<String>,
    /// Use the seed's exact key (`host.name` as host, no cluster fallback) [default: false]
    #[arg(long, value_name = "BOOL", env = "UNSEEN_STRICT", num_args = 0..=1, default_missing_value = "true")]
    pub strict: Option<bool>,
    /// Default mode: the cluster for points without `k8s.cluster.name`.
    #[arg(long, value_name = "NAME", env = "UNSEEN_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Current window C [default: 24h]; `serve` has no use for it (the streaming rule
    /// needs B and R only) beyond checking R ≤ C ≤ B, and warns when it is not the default
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
    /// Connections open at once per receiver port; one more is closed at once. The
    /// admin port has its own 64 [default: 1024]
    #[arg(long, value_name = "N", env = "UNSEEN_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Request bytes (received and inflated) held at once across all requests; past it,
    /// requests are told to retry (429 / RESOURCE_EXHAUSTED) [default: 536870912]
    #[arg(long, value_name = "BYTES", env = "UNSEEN_MAX_INFLIGHT_BYTES")]
    pub max_inflight_bytes: Option<usize>,
    /// An HTTP/1 request header arrives within this, or the connection is closed
    /// [default: 10s]
    #[arg(long, value_name = "DURATION", env = "UNSEEN_HEADER_TIMEOUT")]
    pub header_timeout: Option<String>,
    /// A request body arrives within this, or it is refused (408 / DEADLINE_EXCEEDED)
    /// [default: 60s]
    #[arg(long, value_name = "DURATION", env = "UNSEEN_BODY_TIMEOUT")]
    pub body_timeout: Option<String>,
    /// A connection that sends nothing for this long is closed [default: 2m]
    #[arg(long, value_name = "DURATION", env = "UNSEEN_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// New keys per second one token (without tokens: one cluster) may create, on
    /// average; past it they are refused, retryable; 0: no limit [default: 1000]
    #[arg(long, value_name = "N", env = "UNSEEN_NEW_KEYS_PER_SECOND")]
    pub new_keys_per_second: Option<u64>,
    /// New keys one token (or cluster) may create at once [default: 100000]
    #[arg(long, value_name = "N", env = "UNSEEN_NEW_KEYS_BURST")]
    pub new_keys_burst: Option<u64>,
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

/// What the findings file, stdout and the webhook write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// unseen's JSON (docs/findings.md).
    #[default]
    Json,
    /// OCSF Detection Finding (class 2004).
    Ocsf,
}

impl From<OutputFormat> for Format {
    fn from(f: OutputFormat) -> Format {
        match f {
            OutputFormat::Json => Format::Json,
            OutputFormat::Ocsf => Format::Ocsf,
        }
    }
}

/// `findings = "path"`, or a table `[findings]` with `path` and `format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FindingsSetting {
    Path(String),
    Table(FindingsTable),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingsTable {
    pub path: Option<String>,
    pub format: Option<OutputFormat>,
}

impl From<&str> for FindingsSetting {
    fn from(path: &str) -> Self {
        FindingsSetting::Path(path.to_string())
    }
}

impl FindingsSetting {
    fn table(self) -> FindingsTable {
        match self {
            FindingsSetting::Path(path) => FindingsTable {
                path: Some(path),
                format: None,
            },
            FindingsSetting::Table(t) => t,
        }
    }
}

/// `webhook = "url"`, or a table `[webhook]` with `url`, `format`, `secret_file`,
/// `bearer_token_file` and `headers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StoreSetting {
    Url(String),
    Table(StoreTable),
}

/// The state in PostgreSQL (`docs/scale-out.md`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreTable {
    pub url: Option<String>,
    pub schema: Option<String>,
    pub password_file: Option<PathBuf>,
    /// The CA of the database's certificate: TLS required and verified.
    pub ca_file: Option<PathBuf>,
}

impl StoreSetting {
    fn table(self) -> StoreTable {
        match self {
            StoreSetting::Url(url) => StoreTable {
                url: Some(url),
                ..StoreTable::default()
            },
            StoreSetting::Table(t) => t,
        }
    }
}

/// Where the state is kept.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreChoice {
    /// The embedded store in `data`.
    Embedded,
    /// PostgreSQL; the password read from its file (never printed).
    Postgres {
        url: String,
        schema: String,
        password_file: Option<PathBuf>,
        ca_file: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WebhookSetting {
    Url(String),
    Table(WebhookTable),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTable {
    pub url: Option<String>,
    pub format: Option<OutputFormat>,
    pub secret_file: Option<PathBuf>,
    pub bearer_token_file: Option<PathBuf>,
    /// Extra request headers, name → value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl From<&str> for WebhookSetting {
    fn from(url: &str) -> Self {
        WebhookSetting::Url(url.to_string())
    }
}

impl WebhookSetting {
    fn table(self) -> WebhookTable {
        match self {
            WebhookSetting::Url(url) => WebhookTable {
                url: Some(url),
                ..WebhookTable::default()
            },
            WebhookSetting::Table(t) => t,
        }
    }
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
    pub api: Option<String>,
    pub history: Option<String>,
    pub data: Option<PathBuf>,
    /// `store = "postgres://…"` or `[store] url, schema, password_file, ca_file`.
    pub store: Option<StoreSetting>,
    pub findings: Option<FindingsSetting>,
    pub webhook: Option<WebhookSetting>,
    pub webhook_timeout: Option<String>,
    pub alertmanager_url: Option<String>,
    pub alertmanager_resend: Option<String>,
    pub hec_url: Option<String>,
    pub hec_token_file: Option<PathBuf>,
    pub hec_index: Option<String>,
    pub hec_sourcetype: Option<String>,
    pub console_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub tokens: Option<PathBuf>,
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
    pub max_connections: Option<usize>,
    pub max_inflight_bytes: Option<usize>,
    pub header_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub new_keys_per_second: Option<u64>,
    pub new_keys_burst: Option<u64>,
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
    /// The same with every URL shown without user info and query (`check-config`
    /// prints this: a webhook URL may carry a token).
    pub fn redacted(mut self) -> FileConfig {
        let hide = |url: &mut Option<String>| {
            if let Some(u) = url.as_mut().filter(|u| !u.is_empty()) {
                *u = unseen_sinks::http::redact_url(u);
            }
        };
        self.webhook = self.webhook.map(|w| match w {
            WebhookSetting::Url(u) if u.is_empty() => WebhookSetting::Url(u),
            WebhookSetting::Url(u) => WebhookSetting::Url(unseen_sinks::http::redact_url(&u)),
            WebhookSetting::Table(mut t) => {
                hide(&mut t.url);
                // Header values may be credentials too.
                for value in t.headers.values_mut() {
                    *value = "…".into();
                }
                WebhookSetting::Table(t)
            }
        });
        hide(&mut self.alertmanager_url);
        hide(&mut self.hec_url);
        hide(&mut self.console_url);
        self
    }

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
            api: pick(&a.api, self.api),
            history: pick(&a.history, self.history),
            data: pick(&a.data, self.data),
            store: {
                let file = self.store;
                if a.store.is_none()
                    && a.store_schema.is_none()
                    && a.store_password_file.is_none()
                    && a.store_ca_file.is_none()
                {
                    file
                } else {
                    let mut t = file.map(StoreSetting::table).unwrap_or_default();
                    t.url = pick(&a.store, t.url);
                    t.schema = pick(&a.store_schema, t.schema);
                    t.password_file = pick(&a.store_password_file, t.password_file);
                    t.ca_file = pick(&a.store_ca_file, t.ca_file);
                    Some(StoreSetting::Table(t))
                }
            },
            findings: {
                let file = self.findings;
                if a.findings.is_none() && a.findings_format.is_none() {
                    file
                } else {
                    let mut t = file.map(FindingsSetting::table).unwrap_or_default();
                    t.path = pick(&a.findings, t.path);
                    t.format = pick(&a.findings_format, t.format);
                    Some(match t.format {
                        None => FindingsSetting::Path(t.path.unwrap_or_else(|| "-".into())),
                        Some(_) => FindingsSetting::Table(t),
                    })
                }
            },
            webhook: {
                let file = self.webhook;
                if a.webhook.is_none()
                    && a.webhook_format.is_none()
                    && a.webhook_secret_file.is_none()
                    && a.webhook_bearer_token_file.is_none()
                {
                    file
                } else {
                    let mut t = file.map(WebhookSetting::table).unwrap_or_default();
                    t.url = pick(&a.webhook, t.url);
                    t.format = pick(&a.webhook_format, t.format);
                    t.secret_file = pick(&a.webhook_secret_file, t.secret_file);
                    t.bearer_token_file = pick(&a.webhook_bearer_token_file, t.bearer_token_file);
                    Some(WebhookSetting::Table(t))
                }
            },
            webhook_timeout: pick(&a.webhook_timeout, self.webhook_timeout),
            alertmanager_url: pick(&a.alertmanager_url, self.alertmanager_url),
            alertmanager_resend: pick(&a.alertmanager_resend, self.alertmanager_resend),
            hec_url: pick(&a.hec_url, self.hec_url),
            hec_token_file: pick(&a.hec_token_file, self.hec_token_file),
            hec_index: pick(&a.hec_index, self.hec_index),
            hec_sourcetype: pick(&a.hec_sourcetype, self.hec_sourcetype),
            console_url: pick(&a.console_url, self.console_url),
            tls_cert: pick(&a.tls_cert, self.tls_cert),
            tls_key: pick(&a.tls_key, self.tls_key),
            tls_client_ca: pick(&a.tls_client_ca, self.tls_client_ca),
            tokens: pick(&a.tokens, self.tokens),
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
            max_connections: pick(&a.max_connections, self.max_connections),
            max_inflight_bytes: pick(&a.max_inflight_bytes, self.max_inflight_bytes),
            header_timeout: pick(&a.header_timeout, self.header_timeout),
            body_timeout: pick(&a.body_timeout, self.body_timeout),
            idle_timeout: pick(&a.idle_timeout, self.idle_timeout),
            new_keys_per_second: pick(&a.new_keys_per_second, self.new_keys_per_second),
            new_keys_burst: pick(&a.new_keys_burst, self.new_keys_burst),
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
    /// `None`: the query API is off.
    pub api: Option<SocketAddr>,
    /// The query API's history retention, in seconds.
    pub history: u64,
    pub data: PathBuf,
    pub store: StoreChoice,
    /// `None`: the JSON-lines output is off.
    pub findings: Option<String>,
    pub findings_format: Format,
    pub webhook: Option<String>,
    pub webhook_timeout: Duration,
    pub webhook_format: Format,
    pub webhook_secret_file: Option<PathBuf>,
    pub webhook_bearer_token_file: Option<PathBuf>,
    pub webhook_headers: BTreeMap<String, String>,
    /// Read from their files at start (never printed).
    pub webhook_secret: Option<Secret>,
    pub webhook_bearer_token: Option<Secret>,
    pub alertmanager_url: Option<String>,
    pub alertmanager_resend: Duration,
    pub hec_url: Option<String>,
    pub hec_token_file: Option<PathBuf>,
    pub hec_index: Option<String>,
    pub hec_sourcetype: String,
    pub console_url: Option<String>,
    pub tls: Option<unseen_server::tls::TlsFiles>,
    pub tokens: Option<PathBuf>,
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

/// `tls_cert`, `tls_key` and `tls_client_ca`, checked: the files load (a bad one is an
/// error naming it), so `check-config` catches what `serve` would refuse.
fn tls_files(c: &FileConfig) -> Result<Option<unseen_server::tls::TlsFiles>> {
    let files = match (&c.tls_cert, &c.tls_key) {
        (None, None) => {
            if c.tls_client_ca.is_some() {
                bail!("setting `tls_client_ca` needs `tls_cert` and `tls_key`: client certificates are checked in a TLS handshake");
            }
            return Ok(None);
        }
        (Some(cert), Some(key)) => unseen_server::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: c.tls_client_ca.clone(),
        },
        _ => bail!("settings `tls_cert` and `tls_key` go together: give both (--tls-cert, --tls-key) or neither"),
    };
    unseen_server::tls::Tls::load(files.clone())
        .map_err(|e| anyhow::anyhow!("setting `tls_cert`/`tls_key`: {e}"))?;
    Ok(Some(files))
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
        let findings_table = c
            .findings
            .clone()
            .map(FindingsSetting::table)
            .unwrap_or_default();
        let findings = match findings_table.path.as_deref() {
            None => Some("-".to_string()),
            Some(FINDINGS_OFF) => None,
            Some("") => bail!(
                "setting `findings` is empty: use a path, `-` for stdout, or `{FINDINGS_OFF}`"
            ),
            Some(path) => Some(path.to_string()),
        };
        let hook = c
            .webhook
            .clone()
            .map(WebhookSetting::table)
            .unwrap_or_default();
        let http_url = |name: &str, url: Option<String>| -> Result<Option<String>> {
            match url {
                Some(url) if url.is_empty() => Ok(None),
                Some(url) => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        bail!("setting `{name}`: `{url}` is not an http:// or https:// URL");
                    }
                    Ok(Some(url))
                }
                None => Ok(None),
            }
        };
        let tls = tls_files(&c)?;
        let webhook = http_url("webhook", hook.url.clone())?;
        let alertmanager_url = http_url("alertmanager_url", c.alertmanager_url.clone())?;
        let hec_url = http_url("hec_url", c.hec_url.clone())?;
        if hec_url.is_some() != c.hec_token_file.is_some() {
            bail!("settings `hec_url` and `hec_token_file` go together: give both (--hec-url, --hec-token-file) or neither");
        }
        if let Some(path) = &c.hec_token_file {
            unseen_sinks::http::read_secret_file(path)
                .map_err(|e| anyhow::anyhow!("setting `hec_token_file`: {e}"))?;
        }
        let secret = |name: &str, path: &Option<PathBuf>| -> Result<Option<Secret>> {
            path.as_ref()
                .map(|p| {
                    unseen_sinks::http::read_secret_file(p)
                        .map_err(|e| anyhow::anyhow!("setting `{name}`: {e}"))
                })
                .transpose()
        };
        let webhook_secret = secret("webhook.secret_file", &hook.secret_file)?;
        let webhook_bearer_token = secret("webhook.bearer_token_file", &hook.bearer_token_file)?;
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
            max_connections: positive(
                "max_connections",
                c.max_connections.map(|v| v as u64),
                defaults.max_connections as u64,
            )? as usize,
            max_inflight_bytes: positive(
                "max_inflight_bytes",
                c.max_inflight_bytes.map(|v| v as u64),
                defaults.max_inflight_bytes as u64,
            )? as usize,
            header_timeout: positive(
                "header_timeout",
                Some(duration(
                    "header_timeout",
                    c.header_timeout.as_deref(),
                    &format_duration(defaults.header_timeout),
                )?),
                1,
            )?,
            body_timeout: positive(
                "body_timeout",
                Some(duration(
                    "body_timeout",
                    c.body_timeout.as_deref(),
                    &format_duration(defaults.body_timeout),
                )?),
                1,
            )?,
            idle_timeout: positive(
                "idle_timeout",
                Some(duration(
                    "idle_timeout",
                    c.idle_timeout.as_deref(),
                    &format_duration(defaults.idle_timeout),
                )?),
                1,
            )?,
            new_keys_per_second: c
                .new_keys_per_second
                .unwrap_or(defaults.new_keys_per_second),
            new_keys_burst: positive("new_keys_burst", c.new_keys_burst, defaults.new_keys_burst)?,
        };
        // A request holds its body and, while it is decoded, an estimate of its points
        // (1.5 × the body): the budget must hold one of the largest at least.
        let largest = limits.max_body_bytes.saturating_mul(5) / 2;
        if limits.max_inflight_bytes < largest {
            bail!(
                "setting `max_inflight_bytes` ({}) is smaller than 2.5 × `max_body_bytes` ({largest}): a request of the largest allowed size (its body and its decoded points) could never be taken; raise max_inflight_bytes or lower max_body_bytes",
                limits.max_inflight_bytes,
            );
        }
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
            api: match c.api.as_deref().unwrap_or("127.0.0.1:9465") {
                OFF => None,
                addr => Some(address("api", addr)?),
            },
            history: positive(
                "history",
                Some(duration(
                    "history",
                    c.history.as_deref(),
                    &format_duration(unseen_server::DEFAULT_HISTORY_RETENTION),
                )?),
                1,
            )?,
            data: c
                .data
                .clone()
                .unwrap_or_else(|| PathBuf::from("unseen-data")),
            store: store_choice(c.store.clone())?,
            findings,
            findings_format: findings_table.format.unwrap_or_default().into(),
            webhook,
            webhook_format: hook.format.unwrap_or_default().into(),
            webhook_secret_file: hook.secret_file.clone(),
            webhook_bearer_token_file: hook.bearer_token_file.clone(),
            webhook_headers: hook.headers.clone(),
            webhook_secret,
            webhook_bearer_token,
            alertmanager_url,
            alertmanager_resend: Duration::from_secs(positive(
                "alertmanager_resend",
                Some(duration(
                    "alertmanager_resend",
                    c.alertmanager_resend.as_deref(),
                    "60s",
                )?),
                1,
            )?),
            hec_url,
            hec_token_file: c.hec_token_file.clone(),
            hec_index: c.hec_index.clone().filter(|i| !i.is_empty()),
            hec_sourcetype: c
                .hec_sourcetype
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "unseen:finding".into()),
            console_url: http_url("console_url", c.console_url.clone())?,
            tls,
            tokens: match &c.tokens {
                Some(path) => {
                    unseen_server::auth::load(path)
                        .map_err(|e| anyhow::anyhow!("setting `tokens`: {e}"))?;
                    Some(path.clone())
                }
                None => None,
            },
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

    /// `serve` needs somewhere to send findings (`baseline import`, which reports none,
    /// does not).
    pub fn require_an_output(&self) -> Result<()> {
        if self.findings.is_none()
            && self.webhook.is_none()
            && self.alertmanager_url.is_none()
            && self.hec_url.is_none()
        {
            bail!("settings `findings` is `{FINDINGS_OFF}` and no `webhook`, `alertmanager_url` or `hec_url` is set: findings would go nowhere");
        }
        Ok(())
    }

    /// The server's configuration.
    pub fn server_config(&self) -> Config {
        let mut sinks = Vec::new();
        if let Some(path) = &self.findings {
            sinks.push(SinkConfig::findings(path).with_format(self.findings_format));
        }
        if let Some(url) = &self.webhook {
            let mut hook = WebhookConfig::new(url.clone());
            hook.http.timeout = self.webhook_timeout;
            hook.format = self.webhook_format;
            hook.secret = self.webhook_secret.clone();
            hook.headers = self
                .webhook_headers
                .iter()
                .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
                .collect();
            if let Some(token) = &self.webhook_bearer_token {
                hook.headers.push((
                    "authorization".into(),
                    Secret::new(format!("Bearer {}", token.expose())),
                ));
            }
            sinks.push(SinkConfig::Webhook(hook));
        }
        if let (Some(url), Some(token_file)) = (&self.hec_url, &self.hec_token_file) {
            let mut hec = HecConfig::new(url.clone(), token_file.clone());
            hec.index = self.hec_index.clone();
            hec.sourcetype = self.hec_sourcetype.clone();
            sinks.push(SinkConfig::Hec(hec));
        }
        if let Some(url) = &self.alertmanager_url {
            let mut am = AlertmanagerConfig::new(url.clone());
            am.resend = self.alertmanager_resend;
            am.link = self.console_url.clone();
            sinks.push(SinkConfig::Alertmanager(am));
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
            tls: self.tls.clone(),
            tokens_file: self.tokens.clone(),
            reload: Default::default(),
            history_retention: self.history,
            release_freed_memory: Some(crate::release_freed_memory),
        }
    }

    /// The effective configuration as a config file (what `check-config` prints).
    pub fn to_file(&self) -> FileConfig {
        FileConfig {
            otlp_grpc: Some(self.otlp_grpc.to_string()),
            otlp_http: Some(self.otlp_http.to_string()),
            admin: Some(self.admin.to_string()),
            api: Some(self.api.map_or_else(|| OFF.to_string(), |a| a.to_string())),
            history: Some(format_duration(self.history)),
            data: Some(self.data.clone()),
            store: match &self.store {
                StoreChoice::Embedded => None,
                StoreChoice::Postgres {
                    url,
                    schema,
                    password_file,
                    ca_file,
                } => Some(StoreSetting::Table(StoreTable {
                    url: Some(url.clone()),
                    schema: Some(schema.clone()),
                    password_file: password_file.clone(),
                    ca_file: ca_file.clone(),
                })),
            },
            findings: Some({
                let path = self
                    .findings
                    .clone()
                    .unwrap_or_else(|| FINDINGS_OFF.to_string());
                match self.findings_format {
                    Format::Json => FindingsSetting::Path(path),
                    Format::Ocsf => FindingsSetting::Table(FindingsTable {
                        path: Some(path),
                        format: Some(OutputFormat::Ocsf),
                    }),
                }
            }),
            webhook: Some({
                let url = self.webhook.clone().unwrap_or_default();
                let plain = self.webhook_format == Format::Json
                    && self.webhook_secret_file.is_none()
                    && self.webhook_bearer_token_file.is_none()
                    && self.webhook_headers.is_empty();
                if plain {
                    WebhookSetting::Url(url)
                } else {
                    WebhookSetting::Table(WebhookTable {
                        url: Some(url),
                        format: Some(match self.webhook_format {
                            Format::Json => OutputFormat::Json,
                            Format::Ocsf => OutputFormat::Ocsf,
                        }),
                        secret_file: self.webhook_secret_file.clone(),
                        bearer_token_file: self.webhook_bearer_token_file.clone(),
                        headers: self.webhook_headers.clone(),
                    })
                }
            }),
            webhook_timeout: Some(format_duration(self.webhook_timeout.as_secs())),
            alertmanager_url: Some(self.alertmanager_url.clone().unwrap_or_default()),
            alertmanager_resend: Some(format_duration(self.alertmanager_resend.as_secs())),
            hec_url: Some(self.hec_url.clone().unwrap_or_default()),
            hec_token_file: self.hec_token_file.clone(),
            hec_index: Some(self.hec_index.clone().unwrap_or_default()),
            hec_sourcetype: Some(self.hec_sourcetype.clone()),
            console_url: Some(self.console_url.clone().unwrap_or_default()),
            tls_cert: self.tls.as_ref().map(|t| t.cert.clone()),
            tls_key: self.tls.as_ref().map(|t| t.key.clone()),
            tls_client_ca: self.tls.as_ref().and_then(|t| t.client_ca.clone()),
            tokens: self.tokens.clone(),
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
            max_connections: Some(self.limits.max_connections),
            max_inflight_bytes: Some(self.limits.max_inflight_bytes),
            header_timeout: Some(format_duration(self.limits.header_timeout)),
            body_timeout: Some(format_duration(self.limits.body_timeout)),
            idle_timeout: Some(format_duration(self.limits.idle_timeout)),
            new_keys_per_second: Some(self.limits.new_keys_per_second),
            new_keys_burst: Some(self.limits.new_keys_burst),
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

/// `store`, checked: a PostgreSQL URL without a password in it.
fn store_choice(setting: Option<StoreSetting>) -> Result<StoreChoice> {
    let Some(t) = setting.map(StoreSetting::table) else {
        return Ok(StoreChoice::Embedded);
    };
    let url = match t.url.filter(|u| !u.is_empty()) {
        None => {
            if t.schema.is_some() || t.password_file.is_some() || t.ca_file.is_some() {
                bail!("setting `store`: `schema`, `password_file` and `ca_file` need a `url` (postgres://USER@HOST/DB)");
            }
            return Ok(StoreChoice::Embedded);
        }
        Some(u) => u,
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!("setting `store`: `{}` is not a postgres:// URL; leave `store` out for the embedded store in `data`", unseen_sinks::http::redact_url(&url));
    }
    if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if authority
            .rsplit_once('@')
            .is_some_and(|(user, _)| user.contains(':'))
        {
            bail!("setting `store`: the URL holds a password; put it in a file and name it with `store_password_file` (--store-password-file): URLs end up in logs and process lists");
        }
    }
    let schema = t.schema.unwrap_or_else(|| "unseen".to_string());
    if schema.is_empty()
        || !schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        bail!("setting `store.schema`: `{schema}` must be lower-case letters, digits and `_`");
    }
    Ok(StoreChoice::Postgres {
        url,
        schema,
        password_file: t.password_file,
        ca_file: t.ca_file,
    })
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

    /// The configuration of the Kubernetes manifests is a valid config file, with the
    /// state in PostgreSQL and no password in its URL.
    #[test]
    fn the_kubernetes_configmap_holds_a_valid_config() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/kubernetes/configmap.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        // The ConfigMap's `unseen.toml: |` block, de-indented.
        let block: String = text
            .split("unseen.toml: |\n")
            .nth(1)
            .expect("the unseen.toml key")
            .lines()
            .take_while(|l| l.is_empty() || l.starts_with("    "))
            .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
            .collect();
        let file: FileConfig = toml::from_str(&block).expect("a valid config file");
        let choice = store_choice(file.store.clone()).unwrap();
        assert!(
            matches!(&choice, StoreChoice::Postgres { schema, password_file: Some(_), .. } if schema == "unseen"),
            "{choice:?}"
        );
        assert_eq!(file.admin.as_deref(), Some("0.0.0.0:9464"));
    }

    #[test]
    fn the_store_setting_is_checked() {
        let store = |t: &str| store_choice(Some(StoreSetting::Url(t.into())));
        assert_eq!(store("").unwrap(), StoreChoice::Embedded);
        let e = store("postgres://unseen:hunter2@db/unseen")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("holds a password") && !e.contains("hunter2"),
            "{e}"
        );
        let e = store("mysql://db/unseen").unwrap_err().to_string();
        assert!(e.contains("not a postgres:// URL"), "{e}");
        let e = store_choice(Some(StoreSetting::Table(StoreTable {
            url: Some("postgres://db/x".into()),
            schema: Some("Bad-Name".into()),
            password_file: None,
            ca_file: None,
        })))
        .unwrap_err()
        .to_string();
        assert!(e.contains("store.schema"), "{e}");
        let e = store_choice(Some(StoreSetting::Table(StoreTable {
            ca_file: Some("/etc/unseen/db-ca.pem".into()),
            ..StoreTable::default()
        })))
        .unwrap_err()
        .to_string();
        assert!(e.contains("`ca_file`") && e.contains("need a `url`"), "{e}");
        assert_eq!(
            store_choice(Some(StoreSetting::Table(StoreTable {
                url: Some("postgres://unseen@db/unseen?sslmode=require".into()),
                ca_file: Some("/etc/unseen/db-ca.pem".into()),
                ..StoreTable::default()
            })))
            .unwrap(),
            StoreChoice::Postgres {
                url: "postgres://unseen@db/unseen?sslmode=require".into(),
                schema: "unseen".into(),
                password_file: None,
                ca_file: Some("/etc/unseen/db-ca.pem".into()),
            }
        );
        assert_eq!(
            store("postgres://unseen@db/unseen").unwrap(),
            StoreChoice::Postgres {
                url: "postgres://unseen@db/unseen".into(),
                schema: "unseen".into(),
                password_file: None,
                ca_file: None,
            }
        );
    }

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
        let tokens = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/tokens.toml");
        let (tokens, _) =
            unseen_server::auth::load(Path::new(tokens)).expect("the example tokens file loads");
        assert_eq!(tokens.len(), 3);
        let analyst = tokens
            .by_name("soc-analyst-jane")
            .expect("the analyst's token");
        assert_eq!(analyst.role.map(|r| r.as_str()), Some("responder"));
        let rules = crate::suppress::load(Path::new(rules)).expect("the example rules load");
        assert_eq!(rules.rules.len(), 2);
    }

    #[test]
    fn the_flood_limits_are_read_and_checked() {
        let s = Settings::resolve(&ServeArgs {
            max_connections: Some(10),
            header_timeout: Some("3s".into()),
            body_timeout: Some("1m".into()),
            idle_timeout: Some("5m".into()),
            new_keys_per_second: Some(0),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(s.limits.max_connections, 10);
        assert_eq!(
            (
                s.limits.header_timeout,
                s.limits.body_timeout,
                s.limits.idle_timeout
            ),
            (3, 60, 300)
        );
        assert_eq!(s.limits.new_keys_per_second, 0, "0 turns the rate off");
        let err = |args: ServeArgs| format!("{:#}", Settings::resolve(&args).unwrap_err());
        let e = err(ServeArgs {
            max_body_bytes: Some(100 << 20),
            max_inflight_bytes: Some(200 << 20),
            ..ServeArgs::default()
        });
        assert!(
            e.contains("`max_inflight_bytes`") && e.contains("2.5 × `max_body_bytes`"),
            "{e}"
        );
        let e = err(ServeArgs {
            body_timeout: Some("0s".into()),
            ..ServeArgs::default()
        });
        assert!(e.contains("`body_timeout` must be greater than 0"), "{e}");
        let e = err(ServeArgs {
            max_connections: Some(0),
            ..ServeArgs::default()
        });
        assert!(
            e.contains("`max_connections` must be greater than 0"),
            "{e}"
        );
    }

    #[test]
    fn tls_settings_go_together_and_bad_files_are_named() {
        let err = |args: ServeArgs| format!("{:#}", Settings::resolve(&args).unwrap_err());
        let e = err(ServeArgs {
            tls_cert: Some("cert.pem".into()),
            ..ServeArgs::default()
        });
        assert!(e.contains("`tls_cert` and `tls_key` go together"), "{e}");
        let e = err(ServeArgs {
            tls_client_ca: Some("ca.pem".into()),
            ..ServeArgs::default()
        });
        assert!(
            e.contains("`tls_client_ca` needs `tls_cert` and `tls_key`"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        let e = err(ServeArgs {
            tls_cert: Some(cert.clone()),
            tls_key: Some(dir.path().join("missing.key")),
            ..ServeArgs::default()
        });
        assert!(
            e.contains("missing.key") && e.contains("cannot read it"),
            "{e}"
        );
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "nor a key").unwrap();
        let e = err(ServeArgs {
            tls_cert: Some(cert),
            tls_key: Some(key),
            ..ServeArgs::default()
        });
        assert!(
            e.contains("cert.pem") && e.contains("no certificate"),
            "{e}"
        );
    }

    #[test]
    fn printed_settings_hide_credentials_in_urls() {
        let args = ServeArgs {
            webhook: Some("https://bot:hunter2@soar.example/hook?token=s3cret".into()),
            alertmanager_url: Some("http://am:pw@alertmanager:9093".into()),
            ..ServeArgs::default()
        };
        let settings = Settings::resolve(&args).unwrap();
        let text = toml::to_string(&settings.to_file().redacted()).unwrap();
        for secret in ["hunter2", "s3cret", "bot", "pw@"] {
            assert!(!text.contains(secret), "{secret} shown:\n{text}");
        }
        assert!(
            text.contains("webhook = \"https://soar.example/hook?…\""),
            "{text}"
        );
        assert!(
            text.contains("alertmanager_url = \"http://alertmanager:9093/\""),
            "{text}"
        );
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
        let e = Settings::from_file(FileConfig {
            findings: Some("off".into()),
            ..Default::default()
        })
        .unwrap()
        .require_an_output()
        .unwrap_err();
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
