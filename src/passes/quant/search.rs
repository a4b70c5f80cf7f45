//! `sensitive=auto`: which quantized layers go back to float (and in which
//! stored form) until the tolerance is met.

use std::collections::HashMap;

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::activations::Expected;
use super::placement::{idle_pairs, REQUANTIZED_OPS};
use super::select::Use;
use super::weights::{
    dynamic_matmuls, gather_rows, stored_f16, stored_weight, stored_weight_blocks,
};
use super::{Quant, INFO};
use crate::ir::{tensor, Model, NodeId};
use crate::pass::PassCtx;
use crate::patch::Patch;
use crate::verify::{Status, VerifyReport};

/// How `sensitive=auto` stores the weight of a layer it takes back to
/// float compute (expanded to float once at load).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Form {
    /// Per-channel int8 (an embedding table's int8 rows too).
    Int8,
    /// int8 with a float16 scale per block of a channel.
    Blocks,
    /// float16.
    Half,
    /// An int4 MatMul weight back in int8 with its integer kernel (the
    /// dynamic MatMulInteger form `weights=int8` gives it), where the
    /// activations are dynamic: the same bytes as int8 storage, computed
    /// in int8 instead of float.
    Kernel,
}

impl Form {
    /// For notes.
    fn name(self) -> &'static str {
        match self {
            Form::Int8 => "int8",
            Form::Blocks => "int8 in blocks",
            Form::Half => "float16",
            Form::Kernel => "int8 (dynamic MatMulInteger)",
        }
    }

    /// Whether this is the int8 rung (the form [`back_to_int8`] returns
    /// weights to).
    fn is_int8(self) -> bool {
        matches!(self, Form::Int8 | Form::Kernel)
    }

    /// The distinct forms among `forms`, for notes: "int8 and int8 in
    /// blocks"; empty for none.
    fn names(forms: impl Iterator<Item = Form>) -> String {
        let mut v: Vec<&str> = forms.map(Form::name).collect();
        v.sort_unstable();
        v.dedup();
        v.join(" and ")
    }
}

/// A weight's stored form: the patch that stores it, and which form it is.
#[derive(Clone)]
struct Stored {
    form: Form,
    patch: Patch,
}

/// The items of `items` that checking each in turn on top of those
/// accepted before it would accept, wherever a set that holds a failing
/// item fails too, in fewer checks where most pass: all of them at once,
/// else the longest run of them that passes (by bisection), the item after
/// it set aside; then runs of the items after that, each as long as the
/// share of items that failed so far says a run passes (the largest power
/// of two up to `(decided + 2) / (failed + 1)`, a prior of one failure in
/// two: where most fail, one item at a time). `check` is given the whole
/// set to try (those accepted, then the run) and says whether it passes.
/// `n` items with `f` failing, few of them, take about
/// `(f + 1) * (1 + log2 n)` checks instead of `n + 1`; most failing, about
/// `n + log2 n`. Where the next run was again all the items left, afis's
/// fingerprint network (11 groups, 8 failing) took 29 checks, 14 now.
fn accepted_in_runs(
    items: &[usize],
    mut check: impl FnMut(&[usize]) -> Result<bool>,
) -> Result<Vec<usize>> {
    let mut accepted = Vec::new();
    let mut left = items;
    let with = |accepted: &[usize], run: &[usize]| [accepted, run].concat();
    let (mut decided, mut failed) = (0usize, 0usize);
    let mut run = items.len();
    while !left.is_empty() {
        let k = run.min(left.len());
        if check(&with(&accepted, &left[..k]))? {
            accepted.extend_from_slice(&left[..k]);
            left = &left[k..];
            decided += k;
        } else {
            // `left[..lo]` passes, `left[..hi]` fails.
            let (mut lo, mut hi) = (0, k);
            while hi - lo > 1 {
                let mid = (lo + hi) / 2;
                match check(&with(&accepted, &left[..mid]))? {
                    true => lo = mid,
                    false => hi = mid,
                }
            }
            accepted.extend_from_slice(&left[..lo]);
            left = &left[lo + 1..];
            decided += lo + 1;
            failed += 1;
        }
        // `decided >= failed`: the quotient is at least 1.
        run = 1 << ((decided + 2) / (failed + 1)).ilog2();
    }
    Ok(accepted)
}

/// What a patch quantizes, for notes.
fn describe(p: &Patch) -> String {
    let what = p
        .remove_initializers
        .first()
        .cloned()
        .or_else(|| p.add_nodes.first().and_then(|n| n.input.first().cloned()))
        .unwrap_or_default();
    if what.is_empty() {
        return p.label.clone();
    }
    format!("{} '{what}'", p.label)
}

/// The int8 form a weight keeps when `sensitive=auto` takes its quantized
/// form back.
#[derive(Debug, Clone)]
pub(super) enum Fallback {
    /// Stored as int8 (per channel on this axis) and expanded at load.
    Stored(Option<usize>),
    /// An int4 embedding table: int8 rows for these Gather readers.
    Rows(Vec<(NodeId, Use)>),
    /// An int4 MatMul weight where the activations are dynamic: int8 with
    /// its integer kernel for these MatMul readers (per column where
    /// `per_channel`, within `qmax`), as `weights=int8` quantizes it; in a
    /// finer rung than int8, stored per column and computed in float.
    Kernel {
        readers: Vec<(NodeId, Use)>,
        per_channel: bool,
        qmax: i32,
    },
}

/// A comparison's score for `sensitive=auto`: the worst cosine of the
/// outputs verification judges. One the original leaves nearly zero
/// everywhere, which passes on absolute error, compares nothing that
/// matters (its cosine is noise: PP-OCRv6's detection map on random
/// images, a random-weight detector's class scores) and drove the search
/// to keep layers in float for nothing.
fn score(r: &VerifyReport) -> f64 {
    r.outputs
        .iter()
        .filter(|o| !o.vacuous)
        .map(|o| if o.cosine.is_nan() { 0.0 } else { o.cosine })
        .fold(1.0f64, f64::min)
}

/// An If model specialised as a reference runs it
/// ([`crate::verify::Reference::specialised`]), and as each of its
/// variants does, in their order: candidates are built on these copies.
struct Specialised {
    main: Option<Model>,
    variants: Vec<Option<Model>>,
}

impl Specialised {
    fn of(reference: &crate::verify::Reference, model: &Model) -> Specialised {
        Specialised {
            main: reference.specialised(model).ok().flatten(),
            variants: reference
                .variants()
                .iter()
                .map(|v| v.reference.specialised(model).ok().flatten())
                .collect(),
        }
    }
}

/// What `sensitive=auto` compares candidates with.
pub(super) enum Baseline {
    /// Verification's reference of the original, shared by the pipeline
    /// (see `DataSource::original`).
    Shared(crate::verify::SharedReference),
    /// Its own reference of the pass's input, on these inputs, with the
    /// input's outputs on them where calibration computed them.
    Own(Option<crate::verify::ReferenceInputs>, Expected),
}

/// How `sensitive=auto` measures: on the samples verification will use
/// (random ones are drawn from the same seed), all of them, and against
/// the tolerance it will enforce (the user's --tolerance included), so
/// what is measured here is what is enforced. (Measured on 8 of
/// `--samples 16`, a Keras MobileNet's result failed verification on the
/// other 8 and nothing was written.)
pub(super) fn sensitivity_options(ctx: &PassCtx) -> crate::verify::VerifyOptions {
    crate::verify::VerifyOptions {
        samples: ctx
            .data
            .verify_samples
            .unwrap_or(crate::verify::DEFAULT_SAMPLES)
            .max(1),
        seed: ctx.data.seed,
        dims: ctx.data.dims.clone(),
        inputs: ctx.data.inputs.clone(),
        tolerance: ctx.data.tolerance.unwrap_or(INFO.tolerance),
    }
}

/// Past this many bytes of weights, `sensitive=auto` measures its
/// candidates one at a time (each still runs its samples on every core):
/// a candidate's tract plan holds its weights twice (tract's float copy and
/// the copy packed for its kernels), so two at once would add four times
/// the weights to the run's peak. Under it, two at once, one per core
/// (unless [`super::SEARCH_ONE_AT_A_TIME_ENV`] says otherwise), from
/// [`PARALLEL_CANDIDATES_MIN_BYTES`] on.
const PARALLEL_CANDIDATES_MAX_BYTES: u64 = 64 << 20;

/// Under this many bytes of weights, candidates are measured one at a
/// time too: each plan builds in tens of milliseconds, so two at once save
/// little time, and the second thread's allocations (tract's graph and
/// plan of each candidate, in an allocator arena of its own) weigh on a
/// small model's peak. silero-vad (1.2 MB): 0.27 -> 0.32 s, 35 -> 30 MB
/// peak; its spox export (2.3 MB): 0.28 -> 0.33 s, 38 -> 34 MB; the same
/// result. The recogniser (10.8 MB) keeps two at once: 2.5 s and 100 MB,
/// against 3.6 s and 74 MB one at a time.
const PARALLEL_CANDIDATES_MIN_BYTES: u64 = 4 << 20;

/// A model under [`PARALLEL_CANDIDATES_MIN_BYTES`] of weights with this many
/// nodes or more has its candidates measured two at once all the same:
/// tract's plan of each costs what its nodes cost, not its weights. afis's
/// fingerprint network (3.8 MB, 1337 nodes, 0.35 s a check).
const PARALLEL_CANDIDATES_MIN_NODES: usize = 600;

/// While `sensitive=auto` measures candidates two at once, buffers of
/// 256 KiB up to this size come from the heap ([`crate::io::RaisedMmapThreshold`]):
/// each candidate's tract plan allocates and frees the same weight copies,
/// packed kernels and activations as the one before, which mapped on their
/// own were faulted in page by page and unmapped (with a TLB shootdown on
/// each core) every time. The recogniser's search (14 plans): 780k -> 210k
/// page faults, system time 2.0-2.3 -> 0.55-0.7 s, its run 3.8-4.4 -> 2.8-3.2
/// s, peak 82-84 -> 93-95 MB (a third of `quantize_static`'s is 118 MB).
/// Not for the first check of the full result, the peak of models that
/// pass at once (open-nsfw 87 -> 110 MB with it, magika 34 -> 49), nor
/// where candidates are measured one at a time (a model under
/// [`PARALLEL_CANDIDATES_MIN_BYTES`] of fewer than
/// [`PARALLEL_CANDIDATES_MIN_NODES`] nodes, whose peak is mostly code and
/// whose plans are small: silero-vad 0.31 -> 0.24 s, 33 -> 36 MB, near a
/// third of `quantize_static`'s).
const SEARCH_MMAP_THRESHOLD: usize = 4 << 20;

/// Whether `sensitive=auto` measures two candidates at once: on models of
/// [`PARALLEL_CANDIDATES_MIN_BYTES`] to [`PARALLEL_CANDIDATES_MAX_BYTES`]
/// of weights, and on smaller ones of [`PARALLEL_CANDIDATES_MIN_NODES`]
/// nodes or more, unless `one_at_a_time` (the value of
/// [`super::SEARCH_ONE_AT_A_TIME_ENV`]) is `1`.
fn measures_in_parallel(weight_bytes: u64, nodes: usize, one_at_a_time: Option<&str>) -> bool {
    let small_but_long =
        weight_bytes < PARALLEL_CANDIDATES_MIN_BYTES && nodes >= PARALLEL_CANDIDATES_MIN_NODES;
    ((PARALLEL_CANDIDATES_MIN_BYTES..=PARALLEL_CANDIDATES_MAX_BYTES).contains(&weight_bytes)
        || small_but_long)
        && one_at_a_time != Some("1")
}

/// How a candidate is judged: which patches it keeps, and the storage of
/// the weights of those taken back.
type Verdict<'a> = dyn Fn(&[bool], &[Option<Stored>]) -> Result<VerifyReport> + Sync + 'a;

/// `f` over `items` (with each one's index), on every core where
/// `parallel`, else one at a time.
fn candidates<T: Sync, R: Send>(
    items: &[T],
    parallel: bool,
    f: impl Fn(usize, &T) -> Result<R> + Sync + Send,
) -> Result<Vec<R>> {
    match parallel {
        true => items.par_iter().enumerate().map(|(i, t)| f(i, t)).collect(),
        false => items.iter().enumerate().map(|(i, t)| f(i, t)).collect(),
    }
}

impl Quant {
    /// `sensitive=auto`: check the whole proposal against the tolerance with
    /// tract on the calibration data; if it misses, measure each change (or,
    /// on big models, each of 16 groups of changes in graph order) alone, and
    /// keep the most damaging ones in float: their number doubles until the
    /// tolerance is met, then bisection finds the fewest that meet it. Every
    /// change kept in float is reported with its score.
    pub(super) fn keep_sensitive_in_float(
        &self,
        model: &Model,
        ctx: &mut PassCtx,
        mut patches: Vec<Patch>,
        storable: &HashMap<String, Fallback>,
        baseline: Baseline,
    ) -> Result<Vec<Patch>> {
        use crate::verify::{Reference, SEARCH_SAMPLES};
        let progress = ctx.progress.within("sensitive=auto");
        let opts = &sensitivity_options(ctx);
        let g = &model.graph;
        let pos = |p: &Patch| {
            p.anchor
                .and_then(|a| g.nodes.node_weight(a))
                .map_or((u64::MAX, 0), |n| n.order)
        };
        patches.sort_by_key(pos);
        let n = patches.len();
        let parallel = measures_in_parallel(
            model.weight_bytes(),
            g.nodes.node_count(),
            std::env::var(super::SEARCH_ONE_AT_A_TIME_ENV)
                .ok()
                .as_deref(),
        );
        // What candidates are compared with runs once: verification's
        // reference of the original (built here if nothing built it yet),
        // else the pass's own of its input (run in calibration where it
        // could).
        let shared = match &baseline {
            Baseline::Shared(r) => Some(r.clone()),
            Baseline::Own(..) => None,
        };
        if shared.as_ref().is_some_and(|r| r.built_seconds().is_none()) {
            progress.say("running the original in tract (verification's reference)");
        }
        let own;
        let reference: &Reference = match shared.as_ref().and_then(|r| r.get()) {
            Some(r) => r,
            // Where the original does not run in tract, the pass's input
            // may (`clean` folds what tract lacks); verification will say
            // why the original does not.
            None => {
                let built = match baseline {
                    Baseline::Own(Some(inputs), expected) => {
                        Reference::with_inputs(model, opts, inputs, expected)
                    }
                    _ => Reference::new(model, opts),
                };
                match built {
                    Ok(r) => {
                        own = r.with_memo(ctx.data.runs.clone());
                        &own
                    }
                    Err(e) => {
                        ctx.notes.push(format!(
                            "sensitive=auto could not run the model ({e:#}): no layer taken back to float, the result unmeasured"
                        ));
                        return Ok(patches);
                    }
                }
            }
        };
        // An If model the reference specialises (fixed inputs) is specialised
        // once here, and each candidate built on that copy; a candidate whose
        // patches do not translate to it is specialised on its own. Each
        // variant of the reference (a setting at another value: silero's
        // 8 kHz network) has its copy.
        let specialised = Specialised::of(reference, model);
        // Each variant is checked before the reference itself: a candidate
        // that fails on one then leaves no plan held back for the wide
        // check (`Reference::keeping_plans`). Where `every_value` is false, the
        // first failure decides; a ranking or the full result's score
        // takes every value's rows.
        let eval_on = |reference: &Reference,
                       specialised: &Specialised,
                       keep: &[bool],
                       fallback: &[Option<Stored>],
                       every_value: bool|
         -> Result<VerifyReport> {
            let chosen: Vec<&Patch> = (0..n)
                .filter_map(|i| match keep[i] {
                    true => Some(&patches[i]),
                    false => fallback.get(i).and_then(Option::as_ref).map(|s| &s.patch),
                })
                .collect();
            // The candidate as `reference` alone judges it.
            let alone = |reference: &Reference, specialised: Option<&Model>| {
                if let Some(s) = specialised {
                    let translated: Option<Vec<Patch>> = chosen
                        .iter()
                        .map(|p| crate::verify::translate_patch(p, g, &s.graph))
                        .collect();
                    if let Some(t) = translated {
                        let mut m = s.clone();
                        for p in &t {
                            if p.is_applicable(&m.graph) {
                                m.apply(p)?;
                            }
                        }
                        return Ok(reference.check_specialised(&m));
                    }
                }
                let mut m = model.clone();
                for p in &chosen {
                    if p.is_applicable(&m.graph) {
                        m.apply(p)?;
                    }
                }
                anyhow::Ok(reference.check_alone(&m))
            };
            let mut variants = vec![];
            for (v, s) in reference.variants().iter().zip(&specialised.variants) {
                let r = alone(&v.reference, s.as_ref())?;
                if r.status != Status::Passed && !every_value {
                    // This value's rows alone, under its name.
                    let mut missed = VerifyReport {
                        status: Status::Passed,
                        reason: None,
                        tolerance: r.tolerance,
                        ..VerifyReport::not_verified("")
                    };
                    missed.add_variant(&v.label, r);
                    return Ok(missed);
                }
                variants.push((&v.label, r));
            }
            let mut report = alone(reference, specialised.main.as_ref())?;
            for (label, r) in variants {
                report.add_variant(label, r);
            }
            Ok(report)
        };
        let on_verification = |keep: &[bool], fallback: &[Option<Stored>]| {
            eval_on(reference, &specialised, keep, fallback, false)
        };
        let all = vec![true; n];
        progress.say("checking the result in tract");
        let full = eval_on(reference, &specialised, &all, &[], true)?;
        // The search's samples: verification's where they are the user's or
        // number SEARCH_SAMPLES already, else SEARCH_SAMPLES random ones
        // from its seed, its own among them (see `SEARCH_SAMPLES`); a
        // candidate is checked on verification's own first, and where it
        // passes both, its run there is what the memo keeps: the last such
        // run is the kept one's.
        let verification_samples = reference.expected().1.len();
        let can_widen = opts.inputs.is_none() && verification_samples < SEARCH_SAMPLES;
        // The wide reference, and the model specialised to its samples
        // (an If model's), once.
        let widen = |ctx: &mut PassCtx, why: &str| -> Option<(Reference, Specialised)> {
            progress.say(&format!(
                "{why}; running the model on {SEARCH_SAMPLES} random samples to search on"
            ));
            let wide_opts = crate::verify::VerifyOptions {
                samples: SEARCH_SAMPLES,
                ..opts.clone()
            };
            // Verification's samples lead the wide ones: a candidate that
            // passes there leaves its run on them for the check on
            // verification's own, which then plans and runs nothing.
            match Reference::new(model, &wide_opts).map(|w| w.lending_to(reference)) {
                Ok(w) => {
                    let specialised = Specialised::of(&w, model);
                    Some((w, specialised))
                }
                Err(e) => {
                    ctx.notes.push(format!(
                        "sensitive=auto searches on verification's samples alone: the model did not run on {SEARCH_SAMPLES} ({e:#})"
                    ));
                    None
                }
            }
        };
        // Where the full result misses on the wide samples only, it is
        // ranked and reported there.
        let mut full_wide: Option<VerifyReport> = None;
        let wide = match full.status {
            Status::NotVerified => {
                ctx.notes.push(format!(
                    "sensitive=auto could not measure the result ({}): no layer taken back to float, the result unmeasured",
                    full.reason.unwrap_or_default()
                ));
                return Ok(patches);
            }
            // A result that passes verification's few random samples with
            // more than half the error the tolerance allows is confirmed on
            // the wide ones first: on two, the margin says little of other
            // inputs. PP-OCRv6's recogniser passed its two at 0.9917 and
            // measured 0.854 on 32 others; PP-OCRv4's 0.9916, 0.907.
            Status::Passed => {
                let thin =
                    score(&full) < 1.0 - (1.0 - opts.tolerance.min_cosine.clamp(0.0, 1.0)) / 2.0;
                if !(can_widen && thin) {
                    return Ok(patches);
                }
                let why = format!(
                    "the result passes at cosine {:.5}, close to the tolerance",
                    score(&full)
                );
                let Some((w, spec)) = widen(ctx, &why) else {
                    return Ok(patches);
                };
                let x = eval_on(&w, &spec, &all, &[], true)?;
                if x.status == Status::Passed {
                    return Ok(patches);
                }
                ctx.notes.push(format!(
                    "sensitive=auto: the full result passed verification's {verification_samples} random sample(s) at cosine {:.5}, closer to the tolerance ({}) than half its margin, and missed it on {SEARCH_SAMPLES} (cosine {:.5}): searched on those",
                    score(&full),
                    opts.tolerance.min_cosine,
                    score(&x)
                ));
                full_wide = Some(x);
                Some((w, spec))
            }
            Status::Failed if can_widen => widen(ctx, "the result misses the tolerance"),
            Status::Failed => None,
        };
        // From here on the search plans candidate after candidate.
        let _heap = parallel
            .then(|| crate::io::RaisedMmapThreshold::to(SEARCH_MMAP_THRESHOLD))
            .flatten();
        // Verification's few samples first: a candidate that misses there
        // is refused after a run on them alone; one that passes leaves its
        // plan and run for the wide check, which runs only the samples
        // after them (`Reference::keeping_plans`). afis's LEADER
        // fingerprint model (1337 nodes), most of whose candidates fail:
        // 47.0 -> 28.5 s; PP-OCRv4's recogniser 2.32 -> 2.02 s; PP-OCRv6's,
        // most of whose candidates pass, 4.9 -> 5.1 s.
        let _plans = wide.as_ref().and_then(|_| reference.keeping_plans());
        let own_plans = |keep: &[bool], fallback: &[Option<Stored>]| -> Result<VerifyReport> {
            let v = on_verification(keep, fallback)?;
            let Some((w, specialised)) = &wide else {
                return Ok(v);
            };
            if v.status != Status::Passed {
                return Ok(v);
            }
            let x = eval_on(w, specialised, keep, fallback, false)?;
            Ok(match x.status != Status::Passed || score(&x) <= score(&v) {
                true => x,
                false => v,
            })
        };
        // Layers are ranked on one sample alone (half the runs on two
        // samples), the one the full result misses most: where images are
        // drawn normal and uniform in turn, a classifier that takes images
        // in [0, 1) saturates on the normal one, and every layer would rank
        // the same there; every verdict takes them all.
        let ranking = match (&wide, &full_wide) {
            (Some((w, _)), Some(x)) => w.one_sample(x.worst_sample.unwrap_or(0)),
            _ => reference.one_sample(full.worst_sample.unwrap_or(0)),
        };
        // Groups, each alone, differ from one another in weight values, and
        // in which activation pairs they hold, once tract expands them: one
        // plan feeds them all (`Reference::feeding_weights`), each pair
        // switched on or off. It is made from the first result compared:
        // where there are pairs, every pair with float weights (the weights
        // most groups leave float are the ones it holds). Weight-only
        // groups run so on any model (PP-OCRv4's recogniser: its 47 ranked
        // in 0.7 s instead of 2.2); groups with pairs only on models under
        // `PARALLEL_CANDIDATES_MIN_BYTES` of weights, whose candidates cost
        // their plans (silero-vad: 16 ranked in 0.05 s instead of 0.09,
        // peak 28 -> 29 MB): on larger ones the plan's runs, with their
        // weights as inputs and its pairs switched, added 10-35 MB to the peak
        // (PP-OCRv4's recogniser 93 -> 106 MB, PP-OCRv6's small detector
        // 85 -> 108), for 10-15% of the run's time. Not where MatMuls are
        // made dynamic: their lowered forms differ in structure.
        let pairs: Vec<bool> = patches
            .iter()
            .map(|p| p.label.starts_with("activation quantized"))
            .collect();
        let dynamic = patches.iter().any(|p| p.label.contains("made dynamic"));
        let weight_only = !pairs.contains(&true) && !dynamic;
        let switched = pairs.contains(&true)
            && !dynamic
            && model.weight_bytes() < PARALLEL_CANDIDATES_MIN_BYTES;
        let ranking = match weight_only || switched {
            true => ranking.feeding_weights(),
            false => ranking,
        };
        if switched {
            eval_on(&ranking, &specialised, &pairs, &[], true)?;
        }
        // On a small model, the verdicts (the storage ladder's, the fewest
        // groups', the groups back to int8) are judged on that plan too, on
        // verification's samples: each of them planned alone cost more
        // than its run (silero-vad's op15 export with `--inputs`: 10
        // verdicts, the pass 0.25-0.30 -> 0.15-0.17 s, its If export's
        // 0.15-0.20 -> 0.12-0.13 s, peak 1-3.5 MB more, the same files;
        // `dist` build). A run there is not the result's own bit for bit, so
        // the choice is checked again on its own plan (the run
        // verification then reuses), and made again (the ladder's rung
        // too) on their own plans where that check disagrees. Not where
        // the search widens to random samples, whose checks keep their
        // plans for those. A variant of the reference (silero's 8 kHz
        // network) judges on plans of its own.
        let verdicts = ((weight_only || switched)
            && wide.is_none()
            && model.weight_bytes() < PARALLEL_CANDIDATES_MIN_BYTES)
            .then(|| reference.on_plan_of(&ranking));
        // Weight-only, the plan is made from the model with every weight
        // float (the structure of every candidate once tract expands the
        // stored weights) before the ladder's first verdict could make it
        // from a form that is not (rows a Gather expands, blocks).
        if verdicts.is_some() && weight_only {
            eval_on(&ranking, &specialised, &vec![false; n], &[], true)?;
        }
        let eval = |keep: &[bool], fallback: &[Option<Stored>]| -> Result<VerifyReport> {
            match &verdicts {
                Some(v) => eval_on(v, &specialised, keep, fallback, false),
                None => own_plans(keep, fallback),
            }
        };
        // A weight taken back from integer compute is still stored compactly,
        // expanded to float once at load (its error is a small part of
        // quantization's; activations are what costs accuracy): the layer
        // computes in float and the file keeps most of the saving (an int4
        // MatMul where the activations are dynamic: int8, in its kernel,
        // [`Form::Kernel`]). The first
        // rung whose storage of every such weight at once meets the
        // tolerance is taken: int8, else int8 in blocks (the recogniser:
        // per-channel int8 storage alone gives cosine 0.969) with
        // per-channel int8 where no block fits, else with float16 there,
        // else float16 (silero's state output flips saturated values under
        // int8 weight rounding), else float. Each form is built when its
        // first rung is checked, one rung ahead where two are checked at
        // once (see `storage_ladder`).
        let forms = |kind: Form| stored_forms(model, &patches, storable, kind);
        let int8 = forms(Form::Int8)?;
        let storable_any = int8.iter().any(Option::is_some);
        // The storage of the weights taken back, each rung judged by `eval`.
        let climb = |eval: &Verdict| -> Result<Vec<Option<Stored>>> {
            match storable_any {
                true => storage_ladder(&int8, &forms, &progress, parallel, &|f| {
                    Ok(eval(&vec![false; n], f)?.status == Status::Passed)
                }),
                false => Ok(vec![None; n]),
            }
        };
        let mut fallback = climb(&eval)?;
        let act_of = activation_patches(&patches);
        let groups = layer_groups(g, &patches, &act_of);
        // Each group alone, on every core (each run is single-threaded), or
        // one at a time outside `PARALLEL_CANDIDATES_MIN_BYTES` to
        // `PARALLEL_CANDIDATES_MAX_BYTES`.
        // Counted and said under one lock: the last message is the last count.
        let measured = std::sync::Mutex::new(0usize);
        progress.say(&format!(
            "0 of {} layer groups measured alone",
            groups.len()
        ));
        let mut scored = candidates(&groups, parallel, |gi, idxs| {
            let mut keep = vec![false; n];
            idxs.iter().for_each(|&i| keep[i] = true);
            // Scored against a float rest (fallbacks would cost a patch
            // per weight in every candidate, and rank the same).
            let s = score(&eval_on(&ranking, &specialised, &keep, &[], true)?);
            if let Ok(mut done) = measured.lock() {
                *done += 1;
                progress.say(&format!(
                    "{done} of {} layer groups measured alone",
                    groups.len()
                ));
            }
            Ok((s, gi))
        })?;
        // Its plan feeding weights goes before the checks plan theirs
        // (the verdicts hold it where they are judged on it).
        drop(ranking);
        order_by_gain(
            &mut scored,
            &groups,
            &patches,
            &fallback,
            g,
            self.params.weights == "int4",
        );
        // The k most damaging groups taken back, and the activation pairs
        // that then serve no integer kernel (see `idle_pairs`).
        let take = |k: usize| {
            let mut keep = all.clone();
            for &(_, gi) in &scored[..k] {
                groups[gi].iter().for_each(|&i| keep[i] = false);
            }
            for i in idle_pairs(g, &patches, &act_of, &keep) {
                keep[i] = false;
            }
            keep
        };
        let guess = predicted_groups(
            &scored,
            score(full_wide.as_ref().unwrap_or(&full)),
            opts.tolerance.min_cosine,
        );
        // The fewest groups taken back that pass, then which of them go back
        // to int8 storage, each judged by `eval`.
        let decide =
            |eval: &Verdict, fallback: &mut Vec<Option<Stored>>| -> Result<(usize, VerifyReport)> {
                let (k, mut r) = fewest_groups(groups.len(), guess, parallel, &progress, &|k| {
                    eval(&take(k), fallback)
                })?;
                if storable_any && r.status == Status::Passed {
                    let keep = take(k);
                    let taken: Vec<&[usize]> = scored[..k]
                        .iter()
                        .rev()
                        .map(|&(_, gi)| groups[gi].as_slice())
                        .collect();
                    back_to_int8(&taken, &int8, fallback, &mut r, parallel, &progress, &|f| {
                        eval(&keep, f)
                    })?;
                }
                Ok((k, r))
            };
        let (mut k, mut r) = decide(&eval, &mut fallback)?;
        if verdicts.is_some() {
            progress.say("checking the choice on its own plan");
            let own = own_plans(&take(k), &fallback)?;
            match own.status == r.status {
                true => r = own,
                false => {
                    drop(verdicts);
                    progress.say(&format!(
                        "the choice {} on its own plan: choosing again on the candidates' own plans",
                        match own.status == Status::Passed {
                            true => "passes",
                            false => "misses the tolerance",
                        }
                    ));
                    // The ladder too: its rung was judged on the same plan.
                    fallback = climb(&own_plans)?;
                    (k, r) = decide(&own_plans, &mut fallback)?;
                }
            }
        }
        let keep = take(k);
        // The summary first, then what each group is: the printed report
        // shows a pass's first notes, the JSON all of them.
        let (details, changed) = group_notes(&scored[..k], &groups, &patches, &fallback, &keep);
        if r.status != Status::Passed {
            ctx.notes.push(format!(
                "even with everything in float the tolerance is missed (cosine {:.5})",
                score(&r)
            ));
        }
        // Groups whose weights all went back to the int8 storage they had
        // are not taken back: nothing of them changed.
        let unchanged = match k - changed {
            0 => String::new(),
            u => format!(
                "; {u} more taken back while searching went back to their int8 storage, unchanged"
            ),
        };
        ctx.notes.push(format!(
            "sensitive=auto: full quantization gave cosine {:.5}; with {changed} layer group(s) taken back (each in a note below, where the JSON report has them all{unchanged}) {:.5}",
            score(full_wide.as_ref().unwrap_or(&full)),
            score(&r)
        ));
        // Most of the model back in float: integer kernels gain little
        // over weight-only int8 there (a ResNet-50 of random weights: 15 of
        // 16 groups, 1.00x of float in onnxruntime, after a 27 s search).
        // Layers with an integer kernel (static int8 weights, dynamic
        // MatMuls) the original choice held, and the one kept.
        let kernels = |keep: &[bool]| {
            patches
                .iter()
                .zip(keep)
                .filter(|(p, &k)| {
                    k && (p.label.starts_with("weight quantized to int")
                        || p.label.contains("made dynamic"))
                })
                .count()
        };
        let (total, left) = (kernels(&all), kernels(&keep));
        let static_or_dynamic = patches.iter().any(|p| {
            p.label.starts_with("activation quantized") || p.label.contains("made dynamic")
        });
        if static_or_dynamic && r.status == Status::Passed && total > 1 && 4 * left <= total {
            ctx.notes.push(format!(
                "sensitive=auto leaves {left} of {total} layers with an integer kernel in int8: the result may run no faster than weight-only int8 (activations=none), which needs no search"
            ));
        }
        // The search chose the fewest layers that pass on the samples it is
        // then verified on: other inputs can fall below.
        let caveat = (r.status == Status::Passed
            && !ctx.notes.iter().any(|n| n.contains(HELD_OUT)))
        .then(|| {
            held_out_caveat(
                opts,
                reference.expected().1.len(),
                wide.as_ref().map(|(w, _)| w.expected().1.len()),
            )
        });
        // The groups, then the caveat that applies to the whole choice.
        ctx.notes.extend(details);
        ctx.notes.extend(caveat);
        Ok(patches
            .into_iter()
            .zip(fallback)
            .zip(keep)
            .filter_map(|((p, f), k)| if k { Some(p) } else { f.map(|s| s.patch) })
            .collect())
    }
}

/// The patches that quantize an activation (a Q/DQ pair), by the value
/// they quantize.
fn activation_patches(patches: &[Patch]) -> HashMap<&str, usize> {
    patches
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p.add_nodes.first() {
            Some(q) if q.op_type() == "QuantizeLinear" && p.remove_initializers.is_empty() => {
                q.input.first().map(|v| (v.as_str(), i))
            }
            _ => None,
        })
        .collect()
}

/// The groups of changes `sensitive=auto` measures and takes back
/// together: each change alone, or on big proposals (over 64 changes) 16
/// groups in graph order.
///
/// A layer taken back from int8 takes the Q/DQ pairs of its input and
/// output with it: a float Conv/Gemm that reads a
/// DequantizeLinear and feeds a QuantizeLinear (directly, or through a
/// Relu that onnxruntime folds into it) is quantized again at load by
/// onnxruntime (its WeightBiasQuantization: per tensor, far coarser
/// than ours), so it would not compute in float there and what was
/// measured would not be what runs (silero's state output: 0.992 in
/// verification, 0.90 in onnxruntime). Its neighbours keep their int8
/// weights.
fn layer_groups(
    g: &crate::ir::Graph,
    patches: &[Patch],
    act_of: &HashMap<&str, usize>,
) -> Vec<Vec<usize>> {
    let n = patches.len();
    let mut groups: Vec<Vec<usize>> = if n <= 64 {
        (0..n).map(|i| vec![i]).collect()
    } else {
        let size = n.div_ceil(16);
        (0..n)
            .collect::<Vec<_>>()
            .chunks(size)
            .map(|c| c.to_vec())
            .collect()
    };
    for group in &mut groups {
        let mut extra = Vec::new();
        for &i in group.iter() {
            let p = &patches[i];
            if !p.label.starts_with("weight quantized to int") {
                continue;
            }
            for w in &p.remove_initializers {
                for c in g.consumers(w) {
                    let c = &g.nodes[c].proto;
                    if !REQUANTIZED_OPS.contains(&c.op_type()) {
                        continue;
                    }
                    for v in c.input.first().into_iter().chain(c.output.first()) {
                        extra.extend(act_of.get(v.as_str()));
                    }
                }
            }
        }
        for e in extra {
            if !group.contains(&e) {
                group.push(e);
            }
        }
    }
    groups
}

/// Sorts `scored` (each group's cosine alone, and its index) in the order
/// the groups are taken back: the most damaging first. With int4 weights
/// (`by_bytes`) a take-back costs megabytes (an int4 table back to int8
/// rows doubles it), so there the order is by fidelity bought per byte the
/// take-back adds to the file (its weights' fallback form, else the
/// float original, less their quantized form), bytes counted in units
/// of an average group's quantized size: an int4 embedding table then
/// comes after int4 MatMul weights that damage as much (MiniLM-L3:
/// 0.17x -> 0.16x at the default tolerance). With int8 weights the
/// plain order is kept: by bytes it took more, smaller layers back
/// (the recogniser: 0.32x -> 0.35x, and slower).
fn order_by_gain(
    scored: &mut [(f64, usize)],
    groups: &[Vec<usize>],
    patches: &[Patch],
    fallback: &[Option<Stored>],
    g: &crate::ir::Graph,
    by_bytes: bool,
) {
    let added: Vec<f64> = groups
        .iter()
        .map(|idxs| {
            idxs.iter()
                .map(|&i| {
                    let back = match &fallback[i] {
                        Some(f) => stored_bytes(&f.patch),
                        None => patches[i]
                            .remove_initializers
                            .iter()
                            .filter_map(|w| g.constant(w))
                            .map(tensor::stored_bytes)
                            .sum(),
                    };
                    back as f64 - stored_bytes(&patches[i]) as f64
                })
                .sum()
        })
        .collect();
    let unit =
        (patches.iter().map(stored_bytes).sum::<u64>() as f64 / groups.len() as f64).max(1.0);
    let gain = |(s, gi): &(f64, usize)| {
        let cost = if by_bytes {
            added[*gi].max(0.0) / unit
        } else {
            0.0
        };
        (1.0 - s) / (1.0 + cost)
    };
    scored.sort_by(|a, b| gain(b).total_cmp(&gain(a)));
}

/// Each patch's weight in stored form `kind` (`None` for a patch that
/// quantizes no weight sensitive=auto can store, and for a weight no block
/// fits in `Blocks`; an embedding table keeps its int8 rows in `Blocks`, as
/// fine as it gets there). Built once per form, when first needed.
fn stored_forms(
    model: &Model,
    patches: &[Patch],
    storable: &HashMap<String, Fallback>,
    kind: Form,
) -> Result<Vec<Option<Stored>>> {
    let g = &model.graph;
    patches
        .iter()
        .map(|p| {
            let Some((w, fallback)) = p
                .remove_initializers
                .first()
                .and_then(|w| storable.get_key_value(w))
            else {
                return Ok(None);
            };
            let t = g
                .constant(w)
                .context("a quantized weight is not a constant")?;
            let payload = model.payload(t)?;
            let data = tensor::f32_view(t, payload.as_ref())?;
            let stored = |form, patch| Stored { form, patch };
            Ok(match (fallback, kind) {
                (_, Form::Half) => Some(stored(Form::Half, stored_f16(model, w, &data))),
                (Fallback::Stored(axis), Form::Int8 | Form::Kernel) => {
                    Some(stored(Form::Int8, stored_weight(model, w, &data, *axis)?))
                }
                (Fallback::Stored(axis), Form::Blocks) => {
                    stored_weight_blocks(model, w, &data, *axis)?.map(|p| stored(Form::Blocks, p))
                }
                (Fallback::Rows(readers), _) => {
                    Some(stored(Form::Int8, gather_rows(model, w, &data, readers)?))
                }
                (
                    Fallback::Kernel {
                        readers,
                        per_channel,
                        qmax,
                    },
                    Form::Int8 | Form::Kernel,
                ) => Some(stored(
                    Form::Kernel,
                    dynamic_matmuls(model, w, &data, readers, false, *per_channel, *qmax)?,
                )),
                (Fallback::Kernel { per_channel, .. }, Form::Blocks) => {
                    stored_weight_blocks(model, w, &data, per_channel.then_some(1))?
                        .map(|p| stored(Form::Blocks, p))
                }
            })
        })
        .collect()
}

/// `a`'s form of each weight, else `b`'s.
fn either(a: &[Option<Stored>], b: &[Option<Stored>]) -> Vec<Option<Stored>> {
    a.iter()
        .zip(b)
        .map(|(a, b)| a.as_ref().or(b.as_ref()).cloned())
        .collect()
}

/// The form of each weight in `r`.
fn forms_of(r: &[Option<Stored>]) -> Vec<Option<Form>> {
    r.iter().map(|s| s.as_ref().map(|s| s.form)).collect()
}

/// The storage of the weights of layers taken back to float compute: the
/// first rung that `passes` with every layer in float and every weight so
/// stored: `int8` (an int4 MatMul's there computing in its int8 kernel,
/// [`Form::Kernel`]); int8 in blocks, per-channel int8 where no block fits;
/// the same with float16 there; float16. None of them (every weight float)
/// where no rung passes. Where `parallel`, two rungs are checked at once
/// (one per core), the same choice as one after the other: a ladder
/// climbed past int8 takes a step fewer (PP-OCRv4's recogniser, to int8
/// in blocks: its run 1.61 -> 1.51 s; PP-OCRv6's small one, to float16
/// and blocks: 3.77 -> 3.55 s, its peak 176 -> 183 MB; the same files),
/// and where int8 passes, the blocks built and checked beside it are
/// spent for nothing (a second core's check, and the memory of its plan).
fn storage_ladder(
    int8: &[Option<Stored>],
    forms: &dyn Fn(Form) -> Result<Vec<Option<Stored>>>,
    progress: &crate::pass::Progress,
    parallel: bool,
    passes: &(dyn Fn(&[Option<Stored>]) -> Result<bool> + Sync),
) -> Result<Vec<Option<Stored>>> {
    let (mut blocks, mut half) = (None, None);
    let mut step = 0;
    let mut last: Option<Vec<Option<Form>>> = None;
    // The next rung, each form built when first needed; a rung that stores
    // every weight as the one before it did (no block fits anywhere, or
    // everywhere) is not measured again.
    let mut next = || -> Result<Option<Vec<Option<Stored>>>> {
        while step < 4 {
            if step >= 1 && blocks.is_none() {
                blocks = Some(forms(Form::Blocks)?);
            }
            if step >= 2 && half.is_none() {
                half = Some(forms(Form::Half)?);
            }
            let f = match (step, &blocks, &half) {
                (1, Some(b), _) => either(b, int8),
                (2, Some(b), Some(h)) => either(b, h),
                (3, _, Some(h)) => h.clone(),
                _ => int8.to_vec(),
            };
            step += 1;
            let f_forms = forms_of(&f);
            if last.as_ref() == Some(&f_forms) {
                continue;
            }
            last = Some(f_forms);
            return Ok(Some(f));
        }
        Ok(None)
    };
    let names = |f: &[Option<Stored>]| Form::names(f.iter().flatten().map(|s| s.form));
    while let Some(a) = next()? {
        let b = match parallel {
            true => next()?,
            false => None,
        };
        progress.say(&format!(
            "the result misses the tolerance; checking every layer taken back, with weights as {}{}",
            names(&a),
            b.as_ref()
                .map(|b| format!(", and as {}", names(b)))
                .unwrap_or_default()
        ));
        let (pa, pb) = match &b {
            Some(b) => {
                let (pa, pb) = rayon::join(|| passes(&a), || passes(b));
                (pa?, pb?)
            }
            None => (passes(&a)?, false),
        };
        if pa {
            return Ok(a);
        }
        if let (true, Some(b)) = (pb, b) {
            return Ok(b);
        }
    }
    Ok(vec![None; int8.len()])
}

/// How many of the most damaging groups (`scored`, most damaging first,
/// each with its cosine when quantized alone) the alone cosines predict
/// must be taken back for the result to reach `min_cosine`: the losses (1 -
/// cosine) of the groups left quantized add up, scaled so that all of them
/// add up to the full result's loss (`full`). At least 1 (the full result
/// missed); `scored.len()` where even that is predicted to miss. A guess
/// [`fewest_groups`] starts from: its checks decide.
fn predicted_groups(scored: &[(f64, usize)], full: f64, min_cosine: f64) -> usize {
    let loss = |c: f64| if c.is_nan() { 1.0 } else { (1.0 - c).max(0.0) };
    let total: f64 = scored.iter().map(|&(c, _)| loss(c)).sum();
    if total <= 0.0 || loss(full) <= 0.0 {
        return 1.min(scored.len());
    }
    let scale = loss(full) / total;
    let mut left = total;
    for (k, &(c, _)) in scored.iter().enumerate() {
        if k > 0 && scale * left <= loss(min_cosine) {
            return k;
        }
        left -= loss(c);
    }
    scored.len()
}

/// The fewest of the most damaging groups (of `n_groups`, in the order they
/// are taken back) whose taking back passes `check`, and its report,
/// starting from `guess` ([`predicted_groups`]): the guess and one fewer
/// (or 1 and 2), then, until one passes, the next power of two past the
/// most that failed and twice it, then narrowing by thirds between the most
/// that failed (below the fewest that passed) and the fewest that passed.
/// Two counts a step, measured at once (one per core) where `parallel`,
/// else in order, stopping at the first that passes (the other decides
/// nothing): either way the same choice. Where the counts that pass and
/// fail are ordered (more taken back never fails where fewer passed), this
/// is the count checking each in turn would find. Where none passes, every
/// group and the report of all taken back. A good guess decides in one
/// step: PicoDet's layout detector (16 groups, 3 taken back; each check 8
/// samples of 800x608) took 3 steps from 1 (1 or 2, 4 or 8, then 3).
fn fewest_groups(
    n_groups: usize,
    guess: usize,
    parallel: bool,
    progress: &crate::pass::Progress,
    check: &(dyn Fn(usize) -> Result<VerifyReport> + Sync),
) -> Result<(usize, VerifyReport)> {
    let guess = guess.clamp(1, n_groups.max(1));
    // Each count checked: whether it passed, and the report of each that
    // passed and of every group taken back.
    let mut seen: std::collections::BTreeMap<usize, bool> = Default::default();
    let mut reports: HashMap<usize, VerifyReport> = HashMap::new();
    // Two counts a step, one at a time or at once: the same choice either
    // way, wherever passing is not ordered too.
    let mut ks = vec![guess.saturating_sub(1).max(1), guess.max(2)];
    loop {
        ks.retain(|&k| (1..=n_groups).contains(&k) && !seen.contains_key(&k));
        ks.dedup();
        if ks.is_empty() {
            break;
        }
        progress.say(&format!(
            "checking with the {} most damaging layer groups taken back",
            ks.iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ));
        // Ascending: one at a time, a count past one that passed decides
        // nothing (it is above the fewest that pass, where the bounds
        // ignore it), so it is not checked.
        let rs: Vec<VerifyReport> = match parallel {
            true => candidates(&ks, true, |_, &k| check(k))?,
            false => {
                let mut rs = vec![];
                for &k in &ks {
                    let r = check(k)?;
                    let passed = r.status == Status::Passed;
                    rs.push(r);
                    if passed {
                        break;
                    }
                }
                rs
            }
        };
        for (&k, r) in ks.iter().zip(rs) {
            let passed = r.status == Status::Passed;
            seen.insert(k, passed);
            if passed || k == n_groups {
                reports.insert(k, r);
            }
        }
        // The fewest that passed, and the most that failed below it (a
        // count that failed above it is left: more taken back can fail
        // where fewer passed).
        let hi = seen.iter().find(|(_, &p)| p).map(|(&k, _)| k);
        let lo = seen
            .iter()
            .filter(|(&k, &p)| !p && hi.is_none_or(|h| k < h))
            .map(|(&k, _)| k)
            .next_back()
            .unwrap_or(0);
        ks = match hi {
            None if lo >= n_groups => break,
            // The next power of two past the most that failed, and twice
            // it: more taken back can fail where fewer passed (the
            // recogniser on random lines passes with 4, fails with 6,
            // passes with 12: doubling from 3 kept 9 in float), and the
            // counts tried are those of a search from 1.
            None => {
                let p = (lo + 1).next_power_of_two().min(n_groups);
                vec![p, (2 * p).min(n_groups)]
            }
            Some(h) if h <= lo + 1 => break,
            Some(h) if h > lo + 2 => {
                let third = ((h - lo) / 3).max(1);
                vec![lo + third, h - third]
            }
            Some(h) => vec![(lo + h) / 2],
        };
    }
    let k = seen.iter().find(|(_, &p)| p).map_or(n_groups, |(&k, _)| k);
    match reports.remove(&k) {
        Some(r) => Ok((k, r)),
        // Never checked with every group taken back: check it now.
        None => Ok((k, check(k)?)),
    }
}

/// The bytes of the initializers `p` adds, as stored.
fn stored_bytes(p: &Patch) -> u64 {
    p.add_initializers.iter().map(tensor::stored_bytes).sum()
}

/// The share of the weights' stored bytes that [`back_to_int8`] leaves
/// in a finer form than int8 without checking, the groups that would
/// save the fewest bytes: each check is a plan of the model in tract.
/// PP-OCRv4's recogniser has 4 such groups that would save 0.4% of its
/// 2.9 MB together (4 checks: its run 2.18 -> 1.57 s, 667 bytes more);
/// PP-OCRv6's small one 5 of 9 (19.5 kB of 5.6 MB; with the most bytes
/// tried first, its run 4.84 -> 3.61 s and 11 kB less).
const BACK_TO_INT8_SLACK: f64 = 0.005;

/// The items of `items` that save the fewest bytes (`saves`), as many as
/// fit in `budget` bytes together.
fn least_worth(
    items: &[usize],
    saves: impl Fn(usize) -> u64,
    budget: f64,
) -> std::collections::HashSet<usize> {
    let mut by_saving: Vec<(u64, usize)> = items.iter().map(|&j| (saves(j), j)).collect();
    by_saving.sort_unstable();
    let mut left = budget;
    by_saving
        .into_iter()
        .take_while(|&(b, _)| {
            left -= b as f64;
            left >= 0.0
        })
        .map(|(_, j)| j)
        .collect()
}

/// Where every weight at once needed a finer storage (int8 in blocks,
/// float16), the layers now taken back may not: each group's weights
/// go back to int8 storage where the result still meets the tolerance
/// (all at once first, then group by group, those that save the most
/// bytes first, each kept where the result still passes); the groups that
/// would save the fewest bytes are not checked ([`BACK_TO_INT8_SLACK`]).
///
/// `taken`: the groups taken back, the last taken first; `fallback` and
/// `r`: the storage of every weight and the report of the result, updated
/// with each group that goes back.
fn back_to_int8(
    taken: &[&[usize]],
    int8: &[Option<Stored>],
    fallback: &mut Vec<Option<Stored>>,
    r: &mut VerifyReport,
    parallel: bool,
    progress: &crate::pass::Progress,
    check: &(dyn Fn(&[Option<Stored>]) -> Result<VerifyReport> + Sync),
) -> Result<()> {
    let down = |fb: &[Option<Stored>], gs: &[usize]| -> Vec<Option<Stored>> {
        let mut fb = fb.to_vec();
        for &i in gs.iter().flat_map(|&j| taken[j]) {
            if fb[i].as_ref().is_some_and(|s| !s.form.is_int8()) && int8[i].is_some() {
                fb[i] = int8[i].clone();
            }
        }
        fb
    };
    // The groups a finer form holds weights of. A group's weights are
    // its own: storing one group's as int8 changes no other's.
    let mut singles: Vec<usize> = (0..taken.len())
        .filter(|&j| forms_of(&down(fallback, &[j])) != forms_of(fallback))
        .collect();
    // Those whose int8 storage would save the fewest bytes stay as they
    // are, up to `BACK_TO_INT8_SLACK` of the weights' stored bytes in all:
    // each check costs a plan of the model in tract.
    let total: u64 = fallback
        .iter()
        .flatten()
        .map(|s| stored_bytes(&s.patch))
        .sum();
    let saves: Vec<u64> = taken
        .iter()
        .map(|group| {
            group
                .iter()
                .filter_map(|&i| match (&fallback[i], &int8[i]) {
                    (Some(f), Some(q)) if !f.form.is_int8() => {
                        Some(stored_bytes(&f.patch).saturating_sub(stored_bytes(&q.patch)))
                    }
                    _ => None,
                })
                .sum()
        })
        .collect();
    let small = least_worth(&singles, |j| saves[j], total as f64 * BACK_TO_INT8_SLACK);
    singles.retain(|j| !small.contains(j));
    // The most bytes first: each group accepted takes some of the margin
    // to the tolerance, and one that saves little could leave too little
    // for one that saves much (PP-OCRv6's small recogniser, the last
    // taken first: 13 kB accepted, then 53 kB refused).
    singles.sort_by_key(|&j| std::cmp::Reverse(saves[j]));
    // Where candidates run two at once (one per core): all at once
    // and the first group alone; then a group, and it with the next
    // one, so that where the first passes both are decided in one
    // step (PP-OCRv6's small recogniser: 4 groups in 3 steps). One at a time (past
    // `PARALLEL_CANDIDATES_MAX_BYTES`, where each check of a big model
    // costs seconds, and under `PARALLEL_CANDIDATES_MIN_BYTES`): all at
    // once, then the longest run of the groups left that passes, by
    // bisection, the group after it set aside, and again with the groups
    // after that (ResNet-50 of random weights, 102 MB: 14 groups, 2 of
    // which fail, in 9 checks instead of 17, its run 33 -> 25 s), by
    // [`accepted_in_runs`]. Either way the choices are those of
    // checking one group at a time, wherever adding a group that
    // fails to others makes them fail too.
    let passed = |m: &VerifyReport| m.status == Status::Passed;
    let say = || progress.say("checking the layers taken back with their weights in int8");
    if parallel {
        let check_pair = |a: &[Option<Stored>],
                          b: Option<&[Option<Stored>]>|
         -> Result<(VerifyReport, Option<VerifyReport>)> {
            say();
            match b {
                Some(b) => {
                    let (x, y) = rayon::join(|| check(a), || check(b));
                    Ok((x?, Some(y?)))
                }
                None => Ok((check(a)?, None)),
            }
        };
        let mut i = 0;
        if singles.len() > 1 {
            let every = down(fallback, &singles);
            let first = down(fallback, &singles[..1]);
            let (m, one) = check_pair(&every, Some(&first))?;
            if passed(&m) {
                (*fallback, *r) = (every, m);
                i = singles.len();
            } else {
                if let Some(one) = one.filter(passed) {
                    (*fallback, *r) = (first, one);
                }
                i = 1;
            }
        }
        while i < singles.len() {
            let a = down(fallback, &singles[i..=i]);
            let ab = singles.get(i + 1).map(|&b| down(&a, &[b]));
            let (ma, mab) = check_pair(&a, ab.as_deref())?;
            if !passed(&ma) {
                i += 1;
                continue;
            }
            (*fallback, *r) = (a, ma);
            if let (Some(ab), Some(mab)) = (ab, mab.filter(passed)) {
                (*fallback, *r) = (ab, mab);
            }
            i += 2;
        }
    } else {
        // Each passing check's storage and report: the last one is
        // the accepted groups'.
        let base = fallback.to_vec();
        let mut last = None;
        accepted_in_runs(&singles, |set| {
            say();
            let f = down(&base, set);
            let m = check(&f)?;
            let ok = passed(&m);
            if ok {
                last = Some((f, m));
            }
            Ok(ok)
        })?;
        if let Some(l) = last {
            (*fallback, *r) = l;
        }
    }
    Ok(())
}

/// A note per group taken back (`taken_back`: each one's cosine alone and
/// index in `groups`): what it holds, and the form its weights stay stored
/// in; first, the activation pairs left out with them (`keep` false
/// outside the groups). With them, how many groups changed: one of stored
/// weights alone, all back in int8 storage, did not (and has no note).
fn group_notes(
    taken_back: &[(f64, usize)],
    groups: &[Vec<usize>],
    patches: &[Patch],
    fallback: &[Option<Stored>],
    keep: &[bool],
) -> (Vec<String>, usize) {
    let taken: std::collections::HashSet<usize> = taken_back
        .iter()
        .flat_map(|&(_, gi)| groups[gi].iter().copied())
        .collect();
    let idle: Vec<String> = (0..patches.len())
        .filter(|&i| !keep[i] && !taken.contains(&i))
        .map(|i| describe(&patches[i]))
        .collect();
    let mut details = Vec::new();
    // The groups taken back that changed (each with a note).
    let mut changed = 0;
    if !idle.is_empty() {
        details.push(format!(
            "left out with the layers in float ({} pair(s) that then serve no integer kernel, or would make onnxruntime pool uint8 after a float layer): {}",
            idle.len(),
            idle.join(", ")
        ));
    }
    for &(s, gi) in taken_back {
        let what: Vec<String> = groups[gi].iter().map(|&i| describe(&patches[i])).collect();
        let forms: Vec<Form> = groups[gi]
            .iter()
            .filter_map(|&i| fallback[i].as_ref())
            .map(|s| s.form)
            .collect();
        let kernels = forms.iter().filter(|&&f| f == Form::Kernel).count();
        let stored = Form::names(forms.iter().copied().filter(|&f| f != Form::Kernel));
        // Weight-only weights computed in float already: only their storage
        // changes (where it is int8 again, nothing does).
        let storage_only = groups[gi]
            .iter()
            .all(|&i| patches[i].label.starts_with("weight stored as"));
        if storage_only && !forms.is_empty() && forms.iter().all(|&f| f == Form::Int8) {
            continue;
        }
        // An int4 MatMul back in its int8 kernel computes in int8, not float.
        let how = match (kernels, stored.is_empty(), storage_only) {
            (0, false, true) => format!("stored finer by sensitive=auto (alone: cosine {s:.5}; weights stay stored as {stored})"),
            (0, false, false) => format!("computed in float by sensitive=auto (alone: cosine {s:.5}; weights stay stored as {stored})"),
            (0, true, _) => format!("computed in float by sensitive=auto (alone: cosine {s:.5})"),
            (k, true, _) => format!("computed in int8 by sensitive=auto (alone: cosine {s:.5}; {k} MatMul(s) in dynamic MatMulInteger, as weights=int8 has them)"),
            (k, false, _) => format!("taken back by sensitive=auto (alone: cosine {s:.5}; {k} MatMul(s) compute in int8, dynamic MatMulInteger as weights=int8 has them, the others in float with weights stored as {stored})"),
        };
        details.push(format!("{how}, instead of: {}", what.join(", ")));
        changed += 1;
    }
    (details, changed)
}

/// Where a note says how to check the result on held-out data.
const HELD_OUT: &str = "check held-out data";

/// What the search chose on (verification's `samples`, or `wide` random
/// ones around them), that other inputs can fall below, and the commands
/// that check.
fn held_out_caveat(
    opts: &crate::verify::VerifyOptions,
    samples: usize,
    wide: Option<usize>,
) -> String {
    let flags = opts.tolerance.flags();
    let searched = match wide {
        Some(w) => format!(
            "{w} random samples (seed {}), verification's {samples} among them",
            opts.seed
        ),
        None => format!(
            "verification's {samples} random sample(s) (seed {})",
            opts.seed
        ),
    };
    match &opts.inputs {
        None => format!(
            "sensitive=auto chose on {searched}, which the result is verified on: other inputs can fall below the tolerance (torchvision's MNASNet of random weights: 0.9916 on its eight, 0.9897 on 32 others); {HELD_OUT} with `onnx-squeeze verify ORIGINAL RESULT --inputs HELD_OUT {flags}`, or more random samples with `--seed {} --samples 32`",
            opts.seed.wrapping_add(1)
        ),
        Some(_) => format!(
            "sensitive=auto chose on the {samples} sample(s) of --inputs, the ones the result is verified on: {HELD_OUT} with `onnx-squeeze verify ORIGINAL RESULT --inputs HELD_OUT {flags}`"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::{fewest_groups, least_worth, predicted_groups};

    /// The ladder takes the first rung that passes, checked two at once or
    /// one after the other, and measures no rung twice: with two weights,
    /// where a block fits one, the blocks rung is int8 for the other (4
    /// rungs); where blocks fit both, the rung with float16 where none
    /// fits is the blocks one again (3 rungs: the last checked alone where
    /// two are checked at once); where none fits, the blocks rung is the
    /// int8 one again (2 rungs).
    #[test]
    fn the_storage_ladder_takes_the_first_rung_that_passes_either_way() {
        use super::{forms_of, storage_ladder, Form, Stored};
        let stored = |form| {
            Some(Stored {
                form,
                patch: crate::patch::Patch::new("w"),
            })
        };
        let int8 = vec![stored(Form::Int8), stored(Form::Int8)];
        for blocks_fit in [1, 2, 0] {
            let forms = |kind: Form| -> anyhow::Result<Vec<Option<Stored>>> {
                Ok(match kind {
                    Form::Blocks => (0..2)
                        .map(|w| {
                            if w < blocks_fit {
                                stored(Form::Blocks)
                            } else {
                                None
                            }
                        })
                        .collect(),
                    _ => vec![stored(kind), stored(kind)],
                })
            };
            // The rungs, in order, as forms.
            let (i, b, h) = (Some(Form::Int8), Some(Form::Blocks), Some(Form::Half));
            let rungs = match blocks_fit {
                1 => vec![vec![i, i], vec![b, i], vec![b, h], vec![h, h]],
                2 => vec![vec![i, i], vec![b, b], vec![h, h]],
                _ => vec![vec![i, i], vec![h, h]],
            };
            for first_passing in 0..=rungs.len() {
                for parallel in [false, true] {
                    let checked = std::sync::Mutex::new(Vec::new());
                    let chosen = storage_ladder(
                        &int8,
                        &forms,
                        &crate::pass::Progress::default(),
                        parallel,
                        &|f| {
                            let k = rungs.iter().position(|r| *r == forms_of(f)).unwrap();
                            checked.lock().unwrap().push(k);
                            Ok(k >= first_passing)
                        },
                    )
                    .unwrap();
                    let want = rungs
                        .get(first_passing)
                        .cloned()
                        .unwrap_or(vec![None, None]);
                    assert_eq!(
                        forms_of(&chosen),
                        want,
                        "{blocks_fit} {first_passing} {parallel}"
                    );
                    let mut c = checked.into_inner().unwrap();
                    c.sort_unstable();
                    let n = c.len();
                    c.dedup();
                    assert_eq!(c.len(), n, "a rung measured twice");
                }
            }
        }
    }

    /// The groups taken back go back to int8 storage the most bytes saved
    /// first, either way of checking: where only one group may go back
    /// (any two fail), the one that saves the most does, whatever order
    /// they were taken in.
    #[test]
    fn groups_go_back_to_int8_the_most_bytes_first() {
        use super::{back_to_int8, Form, Stored};
        // Group j's weight: int8 storage of 4 bytes, blocks of 4 + saving.
        let savings = [400usize, 4_000, 40, 2_000];
        let stored = |form, bytes: usize| {
            let mut patch = crate::patch::Patch::new("w");
            patch.add_initializers.push(crate::ir::tensor::from_f32(
                "w",
                &[bytes as i64 / 4],
                &vec![0.0; bytes / 4],
            ));
            Some(Stored { form, patch })
        };
        let int8: Vec<_> = savings.iter().map(|_| stored(Form::Int8, 4)).collect();
        let groups: Vec<Vec<usize>> = (0..savings.len()).map(|j| vec![j]).collect();
        let taken: Vec<&[usize]> = groups.iter().map(Vec::as_slice).collect();
        for parallel in [false, true] {
            let mut fallback: Vec<_> = savings
                .iter()
                .map(|&b| stored(Form::Blocks, 4 + b))
                .collect();
            let mut r = VerifyReport::not_verified("");
            back_to_int8(
                &taken,
                &int8,
                &mut fallback,
                &mut r,
                parallel,
                &crate::pass::Progress::default(),
                &|f| {
                    let at_int8 = f.iter().flatten().filter(|s| s.form == Form::Int8).count();
                    let mut r = VerifyReport::not_verified("");
                    if at_int8 <= 1 {
                        r.status = Status::Passed;
                    }
                    Ok(r)
                },
            )
            .unwrap();
            let forms: Vec<Form> = fallback.iter().flatten().map(|s| s.form).collect();
            assert_eq!(
                forms,
                [Form::Blocks, Form::Int8, Form::Blocks, Form::Blocks],
                "parallel: {parallel}"
            );
            assert_eq!(r.status, Status::Passed);
        }
    }

    /// Groups of stored weights alone that all went back to int8 storage
    /// changed nothing: no note each, and not counted as taken back; a
    /// group whose layer computes in float is, whatever its storage.
    #[test]
    fn groups_back_in_int8_storage_are_not_counted_as_taken_back() {
        use super::{group_notes, Form, Stored};
        let patch = |label: &str, w: &str| {
            let mut p = crate::patch::Patch::new(label);
            p.remove_initializers.push(w.to_string());
            p
        };
        let patches = [
            patch("weight stored as int8 (expanded once at load)", "a"),
            patch("weight stored as int8 (expanded once at load)", "b"),
            patch("weight quantized to int8 per channel", "c"),
        ];
        let stored = |form| {
            Some(Stored {
                form,
                patch: crate::patch::Patch::new("w"),
            })
        };
        let fallback = [stored(Form::Int8), stored(Form::Half), stored(Form::Int8)];
        let groups: Vec<Vec<usize>> = vec![vec![0], vec![1], vec![2]];
        let taken = [(0.9, 0), (0.95, 1), (0.97, 2)];
        let (notes, changed) = group_notes(&taken, &groups, &patches, &fallback, &[false; 3]);
        assert_eq!(changed, 2);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].starts_with("stored finer by sensitive=auto") && notes[0].contains("'b'"));
        assert!(notes[1].starts_with("computed in float") && notes[1].contains("'c'"));
    }

    /// The groups left unchecked are those that save the fewest bytes, as
    /// many as fit in the budget together, whatever their order.
    #[test]
    fn the_groups_not_worth_a_check_save_the_fewest_bytes_within_the_budget() {
        let saves = [13_344u64, 2_752, 52_704, 2_576, 7_712];
        let items = [0, 1, 2, 3, 4];
        let small = |budget: f64| {
            let mut v: Vec<usize> = least_worth(&items, |j| saves[j], budget)
                .into_iter()
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(small(0.0), Vec::<usize>::new());
        assert_eq!(small(2_576.0), vec![3]);
        // 2,576 + 2,752 + 7,712 = 13,040: the next one, 13,344, is over.
        assert_eq!(small(13_040.0), vec![1, 3, 4]);
        assert_eq!(small(26_000.0), vec![1, 3, 4]);
        assert_eq!(small(1e9), vec![0, 1, 2, 3, 4]);
    }
    use crate::verify::{Status, VerifyReport};

    /// The score leaves out an output that passed on nearly zero values,
    /// whatever its cosine; a NaN cosine counts as 0.
    #[test]
    fn the_search_scores_the_outputs_verification_judges() {
        let output = |cosine: f64, vacuous: bool| crate::verify::metrics::OutputMetrics {
            name: "y".into(),
            max_abs: 0.0,
            mean_abs: 0.0,
            max_rel: 0.0,
            cosine,
            top1: None,
            passed: true,
            vacuous,
        };
        let mut r = crate::verify::VerifyReport::not_verified("");
        r.outputs = vec![output(0.995, false), output(0.3, true)];
        assert_eq!(super::score(&r), 0.995);
        r.outputs.push(output(f64::NAN, false));
        assert_eq!(super::score(&r), 0.0);
        r.outputs = vec![output(0.3, true)];
        assert_eq!(super::score(&r), 1.0);
    }

    use super::{
        accepted_in_runs, measures_in_parallel, PARALLEL_CANDIDATES_MAX_BYTES,
        PARALLEL_CANDIDATES_MIN_BYTES, PARALLEL_CANDIDATES_MIN_NODES,
    };

    /// The search measures on every sample verification will check: chosen
    /// on 8 of `--samples 16`, a result failed verification on the others.
    #[test]
    fn the_search_measures_on_all_of_verifications_samples() {
        let mut ctx = crate::pass::PassCtx::default();
        for (asked, measured) in [
            (None, crate::verify::DEFAULT_SAMPLES),
            (Some(16), 16),
            (Some(0), 1),
        ] {
            ctx.data.verify_samples = asked;
            assert_eq!(
                super::sensitivity_options(&ctx).samples,
                measured,
                "{asked:?}"
            );
        }
    }

    #[test]
    fn candidates_run_two_at_once_on_mid_sized_models_unless_told_otherwise() {
        for mid in [PARALLEL_CANDIDATES_MIN_BYTES, PARALLEL_CANDIDATES_MAX_BYTES] {
            assert!(measures_in_parallel(mid, 100, None));
            assert!(measures_in_parallel(mid, 100, Some("0")));
            assert!(!measures_in_parallel(mid, 100, Some("1")));
        }
        let (small, big) = (
            PARALLEL_CANDIDATES_MIN_BYTES - 1,
            PARALLEL_CANDIDATES_MAX_BYTES + 1,
        );
        assert!(!measures_in_parallel(big, 100, None));
        assert!(!measures_in_parallel(
            big,
            PARALLEL_CANDIDATES_MIN_NODES,
            None
        ));
        assert!(!measures_in_parallel(small, 100, None));
        // A small model of many nodes: its plans cost what its nodes do.
        assert!(measures_in_parallel(
            small,
            PARALLEL_CANDIDATES_MIN_NODES,
            None
        ));
        assert!(!measures_in_parallel(
            small,
            PARALLEL_CANDIDATES_MIN_NODES,
            Some("1")
        ));
    }

    /// The guess: the losses of the groups left quantized, scaled to the
    /// full result's, within the tolerance's.
    #[test]
    fn predicted_groups_known_values() {
        // Losses 0.04, 0.02, 0.01, 0.01 (sum 0.08); the full result lost
        // 0.04: half of each. Within 0.01: 0.02 (two back) is too much, the
        // last two's 0.01 holds.
        let scored = [(0.96, 0), (0.98, 1), (0.99, 2), (0.99, 3)];
        assert_eq!(predicted_groups(&scored, 0.96, 0.99), 2);
        assert_eq!(predicted_groups(&scored, 0.96, 0.999), 4);
        // At least one: the full result missed.
        assert_eq!(predicted_groups(&scored, 0.96, 0.9), 1);
        // No loss measured alone (or none in the full result): start at 1.
        assert_eq!(predicted_groups(&[(1.0, 0), (1.0, 1)], 0.9, 0.99), 1);
        assert_eq!(predicted_groups(&scored, f64::NAN, 0.99), 4);
    }

    /// A check's report that passed or failed, and nothing else.
    fn report(pass: bool) -> VerifyReport {
        let mut r = VerifyReport::not_verified("test");
        r.status = if pass { Status::Passed } else { Status::Failed };
        r
    }

    /// From any guess, one or two candidates at a time, the search finds
    /// the fewest groups that pass where passing is ordered, or every
    /// group (and its report) where none does, one at a time checking no
    /// count two at once would not; a right guess decides in one step.
    #[test]
    fn fewest_groups_finds_the_fewest_that_pass_from_any_guess() {
        let progress = crate::pass::Progress::default();
        for n in 1..=20usize {
            for need in 1..=n + 1 {
                for guess in 1..=n {
                    let mut counts = vec![];
                    for parallel in [false, true] {
                        let checked = std::sync::Mutex::new(vec![]);
                        let (k, r) = fewest_groups(n, guess, parallel, &progress, &|k| {
                            checked.lock().unwrap().push(k);
                            Ok(report(k >= need))
                        })
                        .unwrap();
                        let checked = checked.into_inner().unwrap();
                        assert_eq!(k, need.min(n), "n {n} need {need} guess {guess}");
                        assert_eq!(r.status == Status::Passed, need <= n);
                        assert!(checked.iter().all(|&k| (1..=n).contains(&k)));
                        let mut once = checked.clone();
                        once.sort_unstable();
                        once.dedup();
                        assert_eq!(once.len(), checked.len(), "{checked:?}");
                        if guess == need && need > 1 {
                            assert_eq!(checked.len(), 2, "{checked:?}");
                        }
                        counts.push(once);
                    }
                    // One at a time, the counts two at once check, but
                    // those past one that passed.
                    assert!(counts[0].iter().all(|k| counts[1].contains(k)));
                }
            }
        }
    }

    /// Where passing is not ordered (more taken back fails where fewer
    /// passed), the counts tried are those of a search from 1, whatever
    /// the guess below them: the recogniser on random lines (passes with 4,
    /// fails with 6 to 11, passes from 12) keeps 4 in float from a guess of
    /// 3, where doubling from the 3 that failed kept 9; PP-OCRv6's (fails
    /// up to 8 and with 14, passes with 9 to 13 and 15, 16) keeps 9.
    #[test]
    fn fewest_groups_where_passing_is_not_ordered() {
        let progress = crate::pass::Progress::default();
        let cases: [(&[usize], usize, usize); 3] = [
            (&[4, 5, 12, 13, 14, 15, 16], 3, 4),
            (&[9, 10, 11, 12, 13, 15, 16], 1, 9),
            (&[9, 10, 11, 12, 13, 15, 16], 2, 9),
        ];
        for (passing, guess, want) in cases {
            for parallel in [false, true] {
                let (k, r) = fewest_groups(16, guess, parallel, &progress, &|k| {
                    Ok(report(passing.contains(&k)))
                })
                .unwrap();
                assert_eq!(
                    (k, r.status),
                    (want, Status::Passed),
                    "{passing:?} from {guess}"
                );
            }
        }
    }

    /// `accepted_in_runs` accepts what checking one item at a time would,
    /// where failing items make any set fail (here: items that fail, and a
    /// cap on how many pass together), in fewer checks where most pass.
    #[test]
    fn groups_are_accepted_in_runs_as_one_at_a_time() {
        let one_at_a_time = |n: usize, passes: &dyn Fn(&[usize]) -> bool| {
            let mut accepted = Vec::new();
            for i in 0..n {
                let mut set = accepted.clone();
                set.push(i);
                if passes(&set) {
                    accepted = set;
                }
            }
            accepted
        };
        type Passes = Box<dyn Fn(&[usize]) -> bool>;
        let cases: Vec<(usize, Passes)> = vec![
            (
                14,
                Box::new(|s: &[usize]| !s.contains(&9) && !s.contains(&10)),
            ),
            (
                9,
                Box::new(|s: &[usize]| s.iter().all(|&i| i == 0 || i == 7)),
            ),
            (
                11,
                Box::new(|s: &[usize]| s.iter().all(|&i| matches!(i, 3 | 8 | 10))),
            ),
            (5, Box::new(|_: &[usize]| true)),
            (5, Box::new(|_: &[usize]| false)),
            (12, Box::new(|s: &[usize]| s.len() <= 5)),
            (1, Box::new(|_: &[usize]| false)),
        ];
        for (n, passes) in &cases {
            let items: Vec<usize> = (0..*n).collect();
            let mut checks = 0;
            let got = accepted_in_runs(&items, |set| {
                checks += 1;
                Ok(passes(set))
            })
            .unwrap();
            assert_eq!(got, one_at_a_time(*n, passes.as_ref()), "{n} items");
            match n {
                // ResNet-50's pattern: 14 groups, the 10th and 11th failing.
                14 => assert_eq!(checks, 9),
                // afis's: 11 groups, 8 failing (29 checks in runs of all
                // that was left after each failure).
                11 => assert_eq!(checks, 14),
                // Most failing: 7 of 9 (20 checks before).
                9 => assert_eq!(checks, 12),
                _ => {}
            }
        }
        assert!(accepted_in_runs(&[], |_| unreachable!())
            .unwrap()
            .is_empty());
    }
}
