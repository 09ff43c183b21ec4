//! What the HTTP sinks (webhook, Splunk HEC, Alertmanager) share: the client, secrets
//! that never reach a log, how an answer is classified, and URLs shown without
//! credentials.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use crate::{Failure, SinkError};

/// The longest `Retry-After` honoured: a receiver asking for a day would stall the
/// sink; past this the sink asks again.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(600);

/// The longest secret file read.
const MAX_SECRET_BYTES: u64 = 4096;

/// How much of an error response's body goes into the error message.
const BODY_PREVIEW: usize = 512;

/// A credential (a token, an HMAC key, a header value): compared and used, never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, to use it (never to log it).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Reads a secret from a file (a token, an HMAC key): its trimmed content, which must
/// not be empty.
pub fn read_secret_file(path: &Path) -> Result<Secret, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET_BYTES).read_to_string(&mut text))
        .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "the secret file {} is empty; put the token or key in it",
            path.display()
        ));
    }
    Ok(Secret::new(token))
}

/// Timing of an HTTP sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpOptions {
    /// Per-request timeout.
    pub timeout: Duration,
    /// First retry delay; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for HttpOptions {
    /// 10 s per request, backoff from 500 ms to 60 s.
    fn default() -> Self {
        HttpOptions {
            timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// A receiver: its client and URL, and the URL as logs show it.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub sink: &'static str,
    pub client: reqwest::Client,
    pub url: Url,
    /// The URL without credentials, for messages.
    pub shown: String,
}

impl Endpoint {
    pub(crate) fn new(sink: &'static str, url: &str, timeout: Duration) -> Result<Self, SinkError> {
        let parsed = Url::parse(url).map_err(|e| SinkError::Http {
            sink,
            url: redact_unparsed(url),
            message: format!("not a valid URL ({e}); give an absolute http:// or https:// URL"),
        })?;
        let shown = redact(&parsed);
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(SinkError::Http {
                sink,
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
            .map_err(|e| SinkError::Http {
                sink,
                url: shown.clone(),
                message: format!("cannot build the HTTP client: {}", chain(&e)),
            })?;
        Ok(Endpoint {
            sink,
            client,
            url: parsed,
            shown,
        })
    }

    /// This endpoint with `path` in place of the URL's path (kept when it is already
    /// `path`, so a full URL works too).
    pub(crate) fn with_path(mut self, path: &str) -> Self {
        let current = self.url.path().trim_end_matches('/');
        if !current.ends_with(path.trim_end_matches('/')) {
            let joined = format!("{current}{path}");
            self.url.set_path(&joined);
            self.shown = redact(&self.url);
        }
        self
    }

    pub(crate) fn transient(&self, message: String) -> Failure {
        Failure {
            error: SinkError::Http {
                sink: self.sink,
                url: self.shown.clone(),
                message,
            },
            retry_after: None,
            permanent: false,
        }
    }

    pub(crate) fn permanent(&self, message: String) -> Failure {
        Failure {
            permanent: true,
            ..self.transient(message)
        }
    }

    /// 413: halves `batch_limit` (down to 1) for this and later requests; at 1 the
    /// receiver's limit must be raised (`fix`).
    pub(crate) fn too_large(&self, batch_limit: &mut usize, what: String, fix: &str) -> Failure {
        let before = *batch_limit;
        *batch_limit = (before / 2).max(1);
        if before > 1 {
            self.transient(format!(
                "{what}; sending at most {batch_limit} records per request from now on"
            ))
        } else {
            self.permanent(format!("{what} for a single record; {fix}"))
        }
    }

    /// Sends a request; a failure to get any answer is transient.
    pub(crate) async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Failure> {
        request.send().await.map_err(|e| {
            self.transient(format!(
                "{}; is the receiver up and reachable?",
                chain(&e.without_url())
            ))
        })
    }

    /// A non-2xx answer that the sink has no special case for: 429 and 503 honour
    /// `Retry-After`; 408 and 5xx are transient; redirects and other 4xx are permanent
    /// (someone must fix the URL, the credentials or the receiver), and retried all the
    /// same, since dropping records would lose them silently. `what` is the status and
    /// the body's start; `hint` says what to fix.
    pub(crate) fn refused(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        what: String,
        hint: &str,
    ) -> Failure {
        match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Failure {
                retry_after: retry_after(headers, SystemTime::now()),
                ..self.transient(what)
            },
            StatusCode::REQUEST_TIMEOUT => self.transient(what),
            s if s.is_server_error() => self.transient(what),
            s if s.is_redirection() => {
                let to = headers
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?");
                self.permanent(format!(
                    "{what} redirecting to {to}; set the URL to the final address (redirects are not followed)"
                ))
            }
            _ => self.permanent(format!("{what}; {hint}")),
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
pub(crate) async fn body_preview(mut response: reqwest::Response) -> String {
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
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
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

/// A URL as logs and printed settings show it: without user info and query (where
/// credentials go). Text that is not a URL is cut at `?` and after the last `@`.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(parsed) => redact(&parsed),
        Err(_) => redact_unparsed(url),
    }
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

pub(crate) fn redact_unparsed(url: &str) -> String {
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

    #[test]
    fn urls_are_shown_without_credentials() {
        let url = Url::parse("https://bot:hunter2@hooks.example:8443/in/x?token=s3cret").unwrap();
        assert_eq!(redact(&url), "https://hooks.example:8443/in/x?…");
        assert_eq!(redact_unparsed("htp//bot:pw@host/x?token=1"), "…@host/x");
        assert_eq!(redact_unparsed("nonsense"), "nonsense");
    }

    #[test]
    fn secrets_are_not_shown() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(…)");
    }
}
