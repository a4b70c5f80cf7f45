//! Models that carry a recurrent state ([`super::inputs::state_pairs`]) run
//! as streams: each step after the first takes its state inputs from the
//! state outputs of the step before.

use anyhow::Result;
use tract_onnx::prelude::Tensor;

/// Steps a streaming model is run for, one random sample each, where it
/// carries a recurrent state ([`super::inputs::state_pairs`]): the original runs
/// them as one stream, each step from the state it computed at the step
/// before, and calibration too; a result runs each step from the state the
/// original reached there. A state drawn at random is not one the model
/// meets: Silero VAD 6.0 calibrated and verified from such states passed at
/// cosine 0.996, and agreed with the float model on 71-78% of the decisions
/// over 150 chunks of a quiet stream. Random samples are no stream either:
/// a result run from its own states builds up errors over them that a real
/// stream does not (silero 6.2's spox export so verified kept four layers
/// in float, 0.33x; from the original's states one, 0.30x; both agree with
/// the float model on 99-100% of the decisions over a synthetic stream).
pub const STREAM_STEPS: usize = 8;

/// [`super::inputs::state_pairs`] as positions: each state input's among `inputs`
/// (the inputs a run takes, in order), its output's among `outputs`.
pub fn chain_positions<'a>(
    pairs: &[(String, String)],
    inputs: impl Iterator<Item = &'a str>,
    outputs: &[String],
) -> Vec<(usize, usize)> {
    let inputs: Vec<&str> = inputs.collect();
    pairs
        .iter()
        .filter_map(|(i, o)| {
            Some((
                inputs.iter().position(|n| n == i)?,
                outputs.iter().position(|n| n == o)?,
            ))
        })
        .collect()
}

/// `samples` as steps of a stream whose states are the ones `expected`
/// (the outputs of the run of each step) gives to the step after.
pub(super) fn teacher_forced(
    samples: Vec<Vec<Tensor>>,
    expected: &[Vec<Tensor>],
    chain: &[(usize, usize)],
) -> Vec<Vec<Tensor>> {
    samples
        .iter()
        .enumerate()
        .map(|(i, s)| chain_sample(s, i.checked_sub(1).map(|p| &expected[p][..]), chain))
        .collect()
}

/// `sample` as a step of a stream: its state inputs replaced by the state
/// outputs of the step before (`prev`, that run's outputs), where the two
/// agree in type and shape (a pair by name alone, whose shapes differ, is
/// not a state). The first step (`prev` none) keeps its own.
pub fn chain_sample(
    sample: &[Tensor],
    prev: Option<&[Tensor]>,
    chain: &[(usize, usize)],
) -> Vec<Tensor> {
    let mut s = sample.to_vec();
    let Some(prev) = prev else { return s };
    for &(i, o) in chain {
        if let Some(state) = prev.get(o) {
            feed(&mut s, i, state);
        }
    }
    s
}

/// `state` as input `i` of `sample`, where the two agree in type and shape.
fn feed(sample: &mut [Tensor], i: usize, state: &Tensor) {
    if let Some(t) = sample.get_mut(i) {
        if t.datum_type() == state.datum_type() && t.shape() == state.shape() {
            *t = state.clone();
        }
    }
}

/// `samples` run by `run` as the steps of one stream, in order: each step
/// after the first takes its state inputs from the state outputs of the
/// step before ([`chain_sample`]). What `keep` makes of each step's outputs
/// is returned; only the state outputs are held for the next step.
pub fn run_stream<T>(
    samples: &[Vec<Tensor>],
    chain: &[(usize, usize)],
    mut run: impl FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
    mut keep: impl FnMut(Vec<Tensor>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut states: Vec<(usize, Tensor)> = Vec::new();
    let mut kept = Vec::with_capacity(samples.len());
    for sample in samples {
        let mut s = sample.clone();
        for (i, state) in &states {
            feed(&mut s, *i, state);
        }
        let out = run(&s)?;
        states = chain
            .iter()
            .filter_map(|&(i, o)| Some((i, out.get(o)?.clone())))
            .collect();
        kept.push(keep(out)?);
    }
    Ok(kept)
}
