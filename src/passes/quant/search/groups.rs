//! The layer groups `sensitive=auto` measures, ranks and takes back.

use std::collections::HashMap;

use anyhow::Result;

use super::candidates;
use super::storage::{stored_bytes, Stored};
use crate::ir::tensor;
use crate::passes::quant::placement::REQUANTIZED_OPS;
use crate::patch::Patch;
use crate::verify::{Status, VerifyReport};

/// The patches that quantize an activation (a Q/DQ pair), by the value
/// they quantize.
pub(super) fn activation_patches(patches: &[Patch]) -> HashMap<&str, usize> {
    patches
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p.add_nodes.first() {
            Some(q) if q.op_type() == "QuantizeLinear" && p.remove_initializers.is_empty() => {
                q.input.first().map(|v| (v.as_str(), i))
            }
            _ => None,
        })
        .collect()
}

/// The groups of changes `sensitive=auto` measures and takes back
/// together: each change alone, or on big proposals (over 64 changes) 16
/// groups in graph order.
///
/// A layer taken back from int8 takes the Q/DQ pairs of its input and
/// output with it: a float Conv/Gemm that reads a
/// DequantizeLinear and feeds a QuantizeLinear (directly, or through a
/// Relu that onnxruntime folds into it) is quantized again at load by
/// onnxruntime (its WeightBiasQuantization: per tensor, far coarser
/// than ours), so it would not compute in float there and what was
/// measured would not be what runs (silero's state output: 0.992 in
/// verification, 0.90 in onnxruntime). Its neighbours keep their int8
/// weights.
pub(super) fn layer_groups(
    g: &crate::ir::Graph,
    patches: &[Patch],
    act_of: &HashMap<&str, usize>,
) -> Vec<Vec<usize>> {
    let n = patches.len();
    let mut groups: Vec<Vec<usize>> = if n <= 64 {
        (0..n).map(|i| vec![i]).collect()
    } else {
        let size = n.div_ceil(16);
        (0..n)
            .collect::<Vec<_>>()
            .chunks(size)
            .map(|c| c.to_vec())
            .collect()
    };
    for group in &mut groups {
        let mut extra = Vec::new();
        for &i in group.iter() {
            let p = &patches[i];
            if !p.label.starts_with("weight quantized to int") {
                continue;
            }
            for w in &p.remove_initializers {
                for c in g.consumers(w) {
                    let c = &g.nodes[c].proto;
                    if !REQUANTIZED_OPS.contains(&c.op_type()) {
                        continue;
                    }
                    for v in c.input.first().into_iter().chain(c.output.first()) {
                        extra.extend(act_of.get(v.as_str()));
                    }
                }
            }
        }
        for e in extra {
            if !group.contains(&e) {
                group.push(e);
            }
        }
    }
    groups
}

/// Sorts `scored` (each group's cosine alone, and its index) in the order
/// the groups are taken back: the most damaging first. With int4 weights
/// (`by_bytes`) a take-back costs megabytes (an int4 table back to int8
/// rows doubles it), so there the order is by fidelity bought per byte the
/// take-back adds to the file (its weights' fallback form, else the
/// float original, less their quantized form), bytes counted in units
/// of an average group's quantized size: an int4 embedding table then
/// comes after int4 MatMul weights that damage as much (MiniLM-L3:
/// 0.17x -> 0.16x at the default tolerance). With int8 weights the
/// plain order is kept: by bytes it took more, smaller layers back
/// (the recogniser: 0.32x -> 0.35x, and slower).
pub(super) fn order_by_gain(
    scored: &mut [(f64, usize)],
    groups: &[Vec<usize>],
    patches: &[Patch],
    fallback: &[Option<Stored>],
    g: &crate::ir::Graph,
    by_bytes: bool,
) {
    let added: Vec<f64> = groups
        .iter()
        .map(|idxs| {
            idxs.iter()
                .map(|&i| {
                    let back = match &fallback[i] {
                        Some(f) => stored_bytes(&f.patch),
                        None => patches[i]
                            .remove_initializers
                            .iter()
                            .filter_map(|w| g.constant(w))
                            .map(tensor::stored_bytes)
                            .sum(),
                    };
                    back as f64 - stored_bytes(&patches[i]) as f64
                })
                .sum()
        })
        .collect();
    let unit =
        (patches.iter().map(stored_bytes).sum::<u64>() as f64 / groups.len() as f64).max(1.0);
    let gain = |(s, gi): &(f64, usize)| {
        let cost = if by_bytes {
            added[*gi].max(0.0) / unit
        } else {
            0.0
        };
        (1.0 - s) / (1.0 + cost)
    };
    scored.sort_by(|a, b| gain(b).total_cmp(&gain(a)));
}

/// How many of the most damaging groups (`scored`, most damaging first,
/// each with its cosine when quantized alone) the alone cosines predict
/// must be taken back for the result to reach `min_cosine`: the losses (1 -
/// cosine) of the groups left quantized add up, scaled so that all of them
/// add up to the full result's loss (`full`). At least 1 (the full result
/// missed); `scored.len()` where even that is predicted to miss. A guess
/// [`fewest_groups`] starts from: its checks decide.
pub(super) fn predicted_groups(scored: &[(f64, usize)], full: f64, min_cosine: f64) -> usize {
    let loss = |c: f64| if c.is_nan() { 1.0 } else { (1.0 - c).max(0.0) };
    let total: f64 = scored.iter().map(|&(c, _)| loss(c)).sum();
    if total <= 0.0 || loss(full) <= 0.0 {
        return 1.min(scored.len());
    }
    let scale = loss(full) / total;
    let mut left = total;
    for (k, &(c, _)) in scored.iter().enumerate() {
        if k > 0 && scale * left <= loss(min_cosine) {
            return k;
        }
        left -= loss(c);
    }
    scored.len()
}

/// The fewest of the most damaging groups (of `n_groups`, in the order they
/// are taken back) whose taking back passes `check`, and its report,
/// starting from `guess` ([`predicted_groups`]): the guess and one fewer
/// (or 1 and 2), then, until one passes, the next power of two past the
/// most that failed and twice it, then narrowing by thirds between the most
/// that failed (below the fewest that passed) and the fewest that passed.
/// Two counts a step, measured at once (one per core) where `parallel`,
/// else in order, stopping at the first that passes (the other decides
/// nothing): either way the same choice. Where the counts that pass and
/// fail are ordered (more taken back never fails where fewer passed), this
/// is the count checking each in turn would find. Where none passes, every
/// group and the report of all taken back. A good guess decides in one
/// step: PicoDet's layout detector (16 groups, 3 taken back; each check 8
/// samples of 800x608) took 3 steps from 1 (1 or 2, 4 or 8, then 3).
pub(super) fn fewest_groups(
    n_groups: usize,
    guess: usize,
    parallel: bool,
    progress: &crate::pass::Progress,
    check: &(dyn Fn(usize) -> Result<VerifyReport> + Sync),
) -> Result<(usize, VerifyReport)> {
    let guess = guess.clamp(1, n_groups.max(1));
    // Each count checked: whether it passed, and the report of each that
    // passed and of every group taken back.
    let mut seen: std::collections::BTreeMap<usize, bool> = Default::default();
    let mut reports: HashMap<usize, VerifyReport> = HashMap::new();
    // Two counts a step, one at a time or at once: the same choice either
    // way, wherever passing is not ordered too.
    let mut ks = vec![guess.saturating_sub(1).max(1), guess.max(2)];
    loop {
        ks.retain(|&k| (1..=n_groups).contains(&k) && !seen.contains_key(&k));
        ks.dedup();
        if ks.is_empty() {
            break;
        }
        progress.say(&format!(
            "checking with the {} most damaging layer groups taken back",
            ks.iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ));
        // Ascending: one at a time, a count past one that passed decides
        // nothing (it is above the fewest that pass, where the bounds
        // ignore it), so it is not checked.
        let rs: Vec<VerifyReport> = match parallel {
            true => candidates(&ks, true, |_, &k| check(k))?,
            false => {
                let mut rs = vec![];
                for &k in &ks {
                    let r = check(k)?;
                    let passed = r.status == Status::Passed;
                    rs.push(r);
                    if passed {
                        break;
                    }
                }
                rs
            }
        };
        for (&k, r) in ks.iter().zip(rs) {
            let passed = r.status == Status::Passed;
            seen.insert(k, passed);
            if passed || k == n_groups {
                reports.insert(k, r);
            }
        }
        // The fewest that passed, and the most that failed below it (a
        // count that failed above it is left: more taken back can fail
        // where fewer passed).
        let hi = seen.iter().find(|(_, &p)| p).map(|(&k, _)| k);
        let lo = seen
            .iter()
            .filter(|(&k, &p)| !p && hi.is_none_or(|h| k < h))
            .map(|(&k, _)| k)
            .next_back()
            .unwrap_or(0);
        ks = match hi {
            None if lo >= n_groups => break,
            // The next power of two past the most that failed, and twice
            // it: more taken back can fail where fewer passed (the
            // recogniser on random lines passes with 4, fails with 6,
            // passes with 12: doubling from 3 kept 9 in float), and the
            // counts tried are those of a search from 1.
            None => {
                let p = (lo + 1).next_power_of_two().min(n_groups);
                vec![p, (2 * p).min(n_groups)]
            }
            Some(h) if h <= lo + 1 => break,
            Some(h) if h > lo + 2 => {
                let third = ((h - lo) / 3).max(1);
                vec![lo + third, h - third]
            }
            Some(h) => vec![(lo + h) / 2],
        };
    }
    let k = seen.iter().find(|(_, &p)| p).map_or(n_groups, |(&k, _)| k);
    match reports.remove(&k) {
        Some(r) => Ok((k, r)),
        // Never checked with every group taken back: check it now.
        None => Ok((k, check(k)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{Status, VerifyReport};

    /// The guess: the losses of the groups left quantized, scaled to the
    /// full result's, within the tolerance's.
    #[test]
    fn predicted_groups_known_values() {
        // Losses 0.04, 0.02, 0.01, 0.01 (sum 0.08); the full result lost
        // 0.04: half of each. Within 0.01: 0.02 (two back) is too much, the
        // last two's 0.01 holds.
        let scored = [(0.96, 0), (0.98, 1), (0.99, 2), (0.99, 3)];
        assert_eq!(predicted_groups(&scored, 0.96, 0.99), 2);
        assert_eq!(predicted_groups(&scored, 0.96, 0.999), 4);
        // At least one: the full result missed.
        assert_eq!(predicted_groups(&scored, 0.96, 0.9), 1);
        // No loss measured alone (or none in the full result): start at 1.
        assert_eq!(predicted_groups(&[(1.0, 0), (1.0, 1)], 0.9, 0.99), 1);
        assert_eq!(predicted_groups(&scored, f64::NAN, 0.99), 4);
    }

    /// A check's report that passed or failed, and nothing else.
    fn report(pass: bool) -> VerifyReport {
        let mut r = VerifyReport::not_verified("test");
        r.status = if pass { Status::Passed } else { Status::Failed };
        r
    }

    /// From any guess, one or two candidates at a time, the search finds
    /// the fewest groups that pass where passing is ordered, or every
    /// group (and its report) where none does, one at a time checking no
    /// count two at once would not; a right guess decides in one step.
    #[test]
    fn fewest_groups_finds_the_fewest_that_pass_from_any_guess() {
        let progress = crate::pass::Progress::default();
        for n in 1..=20usize {
            for need in 1..=n + 1 {
                for guess in 1..=n {
                    let mut counts = vec![];
                    for parallel in [false, true] {
                        let checked = std::sync::Mutex::new(vec![]);
                        let (k, r) = fewest_groups(n, guess, parallel, &progress, &|k| {
                            checked.lock().unwrap().push(k);
                            Ok(report(k >= need))
                        })
                        .unwrap();
                        let checked = checked.into_inner().unwrap();
                        assert_eq!(k, need.min(n), "n {n} need {need} guess {guess}");
                        assert_eq!(r.status == Status::Passed, need <= n);
                        assert!(checked.iter().all(|&k| (1..=n).contains(&k)));
                        let mut once = checked.clone();
                        once.sort_unstable();
                        once.dedup();
                        assert_eq!(once.len(), checked.len(), "{checked:?}");
                        if guess == need && need > 1 {
                            assert_eq!(checked.len(), 2, "{checked:?}");
                        }
                        counts.push(once);
                    }
                    // One at a time, the counts two at once check, but
                    // those past one that passed.
                    assert!(counts[0].iter().all(|k| counts[1].contains(k)));
                }
            }
        }
    }

    /// Where passing is not ordered (more taken back fails where fewer
    /// passed), the counts tried are those of a search from 1, whatever
    /// the guess below them: the recogniser on random lines (passes with 4,
    /// fails with 6 to 11, passes from 12) keeps 4 in float from a guess of
    /// 3, where doubling from the 3 that failed kept 9; PP-OCRv6's (fails
    /// up to 8 and with 14, passes with 9 to 13 and 15, 16) keeps 9.
    #[test]
    fn fewest_groups_where_passing_is_not_ordered() {
        let progress = crate::pass::Progress::default();
        let cases: [(&[usize], usize, usize); 3] = [
            (&[4, 5, 12, 13, 14, 15, 16], 3, 4),
            (&[9, 10, 11, 12, 13, 15, 16], 1, 9),
            (&[9, 10, 11, 12, 13, 15, 16], 2, 9),
        ];
        for (passing, guess, want) in cases {
            for parallel in [false, true] {
                let (k, r) = fewest_groups(16, guess, parallel, &progress, &|k| {
                    Ok(report(passing.contains(&k)))
                })
                .unwrap();
                assert_eq!(
                    (k, r.status),
                    (want, Status::Passed),
                    "{passing:?} from {guess}"
                );
            }
        }
    }
}
