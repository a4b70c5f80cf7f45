//! The pass framework: what a pass declares, and the registry of passes.
//!
//! A pass is one file in `src/passes/`, opening with a doc block (before,
//! after, when it fires, what it preserves, its cost in fidelity). It declares:
//! * its name and a one-line summary;
//! * its parameters: a serde struct with defaults and `deny_unknown_fields`,
//!   described by [`ParamInfo`] for `onnx-squeeze passes`, checked when the
//!   pipeline is built, before any graph work;
//! * its contract: exact, or within a tolerance that verification enforces;
//! * whether running it twice equals running it once.
//!
//! Passes propose [`Patch`]es against `&Model`; the driver in
//! [`crate::pipeline`] applies them and loops until the pass proposes nothing,
//! under explicit limits.

use anyhow::{bail, Result};

use crate::ir::Model;
use crate::patch::Patch;

/// How close to the original a pass promises the outputs stay.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tolerance {
    /// Largest allowed |a - b| beyond the relative part.
    pub atol: f64,
    /// Allowed |a - b| relative to |a|.
    pub rtol: f64,
    /// Smallest allowed cosine similarity per output.
    pub min_cosine: f64,
}

impl Tolerance {
    /// What float rounding alone can explain.
    pub const FLOAT_ROUNDING: Tolerance = Tolerance {
        atol: 1e-4,
        rtol: 1e-3,
        min_cosine: 0.99999,
    };

    /// The tolerance as messages give it, `atol 0.0001, rtol 0.001, min
    /// cosine 0.99`; a bound that is not checked (infinite, as a lossy
    /// pass's element-wise ones) says so. Without a relative bound, atol
    /// bounds no element: it is what a sample whose cosine misses passes
    /// on where its largest error stays within it (values too small for a
    /// direction to mean anything), and says so, where "atol 0.0001" beside
    /// a passed output 2.5 off read as a bound not enforced.
    pub fn describe(&self) -> String {
        let bound = |name: &str, v: f64| {
            if v.is_finite() {
                format!("{name} {v}")
            } else {
                format!("{name} not checked")
            }
        };
        if !self.rtol.is_finite() && self.atol.is_finite() {
            return format!(
                "min cosine {} a sample, or its largest error within atol {}; rtol not checked: element-wise errors not bounded",
                self.min_cosine, self.atol
            );
        }
        format!(
            "{}, {}, min cosine {}",
            bound("atol", self.atol),
            bound("rtol", self.rtol),
            self.min_cosine
        )
    }

    /// The tolerance as `verify`'s command line takes it: `--tolerance
    /// min_cosine=0.99 --tolerance atol=0.0001 --tolerance rtol=inf`.
    pub fn flags(&self) -> String {
        format!(
            "--tolerance min_cosine={} --tolerance atol={} --tolerance rtol={}",
            self.min_cosine, self.atol, self.rtol
        )
    }

    /// The looser of two tolerances, field by field.
    pub fn loosest(self, o: Tolerance) -> Tolerance {
        Tolerance {
            atol: self.atol.max(o.atol),
            rtol: self.rtol.max(o.rtol),
            min_cosine: self.min_cosine.min(o.min_cosine),
        }
    }
}

/// A parameter as `onnx-squeeze passes` lists it.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ParamInfo {
    pub name: &'static str,
    pub kind: &'static str,
    pub default: &'static str,
    pub range: &'static str,
    pub doc: &'static str,
}

/// What a pass is, as declared once in its file.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PassInfo {
    pub name: &'static str,
    pub summary: &'static str,
    /// What the pass matches.
    pub matches: &'static str,
    /// What it promises about the outputs.
    pub promise: &'static str,
    pub tolerance: Tolerance,
    pub idempotent: bool,
    /// Whether the pass may run the model on samples (calibration), or read
    /// [`DataSource::dims`] or [`DataSource::original`] at all: the driver
    /// chooses the input sizes before the passes only for such a pass.
    pub runs_model: bool,
    pub params: &'static [ParamInfo],
}

/// Where passes that need data (calibration) get it: the user's samples or
/// seeded random inputs, with symbolic dims bound as for verification
/// (chosen before the passes where one of them [`Pass::runs_model`]; a pass
/// that says it does not must not read `dims` or `original`); and
/// the tolerance verification will hold the result to, for passes that
/// measure their own effect (`quant(sensitive=auto)`).
#[derive(Debug, Clone, Default)]
pub struct DataSource {
    pub inputs: Option<std::path::PathBuf>,
    pub dims: std::collections::HashMap<String, usize>,
    pub seed: u64,
    /// `None`: the pass's own declared tolerance.
    pub tolerance: Option<Tolerance>,
    /// How many random samples verification draws (`None`: its default).
    pub verify_samples: Option<usize>,
    /// Where a pass that checks its result on verification's samples runs
    /// it, so that verification need not run it again.
    pub runs: crate::verify::RunMemo,
    /// Verification's reference of the original, shared (built on first
    /// use, its results run through `runs`): a pass that compares
    /// candidates with the original on verification's samples
    /// (`quant(sensitive=auto)`) uses it instead of running the original
    /// again. `None` where nothing verifies the result, unless choosing
    /// input sizes built it for such a pass ([`Pass::compares_with_original`]).
    pub original: Option<crate::verify::SharedReference>,
}

/// What receives [`Progress`] messages.
type Sink = dyn Fn(&str) + Send + Sync;

/// Where long work says what it is doing (the CLI shows it beside its
/// spinner): a message replaces the last one. Cheap to clone, callable from
/// any thread; the default says nothing.
#[derive(Clone, Default)]
pub struct Progress {
    sink: Option<std::sync::Arc<Sink>>,
    prefix: String,
}

impl Progress {
    pub fn new(sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self {
            sink: Some(std::sync::Arc::new(sink)),
            prefix: String::new(),
        }
    }

    /// The same sink, each message after `prefix: `.
    pub fn within(&self, prefix: &str) -> Self {
        Self {
            sink: self.sink.clone(),
            prefix: if self.prefix.is_empty() {
                prefix.to_string()
            } else {
                format!("{}: {prefix}", self.prefix)
            },
        }
    }

    pub fn say(&self, msg: &str) {
        if let Some(sink) = &self.sink {
            if self.prefix.is_empty() {
                sink(msg);
            } else if msg.is_empty() {
                sink(&self.prefix);
            } else {
                sink(&format!("{}: {msg}", self.prefix));
            }
        }
    }
}

/// Context a pass may use while proposing patches.
#[derive(Default)]
pub struct PassCtx {
    /// Things the pass chose not to do, and why ("did not fire because ...").
    pub notes: Vec<String>,
    pub data: DataSource,
    /// Which propose/apply round this is (1 for the first).
    pub round: usize,
    /// Where the pass says what it is doing, on work that takes long
    /// (calibration, `sensitive=auto`'s measurements).
    pub progress: Progress,
}

pub trait Pass: Send + Sync {
    fn info(&self) -> &'static PassInfo;
    /// Parameters as given (after defaults), for the report.
    fn params(&self) -> serde_json::Value;
    /// Propose patches against the current model. An empty list means done.
    fn propose(&self, model: &Model, ctx: &mut PassCtx) -> Result<Vec<Patch>>;
    /// Whether, with these parameters, the pass may run the model on
    /// samples ([`PassInfo::runs_model`] by default), asked of the
    /// pipeline's input `model` before any pass runs: a pass that says no
    /// must say so of whatever the passes before it make of `model`. Where
    /// none would, the driver chooses input sizes only once verification
    /// needs them, after the passes, and not at all where they changed
    /// nothing.
    fn runs_model(&self, model: &Model) -> bool {
        let _ = model;
        self.info().runs_model
    }
    /// Whether, with these parameters, the pass compares what it makes
    /// with the original on verification's samples
    /// (`quant(sensitive=auto)`), asked as [`Pass::runs_model`] is: the
    /// driver then builds verification's reference of the original while
    /// it tries input sizes, with `--no-verify` too, and shares it
    /// ([`DataSource::original`]). No by default.
    fn compares_with_original(&self, model: &Model) -> bool {
        let _ = model;
        false
    }
}

/// A registry entry: the declaration and a constructor from parameters.
pub struct PassEntry {
    pub info: &'static PassInfo,
    pub build: fn(toml::Table) -> Result<Box<dyn Pass>>,
}

/// Every pass, in the order `onnx-squeeze passes` lists them.
pub static REGISTRY: &[&PassEntry] = &[
    &crate::passes::clean::ENTRY,
    &crate::passes::opset::ENTRY,
    &crate::passes::quant::ENTRY,
];

/// Build a pass by name from its parameters.
pub fn build(name: &str, params: toml::Table) -> Result<Box<dyn Pass>> {
    match REGISTRY.iter().find(|e| e.info.name == name) {
        Some(e) => (e.build)(params)
            .map_err(|err| err.context(format!("bad parameters for pass '{name}'"))),
        None => bail!(
            "unknown pass '{name}'; valid passes: {}",
            REGISTRY
                .iter()
                .map(|e| e.info.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Deserialize a pass's parameters, rejecting unknown keys with the valid ones listed.
pub fn parse_params<T: serde::de::DeserializeOwned>(
    params: toml::Table,
    info: &PassInfo,
) -> Result<T> {
    toml::Value::Table(params).try_into::<T>().map_err(|e| {
        // serde's own list of the fields ("expected one of ...") is left
        // out: the parameters follow, with their types and defaults.
        let msg = e.message().trim();
        let msg = msg.split(", expected one of").next().unwrap_or(msg);
        anyhow::anyhow!(
            "{msg}; parameters of '{}': {}",
            info.name,
            info.params
                .iter()
                .map(|p| format!("{} ({}, default {})", p.name, p.kind, p.default))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::Tolerance;

    #[test]
    fn a_bound_that_is_not_checked_says_so() {
        let t = Tolerance {
            atol: 1e-4,
            rtol: f64::INFINITY,
            min_cosine: 0.99,
        };
        assert_eq!(
            t.describe(),
            "min cosine 0.99 a sample, or its largest error within atol 0.0001; rtol not checked: element-wise errors not bounded"
        );
        assert_eq!(
            Tolerance::FLOAT_ROUNDING.describe(),
            "atol 0.0001, rtol 0.001, min cosine 0.99999"
        );
    }
}
