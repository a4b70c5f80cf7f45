//! `sensitive=auto`: which quantized layers go back to float (and in which
//! stored form) until the tolerance is met.
//!
//! The search's parts: [`groups`] (what is measured and taken back
//! together, and how many), [`storage`] (the form the weights of layers
//! taken back keep), [`notes`] (what the report says of the choice).

mod groups;
mod notes;
mod storage;

use std::collections::HashMap;

use anyhow::Result;
use rayon::prelude::*;

use super::activations::Expected;
use super::placement::idle_pairs;
use super::select::Use;
use super::{Quant, INFO};
use crate::ir::{Model, NodeId};
use crate::pass::PassCtx;
use crate::patch::Patch;
use crate::verify::{Status, VerifyReport};
use groups::{activation_patches, fewest_groups, layer_groups, order_by_gain, predicted_groups};
use notes::Choice;
use storage::{back_to_int8, storage_ladder, stored_forms, Form, Ladder, Stored};

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

/// What the pass adds after the search to the patches a candidate keeps
/// (the opset a round before raised, put back where they need no raise:
/// [`super::prepare::Raised::restore`]), added to each candidate whose run
/// verification could reuse (checked against a reference that remembers
/// runs: not a ranking's, nor a verdict on a plan feeding weights, whose
/// candidates must keep that plan's structure): the one kept is then
/// checked as it is written, as a rule, and verification finds its run
/// instead of planning and running the result again. (The put-back
/// written is computed again on the final patches, the lossless storage
/// forms among them; where it differs, verification runs the result.)
pub(super) type Finish<'a> = dyn Fn(&[&Patch]) -> Option<Patch> + Sync + 'a;

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

/// The search over a proposal: its patches in graph order, checked as
/// candidates (which patches a candidate keeps, and the stored form of the
/// weights of those it takes back) against a reference: verification's of
/// the original, else the pass's own of its input.
struct Search<'a> {
    model: &'a Model,
    /// The proposal, in graph order.
    patches: &'a [Patch],
    opts: &'a crate::verify::VerifyOptions,
    progress: &'a crate::pass::Progress,
    /// Whether candidates are measured two at once ([`measures_in_parallel`]).
    parallel: bool,
    /// What candidates are compared with: verification's reference of the
    /// original, else the pass's own of its input.
    reference: &'a crate::verify::Reference,
    /// The model as `reference` (and each of its variants) specialises it.
    specialised: Specialised,
    /// What the pass adds to the candidate it keeps, added to those
    /// checked against a reference that remembers runs.
    finish: Option<&'a Finish<'a>>,
}

/// Where the search measures beyond verification's samples:
/// [`crate::verify::SEARCH_SAMPLES`] random ones, verification's leading
/// them, and the model specialised to them (an If model's), once.
struct Wide {
    reference: crate::verify::Reference,
    specialised: Specialised,
}

/// Where the full result misses the tolerance, what the search runs on:
/// `wide` where it widens to random samples; `full_wide` is the full
/// result's report there, where it passed verification's samples and
/// missed on those.
struct Misses {
    wide: Option<Wide>,
    full_wide: Option<VerifyReport>,
}

impl Search<'_> {
    /// The candidate that keeps the patches `keep` holds, with the stored
    /// forms in `fallback` of the weights of the others, checked against
    /// `reference` (built on `specialised`, the model as it specialises
    /// it). Each variant is checked before the reference itself: a
    /// candidate that fails on one then leaves no plan held back for the
    /// wide check (`Reference::keeping_plans`). Where `every_value` is
    /// false, the first failure decides; a ranking or the full result's
    /// score takes every value's rows.
    fn check(
        &self,
        reference: &crate::verify::Reference,
        specialised: &Specialised,
        keep: &[bool],
        fallback: &[Option<Stored>],
        every_value: bool,
    ) -> Result<VerifyReport> {
        let chosen: Vec<&Patch> = self
            .patches
            .iter()
            .zip(keep)
            .enumerate()
            .filter_map(|(i, (p, &k))| match k {
                true => Some(p),
                false => fallback.get(i).and_then(Option::as_ref).map(|s| &s.patch),
            })
            .collect();
        let finished = self
            .finish
            .filter(|_| reference.remembers_runs())
            .and_then(|f| f(&chosen));
        let mut variants = vec![];
        for (v, s) in reference.variants().iter().zip(&specialised.variants) {
            let r = self.check_alone(&v.reference, s.as_ref(), &chosen, finished.as_ref())?;
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
        let mut report = self.check_alone(
            reference,
            specialised.main.as_ref(),
            &chosen,
            finished.as_ref(),
        )?;
        for (label, r) in variants {
            report.add_variant(label, r);
        }
        Ok(report)
    }

    /// The candidate of patches `chosen`, then `finish`, as `reference`
    /// alone judges it: built on `specialised` where its patches translate
    /// to that copy (`finish` left out where it alone does not: the copy
    /// verification runs is then another, as before it was added), else
    /// on the model, specialised on its own.
    fn check_alone(
        &self,
        reference: &crate::verify::Reference,
        specialised: Option<&Model>,
        chosen: &[&Patch],
        finish: Option<&Patch>,
    ) -> Result<VerifyReport> {
        let g = &self.model.graph;
        if let Some(s) = specialised {
            let translate = |p: &Patch| crate::verify::translate_patch(p, g, &s.graph);
            let translated: Option<Vec<Patch>> = chosen.iter().map(|p| translate(p)).collect();
            if let Some(mut t) = translated {
                t.extend(finish.and_then(translate));
                let mut m = s.clone();
                for p in &t {
                    if p.is_applicable(&m.graph) {
                        m.apply(p)?;
                    }
                }
                return Ok(reference.check_specialised(&m));
            }
        }
        let mut m = self.model.clone();
        for p in chosen.iter().copied().chain(finish) {
            if p.is_applicable(&m.graph) {
                m.apply(p)?;
            }
        }
        Ok(reference.check_alone(&m))
    }

    /// The candidate checked on verification's samples.
    fn on_verification(&self, keep: &[bool], fallback: &[Option<Stored>]) -> Result<VerifyReport> {
        self.check(self.reference, &self.specialised, keep, fallback, false)
    }

    /// The candidate checked on its own plans: verification's few samples
    /// first, where a candidate that misses is refused after a run on them
    /// alone; one that passes there is checked on the `wide` samples too
    /// (the runs after verification's, its plan kept: see
    /// `Reference::keeping_plans`), and the worse of the two reports it.
    /// Where it passes both, its run on verification's samples is what the
    /// memo keeps: the last such run (or one of the last two, where two are
    /// checked at once) is the kept one's, which verification then reuses.
    fn own_plans(
        &self,
        wide: Option<&Wide>,
        keep: &[bool],
        fallback: &[Option<Stored>],
    ) -> Result<VerifyReport> {
        let v = self.on_verification(keep, fallback)?;
        let Some(w) = wide else {
            return Ok(v);
        };
        if v.status != Status::Passed {
            return Ok(v);
        }
        let x = self.check(&w.reference, &w.specialised, keep, fallback, false)?;
        Ok(match x.status != Status::Passed || score(&x) <= score(&v) {
            true => x,
            false => v,
        })
    }

    /// The wide reference, and the model specialised to its samples; `None`
    /// (with a note) where the model does not run on them.
    fn widen(&self, ctx: &mut PassCtx, why: &str) -> Option<Wide> {
        use crate::verify::{Reference, SEARCH_SAMPLES};
        self.progress.say(&format!(
            "{why}; running the model on {SEARCH_SAMPLES} random samples to search on"
        ));
        let wide_opts = crate::verify::VerifyOptions {
            samples: SEARCH_SAMPLES,
            ..self.opts.clone()
        };
        // Verification's samples lead the wide ones: a candidate that
        // passes there leaves its run on them for the check on
        // verification's own, which then plans and runs nothing.
        match Reference::new(self.model, &wide_opts).map(|w| w.lending_to(self.reference)) {
            Ok(reference) => {
                let specialised = Specialised::of(&reference, self.model);
                Some(Wide {
                    reference,
                    specialised,
                })
            }
            Err(e) => {
                ctx.notes.push(format!(
                    "sensitive=auto searches on verification's samples alone: the model did not run on {SEARCH_SAMPLES} ({e:#})"
                ));
                None
            }
        }
    }

    /// Whether to search, after the full result's check (`full`), and on
    /// which samples: `None` where there is nothing to search, the result
    /// passing (on the wide samples too where its margin was thin) or not
    /// measured (said in a note). The search's samples: verification's
    /// where they are the user's or number `SEARCH_SAMPLES` already, else
    /// `SEARCH_SAMPLES` random ones from its seed, its own among them (see
    /// `SEARCH_SAMPLES`).
    fn misses(&self, ctx: &mut PassCtx, full: &VerifyReport) -> Result<Option<Misses>> {
        use crate::verify::SEARCH_SAMPLES;
        let verification_samples = self.reference.expected().1.len();
        let can_widen = self.opts.inputs.is_none() && verification_samples < SEARCH_SAMPLES;
        let all = vec![true; self.patches.len()];
        Ok(match full.status {
            Status::NotVerified => {
                ctx.notes.push(format!(
                    "sensitive=auto could not measure the result ({}): no layer taken back to float, the result unmeasured",
                    full.reason.clone().unwrap_or_default()
                ));
                None
            }
            // A result that passes verification's few random samples with
            // more than half the error the tolerance allows is confirmed on
            // the wide ones first: on two, the margin says little of other
            // inputs. PP-OCRv6's recogniser passed its two at 0.9917 and
            // measured 0.854 on 32 others; PP-OCRv4's 0.9916, 0.907.
            Status::Passed => {
                let min_cosine = self.opts.tolerance.min_cosine;
                let thin = score(full) < 1.0 - (1.0 - min_cosine.clamp(0.0, 1.0)) / 2.0;
                if !(can_widen && thin) {
                    return Ok(None);
                }
                let why = format!(
                    "the result passes at cosine {:.5}, close to the tolerance",
                    score(full)
                );
                let Some(w) = self.widen(ctx, &why) else {
                    return Ok(None);
                };
                let x = self.check(&w.reference, &w.specialised, &all, &[], true)?;
                if x.status == Status::Passed {
                    return Ok(None);
                }
                ctx.notes.push(format!(
                    "sensitive=auto: the full result passed verification's {verification_samples} random sample(s) at cosine {:.5}, closer to the tolerance ({min_cosine}) than half its margin, and missed it on {SEARCH_SAMPLES} (cosine {:.5}): searched on those",
                    score(full),
                    score(&x)
                ));
                Some(Misses {
                    wide: Some(w),
                    full_wide: Some(x),
                })
            }
            Status::Failed => Some(Misses {
                wide: match can_widen {
                    true => self.widen(ctx, "the result misses the tolerance"),
                    false => None,
                },
                full_wide: None,
            }),
        })
    }

    /// Each group of `groups` alone (its patches kept, every other one
    /// taken back, weights float), scored on `ranking`: on every core
    /// (each run is single-threaded), or one at a time outside
    /// `PARALLEL_CANDIDATES_MIN_BYTES` to `PARALLEL_CANDIDATES_MAX_BYTES`.
    /// Each group's score and index, in `groups`' order.
    fn measure_alone(
        &self,
        ranking: &crate::verify::Reference,
        groups: &[Vec<usize>],
    ) -> Result<Vec<(f64, usize)>> {
        let n = self.patches.len();
        // Counted and said under one lock: the last message is the last count.
        let measured = std::sync::Mutex::new(0usize);
        self.progress.say(&format!(
            "0 of {} layer groups measured alone",
            groups.len()
        ));
        candidates(groups, self.parallel, |gi, idxs| {
            let mut keep = vec![false; n];
            idxs.iter().for_each(|&i| keep[i] = true);
            // Scored against a float rest (fallbacks would cost a patch
            // per weight in every candidate, and rank the same).
            let s = score(&self.check(ranking, &self.specialised, &keep, &[], true)?);
            if let Ok(mut done) = measured.lock() {
                *done += 1;
                self.progress.say(&format!(
                    "{done} of {} layer groups measured alone",
                    groups.len()
                ));
            }
            Ok((s, gi))
        })
    }
}

impl Quant {
    /// `sensitive=auto`: check the whole proposal against the tolerance with
    /// tract on the calibration data; if it misses, measure each change (or,
    /// on big proposals, each of 16 groups of changes in graph order) alone,
    /// and keep the most damaging ones in float: the fewest that meet the
    /// tolerance, found from the number the scores alone predict
    /// ([`fewest_groups`]). The weights of the layers taken back stay
    /// stored compactly ([`storage_ladder`], [`back_to_int8`]). Every
    /// change kept in float is reported with its score.
    pub(super) fn keep_sensitive_in_float(
        &self,
        model: &Model,
        ctx: &mut PassCtx,
        mut patches: Vec<Patch>,
        storable: &HashMap<String, Fallback>,
        baseline: Baseline,
        finish: Option<&Finish>,
    ) -> Result<Vec<Patch>> {
        use crate::verify::Reference;
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
        let search = Search {
            model,
            patches: &patches,
            opts,
            progress: &progress,
            parallel,
            reference,
            specialised: Specialised::of(reference, model),
            finish,
        };
        let all = vec![true; n];
        progress.say("checking the result in tract");
        let full = search.check(reference, &search.specialised, &all, &[], true)?;
        // Where the full result misses on the wide samples only, it is
        // ranked and reported there.
        let Some(Misses { wide, full_wide }) = search.misses(ctx, &full)? else {
            return Ok(patches);
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
        let own_plans = |keep: &[bool], fallback: &[Option<Stored>]| {
            search.own_plans(wide.as_ref(), keep, fallback)
        };
        // Layers are ranked on one sample alone (half the runs on two
        // samples), the one the full result misses most: where images are
        // drawn normal and uniform in turn, a classifier that takes images
        // in [0, 1) saturates on the normal one, and every layer would rank
        // the same there; every verdict takes them all.
        let ranking = match (&wide, &full_wide) {
            (Some(w), Some(x)) => w.reference.one_sample(x.worst_sample.unwrap_or(0)),
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
            search.check(&ranking, &search.specialised, &pairs, &[], true)?;
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
            search.check(&ranking, &search.specialised, &vec![false; n], &[], true)?;
        }
        let eval = |keep: &[bool], fallback: &[Option<Stored>]| -> Result<VerifyReport> {
            match &verdicts {
                Some(v) => search.check(v, &search.specialised, keep, fallback, false),
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
        let excluded = |id: crate::ir::NodeId| self.excludes(&model.graph.nodes[id]);
        let forms = |kind: Form| stored_forms(model, &patches, storable, kind, &excluded);
        let int8 = forms(Form::Int8)?;
        let storable_any = int8.iter().any(Option::is_some);
        // The storage of the weights taken back, each rung judged by `eval`,
        // and where the ladder stopped (with the best score of its rungs,
        // for the note where none passed).
        let climb = |eval: &Verdict| -> Result<(Vec<Option<Stored>>, Ladder)> {
            if !storable_any {
                return Ok((vec![None; n], Ladder::None));
            }
            let best = std::sync::Mutex::new(f64::NEG_INFINITY);
            let fallback = storage_ladder(&int8, &forms, &progress, parallel, &|f| {
                let r = eval(&vec![false; n], f)?;
                let mut b = best.lock().unwrap_or_else(|e| e.into_inner());
                *b = b.max(score(&r));
                Ok(r.status == Status::Passed)
            })?;
            let best = best.into_inner().unwrap_or_else(|e| e.into_inner());
            let ladder = Ladder::of(&fallback, best);
            Ok((fallback, ladder))
        };
        let (mut fallback, mut ladder) = climb(&eval)?;
        let act_of = activation_patches(&patches);
        let groups = layer_groups(g, &patches, &act_of);
        let mut scored = search.measure_alone(&ranking, &groups)?;
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
                    (fallback, ladder) = climb(&own_plans)?;
                    (k, r) = decide(&own_plans, &mut fallback)?;
                }
            }
        }
        let keep = take(k);
        let chosen = Choice {
            patches: &patches,
            groups: &groups,
            taken_back: &scored[..k],
            fallback: &fallback,
            ladder,
            keep: &keep,
            report: &r,
            full: score(full_wide.as_ref().unwrap_or(&full)),
        };
        let said = chosen.notes(
            &ctx.notes,
            opts,
            reference.expected().1.len(),
            wide.as_ref().map(|w| w.reference.expected().1.len()),
        );
        ctx.notes.extend(said);
        Ok(patches
            .into_iter()
            .zip(fallback)
            .zip(keep)
            .filter_map(|((p, f), k)| if k { Some(p) } else { f.map(|s| s.patch) })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
