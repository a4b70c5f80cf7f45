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
    /// Bytes of its tensor payloads ([`crate::ir::Model::weight_bytes`]);
    /// the rest of `bytes` is the graph's structure and the metadata.
    pub weight_bytes: u64,
    /// Bytes of the model's metadata ([`crate::ir::Model::metadata_bytes`]).
    pub metadata_bytes: u64,
}

/// Above this share of the input file, a result whose graph structure
/// (nodes, names, attributes: what quantization does not shrink) is at least
/// [`STRUCTURE_SHARE`] of it gets a note saying where its bytes are: int8
/// weights alone come to a quarter, and a small model's structure adds to
/// that.
const SIZE_NOTE_RATIO: f64 = 0.27;
const STRUCTURE_SHARE: f64 = 0.1;

impl RunReport {
    /// Where the result's bytes are, when structure keeps it above
    /// 0.27x of the input (PP-OCR's 585 kB classifier: 17.6%
    /// of its result is structure).
    pub fn size_note(&self) -> Option<String> {
        let (i, o) = (&self.input, self.output.as_ref()?);
        let structure = |m: &ModelStats| {
            m.bytes
                .saturating_sub(m.weight_bytes)
                .saturating_sub(m.metadata_bytes)
        };
        let ratio = o.bytes as f64 / i.bytes.max(1) as f64;
        let share = o.bytes.saturating_sub(o.weight_bytes) as f64 / o.bytes.max(1) as f64;
        // Metadata a packager stored (a character table, a web page) is kept
        // as it was: said apart from the structure where it weighs.
        let metadata = match o.metadata_bytes >= 1024 {
            true => format!(
                "; the model's metadata (metadata_props, doc string), kept as it was, {}",
                mb(o.metadata_bytes)
            ),
            false => String::new(),
        };
        // Weights quantized: a third of their bytes or less (a model
        // without weights has none to quantize), by `quant` (`clean` alone
        // may drop a small model's dead weights).
        let quantized = i.weight_bytes > 0
            && (o.weight_bytes as f64) <= i.weight_bytes as f64 / 3.0
            && self
                .passes
                .iter()
                .any(|p| p.name == "quant" && !p.changes.is_empty());
        (ratio > SIZE_NOTE_RATIO && share >= STRUCTURE_SHARE && quantized)
            .then(|| {
                format!(
                    "size: weights {} ({:.2}x of the original's {}); the graph's structure (nodes, names, attributes, with the nodes quantization adds) {}, {} in the original ({:.2}x of its file){metadata}: {} the result above a quarter",
                    mb(o.weight_bytes),
                    o.weight_bytes as f64 / i.weight_bytes.max(1) as f64,
                    mb(i.weight_bytes),
                    mb(structure(o)),
                    mb(structure(i)),
                    structure(i) as f64 / i.bytes.max(1) as f64,
                    match metadata.is_empty() {
                        true => "in a model this small, structure keeps",
                        false => "metadata and structure, which quantization does not shrink, keep",
                    },
                )
            })
    }
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
    /// had remembered when the pass ended: a run numbered n was left by the
    /// first pass whose count is n or more.
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

/// A run of the result that verification found in the memo
/// ([`VerifyReport::reused_seconds`]) is verification's work, done early by
/// the pass that left it there: the first pass to end with the memo's
/// count of remembered runs at that run's number or past it
/// ([`VerifyReport::reused_put`]; `quant`'s `sensitive=auto` checking what
/// it returns). Its time moves from that pass to verification's, which
/// counts it already, and the report says so.
///
/// A run without a number on the pipeline memo's count (a variant's, on
/// its own memo: silero's 8 kHz network) is the pass's that ended with the
/// memo's last count, as every run was when the memo held one.
pub fn credit_reused_run(passes: &mut [PassReport], verify: &mut VerifyReport) {
    if verify.reused_seconds <= 0.0 {
        return;
    }
    let last = passes.last().map_or(0, |p| p.memo_puts);
    let made = match verify.reused_put {
        n if n > 0 && n <= last => n,
        _ => last,
    };
    if let Some(p) = passes.iter_mut().find(|p| p.memo_puts >= made) {
        p.seconds = (p.seconds - verify.reused_seconds).max(0.0);
        verify.notes.push(format!(
            "the result's run on these samples ({:.2} s) was made by pass '{}' checking what it returns, and reused: its time is counted here",
            verify.reused_seconds, p.name
        ));
    }
}

/// A byte count for people: kB below a MiB, MB above.
pub fn mb(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MB", b as f64 / 1e6)
    } else {
        format!("{:.1} kB", b as f64 / 1e3)
    }
}

/// A count for people: as it is below a thousand, then with k, M or G
/// ("37.1 k", "1.0 M").
pub fn count(n: u64) -> String {
    // Each unit up to where its value would read 1000.0 once rounded.
    match n {
        0..1_000 => n.to_string(),
        1_000..999_950 => format!("{:.1} k", n as f64 / 1e3),
        999_950..999_950_000 => format!("{:.1} M", n as f64 / 1e6),
        _ => format!("{:.1} G", n as f64 / 1e9),
    }
}

/// The notes of a pass the printed summary shows (the JSON report has them
/// all).
const SHOWN_NOTES: usize = 10;

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
            for note in p.notes.iter().take(SHOWN_NOTES) {
                let _ = writeln!(s, "    note: {note}");
            }
            if p.notes.len() > SHOWN_NOTES {
                // Notes, not layers: after a list of layers taken back,
                // "1 more" read as a fifth layer (nsnet2 with int4).
                let more = p.notes.len() - SHOWN_NOTES;
                let _ = writeln!(
                    s,
                    "    note: ... {more} more note{} in the JSON report (--report FILE)",
                    if more == 1 { "" } else { "s" }
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
                "  ->  {} nodes, {} params, {} ({:.3}x)",
                o.nodes,
                o.params,
                mb(o.bytes),
                ratio
            );
        }
        s.push('\n');
        if let Some(note) = self.size_note() {
            let _ = writeln!(s, "    note: {note}");
        }
        s.push_str(&self.verify.table());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(name: &str, seconds: f64, memo_puts: u64) -> PassReport {
        PassReport {
            name: name.into(),
            params: serde_json::Value::Null,
            seconds,
            nodes_before: 0,
            nodes_after: 0,
            bytes_before: 0,
            bytes_after: 0,
            params_before: 0,
            params_after: 0,
            changes: BTreeMap::new(),
            exact: false,
            rounds: 1,
            stop: String::new(),
            notes: vec![],
            memo_puts,
        }
    }

    /// The reused run's time leaves the pass that made it (the first to
    /// end with the memo's count at the run's number or past it), not an
    /// earlier one that made another nor a later one that made none; the
    /// memo holds more than the last run, and an earlier one is credited
    /// to its own pass.
    #[test]
    fn a_reused_run_is_credited_to_the_pass_that_made_it() {
        let mut passes = [
            pass("clean", 0.5, 1),
            pass("quant", 2.0, 3),
            pass("opset", 0.25, 3),
        ];
        let mut verify = VerifyReport::not_verified("");
        verify.reused_seconds = 0.75;
        verify.reused_put = 2;
        credit_reused_run(&mut passes, &mut verify);
        let seconds: Vec<f64> = passes.iter().map(|p| p.seconds).collect();
        assert_eq!(seconds, [0.5, 1.25, 0.25]);
        assert!(
            verify.notes[0].contains("made by pass 'quant'"),
            "{:?}",
            verify.notes
        );
        // Nothing reused: nothing moves, nothing said.
        let mut none = VerifyReport::not_verified("");
        credit_reused_run(&mut passes, &mut none);
        assert_eq!(passes[1].seconds, 1.25);
        assert!(none.notes.is_empty());
        // The first run remembered: the first pass's.
        let mut first = VerifyReport::not_verified("");
        (first.reused_seconds, first.reused_put) = (0.25, 1);
        credit_reused_run(&mut passes, &mut first);
        let seconds: Vec<f64> = passes.iter().map(|p| p.seconds).collect();
        assert_eq!(seconds, [0.25, 1.25, 0.25]);
        assert!(first.notes[0].contains("made by pass 'clean'"));
        // A run numbered on another memo's count (a variant's), or none:
        // the pass that ended with the last count.
        for put in [0, 9] {
            let mut other = VerifyReport::not_verified("");
            (other.reused_seconds, other.reused_put) = (0.125, put);
            credit_reused_run(&mut passes, &mut other);
            assert!(other.notes[0].contains("made by pass 'quant'"));
        }
        let seconds: Vec<f64> = passes.iter().map(|p| p.seconds).collect();
        assert_eq!(seconds, [0.25, 1.0, 0.25]);
    }

    #[test]
    fn counts_read_in_units_people_use() {
        assert_eq!(count(512), "512");
        assert_eq!(count(37_120), "37.1 k");
        assert_eq!(count(1_040_000), "1.0 M");
        assert_eq!(count(2_500_000_000), "2.5 G");
        assert_eq!(count(999_949), "999.9 k");
        assert_eq!(count(999_950), "1.0 M");
        assert_eq!(count(999_950_000), "1.0 G");
    }

    /// The summary shows a pass's first notes, and counts the rest as
    /// notes (after a list of layers, "1 more" read as one more layer).
    #[test]
    fn notes_past_the_shown_ones_are_counted_as_notes() {
        let stats = ModelStats {
            bytes: 100,
            nodes: 0,
            params: 0,
            weight_bytes: 0,
            metadata_bytes: 0,
        };
        let report = |notes: usize| RunReport {
            input: stats.clone(),
            output: None,
            passes: vec![PassReport {
                stop: "fixpoint".into(),
                notes: (0..notes).map(|i| format!("n{i}")).collect(),
                ..pass("quant", 0.0, 0)
            }],
            verify: VerifyReport::not_verified(""),
            written: false,
            warnings: vec![],
        };
        let t = report(SHOWN_NOTES + 1).table();
        assert!(
            t.contains("note: n9\n    note: ... 1 more note in the JSON report (--report FILE)\n"),
            "{t}"
        );
        assert!(!t.contains("note: n10"), "{t}");
        let t = report(SHOWN_NOTES + 3).table();
        assert!(
            t.contains("note: ... 3 more notes in the JSON report"),
            "{t}"
        );
        assert!(!report(SHOWN_NOTES).table().contains("more note"));
    }

    /// A result above 0.27x whose structure is a tenth or more of it says
    /// where its bytes are; one at or below, or mostly weights, does not.
    #[test]
    fn a_small_models_size_note_splits_weights_and_structure() {
        let stats = |bytes, weight_bytes| ModelStats {
            bytes,
            nodes: 0,
            params: 0,
            weight_bytes,
            metadata_bytes: 0,
        };
        let mut quant = pass("quant", 0.0, 0);
        quant.changes.insert("weight stored as int8".into(), 1);
        let report = |out| RunReport {
            input: stats(400_000, 360_000),
            output: Some(out),
            passes: vec![quant.clone()],
            verify: VerifyReport::not_verified(""),
            written: true,
            warnings: vec![],
        };
        let note = report(stats(140_000, 100_000)).size_note().unwrap();
        assert!(
            note.starts_with("size: weights 100.0 kB (0.28x of the original's 360.0 kB); the graph's structure (nodes, names, attributes, with the nodes quantization adds) 40.0 kB, 40.0 kB in the original (0.10x of its file)"),
            "{note}"
        );
        assert!(!note.contains("metadata"), "{note}");
        // Metadata is said apart from the structure (a packager's 320 kB
        // web page in metadata_props).
        let mut with_meta = stats(140_000, 100_000);
        with_meta.metadata_bytes = 30_000;
        let note = report(with_meta).size_note().unwrap();
        assert!(
            note.contains("the graph's structure (nodes, names, attributes, with the nodes quantization adds) 10.0 kB")
                && note.contains("; the model's metadata (metadata_props, doc string), kept as it was, 30.0 kB: metadata and structure, which quantization does not shrink, keep the result above a quarter"),
            "{note}"
        );
        assert!(report(stats(104_000, 94_000)).size_note().is_none());
        assert!(report(stats(130_000, 125_000)).size_note().is_none());
        // Weights not quantized (clean alone on a small model): no note.
        assert!(report(stats(380_000, 340_000)).size_note().is_none());
        // A model without weights has none to quantize.
        let mut empty = report(stats(100, 0));
        empty.input = stats(100, 0);
        assert!(empty.size_note().is_none());
        // Nor does a run without quant (clean dropping dead weights).
        let mut cleaned = report(stats(140_000, 100_000));
        cleaned.passes[0].name = "clean".into();
        assert!(cleaned.size_note().is_none());
        assert!(report(stats(140_000, 100_000))
            .table()
            .contains("(0.350x)\n    note: size: weights"));
        assert!(!report(stats(104_000, 94_000))
            .table()
            .contains("note: size"));
    }
}
