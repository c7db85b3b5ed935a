//! The RTT sketch: a sparse DDSketch (Masson, Rim, Lee, VLDB 2019), mergeable, with
//! a relative error of at most 1% on every quantile.
//!
//! A value `v` (µs, at least 1) goes to bucket `ceil(ln v / ln γ)` with
//! `γ = (1 + α) / (1 - α)`, `α = 0.01`; a bucket's value is `2 γ^k / (γ + 1)`, within
//! `α` of every value in it. Merging adds the counts of equal buckets, so a merged
//! sketch answers exactly as one that saw every value. Buckets are kept sparse (a
//! sorted list of `(bucket, count)`, 8 bytes each): an edge's RTTs in one minute
//! usually fall into a handful of buckets, where a dense store (the
//! `sketches-ddsketch` crate's) allocates 128 buckets (1 KiB) at its first value. Above
//! [`MAX_BUCKETS`] the two lowest buckets are collapsed into one (as DDSketch's
//! collapsing-lowest store does): the high quantiles, the ones read (p99), stay
//! within the error.

/// The relative error α.
pub const RELATIVE_ERROR: f64 = 0.01;

/// Most buckets one sketch holds (values from 1 µs to over an hour need some 1,100).
pub const MAX_BUCKETS: usize = 128;

/// `ln γ`.
fn ln_gamma() -> f64 {
    ((1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR)).ln()
}

/// The bucket of `v` (µs).
fn bucket(v: u32) -> i16 {
    let v = f64::from(v.max(1));
    // At most ln(2^32) / ln γ ≈ 1,110: within i16.
    (v.ln() / ln_gamma()).ceil() as i16
}

/// The value a bucket stands for.
fn value(k: i16) -> f64 {
    let gamma = ln_gamma().exp();
    2.0 * gamma.powi(i32::from(k)) / (gamma + 1.0)
}

/// RTT samples of one edge in one minute.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RttSketch {
    /// `(bucket, count)`, sorted by bucket.
    buckets: Vec<(i16, u32)>,
}

impl RttSketch {
    /// Adds one sample (µs); 0 (no sample taken) is ignored.
    pub fn add(&mut self, rtt_us: u32) {
        if rtt_us == 0 {
            return;
        }
        self.add_bucket(bucket(rtt_us), 1);
    }

    fn add_bucket(&mut self, k: i16, n: u32) {
        match self.buckets.binary_search_by_key(&k, |b| b.0) {
            Ok(i) => self.buckets[i].1 = self.buckets[i].1.saturating_add(n),
            Err(i) => {
                self.buckets.insert(i, (k, n));
                if self.buckets.len() > MAX_BUCKETS {
                    let (_, lowest) = self.buckets.remove(0);
                    self.buckets[0].1 = self.buckets[0].1.saturating_add(lowest);
                }
            }
        }
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &RttSketch) {
        for &(k, n) in &other.buckets {
            self.add_bucket(k, n);
        }
    }

    /// Samples held.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| u64::from(b.1)).sum()
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
                return Some(value(k));
            }
        }
        self.buckets.last().map(|b| value(b.0))
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<(i16, u32)>()
    }
}
