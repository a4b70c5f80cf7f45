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

#[cfg(test)]
mod tests {
    /// Each step of a stream starts from the state the step before
    /// returned (the samples' own states are not read after the first),
    /// and a state of another shape is not fed back.
    #[test]
    fn a_stream_feeds_each_step_the_state_the_step_before_returned() {
        use tract_onnx::prelude::{tensor1, Tensor};
        let value = |t: &Tensor| crate::verify::tract::to_f64(t).unwrap();
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
}
