//! Comparing one output of the original with the same output of the result.

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutputMetrics {
    pub name: String,
    pub max_abs: f64,
    pub mean_abs: f64,
    /// max |a - b| / |a| over elements where |a| > 1e-6.
    pub max_rel: f64,
    /// The lowest cosine of one sample's values, where each sample holds
    /// more than [`FEW_VALUES`]; else the lowest of the cosine of all
    /// samples' values together (a sample's one or two probabilities have
    /// no direction) and each sample's against the output's typical size
    /// ([`Accumulator::typical_cosines`]).
    pub cosine: f64,
    /// Fraction of rows whose argmax agrees, where the output is a score vector.
    pub top1: Option<f64>,
    pub passed: bool,
    /// Passed where the original's values are nearly zero on every sample
    /// (at most 1e-3): too small for the comparison to show anything. Set
    /// by the comparison, which has the original's values.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub vacuous: bool,
}

/// The outputs whose rows along their last axis are class scores, where
/// the share of rows whose top-1 agrees is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreRows {
    /// Of `[batch, classes]` outputs only: logits of a classifier's head
    /// reshaped to them, or a global pooling's channels.
    Rank2,
    /// A matrix product's output (and its bias), not reshaped: rows along
    /// the last axis at any rank from 2 (a classifier's `[batch, classes]`,
    /// a recogniser's or a language model's `[batch, positions, classes]`,
    /// time-major CTC logits `[positions, batch, classes]`).
    Logits,
    /// A softmax over this axis (negative: from the last): at any rank
    /// where it is the last (a masked language model's or a recogniser's
    /// scores per position).
    Softmax(i64),
}

/// Running comparison of one output across samples.
#[derive(Debug, Clone)]
pub struct Accumulator {
    name: String,
    max_abs: f64,
    sum_abs: f64,
    count: usize,
    max_rel: f64,
    dot: f64,
    na: f64,
    nb: f64,
    top1_hits: usize,
    top1_rows: usize,
    /// Per sample: its cosine, its largest difference and the sum of its
    /// squared differences (infinite where the result is not finite and
    /// the original is).
    samples: Vec<(f64, f64, f64)>,
    /// The fewest values a sample held.
    fewest: usize,
    /// Where rows along the last axis are class scores, whose top-1 means
    /// something; none for integer outputs (selected indices, labels).
    scores: Option<ScoreRows>,
    within: bool,
    /// Values that are NaN or infinite in the original.
    pub nonfinite: usize,
    /// The largest |value| of the original (NaNs left out).
    largest: f64,
    /// Per position of a sample (up to [`FEW_VALUES`]), over the samples:
    /// sums of the original's values, the result's, their products and
    /// squares, and how many (finite pairs only), for how the result
    /// follows the original's variation from sample to sample.
    by_position: Vec<[f64; 6]>,
}

impl Accumulator {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            max_abs: 0.0,
            sum_abs: 0.0,
            count: 0,
            max_rel: 0.0,
            dot: 0.0,
            na: 0.0,
            nb: 0.0,
            top1_hits: 0,
            top1_rows: 0,
            samples: Vec::new(),
            fewest: usize::MAX,
            scores: None,
            within: true,
            nonfinite: 0,
            largest: 0.0,
            by_position: Vec::new(),
        }
    }

    /// An output of integers (indices a NonMaxSuppression selected, class
    /// labels): compared element by element, with no top-1.
    pub fn integer(mut self) -> Self {
        self.scores = None;
        self
    }

    /// Where rows are class scores ([`ScoreRows`]); `None`: no top-1 (an
    /// LSTM's states, bits read by their sign, independent probabilities),
    /// as where not said.
    pub fn score_rows(mut self, rows: Option<ScoreRows>) -> Self {
        self.scores = rows;
        self
    }

    /// Add one sample: `a` from the original, `b` from the result, with the
    /// output's shape (for top-1 over the last axis). Returns the sample's
    /// own cosine (0 where the result is not finite and the original is).
    /// Values of either float type are compared in float64 (an output's
    /// float32 values as they are, where converting them to a float64 copy
    /// first cost each check two copies of every output).
    pub fn add<T: Copy + PartialOrd + Into<f64>>(
        &mut self,
        a: &[T],
        b: &[T],
        shape: &[usize],
        atol: f64,
        rtol: f64,
    ) -> f64 {
        let (mut dot, mut na, mut nb, mut lost) = (0.0, 0.0, 0.0, false);
        let mut squared = 0.0;
        let mut sample_max = 0.0f64;
        for (x, y) in a.iter().zip(b) {
            let (x, y): (f64, f64) = ((*x).into(), (*y).into());
            if !x.is_finite() {
                self.nonfinite += 1;
            }
            if !x.is_nan() {
                self.largest = self.largest.max(x.abs());
            }
            let d = (x - y).abs();
            let d = if x.is_nan() && y.is_nan() || x == y {
                0.0
            } else if d.is_nan() {
                f64::INFINITY
            } else {
                d
            };
            sample_max = sample_max.max(d);
            self.sum_abs += d;
            if x.abs() > 1e-6 {
                self.max_rel = self.max_rel.max(d / x.abs());
            }
            if d > atol + rtol * x.abs() {
                self.within = false;
            }
            if x.is_finite() && y.is_finite() {
                dot += x * y;
                na += x * x;
                nb += y * y;
                squared += (x - y) * (x - y);
            } else if x.is_finite() {
                lost = true;
            }
        }
        if a.len() <= FEW_VALUES {
            if self.by_position.len() < a.len() {
                self.by_position.resize(a.len(), [0.0; 6]);
            }
            for ((x, y), p) in a.iter().zip(b).zip(&mut self.by_position) {
                let (x, y): (f64, f64) = ((*x).into(), (*y).into());
                if x.is_finite() && y.is_finite() {
                    let add = [x, y, x * y, x * x, y * y, 1.0];
                    p.iter_mut().zip(add).for_each(|(s, v)| *s += v);
                }
            }
        }
        self.max_abs = self.max_abs.max(sample_max);
        self.dot += dot;
        self.na += na;
        self.nb += nb;
        self.count += a.len();
        self.fewest = self.fewest.min(a.len());
        let classes = shape.last().copied().unwrap_or(0);
        // Top-1 only where the output holds score vectors; rows whose
        // largest score the original ties (a constant output) have no top-1.
        let rank_fits = match self.scores {
            Some(ScoreRows::Rank2) => shape.len() == 2,
            Some(ScoreRows::Logits) => shape.len() >= 2,
            Some(ScoreRows::Softmax(axis)) => {
                shape.len() >= 2 && (axis == -1 || axis == shape.len() as i64 - 1)
            }
            None => false,
        };
        if rank_fits && classes >= 2 && a.len() == b.len() && !a.is_empty() {
            for (ra, rb) in a.chunks(classes).zip(b.chunks(classes)) {
                let best = argmax(ra);
                if ra.iter().filter(|&&x| x == ra[best]).count() > 1 {
                    continue;
                }
                self.top1_rows += 1;
                if best == argmax(rb) {
                    self.top1_hits += 1;
                }
            }
        }
        let cosine = if lost { 0.0 } else { cosine_of(dot, na, nb) };
        let squared = if lost { f64::INFINITY } else { squared };
        self.samples.push((cosine, sample_max, squared));
        cosine
    }

    /// The samples (1-based, with their cosine and largest error) whose
    /// cosine misses `min_cosine` and that pass on their largest error
    /// being within `atol` alone: values too small for a direction to mean
    /// anything; where samples hold at most [`FEW_VALUES`] values, by
    /// their [`Accumulator::typical_cosines`].
    pub fn passed_on_atol_alone(&self, min_cosine: f64, atol: f64) -> Vec<(usize, f64, f64)> {
        if self.samples.is_empty() || !atol.is_finite() {
            return Vec::new();
        }
        let cosines = self.sample_cosines();
        self.samples
            .iter()
            .zip(cosines)
            .enumerate()
            .filter(|(_, (&(_, max, _), c))| *c < min_cosine && max <= atol)
            .map(|(i, (&(_, max, _), c))| (i + 1, c, max))
            .collect()
    }

    /// Where samples hold at most [`FEW_VALUES`] values (compared by the
    /// cosine of all of them together, which the values' common level can
    /// dominate: a quality score near 4 on every sample): how the result
    /// follows the original's variation from sample to sample, the
    /// correlation of both's deviations from their means at each position,
    /// and the spread (standard deviation) of the original's values around
    /// theirs. `None` with fewer than 3 samples, or where the original
    /// does not vary.
    pub fn follows_variation(&self) -> Option<(f64, f64)> {
        if self.fewest > FEW_VALUES || self.samples.len() < 3 {
            return None;
        }
        let (mut cov, mut va, mut vb, mut n) = (0.0, 0.0, 0.0, 0.0);
        for &[sa, sb, sab, saa, sbb, k] in &self.by_position {
            if k < 2.0 {
                continue;
            }
            cov += sab - sa * sb / k;
            va += saa - sa * sa / k;
            vb += sbb - sb * sb / k;
            n += k;
        }
        if n == 0.0 || va <= 1e-12 * n {
            return None;
        }
        let correlation = if vb > 0.0 {
            cov / (va * vb).sqrt()
        } else {
            0.0
        };
        Some((correlation, (va / n).sqrt()))
    }

    /// The largest |value| of the original over the samples added (NaNs
    /// left out); 0 before any.
    pub fn largest_original(&self) -> f64 {
        self.largest
    }

    /// Each sample's own cosine, in the order added; where samples hold at
    /// most [`FEW_VALUES`] values, each one's [`Accumulator::typical_cosines`].
    pub fn sample_cosines(&self) -> Vec<f64> {
        if self.fewest <= FEW_VALUES {
            return self.typical_cosines();
        }
        self.samples.iter().map(|s| s.0).collect()
    }

    /// For each sample, the cosine its differences would give a vector of
    /// the output's typical size (the root mean square of the original's
    /// norm over the samples): 1 - |a - b|^2 / (2 * mean |a|^2), which is
    /// the cosine of `a` and `a + e` for a small `e` at right angles to it.
    /// The cosine of one value is 1 whatever the result computes, and the
    /// cosine of all samples together hides a sample far off among many
    /// (PLCMOS's quality score 1.67 computed as 2.18 on one of three real
    /// recordings: 0.9926 together, 0.97 this way); measured against the
    /// output's typical size, not the sample's own, a value near zero on
    /// one sample is not judged by its direction either.
    pub fn typical_cosines(&self) -> Vec<f64> {
        let mean_square = self.na / self.samples.len().max(1) as f64;
        self.samples
            .iter()
            .map(|&(_, _, squared)| {
                if squared == 0.0 {
                    1.0
                } else if mean_square == 0.0 || !squared.is_finite() {
                    0.0
                } else {
                    (1.0 - squared / (2.0 * mean_square)).max(-1.0)
                }
            })
            .collect()
    }

    /// Elements compared so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The comparison over every sample added. The cosine must reach
    /// `min_cosine` on each sample alone, not only over all of them (a
    /// result far off on images in [0, 1) passed pooled with a normal-noise
    /// sample a hundred times larger: 0.9946 over both, 0.9526 on the one),
    /// unless that sample's differences are all within `atol` (near-zero
    /// outputs have a meaningless direction); where samples hold at most
    /// [`FEW_VALUES`] values each, over all of them, and each sample's
    /// [`Accumulator::typical_cosines`] too (the lowest of all is the
    /// cosine reported).
    pub fn finish(&self, min_cosine: f64, atol: f64) -> OutputMetrics {
        let within_atol = |max: f64| atol.is_finite() && max <= atol;
        let per_sample = !self.samples.is_empty() && self.fewest > FEW_VALUES;
        let (cosine, cosine_ok) = if per_sample {
            let lowest = self.samples.iter().map(|s| s.0).fold(1.0f64, f64::min);
            let ok = self
                .samples
                .iter()
                .all(|&(c, max, _)| c >= min_cosine || within_atol(max));
            (lowest, ok)
        } else {
            let c = cosine_of(self.dot, self.na, self.nb);
            let typical = self.typical_cosines();
            let lowest = typical.iter().copied().fold(c, f64::min);
            let each = typical
                .iter()
                .zip(&self.samples)
                .all(|(&t, &(_, max, _))| t >= min_cosine || within_atol(max));
            (
                lowest,
                (c >= min_cosine || within_atol(self.max_abs)) && each,
            )
        };
        let top1 = (self.top1_rows > 0).then(|| self.top1_hits as f64 / self.top1_rows as f64);
        OutputMetrics {
            name: self.name.clone(),
            max_abs: self.max_abs,
            mean_abs: if self.count == 0 {
                0.0
            } else {
                self.sum_abs / self.count as f64
            },
            max_rel: self.max_rel,
            cosine,
            top1,
            // Element-wise tolerance must hold; the cosine must too.
            passed: self.within && cosine_ok,
            vacuous: false,
        }
    }
}

/// Samples of at most this many values of an output are compared by their
/// cosine together, not each alone: the cosine of one probability is 1
/// whatever the result computes within its sign.
pub const FEW_VALUES: usize = 8;

fn argmax<T: Copy + PartialOrd>(v: &[T]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// The cosine from a dot product and the two squared norms: 1 where both
/// vectors are zero, 0 where one is.
fn cosine_of(dot: f64, na: f64, nb: f64) -> f64 {
    if na == 0.0 && nb == 0.0 {
        1.0
    } else if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A score near 4 on every sample, compared by the cosine of all
    /// samples together: an error as large as the scores' spread leaves
    /// that cosine near 1, and the correlation of the deviations shows it.
    #[test]
    fn few_values_a_sample_show_how_the_result_follows_their_variation() {
        let run = |pairs: &[(f64, f64)]| {
            let mut acc = Accumulator::new("mos");
            for &(a, b) in pairs {
                acc.add(&[a], &[b], &[1], f64::INFINITY, f64::INFINITY);
            }
            acc
        };
        let orig = [4.0, 4.2, 3.9, 4.3, 4.1, 3.8];
        // Off by as much as the spread, in no relation to it.
        let off = [0.2, -0.2, 0.15, -0.25, 0.0, 0.2];
        let acc = run(&orig
            .iter()
            .zip(off)
            .map(|(&a, d)| (a, a + d))
            .collect::<Vec<_>>());
        assert!(acc.finish(0.99, f64::INFINITY).cosine > 0.99);
        let (r, spread) = acc.follows_variation().unwrap();
        assert!(r < 0.5, "{r}");
        // The spread of 4.0, 4.2, 3.9, 4.3, 4.1, 3.8 around 4.05.
        assert!((spread - 0.1708).abs() < 1e-3, "{spread}");
        // A result that follows the variation closely.
        let close = run(&orig
            .iter()
            .map(|&a| (a, a * 1.01 + 0.01))
            .collect::<Vec<_>>());
        assert!(close.follows_variation().unwrap().0 > 0.999);
        // An original that does not vary, too few samples, or samples of
        // many values: nothing to say.
        assert!(run(&[(4.0, 4.1), (4.0, 3.9), (4.0, 4.0)])
            .follows_variation()
            .is_none());
        assert!(run(&[(4.0, 4.1), (4.2, 3.9)]).follows_variation().is_none());
        let mut many = Accumulator::new("y");
        for _ in 0..3 {
            many.add(&[1.0; 16], &[1.0; 16], &[16], 1.0, 1.0);
        }
        assert!(many.follows_variation().is_none());
    }

    /// Samples of one value each: a sample far off fails the comparison
    /// though the cosine of all of them together passes; differences small
    /// against the output's typical size pass, on a sample near zero too.
    #[test]
    fn few_values_a_sample_are_each_judged_against_the_outputs_typical_size() {
        let finish = |pairs: &[(f64, f64)]| {
            let mut acc = Accumulator::new("score");
            for &(a, b) in pairs {
                acc.add(&[a], &[b], &[1], 1e-4, f64::INFINITY);
            }
            (cosine_of(acc.dot, acc.na, acc.nb), acc.finish(0.99, 1e-4))
        };
        // PLCMOS on three real recordings: 1.67 computed as 2.18.
        let (together, m) = finish(&[(1.67, 2.18), (2.4, 2.4), (2.9, 2.9)]);
        assert!(together > 0.99, "{together}");
        assert!(!m.passed);
        // mean square (1.67^2 + 2.4^2 + 2.9^2) / 3 = 5.654; 0.51^2 = 0.2601
        assert!(
            (m.cosine - (1.0 - 0.2601 / (2.0 * 5.654))).abs() < 1e-3,
            "{}",
            m.cosine
        );
        // Small differences pass, the one on a value near zero too (its own
        // direction would be meaningless; 0.01 against a typical 2.4).
        let (_, m) = finish(&[(0.001, 0.011), (2.4, 2.41), (2.9, 2.89)]);
        assert!(m.passed && m.cosine > 0.9999, "{}", m.cosine);
        // Within atol: passes whatever the size.
        let (_, m) = finish(&[(0.0, 5e-5), (0.0, 0.0)]);
        assert!(m.passed);
        // A result that is not finite where the original is.
        let (_, m) = finish(&[(1.0, f64::NAN), (1.0, 1.0)]);
        assert!(!m.passed && m.cosine == 0.0);
    }

    #[test]
    fn each_sample_returns_its_own_cosine() {
        let cosine = |a: &[f64], b: &[f64]| Accumulator::new("y").add(a, b, &[], 0.0, 0.0);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(cosine(&[0.0, 0.0], &[0.0, 0.0]), 1.0);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 0.0]), 0.0);
        // A result that is not finite where the original is: nothing alike.
        assert_eq!(cosine(&[1.0, 2.0], &[1.0, f64::NAN]), 0.0);
        // Per sample, while the accumulator sums over them.
        let mut acc = Accumulator::new("y");
        assert_eq!(acc.add(&[1.0, 0.0], &[0.0, 1.0], &[], 0.0, 0.0), 0.0);
        assert!((acc.add(&[1.0, 0.0], &[1.0, 0.0], &[], 0.0, 0.0) - 1.0).abs() < 1e-12);
        assert!((cosine_of(acc.dot, acc.na, acc.nb) - 0.5).abs() < 1e-12);
        // Samples of two values: the first, at right angles, is as far off
        // as the output's typical size (1 - 2 / (2 * 1)).
        assert_eq!(acc.finish(0.0, 1.0).cosine, 0.0);
    }

    #[test]
    fn samples_that_pass_on_absolute_error_alone_are_named() {
        // Sample 1: large values, cosine 0.999..; sample 2: tiny values at
        // right angles, within atol.
        let big: Vec<f64> = (0..16).map(|i| i as f64).collect();
        let near: Vec<f64> = big.iter().map(|v| v + 0.01).collect();
        let tiny: Vec<f64> = (0..16)
            .map(|i| if i % 2 == 0 { 1e-6 } else { 0.0 })
            .collect();
        let other: Vec<f64> = (0..16)
            .map(|i| if i % 2 == 1 { 1e-6 } else { 0.0 })
            .collect();
        let mut acc = Accumulator::new("y");
        acc.add(&big, &near, &[16], 1e-4, f64::INFINITY);
        acc.add(&tiny, &other, &[16], 1e-4, f64::INFINITY);
        let m = acc.finish(0.99, 1e-4);
        // Passed: one sample on its cosine, the other on its own largest
        // error, though the largest of all (0.01) is over atol.
        assert!(m.passed && m.cosine == 0.0 && m.max_abs > 1e-4, "{m:?}");
        assert_eq!(acc.passed_on_atol_alone(0.99, 1e-4), [(2, 0.0, 1e-6)]);

        // Where no sample relies on atol, none is named.
        assert!(acc.passed_on_atol_alone(0.0, 1e-4).is_empty());
        assert_eq!(acc.largest_original(), 15.0);
    }

    #[test]
    fn identical_outputs_are_exact() {
        let mut acc = Accumulator::new("y").score_rows(Some(ScoreRows::Rank2));
        acc.add(
            &[1.0, -2.0, 3.0, 0.5],
            &[1.0, -2.0, 3.0, 0.5],
            &[2, 2],
            0.0,
            0.0,
        );
        let m = acc.finish(0.9999, 0.0);
        assert_eq!((m.max_abs, m.mean_abs, m.max_rel), (0.0, 0.0, 0.0));
        assert!((m.cosine - 1.0).abs() < 1e-12);
        assert_eq!(m.top1, Some(1.0));
        assert!(m.passed);
    }

    /// float32 values are compared as their float64 conversions would be,
    /// bit for bit: errors, cosine, top-1 (ties included), values that are
    /// not finite, and the few-values path.
    #[test]
    fn float32_values_compare_as_their_float64_conversions() {
        let a: Vec<f32> = vec![0.1, 0.9, 0.5, 0.5, f32::NAN, -3.25, 1e-7, 7.0];
        let b: Vec<f32> = vec![0.2, 0.8, 0.9, 0.1, f32::NAN, -3.0, 2e-7, f32::INFINITY];
        let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        for (shape, n) in [(&[4, 2][..], 8), (&[2, 2][..], 4), (&[3][..], 3)] {
            let mut narrow = Accumulator::new("y").score_rows(Some(ScoreRows::Logits));
            let mut exact = narrow.clone();
            let c32 = narrow.add(&a[..n], &b[..n], shape, 1e-3, 0.1);
            let c64 = exact.add(&wide(&a[..n]), &wide(&b[..n]), shape, 1e-3, 0.1);
            assert_eq!(c32.to_bits(), c64.to_bits(), "{shape:?}");
            assert_eq!(
                narrow.finish(0.99, 1e-3),
                exact.finish(0.99, 1e-3),
                "{shape:?}"
            );
        }
    }

    #[test]
    fn integer_outputs_have_no_top1() {
        let mut acc = Accumulator::new("selected").integer();
        acc.add(&[0.0, 0.0, 7.0], &[0.0, 0.0, 7.0], &[1, 3], 0.0, 0.0);
        let m = acc.finish(0.99, 0.0);
        assert_eq!(m.top1, None);
        assert!(m.passed);
    }

    /// Rows whose largest score the original ties have no top-1; a
    /// softmax's scores per position and a matrix product's logits count
    /// at any rank, logits reshaped at rank 2 only, and other outputs not
    /// at all.
    #[test]
    fn top1_counts_rows_of_class_scores_with_one_best() {
        let rows = |kind: Option<ScoreRows>, shape: &[usize], a: &[f64], b: &[f64]| {
            let mut acc = Accumulator::new("y").score_rows(kind);
            acc.add(a, b, shape, 0.0, f64::INFINITY);
            acc.finish(0.0, 0.0).top1
        };
        let (a, b) = ([0.1, 0.9, 0.5, 0.5], [0.2, 0.8, 0.9, 0.1]);
        // The second row ties: only the first is counted.
        assert_eq!(rows(Some(ScoreRows::Rank2), &[2, 2], &a, &b), Some(1.0));
        let (a, b) = ([0.1, 0.9, 0.6, 0.4], [0.2, 0.8, 0.3, 0.7]);
        assert_eq!(rows(Some(ScoreRows::Rank2), &[2, 2], &a, &b), Some(0.5));
        assert_eq!(rows(Some(ScoreRows::Rank2), &[1, 2, 2], &a, &b), None);
        // Logits at rank 3 (time-major CTC logits too): rows along the last axis.
        assert_eq!(rows(Some(ScoreRows::Logits), &[2, 2], &a, &b), Some(0.5));
        assert_eq!(rows(Some(ScoreRows::Logits), &[1, 2, 2], &a, &b), Some(0.5));
        assert_eq!(
            rows(Some(ScoreRows::Softmax(-1)), &[1, 2, 2], &a, &b),
            Some(0.5)
        );
        assert_eq!(
            rows(Some(ScoreRows::Softmax(2)), &[1, 2, 2], &a, &b),
            Some(0.5)
        );
        assert_eq!(rows(Some(ScoreRows::Softmax(1)), &[1, 2, 2], &a, &b), None);
        assert_eq!(rows(None, &[2, 2], &a, &b), None);
        // Every row tied: no top-1 at all, rather than 100%.
        assert_eq!(
            rows(Some(ScoreRows::Rank2), &[1, 3], &[1.0; 3], &[1.0; 3]),
            None
        );
    }

    #[test]
    fn known_differences() {
        let mut acc = Accumulator::new("y").score_rows(Some(ScoreRows::Rank2));
        // a = [1, 0], b = [0, 1]: orthogonal, max_abs 1, mean_abs 1, top-1 disagrees.
        acc.add(&[1.0, 0.0], &[0.0, 1.0], &[1, 2], 1e-4, 1e-3);
        let m = acc.finish(0.99, 1e-4);
        assert_eq!(m.max_abs, 1.0);
        assert_eq!(m.mean_abs, 1.0);
        assert_eq!(m.max_rel, 1.0);
        assert_eq!(m.cosine, 0.0);
        assert_eq!(m.top1, Some(0.0));
        assert!(!m.passed);
    }

    #[test]
    fn tolerance_is_elementwise() {
        let mut acc = Accumulator::new("y");
        acc.add(&[100.0, 1.0], &[100.05, 1.0], &[2], 1e-4, 1e-3);
        let m = acc.finish(0.99999, 1e-4);
        assert!(m.passed, "0.05 on 100 is within rtol 1e-3");
        assert!((m.max_rel - 5e-4).abs() < 1e-9);
        let mut acc = Accumulator::new("y");
        acc.add(&[1.0], &[1.01], &[1], 1e-4, 1e-3);
        assert!(!acc.finish(0.0, 1e-4).passed);
    }

    /// The cosine is each sample's: a sample far off is not hidden by a
    /// larger one that matches (pooled, this pair measures 0.9999).
    #[test]
    fn every_sample_must_reach_the_cosine_on_its_own() {
        let a1: Vec<f64> = (0..16).map(|i| i as f64).collect();
        let b1: Vec<f64> = a1.iter().rev().copied().collect();
        let a2: Vec<f64> = a1.iter().map(|v| 100.0 * v).collect();
        let mut acc = Accumulator::new("y");
        let c1 = acc.add(&a1, &b1, &[16], f64::INFINITY, f64::INFINITY);
        let c2 = acc.add(&a2, &a2, &[16], f64::INFINITY, f64::INFINITY);
        assert!(c1 < 0.99 && c2 > 0.999999, "{c1} {c2}");
        assert!(cosine_of(acc.dot, acc.na, acc.nb) > 0.9999, "pooled");
        let m = acc.finish(0.99, 1e-4);
        assert_eq!(m.cosine, c1, "the lowest sample's");
        assert!(!m.passed);
        // A sample whose differences are all within atol passes whatever
        // its direction (near-zero values).
        let mut acc = Accumulator::new("y");
        acc.add(
            &[1e-6; 16],
            &[-1e-6; 16],
            &[16],
            f64::INFINITY,
            f64::INFINITY,
        );
        acc.add(&a2, &a2, &[16], f64::INFINITY, f64::INFINITY);
        assert!(acc.finish(0.99, 1e-4).passed);
    }

    /// Samples of at most FEW_VALUES values are compared together: one
    /// probability per sample has no direction of its own.
    #[test]
    fn few_values_a_sample_are_compared_together() {
        let mut acc = Accumulator::new("p");
        // Same signs: each sample's cosine is 1, together 0.96.
        acc.add(&[0.9], &[0.5], &[1, 1], f64::INFINITY, f64::INFINITY);
        acc.add(&[0.1], &[0.5], &[1, 1], f64::INFINITY, f64::INFINITY);
        let m = acc.finish(0.99, 1e-4);
        assert!((m.cosine - 0.5 / (0.82f64.sqrt() * 0.5f64.sqrt())).abs() < 1e-12);
        assert!(!m.passed);
    }

    #[test]
    fn nan_in_result_fails() {
        let mut acc = Accumulator::new("y");
        acc.add(&[1.0], &[f64::NAN], &[1], 1.0, 1.0);
        assert!(!acc.finish(0.0, 1e-4).passed);
    }
}
