//! Reading and writing tensor payloads of `TensorProto`.
//!
//! Weight bytes are `bytes::Bytes` slices of the memory-mapped model (or of an
//! external data file): reading a tensor shares them, and only a pass that
//! changes a tensor allocates a new buffer for it.

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;

use crate::proto::{tensor_proto::DataType, TensorProto};

/// Element type of a tensor, as the ONNX `TensorProto.DataType` code.
pub fn data_type(t: &TensorProto) -> DataType {
    DataType::try_from(t.data_type.unwrap_or(0)).unwrap_or(DataType::Undefined)
}

/// Size in bits of one element of `dt`, or `None` for strings and undefined.
pub fn element_bits(dt: DataType) -> Option<usize> {
    use DataType::*;
    Some(match dt {
        Float | Int32 | Uint32 => 32,
        Double | Int64 | Uint64 | Complex64 => 64,
        Complex128 => 128,
        Float16 | Bfloat16 | Int16 | Uint16 => 16,
        Int8 | Uint8 | Bool | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz
        | Float8e8m0 => 8,
        Int4 | Uint4 | Float4e2m1 => 4,
        Float6e2m3 | Float6e3m2 => 6,
        Int2 | Uint2 => 2,
        String | Undefined => return None,
    })
}

/// Number of elements given by `dims` (1 for a scalar).
pub fn numel(dims: &[i64]) -> Result<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        ensure!(d >= 0, "negative dimension {d}");
        acc.checked_mul(d as usize)
            .context("tensor element count overflows")
    })
}

/// Whether the tensor's payload lives in an external file.
pub fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(crate::proto::tensor_proto::DataLocation::External as i32)
}

/// Value of one `external_data` key of a tensor.
pub fn external_entry<'a>(t: &'a TensorProto, key: &str) -> Option<&'a str> {
    t.external_data
        .iter()
        .find(|e| e.key.as_deref() == Some(key))
        .and_then(|e| e.value.as_deref())
}

/// Payload size in bytes as stored (raw data, typed fields or external
/// length; an external tensor without a `length` entry, which ONNX allows,
/// holds what its type and dims need).
pub fn stored_bytes(t: &TensorProto) -> u64 {
    if is_external(t) {
        return external_entry(t, "length")
            .and_then(|l| l.parse().ok())
            .or_else(|| dense_bytes(t))
            .unwrap_or(0);
    }
    if let Some(raw) = &t.raw_data {
        return raw.len() as u64;
    }
    (t.float_data.len() as u64 * 4)
        .saturating_add(t.int32_data.len() as u64 * 4)
        .saturating_add(t.int64_data.len() as u64 * 8)
        .saturating_add(t.double_data.len() as u64 * 8)
        .saturating_add(t.uint64_data.len() as u64 * 8)
        .saturating_add(
            t.string_data
                .iter()
                .map(|s| s.len() as u64)
                .fold(0, u64::saturating_add),
        )
}

/// A dense tensor decoded to `f32`, with its dims.
#[derive(Debug, Clone, PartialEq)]
pub struct F32Tensor {
    pub dims: Vec<i64>,
    pub data: Vec<f32>,
}

/// A float32 tensor's values, borrowed from its payload where the bytes can
/// be read in place (aligned little-endian raw data, e.g. a memory-mapped
/// weight), copied otherwise.
#[derive(Debug, Clone)]
pub struct F32View<'a> {
    pub dims: Vec<i64>,
    pub data: std::borrow::Cow<'a, [f32]>,
}

/// View a float tensor's values without copying where possible.
pub fn f32_view<'a>(t: &TensorProto, raw: Option<&'a Bytes>) -> Result<F32View<'a>> {
    if let (DataType::Float, Some(raw), true) = (data_type(t), raw, cfg!(target_endian = "little"))
    {
        let n = numel(&t.dims)?;
        // SAFETY: every bit pattern is a valid f32; `align_to` only yields
        // the aligned middle, and we use it only when it is the whole slice.
        let (pre, mid, post) = unsafe { raw.align_to::<f32>() };
        if pre.is_empty() && post.is_empty() && mid.len() == n {
            return Ok(F32View {
                dims: t.dims.clone(),
                data: std::borrow::Cow::Borrowed(mid),
            });
        }
    }
    let owned = to_f32(t, raw)?;
    Ok(F32View {
        dims: owned.dims,
        data: std::borrow::Cow::Owned(owned.data),
    })
}

/// Decode a float tensor whose payload is `raw` (already resolved for external data)
/// or the typed `float_data` field.
pub fn to_f32(t: &TensorProto, raw: Option<&Bytes>) -> Result<F32Tensor> {
    let n = numel(&t.dims)?;
    let dt = data_type(t);
    let data: Vec<f32> = match (dt, raw) {
        (DataType::Float, Some(raw)) => {
            ensure!(
                raw.len() == n * 4,
                "raw data holds {} bytes, expected {}",
                raw.len(),
                n * 4
            );
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
        (DataType::Float, None) => t.float_data.clone(),
        (DataType::Double, Some(raw)) => {
            ensure!(
                raw.len() == n * 8,
                "raw data holds {} bytes, expected {}",
                raw.len(),
                n * 8
            );
            raw.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")) as f32)
                .collect()
        }
        (DataType::Double, None) => t.double_data.iter().map(|&v| v as f32).collect(),
        (DataType::Float16, Some(raw)) => {
            ensure!(
                raw.len() == n * 2,
                "raw data holds {} bytes, expected {}",
                raw.len(),
                n * 2
            );
            let mut data = Vec::with_capacity(n);
            f16_to_f32_into(
                raw.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]])),
                &mut data,
            );
            data
        }
        (DataType::Float16, None) => {
            let mut data = Vec::with_capacity(n);
            f16_to_f32_into(
                t.int32_data.iter().map(|&v| half::f16::from_bits(v as u16)),
                &mut data,
            );
            data
        }
        (other, _) => bail!("tensor of type {other:?} cannot be read as float"),
    };
    ensure!(
        data.len() == n,
        "tensor '{}' holds {} values, dims {:?} need {n}",
        t.name(),
        data.len(),
        t.dims
    );
    Ok(F32Tensor {
        dims: t.dims.clone(),
        data,
    })
}

/// float16 values converted to float32 (exactly) and appended to `out`, a
/// block at a time: the slice conversion runs 8 values per instruction
/// where the CPU has F16C, where one value at a time took about 100 ns each
/// on a CPU with AVX-512 (silero-vad's `sensitive=auto` spent two thirds of
/// its time converting float16 scales so).
pub fn f16_to_f32_into(values: impl IntoIterator<Item = half::f16>, out: &mut Vec<f32>) {
    use half::slice::HalfFloatSliceExt;
    const BLOCK: usize = 256;
    let (mut h, mut f) = ([half::f16::ZERO; BLOCK], [0f32; BLOCK]);
    let mut values = values.into_iter().peekable();
    while values.peek().is_some() {
        let mut k = 0;
        for (slot, v) in h.iter_mut().zip(values.by_ref()) {
            *slot = v;
            k += 1;
        }
        h[..k].convert_to_f32_slice(&mut f[..k]);
        out.extend_from_slice(&f[..k]);
    }
}

/// Read an integer tensor (any int type, little-endian raw data or typed fields) as i64.
pub fn to_i64(t: &TensorProto, raw: Option<&Bytes>) -> Result<Vec<i64>> {
    let n = numel(&t.dims)?;
    let dt = data_type(t);
    let v: Vec<i64> = match raw {
        Some(raw) => {
            let width = element_bits(dt).context("not a numeric tensor")? / 8;
            ensure!(
                width > 0 && raw.len() == n * width,
                "raw data size does not match dims"
            );
            // Bytes need no per-element dispatch (quantized weights: millions).
            match dt {
                DataType::Int8 => return Ok(raw.iter().map(|&b| b as i8 as i64).collect()),
                DataType::Uint8 => return Ok(raw.iter().map(|&b| b as i64).collect()),
                _ => {}
            }
            raw.chunks_exact(width)
                .map(|c| match dt {
                    DataType::Int64 => Ok(i64::from_le_bytes(c.try_into()?)),
                    DataType::Int32 => Ok(i32::from_le_bytes(c.try_into()?) as i64),
                    DataType::Int16 => Ok(i16::from_le_bytes(c.try_into()?) as i64),
                    DataType::Int8 => Ok(c[0] as i8 as i64),
                    DataType::Uint8 | DataType::Bool => Ok(c[0] as i64),
                    DataType::Uint16 => Ok(u16::from_le_bytes(c.try_into()?) as i64),
                    DataType::Uint32 => Ok(u32::from_le_bytes(c.try_into()?) as i64),
                    DataType::Uint64 => Ok(u64::from_le_bytes(c.try_into()?) as i64),
                    other => bail!("tensor of type {other:?} is not an integer tensor"),
                })
                .collect::<Result<_>>()?
        }
        None => match dt {
            DataType::Int64 => t.int64_data.clone(),
            DataType::Uint64 => t.uint64_data.iter().map(|&v| v as i64).collect(),
            DataType::Int32
            | DataType::Int16
            | DataType::Int8
            | DataType::Uint8
            | DataType::Uint16
            | DataType::Bool => t.int32_data.iter().map(|&v| v as i64).collect(),
            other => bail!("tensor of type {other:?} is not an integer tensor"),
        },
    };
    ensure!(
        v.len() == n,
        "tensor holds {} values, dims need {n}",
        v.len()
    );
    Ok(v)
}

/// A float32 `TensorProto` with little-endian `raw_data`.
pub fn from_f32(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    let mut raw = Vec::with_capacity(data.len() * 4);
    extend_f32(&mut raw, data);
    from_f32_raw(name, dims, raw)
}

/// `values` appended to `raw` as little-endian float32, a slice at a time
/// (value by value, each append checks the room left).
pub fn extend_f32(raw: &mut Vec<u8>, values: &[f32]) {
    let at = raw.len();
    raw.resize(at + 4 * values.len(), 0);
    for (d, v) in raw[at..].chunks_exact_mut(4).zip(values) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

/// A float32 `TensorProto` whose `raw_data` is `raw`, little-endian
/// ([`extend_f32`]).
pub fn from_f32_raw(name: &str, dims: &[i64], raw: Vec<u8>) -> TensorProto {
    raw_proto(name, dims, DataType::Float, raw)
}

/// A `TensorProto` of type `dt` whose `raw_data` is `raw`.
fn raw_proto(name: &str, dims: &[i64], dt: DataType, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: dims.to_vec(),
        data_type: Some(dt as i32),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}

/// A float32 `TensorProto` of `values` (as many as `dims` holds), written
/// straight into its `raw_data`: computed values need no float copy besides.
pub fn from_f32_iter(
    name: &str,
    dims: &[i64],
    values: impl IntoIterator<Item = f32>,
) -> TensorProto {
    let n = numel(dims).unwrap_or(0);
    let mut raw = Vec::with_capacity(n * 4);
    for v in values {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    from_f32_raw(name, dims, raw)
}

/// An int64 vector `TensorProto` (`int64_data`), as shapes, axes and
/// Constant values are written.
pub fn from_i64(name: &str, data: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: vec![data.len() as i64],
        data_type: Some(DataType::Int64 as i32),
        int64_data: data.to_vec(),
        ..Default::default()
    }
}

/// An int32 or int64 scalar `TensorProto` (`int32_data` / `int64_data`).
pub fn int_scalar(name: &str, dt: DataType, v: i64) -> TensorProto {
    let mut t = TensorProto {
        name: Some(name.to_string()),
        data_type: Some(dt as i32),
        ..Default::default()
    };
    match dt {
        DataType::Int64 => t.int64_data = vec![v],
        _ => t.int32_data = vec![v as i32],
    }
    t
}

/// A float16 `TensorProto` with little-endian `raw_data`.
pub fn from_f16(
    name: &str,
    dims: &[i64],
    data: impl IntoIterator<Item = half::f16>,
) -> TensorProto {
    raw_proto(
        name,
        dims,
        DataType::Float16,
        data.into_iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

/// A float16 `TensorProto` of float32 `values`, each rounded to the
/// nearest float16 (ties to even, as `half::f16::from_f32`), converted a
/// block at a time (see [`f16_to_f32_into`]).
pub fn from_f32_as_f16(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    use half::slice::HalfFloatSliceExt;
    let mut raw = Vec::with_capacity(values.len() * 2);
    let mut h = [half::f16::ZERO; 256];
    for block in values.chunks(256) {
        let h = &mut h[..block.len()];
        h.convert_from_f32_slice(block);
        raw.extend(h.iter().flat_map(|v| v.to_le_bytes()));
    }
    raw_proto(name, dims, DataType::Float16, raw)
}

/// Bytes a dense payload of `t`'s type and dims takes (`None` for strings
/// and unknown types, or dims that overflow).
pub fn dense_bytes(t: &TensorProto) -> Option<u64> {
    let n = numel(&t.dims).ok()? as u128;
    let bits = element_bits(data_type(t))? as u128;
    u64::try_from((n * bits).div_ceil(8)).ok()
}

/// Check that a tensor's stored payload has the size its type and dims need
/// (external payloads: the declared length, and that it fits in `file_len`
/// when known). Catches truncated and malformed models at load time.
pub fn check_payload(t: &TensorProto, file_len: Option<u64>) -> Result<()> {
    let name = t.name();
    let n = numel(&t.dims).with_context(|| format!("tensor '{name}' has bad dims {:?}", t.dims))?
        as u64;
    let dt = data_type(t);
    let Some(bits) = element_bits(dt) else {
        return Ok(());
    };
    let need = dense_bytes(t).unwrap_or(u64::MAX);
    if is_external(t) {
        let offset: u64 = match external_entry(t, "offset") {
            Some(v) => v
                .parse()
                .with_context(|| format!("external tensor '{name}': bad offset {v:?}"))?,
            None => 0,
        };
        let length: u64 = match external_entry(t, "length") {
            Some(v) => v
                .parse()
                .with_context(|| format!("external tensor '{name}': bad length {v:?}"))?,
            None => need,
        };
        ensure!(length == need, "external tensor '{name}' declares {length} bytes, its dims {:?} of type {dt:?} need {need}", t.dims);
        if let Some(f) = file_len {
            ensure!(
                offset.checked_add(length).is_some_and(|e| e <= f),
                "external tensor '{name}' reads bytes {offset}..{} of a {f}-byte file",
                offset.saturating_add(length)
            );
        }
        return Ok(());
    }
    let have = match &t.raw_data {
        Some(r) => r.len() as u64,
        None => {
            let count = match dt {
                DataType::Float | DataType::Complex64 => t.float_data.len(),
                DataType::Double | DataType::Complex128 => t.double_data.len(),
                DataType::Int64 => t.int64_data.len(),
                DataType::Uint64 | DataType::Uint32 => t.uint64_data.len(),
                _ => t.int32_data.len(),
            } as u64;
            // Typed fields hold one value per element (two for complex);
            // 4-bit and 2-bit types pack into int32_data like bytes.
            let per = match dt {
                DataType::Complex64 | DataType::Complex128 => 2,
                _ => 1,
            };
            let expect = if bits < 8 {
                need
            } else {
                n.saturating_mul(per)
            };
            ensure!(
                count == expect || (n == 0 && count == 0),
                "tensor '{name}' holds {count} values, its dims {:?} need {expect}",
                t.dims
            );
            return Ok(());
        }
    };
    ensure!(
        have == need,
        "tensor '{name}' holds {have} bytes, its dims {:?} of type {dt:?} need {need}",
        t.dims
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float16_converts_exactly_across_blocks() {
        // Every bit pattern once, and then some: several blocks and a
        // partial one; subnormals, infinities, signed zeros and NaNs among
        // them.
        let bits: Vec<u16> = (0..=u16::MAX).chain(0..300).collect();
        let mut out = Vec::new();
        f16_to_f32_into(bits.iter().map(|&b| half::f16::from_bits(b)), &mut out);
        assert_eq!(out.len(), bits.len());
        for (&b, &f) in bits.iter().zip(&out) {
            let h = half::f16::from_bits(b);
            if h.is_nan() {
                assert!(f.is_nan(), "{b:#06x}");
            } else {
                assert_eq!(f.to_bits(), f32::from(h).to_bits(), "{b:#06x}");
            }
        }
        assert_eq!(out[0x3c00], 1.0);
        assert_eq!(out[0x0001], 2f32.powi(-24)); // the smallest subnormal
        assert_eq!(out[0xfc00], f32::NEG_INFINITY);
        // A raw float16 tensor reads the same way.
        let raw: Vec<u8> = [0x3c00u16, 0xc000, 0x7bff]
            .iter()
            .flat_map(|b| b.to_le_bytes())
            .collect();
        let t = TensorProto {
            dims: vec![3],
            data_type: Some(DataType::Float16 as i32),
            raw_data: Some(Bytes::from(raw)),
            ..Default::default()
        };
        assert_eq!(
            to_f32(&t, t.raw_data.as_ref()).unwrap().data,
            [1.0, -2.0, 65504.0]
        );
        // And back: rounded to nearest, ties to even, as one at a time.
        let values: Vec<f32> = (0..70_000u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)))
            .chain([1.0 + 2f32.powi(-11), 65520.0, 1e-8, f32::NAN])
            .collect();
        let t = from_f32_as_f16("h", &[values.len() as i64], &values);
        let back = t.raw_data.as_ref().unwrap();
        for (v, c) in values.iter().zip(back.chunks_exact(2)) {
            let (got, want) = (u16::from_le_bytes([c[0], c[1]]), half::f16::from_f32(*v));
            assert!(
                got == want.to_bits() || (want.is_nan() && half::f16::from_bits(got).is_nan()),
                "{v:e}: {got:#06x} vs {:#06x}",
                want.to_bits()
            );
        }
        // A tie rounds to even (1.0), 65520 overflows to infinity, 1e-8
        // underflows to 0.
        let n = values.len();
        assert_eq!(
            &back[2 * (n - 4)..2 * (n - 1)],
            [0x00, 0x3c, 0x00, 0x7c, 0x00, 0x00]
        );
    }

    #[test]
    fn f32_view_borrows_aligned_payloads_and_copies_others() {
        let t = from_f32("w", &[3], &[1.0, -2.5, 3.25]);
        let raw = t.raw_data.clone().unwrap();
        let v = f32_view(&t, Some(&raw)).unwrap();
        assert_eq!(&*v.data, &[1.0, -2.5, 3.25]);
        if (raw.as_ptr() as usize).is_multiple_of(4) {
            assert!(
                matches!(v.data, std::borrow::Cow::Borrowed(_)),
                "aligned bytes are read in place"
            );
        }
        // The same values one byte off alignment: copied, still equal.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&raw);
        let off = Bytes::from(shifted).slice(1..);
        let v = f32_view(&t, Some(&off)).unwrap();
        assert_eq!(&*v.data, &[1.0, -2.5, 3.25]);
        // Typed float_data has no raw bytes: copied.
        let typed = TensorProto {
            raw_data: None,
            float_data: vec![4.0, 5.0, 6.0],
            ..t
        };
        assert_eq!(&*f32_view(&typed, None).unwrap().data, &[4.0, 5.0, 6.0]);
    }

    #[test]
    fn external_tensors_count_their_length_or_what_their_dims_need() {
        use crate::proto::{tensor_proto::DataLocation, StringStringEntryProto};
        let entry = |k: &str, v: &str| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v.into()),
        };
        let mut t = TensorProto {
            name: Some("w".into()),
            dims: vec![3, 5],
            data_type: Some(DataType::Float as i32),
            data_location: Some(DataLocation::External as i32),
            external_data: vec![entry("location", "w.bin")],
            ..Default::default()
        };
        assert_eq!(stored_bytes(&t), 60, "no length entry: 15 floats");
        t.data_type = Some(DataType::Uint4 as i32);
        assert_eq!(stored_bytes(&t), 8, "15 nibbles");
        t.external_data.push(entry("length", "8"));
        assert_eq!(stored_bytes(&t), 8);
    }
}
