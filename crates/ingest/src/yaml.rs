//! The pdata "golden" YAML form (`pkg/golden` in the Collector's contrib repository): OTLP/JSON
//! rendered as YAML. It exists for test fixtures, so it is read whole, and goes
//! YAML -> `serde_json::Value` -> the same structs and visiting code as OTLP/JSON lines. A
//! file of several YAML documents (`---`) is one request per document. Dimensions and
//! evidence are therefore read exactly as in OTLP/JSON.

use std::io::BufRead;

use serde::Deserialize;

use crate::detect::read_all_bounded;
use crate::json::{self, Request};
use crate::sink::{Fatal, Sink};
use crate::{IssueKind, Position, Visitor};

pub(crate) fn read<V: Visitor>(
    reader: &mut dyn BufRead,
    sink: &mut Sink<'_, V>,
) -> Result<(), Fatal> {
    let max = sink.limits.max_record_bytes;
    // The whole file is one record (see `Limits`): positions are line 1, paths say where.
    let position = Position::Line(1);
    let mut text = Vec::new();
    if !read_all_bounded(reader, &mut text, max)? {
        sink.record();
        sink.issue(
            IssueKind::MalformedRecord,
            position,
            None,
            format!(
                "YAML input is over the limit of {max} bytes (limits.max_record_bytes); \
                 OTLP YAML is read whole, use OTLP/JSON lines for large inputs"
            ),
        );
        return Ok(());
    }
    for document in serde_yaml::Deserializer::from_slice(&text) {
        let value = match serde_json::Value::deserialize(document) {
            Ok(value) => value,
            Err(error) => {
                sink.record();
                sink.issue(
                    IssueKind::MalformedRecord,
                    position,
                    None,
                    format!("not OTLP YAML: {error}"),
                );
                // After a syntax error the YAML parser cannot find the next document.
                return Ok(());
            }
        };
        if value.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        sink.record();
        // From `&Value`, strings are borrowed from the value, not copied again.
        match Request::deserialize(&value) {
            Ok(request) => json::visit(&request, position, sink),
            Err(error) => sink.issue(
                IssueKind::MalformedRecord,
                position,
                None,
                json::not_a_request(&error),
            ),
        }
    }
    Ok(())
}
