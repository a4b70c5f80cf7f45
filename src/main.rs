//! The command line. It parses, calls the library, prints; nothing else.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use onnx_squeeze::ir::Model;
use onnx_squeeze::pass::{Tolerance, REGISTRY};
use onnx_squeeze::pipeline::Pipeline;
use onnx_squeeze::report::{ModelStats, RunReport};
use onnx_squeeze::verify::{self, Status, VerifyOptions, VerifyReport};
use onnx_squeeze::{inspect, io};

const EXIT_HELP: &str = "\
Exit codes:
  0  done
  1  the tool could not do it (bad input, bad usage, I/O); nothing is written
  3  verification failed or could not run; nothing is written unless --force
     (a run whose every change is exact by construction, such as an already
     quantized model left alone, is written when verification cannot run,
     and says so)
Interrupted (Ctrl-C, SIGTERM, SIGHUP), it removes the temporary files of a
save in progress and ends on the signal: nothing is written (once the
finished files are being moved into place, the model and its data file
are moved together, then it ends).";

/// Make ONNX models smaller and faster, and prove they still compute the same thing.
///
/// `run` loads a model, applies passes, runs the original and the result in
/// tract on the same inputs, compares every output, and writes the result
/// only if it is within tolerance. Writes are atomic: a failed run never
/// leaves a half-written file, and the input is never modified.
#[derive(Parser)]
#[command(name = "onnx-squeeze", version, after_help = EXIT_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply passes to a model, verify the result and write it.
    #[command(after_help = EXIT_HELP)]
    Run(RunArgs),
    /// Describe a model: opsets, inputs/outputs, ops, parameters, bytes by type, where weights live.
    Inspect {
        /// The ONNX model (its external data is read from beside it).
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run two models in tract on the same inputs and compare every output.
    #[command(after_help = EXIT_HELP)]
    Verify {
        /// The model as it was: the reference.
        original: PathBuf,
        /// The model to check against it (taking the same inputs, giving as
        /// many outputs).
        rewritten: PathBuf,
        #[command(flatten)]
        verify: VerifyArgs,
    },
    /// List every pass with its parameters, defaults and what it promises.
    Passes {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Passes to apply, comma-separated: NAME or NAME(key=value,...), e.g. 'clean'.
    /// No passes: the model is written back unchanged.
    #[arg(long, conflicts_with = "recipe")]
    passes: Option<String>,
    /// A TOML recipe (see passes/ in the repository) instead of --passes.
    #[arg(long)]
    recipe: Option<PathBuf>,
    #[command(flatten)]
    verify: VerifyArgs,
    /// Write a JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the result even if verification fails or cannot run.
    #[arg(long)]
    force: bool,
    /// Do not verify (the report says "not_verified").
    #[arg(long)]
    no_verify: bool,
    /// Store weights as external data beside the output: always (true) or never (false).
    /// Default: where the input had it, or where the model exceeds 2 GiB.
    #[arg(long)]
    external_data: Option<bool>,
    /// Print the graph after the passes (a readable text dump) to stderr.
    #[arg(long)]
    dump: bool,
    /// Print each progress message to stderr on a line of its own, after the
    /// seconds since the run began (loading, choosing input sizes, each
    /// pass's steps, verifying, writing: for logs, where the spinner shows
    /// nothing, and to see where a long run's time goes).
    #[arg(long)]
    log_progress: bool,
    /// The ONNX model to read (its external data is read from beside it);
    /// it is never modified.
    input: PathBuf,
    /// Where to write the result, atomically (a failed run never leaves a
    /// half-written file); not the input.
    output: PathBuf,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// Inputs for verification (and, with `run`, for the passes that calibrate): an .npz with one
    /// array per model input, or an .npy for a one-input model.
    ///
    /// An array with one axis more than its input holds several samples, one per entry of that first axis (a model whose batch is fixed
    /// takes several samples so); the other arrays are the same in every sample. Arrays of another
    /// type are cast to the input's.
    /// Default: seeded random inputs that respect each input's type and shape
    /// (floats standard normal; an Ultralytics model's images uniform in [0, 1),
    /// as its metadata documents them; images a model takes as pixel values
    /// (it divides them down itself, or its first layer's bias centres
    /// 0-255 images) uniform in [0, 255); other images standard normal and
    /// uniform in [0, 1) in turn, since a model does not say which it takes).
    #[arg(long)]
    inputs: Option<PathBuf>,
    /// Bind an input dimension without a size: --dim NAME=N or --dim INPUT:AXIS=N.
    ///
    /// A named one, e.g. --dim batch=4,
    /// or any one as INPUT:AXIS, e.g. --dim input:1=512 (an unnamed axis, or
    /// one of several axes sharing a name, such as PaddlePaddle's `?` for both
    /// height and width; it wins over the name, and a name all of whose axes
    /// are bound so is refused). Unbound: a dim a constant weight fixes (the
    /// features a MatMul, Gemm, LSTM, GRU or RNN reads) is that size, a
    /// batch is 1 (2, 4 or 8, every batch at once, where nothing fits at 1), an image's height and width 64 (an Ultralytics model's: the
    /// size in its metadata, at most 640), token ids and float dims named
    /// like a time or sequence axis (time, seq, len, frame) or that a mask
    /// input has past its first axis 128 long, audio
    /// samples (an input named like waveforms, audio, speech, signal, pcm,
    /// input_values, or whose axis is named samples) 16000 long, other dims 1, each raised where tract cannot analyse the model at it (a
    /// length also where every output is empty at it); the report says what
    /// was chosen.
    #[arg(long = "dim", value_name = "NAME=N")]
    dims: Vec<String>,
    /// Override the tolerance: atol=, rtol= or min_cosine=, e.g. --tolerance atol=1e-3
    /// (rtol=inf: no relative bound, as quant's tolerance). Repeat it for several keys, each once.
    #[arg(long = "tolerance", value_name = "KEY=VALUE")]
    tolerance: Vec<String>,
    /// Number of random samples verification draws (default 2; at least 16
    /// where the outputs hold 8 values a sample or fewer, at least 8 steps
    /// for a streaming model).
    #[arg(long)]
    samples: Option<usize>,
    /// Seed of the random inputs (default 0).
    #[arg(long)]
    seed: Option<u64>,
}

impl VerifyArgs {
    fn options(
        &self,
        base: Tolerance,
        recipe: &onnx_squeeze::pipeline::VerifySettings,
    ) -> Result<VerifyOptions> {
        let mut dims = HashMap::new();
        for d in &self.dims {
            let (k, v) = d
                .split_once('=')
                .with_context(|| format!("--dim expects NAME=N, got '{d}'"))?;
            let n: usize = v
                .trim()
                .parse()
                .with_context(|| format!("--dim {d}: '{v}' is not a positive integer"))?;
            ensure!(n > 0, "--dim {d}: the size must be at least 1");
            if let Some(before) = dims.insert(k.trim().to_string(), n) {
                bail!(
                    "--dim {}: given twice ({before} and {n}); give each dim once",
                    k.trim()
                );
            }
        }
        let mut tol = base;
        // The recipe's [verify] bounds, checked as --tolerance's are (a NaN
        // cosine bound made quant undo everything and the report say null).
        for (key, v) in [
            ("atol", recipe.atol),
            ("rtol", recipe.rtol),
            ("min_cosine", recipe.min_cosine),
        ] {
            let Some(x) = v else { continue };
            set_bound(&mut tol, key, x, &format!("recipe [verify] {key} = {x}"))?;
        }
        let mut given = std::collections::HashSet::new();
        for t in &self.tolerance {
            let (k, v) = t
                .split_once('=')
                .with_context(|| format!("--tolerance expects KEY=VALUE, got '{t}'"))?;
            let x: f64 = v
                .trim()
                .parse()
                .with_context(|| format!("--tolerance {t}: '{v}' is not a number"))?;
            let key = match k.trim() {
                "cosine" => "min_cosine",
                k @ ("atol" | "rtol" | "min_cosine") => k,
                other => {
                    bail!("--tolerance: unknown key '{other}'; valid keys: atol, rtol, min_cosine")
                }
            };
            ensure!(
                given.insert(key.to_string()),
                "--tolerance {key}: given twice; give each key once"
            );
            set_bound(&mut tol, key, x, &format!("--tolerance {t}"))?;
        }
        if let Some(p) = &self.inputs {
            ensure!(
                p.is_file(),
                "cannot read --inputs {}: no such file",
                p.display()
            );
        }
        let samples = self
            .samples
            .or(recipe.samples)
            .unwrap_or(verify::DEFAULT_SAMPLES);
        ensure!(samples >= 1, "--samples must be at least 1");
        Ok(VerifyOptions {
            samples,
            seed: self.seed.or(recipe.seed).unwrap_or(0),
            dims,
            inputs: self.inputs.clone(),
            tolerance: tol,
        })
    }
}

/// Panics inside the calls into tract that verification guards are caught
/// and reported as errors (the model counts as one tract cannot check):
/// their default message would read as a crash of the tool. Any other panic
/// is a bug and is printed as usual.
fn quiet_tract_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !verify::tract::in_guarded_call() {
            default(info);
        }
    }));
}

/// anyhow captures a backtrace with every error where `RUST_BACKTRACE`
/// asks for one, and tract raises errors by the thousand while it analyses
/// a model (part of its type inference's control flow): with
/// `RUST_BACKTRACE=1`, the recogniser's `clean,quant` spent 2% of its CPU
/// unwinding for backtraces that are never shown (errors are printed on
/// one line). Error backtraces are
/// off unless the user sets `RUST_LIB_BACKTRACE`; panics still follow
/// `RUST_BACKTRACE`.
fn no_error_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // Called first thing, before any other thread exists.
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}

/// Set bound `key` (atol, rtol or min_cosine) of `tol` to `x`, where it is
/// one (a cosine in [0, 1], the others >= 0, inf for none; never NaN);
/// `said` is how the user gave it, for the error.
fn set_bound(tol: &mut Tolerance, key: &str, x: f64, said: &str) -> Result<()> {
    match key {
        "min_cosine" => ensure!(
            (0.0..=1.0).contains(&x),
            "{said}: a cosine bound is between 0 and 1"
        ),
        _ => ensure!(x >= 0.0, "{said}: must be a number >= 0 (inf for no bound)"),
    }
    match key {
        "atol" => tol.atol = x,
        "rtol" => tol.rtol = x,
        _ => tol.min_cosine = x,
    }
    Ok(())
}

fn main() -> ExitCode {
    no_error_backtraces();
    // Before any other thread starts: they inherit the blocked signals.
    io::interrupt::install();
    io::tune_allocator();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {} (see --help)", usage_error(&e));
            return ExitCode::from(1);
        }
    };
    quiet_tract_panics();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Inspect { model, json } => inspect_cmd(&model, json).map(|_| 0),
        Command::Verify {
            original,
            rewritten,
            verify,
        } => verify_cmd(&original, &rewritten, &verify),
        Command::Passes { json } => passes_cmd(json).map(|_| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A usage error on one line, like every other error, with what clap says
/// below its first line kept (the arguments missing, the values allowed,
/// a tip), and `--help` for the rest; no command at all says so, where clap
/// shows the whole help.
fn usage_error(e: &clap::Error) -> String {
    use clap::error::ErrorKind;
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "no command given: run, inspect, verify or passes".to_string();
    }
    let msg = e.to_string();
    let mut lines = msg.lines();
    let first = lines
        .next()
        .unwrap_or("bad usage")
        .trim_start_matches("error: ")
        .trim_end()
        .to_string();
    // The indented lines before the usage: the missing arguments, the
    // allowed values, a tip.
    let details: Vec<&str> = lines
        .take_while(|l| !l.starts_with("Usage:"))
        .filter(|l| l.starts_with(' ') && !l.trim().is_empty())
        .map(str::trim)
        .collect();
    match (first.strip_suffix(':'), details.is_empty()) {
        (_, true) => first,
        (Some(head), false) => format!("{head}: {}", details.join(", ")),
        (None, false) => format!("{first}; {}", details.join("; ")),
    }
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"),
    );
    pb.enable_steady_tick(Duration::from_millis(120));
    pb.set_message(msg.to_string());
    pb
}

fn load(path: &Path, pb: &ProgressBar) -> Result<(Model, u64)> {
    pb.set_message(format!("loading {}", path.display()));
    let (model, loaded) = Model::load(path)?;
    for w in &loaded.warnings {
        pb.suspend(|| eprintln!("warning: {w}"));
    }
    let ext = external_file_bytes(&model, &io::model_dir(path));
    Ok((model, loaded.file_bytes + ext))
}

/// The bytes of the files `m`'s external tensors live in, each file once,
/// as the result's are counted (its data file, alignment included): a
/// model written back unchanged measured 1.002x where the input counted
/// its tensors' payloads alone. A file that cannot be read counts its
/// tensors' payloads.
fn external_file_bytes(m: &Model, dir: &Path) -> u64 {
    use onnx_squeeze::ir::tensor;
    let mut files: std::collections::BTreeMap<&str, u64> = Default::default();
    for t in m
        .graph
        .initializers
        .values()
        .filter(|t| tensor::is_external(t))
    {
        let location = tensor::external_entry(t, "location").unwrap_or_default();
        *files.entry(location).or_default() += tensor::stored_bytes(t);
    }
    files
        .into_iter()
        .map(|(location, payloads)| {
            std::fs::metadata(dir.join(location)).map_or(payloads, |md| md.len())
        })
        .fold(0, u64::saturating_add)
}

/// Whether `a` and `b` name one file: where both exist, the same file
/// (through symlinks and hard links); where neither does, the same name
/// in the same folder.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                x.dev() == y.dev() && x.ino() == y.ino()
            }
            #[cfg(not(unix))]
            {
                let _ = (x, y);
                a.canonicalize().ok() == b.canonicalize().ok()
            }
        }
        (Err(_), Err(_)) => {
            let target = |p: &Path| {
                let dir = io::model_dir(p).canonicalize().ok()?;
                Some(dir.join(p.file_name()?))
            };
            target(a).is_some_and(|t| Some(t) == target(b))
        }
        _ => false,
    }
}

/// Fail early, before any work, if `path` cannot take a file written as
/// `run` writes (a temporary file renamed into place): it is a directory,
/// or something other than a regular file, which the rename would replace
/// (`/dev/null` became a regular file), or its folder is missing or
/// read-only. `what`: "the output", "the report".
fn check_writable(path: &Path, what: &str) -> Result<()> {
    // `OUT.onnx/` names a folder: the rename into place would fail at the
    // end of the run.
    let text = path.as_os_str().to_string_lossy();
    if text.ends_with('/') || text.ends_with(std::path::MAIN_SEPARATOR) {
        bail!(
            "cannot write {what} {}: the path ends with a separator; name a file",
            path.display()
        );
    }
    if path.is_dir() {
        bail!("cannot write {what} {}: it is a directory", path.display());
    }
    if let Ok(md) = std::fs::metadata(path) {
        ensure!(
            md.is_file(),
            "cannot write {what} {}: it is not a regular file (a device, pipe or socket), which writing it (a finished file renamed into place) would replace; write to a file",
            path.display()
        );
    }
    let dir = io::model_dir(path);
    ensure!(
        dir.is_dir(),
        "cannot write {what} {}: folder {} does not exist",
        path.display(),
        dir.display()
    );
    tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("cannot write {what} to folder {}", dir.display()))?;
    Ok(())
}

/// What `run` writes, and what each is: the output; the external data
/// file it may write beside it (not with `--external-data false`;
/// otherwise whether it does depends on the result's size, see
/// [`io::save`]); the report.
fn written_paths(args: &RunArgs) -> Vec<(PathBuf, &'static str)> {
    let mut written = vec![(args.output.clone(), "the output")];
    if args.external_data != Some(false) {
        if let Some(d) = io::data_file_of(&args.output) {
            written.push((d, "the output's external data file"));
        }
    }
    if let Some(r) = &args.report {
        written.push((r.clone(), "the report"));
    }
    written
}

/// Fail early, before any work, if what `run` writes cannot be written,
/// or would replace a file it reads: the output (and its external data
/// file) and the report, against the input, `--inputs`, the recipe and
/// one another. The input is never modified; a report written over the
/// input (`--report IN.onnx`) replaced it.
fn check_outputs(args: &RunArgs) -> Result<()> {
    check_writable(&args.output, "the output")?;
    if let Some(r) = &args.report {
        check_writable(r, "the report")?;
    }
    let mut read: Vec<(&Path, &str)> = vec![(args.input.as_path(), "the input")];
    if let Some(i) = &args.verify.inputs {
        read.push((i.as_path(), "the --inputs file"));
    }
    if let Some(r) = &args.recipe {
        read.push((r.as_path(), "the recipe"));
    }
    let written = written_paths(args);
    for (j, (later, what_later)) in written.iter().enumerate() {
        for (earlier, what) in &written[..j] {
            ensure!(
                !same_file(later, earlier),
                "{what_later} {} would be written over {what}; choose another path",
                later.display()
            );
        }
    }
    for (w, what) in &written {
        for (r, read_what) in &read {
            ensure!(
                !same_file(w, r),
                "{what} {} is {read_what}, which is never modified; choose another path",
                w.display()
            );
        }
    }
    Ok(())
}

/// Fail before any work if what `run` writes is a data file the loaded
/// input keeps its weights in (its folder `dir`): writing it would change
/// the input model's weights (an output named after its data file, or
/// whose own data file is named so).
fn check_input_data_files(model: &Model, dir: &Path, args: &RunArgs) -> Result<()> {
    let written = written_paths(args);
    // Wherever its tensors are: a Constant node's value, a body's
    // initializer, as well as the main graph's initializers.
    for location in model.external_locations() {
        let file = dir.join(&location);
        for (w, what) in &written {
            ensure!(
                !same_file(w, &file),
                "{what} {} is the data file the input keeps its weights in ({location}), which is never modified; choose another output path",
                w.display()
            );
        }
    }
    Ok(())
}

/// Where `run` says what it is doing: the spinner, and with
/// `--log-progress` a line per message, after the seconds since the run
/// began.
#[derive(Clone)]
struct Stages {
    pb: ProgressBar,
    log: bool,
    started: Instant,
}

impl Stages {
    fn new(log: bool) -> Stages {
        Stages {
            pb: spinner("loading"),
            log,
            started: Instant::now(),
        }
    }

    /// A stage begins: the spinner says it, and the log where asked.
    fn stage(&self, msg: &str) {
        self.line(msg);
        self.pb.set_message(msg.to_string());
    }

    /// With `--log-progress`, `msg` on its own line of standard error
    /// after the seconds since the run began, the spinner hidden while it
    /// is printed.
    fn line(&self, msg: &str) {
        if self.log {
            let seconds = self.started.elapsed().as_secs_f64();
            self.pb.suspend(|| eprintln!("[{seconds:8.3}] {msg}"));
        }
    }
}

/// The verification report where no pass changed the graph: nothing to
/// verify, the input written back as read.
fn unchanged_report(tolerance: Tolerance) -> VerifyReport {
    VerifyReport {
        status: Status::Passed,
        reason: None,
        samples: 0,
        tolerance,
        outputs: vec![],
        notes: vec![
            "no pass changed the graph: the output is the input, written back as read".into(),
        ],
        seconds: 0.0,
        reused_seconds: 0.0,
        reused_put: 0,
        worst_sample: None,
        output_ranks: vec![],
    }
}

/// `model` written to `--output` (atomically, its external data as
/// `--external-data` and the input say): what was written, and the data
/// file beside it where there is one.
fn write_result(
    model: &Model,
    args: &RunArgs,
    input_had_external: bool,
) -> Result<(ModelStats, Option<PathBuf>)> {
    let stats = io::save(
        model.to_proto(),
        &model.external,
        &args.output,
        &io::SaveOptions {
            external: args.external_data,
            input_had_external,
        },
    )?;
    Ok((
        ModelStats {
            bytes: stats.model_bytes + stats.external_bytes,
            nodes: model.graph.nodes.node_count(),
            params: model.param_count(),
            weight_bytes: model.weight_bytes(),
            metadata_bytes: model.metadata_bytes(),
        },
        stats.external_file,
    ))
}

/// `run`'s exit code, and what the error says where the result was not
/// verified (`ok` false): 0 where it was (or needed not be), 3 otherwise,
/// whether `--force` wrote it anyway or not.
fn exit_code(ok: bool, status: Status, force: bool) -> u8 {
    match (ok, status) {
        (true, _) => 0,
        (false, Status::NotVerified) => {
            eprintln!("error: the result could not be verified, so it was {}; pass --no-verify to skip verification", if force { "written anyway (--force)" } else { "not written" });
            3
        }
        _ => {
            eprintln!(
                "error: verification failed, so the result was {}",
                if force {
                    "written anyway (--force)"
                } else {
                    "not written (--force writes it anyway)"
                }
            );
            3
        }
    }
}

fn run(args: RunArgs) -> Result<u8> {
    let pipeline = match (&args.passes, &args.recipe) {
        (Some(spec), _) => Pipeline::from_spec(spec)?,
        (None, Some(r)) => Pipeline::from_recipe(r)?,
        (None, None) => Pipeline::empty(),
    };
    let mut vopts = args
        .verify
        .options(pipeline.tolerance(), &pipeline.verify)?;
    check_outputs(&args)?;
    // Weights the passes compute wait on disk beside the output, as the
    // input's own do in its file, not in memory (see `io::spill`).
    if let Err(e) = io::spill::set_scratch_dir(&io::model_dir(&args.output)) {
        eprintln!("warning: {e:#}; weights the passes compute stay in memory");
    }

    let stages = Stages::new(args.log_progress);
    stages.line(&format!("loading {}", args.input.display()));
    let (mut model, in_bytes) = load(&args.input, &stages.pb)?;
    check_input_data_files(&model, &io::model_dir(&args.input), &args)?;
    // Shared with verification's reference, built from it on first use.
    let original = std::sync::Arc::new(model.clone());
    let input_had_external = model
        .graph
        .initializers
        .values()
        .any(onnx_squeeze::ir::tensor::is_external);
    // Too large for tract to plan: the weights the passes compute are read
    // back once, when the result is written (see `io::spill::write_direct`).
    io::spill::write_direct(model.weight_bytes() > verify::ANALYSIS_MAX_BYTES);
    verify::check_bound(&model, &vopts.dims)?;
    if let Some(path) = &vopts.inputs {
        for w in verify::inputs::check_inputs_file(path, &model.graph, &vopts.dims)? {
            stages.pb.suspend(|| eprintln!("warning: {w}"));
        }
    }
    // Before calibration and verification draw their inputs from them;
    // the original's verification reference comes out of the search.
    // Sizes matter to passes that run the model, and then to verification:
    // chosen here where a pass runs the model, else after the passes, only
    // where they changed something (a search for nothing would copy the
    // weights into tract: seconds and the weights' size as floats).
    let sizes_first = pipeline.passes.iter().any(|p| p.runs_model(&model));
    // A pass that checks its result against the original
    // (`quant(sensitive=auto)`) compares with verification's reference:
    // with --no-verify too, the sizes are tried by building it, which costs
    // little more than typing the model in tract at each size (YOLOv8n:
    // 0.17 s against 0.15 s), and the pass then neither runs its input for
    // its comparisons nor compares with anything but the original.
    let compares = pipeline
        .passes
        .iter()
        .any(|p| p.compares_with_original(&model));
    let mut settled = if sizes_first {
        stages.stage("choosing input sizes");
        verify::settle_dims(&model, &mut vopts, !args.no_verify || compares)
    } else {
        verify::Settled::default()
    };
    let input_stats = ModelStats {
        bytes: in_bytes,
        nodes: model.graph.nodes.node_count(),
        params: model.param_count(),
        weight_bytes: model.weight_bytes(),
        metadata_bytes: model.metadata_bytes(),
    };

    // Verification's reference of the original, built once (by the size
    // search, else on first use) for the passes that measure their effect
    // (`quant(sensitive=auto)`) and for verification; results run through
    // the memo they share. Only where a pass runs the model: sizes are
    // chosen for verification after the passes otherwise. With --no-verify,
    // only one the size search built (for a pass that compares with it).
    let runs = verify::RunMemo::default();
    let shared = match settled.reference.take() {
        _ if !sizes_first => None,
        Some(r) => Some(verify::SharedReference::built(
            r,
            original.clone(),
            runs.clone(),
        )),
        None if !args.no_verify => Some(verify::SharedReference::lazy(
            original.clone(),
            vopts.clone(),
            runs.clone(),
        )),
        None => None,
    };
    let mut data = onnx_squeeze::pipeline::DataSource {
        inputs: vopts.inputs.clone(),
        dims: vopts.dims.clone(),
        seed: vopts.seed,
        tolerance: Some(vopts.tolerance),
        verify_samples: Some(vopts.samples),
        original: shared,
        runs,
    };
    let shown = stages.clone();
    let progress = onnx_squeeze::pass::Progress::new(move |msg| shown.stage(msg));
    let mut passes = pipeline.run(&mut model, &data, &progress)?;
    if args.no_verify {
        // The reference the passes compared with (the original's outputs,
        // its samples) is of no more use.
        data.original = None;
    }
    if args.dump {
        stages
            .pb
            .suspend(|| eprint!("{}", onnx_squeeze::ir::dump(&model.graph)));
    }
    let changed = passes.iter().any(|p| !p.changes.is_empty());
    let mut verify = match (args.no_verify, changed) {
        // The tolerance the passes declared (and --tolerance set): what
        // `sensitive=auto` measured against, and what verification would
        // have enforced.
        (true, _) => VerifyReport {
            tolerance: vopts.tolerance,
            ..VerifyReport::not_verified("skipped (--no-verify)")
        },
        (false, false) => unchanged_report(vopts.tolerance),
        (false, true) => {
            let mut reference = data
                .original
                .take()
                .and_then(verify::SharedReference::into_built);
            if !sizes_first {
                stages.stage("choosing input sizes");
                settled = verify::settle_dims(&original, &mut vopts, true);
                reference = settled.reference.take();
            }
            stages.stage("verifying in tract");
            verify::verify_against(reference, Some(&data.runs), &original, &model, &vopts)
        }
    };
    verify.notes.splice(0..0, settled.notes);
    drop(original);
    // The runs remembered (outputs on every sample) are of no more use
    // while the result is written.
    data.runs.clear();
    onnx_squeeze::report::credit_reused_run(&mut passes, &mut verify);
    // Verification could not run (tract cannot run the model), but nothing
    // needed it: every change is exact by construction (`Patch::exact`).
    let exact_unverified = changed
        && !args.no_verify
        && verify.status == Status::NotVerified
        && passes.iter().all(|p| p.exact);
    if exact_unverified {
        let labels: Vec<&str> = passes
            .iter()
            .flat_map(|p| p.changes.keys().map(String::as_str))
            .collect();
        verify.notes.insert(
            0,
            format!(
                "written all the same: every change is exact by construction ({}), so the outputs are the original's bit for bit",
                labels.join(", ")
            ),
        );
    }

    // A declaration the run contradicts (an output declared scalar that is
    // not) fails onnx.checker's full check: redeclared, the graph unchanged.
    if verify.status == Status::Passed {
        let ranks = std::mem::take(&mut verify.output_ranks);
        let redeclared = model.graph.redeclare_output_ranks(&ranks);
        verify.notes.extend(redeclared);
    }
    let ok = match verify.status {
        Status::Passed => true,
        Status::NotVerified => args.no_verify || exact_unverified,
        Status::Failed => false,
    };
    let mut report = RunReport {
        input: input_stats,
        output: None,
        passes,
        verify,
        written: false,
        warnings: vec![],
    };
    let mut data_file = None;
    if ok || args.force {
        stages.stage(&format!("writing {}", args.output.display()));
        let (stats, file) = write_result(&model, &args, input_had_external)?;
        report.output = Some(stats);
        report.written = true;
        data_file = file;
    }
    stages.pb.finish_and_clear();
    print!("{}", report.table());
    if let Some(path) = &args.report {
        write_json(path, &report)?;
    }
    if report.written {
        // Its weights' file beside it, which must travel with it.
        match &data_file {
            Some(d) => println!(
                "wrote {} (its weights in {}, beside it)",
                args.output.display(),
                d.file_name()
                    .map_or(d.display(), |f| Path::new(f).display())
            ),
            None => println!("wrote {}", args.output.display()),
        }
    }
    Ok(exit_code(ok, report.verify.status, args.force))
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    let dir = io::model_dir(path);
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("cannot write the report to {}", path.display()))?;
    // Removed if a signal ends the run before it is renamed into place.
    let _tracked = io::interrupt::Tracked::new(tmp.path());
    std::io::Write::write_all(&mut tmp, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    io::set_readable(tmp.as_file());
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn inspect_cmd(path: &Path, json: bool) -> Result<()> {
    let (model, loaded) = Model::load(path)?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let summary = inspect::summarize(&model, loaded.file_bytes);
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.text());
    }
    Ok(())
}

fn verify_cmd(a: &Path, b: &Path, args: &VerifyArgs) -> Result<u8> {
    let mut opts = args.options(Tolerance::FLOAT_ROUNDING, &Default::default())?;
    let pb = spinner("loading");
    let (ma, _) = load(a, &pb)?;
    let (mb, _) = load(b, &pb)?;
    verify::check_bound(&ma, &opts.dims)?;
    if let Some(path) = &opts.inputs {
        for w in verify::inputs::check_inputs_file(path, &ma.graph, &opts.dims)? {
            pb.suspend(|| eprintln!("warning: {w}"));
        }
    }
    pb.set_message("choosing input sizes");
    let settled = verify::settle_dims(&ma, &mut opts, true);
    pb.set_message("verifying in tract");
    let mut report = verify::verify_against(settled.reference, None, &ma, &mb, &opts);
    report.notes.splice(0..0, settled.notes);
    pb.finish_and_clear();
    print!("{}", report.table());
    Ok(match report.status {
        Status::Passed => 0,
        Status::Failed => {
            // verify's own tolerance is float rounding's, which no quantized
            // result meets.
            let (qa, qb) = (quantized_weights(&ma), quantized_weights(&mb));
            if args.tolerance.is_empty() && qb > qa {
                eprintln!(
                    "note: {} holds {} more 8- or 4-bit weights than {}, and verify's default tolerance is float rounding's; a quantized result is checked at quant's: {}",
                    b.display(),
                    qb - qa,
                    a.display(),
                    onnx_squeeze::passes::quant::INFO.tolerance.flags()
                );
            }
            3
        }
        Status::NotVerified => {
            eprintln!(
                "error: could not verify: {}",
                report.reason.unwrap_or_default()
            );
            3
        }
    })
}

/// How many initializers of `m` hold 8- or 4-bit integers.
fn quantized_weights(m: &Model) -> usize {
    use onnx_squeeze::proto::tensor_proto::DataType;
    m.graph
        .initializers
        .values()
        .filter(|t| {
            matches!(
                onnx_squeeze::ir::tensor::data_type(t),
                DataType::Int8 | DataType::Uint8 | DataType::Int4 | DataType::Uint4
            )
        })
        .count()
}

fn passes_cmd(json: bool) -> Result<()> {
    if json {
        let infos: Vec<_> = REGISTRY.iter().map(|e| e.info).collect();
        println!("{}", serde_json::to_string_pretty(&infos)?);
        return Ok(());
    }
    for e in REGISTRY {
        let i = e.info;
        println!("{}: {}", i.name, i.summary);
        println!("  matches:  {}", i.matches);
        println!(
            "  promises: {} ({}){}",
            i.promise,
            i.tolerance.describe(),
            if i.idempotent {
                "; running it twice equals once"
            } else {
                ""
            }
        );
        println!("  parameters:");
        for p in i.params {
            println!(
                "    {:<20} {:<8} default {:<10} {}  ({})",
                p.name, p.kind, p.default, p.doc, p.range
            );
        }
        println!();
    }
    println!("Use: --passes 'NAME' or --passes 'NAME(key=value,...)', comma-separated.");
    Ok(())
}
