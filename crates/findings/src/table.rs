//! A readable table for terminals.

use crate::Finding;

const COLUMNS: [&str; 7] = [
    "FIRST SEEN",
    "CLUSTER",
    "HOST",
    "NODE",
    "IMAGE",
    "COUNT",
    "PREVIOUS",
];

/// Renders findings as aligned columns, with a trailing count line.
pub fn render_table(findings: &[Finding]) -> String {
    let rows: Vec<[String; 7]> = findings
        .iter()
        .map(|f| {
            [
                f.first_seen.clone(),
                f.cluster.clone(),
                f.host.clone(),
                f.node.clone(),
                f.image.clone(),
                f.count.to_string(),
                f.previous_seen.clone().unwrap_or_else(|| "never".into()),
            ]
        })
        .collect();
    let mut widths = COLUMNS.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&COLUMNS);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    let n = findings.len();
    out.push_str(&format!("{n} finding{}\n", if n == 1 { "" } else { "s" }));
    out
}
