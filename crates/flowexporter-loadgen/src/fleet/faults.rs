//! What happens to a chunk on its way to the collector: it may be dropped, arrive
//! twice, arrive late, or arrive after its host's next chunk.

use crate::fleet::{
    config::FleetConfig,
    world::{Micros, SECOND},
};

/// The fate of one chunk: when its copies arrive, as delays after it was sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fate {
    /// One delay per copy that arrives: none when dropped, two when duplicated.
    pub delays: Vec<Micros>,
    /// It was held back long enough to arrive after its host's next chunk.
    pub reordered: bool,
    /// It was late (by up to `max_late`).
    pub late: bool,
}

impl Fate {
    /// Whether it never arrives.
    pub fn dropped(&self) -> bool {
        self.delays.is_empty()
    }
}

/// Draws each chunk's fate.
#[derive(Debug)]
pub struct Faults {
    rng: fastrand::Rng,
    drop: f64,
    duplicate: f64,
    late: f64,
    reorder: f64,
    max_late: Micros,
}

impl Faults {
    /// Faults as `config` sets them, seeded with `seed`.
    pub fn new(config: &FleetConfig, seed: u64) -> Faults {
        Faults {
            rng: fastrand::Rng::with_seed(seed),
            drop: config.drop_chunks,
            duplicate: config.duplicate_chunks,
            late: config.late_chunks,
            reorder: config.reorder_chunks,
            max_late: i64::try_from(config.max_late.as_micros()).unwrap_or(i64::MAX),
        }
    }

    /// The fate of the next chunk. Every chunk takes a network delay of up to 300 ms;
    /// a late one up to `max_late` more; a reordered one 60 to 120 s more (its host's
    /// next chunk is sent 60 s after it); a duplicate arrives 1 to 30 s after the
    /// first copy (a retry after a lost acknowledgement).
    pub fn next_fate(&mut self) -> Fate {
        // Draw every number whatever the settings, so that one fault's probability
        // does not change which chunks another fault hits.
        let (d, u, l, r) = (
            self.rng.f64(),
            self.rng.f64(),
            self.rng.f64(),
            self.rng.f64(),
        );
        let network = self.rng.i64(1_000..300_000);
        let late_by = self.rng.i64(0..=self.max_late.max(0));
        let reorder_by = self.rng.i64(60 * SECOND..120 * SECOND);
        let retry_after = self.rng.i64(SECOND..30 * SECOND);
        if d < self.drop {
            return Fate::default();
        }
        let late = l < self.late;
        let reordered = r < self.reorder;
        let mut delay = network;
        if late {
            delay += late_by;
        }
        if reordered {
            delay += reorder_by;
        }
        let mut delays = vec![delay];
        if u < self.duplicate {
            delays.push(delay + retry_after);
        }
        Fate {
            delays,
            reordered,
            late,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn faults(p: f64) -> Faults {
        let config = FleetConfig {
            drop_chunks: p,
            duplicate_chunks: p,
            late_chunks: p,
            reorder_chunks: p,
            max_late: Duration::from_secs(90),
            ..FleetConfig::default()
        };
        Faults::new(&config, 4)
    }

    #[test]
    fn without_faults_every_chunk_arrives_once_within_300_ms() {
        let mut f = faults(0.0);
        for _ in 0..1000 {
            let fate = f.next_fate();
            assert_eq!(fate.delays.len(), 1);
            assert!(fate.delays[0] < 300_000);
        }
    }

    #[test]
    fn each_fault_happens_about_as_often_as_asked() {
        let mut f = faults(0.1);
        let n = 20_000;
        let fates: Vec<Fate> = (0..n).map(|_| f.next_fate()).collect();
        let dropped = fates.iter().filter(|f| f.dropped()).count();
        let twice = fates.iter().filter(|f| f.delays.len() == 2).count();
        let late = fates.iter().filter(|f| f.late).count();
        let reordered = fates.iter().filter(|f| f.reordered).count();
        for count in [dropped, late, reordered] {
            assert!((1_500..2_500).contains(&count), "{count}");
        }
        // Duplicates are drawn among the chunks not dropped.
        assert!((1_300..2_300).contains(&twice), "{twice}");
        for fate in &fates {
            if let [first, second] = fate.delays[..] {
                assert!(second > first);
            }
            if fate.reordered {
                assert!(fate.delays[0] >= 60 * SECOND);
            }
            assert!(
                fate.delays
                    .iter()
                    .all(|&d| d < 90 * SECOND + 120 * SECOND + 300_000)
            );
        }
    }
}
