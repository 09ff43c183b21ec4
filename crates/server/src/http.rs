//! The OTLP/HTTP receiver: `POST /v1/metrics`, protobuf or JSON, optionally gzip.
//!
//! The body limit holds twice: on the bytes received (checked against
//! `Content-Length` before reading, and while reading for chunked bodies) and on the
//! decompressed bytes (a gzip bomb stops at the limit, it is never inflated whole).
//! Both count against the budget of bytes in flight, and the body arrives within the
//! body timeout (`body`).

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use prost::Message;
use unseen_ingest::BodyEncoding;

use crate::body;
use crate::budget::Reservation;
use crate::export::Pipeline;
use crate::status::{response_json, status_json, Answer, RpcStatus, RETRY_AFTER};

pub const RECEIVER: &str = "http";
pub const PATH: &str = "/v1/metrics";

#[derive(Clone)]
struct HttpState {
    pipeline: Pipeline,
}

pub fn router(pipeline: Pipeline) -> Router {
    Router::new()
        .route(PATH, post(export))
        .with_state(HttpState { pipeline })
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
    let pipeline = &state.pipeline;
    let answer = match read_body(&headers, body, pipeline).await {
        Ok((bytes, held)) => {
            pipeline
                .export(RECEIVER, bytes, encoding, token, held)
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

/// The body, decompressed, within the limit and the budget, and what it holds of the
/// budget (until the request is answered).
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    pipeline: &Pipeline,
) -> Result<(Bytes, Reservation), Answer> {
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
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|v| usize::try_from(v).unwrap_or(usize::MAX));
    let limits = pipeline.body_limits();
    let mut held = pipeline.budget.empty();
    // Refused on its announced length, or for want of budget for it: the answer says so
    // before the body is read, and the body is drained (a bounded amount, never kept) so
    // that the sender sees the answer rather than a reset.
    let refused = match length {
        Some(l) if l > limits.limit => Some(body::too_large(
            &format!("request body ({l} bytes)"),
            limits.limit,
        )),
        Some(l) => body::hold_announced(l, limits, &mut held).err(),
        None => None,
    };
    if let Some(answer) = refused {
        drain(body).await;
        return Err(answer);
    }
    let announced = match length {
        Some(l) => body::Announced::Held(l),
        None => body::Announced::No,
    };
    let raw = body::read(body, announced, limits, "request body", &mut held).await?;
    if !gzip {
        return Ok((raw, held));
    }
    let (inflated, held) =
        body::inflate(raw, limits.limit, limits.budget_bytes, held, "request body").await;
    Ok((inflated?, held))
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
        Answer::Busy { message, .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::ResourceExhausted,
            message,
        ),
        Answer::TimedOut(m) => (
            StatusCode::REQUEST_TIMEOUT,
            tonic::Code::DeadlineExceeded,
            m,
        ),
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
        Answer::Unavailable { retry_after, .. } | Answer::Busy { retry_after, .. } => {
            Some(*retry_after)
        }
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
