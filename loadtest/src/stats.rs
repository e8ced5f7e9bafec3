//! Latency percentiles, from all samples or from a histogram that several processes merge.

use std::time::Duration;

/// Summary of a set of latencies.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Percentiles {
    /// `None` when there is no sample.
    pub fn of(mut samples: Vec<Duration>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |quantile: f64| {
            let rank = ((samples.len() as f64) * quantile).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        Some(Self {
            count: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: samples[samples.len() - 1],
        })
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3,
            self.count
        )
    }
}

/// Latencies counted in 0.1 ms buckets up to 10 s (the last bucket holds everything slower),
/// with the exact maximum: small to send between processes, exact enough for p50/p99.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    buckets: Vec<u64>,
    max_micros: u64,
}

const BUCKET_MICROS: u64 = 100;
const BUCKETS: usize = 100_001;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; BUCKETS],
            max_micros: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = usize::try_from(micros / BUCKET_MICROS).unwrap_or(BUCKETS - 1);
        self.buckets[bucket.min(BUCKETS - 1)] += 1;
        self.max_micros = self.max_micros.max(micros);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.max_micros = self.max_micros.max(other.max_micros);
    }

    /// p50 and p99 as the upper edge of their bucket; `None` without samples.
    pub fn percentiles(&self) -> Option<Percentiles> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let at = |quantile: f64| {
            let rank = ((count as f64) * quantile).ceil().max(1.0) as u64;
            let mut seen = 0;
            let bucket = self
                .buckets
                .iter()
                .position(|n| {
                    seen += n;
                    seen >= rank
                })
                .unwrap_or(BUCKETS - 1) as u64;
            Duration::from_micros(((bucket + 1) * BUCKET_MICROS).min(self.max_micros))
        };
        Some(Percentiles {
            count: usize::try_from(count).unwrap_or(usize::MAX),
            p50: at(0.50),
            p99: at(0.99),
            max: Duration::from_micros(self.max_micros),
        })
    }

    /// `max bucket:count bucket:count…`, the non-empty buckets only.
    pub fn encode(&self) -> String {
        let mut text = self.max_micros.to_string();
        for (bucket, n) in self.buckets.iter().enumerate().filter(|(_, n)| **n > 0) {
            text.push_str(&format!(" {bucket}:{n}"));
        }
        text
    }

    pub fn decode(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let mut histogram = Self {
            max_micros: words.next()?.parse().ok()?,
            ..Self::default()
        };
        for word in words {
            let (bucket, n) = word.split_once(':')?;
            *histogram.buckets.get_mut(bucket.parse::<usize>().ok()?)? = n.parse().ok()?;
        }
        Some(histogram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(samples).expect("samples");
        assert_eq!(p.p50, Duration::from_millis(50));
        assert_eq!(p.p99, Duration::from_millis(99));
        assert_eq!(p.max, Duration::from_millis(100));
        assert!(Percentiles::of(Vec::new()).is_none());
    }

    #[test]
    fn histograms_merge_encode_and_give_bucket_percentiles() {
        let mut first = Histogram::default();
        let mut second = Histogram::default();
        for millis in 1..=50 {
            first.record(Duration::from_millis(millis));
        }
        for millis in 51..=100 {
            second.record(Duration::from_millis(millis));
        }
        second.record(Duration::from_secs(30));
        first.merge(&Histogram::decode(&second.encode()).expect("decodes"));
        let p = first.percentiles().expect("samples");
        assert_eq!(p.count, 101);
        assert_eq!(p.p50, Duration::from_micros(51_100));
        assert_eq!(p.p99, Duration::from_micros(100_100));
        assert_eq!(p.max, Duration::from_secs(30));
        assert!(Histogram::default().percentiles().is_none());
        assert!(Histogram::decode("12 x:1").is_none());
    }
}
