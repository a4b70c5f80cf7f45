//! Building a pipeline from `--passes` or a recipe, and driving its passes.
//!
//! `--passes 'clean,quant(per_channel=false)'`: a comma-separated list of
//! `NAME` or `NAME(key=value,...)`; values are TOML values (`true`, `0.5`,
//! `"text"`), and a bare word is taken as a string.
//!
//! A recipe (`passes/*.toml`) says the same in TOML, with the verification
//! settings:
//!
//! ```toml
//! [[pass]]
//! name = "clean"
//! params = { fold_max_bytes = 4096 }
//!
//! [verify]
//! samples = 2
//! ```

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};

use crate::ir::Model;
pub use crate::pass::DataSource;
use crate::pass::{self, Pass, PassCtx, Progress, Tolerance};
use crate::report::PassReport;

/// Limits against runaway rewrites (egg-style: stop and say why).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Rounds of propose/apply per pass.
    pub max_rounds: usize,
    /// Patches applied per pass in all.
    pub max_patches: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_rounds: 64,
            max_patches: 1_000_000,
        }
    }
}

/// Verification settings a recipe may carry.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySettings {
    pub samples: Option<usize>,
    pub seed: Option<u64>,
    pub atol: Option<f64>,
    pub rtol: Option<f64>,
    pub min_cosine: Option<f64>,
}

/// A list of passes ready to run, built and checked before any graph work.
pub struct Pipeline {
    pub passes: Vec<Box<dyn Pass>>,
    pub verify: VerifySettings,
    pub limits: Limits,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Recipe {
    /// For people reading the recipe; accepted and not used.
    #[serde(default, rename = "description")]
    _description: Option<String>,
    #[serde(default)]
    pass: Vec<RecipePass>,
    #[serde(default)]
    verify: VerifySettings,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipePass {
    name: String,
    #[serde(default)]
    params: toml::Table,
}

impl Pipeline {
    /// No passes: the model is written back as read.
    pub fn empty() -> Pipeline {
        Pipeline {
            passes: vec![],
            verify: VerifySettings::default(),
            limits: Limits::default(),
        }
    }

    /// Parse `--passes`.
    pub fn from_spec(spec: &str) -> Result<Pipeline> {
        let mut passes = Vec::new();
        for item in split_top_level(spec)? {
            let (name, params) = parse_item(&item)?;
            passes.push(pass::build(&name, params)?);
        }
        Ok(Pipeline {
            passes,
            verify: VerifySettings::default(),
            limits: Limits::default(),
        })
    }

    /// Read a recipe file.
    pub fn from_recipe(path: &Path) -> Result<Pipeline> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read recipe {}", path.display()))?;
        // One line, with where the parser stopped.
        let recipe: Recipe = toml::from_str(&text)
            .map_err(|e| {
                let at = e.span().map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line}, column {column}: ")
                });
                anyhow::anyhow!("{}{}", at.unwrap_or_default(), e.message().trim())
            })
            .with_context(|| format!("bad recipe {}", path.display()))?;
        let mut passes = Vec::new();
        for p in recipe.pass {
            passes.push(
                pass::build(&p.name, p.params)
                    .with_context(|| format!("in recipe {}", path.display()))?,
            );
        }
        Ok(Pipeline {
            passes,
            verify: recipe.verify,
            limits: Limits::default(),
        })
    }

    /// The tolerance the pipeline promises: the loosest of its passes'.
    pub fn tolerance(&self) -> Tolerance {
        self.passes
            .iter()
            .map(|p| p.info().tolerance)
            .fold(Tolerance::FLOAT_ROUNDING, Tolerance::loosest)
    }

    /// Run every pass in order, with `data` for passes that calibrate.
    /// `progress` is told `pass NAME` as each starts, then what the pass
    /// says it is doing (`pass NAME: ...`).
    pub fn run(
        &self,
        model: &mut Model,
        data: &DataSource,
        progress: &Progress,
    ) -> Result<Vec<PassReport>> {
        let mut reports = Vec::new();
        for p in &self.passes {
            let within = progress.within(&format!("pass {}", p.info().name));
            within.say("");
            reports.push(run_pass_with(
                p.as_ref(),
                model,
                self.limits,
                data,
                &within,
            )?);
        }
        Ok(reports)
    }
}

/// Drive one pass to its fixpoint, within limits, with random calibration data.
pub fn run_pass(p: &dyn Pass, model: &mut Model, limits: Limits) -> Result<PassReport> {
    run_pass_with(
        p,
        model,
        limits,
        &DataSource::default(),
        &Progress::default(),
    )
}

/// The initializers some node reads, in the graph or from a body.
fn read_initializers(g: &crate::ir::Graph) -> std::collections::HashSet<String> {
    let mut read = std::collections::HashSet::new();
    for n in g.nodes.node_weights() {
        let (direct, implicit) = crate::ir::reads(&n.proto);
        read.extend(
            direct
                .into_iter()
                .chain(implicit)
                .filter(|v| g.initializers.contains_key(v)),
        );
    }
    read
}

/// Drive one pass to its fixpoint, within limits.
pub fn run_pass_with(
    p: &dyn Pass,
    model: &mut Model,
    limits: Limits,
    data: &DataSource,
    progress: &Progress,
) -> Result<PassReport> {
    let name = p.info().name;
    let start = Instant::now();
    let reference_built = data
        .original
        .as_ref()
        .is_some_and(|r| r.built_seconds().is_some());
    let nodes_before = model.graph.nodes.node_count();
    let bytes_before = model.weight_bytes();
    let params_before = model.param_count();
    let mut changes: std::collections::BTreeMap<String, usize> = Default::default();
    let mut ctx = PassCtx {
        notes: vec![],
        data: data.clone(),
        round: 0,
        progress: progress.clone(),
    };
    let read_before = read_initializers(&model.graph);
    let mut applied = 0usize;
    let mut exact = true;
    let mut stop = "fixpoint: the pass proposes nothing more".to_string();
    let mut round = 0;
    loop {
        if round == limits.max_rounds {
            stop = format!("round limit ({}) reached", limits.max_rounds);
            break;
        }
        round += 1;
        ctx.round = round;
        let patches = p
            .propose(model, &mut ctx)
            .with_context(|| format!("pass '{name}' failed"))?;
        if patches.is_empty() {
            break;
        }
        let mut progressed = false;
        // Nodes this round's patches removed: the graph reuses their
        // indices for the nodes later patches add, so a later patch naming
        // one would act on another node (an opset raise converting a
        // BatchNormalization that a patch before it had replaced removed
        // the depthwise Conv put in its place).
        let mut removed = std::collections::HashSet::new();
        for patch in patches {
            if applied == limits.max_patches {
                stop = format!("patch limit ({}) reached", limits.max_patches);
                break;
            }
            if patch.named_nodes().any(|n| removed.contains(&n))
                || !patch.is_applicable(&model.graph)
            {
                continue;
            }
            removed.extend(patch.remove_nodes.iter().copied());
            model
                .apply(&patch)
                .with_context(|| format!("pass '{name}' produced an invalid graph"))?;
            *changes.entry(patch.label.clone()).or_default() += patch.count.max(1);
            exact &= patch.exact;
            applied += 1;
            progressed = true;
        }
        ensure!(
            progressed,
            "pass '{name}' proposed patches that could not be applied"
        );
        if applied == limits.max_patches {
            break;
        }
    }
    // Initializers the pass's patches left unread, each of which rewrote
    // some of their readers (a bias several Convs shared, each given an
    // int32 copy of its own by `quant`): dead weight in the file, which
    // onnxruntime warns of. Those no node read before stay, as every part
    // of the model a pass does not touch.
    let read_after = read_initializers(&model.graph);
    let g = &model.graph;
    let orphans: Vec<String> = g
        .initializers
        .keys()
        .filter(|n| read_before.contains(*n) && !read_after.contains(*n))
        .filter(|n| !g.is_graph_output(n) && !g.is_graph_input(n))
        .cloned()
        .collect();
    if !orphans.is_empty() {
        let label = "initializer its readers no longer read removed";
        *changes.entry(label.to_string()).or_default() += orphans.len();
        let mut patch = crate::patch::Patch::new(label);
        patch.exact = true;
        patch.remove_initializers = orphans;
        model
            .apply(&patch)
            .with_context(|| format!("pass '{name}' left an invalid graph"))?;
    }
    // A pass run to a fixpoint says the same of a node each round: once.
    let mut seen = std::collections::HashSet::new();
    let notes: Vec<String> = ctx
        .notes
        .into_iter()
        .filter(|n| seen.insert(n.clone()))
        .collect();
    // Verification's reference of the original, where this pass built it,
    // is verification's time: its report counts it.
    let mut seconds = start.elapsed().as_secs_f64();
    if !reference_built {
        if let Some(s) = data.original.as_ref().and_then(|r| r.built_seconds()) {
            seconds = (seconds - s).max(0.0);
        }
    }
    Ok(PassReport {
        name: name.to_string(),
        params: p.params(),
        seconds,
        nodes_before,
        nodes_after: model.graph.nodes.node_count(),
        bytes_before,
        bytes_after: model.weight_bytes(),
        params_before,
        params_after: model.param_count(),
        changes,
        exact,
        rounds: round,
        stop,
        notes,
        memo_puts: data.runs.puts(),
    })
}

/// Split on commas that are not inside parentheses or quotes.
fn split_top_level(spec: &str) -> Result<Vec<String>> {
    let mut items = Vec::new();
    let mut open: Vec<char> = Vec::new();
    let mut quote = false;
    let mut cur = String::new();
    for c in spec.chars() {
        match c {
            '"' => quote = !quote,
            '(' | '[' if !quote => open.push(c),
            ')' | ']' if !quote => {
                let want = if c == ')' { '(' } else { '[' };
                match open.pop() {
                    Some(o) if o == want => {}
                    Some(o) => {
                        bail!("'{c}' closes a '{o}' in --passes '{spec}': close the '{o}' first")
                    }
                    None => bail!("unbalanced '{c}' in --passes '{spec}'"),
                }
            }
            ',' if open.is_empty() && !quote => {
                items.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    ensure!(
        open.is_empty() && !quote,
        "unbalanced '(', '[' or '\"' in --passes '{spec}'"
    );
    items.push(cur);
    let items: Vec<String> = items.into_iter().map(|s| s.trim().to_string()).collect();
    if items.iter().any(|s| s.is_empty()) {
        bail!("empty pass name in --passes '{spec}'");
    }
    Ok(items)
}

/// `name` or `name(k=v,...)` into a name and a TOML table.
fn parse_item(item: &str) -> Result<(String, toml::Table)> {
    let (name, args) = match item.find('(') {
        Some(i) => {
            ensure!(item.ends_with(')'), "expected ')' at the end of '{item}'");
            (&item[..i], &item[i + 1..item.len() - 1])
        }
        None => (item, ""),
    };
    let name = name.trim();
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        // `quant=weights=int4` or `quant:weights=int4`: parameters written
        // as on other tools' command lines.
        let hint = match name.split_once(['=', ':']) {
            Some((pass, rest)) if rest.contains('=') => {
                format!(
                    ": parameters go in parentheses, as in '{}({rest})'",
                    pass.trim()
                )
            }
            Some((pass, _)) => format!(
                ": parameters go in parentheses, as in '{}(key=value)'",
                pass.trim()
            ),
            None => String::new(),
        };
        bail!("bad pass name '{name}'{hint}");
    }
    let mut table = toml::Table::new();
    if !args.trim().is_empty() {
        for kv in split_top_level(args)? {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("expected key=value in '{item}', got '{kv}'"))?;
            let k = k.trim();
            let v = v.trim();
            // A number TOML cannot hold would be taken for a string, and
            // refused as one ("invalid type: string").
            let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
            ensure!(
                digits.is_empty()
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                    || v.parse::<i64>().is_ok(),
                "parameter '{k}' in '{item}': {v} is out of range (a 64-bit integer)"
            );
            let value = toml::from_str::<toml::Table>(&format!("v = {v}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(v.to_string()));
            ensure!(
                table.insert(k.to_string(), value).is_none(),
                "parameter '{k}' given twice in '{item}'"
            );
        }
    }
    Ok((name.to_string(), table))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pass whose first round proposes two patches that both replace
    /// the one node `r` (a Relu): by Sigmoid, then by Tanh.
    struct Twice;

    static TWICE: pass::PassInfo = pass::PassInfo {
        name: "twice",
        summary: "",
        matches: "",
        promise: "",
        tolerance: Tolerance::FLOAT_ROUNDING,
        idempotent: true,
        runs_model: false,
        params: &[],
    };

    impl Pass for Twice {
        fn info(&self) -> &'static pass::PassInfo {
            &TWICE
        }
        fn params(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn propose(&self, model: &Model, ctx: &mut PassCtx) -> Result<Vec<crate::patch::Patch>> {
            if ctx.round > 1 {
                return Ok(vec![]);
            }
            let g = &model.graph;
            let id = g.producer("y").context("y")?;
            let replace = |op: &str| {
                let mut p = crate::patch::Patch::new(op);
                p.remove_nodes.push(id);
                p.add_nodes.push(crate::ir::builder::node_proto(
                    op,
                    op,
                    &["x"],
                    &["y"],
                    vec![],
                ));
                p
            };
            Ok(vec![replace("Sigmoid"), replace("Tanh")])
        }
    }

    /// A patch naming a node an earlier patch of its round removed is not
    /// applied, though the graph gave that node's index to the node the
    /// earlier patch added.
    #[test]
    fn a_patch_naming_a_node_removed_in_its_round_is_not_applied() {
        let mut m = crate::ir::builder::ModelBuilder::new(13)
            .input("x", &[1, 4])
            .node("r", "Relu", &["x"], &["y"])
            .output("y", &[1, 4])
            .build()
            .unwrap();
        let report = run_pass(&Twice, &mut m, Limits::default()).unwrap();
        let ops: Vec<&str> = m.graph.nodes.node_weights().map(|n| n.op()).collect();
        assert_eq!(ops, ["Sigmoid"]);
        assert_eq!(report.changes.keys().collect::<Vec<_>>(), ["Sigmoid"]);
    }

    #[test]
    fn parses_names_and_parameters() {
        let items = split_top_level("clean, quant(per_channel=false,exclude=\"a,b\")").unwrap();
        assert_eq!(
            items,
            vec!["clean", "quant(per_channel=false,exclude=\"a,b\")"]
        );
        let (n, t) = parse_item(&items[1]).unwrap();
        assert_eq!(n, "quant");
        assert_eq!(t["per_channel"], toml::Value::Boolean(false));
        assert_eq!(t["exclude"], toml::Value::String("a,b".into()));
        let (_, t) = parse_item("p(x=3, mode=fast)").unwrap();
        assert_eq!(t["x"], toml::Value::Integer(3));
        assert_eq!(t["mode"], toml::Value::String("fast".into()));
        // A bracketed list keeps its commas, quoted or not.
        let items = split_top_level("quant(exclude=[Conv@0,fc*]),clean").unwrap();
        assert_eq!(items, vec!["quant(exclude=[Conv@0,fc*])", "clean"]);
        let (_, t) = parse_item(&items[0]).unwrap();
        assert_eq!(t["exclude"], toml::Value::String("[Conv@0,fc*]".into()));
        let (_, t) = parse_item("quant(exclude=[\"a\", \"b\"])").unwrap();
        assert_eq!(t["exclude"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn rejects_malformed_specs() {
        assert!(split_top_level("clean(").is_err());
        assert!(split_top_level("clean,,x").is_err());
        assert!(split_top_level("quant(exclude=[a)").is_err());
        assert!(split_top_level("quant(exclude=[a)],x)").is_err());
        assert!(parse_item("clean(x)").is_err());
        // A number past 64 bits is out of range, not a string.
        let e = parse_item("quant(samples=99999999999999999999)").unwrap_err();
        assert!(format!("{e}").contains("is out of range"), "{e}");
        assert!(parse_item("quant(samples=-9223372036854775808)").is_ok());
        // The wrong bracket closing a list is named.
        let e = split_top_level("quant(exclude=[a,b)").unwrap_err();
        assert!(format!("{e}").contains("')' closes a '['"), "{e}");
        // Parameters written as other tools take them are pointed to the
        // parentheses.
        let e = parse_item("quant=weights=int4").unwrap_err().to_string();
        assert!(e.contains("'quant(weights=int4)'"), "{e}");
        let e = parse_item("quant:int4").unwrap_err().to_string();
        assert!(e.contains("parameters go in parentheses"), "{e}");
        assert!(parse_item("cl ean").is_err());
    }

    #[test]
    fn unknown_pass_lists_valid_ones() {
        let err = Pipeline::from_spec("nosuch").err().unwrap().to_string();
        assert!(
            err.contains("unknown pass 'nosuch'") && err.contains("clean"),
            "{err}"
        );
    }
}
