//! Activation ranges for static quantization, measured by running the float
//! model in tract on calibration samples.
//!
//! Statistics stream: each sample runs once, and each of its activations is
//! reduced to its range and (for `percentile`, `mse`, `entropy`) a histogram
//! over that range, then dropped; no sample's activations are kept. Each
//! histogram is merged into its value's as soon as it is taken (histograms
//! on power-of-two grids merge exactly, in any order, see
//! [`super::histogram`]), and the ranges and sums once the samples before
//! theirs are, so memory does not grow with the samples. Samples run on all
//! cores.

use std::collections::HashMap;

use anyhow::{Context, Result};
use rayon::prelude::*;
use tract_onnx::prelude::{Datum, Tensor};

use super::histogram::{Histogram, Scan};
use crate::ir::Model;
use crate::pass::{DataSource, Progress};
use crate::proto::{GraphProto, ValueInfoProto};
use crate::verify::{inputs, tract as tr};

pub use crate::verify::reach::CutMode;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The observed min and max.
    Minmax,
    /// The range holding `percentile`% of the observed values (outliers clipped).
    Percentile,
    /// The range (the observed one, shrunk) with the least expected squared
    /// error of 8-bit quantization, clipping included.
    Mse,
    /// The range whose 8-bit quantized histogram is closest to the observed
    /// one in KL divergence.
    Entropy,
}

/// What calibration measured.
pub struct Calibration {
    /// Range `(min, max)` of each value; values the calibration copy does
    /// not compute (folded away) are absent.
    pub ranges: HashMap<String, (f32, f32)>,
    /// The model's outputs on the `reference` samples, when asked for and
    /// the calibration copy can give them (no `If` specialisation).
    pub expected: Option<Vec<Vec<Tensor>>>,
    /// For each value given a pair axis: the share of each uint8 code
    /// (0..=255) among its calibration values once quantized with its range
    /// ([`super::arith::asymmetric_u8`]), from the histogram over its
    /// observed range.
    pub codes: HashMap<String, Vec<f64>>,
    /// For each value given a pair axis: the correlation of the pairs of
    /// elements an integer kernel multiplies together (indices `2j` and
    /// `2j + 1` along that axis).
    pub pair_correlation: HashMap<String, f64>,
    /// The elements of each measured value in a sample (the largest
    /// sample's): what a Q/DQ pair around it converts per run.
    pub elements: HashMap<String, usize>,
    /// The least and greatest value of each measured float32 value over
    /// every sample, as met (`ranges` are what the calibration method
    /// makes of them).
    pub bounds: HashMap<String, (f32, f32)>,
}

/// The axis along which an integer kernel pairs a value's elements (the
/// reduction's order in onnxruntime's kernels): the channels of a Conv's
/// input (it computes channels-last), the last axis of a MatMul's or
/// Gemm's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairAxis {
    Channels,
    Last,
}

/// The inputs' specs and the calibration samples: the user's (`--inputs`),
/// else `count` seeded random ones at the settled dims (an Ultralytics
/// model's images in their documented range), which `notes` then mentions.
fn calibration_samples(
    model: &Model,
    data: &DataSource,
    count: usize,
    notes: &mut Vec<String>,
) -> Result<(Vec<inputs::InputSpec>, Vec<Vec<Tensor>>)> {
    let mut dim_notes = Vec::new();
    let mut specs = inputs::input_specs(&model.graph, &data.dims, &mut dim_notes)?;
    let samples = match &data.inputs {
        Some(p) => {
            let samples = inputs::load_samples(p, &specs)?;
            // Verification, where it runs, runs the same samples.
            if data.original.is_some() {
                let tol = data.tolerance.unwrap_or(super::INFO.tolerance);
                notes.push(format!(
                    "calibrated on the {} sample(s) of --inputs, the ones verification runs: it then measures the result on the data its ranges were fitted to; check held-out data with `onnx-squeeze verify ORIGINAL RESULT --inputs HELD_OUT {}` (this tolerance; verify's own is float rounding's)",
                    samples.len(),
                    tol.flags()
                ));
            }
            samples
        }
        None => {
            // Images drawn as verification draws them: decided on the
            // original where verification runs (`clean` may fold what
            // tells their scale, a Constant the first layer reads).
            let original = data.original.as_ref().and_then(|r| r.original());
            inputs::ProducerImages::apply(original.unwrap_or(model), &mut specs, &mut dim_notes);
            notes.append(&mut dim_notes);
            notes.push(format!(
                "calibrated on {count} seeded random sample(s): pass --inputs with real data for activation ranges that match use"
            ));
            inputs::random_samples(&specs, count.max(1), data.seed.wrapping_add(0x5eed))?
        }
    };
    Ok((specs, samples))
}

/// What [`calibrate`] asks before it makes its plan and runs any sample,
/// told the elements of each value it measures as tract types them (where
/// it knows every one: the sizes it would measure): `Some(why)` stops it,
/// with [`Declined`]. A gate only saves time: where it cannot decide, it
/// says `None`, and calibration goes on.
pub type Gate<'a> = dyn Fn(&HashMap<String, usize>) -> Option<String> + 'a;

/// Calibration stopped by its [`Gate`], before any sample ran, and why.
#[derive(Debug)]
pub struct Declined(pub String);

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Declined {}

/// Shapes of the node outputs `values` at the sizes calibration runs the
/// model at (those of the first of the user's samples, else the settled
/// dims): tract types the model, nothing runs. `None` where a shape is not
/// concrete.
pub fn value_shapes(
    model: &Model,
    values: &[String],
    data: &DataSource,
) -> Result<Vec<Option<Vec<usize>>>> {
    let (specs, samples) = calibration_samples(model, data, 1, &mut Vec::new())?;
    let (fixed, run_samples) = crate::verify::split_fixed(crate::verify::has_if(model), &samples);
    let (proto, _) = crate::verify::verification_copy(
        model,
        &specs,
        &samples[0],
        &fixed,
        &run_samples,
        CutMode::Untyped,
        Some(&data.runs),
    )?;
    tr::value_shapes(proto, &run_samples[0], values)
}

/// Ranges of `values` over the calibration samples. `reference`: samples
/// (not calibrated on) whose model outputs the same plan computes, for
/// `sensitive=auto`'s comparisons, saving a plan of the original.
/// `pair_axes`: values whose code distribution and pair correlation to
/// measure too ([`Calibration::codes`]; `minmax` then builds the histograms
/// it does not otherwise need). `same_range`: values that take the range of
/// another (a MaxPool's output, its input's).
/// `mode`: where the model is cut before what tract cannot type or run
/// past a data-dependent op, as verification cuts it
/// ([`crate::verify::reach`]); a caller whose calibration failed on the
/// whole model tries again cut (`CutMode::Always`). `gate`: asked, once
/// tract has typed the model and before its plan is made, with the size
/// of every value measured where the shapes give them all; where it says
/// why not, calibration stops with [`Declined`].
#[allow(clippy::too_many_arguments)]
pub fn calibrate(
    model: &Model,
    values: &[String],
    data: &DataSource,
    samples: usize,
    method: Method,
    percentile: f64,
    reference: Option<&[Vec<Tensor>]>,
    pair_axes: &HashMap<String, PairAxis>,
    same_range: &HashMap<String, String>,
    notes: &mut Vec<String>,
    progress: &Progress,
    mode: CutMode,
    gate: Option<&Gate>,
) -> Result<Calibration> {
    let (specs, data_samples) = calibration_samples(model, data, samples, notes)?;
    let (fixed, run_samples) =
        crate::verify::split_fixed(crate::verify::has_if(model), &data_samples);
    let (mut proto, _) = crate::verify::verification_copy(
        model,
        &specs,
        &data_samples[0],
        &fixed,
        &run_samples,
        mode,
        Some(&data.runs),
    )?;
    // The samples as the plan takes them are a copy (YOLOv8n's 8 images:
    // 10 MB at the calibration plan's peak).
    drop(data_samples);
    let graph = proto.graph.as_mut().context("no graph")?;
    let model_outputs = graph.output.len();
    let (present, index) = expose_values(graph, values);
    // A streaming model's samples are the steps of one stream, each
    // starting from the state the step before computed (as verification
    // runs them): the ranges of what reads the state are those it meets
    // in use, not those of a state drawn at random.
    let run_inputs = specs
        .iter()
        .enumerate()
        .filter(|(i, _)| !fixed.contains(i))
        .map(|(_, s)| s.name.as_str());
    let outputs: Vec<String> = graph.output.iter().map(|o| o.name().to_string()).collect();
    let chain = crate::verify::chain_positions(
        &crate::verify::inputs::state_pairs(&model.graph),
        run_inputs,
        &outputs[..model_outputs],
    );
    progress.say("calibration: building a plan in tract");
    // The calibrated values are outputs while the plan is made (computed as
    // they are), then watched: each is measured as it is computed and freed
    // once read, as in any run, instead of being held to the end of its
    // sample's run (magika: 40 MB a run for a 3 MB model).
    // The calibration samples, and the reference samples where they run
    // on this plan too (below).
    let runs = run_samples.len() + reference.map_or(0, <[_]>::len);
    // The gate, told the sizes of the values measured once tract has typed
    // the model, where it knows every one.
    let check = gate.map(|gate| {
        |shapes: &[Option<Vec<usize>>]| -> Result<()> {
            let mut sizes = HashMap::new();
            for (v, &k) in present.iter().zip(&index) {
                let Some(Some(shape)) = shapes.get(k) else {
                    return Ok(());
                };
                sizes.insert(v.clone(), shape.iter().product());
            }
            match gate(&sizes) {
                Some(why) => Err(Declined(why).into()),
                None => Ok(()),
            }
        }
    });
    let runner = tr::Runner::watching_typed(
        proto,
        &run_samples[0],
        model_outputs,
        runs,
        check.as_ref().map(|c| c as &tr::TypedCheck),
    )
    .context("tract cannot run the model for calibration")?;
    let total = run_samples.len();
    // Counted and said under one lock: the last message is the last count.
    let done = std::sync::Mutex::new(0usize);
    progress.say(&format!("calibration: 0 of {total} samples run"));

    let n = present.len();
    let pair_axis: Vec<Option<PairAxis>> =
        present.iter().map(|v| pair_axes.get(v).copied()).collect();
    // A histogram per value for the histogram methods; with minmax only
    // for the values whose code shares are asked for.
    let histograms: Vec<bool> = pair_axis
        .iter()
        .map(|a| method != Method::Minmax || a.is_some())
        .collect();
    // The values each watched output is (those past the model's own
    // outputs); a calibrated value that is a model output is read from the
    // run's outputs.
    let mut of_watched: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, &k) in index.iter().enumerate() {
        if let Some(w) = k.checked_sub(model_outputs) {
            of_watched.entry(w).or_default().push(i);
        }
    }
    // Each value's histogram over the samples run so far: a sample's is
    // merged in as soon as it is taken (merging is exact and in any order
    // gives the same counts), so no more than one a core is held at once.
    let hists: Vec<std::sync::Mutex<Histogram>> = (0..n).map(|_| Default::default()).collect();
    // Value `i`'s range in one sample, its histogram merged into `hists`
    // for the histogram methods.
    let stat = |i: usize, t: &Tensor| -> Result<Stat> {
        // Only float32 activations are quantized.
        if t.datum_type() != f32::datum_type() {
            return Ok(Stat::empty());
        }
        let view = t.try_as_plain_ram().map_err(|e| anyhow::anyhow!("{e}"))?;
        let v = view.as_slice::<f32>().map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut stat = Stat::of(v, histograms[i]);
        if let Some(axis) = pair_axis[i] {
            stat.pairs = PairSums::of(v, t.shape(), axis);
        }
        let hist = std::mem::take(&mut stat.hist);
        if !hist.is_empty() {
            // A panic elsewhere is reported by the run; the counts are whole.
            let mut merged = hists[i].lock().unwrap_or_else(|e| e.into_inner());
            merged.merge(hist);
        }
        Ok(stat)
    };
    // One run per sample: its outputs, and each value's statistics (empty
    // for a value the plan does not compute).
    let run = |sample: &[Tensor]| -> Result<(Vec<Tensor>, Vec<Stat>)> {
        let mut stats: Vec<Option<Stat>> = (0..n).map(|_| None).collect();
        let out = runner.run(sample, |w, t| {
            for &i in of_watched.get(&w).into_iter().flatten() {
                stats[i] = Some(stat(i, t)?);
            }
            Ok(())
        })?;
        for (i, &k) in index.iter().enumerate() {
            if k < model_outputs {
                stats[i] = Some(stat(i, &out[k])?);
            }
        }
        if let Ok(mut k) = done.lock() {
            *k += 1;
            progress.say(&format!("calibration: {k} of {total} samples run"));
        }
        Ok((
            out,
            stats
                .into_iter()
                .map(|s| s.unwrap_or_else(Stat::empty))
                .collect(),
        ))
    };
    // Each value's range, sums and size over the samples, merged sample by
    // sample in their order (the correlation's sums are floats: the same
    // order gives the same result on any number of cores), a core's worth
    // of samples at a time.
    let mut merged: Vec<Stat> = (0..n).map(|_| Stat::empty()).collect();
    let mut merge = |stats: Vec<Stat>| {
        for (m, s) in merged.iter_mut().zip(stats) {
            m.merge(s);
        }
    };
    if chain.is_empty() {
        for batch in run_samples.chunks(rayon::current_num_threads().max(1)) {
            let stats = batch
                .par_iter()
                .map(|s| Ok(run(s)?.1))
                .collect::<Result<Vec<_>>>()?;
            stats.into_iter().for_each(&mut merge);
        }
    } else {
        crate::verify::run_stream(
            &run_samples,
            &chain,
            |s| {
                let (out, st) = run(s)?;
                merge(st);
                Ok(out)
            },
            |_| Ok(()),
        )?;
    }
    // The reference samples run on the same plan, whose outputs are the
    // model's own (the calibrated values are watched, not returned).
    // Where they do not run here (inputs of other types than the plan's),
    // the reference runs on its own: this is a saving, never a requirement.
    let same_types = |r: &[Tensor]| {
        r.len() == run_samples[0].len()
            && r.iter()
                .zip(&run_samples[0])
                .all(|(a, b)| a.datum_type() == b.datum_type() && a.shape() == b.shape())
    };
    let expected = match reference {
        Some(r) if fixed.is_empty() && r.iter().all(|s| same_types(s)) => {
            let outputs_of = |s: &[Tensor]| runner.run_outputs(s);
            if chain.is_empty() {
                r.par_iter()
                    .map(|s| outputs_of(s))
                    .collect::<Result<_>>()
                    .ok()
            } else {
                // As verification runs them: each step's state from the
                // step before (the state outputs are among the model's own).
                crate::verify::run_stream(r, &chain, outputs_of, Ok).ok()
            }
        }
        _ => None,
    };
    drop(runner);
    // Each value's range, and the histogram it was read from where its code
    // shares are asked for (they are taken on the range the value ends up
    // with, below).
    let keep_histogram: Vec<bool> = pair_axis.iter().map(Option::is_some).collect();
    for (m, h) in merged.iter_mut().zip(hists) {
        m.hist = h.into_inner().unwrap_or_else(|e| e.into_inner());
    }
    let measured = measure_ranges(&merged, &keep_histogram, method, percentile);
    let own: Vec<(f32, f32)> = measured.iter().map(|m| m.0).collect();
    let ranges = group_ranges(&present, &own, same_range);
    // The shares of its codes, where asked for, on the range it takes.
    let codes: Vec<Option<Vec<f64>>> = measured
        .into_par_iter()
        .enumerate()
        .map(|(i, (_, h))| {
            let (h, range) = (h?, ranges[i]);
            let (lo, hi) = h.span();
            (range.0.is_finite() && range.1.is_finite())
                .then(|| code_shares(h.counts(), lo, hi, range))
        })
        .collect();
    let bounds: HashMap<String, (f32, f32)> = present
        .iter()
        .zip(&merged)
        .map(|(v, m)| (v.clone(), (m.lo, m.hi)))
        .filter(|(_, (lo, hi))| lo.is_finite() && hi.is_finite())
        .collect();
    let mut code_map = HashMap::new();
    let mut correlation = HashMap::new();
    let mut range_map = HashMap::new();
    let mut elements = HashMap::new();
    for (i, (v, (range, c))) in present
        .into_iter()
        .zip(ranges.into_iter().zip(codes))
        .enumerate()
    {
        if !(range.0.is_finite() && range.1.is_finite()) {
            continue;
        }
        if let Some(c) = c {
            code_map.insert(v.clone(), c);
            correlation.insert(v.clone(), merged[i].pairs.correlation());
        }
        elements.insert(v.clone(), merged[i].elements);
        range_map.insert(v, range);
    }
    Ok(Calibration {
        ranges: range_map,
        expected,
        codes: code_map,
        pair_correlation: correlation,
        elements,
        bounds,
    })
}

/// Where `values` are read in `graph` (the copy calibration runs): a node
/// output as an extra graph output, a graph input (the first Conv's image)
/// through an Identity probe, as tract outputs node values. The values
/// found, and the index of the graph output each is read from; a value
/// neither computes nor takes as input is left out.
fn expose_values(graph: &mut GraphProto, values: &[String]) -> (Vec<String>, Vec<usize>) {
    let defined: std::collections::HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .collect();
    let inputs: std::collections::HashSet<String> =
        graph.input.iter().map(|i| i.name().to_string()).collect();
    let mut present: Vec<String> = Vec::new();
    let mut read_as: Vec<String> = Vec::new();
    for v in values {
        if defined.contains(v) {
            present.push(v.clone());
            read_as.push(v.clone());
        } else if inputs.contains(v) {
            let probe = format!("{v}__calibration_probe");
            graph.node.push(crate::ir::builder::node_proto(
                &probe,
                "Identity",
                &[v],
                &[&probe],
                vec![],
            ));
            present.push(v.clone());
            read_as.push(probe);
        }
    }
    let mut index = Vec::with_capacity(read_as.len());
    for v in &read_as {
        let at = match graph.output.iter().position(|o| o.name() == v.as_str()) {
            Some(at) => at,
            None => {
                graph.output.push(ValueInfoProto {
                    name: Some(v.clone()),
                    ..Default::default()
                });
                graph.output.len() - 1
            }
        };
        index.push(at);
    }
    (present, index)
}

/// A value's range, and the histogram it was read from where it is kept.
type Measured = ((f32, f32), Option<Histogram>);

/// Each value's range over the samples (`merged`: its statistics over
/// every sample) by `method`, from its histogram where it has one (the
/// least and greatest value without, or where they are not finite), with
/// that histogram where `keep_histogram` asks for it. A range is never
/// wider than the values met (the histogram's bins reach past them).
fn measure_ranges(
    merged: &[Stat],
    keep_histogram: &[bool],
    method: Method,
    percentile: f64,
) -> Vec<Measured> {
    merged
        .par_iter()
        .zip(keep_histogram)
        .map(|(m, &keep)| {
            let (lo, hi) = (m.lo, m.hi);
            if m.hist.is_empty() || !(lo.is_finite() && hi.is_finite()) {
                return ((lo, hi), None);
            }
            let (h, (hl, hh)) = (m.hist.counts(), m.hist.span());
            let range = match method {
                // One value: nothing to search.
                _ if lo == hi => (lo, hi),
                Method::Minmax => (lo, hi),
                Method::Mse => search_range(h, hl, hh, (lo, hi), mse_cost),
                Method::Entropy => search_range(h, hl, hh, (lo, hi), kl_cost),
                Method::Percentile => {
                    let (a, b) = percentile_range(h, hl, hh, percentile);
                    let (lo64, hi64) = (lo as f64, hi as f64);
                    (a.clamp(lo64, hi64) as f32, b.clamp(lo64, hi64) as f32)
                }
            };
            (range, keep.then(|| m.hist.clone()))
        })
        .collect()
}

/// The range each value of `present` is quantized on, from its own
/// (`own`, in the same order). A value that takes another's range
/// (`same_range`: a MaxPool's or a Split's output, whose values are some of
/// its input's; followed to the end of its chain) is quantized on that
/// one's grid, which holds each of its values exactly; onnxruntime then
/// runs the op on uint8 (it drops the Q/DQ pairs around it only where
/// their scales are equal). The grid spans every range of the group: a
/// percentile range of pooled values reaches further than the input's
/// (pooling keeps its large values and drops others), and open-nsfw's
/// first MaxPool clipped on its input's range (cosine 0.9960 -> 0.9917).
/// A member whose range is under half its source's (or over twice it)
/// keeps its own: one grid would cost it resolution (a fused projection
/// split into parts of other scales), and onnxruntime then runs the op in
/// float.
fn group_ranges(
    present: &[String],
    own: &[(f32, f32)],
    same_range: &HashMap<String, String>,
) -> Vec<(f32, f32)> {
    let n = present.len();
    let at: HashMap<&str, usize> = present
        .iter()
        .enumerate()
        .map(|(i, v)| (v.as_str(), i))
        .collect();
    // Each value's source: the end of its `same_range` chain.
    let source: Vec<usize> = (0..n)
        .map(|i| {
            let mut k = i;
            for _ in 0..n {
                match same_range.get(&present[k]).and_then(|v| at.get(v.as_str())) {
                    Some(&j) => k = j,
                    None => break,
                }
            }
            k
        })
        .collect();
    let width = |(lo, hi): (f32, f32)| hi - lo;
    let shares: Vec<bool> = (0..n)
        .map(|i| {
            let (mine, theirs) = (own[i], own[source[i]]);
            source[i] != i
                && [mine.0, mine.1, theirs.0, theirs.1]
                    .iter()
                    .all(|v| v.is_finite())
                && width(mine) * 2.0 >= width(theirs)
                && width(theirs) * 2.0 >= width(mine)
        })
        .collect();
    let mut spans: Vec<(f32, f32)> = own.to_vec();
    for i in (0..n).filter(|&i| shares[i]) {
        let (k, (lo, hi)) = (source[i], own[i]);
        spans[k] = (spans[k].0.min(lo), spans[k].1.max(hi));
    }
    // A source keeps the span of its group, a sharing member takes it.
    (0..n)
        .map(|i| match shares[i] {
            true => spans[source[i]],
            false => spans[i],
        })
        .collect()
}

/// Sums over the pairs of elements `(2j, 2j + 1)` along an axis, for their
/// correlation.
#[derive(Debug, Clone, Default)]
struct PairSums {
    n: f64,
    a: f64,
    b: f64,
    aa: f64,
    bb: f64,
    ab: f64,
}

impl PairSums {
    /// The sums over `v`, of `shape`, paired along `axis`; NaN and
    /// infinities are skipped.
    fn of(v: &[f32], shape: &[usize], axis: PairAxis) -> PairSums {
        let mut s = PairSums::default();
        let a = match axis {
            PairAxis::Channels if shape.len() >= 2 => 1,
            PairAxis::Channels => return s,
            PairAxis::Last => shape.len().saturating_sub(1),
        };
        let (Some(&len), true) = (shape.get(a), v.len() == shape.iter().product::<usize>()) else {
            return s;
        };
        let inner: usize = shape[a + 1..].iter().product();
        let outer = v.len() / (len * inner).max(1);
        for o in 0..outer {
            for j in (0..len.saturating_sub(1)).step_by(2) {
                let base = (o * len + j) * inner;
                for t in 0..inner {
                    let (x, y) = (v[base + t] as f64, v[base + inner + t] as f64);
                    if x.is_finite() && y.is_finite() {
                        s.n += 1.0;
                        s.a += x;
                        s.b += y;
                        s.aa += x * x;
                        s.bb += y * y;
                        s.ab += x * y;
                    }
                }
            }
        }
        s
    }

    fn merge(&mut self, o: &PairSums) {
        self.n += o.n;
        self.a += o.a;
        self.b += o.b;
        self.aa += o.aa;
        self.bb += o.bb;
        self.ab += o.ab;
    }

    /// Pearson's correlation of the pairs; 1 (the worst case for
    /// saturation) where it is undefined (no pairs, or a constant element).
    fn correlation(&self) -> f64 {
        if self.n < 2.0 {
            return 1.0;
        }
        let cov = self.ab / self.n - (self.a / self.n) * (self.b / self.n);
        let va = self.aa / self.n - (self.a / self.n).powi(2);
        let vb = self.bb / self.n - (self.b / self.n).powi(2);
        if va <= 0.0 || vb <= 0.0 {
            return 1.0;
        }
        (cov / (va * vb).sqrt()).clamp(-1.0, 1.0)
    }
}

/// The share of each uint8 code among the values of histogram `h` (over
/// `[lo, hi]`) quantized with the range `range`: each bin's count goes to
/// the code of its centre.
fn code_shares(h: &[u64], lo: f64, hi: f64, range: (f32, f32)) -> Vec<f64> {
    let (scale, zp) = super::arith::asymmetric_u8(range.0, range.1);
    let mut c = vec![0f64; 256];
    let total = h.iter().sum::<u64>().max(1) as f64;
    for (i, &n) in h.iter().enumerate() {
        if n > 0 {
            let x = bin_center(h, lo, hi, i) as f32;
            let q = super::arith::quantize(x, scale, zp as i32, 0, 255);
            c[q as usize] += n as f64 / total;
        }
    }
    c
}

/// Statistics of one value, over one sample or merged over several: its
/// range and (for the histogram methods) its histogram.
struct Stat {
    lo: f32,
    hi: f32,
    hist: Histogram,
    /// With a pair axis: sums for the correlation of paired elements.
    pairs: PairSums,
    /// How many elements the value held (the most in any sample).
    elements: usize,
}

impl Stat {
    fn empty() -> Stat {
        Stat {
            lo: f32::INFINITY,
            hi: f32::NEG_INFINITY,
            hist: Histogram::default(),
            pairs: PairSums::default(),
            elements: 0,
        }
    }

    /// One sample's statistics of `v`; NaN and infinities are left out.
    fn of(v: &[f32], histogram: bool) -> Stat {
        let scan = Scan::of(v);
        let (lo, hi) = (scan.lo, scan.hi);
        let hist = match histogram {
            true => Histogram::of(&scan),
            false => Histogram::default(),
        };
        Stat {
            lo,
            hi,
            hist,
            pairs: PairSums::default(),
            elements: v.len(),
        }
    }

    /// Merge the statistics of another sample.
    fn merge(&mut self, o: Stat) {
        self.lo = self.lo.min(o.lo);
        self.hi = self.hi.max(o.hi);
        self.hist.merge(o.hist);
        self.pairs.merge(&o.pairs);
        self.elements = self.elements.max(o.elements);
    }
}

/// Among the ranges `bounds` (the values' least and greatest) shrunk
/// towards 0 by a factor in (0, 1], the one with the least `cost`.
/// `cost(h, lo, hi, a, b)` rates quantizing the histogram `h`, whose bins
/// span `[lo, hi]`, with the range `[a, b]`.
fn search_range(
    h: &[u64],
    lo: f64,
    hi: f64,
    bounds: (f32, f32),
    cost: fn(&[u64], f64, f64, f32, f32) -> f64,
) -> (f32, f32) {
    let (from, to) = (bounds.0.min(0.0), bounds.1.max(0.0));
    if to <= from || h.iter().all(|&c| c == 0) {
        return (from, to);
    }
    let mut best = (f64::INFINITY, from, to);
    for step in 0..100 {
        let f = 1.0 - step as f32 * 0.0099;
        let (a, b) = (from * f, to * f);
        let c = cost(h, lo, hi, a, b);
        if c < best.0 {
            best = (c, a, b);
        }
    }
    (best.1, best.2)
}

fn bin_center(h: &[u64], lo: f64, hi: f64, i: usize) -> f64 {
    lo + (i as f64 + 0.5) * (hi - lo) / h.len() as f64
}

/// Expected squared error: rounding noise inside the range, clipping outside.
fn mse_cost(h: &[u64], lo: f64, hi: f64, a: f32, b: f32) -> f64 {
    let step = (b - a) as f64 / 255.0;
    let mut e = 0.0;
    for (i, &c) in h.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let x = bin_center(h, lo, hi, i);
        let d = if x < a as f64 {
            a as f64 - x
        } else if x > b as f64 {
            x - b as f64
        } else {
            0.0
        };
        e += c as f64 * (d * d + step * step / 12.0);
    }
    e
}

/// KL divergence, as TensorRT's entropy calibration measures it: P is the
/// histogram inside `[a, b]` with the mass outside folded onto its end bins;
/// Q is the inside histogram (without that mass) merged into 255 levels and
/// spread back evenly over each level's occupied bins.
fn kl_cost(h: &[u64], lo: f64, hi: f64, a: f32, b: f32) -> f64 {
    let width = (hi - lo) / h.len() as f64;
    let first = (((a as f64 - lo) / width).floor().max(0.0) as usize).min(h.len() - 1);
    let last = ((((b as f64 - lo) / width).ceil() as usize).max(first + 1)).min(h.len());
    let slice = &h[first..last];
    let mut p: Vec<f64> = slice.iter().map(|&c| c as f64).collect();
    p[0] += h[..first].iter().sum::<u64>() as f64;
    let n = p.len();
    p[n - 1] += h[last..].iter().sum::<u64>() as f64;
    let levels = 255.min(n);
    let mut q = vec![0f64; n];
    for l in 0..levels {
        let (s0, s1) = (l * n / levels, (l + 1) * n / levels);
        let mass: f64 = slice[s0..s1].iter().map(|&c| c as f64).sum();
        let occupied = slice[s0..s1].iter().filter(|&&c| c > 0).count();
        for i in s0..s1 {
            if slice[i] > 0 {
                q[i] = mass / occupied as f64;
            }
        }
    }
    let (sp, sq) = (p.iter().sum::<f64>(), q.iter().sum::<f64>().max(1e-30));
    let mut kl = 0.0;
    for (pi, qi) in p.iter().zip(&q) {
        if *pi > 0.0 {
            let (pi, qi) = (pi / sp, (qi / sq).max(1e-12));
            kl += pi * (pi / qi).ln();
        }
    }
    kl
}

/// The range holding `p`% of a histogram's mass over `[lo, hi]`, clipping
/// equal tails on both sides (in f64, as the span of bins around values
/// near f32's largest can reach past it).
pub fn percentile_range(h: &[u64], lo: f64, hi: f64, p: f64) -> (f64, f64) {
    let total: u64 = h.iter().sum();
    if total == 0 || hi <= lo {
        return (lo, hi);
    }
    let tail = ((100.0 - p.clamp(0.0, 100.0)) / 200.0 * total as f64) as u64;
    let width = (hi - lo) / h.len() as f64;
    let (mut acc, mut first) = (0u64, 0usize);
    for (i, &c) in h.iter().enumerate() {
        if acc + c > tail {
            first = i;
            break;
        }
        acc += c;
    }
    let (mut acc, mut last) = (0u64, h.len() - 1);
    for (i, &c) in h.iter().enumerate().rev() {
        if acc + c > tail {
            last = i;
            break;
        }
        acc += c;
    }
    (lo + first as f64 * width, lo + (last + 1) as f64 * width)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values that take another's range share their group's span where
    /// their own range is within a factor of two of their source's (a
    /// MaxPool after a MaxPool: the end of the chain is the source), and
    /// keep their own otherwise or where nothing of theirs is computed.
    #[test]
    fn a_value_takes_its_groups_span_within_a_factor_of_two() {
        let present: Vec<String> = ["conv", "pool", "pool2", "narrow", "dead", "free"]
            .map(String::from)
            .to_vec();
        let own = [
            (-1.0, 3.0),
            (0.0, 4.5),
            (0.0, 2.0),
            (0.0, 1.0),
            (f32::INFINITY, f32::NEG_INFINITY),
            (5.0, 6.0),
        ];
        let same_range: HashMap<String, String> = [
            ("pool", "conv"),
            ("pool2", "pool"),
            ("narrow", "conv"),
            ("dead", "conv"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let ranges = group_ranges(&present, &own, &same_range);
        // conv's group: itself, pool (4.5 wide against 4) and pool2 (2
        // against 4, by the chain); the span -1..4.5.
        assert_eq!(&ranges[..3], &[(-1.0, 4.5); 3]);
        // narrow (1 against 4) and dead (nothing measured) keep their own,
        // as does a value in no group.
        assert_eq!(&ranges[3..], &own[3..]);
    }

    /// [`calibrate`] with `minmax` on `samples` random samples of the
    /// whole model, with no reference samples and no pair axes.
    fn minmax(
        m: &Model,
        values: &[String],
        samples: usize,
        same: &HashMap<String, String>,
        notes: &mut Vec<String>,
        gate: Option<&Gate>,
    ) -> Result<Calibration> {
        calibrate(
            m,
            values,
            &DataSource::default(),
            samples,
            Method::Minmax,
            100.0,
            None,
            &HashMap::new(),
            same,
            notes,
            &Progress::default(),
            CutMode::Untyped,
            gate,
        )
    }

    /// A streaming model's calibration samples are the steps of one stream
    /// from a state of 0s, each fed the state the step before computed:
    /// `hn = h + 1` then reaches 1, 2, .., 8 over the 8 steps (minmax: 8
    /// exactly), where a state drawn at random would give `hn` around 1.
    #[test]
    fn a_stream_is_calibrated_on_the_states_it_reaches() {
        use crate::ir::builder::ModelBuilder;
        let m = ModelBuilder::new(17)
            .input("x", &[1, 4])
            .input("h", &[1, 4])
            .init_f32("one", &[1], &[1.0])
            .init_f32("w", &[4, 4], &[0.5; 16])
            .node("step", "Add", &["h", "one"], &["hn"])
            .node("mm", "MatMul", &["x", "w"], &["y"])
            .output("y", &[1, 4])
            .output("hn", &[1, 4])
            .build()
            .unwrap();
        let mut notes = vec![];
        let values = ["hn".to_string(), "h".to_string()];
        let c = minmax(&m, &values, 8, &HashMap::new(), &mut notes, None).unwrap();
        assert_eq!(c.ranges["hn"], (1.0, 8.0), "{notes:?}");
        assert_eq!(c.ranges["h"], (0.0, 7.0), "{notes:?}");
    }

    /// Calibration gives the same result on any number of cores: the
    /// histograms merge exactly in any order, the pairs' sums in the
    /// samples' order. Every range lies within the values met.
    #[test]
    fn calibration_gives_the_same_result_on_any_number_of_cores() {
        use crate::ir::builder::ModelBuilder;
        let w: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 64) as f32 - 31.5) / 16.0)
            .collect();
        let m = ModelBuilder::new(17)
            .input("x", &[1, 8])
            .init_f32("w", &[8, 8], &w)
            .node("mm", "MatMul", &["x", "w"], &["y"])
            .node("relu", "Relu", &["y"], &["z"])
            .output("z", &[1, 8])
            .build()
            .unwrap();
        let values: Vec<String> = ["x", "y", "z"].map(String::from).to_vec();
        let pair_axes: HashMap<String, PairAxis> = [
            ("x".to_string(), PairAxis::Last),
            ("y".to_string(), PairAxis::Last),
        ]
        .into();
        for method in [Method::Percentile, Method::Entropy, Method::Mse] {
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    calibrate(
                        &m,
                        &values,
                        &DataSource::default(),
                        9,
                        method,
                        99.9,
                        None,
                        &pair_axes,
                        &HashMap::new(),
                        &mut vec![],
                        &Progress::default(),
                        CutMode::Untyped,
                        None,
                    )
                    .unwrap()
                })
            };
            let (a, b) = (run(1), run(3));
            assert_eq!(a.ranges, b.ranges, "{method:?}");
            assert_eq!(a.bounds, b.bounds, "{method:?}");
            assert_eq!(a.codes, b.codes, "{method:?}");
            assert_eq!(a.pair_correlation, b.pair_correlation, "{method:?}");
            assert_eq!(a.codes.len(), 2);
            for (v, &(lo, hi)) in &a.ranges {
                let (min, max) = a.bounds[v];
                assert!(min.min(0.0) <= lo && hi <= max.max(0.0), "{method:?} {v}");
            }
        }
    }

    /// Values that take another's range (`same_range`) share one grid
    /// spanning every member's range where their widths are within 2x of
    /// the source's: a member reaching past its source (a percentile range
    /// of pooled values) is not clipped to it. A much narrower member keeps
    /// its own.
    #[test]
    fn shared_grids_span_their_members_and_narrow_members_keep_their_own() {
        use crate::ir::builder::ModelBuilder;
        let m = ModelBuilder::new(17)
            .input("x", &[1, 64])
            .init_f32("half", &[1], &[0.5])
            .init_f32("tenth", &[1], &[0.1])
            .node("relu", "Relu", &["x"], &["a"])
            .node("shift", "Add", &["a", "half"], &["c"])
            .node("shrink", "Mul", &["a", "tenth"], &["b"])
            .output("c", &[1, 64])
            .output("b", &[1, 64])
            .build()
            .unwrap();
        let values: Vec<String> = ["a", "b", "c"].iter().map(|v| v.to_string()).collect();
        let run = |same: &HashMap<String, String>| {
            minmax(&m, &values, 8, same, &mut vec![], None)
                .unwrap()
                .ranges
        };
        let own = run(&HashMap::new());
        let (a, c) = (own["a"], own["c"]);
        assert!(a.0 == 0.0 && c.0 == 0.5 && c.1 > a.1, "{own:?}");
        let same: HashMap<String, String> = [("c", "a"), ("b", "a")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let shared = run(&same);
        assert_eq!(shared["a"], (0.0, c.1), "{shared:?}");
        assert_eq!(shared["c"], shared["a"]);
        assert_eq!(shared["b"], own["b"]);
    }

    /// The gate is told, before any sample runs, the size of every value
    /// calibration measures, the graph's input among them: the elements
    /// calibration measures when it goes on. Where it says why not,
    /// calibration stops with that reason as [`Declined`].
    #[test]
    fn the_gate_is_told_the_sizes_calibration_measures_and_can_stop_it() {
        use crate::ir::builder::{attr_ints, ModelBuilder};
        use std::sync::Mutex;
        let m = ModelBuilder::new(17)
            .input("x", &[1, 3, 8, 8])
            .init_f32("w", &[4, 3, 3, 3], &[0.1; 108])
            .node_with(
                "conv",
                "Conv",
                &["x", "w"],
                &["y"],
                vec![attr_ints("strides", &[2, 2])],
            )
            .node("relu", "Relu", &["y"], &["r"])
            .output("r", &[1, 4, 3, 3])
            .build()
            .unwrap();
        let values: Vec<String> = ["x", "y"].iter().map(|v| v.to_string()).collect();
        let told = Mutex::new(Vec::new());
        let run = |why: Option<&str>| {
            let gate = |sizes: &HashMap<String, usize>| {
                told.lock().unwrap().push(sizes.clone());
                why.map(str::to_string)
            };
            minmax(&m, &values, 4, &HashMap::new(), &mut vec![], Some(&gate))
        };
        let calibrated = run(None).unwrap();
        let expected: HashMap<String, usize> =
            [("x".to_string(), 192), ("y".to_string(), 36)].into();
        assert_eq!(calibrated.elements, expected);
        assert_eq!(
            told.lock().unwrap().as_slice(),
            std::slice::from_ref(&expected)
        );
        let Err(e) = run(Some("static QDQ would not pay")) else {
            panic!("the gate did not stop calibration");
        };
        let declined = e.downcast_ref::<Declined>().map(|d| d.0.as_str());
        assert_eq!(declined, Some("static QDQ would not pay"), "{e:#}");
        assert_eq!(told.lock().unwrap().len(), 2);
    }

    #[test]
    fn mse_and_entropy_clip_a_lone_outlier() {
        // Decaying mass near 0 and one value far out: both methods shrink the range.
        let mut h = vec![0u64; 2048];
        for (i, b) in h.iter_mut().take(200).enumerate() {
            *b = (100000.0 * (-(i as f64) / 20.0).exp()) as u64 + 1;
        }
        h[2047] = 1;
        let (_, hi) = search_range(&h, 0.0, 100.0, (0.0, 100.0), mse_cost);
        assert!(hi < 100.0, "mse keeps the outlier: {hi}");
        let (_, hi) = search_range(&h, 0.0, 100.0, (0.0, 100.0), kl_cost);
        assert!(hi < 100.0, "entropy keeps the outlier: {hi}");
        // Uniform mass: nothing to clip.
        let h = vec![10u64; 2048];
        assert_eq!(search_range(&h, 0.0, 1.0, (0.0, 1.0), mse_cost), (0.0, 1.0));
        // Bins reaching past the values (a power-of-two grid): the range
        // searched is the values'.
        assert_eq!(
            search_range(&h, 0.0, 1.0, (0.0, 0.99), mse_cost),
            (0.0, 0.99)
        );
    }

    /// Values reaching f32's largest (attention masks filled with its
    /// least) get finite ranges by every method, within the values met;
    /// a constant value its one value.
    #[test]
    fn ranges_of_values_near_f32s_limits_are_finite() {
        let mut v: Vec<f32> = (0..1000).map(|i| (i % 7) as f32 * 0.25).collect();
        v[10] = f32::MIN;
        v[20] = f32::MAX;
        for stat in [Stat::of(&v, true), Stat::of(&[-3.0; 64], true)] {
            let (lo, hi) = (stat.lo, stat.hi);
            let merged = [stat];
            for method in [
                Method::Minmax,
                Method::Percentile,
                Method::Mse,
                Method::Entropy,
            ] {
                let (a, b) = measure_ranges(&merged, &[false], method, 99.9)[0].0;
                assert!(a.is_finite() && b.is_finite(), "{method:?}: {a} {b}");
                assert!(
                    lo.min(0.0) <= a && a <= b && b <= hi.max(0.0),
                    "{method:?}: {a} {b}"
                );
                if lo == hi {
                    assert_eq!((a, b), (lo, hi), "{method:?}");
                }
            }
        }
    }

    #[test]
    fn percentile_clips_outliers() {
        // 1000 values spread over bins 0..9 and one outlier in bin 99.
        let mut h = vec![0u64; 100];
        for b in h.iter_mut().take(10) {
            *b = 100;
        }
        h[99] = 1;
        assert_eq!(percentile_range(&h, 0.0, 100.0, 100.0), (0.0, 100.0));
        let (lo, hi) = percentile_range(&h, 0.0, 100.0, 99.0);
        assert_eq!(lo, 0.0);
        assert_eq!(hi, 10.0, "the outlier bin is clipped");
    }

    #[test]
    fn pair_sums_pair_neighbouring_channels_and_last_axis_elements() {
        // [1, 3, 2]: channels (0, 1) pair up at each of the 2 positions;
        // channel 2 has no partner.
        let v = [1.0, 2.0, 2.0, 4.0, 9.0, 9.0];
        let s = PairSums::of(&v, &[1, 3, 2], PairAxis::Channels);
        assert_eq!(
            (s.n, s.a, s.b, s.ab),
            (2.0, 3.0, 6.0, 1.0 * 2.0 + 2.0 * 4.0)
        );
        // The second of each pair is twice the first: correlation 1.
        assert!((s.correlation() - 1.0).abs() < 1e-12);
        // Along the last axis: (1, 2), (2, 4), (9, 9).
        let s = PairSums::of(&v, &[3, 2], PairAxis::Last);
        assert_eq!((s.n, s.ab), (3.0, 2.0 + 8.0 + 81.0));
        // Opposite moves: -1; a constant element: undefined, taken as 1.
        let s = PairSums::of(&[1.0, -1.0, 2.0, -2.0], &[2, 2], PairAxis::Last);
        assert!((s.correlation() + 1.0).abs() < 1e-12);
        let s = PairSums::of(&[1.0, 5.0, 2.0, 5.0], &[2, 2], PairAxis::Last);
        assert_eq!(s.correlation(), 1.0);
    }

    #[test]
    fn code_shares_quantize_each_bin_centre_with_the_range() {
        // Four bins over [0, 4]: centres 0.5, 1.5, 2.5, 3.5; range [0, 2.55]
        // (scale 0.01, zero point 0): codes 50, 150, 250 and 255 (clipped).
        let h = [1u64, 1, 2, 0];
        let c = code_shares(&h, 0.0, 4.0, (0.0, 2.55));
        assert_eq!((c[50], c[150], c[250], c[255]), (0.25, 0.25, 0.5, 0.0));
        let h = [0u64, 0, 0, 4];
        assert_eq!(code_shares(&h, 0.0, 4.0, (0.0, 2.55))[255], 1.0);
    }

    #[test]
    fn stat_skips_nan_and_infinities_and_bins_every_finite_value() {
        // Lengths below, at and past the 8-lane blocks, NaN and infinities
        // anywhere: the range and the histogram count the finite values only.
        for len in [1usize, 3, 8, 13, 64, 100] {
            let mut v: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 7.0).collect();
            let (lo, hi) = (-7.0f32, (len - 1) as f32 * 0.5 - 7.0);
            let s = Stat::of(&v, true);
            assert_eq!((s.lo, s.hi), (lo, hi), "len {len}");
            assert_eq!(s.hist.counts().iter().sum::<u64>() as usize, len);
            assert_eq!(s.hist.counts()[0], 1, "the minimum is in the first bin");
            assert_eq!(s.hist.counts().last(), Some(&1), "the maximum in the last");
            v.push(f32::NAN);
            v.insert(len / 2, f32::INFINITY);
            v.insert(0, f32::NEG_INFINITY);
            let s = Stat::of(&v, true);
            assert_eq!((s.lo, s.hi), (lo, hi), "len {len} with non-finite values");
            assert_eq!(s.hist.counts().iter().sum::<u64>() as usize, len);
        }
        let s = Stat::of(&[f32::NAN; 9], true);
        assert!(!s.lo.is_finite() && s.hist.is_empty());
        // A constant value (a range of width 0): every element in bin 0.
        let s = Stat::of(&[3.0; 40], true);
        assert_eq!((s.lo, s.hi, s.hist.counts()), (3.0, 3.0, &[40u64][..]));
        // Without a histogram only the range is kept.
        let s = Stat::of(&[2.0, -1.0], false);
        assert_eq!((s.lo, s.hi, s.hist.is_empty()), (-1.0, 2.0, true));
    }
}
