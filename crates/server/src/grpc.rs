//! The OTLP/gRPC receiver: `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`.
//!
//! Written out by hand instead of generated, for one reason: the generated service
//! decodes every request into the full OTLP types (every attribute of every point of
//! every metric as owned `String`s), and unseen needs a fraction of that. Here the
//! request arrives as bytes and goes to the same decoder as the files and the HTTP
//! receiver. Responses are the real `ExportMetricsServiceResponse`.
//!
//! Compression (gzip) and the message size limit (on the received and on the
//! decompressed size) are tonic's. What a request that no Collector sends is answered
//! (`docs/operations.md`): another `grpc-encoding` is `UNIMPLEMENTED` with
//! `grpc-accept-encoding` (as gRPC requires); a content type that is not gRPC is HTTP 415;
//! `application/grpc+json` is `UNIMPLEMENTED` (messages are protobuf here); a frame cut
//! short is `INVALID_ARGUMENT`, like any body that is not an OTLP request.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::{HeaderValue, Request, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;
use tonic::body::Body;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::Status;
use unseen_ingest::BodyEncoding;

use crate::export::Pipeline;
use crate::status::{grpc_status, Answer};

pub const RECEIVER: &str = "grpc";
pub const SERVICE: &str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// The `MetricsService`, as a tower service for tonic's router.
#[derive(Clone)]
pub struct MetricsService {
    pipeline: Pipeline,
    max_body_bytes: usize,
}

impl MetricsService {
    pub fn new(pipeline: Pipeline, max_body_bytes: usize) -> Self {
        MetricsService {
            pipeline,
            max_body_bytes,
        }
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
        let this = self.clone();
        Box::pin(async move {
            if request.uri().path() != EXPORT_PATH {
                return Ok(Status::unimplemented(format!(
                    "unseen receives metrics only ({EXPORT_PATH}); {} is not served",
                    request.uri().path()
                ))
                .into_http());
            }
            if let Some(refused) = content_type_refusal(&request) {
                crate::metrics::request(RECEIVER, "unsupported", 0, 0, 0, &[]);
                return Ok(refused);
            }
            let limit = this.max_body_bytes;
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            let mut grpc = Grpc::new(RawCodec)
                .apply_compression_config(accept, EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(limit), None);
            let mut response = grpc.unary(Export(this.pipeline), request).await;
            size_status(&mut response, limit);
            truncated_status(&mut response);
            Ok(response)
        })
    }
}

/// gRPC requests are `application/grpc` or `application/grpc+proto`. Anything else is
/// refused before tonic reads it as a gRPC frame (which would misread a JSON or HTTP
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

/// A frame whose message ends before its stated length: tonic answers `INTERNAL`
/// ("Unexpected EOF decoding stream"); for the sender it is a request that is not an
/// OTLP request, `INVALID_ARGUMENT` as documented. The export handler itself never
/// answers `INTERNAL` with that message.
fn truncated_status(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    let internal = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        == Some(tonic::Code::Internal as i32);
    let eof = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.contains("Unexpected%20EOF") || m.contains("Unexpected EOF"));
    if internal && eof {
        headers.insert(
            "grpc-status",
            HeaderValue::from(tonic::Code::InvalidArgument as i32),
        );
        let message =
            "the request ended before the length its gRPC frame states (a truncated message)";
        if let Ok(message) = HeaderValue::from_str(&percent_encode(message)) {
            headers.insert("grpc-message", message);
        }
    }
}

/// tonic refuses a message over the limit itself: OUT_OF_RANGE when its *received*
/// length is over, RESOURCE_EXHAUSTED with its own text when its *decompressed* size
/// is. OTLP says RESOURCE_EXHAUSTED for both, and the sender needs to know which
/// setting refused it. The export handler never answers RESOURCE_EXHAUSTED itself, so
/// either code here comes from the size checks.
fn size_status(response: &mut Response<Body>, limit: usize) {
    let headers = response.headers_mut();
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok());
    let what = match code {
        Some(c) if c == tonic::Code::OutOfRange as i32 => "request message",
        Some(c) if c == tonic::Code::ResourceExhausted as i32 => "decompressed request message",
        _ => return,
    };
    let message = format!(
        "{what} is over the limit of {limit} bytes (limits.max_body_bytes); send smaller batches (the Collector's batch processor: send_batch_max_size)"
    );
    headers.insert(
        "grpc-status",
        HeaderValue::from(tonic::Code::ResourceExhausted as i32),
    );
    if let Ok(message) = HeaderValue::from_str(&percent_encode(&message)) {
        headers.insert("grpc-message", message);
    }
}

/// gRPC's `grpc-message` percent-encoding (the message here is ASCII; `%` and
/// controls are the characters to escape).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Export(Pipeline);

impl UnaryService<Bytes> for Export {
    type Response = ExportMetricsServiceResponse;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<tonic::Response<Self::Response>, Status>>
                + Send,
        >,
    >;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let pipeline = self.0.clone();
        Box::pin(async move {
            let authorization = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            let token = match pipeline.authenticate(RECEIVER, authorization) {
                Ok(token) => token,
                Err(answer) => return Err(grpc_status(&answer)),
            };
            let body = request.into_inner();
            match pipeline
                .export(RECEIVER, body, BodyEncoding::Protobuf, token)
                .await
            {
                Answer::Accepted { rejected, message } => {
                    Ok(tonic::Response::new(Answer::response(rejected, &message)))
                }
                answer => Err(grpc_status(&answer)),
            }
        })
    }
}

/// Requests as raw bytes, responses as prost messages.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = ExportMetricsServiceResponse;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = ExportMetricsServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the response: {e}")))
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_escapes_percent_and_non_ascii() {
        assert_eq!(percent_encode("a 100% é"), "a 100%25 %C3%A9");
    }
}
