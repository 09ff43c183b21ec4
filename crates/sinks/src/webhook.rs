//! The webhook: incidents (or, in strict mode, findings) POSTed as JSON, at least once.
//!
//! # The request
//!
//! `POST <url>` with `Content-Type: application/json` and a body that is a JSON
//! **array** of records (at most [`WEBHOOK_BATCH`]), oldest first. In default mode these
//! are incidents (`docs/triage.md`): each is sent when it opens and again, with the same
//! `incident_id` and `state: "closed"`, when it closes; a finding reaches the webhook
//! through its incident, not alone ([`alerts`]). In strict mode each record is a finding,
//! exactly the object of a findings-file line. One request per batch rather than per finding: a
//! backlog after an outage drains in few requests. A receiver that answers 2xx has
//! taken the whole batch.
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
//!   used instead of the backoff (capped at [`RETRY_AFTER_CAP`]);
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

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use unseen_findings::Record;

use crate::{Failure, SinkError};

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

/// The longest `Retry-After` honoured: a receiver asking for a day would stall the
/// sink; past this the sink asks again.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(600);

/// How much of an error response's body goes into the error message.
const BODY_PREVIEW: usize = 512;

#[derive(Debug)]
pub(crate) struct WebhookSink {
    client: reqwest::Client,
    url: Url,
    /// The URL without credentials, for messages.
    shown: String,
    batch_limit: usize,
}

impl WebhookSink {
    pub(crate) fn new(url: &str, timeout: Duration) -> Result<Self, SinkError> {
        let parsed = Url::parse(url).map_err(|e| SinkError::Webhook {
            url: redact_unparsed(url),
            message: format!("not a valid URL ({e}); give an absolute http:// or https:// URL"),
        })?;
        let shown = redact(&parsed);
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(SinkError::Webhook {
                url: shown,
                message: "only http:// and https:// URLs are supported".into(),
            });
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("unseen/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SinkError::Webhook {
                url: shown.clone(),
                message: format!("cannot build the HTTP client: {}", chain(&e)),
            })?;
        Ok(WebhookSink {
            client,
            url: parsed,
            shown,
            batch_limit: WEBHOOK_BATCH,
        })
    }

    pub(crate) fn batch_limit(&self) -> usize {
        self.batch_limit
    }

    /// POSTs the batch once. `Ok` means the receiver answered 2xx.
    pub(crate) async fn post(&mut self, batch: &[(u64, Record)]) -> Result<(), Failure> {
        let findings: Vec<&Record> = batch.iter().map(|(_, r)| r).filter(|r| alerts(r)).collect();
        if findings.is_empty() {
            return Ok(());
        }
        let body = serde_json::to_vec(&findings)
            .map_err(|e| self.transient(format!("cannot encode findings: {e}")))?;
        let response = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                self.transient(format!(
                    "{}; is the receiver up and reachable?",
                    chain(&e.without_url())
                ))
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let headers = response.headers().clone();
        let preview = body_preview(response).await;
        let what = format!("answered {status}{preview}");
        Err(match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Failure {
                retry_after: retry_after(&headers, SystemTime::now()),
                ..self.transient(what)
            },
            StatusCode::PAYLOAD_TOO_LARGE => {
                let before = self.batch_limit;
                self.batch_limit = (before / 2).max(1);
                if before > 1 {
                    self.transient(format!(
                        "{what}; sending at most {} findings per request from now on",
                        self.batch_limit
                    ))
                } else {
                    self.permanent(format!("{what} for a single finding; raise the receiver's body limit"))
                }
            }
            StatusCode::REQUEST_TIMEOUT => self.transient(what),
            s if s.is_server_error() => self.transient(what),
            s if s.is_redirection() => {
                let to = headers
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?");
                self.permanent(format!(
                    "{what} redirecting to {to}; set the webhook URL to the final address (redirects are not followed)"
                ))
            }
            _ => self.permanent(format!(
                "{what}; the receiver refused the request: fix the webhook URL, its credentials or the receiver"
            )),
        })
    }

    fn transient(&self, message: String) -> Failure {
        Failure {
            error: SinkError::Webhook {
                url: self.shown.clone(),
                message,
            },
            retry_after: None,
            permanent: false,
        }
    }

    fn permanent(&self, message: String) -> Failure {
        Failure {
            permanent: true,
            ..self.transient(message)
        }
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3), capped at
/// [`RETRY_AFTER_CAP`]. An unparsable value is ignored (the backoff applies).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(RETRY_AFTER_CAP))
}

/// The start of an error response's body, for the message (`": <text>"` or empty).
async fn body_preview(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < BODY_PREVIEW {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(BODY_PREVIEW);
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {}", text.replace(['\n', '\r'], " "))
    }
}

/// An error and its causes, `a: b: c` (reqwest's own message is only the outer layer,
/// e.g. "error sending request", without the "connection refused" that explains it).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        // Some layers repeat their cause in their own message.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The URL without user info and query, for logs.
pub(crate) fn redact(url: &Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    if url.query().is_some() {
        shown.push_str("?…");
    }
    shown
}

fn redact_unparsed(url: &str) -> String {
    // Cut the query and anything before an `@`: where credentials would be.
    let no_query = url.split(['?', '#']).next().unwrap_or("");
    match no_query.rsplit_once('@') {
        Some((_, rest)) => format!("…@{rest}"),
        None => no_query.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn retry_after_seconds_dates_and_cap() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&headers("7"), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(retry_after(&headers(" 0 "), now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            retry_after(&headers(&later), now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after(&headers(&past), now), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers("86400"), now), Some(RETRY_AFTER_CAP));
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
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

    #[test]
    fn urls_are_shown_without_credentials() {
        let url = Url::parse("https://bot:hunter2@hooks.example:8443/in/x?token=s3cret").unwrap();
        assert_eq!(redact(&url), "https://hooks.example:8443/in/x?…");
        assert_eq!(redact_unparsed("htp//bot:pw@host/x?token=1"), "…@host/x");
        assert_eq!(redact_unparsed("nonsense"), "nonsense");
    }
}
