//! JSON report: the serde form of [`Report`], a versioned contract documented in
//! `docs/report-format.md`, with a JSON Schema (`docs/report.schema.json`) generated from
//! the same types.

use std::io;

use crate::report::{RenderOpts, Report};

pub fn write(report: &Report, out: &mut dyn io::Write, _opts: &RenderOpts) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    writeln!(out)
}

/// The JSON Schema of the report, as committed in `docs/report.schema.json`.
pub fn schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Report);
    serde_json::to_value(&schema).unwrap_or_default()
}

/// [`schema`] as pretty text with a final newline (the committed file's exact content).
pub fn schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&schema()).unwrap_or_default();
    s.push('\n');
    s
}
