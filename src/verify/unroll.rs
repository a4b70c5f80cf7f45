//! Loops written out for tract, which has no `Loop`: in the verification
//! copy, a main-graph `Loop` whose trip count the samples fix (a constant
//! once the copy is specialised to their shapes: tf2onnx's LSTMs count the
//! steps of a sequence) becomes its body written out once per iteration.
//!
//! The ONNX `Loop` runs its body while `i < M` and the condition holds:
//! iteration `i` reads the iteration number `i`, the condition and the
//! loop-carried values the iteration before wrote (the loop's inputs at
//! first), and writes the condition, the carried values and its scan
//! outputs. The loop's outputs are the last carried values, then each scan
//! output's values stacked along a new first axis. Written out, iteration
//! `i`'s copy of the body reads the constant `i` and the values the copy
//! before it wrote; each carried output is the last copy's value (an
//! Identity), each scan output a Concat of the copies' values unsqueezed
//! on axis 0. Values the body reads from outside it keep their names; its
//! own get a name per iteration; its initializers are written once.
//!
//! Only a loop that runs all its `M` iterations is written out: its
//! condition must be true at the start and, folded in the written-out copy,
//! after every iteration but the last (a condition computed from data,
//! such as a decoder's end token, cannot be known; such a loop stays, and
//! tract refuses it as before).

use std::collections::{HashMap, HashSet};

use anyhow::Result;

use crate::ir::{builder, tensor, walk, Model, NodeId};
use crate::patch::Patch;
use crate::proto::{tensor_proto::DataType, GraphProto, NodeProto};

/// The most iterations written out, and the most nodes all copies of a body
/// may add: a loop beyond them stays (tract refuses it).
const MAX_ITERATIONS: i64 = 4096;
const MAX_NODES: usize = 100_000;

/// The first main-graph Loop that can be written out, written out in a copy
/// of `m`, with a note; `None` where none can (each one's reason is noted
/// in `notes` once).
pub fn unroll_next(m: &Model, notes: &mut Vec<String>) -> Result<Option<(Model, String)>> {
    let g = &m.graph;
    for id in g.topo_order() {
        let n = &g.nodes[id];
        if !n.is_onnx() || n.op() != "Loop" {
            continue;
        }
        match unroll(m, id)? {
            Ok(done) => return Ok(Some(done)),
            Err(why) => {
                let note = format!("Loop '{}' not written out for tract: {why}", n.label());
                if !notes.contains(&note) {
                    notes.push(note);
                }
            }
        }
    }
    Ok(None)
}

/// Loop `id` written out in a copy of `m`, or why it cannot be.
fn unroll(m: &Model, id: NodeId) -> Result<std::result::Result<(Model, String), String>> {
    let g = &m.graph;
    let node = &g.nodes[id].proto;
    let Some(body) = crate::ir::attr(node, "body").and_then(|a| a.g.as_ref()) else {
        return Ok(Err("it has no body".into()));
    };
    let trips = match node.input.first().filter(|s| !s.is_empty()) {
        None => return Ok(Err("it has no trip count (a while loop)".into())),
        Some(name) => match constant_ints(m, name) {
            Some(v) if v.len() == 1 => v[0],
            _ => {
                return Ok(Err(
                    "its trip count is computed from data, not fixed by the samples' shapes".into(),
                ))
            }
        },
    };
    if !(1..=MAX_ITERATIONS).contains(&trips) {
        return Ok(Err(format!(
            "it runs {trips} iterations (written out: 1 to {MAX_ITERATIONS})"
        )));
    }
    if trips as usize * body.node.len() > MAX_NODES {
        return Ok(Err(format!(
            "{trips} iterations of {} nodes exceed {MAX_NODES} nodes written out",
            body.node.len()
        )));
    }
    if let Some(cond) = node.input.get(1).filter(|s| !s.is_empty()) {
        if constant_ints(m, cond).as_deref() != Some(&[1]) {
            return Ok(Err(
                "its condition is not known to be true at the start".into()
            ));
        }
    }
    if !body.sparse_initializer.is_empty() || body.input.len() < 2 || body.output.is_empty() {
        return Ok(Err("its body is not one this tool writes out".into()));
    }
    let carried_n = body.input.len() - 2;
    if node.input.len() < 2 + carried_n || body.output.len() < 1 + carried_n {
        return Ok(Err("its inputs and its body's do not match".into()));
    }

    let from_data = |c: &str| {
        format!("its condition ('{c}') is computed from data: the loop may stop before its {trips} iterations")
    };
    // A condition computed from data shows after the first iteration: two
    // are written out and folded before all of them are (a decoder's 1024).
    if trips > 2 {
        if let Some(c) = write_out(m, id, body, 2)?.1.first() {
            return Ok(Err(from_data(c)));
        }
    }
    let (trial, conds) = write_out(m, id, body, trips)?;
    if let Some(c) = conds.first() {
        return Ok(Err(from_data(c)));
    }
    let note = match trips {
        1 => format!(
            "Loop '{}' written out for tract, which has no Loop: 1 iteration of its {} nodes, which checks no recurrence (bind the dim its trip count follows, such as a sequence's length, with --dim to check more)",
            crate::ir::proto_label(node),
            body.node.len()
        ),
        _ => format!(
            "Loop '{}' written out for tract, which has no Loop: {trips} iterations of its {} nodes",
            crate::ir::proto_label(node),
            body.node.len()
        ),
    };
    Ok(Ok((trial, note)))
}

/// Loop `id` of `m` (its body `body`) written out for `trips` iterations in
/// a copy, with what folds there folded; and the conditions of the
/// iterations before the last that do not fold to true.
fn write_out(m: &Model, id: NodeId, body: &GraphProto, trips: i64) -> Result<(Model, Vec<String>)> {
    let g = &m.graph;
    let node = &g.nodes[id].proto;
    let carried_n = body.input.len() - 2;
    let mut used = g.all_names();
    let mut patch = Patch::new("Loop written out for tract");
    patch.remove_nodes.push(id);
    // Body initializers and Constant nodes: written once, as initializers
    // (a condition's bound in a Constant then folds like any other).
    let mut shared: HashMap<String, String> = HashMap::new();
    let constants = body.node.iter().filter(|n| {
        matches!(n.domain(), "" | "ai.onnx") && n.op_type() == "Constant" && n.input.is_empty()
    });
    let mut hoisted: HashSet<&str> = HashSet::new();
    let values = constants.filter_map(|n| {
        let t = crate::passes::clean::constant_value(n)?;
        hoisted.insert(n.output.first()?.as_str());
        Some(t)
    });
    for t in body
        .initializer
        .iter()
        .cloned()
        .chain(values.collect::<Vec<_>>())
    {
        let name = walk::unique_name(&mut used, t.name());
        shared.insert(t.name().to_string(), name.clone());
        let mut t = t;
        t.name = Some(name);
        patch.add_initializers.push(t);
    }
    // The spec's for loop: no condition, true throughout.
    let mut cond = match node.input.get(1).filter(|s| !s.is_empty()) {
        Some(c) => c.clone(),
        None => {
            let name =
                walk::unique_name(&mut used, &format!("{}_true", crate::ir::proto_label(node)));
            patch
                .add_initializers
                .push(tensor::int_scalar(&name, DataType::Bool, 1));
            name
        }
    };
    let mut carried: Vec<String> = node.input[2..2 + carried_n].to_vec();
    let mut conds_to_check = Vec::new();
    let scan_n = body.output.len() - 1 - carried_n;
    let mut scans: Vec<Vec<String>> = vec![Vec::new(); scan_n];
    for i in 0..trips {
        let mut map: HashMap<String, String> = shared.clone();
        let iter = walk::unique_name(
            &mut used,
            &format!("{}_iteration_{i}", crate::ir::proto_label(node)),
        );
        patch
            .add_initializers
            .push(tensor::int_scalar(&iter, DataType::Int64, i));
        map.insert(body.input[0].name().to_string(), iter);
        map.insert(body.input[1].name().to_string(), cond.clone());
        for (vi, v) in body.input[2..].iter().zip(&carried) {
            map.insert(vi.name().to_string(), v.clone());
        }
        for n in &body.node {
            if n.output
                .first()
                .is_some_and(|o| hoisted.contains(o.as_str()))
            {
                continue;
            }
            let mut copy = n.clone();
            for input in &mut copy.input {
                if let Some(v) = map.get(input.as_str()) {
                    *input = v.clone();
                }
            }
            rename_in_bodies(&mut copy, &map);
            for out in &mut copy.output {
                if out.is_empty() {
                    continue;
                }
                let fresh = walk::unique_name(&mut used, &format!("{out}@{i}"));
                map.insert(out.clone(), fresh.clone());
                *out = fresh;
            }
            // Every copy named, and apart (an inlined If names its
            // branch's values after its node).
            let base = match copy.name() {
                "" => format!("{}@{i}", n.output.first().map_or("node", |o| o.as_str())),
                name => format!("{name}@{i}"),
            };
            copy.name = Some(walk::unique_name(&mut used, &base));
            patch.add_nodes.push(copy);
        }
        let value = |name: &str| map.get(name).cloned().unwrap_or_else(|| name.to_string());
        cond = value(body.output[0].name());
        if i + 1 < trips {
            conds_to_check.push(cond.clone());
        }
        carried = body.output[1..1 + carried_n]
            .iter()
            .map(|o| value(o.name()))
            .collect();
        for (k, o) in body.output[1 + carried_n..].iter().enumerate() {
            scans[k].push(value(o.name()));
        }
    }
    // The loop's outputs: the last carried values, the stacked scans.
    let label = crate::ir::proto_label(node);
    for (out, v) in node.output.iter().zip(&carried) {
        if !out.is_empty() {
            let name = walk::unique_name(&mut used, &format!("{label}_carried"));
            patch
                .add_nodes
                .push(builder::node_proto(&name, "Identity", &[v], &[out], vec![]));
        }
    }
    let axes = (m.opset() >= 13).then(|| {
        let name = walk::unique_name(&mut used, &format!("{label}_axis0"));
        patch.add_initializers.push(tensor::from_i64(&name, &[0]));
        name
    });
    for (out, values) in node.output.iter().skip(carried_n).zip(&scans) {
        if out.is_empty() {
            continue;
        }
        let mut stacked = Vec::new();
        for v in values {
            let s = walk::unique_name(&mut used, &format!("{v}_stacked"));
            let name = walk::unique_name(&mut used, &format!("{s}_unsqueeze"));
            patch.add_nodes.push(match &axes {
                Some(a) => builder::node_proto(&name, "Unsqueeze", &[v, a], &[&s], vec![]),
                None => builder::node_proto(
                    &name,
                    "Unsqueeze",
                    &[v],
                    &[&s],
                    vec![builder::attr_ints("axes", &[0])],
                ),
            });
            stacked.push(s);
        }
        let refs: Vec<&str> = stacked.iter().map(String::as_str).collect();
        let name = walk::unique_name(&mut used, &format!("{out}_concat"));
        patch.add_nodes.push(builder::node_proto(
            &name,
            "Concat",
            &refs,
            &[out],
            vec![builder::attr_int("axis", 0)],
        ));
    }
    let mut trial = m.clone();
    trial.apply(&patch)?;
    // The conditions the iterations computed, folded where they are
    // constants (counters against a bound).
    let mut ignored = Vec::new();
    for _ in 0..8 {
        let folds = crate::passes::fold::fold_constants_from(
            &trial,
            1 << 20,
            &HashSet::new(),
            &mut ignored,
        )?;
        if folds.is_empty() {
            break;
        }
        for p in folds {
            if p.is_applicable(&trial.graph) {
                trial.apply(&p)?;
            }
        }
    }
    let left = conds_to_check
        .into_iter()
        .filter(|c| constant_ints(&trial, c).as_deref() != Some(&[1]))
        .collect();
    Ok((trial, left))
}

/// References to the body's values inside the subgraphs of `n` (an If in a
/// loop body), renamed as `map` says. Names those subgraphs define are
/// their own (names are unique across scopes) and stay.
fn rename_in_bodies(n: &mut NodeProto, map: &HashMap<String, String>) {
    for a in &mut n.attribute {
        for g in a.g.iter_mut().chain(a.graphs.iter_mut()) {
            rename_graph(g, map);
        }
    }
}

fn rename_graph(g: &mut GraphProto, map: &HashMap<String, String>) {
    for n in &mut g.node {
        for input in &mut n.input {
            if let Some(v) = map.get(input.as_str()) {
                *input = v.clone();
            }
        }
        rename_in_bodies(n, map);
    }
    for o in &mut g.output {
        if let Some(v) = map.get(o.name()) {
            o.name = Some(v.clone());
        }
    }
}

/// The values of an integer or bool constant of at most 16 elements.
pub(super) fn constant_ints(m: &Model, name: &str) -> Option<Vec<i64>> {
    let t = m.graph.constant(name)?;
    if tensor::numel(&t.dims).ok()? > 16 {
        return None;
    }
    let raw = m.payload(t).ok()?;
    match tensor::data_type(t) {
        DataType::Bool => {
            let bytes: Vec<u8> = match raw.as_ref() {
                Some(b) => b.to_vec(),
                None => t.int32_data.iter().map(|&v| v as u8).collect(),
            };
            Some(bytes.into_iter().map(i64::from).collect())
        }
        _ => tensor::to_i64(t, raw.as_ref()).ok(),
    }
}
