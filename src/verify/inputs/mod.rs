//! Inputs for verification: seeded random tensors that respect each input's
//! type and shape, or the user's `.npz` / `.npy` samples (`file`).

mod file;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use tract_onnx::prelude::*;

use crate::ir::Graph;
use crate::proto::{tensor_proto::DataType, tensor_shape_proto::dimension::Value as Dim};
pub use file::{check_inputs_file, load_samples};

/// One graph input as verification sees it.
#[derive(Debug, Clone)]
pub struct InputSpec {
    pub name: String,
    pub dtype: DataType,
    /// Concrete shape chosen for this run.
    pub shape: Vec<usize>,
    /// How random values of a float input are drawn.
    pub values: FloatValues,
    /// The fewest rows of a constant table the input indexes (a Gather
    /// reads it as indices, directly or through casts, reshapes and selections):
    /// random integers stay below it, where an id past the table's end
    /// would stop the run.
    pub index_rows: Option<i64>,
    /// Whether the input reaches those tables only through ops that pass
    /// its values on unchanged (no offset added, no wrap-around): its
    /// random ids may then span every row (see `id_range`).
    pub indexes_as_is: bool,
    /// The input, and its axis, whose length this integer input holds
    /// ([`length_of`]): every value is drawn as that axis's size.
    pub length_of: Option<(String, usize)>,
    /// The value of a setting (a scalar integer input) that the model
    /// compares with constants ([`compared_with`]): the first of them its
    /// type can hold, other than 0 and -1 (`SENTINELS`), a value the
    /// model names (silero's `sr == 16000`, its 16 kHz network), where a
    /// random one selects whatever its comparisons' false side computes.
    pub setting: Option<i64>,
    /// Every value of the setting that verification checks, each on
    /// samples of its own ([`ReferenceInputs::variant`]), `setting` first:
    /// the compared values, and where the model compares a sample rate
    /// with one rate alone, another common rate for the comparison's
    /// false side (silero's 8 kHz network beside its 16 kHz one); at most
    /// [`SETTING_VALUES_MAX`].
    ///
    /// [`ReferenceInputs::variant`]: crate::verify::ReferenceInputs::variant
    pub setting_values: Vec<i64>,
}

/// The most values of one setting that verification checks, each on
/// samples of its own: each costs the model's run on them again.
pub const SETTING_VALUES_MAX: usize = 3;

/// How random values of a float input are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloatValues {
    /// Standard normal: what normalised images, features and signals look
    /// like, and the default.
    #[default]
    Normal,
    /// Uniform in [0, 1): images their producer documents as scaled so
    /// (see [`ProducerImages`]).
    Unit,
    /// Standard normal and uniform in [0, 1) in turn (the first sample
    /// normal): images whose scaling the model does not document. Exporters
    /// of normalised images and of images divided by 255 look the same; a
    /// captcha reader that takes the latter, calibrated and verified on
    /// normal noise alone, saturated every softmax there (verification
    /// passed at cosine 1.0) and measured 0.46 on images in [0, 1).
    Mixed,
    /// Uniform in [0, 255): images whose first layer shows that it takes
    /// pixel values as they are, neither normalised nor divided by 255
    /// ([`pixel_values`]). YOLOX's detector in ddddocr, calibrated on normal
    /// and [0, 1) noise, verified at 0.9998 there and measured 0.947 on
    /// images of its own scale, its objectness column 0.07-0.12.
    Pixels,
    /// Float inputs named like masks ([`mask_name`]): all 1s, where a
    /// multiplicative mask keeps every position and an additive one (a bias
    /// of 0 or a large negative number, as some BERT exports take it)
    /// shifts every score alike, which a softmax does not see; normal noise
    /// is neither. A spatial mask (rank 4, height and width over 1: an
    /// inpainting model's) is 0s and 1s at random, where 1s everywhere
    /// would hide its image.
    Mask,
    /// A recurrent state's input ([`state_pairs`]): 0s, the state a stream
    /// starts from (the steps after the first take the state the step
    /// before computed).
    Zeros,
    /// A float input cast straight to integers that index a table (Keras
    /// embeddings take float ids): whole numbers below the table's rows
    /// ([`InputSpec::index_rows`]), drawn as the integer inputs are. Noise
    /// casts to a few ids around 0, and the negative ones, which the model
    /// wraps around, are none it is given.
    Ids,
    /// A float waveform ([`waveform`]: samples in [-1, 1] of a model that
    /// takes their sample rate): normal at a tenth of full scale, about -20
    /// dBFS, as speech is. Standard normal noise puts a third of its
    /// samples past full scale, where silero's LSTM cells saturate: in
    /// onnxruntime, over 20 chunks from a zero state, its int8 weights
    /// measured a state cosine of 0.82 at worst at 8 kHz (0.956 at 16 kHz),
    /// and 0.9945 (0.9903) at a tenth of full scale.
    Waveform,
}

/// The standard deviation of random float waveforms ([`FloatValues::Waveform`]):
/// a tenth of full scale, as [`PCM16_SIGMA`] is of 16-bit signals.
const WAVEFORM_SIGMA: f32 = 0.1;

/// The largest image height or width taken from a model's metadata.
pub const MAX_DOCUMENTED_IMAGE: usize = 640;

/// What a model's producer documents about its image inputs, read from the
/// model's metadata. Calibration ranges follow the inputs they are measured
/// on: a detector that takes images in [0, 1] calibrated on standard normal
/// noise gets ranges twice as wide as it meets in use, and one with a
/// dynamic size calibrated at 64x64 gets those of another scale (YOLOv8n at
/// 320x320 on images in [0, 1]: cosine 0.99992 calibrated on normal noise,
/// 0.99998 on uniform, against `quantize_dynamic`'s 0.99994).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerImages {
    /// Who documents it, for the report.
    pub producer: &'static str,
    /// Height and width the model was exported at.
    pub size: Option<[usize; 2]>,
}

impl ProducerImages {
    /// Ultralytics exports (YOLO detectors, segmenters, pose and
    /// classification models) take RGB images scaled to [0, 1] (their
    /// predictor divides by 255, with no other normalisation) and record the
    /// size they were exported at in `imgsz`, `[height, width]`, which a
    /// dynamic export does not fix in its input shape. `None` for any other
    /// model.
    pub fn of(model: &crate::ir::Model) -> Option<ProducerImages> {
        let meta = |k: &str| model.metadata(k);
        if meta("author") != Some("Ultralytics") {
            return None;
        }
        let size = meta("imgsz").and_then(|v| {
            let n: Vec<usize> = v
                .trim_matches(|c| c == '[' || c == ']' || c == '(' || c == ')')
                .split(',')
                .map(|x| x.trim().parse().ok())
                .collect::<Option<_>>()?;
            let [h, w] = match n[..] {
                [s] => [s, s],
                [h, w] => [h, w],
                _ => return None,
            };
            // A size from the file, capped: calibration's cost grows with
            // its square (YOLOv8n: 1 s at 320, 4 s at 640, 17 s at 1280).
            (h > 0 && w > 0).then(|| [h.min(MAX_DOCUMENTED_IMAGE), w.min(MAX_DOCUMENTED_IMAGE)])
        });
        Some(ProducerImages {
            producer: "Ultralytics",
            size,
        })
    }

    /// The float image inputs of `specs` ([`image_axes`]) drawn uniform in
    /// [0, 1) where `model` documents them so, uniform in [0, 255) where it
    /// takes pixel values as they are ([`pixel_values`]), else normal and
    /// uniform in turn ([`FloatValues::Mixed`]), with a note.
    pub fn apply(model: &crate::ir::Model, specs: &mut [InputSpec], notes: &mut Vec<String>) {
        let producer = ProducerImages::of(model);
        let image = |name: &str| {
            model
                .graph
                .rest
                .input
                .iter()
                .find(|vi| vi.name() == name)
                .is_some_and(|vi| !image_axes(vi).is_empty())
        };
        let mut images = Vec::new();
        let mut spectra = Vec::new();
        let mut pixels = Vec::new();
        for s in specs.iter_mut() {
            if !(is_float(s.dtype) && image(&s.name) && s.values == FloatValues::Normal) {
                continue;
            }
            let why = match producer {
                Some(_) => None,
                None => pixel_values(model, &s.name),
            };
            match why {
                Some(why) => {
                    s.values = FloatValues::Pixels;
                    pixels.push(match why {
                        PixelValues::ScaledDown(k) => {
                            format!("'{}' (the model scales them down by 1/{k:.0} itself)", s.name)
                        }
                        PixelValues::Mean(m) => format!(
                            "'{}' (its first layer's weights and bias fit a mean pixel value of about {m:.0})",
                            s.name
                        ),
                    });
                }
                None => {
                    s.values = match producer {
                        Some(_) => FloatValues::Unit,
                        None => FloatValues::Mixed,
                    };
                    match producer.is_none() && spectrogram_name(&s.name) {
                        true => spectra.push(format!("'{}'", s.name)),
                        false => images.push(format!("'{}'", s.name)),
                    }
                }
            }
        }
        if !pixels.is_empty() {
            notes.push(format!(
                "random images {} drawn uniform in [0, 255): the model takes pixel values as they are; pass --inputs with real images",
                pixels.join(", ")
            ));
        }
        if !spectra.is_empty() {
            notes.push(format!(
                "random inputs {} shaped like images (by their names, spectrograms: [batch, channels, frames, bins]) drawn standard normal and uniform in [0, 1) in turn: the model does not say how they are scaled; pass --inputs with real data",
                spectra.join(", ")
            ));
        }
        if images.is_empty() {
            return;
        }
        notes.push(match producer {
            Some(p) => format!(
                "random images {} drawn uniform in [0, 1), as {} models take them (model metadata)",
                images.join(", "),
                p.producer
            ),
            None => format!(
                "random images {} drawn standard normal and uniform in [0, 1) in turn: the model does not say how its images are scaled (normalised, or divided by 255); pass --inputs with real images",
                images.join(", ")
            ),
        });
    }
}

/// Whether an image-shaped input's name says it holds audio features (a
/// spectrogram's `[batch, channels, frames, bins]`: speechmos'
/// `degraded_audio`): named as audio ([`audio_name`]) or as a spectrum, for
/// notes that do not call it images.
fn spectrogram_name(name: &str) -> bool {
    let n = name.to_lowercase();
    audio_name(name)
        || ["spec", "mel", "fbank", "stft"]
            .iter()
            .any(|w| n.contains(w))
}

/// The least mean pixel value [`pixel_values`] takes for images given as
/// they are, in [0, 255]. The real models seen estimate 95-130 there
/// (YOLOX: 108), and between -3.4 and 2.5 where they take normalised
/// images, images in [0, 1] or [-1, 1], or 0-255 images less their
/// mean (open-nsfw: -3.3).
const MIN_PIXEL_MEAN: f64 = 16.0;

/// Why an image input takes pixel values as they are, in [0, 255]
/// ([`pixel_values`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PixelValues {
    /// The model scales its input down by this factor itself before its
    /// first Conv (`x / 255`, `(x - 127.5) / 127.5`).
    ScaledDown(f64),
    /// Its first Conv's weights and bias fit images of this mean value.
    Mean(f64),
}

/// Whether image input `input` takes pixel values in [0, 255] as they are,
/// and why ([`PixelValues`]): from the scalar arithmetic between the input
/// and the first Conv, and the mean pixel value its first layer fits (`pixel_mean`).
pub fn pixel_values(model: &crate::ir::Model, input: &str) -> Option<PixelValues> {
    let (a, b, m) = pixel_mean(model, input)?;
    if a > 0.0 && a <= 1.0 / MIN_PIXEL_MEAN {
        return Some(PixelValues::ScaledDown(1.0 / a));
    }
    let m = m?;
    let x = (m - b) / a;
    (x.is_finite() && x >= MIN_PIXEL_MEAN).then_some(PixelValues::Mean(x))
}

/// The arithmetic from image input `input` to its first Conv as
/// `a * x + b`, and the mean pixel value that Conv's input had in
/// training, as its weights and bias tell: a layer followed by batch
/// normalisation (folded or not) centres each channel on its training
/// data, so its output's mean there is its normalisation's shift `beta_c`,
/// small beside `bias_c + m * sum(w_c)` away from it. The least-squares `m`
/// of `bias_c + m * sum(w_c) = 0` over the output channels is the estimate:
/// `None` where the Conv has no bias, or the fit leaves more than
/// [`MAX_UNEXPLAINED`] of it unexplained. Reached from the input through
/// ops that move values (Transpose, Slice, Concat, Pad...; branches joined
/// by a Concat must agree) and Add, Sub, Mul, Div by constants (per-channel
/// ones by their mean); the Conv's bias taken with the BatchNormalization,
/// per-channel Add and Mul after it (PaddleOCR's exports add the bias in a
/// node of its own). `None` where no Conv is reached so.
fn pixel_mean(model: &crate::ir::Model, input: &str) -> Option<(f64, f64, Option<f64>)> {
    let g = &model.graph;
    // A constant: an initializer (also where an old model lists it as an
    // input), or a Constant node's value of any form; and its dims and
    // values.
    let constant = |v: &str| -> Option<(Vec<i64>, Vec<f64>)> {
        let node_value;
        let t = match g.initializers.get(v) {
            Some(t) => t,
            None => {
                let p = &g.nodes[g.producer(v)?].proto;
                if p.op_type() != "Constant" {
                    return None;
                }
                node_value = crate::passes::clean::constant_value(p)?;
                &node_value
            }
        };
        let payload = model.payload(t).ok()?;
        let data = crate::ir::tensor::to_f32(t, payload.as_ref()).ok()?;
        Some((data.dims, data.data.iter().map(|&x| f64::from(x)).collect()))
    };
    let floats = |v: &str| constant(v).map(|(_, values)| values);
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    const MOVES: &[&str] = &[
        "Transpose",
        "Slice",
        "Concat",
        "Pad",
        "Reshape",
        "Identity",
        "Split",
        "SpaceToDepth",
        "Cast",
        "Squeeze",
        "Unsqueeze",
    ];
    // Each value computed from the input on the way to the first Conv, as
    // `a * x + b`; branches that join must agree.
    let mut affine: HashMap<&str, (f64, f64)> = HashMap::from([(input, (1.0, 0.0))]);
    let agree = |p: (f64, f64), q: (f64, f64)| {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0);
        close(p.0, q.0) && close(p.1, q.1)
    };
    let mut conv = None;
    for id in g.topo_order() {
        let p = &g.nodes[id].proto;
        let tracked: Vec<Option<(f64, f64)>> = p
            .input
            .iter()
            .map(|i| affine.get(i.as_str()).copied())
            .collect();
        if tracked.iter().all(Option::is_none) {
            continue;
        }
        let first = tracked.first().copied().flatten();
        let out = match p.op_type() {
            // Its shape only.
            "Shape" | "Size" => continue,
            "Conv" if first.is_some() => {
                conv = Some((id, first?));
                break;
            }
            "Concat" => {
                let all: Vec<(f64, f64)> = tracked.iter().copied().collect::<Option<_>>()?;
                all.iter().all(|&q| agree(all[0], q)).then_some(all[0])?
            }
            op if MOVES.contains(&op) && tracked.iter().skip(1).all(Option::is_none) => first?,
            op @ ("Add" | "Sub" | "Mul" | "Div") if tracked.get(1) == Some(&None) => {
                let (a, b) = first?;
                let c = mean(&floats(p.input.get(1)?)?)?;
                match op {
                    "Add" => (a, b + c),
                    "Sub" => (a, b - c),
                    "Mul" => (a * c, b * c),
                    _ if c != 0.0 => (a / c, b / c),
                    _ => return None,
                }
            }
            _ => return None,
        };
        for o in &p.output {
            affine.insert(o.as_str(), out);
        }
    }
    let (conv, (a, b)) = conv?;
    let p = &g.nodes[conv].proto;
    let (dims, values) = constant(p.input.get(1)?)?;
    let channels = usize::try_from(*dims.first()?).ok().filter(|&c| c > 0)?;
    let per = values.len() / channels;
    if per == 0 || per * channels != values.len() {
        return None;
    }
    let mut sums: Vec<f64> = values.chunks(per).map(|c| c.iter().sum()).collect();
    let per_channel = |v: Vec<f64>| match v.len() {
        1 => Some(vec![v[0]; channels]),
        n if n == channels => Some(v),
        _ => None,
    };
    let mut bias: Option<Vec<f64>> = match p.input.get(2).filter(|b| !b.is_empty()) {
        Some(b) => Some(per_channel(floats(b)?)?),
        None => None,
    };
    // The batch normalisation, bias and scale after it, while they are
    // its only reader's.
    let mut v = p.output.first()?.clone();
    loop {
        let readers = g.consumers(&v);
        let [id] = readers[..] else { break };
        let n = &g.nodes[id];
        let p = &n.proto;
        if p.input.first() != Some(&v) {
            break;
        }
        let operand = |i: usize| p.input.get(i).and_then(|x| floats(x)).and_then(per_channel);
        match n.op() {
            "BatchNormalization" => {
                let (Some(scale), Some(shift), Some(mu), Some(var)) =
                    (operand(1), operand(2), operand(3), operand(4))
                else {
                    break;
                };
                let eps = f64::from(crate::ir::float_attr(p, "epsilon", 1e-5));
                let b = bias.get_or_insert_with(|| vec![0.0; channels]);
                for c in 0..channels {
                    let k = scale[c] / (var[c] + eps).sqrt();
                    sums[c] *= k;
                    b[c] = (b[c] - mu[c]) * k + shift[c];
                }
            }
            "Add" => {
                let Some(add) = operand(1) else { break };
                let b = bias.get_or_insert_with(|| vec![0.0; channels]);
                b.iter_mut().zip(add).for_each(|(b, a)| *b += a);
            }
            "Mul" => {
                let Some(k) = operand(1) else { break };
                for c in 0..channels {
                    sums[c] *= k[c];
                }
                if let Some(b) = bias.as_mut() {
                    b.iter_mut().zip(&k).for_each(|(b, k)| *b *= k);
                }
            }
            _ => break,
        }
        v = p.output.first()?.clone();
    }
    // The least-squares mean, where it explains most of the bias (the rest
    // is the shifts; a bias it does not fit tells nothing).
    let m = bias.and_then(|bias| {
        let (num, den) = bias
            .iter()
            .zip(&sums)
            .fold((0.0, 0.0), |(n, d), (b, s)| (n - b * s, d + s * s));
        let m = num / den;
        let total: f64 = bias.iter().map(|b| b * b).sum();
        let left: f64 = bias
            .iter()
            .zip(&sums)
            .map(|(b, s)| (b + m * s).powi(2))
            .sum();
        (den > 0.0 && m.is_finite() && (total == 0.0 || left <= MAX_UNEXPLAINED * total))
            .then_some(m)
    });
    Some((a, b, m))
}

/// The most of a first layer's bias (its sum of squares) the mean pixel
/// value [`pixel_mean`] fits may leave unexplained: the rest is the
/// normalisation's shifts. YOLOX's (ddddocr), whose images are 0-255
/// pixels, leaves 0.58; where the fit finds a mean near 0 (normalised
/// images) it leaves 0.7-1.0; a large mean from a sum of weights near 0
/// would explain nothing.
const MAX_UNEXPLAINED: f64 = 0.8;

/// Whether `dt` is a floating-point type.
pub fn is_float(dt: DataType) -> bool {
    matches!(
        dt,
        DataType::Float | DataType::Double | DataType::Float16 | DataType::Bfloat16
    )
}

/// Whether `dt` is an integer type (token ids, masks, indices, settings).
pub fn is_integer(dt: DataType) -> bool {
    matches!(
        dt,
        DataType::Int64
            | DataType::Int32
            | DataType::Int8
            | DataType::Int16
            | DataType::Uint8
            | DataType::Uint16
            | DataType::Uint32
            | DataType::Uint64
    )
}

/// How `--dim` names an input's axis without a size: `INPUT:AXIS`. The only
/// key of an axis without a name; one with a name takes it too, and it wins
/// over the name (PaddlePaddle names the height and width of its images both
/// `?`, which one `--dim ?=N` would bind together).
pub fn axis_dim_key(input: &str, axis: usize) -> String {
    format!("{input}:{axis}")
}

/// Names `vi` gives to two or more of its axes (PaddlePaddle's `?` for an
/// image's height and width), each with the [`axis_dim_key`]s of those axes:
/// one `--dim NAME=N` binds them together, the per-axis keys one by one.
pub fn repeated_dims(vi: &crate::proto::ValueInfoProto) -> Vec<(String, Vec<String>)> {
    let mut by_name: Vec<(String, Vec<String>)> = Vec::new();
    for (key, axis) in free_dims(vi) {
        let by_axis = axis_dim_key(vi.name(), axis);
        if key == by_axis {
            continue;
        }
        match by_name.iter_mut().find(|(n, _)| *n == key) {
            Some((_, a)) => a.push(by_axis),
            None => by_name.push((key, vec![by_axis])),
        }
    }
    by_name.retain(|(_, a)| a.len() > 1);
    by_name
}

/// The recurrent state a model carries from one call to the next: each
/// graph input that takes a state in, with the graph output that gives the
/// next one back, paired by name as exporters of streaming models write
/// them (`state` -> `stateN`, `h` -> `hn`, `h0` -> `hn`, `h` -> `h_out`,
/// `in_cache0` -> `out_cache0`, `state_in` -> `state_out`) where the
/// input's name is a state's (`h`, `c`, `hx`, `cx`, or one holding
/// `state`, `hidden`, `cell`, `cache`, `mem` or `context`: an image model's
/// `x` -> `xn` or `image` -> `image_out` is no stream), by element type, and
/// by declared rank and sizes where both declare them (exporters write the
/// output's dims with other symbols or none). The runs that chain them
/// ([`crate::verify::chain_sample`]) feed an output back only where its
/// shape is the input's.
/// Whether an input's name is a recurrent state's ([`state_pairs`]): `h`,
/// `c`, `hx`, `cx`, or one holding `state`, `hidden`, `cell`, `cache`,
/// `mem` or `context`.
fn state_name(name: &str) -> bool {
    let l = name.to_lowercase();
    let stem = l.trim_end_matches(|c: char| c.is_ascii_digit() || c == '_');
    matches!(stem, "h" | "c" | "hx" | "cx")
        || ["state", "hidden", "cell", "cache", "mem", "context"]
            .iter()
            .any(|w| l.contains(w))
}

pub fn state_pairs(g: &Graph) -> Vec<(String, String)> {
    let elem =
        |vi: &crate::proto::ValueInfoProto| crate::ir::tensor_type(vi).map(|t| t.elem_type());
    let same_shape = |a: &crate::proto::ValueInfoProto, b: &crate::proto::ValueInfoProto| match (
        fixed_dims(a),
        fixed_dims(b),
    ) {
        (Some(x), Some(y)) if !y.is_empty() => {
            x.len() == y.len()
                && x.iter()
                    .zip(&y)
                    .all(|(p, q)| p.is_none() || q.is_none() || p == q)
        }
        _ => true,
    };
    let pairs_by_name = |i: &str, o: &str| {
        ["n", "N", "_n", "_out", "out", "_new", "_next"]
            .iter()
            .any(|s| o.strip_prefix(i) == Some(s))
            || i.strip_suffix('0')
                .is_some_and(|stem| !stem.is_empty() && o.strip_prefix(stem) == Some("n"))
            || i.strip_prefix("in_")
                .is_some_and(|r| o.strip_prefix("out_") == Some(r))
            || i.strip_suffix("_in")
                .is_some_and(|r| o.strip_suffix("_out") == Some(r))
    };
    let mut pairs = Vec::new();
    for vi in &g.rest.input {
        if g.initializers.contains_key(vi.name()) || elem(vi).is_none() {
            continue;
        }
        if !state_name(vi.name()) {
            continue;
        }
        let out = g.rest.output.iter().find(|o| {
            elem(o) == elem(vi)
                && same_shape(vi, o)
                && pairs_by_name(vi.name(), o.name())
                && !pairs.iter().any(|(_, p): &(String, String)| p == o.name())
        });
        if let Some(o) = out {
            pairs.push((vi.name().to_string(), o.name().to_string()));
        }
    }
    pairs
}

/// Whether an input is named like a mask: a word `mask` or `masks` in it
/// (`attention_mask`, `input_mask`, `attentionMask`), not `masked_image`.
pub fn mask_name(name: &str) -> bool {
    name.to_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w.ends_with("mask") || w.ends_with("masks"))
}

/// Whether the model reads input `name` as a mask that it turns into an
/// additive bias, whatever its name: it subtracts it from 1 (through
/// casts and reshapes), as a BERT export's `(1 - mask) * min_float`
/// (asked of integer and boolean inputs only: a float image in [0, 1)
/// may be inverted so, and float masks are known by their name). A
/// TorchScript export may call it `onnx::Unsqueeze_1`: drawn as token ids
/// (up to 100), `1 - mask` times the float minimum overflows to infinity
/// and every score the model computes is NaN (an ALBERT tagger's were).
pub fn subtracted_from_one(g: &Graph, name: &str) -> bool {
    let one = |v: &str| {
        small_constant(g, v).is_some_and(|x| !x.is_empty() && x.iter().all(|&e| e == 1.0))
    };
    let mut found = false;
    follow_values(g, name, |v, n| {
        let p = &n.proto;
        match p.op_type() {
            "Sub"
                if p.input.get(1).is_some_and(|i| i == v)
                    && p.input.first().is_some_and(|a| one(a)) =>
            {
                found = true;
                None
            }
            // On its way: a cast to float, unsqueezes to the scores' rank.
            op if INDEX_PASS_THROUGH.contains(&op) && p.input.first().is_some_and(|i| i == v) => {
                p.output.first().cloned()
            }
            _ => None,
        }
    });
    found
}

/// The constants the model compares the integer input `name` with (an
/// `Equal` to a one-value constant, through casts, reshapes and selections), in the
/// order of the graph's nodes. silero's VAD computes `sr == 16000` and runs
/// its 16 kHz network in the If branch that selects: a setting is held at
/// the first such value ([`InputSpec::setting`]), so that the network the
/// model names is verified (drawn in [0, 100) as other integers, `sr`
/// checked the 8 kHz network alone), and each other value a verification
/// checks holds it in samples of its own ([`InputSpec::setting_values`]).
pub fn compared_with(g: &Graph, name: &str) -> Vec<i64> {
    // (the Equal's position in the graph, constant)
    let mut found: Vec<((u64, u64), i64)> = vec![];
    follow_values(g, name, |v, n| {
        let p = &n.proto;
        match p.op_type() {
            "Equal" => {
                let other = p.input.iter().find(|i| *i != v)?;
                match small_constant(g, other).as_deref() {
                    Some(&[c]) if c.fract() == 0.0 => found.push((n.order, c as i64)),
                    _ => {}
                }
                None
            }
            op if INDEX_PASS_THROUGH.contains(&op) && p.input.first().is_some_and(|i| i == v) => {
                p.output.first().cloned()
            }
            _ => None,
        }
    });
    found.sort_unstable();
    let mut values: Vec<i64> = vec![];
    for (_, c) in found {
        if !values.contains(&c) {
            values.push(c);
        }
    }
    values
}

/// Walk what `value` flows into: `step` sees each value reached and each
/// ONNX-domain node reading it (with its position in the graph), and names
/// the value that node passes on, if any, to follow further. Each value is
/// visited once.
fn follow_values(
    g: &Graph,
    value: &str,
    mut step: impl FnMut(&str, &crate::ir::Node) -> Option<String>,
) {
    let mut seen = std::collections::HashSet::new();
    let mut todo = vec![value.to_string()];
    while let Some(v) = todo.pop() {
        if !seen.insert(v.clone()) {
            continue;
        }
        for id in g.consumers(&v) {
            let n = &g.nodes[id];
            if n.is_onnx() {
                todo.extend(step(&v, n));
            }
        }
    }
}

/// The values of a small constant (16 elements at most: an initializer or
/// a Constant node's tensor held in the model), as floats.
fn small_constant(g: &Graph, v: &str) -> Option<Vec<f64>> {
    let t = g.constant_value(v)?;
    if crate::ir::tensor::is_external(t) || crate::ir::tensor::numel(&t.dims).ok()? > 16 {
        return None;
    }
    let raw = t.raw_data.as_ref();
    match crate::ir::tensor::to_f32(t, raw) {
        Ok(f) => Some(f.data.iter().map(|&x| f64::from(x)).collect()),
        Err(_) => crate::ir::tensor::to_i64(t, raw)
            .ok()
            .map(|i| i.iter().map(|&x| x as f64).collect()),
    }
}

/// `vi`'s declared dims, each with its size where it has one (`None` for a
/// named or unnamed dim); `None` where no shape is declared.
pub fn fixed_dims(vi: &crate::proto::ValueInfoProto) -> Option<Vec<Option<i64>>> {
    let shape = crate::ir::tensor_type(vi)?.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match d.value {
                Some(Dim::DimValue(v)) if v > 0 => Some(v),
                _ => None,
            })
            .collect(),
    )
}

/// The keys `--dim` binds for `vi`'s axes without a size, in order, with
/// their axis: the dim's name, or [`axis_dim_key`] for an axis without
/// one.
pub fn free_dims(vi: &crate::proto::ValueInfoProto) -> Vec<(String, usize)> {
    let Some(tt) = crate::ir::tensor_type(vi) else {
        return vec![];
    };
    tt.shape
        .iter()
        .flat_map(|s| s.dim.iter().enumerate())
        .filter_map(|(axis, d)| match &d.value {
            Some(Dim::DimParam(p)) => Some((p.clone(), axis)),
            Some(Dim::DimValue(v)) if *v >= 0 => None,
            _ => Some((axis_dim_key(vi.name(), axis), axis)),
        })
        .collect()
}

/// The most bytes one input of one sample may take: a quarter of the
/// memory this process may use, the machine's or, in a container, its
/// cgroup's limit where that is less ([`cgroup_memory_limit`]); 1 GiB
/// where neither is known. A `--dim` of 1e8 on an image's side asked for
/// 307 GB and aborted the process. Read once a run: the inputs of every
/// copy that verification and `sensitive=auto` run are checked against it,
/// and reading the cgroup's files each time took 1.6% of silero-vad's run.
pub(crate) fn sample_bytes_limit() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(read_sample_bytes_limit)
}

/// [`sample_bytes_limit`], read from the system.
fn read_sample_bytes_limit() -> u64 {
    let mut machine = None;
    #[cfg(unix)]
    {
        // SAFETY: sysconf reads a system setting; it has no preconditions.
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if let (Ok(n), Ok(p)) = (u64::try_from(pages), u64::try_from(page)) {
            if n > 0 && p > 0 {
                machine = Some(n.saturating_mul(p));
            }
        }
    }
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|own| cgroup_memory_limit(std::path::Path::new("/sys/fs/cgroup"), &own));
    match (machine, cgroup) {
        (Some(m), Some(c)) => m.min(c) / 4,
        (Some(m), None) | (None, Some(m)) => m / 4,
        (None, None) => 1 << 30,
    }
}

/// The least memory limit of the cgroups this process is in (`own`: the
/// text of `/proc/self/cgroup`) and of their parents, read under `root`
/// (`/sys/fs/cgroup`): `memory.max` of the unified hierarchy (v2), or
/// `memory/.../memory.limit_in_bytes` (v1). `None` where no limit is set
/// ("max", or v1's page-rounded 2^63) or none can be read. A cgroup path
/// that does not exist under `root` (the host's path, seen from a
/// container without its own cgroup namespace) is walked up to the root.
fn cgroup_memory_limit(root: &std::path::Path, own: &str) -> Option<u64> {
    fn limit(text: &str) -> Option<u64> {
        match text.trim() {
            "max" => None,
            v => v.parse::<u64>().ok().filter(|&b| b < 1 << 62),
        }
    }
    let mut least: Option<u64> = None;
    for line in own.lines() {
        // hierarchy-id:controllers:path
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (dir, file) = match controllers {
            "" => (root.to_path_buf(), "memory.max"),
            c if c.split(',').any(|c| c == "memory") => {
                (root.join("memory"), "memory.limit_in_bytes")
            }
            _ => continue,
        };
        let mut at = Some(std::path::Path::new(path.trim_start_matches('/')));
        while let Some(p) = at {
            if let Some(b) = std::fs::read_to_string(dir.join(p).join(file))
                .ok()
                .and_then(|t| limit(&t))
            {
                least = Some(least.map_or(b, |l| l.min(b)));
            }
            at = p.parent();
        }
    }
    least
}

/// The bytes of one value of `shape` and type `dtype` (a byte an element
/// where the type's width is unknown); `None` past 64 bits.
fn sample_bytes(shape: &[usize], dtype: DataType) -> Option<u64> {
    let bits = crate::ir::tensor::element_bits(dtype).unwrap_or(8) as u64;
    shape
        .iter()
        .try_fold(bits, |acc, &d| acc.checked_mul(d as u64))
        .map(|b| b.div_ceil(8))
}

/// Refuse input `name` of `shape` and type `dtype` where one sample of it
/// would not fit in memory ([`sample_bytes_limit`]): the sizes come from
/// `--dim`, or from the model (`fixed`: every dim is the model's).
pub fn check_sample_size(name: &str, shape: &[usize], dtype: DataType, fixed: bool) -> Result<()> {
    let bytes = sample_bytes(shape, dtype);
    let limit = sample_bytes_limit();
    match bytes {
        Some(b) if b <= limit => Ok(()),
        _ => bail!(
            "input '{name}' at shape {shape:?} ({dtype:?}) would take {} for one sample, more than a quarter of this machine's memory or its container's limit ({}); {}",
            bytes.map_or("more bytes than 64 bits count".to_string(), crate::report::mb),
            crate::report::mb(limit),
            match fixed {
                true => "the model fixes that shape: it cannot be run here (--no-verify writes a result unverified)",
                false => "bind its dims to smaller sizes (--dim NAME=SIZE)",
            }
        ),
    }
}

/// `f` of the values of `t`, where it holds floats, as float32 (float16's
/// and float64's cast, their NaN and infinities staying so; float32's read
/// in place).
fn with_float_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if !t.datum_type().is_float() {
        return None;
    }
    let t = t.cast_to::<f32>().ok()?;
    let view = t.try_as_plain_ram().ok()?;
    Some(f(view.as_slice::<f32>().ok()?))
}

/// A note on the float inputs of `samples` (one `--inputs` file's) that
/// hold NaN or infinite values: runtimes compute different things from
/// them (a Relu in tract turned a NaN image into finite outputs, where
/// onnxruntime gave NaN everywhere), so a comparison on them shows less
/// than it seems.
pub fn non_finite_note(specs: &[InputSpec], samples: &[Vec<Tensor>]) -> Option<String> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let n: usize = samples
            .iter()
            .filter_map(|sample| sample.get(i))
            .filter_map(|t| with_float_values(t, |v| v.iter().filter(|x| !x.is_finite()).count()))
            .sum();
        if n > 0 {
            counts.push((&s.name, n));
        }
    }
    (!counts.is_empty()).then(|| {
        let listed: Vec<String> = counts
            .iter()
            .map(|(name, n)| format!("'{name}' {n}"))
            .collect();
        format!(
            "--inputs holds NaN or infinite values ({}): runtimes may compute different things from them (tract's kernels can turn a NaN into a finite value where onnxruntime propagates it), so the comparison on them shows less than it seems",
            listed.join(", ")
        )
    })
}

/// The peak past which a waveform's samples in `--inputs` get a note
/// ([`past_full_scale_note`]): half again past full scale, a margin for
/// 16-bit audio divided by 32767 (-32768 gives -1.00003) and resamplers'
/// overshoot; saturation needs samples of several units.
const FULL_SCALE_NOTE_PEAK: f32 = 1.5;

/// A note on the waveforms of `samples` (one `--inputs` file's inputs
/// drawn as [`FloatValues::Waveform`] when random) whose samples go past
/// full scale, [-1, 1], by [`FULL_SCALE_NOTE_PEAK`]: noise of standard
/// deviation 1, or 16-bit audio not divided by 32768. silero's LSTM
/// saturates there: on the tests' chunk of such noise its state came out at
/// 0, +-tanh(1) and 1, and its input weights rounded to int8 alone flipped
/// an element of it (state cosine 0.9876, where noise at speech level gave
/// 1.0000), which `sensitive=auto` then kept in float16.
pub fn past_full_scale_note(specs: &[InputSpec], samples: &[Vec<Tensor>]) -> Option<String> {
    let mut peaks = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        if s.values != FloatValues::Waveform {
            continue;
        }
        let peak = samples
            .iter()
            .filter_map(|sample| sample.get(i))
            .filter_map(|t| {
                with_float_values(t, |v| {
                    v.iter()
                        .filter(|x| x.is_finite())
                        .fold(0f32, |m, &x| m.max(x.abs()))
                })
            })
            .fold(0f32, f32::max);
        if peak > FULL_SCALE_NOTE_PEAK {
            peaks.push(format!("'{}' reaches {peak:.3}", s.name));
        }
    }
    (!peaks.is_empty()).then(|| {
        format!(
            "--inputs: {} {}, past full scale: if the model takes samples in [-1, 1] (16-bit audio divided by 32768), recurrent cells can saturate there (silero's LSTM does), rounding the weights then flips them where audio at its level would not, and the comparison and sensitive=auto's choices can overstate what rounding does; pass audio at the level the model takes",
            match peaks.len() {
                1 => "waveform",
                _ => "waveforms",
            },
            peaks.join(", ")
        )
    })
}

/// How one axis of an input is sized.
pub enum AxisSize {
    /// The model's own size.
    Fixed(usize),
    /// A size `--dim` binds.
    Bound(usize),
    /// None: drawn at 1.
    Unbound,
}

/// The size of axis `axis` (dim `d`) of input `input`: the model's, else
/// what `dims` binds by the axis's key ([`axis_dim_key`]) first, then by
/// the dim's name.
pub fn axis_size(
    input: &str,
    axis: usize,
    d: &crate::proto::tensor_shape_proto::Dimension,
    dims: &HashMap<String, usize>,
) -> AxisSize {
    match &d.value {
        Some(Dim::DimValue(v)) if *v >= 0 => AxisSize::Fixed(*v as usize),
        value => {
            let by_name = match value {
                Some(Dim::DimParam(p)) => dims.get(p),
                _ => None,
            };
            match dims.get(&axis_dim_key(input, axis)).or(by_name) {
                Some(&n) => AxisSize::Bound(n),
                None => AxisSize::Unbound,
            }
        }
    }
}

/// The graph inputs that are not initializers, with concrete shapes: dims
/// without a size from `dims`, by [`axis_dim_key`] first, then by name,
/// otherwise 1. Every choice made is described in `notes`.
pub fn input_specs(
    g: &Graph,
    dims: &HashMap<String, usize>,
    notes: &mut Vec<String>,
) -> Result<Vec<InputSpec>> {
    let mut specs = Vec::new();
    let states: Vec<String> = state_pairs(g).into_iter().map(|(i, _)| i).collect();
    for vi in &g.rest.input {
        if g.initializers.contains_key(vi.name()) {
            continue;
        }
        let Some(tt) = crate::ir::tensor_type(vi) else {
            bail!(
                "input '{}' is not a tensor; verification supports tensor inputs only",
                vi.name()
            );
        };
        let dtype = DataType::try_from(tt.elem_type()).unwrap_or(DataType::Undefined);
        let mut shape = Vec::new();
        let mut fixed = tt.shape.is_some();
        if let Some(s) = &tt.shape {
            for (axis, d) in s.dim.iter().enumerate() {
                shape.push(match axis_size(vi.name(), axis, d, dims) {
                    AxisSize::Fixed(n) => n,
                    AxisSize::Bound(n) => {
                        fixed = false;
                        n
                    }
                    AxisSize::Unbound => {
                        fixed = false;
                        match &d.value {
                            Some(Dim::DimParam(p)) => {
                                let note = format!(
                                    "symbolic dim '{p}' set to 1 (bind it with --dim {p}=SIZE)"
                                );
                                if !notes.contains(&note) {
                                    notes.push(note);
                                }
                            }
                            _ => notes.push(format!(
                                "input '{}' axis {axis} has no size; set to 1 (bind it with --dim {}=SIZE)",
                                vi.name(),
                                axis_dim_key(vi.name(), axis)
                            )),
                        }
                        1
                    }
                });
            }
        }
        check_sample_size(vi.name(), &shape, dtype, fixed)?;
        let (rows, as_is) = index_rows_as_is(g, vi.name());
        let values = if states.iter().any(|s| s == vi.name()) {
            FloatValues::Zeros
        } else if mask_name(vi.name()) {
            FloatValues::Mask
        } else if !is_float(dtype) && subtracted_from_one(g, vi.name()) {
            notes.push(format!(
                "input '{}' is a mask (the model computes 1 minus it): drawn as 1s",
                vi.name()
            ));
            FloatValues::Mask
        } else if let Some(r) = rows.filter(|_| is_float(dtype) && cast_to_integers(g, vi.name())) {
            let (lo, hi) = id_range(vi.name(), false, Some(r), as_is, dtype);
            notes.push(format!(
                "float input '{}' is cast to integers that index a table: drawn as whole numbers in [{lo}, {hi})",
                vi.name(),
            ));
            FloatValues::Ids
        } else if dtype == DataType::Uint8 && rows.is_none() && !image_axes(vi).is_empty() {
            // TensorFlow's exports take uint8 NHWC images: drawn in [0,
            // 100) as ids, their pixels were dim, a third of the range.
            notes.push(format!(
                "input '{}' is an image of 8-bit pixels: drawn as integers in [0, 256)",
                vi.name()
            ));
            FloatValues::Pixels
        } else if is_float(dtype) && waveform(g, vi) {
            notes.push(format!(
                "input '{}' is a waveform (the model takes its sample rate): drawn normal at a tenth of full scale, about -20 dBFS",
                vi.name()
            ));
            FloatValues::Waveform
        } else {
            FloatValues::Normal
        };
        let length = length_of(g, vi);
        let setting_values = match shape.is_empty() && is_integer(dtype) && length.is_none() {
            true => setting_values(g, vi, dtype),
            false => vec![],
        };
        let setting = setting_values.first().copied();
        if let Some(c) = setting {
            notes.push(setting_note(g, vi.name(), &[c]));
        }
        if is_integer(dtype)
            && !shape.is_empty()
            && !matches!(values, FloatValues::Mask | FloatValues::Pixels)
            && length.is_none()
            && !is_pcm_input(g, vi)
        {
            notes.push(integers_note(vi.name(), rows, as_is, dtype));
        }
        specs.push(InputSpec {
            name: vi.name().to_string(),
            dtype,
            shape,
            values,
            index_rows: rows,
            indexes_as_is: as_is,
            length_of: length,
            setting,
            setting_values,
        });
    }
    for s in &specs {
        let Some((of, axis)) = &s.length_of else {
            continue;
        };
        if let Some(len) = specs
            .iter()
            .find(|t| &t.name == of)
            .and_then(|t| t.shape.get(*axis))
        {
            notes.push(format!(
                "input '{}' holds the length of '{of}' (its axis {axis}): drawn as {len}, the whole length",
                s.name
            ));
        }
    }
    Ok(specs)
}

/// Name endings of an input that holds the lengths of another one
/// (`waveforms_lens` of `waveforms`).
const LENGTH_SUFFIXES: [&str; 4] = ["_lengths", "_length", "_lens", "_len"];

/// The input, and its axis, whose length the integer input `vi` (a scalar
/// or one value per batch row) holds: `X_lens`, `X_lengths`, `X_length` or
/// `X_len` of an input `X` (a speech front end's `waveforms_lens`), or a
/// bare `lengths`, `length` or `lens` where one float input has a length
/// axis. The axis is the first without a fixed size past a leading batch
/// axis (where the input has rank 2 or more), else the first past it.
/// Drawn as ids in [0, 100)
/// instead, the lengths fell short of the samples (a kaldi front end then
/// read past its frames and tract panicked) or covered none.
pub fn length_of(g: &Graph, vi: &crate::proto::ValueInfoProto) -> Option<(String, usize)> {
    let dtype =
        crate::ir::tensor_type(vi).and_then(|tt| DataType::try_from(tt.elem_type()).ok())?;
    if !is_integer(dtype) || crate::ir::declared_rank(vi).is_none_or(|r| r > 1) {
        return None;
    }
    let lname = vi.name().to_lowercase();
    let prefix = LENGTH_SUFFIXES.iter().find_map(|s| lname.strip_suffix(s));
    if prefix.is_none() && !matches!(lname.as_str(), "lengths" | "length" | "lens") {
        return None;
    }
    let candidates: Vec<(String, usize)> = g
        .rest
        .input
        .iter()
        .filter(|t| t.name() != vi.name() && !g.initializers.contains_key(t.name()))
        .filter(|t| {
            crate::ir::tensor_type(t)
                .and_then(|tt| DataType::try_from(tt.elem_type()).ok())
                .is_some_and(|dt| is_float(dt) || is_pcm_input(g, t))
        })
        .filter(|t| prefix.is_none_or(|p| t.name().to_lowercase() == p))
        .filter_map(|t| {
            let rank = crate::ir::declared_rank(t)?;
            let first = usize::from(rank >= 2);
            free_dims(t)
                .into_iter()
                .map(|(_, axis)| axis)
                .find(|&a| a >= first)
                .or((rank > first).then_some(first))
                .map(|a| (t.name().to_string(), a))
        })
        .collect();
    match candidates.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// The graph's inputs that hold audio samples ([`audio_axis`]).
pub fn audio_inputs(g: &Graph) -> Vec<String> {
    g.rest
        .input
        .iter()
        .filter(|vi| !g.initializers.contains_key(vi.name()) && audio_axis(g, vi).is_some())
        .map(|vi| vi.name().to_string())
        .collect()
}

/// The samples' axis of input `vi` where it holds audio samples: a float
/// or 16-bit input whose one axis past a leading batch (where its rank is
/// 2 or more) is not of size 1 (`[N]`, `[batch, N]`, `[batch, 1, N]`),
/// named like audio ([`audio_name`]), with that axis named like samples
/// (openWakeWord's mel front end: `input: [batch_size, samples]`), or, past
/// a batch (a free leading axis or one of 1), of a fixed length of
/// [`AUDIO_MIN_SAMPLES`] or more (Spotify's basic-pitch, a tf2onnx export:
/// `serving_default_input_2:0: [batch, 43844, 1]`, two seconds at 22.05
/// kHz; calibrated static on noise, its search kept layers in float for 4 s
/// to end as fast as float). Features
/// named like audio (`audio_signal: [batch, 80, T]`, NeMo's mel
/// spectrogram) are not.
pub fn audio_axis(g: &Graph, vi: &crate::proto::ValueInfoProto) -> Option<usize> {
    let dt = crate::ir::tensor_type(vi).and_then(|tt| DataType::try_from(tt.elem_type()).ok())?;
    if !(is_float(dt) || is_pcm_input(g, vi)) {
        return None;
    }
    let dims = fixed_dims(vi)?;
    let first = usize::from(dims.len() >= 2);
    let mut axes = (first..dims.len()).filter(|&a| dims[a] != Some(1));
    let axis = match (axes.next(), axes.next()) {
        (Some(a), None) => a,
        _ => return None,
    };
    let samples_axis = || {
        let shape = crate::ir::tensor_type(vi)?.shape.as_ref()?;
        match &shape.dim.get(axis)?.value {
            Some(Dim::DimParam(p)) => Some(samples_name(p)),
            _ => None,
        }
    };
    let batch = first == 1 && matches!(dims[0], None | Some(1));
    let long = batch && dims[axis].is_some_and(|n| n >= AUDIO_MIN_SAMPLES as i64);
    (audio_name(vi.name()) || samples_axis() == Some(true) || long).then_some(axis)
}

/// Whether float input `vi` is a waveform: the model takes a sample rate
/// ([`takes_sample_rate`]), and `vi` has one axis past a leading batch
/// (where its rank is 2 or more) that is not of size 1 (`[N]`, `[batch,
/// N]`, `[batch, 1, N]`). silero's VAD: `input: [batch, sequence]` beside
/// `sr`. Features of such a model have two axes of their own.
pub fn waveform(g: &Graph, vi: &crate::proto::ValueInfoProto) -> bool {
    let (Some(dims), Some(axis)) = (fixed_dims(vi), samples_axis(vi)) else {
        return false;
    };
    let first = usize::from(dims.len() >= 2);
    let samples = dims[axis];
    // A chunk of samples: free, or long; a state, a mask or ids are none.
    samples.is_none_or(|n| n >= WAVEFORM_MIN_SAMPLES)
        && (first == 0 || matches!(dims[0], None | Some(1)))
        && !state_name(vi.name())
        && !mask_name(vi.name())
        && index_rows(g, vi.name()).is_none()
        && takes_sample_rate(g)
}

/// The axis of `vi` that would hold a waveform's samples ([`waveform`]):
/// its one axis past a leading batch (where its rank is 2 or more) not of
/// size 1.
pub fn samples_axis(vi: &crate::proto::ValueInfoProto) -> Option<usize> {
    let dims = fixed_dims(vi)?;
    let first = usize::from(dims.len() >= 2);
    let mut axes = (first..dims.len()).filter(|&a| dims[a] != Some(1));
    match (axes.next(), axes.next()) {
        (Some(a), None) => Some(a),
        _ => None,
    }
}

/// Whether the model's input `name` is a sample rate ([`takes_sample_rate`]).
pub fn is_sample_rate(g: &Graph, name: &str) -> bool {
    g.rest
        .input
        .iter()
        .any(|vi| vi.name() == name && sample_rate_input(g, vi))
}

/// The fewest samples of a fixed-size waveform chunk: silero's at 8 kHz.
const WAVEFORM_MIN_SAMPLES: i64 = 256;

/// Whether the model takes a sample rate: a scalar integer input named
/// like one (`sr`, `fs`, `sample_rate`, `sampling_rate`, `samplerate`), or
/// named with `rate` and compared with a common audio rate (8 to 48 kHz);
/// a number compared with 32000 alone can be a vocabulary's size.
pub fn takes_sample_rate(g: &Graph) -> bool {
    g.rest.input.iter().any(|vi| sample_rate_input(g, vi))
}

/// Common audio sample rates, the most used first (speech models run at
/// 16 and 8 kHz).
const RATES: &[i64] = &[16000, 8000, 48000, 44100, 22050, 24000, 32000, 11025];

/// Whether `vi` is a sample rate ([`takes_sample_rate`]).
fn sample_rate_input(g: &Graph, vi: &crate::proto::ValueInfoProto) -> bool {
    let scalar_integer = crate::ir::declared_rank(vi) == Some(0)
        && crate::ir::tensor_type(vi)
            .and_then(|tt| DataType::try_from(tt.elem_type()).ok())
            .is_some_and(is_integer);
    let lname = vi.name().to_lowercase();
    scalar_integer
        && !g.initializers.contains_key(vi.name())
        && (matches!(
            lname.as_str(),
            "sr" | "fs" | "sample_rate" | "sampling_rate" | "samplerate"
        ) || (lname.contains("rate")
            && compared_with(g, vi.name())
                .iter()
                .any(|c| RATES.contains(c))))
}

/// The values verification checks a setting at ([`InputSpec::setting_values`]):
/// those the model compares it with that its type can hold, other than 0
/// and -1 ([`SENTINELS`]), in the graph's order; where that is one rate of
/// a sample rate, the most used rate besides, which selects what the
/// comparison's false side computes (silero compares `sr` with 16000 and
/// runs its 8 kHz network otherwise). A setting compared with one value
/// of another kind has no value that names its false side: that side is
/// not checked, and the note says so.
fn setting_values(g: &Graph, vi: &crate::proto::ValueInfoProto, dtype: DataType) -> Vec<i64> {
    let mut values: Vec<i64> = compared_with(g, vi.name())
        .into_iter()
        .filter(|&c| !SENTINELS.contains(&c) && holds(dtype, c))
        .collect();
    if values.len() == 1 && sample_rate_input(g, vi) {
        values.extend(
            RATES
                .iter()
                .find(|r| !values.contains(r) && holds(dtype, **r))
                .copied(),
        );
    }
    values.truncate(SETTING_VALUES_MAX);
    values
}

/// What verification did with a setting checked at `values`, the first
/// held in every sample of a reference, each other on samples of its own
/// (a reference's variants: said once they are built).
pub fn setting_note(g: &Graph, name: &str, values: &[i64]) -> String {
    let compared = compared_with(g, name);
    let list = |v: &[i64]| {
        let v: Vec<String> = v.iter().map(i64::to_string).collect();
        match v.as_slice() {
            [] => String::new(),
            [one] => one.clone(),
            [init @ .., last] => format!("{} and {last}", init.join(", ")),
        }
    };
    match values {
        [] => String::new(),
        [held] => format!(
            "input '{name}' is a setting the model compares with {}: held at {held} in every sample (what the model computes for other values is not checked; pass --inputs to check them)",
            list(&compared)
        ),
        _ => {
            let unchecked: Vec<i64> = compared
                .iter()
                .filter(|c| !values.contains(c))
                .copied()
                .collect();
            let rest = match unchecked.is_empty() {
                true => "other values are not checked".to_string(),
                false => format!("{} and other values are not", list(&unchecked)),
            };
            format!(
                "input '{name}' is a setting the model compares with {}: checked at {}, each value on samples of its own ({rest}; pass --inputs to check them)",
                list(&compared),
                list(values)
            )
        }
    }
}

/// The fixed length past a batch from which a float input's one axis holds
/// samples of a signal whatever its name (see [`audio_axis`]): half a
/// second at 16 kHz. Images and spectrograms have two axes of their own,
/// token ids are integers; a long vector of features (a flattened image, a
/// bag of words) is taken for a signal too, which costs a Conv model's
/// integer kernels (weight-only instead of static without `--inputs`),
/// never its fidelity.
pub const AUDIO_MIN_SAMPLES: usize = 8000;

/// Whether an axis named `name` counts audio samples: `samples`,
/// `num_samples`, `n_samples` (not a sample rate or a count of samples
/// in a batch: `sample_rate`, `batch_samples`).
fn samples_name(name: &str) -> bool {
    let l = name.to_lowercase();
    matches!(
        l.as_str(),
        "samples" | "num_samples" | "n_samples" | "nsamples"
    )
}

/// Whether a float or 16-bit input named `name` holds audio samples:
/// named like a waveform (`wav`, `audio`, `speech`, `signal`, `pcm`), or
/// `input_values` (Hugging Face's speech encoders), and not like a length,
/// size, count or rate. Its length axis is sized as a second of audio
/// (see `dims`).
pub fn audio_name(name: &str) -> bool {
    let lname = name.to_lowercase();
    (["wav", "audio", "speech", "signal", "pcm"]
        .iter()
        .any(|w| lname.contains(w))
        || lname == "input_values")
        && !["len", "size", "count", "rate", "num"]
            .iter()
            .any(|w| lname.contains(w))
}

/// Values a setting is compared with to catch the absent or empty case
/// (`k == 0`, `axis == -1`): not held, where the branch they select does
/// nothing the model is for.
const SENTINELS: [i64; 2] = [0, -1];

/// Whether an integer input of type `dtype` can hold `value` (a setting
/// compared through a Cast with 300 cannot be a uint8's).
fn holds(dtype: DataType, value: i64) -> bool {
    let (lo, hi): (i128, i128) = match dtype {
        DataType::Int8 => (i8::MIN.into(), i8::MAX.into()),
        DataType::Uint8 => (0, u8::MAX.into()),
        DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::Uint16 => (0, u16::MAX.into()),
        DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::Uint32 => (0, u32::MAX.into()),
        DataType::Int64 => (i64::MIN.into(), i64::MAX.into()),
        DataType::Uint64 => (0, u64::MAX.into()),
        DataType::Bool => (0, 1),
        _ => return false,
    };
    (lo..=hi).contains(&i128::from(value))
}

/// The largest random id of an integer input that indexes no table:
/// integers are drawn in [0, 100).
const ID_LIMIT: i64 = 100;

/// Ops whose first input's values reach their output unchanged, as far as
/// their range goes: reshaped, cast, or selected (a Gather of the ids
/// themselves: a decoder's `prefix[:, -1]` before its embedding).
const INDEX_PASS_THROUGH: &[&str] = &[
    "Cast",
    "Identity",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Expand",
    "Transpose",
    "Slice",
    "Clip",
    "Gather",
    "GatherElements",
    "GatherND",
    "Tile",
];

/// Ops whose every input's values reach their output through arithmetic:
/// the ways an index is wrapped on its way to a Gather (tf2onnx writes a
/// negative index's wrap-around as `i * (i >= 0) + (i + n) * (i < 0)`, or
/// as a Where).
const INDEX_ARITHMETIC: &[&str] = &[
    "Add", "Sub", "Mul", "Mod", "Min", "Max", "Abs", "Neg", "Concat",
];

/// The range `[lo, hi)` random integers (and float ids) of the input
/// `name`, of type `dtype`, are drawn in: 1s for a mask, 0s and 1s for
/// token types and segments, else [0, [`ID_LIMIT`]); below `index_rows`
/// where the input indexes a table, and over all of them where it indexes
/// it `as_is` (through no offset or wrap-around: a vocabulary's tokens;
/// BERT's first hundred ids are `[PAD]` and `[unused]` tokens, barely trained,
/// and MiniLM with int4 weights measured 0.991 on them, 0.987 on the whole
/// vocabulary). Never past what `dtype` holds (float16 ids: its integers,
/// up to 2048, held exactly).
fn id_range(
    name: &str,
    mask: bool,
    index_rows: Option<i64>,
    as_is: bool,
    dtype: DataType,
) -> (i64, i64) {
    let kind = segment_name(name);
    let hi: i64 = if mask {
        1
    } else if kind {
        2
    } else {
        ID_LIMIT
    };
    let hi = match index_rows {
        Some(r) if as_is && !mask && !kind => r,
        Some(r) => hi.min(r),
        None => hi,
    };
    let held: i64 = match dtype {
        DataType::Int8 => 1 << 7,
        DataType::Uint8 => 1 << 8,
        DataType::Int16 => 1 << 15,
        DataType::Uint16 => 1 << 16,
        DataType::Float16 => (1 << 11) + 1,
        DataType::Bfloat16 => (1 << 8) + 1,
        _ => i64::MAX,
    };
    let hi = hi.min(held);
    let lo: i64 = if mask { 1 } else { 0 };
    let lo = index_rows.map_or(lo, |r| lo.min(r - 1));
    (lo, hi)
}

/// How an integer input's random values are drawn ([`id_range`]), for the
/// report: a user reading a verdict on token ids should know which.
fn integers_note(name: &str, rows: Option<i64>, as_is: bool, dtype: DataType) -> String {
    let (lo, hi) = id_range(name, false, rows, as_is, dtype);
    let why = match rows {
        _ if segment_name(name) => "token types or segments".to_string(),
        Some(r) if hi == r && as_is => {
            format!("every one of the {r} rows it indexes (a table's, or a one-hot's)")
        }
        Some(r) if as_is => format!("all its type holds of the {r} rows it indexes"),
        Some(r) => format!("within the {r} rows it indexes (a table's, or a one-hot's)"),
        None => "it indexes no table".to_string(),
    };
    format!("input '{name}' drawn as integers in [{lo}, {hi}): {why}")
}

/// Whether an integer input named `name` holds token types or segments
/// (`token_type_ids`, `segment_ids`): drawn as 0s and 1s.
fn segment_name(name: &str) -> bool {
    let lname = name.to_lowercase();
    lname.contains("token_type") || lname.contains("segment")
}

/// The standard deviation of random 16-bit signals: a tenth of full scale.
const PCM16_SIGMA: f32 = 3276.8;

/// Whether an int16 input is a signal (PCM audio samples) rather than ids:
/// it has samples (rank 1 or more), indexes no table and is no mask (by
/// its name, or by its use: [`subtracted_from_one`]) nor named like
/// segment ids.
fn is_signal(s: &InputSpec) -> bool {
    s.shape.iter().product::<usize>() >= MIN_SIGNAL_SAMPLES
        && s.index_rows.is_none()
        && s.values != FloatValues::Mask
        && pcm_like(&s.name, s.dtype)
}

/// The fewest values an int16 signal holds: fewer are counts, lengths or
/// settings (a batch's lengths), which noise around 0 would make negative.
const MIN_SIGNAL_SAMPLES: usize = 16;

/// Whether input `name` of type `dtype` can be a 16-bit signal: int16, not
/// named like ids, a mask, segment ids or a length, size, count or rate
/// ([`is_signal`] also asks that it indexes no table).
pub(crate) fn pcm_like(name: &str, dtype: DataType) -> bool {
    let lname = name.to_lowercase();
    dtype == DataType::Int16
        && lname != "sr"
        && !["len", "size", "count", "rate", "num"]
            .iter()
            .any(|w| lname.contains(w))
        && !mask_name(name)
        && !lname.contains("token_type")
        && !lname.contains("segment")
        && !lname.contains("ids")
        && !lname.contains("_id")
        && !lname.ends_with("id")
        && !lname.contains("index")
}

/// Whether the graph's input `name` is a 16-bit signal ([`is_signal`]).
pub(crate) fn is_pcm_input(g: &Graph, vi: &crate::proto::ValueInfoProto) -> bool {
    let dtype = crate::ir::tensor_type(vi).and_then(|tt| DataType::try_from(tt.elem_type()).ok());
    dtype.is_some_and(|dt| pcm_like(vi.name(), dt))
        && crate::ir::declared_rank(vi).is_none_or(|r| r >= 1)
        && index_rows(g, vi.name()).is_none()
        && !subtracted_from_one(g, vi.name())
}

/// Whether a consumer of `value` casts it to an integer type.
fn cast_to_integers(g: &Graph, value: &str) -> bool {
    g.consumers(value).into_iter().any(|id| {
        let p = &g.nodes[id].proto;
        g.nodes[id].is_onnx()
            && p.op_type() == "Cast"
            && DataType::try_from(crate::ir::int_attr(p, "to", 0) as i32).is_ok_and(is_integer)
    })
}

/// The fewest rows of the constant tables that `value` indexes: each Gather
/// reading it as its indices, on a constant's axis, and each one-hot made
/// of it (a OneHot's depth, an Equal with the ramp 0..N), directly or
/// through ops that pass its values on ([`INDEX_PASS_THROUGH`],
/// [`INDEX_ARITHMETIC`], a Where's branches). Drawing ids below the fewest
/// rows of any of them only narrows the ids, where an id past a table's
/// end stops the run. `None` where nothing reads it so.
fn index_rows(g: &Graph, value: &str) -> Option<i64> {
    index_rows_as_is(g, value).0
}

/// [`index_rows`], and whether `value` reaches those tables only through
/// [`INDEX_PASS_THROUGH`] ops (no arithmetic, no Where on the way).
fn index_rows_as_is(g: &Graph, value: &str) -> (Option<i64>, bool) {
    let mut as_is = true;
    let mut rows: Option<i64> = None;
    // The fewest rows of those read so far, and `r`.
    let narrowed = |rows: Option<i64>, r: i64| Some(rows.map_or(r, |m| m.min(r)));
    follow_values(g, value, |v, n| {
        let p = &n.proto;
        match p.op_type() {
            "Gather" if p.input.get(1).is_some_and(|i| i == v) => {
                let t = p.input.first().and_then(|d| g.constant(d))?;
                let rank = t.dims.len() as i64;
                let axis = crate::ir::int_attr(p, "axis", 0);
                let axis = if axis < 0 { axis + rank } else { axis };
                if let Some(&r) = usize::try_from(axis).ok().and_then(|a| t.dims.get(a)) {
                    if r >= 1 {
                        rows = narrowed(rows, r);
                    }
                }
                None
            }
            // One-hot rows: the ONNX op's depth, or an Equal with the ramp
            // 0, 1, ..., N - 1 (jax2tf's one-hot, magika's bytes: drawn in
            // [0, 100), its lowercase letters, 97-122, and every byte past
            // them went unchecked).
            "OneHot" if p.input.first().is_some_and(|i| i == v) => {
                let depth = p.input.get(1).and_then(|d| small_constant(g, d))?;
                if let [d] = depth[..] {
                    if d >= 1.0 && d.fract() == 0.0 {
                        rows = narrowed(rows, d as i64);
                    }
                }
                None
            }
            // Only where the index was given an axis to meet the ramp on (an
            // Unsqueeze, a Reshape or an Expand made it): `x == arange(N)`
            // element by element is no one-hot.
            "Equal"
                if g.producer(v).is_some_and(|id| {
                    matches!(g.nodes[id].op(), "Unsqueeze" | "Reshape" | "Expand")
                }) =>
            {
                let other = p.input.iter().find(|i| *i != v)?;
                if let Some(r) = ramp_length(g, other) {
                    rows = narrowed(rows, r);
                }
                None
            }
            op if INDEX_PASS_THROUGH.contains(&op) && p.input.first().is_some_and(|i| i == v) => {
                p.output.first().cloned()
            }
            op if INDEX_ARITHMETIC.contains(&op) => {
                as_is = false;
                p.output.first().cloned()
            }
            "Where" if p.input.iter().skip(1).any(|i| i == v) => {
                as_is = false;
                p.output.first().cloned()
            }
            _ => None,
        }
    });
    (rows, as_is && rows.is_some())
}

/// The length `N` of a constant holding 0, 1, ..., N - 1 in order (of any
/// shape: `[1, 1, 257]`), N at least 2 and at most [`RAMP_MAX`]: what an
/// index is compared with to make it one-hot.
fn ramp_length(g: &Graph, v: &str) -> Option<i64> {
    let t = g.constant_value(v)?;
    let n = i64::try_from(crate::ir::tensor::numel(&t.dims).ok()?).ok()?;
    // One axis holds the ramp.
    if crate::ir::tensor::is_external(t)
        || !(2..=RAMP_MAX).contains(&n)
        || t.dims.iter().filter(|&&d| d != 1).count() != 1
    {
        return None;
    }
    let values = crate::ir::tensor::to_i64(t, t.raw_data.as_ref()).ok()?;
    values
        .iter()
        .enumerate()
        .all(|(i, &x)| x == i as i64)
        .then_some(n)
}

/// The longest ramp [`ramp_length`] reads: a one-hot over a vocabulary.
const RAMP_MAX: i64 = 1 << 16;

/// A setting's value as the scalar of type `dtype` a sample holds.
fn setting_tensor(value: i64, dtype: DataType) -> Result<Tensor> {
    Ok(tract_onnx::prelude::tensor0(value)
        .cast_to_dt(crate::verify::tract::datum_type(dtype)?)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_owned())
}

/// `count` seeded random samples. Floats are standard normal (uniform in
/// [0, 1) where the spec says [`FloatValues::Unit`], every other sample
/// where it says [`FloatValues::Mixed`]; in [0, 255) where it says
/// [`FloatValues::Pixels`]; normal at a tenth of full scale where it says
/// [`FloatValues::Waveform`]); integers are in
/// [0, 100) (valid token ids and byte values for typical models), over the
/// rows of the smallest table the input indexes as it is, below them where
/// it indexes through arithmetic (`id_range`; float ids,
/// [`FloatValues::Ids`], likewise), but for int16 signals (PCM
/// audio, `is_signal`: normal at a tenth of full scale),
/// except inputs named like masks or segment ids (`mask`, `token_type`,
/// `segment`), which get 1s (masks, float ones too: [`FloatValues::Mask`])
/// or 0s and 1s; bools are fair coins. A scalar
/// integer input is a setting (a sample rate, a count), not data: it is
/// drawn once, or held at the value the model compares it with
/// ([`InputSpec::setting`]), and every sample shares it, so a model that
/// branches on it (silero's `sr`) is checked on one branch rather than not
/// at all; its other values get samples of their own
/// ([`crate::verify::ReferenceInputs::variant`]).
pub fn random_samples(specs: &[InputSpec], count: usize, seed: u64) -> Result<Vec<Vec<Tensor>>> {
    // All of them are held at once: refused where they would not fit
    // (`--samples 1000000000000` aborted the process asking for 24 TB).
    let per_sample = specs.iter().try_fold(0u64, |acc, s| {
        sample_bytes(&s.shape, s.dtype).and_then(|b| acc.checked_add(b))
    });
    let total = per_sample.and_then(|b| b.checked_mul(count as u64));
    let limit = sample_bytes_limit();
    if total.is_none_or(|t| t > limit) {
        bail!(
            "{count} random samples of {} each would take {}, more than a quarter of this machine's memory or its container's limit ({}): ask for fewer (--samples, or quant's samples=)",
            per_sample.map_or("more bytes than 64 bits count".to_string(), crate::report::mb),
            total.map_or("more bytes than 64 bits count".to_string(), crate::report::mb),
            crate::report::mb(limit)
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut samples: Vec<Vec<Tensor>> = Vec::with_capacity(count);
    for k in 0..count {
        let mut sample = Vec::with_capacity(specs.len());
        for (i, s) in specs.iter().enumerate() {
            let setting = s.shape.is_empty() && is_integer(s.dtype);
            if setting && k > 0 {
                sample.push(samples[0][i].clone());
                continue;
            }
            if let Some(value) = s.setting.filter(|_| setting) {
                sample.push(setting_tensor(value, s.dtype)?);
                continue;
            }
            let n: usize = s.shape.iter().product();
            // Lengths: every value the whole length of their input.
            let length = s.length_of.as_ref().and_then(|(of, axis)| {
                specs
                    .iter()
                    .find(|t| &t.name == of)
                    .and_then(|t| t.shape.get(*axis))
            });
            if let Some(&len) = length {
                let t = Tensor::from_shape(&s.shape, &vec![len as i64; n])?;
                sample.push(
                    t.cast_to_dt(crate::verify::tract::datum_type(s.dtype)?)
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                        .into_owned(),
                );
                continue;
            }
            let mask = s.values == FloatValues::Mask;
            let (lo, hi) = match s.values {
                // 8-bit pixels: every value.
                FloatValues::Pixels if !is_float(s.dtype) => (0, 256),
                _ => id_range(&s.name, mask, s.index_rows, s.indexes_as_is, s.dtype),
            };
            // Normal values are drawn in the element type (the seeded
            // samples stay what they were); uniform ones in [0, 1).
            let unit: Option<f32> = match s.values {
                FloatValues::Normal
                | FloatValues::Mask
                | FloatValues::Zeros
                | FloatValues::Ids
                | FloatValues::Waveform => None,
                FloatValues::Unit => Some(1.0),
                FloatValues::Pixels => Some(255.0),
                FloatValues::Mixed => (k % 2 == 1).then_some(1.0),
            };
            // Masks and states: values of their own, in the float type.
            let own: Option<Vec<f32>> = match s.values {
                FloatValues::Mask if s.shape.len() == 4 && s.shape[2] > 1 && s.shape[3] > 1 => {
                    Some(
                        (0..n)
                            .map(|_| f32::from(u8::from(rng.random_bool(0.5))))
                            .collect(),
                    )
                }
                FloatValues::Mask => Some(vec![1.0; n]),
                FloatValues::Zeros => Some(vec![0.0; n]),
                FloatValues::Ids => Some(
                    (0..n)
                        .map(|_| rng.random_range(lo..hi.max(lo + 1)) as f32)
                        .collect(),
                ),
                // (`id_range` keeps them below what float16 holds exactly.)
                _ => None,
            };
            if let Some(values) = own.filter(|_| is_float(s.dtype)) {
                let t = Tensor::from_shape(&s.shape, &values)?;
                sample.push(
                    t.cast_to_dt(crate::verify::tract::datum_type(s.dtype)?)
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                        .into_owned(),
                );
                continue;
            }
            // Ids of integer type `$t`, uniform in [lo, hi).
            macro_rules! ids {
                ($t:ty) => {
                    Tensor::from_shape(
                        &s.shape,
                        &(0..n)
                            .map(|_| rng.random_range(lo as $t..=(hi.max(lo + 1) - 1) as $t))
                            .collect::<Vec<$t>>(),
                    )?
                };
            }
            let sigma = match s.values {
                FloatValues::Waveform => WAVEFORM_SIGMA,
                _ => 1.0,
            };
            let t = match s.dtype {
                DataType::Float => Tensor::from_shape(
                    &s.shape,
                    &(0..n)
                        .map(|_| match unit {
                            Some(top) => rng.random::<f32>() * top,
                            None => rng.sample::<f32, _>(StandardNormal) * sigma,
                        })
                        .collect::<Vec<_>>(),
                )?,
                DataType::Double => Tensor::from_shape(
                    &s.shape,
                    &(0..n)
                        .map(|_| match unit {
                            Some(top) => rng.random::<f64>() * f64::from(top),
                            None => rng.sample::<f64, _>(StandardNormal) * f64::from(sigma),
                        })
                        .collect::<Vec<_>>(),
                )?,
                DataType::Float16 => Tensor::from_shape(
                    &s.shape,
                    &(0..n)
                        .map(|_| {
                            f16::from_f32(match unit {
                                Some(top) => rng.random::<f32>() * top,
                                None => rng.sample::<f32, _>(StandardNormal) * sigma,
                            })
                        })
                        .collect::<Vec<_>>(),
                )?,
                DataType::Int64 => ids!(i64),
                DataType::Int32 => ids!(i32),
                // A 16-bit signal (PCM audio: a VAD's or keyword spotter's
                // samples) at a tenth of full scale, about -20 dBFS, as
                // speech is; ids where it indexes a table or is named like
                // a mask or segment ids.
                DataType::Int16 if is_signal(s) => Tensor::from_shape(
                    &s.shape,
                    &(0..n)
                        .map(|_| {
                            let v = rng.sample::<f32, _>(StandardNormal) * PCM16_SIGMA;
                            v.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16
                        })
                        .collect::<Vec<_>>(),
                )?,
                DataType::Int16 => ids!(i16),
                DataType::Int8 => ids!(i8),
                DataType::Uint64 => ids!(u64),
                DataType::Uint32 => ids!(u32),
                DataType::Uint16 => ids!(u16),
                DataType::Uint8 => ids!(u8),
                DataType::Bool => Tensor::from_shape(
                    &s.shape,
                    &(0..n).map(|_| rng.random_bool(0.5)).collect::<Vec<_>>(),
                )?,
                DataType::String => bail!(
                    "input '{}' is text (String): random text cannot be drawn, and --inputs cannot carry it either (string arrays are not read), so verification cannot run; pass --no-verify to write the result unverified and check it with the runtime that runs the model",
                    s.name
                ),
                other => bail!(
                    "cannot generate random values for input '{}' of type {other:?}; pass --inputs",
                    s.name
                ),
            };
            sample.push(t);
        }
        samples.push(sample);
    }
    Ok(samples)
}

/// The axes of `vi` that are an image's height and width when it is an
/// image input without their sizes: rank 4, float (or uint8), 1, 3 or 4
/// channels on axis 1 (NCHW) or axis 3 (NHWC), and not named like a mask
/// or a cache (a BERT export's `attention_mask` [1, 1, 1, 64], an FSMN
/// VAD's `in_cache0` [1, 128, 19, 1] have that shape).
pub fn image_axes(vi: &crate::proto::ValueInfoProto) -> Vec<usize> {
    let Some(tt) = crate::ir::tensor_type(vi) else {
        return vec![];
    };
    if mask_name(vi.name()) || vi.name().to_lowercase().contains("cache") {
        return vec![];
    }
    // Float, or 8-bit pixels (TensorFlow exports take uint8 NHWC images).
    let pixels = matches!(
        DataType::try_from(tt.elem_type()),
        Ok(DataType::Float
            | DataType::Float16
            | DataType::Double
            | DataType::Bfloat16
            | DataType::Uint8)
    );
    let Some(shape) = &tt.shape else {
        return vec![];
    };
    if !pixels || shape.dim.len() != 4 {
        return vec![];
    }
    use crate::proto::tensor_shape_proto::dimension::Value as Dim;
    let channels = |axis: usize| matches!(shape.dim[axis].value, Some(Dim::DimValue(c)) if [1, 3, 4].contains(&c));
    if channels(1) {
        vec![2, 3]
    } else if channels(3) {
        vec![1, 2]
    } else {
        vec![]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::{attr_ints, ModelBuilder};

    /// cgroup limits: v2's `memory.max` along the process's path (the
    /// least of it and its parents), v1's `memory.limit_in_bytes`, "max"
    /// and v1's unlimited value as none, a path missing under the root
    /// walked up to it.
    #[test]
    fn a_cgroup_memory_limit_is_the_least_along_the_path() {
        let root = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let p = root.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        let limit = |own: &str| cgroup_memory_limit(root.path(), own);
        assert_eq!(limit("0::/\n"), None);
        write("memory.max", "max\n");
        write("app/memory.max", "8589934592\n");
        write("app/job/memory.max", "max\n");
        assert_eq!(limit("0::/app/job\n"), Some(8 << 30));
        write("app/job/memory.max", "2147483648\n");
        assert_eq!(limit("0::/app/job\n"), Some(2 << 30));
        assert_eq!(limit("0::/\n"), None);
        // A path of the host's, not under this root: its root's limit.
        write("memory.max", "4294967296\n");
        assert_eq!(limit("0::/elsewhere/x\n"), Some(4 << 30));
        // v1: the memory controller's own hierarchy, unlimited as 2^63
        // rounded to pages.
        let v1 = tempfile::tempdir().unwrap();
        let p = v1.path().join("memory/docker/abc");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(
            v1.path().join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        let own = "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n";
        assert_eq!(cgroup_memory_limit(v1.path(), own), None);
        std::fs::write(p.join("memory.limit_in_bytes"), "1073741824\n").unwrap();
        assert_eq!(cgroup_memory_limit(v1.path(), own), Some(1 << 30));
        // Unreadable or malformed: none.
        assert_eq!(cgroup_memory_limit(v1.path(), "garbage"), None);
    }

    /// An image model: `pre` (op and scalar constant) on the input, then a
    /// Conv of 4 channels with batch normalisation centring each channel on
    /// images of mean pixel `mean` (seen after `pre`), then a ReLU.
    fn conv_bn(pre: Option<(&str, f32)>, mean: f32) -> crate::ir::Model {
        let w: Vec<f32> = (0..4 * 27)
            .map(|i| ((i * 37 % 23) as f32 - 9.0) / 40.0)
            .collect();
        let sums: Vec<f32> = w.chunks(27).map(|c| c.iter().sum()).collect();
        let mut b = ModelBuilder::new(13).input("x", &[1, 3, 16, 16]);
        let conv_in = match pre {
            Some((op, c)) => {
                b = b
                    .init_f32("c", &[], &[c])
                    .node("pre", op, &["x", "c"], &["xc"]);
                "xc"
            }
            None => "x",
        };
        b.init_f32("w", &[4, 3, 3, 3], &w)
            .init_f32("scale", &[4], &[1.5, 0.5, 2.0, 1.0])
            // Small shifts, as training leaves them.
            .init_f32("shift", &[4], &[0.3, -0.2, 0.1, 0.5])
            .init_f32(
                "mu",
                &[4],
                &sums.iter().map(|s| s * mean).collect::<Vec<_>>(),
            )
            .init_f32("var", &[4], &[4.0, 1.0, 9.0, 2.0])
            .node_with(
                "conv",
                "Conv",
                &[conv_in, "w"],
                &["y"],
                vec![attr_ints("kernel_shape", &[3, 3])],
            )
            .node(
                "bn",
                "BatchNormalization",
                &["y", "scale", "shift", "mu", "var"],
                &["z"],
            )
            .node("relu", "Relu", &["z"], &["out"])
            .output("out", &[])
            .build()
            .unwrap()
    }

    #[test]
    fn the_first_layer_tells_the_mean_pixel_its_images_had() {
        let mean = |pre, mean| match pixel_mean(&conv_bn(pre, mean), "x") {
            Some((1.0, 0.0, Some(m))) => m,
            other => panic!("{other:?}"),
        };
        // The shifts leave the estimate within a unit.
        assert!((mean(None, 120.0) - 120.0).abs() < 1.0);
        assert!(mean(None, 0.0).abs() < 1.0);
        let values = |pre, mean| pixel_values(&conv_bn(pre, mean), "x");
        assert!(
            matches!(values(None, 120.0), Some(PixelValues::Mean(m)) if (m - 120.0).abs() < 1.0)
        );
        assert_eq!(values(None, 0.0), None);
        assert_eq!(values(None, 0.5), None);
        // Divided by 255 in the model: it takes 0-255 pixels.
        assert_eq!(
            values(Some(("Div", 255.0)), 0.45),
            Some(PixelValues::ScaledDown(255.0))
        );
        // Less its mean in the model.
        assert!(
            matches!(values(Some(("Sub", 114.0)), 0.0), Some(PixelValues::Mean(m)) if (m - 114.0).abs() < 1.0)
        );
        // Normalised in the model from [0, 1]: (x - 0.45) / 0.25.
        assert_eq!(values(Some(("Sub", 0.45)), 0.0), None);
        assert_eq!(values(Some(("Mul", 4.0)), 0.0), None);
        // An op the estimate cannot see through: none.
        assert_eq!(pixel_mean(&conv_bn(Some(("Pow", 2.0)), 0.0), "x"), None);
    }

    #[test]
    fn odd_first_layers_tell_nothing_and_do_not_panic() {
        use crate::ir::builder::attr_int;
        let w: Vec<f32> = (0..4 * 27).map(|i| (i % 5) as f32 / 10.0).collect();
        // Two branches scaled differently, joined: no one scale.
        let m = ModelBuilder::new(13)
            .input("x", &[1, 3, 8, 8])
            .init_f32("k1", &[], &[255.0])
            .init_f32("k2", &[], &[2.0])
            .init_f32("w", &[4, 6, 3, 3], &[w.clone(), w.clone()].concat())
            .init_f32("b", &[4], &[-100.0; 4])
            .node("d1", "Div", &["x", "k1"], &["x1"])
            .node("d2", "Div", &["x", "k2"], &["x2"])
            .node_with(
                "cat",
                "Concat",
                &["x1", "x2"],
                &["xc"],
                vec![attr_int("axis", 1)],
            )
            .node("c", "Conv", &["xc", "w", "b"], &["y"])
            .output("y", &[])
            .build()
            .unwrap();
        assert_eq!(pixel_mean(&m, "x"), None);
        // A Conv without a bias, a Relu after it: a mean is not told (its
        // input's shape read on the side changes nothing).
        let m = ModelBuilder::new(13)
            .input("x", &[1, 3, 8, 8])
            .init_f32("w", &[4, 3, 3, 3], &w)
            .node("s", "Shape", &["x"], &["shape"])
            .node("c", "Conv", &["x", "w"], &["y"])
            .node("r", "Relu", &["y"], &["out"])
            .output("out", &[])
            .output("shape", &[])
            .build()
            .unwrap();
        assert_eq!(pixel_mean(&m, "x"), Some((1.0, 0.0, None)));
        // A weight of no values, a bias of the wrong length.
        for (dims, bias) in [
            ([4i64, 0, 3, 3], vec![1.0f32; 4]),
            ([4, 3, 3, 3], vec![1.0; 3]),
        ] {
            let n: i64 = dims.iter().product();
            let m = ModelBuilder::new(13)
                .input("x", &[1, 3, 8, 8])
                .init_f32("w", &dims, &w[..n as usize])
                .init_f32("b", &[bias.len() as i64], &bias)
                .init_f32("k", &[4], &[1.0; 4])
                .node("c", "Conv", &["x", "w", "b"], &["y"])
                .node("m", "Mul", &["y", "k"], &["out"])
                .output("out", &[])
                .build()
                .unwrap();
            assert_eq!(pixel_mean(&m, "x"), None, "{dims:?}");
        }
    }

    /// A mask named by nothing but its use (a TorchScript export's
    /// `onnx::Unsqueeze_1`, cast, subtracted from 1 and scaled to the float
    /// minimum) is drawn as 1s; ids drawn where it would be make that bias
    /// overflow to infinity. An input added to 1 is no mask, nor is a
    /// float one subtracted from 1 (an image inverted).
    #[test]
    fn an_input_the_model_subtracts_from_one_is_drawn_as_a_mask() {
        use crate::ir::builder::{attr_int, typed_value};
        let b = ModelBuilder::new(13)
            .init_f32("one", &[], &[1.0])
            .init_f32("min", &[], &[f32::MIN])
            .node_with(
                "cast",
                "Cast",
                &["onnx::Unsqueeze_1"],
                &["m"],
                vec![attr_int("to", 1)],
            )
            .node("sub", "Sub", &["one", "m"], &["inverted"])
            .node("bias", "Mul", &["inverted", "min"], &["y"])
            .node_with("cast2", "Cast", &["other"], &["o"], vec![attr_int("to", 1)])
            .node("add", "Add", &["one", "o"], &["z"])
            .node("invert", "Sub", &["one", "image"], &["inverted_image"])
            // An int16 mask long enough to pass for audio samples.
            .node_with(
                "cast3",
                "Cast",
                &["mask16"],
                &["m16"],
                vec![attr_int("to", 1)],
            )
            .node("sub16", "Sub", &["one", "m16"], &["y16"])
            .output("y16", &[1, 32])
            .output("y", &[1, 8])
            .output("z", &[1, 8])
            .output("inverted_image", &[1, 8]);
        let mut p = b.proto();
        p.graph.as_mut().unwrap().input = vec![
            typed_value("onnx::Unsqueeze_1", DataType::Int64, &[1, 8]),
            typed_value("other", DataType::Int64, &[1, 8]),
            typed_value("image", DataType::Float, &[1, 8]),
            typed_value("mask16", DataType::Int16, &[1, 32]),
        ];
        let external = std::sync::Arc::new(crate::io::ExternalData::new(".".into()));
        let m = crate::ir::Model::from_proto(p, external).unwrap();
        let mut notes = vec![];
        let specs = input_specs(&m.graph, &HashMap::new(), &mut notes).unwrap();
        assert_eq!(specs[0].values, FloatValues::Mask, "{notes:?}");
        assert_eq!(specs[1].values, FloatValues::Normal, "{notes:?}");
        assert_eq!(specs[2].values, FloatValues::Normal, "{notes:?}");
        assert_eq!(specs[3].values, FloatValues::Mask, "{notes:?}");
        assert!(!is_pcm_input(&m.graph, &m.graph.rest.input[3]));
        assert!(notes.iter().any(|n| n
            == "input 'onnx::Unsqueeze_1' is a mask (the model computes 1 minus it): drawn as 1s"));
        // How the other integers are drawn is said; the masks' note says theirs.
        assert!(notes
            .iter()
            .any(|n| n == "input 'other' drawn as integers in [0, 100): it indexes no table"));
        assert!(!notes
            .iter()
            .any(|n| n.starts_with("input 'onnx::Unsqueeze_1' drawn")));
        assert_eq!(
            integers_note("input_ids", Some(30522), true, DataType::Int64),
            "input 'input_ids' drawn as integers in [0, 30522): every one of the 30522 rows it indexes (a table's, or a one-hot's)"
        );
        assert_eq!(
            integers_note("pos", Some(512), false, DataType::Int64),
            "input 'pos' drawn as integers in [0, 100): within the 512 rows it indexes (a table's, or a one-hot's)"
        );
        assert_eq!(
            integers_note("token_type_ids", Some(2), true, DataType::Int64),
            "input 'token_type_ids' drawn as integers in [0, 2): token types or segments"
        );
        let drawn = random_samples(&specs, 2, 0).unwrap();
        for s in &drawn {
            let mask = crate::verify::tract::to_f64(&s[0]).unwrap();
            assert!(mask.iter().all(|&v| v == 1.0), "{mask:?}");
            let other = crate::verify::tract::to_f64(&s[1]).unwrap();
            assert!(other.iter().any(|&v| v > 1.0), "{other:?}");
            let mask16 = crate::verify::tract::to_f64(&s[3]).unwrap();
            assert!(mask16.iter().all(|&v| v == 1.0), "{mask16:?}");
        }
    }

    /// The constants a scalar integer input is compared with (silero's
    /// `sr == 16000`), through a Cast, in the order of the graph's nodes,
    /// each once; a comparison with another input, or with a constant of
    /// several values, is none.
    #[test]
    fn the_constants_a_setting_is_compared_with_are_found() {
        use crate::ir::builder::{attr_int, typed_value};
        let b = ModelBuilder::new(13)
            .init(crate::ir::tensor::int_scalar(
                "rate",
                DataType::Int32,
                16000,
            ))
            .init(crate::ir::tensor::int_scalar(
                "eight",
                DataType::Int64,
                8000,
            ))
            .init(crate::ir::tensor::from_i64("pair", &[1, 2]))
            .node_with("cast", "Cast", &["sr"], &["sr32"], vec![attr_int("to", 6)])
            .node("is16k", "Equal", &["sr32", "rate"], &["c"])
            .node("is8k", "Equal", &["eight", "sr"], &["c8"])
            .node("again", "Equal", &["sr", "eight"], &["c8b"])
            .node("inputs", "Equal", &["sr", "count"], &["cc"])
            .node("pairs", "Equal", &["sr", "pair"], &["cp"])
            .output("c", &[])
            .output("c8", &[])
            .output("c8b", &[])
            .output("cc", &[])
            .output("cp", &[2]);
        let mut p = b.proto();
        p.graph.as_mut().unwrap().input = vec![
            typed_value("sr", DataType::Int64, &[]),
            typed_value("count", DataType::Int64, &[]),
        ];
        let external = std::sync::Arc::new(crate::io::ExternalData::new(".".into()));
        let m = crate::ir::Model::from_proto(p, external).unwrap();
        assert_eq!(compared_with(&m.graph, "sr"), vec![16000, 8000]);
        assert_eq!(compared_with(&m.graph, "count"), Vec::<i64>::new());
    }

    /// A model that takes a sample rate: the setting holds the first value
    /// the model compares it with (silero's 16 kHz network, where a random
    /// one selects the comparison's false side), and the float signal
    /// beside it is a waveform, drawn at a tenth of full scale; a model
    /// without the rate draws the same input standard normal.
    #[test]
    fn a_model_taking_a_sample_rate_gets_that_rate_and_a_quiet_waveform() {
        use crate::ir::builder::typed_value;
        let model = |rate: bool| {
            let mut b = ModelBuilder::new(13).node("id", "Identity", &["input"], &["y"]);
            if rate {
                b = b
                    .init(crate::ir::tensor::int_scalar(
                        "rate",
                        DataType::Int64,
                        16000,
                    ))
                    .node("is16k", "Equal", &["sr", "rate"], &["c"])
                    .output("c", &[]);
            }
            let mut p = b.output("y", &[1, 512]).proto();
            let g = p.graph.as_mut().unwrap();
            g.input = vec![typed_value("input", DataType::Float, &[1, 512])];
            if rate {
                g.input.push(typed_value("sr", DataType::Int64, &[]));
            }
            let external = std::sync::Arc::new(crate::io::ExternalData::new(".".into()));
            crate::ir::Model::from_proto(p, external).unwrap()
        };
        let rms = |t: &Tensor| {
            let plain = t.try_as_plain_ram().unwrap();
            let v = plain.as_slice::<f32>().unwrap();
            (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt()
        };
        let m = model(true);
        let mut notes = vec![];
        let specs = input_specs(&m.graph, &HashMap::new(), &mut notes).unwrap();
        assert_eq!(specs[0].values, FloatValues::Waveform);
        assert_eq!(specs[1].setting, Some(16000));
        assert_eq!(specs[1].setting_values, [16000, 8000]);
        // Said of the value the samples hold; the values checked beside it
        // are said once their references are built.
        assert!(
            notes.iter().any(|n| n.contains(
                "input 'sr' is a setting the model compares with 16000: held at 16000 in every sample"
            )),
            "{notes:?}"
        );
        assert_eq!(
            setting_note(&m.graph, "sr", &[16000, 8000]),
            "input 'sr' is a setting the model compares with 16000: checked at 16000 and 8000, each value on samples of its own (other values are not checked; pass --inputs to check them)"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.contains("input 'input' is a waveform")),
            "{notes:?}"
        );
        let samples = random_samples(&specs, 3, 0).unwrap();
        for s in &samples {
            assert_eq!(s[1].cast_to_scalar::<i64>().unwrap(), 16000);
            let r = rms(&s[0]);
            assert!((0.08..0.12).contains(&r), "{r}");
        }
        let m = model(false);
        let specs = input_specs(&m.graph, &HashMap::new(), &mut vec![]).unwrap();
        assert_eq!(specs[0].values, FloatValues::Normal);
        let r = rms(&random_samples(&specs, 1, 0).unwrap()[0][0]);
        assert!((0.8..1.2).contains(&r), "{r}");
    }

    /// Which scalar inputs make a model one that takes a sample rate, and
    /// which settings hold a compared value: a rate by its name alone
    /// (`sr`, compared with nothing: no value to hold), or named with
    /// `rate` and compared with a rate; not a number compared with 32000
    /// (a vocabulary's size) under another name, which still holds it. A
    /// length compared with 0 (an "is it empty" guard) holds its input's
    /// length; a count compared with 0 is drawn at random, as is a value its
    /// type cannot hold (a uint8 compared with 300 through a Cast).
    #[test]
    fn a_sample_rate_is_told_by_its_name_and_a_setting_holds_what_its_type_can() {
        use crate::ir::builder::{attr_int, typed_value};
        // (scalar input, its type, the constant it is compared with)
        let model = |scalar: &str, dtype: DataType, compared: Option<i64>| {
            let mut b = ModelBuilder::new(13).node("id", "Identity", &["input"], &["y"]);
            if let Some(c) = compared {
                b = b
                    .init(crate::ir::tensor::int_scalar("k", DataType::Int64, c))
                    .node_with("cast", "Cast", &[scalar], &["s64"], vec![attr_int("to", 7)])
                    .node("eq", "Equal", &["s64", "k"], &["c"])
                    .output("c", &[]);
            }
            let mut p = b.output("y", &[1, 512]).proto();
            let g = p.graph.as_mut().unwrap();
            g.input = vec![
                typed_value("input", DataType::Float, &[1, 512]),
                typed_value(scalar, dtype, &[]),
            ];
            let external = std::sync::Arc::new(crate::io::ExternalData::new(".".into()));
            crate::ir::Model::from_proto(p, external).unwrap()
        };
        let specs =
            |m: &crate::ir::Model| input_specs(&m.graph, &HashMap::new(), &mut vec![]).unwrap();
        // (scalar input, its type, the constant it is compared with, a
        // sample rate, the values checked: the first held in the samples)
        for (scalar, dtype, compared, rate, checked) in [
            ("sr", DataType::Int64, None, true, vec![]),
            (
                "sample_rate",
                DataType::Int32,
                Some(16000),
                true,
                vec![16000, 8000],
            ),
            (
                "rate_hz",
                DataType::Int64,
                Some(8000),
                true,
                vec![8000, 16000],
            ),
            ("vocab", DataType::Int64, Some(32000), false, vec![32000]),
            ("input_length", DataType::Int64, Some(0), false, vec![]),
            ("count", DataType::Int64, Some(0), false, vec![]),
            ("count", DataType::Int64, Some(3), false, vec![3]),
            ("mode", DataType::Uint8, Some(300), false, vec![]),
        ] {
            let held = checked.first().copied();
            let m = model(scalar, dtype, compared);
            assert_eq!(takes_sample_rate(&m.graph), rate, "{scalar}");
            let s = specs(&m);
            let want = if rate {
                FloatValues::Waveform
            } else {
                FloatValues::Normal
            };
            assert_eq!(s[0].values, want, "{scalar}");
            assert_eq!(s[1].setting, held, "{scalar}");
            assert_eq!(s[1].setting_values, checked, "{scalar}");
        }
        // A state beside a sample rate is no waveform.
        let m = model("sr", DataType::Int64, None);
        let state = typed_value("state", DataType::Float, &[1, 512]);
        assert!(!waveform(&m.graph, &state));
    }

    /// An index made one-hot is drawn over its rows: compared with the
    /// ramp 0..N (jax2tf's one-hot, magika's bytes: 257) or read by a
    /// OneHot of depth N; a ramp from 1 is no one-hot, nor an index compared
    /// with a ramp element by element.
    #[test]
    fn one_hot_indices_are_drawn_over_their_rows() {
        use crate::ir::builder::typed_value;
        let ramp: Vec<i64> = (0..257).collect();
        let shifted: Vec<i64> = (1..258).collect();
        let b = ModelBuilder::new(13)
            .init(crate::ir::tensor::from_i64("ramp", &ramp))
            .init(crate::ir::tensor::from_i64("shifted", &shifted))
            .init(crate::ir::tensor::from_i64("depth", &[10]))
            .init(crate::ir::tensor::from_i64(
                "eight",
                &(0..8).collect::<Vec<i64>>(),
            ))
            .init(crate::ir::tensor::from_i64("onoff", &[0, 1]))
            .init(crate::ir::tensor::from_i64("axes", &[2]))
            .node("u", "Unsqueeze", &["bytes", "axes"], &["b3"])
            .node("eq", "Equal", &["b3", "ramp"], &["hot"])
            .node("oh", "OneHot", &["cls", "depth", "onoff"], &["cls_hot"])
            .node("eq2", "Equal", &["other", "shifted"], &["other_hot"])
            // Element by element: no one-hot.
            .node("eq3", "Equal", &["flat", "eight"], &["same"])
            .output("hot", &[1, 8, 257])
            .output("cls_hot", &[1, 4, 10])
            .output("other_hot", &[1, 8, 257])
            .output("same", &[1, 8]);
        let mut p = b.proto();
        p.graph.as_mut().unwrap().input = vec![
            typed_value("bytes", DataType::Int64, &[1, 8]),
            typed_value("cls", DataType::Int64, &[1, 4]),
            typed_value("other", DataType::Int64, &[1, 8]),
            typed_value("flat", DataType::Int64, &[1, 8]),
        ];
        let external = std::sync::Arc::new(crate::io::ExternalData::new(".".into()));
        let m = crate::ir::Model::from_proto(p, external).unwrap();
        let mut notes = vec![];
        let specs = input_specs(&m.graph, &HashMap::new(), &mut notes).unwrap();
        assert_eq!(
            (specs[0].index_rows, specs[0].indexes_as_is),
            (Some(257), true)
        );
        assert_eq!(
            (specs[1].index_rows, specs[1].indexes_as_is),
            (Some(10), true)
        );
        assert_eq!(specs[2].index_rows, None);
        assert_eq!(specs[3].index_rows, None);
        let drawn = random_samples(&specs, 4, 0).unwrap();
        let bytes: Vec<f64> = drawn
            .iter()
            .flat_map(|s| crate::verify::tract::to_f64(&s[0]).unwrap())
            .collect();
        assert!(
            bytes.iter().all(|&b| (0.0..257.0).contains(&b)),
            "{bytes:?}"
        );
        assert!(bytes.iter().any(|&b| b >= 100.0), "{bytes:?}");
    }

    /// Ids selected before they index a table (a GRU decoder's last token,
    /// `prefix[:, -1]`, a Gather of the ids themselves) are drawn over the
    /// table's rows: the selection passes them on unchanged.
    #[test]
    fn ids_selected_before_their_table_are_drawn_over_its_rows() {
        use crate::ir::builder::{attr_int, typed_value};
        let b = ModelBuilder::new(13)
            .init(crate::ir::tensor::from_i64("last", &[3]))
            .init(crate::ir::tensor::from_f32("emb", &[160, 4], &[0.5; 640]))
            .node_with(
                "pick",
                "Gather",
                &["prefix", "last"],
                &["token"],
                vec![attr_int("axis", 1)],
            )
            .node("embed", "Gather", &["emb", "token"], &["e"])
            .output("e", &[1, 1, 4]);
        let mut p = b.proto();
        p.graph.as_mut().unwrap().input = vec![typed_value("prefix", DataType::Int64, &[1, 6])];
        let external = std::sync::Arc::new(crate::io::ExternalData::new(".".into()));
        let m = crate::ir::Model::from_proto(p, external).unwrap();
        let specs = input_specs(&m.graph, &HashMap::new(), &mut vec![]).unwrap();
        assert_eq!(
            (specs[0].index_rows, specs[0].indexes_as_is),
            (Some(160), true)
        );
        let drawn: Vec<f64> = random_samples(&specs, 8, 0)
            .unwrap()
            .iter()
            .flat_map(|s| crate::verify::tract::to_f64(&s[0]).unwrap())
            .collect();
        assert!(
            drawn.iter().all(|&i| (0.0..160.0).contains(&i)),
            "{drawn:?}"
        );
        assert!(drawn.iter().any(|&i| i >= 100.0), "{drawn:?}");
    }

    /// An image of 8-bit pixels (a TensorFlow export's uint8 NHWC input)
    /// is drawn over every value, not as ids in [0, 100).
    #[test]
    fn uint8_images_are_drawn_over_every_pixel_value() {
        use crate::ir::builder::{attr_int, typed_value};
        let b = ModelBuilder::new(13)
            .node_with("cast", "Cast", &["image"], &["y"], vec![attr_int("to", 1)])
            .output("y", &[1, 16, 16, 3]);
        let mut p = b.proto();
        p.graph.as_mut().unwrap().input =
            vec![typed_value("image", DataType::Uint8, &[1, 16, 16, 3])];
        let external = std::sync::Arc::new(crate::io::ExternalData::new(".".into()));
        let m = crate::ir::Model::from_proto(p, external).unwrap();
        let mut notes = vec![];
        let specs = input_specs(&m.graph, &HashMap::new(), &mut notes).unwrap();
        assert_eq!(specs[0].values, FloatValues::Pixels, "{notes:?}");
        assert_eq!(
            notes,
            ["input 'image' is an image of 8-bit pixels: drawn as integers in [0, 256)"]
        );
        let drawn = random_samples(&specs, 2, 0).unwrap();
        let v = crate::verify::tract::to_f64(&drawn[0][0]).unwrap();
        assert!(v.iter().any(|&x| x >= 200.0), "{v:?}");
        assert!(v.iter().all(|&x| (0.0..256.0).contains(&x)));
    }

    /// An image-shaped input named as audio features is drawn as images
    /// are, under a note that does not call it images.
    #[test]
    fn a_spectrogram_named_so_is_not_called_an_image() {
        let m = ModelBuilder::new(13)
            .input("degraded_audio", &[1, 1, 64, 40])
            .input("picture", &[1, 3, 16, 16])
            .node("a", "Relu", &["degraded_audio"], &["y"])
            .node("b", "Relu", &["picture"], &["z"])
            .output("y", &[1, 1, 64, 40])
            .output("z", &[1, 3, 16, 16])
            .build()
            .unwrap();
        let mut notes = vec![];
        let mut specs = input_specs(&m.graph, &HashMap::new(), &mut notes).unwrap();
        ProducerImages::apply(&m, &mut specs, &mut notes);
        assert!(specs.iter().all(|s| s.values == FloatValues::Mixed));
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("random inputs 'degraded_audio' shaped like images")),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("random images 'picture' drawn")),
            "{notes:?}"
        );
    }

    #[test]
    fn images_given_as_pixel_values_are_drawn_in_0_255() {
        for (mean, want) in [(120.0, FloatValues::Pixels), (0.5, FloatValues::Mixed)] {
            let m = conv_bn(None, mean);
            let mut notes = vec![];
            let mut specs = input_specs(&m.graph, &HashMap::new(), &mut notes).unwrap();
            ProducerImages::apply(&m, &mut specs, &mut notes);
            assert_eq!(specs[0].values, want, "{notes:?}");
            let drawn = random_samples(&specs, 2, 0).unwrap();
            let max = drawn
                .iter()
                .flat_map(|s| {
                    let v = s[0].try_as_plain_ram().unwrap();
                    v.as_slice::<f32>().unwrap().to_vec()
                })
                .fold(f32::MIN, f32::max);
            match want {
                FloatValues::Pixels => {
                    assert!(notes
                        .iter()
                        .any(|n| n.contains("drawn uniform in [0, 255)")));
                    assert!(max > 200.0 && max < 255.0, "{max}");
                }
                _ => assert!(max < 10.0, "{max}"),
            }
        }
    }
}

#[cfg(test)]
mod file_notes_tests {
    use super::*;

    /// The inputs of `--inputs` holding NaN or infinities are named with
    /// their counts, float16 ones included; integers and finite floats
    /// give no note.
    #[test]
    fn nan_and_infinite_inputs_are_counted_by_name() {
        let g = crate::ir::builder::ModelBuilder::new(17)
            .input("a", &[3])
            .input("b", &[2])
            .node("add", "Identity", &["a"], &["y"])
            .output("y", &[3])
            .build()
            .unwrap()
            .graph;
        let specs = input_specs(&g, &HashMap::new(), &mut vec![]).unwrap();
        let sample = |a: Tensor, b: Tensor| vec![a, b];
        let finite = tensor1(&[1f32, 2.0, 3.0]);
        let ints = tensor1(&[1i64, 2]);
        assert_eq!(
            non_finite_note(&specs, &[sample(finite.clone(), ints.clone())]),
            None
        );
        let bad = tensor1(&[f32::NAN, 1.0, f32::INFINITY]);
        let half_bad = tensor1(&[half::f16::NAN, half::f16::ONE]);
        let note = non_finite_note(&specs, &[sample(bad, half_bad), sample(finite, ints)])
            .expect("a note");
        assert!(note.contains("('a' 2, 'b' 1)"), "{note}");
    }

    /// A waveform whose samples pass full scale is named with its peak;
    /// one within [-1, 1], and a float input that is no waveform, give no
    /// note.
    #[test]
    fn waveforms_past_full_scale_are_named_with_their_peak() {
        use crate::ir::builder::typed_value;
        let mut p = crate::ir::builder::ModelBuilder::new(17)
            .node("n", "Identity", &["input"], &["y"])
            .node("m", "Identity", &["features"], &["z"])
            .output("y", &[1, 512])
            .output("z", &[1, 512])
            .proto();
        let graph = p.graph.as_mut().unwrap();
        graph.input = vec![
            typed_value("input", DataType::Float, &[1, 512]),
            typed_value("features", DataType::Float, &[1, 512, 2]),
            typed_value("sr", DataType::Int64, &[]),
        ];
        let external = std::sync::Arc::new(crate::io::ExternalData::new(".".into()));
        let g = crate::ir::Model::from_proto(p, external).unwrap().graph;
        let specs = input_specs(&g, &HashMap::new(), &mut vec![]).unwrap();
        assert_eq!(specs[0].values, FloatValues::Waveform, "{specs:?}");
        assert_ne!(specs[1].values, FloatValues::Waveform);
        let chunk = |peak: f32, shape: &[usize]| {
            let mut v = vec![0.25f32; shape.iter().product()];
            v[7] = -peak;
            Tensor::from_shape(shape, &v).unwrap()
        };
        let sample = |a: f32, b: f32| {
            vec![
                chunk(a, &[1, 512]),
                chunk(b, &[1, 512, 2]),
                tensor0(16000i64),
            ]
        };
        assert_eq!(past_full_scale_note(&specs, &[sample(1.0, 5.0)]), None);
        // 16-bit audio divided by 32767 passes 1 at its most negative.
        assert_eq!(
            past_full_scale_note(&specs, &[sample(32768.0 / 32767.0, 5.0)]),
            None
        );
        let note =
            past_full_scale_note(&specs, &[sample(0.5, 5.0), sample(3.9, 5.0)]).expect("a note");
        assert!(note.contains("'input' reaches 3.900"), "{note}");
        assert!(!note.contains("features"), "{note}");
        // Two waveforms past full scale are named in one note.
        let mut both = specs.clone();
        both[1].values = FloatValues::Waveform;
        let note = past_full_scale_note(&both, &[sample(3.9, 5.0)]).expect("a note");
        assert!(
            note.contains("waveforms 'input' reaches 3.900, 'features' reaches 5.000"),
            "{note}"
        );
    }
}
