//! Activation ranges for static quantization, measured by running the float
//! model in tract on calibration samples.
//!
//! Statistics stream: each sample's activations update running min/max (and,
//! for `percentile`, a histogram in a second pass) and are dropped; no
//! sample's activations are kept. Samples run on all cores.

use std::collections::HashMap;

use anyhow::{Context, Result};
use rayon::prelude::*;
use tract_onnx::prelude::{Datum, Tensor};

use crate::ir::Model;
use crate::pass::DataSource;
use crate::proto::ValueInfoProto;
use crate::verify::{inputs, tract as tr};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The observed min and max.
    Minmax,
    /// The range holding `percentile`% of the observed values (outliers clipped).
    Percentile,
}

const BINS: usize = 2048;

/// Ranges `(min, max)` of `values` over the calibration samples. Values the
/// calibration copy does not compute (folded away) are absent from the result.
pub fn calibrate(
    model: &Model,
    values: &[String],
    data: &DataSource,
    samples: usize,
    method: Method,
    percentile: f64,
    notes: &mut Vec<String>,
) -> Result<HashMap<String, (f32, f32)>> {
    let mut dim_notes = Vec::new();
    let specs = inputs::input_specs(&model.graph, &data.dims, &mut dim_notes)?;
    let data_samples = match &data.inputs {
        Some(p) => inputs::load_samples(p, &specs)?,
        None => {
            notes.append(&mut dim_notes);
            notes.push(format!(
                "calibrated on {samples} seeded random sample(s): pass --inputs with real data for activation ranges that match use"
            ));
            inputs::random_samples(&specs, samples.max(1), data.seed.wrapping_add(0x5eed))?
        }
    };
    let fixed: Vec<usize> = if model.graph.nodes.node_weights().any(|n| n.op() == "If") {
        (0..specs.len())
            .filter(|&i| {
                data_samples[0][i].len() <= 16
                    && data_samples.iter().all(|s| s[i] == data_samples[0][i])
            })
            .collect()
    } else {
        vec![]
    };
    let run_samples: Vec<Vec<Tensor>> = data_samples
        .iter()
        .map(|s| {
            s.iter()
                .enumerate()
                .filter(|(i, _)| !fixed.contains(i))
                .map(|(_, t)| t.clone())
                .collect()
        })
        .collect();
    let (mut proto, _) =
        crate::verify::verification_copy(model, &specs, &data_samples[0], &fixed, &run_samples)?;
    let graph = proto.graph.as_mut().context("no graph")?;
    let defined: std::collections::HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(|s| s.as_str()))
        .collect();
    let present: Vec<String> = values
        .iter()
        .filter(|v| defined.contains(v.as_str()))
        .cloned()
        .collect();
    let first = graph.output.len();
    let extra: Vec<ValueInfoProto> = present
        .iter()
        .filter(|v| !graph.output.iter().any(|o| o.name() == v.as_str()))
        .map(|v| ValueInfoProto {
            name: Some(v.clone()),
            ..Default::default()
        })
        .collect();
    graph.output.extend(extra);
    let index: Vec<usize> = present
        .iter()
        .map(|v| {
            graph
                .output
                .iter()
                .position(|o| o.name() == v.as_str())
                .expect("added above")
        })
        .collect();
    let _ = first;
    let runner = tr::Runner::new(&proto, &run_samples[0])
        .context("tract cannot run the model for calibration")?;

    let n = present.len();
    let minmax = run_samples
        .par_iter()
        .map(|s| -> Result<Vec<(f32, f32)>> {
            let out = runner.run(s)?;
            index
                .iter()
                .map(|&k| {
                    // Only float32 activations are quantized.
                    if out[k].datum_type() != f32::datum_type() {
                        return Ok((f32::INFINITY, f32::NEG_INFINITY));
                    }
                    let v = tr::to_f64(&out[k])?;
                    Ok(v.iter()
                        .filter(|x| x.is_finite())
                        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                            (lo.min(x as f32), hi.max(x as f32))
                        }))
                })
                .collect()
        })
        .try_reduce(
            || vec![(f32::INFINITY, f32::NEG_INFINITY); n],
            |a, b| {
                Ok(a.iter()
                    .zip(&b)
                    .map(|(x, y)| (x.0.min(y.0), x.1.max(y.1)))
                    .collect())
            },
        )?;

    let ranges: Vec<(f32, f32)> = match method {
        Method::Minmax => minmax,
        Method::Percentile => {
            let hist = run_samples
                .par_iter()
                .map(|s| -> Result<Vec<Vec<u64>>> {
                    let out = runner.run(s)?;
                    index
                        .iter()
                        .zip(&minmax)
                        .map(|(&k, &(lo, hi))| {
                            let mut h = vec![0u64; BINS];
                            let width = ((hi - lo) as f64).max(f64::MIN_POSITIVE);
                            for x in tr::to_f64(&out[k])? {
                                if x.is_finite() {
                                    let b = (((x - lo as f64) / width) * BINS as f64) as usize;
                                    h[b.min(BINS - 1)] += 1;
                                }
                            }
                            Ok(h)
                        })
                        .collect()
                })
                .try_reduce(
                    || vec![vec![0u64; BINS]; n],
                    |a, b| {
                        Ok(a.iter()
                            .zip(&b)
                            .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p + q).collect())
                            .collect())
                    },
                )?;
            hist.iter()
                .zip(&minmax)
                .map(|(h, &(lo, hi))| percentile_range(h, lo, hi, percentile))
                .collect()
        }
    };
    Ok(present
        .into_iter()
        .zip(ranges)
        .filter(|(_, (lo, hi))| lo.is_finite() && hi.is_finite())
        .collect())
}

/// The range holding `p`% of a histogram's mass over `[lo, hi]`, clipping
/// equal tails on both sides.
pub fn percentile_range(h: &[u64], lo: f32, hi: f32, p: f64) -> (f32, f32) {
    let total: u64 = h.iter().sum();
    if total == 0 || hi <= lo {
        return (lo, hi);
    }
    let tail = ((100.0 - p.clamp(0.0, 100.0)) / 200.0 * total as f64) as u64;
    let width = (hi - lo) / h.len() as f32;
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
    (lo + first as f32 * width, lo + (last + 1) as f32 * width)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
