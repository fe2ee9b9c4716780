//! Results: one JSON line per measurement on stdout as it is known, and a
//! markdown table of all of them at the end.

use std::io::Write;

use serde_json::{Map, Value, json};

use crate::cli::{BenchArgs, Only};

/// One measured row.
pub struct Measurement {
    /// Which of the four measurements.
    pub kind: Only,
    /// What was run, e.g. `c=64, 10 s, 1 gateway`.
    pub setup: String,
    /// The headline figures, as a table cell.
    pub summary: String,
    /// The target for this row, if it has one.
    pub target: Option<(String, bool)>,
    /// Every figure, for the JSON line.
    pub fields: Map<String, Value>,
}

pub struct Report {
    rows: Vec<Measurement>,
    notes: Vec<String>,
    failed: bool,
    command: String,
}

impl Report {
    pub fn new(_args: &BenchArgs) -> Self {
        let notes = vec![
            "CPU figures are % of one core (2 cores = 200 %) from /proc/<pid>/stat over the measured interval; \
             `bench` is the measuring process, `workers` its client processes"
                .to_owned(),
        ];
        Self {
            rows: Vec::new(),
            notes,
            failed: false,
            command: BenchArgs::command_line(),
        }
    }

    /// Prints the JSON line now, keeps the row for the table.
    pub fn record(&mut self, measurement: Measurement) {
        let mut line = Map::new();
        line.insert("measurement".into(), json!(measurement.kind.name()));
        line.insert("setup".into(), json!(measurement.setup));
        if let Some((target, met)) = &measurement.target {
            line.insert("target".into(), json!(target));
            line.insert("target_met".into(), json!(met));
        }
        line.extend(measurement.fields.clone());
        print_line(&Value::Object(line).to_string());
        self.rows.push(measurement);
    }

    /// A note printed under the table (how a figure was obtained).
    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    pub fn failed(&mut self, kind: Only, error: &anyhow::Error) {
        self.failed = true;
        let mut fields = Map::new();
        fields.insert("error".into(), json!(format!("{error:#}")));
        self.record(Measurement {
            kind,
            setup: "—".into(),
            summary: format!("FAILED: {}", format!("{error:#}").replace('|', "/")),
            target: None,
            fields,
        });
    }

    pub fn any_failed(&self) -> bool {
        self.failed
    }

    pub fn finish(&self) {
        let mut out = String::new();
        out.push('\n');
        out.push_str("| measurement | setup | result | target |\n|---|---|---|---|\n");
        for row in &self.rows {
            let target = match &row.target {
                Some((target, true)) => format!("{target} ✅"),
                Some((target, false)) => format!("{target} ❌"),
                None => String::new(),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                row.kind.name(),
                row.setup,
                row.summary,
                target
            ));
        }
        out.push('\n');
        out.push_str(&format!(
            "Command: `{}`\n\nMachine: {}\n\n",
            self.command,
            crate::procfs::machine()
        ));
        for note in &self.notes {
            out.push_str(&format!("- {note}\n"));
        }
        print_line(&out);
    }
}

fn print_line(text: &str) {
    let mut stdout = std::io::stdout().lock();
    // stdout gone (a closed pipe) leaves nobody to report to; the run goes on.
    let _ = writeln!(stdout, "{text}");
    let _ = stdout.flush();
}

/// `12345.6` → `12,346`.
pub fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }
}
