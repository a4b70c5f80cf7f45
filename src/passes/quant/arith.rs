//! Quantization arithmetic, exactly as ONNX QuantizeLinear/DequantizeLinear
//! define it: `q = saturate(round_half_even(x / scale) + zero_point)`,
//! `x' = (q - zero_point) * scale`.
//!
//! Weights: signed, symmetric (zero point 0), per channel or per block, with
//! the range `[-(2^(b-1) - 1), 2^(b-1) - 1]` (-127..127 for int8, -7..7 for
//! int4) so that negating a weight never saturates, or the reduced int8
//! range -64..64 ([`INT8_QMAX_REDUCED`]) for integer kernels that would
//! saturate. Activations: unsigned 8-bit, asymmetric, with 0 exactly
//! representable.

use rayon::prelude::*;

/// Round half to even, as `std::nearbyint` in the default rounding mode (what
/// onnxruntime's QuantizeLinear does).
pub fn round_half_even(x: f32) -> f32 {
    x.round_ties_even()
}

/// `saturate(round(x / scale) + zp)` into `[qmin, qmax]`.
pub fn quantize(x: f32, scale: f32, zp: i32, qmin: i32, qmax: i32) -> i32 {
    let v = round_half_even(x / scale) as i64 + zp as i64;
    v.clamp(qmin as i64, qmax as i64) as i32
}

/// `saturate(round(x / scale))` into `[-qmax, qmax]` for symmetric weights,
/// the same result as [`quantize`] but branch-free and without a libm call,
/// so the loops over multi-GB weights vectorise: after clamping, adding and
/// subtracting 1.5 * 2^23 rounds half to even in IEEE arithmetic.
#[inline]
fn quantize_symmetric(x: f32, scale: f32, qmax: f32) -> i8 {
    const MAGIC: f32 = 12_582_912.0;
    let v = (x / scale).clamp(-qmax, qmax);
    ((v + MAGIC) - MAGIC) as i8
}

/// `saturate(round(x / scale) + zp)` into `[0, qmax]` (`qmax` at most 127),
/// branch-free like [`quantize_symmetric`]: with integer bounds, clamping
/// `x / scale` to `[-zp, qmax - zp]` before rounding saturates the same.
/// NaN becomes `zp` (0 once dequantized, as in the symmetric schemes, where
/// the cast turns it into 0), not the low bound.
#[inline]
fn quantize_offset(x: f32, scale: f32, zp: f32, qmax: f32) -> i8 {
    const MAGIC: f32 = 12_582_912.0;
    let v = x / scale;
    let v = if v.is_nan() { 0.0 } else { v }.clamp(-zp, qmax - zp);
    (((v + MAGIC) - MAGIC) + zp) as i8
}

/// Quantize `w`, laid out `[outer, channels, inner]`, with one scale per
/// channel. Read in runs of whole channels (of whole rows where `outer` >
/// 1), each let go once read where `w` is the model file's
/// ([`crate::io::read_once`]).
fn quantize_rows(
    w: &[f32],
    outer: usize,
    channels: usize,
    inner: usize,
    scales: &[f32],
    qmax: i32,
) -> Vec<i8> {
    let inner = inner.max(1);
    let row = (channels * inner).max(1);
    let mut q = vec![0i8; w.len()];
    let channel = |qb: &mut [i8], wb: &[f32], s: f32| {
        for (o, &v) in qb.iter_mut().zip(wb) {
            *o = quantize_symmetric(v, s, qmax as f32);
        }
    };
    if outer == 1 {
        crate::io::read_once(w, inner, |at, run| {
            q[at..at + run.len()]
                .par_chunks_mut(inner)
                .zip(run.par_chunks(inner))
                .zip(scales[at / inner..].par_iter())
                .for_each(|((qb, wb), &s)| channel(qb, wb, s));
        });
        return q;
    }
    crate::io::read_once(w, row, |at, run| {
        q[at..at + run.len()]
            .par_chunks_mut(row)
            .zip(run.par_chunks(row))
            .for_each(|(qr, wr)| {
                if inner == 1 {
                    for ((o, &v), &s) in qr.iter_mut().zip(wr).zip(scales) {
                        *o = quantize_symmetric(v, s, qmax as f32);
                    }
                    return;
                }
                for ((qb, wb), &s) in qr.chunks_mut(inner).zip(wr.chunks(inner)).zip(scales) {
                    channel(qb, wb, s);
                }
            });
    });
    q
}

/// How the blocks of a block-scaled weight lie in its `[outer, channels,
/// inner]` view: `Inner`, runs of `block` consecutive elements (along the
/// inner axis, which `block` divides); `Outer` (inner 1), `block`
/// consecutive rows of one column (along the outer axis, which `block`
/// divides). Either way the values keep their order in memory, and the
/// scales lie as `[outer, channels, inner / block, 1]` or `[outer / block,
/// 1, channels]` would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocks {
    Inner { block: usize },
    Outer { block: usize, channels: usize },
}

impl Blocks {
    /// The block element `e` (in memory order) belongs to.
    fn of(self, e: usize) -> usize {
        match self {
            Blocks::Inner { block } => e / block,
            Blocks::Outer { block, channels } => (e / (block * channels)) * channels + e % channels,
        }
    }
}

/// Symmetric scales, one per block (largest magnitude / `qmax`; 0 for a
/// block of zeros or NaNs).
pub fn block_scales(w: &[f32], blocks: Blocks, qmax: i32) -> Vec<f32> {
    let n = match blocks {
        Blocks::Inner { block } => w.len().div_ceil(block.max(1)),
        Blocks::Outer { block, channels } => w.len().div_ceil((block * channels).max(1)) * channels,
    };
    let mut absmax = vec![0f32; n];
    for (e, &v) in w.iter().enumerate() {
        let m = &mut absmax[blocks.of(e)];
        *m = m.max(v.abs());
    }
    absmax.iter().map(|&m| m / qmax as f32).collect()
}

/// `w` quantized block by block with `scales` (as [`block_scales`] lays
/// them out), rounding half to even and saturating at `qmax`.
pub fn quantize_blocks(w: &[f32], blocks: Blocks, scales: &[f32], qmax: i32) -> Vec<i8> {
    w.iter()
        .enumerate()
        .map(|(e, &v)| match scales[blocks.of(e)] {
            s if s > 0.0 => quantize_symmetric(v, s, qmax as f32),
            _ => 0,
        })
        .collect()
}

/// The largest magnitude of symmetric int8 weights: -127..127.
pub const INT8_QMAX: i32 = 127;

/// The largest magnitude of symmetric int8 weights that integer kernels
/// without VNNI compute exactly: x86 CPUs with AVX2 but no VNNI multiply
/// uint8 activations by int8 weights with `vpmaddubsw`, which adds each
/// pair of products in 16 bits and saturates at 32767 (onnxruntime's u8 x s8
/// kernels; OpenVINO's too). With weights in -64..64 a pair reaches at most
/// 255 x 128 = 32640; with -127..127 it can reach 64770, and a saturated
/// sum is a wrong result, not a rounded one (PP-OCRv6's tiny detector: cosine
/// 0.24 in onnxruntime on such a CPU, 0.99 with the model's own semantics).
/// onnxruntime's `reduce_range` is the same range.
pub const INT8_QMAX_REDUCED: i32 = 64;

/// The largest sum of two products a 16-bit accumulator holds.
const PAIR_MAX: i64 = i16::MAX as i64;

/// The error 16-bit saturation adds to a pair of products `c1 m1 + c2 m2`
/// that a u8 x s8 kernel without VNNI sums ([`INT8_QMAX_REDUCED`]), for each
/// pair of weight magnitudes `(m1, m2)` of one sign (of opposite signs, two
/// products cannot leave 16 bits: 255 x 127 = 32385): the mean and the mean
/// square of the excess over 32767, which the pair loses, over the input
/// codes. The two codes are taken as equal for a share `correlation` (when
/// positive) of the pairs and as independent for the rest. Zero unless
/// `m1 + m2 > 128` and codes reach above 128.
pub struct PairSaturation {
    /// The share of each input code 0..=255.
    codes: Vec<f64>,
    /// Suffix sums over codes c >= k of p, c p and c^2 p.
    suffix: [Vec<f64>; 3],
    /// Equal codes: the moments of the excess by weight sum `m1 + m2`.
    equal: Vec<(f64, f64)>,
    rho: f64,
    /// Mean and mean square of the excess, at `m1 * 128 + m2`, computed
    /// when a weight first holds that pair (NaN until then): a layer holds
    /// a small part of the 8000 pairs that can saturate, and computing
    /// them all for every layer was the largest single cost of YOLOv8n's
    /// `quant` (15%).
    moments: Vec<std::cell::Cell<(f64, f64)>>,
}

impl PairSaturation {
    /// The model for input `codes` (the share of each code 0..=255).
    pub fn new(codes: &[f64], correlation: f64) -> PairSaturation {
        let codes: Vec<f64> = (0..256)
            .map(|k| codes.get(k).copied().unwrap_or(0.0))
            .collect();
        let mut s0 = vec![0f64; 257];
        let mut s1 = vec![0f64; 257];
        let mut s2 = vec![0f64; 257];
        for k in (0..256).rev() {
            let (p, c) = (codes[k], k as f64);
            s0[k] = s0[k + 1] + p;
            s1[k] = s1[k + 1] + c * p;
            s2[k] = s2[k + 1] + c * c * p;
        }
        // Equal codes: the excess of c (m1 + m2), by m1 + m2.
        let equal: Vec<(f64, f64)> = (0..255usize)
            .map(|sum| {
                codes
                    .iter()
                    .enumerate()
                    .fold((0.0, 0.0), |(e1, e2), (c, &p)| {
                        let e = ((c * sum) as i64 - PAIR_MAX).max(0) as f64;
                        (e1 + p * e, e2 + p * e * e)
                    })
            })
            .collect();
        PairSaturation {
            codes,
            suffix: [s0, s1, s2],
            equal,
            rho: correlation.clamp(0.0, 1.0),
            moments: vec![std::cell::Cell::new((f64::NAN, f64::NAN)); 128 * 128],
        }
    }

    /// The moments of pair `(m1, m2)`, both in 1..=127.
    fn moments_of(&self, m1: usize, m2: usize) -> (f64, f64) {
        if m1 + m2 <= 128 {
            return (0.0, 0.0);
        }
        let (q1, q2) = self.equal[m1 + m2];
        // Independent codes: over c1, the excess of m2 c2 over
        // r = 32767 - c1 m1, from the suffix sums: over c2 >= first,
        // sum p (m2 c2 - r) and sum p (m2 c2 - r)^2.
        let [s0, s1, s2] = &self.suffix;
        let (mut i1, mut i2) = (0.0, 0.0);
        // Below this c1 not even c2 = 255 saturates.
        let from = ((PAIR_MAX - 255 * m2 as i64).max(0) / m1 as i64) as usize;
        for (c1, &p1) in self.codes.iter().enumerate().skip(from) {
            if p1 == 0.0 {
                continue;
            }
            let r = PAIR_MAX - c1 as i64 * m1 as i64;
            let first = (r.div_euclid(m2 as i64) + 1).clamp(0, 256) as usize;
            let (m, r) = (m2 as f64, r as f64);
            i1 += p1 * (m * s1[first] - r * s0[first]);
            i2 += p1 * (m * m * s2[first] - 2.0 * m * r * s1[first] + r * r * s0[first]);
        }
        let rho = self.rho;
        (rho * q1 + (1.0 - rho) * i1, rho * q2 + (1.0 - rho) * i2)
    }

    /// Mean and mean square of the excess of one pair of int8 weights.
    pub fn pair(&self, a: i8, b: i8) -> (f64, f64) {
        if (a > 0) != (b > 0) || a == 0 || b == 0 {
            return (0.0, 0.0);
        }
        let (m1, m2) = (
            a.unsigned_abs().min(127) as usize,
            b.unsigned_abs().min(127) as usize,
        );
        let cell = &self.moments[m1 * 128 + m2];
        let known = cell.get();
        if !known.0.is_nan() {
            return known;
        }
        let m = self.moments_of(m1, m2);
        cell.set(m);
        m
    }

    /// The expected squared saturation error of one output whose
    /// reduction is `row` (indices into `q` in the kernel's order; pairs
    /// `(2j, 2j + 1)`): each pair's excess pulls the sum toward zero, the
    /// side of its weights' sign, so the means add with their signs (the
    /// square of their sum) and the variances add.
    pub fn row_error(&self, q: &[i8], row: &[usize]) -> f64 {
        let (mut mean, mut var) = (0.0, 0.0);
        for p in row.chunks_exact(2) {
            let (a, b) = (q[p[0]], q[p[1]]);
            let (e1, e2) = self.pair(a, b);
            mean += if a > 0 { -e1 } else { e1 };
            var += (e2 - e1 * e1).max(0.0);
        }
        mean * mean + var
    }
}

/// The squared error the reduced range adds to each product over the full
/// one: its weights' rounding step is 127/64 times as long, so the rounding
/// variance of a weight grows by `((127/64)^2 - 1) / 12` (in full-range
/// steps), times the input value's own square, `(code - zero_point)^2`.
pub fn reduced_range_rounding_error(codes: &[f64], zero_point: u8) -> f64 {
    let r = INT8_QMAX as f64 / INT8_QMAX_REDUCED as f64;
    let x2: f64 = codes
        .iter()
        .enumerate()
        .map(|(c, &p)| p * (c as f64 - zero_point as f64).powi(2))
        .sum();
    x2 * (r * r - 1.0) / 12.0
}

/// Whether a weight, its int8 values `q` at the full range, keeps the full
/// range behind an input with these `codes` (and `zero_point`) on a CPU
/// without VNNI: when the squared error saturation adds to its outputs
/// ([`PairSaturation::row_error`] over `rows`, each output's reduction in
/// the kernel's order) is at most what the reduced range's rounding adds
/// ([`reduced_range_rounding_error`] per product).
pub fn full_range_pays(
    codes: &[f64],
    zero_point: u8,
    correlation: f64,
    q: &[i8],
    rows: impl Iterator<Item = Vec<usize>>,
) -> bool {
    let model = PairSaturation::new(codes, correlation);
    let per_product = reduced_range_rounding_error(codes, zero_point);
    let (mut saturation, mut rounding) = (0.0, 0.0);
    for row in rows {
        saturation += model.row_error(q, &row);
        rounding += row.len() as f64 * per_product;
    }
    saturation <= rounding
}

/// Scale for symmetric signed quantization of values whose largest magnitude
/// is `absmax`, with `bits` bits. A zero range gets scale 1 (all zeros).
pub fn symmetric_scale(absmax: f32, bits: u32) -> f32 {
    scale_for(absmax, (1i32 << (bits - 1)) - 1)
}

/// Scale mapping a largest magnitude `absmax` to `qmax`; 1 for a zero (or
/// non-finite) range.
fn scale_for(absmax: f32, qmax: i32) -> f32 {
    if absmax > 0.0 && absmax.is_finite() {
        absmax / qmax as f32
    } else {
        1.0
    }
}

/// Scale and zero point for unsigned 8-bit asymmetric quantization of the
/// range `[min, max]`, widened to include 0 (so zero padding is exact).
pub fn asymmetric_u8(min: f32, max: f32) -> (f32, u8) {
    let lo = min.min(0.0);
    let hi = max.max(0.0);
    if !(hi - lo).is_finite() || hi - lo <= 0.0 {
        return (1.0, 0);
    }
    let scale = (hi - lo) / 255.0;
    let zp = round_half_even(-lo / scale).clamp(0.0, 255.0) as u8;
    (scale, zp)
}

/// `scale`, or the largest float32 below it whose uint8 grid from 0 ends at
/// `max` or below (scale x 255, in float32, as onnxruntime computes it when
/// it decides whether a Clip to `max` before the QuantizeLinear can go):
/// one ulp less where rounding put the top past `max`, `max / 255` where
/// the range was empty (scale 1).
pub fn u8_scale_within(scale: f32, max: f32) -> f32 {
    if !(max > 0.0 && max.is_finite()) || scale * 255.0 <= max + f32::EPSILON {
        return scale;
    }
    let mut s = scale.min(max / 255.0);
    while s > 0.0 && s * 255.0 > max {
        s = f32::from_bits(s.to_bits() - 1);
    }
    s
}

/// Symmetric signed quantization of a weight laid out as `[outer, channels,
/// inner]` along `axis`, one scale per channel, into `[-qmax, qmax]`
/// ([`INT8_QMAX`] or [`INT8_QMAX_REDUCED`]). Returns values and scales.
pub fn quantize_per_channel(
    w: &[f32],
    outer: usize,
    channels: usize,
    inner: usize,
    qmax: i32,
) -> (Vec<i8>, Vec<f32>) {
    let scales = per_channel_scales(w, outer, channels, inner, qmax);
    let q = quantize_with_scales(w, channels, inner, &scales, qmax);
    (q, scales)
}

/// The symmetric scale of each channel of a weight laid out as `[outer,
/// channels, inner]`: its largest magnitude over `qmax`. Read in runs, as
/// `quantize_rows` reads it.
pub fn per_channel_scales(
    w: &[f32],
    outer: usize,
    channels: usize,
    inner: usize,
    qmax: i32,
) -> Vec<f32> {
    assert_eq!(w.len(), outer * channels * inner);
    let magnitude = |m: f32, c: &[f32]| c.iter().fold(m, |a, &v| a.max(v.abs()));
    let mut absmax = vec![0f32; channels];
    if outer == 1 {
        // One row: each channel's values are consecutive.
        let inner = inner.max(1);
        crate::io::read_once(w, inner, |at, run| {
            absmax[at / inner..]
                .par_iter_mut()
                .zip(run.par_chunks(inner))
                .for_each(|(m, c)| *m = magnitude(*m, c));
        });
    } else {
        // Reading memory in order: each task takes a run of rows and the
        // partial maxima are merged.
        let row = (channels * inner).max(1);
        crate::io::read_once(w, row, |_, run| {
            let part = run
                .par_chunks(row)
                .fold(
                    || vec![0f32; channels],
                    |mut m, r| {
                        if inner == 1 {
                            // Channels are consecutive (MatMul columns):
                            // element-wise, vectorised.
                            for (mm, &v) in m.iter_mut().zip(r) {
                                *mm = mm.max(v.abs());
                            }
                        } else {
                            for (mm, blk) in m.iter_mut().zip(r.chunks(inner)) {
                                *mm = magnitude(*mm, blk);
                            }
                        }
                        m
                    },
                )
                .reduce(
                    || vec![0f32; channels],
                    |a, b| a.iter().zip(&b).map(|(x, y)| x.max(*y)).collect(),
                );
            for (m, p) in absmax.iter_mut().zip(part) {
                *m = m.max(p);
            }
        });
    }
    absmax.iter().map(|&m| scale_for(m, qmax)).collect()
}

/// Symmetric quantization of `[outer, channels, inner]` with given
/// per-channel scales (saturating at `+-qmax`).
pub fn quantize_with_scales(
    w: &[f32],
    channels: usize,
    inner: usize,
    scales: &[f32],
    qmax: i32,
) -> Vec<i8> {
    assert_eq!(scales.len(), channels);
    let outer = w.len() / (channels * inner).max(1);
    quantize_rows(w, outer, channels, inner, scales, qmax)
}

/// Scales to store as float16, each the nearest float16 (values quantized
/// with it saturate at most a hair above the range). `None` where a scale
/// is not a normal float16 (below 2^-14 or above 65504 in magnitude it
/// would lose relative precision). Signs are kept ([`BlockScheme::Int4Full`]
/// scales may be negative).
pub fn f16_scales(scales: &[f32]) -> Option<Vec<half::f16>> {
    scales
        .iter()
        .map(|&s| {
            let h = half::f16::from_f32(s);
            h.is_normal().then_some(h)
        })
        .collect()
}

/// Symmetric int8 scales for a weight expanded to float16: each a normal
/// float16 at least the scale (rounded up, so no value saturates), at least
/// float16's smallest normal (a channel that small uses fewer levels), and
/// at most what keeps 127 steps finite in float16 (a channel reaching
/// float16's limit saturates a hair instead).
pub fn f16_scales_up(scales: &[f32]) -> Vec<half::f16> {
    let max = f32::from(half::f16::MAX);
    scales
        .iter()
        .map(|&s| {
            let mut h = half::f16::from_f32(s);
            if h.to_f32() < s {
                h = half::f16::from_bits(h.to_bits() + 1);
            }
            while h.to_f32() * 127.0 > max {
                h = half::f16::from_bits(h.to_bits() - 1);
            }
            if h.is_normal() {
                h
            } else {
                half::f16::MIN_POSITIVE
            }
        })
        .collect()
}

/// How each block of a blocked weight maps to its integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockScheme {
    /// Signed, zero point 0, `[-(2^(b-1) - 1), 2^(b-1) - 1]`.
    Symmetric { bits: u32 },
    /// Signed 4-bit using all 16 levels `[-8, 7]`, no zero point: the
    /// block's value of largest magnitude maps to -8 exactly, its scale
    /// taking the opposite sign (so a scale may be negative: for our own
    /// unpacking, never a DequantizeLinear). A fifth less squared rounding
    /// error than `[-7, 7]` at the same size. Each scale is rounded to the
    /// nearest float16 where that is a normal float16 (and the values are
    /// quantized with it), so storing the scales as float16 changes nothing.
    Int4Full,
    /// Unsigned 4-bit `[0, 15]` with a zero point per block: the block's
    /// range `[min, max]`, widened to include 0, is cut into 15 steps. On
    /// transformer weights this rounds with about a third less squared error
    /// than the symmetric `[-7, 7]` for half a byte of zero point per block.
    Uint4,
}

/// A weight quantized per block: integer values (unsigned ones as their
/// small non-negative values), one scale per block and, for
/// [`BlockScheme::Uint4`], one zero point per block.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocked {
    pub values: Vec<i8>,
    pub scales: Vec<f32>,
    pub zero_points: Option<Vec<i8>>,
}

/// Quantization per block of `block` consecutive elements along the middle
/// axis of `[outer, len, inner]` (the layout of opset 21 blocked
/// DequantizeLinear): scales and zero points are `[outer, ceil(len / block),
/// inner]`.
pub fn quantize_blocked(
    w: &[f32],
    outer: usize,
    len: usize,
    inner: usize,
    block: usize,
    scheme: BlockScheme,
) -> Blocked {
    assert_eq!(w.len(), outer * len * inner);
    let blocks = len.div_ceil(block);
    let mut q = vec![0i8; w.len()];
    let mut scales = vec![0f32; outer * blocks * inner];
    let mut zps = vec![0i8; scales.len()];
    // One unit per block of rows: `rows x inner` consecutive values, read in
    // memory order (one pass for the ranges, one to quantize), units in parallel.
    type Unit<'a> = (&'a [f32], &'a mut [i8], &'a mut [f32], &'a mut [i8]);
    let mut units: Vec<Unit> = Vec::with_capacity(outer * blocks);
    let (mut w_rest, mut q_rest, mut s_rest, mut z_rest) =
        (w, &mut q[..], &mut scales[..], &mut zps[..]);
    for _ in 0..outer {
        for b in 0..blocks {
            let n = block.min(len - b * block) * inner;
            let (wu, wr) = w_rest.split_at(n);
            let (qu, qr) = std::mem::take(&mut q_rest).split_at_mut(n);
            let (su, sr) = std::mem::take(&mut s_rest).split_at_mut(inner);
            let (zu, zr) = std::mem::take(&mut z_rest).split_at_mut(inner);
            units.push((wu, qu, su, zu));
            (w_rest, q_rest, s_rest, z_rest) = (wr, qr, sr, zr);
        }
    }
    let width = inner.max(1);
    let quantize = |(wu, qu, su, zu): Unit| match scheme {
        BlockScheme::Symmetric { bits } => {
            let qmax = ((1i32 << (bits - 1)) - 1) as f32;
            for r in wu.chunks(width) {
                for (m, &v) in su.iter_mut().zip(r) {
                    *m = m.max(v.abs());
                }
            }
            for m in su.iter_mut() {
                *m = symmetric_scale(*m, bits);
            }
            for (qr, wr) in qu.chunks_mut(width).zip(wu.chunks(width)) {
                for ((o, &v), &s) in qr.iter_mut().zip(wr).zip(su.iter()) {
                    *o = quantize_symmetric(v, s, qmax);
                }
            }
        }
        BlockScheme::Int4Full => {
            // The signed value of largest magnitude per column of the unit.
            for r in wu.chunks(width) {
                for (m, &v) in su.iter_mut().zip(r) {
                    if v.abs() > m.abs() {
                        *m = v;
                    }
                }
            }
            for m in su.iter_mut() {
                let s = if *m != 0.0 && m.is_finite() {
                    *m / -8.0
                } else {
                    1.0
                };
                let h = half::f16::from_f32(s);
                *m = if h.is_normal() { h.to_f32() } else { s };
            }
            for (qr, wr) in qu.chunks_mut(width).zip(wu.chunks(width)) {
                for ((o, &v), &s) in qr.iter_mut().zip(wr).zip(su.iter()) {
                    *o = quantize_offset(v, s, 8.0, 15.0) - 8;
                }
            }
        }
        BlockScheme::Uint4 => {
            // Range per column of the unit, widened to include 0.
            let mut lo = vec![0f32; su.len()];
            for r in wu.chunks(width) {
                for ((l, h), &v) in lo.iter_mut().zip(su.iter_mut()).zip(r) {
                    *l = l.min(v);
                    *h = h.max(v);
                }
            }
            for ((s, z), &l) in su.iter_mut().zip(zu.iter_mut()).zip(&lo) {
                let range = *s - l;
                if range > 0.0 && range.is_finite() {
                    *s = range / 15.0;
                    *z = round_half_even(-l / *s).clamp(0.0, 15.0) as i8;
                } else {
                    (*s, *z) = (1.0, 0);
                }
            }
            for (qr, wr) in qu.chunks_mut(width).zip(wu.chunks(width)) {
                for (((o, &v), &s), &z) in qr.iter_mut().zip(wr).zip(su.iter()).zip(zu.iter()) {
                    *o = quantize_offset(v, s, z as f32, 15.0);
                }
            }
        }
    };
    // Units in runs of about `io::READ_RUN_BYTES` (the units of a run in
    // parallel), each run's pages let go once read where `w` is the model
    // file's, as `io::read_once` does.
    let mut units = units.into_iter().peekable();
    while units.peek().is_some() {
        let mut run: Vec<Unit> = Vec::new();
        let mut bytes = 0;
        while let Some(u) = units.next_if(|_| bytes < crate::io::READ_RUN_BYTES) {
            bytes += std::mem::size_of_val(u.0);
            run.push(u);
        }
        let read: Vec<&[f32]> = run.iter().map(|u| u.0).collect();
        run.into_par_iter().for_each(quantize);
        read.into_iter().for_each(crate::io::release_pages_of);
    }
    let zero_points = matches!(scheme, BlockScheme::Uint4).then_some(zps);
    Blocked {
        values: q,
        scales,
        zero_points,
    }
}

/// Pack 4-bit values two to a byte, the first in the low nibble (the ONNX
/// INT4 and UINT4 layout: signed values as their two's complement nibble,
/// unsigned ones 0..=15 as they are); an odd count leaves the last high
/// nibble 0.
pub fn pack_int4(v: &[i8]) -> Vec<u8> {
    v.par_chunks(2)
        .map(|p| {
            let lo = (p[0] as u8) & 0x0f;
            let hi = p.get(1).map_or(0, |&h| (h as u8) & 0x0f);
            lo | (hi << 4)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_half_to_even() {
        assert_eq!(
            [0.5f32, 1.5, 2.5, -0.5, -1.5, 2.4999].map(round_half_even),
            [0.0, 2.0, 2.0, -0.0, -2.0, 2.0]
        );
    }

    #[test]
    fn fast_symmetric_rounding_matches_quantize() {
        for i in -3000..3000 {
            let x = i as f32 * 0.0625 + if i % 7 == 0 { 0.03125 } else { 0.0 };
            for s in [1.0f32, 0.5, 0.037, 3.0] {
                assert_eq!(
                    quantize_symmetric(x, s, 127.0) as i32,
                    quantize(x, s, 0, -127, 127),
                    "x {x} scale {s}"
                );
            }
        }
        assert_eq!(quantize_symmetric(1e30, 1.0, 127.0), 127);
        assert_eq!(quantize_symmetric(-1e30, 1.0, 7.0), -7);
    }

    #[test]
    fn reduced_range_keeps_every_pair_of_products_in_16_bits() {
        // Two channels: the largest magnitude maps to 64, not 127.
        let w = [0.5, -1.0, 0.25, 2.0, 0.0, -0.01];
        let (q, s) = quantize_per_channel(&w, 1, 2, 3, INT8_QMAX_REDUCED);
        assert_eq!(s, vec![1.0 / 64.0, 2.0 / 64.0]);
        assert_eq!(q, vec![32, -64, 16, 64, 0, 0]);
        // What vpmaddubsw adds in 16 bits: two uint8 activations times two
        // weights. The full range can leave int16, the reduced one cannot.
        let pair = |qmax: i32| 255 * 2 * qmax;
        assert!(pair(INT8_QMAX) > i16::MAX as i32);
        assert!(pair(INT8_QMAX_REDUCED) <= i16::MAX as i32);
    }

    fn code(k: usize) -> Vec<f64> {
        let mut v = vec![0.0; 256];
        v[k] = 1.0;
        v
    }

    #[test]
    fn pair_saturation_known_values() {
        // Every code 255, both magnitudes 127: 255 x 254 - 32767 over,
        // correlated or not, for either sign; opposite signs never.
        let over = (255 * 254 - 32767) as f64;
        for rho in [0.0, 0.5, 1.0] {
            let m = PairSaturation::new(&code(255), rho);
            assert_eq!(m.pair(127, 127), (over, over * over));
            assert_eq!(m.pair(-127, -127), (over, over * over));
            assert_eq!(m.pair(127, -127), (0.0, 0.0));
        }
        // Codes up to 128 never saturate a pair, whatever the weights.
        assert_eq!(
            PairSaturation::new(&code(128), 1.0).pair(127, 127),
            (0.0, 0.0)
        );
        // 255 x (64 + 64) = 32640 fits; (64, 65) reaches 32895, 128 over.
        let m = PairSaturation::new(&code(255), 0.0);
        assert_eq!(m.pair(64, 64), (0.0, 0.0));
        assert_eq!(m.pair(64, 65), (128.0, 128.0 * 128.0));
        // Half the codes 255, half 0. Independent: a quarter of the pairs
        // are two 255s. Equal: half of them. Correlation 0.5: between.
        // Negative correlation counts as none.
        let mut c = vec![0.0; 256];
        c[0] = 0.5;
        c[255] = 0.5;
        for (rho, share) in [(0.0, 0.25), (1.0, 0.5), (0.5, 0.375), (-0.3, 0.25)] {
            let (e1, e2) = PairSaturation::new(&c, rho).pair(127, 127);
            assert_eq!((e1, e2), (share * over, share * over * over), "{rho}");
        }
    }

    #[test]
    fn row_error_adds_means_with_their_signs() {
        let over = (255 * 254 - 32767) as f64;
        let m = PairSaturation::new(&code(255), 0.0);
        // Two saturating pairs of one sign: their excesses add up.
        let q = [127i8, 127, 127, 127];
        assert_eq!(m.row_error(&q, &[0, 1, 2, 3]), (2.0 * over).powi(2));
        // Of opposite signs they cancel.
        let q = [127i8, 127, -127, -127];
        assert_eq!(m.row_error(&q, &[0, 1, 2, 3]), 0.0);
        // The kernel's order decides the pairs: (127, -127) twice, none.
        assert_eq!(m.row_error(&q, &[0, 2, 1, 3]), 0.0);
        // A lone last value pairs with nothing.
        assert_eq!(m.row_error(&[127i8, 127, 127], &[0, 1, 2]), over * over);
    }

    #[test]
    fn full_range_pays_behind_small_codes_not_behind_correlated_high_ones() {
        // Reduced rounding: (code - zp)^2 x ((127/64)^2 - 1) / 12.
        let r = (127.0f64 / 64.0).powi(2);
        assert!(
            (reduced_range_rounding_error(&code(10), 0) - 100.0 * (r - 1.0) / 12.0).abs() < 1e-9
        );
        // 40 outputs of 40 values; in half the outputs one pair (127, 127)
        // of alternating sign, the rest small.
        let mut q = vec![10i8; 40 * 40];
        for o in (0..40).step_by(2) {
            let v = if o % 4 == 0 { 127 } else { -127 };
            q[o * 40] = v;
            q[o * 40 + 1] = v;
        }
        let rows = || (0..40).map(|o| (o * 40..(o + 1) * 40).collect::<Vec<usize>>());
        // After a ReLU: most codes small, a few high, paired independently
        // (adjacent channels): full range.
        let mut relu = vec![0.0; 256];
        relu[0] = 0.6;
        relu[30] = 0.36;
        relu[135] = 0.04;
        assert!(full_range_pays(&relu, 0, 0.0, &q, rows()));
        // The same codes, adjacent channels moving together (a spectrum's
        // neighbouring bins): reduced.
        assert!(!full_range_pays(&relu, 0, 0.9, &q, rows()));
    }

    #[test]
    fn quantize_saturates() {
        assert_eq!(quantize(1000.0, 1.0, 0, -127, 127), 127);
        assert_eq!(quantize(-1000.0, 1.0, 0, -127, 127), -127);
        assert_eq!(quantize(2.5, 1.0, 128, 0, 255), 130);
        assert_eq!(quantize(-200.0, 1.0, 128, 0, 255), 0);
    }

    #[test]
    fn asymmetric_range_contains_zero() {
        let (s, z) = asymmetric_u8(-1.0, 3.0);
        assert!((s - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(z, 64); // round(1 / (4/255)) = round(63.75)
        let (s, z) = asymmetric_u8(2.0, 4.0); // widened to [0, 4]
        assert!((s - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(z, 0);
        assert_eq!(asymmetric_u8(0.0, 0.0), (1.0, 0));
    }

    #[test]
    fn per_channel_known_values() {
        // Two output channels (axis 0), three values each.
        let (q, s) = quantize_per_channel(&[0.5, -1.0, 0.25, 2.0, 0.0, -0.01], 1, 2, 3, INT8_QMAX);
        assert_eq!(s, vec![1.0 / 127.0, 2.0 / 127.0]);
        assert_eq!(q, vec![64, -127, 32, 127, 0, -1]);
    }

    /// Weights over the 4 MiB a run of `io::read_once` holds, per channel
    /// along the first axis (runs of whole channels), a middle one (runs of
    /// whole rows) and the last (MatMul columns): the same scales and values
    /// as one channel at a time, computed plainly.
    #[test]
    fn per_channel_quantization_of_weights_read_in_runs_matches_the_plain_one() {
        let len = 6_000_000usize;
        let w: Vec<f32> = (0..len)
            .map(|i| ((i * 2_654_435_761) % 20_011) as f32 / 1000.0 - 10.0)
            .collect();
        for (outer, channels, inner) in [(1, 3000, 2000), (30, 400, 500), (6000, 1000, 1)] {
            let (q, s) = quantize_per_channel(&w, outer, channels, inner, INT8_QMAX);
            let mut absmax = vec![0f32; channels];
            for (e, &v) in w.iter().enumerate() {
                let c = (e / inner) % channels;
                absmax[c] = absmax[c].max(v.abs());
            }
            let plain: Vec<f32> = absmax.iter().map(|&m| scale_for(m, INT8_QMAX)).collect();
            assert_eq!(s, plain, "scales of {outer}x{channels}x{inner}");
            for (e, (&v, &qv)) in w.iter().zip(&q).enumerate() {
                let c = (e / inner) % channels;
                let expected = quantize_symmetric(v, s[c], INT8_QMAX as f32);
                assert_eq!(qv, expected, "element {e} of {outer}x{channels}x{inner}");
            }
        }
    }

    #[test]
    fn f16_scales_are_the_nearest_and_refuse_what_float16_cannot_hold() {
        let s = [1.0f32 / 127.0, 0.25, 3.0e-3];
        let h = f16_scales(&s).unwrap();
        for (h, s) in h.iter().zip(s) {
            assert!((h.to_f32() - s).abs() <= s / 2048.0, "{h} {s}");
        }
        assert_eq!(h[1].to_f32(), 0.25); // exact where float16 holds it
        assert_eq!(f16_scales(&[0.1, 1.0e-5]), None); // subnormal in float16
        assert_eq!(f16_scales(&[7.0e4]), None); // beyond float16's range
                                                // 1/127 rounds down to 0.0078735: the largest value saturates at 127.
        let w = [1.0f32, -0.3];
        let sc = per_channel_scales(&w, 1, 1, 2, INT8_QMAX);
        let h = f16_scales(&sc).unwrap()[0].to_f32();
        assert!(h < sc[0]);
        assert_eq!(
            quantize_with_scales(&w, 1, 2, &[h], INT8_QMAX),
            vec![127, -38]
        );
    }

    #[test]
    fn blocked_known_values() {
        // One row of 5 with block 2 -> 3 blocks: [0.5, -2], [4, 0], [0.5].
        let b = quantize_blocked(
            &[0.5, -2.0, 4.0, 0.0, 0.5],
            1,
            5,
            1,
            2,
            BlockScheme::Symmetric { bits: 4 },
        );
        assert_eq!(b.scales, vec![2.0 / 7.0, 4.0 / 7.0, 0.5 / 7.0]);
        assert_eq!(b.values, vec![2, -7, 7, 0, 7]); // 0.5 / (2/7) = 1.75 -> 2
        assert_eq!(b.zero_points, None);
    }

    #[test]
    fn blocked_full_range_int4_known_values() {
        // Blocks [0.5, -2] (largest -2: scale 0.25, -2 -> -8), [4, -1]
        // (largest 4: scale -0.5, 4 -> -8, -1 -> 2) and [-4, 4] (the first
        // largest, -4: scale 0.5; 4 -> 8 saturates at 7).
        let b = quantize_blocked(
            &[0.5, -2.0, 4.0, -1.0, -4.0, 4.0],
            1,
            6,
            1,
            2,
            BlockScheme::Int4Full,
        );
        assert_eq!(b.scales, vec![0.25, -0.5, 0.5]);
        assert_eq!(b.values, vec![2, -8, -8, 2, -8, 7]);
        assert_eq!(b.zero_points, None);
        // Scales are float16 values, and the values are quantized with them.
        assert!(b
            .scales
            .iter()
            .all(|&s| half::f16::from_f32(s).to_f32() == s));
        // -0.1 / -8 = 0.0125 rounds down to the float16 0.0124969...: the
        // block's range then lies a hair past its levels, and saturates at
        // -8 / 7.
        let b = quantize_blocked(&[-0.1, 0.1], 1, 2, 1, 2, BlockScheme::Int4Full);
        assert_eq!(b.scales, vec![half::f16::from_f32(0.0125).to_f32()]);
        assert!(b.scales[0] < 0.0125);
        assert_eq!(b.values, vec![-8, 7]);
    }

    #[test]
    fn blocked_uint4_known_values() {
        // Blocks [-1, 2] (scale 3/15, zp round(5) = 5), [0.5, 1.5] (widened
        // to [0, 1.5]: scale 0.1, zp 0) and [-3] ([-3, 0]: scale 0.2, zp 15).
        let b = quantize_blocked(&[-1.0, 2.0, 0.5, 1.5, -3.0], 1, 5, 1, 2, BlockScheme::Uint4);
        assert_eq!(b.scales, vec![3.0 / 15.0, 1.5 / 15.0, 3.0 / 15.0]);
        assert_eq!(b.zero_points, Some(vec![5, 0, 15]));
        assert_eq!(b.values, vec![0, 15, 5, 15, 0]);
        // Two columns (inner 2): each column of a block has its own range.
        let b = quantize_blocked(&[1.0, -1.0, 3.0, -3.0], 1, 2, 2, 2, BlockScheme::Uint4);
        assert_eq!(b.scales, vec![3.0 / 15.0, 3.0 / 15.0]);
        assert_eq!(b.zero_points, Some(vec![0, 15]));
        assert_eq!(b.values, vec![5, 10, 15, 0]);
    }

    #[test]
    fn nan_weights_dequantize_to_zero_in_every_scheme() {
        let w = [1.0, f32::NAN, -2.0, 0.5];
        for scheme in [
            BlockScheme::Symmetric { bits: 4 },
            BlockScheme::Int4Full,
            BlockScheme::Uint4,
        ] {
            let b = quantize_blocked(&w, 1, 4, 1, 4, scheme);
            let zp = b.zero_points.as_ref().map_or(0, |z| z[0]);
            assert_eq!(b.values[1], zp, "{scheme:?}: {b:?}");
            // The NaN does not widen or poison the block's scale.
            assert!(
                b.scales[0].is_finite() && b.scales[0] != 1.0,
                "{scheme:?}: {b:?}"
            );
        }
        let (q, s) = quantize_per_channel(&w, 1, 1, 4, INT8_QMAX);
        assert_eq!((q[1], s[0]), (0, 2.0 / 127.0));
    }

    #[test]
    fn block_scales_and_values_known() {
        // Two rows of 4, blocks of 2 along the rows: each pair its own scale
        // (powers of two here, so every quotient is exact).
        let w = [63.5, -127.0, 31.75, 63.5, 0.0, 0.0, 254.0, -127.0];
        let b = Blocks::Inner { block: 2 };
        let s = block_scales(&w, b, 127);
        assert_eq!(s, vec![1.0, 0.5, 0.0, 2.0]);
        let q = quantize_blocks(&w, b, &s, 127);
        // 63.5 rounds to even: 64; a block of zeros stays 0.
        assert_eq!(q, vec![64, -127, 64, 127, 0, 0, 127, -64]);
        // The same values as 4 rows of 2 columns, blocks of 2 rows per
        // column: column 0 holds 63.5, 31.75 | 0, 254; column 1 -127, 63.5 |
        // 0, -127.
        let b = Blocks::Outer {
            block: 2,
            channels: 2,
        };
        let s = block_scales(&w, b, 127);
        assert_eq!(s, vec![0.5, 1.0, 2.0, 1.0]);
        let q = quantize_blocks(&w, b, &s, 127);
        assert_eq!(q, vec![127, -127, 64, 64, 0, 0, 127, -127]);
    }

    #[test]
    fn f16_scales_up_round_up_stay_finite_and_normal() {
        use half::f16;
        // 0.1 is not a float16: the next one up, above 0.1.
        let h = f16_scales_up(&[0.1, 0.5, 1e-7, 600.0]);
        assert!(h[0].to_f32() > 0.1 && f16::from_bits(h[0].to_bits() - 1).to_f32() < 0.1);
        assert_eq!(h[1], f16::from_f32(0.5), "exact: kept");
        assert_eq!(
            h[2],
            f16::MIN_POSITIVE,
            "below the normals: the smallest normal"
        );
        // 127 x 600 overflows float16: the largest scale whose 127 steps fit.
        assert!(h[3].to_f32() * 127.0 <= f32::from(f16::MAX));
        assert!(f16::from_bits(h[3].to_bits() + 1).to_f32() * 127.0 > f32::from(f16::MAX));
    }

    #[test]
    fn int4_packing_low_nibble_first() {
        assert_eq!(pack_int4(&[1, -2, 7]), vec![0xE1, 0x07]);
        assert_eq!(pack_int4(&[-8, 7]), vec![0x78]);
    }

    #[test]
    fn a_relu6_grid_ends_within_its_bound() {
        // As calibrated: untouched where the top is within the bound.
        assert_eq!(u8_scale_within(6.0 / 255.0, 6.0), 6.0 / 255.0);
        assert_eq!(u8_scale_within(0.01, 6.0), 0.01);
        // An empty range (scale 1) and a top one ulp past the bound.
        for (scale, max) in [
            (1.0f32, 6.0f32),
            (f32::from_bits((1.0f32 / 255.0).to_bits() + 2), 1.0),
        ] {
            let s = u8_scale_within(scale, max);
            assert!(s > 0.0 && s * 255.0 <= max, "{scale} -> {s}");
            assert!(s >= max / 255.0 * (1.0 - 1e-6), "{scale} -> {s}");
        }
        // No bound to keep to.
        assert_eq!(u8_scale_within(1.0, f32::INFINITY), 1.0);
    }
}
