//! The user's samples (`--inputs`): a `.npz` with an array per model input,
//! or a `.npy` for a model of one input, checked against the graph's inputs
//! before anything runs, then read as tensors.

use super::*;

/// Whether `path` names a `.npy` (in any case: `.NPY` was opened as an
/// archive); anything else is read as a `.npz`.
fn is_npy(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// The `.npz` at `path`, opened, with the names of its arrays.
fn open_npz(
    path: &Path,
) -> Result<(
    npyz::npz::NpzArchive<std::io::BufReader<std::fs::File>>,
    Vec<String>,
)> {
    let npz = npyz::npz::NpzArchive::open(path)
        .with_context(|| format!("cannot open {} as .npz", path.display()))?;
    let names = npz.array_names().map(|s| s.to_string()).collect();
    Ok((npz, names))
}

/// Array `name` of the `.npz` archive `npz` (read from `path`), its header
/// read.
fn npz_array<'a>(
    npz: &'a mut npyz::npz::NpzArchive<std::io::BufReader<std::fs::File>>,
    name: &str,
    path: &Path,
) -> Result<npyz::NpyFile<impl std::io::Read + 'a>> {
    npz.by_name(name)
        .with_context(|| format!("cannot read array '{name}' of {}", path.display()))?
        .with_context(|| format!("array '{name}' missing from {}", path.display()))
}

/// Checks an `--inputs` file against the graph's inputs before anything
/// runs, from the arrays' headers (the arrays an input takes read whole:
/// their contents can fail too): an array named after each input
/// (a `.npy` for a model of one input), of the input's rank (or one axis
/// more: stacked samples) and of the sizes it fixes. A missing array left
/// calibration off in a note and verification failing at the end; a
/// 100x100 image for a 320x320 input was calibrated on, and verified,
/// where onnxruntime refuses it. Returns a warning for each array named
/// after no input (a typo beside a complete set, saved labels), which is
/// not read.
pub fn check_inputs_file(
    path: &Path,
    g: &Graph,
    bound: &HashMap<String, usize>,
) -> Result<Vec<String>> {
    let inputs: Vec<&crate::proto::ValueInfoProto> = g
        .rest
        .input
        .iter()
        .filter(|vi| !g.initializers.contains_key(vi.name()))
        .collect();
    let expected = || {
        inputs
            .iter()
            .map(|vi| vi.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut shapes: Vec<(String, Vec<u64>)> = Vec::new();
    let mut unread = Vec::new();
    if is_npy(path) {
        ensure!(
            inputs.len() == 1,
            "--inputs {} is a single array but the model has {} inputs ({}); use an .npz with one array per input, named after it",
            path.display(),
            inputs.len(),
            expected()
        );
        let f = std::fs::File::open(path)
            .with_context(|| format!("cannot read --inputs {}", path.display()))?;
        let npy = npyz::NpyFile::new(std::io::BufReader::new(f))
            .with_context(|| format!("--inputs {} is not a valid .npy file", path.display()))?;
        shapes.push((inputs[0].name().to_string(), npy.shape().to_vec()));
        // Read whole (below for an .npz): what only reading finds (a
        // truncated file, Fortran order, a type not read) is said now,
        // not once the passes ran (calibration fell back to weight-only,
        // verification failed at the end). Text is left to verification.
        if g.elem_type(inputs[0].name())
            != Some(crate::proto::tensor_proto::DataType::String as i32)
        {
            npy_to_tensor(npy).with_context(|| format!("--inputs {}", path.display()))?;
        }
    } else {
        let (mut npz, names) = open_npz(path)?;
        for name in names {
            let used = inputs.iter().any(|vi| vi.name() == name);
            // Text is not read (verification says it runs numeric inputs
            // only, and --no-verify writes such a model unverified).
            let text =
                g.elem_type(&name) == Some(crate::proto::tensor_proto::DataType::String as i32);
            match npz_array(&mut npz, &name, path) {
                Ok(npy) => {
                    shapes.push((name.clone(), npy.shape().to_vec()));
                    if used && !text {
                        npy_to_tensor(npy).with_context(|| {
                            format!("array '{name}' of --inputs {}", path.display())
                        })?;
                    }
                }
                // An array no input takes is not read (saved labels of
                // Python objects): warned of, not fatal.
                Err(e) if !used => unread.push(format!(
                    "array '{name}' of --inputs {} is not read: it names no input the model takes (its inputs: {}), and its header cannot be read ({:#})",
                    path.display(),
                    expected(),
                    e.root_cause()
                )),
                Err(e) => {
                    return Err(e.context(
                        "only numeric and boolean arrays are read (not objects, strings or records)",
                    ))
                }
            }
        }
    }
    for vi in &inputs {
        let Some((_, shape)) = shapes.iter().find(|(n, _)| n == vi.name()) else {
            bail!(
                "--inputs {} has no array named '{}' (it has: {}); name each array after the model input it feeds: {}",
                path.display(),
                vi.name(),
                shapes.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "),
                expected()
            );
        };
        let Some(declared) = fixed_dims(vi) else {
            continue;
        };
        let rank = declared.len();
        let show = |d: &[Option<i64>]| {
            let v: Vec<String> = d
                .iter()
                .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
                .collect();
            format!("[{}]", v.join(", "))
        };
        let dims = match shape.len() {
            n if n == rank => &shape[..],
            n if n == rank + 1 && rank > 0 => {
                ensure!(
                    shape[0] > 0,
                    "array '{}' of --inputs {} stacks no sample (its first axis, one more than input '{}' has, is empty)",
                    vi.name(),
                    path.display(),
                    vi.name()
                );
                &shape[1..]
            }
            _ => bail!(
                "array '{}' of --inputs {} has shape {shape:?}, but input '{}' is {} (rank {rank}; an array of one axis more stacks samples)",
                vi.name(),
                path.display(),
                vi.name(),
                show(&declared)
            ),
        };
        for (axis, (d, &n)) in declared.iter().zip(dims).enumerate() {
            if let Some(d) = d.filter(|&d| d as u64 != n) {
                bail!(
                    "array '{}' of --inputs {} has shape {shape:?}, but input '{}' is {}: its axis {axis} is {d}, not {n}",
                    vi.name(),
                    path.display(),
                    vi.name(),
                    show(&declared)
                );
            }
        }
        // The arrays decide the sizes: a --dim that says otherwise would
        // be ignored (a `--dim batch=2` beside arrays of batch 1 was).
        for (key, axis) in free_dims(vi) {
            let by_axis = axis_dim_key(vi.name(), axis);
            for k in [&by_axis, &key] {
                if let (Some(&want), Some(&n)) = (bound.get(k), dims.get(axis)) {
                    ensure!(
                        want as u64 == n,
                        "--dim {k}={want} disagrees with --inputs {}: its array '{}' (shape {shape:?}) gives input '{}' axis {axis} a size of {n}; the arrays' shapes are the sizes a run uses: drop --dim {k}, or pass arrays of that size",
                        path.display(),
                        vi.name(),
                        vi.name()
                    );
                }
            }
        }
    }
    Ok(shapes
        .iter()
        .filter(|(n, _)| !inputs.iter().any(|vi| vi.name() == n))
        .map(|(n, _)| {
            format!(
                "array '{n}' of --inputs {} is not read: it names no input the model takes (its inputs: {})",
                path.display(),
                expected()
            )
        })
        .chain(unread)
        .collect())
}

/// Samples from a `.npz` (arrays named after the inputs) or a `.npy` (a model
/// with one input): one sample, or, where an array has one axis more than
/// its input (of rank 1 or more), one sample per entry of that first axis (a
/// calibration set of a model whose batch is fixed), the other arrays the
/// same in every sample. Arrays are cast to their input's type.
pub fn load_samples(path: &Path, specs: &[InputSpec]) -> Result<Vec<Vec<Tensor>>> {
    let is_npy = is_npy(path);
    let mut arrays: HashMap<String, Tensor> = HashMap::new();
    let mut all_names: Vec<String> = Vec::new();
    if is_npy {
        if specs.len() != 1 {
            bail!("{} is a single array but the model has {} inputs; use an .npz with one array per input", path.display(), specs.len());
        }
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let npy = npyz::NpyFile::new(&bytes[..])
            .with_context(|| format!("{} is not a valid .npy file", path.display()))?;
        arrays.insert(
            specs[0].name.clone(),
            npy_to_tensor(npy).with_context(|| format!("in {}", path.display()))?,
        );
    } else {
        let (mut npz, names) = open_npz(path)?;
        all_names.clone_from(&names);
        // Arrays no input takes are not read (`check_inputs_file` warns of
        // them): a labels array of strings does not stop the run.
        for name in names
            .into_iter()
            .filter(|n| specs.iter().any(|s| &s.name == n))
        {
            let npy = npz_array(&mut npz, &name, path)?;
            arrays.insert(
                name.clone(),
                npy_to_tensor(npy)
                    .with_context(|| format!("array '{name}' of {}", path.display()))?,
            );
        }
    }
    let mut sample = Vec::new();
    for s in specs {
        let t = arrays.remove(&s.name).with_context(|| {
            format!(
                "{} has no array named '{}' (it has: {})",
                path.display(),
                s.name,
                all_names.join(", ")
            )
        })?;
        // As the input's type (float16 arrays for a float32 input, float64
        // for a float16 one...): calibration and verification feed them so.
        let want = crate::verify::tract::datum_type(s.dtype)?;
        let t = match t.datum_type() == want {
            true => t,
            false => t
                .cast_to_dt(want)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| {
                    format!(
                        "array '{}' of {} is {:?}, and cannot be cast to the input's {want:?}",
                        s.name,
                        path.display(),
                        t.datum_type()
                    )
                })?
                .into_owned(),
        };
        sample.push(t);
    }
    // Stacked samples: arrays one axis deeper than their input's rank.
    let stacked: Vec<(usize, usize)> = sample
        .iter()
        .zip(specs)
        .enumerate()
        .filter(|(_, (t, s))| !s.shape.is_empty() && t.rank() == s.shape.len() + 1)
        .map(|(i, (t, _))| (i, t.shape()[0]))
        .collect();
    let Some(&(_, count)) = stacked.first() else {
        return Ok(vec![sample]);
    };
    if let Some(&(i, other)) = stacked.iter().find(|&&(_, n)| n != count) {
        bail!(
            "{}: arrays '{}' and '{}' stack {count} and {other} samples along their first axis (one axis more than their input's rank); give them the same number",
            path.display(),
            specs[stacked[0].0].name,
            specs[i].name
        );
    }
    ensure!(
        count > 0,
        "{}: array '{}' stacks no sample (its first axis is empty)",
        path.display(),
        specs[stacked[0].0].name
    );
    (0..count)
        .map(|k| {
            sample
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    if !stacked.iter().any(|&(j, _)| j == i) {
                        return Ok(t.clone());
                    }
                    let mut one = t.slice(0, k, k + 1).map_err(|e| anyhow::anyhow!("{e}"))?;
                    one.remove_axis(0).map_err(|e| anyhow::anyhow!("{e}"))?;
                    Ok(one)
                })
                .collect()
        })
        .collect()
}

/// An array's values as read, where the file ends before them: said so.
fn full<T>(read: std::io::Result<Vec<T>>) -> Result<Vec<T>> {
    read.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => anyhow::anyhow!(
            "the file ends before the values its header's shape and type need (truncated?)"
        ),
        _ => e.into(),
    })
}

fn npy_to_tensor<R: std::io::Read>(npy: npyz::NpyFile<R>) -> Result<Tensor> {
    use npyz::{DType, TypeChar};
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() == npyz::Order::Fortran {
        bail!("Fortran-ordered arrays are not supported; save with np.ascontiguousarray");
    }
    let (tc, size) = match npy.dtype() {
        DType::Plain(ts) => (ts.type_char(), ts.size_field()),
        _ => bail!("structured arrays are not supported"),
    };
    Ok(match (tc, size) {
        (TypeChar::Float, 4) => Tensor::from_shape(&shape, &full(npy.into_vec::<f32>())?)?,
        (TypeChar::Float, 8) => Tensor::from_shape(&shape, &full(npy.into_vec::<f64>())?)?,
        (TypeChar::Float, 2) => Tensor::from_shape(&shape, &full(npy.into_vec::<half::f16>())?)?,
        (TypeChar::Int, 8) => Tensor::from_shape(&shape, &full(npy.into_vec::<i64>())?)?,
        (TypeChar::Int, 4) => Tensor::from_shape(&shape, &full(npy.into_vec::<i32>())?)?,
        (TypeChar::Int, 2) => Tensor::from_shape(&shape, &full(npy.into_vec::<i16>())?)?,
        (TypeChar::Int, 1) => Tensor::from_shape(&shape, &full(npy.into_vec::<i8>())?)?,
        (TypeChar::Uint, 8) => Tensor::from_shape(&shape, &full(npy.into_vec::<u64>())?)?,
        (TypeChar::Uint, 4) => Tensor::from_shape(&shape, &full(npy.into_vec::<u32>())?)?,
        (TypeChar::Uint, 2) => Tensor::from_shape(&shape, &full(npy.into_vec::<u16>())?)?,
        (TypeChar::Uint, 1) => Tensor::from_shape(&shape, &full(npy.into_vec::<u8>())?)?,
        (TypeChar::Bool, 1) => Tensor::from_shape(&shape, &full(npy.into_vec::<bool>())?)?,
        (TypeChar::UnicodeStr | TypeChar::ByteStr, _) => bail!(
            "string arrays are not supported: verification runs numeric inputs only; pass --no-verify to write the result unverified"
        ),
        (tc, size) => bail!("arrays of type {tc:?}{size} are not supported"),
    })
}
