#![no_main]

use libfuzzer_sys::fuzz_target;

// The fast decoders against the plain ones they replaced: the first byte chooses the mode
// (framed protobuf file, one protobuf request body, CSV, auto-detection), and both must give
// the same points, issues, counts and findings (`unseen_ingest_fuzz::differential`).
fuzz_target!(|data: &[u8]| {
    if let Err(difference) = unseen_ingest_fuzz::differential::check(data) {
        panic!("the fast and the plain decoders disagree: {difference}");
    }
});
