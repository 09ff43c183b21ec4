//! The OTLP/gRPC receiver: `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`.
//!
//! Written out by hand instead of generated, for one reason: the generated service
//! decodes every request into the full OTLP types (every attribute of every point of
//! every metric as owned `String`s), and unseen needs a fraction of that. Here the
//! request arrives as bytes and goes to the same decoder as the files and the HTTP
//! receiver. Responses are the real `ExportMetricsServiceResponse`.
//!
//! Compression (gzip) and the message size limit (on the received and on the
//! decompressed size) are tonic's.

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
            let limit = this.max_body_bytes;
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            let mut grpc = Grpc::new(RawCodec)
                .apply_compression_config(accept, EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(limit), None);
            let mut response = grpc.unary(Export(this.pipeline), request).await;
            size_status(&mut response, limit);
            Ok(response)
        })
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
            let body = request.into_inner();
            match pipeline
                .export(RECEIVER, body, BodyEncoding::Protobuf)
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
