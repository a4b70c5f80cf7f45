//! What a run did: per pass (changes, nodes/params/bytes before and after,
//! time) and the verification result; a table for people, JSON for pipelines.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::verify::VerifyReport;

#[derive(Debug, Clone, Serialize)]
pub struct ModelStats {
    /// Size of the model file (plus its external data).
    pub bytes: u64,
    pub nodes: usize,
    pub params: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    pub name: String,
    pub params: serde_json::Value,
    pub seconds: f64,
    pub nodes_before: usize,
    pub nodes_after: usize,
    /// Bytes of weights before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub params_before: u64,
    pub params_after: u64,
    /// Applied patches by label.
    pub changes: BTreeMap<String, usize>,
    /// Every applied patch is exact by construction ([`crate::patch::Patch::exact`]).
    pub exact: bool,
    pub rounds: usize,
    /// Why the driver stopped.
    pub stop: String,
    /// What the pass chose not to do, and why.
    pub notes: Vec<String>,
    /// How many runs the pipeline's memo ([`crate::verify::RunMemo::puts`])
    /// had remembered when the pass ended: the pass where the count last
    /// grew left the run verification may reuse.
    #[serde(skip)]
    pub memo_puts: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub input: ModelStats,
    pub output: Option<ModelStats>,
    pub passes: Vec<PassReport>,
    pub verify: VerifyReport,
    pub written: bool,
    pub warnings: Vec<String>,
}

/// A byte count for people: kB below a MiB, MB above.
pub fn mb(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MB", b as f64 / 1e6)
    } else {
        format!("{:.1} kB", b as f64 / 1e3)
    }
}

impl RunReport {
    /// The short summary printed for people.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<10} {:>9} {:>9} {:>12} {:>12} {:>8}",
            "pass", "nodes", "", "weights", "", "seconds"
        );
        for p in &self.passes {
            let _ = writeln!(
                s,
                "{:<10} {:>9} {:>9} {:>12} {:>12} {:>8.2}",
                p.name,
                p.nodes_before,
                format!("-> {}", p.nodes_after),
                mb(p.bytes_before),
                format!("-> {}", mb(p.bytes_after)),
                p.seconds
            );
            for (label, n) in &p.changes {
                let _ = writeln!(s, "    {n:>6} x {label}");
            }
            for note in p.notes.iter().take(8) {
                let _ = writeln!(s, "    note: {note}");
            }
            if p.notes.len() > 8 {
                let _ = writeln!(
                    s,
                    "    note: ... {} more in the JSON report",
                    p.notes.len() - 8
                );
            }
            if !p.stop.starts_with("fixpoint") {
                let _ = writeln!(s, "    stopped: {}", p.stop);
            }
        }
        if self.passes.is_empty() {
            let _ = writeln!(s, "(no passes: the model is written back unchanged)");
        }
        let _ = write!(
            s,
            "model      {} nodes, {} params, {}",
            self.input.nodes,
            self.input.params,
            mb(self.input.bytes)
        );
        if let Some(o) = &self.output {
            let ratio = o.bytes as f64 / self.input.bytes.max(1) as f64;
            let _ = write!(
                s,
                "  ->  {} nodes, {} params, {} ({:.2}x)",
                o.nodes,
                o.params,
                mb(o.bytes),
                ratio
            );
        }
        s.push('\n');
        s.push_str(&self.verify.table());
        s
    }
}
