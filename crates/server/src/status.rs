//! The answers a receiver gives, in both OTLP transports' terms.
//!
//! OTLP/HTTP errors carry a `google.rpc.Status` in the request's content type; gRPC
//! errors a status code, and for overload a `google.rpc.RetryInfo` detail that the
//! Collector's exporter reads to time its retry. The two message types are defined
//! here with prost (a few lines) rather than pulling a crate of all Google RPC types.

use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use prost::Message;

/// The outcome of one export, independent of the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Committed; `rejected` points were not used, for the reasons in `message`.
    Accepted { rejected: u64, message: String },
    /// The body is not an OTLP request (400 / INVALID_ARGUMENT). Not retryable.
    Malformed(String),
    /// Body or decompressed body over the limit (413 / RESOURCE_EXHAUSTED).
    TooLarge(String),
    /// Content type or encoding unknown (415 / INVALID_ARGUMENT).
    Unsupported(String),
    /// Overloaded or shutting down: retry after the delay (503 / UNAVAILABLE).
    Unavailable {
        message: String,
        retry_after: Duration,
    },
    /// The store failed; nothing was acknowledged: retry (503 / UNAVAILABLE).
    Failed(String),
    /// No valid bearer token (401 / UNAUTHENTICATED).
    Unauthenticated(String),
    /// A shared resource is spent (the budget of bytes in flight, the key cap, the rate
    /// of new keys): retry after the delay (429 / RESOURCE_EXHAUSTED with RetryInfo,
    /// which makes it retryable in OTLP's terms).
    Busy {
        message: String,
        retry_after: Duration,
    },
    /// The body did not arrive in time (408 / DEADLINE_EXCEEDED).
    TimedOut(String),
}

impl Answer {
    /// Metric label value.
    pub fn outcome(&self) -> &'static str {
        match self {
            Answer::Accepted { rejected: 0, .. } => "accepted",
            Answer::Accepted { .. } => "partial",
            Answer::Malformed(_) => "malformed",
            Answer::TooLarge(_) => "too_large",
            Answer::Unsupported(_) => "unsupported",
            Answer::Unavailable { .. } => "unavailable",
            Answer::Failed(_) => "failed",
            Answer::Unauthenticated(_) => "unauthenticated",
            Answer::Busy { .. } => "busy",
            Answer::TimedOut(_) => "timed_out",
        }
    }

    pub fn response(rejected: u64, message: &str) -> ExportMetricsServiceResponse {
        ExportMetricsServiceResponse {
            partial_success: (rejected > 0 || !message.is_empty()).then(|| {
                ExportMetricsPartialSuccess {
                    rejected_data_points: rejected as i64,
                    error_message: message.to_string(),
                }
            }),
        }
    }
}

/// The delay a client is told to wait when the commit queue is full.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The encoded `google.rpc.Status` with a RetryInfo detail, for `grpc-status-details-bin`.
pub fn retry_details(code: tonic::Code, message: &str, delay: Duration) -> Bytes {
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: delay.as_secs() as i64,
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    RpcStatus {
        code: code as i32,
        message: message.to_string(),
        details: vec![Any {
            type_url: RETRY_INFO_TYPE.to_string(),
            value: info.encode_to_vec(),
        }],
    }
    .encode_to_vec()
    .into()
}

/// The gRPC status for an error answer.
pub fn grpc_status(answer: &Answer) -> tonic::Status {
    match answer {
        Answer::Accepted { .. } => tonic::Status::ok(""),
        Answer::Malformed(m) | Answer::Unsupported(m) => tonic::Status::invalid_argument(m),
        Answer::TooLarge(m) => tonic::Status::resource_exhausted(m),
        Answer::Unavailable {
            message,
            retry_after,
        } => tonic::Status::with_details(
            tonic::Code::Unavailable,
            message.clone(),
            retry_details(tonic::Code::Unavailable, message, *retry_after),
        ),
        Answer::Failed(m) => tonic::Status::with_details(
            tonic::Code::Unavailable,
            m.clone(),
            retry_details(tonic::Code::Unavailable, m, RETRY_AFTER),
        ),
        Answer::Unauthenticated(m) => tonic::Status::unauthenticated(m),
        Answer::Busy {
            message,
            retry_after,
        } => tonic::Status::with_details(
            tonic::Code::ResourceExhausted,
            message.clone(),
            retry_details(tonic::Code::ResourceExhausted, message, *retry_after),
        ),
        Answer::TimedOut(m) => tonic::Status::deadline_exceeded(m),
    }
}

/// OTLP JSON of a response: `{}` or `{"partialSuccess":{...}}` (int64 as a string, as
/// the OTLP JSON mapping writes it).
pub fn response_json(rejected: u64, message: &str) -> String {
    if rejected == 0 && message.is_empty() {
        return "{}".to_string();
    }
    serde_json::json!({
        "partialSuccess": {
            "rejectedDataPoints": rejected.to_string(),
            "errorMessage": message,
        }
    })
    .to_string()
}

/// OTLP JSON of a `google.rpc.Status`.
pub fn status_json(code: tonic::Code, message: &str) -> String {
    serde_json::json!({ "code": code as i32, "message": message }).to_string()
}
