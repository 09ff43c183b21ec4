#![no_main]

use libfuzzer_sys::fuzz_target;
use unseen_ingest::Format;

fuzz_target!(|data: &[u8]| unseen_ingest_fuzz::run(data, Format::OtlpYaml));
