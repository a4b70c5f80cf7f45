//! What `sensitive=auto` says of its choice.

use super::score;
use super::storage::{Form, Ladder, Stored};
use crate::patch::Patch;
use crate::verify::{Status, VerifyReport};

/// What a patch quantizes, for notes.
fn describe(p: &Patch) -> String {
    let what = p
        .remove_initializers
        .first()
        .cloned()
        .or_else(|| p.add_nodes.first().and_then(|n| n.input.first().cloned()))
        .unwrap_or_default();
    if what.is_empty() {
        return p.label.clone();
    }
    format!("{} '{what}'", p.label)
}

/// What `sensitive=auto` chose, for its notes.
pub(super) struct Choice<'a> {
    /// The proposal, in graph order.
    pub(super) patches: &'a [Patch],
    /// The layer groups measured ([`super::groups::layer_groups`]).
    pub(super) groups: &'a [Vec<usize>],
    /// The groups taken back, most damaging first: each one's cosine alone
    /// and index in `groups`.
    pub(super) taken_back: &'a [(f64, usize)],
    /// The stored form of the weight of each patch not kept.
    pub(super) fallback: &'a [Option<Stored>],
    /// Where the storage ladder stopped.
    pub(super) ladder: Ladder,
    /// Which patches the result keeps.
    pub(super) keep: &'a [bool],
    /// The result's report.
    pub(super) report: &'a VerifyReport,
    /// The full quantization's score, on the samples searched on.
    pub(super) full: f64,
}

impl Choice<'_> {
    /// The notes that say what was chosen: whether the tolerance is met,
    /// the summary, then what each group taken back is (the printed report
    /// shows a pass's first notes, the JSON all of them), then the caveat
    /// that applies to the whole choice, unless one of the pass's notes so
    /// far (`earlier`) gives it. `samples`: verification's; `wide`: the
    /// random samples searched on around them, where the search widened.
    pub(super) fn notes(
        &self,
        earlier: &[String],
        opts: &crate::verify::VerifyOptions,
        samples: usize,
        wide: Option<usize>,
    ) -> Vec<String> {
        let (r, keep, patches) = (self.report, self.keep, self.patches);
        let mut notes = vec![];
        let (details, changed) =
            group_notes(self.taken_back, self.groups, patches, self.fallback, keep);
        if r.status != Status::Passed {
            notes.push(format!(
                "even with everything in float the tolerance is missed (cosine {:.5})",
                score(r)
            ));
        }
        // Groups whose weights all went back to the int8 storage they had
        // are not taken back: nothing of them changed.
        let unchanged = match self.taken_back.len() - changed {
            0 => String::new(),
            u => format!(
                "; {u} more taken back while searching went back to their int8 storage, unchanged"
            ),
        };
        notes.push(format!(
            "sensitive=auto: full quantization gave cosine {:.5}; with {changed} layer group(s) taken back (each in a note below, where the JSON report has them all{unchanged}) {:.5}",
            self.full,
            score(r)
        ));
        // Float16 weights alone miss: nothing quantized can meet the
        // tolerance on these samples (torchvision's EfficientNetV2-S of
        // random weights on normal images: outputs up to 6e4, full
        // quantization 0.137, the result the original's size after a 12 s
        // search). Say why, and what would change it.
        if let Ladder::Missed(best) = self.ladder {
            notes.push(format!(
                "sensitive=auto: {MISSED_AT_FLOAT16} (cosine {} at best, against min_cosine {}), so those weights stay float. Either the tolerance is tighter than float16 rounding allows, or the model amplifies small changes on these inputs, as models can on inputs unlike the data they were trained on: pass --inputs with real data, or loosen --tolerance",
                digits_beside(best, opts.tolerance.min_cosine),
                opts.tolerance.min_cosine
            ));
        }
        // Most of the model back in float: integer kernels gain little
        // over weight-only int8 there (a ResNet-50 of random weights: 15 of
        // 16 groups, 1.00x of float in onnxruntime, after a 27 s search).
        // Layers with an integer kernel (static int8 weights, dynamic
        // MatMuls) the original choice held, and the one kept.
        let kernels = |keep: &[bool]| {
            patches
                .iter()
                .zip(keep)
                .filter(|(p, &k)| {
                    k && (p.label.starts_with("weight quantized to int")
                        || p.label.contains("made dynamic"))
                })
                .count()
        };
        let (total, left) = (kernels(&vec![true; patches.len()]), kernels(keep));
        let static_or_dynamic = patches.iter().any(|p| {
            p.label.starts_with("activation quantized") || p.label.contains("made dynamic")
        });
        // Weight-only int8 is the ladder's first rung: where that missed,
        // it is no way out.
        if static_or_dynamic && r.status == Status::Passed && total > 1 && 4 * left <= total {
            let leaves = format!(
                "sensitive=auto leaves {left} of {total} layers with an integer kernel in int8"
            );
            match self.ladder {
                Ladder::None | Ladder::Int8 => notes.push(format!(
                    "{leaves}: the result may run no faster than weight-only int8 (activations=none), which needs no search"
                )),
                Ladder::Finer => notes.push(format!(
                    "{leaves}: the result may run no faster than the original (weight-only int8, activations=none, misses the tolerance too: every weight stored as int8 did)"
                )),
                Ladder::Missed(_) => {}
            }
        }
        notes.extend(details);
        // The search chose the fewest layers that pass on the samples it is
        // then verified on: other inputs can fall below.
        if r.status == Status::Passed && !earlier.iter().any(|n| n.contains(HELD_OUT)) {
            notes.push(held_out_caveat(opts, samples, wide));
        }
        notes
    }
}

/// A note per group taken back (`taken_back`: each one's cosine alone and
/// index in `groups`): what it holds, and the form its weights stay stored
/// in; first, the activation pairs left out with them (`keep` false
/// outside the groups). With them, how many groups changed: one of stored
/// weights alone, all back in int8 storage, did not (and has no note).
fn group_notes(
    taken_back: &[(f64, usize)],
    groups: &[Vec<usize>],
    patches: &[Patch],
    fallback: &[Option<Stored>],
    keep: &[bool],
) -> (Vec<String>, usize) {
    let taken: std::collections::HashSet<usize> = taken_back
        .iter()
        .flat_map(|&(_, gi)| groups[gi].iter().copied())
        .collect();
    let idle: Vec<String> = (0..patches.len())
        .filter(|&i| !keep[i] && !taken.contains(&i))
        .map(|i| describe(&patches[i]))
        .collect();
    let mut details = Vec::new();
    // The groups taken back that changed (each with a note).
    let mut changed = 0;
    if !idle.is_empty() {
        details.push(format!(
            "left out with the layers in float ({} pair(s) that then serve no integer kernel, or would make onnxruntime pool uint8 after a float layer): {}",
            idle.len(),
            idle.join(", ")
        ));
    }
    for &(s, gi) in taken_back {
        let what: Vec<String> = groups[gi].iter().map(|&i| describe(&patches[i])).collect();
        let forms: Vec<Form> = groups[gi]
            .iter()
            .filter_map(|&i| fallback[i].as_ref())
            .map(|s| s.form)
            .collect();
        let kernels = forms.iter().filter(|&&f| f == Form::Kernel).count();
        let stored = Form::names(forms.iter().copied().filter(|&f| f != Form::Kernel));
        // Weight-only weights computed in float already: only their storage
        // changes (where it is int8 again, nothing does).
        let storage_only = groups[gi]
            .iter()
            .all(|&i| patches[i].label.starts_with("weight stored as"));
        if storage_only && !forms.is_empty() && forms.iter().all(|&f| f == Form::Int8) {
            continue;
        }
        // An int4 MatMul back in its int8 kernel computes in int8, not float.
        let how = match (kernels, stored.is_empty(), storage_only) {
            (0, false, true) => format!("stored finer by sensitive=auto (alone: cosine {s:.5}; weights stay stored as {stored})"),
            (0, false, false) => format!("computed in float by sensitive=auto (alone: cosine {s:.5}; weights stay stored as {stored})"),
            (0, true, _) => format!("computed in float by sensitive=auto (alone: cosine {s:.5})"),
            (k, true, _) => format!("computed in int8 by sensitive=auto (alone: cosine {s:.5}; {k} MatMul(s) in dynamic MatMulInteger, as weights=int8 has them)"),
            (k, false, _) => format!("taken back by sensitive=auto (alone: cosine {s:.5}; {k} MatMul(s) compute in int8, dynamic MatMulInteger as weights=int8 has them, the others in float with weights stored as {stored})"),
        };
        details.push(format!("{how}, instead of: {}", what.join(", ")));
        changed += 1;
    }
    (details, changed)
}

/// `x` with one decimal more than `min` has, five at least: a cosine
/// beside the tolerance it misses (0.999999995 against 0.99999999).
fn digits_beside(x: f64, min: f64) -> String {
    let decimals = min.to_string().split('.').nth(1).map_or(0, str::len);
    format!("{x:.*}", decimals.max(4) + 1)
}

/// What the note on a ladder that missed every rung says it measured.
const MISSED_AT_FLOAT16: &str = "even with every weight taken back stored as float16 (a change of about 1 part in 2000), each layer computing in float, these samples miss the tolerance";

/// Where a note says how to check the result on held-out data.
const HELD_OUT: &str = "check held-out data";

/// What the search chose on (verification's `samples`, or `wide` random
/// ones around them), that other inputs can fall below, and the commands
/// that check.
fn held_out_caveat(
    opts: &crate::verify::VerifyOptions,
    samples: usize,
    wide: Option<usize>,
) -> String {
    let flags = opts.tolerance.flags();
    let searched = match wide {
        Some(w) => format!(
            "{w} random samples (seed {}), verification's {samples} among them",
            opts.seed
        ),
        None => format!(
            "verification's {samples} random sample(s) (seed {})",
            opts.seed
        ),
    };
    match &opts.inputs {
        None => format!(
            "sensitive=auto chose on {searched}, which the result is verified on: other inputs can fall below the tolerance (torchvision's MNASNet of random weights: 0.9916 on its eight, 0.9897 on 32 others); {HELD_OUT} with `onnx-squeeze verify ORIGINAL RESULT --inputs HELD_OUT {flags}`, or more random samples with `--seed {} --samples 32`",
            opts.seed.wrapping_add(1)
        ),
        Some(_) => format!(
            "sensitive=auto chose on the {samples} sample(s) of --inputs, the ones the result is verified on: {HELD_OUT} with `onnx-squeeze verify ORIGINAL RESULT --inputs HELD_OUT {flags}`"
        ),
    }
}

#[cfg(test)]
mod tests {
    /// A cosine beside the tolerance it misses shows where it differs.
    #[test]
    fn a_cosine_is_shown_to_one_decimal_past_its_tolerance() {
        use super::digits_beside;
        assert_eq!(digits_beside(0.612341, 0.99), "0.61234");
        assert_eq!(digits_beside(0.999999995, 0.99999999), "0.999999995");
        assert_eq!(digits_beside(0.5, 1.0), "0.50000");
    }

    /// Groups of stored weights alone that all went back to int8 storage
    /// changed nothing: no note each, and not counted as taken back; a
    /// group whose layer computes in float is, whatever its storage.
    #[test]
    fn groups_back_in_int8_storage_are_not_counted_as_taken_back() {
        use super::{group_notes, Form, Stored};
        let patch = |label: &str, w: &str| {
            let mut p = crate::patch::Patch::new(label);
            p.remove_initializers.push(w.to_string());
            p
        };
        let patches = [
            patch("weight stored as int8 (expanded once at load)", "a"),
            patch("weight stored as int8 (expanded once at load)", "b"),
            patch("weight quantized to int8 per channel", "c"),
        ];
        let stored = |form| {
            Some(Stored {
                form,
                patch: crate::patch::Patch::new("w"),
            })
        };
        let fallback = [stored(Form::Int8), stored(Form::Half), stored(Form::Int8)];
        let groups: Vec<Vec<usize>> = vec![vec![0], vec![1], vec![2]];
        let taken = [(0.9, 0), (0.95, 1), (0.97, 2)];
        let (notes, changed) = group_notes(&taken, &groups, &patches, &fallback, &[false; 3]);
        assert_eq!(changed, 2);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].starts_with("stored finer by sensitive=auto") && notes[0].contains("'b'"));
        assert!(notes[1].starts_with("computed in float") && notes[1].contains("'c'"));
    }
}
