//! The OTLP/gRPC receiver: `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`.
//!
//! Written out by hand instead of generated, for two reasons. The generated service
//! decodes every request into the full OTLP types (every attribute of every point of
//! every metric as owned `String`s), and unseen needs a fraction of that: here the
//! request arrives as bytes and goes to the same decoder as the files and the HTTP
//! receiver. And the framing is unseen's own, so that a request's bytes count against
//! the budget of bytes in flight as they arrive, its body arrives within the body
//! timeout, and gzip is inflated on the blocking pool (`body`), as on the HTTP receiver.
//! Responses are the real `ExportMetricsServiceResponse`, in one gRPC frame.
//!
//! What a request that no Collector sends is answered (`docs/operations.md`): another
//! `grpc-encoding` is `UNIMPLEMENTED` with `grpc-accept-encoding` (as gRPC requires); a
//! content type that is not gRPC is HTTP 415; `application/grpc+json` is
//! `UNIMPLEMENTED` (messages are protobuf here); a frame cut short, or more than one
//! message in this unary call, is `INVALID_ARGUMENT`, like any body that is not an OTLP
//! request.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::Status;
use unseen_ingest::BodyEncoding;

use crate::body;
use crate::export::Pipeline;
use crate::status::{grpc_status, Answer};

pub const RECEIVER: &str = "grpc";
pub const SERVICE: &str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// The length-prefixed message header of gRPC: a compressed flag and a 4-byte length.
const FRAME_HEADER: usize = 5;

/// The `MetricsService`, as a tower service for tonic's router.
#[derive(Clone)]
pub struct MetricsService {
    pipeline: Pipeline,
}

impl MetricsService {
    pub fn new(pipeline: Pipeline) -> Self {
        MetricsService { pipeline }
    }
}

impl NamedService for MetricsService {
    const NAME: &'static str = SERVICE;
}

impl tower::Service<Request<Body>> for MetricsService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let pipeline = self.pipeline.clone();
        Box::pin(async move { Ok(export(pipeline, request).await) })
    }
}

async fn export(pipeline: Pipeline, request: Request<Body>) -> Response<Body> {
    if request.uri().path() != EXPORT_PATH {
        return Status::unimplemented(format!(
            "unseen receives metrics only ({EXPORT_PATH}); {} is not served",
            request.uri().path()
        ))
        .into_http();
    }
    if let Some(refused) = content_type_refusal(&request) {
        crate::metrics::request(RECEIVER, "unsupported", 0, 0, 0, &[]);
        return refused;
    }
    let gzip = match encoding(request.headers()) {
        Ok(gzip) => gzip,
        Err(refused) => {
            crate::metrics::request(RECEIVER, "unsupported", 0, 0, 0, &[]);
            return refused;
        }
    };
    // Who sends, before anything of the body is read.
    let authorization = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = match pipeline.authenticate(RECEIVER, authorization) {
        Ok(token) => token,
        Err(answer) => return grpc_status(&answer).into_http(),
    };
    let message = match read_message(&pipeline, request.into_body(), gzip).await {
        Ok(message) => message,
        Err(answer) => {
            crate::metrics::request(RECEIVER, answer.outcome(), 0, 0, 0, &[]);
            return grpc_status(&answer).into_http();
        }
    };
    let (bytes, held) = message;
    match pipeline
        .export(RECEIVER, bytes, BodyEncoding::Protobuf, token, held)
        .await
    {
        Answer::Accepted { rejected, message } => ok(&Answer::response(rejected, &message)),
        answer => grpc_status(&answer).into_http(),
    }
}

/// Whether the message is gzip (`Ok(true)`), plain, or in an encoding refused here.
#[allow(clippy::result_large_err)]
fn encoding(headers: &HeaderMap) -> Result<bool, Response<Body>> {
    let value = headers
        .get("grpc-encoding")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match value.as_deref() {
        None | Some("") | Some("identity") => Ok(false),
        Some("gzip") => Ok(true),
        Some(other) => {
            let mut response = Status::unimplemented(format!(
                "grpc-encoding `{other}` is not supported: send gzip or no compression"
            ))
            .into_http();
            response.headers_mut().insert(
                "grpc-accept-encoding",
                HeaderValue::from_static("gzip,identity"),
            );
            Err(response)
        }
    }
}

/// The one message of the unary call, inflated, and what it holds of the budget.
async fn read_message(
    pipeline: &Pipeline,
    body: Body,
    gzip: bool,
) -> Result<(Bytes, crate::budget::Reservation), Answer> {
    let limits = pipeline.body_limits();
    let framed = body::BodyLimits {
        limit: limits.limit.saturating_add(FRAME_HEADER),
        ..limits
    };
    let mut held = pipeline.budget.empty();
    let body = body.map_err(|status: Status| status.message().to_string());
    let mut raw = match body::read(
        body,
        body::Announced::GrpcFrame,
        framed,
        "request message",
        &mut held,
    )
    .await
    {
        Ok(raw) => raw,
        // The limit is on the message; the frame header is gRPC's.
        Err(Answer::TooLarge(_)) => {
            return Err(body::too_large("request message", limits.limit));
        }
        Err(answer) => return Err(answer),
    };
    if raw.len() < FRAME_HEADER {
        return Err(Answer::Malformed(if raw.is_empty() {
            "the request has no gRPC message".to_string()
        } else {
            "the request ended inside its gRPC frame header (a truncated message)".to_string()
        }));
    }
    let compressed = raw.get_u8();
    let length = raw.get_u32() as usize;
    if length > limits.limit {
        return Err(body::too_large(
            &format!("request message ({length} bytes)"),
            limits.limit,
        ));
    }
    match raw.len().cmp(&length) {
        std::cmp::Ordering::Less => {
            return Err(Answer::Malformed(
                "the request ended before the length its gRPC frame states (a truncated message)"
                    .to_string(),
            ))
        }
        std::cmp::Ordering::Greater => {
            return Err(Answer::Malformed(
                "more than one message in a unary call: Export takes one request message"
                    .to_string(),
            ))
        }
        std::cmp::Ordering::Equal => {}
    }
    match (compressed, gzip) {
        (0, _) => Ok((raw, held)),
        (1, true) => {
            let (inflated, held) = body::inflate(
                raw,
                limits.limit,
                limits.budget_bytes,
                held,
                "request message",
            )
            .await;
            Ok((inflated?, held))
        }
        (1, false) => Err(Answer::Malformed(
            "the message is flagged compressed but the request has no grpc-encoding".to_string(),
        )),
        (flag, _) => Err(Answer::Malformed(format!(
            "the gRPC frame's compressed flag is {flag}; only 0 and 1 exist"
        ))),
    }
}

/// A unary answer: the message in one frame, then `grpc-status: 0`.
fn ok(message: &ExportMetricsServiceResponse) -> Response<Body> {
    let encoded = message.encode_to_vec();
    let mut frame = Vec::with_capacity(FRAME_HEADER + encoded.len());
    frame.push(0);
    frame.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    frame.extend_from_slice(&encoded);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let body = http_body_util::Full::new(Bytes::from(frame))
        .with_trailers(async move { Some(Ok(trailers)) });
    let mut response = Response::new(Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// gRPC requests are `application/grpc` or `application/grpc+proto`. Anything else is
/// refused before its body is read as a gRPC frame (which would misread a JSON or HTTP
/// body as a frame header): HTTP 415 for a content type that is not gRPC (what the gRPC
/// spec asks), `UNIMPLEMENTED` for gRPC with JSON messages.
fn content_type_refusal(request: &Request<Body>) -> Option<Response<Body>> {
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let base = content_type.split(';').next().unwrap_or("").trim();
    match base {
        "application/grpc" | "application/grpc+proto" => None,
        "application/grpc+json" => Some(
            Status::unimplemented(
                "gRPC with JSON messages is not supported: send protobuf (application/grpc), or OTLP/HTTP JSON to the HTTP receiver",
            )
            .into_http(),
        ),
        other => {
            let mut response = Status::invalid_argument(format!(
                "content type `{other}` is not gRPC: this port takes OTLP/gRPC (application/grpc, protobuf); OTLP/HTTP goes to the HTTP receiver"
            ))
            .into_http();
            *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
            Some(response)
        }
    }
}
