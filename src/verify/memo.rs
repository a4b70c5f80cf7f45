//! The memo of runs a [`super::Reference`] compares: `quant`'s
//! `sensitive=auto` checks the result it returns on verification's samples,
//! and verification finds that run here instead of planning and running the
//! same copy again. A run is known by a fingerprint of what ran (the
//! verification copy with its weights, and the samples). The memo also
//! holds the last copies of a model specialised to its samples
//! ([`super::specialise`]), which calibration and `sensitive=auto` both
//! make of a pass's input.

use std::sync::Arc;

use tract_onnx::prelude::Tensor;

use super::{tract, Ran};

/// The outputs of the last results that passed a [`super::Reference`]'s
/// comparison ([`RECENT_RUNS`] of them), keyed by a fingerprint (xxh3, 128
/// bits) of what ran: the verification copy with its weights, and the
/// samples. `quant`'s `sensitive=auto` checks the result it returns on
/// verification's samples (the last candidate that passes is the one it
/// keeps, or one of the last two where it checks two at once); the
/// pipeline's verification then finds that run here instead of planning
/// and running the same copy again. A fingerprint that differs in any byte
/// runs the model. It holds the last specialised copies too
/// ([`RunMemo::specialised`]). Cheap to clone: clones share the entries.
#[derive(Clone, Default)]
pub struct RunMemo(std::sync::Arc<std::sync::Mutex<Memo>>);

#[derive(Default)]
struct Memo {
    /// The latest runs remembered, oldest first.
    recent: std::collections::VecDeque<Remembered>,
    hits: usize,
    puts: u64,
    /// Whether a run put here is held back with its plan, pending
    /// ([`RunMemo::keeping_plans`]), and the last ones so held.
    keep_plans: bool,
    pending: Vec<Pending>,
    heads: usize,
    /// The last copies specialised to their samples
    /// ([`RunMemo::specialised`]), newest last.
    specialised: std::collections::VecDeque<(u128, Arc<Specialisation>)>,
}

/// A model specialised to its samples, with the notes of its making
/// ([`super::specialise`]).
pub(super) type Specialisation = (crate::ir::Model, Vec<String>);

/// The most specialised copies remembered: those of a pass's input that
/// calibration makes (the one-sample copy whose shapes decide whether
/// static QDQ pays, and its samples' copy), one of which `sensitive=auto`
/// specialises again.
const SPECIALISED: usize = 2;

/// The most runs held back with their plans at once: one per candidate a
/// search checks side by side (one per core, two here), and spares.
const MAX_PENDING: usize = 4;

/// The most passing runs remembered: one per candidate a search checks
/// side by side (two at once), where both pass and either may be the one
/// it returns (they finish in either order: PP-OCRv4's recogniser with
/// entropy calibration ran its result again in one run of two).
const RECENT_RUNS: usize = 2;

/// A passing run remembered: its key, its outputs, the seconds it took,
/// and its number among the runs remembered ([`RunMemo::puts`]).
struct Remembered {
    key: u128,
    ran: Ran,
    seconds: f64,
    put: u64,
}

/// A passing run held back with its plan until a reference on more
/// samples, this one's leading ones among them, takes both
/// ([`RunMemo::head`]): where the result passes there too, that reference
/// puts the run in the memo ([`super::Reference::lending_to`]).
struct Pending {
    key: u128,
    ran: Ran,
    runner: Arc<tract::Runner>,
}

/// While it lives, a run that passes is held back with its plan for a
/// reference on more samples to take ([`super::Reference::keeping_plans`]);
/// dropped, runs are put in the memo as they pass again.
pub struct KeepingPlans(RunMemo);

impl Drop for KeepingPlans {
    fn drop(&mut self) {
        if let Ok(mut memo) = self.0 .0.lock() {
            memo.keep_plans = false;
            memo.pending.clear();
        }
    }
}

impl std::fmt::Debug for RunMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RunMemo({} hits)", self.hits())
    }
}

impl RunMemo {
    /// How many runs the memo answered.
    pub fn hits(&self) -> usize {
        self.0.lock().map_or(0, |m| m.hits)
    }

    /// How many runs held back with their plans were taken
    /// ([`super::Reference::keeping_plans`]).
    pub fn heads(&self) -> usize {
        self.0.lock().map_or(0, |m| m.heads)
    }

    /// How many runs were remembered: a run remembered by a pass has a
    /// number ([`VerifyReport::reused_put`](super::VerifyReport)) within
    /// the counts that grew during the pass.
    pub fn puts(&self) -> u64 {
        self.0.lock().map_or(0, |m| m.puts)
    }

    /// The outputs remembered for `key`, the seconds their run took and
    /// their number among the runs remembered ([`RunMemo::puts`]), taken
    /// out (a comparison that passes puts them back).
    pub(super) fn take(&self, key: u128) -> Option<(Ran, f64, u64)> {
        let mut memo = self.0.lock().ok()?;
        let i = memo.recent.iter().position(|r| r.key == key)?;
        let r = memo.recent.remove(i)?;
        memo.hits += 1;
        Some((r.ran, r.seconds, r.put))
    }

    /// Remember `out` for `key`, run in `seconds`, in place of the oldest
    /// of the [`RECENT_RUNS`] remembered; held back with its plan `runner`
    /// instead where plans are kept.
    pub(super) fn put(
        &self,
        key: u128,
        out: Ran,
        seconds: f64,
        runner: Option<Arc<tract::Runner>>,
    ) {
        // Runs forgotten are freed once the lock is let go (their outputs
        // may be large; the other candidate's check waits on it).
        let mut forgotten = Vec::new();
        if let Ok(mut memo) = self.0.lock() {
            match runner.filter(|_| memo.keep_plans) {
                Some(runner) => {
                    // Candidates checked side by side each leave theirs.
                    if memo.pending.len() == MAX_PENDING {
                        memo.pending.remove(0);
                    }
                    memo.pending.push(Pending {
                        key,
                        ran: out,
                        runner,
                    })
                }
                None => {
                    memo.puts += 1;
                    let put = memo.puts;
                    if let Some(i) = memo.recent.iter().position(|r| r.key == key) {
                        forgotten.extend(memo.recent.remove(i));
                    }
                    if memo.recent.len() == RECENT_RUNS {
                        forgotten.extend(memo.recent.pop_front());
                    }
                    memo.recent.push_back(Remembered {
                        key,
                        ran: out,
                        seconds,
                        put,
                    });
                }
            }
        }
    }

    /// Forget every run remembered and held back, and every specialised
    /// copy: verification has taken what it reuses, and their outputs
    /// would stay through the writing of the result.
    pub fn clear(&self) {
        let forgotten = self.0.lock().map(|mut m| {
            (
                std::mem::take(&mut m.recent),
                std::mem::take(&mut m.pending),
                std::mem::take(&mut m.specialised),
            )
        });
        drop(forgotten);
    }

    /// Forget the specialised copies: they are of a pass's input, which
    /// the passes after it no longer see (they hold its weights, some
    /// computed by the passes before).
    pub fn forget_specialised(&self) {
        let forgotten = self
            .0
            .lock()
            .map(|mut m| std::mem::take(&mut m.specialised));
        drop(forgotten);
    }

    /// The copy specialised under `key` ([`specialisation_key`]), where one
    /// of the last [`SPECIALISED`] was.
    pub(super) fn specialised(&self, key: u128) -> Option<Arc<Specialisation>> {
        let memo = self.0.lock().ok()?;
        memo.specialised
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, s)| s.clone())
    }

    /// Remember `made`, specialised under `key`; the oldest of more than
    /// [`SPECIALISED`] is forgotten (outside the lock).
    pub(super) fn keep_specialised(&self, key: u128, made: Arc<Specialisation>) {
        let forgotten = self.0.lock().ok().and_then(|mut m| {
            m.specialised.retain(|(k, _)| *k != key);
            m.specialised.push_back((key, made));
            (m.specialised.len() > SPECIALISED)
                .then(|| m.specialised.pop_front())
                .flatten()
        });
        drop(forgotten);
    }

    /// The run held back for `key` and its plan, taken out.
    pub(super) fn head(&self, key: u128) -> Option<(Ran, Arc<tract::Runner>)> {
        let mut memo = self.0.lock().ok()?;
        let i = memo.pending.iter().position(|p| p.key == key)?;
        let p = memo.pending.remove(i);
        memo.heads += 1;
        Some((p.ran, p.runner))
    }

    /// Hold back each run that passes with its plan ([`Pending`]) while
    /// the guard lives.
    pub(crate) fn keeping_plans(&self) -> KeepingPlans {
        if let Ok(mut memo) = self.0.lock() {
            memo.keep_plans = true;
        }
        KeepingPlans(self.clone())
    }
}

/// `proto` into `h`: its initializers in the order of their names, each
/// one's length, then its bytes where `with_values` says so of its name
/// (hashed where they lie), then the rest of the model encoded.
pub(super) fn hash_model(
    h: &mut xxhash_rust::xxh3::Xxh3,
    proto: &crate::proto::ModelProto,
    with_values: impl Fn(&str) -> bool,
) {
    use prost::Message;
    let mut light = proto.clone(); // weights are shared `Bytes`: not copied
    if let Some(g) = light.graph.as_mut() {
        g.initializer.sort_by(|a, b| a.name().cmp(b.name()));
        h.update(&(g.initializer.len() as u64).to_le_bytes());
        for t in &mut g.initializer {
            // Its length first: no two splits of the bytes hash alike.
            let raw = t.raw_data.take().unwrap_or_default();
            h.update(&(raw.len() as u64).to_le_bytes());
            if with_values(t.name()) {
                h.update(&raw);
            }
        }
    }
    h.update(&light.encode_to_vec());
}

/// What identifies a run: the model (its large initializers' bytes hashed
/// where they lie, the rest encoded) and the samples. Initializers count
/// in the order of their names, not the file's: the copies of one result
/// that `sensitive=auto` checked and that verification runs list the
/// constants an If's inlined branch brings in node-index order, which the
/// graphs' histories of removed nodes make differ (silero's result ran
/// twice).
pub(super) fn fingerprint(proto: &crate::proto::ModelProto, samples: &[Vec<Tensor>]) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    hash_model(&mut h, proto, |_| true);
    hash_samples(&mut h, samples);
    h.digest128()
}

/// `samples` into `h`: their count, each one's count of tensors, and each
/// tensor (type, shape and values).
fn hash_samples(h: &mut xxhash_rust::xxh3::Xxh3, samples: &[Vec<Tensor>]) {
    use std::hash::Hash;
    h.update(&(samples.len() as u64).to_le_bytes());
    for s in samples {
        h.update(&(s.len() as u64).to_le_bytes());
        for t in s {
            t.hash(h);
        }
    }
}

/// What identifies a specialisation ([`super::specialise`]): the model
/// (every initializer's bytes), the names of its inputs, which are fixed,
/// the first sample (the fixed inputs' values) and the samples run (the
/// shapes the copy is specialised to are computed on them).
pub(super) fn specialisation_key(
    model: &crate::ir::Model,
    names: &[&str],
    sample: &[Tensor],
    fixed: &[usize],
    run_samples: &[Vec<Tensor>],
) -> u128 {
    use std::hash::Hash;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    hash_model(&mut h, &model.to_proto(), |_| true);
    names.hash(&mut h);
    fixed.hash(&mut h);
    for &i in fixed {
        sample.get(i).hash(&mut h);
    }
    hash_samples(&mut h, run_samples);
    h.digest128()
}

#[cfg(test)]
mod tests {
    use super::{Ran, RunMemo, RECENT_RUNS};

    fn ran() -> Ran {
        Ran {
            outputs: vec![],
            half_as_float: false,
        }
    }

    /// The last [`RECENT_RUNS`] passing runs are remembered, each found by
    /// its key once (with its time and number), whichever was put last;
    /// one more forgets the oldest; a key put again is one entry.
    #[test]
    fn the_last_runs_are_remembered_each_by_its_key() {
        assert_eq!(RECENT_RUNS, 2);
        let memo = RunMemo::default();
        memo.put(1, ran(), 0.5, None);
        memo.put(2, ran(), 0.25, None);
        let (_, seconds, put) = memo.take(1).expect("the older of two");
        assert_eq!((seconds, put), (0.5, 1));
        assert!(memo.take(1).is_none(), "taken once");
        memo.put(3, ran(), 0.125, None);
        memo.put(4, ran(), 1.0, None);
        assert!(memo.take(2).is_none(), "forgotten: the oldest of three");
        assert_eq!(memo.take(3).map(|r| r.2), Some(3));
        assert_eq!(memo.take(4).map(|r| r.2), Some(4));
        memo.put(5, ran(), 1.0, None);
        memo.put(5, ran(), 2.0, None);
        memo.put(6, ran(), 1.0, None);
        assert_eq!(memo.take(5).map(|r| (r.1, r.2)), Some((2.0, 6)));
        assert_eq!((memo.hits(), memo.puts()), (4, 7));
        // Cleared once verification is done: nothing is left.
        memo.clear();
        assert!(memo.take(6).is_none());
    }
}
