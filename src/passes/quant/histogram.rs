//! Histograms of activation values on power-of-two grids, which merge
//! exactly.
//!
//! Bin `j` of the grid of exponent `e` holds the values in
//! `[j * 2^e, (j + 1) * 2^e)`. The grids of one exponent line up, and each
//! bin of exponent `e + 1` is exactly two of exponent `e`: a histogram moves
//! to a coarser grid by adding neighbouring bins, with no approximation. So
//! the histograms of several samples, each binned over its own range, merge
//! into one over their union that is what binning every value on the
//! union's grid gives, whatever order they merge in: calibration keeps one
//! histogram per value however many samples it runs, instead of one per
//! value and sample merged at the end (8 kB a value a sample: PP-OCRv4's
//! detector peaked at 147 MB calibrated on 256 random samples, 56 MB now).
//!
//! A histogram spans at most [`BINS`] bins, and at least half as many over
//! the range of its values (the exponent is the least whose grid holds that
//! range in `BINS` bins). A histogram of one value (a constant activation)
//! is one bin on a grid finer than any it merges with (2^-52 of the value,
//! or 2^-1000 for 0): it never coarsens the grid of a merge.

/// The most bins a histogram spans.
pub const BINS: usize = 4096;
// `Histogram::of` masks bin numbers with `BINS - 1`.
const _: () = assert!(BINS.is_power_of_two());

/// Counts of values on the grid of exponent `exp`; `counts[k]` is bin
/// `first + k`, the first and last of them not zero (no counts: empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    exp: i32,
    first: i64,
    counts: Vec<u64>,
}

/// `x >> s` (floor division by `2^s`) for any `s`.
fn shr(x: i64, s: i32) -> i64 {
    x >> s.clamp(0, 63)
}

/// The bin of `x` on the grid of exponent `e` (exact: scaling by a power
/// of two rounds nothing short of the ends of f64's range).
fn bin_of(x: f64, e: i32) -> i64 {
    (x * (-e as f64).exp2()).floor() as i64
}

/// The least exponent whose grid holds `[lo, hi]` in at most `BINS` bins.
fn exponent_for(lo: f64, hi: f64) -> i32 {
    let span = hi - lo;
    // Below span / (BINS + 1) a grid's bins over the range outnumber BINS:
    // the least exponent is at most one or two past that.
    let mut e = if span > 0.0 {
        (span / (BINS + 1) as f64).log2().floor() as i32
    } else {
        // One value: any grid holds it in one bin; the finest whose bin
        // numbers stay exact in f64, so that it never coarsens another's.
        let m = lo.abs().max(hi.abs());
        if m > 0.0 {
            m.log2().floor() as i32 - 52
        } else {
            -1000
        }
    };
    e = e.clamp(-1000, 1000);
    while bin_of(hi, e) - bin_of(lo, e) >= BINS as i64 {
        e += 1;
    }
    e
}

/// Values and what one pass over them found: the least and greatest
/// finite value (infinite, the wrong way round, where there is none), and
/// whether every value is finite.
pub struct Scan<'a> {
    values: &'a [f32],
    pub lo: f32,
    pub hi: f32,
    finite: bool,
}

impl<'a> Scan<'a> {
    pub fn of(v: &'a [f32]) -> Scan<'a> {
        // Eight lanes of min/max in plain comparisons, which the compiler
        // vectorises (NaN compares false and is skipped); infinities are
        // rare enough to take the filtering path when they show up.
        let mut lo8 = [f32::INFINITY; 8];
        let mut hi8 = [f32::NEG_INFINITY; 8];
        let mut nan8 = [0u32; 8];
        let mut chunks = v.chunks_exact(8);
        for c in &mut chunks {
            let c: &[f32; 8] = c.try_into().expect("chunks of 8");
            lo8 = std::array::from_fn(|k| if c[k] < lo8[k] { c[k] } else { lo8[k] });
            hi8 = std::array::from_fn(|k| if c[k] > hi8[k] { c[k] } else { hi8[k] });
            nan8 = std::array::from_fn(|k| nan8[k] + c[k].is_nan() as u32);
        }
        let rest = chunks.remainder();
        let not_nan = |x: &&f32| !x.is_nan();
        let mut lo = lo8
            .iter()
            .chain(rest)
            .filter(not_nan)
            .fold(f32::INFINITY, |a, &x| a.min(x));
        let mut hi = hi8
            .iter()
            .chain(rest)
            .filter(not_nan)
            .fold(f32::NEG_INFINITY, |a, &x| a.max(x));
        let mut finite = nan8.iter().all(|&n| n == 0) && rest.iter().all(|x| !x.is_nan());
        if lo == f32::NEG_INFINITY || hi == f32::INFINITY {
            finite = false;
            (lo, hi) = v
                .iter()
                .filter(|x| x.is_finite())
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                    (lo.min(x), hi.max(x))
                });
        }
        Scan {
            values: v,
            lo,
            hi,
            finite,
        }
    }
}

impl Histogram {
    /// The histogram of the finite values scanned, on the least grid that
    /// holds their range in [`BINS`] bins.
    pub fn of(scan: &Scan) -> Histogram {
        let Scan {
            values: v,
            lo,
            hi,
            finite,
        } = *scan;
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            return Histogram::default();
        }
        let exp = exponent_for(lo as f64, hi as f64);
        let first = bin_of(lo as f64, exp);
        if lo == hi {
            let n = match finite {
                true => v.len(),
                false => v.iter().filter(|x| x.is_finite()).count(),
            };
            return Histogram {
                exp,
                first,
                counts: vec![n as u64],
            }
            .trimmed();
        }
        let len = (bin_of(hi as f64, exp) - first + 1) as usize;
        let top = (len - 1) as f32;
        // Four interleaved histograms, summed at the end: after a ReLU most
        // values fall in one bin, and increments of one counter wait on
        // each other. Bin numbers are computed 16 at a time (in vector
        // registers) where the grid's origin and scale are exact in f32
        // (else in f64, one by one).
        // BINS long whatever `len`: a bin number masked to BINS (a power of
        // two; the clamp below keeps it under `len`, so the mask changes
        // nothing) indexes it without a bounds check.
        let mut four: Box<[[u32; 4]; BINS]> = vec![[0u32; 4]; BINS]
            .into_boxed_slice()
            .try_into()
            .expect("BINS long");
        let inv = (-exp as f64).exp2();
        let inv32 = inv as f32;
        let mut rest: &[f32] = v;
        // In f32, 16 at a time, where every value is finite, the scale is
        // exact and every scaled value fits an i32 with room: the bin is
        // floor(x * inv) - first, the floor taken as the truncation less
        // one where that rounded up (a negative value), which vectorises
        // on any x86-64 (a floor instruction needs SSE4.1). Not where bins
        // wider than 1 hold negative values: a tiny one scales to -0 there
        // (-1e-45 over [-1e-45, 1e4]), whose truncation does not round up.
        let fits = |x: f32| ((x as f64) * inv).abs() < (1u64 << 30) as f64;
        let unsigned = exp <= 0 || lo >= 0.0;
        if finite && unsigned && inv32 as f64 == inv && inv32.is_normal() && fits(lo) && fits(hi) {
            let (first32, top32) = (first as i32, (len - 1) as i32);
            let mut chunks = v.chunks_exact(16);
            for c in &mut chunks {
                let c: &[f32; 16] = c.try_into().expect("chunks of 16");
                let idx: [i32; 16] = std::array::from_fn(|k| {
                    // Held to the range's scaled ends (a NaN, which the
                    // caller said is not there, to its lower end).
                    let y = c[k] * inv32;
                    // SAFETY: every value is finite and within [lo, hi]
                    // (`Scan` found them so), so `y` is finite and |y| <
                    // 2^30 (checked on lo and hi above): representable as
                    // i32.
                    let t = unsafe { y.to_int_unchecked::<i32>() };
                    // The floor: one less where the truncation rounded up.
                    (t - ((t as f32) > y) as i32 - first32).clamp(0, top32)
                });
                for (k, &b) in idx.iter().enumerate() {
                    four[b as usize & (BINS - 1)][k & 3] += 1;
                }
            }
            rest = chunks.remainder();
        }
        for &x in rest {
            if x.is_finite() {
                let t = ((x as f64 * inv).floor() - first as f64).clamp(0.0, top as f64);
                four[t as usize][0] += 1;
            }
        }
        let counts: Vec<u64> = four[..len]
            .iter()
            .map(|f| f.iter().map(|&c| c as u64).sum())
            .collect();
        Histogram { exp, first, counts }.trimmed()
    }

    /// Without its empty bins at either end.
    fn trimmed(mut self) -> Histogram {
        let Some(a) = self.counts.iter().position(|&c| c > 0) else {
            return Histogram::default();
        };
        let b = self.counts.iter().rposition(|&c| c > 0).unwrap_or(a);
        self.counts.truncate(b + 1);
        self.counts.drain(..a);
        self.first += a as i64;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The counts, bin after bin.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// The values the bins span: from the first bin's lower edge to the
    /// last one's upper edge.
    pub fn span(&self) -> (f64, f64) {
        let w = (self.exp as f64).exp2();
        (
            self.first as f64 * w,
            (self.first + self.counts.len() as i64) as f64 * w,
        )
    }

    /// The first and last bin on the grid of exponent `e >= self.exp`.
    fn extent_at(&self, e: i32) -> (i64, i64) {
        let s = e - self.exp;
        (
            shr(self.first, s),
            shr(self.first + self.counts.len() as i64 - 1, s),
        )
    }

    /// Add `other`'s counts, on the least grid (no finer than either's)
    /// that holds both in [`BINS`] bins.
    pub fn merge(&mut self, other: Histogram) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            *self = other;
            return;
        }
        let mut e = self.exp.max(other.exp);
        let (lo, hi) = loop {
            let (a, b) = (self.extent_at(e), other.extent_at(e));
            let (lo, hi) = (a.0.min(b.0), a.1.max(b.1));
            if hi - lo < BINS as i64 {
                break (lo, hi);
            }
            e += 1;
        };
        if e != self.exp || lo != self.first || hi + 1 != self.first + self.counts.len() as i64 {
            let mut counts = vec![0u64; (hi - lo + 1) as usize];
            self.add_to(&mut counts, e, lo);
            *self = Histogram {
                exp: e,
                first: lo,
                counts,
            };
        }
        let mut counts = std::mem::take(&mut self.counts);
        other.add_to(&mut counts, e, lo);
        self.counts = counts;
    }

    /// Add these counts to `counts`, bins of exponent `e >= self.exp`
    /// from bin `first` on, which hold them.
    fn add_to(&self, counts: &mut [u64], e: i32, first: i64) {
        let s = e - self.exp;
        for (k, &c) in self.counts.iter().enumerate() {
            counts[(shr(self.first + k as i64, s) - first) as usize] += c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u32, scale: f32, offset: f32) -> Vec<f32> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as f32 / u32::MAX as f32 - 0.5) * scale + offset
            })
            .collect()
    }

    fn range(v: &[f32]) -> (f32, f32) {
        v.iter()
            .filter(|x| x.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            })
    }

    /// The histogram of `v` binned one value at a time, on the grid of
    /// exponent `e`: bin floor(x / 2^e).
    fn plain(v: &[f32], e: i32) -> Vec<(i64, u64)> {
        let mut m = std::collections::BTreeMap::new();
        for &x in v.iter().filter(|x| x.is_finite()) {
            *m.entry(bin_of(x as f64, e)).or_insert(0u64) += 1;
        }
        m.into_iter().collect()
    }

    fn bins(h: &Histogram) -> Vec<(i64, u64)> {
        h.counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(k, &c)| (h.first + k as i64, c))
            .collect()
    }

    #[test]
    fn values_go_to_the_bin_their_grid_puts_them_in() {
        // Ranges across zero, away from it, tiny and huge: the 16-wide path
        // against floor(x / 2^e), every value counted.
        // (1e-3 around 1e4: bin numbers past 2^30, the f64 path.)
        let cases = [
            (7.0, 1.0),
            (1.0, 40.0),
            (1e-6, -3e-6),
            (3e7, 0.0),
            (1e-3, 1e4),
        ];
        for (scale, offset) in cases {
            let v = noise(1003, 0x2545_f491, scale, offset);
            let (lo, hi) = range(&v);
            let h = Histogram::of(&Scan::of(&v));
            assert_eq!(bins(&h), plain(&v, h.exp), "scale {scale} offset {offset}");
            assert!(h.counts.len() <= BINS && h.counts.len() > BINS / 2);
            let (a, b) = h.span();
            assert!(a <= lo as f64 && b > hi as f64);
        }
    }

    /// A tiny negative value that scales to -0 in f32 (a grid of bins
    /// wider than 1) still goes to the bin below 0.
    #[test]
    fn a_tiny_negative_value_goes_below_zero() {
        let mut v = noise(100, 9, 10000.0, 5000.0);
        v[3] = -f32::from_bits(1);
        v[50] = -0.0;
        let (lo, _) = range(&v);
        let h = Histogram::of(&Scan::of(&v));
        assert!(h.exp >= 1);
        assert_eq!(bins(&h), plain(&v, h.exp));
        assert!(h.span().0 <= lo as f64);
    }

    #[test]
    fn the_grid_is_the_least_that_holds_the_range() {
        // [0, 4095]: bins of width 1 hold it in 4096 bins; [0, 4096] needs 2.
        assert_eq!(exponent_for(0.0, 4095.0), 0);
        assert_eq!(exponent_for(0.0, 4096.0), 1);
        // [-1, 1] in bins of 2^-11: -2048..=2048 is 4097 bins, so 2^-10.
        assert_eq!(exponent_for(-1.0, 1.0), -10);
        // One value (or zero alone): one bin.
        let h = Histogram::of(&Scan::of(&[3.0; 40]));
        assert_eq!(
            (h.counts.as_slice(), h.span().0 <= 3.0),
            (&[40u64][..], true)
        );
        let h = Histogram::of(&Scan::of(&[0.0; 5]));
        assert_eq!(h.counts, vec![5]);
        let h = Histogram::of(&Scan::of(&[1.0, f32::NAN, 1.0]));
        assert_eq!(h.counts, vec![2]);
    }

    #[test]
    fn nan_and_infinities_are_skipped() {
        for len in [1usize, 3, 8, 13, 64, 100] {
            let mut v: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 7.0).collect();
            let clean = Histogram::of(&Scan::of(&v));
            v.push(f32::NAN);
            v.insert(len / 2, f32::INFINITY);
            v.insert(0, f32::NEG_INFINITY);
            let h = Histogram::of(&Scan::of(&v));
            assert_eq!(h, clean, "len {len}");
            assert_eq!(h.counts.iter().sum::<u64>() as usize, len);
        }
        assert!(Histogram::of(&Scan::of(&[f32::NAN; 9])).is_empty());
    }

    #[test]
    fn merged_histograms_are_the_histogram_of_every_value() {
        // Samples of other ranges (one far wider, one far off): merged in
        // any order, the counts of binning them all on the merged grid.
        let samples = [
            noise(500, 1, 2.0, 0.0),
            noise(700, 2, 0.01, 0.5),
            noise(300, 3, 100.0, -20.0),
            noise(400, 4, 1.0, 300.0),
        ];
        let hists: Vec<Histogram> = samples
            .iter()
            .map(|v| Histogram::of(&Scan::of(v)))
            .collect();
        let all: Vec<f32> = samples.concat();
        let (lo, hi) = range(&all);
        let mut orders = vec![vec![0, 1, 2, 3], vec![3, 2, 1, 0], vec![1, 3, 0, 2]];
        orders.push(vec![2, 0, 3, 1]);
        let mut results = vec![];
        for order in orders {
            let mut m = Histogram::default();
            for i in order {
                m.merge(hists[i].clone());
            }
            assert_eq!(m.exp, exponent_for(lo as f64, hi as f64));
            assert_eq!(bins(&m), plain(&all, m.exp));
            results.push(m);
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]));
    }

    /// One value (a ReLU's output all 0 on one sample, a constant) merged
    /// with other samples leaves their grid as fine as their union allows;
    /// samples 60 orders of magnitude apart merge exactly too.
    #[test]
    fn one_value_and_far_apart_samples_merge_on_the_unions_grid() {
        let cases: [Vec<Vec<f32>>; 4] = [
            vec![vec![0.0; 8], noise(500, 5, 0.01, 0.005)],
            vec![noise(500, 6, 0.001, 1.0), vec![1.0; 3]],
            vec![vec![2.5; 4], vec![-7.0; 2]],
            vec![noise(300, 7, 1e-30, 1e-30), noise(300, 8, 1e30, 1e30)],
        ];
        for samples in cases {
            let mut m = Histogram::default();
            for v in &samples {
                m.merge(Histogram::of(&Scan::of(v)));
            }
            let all = samples.concat();
            let (lo, hi) = range(&all);
            assert_eq!(m.exp, exponent_for(lo as f64, hi as f64), "{lo} {hi}");
            assert_eq!(bins(&m), plain(&all, m.exp), "{lo} {hi}");
        }
    }
}
