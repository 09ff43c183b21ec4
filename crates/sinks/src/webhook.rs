//! The webhook: incidents (or, in strict mode, findings) POSTed as JSON, at least once,
//! signed.
//!
//! # The request
//!
//! `POST <url>` with `Content-Type: application/json` and a body that is a JSON
//! **array** of records (at most [`WEBHOOK_BATCH`]), oldest first. In default mode these
//! are incidents (`docs/triage.md`): each is sent when it opens and again, with the same
//! `incident_id` and `state: "closed"`, when it closes; a finding reaches the webhook
//! through its incident, not alone ([`alerts`]). In strict mode each record is a finding,
//! exactly the object of a findings-file line. With `format = "ocsf"` each record is an
//! OCSF Detection Finding instead (`unseen_findings::ocsf`). One request per batch rather
//! than per finding: a backlog after an outage drains in few requests. A receiver that
//! answers 2xx has taken the whole batch.
//!
//! # The signature
//!
//! With a secret configured, every request carries
//!
//! - `X-Unseen-Timestamp`: the Unix time (seconds) of the attempt, and
//! - `X-Unseen-Signature: sha256=<hex>`: HMAC-SHA256 with the secret as key over the
//!   timestamp, a `.`, and the body's bytes.
//!
//! A receiver recomputes the HMAC over exactly the bytes it received, compares in
//! constant time, and rejects timestamps too far from its clock (a replayed request).
//! Custom headers (for example `Authorization: Bearer …`) are sent as configured; their
//! values never appear in logs.
//!
//! # At least once
//!
//! A batch is acknowledged in the outbox only after a 2xx. Anything else (no
//! connection, a timeout, any other status) leaves it pending and it is sent again, so
//! a receiver can see a finding more than once: after a retry of a request it actually
//! processed, or after a crash between its 2xx and the ack. Each finding's `finding_id`
//! and each incident's (`incident_id`, `state`) is deterministic; receivers de-duplicate
//! on it (an upsert keyed by it is enough).
//!
//! # Retries
//!
//! Every failure is retried after an exponential backoff with jitter (`initial_backoff`
//! doubling up to `max_backoff`), reset by the next success:
//!
//! - connection errors, timeouts, 408, 5xx: transient;
//! - 429 and 503 with `Retry-After` (seconds or an HTTP-date): the receiver's wait is
//!   used instead of the backoff (capped at [`RETRY_AFTER_CAP`](crate::http::RETRY_AFTER_CAP));
//! - 413: the batch is halved (down to one finding) for this and later requests;
//! - other 4xx and 3xx: logged as **errors** and retried with the same backoff. These
//!   mean the receiver or the URL needs fixing (a 404 path, expired credentials, a
//!   proxy redirect), not that the findings are bad: dropping them would lose findings
//!   silently, while retrying keeps them in the outbox until someone fixes the cause
//!   (`unseen_sink_errors_total` and `unseen_sink_pending` rise meanwhile). Redirects are
//!   not followed: following one would turn the POST into a GET.
//!
//! The URL may carry credentials (user info, a token in the query): logs and errors show
//! it without them.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::StatusCode;
use unseen_findings::Record;

use crate::http::{body_preview, Endpoint, HttpOptions, Secret};
use crate::{Failure, Format, SinkError};

/// What an alerting sink receives: incidents (opened, then closed), and the findings
/// that belong to none (strict mode keeps the seed's one alert per finding). A
/// default-mode finding reaches people through its incident; a suppressed finding never
/// does (it opens no incident, and is not sent alone).
pub fn alerts(record: &Record) -> bool {
    match record {
        Record::Incident(_) => true,
        Record::Finding(f) => f.triage.is_none() && f.suppressed.is_none(),
    }
}

/// Findings per request.
pub const WEBHOOK_BATCH: usize = 100;

/// The signature's headers.
pub const SIGNATURE_HEADER: &str = "x-unseen-signature";
pub const TIMESTAMP_HEADER: &str = "x-unseen-timestamp";

/// The webhook's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub url: String,
    pub format: Format,
    pub http: HttpOptions,
    /// The HMAC-SHA256 key of the signature; unsigned when `None`.
    pub secret: Option<Secret>,
    /// Extra request headers (name, value), e.g. `Authorization: Bearer …`.
    pub headers: Vec<(String, Secret)>,
}

impl WebhookConfig {
    /// JSON, unsigned, with the default timing.
    pub fn new(url: impl Into<String>) -> Self {
        WebhookConfig {
            url: url.into(),
            format: Format::Json,
            http: HttpOptions::default(),
            secret: None,
            headers: Vec::new(),
        }
    }
}

/// `sha256=<hex>` of HMAC-SHA256(`secret`, `timestamp.body`): the value of
/// [`SIGNATURE_HEADER`].
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[derive(Debug)]
pub(crate) struct WebhookSink {
    endpoint: Endpoint,
    format: Format,
    secret: Option<Secret>,
    headers: Vec<(HeaderName, HeaderValue)>,
    batch_limit: usize,
}

impl WebhookSink {
    pub(crate) fn new(config: &WebhookConfig) -> Result<Self, SinkError> {
        let endpoint = Endpoint::new("webhook", &config.url, config.http.timeout)?;
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let bad = |what: &str| SinkError::Http {
                sink: "webhook",
                url: endpoint.shown.clone(),
                message: format!("header `{name}`: {what}"),
            };
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad("not a valid header name"))?;
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|_| bad("its value is not a valid header value (control characters?)"))?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        Ok(WebhookSink {
            endpoint,
            format: config.format,
            secret: config.secret.clone(),
            headers,
            batch_limit: WEBHOOK_BATCH,
        })
    }
}

impl crate::Post for WebhookSink {
    fn batch_limit(&self) -> usize {
        self.batch_limit
    }

    /// POSTs the batch once. `Ok` means the receiver answered 2xx.
    async fn post(&mut self, batch: &[(u64, Record)]) -> Result<(), Failure> {
        let records = batch.iter().map(|(_, r)| r).filter(|r| alerts(r));
        let body = match self.format {
            Format::Json => serde_json::to_vec(&records.collect::<Vec<_>>()),
            Format::Ocsf => serde_json::to_vec(
                &records
                    .map(unseen_findings::ocsf::record)
                    .collect::<Vec<_>>(),
            ),
        }
        .map_err(|e| {
            self.endpoint
                .transient(format!("cannot encode findings: {e}"))
        })?;
        if body == b"[]" {
            return Ok(());
        }
        let mut request = self
            .endpoint
            .client
            .post(self.endpoint.url.clone())
            .header(CONTENT_TYPE, "application/json");
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        if let Some(secret) = &self.secret {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let mut sig = HeaderValue::from_str(&signature(secret.expose().as_bytes(), now, &body))
                .expect("hex is a valid header value");
            sig.set_sensitive(true);
            request = request
                .header(TIMESTAMP_HEADER, now)
                .header(SIGNATURE_HEADER, sig);
        }
        let response = self.endpoint.send(request.body(body)).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let headers = response.headers().clone();
        let what = format!("answered {status}{}", body_preview(response).await);
        Err(match status {
            StatusCode::PAYLOAD_TOO_LARGE => self.endpoint.too_large(
                &mut self.batch_limit,
                what,
                "raise the receiver's body limit",
            ),
            _ => self.endpoint.refused(
                status,
                &headers,
                what,
                "the receiver refused the request: fix the webhook URL, its credentials or the receiver",
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The primitive against RFC 4231 test case 2 (key "Jefe"), then the framing: the
    /// MAC is over `<timestamp>.<body>`.
    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        let tag = ring::hmac::sign(&key, b"what do ya want for nothing?");
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let joined = ring::hmac::sign(&key, b"1700000000.[{\"a\":1}]");
        let joined: String = joined.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            signature(b"Jefe", 1_700_000_000, b"[{\"a\":1}]"),
            format!("sha256={joined}")
        );
    }

    /// Strict mode alerts on findings, but never on a suppressed one; default mode alerts
    /// through incidents only.
    #[test]
    fn suppressed_findings_never_alert() {
        let detection = unseen_detect::Detection {
            key: unseen_normalize::Key {
                host: "h".into(),
                cluster: "c".into(),
                node: "n".into(),
                image: "i".into(),
            },
            first_seen: 1,
            last_seen: 1,
            count: 1,
            previous_seen: None,
            late: false,
            host_name: None,
            context: Default::default(),
            image_raw: None,
        };
        let strict = unseen_findings::build(&unseen_model::SEED_RULE, "strict", &detection, 2);
        assert!(alerts(&Record::Finding(Box::new(strict.clone()))));
        let mut suppressed = strict;
        suppressed.suppressed = Some(unseen_findings::Suppressed {
            rule: "r".into(),
            reason: "why".into(),
        });
        assert!(!alerts(&Record::Finding(Box::new(suppressed))));
    }
}
