//! Splunk HTTP Event Collector: findings as Splunk ES risk events, and incidents, at
//! least once.
//!
//! # The request
//!
//! `POST <hec_url>/services/collector/event` with `Authorization: Splunk <token>`,
//! `Content-Encoding: gzip` and a body of JSON envelopes, one per line (HEC's event
//! protocol: concatenated objects, not an array), at most [`HEC_BATCH`] per request:
//!
//! ```json
//! {"time":1686772769,"host":"node-1","source":"unseen","sourcetype":"unseen:finding","index":"main","event":{…}}
//! ```
//!
//! - A finding's `event` is the finding (`docs/findings.md`) plus
//!   `annotations.mitre_attack`: with `risk_object`, `risk_object_type`, `risk_score`,
//!   `risk_message` and `search_name` already in it, this is the risk event Splunk ES's
//!   risk-based alerting reads. `time` is the episode's first point, `host` its host
//!   (the risk object).
//! - An incident's `event` is the incident (`docs/triage.md`), sourcetype
//!   `unseen:incident` by default ([`HecConfig::incident_sourcetype`]), `time` when it
//!   opened or closed.
//! - Suppressed findings are not sent: they are not risk (the seed's filter macro drops
//!   them before ES sees them). They stay in the findings file.
//!
//! # Answers, as HEC documents them
//!
//! | answer | what the sink does |
//! | --- | --- |
//! | 200, code 0 | acknowledged |
//! | 503, code 9 (server busy) | retried after `Retry-After` or the backoff |
//! | 401 code 2/3, 403 code 4 (no, malformed or invalid token) | **not retried with that token**: an error says so, the records stay pending, and the sink re-reads the token file before each later attempt, sending again only once the token in it changed (no restart needed) |
//! | 400 code 7 (incorrect index) | an error naming `hec_index`; retried with the backoff until fixed |
//! | 400 codes 5, 6, 12, 13 (no data, bad format, event missing or blank) | an error (a bug of unseen's: please report it); retried with the backoff |
//! | 413 | the batch is halved, down to one event |
//! | other 4xx, 3xx / 5xx, no answer | as the webhook: errors retried / transient |
//!
//! Nothing is acknowledged before a 200, so nothing is lost; a request Splunk took whose
//! answer was lost is sent again (de-duplicate on `event.finding_id`).

use std::io::Write;
use std::path::PathBuf;

use flate2::write::GzEncoder;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use unseen_findings::{IncidentState, Record};

use crate::http::{body_preview, read_secret_file, Endpoint, HttpOptions, Secret};
use crate::{Failure, SinkError};

/// Events per request.
pub const HEC_BATCH: usize = 100;

/// The event endpoint's path, added to `hec_url` unless it ends with it.
pub const EVENT_PATH: &str = "/services/collector/event";

/// The HEC sink's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HecConfig {
    /// The collector's base URL (`https://splunk.example:8088`), or the full event URL.
    pub url: String,
    /// A file holding the HEC token (surrounding whitespace ignored); re-read after
    /// Splunk refuses the token, so it can be rotated without a restart.
    pub token_file: PathBuf,
    /// The index; the token's default index when `None`.
    pub index: Option<String>,
    /// The findings' sourcetype; incidents get `<sourcetype>:incident`.
    pub sourcetype: String,
    pub source: String,
    pub http: HttpOptions,
}

impl HecConfig {
    pub fn new(url: impl Into<String>, token_file: impl Into<PathBuf>) -> Self {
        HecConfig {
            url: url.into(),
            token_file: token_file.into(),
            index: None,
            sourcetype: "unseen:finding".into(),
            source: "unseen".into(),
            http: HttpOptions::default(),
        }
    }

    /// The sourcetype of incidents: the findings' with `:finding` replaced by
    /// `:incident` (or `:incident` added).
    pub fn incident_sourcetype(&self) -> String {
        match self.sourcetype.strip_suffix(":finding") {
            Some(base) => format!("{base}:incident"),
            None => format!("{}:incident", self.sourcetype),
        }
    }
}

#[derive(Debug)]
pub(crate) struct HecSink {
    endpoint: Endpoint,
    config: HecConfig,
    incident_sourcetype: String,
    token: Secret,
    /// The token Splunk refused: not sent again.
    refused: Option<Secret>,
    batch_limit: usize,
}

/// What HEC answers: `{"text": "...", "code": N}`.
fn hec_answer(preview: &str) -> Option<(i64, String)> {
    let body = preview.strip_prefix(": ")?;
    let v: Value = serde_json::from_str(body).ok()?;
    Some((
        v.get("code")?.as_i64()?,
        v.get("text")?.as_str()?.to_string(),
    ))
}

impl HecSink {
    pub(crate) fn new(config: &HecConfig) -> Result<Self, SinkError> {
        let endpoint =
            Endpoint::new("hec", &config.url, config.http.timeout)?.with_path(EVENT_PATH);
        let token = read_secret_file(&config.token_file).map_err(|message| SinkError::Http {
            sink: "hec",
            url: endpoint.shown.clone(),
            message,
        })?;
        Ok(HecSink {
            endpoint,
            incident_sourcetype: config.incident_sourcetype(),
            config: config.clone(),
            token,
            refused: None,
            batch_limit: HEC_BATCH,
        })
    }

    /// The envelopes of a batch, one per line.
    pub(crate) fn body(&self, batch: &[(u64, Record)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (_, record) in batch {
            let envelope = match record {
                Record::Finding(f) if f.suppressed.is_some() => continue,
                Record::Finding(f) => {
                    let mut event = serde_json::to_value(f).unwrap_or(Value::Null);
                    if let Value::Object(map) = &mut event {
                        map.insert(
                            "annotations".into(),
                            json!({ "mitre_attack": f.rule.mitre_attack }),
                        );
                    }
                    let time = unseen_model::parse_time(&f.first_seen).unwrap_or(0);
                    self.envelope(time, &f.host, &self.config.sourcetype, event)
                }
                Record::Incident(i) => {
                    let at = match i.state {
                        IncidentState::Open => &i.detected_at,
                        IncidentState::Closed => i.closed_at.as_ref().unwrap_or(&i.closes_at),
                    };
                    let time = unseen_model::parse_time(at).unwrap_or(0);
                    let host = i
                        .risk_object
                        .as_deref()
                        .or(i.node.as_deref())
                        .or(i.cluster.as_deref())
                        .unwrap_or("unseen");
                    let event = serde_json::to_value(i).unwrap_or(Value::Null);
                    self.envelope(time, host, &self.incident_sourcetype, event)
                }
            };
            // Plain strings and numbers: cannot fail.
            serde_json::to_writer(&mut out, &envelope).unwrap_or_default();
            out.push(b'\n');
        }
        out
    }

    fn envelope(&self, time: i64, host: &str, sourcetype: &str, event: Value) -> Value {
        let mut e = json!({
            "time": time,
            "host": host,
            "source": self.config.source,
            "sourcetype": sourcetype,
            "event": event,
        });
        if let (Some(index), Value::Object(map)) = (&self.config.index, &mut e) {
            map.insert("index".into(), Value::String(index.clone()));
        }
        e
    }
}

impl crate::Post for HecSink {
    fn batch_limit(&self) -> usize {
        self.batch_limit
    }

    /// POSTs the batch once. `Ok` means HEC answered 200.
    async fn post(&mut self, batch: &[(u64, Record)]) -> Result<(), Failure> {
        let body = self.body(batch);
        if body.is_empty() {
            return Ok(());
        }
        if let Some(refused) = &self.refused {
            // Not again with the token Splunk refused: only with a new one.
            match read_secret_file(&self.config.token_file) {
                Ok(token) if &token != refused => {
                    self.token = token;
                    self.refused = None;
                    tracing::info!(sink = "hec", "the HEC token file changed; sending again");
                }
                Ok(_) => {
                    return Err(self.endpoint.permanent(format!(
                        "Splunk refused the token in {}; waiting for a new token in that file (nothing is sent meanwhile; the events stay pending)",
                        self.config.token_file.display()
                    )))
                }
                Err(message) => return Err(self.endpoint.permanent(message)),
            }
        }
        let mut gz = GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::fast(),
        );
        let compressed = gz
            .write_all(&body)
            .and_then(|()| gz.finish())
            .map_err(|e| {
                self.endpoint
                    .transient(format!("cannot compress the batch: {e}"))
            })?;
        let request = self
            .endpoint
            .client
            .post(self.endpoint.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_ENCODING, "gzip")
            .header(AUTHORIZATION, {
                let mut v = reqwest::header::HeaderValue::from_str(&format!(
                    "Splunk {}",
                    self.token.expose()
                ))
                .map_err(|_| {
                    self.endpoint.permanent(format!(
                        "the token in {} is not a valid header value",
                        self.config.token_file.display()
                    ))
                })?;
                v.set_sensitive(true);
                v
            })
            .body(compressed);
        let response = self.endpoint.send(request).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let headers = response.headers().clone();
        let preview = body_preview(response).await;
        let answer = hec_answer(&preview);
        let what = format!("answered {status}{preview}");
        let code = answer.as_ref().map(|(c, _)| *c);
        Err(match (status, code) {
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => {
                self.refused = Some(self.token.clone());
                self.endpoint.permanent(format!(
                    "{what}: Splunk refused the HEC token; put a valid, enabled token in {} (it is re-read; nothing is sent with the refused one)",
                    self.config.token_file.display()
                ))
            }
            (StatusCode::BAD_REQUEST, Some(7)) => self.endpoint.permanent(format!(
                "{what}: the index {:?} is not one this token may write to; fix hec_index or the token's allowed indexes",
                self.config.index.as_deref().unwrap_or("(the token's default)")
            )),
            (StatusCode::BAD_REQUEST, Some(5 | 6 | 12 | 13)) => self.endpoint.permanent(format!(
                "{what}: Splunk could not read the events unseen sent; this is a bug of unseen's, please report it"
            )),
            (StatusCode::PAYLOAD_TOO_LARGE, _) => self.endpoint.too_large(
                &mut self.batch_limit,
                what,
                "raise HEC's max_content_length",
            ),
            _ => self.endpoint.refused(
                status,
                &headers,
                what,
                "HEC refused the request: check hec_url (the collector's address) and the token",
            ),
        })
    }
}
