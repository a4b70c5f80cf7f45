//! tract's GridSample over two spatial axes, computed once per sampled
//! position instead of once per output element.
//!
//! tract (0.23) computes each element of a GridSample's output on its own,
//! allocating index vectors for the element and for each of its corners:
//! RT-DETR's decoder (eighteen GridSamples over 300 queries x 4 points x 8
//! heads) took 6-7 s a run in tract at 320 x 320, where onnxruntime runs
//! the whole model in 0.25 s. [`PlanarGridSample`] is the same computation,
//! the same float operations in the same order on the same values, so its
//! outputs are tract's bit for bit (tested against tract's own op): the
//! coordinates, corners and weights of a position are computed once and
//! applied to every channel. Bicubic sampling, other ranks and other types
//! keep tract's op. Where a grid holds infinities that reflection padding
//! cannot bring back into the input, this op fails with an error (tract's
//! indexes past the input and panics).

use anyhow::{ensure, Result};

use super::tract::to_tract_error;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::ops::nn::grid_sample::{GridSample, InterpolationMode, PaddingMode};

/// tract's [`GridSample`] of a rank-4 float32 input (`[N, C, H, W]`, grid
/// `[N, Ho, Wo, 2]`), bilinear or nearest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PlanarGridSample(GridSample);

/// Where a position reads: four taps (offset in a channel's plane, none
/// for a zero outside it; and its weight), or with `direct` the first
/// alone.
struct Taps {
    taps: [(Option<usize>, f32); 4],
    /// Nearest: the first tap's value as it is, not multiplied by a weight.
    direct: bool,
}

impl PlanarGridSample {
    /// The op in place of `op` for inputs of these facts, where it applies.
    pub(super) fn replacing(op: &GridSample, x: &TypedFact, grid: &TypedFact) -> Option<Self> {
        let x_shape = x.shape.as_concrete()?;
        let grid_shape = grid.shape.as_concrete()?;
        let applies = x.datum_type == f32::datum_type()
            && grid.datum_type == f32::datum_type()
            && x_shape.len() == 4
            && grid_shape.len() == 4
            && grid_shape[3] == 2
            && x_shape[2] > 0
            && x_shape[3] > 0
            && matches!(
                op.mode,
                InterpolationMode::Bilinear | InterpolationMode::Nearest
            );
        applies.then(|| PlanarGridSample(op.clone()))
    }

    fn denormalize(&self, coord: f32, size: usize) -> f32 {
        if self.0.align_corners {
            (coord + 1.0) / 2.0 * (size as f32 - 1.0)
        } else {
            ((coord + 1.0) * size as f32 - 1.0) / 2.0
        }
    }

    fn bounds(&self, size: usize) -> (f32, f32) {
        if self.0.align_corners {
            (0.0, size as f32 - 1.0)
        } else {
            (-0.5, size as f32 - 0.5)
        }
    }

    fn apply_padding(&self, coord: f32, lo: f32, hi: f32) -> f32 {
        match self.0.padding_mode {
            PaddingMode::Border => coord.clamp(0.0, hi + lo),
            PaddingMode::Reflection => reflect(coord, lo, hi),
            PaddingMode::Zeros => coord,
        }
    }

    /// The position `[y, x]` in a `[h, w]` plane after padding, where it
    /// falls outside.
    fn padded(&self, mut coords: [f32; 2], sizes: [usize; 2]) -> [f32; 2] {
        let bounds = sizes.map(|s| self.bounds(s));
        if coords
            .iter()
            .zip(&bounds)
            .any(|(&c, &(lo, hi))| c < lo || c > hi)
        {
            for (c, &(lo, hi)) in coords.iter_mut().zip(&bounds) {
                *c = self.apply_padding(*c, lo, hi);
            }
        }
        coords
    }

    /// The offset of pixel `[y, x]` in a plane, as the padding mode reads it
    /// (none: a zero outside the plane).
    fn offset(&self, at: [isize; 2], sizes: [usize; 2]) -> Result<Option<usize>> {
        let index = |d: usize| -> Result<Option<usize>> {
            let (c, s) = (at[d], sizes[d]);
            Ok(match self.0.padding_mode {
                PaddingMode::Zeros => (c >= 0 && c < s as isize).then_some(c as usize),
                PaddingMode::Border => Some((c.max(0) as usize).min(s - 1)),
                // A finite coordinate reflects into the plane; an infinite
                // one does not.
                PaddingMode::Reflection => {
                    let (lo, hi) = self.bounds(s);
                    let r = reflect(c as f32, lo, hi) as usize;
                    ensure!(
                        r < s,
                        "GridSample reads outside its input: coordinate {c} reflects to {r} of {s}"
                    );
                    Some(r)
                }
            })
        };
        Ok(match (index(0)?, index(1)?) {
            (Some(y), Some(x)) => Some(y * sizes[1] + x),
            _ => None,
        })
    }

    /// Where the position `[y, x]` (in pixels) reads.
    fn taps(&self, coords: [f32; 2], sizes: [usize; 2]) -> Result<Taps> {
        let mut t = Taps {
            taps: [(None, 0.0); 4],
            direct: false,
        };
        match self.0.mode {
            InterpolationMode::Nearest => {
                let c = self.padded(coords.map(f32::round_ties_even), sizes);
                t.taps[0] = (self.offset(c.map(|c| c as isize), sizes)?, 1.0);
                t.direct = true;
            }
            // Corner `k` takes the upper neighbour along axis `d` where bit
            // `d` of `k` is set (y first; the corners summed in tract's
            // order), weighted by the product of its distances to the
            // opposite neighbours.
            _ => {
                let c = self.padded(coords, sizes);
                for (k, tap) in t.taps.iter_mut().enumerate() {
                    let mut weight = 1.0f32;
                    let mut at = [0isize; 2];
                    for d in 0..2 {
                        let lo = c[d].floor() as isize;
                        if (k >> d) & 1 == 0 {
                            at[d] = lo;
                            weight *= lo.wrapping_add(1) as f32 - c[d];
                        } else {
                            at[d] = lo.wrapping_add(1);
                            weight *= c[d] - lo as f32;
                        }
                    }
                    *tap = (self.offset(at, sizes)?, weight);
                }
            }
        }
        Ok(t)
    }

    fn sample(&self, x: &Tensor, grid: &Tensor) -> Result<Tensor> {
        let (xs, gs) = (x.shape(), grid.shape());
        ensure!(
            xs.len() == 4 && gs.len() == 4 && gs[0] == xs[0] && gs[3] == 2,
            "GridSample of input {xs:?} on grid {gs:?}"
        );
        let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
        let positions = gs[1] * gs[2];
        let x_view = x.try_as_plain_ram().map_err(to_tract_error)?;
        let xv = x_view.as_slice::<f32>().map_err(to_tract_error)?;
        let g_view = grid.try_as_plain_ram().map_err(to_tract_error)?;
        let gv = g_view.as_slice::<f32>().map_err(to_tract_error)?;
        let plane = h * w;
        let mut out = vec![0f32; n * c * positions];
        for b in 0..n {
            for p in 0..positions {
                let g = (b * positions + p) * 2;
                let coords = [self.denormalize(gv[g + 1], h), self.denormalize(gv[g], w)];
                let t = self.taps(coords, [h, w])?;
                for ch in 0..c {
                    let base = (b * c + ch) * plane;
                    let pixel = |o: Option<usize>| o.map_or(0.0, |o| xv[base + o]);
                    out[(b * c + ch) * positions + p] = match t.direct {
                        true => pixel(t.taps[0].0),
                        false => t
                            .taps
                            .iter()
                            .fold(0.0f32, |r, &(o, weight)| r + weight * pixel(o)),
                    };
                }
            }
        }
        Tensor::from_shape(&[n, c, gs[1], gs[2]], &out)
    }
}

/// `x` reflected into `[x_min, x_max]` (tract's, as the ONNX reference).
fn reflect(x: f32, x_min: f32, x_max: f32) -> f32 {
    let range = x_max - x_min;
    if range == 0.0 {
        return x_min;
    }
    if x < x_min {
        let dx = x_min - x;
        let n = (dx / range) as i32;
        let r = dx - n as f32 * range;
        if n % 2 == 0 {
            x_min + r
        } else {
            x_max - r
        }
    } else if x > x_max {
        let dx = x - x_max;
        let n = (dx / range) as i32;
        let r = dx - n as f32 * range;
        if n % 2 == 0 {
            x_max - r
        } else {
            x_min + r
        }
    } else {
        x
    }
}

impl Op for PlanarGridSample {
    fn name(&self) -> StaticName {
        "PlanarGridSample".into()
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for PlanarGridSample {
    fn eval_out_of_plan(&self, inputs: TVec<TValue>) -> TractResult<Option<TVec<TValue>>> {
        Ok(Some(EvalOp::eval(
            self,
            &EvalContext::out_of_plan(),
            inputs,
        )?))
    }

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let [x, grid] = &inputs[..] else {
            return Err(TractError::msg(format!(
                "GridSample takes 2 inputs, got {}",
                inputs.len()
            )));
        };
        let out = self
            .sample(x, grid)
            .map_err(|e| TractError::msg(format!("{e:#}")))?;
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for PlanarGridSample {
    fn as_op(&self) -> &dyn Op {
        self
    }

    fn as_op_mut(&mut self) -> &mut dyn Op {
        self
    }

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.0.output_facts(inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grid of infinities: zeros and border padding read zeros and the
    /// border as tract does; reflection cannot bring them back into the
    /// input, and the run fails with an error (tract's op panics there).
    #[test]
    fn infinite_coordinates_pad_or_fail() {
        let x = Tensor::from_shape(&[1, 1, 2, 3], &[1f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let grid = Tensor::from_shape(&[1, 1, 2, 2], &[f32::INFINITY, 0.0, 0.0, f32::NEG_INFINITY])
            .unwrap();
        let op = |mode: InterpolationMode, padding_mode: PaddingMode| {
            let op = GridSample {
                mode,
                padding_mode,
                align_corners: false,
            };
            PlanarGridSample::replacing(&op, &f32::fact([1, 1, 2, 3]), &f32::fact([1, 1, 2, 2]))
                .unwrap()
        };
        let zeros = op(InterpolationMode::Nearest, PaddingMode::Zeros)
            .sample(&x, &grid)
            .unwrap();
        let values = |t: &Tensor| {
            t.try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap()
                .to_vec()
        };
        assert_eq!(values(&zeros), [0.0, 0.0]);
        let border = op(InterpolationMode::Nearest, PaddingMode::Border)
            .sample(&x, &grid)
            .unwrap();
        // x = +inf clamps to the last column, y = -inf to the first row.
        assert_eq!(values(&border), [3.0, 2.0]);
        let reflected = op(InterpolationMode::Nearest, PaddingMode::Reflection).sample(&x, &grid);
        assert!(
            reflected
                .as_ref()
                .is_err_and(|e| e.to_string().contains("outside its input")),
            "{reflected:?}"
        );
    }

    /// Every mode and padding this op takes, both corner alignments, on
    /// positions inside, on and outside the edges (and exactly on pixel
    /// centres): tract's own op gives the same bits.
    #[test]
    fn planar_grid_sampling_is_tracts_bit_for_bit() {
        let (n, c, h, w, ho, wo) = (2usize, 3usize, 5usize, 7usize, 4usize, 6usize);
        let xv: Vec<f32> = (0..n * c * h * w)
            .map(|i| ((i * 7919) % 211) as f32 / 37.0 - 2.5)
            .collect();
        let gv: Vec<f32> = (0..n * ho * wo * 2)
            .map(|i| match i % 11 {
                0 => -1.0,
                1 => 1.0,
                2 => 0.0,
                3 => 0.5,
                _ => ((i * 104729) % 997) as f32 / 997.0 * 3.2 - 1.6,
            })
            .collect();
        let x = Tensor::from_shape(&[n, c, h, w], &xv).unwrap();
        let grid = Tensor::from_shape(&[n, ho, wo, 2], &gv).unwrap();
        let modes = [InterpolationMode::Bilinear, InterpolationMode::Nearest];
        let paddings = [
            PaddingMode::Zeros,
            PaddingMode::Border,
            PaddingMode::Reflection,
        ];
        for mode in &modes {
            for padding_mode in &paddings {
                for align_corners in [false, true] {
                    let op = GridSample {
                        mode: mode.clone(),
                        padding_mode: padding_mode.clone(),
                        align_corners,
                    };
                    let inputs = || tvec![x.clone().into_tvalue(), grid.clone().into_tvalue()];
                    let theirs = EvalOp::eval(&op, &EvalContext::out_of_plan(), inputs()).unwrap();
                    let planar = PlanarGridSample::replacing(
                        &op,
                        &f32::fact([n, c, h, w]),
                        &f32::fact([n, ho, wo, 2]),
                    )
                    .unwrap();
                    let ours =
                        EvalOp::eval(&planar, &EvalContext::out_of_plan(), inputs()).unwrap();
                    let bits = |t: &TValue| -> Vec<u32> {
                        let v = t.try_as_plain_ram().unwrap();
                        v.as_slice::<f32>()
                            .unwrap()
                            .iter()
                            .map(|f| f.to_bits())
                            .collect()
                    };
                    assert_eq!(theirs[0].shape(), ours[0].shape());
                    assert_eq!(bits(&theirs[0]), bits(&ours[0]), "{op:?}");
                }
            }
        }
    }
}
