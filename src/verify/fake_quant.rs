//! An activation's QuantizeLinear and the DequantizeLinear that reads it,
//! computed in one pass over float32, as tract computes the two.
//!
//! tract (0.23) quantizes element by element through a rounding with
//! branches that does not vectorize, writes the codes, and dequantizes them
//! in a second pass: quantizing open-nsfw (a ResNet-50) statically, the
//! activations' pairs took 19% of the whole run's CPU time, in the checks
//! of the result (`sensitive=auto`'s and verification's). [`FakeQuant`]
//! computes the same values (tested against tract's two ops, bit for bit)
//! in one loop the compiler vectorizes: the scaled value is clamped to one
//! code past the codes' range first, so that the rounding by adding and
//! subtracting 1.5 x 2^23 is exact, then rounded half to even, clamped to
//! the codes and scaled back. Where tract's pair differs from the ONNX
//! semantics, on infinities and values past 2^31 codes (its integer
//! conversion saturates and the zero point's addition then wraps), this op
//! saturates as QuantizeLinear specifies. Pairs per axis (which tract
//! computes with its own vector ops), other types and codes read by
//! anything else keep tract's ops.
//!
//! A pair a plan switches on or off (`Where(on, pair(x), x)` on a boolean
//! input, as [`super::fed`] writes it) is one [`FakeQuant`] that reads `on`
//! too ([`switch_pairs`]): switched off, it passes `x` through and computes
//! nothing.

use anyhow::Result;

use super::tract::to_tract_error;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{
    EvalContext, EvalOp, Op, StaticName, TypedModelPatch, TypedOp,
};
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearI8, QuantizeLinearU8};

/// `(clamp(round_half_even(x * inv_scale) + q_zero, lo, hi) - dq_zero) *
/// scale` over float32, with `lo..=hi` the codes of the quantized type.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FakeQuant {
    /// What tract's QuantizeLinear multiplies by: 1 / its scale.
    inv_scale: f32,
    /// The QuantizeLinear's zero point.
    q_zero: i32,
    /// The codes' range (0..=255 or -128..=127).
    lo: i32,
    hi: i32,
    /// The DequantizeLinear's scale and zero point.
    scale: f32,
    dq_zero: i32,
}

impl Eq for FakeQuant {}

/// Adding and subtracting this rounds a float32 of magnitude below 2^22 to
/// the nearest integer, ties to even.
const ROUNDER: f32 = 12_582_912.0;

impl FakeQuant {
    /// The op computing `q` (an element-wise op of tract's) followed by
    /// `dq`, where `q` is a per-tensor QuantizeLinear to uint8 or int8.
    pub(super) fn of(q: &ElementWiseOp, dq: &DequantizeLinearF32) -> Option<FakeQuant> {
        let (inv_scale, q_zero, lo, hi) = if let Some(u) = q.0.downcast_ref::<QuantizeLinearU8>() {
            (u.scale, i32::from(u.zero_point), 0, 255)
        } else {
            let i = q.0.downcast_ref::<QuantizeLinearI8>()?;
            (i.scale, i32::from(i.zero_point), -128, 127)
        };
        Some(FakeQuant {
            inv_scale,
            q_zero,
            lo,
            hi,
            scale: dq.scale,
            dq_zero: dq.zero_point,
        })
    }

    /// The pair's output for each of `xs`, in its place.
    fn compute(&self, xs: &mut [f32]) {
        // In the codes' offsets from the quantizer's zero point: exact
        // integers in float32.
        let below = (self.lo - self.q_zero) as f32;
        let above = (self.hi - self.q_zero) as f32;
        let shift = (self.q_zero - self.dq_zero) as f32;
        let (inv, scale) = (self.inv_scale, self.scale);
        for x in xs.iter_mut() {
            let v = *x * inv;
            // tract's rounding returns NaN, which its conversion to an
            // integer makes 0: the zero point's code.
            let v = if v.is_nan() { 0.0 } else { v };
            let v = if v < below - 1.0 { below - 1.0 } else { v };
            let v = if v > above + 1.0 { above + 1.0 } else { v };
            let r = (v + ROUNDER) - ROUNDER;
            let r = if r < below { below } else { r };
            let r = if r > above { above } else { r };
            *x = (r + shift) * scale;
        }
    }
}

impl Op for FakeQuant {
    fn name(&self) -> StaticName {
        "FakeQuant".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "1/scale: {} zero point: {} codes: {}..={} then scale: {} zero point: {}",
            self.inv_scale, self.q_zero, self.lo, self.hi, self.scale, self.dq_zero
        )])
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for FakeQuant {
    fn eval_out_of_plan(&self, inputs: TVec<TValue>) -> TractResult<Option<TVec<TValue>>> {
        Ok(Some(EvalOp::eval(
            self,
            &EvalContext::out_of_plan(),
            inputs,
        )?))
    }

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let n = inputs.len();
        let mut inputs = inputs.into_iter();
        let (Some(x), on, None) = (inputs.next(), inputs.next(), inputs.next()) else {
            return Err(TractError::msg(format!(
                "FakeQuant takes 1 or 2 inputs, got {n}"
            )));
        };
        // Switched off: the value as it came ([`switch_pairs`]).
        if let Some(on) = on {
            if !on.cast_to_scalar::<bool>()? {
                return Ok(tvec!(x));
            }
        }
        // In place where the plan holds the input nowhere else (as tract's
        // element-wise ops do), else on a copy.
        let mut out = x.into_tensor();
        self.compute(out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?);
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for FakeQuant {
    fn as_op(&self) -> &dyn Op {
        self
    }

    fn as_op_mut(&mut self) -> &mut dyn Op {
        self
    }

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::datum_type().fact(inputs[0].shape.clone())))
    }
}

/// Each per-tensor QuantizeLinear of a float32 value whose codes only a
/// DequantizeLinear reads, computed with it by one [`FakeQuant`]; returns
/// how many pairs it replaced. Between the two, tract's code generation
/// may have moved or reshaped the codes (into a convolution's layout and
/// back): those ops then move the float values instead, as the pair
/// computes element by element.
pub(super) fn fuse_pairs(model: &mut TypedModel) -> Result<usize> {
    use tract_onnx::tract_core::ops::change_axes::{AxisOp, IntoShape};
    let outputs: Vec<OutletId> = model.output_outlets().map_err(to_tract_error)?.to_vec();
    let read_once = |model: &TypedModel, outlet: OutletId| {
        let node = model.node(outlet.node);
        node.outputs.len() == 1
            && node.outputs[0].successors.len() == 1
            && !outputs.contains(&outlet)
    };
    let mut fused = 0;
    for id in model.eval_order().map_err(to_tract_error)? {
        let node = model.node(id);
        let Some(dq) = node.op_as::<DequantizeLinearF32>() else {
            continue;
        };
        let [mut codes] = node.inputs[..] else {
            continue;
        };
        // The ops that only move the codes, last first.
        let mut moves = vec![];
        loop {
            let n = model.node(codes.node);
            let moving = n.op_is::<AxisOp>() || n.op_is::<IntoShape>();
            match (moving, &n.inputs[..]) {
                (true, &[from]) if read_once(model, codes) => {
                    moves.push(codes.node);
                    codes = from;
                }
                _ => break,
            }
        }
        let q_node = model.node(codes.node);
        let Some(q) = q_node.op_as::<ElementWiseOp>() else {
            continue;
        };
        let [x] = q_node.inputs[..] else { continue };
        let float_in =
            model.outlet_fact(x).map_err(to_tract_error)?.datum_type == f32::datum_type();
        let Some(op) = FakeQuant::of(q, dq).filter(|_| read_once(model, codes) && float_in) else {
            continue;
        };
        let name = node.name.clone();
        let mut patch = TypedModelPatch::default();
        let mut wire = patch.tap_model(model, x).map_err(to_tract_error)?;
        wire = patch
            .wire_node(format!("{name}.fake_quant"), op, &[wire])
            .map_err(to_tract_error)?[0];
        for &m in moves.iter().rev() {
            let m = model.node(m);
            wire = patch
                .wire_node(format!("{}.float", m.name), m.op.clone(), &[wire])
                .map_err(to_tract_error)?[0];
        }
        patch
            .shunt_outside(model, OutletId::new(id, 0), wire)
            .map_err(to_tract_error)?;
        patch.apply(model).map_err(to_tract_error)?;
        fused += 1;
    }
    Ok(fused)
}

/// Each `Iff(on, FakeQuant(x), x)` whose condition `on` is one boolean (a
/// pair the plan switches: `super::fed`) computed by one [`FakeQuant`]
/// that reads `on` too and passes `x` through unchanged where it is false,
/// instead of computing the pair and selecting element by element; returns
/// how many it replaced.
pub(super) fn switch_pairs(model: &mut TypedModel) -> Result<usize> {
    use tract_onnx::tract_core::ops::logic::Iff;
    let outputs: Vec<OutletId> = model.output_outlets().map_err(to_tract_error)?.to_vec();
    let mut switched = 0;
    for id in model.eval_order().map_err(to_tract_error)? {
        let node = model.node(id);
        if !node.op_is::<Iff>() {
            continue;
        }
        let [on, t, f] = node.inputs[..] else {
            continue;
        };
        let pair = model.node(t.node);
        let Some(fq) = pair.op_as::<FakeQuant>() else {
            continue;
        };
        let on_fact = model.outlet_fact(on).map_err(to_tract_error)?;
        // One value (tract may have given it the pair's rank, of 1s).
        let scalar_bool = on_fact.datum_type == bool::datum_type()
            && on_fact
                .shape
                .as_concrete()
                .is_some_and(|d| d.iter().all(|&n| n == 1));
        let read_once = pair.outputs.len() == 1
            && pair.outputs[0].successors.len() == 1
            && !outputs.contains(&t);
        if !(scalar_bool && read_once && pair.inputs[..] == [f]) {
            continue;
        }
        let (op, name) = (fq.clone(), node.name.clone());
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(model, f).map_err(to_tract_error)?;
        let on = patch.tap_model(model, on).map_err(to_tract_error)?;
        let wire = patch
            .wire_node(format!("{name}.switched"), op, &[x, on])
            .map_err(to_tract_error)?[0];
        patch
            .shunt_outside(model, OutletId::new(id, 0), wire)
            .map_err(to_tract_error)?;
        patch.apply(model).map_err(to_tract_error)?;
        switched += 1;
    }
    Ok(switched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::quant::{quantize_linear_i8, quantize_linear_u8};

    /// Values around every rounding tie and past both ends of the codes,
    /// zeros of both signs, infinitesimals and NaN.
    fn probes(scale: f32) -> Vec<f32> {
        let mut xs = vec![0.0, -0.0, f32::MIN_POSITIVE, -f32::MIN_POSITIVE, f32::NAN];
        for k in -600..=600 {
            let half = k as f32 * 0.5;
            for d in [-1e-3f32, 0.0, 1e-3] {
                xs.push((half + d) * scale);
            }
        }
        xs
    }

    fn tract_pair(q: ElementWiseOp, dq: &DequantizeLinearF32, xs: &[f32]) -> Vec<f32> {
        let ctx = EvalContext::out_of_plan();
        let x = tensor1(xs).into_tvalue();
        let codes = EvalOp::eval(&q, &ctx, tvec!(x)).unwrap();
        let y = EvalOp::eval(dq, &ctx, codes).unwrap();
        y[0].try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    /// Bit for bit tract's QuantizeLinear then DequantizeLinear, uint8 and
    /// int8, with the pair's zero points equal or not (tract returns NaN
    /// as the zero point's code too).
    #[test]
    fn computes_what_tracts_pair_computes() {
        let cases: [(ElementWiseOp, f32, i32); 5] = [
            (quantize_linear_u8(1.0 / 0.05, 128), 0.05, 128),
            (quantize_linear_u8(1.0 / 0.013, 0), 0.013, 0),
            (quantize_linear_u8(1.0 / 0.2, 37), 0.2, 30),
            (quantize_linear_i8(1.0 / 0.07, 0), 0.07, 0),
            (quantize_linear_i8(1.0 / 0.003, -5), 0.003, -5),
        ];
        for (q, scale, dq_zero) in cases {
            let dq = DequantizeLinearF32::new(scale, dq_zero);
            let xs = probes(scale);
            let theirs = tract_pair(q.clone(), &dq, &xs);
            let op = FakeQuant::of(&q, &dq).unwrap();
            let mut ours = xs.clone();
            op.compute(&mut ours);
            for ((x, a), b) in xs.iter().zip(&ours).zip(&theirs) {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{op:?} at {x}: {a} against tract's {b}"
                );
            }
        }
    }

    /// Infinities and values past 2^31 codes saturate, as QuantizeLinear
    /// specifies (tract's pair wraps there, or panics where overflows are
    /// checked).
    #[test]
    fn infinities_saturate() {
        let dq = DequantizeLinearF32::new(0.5, 128);
        let op = FakeQuant::of(&quantize_linear_u8(2.0, 128), &dq).unwrap();
        let mut y = [f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30];
        op.compute(&mut y);
        assert_eq!(y, [63.5, -64.0, 63.5, -64.0]);
    }
}
