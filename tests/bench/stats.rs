//! Latency samples and their percentiles, exact (every sample kept: a run
//! has at most a few hundred thousand).

use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct Samples {
    micros: Vec<u64>,
    sorted: bool,
}

impl Samples {
    pub fn push(&mut self, latency: Duration) {
        self.push_micros(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn push_micros(&mut self, micros: u64) {
        self.micros.push(micros);
        self.sorted = false;
    }

    pub fn extend(&mut self, other: impl IntoIterator<Item = u64>) {
        self.micros.extend(other);
        self.sorted = false;
    }

    pub fn into_micros(self) -> Vec<u64> {
        self.micros
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    /// The `p`-th percentile (0–100) in milliseconds, nearest-rank; 0 when empty.
    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.micros.is_empty() {
            return 0.0;
        }
        if !self.sorted {
            self.micros.sort_unstable();
            self.sorted = true;
        }
        let rank = ((p / 100.0) * self.micros.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.micros.len()) - 1;
        self.micros[index] as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.micros.iter().copied().max().unwrap_or(0) as f64 / 1000.0
    }
}

/// Rounds for display: 3 significant decimals are plenty for milliseconds.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples = Samples::default();
        for ms in 1..=100u64 {
            samples.push_micros(ms * 1000);
        }
        assert_eq!(samples.percentile_ms(50.0), 50.0);
        assert_eq!(samples.percentile_ms(99.0), 99.0);
        assert_eq!(samples.percentile_ms(100.0), 100.0);
        assert_eq!(samples.max_ms(), 100.0);
    }

    #[test]
    fn empty_samples_report_zero() {
        let mut samples = Samples::default();
        assert_eq!(samples.percentile_ms(50.0), 0.0);
    }
}
