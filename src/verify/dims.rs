//! Sizes for the input dims nobody bound. Random samples need concrete
//! shapes: a dim without a size could be 1, which is right for a batch and
//! wrong for most else. Calibrating a CNN on 1x1 images measures its
//! padding, not its activations (PP-OCRv4's recogniser so calibrated kept
//! cosine 0.91 on 48x320 lines, 0.99 calibrated on 64x64); a transformer
//! checked on one token checks a softmax that is 1 whatever its inputs; and
//! signals have a minimum length (silero-vad cannot be analysed in tract
//! below 256 audio samples).

use crate::ir::Model;
use crate::proto::{tensor_proto::DataType, ValueInfoProto};

use super::{
    has_if, inputs, split_fixed, tract, verification_copy, Reference, ReferenceInputs, Trial,
    VerifyOptions,
};

/// The sizes [`settle_dims`] chose, said in notes, and the original's side
/// of verification at them where the search built it.
#[derive(Default)]
pub struct Settled {
    /// Notes for the report on every size other than 1, or on none found.
    pub notes: Vec<String>,
    /// Asked for ([`settle_dims`]' `reference`), each size is tried by
    /// building the original's verification reference there; the one at
    /// the size chosen, where it planned and ran, so that verification
    /// ([`super::verify_against`]) does not build it again.
    pub reference: Option<Reference>,
}

/// The default size of an image's height and width: big enough that
/// padding does not dominate the activations, a multiple of the stride 32 of
/// most backbones and detectors, small enough that calibration stays fast.
/// No size suits every model, since calibration ranges follow the size (on
/// random images, measured in onnxruntime at the size each model is used
/// at): at 224 YOLOv8n keeps cosine 0.99995 at 320 (0.99977 at 64), but
/// PP-OCRv4's classifier falls to 0.947 at 48x192 (0.995 at 64), its
/// recogniser grows to 0.32x (0.265x at 64) and its detector to 0.36x
/// (0.27x), as sensitive=auto keeps layers in float on noise. A model whose
/// layers fix a dim gets the first of [`IMAGE_SIZES`] it can be analysed at.
const IMAGE_SIZE: usize = 64;

/// The most an image dim beside a fixed one starts at ([`LINE_ASPECT`]).
const LINE_MAX: usize = 384;

/// An image dim whose other side is fixed (a text line recogniser's width,
/// its height fixed at 32 to 96) starts at this many times that side, at
/// least [`IMAGE_SIZE`], at most [`LINE_MAX`]: calibration sees a line,
/// not a square or less. Measured in onnxruntime on random 48x320 and 96x384
/// lines against the float model: PP-OCRv5's recogniser (height 48) 0.9866
/// calibrated at width 64, 0.9914 at 96; PP-OCRv6's 0.968 and 0.976; a 96-high
/// recogniser 0.966 at 64 (0.959 at 96, as high as wide) and 0.997 at 192.
const LINE_ASPECT: usize = 2;

/// Sizes tried, one dim at a time, for an image dim at which the model
/// cannot be analysed at [`IMAGE_SIZE`]: the largest below it first, then
/// upwards.
const IMAGE_SIZES: [usize; 12] = [48, 32, 96, 128, 160, 192, 224, 256, 320, 384, 512, 640];

/// The default length of a token sequence (an integer input's dim that is
/// not a batch): the usual maximum of sentence encoders, where attention
/// and its quantization error are those of real use (at 1 token, softmax is
/// exactly 1 whatever its inputs).
const TOKEN_LENGTH: usize = 128;

/// Sizes tried, one dim at a time, for a token length at which the model
/// cannot be analysed at [`TOKEN_LENGTH`] (a model with fewer positions).
const TOKEN_LENGTHS: [usize; 7] = [64, 32, 16, 8, 1, 256, 512];

/// Sizes tried, one dim at a time, for a float sequence (a signal, a
/// feature sequence) at which the model cannot be analysed at
/// [`TOKEN_LENGTH`]: longer and shorter in turn, from the nearest. A
/// signal more often has a minimum length (strided convolutions, a
/// window) than a maximum: silero-vad, whose chunk axis is named
/// `sequence`, cannot be analysed below 256 samples, and shorter lengths
/// first took five failed trials before it (its run without `--inputs`
/// 0.32 -> 0.12 s; it is now a [`Role::Chunk`], first tried at 512); a
/// model with fewer positions than 128 costs one trial
/// more than shorter lengths first would where 64 fits, two where only
/// shorter ones do.
const SEQUENCE_LENGTHS: [usize; 7] = [256, 64, 512, 32, 16, 8, 1];

/// Sizes tried for the other dims (not a batch) when the model cannot be
/// analysed with them at 1: lengths of audio and other signals.
const LENGTH_SIZES: [usize; 6] = [16, 64, 256, 512, 1024, 4096];

/// The first length of audio samples: a second at 16 kHz, the rate
/// speech models take.
const AUDIO_LENGTH: usize = 16000;

/// Lengths of audio tried, one dim at a time, where the model cannot be
/// analysed at [`AUDIO_LENGTH`] (a model of fixed-size chunks).
const AUDIO_LENGTHS: [usize; 6] = [8000, 4096, 1024, 512, 256, 32000];

/// The first length of a streaming model's waveform chunk ([`Role::Chunk`]):
/// 32 ms at 16 kHz, the chunk streaming voice activity detectors take
/// (silero's at 16 kHz).
const CHUNK_LENGTH: usize = 512;

/// Lengths of a waveform chunk tried where the model cannot be analysed at
/// [`CHUNK_LENGTH`]: silero's 8 kHz chunk, then longer.
const CHUNK_LENGTHS: [usize; 4] = [256, 1024, 4096, 16000];

/// Batch sizes tried, every batch dim at once, where the model cannot be
/// analysed at batch 1 at any size of its other dims: a model that
/// reshapes its batch into groups (ICLabel's EEG classifier reads four
/// augmented copies of each component, and reshapes its scores to
/// [4, -1]: onnxruntime too runs it at batches 4 and 8, not 1 or 2).
const BATCH_SIZES: [usize; 3] = [2, 4, 8];

/// The first size of the other dims of a model holding a Loop: they are the
/// steps its loops run over (a Keras LSTM's sequence), and verification
/// writes out as many iterations; at 1 it would check no recurrence.
const LOOP_LENGTH: usize = 16;

/// What an unbound dim looks like it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Named like a batch, or axis 0 of every input of rank 2 or more that
    /// has it: stays 1.
    Batch,
    /// Height or width of an image input.
    Image,
    /// The length of an integer input (token ids, their mask).
    Tokens,
    /// A float input's dim named like a time or sequence axis (`time`,
    /// `seq_len`, `frames`...), or one a mask input has past its leading
    /// axis (a set transformer's `feats: [1, N, 16]` with `mask: [1, N]`:
    /// at 1 element its attention checks nothing), in a model with no
    /// Loop: a signal, a feature sequence. At 1 step a Conv+LSTM model checks no recurrence
    /// and no convolution over time (an EEG model verified at 0.99999 at
    /// 1 step measured 0.93 at 500 in onnxruntime, 0.99999 calibrated at
    /// 500).
    Sequence,
    /// The length of an input of audio samples ([`inputs::audio_name`]:
    /// `waveforms`, `audio`, `input_values`): a second at 16 kHz. At 1
    /// sample a speech front end's features are its STFT's padding alone
    /// (verification compared zeros and passed), and at 128 a Whisper
    /// front end (400-sample windows) has no frame.
    Audio,
    /// The samples' axis of a waveform ([`inputs::waveform`]: a model that
    /// takes a sample rate) in a streaming model (a recurrent state,
    /// [`inputs::state_pairs`]): a chunk of [`CHUNK_LENGTH`] samples, what
    /// such a model is run on call by call, also where an LSTM reads the
    /// samples as its steps. silero's unnamed axis, taken for a length, was
    /// tried at 1, 16, 64 and 256 (half of its 0.24 s run) and verified at
    /// 256, half its 16 kHz chunk; its other export's, named `sequence`, at
    /// 128 then 256.
    Chunk,
    /// Anything else: a length, a count.
    Length,
}

impl Role {
    /// The size first tried, and those tried after it, one dim at a time.
    fn sizes(self) -> (usize, &'static [usize]) {
        match self {
            Role::Batch => (1, &[]),
            Role::Image => (IMAGE_SIZE, &IMAGE_SIZES),
            Role::Tokens => (TOKEN_LENGTH, &TOKEN_LENGTHS),
            Role::Sequence => (TOKEN_LENGTH, &SEQUENCE_LENGTHS),
            Role::Audio => (AUDIO_LENGTH, &AUDIO_LENGTHS),
            Role::Chunk => (CHUNK_LENGTH, &CHUNK_LENGTHS),
            Role::Length => (1, &LENGTH_SIZES),
        }
    }
}

/// An error naming the `--dim` keys that match no input dim without a size
/// (a typo would otherwise be ignored), with the keys the model has; or a
/// name whose every axis is also bound by its `INPUT:AXIS` key, which wins,
/// so that the name's size would be silently ignored.
pub fn check_bound(
    model: &Model,
    dims: &std::collections::HashMap<String, usize>,
) -> anyhow::Result<()> {
    // Each key a dim answers to: its name, and `INPUT:AXIS` for every axis;
    // the per-axis keys of a name on several axes of one input are listed.
    let mut free: Vec<(String, Vec<String>)> = Vec::new();
    let mut by_axis = std::collections::HashSet::new();
    // The per-axis keys of every axis a name binds.
    let mut named: std::collections::HashMap<String, Vec<String>> = Default::default();
    for vi in &model.graph.rest.input {
        if model.graph.initializers.contains_key(vi.name()) {
            continue;
        }
        for (key, axis) in inputs::free_dims(vi) {
            let axis_key = inputs::axis_dim_key(vi.name(), axis);
            if key != axis_key {
                named.entry(key.clone()).or_default().push(axis_key.clone());
            }
            by_axis.insert(axis_key);
            if !free.iter().any(|(k, _)| *k == key) {
                free.push((key, vec![]));
            }
        }
        for (key, axes) in inputs::repeated_dims(vi) {
            if let Some((_, a)) = free.iter_mut().find(|(k, _)| *k == key) {
                a.extend(axes);
            }
        }
    }
    let known = |k: &String| by_axis.contains(k) || free.iter().any(|(n, _)| n == k);
    let mut unknown: Vec<&String> = dims.keys().filter(|k| !known(k)).collect();
    if unknown.is_empty() {
        let mut shadowed: Vec<(&String, &Vec<String>)> = dims
            .keys()
            .filter_map(|k| named.get(k).map(|axes| (k, axes)))
            .filter(|(_, axes)| axes.iter().all(|a| dims.contains_key(a)))
            .collect();
        shadowed.sort();
        if let Some((key, axes)) = shadowed.first() {
            anyhow::bail!(
                "--dim {key}={}: every axis of that name is also bound on its own ({}), \
                 which wins: the name binds nothing; drop one or the other",
                dims[*key],
                axes.iter()
                    .map(|a| format!("{a}={}", dims[a]))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        // One sample at the sizes `--dim` binds must fit in memory
        // (unbound dims count 1). Inputs the user bound no dim of are left
        // to where samples are drawn (`inputs::input_specs`): a run that
        // draws none (--no-verify, passes that do not run the model) takes
        // any model.
        for vi in &model.graph.rest.input {
            if model.graph.initializers.contains_key(vi.name()) {
                continue;
            }
            let Some(tt) = crate::ir::tensor_type(vi) else {
                continue;
            };
            let mut bound = false;
            let dims_of = tt.shape.iter().flat_map(|s| s.dim.iter()).enumerate();
            let shape: Vec<usize> = dims_of
                .map(
                    |(axis, d)| match inputs::axis_size(vi.name(), axis, d, dims) {
                        inputs::AxisSize::Fixed(n) => n,
                        inputs::AxisSize::Bound(n) => {
                            bound = true;
                            n
                        }
                        inputs::AxisSize::Unbound => 1,
                    },
                )
                .collect();
            if bound {
                let dtype = crate::proto::tensor_proto::DataType::try_from(tt.elem_type())
                    .unwrap_or(crate::proto::tensor_proto::DataType::Undefined);
                inputs::check_sample_size(vi.name(), &shape, dtype, false)?;
            }
        }
        return Ok(());
    }
    unknown.sort();
    // An axis the model fixes, named by axis: said so (it read as a name
    // the model lacks).
    for k in &unknown {
        let Some((input, axis)) = k.rsplit_once(':') else {
            continue;
        };
        let Ok(axis) = axis.parse::<usize>() else {
            continue;
        };
        let size = model
            .graph
            .rest
            .input
            .iter()
            .find(|vi| vi.name() == input)
            .and_then(inputs::fixed_dims)
            .and_then(|d| d.get(axis).copied().flatten());
        if let Some(v) = size {
            anyhow::bail!(
                "--dim {k}={}: input '{input}' has a fixed size of {v} on axis {axis} (the model fixes it); --dim binds only dims without a size",
                dims[*k]
            );
        }
    }
    let names: Vec<String> = unknown.iter().map(|k| format!("'{k}'")).collect();
    let listed: Vec<String> = free
        .iter()
        .map(|(k, a)| match a.as_slice() {
            [] => k.clone(),
            a => format!("{k} (or by axis: {})", a.join(", ")),
        })
        .collect();
    anyhow::bail!(
        "--dim {}: the model has no input dim of that name; its dims without a size: {}",
        names.join(", "),
        if listed.is_empty() {
            "none".to_string()
        } else {
            listed.join(", ")
        }
    )
}

/// Bind the input dims left without a size (no `--dim`, no `--inputs`) to
/// sizes the model is used at and tract can analyse (one analysis per size
/// tried: no plan, except that specialising a model with If runs tract).
/// Each dim takes one role from every input that uses it: a batch (named so,
/// or leading every input of rank 2 or more) is 1; an image's height and
/// width are 64 (rank 4, float or uint8, 1, 3 or 4 channels on axis 1 or 3,
/// or a dim named like a height or width), or the size the producer
/// documents ([`inputs::ProducerImages`]: an Ultralytics export's `imgsz`),
/// or, beside a fixed side, twice that side (a text line: at most 384);
/// the length of an integer input
/// (token ids) is 128, and so is a float input's dim named like a time or
/// sequence axis (time, seq, len or frame in its name, in a model with no
/// Loop); any other dim is 1. When tract cannot analyse the
/// model so, each dim alone goes through the other sizes of its kind, then
/// the other dims together through 16, 64, 256, 512, 1024 and 4096, until it
/// can. `opts.dims` binds the sizes chosen. With `reference`, a size is
/// tried by building the verification reference of `original` there (the
/// original planned and run, as verification would next), else by typing
/// it in tract. A model over 1 GiB of weights gets its first sizes where
/// verification's reference builds there (it is handed over, so this costs
/// no more than verification), and is otherwise left as bound.
pub fn settle_dims(original: &Model, opts: &mut VerifyOptions, reference: bool) -> Settled {
    settle_dims_within(original, opts, reference, super::ANALYSIS_MAX_BYTES)
}

/// [`settle_dims`], with `max_bytes` of weights as the size past which a
/// model is big. A dim a constant weight implies ([`implied_size`]) is
/// bound to that size first, and said in a note.
fn settle_dims_within(
    original: &Model,
    opts: &mut VerifyOptions,
    reference: bool,
    max_bytes: u64,
) -> Settled {
    if opts.inputs.is_some() {
        return Settled::default();
    }
    let weights = WeightDims::of(original);
    let mut implied_notes = Vec::new();
    for (key, (size, reader, axis_key)) in weights.sizes {
        if opts.dims.contains_key(&key) || opts.dims.contains_key(&axis_key) {
            continue;
        }
        implied_notes.push(format!(
            "input dim '{key}' set to {size}, as the weight of {reader} requires (bind it with --dim {key}=SIZE)"
        ));
        opts.dims.insert(key, size);
    }
    let mut settled = settle_free_dims(original, opts, reference, max_bytes, &weights.sequences);
    settled.notes.splice(0..0, implied_notes);
    // Where no size was tried (a big model), or none fitted, the dims named
    // by expressions still follow the others.
    bind_expressions(original, opts);
    settled
}

/// Each input dim named by an expression of other dims ([`DimExpr`]) and
/// not yet bound, bound to its value at the sizes `opts` binds (1 for a
/// dim left unbound), where that is not 1.
fn bind_expressions(original: &Model, opts: &mut VerifyOptions) {
    let names: Vec<String> = original
        .graph
        .rest
        .input
        .iter()
        .flat_map(inputs::free_dims)
        .map(|(key, _)| key)
        .collect();
    for key in &names {
        if opts.dims.contains_key(key) {
            continue;
        }
        let value = DimExpr::of(key, &names, &opts.dims).and_then(|e| e.eval(&opts.dims));
        if let Some(v) = value.filter(|&v| v != 1) {
            opts.dims.insert(key.clone(), v);
        }
    }
}

/// What the constant weights of the layers an input reaches say of its
/// unbound dims. An input's axis is followed, unchanged, through Unsqueeze,
/// Squeeze (of other axes), Transpose and element-wise ops to the layers
/// that read it.
#[derive(Default)]
struct WeightDims {
    /// Sizes implied, keyed like `--dim`, with the reader named: the
    /// reduction of a MatMul or Gemm whose weight is a constant, the input
    /// size of an LSTM, GRU or RNN whose `W` is one. Any other size fails in
    /// every runtime (tract ran madmom's LSTMs at a width of 1 where their
    /// weights take 266, and onnxruntime refuses it). A dim two readers
    /// disagree on is left out; a name on several axes (PaddlePaddle's `?`
    /// for height and width) is bound by its axis key (`INPUT:AXIS`), the
    /// other axes left alone. With the axis key.
    sizes: std::collections::BTreeMap<String, (usize, String, String)>,
    /// Dims that are the sequence axis of an LSTM, GRU or RNN: a length of
    /// steps, not a batch, even on axis 0 (madmom's `[T, F]` inputs): at 1
    /// step verification checks no recurrence.
    sequences: std::collections::HashSet<String>,
}

impl WeightDims {
    fn of(model: &Model) -> WeightDims {
        let g = &model.graph;
        let mut found: std::collections::BTreeMap<String, Option<(usize, String, String)>> =
            Default::default();
        let mut sequences = std::collections::HashSet::new();
        let graph_inputs = || {
            g.rest
                .input
                .iter()
                .filter(|vi| !g.initializers.contains_key(vi.name()))
        };
        // How many axes each dim's key names, over every input.
        let mut uses: std::collections::HashMap<String, usize> = Default::default();
        for vi in graph_inputs() {
            for (key, _) in inputs::free_dims(vi) {
                *uses.entry(key).or_default() += 1;
            }
        }
        for vi in graph_inputs() {
            let Some(rank) = crate::ir::declared_rank(vi) else {
                continue;
            };
            for (name, axis) in inputs::free_dims(vi) {
                let axis_key = inputs::axis_dim_key(vi.name(), axis);
                let shared = uses.get(&name).is_some_and(|&n| n > 1);
                let key = if shared {
                    axis_key.clone()
                } else {
                    name.clone()
                };
                // (value, the axis there, its rank)
                let mut frontier = vec![(vi.name().to_string(), axis, rank)];
                let mut seen = std::collections::HashSet::new();
                while let Some((v, axis, r)) = frontier.pop() {
                    if !seen.insert(v.clone()) {
                        continue;
                    }
                    for id in g.consumers(&v) {
                        let n = &g.nodes[id].proto;
                        if n.input.first() != Some(&v) {
                            continue;
                        }
                        if let Some(size) = implied_size(g, n, axis, r) {
                            let reader = format!("{} '{}'", n.op_type(), g.nodes[id].label());
                            let entry = found.entry(key.clone()).or_insert(Some((
                                size,
                                reader,
                                axis_key.clone(),
                            )));
                            if entry.as_ref().is_some_and(|(s, _, _)| *s != size) {
                                *entry = None;
                            }
                            continue;
                        }
                        if is_sequence_axis(n, axis, r) {
                            if !shared {
                                sequences.insert(key.clone());
                            }
                            continue;
                        }
                        let next = carried_axis(model, n, axis, r);
                        let out = n.output.first();
                        if let (Some((axis, r)), Some(out)) = (next, out) {
                            frontier.push((out.clone(), axis, r));
                        }
                    }
                }
            }
        }
        WeightDims {
            sizes: found
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect(),
            sequences,
        }
    }
}

/// The size the constant weight of `n` requires of the `axis` of its first
/// input (of rank `rank`): a MatMul's or Gemm's reduction (its last axis),
/// an LSTM's, GRU's or RNN's input size (axis 2 in either layout).
fn implied_size(
    g: &crate::ir::Graph,
    n: &crate::proto::NodeProto,
    axis: usize,
    rank: usize,
) -> Option<usize> {
    use crate::passes::quant::set_flag;
    let weight = |dims: usize| {
        n.input
            .get(1)
            .and_then(|w| g.constant(w))
            .filter(|t| t.dims.len() == dims)
    };
    let last = axis + 1 == rank;
    let size = match n.op_type() {
        "MatMul" if last => weight(2)?.dims[0],
        "Gemm" if last && rank == 2 && !set_flag(n, "transA") => {
            weight(2)?.dims[usize::from(set_flag(n, "transB"))]
        }
        "LSTM" | "GRU" | "RNN" if rank == 3 && axis == 2 => weight(3)?.dims[2],
        _ => return None,
    };
    usize::try_from(size).ok()
}

/// Whether `axis` of the first input of `n` is an LSTM's, GRU's or RNN's
/// sequence axis (0, or 1 with `layout` 1).
fn is_sequence_axis(n: &crate::proto::NodeProto, axis: usize, rank: usize) -> bool {
    matches!(n.op_type(), "LSTM" | "GRU" | "RNN")
        && rank == 3
        && axis == usize::from(crate::ir::int_attr(n, "layout", 0) != 0)
}

/// Where `axis` of the first input of `n` (of rank `rank`) is in its first
/// output, unchanged, and that output's rank: through an Unsqueeze or a
/// Squeeze of other axes, a Transpose, and element-wise ops.
fn carried_axis(
    model: &Model,
    n: &crate::proto::NodeProto,
    axis: usize,
    rank: usize,
) -> Option<(usize, usize)> {
    // The axes of an Unsqueeze or a Squeeze: its input 1, or its attribute
    // before opset 13.
    let raw = || match n.input.get(1) {
        Some(a) => super::unroll::constant_ints(model, a),
        None => n
            .attribute
            .iter()
            .find(|a| a.name() == "axes")
            .map(|a| a.ints.clone()),
    };
    // Counted from 0 in `rank` axes.
    let normalised = |raw: &[i64], rank: usize| -> Option<Vec<usize>> {
        raw.iter()
            .map(|&a| {
                let a = if a < 0 { a + rank as i64 } else { a };
                usize::try_from(a).ok().filter(|&a| a < rank)
            })
            .collect()
    };
    match n.op_type() {
        // The input's axes keep their order among the new ones.
        "Unsqueeze" => {
            let raw = raw()?;
            let to = rank + raw.len();
            let a = normalised(&raw, to)?;
            let kept: Vec<usize> = (0..to).filter(|i| !a.contains(i)).collect();
            kept.get(axis).map(|&i| (i, to))
        }
        "Squeeze" => {
            let a = normalised(&raw()?, rank)?;
            (!a.is_empty() && !a.contains(&axis)).then(|| {
                (
                    axis - a.iter().filter(|&&x| x < axis).count(),
                    rank - a.len(),
                )
            })
        }
        // Where `perm` (reversed axes without one) puts it: tf2onnx writes
        // a Keras LSTM's `[batch, steps, features]` input transposed to the
        // ONNX LSTM's `[steps, batch, features]`.
        "Transpose" => {
            let perm: Vec<i64> = match n.attribute.iter().find(|a| a.name() == "perm") {
                Some(a) => a.ints.clone(),
                None => (0..rank as i64).rev().collect(),
            };
            (perm.len() == rank)
                .then(|| perm.iter().position(|&p| p == axis as i64))
                .flatten()
                .map(|to| (to, rank))
        }
        "Identity" | "Cast" | "Relu" | "Abs" | "Neg" | "Sigmoid" | "Tanh" | "Exp" | "Log"
        | "Sqrt" | "Dropout" | "LeakyRelu" | "Elu" | "Clip" => Some((axis, rank)),
        _ => None,
    }
}

/// One unbound dim of the inputs and every use of it ([`free_dim_uses`]
/// lists them in order of first use): a dim shared by several inputs (an
/// image and its integer mask) takes one role from all of them.
struct Seen {
    key: String,
    named_batch: bool,
    named_size: bool,
    /// Named like a time or sequence axis.
    named_sequence: bool,
    leading: bool,
    /// The samples' axis of an input that holds audio
    /// ([`inputs::audio_axis`]).
    audio: bool,
    /// The samples' axis of a streaming model's waveform
    /// ([`Role::Chunk`]).
    chunk: bool,
    /// A non-leading axis of an input named like a mask: the positions
    /// of a sequence or set the mask selects.
    masked: bool,
    image: bool,
    integer: bool,
    /// The sizes the producer documents for the image axes it is
    /// (height, width).
    documented: Vec<usize>,
    /// The fixed size of the other image axis of an input, where that
    /// one has a size ([`LINE_ASPECT`]).
    beside: Option<usize>,
}

impl Seen {
    /// The role of this dim: `sequences` are the dims an LSTM reads as its
    /// steps, `loops` whether the model holds a Loop.
    fn role(&self, sequences: &std::collections::HashSet<String>, loops: bool) -> Role {
        // A streaming waveform's samples are a chunk, even where an
        // LSTM reads them as its steps.
        if self.chunk && !self.named_batch {
            Role::Chunk
        } else if sequences.contains(&self.key) && !self.named_batch {
            Role::Sequence
        } else if self.named_batch || (self.leading && !self.named_size) {
            Role::Batch
        } else if self.audio {
            Role::Audio
        } else if (self.image && !self.named_sequence) || self.named_size {
            // A 4-D float input's axis named like a sequence is none of
            // an image's sides (a decoder's cached keys and values:
            // [batch, heads, past_sequence_length, head_size]).
            Role::Image
        } else if self.integer {
            Role::Tokens
        } else if (self.named_sequence || self.masked) && !loops {
            Role::Sequence
        } else {
            Role::Length
        }
    }
}

/// The unbound dims of `original`'s inputs that `opts` does not bind, each
/// with every use of it (documented image sizes from `producer`), and the
/// `INPUT:AXIS` keys of names on several axes of one input.
fn free_dim_uses(
    original: &Model,
    opts: &VerifyOptions,
    producer: Option<&inputs::ProducerImages>,
) -> (Vec<Seen>, std::collections::HashMap<String, Vec<String>>) {
    let streaming = !inputs::state_pairs(&original.graph).is_empty();
    let documented = producer.and_then(|p| p.size);
    let mut seen: Vec<Seen> = Vec::new();
    // The `INPUT:AXIS` keys of names on several axes of one input.
    let mut axes: std::collections::HashMap<String, Vec<String>> = Default::default();
    for vi in &original.graph.rest.input {
        if original.graph.initializers.contains_key(vi.name()) {
            continue;
        }
        let image_axes = inputs::image_axes(vi);
        // A 16-bit signal's samples are a length, as a float signal's.
        let integer = is_integer(vi) && !inputs::is_pcm_input(&original.graph, vi);
        let audio = inputs::audio_axis(&original.graph, vi);
        let chunk = streaming && inputs::waveform(&original.graph, vi);
        let rank = crate::ir::declared_rank(vi).unwrap_or(0);
        for (key, keys) in inputs::repeated_dims(vi) {
            axes.entry(key).or_default().extend(keys);
        }
        for (key, axis) in inputs::free_dims(vi) {
            let by_axis = inputs::axis_dim_key(vi.name(), axis);
            if opts.dims.contains_key(&key) || opts.dims.contains_key(&by_axis) {
                continue;
            }
            let lower = key.to_lowercase();
            let named = key != by_axis;
            let i = match seen.iter().position(|s| s.key == key) {
                Some(i) => i,
                None => {
                    seen.push(Seen {
                        key: key.clone(),
                        named_batch: named && lower.contains("batch"),
                        named_size: named && (lower.contains("height") || lower.contains("width")),
                        named_sequence: named
                            && ["time", "seq", "frame", "len"]
                                .iter()
                                .any(|w| lower.contains(w)),
                        leading: true,
                        audio: false,
                        chunk: false,
                        masked: false,
                        image: false,
                        integer: false,
                        documented: vec![],
                        beside: None,
                    });
                    seen.len() - 1
                }
            };
            let s = &mut seen[i];
            let leading = axis == 0 && rank >= 2;
            // `N`, `B` or `bs` is a batch on a leading axis; on another one
            // (`waveforms: [batch_size, N]`) it is a length.
            s.named_batch |= named && leading && matches!(lower.as_str(), "n" | "b" | "bs");
            // Axis 0 of a tensor of rank 2 or more: a batch, unless some
            // other use says otherwise.
            s.leading &= leading;
            s.audio |= audio == Some(axis);
            // A waveform's one free axis past its batch is its samples'.
            s.chunk |= chunk && !leading;
            s.masked |= inputs::mask_name(vi.name()) && !leading;
            s.image |= image_axes.contains(&axis);
            s.integer |= integer;
            if let (Some(size), Some(pos)) =
                (documented, image_axes.iter().position(|&a| a == axis))
            {
                s.documented.push(size[pos]);
            }
            let other = image_axes
                .contains(&axis)
                .then(|| image_axes.iter().find(|&&a| a != axis))
                .flatten();
            if let Some(&other) = other {
                let fixed = inputs::fixed_dims(vi).and_then(|d| d.get(other).copied().flatten());
                if let Some(v) = fixed {
                    s.beside = Some(s.beside.map_or(v as usize, |b| b.max(v as usize)));
                }
            }
        }
    }
    (seen, axes)
}

/// The note where tract typed the model at no size tried (`untyped`: why,
/// at each; `keys`: the dims tried): the op tract lacks, or the form of an
/// op it refuses, where the last size tried met one (no size changes that:
/// the tries stop there), else a Loop left at every size. Why, as tract
/// says it (verification, where it runs, says it again at the size it
/// runs; `--no-verify` does not).
fn no_size_fits(untyped: &[super::Untyped], keys: &[&str]) -> String {
    let loop_left = untyped
        .iter()
        .all(|u| u.loop_left.is_some())
        .then(|| untyped.first().and_then(|u| u.loop_left.clone()))
        .flatten();
    let lacked = untyped.last().and_then(|u| u.unimplemented.clone());
    let unsupported = untyped.last().and_then(|u| u.unsupported.clone());
    match (loop_left, lacked, unsupported) {
        // An op tract lacks: no size helps.
        (_, Some(op), _) => format!(
            "tract has no implementation of {op}, which the model uses, at any input size: binding {} with --dim will not help",
            keys.join(", ")
        ),
        // A form of an op tract refuses: neither does.
        (None, None, Some(why)) => format!(
            "tract does not support a form of an op the model uses, at any input size ({why}): binding {} with --dim, or passing --inputs, will not help; `--no-verify` writes the result unverified",
            keys.join(", ")
        ),
        // Sizes only help where its trip count follows them.
        (Some(why), None, _) => format!(
            "a Loop is left that tract cannot run at every input size tried for {} ({why}): binding them with --dim helps only where its trip count follows them",
            keys.join(", ")
        ),
        (None, None, None) => format!(
            "tract cannot analyse the model at any input size tried for {}: bind them with --dim, or pass --inputs",
            keys.join(", ")
        ),
    }
}

/// [`settle_dims_within`] for the dims nothing implies.
fn settle_free_dims(
    original: &Model,
    opts: &mut VerifyOptions,
    reference: bool,
    max_bytes: u64,
    sequences: &std::collections::HashSet<String>,
) -> Settled {
    // Analysing a model in tract copies its weights: past this size only the
    // first sizes are tried, by building the reference verification reuses;
    // where they do not fit, the dims stay as bound (1 otherwise), and the
    // report says how to bind them.
    let big = original.weight_bytes() > max_bytes;
    if big && !reference {
        return Settled::default();
    }
    let producer = inputs::ProducerImages::of(original);
    let (seen, axes) = free_dim_uses(original, opts, producer.as_ref());
    // An image dim the producer documents one size for starts at it; one
    // beside a fixed side, at a line's width.
    let documents =
        |s: &Seen| !s.documented.is_empty() && s.documented.iter().all(|&v| v == s.documented[0]);
    let lines: std::collections::HashMap<String, usize> = seen
        .iter()
        .filter(|s| s.image && !documents(s))
        .filter_map(|s| {
            let line = LINE_ASPECT
                .saturating_mul(s.beside?)
                .clamp(IMAGE_SIZE, LINE_MAX);
            (line != IMAGE_SIZE).then(|| (s.key.clone(), line))
        })
        .collect();
    let first_size: std::collections::HashMap<String, usize> = seen
        .iter()
        .filter(|s| documents(s))
        .map(|s| (s.key.clone(), s.documented[0]))
        .chain(lines.clone())
        .collect();
    let loops = super::has_loop(original);
    let mut free: Vec<(String, Role)> = seen
        .into_iter()
        .map(|s| {
            let role = s.role(sequences, loops);
            (s.key, role)
        })
        .collect();
    // A dim named by an expression of others (a decoder's
    // `past_sequence_length + sequence_length`, its attention mask's
    // length) is computed from them, never chosen on its own.
    let names: Vec<String> = free.iter().map(|(k, _)| k.clone()).collect();
    let derived: Vec<String> = names
        .iter()
        .filter(|k| DimExpr::of(k, &names, &opts.dims).is_some())
        .cloned()
        .collect();
    // Batch dims stay at 1, unless nothing fits there.
    let batches: Vec<String> = free
        .iter()
        .filter(|(k, r)| *r == Role::Batch && !derived.contains(k))
        .map(|(k, _)| k.clone())
        .collect();
    free.retain(|(k, r)| *r != Role::Batch && !derived.contains(k));
    if free.is_empty() && derived.is_empty() && (batches.is_empty() || big) {
        return Settled::default();
    }
    let first = |k: &String, r: Role| match r {
        Role::Image => first_size.get(k).copied().unwrap_or(r.sizes().0),
        Role::Length if loops => LOOP_LENGTH,
        _ => r.sizes().0,
    };
    let with = |set: &[(&String, usize)]| {
        let mut o = opts.clone();
        // A dim left at 1 stays unbound: input_specs then notes it.
        for (k, r) in &free {
            if first(k, *r) != 1 {
                o.dims.insert(k.clone(), first(k, *r));
            }
        }
        for &(k, v) in set {
            o.dims.insert(k.clone(), v);
        }
        bind_expressions(original, &mut o);
        o
    };
    let mut tries: Vec<Vec<(&String, usize)>> = vec![vec![]];
    for (k, r) in &free {
        tries.extend(r.sizes().1.iter().map(|&v| vec![(k, v)]));
    }
    let lengths: Vec<&String> = free
        .iter()
        .filter(|(_, r)| *r == Role::Length)
        .map(|(k, _)| k)
        .collect();
    if big {
        tries.truncate(1);
    } else if lengths.len() > 1 {
        tries.extend(
            LENGTH_SIZES
                .iter()
                .map(|&v| lengths.iter().map(|&k| (k, v)).collect()),
        );
    }
    if !big {
        tries.extend(
            BATCH_SIZES
                .iter()
                .filter(|_| !batches.is_empty())
                .map(|&v| batches.iter().map(|k| (k, v)).collect()),
        );
    }
    let batch_of = |set: &[(&String, usize)]| {
        set.iter()
            .find(|(k, _)| batches.contains(k))
            .map(|&(_, v)| v)
    };
    // Sizes where the model runs but every output is empty (a spectrogram
    // of one audio sample has no frame): verification would compare
    // nothing, and calibration measure nothing. Other lengths are tried;
    // the first such sizes are kept where none gives an output.
    let mut empty: Option<(VerifyOptions, Option<Box<Reference>>)> = None;
    let settle = |o: &VerifyOptions, built: Option<Box<Reference>>, empty_at_one: bool| {
        let documented = producer
            .as_ref()
            .filter(|_| {
                let mut images = free.iter().filter(|(_, r)| *r == Role::Image).peekable();
                images.peek().is_some()
                    && images
                        .all(|(k, _)| first_size.get(k).is_some_and(|v| o.dims.get(k) == Some(v)))
            })
            .map(|p| p.producer);
        let mut notes = notes(
            &free,
            &o.dims,
            &axes,
            documented,
            &lines,
            empty_at_one,
            loops,
        );
        for k in &derived {
            if let Some(v) = o.dims.get(k) {
                notes.push(format!(
                    "input dim '{k}' set to {v}, computed from the dims it names"
                ));
            }
        }
        Settled {
            notes,
            reference: built.map(|r| *r),
        }
    };
    // Why tract could not type the model at each size tried where it
    // could not.
    let mut untyped: Vec<super::Untyped> = Vec::new();
    for set in &tries {
        // No size helps where tract lacks an op or refuses a form of one
        // (below), and no batch where it leaves a Loop (verification says
        // why).
        if batch_of(set).is_some() && untyped.iter().any(|u| u.loop_left.is_some()) {
            break;
        }
        let o = with(set);
        let tried = if reference {
            Reference::trial(original, &o)
        } else {
            types_in_tract(original, &o)
        };
        match tried {
            // Only a length can be the cause (an image detector may find
            // nothing in noise at any size).
            Trial::Empty(built) if !lengths.is_empty() => {
                if empty.is_none() {
                    empty = Some((o, built));
                }
            }
            Trial::Fits(built) | Trial::Empty(built) => {
                let mut s = settle(&o, built, empty.is_some());
                if let Some(b) = batch_of(set) {
                    let named: Vec<String> = batches.iter().map(|k| format!("'{k}'")).collect();
                    let bind: Vec<String> =
                        batches.iter().map(|k| format!("--dim {k}=SIZE")).collect();
                    s.notes.push(format!(
                        "batch dim(s) {} set to {b}: tract cannot analyse the model at a batch of {} (bind them with {})",
                        named.join(", "),
                        match b {
                            2 => "1".to_string(),
                            4 => "1 or 2".to_string(),
                            b => format!("1, 2 or {}", b / 2),
                        },
                        bind.join(" ")
                    ));
                }
                *opts = o;
                return s;
            }
            Trial::Untyped(why) => {
                // An op tract lacks, or a form of one it refuses, is
                // refused at any size: each further try would only parse
                // the model again (a 194 MB tree ensemble with a ZipMap
                // tract lacks: sizes chosen in 12.1 s before, 9.7 s now).
                // (Unless an earlier size typed: then sizes do matter.)
                let settled =
                    empty.is_none() && (why.unimplemented.is_some() || why.unsupported.is_some());
                untyped.push(why);
                if settled {
                    break;
                }
            }
            // Not a question of sizes: tract cannot load the model.
            Trial::Unloadable | Trial::NoInputs => return Settled::default(),
        }
    }
    let keys: Vec<&str> = free
        .iter()
        .map(|(k, _)| k.as_str())
        .chain(batches.iter().filter(|_| !big).map(String::as_str))
        .collect();
    if let Some((o, built)) = empty {
        let mut s = settle(&o, built, false);
        *opts = o;
        s.notes.push(format!(
            "every output of the model is empty at each input size tried for {}: verification compares nothing there; bind them with --dim, or pass --inputs",
            keys.join(", ")
        ));
        return s;
    }
    if big {
        return Settled::default();
    }
    let note = no_size_fits(&untyped, &keys);
    Settled {
        notes: vec![note],
        reference: None,
    }
}

/// A dim named by an expression of other dims and integers: a sum of
/// products, `past_sequence_length + sequence_length`, `sequence - 1`,
/// `2*len` (what exporters write for a size computed from others).
#[derive(Debug, PartialEq)]
struct DimExpr {
    /// Each term's sign, and its factors: a dim's name or an integer.
    terms: Vec<(i64, Vec<Factor>)>,
}

#[derive(Debug, PartialEq)]
enum Factor {
    Dim(String),
    Int(i64),
}

impl DimExpr {
    /// `key` as an expression of the input dims `names` (bound or not) and
    /// of those `dims` binds ([`DimExpr::parse`]).
    fn of(
        key: &str,
        names: &[String],
        dims: &std::collections::HashMap<String, usize>,
    ) -> Option<DimExpr> {
        DimExpr::parse(key, &|n| {
            names.iter().any(|k| k == n) || dims.contains_key(n)
        })
    }

    /// `key` as an expression of at least one operator over dims that
    /// `is_dim` knows and integers; `None` for a plain name, or where any
    /// part is neither.
    fn parse(key: &str, is_dim: &dyn Fn(&str) -> bool) -> Option<DimExpr> {
        if !key.contains(['+', '-', '*']) {
            return None;
        }
        let mut terms = Vec::new();
        let mut sign = 1;
        let mut rest = key;
        loop {
            let end = rest.find(['+', '-']).unwrap_or(rest.len());
            let factors = rest[..end]
                .split('*')
                .map(|f| {
                    let f = f.trim();
                    match f.parse::<i64>() {
                        Ok(v) => Some(Factor::Int(v)),
                        Err(_) if is_dim(f) => Some(Factor::Dim(f.to_string())),
                        Err(_) => None,
                    }
                })
                .collect::<Option<Vec<_>>>()?;
            terms.push((sign, factors));
            let Some(op) = rest[end..].chars().next() else {
                break;
            };
            sign = if op == '-' { -1 } else { 1 };
            rest = &rest[end + 1..];
        }
        Some(DimExpr { terms })
    }

    /// Its value with the dims of `dims` (1 for one left unbound); `None`
    /// where it is not positive.
    fn eval(&self, dims: &std::collections::HashMap<String, usize>) -> Option<usize> {
        let mut sum = 0i64;
        for (sign, factors) in &self.terms {
            let mut product = *sign;
            for f in factors {
                let v = match f {
                    Factor::Int(v) => *v,
                    Factor::Dim(d) => i64::try_from(dims.get(d).copied().unwrap_or(1)).ok()?,
                };
                product = product.checked_mul(v)?;
            }
            sum = sum.checked_add(product)?;
        }
        usize::try_from(sum).ok().filter(|&v| v > 0)
    }
}

/// What the report says about the sizes chosen for `free` dims.
fn notes(
    free: &[(String, Role)],
    dims: &std::collections::HashMap<String, usize>,
    axes: &std::collections::HashMap<String, Vec<String>>,
    documented: Option<&str>,
    lines: &std::collections::HashMap<String, usize>,
    empty_at_one: bool,
    loops: bool,
) -> Vec<String> {
    let of = |role: Role| -> Vec<String> {
        free.iter()
            .filter(|(k, r)| *r == role && dims.get(k).is_some_and(|&v| v != 1))
            .map(|(k, _)| format!("'{k}' = {}", dims[k]))
            .collect()
    };
    let first = |role: Role| {
        free.iter()
            .find(|(_, r)| *r == role)
            .map_or("", |(k, _)| k.as_str())
    };
    let mut out = Vec::new();
    for (role, what) in [
        (Role::Image, "image size"),
        (Role::Tokens, "token sequence length"),
        (Role::Sequence, "sequence length"),
        (Role::Audio, "audio length (samples)"),
        (Role::Chunk, "audio chunk (samples)"),
    ] {
        let set = of(role);
        if set.is_empty() {
            continue;
        }
        // One name on several axes (PaddlePaddle's `?` for both height and
        // width) binds them together: each axis has its own key too.
        let shared: Vec<String> = free
            .iter()
            .filter(|(k, r)| *r == role && axes.contains_key(k))
            .flat_map(|(k, _)| axes[k].iter().map(|a| format!("--dim {a}=SIZE")))
            .collect();
        let how = if shared.is_empty() {
            format!("--dim {}=SIZE", first(role))
        } else {
            shared.join(" ")
        };
        let source = match (role, documented) {
            (Role::Image, Some(p)) => {
                format!(
                    ", from the {p} model's metadata 'imgsz' (at most {})",
                    inputs::MAX_DOCUMENTED_IMAGE
                )
            }
            (Role::Image, None) if lines.iter().any(|(k, &v)| dims.get(k) == Some(&v)) => {
                format!(
                    " ({LINE_ASPECT} times the fixed side beside it, as a text line's width; at most {LINE_MAX})"
                )
            }
            _ => String::new(),
        };
        out.push(format!(
            "{what} not set: {}{source} (bind with {how} for the size it is used at)",
            set.join(", ")
        ));
    }
    for (k, r) in free {
        if *r == Role::Length && dims.get(k).is_some_and(|&v| v != 1) {
            let why = if loops && dims[k] == LOOP_LENGTH {
                "the model holds a Loop, and a length of 1 would run it once, which checks no recurrence"
            } else if empty_at_one {
                "every output of the model is empty at 1"
            } else {
                "tract cannot analyse the model at 1"
            };
            out.push(format!(
                "input dim '{k}' set to {}: {why} (bind it with --dim {k}=SIZE)",
                dims[k]
            ));
        }
    }
    out
}

/// Whether `vi` holds integers (token ids, masks, indices).
fn is_integer(vi: &ValueInfoProto) -> bool {
    let Some(tt) = crate::ir::tensor_type(vi) else {
        return false;
    };
    DataType::try_from(tt.elem_type()).is_ok_and(inputs::is_integer)
}

/// Whether tract types and declutters `model` on the inputs `opts`
/// describes, as verification hands it over (specialised and lowered),
/// without planning or running it.
pub(super) fn types_in_tract(model: &Model, opts: &VerifyOptions) -> Trial {
    // Two samples tell a setting shared by all (split_fixed) from data.
    let opts = VerifyOptions {
        samples: opts.samples.min(2),
        ..opts.clone()
    };
    let Ok(inputs) = ReferenceInputs::new(model, &opts) else {
        return Trial::NoInputs;
    };
    let (fixed, run_samples) = split_fixed(has_if(model), &inputs.samples);
    let (proto, _) = match verification_copy(
        model,
        &inputs.specs,
        &inputs.samples[0],
        &fixed,
        &run_samples,
        super::reach::CutMode::Untyped,
        None,
    ) {
        Ok(copy) => copy,
        // Specialising folds with tract: a shape it cannot compute is one
        // it cannot type.
        Err(e) => return Trial::Untyped(super::Untyped::of(&e)),
    };
    match tract::analyses(&proto, &run_samples[0]) {
        Ok(Ok(false)) => Trial::Fits(None),
        Ok(Ok(true)) => Trial::Empty(None),
        Ok(Err(e)) => Trial::Untyped(super::Untyped::of(&e)),
        Err(_) => Trial::Unloadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::{typed_value, ModelBuilder};
    use crate::proto::tensor_shape_proto::dimension::Value as Dim;

    /// Where no size types, the note names the op tract lacks or the form
    /// it refuses where the last size tried met one (the tries stop
    /// there), a Loop left at every size; else it asks for sizes or inputs.
    #[test]
    fn the_note_where_no_size_types_names_what_no_size_changes() {
        let untyped =
            |loop_left: Option<&str>, op: Option<&str>, form: Option<&str>| super::super::Untyped {
                loop_left: loop_left.map(String::from),
                unimplemented: op.map(String::from),
                unsupported: form.map(String::from),
            };
        let keys = ["batch", "len"];
        let lacks = no_size_fits(&[untyped(None, Some("GRU"), None)], &keys);
        assert_eq!(
            lacks,
            "tract has no implementation of GRU, which the model uses, at any input size: binding batch, len with --dim will not help"
        );
        // A first size refused for something else, then the op lacking.
        let later = no_size_fits(
            &[untyped(None, None, None), untyped(None, Some("GRU"), None)],
            &keys,
        );
        assert_eq!(later, lacks);
        // Refused at every size for no reason sizes cannot change.
        let neither = no_size_fits(
            &[untyped(None, None, None), untyped(None, None, None)],
            &keys,
        );
        assert!(
            neither.starts_with(
                "tract cannot analyse the model at any input size tried for batch, len: bind them"
            ),
            "{neither}"
        );
        let form = no_size_fits(
            &[untyped(None, None, Some("sequence_lens from an input"))],
            &keys,
        );
        assert!(
            form.contains("(sequence_lens from an input)") && form.contains("--no-verify"),
            "{form}"
        );
        let looped = no_size_fits(&[untyped(Some("its trip count"), None, None)], &keys);
        assert!(
            looped.starts_with("a Loop is left that tract cannot run"),
            "{looped}"
        );
    }

    /// A float sequence that cannot be analysed at 128 tries a longer
    /// length first, then shorter and longer in turn; token ids, shorter
    /// ones first (a model with fewer positions). Both cover the same
    /// lengths.
    #[test]
    fn sequences_try_longer_lengths_first_and_tokens_shorter() {
        let (first, seq) = Role::Sequence.sizes();
        let (token_first, tokens) = Role::Tokens.sizes();
        assert_eq!(first, token_first);
        assert!(seq[0] > first && seq[1] < first && seq[2] > seq[0]);
        assert!(tokens[0] < token_first);
        let sorted = |s: &[usize]| {
            let mut v = s.to_vec();
            v.sort_unstable();
            v
        };
        assert_eq!(sorted(seq), sorted(tokens));
    }

    /// Token ids [1, seq] looking up rows of a 10x4 table.
    fn token_model() -> Model {
        let table: Vec<f32> = (0..40).map(|i| i as f32).collect();
        let mut p = ModelBuilder::new(17)
            .init_f32("table", &[10, 4], &table)
            .node("lookup", "Gather", &["table", "ids"], &["y"])
            .output("y", &[1, 1, 4])
            .proto();
        let g = p.graph.as_mut().unwrap();
        let mut ids = typed_value("ids", DataType::Int64, &[1, 1]);
        if let Some(crate::proto::type_proto::Value::TensorType(t)) =
            ids.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.shape.as_mut().unwrap().dim[1].value = Some(Dim::DimParam("seq".into()));
        }
        g.input.push(ids);
        Model::from_proto(
            p,
            std::sync::Arc::new(crate::io::ExternalData::new(".".into())),
        )
        .unwrap()
    }

    /// A Keras LSTM as tf2onnx writes it (g2p-id's encoder): `x: [batch,
    /// steps, feat]` transposed to the LSTM's `[steps, batch, feat]`.
    /// `steps` is the LSTM's sequence (at 1, verification ran one step and
    /// checked no recurrence), `feat` its W's input size; the batch stays a
    /// batch.
    #[test]
    fn an_lstm_input_is_followed_through_a_transpose() {
        let lstm_w = vec![0.1f32; 4 * 2 * 6];
        let lstm_r = vec![0.1f32; 4 * 2 * 2];
        let mut p = ModelBuilder::new(17)
            .init_f32("lw", &[1, 8, 6], &lstm_w)
            .init_f32("lr", &[1, 8, 2], &lstm_r)
            .node_with(
                "t",
                "Transpose",
                &["x"],
                &["xt"],
                vec![crate::ir::builder::attr_ints("perm", &[1, 0, 2])],
            )
            .node_with(
                "l",
                "LSTM",
                &["xt", "lw", "lr"],
                &["ly"],
                vec![crate::ir::builder::attr_int("hidden_size", 2)],
            )
            .output("ly", &[])
            .proto();
        let g = p.graph.as_mut().unwrap();
        let mut vi = typed_value("x", DataType::Float, &[1, 1, 1]);
        if let Some(crate::proto::type_proto::Value::TensorType(t)) =
            vi.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            for (d, v) in t
                .shape
                .as_mut()
                .unwrap()
                .dim
                .iter_mut()
                .zip(["batch", "steps", "feat"])
            {
                d.value = Some(Dim::DimParam(v.into()));
            }
        }
        g.input.push(vi);
        let m = Model::from_proto(
            p,
            std::sync::Arc::new(crate::io::ExternalData::new(".".into())),
        )
        .unwrap();
        let found = WeightDims::of(&m);
        assert_eq!(found.sequences.iter().collect::<Vec<_>>(), ["steps"]);
        assert_eq!(found.sizes.get("feat").map(|s| s.0), Some(6));
        let mut opts = VerifyOptions::default();
        settle_dims_within(&m, &mut opts, false, u64::MAX);
        assert_eq!(opts.dims.get("steps"), Some(&128), "{:?}", opts.dims);
        assert_eq!(opts.dims.get("batch"), None, "{:?}", opts.dims);
        // Without `perm`, the axes reversed: `[feat, batch, steps]` is
        // `[steps, batch, feat]` to the LSTM.
        let mut p = m.to_proto();
        let g = p.graph.as_mut().unwrap();
        g.node[0].attribute.clear();
        if let Some(crate::proto::type_proto::Value::TensorType(t)) =
            g.input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            for (d, v) in t
                .shape
                .as_mut()
                .unwrap()
                .dim
                .iter_mut()
                .zip(["feat", "batch", "steps"])
            {
                d.value = Some(Dim::DimParam(v.into()));
            }
        }
        let m = Model::from_proto(
            p,
            std::sync::Arc::new(crate::io::ExternalData::new(".".into())),
        )
        .unwrap();
        let found = WeightDims::of(&m);
        assert_eq!(found.sequences.iter().collect::<Vec<_>>(), ["steps"]);
        assert_eq!(found.sizes.get("feat").map(|s| s.0), Some(6));
    }

    /// A streaming model's waveform that an LSTM reads as its steps
    /// (`x: [batch, steps]` unsqueezed and transposed to `[steps, batch,
    /// 1]`, the state `h` -> `hn`): beside a sample rate, `steps` is an
    /// audio chunk (512 samples); without one, the LSTM's sequence (128).
    #[test]
    fn a_streaming_waveform_an_lstm_steps_through_is_a_chunk() {
        let model = |rate: bool| {
            let mut p = ModelBuilder::new(17)
                .init_f32("lw", &[1, 8, 1], &[0.1; 8])
                .init_f32("lr", &[1, 8, 2], &[0.1; 16])
                .init(crate::ir::tensor::from_i64("ax", &[2]))
                .node("u", "Unsqueeze", &["x", "ax"], &["xu"])
                .node_with(
                    "t",
                    "Transpose",
                    &["xu"],
                    &["xt"],
                    vec![crate::ir::builder::attr_ints("perm", &[1, 0, 2])],
                )
                .node_with(
                    "l",
                    "LSTM",
                    &["xt", "lw", "lr", "", "", "h"],
                    &["ly", "hn"],
                    vec![crate::ir::builder::attr_int("hidden_size", 2)],
                )
                .output("ly", &[])
                .output("hn", &[])
                .proto();
            let g = p.graph.as_mut().unwrap();
            for (name, dims) in [("x", &["batch", "steps"][..]), ("h", &["1", "batch", "2"])] {
                let mut vi = typed_value(name, DataType::Float, &vec![1; dims.len()]);
                if let Some(crate::proto::type_proto::Value::TensorType(t)) =
                    vi.r#type.as_mut().and_then(|t| t.value.as_mut())
                {
                    for (d, v) in t.shape.as_mut().unwrap().dim.iter_mut().zip(dims) {
                        d.value = Some(match v.parse::<i64>() {
                            Ok(n) => Dim::DimValue(n),
                            Err(_) => Dim::DimParam(v.to_string()),
                        });
                    }
                }
                g.input.push(vi);
            }
            if rate {
                g.input.push(typed_value("sr", DataType::Int64, &[]));
            }
            Model::from_proto(
                p,
                std::sync::Arc::new(crate::io::ExternalData::new(".".into())),
            )
            .unwrap()
        };
        for (rate, role, size) in [
            (true, "audio chunk (samples)", 512),
            (false, "sequence length", 128),
        ] {
            let m = model(rate);
            assert!(WeightDims::of(&m).sequences.contains("steps"));
            let mut opts = VerifyOptions::default();
            let settled = settle_dims_within(&m, &mut opts, false, u64::MAX);
            assert_eq!(opts.dims.get("steps"), Some(&size), "{:?}", settled.notes);
            assert!(
                settled
                    .notes
                    .iter()
                    .any(|n| n.starts_with(&format!("{role} not set: 'steps' = {size}"))),
                "{:?}",
                settled.notes
            );
        }
    }

    /// `x` [1, feat] (and `s` [seq, feat2]) reaching a MatMul's reduction
    /// through a Relu (an LSTM's input through an Unsqueeze before the last
    /// axis): `feat` is bound to the weight's 5 rows (`feat2` to its W's
    /// input size, 6), with a note each, before anything runs; `seq` is
    /// the LSTM's steps.
    #[test]
    fn a_dim_a_constant_weight_implies_is_bound_to_its_size() {
        let w: Vec<f32> = (0..15).map(|i| i as f32).collect();
        let lstm_w = vec![0.1f32; 4 * 2 * 6];
        let lstm_r = vec![0.1f32; 4 * 2 * 2];
        let mut p = ModelBuilder::new(17)
            .init_f32("w", &[5, 3], &w)
            .init_f32("lw", &[1, 8, 6], &lstm_w)
            .init_f32("lr", &[1, 8, 2], &lstm_r)
            .node("r", "Relu", &["x"], &["xr"])
            .node("mm", "MatMul", &["xr", "w"], &["y"])
            .node("u", "Unsqueeze", &["s", "ax"], &["su"])
            .node_with(
                "l",
                "LSTM",
                &["su", "lw", "lr"],
                &["ly"],
                vec![crate::ir::builder::attr_int("hidden_size", 2)],
            )
            .output("y", &[1, 3])
            .output("ly", &[])
            .proto();
        let g = p.graph.as_mut().unwrap();
        for (name, dims) in [("x", ["1", "feat"]), ("s", ["seq", "feat2"])] {
            let mut vi = typed_value(name, DataType::Float, &[1, 1]);
            if let Some(crate::proto::type_proto::Value::TensorType(t)) =
                vi.r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                for (d, v) in t.shape.as_mut().unwrap().dim.iter_mut().zip(dims) {
                    if v != "1" {
                        d.value = Some(Dim::DimParam(v.into()));
                    }
                }
            }
            g.input.push(vi);
        }
        g.initializer.push(crate::ir::tensor::from_i64("ax", &[1]));
        let m = Model::from_proto(
            p,
            std::sync::Arc::new(crate::io::ExternalData::new(".".into())),
        )
        .unwrap();
        let mut opts = VerifyOptions::default();
        let settled = settle_dims_within(&m, &mut opts, false, 0);
        assert_eq!(opts.dims.get("feat"), Some(&5));
        assert_eq!(opts.dims.get("feat2"), Some(&6));
        assert_eq!(opts.dims.get("seq"), None, "not implied");
        // The LSTM's steps: a sequence, though on axis 0.
        let found = WeightDims::of(&m);
        assert!(found.sequences.contains("seq") && found.sequences.len() == 1);
        assert!(
            settled.notes[0].contains("'feat' set to 5, as the weight of MatMul 'mm' requires"),
            "{:?}",
            settled.notes
        );
        // A size the user binds wins.
        let mut bound = VerifyOptions::default();
        bound.dims.insert("feat".into(), 7);
        settle_dims_within(&m, &mut bound, false, 0);
        assert_eq!(bound.dims.get("feat"), Some(&7));

        // A name on both axes of `z`: its last axis alone is bound.
        let mut p = ModelBuilder::new(17)
            .init_f32("w", &[5, 3], &w)
            .node("mm", "MatMul", &["z", "w"], &["y"])
            .output("y", &[1, 3])
            .proto();
        let mut vi = typed_value("z", DataType::Float, &[1, 1]);
        if let Some(crate::proto::type_proto::Value::TensorType(t)) =
            vi.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            for d in &mut t.shape.as_mut().unwrap().dim {
                d.value = Some(Dim::DimParam("n".into()));
            }
        }
        p.graph.as_mut().unwrap().input.push(vi);
        let m = Model::from_proto(
            p,
            std::sync::Arc::new(crate::io::ExternalData::new(".".into())),
        )
        .unwrap();
        let mut opts = VerifyOptions::default();
        settle_dims_within(&m, &mut opts, false, 0);
        assert_eq!(opts.dims.get("z:1"), Some(&5));
        assert_eq!(opts.dims.get("n"), None);
    }

    /// A model analysed at no batch below 4 (it reshapes its squeezed
    /// scores into groups of four, as ICLabel's EEG classifier does) gets
    /// every batch dim raised at once, each input's of its own name, with
    /// a note naming them; one that fits at 1 keeps 1.
    #[test]
    fn batch_dims_are_raised_together_where_nothing_fits_at_1() {
        let model = |groups: i64| {
            let mut p = ModelBuilder::new(13)
                .node("add", "Add", &["a", "b"], &["s"])
                .node("sq", "Squeeze", &["s"], &["q"])
                .init(crate::proto::TensorProto {
                    name: Some("shape".into()),
                    data_type: Some(DataType::Int64 as i32),
                    dims: vec![2],
                    int64_data: vec![groups, -1],
                    ..Default::default()
                })
                .node("rs", "Reshape", &["q", "shape"], &["y"])
                .output("y", &[groups, 7])
                .proto();
            let g = p.graph.as_mut().unwrap();
            for (name, batch) in [("a", "a_dynamic_axes_1"), ("b", "b_dynamic_axes_1")] {
                let mut vi = typed_value(name, DataType::Float, &[1, 7]);
                if let Some(crate::proto::type_proto::Value::TensorType(t)) =
                    vi.r#type.as_mut().and_then(|t| t.value.as_mut())
                {
                    t.shape.as_mut().unwrap().dim[0].value = Some(Dim::DimParam(batch.into()));
                }
                g.input.push(vi);
            }
            Model::from_proto(
                p,
                std::sync::Arc::new(crate::io::ExternalData::new(".".into())),
            )
            .unwrap()
        };
        let mut opts = VerifyOptions::default();
        let settled = settle_dims(&model(4), &mut opts, false);
        assert_eq!(
            opts.dims.get("a_dynamic_axes_1"),
            Some(&4),
            "{:?}",
            opts.dims
        );
        assert_eq!(opts.dims.get("b_dynamic_axes_1"), Some(&4));
        assert!(
            settled.notes.iter().any(|n| n.starts_with(
                "batch dim(s) 'a_dynamic_axes_1', 'b_dynamic_axes_1' set to 4: tract cannot analyse the model at a batch of 1 or 2"
            )),
            "{:?}",
            settled.notes
        );
        let mut opts = VerifyOptions::default();
        let settled = settle_dims(&model(1), &mut opts, false);
        assert!(opts.dims.is_empty(), "{:?}", opts.dims);
        assert!(settled.notes.is_empty(), "{:?}", settled.notes);
    }

    /// A dim named by an expression of others (a decoder's cache and
    /// its mask) is computed from them: chosen on its own, the mask's
    /// length did not match the cache's and the new tokens' together.
    #[test]
    fn a_dim_named_by_an_expression_is_computed_from_the_others() {
        let mut p = ModelBuilder::new(17)
            .node_with(
                "cat",
                "Concat",
                &["past", "x"],
                &["all"],
                vec![crate::ir::builder::attr_int("axis", 1)],
            )
            .node("add", "Add", &["all", "bias"], &["y"])
            .init_f32("scale", &[4], &[2.0; 4])
            .node("mul", "Mul", &["y", "scale"], &["z"])
            .output("z", &[1, 1, 4])
            .proto();
        let g = p.graph.as_mut().unwrap();
        for (name, dim) in [
            ("past", "past_sequence_length"),
            ("x", "sequence_length"),
            ("bias", "past_sequence_length + sequence_length"),
        ] {
            let mut vi = typed_value(name, DataType::Float, &[1, 1, 4]);
            if let Some(crate::proto::type_proto::Value::TensorType(t)) =
                vi.r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                t.shape.as_mut().unwrap().dim[1].value = Some(Dim::DimParam(dim.into()));
            }
            g.input.push(vi);
        }
        let m = Model::from_proto(
            p,
            std::sync::Arc::new(crate::io::ExternalData::new(".".into())),
        )
        .unwrap();
        let mut opts = VerifyOptions::default();
        let settled = settle_dims(&m, &mut opts, false);
        let dim = |k: &str| opts.dims.get(k).copied().unwrap_or(1);
        assert_eq!(
            dim("past_sequence_length + sequence_length"),
            dim("past_sequence_length") + dim("sequence_length"),
            "{:?}",
            opts.dims
        );
        assert!(
            settled
                .notes
                .iter()
                .any(|n| n.contains("computed from the dims it names")),
            "{:?}",
            settled.notes
        );
        // With the user's sizes.
        let mut bound = VerifyOptions::default();
        bound.dims.insert("past_sequence_length".into(), 20);
        bound.dims.insert("sequence_length".into(), 16);
        settle_dims(&m, &mut bound, false);
        assert_eq!(
            bound.dims.get("past_sequence_length + sequence_length"),
            Some(&36)
        );
        // A model too big to try sizes on (no reference asked for): no size
        // is chosen, and the expression still follows the user's.
        let mut big = VerifyOptions::default();
        big.dims.insert("past_sequence_length".into(), 20);
        big.dims.insert("sequence_length".into(), 16);
        settle_dims_within(&m, &mut big, false, 0);
        assert_eq!(
            big.dims.get("past_sequence_length + sequence_length"),
            Some(&36)
        );
    }

    /// A 4-D float input's axis named like a sequence (a decoder's cached
    /// keys: [batch, heads, past_sequence_length, head_size], 4 heads
    /// looking like 4 channels) is sized as a sequence, not as an image's
    /// side.
    #[test]
    fn a_cached_sequence_axis_is_no_image_side() {
        let mut p = ModelBuilder::new(17)
            .node("r", "Relu", &["past_key"], &["y"])
            .output("y", &[1, 4, 1, 8])
            .proto();
        let mut vi = typed_value("past_key", DataType::Float, &[1, 4, 1, 8]);
        if let Some(crate::proto::type_proto::Value::TensorType(t)) =
            vi.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.shape.as_mut().unwrap().dim[2].value =
                Some(Dim::DimParam("past_sequence_length".into()));
        }
        p.graph.as_mut().unwrap().input.push(vi);
        let m = Model::from_proto(
            p,
            std::sync::Arc::new(crate::io::ExternalData::new(".".into())),
        )
        .unwrap();
        let mut opts = VerifyOptions::default();
        let settled = settle_dims(&m, &mut opts, false);
        assert!(
            settled
                .notes
                .iter()
                .any(|n| n.starts_with("sequence length not set: 'past_sequence_length'")),
            "{:?}",
            settled.notes
        );
    }

    #[test]
    fn dim_expressions_are_sums_of_products_of_dims_and_integers() {
        let known = |n: &str| ["a", "b", "seq len"].contains(&n);
        let dims: std::collections::HashMap<String, usize> =
            [("a".to_string(), 5), ("b".to_string(), 3)].into();
        let eval = |k: &str| DimExpr::parse(k, &known).and_then(|e| e.eval(&dims));
        assert_eq!(eval("a + b"), Some(8));
        assert_eq!(eval("a - 1"), Some(4));
        assert_eq!(eval("2*a + b*b - 1"), Some(18));
        // Unbound: 1.
        assert_eq!(eval("seq len + 1"), Some(2));
        assert_eq!(eval("b - a"), None, "not positive");
        assert!(DimExpr::parse("a", &known).is_none(), "a plain name");
        assert!(DimExpr::parse("seq-len", &known).is_none(), "not dims");
        assert!(DimExpr::parse("a + c", &known).is_none(), "c is no dim");
        assert!(DimExpr::parse("-1", &known).is_none());
    }

    /// A model past the size limit gets its first sizes where the reference
    /// verification reuses builds there (no other size is tried); typing
    /// alone, which would copy the weights for nothing, is not done.
    #[test]
    fn a_big_model_gets_its_first_sizes_from_the_reference_it_hands_over() {
        let m = token_model();
        let mut opts = VerifyOptions::default();
        let settled = settle_dims_within(&m, &mut opts, true, 0);
        assert_eq!(opts.dims.get("seq"), Some(&TOKEN_LENGTH));
        assert!(settled.reference.is_some());
        assert!(
            settled.notes[0].contains("'seq' = 128"),
            "{:?}",
            settled.notes
        );

        let mut typed = VerifyOptions::default();
        let settled = settle_dims_within(&m, &mut typed, false, 0);
        assert!(typed.dims.is_empty() && settled.notes.is_empty());
    }
}
