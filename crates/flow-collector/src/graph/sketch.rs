//! The RTT sketch: a sparse DDSketch (Masson, Rim, Lee, VLDB 2019), mergeable, with
//! a relative error of 1% on every quantile while a sketch's values span less than
//! some 13 times (its 128 buckets), and a bounded one beyond.
//!
//! A value `v` (µs, at least 1) goes to bucket `ceil(ln v / ln γ)` with
//! `γ = (1 + α) / (1 - α)`, `α = 0.01`; a bucket's value is `2 γ^k / (γ + 1)`, within
//! `α` of every value in it. Merging adds the counts of equal buckets, so a merged
//! sketch answers exactly as one that saw every value. Buckets are kept sparse (a
//! sorted list of `(bucket, count)`, 8 bytes each): an edge's RTTs in one minute
//! usually fall into a handful of buckets, where a dense store (the
//! `sketches-ddsketch` crate's) allocates 128 buckets (1 KiB) at its first value.
//!
//! Above [`MAX_BUCKETS`] the sketch is coarsened **uniformly**: every two neighbouring
//! buckets become one (`γ` squared), which doubles the error of every quantile (2%,
//! then 4%, 8%: values from 1 µs to 10 s fit in 128 buckets at 8%) and keeps it
//! bounded everywhere, the median included. (Collapsing only the lowest buckets, as
//! DDSketch's collapsing-lowest store does, keeps the high quantiles exact but can put
//! the median anywhere: 60% of samples at 100 µs and 40% between 1 and 100 ms gave a
//! p50 of 7.9 ms.) Sketches of different coarseness merge at the coarser one's.

/// The relative error α at full resolution.
pub const RELATIVE_ERROR: f64 = 0.01;

/// Most buckets one sketch holds before it is coarsened.
pub const MAX_BUCKETS: usize = 128;

/// `ln γ` at full resolution.
fn ln_gamma() -> f64 {
    ((1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR)).ln()
}

/// The full-resolution bucket of `v` (µs): 0 to about 1,110.
fn bucket(v: u32) -> i16 {
    let v = f64::from(v.max(1));
    // At most ln(2^32) / ln γ ≈ 1,110: within i16.
    (v.ln() / ln_gamma()).ceil() as i16
}

/// Bucket `k` of coarseness `from` at coarseness `to` (not finer): bucket `k` stands
/// for full-resolution buckets `((k - 1) 2^s, k 2^s]`.
fn coarser(k: i16, from: u8, to: u8) -> i16 {
    let by = u32::from(to.saturating_sub(from)).min(15);
    if k <= 0 {
        return k;
    }
    let step = 1i32 << by;
    ((i32::from(k) + step - 1) >> by) as i16
}

/// `γ` at coarseness `shift` (`γ^(2^shift)`).
fn gamma_at(shift: u8) -> f64 {
    (ln_gamma() * f64::from(1u32 << u32::from(shift.min(15)))).exp()
}

/// The value bucket `k` of coarseness `shift` stands for.
fn value(k: i16, shift: u8) -> f64 {
    let gamma = gamma_at(shift);
    2.0 * gamma.powi(i32::from(k)) / (gamma + 1.0)
}

/// RTT samples of one edge in one minute.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RttSketch {
    /// `(bucket, count)`, sorted by bucket.
    buckets: Vec<(i16, u32)>,
    /// How many times it was coarsened (0: full resolution).
    shift: u8,
}

impl RttSketch {
    /// Adds one sample (µs); 0 (no sample taken) is ignored.
    pub fn add(&mut self, rtt_us: u32) {
        if rtt_us == 0 {
            return;
        }
        self.add_bucket(coarser(bucket(rtt_us), 0, self.shift), 1);
    }

    fn add_bucket(&mut self, k: i16, n: u32) {
        match self.buckets.binary_search_by_key(&k, |b| b.0) {
            Ok(i) => self.buckets[i].1 = self.buckets[i].1.saturating_add(n),
            Err(i) => {
                self.buckets.insert(i, (k, n));
                while self.buckets.len() > MAX_BUCKETS {
                    self.coarsen_to(self.shift + 1);
                }
            }
        }
    }

    /// Merges neighbouring buckets until the sketch is of coarseness `shift`.
    fn coarsen_to(&mut self, shift: u8) {
        if shift <= self.shift {
            return;
        }
        let from = self.shift;
        let mut merged: Vec<(i16, u32)> = Vec::with_capacity(self.buckets.len());
        for &(k, n) in &self.buckets {
            let k = coarser(k, from, shift);
            match merged.last_mut() {
                Some(last) if last.0 == k => last.1 = last.1.saturating_add(n),
                _ => merged.push((k, n)),
            }
        }
        self.buckets = merged;
        self.shift = shift;
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &RttSketch) {
        self.coarsen_to(other.shift);
        for &(k, n) in &other.buckets {
            self.add_bucket(coarser(k, other.shift, self.shift), n);
        }
    }

    /// Samples held.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| u64::from(b.1)).sum()
    }

    /// The bound of the relative error of its quantiles: 1% at full resolution,
    /// doubling with every coarsening.
    pub fn relative_error(&self) -> f64 {
        let gamma = gamma_at(self.shift);
        (gamma - 1.0) / (gamma + 1.0)
    }

    /// The `q` quantile (0 to 1), µs; `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * (total - 1) as f64;
        let mut seen = 0u64;
        for &(k, n) in &self.buckets {
            seen += u64::from(n);
            if seen as f64 > rank {
                return Some(value(k, self.shift));
            }
        }
        self.buckets.last().map(|b| value(b.0, self.shift))
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<(i16, u32)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact `q` quantile of `values` (sorted), by the sketch's rank rule.
    fn exact(values: &[u32], q: f64) -> f64 {
        let rank = (q * (values.len() - 1) as f64) as usize;
        f64::from(values[rank])
    }

    fn within(got: Option<f64>, want: f64, error: f64) -> bool {
        got.is_some_and(|g| (g - want).abs() <= want * error * 1.0001)
    }

    #[test]
    fn a_bimodal_edge_keeps_its_median_within_the_stated_error() {
        // 60% of samples at 100-120 µs, 40% spread over 1-100 ms: far more than
        // 128 buckets.
        let mut values: Vec<u32> = (0..600).map(|i| 100 + i % 21).collect();
        values.extend((0..400).map(|i| 1_000 + i * 247));
        let mut sketch = RttSketch::default();
        for &v in &values {
            sketch.add(v);
        }
        values.sort_unstable();
        assert!(sketch.buckets.len() <= MAX_BUCKETS);
        let error = sketch.relative_error();
        assert!(error > RELATIVE_ERROR && error < 0.09, "{error}");
        for q in [0.5, 0.99] {
            let want = exact(&values, q);
            assert!(
                within(sketch.quantile(q), want, error),
                "p{q}: {:?} against {want} (error {error})",
                sketch.quantile(q)
            );
        }
    }

    #[test]
    fn sketches_of_different_coarseness_merge_at_the_coarser() {
        let mut wide = RttSketch::default();
        for v in (1..2_000u32).map(|i| i * 500) {
            wide.add(v);
        }
        let mut narrow = RttSketch::default();
        for v in 200..220u32 {
            narrow.add(v);
        }
        assert!((narrow.relative_error() - RELATIVE_ERROR).abs() < 1e-12);
        let mut merged = narrow.clone();
        merged.merge(&wide);
        let mut other_way = wide.clone();
        other_way.merge(&narrow);
        assert_eq!(merged, other_way);
        assert_eq!(merged.count(), 1_999 + 20);
        let mut values: Vec<u32> = (1..2_000u32).map(|i| i * 500).chain(200..220).collect();
        values.sort_unstable();
        let error = merged.relative_error();
        for q in [0.01, 0.5, 0.99] {
            assert!(within(merged.quantile(q), exact(&values, q), error), "p{q}");
        }
    }

    #[test]
    fn values_from_a_microsecond_to_an_hour_fit() {
        let mut sketch = RttSketch::default();
        let mut v = 1u64;
        while v < u64::from(u32::MAX) {
            sketch.add(u32::try_from(v).expect("u32"));
            v = v * 101 / 100 + 1;
        }
        assert!(sketch.buckets.len() <= MAX_BUCKETS);
        assert!(
            sketch.relative_error() < 0.17,
            "{}",
            sketch.relative_error()
        );
    }
}
