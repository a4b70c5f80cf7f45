//! The copy of a model that tract runs: inputs that are the same in every
//! sample (a setting such as a sample rate) made constant where the model
//! has If nodes, and what they decide folded (the branch taken inlined,
//! shapes the samples fix computed, loops written out where their trip
//! count is fixed), then lowered ([`super::lower`]) and cut before what
//! tract cannot type ([`super::reach`]). A patch written for the model
//! carries over to its specialised copy by [`translate_patch`].

use anyhow::{Context, Result};
use tract_onnx::prelude::Tensor;

use super::{inputs, lower, reach, tract, unroll};
use crate::ir::Model;
use crate::passes::fold;

/// Whether the main graph holds an If node.
pub(crate) fn has_if(m: &Model) -> bool {
    m.graph.nodes.node_weights().any(|n| n.op() == "If")
}

/// Whether the main graph holds a Loop node (tract has none: see
/// [`unroll`]).
pub(crate) fn has_loop(m: &Model) -> bool {
    m.graph.nodes.node_weights().any(|n| n.op() == "Loop")
}

/// Inputs that are small and the same in every sample (control inputs such
/// as a sample rate), when the model has If nodes to specialise; and the
/// samples without them, as the specialised model takes them.
pub(crate) fn split_fixed(has_if: bool, samples: &[Vec<Tensor>]) -> (Vec<usize>, Vec<Vec<Tensor>>) {
    let fixed: Vec<usize> = match samples.first() {
        Some(first) if has_if => (0..first.len())
            .filter(|&i| first[i].len() <= 16 && samples.iter().all(|s| s[i] == first[i]))
            .collect(),
        _ => vec![],
    };
    let rest = samples
        .iter()
        .map(|s| {
            s.iter()
                .enumerate()
                .filter(|(i, _)| !fixed.contains(i))
                .map(|(_, t)| t.clone())
                .collect()
        })
        .collect();
    (fixed, rest)
}

/// The model as tract will see it: fixed inputs made constant (and the
/// consequences folded), then lowered, and cut before what tract cannot
/// type after a data-dependent op ([`reach`]; the copy's outputs are then
/// the values that part reads, and a note says so).
///
/// `memo`, where given, holds the specialised copies made last: one made
/// again from the same model and samples (calibration's copy of a pass's
/// input, which `sensitive=auto` specialises again) is taken from it.
pub(crate) fn verification_copy(
    model: &Model,
    specs: &[inputs::InputSpec],
    sample: &[Tensor],
    fixed: &[usize],
    run_samples: &[Vec<Tensor>],
    mode: reach::CutMode,
    memo: Option<&super::RunMemo>,
) -> Result<(crate::proto::ModelProto, Vec<String>)> {
    let (m, mut notes, cut) =
        verification_model(model, specs, sample, fixed, run_samples, mode, memo)?;
    notes.extend(cut.map(|c| c.note()));
    Ok((m.to_proto(), notes))
}

/// [`verification_copy`] as a model, and the cut, where it was cut.
pub(super) fn verification_model(
    model: &Model,
    specs: &[inputs::InputSpec],
    sample: &[Tensor],
    fixed: &[usize],
    run_samples: &[Vec<Tensor>],
    mode: reach::CutMode,
    memo: Option<&super::RunMemo>,
) -> Result<(Model, Vec<String>, Option<reach::Cut>)> {
    let (mut m, mut notes) = specialise_remembered(memo, model, specs, sample, fixed, run_samples)?;
    notes.extend(lower::lower(&mut m)?);
    let cut = match run_samples.first() {
        Some(first) => reach::cut_as(&mut m, first, mode)?,
        None => None,
    };
    // ReverseSequence is lowered while loops are written out and after.
    let reversed = |m: &Model| {
        m.graph
            .nodes
            .node_weights()
            .filter(|n| n.is_onnx() && n.op() == "ReverseSequence")
            .count()
    };
    let lowered = reversed(model).saturating_sub(reversed(&m));
    if lowered > 0 {
        notes.push(format!(
            "{lowered} ReverseSequence node(s) (unknown to tract) lowered to Slice with step -1 and Concat"
        ));
    }
    Ok((m, notes, cut))
}

/// [`specialise`], taken from `memo` where it made this one last (the
/// same model, inputs, fixed values and samples: see
/// [`super::memo::specialisation_key`]), else made and kept there. Only a
/// copy that is more than a plain one (fixed inputs, or control flow) is
/// kept.
pub(super) fn specialise_remembered(
    memo: Option<&super::RunMemo>,
    model: &Model,
    specs: &[inputs::InputSpec],
    sample: &[Tensor],
    fixed: &[usize],
    run_samples: &[Vec<Tensor>],
) -> Result<(Model, Vec<String>)> {
    let Some(memo) = memo.filter(|_| !fixed.is_empty() || has_if(model) || has_loop(model)) else {
        return specialise(model, specs, sample, fixed, run_samples);
    };
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let key = super::memo::specialisation_key(model, &names, sample, fixed, run_samples);
    if let Some(made) = memo.specialised(key) {
        return Ok((made.0.clone(), made.1.clone()));
    }
    let made = specialise(model, specs, sample, fixed, run_samples)?;
    memo.keep_specialised(key, std::sync::Arc::new(made.clone()));
    Ok(made)
}

/// The model with its `fixed` inputs made constant and the consequences
/// folded (If branches they select inlined). An If model is specialised to
/// the shapes of the samples too (conditions computed from shapes fold): tract
/// cannot type an If whose branches yield different shapes. So is a Loop
/// model, whose loops are then written out where the samples fix their trip
/// count ([`unroll`]; tract has no Loop). A plain copy when the model has no
/// If, no Loop and no input is fixed. With a note per loop written out.
pub(super) fn specialise(
    model: &Model,
    specs: &[inputs::InputSpec],
    sample: &[Tensor],
    fixed: &[usize],
    run_samples: &[Vec<Tensor>],
) -> Result<(Model, Vec<String>)> {
    let mut notes = Vec::new();
    let mut m = model.clone();
    // Why the loops left are not written out.
    let mut left = Vec::new();
    // Shapes are specialised for control flow only (an If's condition, a
    // Loop's trip count), and kept so once the loops are written out: what
    // they compute may decide the next one's.
    let control_flow = has_if(model) || has_loop(model);
    if !fixed.is_empty() || control_flow {
        for &i in fixed {
            let name = &specs[i].name;
            m.graph.rest.input.retain(|vi| vi.name() != name);
            let t = tract::to_onnx_tensor(name, &sample[i])?;
            m.graph.initializers.insert(name.clone(), t);
        }
        m.graph.reindex();
        // Only what the fixed inputs (and shapes fixed by the samples)
        // decide is folded; ops on weights stay, so that patches on those
        // weights carry over to this copy (`translate_patch`).
        let mut decided: std::collections::HashSet<String> =
            fixed.iter().map(|&i| specs[i].name.clone()).collect();
        for _ in 0..64 {
            let mut n = Vec::new();
            let mut patches = crate::passes::clean::constants_to_initializers(&m.graph);
            let mut folds = vec![];
            if patches.is_empty() {
                folds = fold::fold_constants_from(&m, 1 << 20, &decided, &mut n)
                    .context("folding what the samples fix, for tract (If conditions, shapes)")?;
                patches.extend(fold::inline_constant_ifs(&m)?);
            }
            if patches.is_empty() && folds.is_empty() && control_flow {
                folds = specialise_shapes(&m, run_samples)?;
            }
            if patches.is_empty() && folds.is_empty() {
                // Loops tract cannot run, written out where the samples
                // fix their trip count; what they compute may decide the
                // next one's.
                // A bidirectional LSTM's reversals, once the loop before
                // them is written out and their lengths are known: the
                // shapes after them can then be computed.
                if lower::lower_reverse_sequences(&mut m)? > 0 {
                    continue;
                }
                left.clear();
                match unroll::unroll_next(&m, &mut left)
                    .context("writing out a Loop for tract, which has none")?
                {
                    Some((unrolled, note)) => {
                        m = unrolled;
                        notes.push(note);
                        continue;
                    }
                    None => break,
                }
            }
            for p in &folds {
                decided.extend(p.add_initializers.iter().map(|t| t.name().to_string()));
            }
            for p in folds.into_iter().chain(patches) {
                if p.is_applicable(&m.graph) {
                    m.apply(&p)?;
                }
            }
        }
    }
    // A loop after a selection by values (torchvision's Mask R-CNN pastes
    // its masks so) goes with the part verification cuts there (`reach`).
    let outside = has_loop(&m) && {
        let tail = reach::tail(&m);
        m.graph
            .nodes
            .node_indices()
            .any(|id| m.graph.nodes[id].op() == "Loop" && !tail.contains(&id))
    };
    if outside {
        anyhow::bail!(
            "{NO_LOOP}{}",
            match left.is_empty() {
                true => "the loops left could not all be written out".to_string(),
                false => left.join("; "),
            }
        );
    }
    Ok((m, notes))
}

/// The start of [`specialise`]'s refusal of a model whose loops are not
/// all written out.
const NO_LOOP: &str = "tract has no Loop; ";

/// Why `e` refuses a model: a Loop left that tract cannot run
/// ([`specialise`]), else `None`.
pub(crate) fn loop_refusal(e: &anyhow::Error) -> Option<String> {
    e.chain()
        .map(|c| c.to_string())
        .find(|m| m.starts_with(NO_LOOP))
}

/// `patch`, written for `from`, in terms of `to`, a copy of `from` that
/// specialisation changed ([`super::Reference::specialised`]): nodes are matched by
/// their first output's name (each value has one producer). `None` when a
/// node it touches has no counterpart in `to` (folded away or inlined) or the
/// translated patch does not apply there.
pub fn translate_patch(
    patch: &crate::patch::Patch,
    from: &crate::ir::Graph,
    to: &crate::ir::Graph,
) -> Option<crate::patch::Patch> {
    let map = |id: crate::ir::NodeId| -> Option<crate::ir::NodeId> {
        let out = from
            .nodes
            .node_weight(id)?
            .proto
            .output
            .iter()
            .find(|o| !o.is_empty())?;
        let there = to.producer(out)?;
        // The same node: op and inputs too (specialisation keeps the names
        // of what it keeps; an inlined If's output may come from an If of
        // its branch, which reads another condition).
        let (a, b) = (&from.nodes[id].proto, &to.nodes[there].proto);
        (a.op_type == b.op_type && a.input == b.input).then_some(there)
    };
    // What the patch defines must be new in the copy as in the original (a
    // name specialisation introduced, such as an inlined branch's, would be
    // silently replaced).
    let added = patch.add_initializers.iter().map(|t| t.name()).chain(
        patch
            .add_nodes
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str)),
    );
    for name in added {
        if to.is_defined(name) && !from.is_defined(name) {
            return None;
        }
    }
    // Every reader of what the patch replaces must be there to read the
    // replacement: specialisation may have folded ops on a weight (slices
    // of an LSTM's weights inside an inlined If) into constants of their own.
    let shape_only = |id: crate::ir::NodeId| matches!(from.nodes[id].op(), "Shape" | "Size");
    // An If reading it from its branches is gone when inlined; its branch's
    // nodes read it in the copy (specialisation folds no op on a tensor of
    // rank 2 or more that the fixed inputs do not decide).
    let inlined = |id: crate::ir::NodeId| from.nodes[id].op() == "If";
    for w in &patch.remove_initializers {
        if from
            .consumers(w)
            .into_iter()
            .any(|c| map(c).is_none() && !shape_only(c) && !inlined(c))
        {
            return None;
        }
    }
    let mut p = patch.clone();
    // The anchor only orders new nodes among equals: one that is gone
    // (an inlined If reading the patched weight) leaves them unordered.
    p.anchor = patch.anchor.and_then(map);
    p.remove_nodes = patch
        .remove_nodes
        .iter()
        .map(|&id| map(id))
        .collect::<Option<_>>()?;
    // A Shape or Size reader folded away by specialisation read only the
    // shape, which quantizing a value keeps: its rewire has nothing to do.
    let mut rewires = Vec::new();
    for (id, slot, v) in &patch.rewires {
        match map(*id) {
            Some(there) => rewires.push((there, *slot, v.clone())),
            None if from.nodes.contains_node(*id) && shape_only(*id) => {}
            None => return None,
        }
    }
    p.rewires = rewires;
    p.replace_attributes = patch
        .replace_attributes
        .iter()
        .map(|(id, a)| Some((map(*id)?, a.clone())))
        .collect::<Option<_>>()?;
    // Annotations of a node the copy no longer has have nothing to strip.
    p.strip_debug = patch.strip_debug.iter().filter_map(|&id| map(id)).collect();
    p.is_applicable(to).then_some(p)
}

/// `Shape` nodes before any `If` whose result is the same in every sample
/// become constants: the part of the graph they read is run in tract (it
/// holds no control flow) and the shapes it yields are stored. Conditions
/// computed from shapes (common in exported If models) then fold.
fn specialise_shapes(m: &Model, samples: &[Vec<Tensor>]) -> Result<Vec<crate::patch::Patch>> {
    use petgraph::visit::EdgeRef;
    let g = &m.graph;
    let control = |n: &crate::ir::Node| matches!(n.op(), "If" | "Loop" | "Scan");
    let mut wanted = Vec::new();
    let mut keep = std::collections::HashSet::new();
    for id in g.nodes.node_indices() {
        if g.nodes[id].op() != "Shape" || g.nodes[id].proto.output.len() != 1 {
            continue;
        }
        // Ancestors of the Shape node, which must hold no control flow.
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![id];
        let mut ok = true;
        while let Some(n) = stack.pop() {
            if !seen.insert(n) {
                continue;
            }
            if control(&g.nodes[n]) {
                ok = false;
                break;
            }
            stack.extend(
                g.nodes
                    .edges_directed(n, petgraph::Direction::Incoming)
                    .map(|e| e.source()),
            );
        }
        if ok {
            keep.extend(seen);
            wanted.push(id);
        }
    }
    if wanted.is_empty() {
        return Ok(vec![]);
    }
    let mut sub = m.clone();
    let drop: Vec<_> = sub
        .graph
        .nodes
        .node_indices()
        .filter(|n| !keep.contains(n))
        .collect();
    for n in drop {
        sub.graph.nodes.remove_node(n);
    }
    sub.graph.rest.output = wanted
        .iter()
        .map(|&id| crate::proto::ValueInfoProto {
            name: Some(g.nodes[id].proto.output[0].clone()),
            ..Default::default()
        })
        .collect();
    sub.graph.rest.value_info.clear();
    sub.graph.reindex();
    // Lowered as the copy tract runs will be, else the shapes computed
    // from what tract runs only lowered are not specialised (SVTRv2's
    // decoder decides its Ifs by the shape of a MatMul whose weight is a
    // DequantizeLinear of int4 blocks); unlowered where lowering fails (the
    // run then says what tract lacks).
    let mut lowered = sub.clone();
    let proto = match lower::lower(&mut lowered) {
        Ok(_) => lowered,
        Err(_) => sub,
    }
    .to_proto();
    // Not every prefix is planned or runs on its own (a shape read past a
    // NonZero, whose count tract leaves unknown); then nothing is
    // specialised, and the whole model's run says what tract lacks.
    let Ok(runner) = tract::Runner::new(proto, &samples[0], samples.len()) else {
        return Ok(vec![]);
    };
    let Ok(results) = samples
        .iter()
        .map(|s| runner.run(s))
        .collect::<Result<Vec<Vec<Tensor>>>>()
    else {
        return Ok(vec![]);
    };
    let mut patches = Vec::new();
    for (k, &id) in wanted.iter().enumerate() {
        let first = &results[0][k];
        if results.iter().any(|r| &r[k] != first) {
            continue;
        }
        let name = &g.nodes[id].proto.output[0];
        // A shape tract leaves symbolic (the count of a NonZero's output,
        // as in torchvision's Faster R-CNN) is not fixed by the samples.
        let Ok(value) = tract::to_onnx_tensor(name, first) else {
            continue;
        };
        let mut p = crate::patch::Patch::new("shape fixed for this verification");
        p.remove_nodes.push(id);
        p.add_initializers.push(value);
        patches.push(p);
    }
    Ok(patches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::{plus_or_minus_one, typed_value, ModelBuilder};
    use crate::proto::tensor_proto::DataType;
    use tract_onnx::prelude::tensor1;

    /// x + 1 where input `sr` equals 16000, else x - 1: `sr` is a setting
    /// the samples fix.
    fn branching_on_a_setting() -> Model {
        let mut proto = ModelBuilder::new(13)
            .input("x", &[4])
            .init_f32("one", &[1], &[1.0])
            .init(crate::ir::tensor::from_i64("rate", &[16000]))
            .node("is16k", "Equal", &["sr", "rate"], &["c1"])
            .node("squeeze", "Squeeze", &["c1", "axes"], &["c"])
            .init(crate::ir::tensor::from_i64("axes", &[0]))
            .node_with("choose", "If", &["c"], &["y"], plus_or_minus_one(&[4]))
            .output("y", &[4])
            .proto();
        let g = proto.graph.as_mut().unwrap();
        g.input.push(typed_value("sr", DataType::Int64, &[1]));
        let external = std::sync::Arc::new(crate::io::ExternalData::new(".".into()));
        Model::from_proto(proto, external).unwrap()
    }

    /// A specialisation made again from the same model, inputs and samples
    /// is the one the memo kept (a copy put under its key is what comes
    /// back); another value of the setting is another key; none is kept
    /// without fixed inputs or control flow, or once the memo is cleared.
    #[test]
    fn a_specialisation_made_again_is_taken_from_the_memo() {
        let m = branching_on_a_setting();
        let specs = inputs::input_specs(&m.graph, &Default::default(), &mut vec![]).unwrap();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["x", "sr"]);
        let x = tensor1(&[1.0f32, 2.0, 3.0, 4.0]);
        let sample = |sr: i64, k: f32| vec![tensor1(&[k, 2.0, 3.0, 4.0]), tensor1(&[sr])];
        let samples = vec![sample(16000, 1.0), sample(16000, 5.0)];
        let (fixed, run_samples) = split_fixed(has_if(&m), &samples);
        assert_eq!(fixed, [1]);
        let memo = super::super::RunMemo::default();
        let made = |samples: &[Vec<Tensor>], memo: Option<&super::super::RunMemo>| {
            specialise_remembered(memo, &m, &specs, &samples[0], &fixed, &run_samples).unwrap()
        };
        let plain = specialise(&m, &specs, &samples[0], &fixed, &run_samples).unwrap();
        let first = made(&samples, Some(&memo));
        fn ops(m: &Model) -> Vec<&str> {
            m.graph.nodes.node_weights().map(|n| n.op()).collect()
        }
        assert_eq!(ops(&first.0), ops(&plain.0));
        assert_eq!(ops(&first.0), ["Add"], "the branch taken, inlined");
        // What the memo holds under the key is what comes back.
        let key =
            super::super::memo::specialisation_key(&m, &names, &samples[0], &fixed, &run_samples);
        assert!(memo.specialised(key).is_some());
        let mut marked = first.clone();
        marked.1.push("from the memo".into());
        memo.keep_specialised(key, std::sync::Arc::new(marked));
        assert_eq!(
            made(&samples, Some(&memo)).1.last().map(String::as_str),
            Some("from the memo")
        );
        // Other samples run (shapes are computed on them): made.
        let moved = vec![sample(16000, 1.0), sample(16000, 6.0)];
        let (_, moved_runs) = split_fixed(true, &moved);
        let again =
            specialise_remembered(Some(&memo), &m, &specs, &moved[0], &fixed, &moved_runs).unwrap();
        assert!(!again.1.iter().any(|n| n == "from the memo"));
        // Another weight: made.
        let mut heavier = m.clone();
        heavier.graph.initializers.insert(
            "one".into(),
            crate::ir::tensor::from_f32("one", &[1], &[2.0]),
        );
        let again = specialise_remembered(
            Some(&memo),
            &heavier,
            &specs,
            &samples[0],
            &fixed,
            &run_samples,
        )
        .unwrap();
        assert!(!again.1.iter().any(|n| n == "from the memo"));
        // Another value of the setting: another copy, made.
        let other = vec![sample(8000, 1.0), sample(8000, 5.0)];
        let second = made(&other, Some(&memo));
        assert_eq!(ops(&second.0), ["Sub"]);
        assert!(!second.1.iter().any(|n| n == "from the memo"));
        // Cleared: made again.
        memo.clear();
        assert!(memo.specialised(key).is_none());
        assert!(!made(&samples, Some(&memo))
            .1
            .iter()
            .any(|n| n == "from the memo"));
        // Without fixed inputs or control flow there is nothing to keep.
        let plain_model = ModelBuilder::new(13)
            .input("x", &[4])
            .node("r", "Relu", &["x"], &["y"])
            .output("y", &[4])
            .build()
            .unwrap();
        let specs =
            inputs::input_specs(&plain_model.graph, &Default::default(), &mut vec![]).unwrap();
        let memo = super::super::RunMemo::default();
        let s = vec![vec![x.clone()]];
        specialise_remembered(Some(&memo), &plain_model, &specs, &s[0], &[], &s).unwrap();
        let key = super::super::memo::specialisation_key(&plain_model, &["x"], &s[0], &[], &s);
        assert!(memo.specialised(key).is_none());
    }
}
