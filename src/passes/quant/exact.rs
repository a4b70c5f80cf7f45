//! Float constants that no layer multiplies, stored in the narrowest type
//! that holds every one of their values exactly.
//!
//! quant leaves float what it must not round: a constant used as it is (a
//! detector's anchor grid and strides, added to and multiplied into its
//! boxes; see `weight_use`), a bias of a layer computing in float, a table
//! too small to quantize. Many such constants hold values a narrower type
//! represents exactly: YOLOv8's anchor centres are k + 0.5 up to 80 (exact
//! in float16), its strides 8, 16 and 32 (exact in int8). Stored so and
//! cast back to float32 once at load (runtimes fold a constant `Cast`, as
//! they do quant's other stored forms), they compute bit for bit what the
//! float constant did: YOLOv10n's 101 kB of anchors and strides take 42
//! kB. The rewrite is lossless, so it is marked exact and needs no search.

use std::collections::HashSet;

use anyhow::{Context, Result};

use super::weights::cast_to_float;
use crate::io::spill::keep_slice;
use crate::ir::{tensor, Model, NodeId};
use crate::patch::Patch;
use crate::proto::{tensor_proto::DataType, TensorProto};

/// The fewest values a constant holds to be stored narrower: below it the
/// `Cast` node and the second name take about what the narrower type saves
/// (two or three bytes a value).
pub(super) const EXACT_MIN_VALUES: usize = 128;

/// The narrow types tried, smallest first.
const NARROW: [DataType; 3] = [DataType::Int8, DataType::Uint8, DataType::Float16];

/// Whether `x` is exactly an integer within `lo..=hi`, bit for bit: -0.0
/// is not 0 (an integer type's 0 casts back to +0.0).
fn exact_integer(x: f32, lo: f32, hi: f32) -> bool {
    (lo..=hi).contains(&x) && (x as i32 as f32).to_bits() == x.to_bits()
}

/// Whether float16 holds `x` exactly, bit for bit (infinities included, a
/// NaN only where its payload survives).
fn exact_half(x: f32) -> bool {
    half::f16::from_f32(x).to_f32().to_bits() == x.to_bits()
}

/// The narrowest type of [`NARROW`] that holds every value of `data`
/// exactly, if any.
pub(super) fn narrowest_exact(data: &[f32]) -> Option<DataType> {
    let fits = |dt: DataType| match dt {
        DataType::Int8 => data.iter().all(|&x| exact_integer(x, -128.0, 127.0)),
        DataType::Uint8 => data.iter().all(|&x| exact_integer(x, 0.0, 255.0)),
        _ => data.iter().all(|&x| exact_half(x)),
    };
    NARROW.into_iter().find(|&dt| fits(dt))
}

/// `data` as a tensor of `dt` (one of [`NARROW`]), named `name`; every
/// value is exact in `dt` ([`narrowest_exact`]).
fn narrow_tensor(name: &str, dims: &[i64], data: &[f32], dt: DataType) -> TensorProto {
    if dt == DataType::Float16 {
        return tensor::from_f32_as_f16(name, dims, data);
    }
    // Exact integers of the type's range (`narrowest_exact`): each is one
    // byte, an int8's two's complement.
    let bytes: Vec<u8> = data
        .iter()
        .map(|&x| match dt {
            DataType::Int8 => (x as i8) as u8,
            _ => x as u8,
        })
        .collect();
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(dt as i32),
        raw_data: Some(keep_slice(&bytes)),
        ..Default::default()
    }
}

/// Each float32 initializer of the main graph that `patches` (the
/// quantization chosen) neither rewrites nor reads, of
/// [`EXACT_MIN_VALUES`] values or more, read only by ONNX ops that
/// `excluded` does not keep as they are, and whose values a narrower type
/// holds exactly, with that type; every reader reads it after `patches`
/// too. Initializers that are also graph inputs (a caller may feed them)
/// stay, and so do those the post-processing verification needs unchanged
/// reads (`untouchable`). Nothing is copied: the values are read in place.
pub(super) fn exactly_storable<'m>(
    model: &'m Model,
    patches: &[Patch],
    excluded: &dyn Fn(NodeId) -> bool,
) -> Result<Vec<(&'m str, DataType)>> {
    let g = &model.graph;
    // Cast-6 is the first whose `to` is a type number.
    if model.opset() < 6 {
        return Ok(vec![]);
    }
    // Names the quantization rewrites or reads itself, and the reads of
    // existing nodes it takes away (a node removed, one input rewired: a
    // float bias shared by Convs that now read int32 ones is read by none).
    let mut touched: HashSet<&str> = HashSet::new();
    let mut gone: HashSet<(NodeId, usize)> = HashSet::new();
    let mut removed: HashSet<NodeId> = HashSet::new();
    for p in patches {
        touched.extend(p.remove_initializers.iter().map(String::as_str));
        // An initializer a patch adds under an existing name replaces it.
        touched.extend(p.add_initializers.iter().map(|t| t.name()));
        for n in &p.add_nodes {
            touched.extend(n.input.iter().chain(&n.output).map(String::as_str));
        }
        touched.extend(p.shunts.iter().flat_map(|(a, b)| [a.as_str(), b.as_str()]));
        touched.extend(p.rewires.iter().map(|(_, _, v)| v.as_str()));
        gone.extend(p.rewires.iter().map(|&(id, slot, _)| (id, slot)));
        removed.extend(p.remove_nodes.iter().copied());
    }
    let tail = crate::verify::reach::untouchable(model);
    let mut out = Vec::new();
    for (name, t) in &g.initializers {
        if tensor::data_type(t) != DataType::Float
            || tensor::numel(&t.dims).unwrap_or(0) < EXACT_MIN_VALUES
            || touched.contains(name.as_str())
            || g.is_graph_input(name)
        {
            continue;
        }
        // Every reader keeps reading it, and may: a stored constant nobody
        // reads would only be removed again (and one some readers stop
        // reading is left to them).
        let readers = g.consumers(name);
        let keeps_reading = |r: NodeId| {
            !removed.contains(&r)
                && g.nodes[r]
                    .proto
                    .input
                    .iter()
                    .enumerate()
                    .all(|(slot, v)| v != name || !gone.contains(&(r, slot)))
        };
        if readers.is_empty()
            || readers.iter().any(|&r| {
                !g.nodes[r].is_onnx() || excluded(r) || tail.contains(&r) || !keeps_reading(r)
            })
        {
            continue;
        }
        let payload = model.payload(t)?;
        let data = tensor::f32_view(t, payload.as_ref())?;
        if let Some(dt) = narrowest_exact(&data.data) {
            out.push((name.as_str(), dt));
        }
    }
    Ok(out)
}

/// The patches that store each constant [`exactly_storable`] finds in its
/// narrower type, cast back to float32 under its own name.
pub(super) fn exact_storage(
    model: &Model,
    patches: &[Patch],
    excluded: &dyn Fn(NodeId) -> bool,
) -> Result<Vec<Patch>> {
    let g = &model.graph;
    let mut out = Vec::new();
    for (name, dt) in exactly_storable(model, patches, excluded)? {
        let t = g
            .constant(name)
            .context("a constant to store narrower is not a constant")?;
        let payload = model.payload(t)?;
        let data = tensor::f32_view(t, payload.as_ref())?;
        let stored = g.fresh_name(&format!("{name}_exact"));
        let mut p = Patch::new(format!(
            "constant stored exactly as {} (its values unchanged; cast back once at load)",
            dt.as_str_name().to_lowercase()
        ));
        p.remove_initializers.push(name.to_string());
        p.add_initializers
            .push(narrow_tensor(&stored, &data.dims, &data.data, dt));
        p.add_nodes.push(cast_to_float(&stored, name));
        p.anchor = g.consumers(name).first().copied();
        p.exact = true;
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_narrowest_type_that_holds_every_value() {
        // Small integers: int8, then uint8 past 127 or where none is negative
        // past int8's range.
        assert_eq!(narrowest_exact(&[-3.0, 0.0, 127.0]), Some(DataType::Int8));
        assert_eq!(narrowest_exact(&[8.0, 16.0, 32.0]), Some(DataType::Int8));
        assert_eq!(narrowest_exact(&[0.0, 128.0, 255.0]), Some(DataType::Uint8));
        // Anchor centres k + 0.5, and integers past a byte: float16.
        assert_eq!(narrowest_exact(&[0.5, 1.5, 79.5]), Some(DataType::Float16));
        assert_eq!(narrowest_exact(&[-1.0, 200.0]), Some(DataType::Float16));
        assert_eq!(narrowest_exact(&[2048.0, -256.0]), Some(DataType::Float16));
        // A mask of 0 and -inf: float16 holds the infinity.
        assert_eq!(
            narrowest_exact(&[0.0, f32::NEG_INFINITY]),
            Some(DataType::Float16)
        );
        // -0.0 is no integer's value (it would come back +0.0), but float16's.
        assert_eq!(narrowest_exact(&[-0.0, 1.0]), Some(DataType::Float16));
        // A NaN where its bits come back; not one whose payload float16
        // drops.
        assert_eq!(narrowest_exact(&[1.0, f32::NAN]), Some(DataType::Float16));
        assert_eq!(narrowest_exact(&[f32::from_bits(0x7fc0_0001)]), None);
        // Values float16 rounds, and float32's extremes: none.
        assert_eq!(narrowest_exact(&[2049.0]), None);
        assert_eq!(narrowest_exact(&[0.1]), None);
        assert_eq!(narrowest_exact(&[f32::MIN]), None);
        assert_eq!(narrowest_exact(&[1e-8]), None);
    }

    #[test]
    fn narrow_tensors_hold_the_values_bit_for_bit() {
        for (data, dt) in [
            (vec![-128.0f32, -1.0, 0.0, 127.0], DataType::Int8),
            (vec![0.0f32, 8.0, 200.0, 255.0], DataType::Uint8),
            (
                vec![0.5f32, -0.0, 79.5, f32::NEG_INFINITY, 6.1035156e-5],
                DataType::Float16,
            ),
        ] {
            assert_eq!(narrowest_exact(&data), Some(dt));
            let t = narrow_tensor("c", &[data.len() as i64], &data, dt);
            assert_eq!(tensor::data_type(&t), dt);
            let back: Vec<f32> = match dt {
                DataType::Float16 => {
                    tensor::to_f32(&t, t.raw_data.as_ref())
                        .expect("float16 tensor")
                        .data
                }
                DataType::Int8 => t
                    .raw_data
                    .as_ref()
                    .expect("raw data")
                    .iter()
                    .map(|&b| b as i8 as f32)
                    .collect(),
                _ => t
                    .raw_data
                    .as_ref()
                    .expect("raw data")
                    .iter()
                    .map(|&b| b as f32)
                    .collect(),
            };
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&back), bits(&data), "{dt:?}");
        }
    }
}
