//! The verification copy: what tract cannot load, lowered to plain float math
//! with exactly the ONNX spec's semantics.
//!
//! * external tensors are brought inline;
//! * sparse initializers become dense initializers;
//! * `DequantizeLinear` of constant inputs (per-tensor, per-axis and blocked,
//!   8/16/32-bit and packed 4-bit) becomes a float initializer:
//!   `y = (x - zero_point) * scale`, where per-axis scale/zero point index
//!   the `axis` dimension and blocked ones index `i[axis] / block_size`.
//!
//! This is our code, so it is tested against onnxruntime, not only ourselves.

use anyhow::{bail, ensure, Context, Result};

use crate::ir::{tensor, Model};
use crate::patch::Patch;
use crate::proto::{tensor_proto::DataType, TensorProto};

/// Lower `model` in place for tract. Returns a note per kind of lowering done.
pub fn lower(model: &mut Model) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    // External data inline.
    let ext: Vec<String> = model
        .graph
        .initializers
        .iter()
        .filter(|(_, t)| tensor::is_external(t))
        .map(|(n, _)| n.clone())
        .collect();
    for name in &ext {
        let payload = {
            let t = &model.graph.initializers[name];
            model.payload(t)?
        };
        let t = model
            .graph
            .initializers
            .get_mut(name)
            .expect("listed above");
        t.raw_data = payload;
        t.data_location = None;
        t.external_data.clear();
    }
    // Sparse initializers densified.
    let sparse = std::mem::take(&mut model.graph.rest.sparse_initializer);
    if !sparse.is_empty() {
        notes.push(format!("{} sparse initializer(s) densified", sparse.len()));
    }
    for s in sparse {
        let dense = densify(&s, model).context("cannot densify a sparse initializer")?;
        model
            .graph
            .initializers
            .insert(dense.name().to_string(), dense);
    }
    model.graph.reindex();
    // Constant DequantizeLinear folded to float.
    let mut folded = 0;
    let ids: Vec<_> = model.graph.nodes.node_indices().collect();
    for id in ids {
        let n = &model.graph.nodes[id];
        if n.op() != "DequantizeLinear" || !n.is_onnx() {
            continue;
        }
        let consts: Option<Vec<&TensorProto>> = n
            .proto
            .input
            .iter()
            .filter(|i| !i.is_empty())
            .map(|i| model.graph.constant(i))
            .collect();
        let Some(consts) = consts else { continue };
        let axis = n
            .proto
            .attribute
            .iter()
            .find(|a| a.name() == "axis")
            .map_or(1, |a| a.i());
        let block = n
            .proto
            .attribute
            .iter()
            .find(|a| a.name() == "block_size")
            .map_or(0, |a| a.i());
        let out = n.proto.output[0].clone();
        let resolved: Vec<(TensorProto, Option<bytes::Bytes>)> = consts
            .iter()
            .map(|t| Ok(((*t).clone(), model.payload(t)?)))
            .collect::<Result<_>>()?;
        let refs: Vec<(&TensorProto, Option<&bytes::Bytes>)> =
            resolved.iter().map(|(t, b)| (t, b.as_ref())).collect();
        let value = dequantize(&refs, axis, block)
            .with_context(|| format!("cannot lower DequantizeLinear '{}'", n.label()))?;
        let mut p = Patch::new("constant DequantizeLinear lowered to float");
        p.remove_nodes.push(id);
        p.add_initializers
            .push(tensor::from_f32(&out, &value.dims, &value.data));
        model.apply(&p)?;
        folded += 1;
    }
    if folded > 0 {
        // The quantized tensors are no longer read; tract may not even load their types.
        let read: std::collections::HashSet<String> = model
            .graph
            .nodes
            .node_weights()
            .flat_map(|n| {
                let (d, i) = crate::ir::reads(&n.proto);
                d.into_iter().chain(i)
            })
            .collect();
        let g = &mut model.graph;
        let unused: Vec<String> = g
            .initializers
            .keys()
            .filter(|k| {
                !read.contains(*k)
                    && !g.rest.output.iter().any(|o| o.name() == k.as_str())
                    && !g.rest.input.iter().any(|i| i.name() == k.as_str())
            })
            .cloned()
            .collect();
        for k in unused {
            g.initializers.shift_remove(&k);
        }
        g.reindex();
        notes.push(format!(
            "{folded} constant DequantizeLinear node(s) lowered to float initializers"
        ));
    }
    Ok(notes)
}

/// Integer values of a quantized tensor (4-bit types unpacked, low nibble first).
pub fn quantized_values(t: &TensorProto, raw: Option<&bytes::Bytes>) -> Result<Vec<i64>> {
    let dt = tensor::data_type(t);
    let n = tensor::numel(&t.dims)?;
    match dt {
        DataType::Int4 | DataType::Uint4 => {
            let bytes: Vec<u8> = match raw {
                Some(r) => r.to_vec(),
                None => t.int32_data.iter().map(|&v| v as u8).collect(),
            };
            ensure!(
                bytes.len() == n.div_ceil(2),
                "packed 4-bit data holds {} bytes, {n} values need {}",
                bytes.len(),
                n.div_ceil(2)
            );
            Ok((0..n)
                .map(|i| {
                    let nib = (bytes[i / 2] >> ((i % 2) * 4)) & 0x0f;
                    if dt == DataType::Int4 {
                        ((nib << 4) as i8 >> 4) as i64
                    } else {
                        nib as i64
                    }
                })
                .collect())
        }
        _ => tensor::to_i64(t, raw),
    }
}

/// `DequantizeLinear(x, scale, zero_point)` on constants, per the ONNX spec.
pub fn dequantize(
    inputs: &[(&TensorProto, Option<&bytes::Bytes>)],
    axis: i64,
    block_size: i64,
) -> Result<tensor::F32Tensor> {
    ensure!(inputs.len() >= 2, "DequantizeLinear needs x and scale");
    let (x, xr) = inputs[0];
    let (s, sr) = inputs[1];
    if tensor::data_type(s) != DataType::Float {
        bail!(
            "only float32 scales are lowered (got {:?})",
            tensor::data_type(s)
        );
    }
    let xv = quantized_values(x, xr)?;
    let scale = tensor::to_f32(s, sr)?;
    let zp: Option<Vec<i64>> = inputs
        .get(2)
        .map(|(z, zr)| quantized_values(z, *zr))
        .transpose()?;
    let rank = x.dims.len() as i64;
    let n = xv.len();
    let mut out = vec![0f32; n];
    if scale.data.len() == 1 && scale.dims.len() <= 1 && block_size == 0 {
        let z = zp.as_ref().map_or(0, |z| z[0]);
        for (o, &q) in out.iter_mut().zip(&xv) {
            *o = (q - z) as f32 * scale.data[0];
        }
    } else {
        let axis = if axis < 0 { axis + rank } else { axis };
        ensure!(
            (0..rank).contains(&axis),
            "axis {axis} out of range for rank {rank}"
        );
        let a = axis as usize;
        let dims: Vec<usize> = x.dims.iter().map(|&d| d as usize).collect();
        let inner: usize = dims[a + 1..].iter().product();
        let len_a = dims[a];
        if block_size == 0 {
            ensure!(
                scale.data.len() == len_a,
                "per-axis scale has {} values, axis {a} has {len_a}",
                scale.data.len()
            );
            for (i, (o, &q)) in out.iter_mut().zip(&xv).enumerate() {
                let c = (i / inner) % len_a;
                let z = zp.as_ref().map_or(0, |z| z[c]);
                *o = (q - z) as f32 * scale.data[c];
            }
        } else {
            ensure!(block_size > 0, "block_size must be positive");
            let bs = block_size as usize;
            let blocks = len_a.div_ceil(bs);
            ensure!(
                scale.dims.len() == dims.len() && scale.dims[a] as usize == blocks,
                "blocked scale dims {:?} do not match x dims {:?} with block_size {bs} on axis {a}",
                scale.dims,
                dims
            );
            // Scale has x's shape with dims[a] replaced by `blocks`.
            for (i, (o, &q)) in out.iter_mut().zip(&xv).enumerate() {
                let outer = i / (inner * len_a);
                let c = (i / inner) % len_a;
                let r = i % inner;
                let si = (outer * blocks + c / bs) * inner + r;
                let z = zp.as_ref().map_or(0, |z| z[si]);
                *o = (q - z) as f32 * scale.data[si];
            }
        }
    }
    Ok(tensor::F32Tensor {
        dims: x.dims.clone(),
        data: out,
    })
}

fn densify(s: &crate::proto::SparseTensorProto, model: &Model) -> Result<TensorProto> {
    let values = s.values.as_ref().context("sparse tensor without values")?;
    let indices = s
        .indices
        .as_ref()
        .context("sparse tensor without indices")?;
    let vraw = model.payload(values)?;
    let iraw = model.payload(indices)?;
    let vals = tensor::to_f32(values, vraw.as_ref())
        .context("only float sparse initializers are densified")?;
    let idx = tensor::to_i64(indices, iraw.as_ref())?;
    let n = tensor::numel(&s.dims)?;
    let nnz = vals.data.len();
    let mut dense = vec![0f32; n];
    let rank = s.dims.len();
    for k in 0..nnz {
        let lin = if indices.dims.len() == 2 {
            // [NNZ, rank] coordinates.
            let mut lin = 0usize;
            for (d, &size) in s.dims.iter().enumerate() {
                lin = lin * size as usize + idx[k * rank + d] as usize;
            }
            lin
        } else {
            idx[k] as usize
        };
        ensure!(lin < n, "sparse index {lin} out of range {n}");
        dense[lin] = vals.data[k];
    }
    Ok(tensor::from_f32(values.name(), &s.dims, &dense))
}
