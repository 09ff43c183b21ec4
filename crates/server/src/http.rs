//! The OTLP/HTTP receiver: `POST /v1/metrics`, protobuf or JSON, optionally gzip.
//!
//! The body limit holds twice: on the bytes received (checked against
//! `Content-Length` before reading, and while reading for chunked bodies) and on the
//! decompressed bytes (a gzip bomb stops at the limit, it is never inflated whole).

use std::io::Read;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use prost::Message;
use unseen_ingest::BodyEncoding;

use crate::export::Pipeline;
use crate::status::{response_json, status_json, Answer, RpcStatus, RETRY_AFTER};

pub const RECEIVER: &str = "http";
pub const PATH: &str = "/v1/metrics";

#[derive(Clone)]
struct HttpState {
    pipeline: Pipeline,
    max_body_bytes: usize,
}

pub fn router(pipeline: Pipeline, max_body_bytes: usize) -> Router {
    Router::new()
        .route(PATH, post(export))
        .with_state(HttpState {
            pipeline,
            max_body_bytes,
        })
}

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

async fn export(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    // Until the content type is known, errors are answered in protobuf, the OTLP default.
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let encoding = match media.as_str() {
        PROTOBUF => BodyEncoding::Protobuf,
        JSON => BodyEncoding::Json,
        _ => {
            let answer = Answer::Unsupported(format!(
                "Content-Type `{content_type}` is not supported: send `{PROTOBUF}` or `{JSON}`"
            ));
            crate::metrics::request(RECEIVER, answer.outcome(), 0, 0, 0, &[]);
            return respond(&answer, BodyEncoding::Protobuf);
        }
    };
    // Who sends, before anything of the body is read.
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = match state.pipeline.authenticate(RECEIVER, authorization) {
        Ok(token) => token,
        Err(answer) => {
            drain(body).await;
            return respond(&answer, encoding);
        }
    };
    let answer = match read_body(&headers, body, state.max_body_bytes).await {
        Ok(bytes) => {
            state
                .pipeline
                .export(RECEIVER, bytes, encoding, token)
                .await
        }
        Err(answer) => {
            crate::metrics::request(RECEIVER, answer.outcome(), 0, 0, 0, &[]);
            answer
        }
    };
    respond(&answer, encoding)
}

/// How much of a body refused by its `Content-Length` is read (and dropped) before the
/// answer, and for how long at most. A server that answers and closes while the sender
/// is still sending resets the connection, and the sender sees a reset instead of the 413
/// that says what to change; reading a bounded amount first lets the answer arrive.
/// Beyond these bounds the connection is closed anyway.
const DRAIN_MAX_BYTES: usize = 8 << 20;
const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(2);

async fn drain(mut body: Body) {
    use http_body_util::BodyExt;
    let mut read = 0usize;
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |d| d.len());
            if read > DRAIN_MAX_BYTES {
                break;
            }
        }
    })
    .await;
}

/// The body, decompressed, within the limit.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Answer> {
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("identity") => false,
        Some("gzip") | Some("x-gzip") => true,
        Some(other) => {
            return Err(Answer::Unsupported(format!(
                "Content-Encoding `{other}` is not supported: send `gzip` or no encoding"
            )))
        }
    };
    let too_large = |what: &str| {
        Answer::TooLarge(format!(
            "{what} is over the limit of {limit} bytes (limits.max_body_bytes); send smaller batches (the Collector's batch processor: send_batch_max_size)"
        ))
    };
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if length > limit as u64 {
            drain(body).await;
            return Err(too_large(&format!("request body ({length} bytes)")));
        }
    }
    let raw = match axum::body::to_bytes(body, limit).await {
        Ok(raw) => raw,
        Err(error) => {
            let over = std::error::Error::source(&error)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return Err(if over {
                too_large("request body")
            } else {
                Answer::Malformed(format!("cannot read the request body: {error}"))
            });
        }
    };
    if !gzip {
        return Ok(raw);
    }
    gunzip(&raw, limit).map_err(|e| match e {
        GunzipError::TooLarge => too_large("decompressed request body"),
        GunzipError::Corrupt(message) => {
            Answer::Malformed(format!("request body is not valid gzip: {message}"))
        }
    })
}

#[derive(Debug)]
pub(crate) enum GunzipError {
    TooLarge,
    Corrupt(String),
}

/// Inflates at most `limit` bytes; one byte more and it stops.
pub(crate) fn gunzip(compressed: &[u8], limit: usize) -> Result<Bytes, GunzipError> {
    let decoder = flate2::read::MultiGzDecoder::new(compressed);
    let mut out = Vec::with_capacity((compressed.len() * 4).min(limit));
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| GunzipError::Corrupt(e.to_string()))?;
    if out.len() > limit {
        return Err(GunzipError::TooLarge);
    }
    Ok(out.into())
}

fn respond(answer: &Answer, encoding: BodyEncoding) -> Response {
    let (status, code, message) = match answer {
        Answer::Accepted { rejected, message } => {
            let body = match encoding {
                BodyEncoding::Protobuf => Answer::response(*rejected, message).encode_to_vec(),
                BodyEncoding::Json => response_json(*rejected, message).into_bytes(),
            };
            return with_type(StatusCode::OK, body, encoding).into_response();
        }
        Answer::Malformed(m) => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument, m),
        Answer::Unsupported(m) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            tonic::Code::InvalidArgument,
            m,
        ),
        Answer::TooLarge(m) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            tonic::Code::ResourceExhausted,
            m,
        ),
        Answer::Unavailable { message, .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::Unavailable,
            message,
        ),
        Answer::Failed(m) => (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable, m),
        Answer::Unauthenticated(m) => (StatusCode::UNAUTHORIZED, tonic::Code::Unauthenticated, m),
    };
    let body = match encoding {
        BodyEncoding::Protobuf => RpcStatus {
            code: code as i32,
            message: message.clone(),
            details: Vec::new(),
        }
        .encode_to_vec(),
        BodyEncoding::Json => status_json(code, message).into_bytes(),
    };
    let mut response = with_type(status, body, encoding).into_response();
    let retry_after = match answer {
        Answer::Unavailable { retry_after, .. } => Some(*retry_after),
        Answer::Failed(_) => Some(RETRY_AFTER),
        _ => None,
    };
    if matches!(answer, Answer::Unauthenticated(_)) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(delay) = retry_after {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(delay.as_secs().max(1)),
        );
    }
    response
}

fn with_type(status: StatusCode, body: Vec<u8>, encoding: BodyEncoding) -> impl IntoResponse {
    let content_type = match encoding {
        BodyEncoding::Protobuf => PROTOBUF,
        BodyEncoding::Json => JSON,
    };
    (status, [(header::CONTENT_TYPE, content_type)], body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gunzip_stops_one_byte_past_the_limit() {
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 20 << 10, "a real bomb: {} bytes", bomb.len());
        assert!(matches!(gunzip(&bomb, 1 << 20), Err(GunzipError::TooLarge)));
        assert_eq!(gunzip(&bomb, 10 << 20).unwrap().len(), 10 << 20);
    }

    #[test]
    fn gunzip_reports_corrupt_input() {
        let mut data = gzip(b"hello world, hello world");
        let n = data.len();
        data.truncate(n - 6);
        match gunzip(&data, 1 << 20) {
            Err(GunzipError::Corrupt(m)) => assert!(!m.is_empty()),
            other => panic!("expected corrupt, got {other:?}"),
        }
    }
}
