#![no_main]

use libfuzzer_sys::fuzz_target;
use unseen_ingest::BodyEncoding;

// One protobuf request body, as the OTLP receivers of `unseen serve` decode it (no file
// framing): the wire walker on arbitrary bytes.
fuzz_target!(|data: &[u8]| unseen_ingest_fuzz::run_request(data, BodyEncoding::Protobuf));
