//! `unseen incidents` and `unseen images`: the query API of `unseen serve --api`
//! (`crates/api/openapi.json`) from a terminal or a script.
//!
//! The token comes from `UNSEEN_API_TOKEN` only: a flag would show it in `ps`. Exit
//! codes: 0 answered, 1 `images REF` and the image is not known (so that a script can
//! test it), 2 anything went wrong (as for arguments clap refuses).

use std::fmt::Write as _;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use reqwest::{StatusCode, Url};
use serde_json::Value;
use unseen_model::{format_rfc3339, parse_duration, parse_time, UnixSecs};

use crate::args::OutputArg;

/// The variable that holds the API token.
pub const TOKEN_ENV: &str = "UNSEEN_API_TOKEN";

/// Exit codes of these commands.
mod exit {
    /// `images REF`: the image is not known.
    pub const NOT_KNOWN: u8 = 1;
    /// The request could not be made or the API refused it.
    pub const ERROR: u8 = 2;
}

/// Where the API is and how to print its answers.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The query API of `unseen serve` (its --api address); https works.
    #[arg(
        long,
        value_name = "URL",
        env = "UNSEEN_API_URL",
        default_value = "http://127.0.0.1:9465"
    )]
    pub api_url: String,
    /// `table`: for people; `json`: the API's objects, one per line.
    #[arg(long, value_enum, default_value_t = OutputArg::Table)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct IncidentsArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Only incidents in this cluster (the incident's, or one of its members').
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only incidents with a member in this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only incidents with a member of this workload: `Kind/name`, or the name.
    #[arg(long)]
    pub workload: Option<String>,
    /// Only incidents whose image contains this text (case-insensitive).
    #[arg(long)]
    pub image: Option<String>,
    /// Only incidents of this novelty scope.
    #[arg(long, value_enum)]
    pub scope: Option<ScopeArg>,
    /// Only incidents of this kind: image, new_node, digest, risk_threshold, capacity.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only incidents whose grouping window is open, or closed.
    #[arg(long, value_enum)]
    pub state: Option<StateArg>,
    /// Only incidents at this step of the analyst workflow.
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
    /// From this time, inclusive: RFC 3339, Unix seconds, or a duration ago (`24h`).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Until this time, exclusive: RFC 3339, Unix seconds, or a duration ago.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Incidents per page, 1 to 500 [default: the API's, 50]
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Follow the pages to the end (otherwise one page).
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// An image reference (`nginx` finds `docker.io/library/nginx`): whether unseen
    /// knows it, since when and where. Without it, the inventory.
    #[arg(value_name = "REF", conflicts_with_all = ["q", "cluster", "limit", "all"])]
    pub reference: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Only images whose name contains this text (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub q: Option<String>,
    /// Only images seen in this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Images per page, 1 to 500 [default: the API's, 50]
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Follow the pages to the end (otherwise one page).
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    Node,
    Cluster,
    Fleet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    Open,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    New,
    Acknowledged,
    Resolved,
}

/// The value of a [`ValueEnum`] as the API spells it (the same words).
fn word(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// `unseen incidents`.
pub fn incidents(args: IncidentsArgs) -> ExitCode {
    finish(run_incidents(args).map(|()| Found::Yes))
}

/// `unseen images [REF]`.
pub fn images(args: ImagesArgs) -> ExitCode {
    finish(run_images(args))
}

/// Whether `images REF` found the image.
enum Found {
    Yes,
    No,
}

fn finish(result: Result<Found>) -> ExitCode {
    match result {
        Ok(Found::Yes) => ExitCode::SUCCESS,
        Ok(Found::No) => ExitCode::from(exit::NOT_KNOWN),
        // A reader that went away (`| head`) is not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unseen: {e:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn run_incidents(a: IncidentsArgs) -> Result<()> {
    let client = Client::new(&a.api)?;
    let mut query: Vec<(&str, String)> = Vec::new();
    for (name, value) in [
        ("cluster", &a.cluster),
        ("namespace", &a.namespace),
        ("workload", &a.workload),
        ("image", &a.image),
        ("kind", &a.kind),
    ] {
        if let Some(v) = value {
            query.push((name, v.clone()));
        }
    }
    if let Some(s) = a.scope {
        query.push(("scope", word(s)));
    }
    if let Some(s) = a.state {
        query.push(("state", word(s)));
    }
    if let Some(s) = a.status {
        query.push(("status", word(s)));
    }
    for (name, value) in [("since", &a.since), ("until", &a.until)] {
        if let Some(v) = value {
            query.push((name, time_arg(name, v)?));
        }
    }
    if let Some(n) = a.limit {
        query.push(("limit", n.to_string()));
    }
    let url = client.url(&["api", "v1", "incidents"], &query);
    let mut out = io::stdout().lock();
    let mut rows = Vec::new();
    let more = client.pages(url, a.all, |items| {
        for item in items {
            match a.api.output {
                OutputArg::Json => writeln!(out, "{item}")?,
                OutputArg::Table => rows.push(incident_row(&item)),
            }
        }
        out.flush()?;
        Ok(())
    })?;
    if a.api.output == OutputArg::Table {
        write_table(
            &mut out,
            &[
                ("OPENED_AT", 20),
                ("STATUS", 12),
                ("KIND", 14),
                ("SCOPE", 7),
                ("CLUSTER", 24),
                ("NODES", 5),
                ("TITLE", 60),
                ("INCIDENT_ID", 0),
            ],
            &rows,
        )?;
    }
    if more {
        eprintln!("unseen: more incidents follow: --all lists them all");
    }
    Ok(())
}

fn incident_row(i: &Value) -> Vec<String> {
    vec![
        text(&i["opened_at"]),
        text(&i["workflow"]["status"]),
        text(&i["kind"]),
        text(&i["scope"]),
        match &i["cluster"] {
            Value::Null => "*".to_string(),
            c => text(c),
        },
        i["node_count"].as_u64().map_or_else(
            || {
                i["nodes"]
                    .as_array()
                    .map_or_else(String::new, |n| n.len().to_string())
            },
            |n| n.to_string(),
        ),
        text(&i["title"]),
        text(&i["incident_id"]),
    ]
}

fn run_images(a: ImagesArgs) -> Result<Found> {
    let client = Client::new(&a.api)?;
    if let Some(reference) = &a.reference {
        return image(&client, reference, a.api.output);
    }
    let mut query: Vec<(&str, String)> = Vec::new();
    for (name, value) in [("q", &a.q), ("cluster", &a.cluster)] {
        if let Some(v) = value {
            query.push((name, v.clone()));
        }
    }
    if let Some(n) = a.limit {
        query.push(("limit", n.to_string()));
    }
    let url = client.url(&["api", "v1", "images"], &query);
    let mut out = io::stdout().lock();
    let mut rows = Vec::new();
    let more = client.pages(url, a.all, |items| {
        for item in items {
            match a.api.output {
                OutputArg::Json => writeln!(out, "{item}")?,
                OutputArg::Table => rows.push(vec![
                    text(&item["first_seen"]),
                    text(&item["last_seen"]),
                    item["node_count"].to_string(),
                    list(&item["clusters"], usize::MAX),
                    item["findings"].to_string(),
                    text(&item["image"]),
                ]),
            }
        }
        out.flush()?;
        Ok(())
    })?;
    if a.api.output == OutputArg::Table {
        write_table(
            &mut out,
            &[
                ("FIRST_SEEN", 20),
                ("LAST_SEEN", 20),
                ("NODES", 5),
                ("CLUSTERS", 40),
                ("FINDINGS", 8),
                ("IMAGE", 0),
            ],
            &rows,
        )?;
    }
    if more {
        eprintln!("unseen: more images follow: --all lists them all");
    }
    Ok(Found::Yes)
}

/// `images REF`: GET /api/v1/images/{REF}, whose 404 with `known: false` is an answer.
fn image(client: &Client, reference: &str, output: OutputArg) -> Result<Found> {
    let segments: Vec<&str> = reference.split('/').collect();
    if reference.trim().is_empty() || segments.iter().any(|s| *s == "." || *s == "..") {
        bail!("{reference:?} is not an image reference");
    }
    let mut path = vec!["api", "v1", "images"];
    path.extend(segments);
    let url = client.url(&path, &[]);
    let (status, body) = client.get(&url)?;
    let mut out = io::stdout().lock();
    if status == StatusCode::NOT_FOUND && body["known"] == Value::Bool(false) {
        match output {
            OutputArg::Json => writeln!(out, "{body}")?,
            OutputArg::Table => {
                let name = body["image"].as_str().unwrap_or(reference);
                writeln!(out, "{} is not known to unseen", clean(name))?;
            }
        }
        return Ok(Found::No);
    }
    if !status.is_success() {
        return Err(api_error(status, &body));
    }
    match output {
        OutputArg::Json => writeln!(out, "{body}")?,
        OutputArg::Table => writeln!(out, "{}", describe_image(&body))?,
    }
    Ok(Found::Yes)
}

/// Lists longer than this are cut in the one-line summary (`--output json` has them all).
const SUMMARY_ITEMS: usize = 10;

fn describe_image(body: &Value) -> String {
    let row = &body["image"];
    let nodes = row["node_count"].as_u64().unwrap_or(0);
    let clusters = row["clusters"].as_array().map_or(0, Vec::len);
    format!(
        "{}: known since {}, last seen {}, on {nodes} node{} in cluster{} {}; namespaces {}; workloads {}; incidents {}",
        text(&row["image"]),
        text(&row["first_seen"]),
        text(&row["last_seen"]),
        if nodes == 1 { "" } else { "s" },
        if clusters == 1 { "" } else { "s" },
        list(&row["clusters"], SUMMARY_ITEMS),
        list(&row["namespaces"], SUMMARY_ITEMS),
        list(&row["workloads"], SUMMARY_ITEMS),
        list(&body["incidents"], SUMMARY_ITEMS),
    )
}

/// A JSON string for a terminal (control characters replaced: the names come from
/// telemetry, and an escape sequence in one must not reach the terminal).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => clean(s),
        Value::Null => String::new(),
        other => clean(&other.to_string()),
    }
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// An array of strings as `a, b, c` (at most `max`, then `(+N more)`); `none` when empty.
fn list(v: &Value, max: usize) -> String {
    let items: Vec<String> = v
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    if items.is_empty() {
        return "none".to_string();
    }
    let mut s = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        let _ = write!(s, " (+{} more)", items.len() - max);
    }
    s
}

/// Columns `(header, widest)`: each as wide as its widest cell, up to `widest` (longer
/// cells are cut with `…`); the last column (`widest` 0) is never cut nor padded.
fn write_table(mut out: impl Write, columns: &[(&str, usize)], rows: &[Vec<String>]) -> Result<()> {
    let cut = |s: &str, max: usize| -> String {
        if max == 0 || s.chars().count() <= max {
            s.to_string()
        } else {
            let mut t: String = s.chars().take(max - 1).collect();
            t.push('…');
            t
        }
    };
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (header, widest))| {
            let cells = rows.iter().map(|r| cut(&r[i], *widest).chars().count());
            cells.chain([header.len()]).max().unwrap_or(0)
        })
        .collect();
    let mut line = |cells: Vec<String>| -> io::Result<()> {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                s.push_str(cell);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(columns.iter().map(|(h, _)| h.to_string()).collect())?;
    for row in rows {
        line(
            row.iter()
                .zip(columns)
                .map(|(cell, (_, widest))| cut(cell, *widest))
                .collect(),
        )?;
    }
    out.flush()?;
    Ok(())
}

/// `--since`/`--until`: a time as the API takes it (RFC 3339), from RFC 3339, Unix
/// seconds, or a duration before now.
fn time_arg(flag: &str, value: &str) -> Result<String> {
    let at: UnixSecs = match parse_time(value) {
        Ok(t) => t,
        Err(_) => match parse_duration(value) {
            Ok(d) => now().saturating_sub(i64::try_from(d).unwrap_or(i64::MAX)),
            Err(_) => bail!(
                "--{flag} {value:?}: give an RFC 3339 time, Unix seconds or a duration ago such as 24h"
            ),
        },
    };
    Ok(format_rfc3339(at))
}

fn now() -> UnixSecs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The API's error answer as a message: `the API answered 401 Unauthorized: <error>`.
fn api_error(status: StatusCode, body: &Value) -> anyhow::Error {
    let message = match &body["error"] {
        Value::String(e) => clean(e),
        _ => clean(&body.to_string()),
    };
    anyhow!("the API answered {status}: {message}")
}

/// Attempts of a request the API answers 503 (the state store cannot be read now).
const ATTEMPTS: u32 = 3;

/// One API, one token, one current-thread runtime.
struct Client {
    http: reqwest::Client,
    base: Url,
    token: String,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    fn new(a: &ApiArgs) -> Result<Client> {
        let token = std::env::var(TOKEN_ENV).unwrap_or_default();
        let token = token.trim();
        if token.is_empty() {
            bail!(
                "{TOKEN_ENV} is not set: set it to an API token, one with a `role` (viewer or above) in the tokens file of `unseen serve`"
            );
        }
        let base = Url::parse(a.api_url.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                anyhow!(
                    "--api-url {:?}: give the API's http:// or https:// URL (default http://127.0.0.1:9465)",
                    a.api_url
                )
            })?;
        if base.scheme() == "http" && !is_loopback(&base) {
            eprintln!(
                "unseen: warning: {base} is plain http: the API token crosses the network unencrypted; use https"
            );
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("unseen/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            // The API never redirects; following one would send the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot set up the HTTP client")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        Ok(Client {
            http,
            base,
            token: token.to_string(),
            runtime,
        })
    }

    /// The base URL with `segments` appended to its path (each percent-encoded) and
    /// `query`.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (k, v.as_str())));
        }
        url
    }

    /// GET `url`: the status and the JSON body of the answer.
    fn get(&self, url: &Url) -> Result<(StatusCode, Value)> {
        self.runtime.block_on(async {
            let mut attempt = 1;
            loop {
                let response = self
                    .http
                    .get(url.clone())
                    .bearer_auth(&self.token)
                    .header(reqwest::header::ACCEPT, "application/json")
                    .send()
                    .await
                    .map_err(|e| self.unreachable(&e))?;
                let status = response.status();
                if status == StatusCode::SERVICE_UNAVAILABLE && attempt < ATTEMPTS {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
                let body = serde_json::from_slice::<Value>(&bytes).map_err(|_| {
                    anyhow!(
                        "the answer of {} ({status}) is not JSON: is {} the query API of `unseen serve` (its --api address)? Pass --api-url or set UNSEEN_API_URL",
                        url.path(),
                        self.base
                    )
                })?;
                return Ok((status, body));
            }
        })
    }

    /// Calls `each` with the items of the page at `url` and, with `all`, of every page
    /// after it; returns whether pages were left (without `all`).
    fn pages(
        &self,
        url: Url,
        all: bool,
        mut each: impl FnMut(Vec<Value>) -> Result<()>,
    ) -> Result<bool> {
        let mut cursor: Option<String> = None;
        loop {
            let mut page_url = url.clone();
            if let Some(c) = &cursor {
                page_url.query_pairs_mut().append_pair("cursor", c);
            }
            let (status, mut body) = self.get(&page_url)?;
            if !status.is_success() {
                return Err(api_error(status, &body));
            }
            let items = match body.get_mut("items").map(Value::take) {
                Some(Value::Array(items)) => items,
                _ => bail!(
                    "the answer of {} has no `items`: is {} the query API of `unseen serve`?",
                    url.path(),
                    self.base
                ),
            };
            each(items)?;
            let next = body["next"].as_str().map(str::to_string);
            match next {
                None => return Ok(false),
                Some(_) if !all => return Ok(true),
                Some(n) if cursor.as_deref() == Some(n.as_str()) => {
                    bail!("the API gave the same `next` cursor twice ({n:?}): stopped")
                }
                Some(n) => cursor = Some(n),
            }
        }
    }

    /// A request that got no answer, with the URL and what to check.
    fn unreachable(&self, e: &reqwest::Error) -> anyhow::Error {
        let mut causes = String::new();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            let _ = write!(causes, ": {s}");
            source = s.source();
        }
        let what = if e.is_timeout() {
            "no answer in time from"
        } else {
            "cannot reach"
        };
        anyhow!(
            "{what} the API at {}{causes}; is `unseen serve` running with its API there? Pass --api-url or set UNSEEN_API_URL",
            self.base
        )
    }
}

fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_per_segment_and_the_base_path_is_kept() {
        let client = |base: &str| Client {
            http: reqwest::Client::new(),
            base: Url::parse(base).unwrap(),
            token: "t".into(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
        };
        let c = client("https://host:8443/unseen/");
        let url = c.url(
            &["api", "v1", "images", "ghcr.io", "a b", "x%y?z#w:1.0"],
            &[("q", "a&b".to_string())],
        );
        assert_eq!(
            url.as_str(),
            "https://host:8443/unseen/api/v1/images/ghcr.io/a%20b/x%25y%3Fz%23w:1.0?q=a%26b"
        );
        let url = client("http://127.0.0.1:9465").url(&["api", "v1", "incidents"], &[]);
        assert_eq!(url.as_str(), "http://127.0.0.1:9465/api/v1/incidents");
    }

    #[test]
    fn tables_cut_long_cells_and_terminal_controls() {
        let mut out = Vec::new();
        let cell = |s: &str| text(&Value::String(s.into()));
        let rows = vec![
            vec![cell("abcdefgh"), cell("x\u{1b}[2Jy")],
            vec![cell("ab"), cell("")],
        ];
        write_table(&mut out, &[("A", 5), ("B", 0)], &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "A      B\nabcd…  x\u{fffd}[2Jy\nab\n"
        );
    }

    #[test]
    fn times_accept_durations_ago() {
        assert_eq!(time_arg("since", "0").unwrap(), "1970-01-01T00:00:00Z");
        assert!(time_arg("since", "24h").is_ok());
        assert!(time_arg("since", "yesterday")
            .unwrap_err()
            .to_string()
            .contains("--since"));
    }
}
