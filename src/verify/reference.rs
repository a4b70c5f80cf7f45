//! The original side of a verification ([`Reference`]): its inputs, the
//! copy of it tract runs, and its outputs, computed once; results are
//! compared with it one after another (`quant`'s `sensitive=auto` compares
//! many), each on a plan of its own, on the plan of one that differs from
//! it in weights alone ([`super::fed`]), or not at all where the memo
//! ([`super::RunMemo`]) holds its run.

use super::*;

/// The original side of a verification, computed once: inputs, the
/// specialisation they allow, and the original's outputs. Comparing several
/// candidate results against one reference (as `quant`'s `sensitive=auto`
/// does) runs the original only once.
#[derive(Clone)]
pub struct Reference {
    pub(super) opts: VerifyOptions,
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
    /// Outputs of a detector's boxes and class scores together, with their
    /// classes: their class scores (after [`BOX_ROWS`]) are compared on
    /// their own too, and a note says where they miss the tolerance
    /// ([`detection_class_rows`]).
    class_rows: HashMap<String, usize>,
    /// Graph outputs that add a run input to a term the model computes:
    /// (index in `out_names`, index in a run sample, the term's row name
    /// `output - input`), each compared as that term too ([`residuals_of`]).
    residuals: Vec<(usize, usize, String)>,
    notes: Vec<String>,
    /// The time preparing it took (the original's plan and runs), part of
    /// a verification's time wherever it was built.
    pub(super) seconds: f64,
    /// Where results are run ([`Reference::with_memo`]); none: each runs.
    pub(super) memo: Option<RunMemo>,
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
        let class_rows = detection_class_rows(original, &out_names);
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
                let (copy, mut more, c) = verification_model(
                    original,
                    &specs,
                    &samples[0],
                    &fixed,
                    &run_samples,
                    mode,
                    None,
                )
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
                    notes.push(selections_note(&selections, &copy_outputs));
                }
                notes.extend(if_notes(
                    original,
                    &orig_copy,
                    opts,
                    &specs,
                    &samples[0],
                    &fixed,
                ));
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
            class_rows,
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
        // Each variant its own: the last results that passed there.
        for v in &mut self.variants {
            v.reference.memo = Some(RunMemo::default());
        }
        self
    }

    /// Results compared with this reference that differ from the first one
    /// compared in their weights' values alone (float32 initializers of
    /// `fed::FED_MIN_ELEMENTS` values or more, once stored weights are
    /// expanded for tract), and in which of that one's activation Q/DQ
    /// pairs they hold, run on one plan of that first one, the weights fed
    /// as inputs and each pair switched by one (`fed`), instead of a plan
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

    /// Whether a result's run that passes here can serve verification
    /// later: this reference has the pipeline's memo, or lends its runs
    /// to a reference that has it ([`Reference::lending_to`]). Those of a
    /// ranking ([`Reference::one_sample`]) and of verdicts on another's
    /// plan ([`Reference::on_plan_of`]) cannot.
    pub fn remembers_runs(&self) -> bool {
        self.memo.is_some() || self.lend.is_some()
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
        specialise_remembered(
            self.memo.as_ref(),
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
    /// with each on a copy of its own (`Reference::compare_variants`).
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

    /// This reference's own comparison, without its variants': the result
    /// checked against the original's interface, its copy made as the
    /// original's was, run (or its run found), and each output compared.
    fn compare_alone(&self, result: &Model, specialised: bool) -> Result<VerifyReport> {
        let start = Instant::now();
        if let Some(why) = untrusted_op(result) {
            anyhow::bail!("{why}; verify with onnxruntime instead");
        }
        self.check_interface(result, specialised)?;
        let mut notes = self.notes.clone();
        let copy = self.result_copy(result, specialised, &mut notes)?;
        let key = self
            .memo
            .as_ref()
            .map(|_| fingerprint(&copy.proto, &self.run_samples));
        let lend_key = self
            .lend
            .as_ref()
            .map(|l| fingerprint(&copy.proto, &l.samples));
        let run = self.run_result(copy.proto, key, lend_key)?;
        if run.ran.half_as_float {
            notes.push(HALF_AS_FLOAT_NOTE.into());
        }
        let got = &run.ran.outputs;
        let run_seconds = run
            .reused
            .map_or_else(|| start.elapsed().as_secs_f64(), |(s, _)| s);
        let compared = self.compare_outputs(got, &copy.names, &copy.selections, &mut notes)?;
        let mut outputs = compared.outputs;
        let mut sample_cosines = compared.sample_cosines;
        for (m, cosines) in self.compare_residuals(got)? {
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
                compared.floats,
                "the post-processing after {} that tract cannot type or run reads no float value verification can compare (only booleans or indices, or values the original leaves nearly zero on these inputs); pass --inputs with real data, or --no-verify",
                c.after()
            );
        }
        // Outputs with no element in any sample (a batch of 0 in --inputs)
        // compare nothing: a result computing anything at all would pass.
        anyhow::ensure!(
            got.is_empty() || got.iter().flatten().any(|t| t.len() > 0),
            "every output of the model is empty on these inputs (no element in any sample), so nothing was compared; pass --inputs whose samples give outputs (no axis of size 0), or bind the dims that empty them with --dim"
        );
        let tol = self.opts.tolerance;
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
        let reused = run.reused;
        // A result that passes is the one a search keeps (its last such
        // run is what it returns, or one of the last two where it checks
        // two at once): that is the run worth remembering.
        if status == Status::Passed {
            self.remember(run, run_seconds, key, lend_key);
        }
        Ok(VerifyReport {
            status,
            reason,
            samples: self.samples.len(),
            tolerance: tol,
            outputs,
            notes,
            seconds: 0.0,
            reused_seconds: reused.map_or(0.0, |(s, _)| s),
            reused_put: reused.map_or(0, |(_, put)| put),
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

    /// Whether `result` takes the original's inputs (less those the
    /// specialised copy it is, where `specialised`, made constant) and
    /// returns as many outputs.
    fn check_interface(&self, result: &Model, specialised: bool) -> Result<()> {
        let result_specs = inputs::input_specs(&result.graph, &self.opts.dims, &mut Vec::new())?;
        let fixed_names: Vec<&String> = self.fixed.iter().map(|&i| &self.specs[i].name).collect();
        let original: Vec<&String> = self
            .specs
            .iter()
            .map(|s| &s.name)
            .filter(|n| !(specialised && fixed_names.contains(n)))
            .collect();
        let names: Vec<&String> = result_specs.iter().map(|s| &s.name).collect();
        anyhow::ensure!(
            original == names,
            "the result's inputs differ from the original's: it takes {:?}, the original {:?}; verification feeds both the same inputs, by name and in order",
            names,
            original
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
        Ok(())
    }

    /// The copy of `result` tract runs, made as the original's was:
    /// specialised to the samples (unless `specialised` says it is),
    /// lowered, cut where the original was (without typing it; what is not
    /// run must be the original's, see `reach`), with what its selections
    /// read and choose exposed. What lowering did goes to `notes`.
    fn result_copy(
        &self,
        result: &Model,
        specialised: bool,
        notes: &mut Vec<String>,
    ) -> Result<ResultCopy> {
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
                None,
            )?
        };
        self.check_cut(result, res_cut.as_ref())?;
        // The result's selections, paired with the original's by position.
        let selections = Selections::of(&res_model);
        let mine = &self.selections;
        anyhow::ensure!(
            selections.chosen.len() == mine.chosen.len()
                && selections.read.len() == mine.read.len(),
            "the original has {} selection(s) (NonMaxSuppression/NonZero/TopK/ArgMax/ArgMin) reading {} value(s), the result {} reading {}",
            mine.chosen.len(),
            mine.read.len(),
            selections.chosen.len(),
            selections.read.len()
        );
        let res_exposed = selections.exposed(&res_model);
        let mut proto = res_model.to_proto();
        drop(res_model);
        expose(&mut proto, &res_exposed);
        let names: Vec<String> = match &res_cut {
            Some(c) => c.outputs.iter().cloned().chain(res_exposed).collect(),
            None => result.graph.output_names().chain(res_exposed).collect(),
        };
        for n in res_notes {
            let n = format!("in the copy of the result tract runs: {n}");
            if !notes.contains(&n) {
                notes.push(n);
            }
        }
        Ok(ResultCopy {
            proto,
            names,
            selections,
        })
    }

    /// Whether the result's copy was cut as the original's (`theirs`, of
    /// `result`): what is not run must be the original's. A result whose
    /// original was not cut is not cut either (`CutMode::Never`).
    fn check_cut(&self, result: &Model, theirs: Option<&reach::Cut>) -> Result<()> {
        match (&self.cut, theirs) {
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
                    true => "no longer has that part".to_string(),
                    false => format!("has it in a form that cannot be cut (over {} nodes, its bodies' counted, or nothing before it to compare)", reach::MAX_TAIL),
                }
            ),
        }
        Ok(())
    }

    /// The outputs of the result's copy `copy` on the run samples: found in
    /// the memo under `key` (what running it cost whoever made it), else
    /// run. Where the reference this one lends to passed the same copy on
    /// its samples (this one's leading ones, under `lend_key`) and kept its
    /// plan, that run and plan serve: only the samples after them run. A
    /// copy that differs from the one a plan feeding weights was made for
    /// in its weights' values alone runs there (see
    /// `Reference::feeding_weights`); that plan is not kept for other
    /// samples.
    fn run_result(
        &self,
        copy: crate::proto::ModelProto,
        key: Option<u128>,
        lend_key: Option<u128>,
    ) -> Result<ResultRun> {
        if let Some((ran, seconds, put)) = self.memo.as_ref().zip(key).and_then(|(m, k)| m.take(k))
        {
            return Ok(ResultRun {
                ran,
                reused: Some((seconds, put)),
                runner: None,
                from_fed: false,
            });
        }
        let head = self
            .lend
            .as_ref()
            .zip(lend_key)
            .and_then(|(l, k)| l.memo.head(k));
        if head.is_none() {
            if let Some(ran) = self.run_fed(&copy) {
                return Ok(ResultRun {
                    ran,
                    reused: None,
                    runner: None,
                    from_fed: true,
                });
            }
        }
        let (head, runner) = match head {
            Some((ran, runner)) => (ran.outputs, runner),
            None => (
                vec![],
                Arc::new(
                    tract::Runner::new(copy, &self.run_samples[0], self.run_samples.len())
                        .context("the rewritten model does not run in tract")?,
                ),
            ),
        };
        let mut outputs = head;
        outputs.extend(
            run_on(&runner, &self.run_samples[outputs.len()..], &[])
                .context("the rewritten model does not run in tract")?,
        );
        Ok(ResultRun {
            ran: Ran {
                outputs,
                half_as_float: runner.computes_half_as_float(),
            },
            reused: None,
            runner: Some(runner),
            from_fed: false,
        })
    }

    /// A passing result's run, remembered: in the memo under `key`, and on
    /// the leading samples in the memo of the reference this one lends to
    /// under `lend_key`. A run on the plan feeding weights is not the
    /// result's own bit for bit: it serves no verdict another reference
    /// reuses.
    fn remember(
        &self,
        run: ResultRun,
        run_seconds: f64,
        key: Option<u128>,
        lend_key: Option<u128>,
    ) {
        if run.from_fed {
            return;
        }
        let got = run.ran.outputs;
        let half_as_float = run.ran.half_as_float;
        if let (Some(lend), Some(key)) = (&self.lend, lend_key) {
            let m = lend.samples.len();
            lend.memo.put(
                key,
                Ran {
                    outputs: got[..m.min(got.len())].to_vec(),
                    half_as_float,
                },
                run_seconds * m as f64 / got.len().max(1) as f64,
                None,
            );
        }
        if let (Some(memo), Some(key)) = (&self.memo, key) {
            memo.put(
                key,
                Ran {
                    outputs: got,
                    half_as_float,
                },
                run_seconds,
                // A plan made for one run, without code generation, would
                // run the wide samples slowly: that check plans its own.
                run.runner
                    .filter(|_| self.run_samples.len() > tract::QUICK_PLAN_MAX_RUNS),
            );
        }
    }

    /// Output `k` (`name`, a detector's `[batch, 4 + classes, anchors]`)
    /// compared on its class rows alone: its box rows,
    /// in pixels, carry the whole output's cosine while the scores, under
    /// 1, can move enough to change which detections pass a threshold (a
    /// YOLOv8 fall detector: 0.99997 over the output, 0.954-0.977 over its
    /// two classes' scores). Where they miss the tolerance the verdict
    /// says so in a note: made a row that must pass, it sent that
    /// detector's `sensitive=auto` search, calibrated on random images, to
    /// 35 s (from 6) and 1.5x of float's speed (from 2.5x), its class
    /// scores no closer on images of shapes (0.90-0.99).
    fn class_scores(
        &self,
        k: usize,
        name: &str,
        classes: usize,
        got: &[Vec<Tensor>],
    ) -> Result<OutputMetrics> {
        let tol = self.opts.tolerance;
        let mut acc = Accumulator::new(&format!("{name} (class scores)"));
        for (e, g) in self.expected.iter().zip(got) {
            let (a, b) = (&e[k], &g[k]);
            let &[n, rows, anchors] = a.shape() else {
                continue;
            };
            if rows != BOX_ROWS + classes || b.shape() != a.shape() {
                continue;
            }
            let shape = [n, classes, anchors];
            match (tract::f32_slice(a), tract::f32_slice(b)) {
                (Some(x), Some(y)) => acc.add(
                    &class_rows_of(x, &shape),
                    &class_rows_of(y, &shape),
                    &shape,
                    tol.atol,
                    tol.rtol,
                ),
                _ => acc.add(
                    &class_rows_of(&tract::to_f64(a)?, &shape),
                    &class_rows_of(&tract::to_f64(b)?, &shape),
                    &shape,
                    tol.atol,
                    tol.rtol,
                ),
            };
        }
        Ok(acc.finish(tol.min_cosine, tol.atol))
    }

    /// The result's outputs `got` (named `res_names`, its selections
    /// `res_sel`) compared with the original's: the graph outputs and the
    /// values selections read, each row's metrics, and what was left
    /// uncompared and why in `notes`.
    fn compare_outputs(
        &self,
        got: &[Vec<Tensor>],
        res_names: &[String],
        res_sel: &Selections,
        notes: &mut Vec<String>,
    ) -> Result<Compared> {
        let mine = &self.selections;
        // Whether each selection chose the same on every sample.
        let agree: Vec<bool> = mine
            .chosen
            .iter()
            .zip(&res_sel.chosen)
            .map(|(a, b)| {
                same_choice((&self.out_names, &self.expected), (res_names, got), a, b)
                    .unwrap_or(false)
            })
            .collect();
        let tol = self.opts.tolerance;
        let mut outputs = Vec::new();
        // Per float output, whether it failed and its cosine on each sample
        // alone (see `Accumulator::add`).
        let mut sample_cosines: Vec<(bool, Vec<f64>)> = Vec::new();
        // Graph outputs and the values selections read; what they choose
        // is compared above.
        let rows = self.n_outputs + mine.read.len();
        let mut compared_floats = false;
        let mut decided: Vec<&str> = Vec::new();
        for (k, name) in self.out_names.iter().enumerate().take(rows) {
            let mut acc = Accumulator::new(name).score_rows(self.score_rows.get(name).copied());
            let integer = self
                .expected
                .first()
                .is_some_and(|e| !e[k].datum_type().is_float());
            if integer {
                acc = acc.integer();
            }
            // Booleans and indices the cut post-processing reads that a
            // comparison or an ArgMax decided.
            if integer
                && self
                    .cut
                    .as_ref()
                    .is_some_and(|c| c.decided.iter().any(|d| d == name))
            {
                decided.push(name.as_str());
                continue;
            }
            if let Some(why) = self.not_compared(k, name, integer, &agree, got) {
                notes.push(why);
                continue;
            }
            for (e, g) in self.expected.iter().zip(got) {
                let (a, b) = (&e[k], &g[k]);
                anyhow::ensure!(
                    a.shape() == b.shape(),
                    "output '{name}' has shape {:?} in the original but {:?} in the result",
                    a.shape(),
                    b.shape()
                );
                match (tract::f32_slice(a), tract::f32_slice(b)) {
                    (Some(x), Some(y)) => acc.add(x, y, a.shape(), tol.atol, tol.rtol),
                    _ => acc.add(
                        &tract::to_f64(a)?,
                        &tract::to_f64(b)?,
                        a.shape(),
                        tol.atol,
                        tol.rtol,
                    ),
                };
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
            let mut m = acc.finish(tol.min_cosine, tol.atol);
            notes.extend(self.atol_note(name, &m, &acc));
            let cosines = acc.sample_cosines();
            if !integer && !cosines.is_empty() {
                sample_cosines.push((!m.passed, cosines));
            }
            // An output the original computes as nearly zero everywhere
            // (see `faint_outputs`) compares nothing that matters either.
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
                        "output '{name}' holds few values a sample, compared by the cosine of all samples' values together and of each against their typical size ({:.5}), which their common level dominates: from sample to sample the result follows the original's variation at a correlation of {r:.2} only (off by up to {:.3e}, where the original's values spread by {spread:.3e}); compare them on held-out data before relying on it",
                        m.cosine, m.max_abs
                    ));
                }
            }
            let class = self
                .class_rows
                .get(name)
                .filter(|_| !integer && m.passed && !m.vacuous);
            if let Some(&classes) = class {
                let c = self.class_scores(k, name, classes, got)?;
                if !c.passed {
                    notes.push(format!(
                        "output '{name}' passed (cosine {:.5}), but its class scores alone (rows {BOX_ROWS}-{} of axis 1: {classes} classes; its box rows, in pixels, weigh most in its cosine) measure {:.5} on their worst sample, under min_cosine {} (largest difference {:.3e}): which detections pass a score threshold can change; {}where quant made the result, keeping activations float (quant(activations=none)) keeps scores closer",
                        m.cosine,
                        BOX_ROWS + classes - 1,
                        c.cosine,
                        tol.min_cosine,
                        c.max_abs,
                        if self.opts.inputs.is_none() {
                            "check on real images (verify ORIGINAL RESULT --inputs IMAGES); "
                        } else {
                            ""
                        }
                    ));
                }
            }
            outputs.push(m);
        }
        match decided.as_slice() {
            [] => {}
            [name] => notes.push(format!(
                "value '{name}' (booleans or indices a comparison or an ArgMax decided, which the post-processing verification cannot run reads) not compared: they flip under any rounding; the floats they are decided from are compared"
            )),
            all => notes.push(format!(
                "values {} (booleans or indices comparisons or ArgMaxes decided, which the post-processing verification cannot run reads) not compared: they flip under any rounding; the floats they are decided from are compared",
                super::name_list(all.iter().copied())
            )),
        }
        Ok(Compared {
            outputs,
            sample_cosines,
            floats: compared_floats,
        })
    }

    /// Why row `k` (`name`, of integers where `integer`) is not compared,
    /// where it is not: integers a Gather picks by a selection's indices, or a value that
    /// follows a selection that chose differently (`agree`: whether each
    /// selection chose the same; `got`: the result's outputs).
    fn not_compared(
        &self,
        k: usize,
        name: &str,
        integer: bool,
        agree: &[bool],
        got: &[Vec<Tensor>],
    ) -> Option<String> {
        let mine = &self.selections;
        if integer && mine.gathered.iter().any(|g| g == name) {
            return Some(format!(
                "value '{name}' (integers a Gather picks from by a selection's indices) not compared: ids such as an ArgMax's over nearly tied scores flip under any rounding"
            ));
        }
        let js = mine.outputs.get(name)?;
        if js.iter().all(|&j| agree[j]) {
            return None;
        }
        let differ = self
            .expected
            .iter()
            .zip(got)
            .position(|(e, g)| e[k].shape() != g[k].shape());
        let how = match differ {
            Some(i) => format!(
                "{:?} in the original, {:?} in the result on sample {}",
                self.expected[i][k].shape(),
                got[i][k].shape(),
                i + 1
            ),
            // Labels (an ArgMax's): how many still agree.
            None if integer => match element_agreement(&self.expected, got, k) {
                Some(rate) => {
                    format!("as many elements, {:.1}% of them the same", rate * 100.0)
                }
                None => "as many elements, not the same ones".to_string(),
            },
            None => "as many elements, not the same ones".to_string(),
        };
        let chosen: Vec<&str> = js.iter().map(|&j| mine.chosen[j].as_str()).collect();
        Some(format!(
            "{} '{name}' follows a selection ({}) that chose differently ({how}): not compared; what the selection reads decides",
            if k < self.n_outputs { "output" } else { "value" },
            chosen.join(", ")
        ))
    }

    /// Where output `name` (`m`, of `acc`) passed below the cosine, on
    /// absolute error: that its cosine means nothing there, on which
    /// samples.
    fn atol_note(&self, name: &str, m: &OutputMetrics, acc: &Accumulator) -> Option<String> {
        let tol = self.opts.tolerance;
        if !(m.passed && m.cosine < tol.min_cosine) {
            return None;
        }
        let alone = acc.passed_on_atol_alone(tol.min_cosine, tol.atol);
        Some(if alone.is_empty() {
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
        })
    }

    /// Residual terms: each output that adds a run input, minus that input,
    /// in both (see `residuals_of`), with its cosine on each sample; none
    /// where no sample has the input's shape.
    fn compare_residuals(&self, got: &[Vec<Tensor>]) -> Result<Vec<(OutputMetrics, Vec<f64>)>> {
        let tol = self.opts.tolerance;
        let mut rows = vec![];
        for (k, i, name) in &self.residuals {
            let (k, i) = (*k, *i);
            let mut acc = Accumulator::new(name);
            for ((e, g), x) in self.expected.iter().zip(got).zip(&self.run_samples) {
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
            rows.push((m, acc.sample_cosines()));
        }
        Ok(rows)
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
            class_rows: self.class_rows.clone(),
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
    pub(super) specs: Vec<inputs::InputSpec>,
    pub(super) samples: Vec<Vec<Tensor>>,
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
            Some(p) => {
                let samples = inputs::load_samples(p, &specs)?;
                notes.extend(inputs::non_finite_note(&specs, &samples));
                notes.extend(inputs::past_full_scale_note(&specs, &samples));
                samples
            }
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

/// What the original's selections (NonMaxSuppression/NonZero/TopK/ArgMax/
/// ArgMin) mean for the comparison: the outputs among `copy_outputs` that
/// follow them are compared where they agree, and what they read decides
/// where they differ.
fn selections_note(selections: &Selections, copy_outputs: &[String]) -> String {
    let quoted = |v: &mut dyn Iterator<Item = &String>| {
        let mut v: Vec<String> = v.map(|n| format!("'{n}'")).collect();
        v.sort();
        v.join(", ")
    };
    let read = match selections.read.is_empty() {
        true => "what they read is compared as an output, or is an input or a constant".to_string(),
        false => format!(
            "what they read, {}, is compared too, and decides where they differ",
            quoted(&mut selections.read.iter())
        ),
    };
    format!(
        "output(s) {} follow a selection by values (NonMaxSuppression/NonZero/TopK/ArgMax/ArgMin): compared where the selections agree; {read}",
        quoted(&mut selections.outputs.keys().filter(|o| copy_outputs.contains(o))),
    )
}

/// Which If nodes of `original` its verification copy `copy` checks: where
/// inputs the same in every sample (`fixed`, of `specs`; their values in
/// `first`) specialised it, only the branches their values select (and
/// which other values of theirs go unchecked); else the Ifs the samples'
/// shapes decided were replaced by their branch.
fn if_notes(
    original: &Model,
    copy: &crate::proto::ModelProto,
    opts: &VerifyOptions,
    specs: &[inputs::InputSpec],
    first: &[Tensor],
    fixed: &[usize],
) -> Vec<String> {
    let remaining = copy
        .graph
        .as_ref()
        .map_or(0, |g| g.node.iter().filter(|n| n.op_type() == "If").count());
    let total = original
        .graph
        .nodes
        .node_weights()
        .filter(|n| n.op() == "If")
        .count();
    let mut notes = vec![];
    if has_if(original) && !fixed.is_empty() {
        let names: Vec<&str> = fixed.iter().map(|&i| specs[i].name.as_str()).collect();
        notes.push(format!(
            "inputs {names:?} are the same in every sample: the model was specialised to them and only the If branches their values select were checked ({remaining} If node(s) left)"
        ));
        notes.extend(unchecked_settings(
            original,
            specs,
            first,
            fixed,
            opts.inputs.is_none(),
        ));
    } else if remaining < total {
        notes.push(format!(
            "{} If node(s) decided by the shapes of the samples were replaced by the branch they take; only that branch was checked ({remaining} If node(s) left)",
            total - remaining
        ));
    }
    notes
}

/// The result as tract runs it for a comparison
/// ([`Reference::result_copy`]): the copy, the names of the values it
/// returns (in the order of the original's), and its selections.
struct ResultCopy {
    proto: crate::proto::ModelProto,
    names: Vec<String>,
    selections: Selections,
}

/// How the result's outputs were had ([`Reference::run_result`]): what
/// the memo held (and what that run cost whoever made it), a run on the
/// plan that feeds weights, or a run here on its own plan (the runner).
struct ResultRun {
    ran: Ran,
    /// The seconds the memo's run took, and its number there.
    reused: Option<(f64, u64)>,
    runner: Option<Arc<tract::Runner>>,
    from_fed: bool,
}

/// The rows [`Reference::compare_outputs`] compared: each row's metrics,
/// each float row's verdict and cosine on each sample, and whether a float
/// value that means something was compared at all.
struct Compared {
    outputs: Vec<OutputMetrics>,
    sample_cosines: Vec<(bool, Vec<f64>)>,
    floats: bool,
}

/// The graph outputs among `names` of an Ultralytics detector (its
/// metadata's `task` is `detect`) that hold boxes and class scores
/// together, `[batch, 4 + classes, anchors]` (the classes counted in its
/// `names`, its axis 1 fixed in the output's declaration), each with its
/// classes: verification compares their class scores on their own too.
fn detection_class_rows(model: &Model, names: &[String]) -> HashMap<String, usize> {
    let meta = |k: &str| model.metadata(k);
    let mut rows = HashMap::new();
    if meta("author") != Some("Ultralytics") || meta("task") != Some("detect") {
        return rows;
    }
    let Some(classes) = meta("names").map(class_count).filter(|&c| c > 0) else {
        return rows;
    };
    for out in model.graph.rest.output.iter() {
        if !names.iter().any(|n| n == out.name()) {
            continue;
        }
        if let Some([_, Some(c), _]) = inputs::fixed_dims(out).as_deref() {
            if *c == (BOX_ROWS + classes) as i64 {
                rows.insert(out.name().to_string(), classes);
            }
        }
    }
    rows
}

/// The rows of a detector's output before its class scores: x, y, width,
/// height.
const BOX_ROWS: usize = 4;

/// The class rows (after [`BOX_ROWS`]) of each of the `n` items of a
/// `[n, BOX_ROWS + classes, anchors]` tensor's values `v` (`shape`: `[n,
/// classes, anchors]`), in order: borrowed where `n` is 1 (one run of
/// values), copied otherwise.
fn class_rows_of<'v, T: Copy>(v: &'v [T], shape: &[usize; 3]) -> std::borrow::Cow<'v, [T]> {
    let [n, classes, anchors] = *shape;
    let (first, rows) = (BOX_ROWS, BOX_ROWS + classes);
    if n == 1 {
        return std::borrow::Cow::Borrowed(&v[first * anchors..rows * anchors]);
    }
    std::borrow::Cow::Owned(
        (0..n)
            .flat_map(|i| {
                let at = i * rows * anchors;
                v[at + first * anchors..at + rows * anchors].iter().copied()
            })
            .collect(),
    )
}

/// How many classes an Ultralytics `names` entry lists: `{0: 'person', 1:
/// 'bicycle', ...}`, a key being digits after the opening brace or a comma
/// and before a colon, outside the quoted names (Python's repr, whose
/// backslash escapes a quote).
fn class_count(names: &str) -> usize {
    let mut count = 0;
    let (mut quote, mut escaped) = (None, false);
    // Past a `{` or `,`, and whether digits (only) followed it.
    let (mut after_separator, mut digits) = (false, false);
    for c in names.chars() {
        if let Some(q) = quote {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                _ if c == q => quote = None,
                _ => {}
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '{' | ',' => (after_separator, digits) = (true, false),
            d if d.is_ascii_digit() && after_separator => digits = true,
            ':' => {
                count += usize::from(digits);
                (after_separator, digits) = (false, false);
            }
            w if w.is_whitespace() => {}
            _ => (after_separator, digits) = (false, false),
        }
    }
    count
}

#[cfg(test)]
mod tests {

    /// An Ultralytics `names` entry's classes: keys after `{` or `,`.
    #[test]
    fn class_count_counts_the_keys_of_names() {
        assert_eq!(super::class_count("{0: 'person', 1: 'bicycle'}"), 2);
        assert_eq!(super::class_count("{0: 'a:b', 1: 'c, 2: d'}"), 2);
        assert_eq!(super::class_count("{}"), 0);
        assert_eq!(super::class_count("{0: 'x'}"), 1);
        assert_eq!(super::class_count("{0: 'a', 10: 'b', 11: 'c'}"), 3);
        assert_eq!(super::class_count("{0: 'it\\'s \"x\", 1: y', 1: 'b'}"), 2);
    }

    /// The class rows of each item of a `[n, rows, anchors]` output.
    #[test]
    fn class_rows_of_takes_each_items_class_rows() {
        // Two items of 6 rows of 2 anchors: values 0..24.
        let v: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let two = super::class_rows_of(&v, &[2, 2, 2]);
        assert_eq!(&two[..], &[8.0, 9.0, 10.0, 11.0, 20.0, 21.0, 22.0, 23.0]);
        let one = super::class_rows_of(&v[..12], &[1, 2, 2]);
        assert_eq!(&one[..], &[8.0, 9.0, 10.0, 11.0]);
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
}
