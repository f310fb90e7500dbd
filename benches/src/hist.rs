//! A fixed-size log-linear latency histogram: no allocation per sample,
//! about 3% resolution, nanoseconds up to ~1 minute. Used by `bips demo` and by
//! the harness where exact vectors would be too large to ship between
//! processes.

const SUB: usize = 32; // sub-buckets per power of two
const POWERS: usize = 36; // 2^36 ns ~ 69 s

/// Counts of values in log-linear buckets.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; SUB * POWERS].into_boxed_slice(),
            total: 0,
            max: 0,
        }
    }
}

fn bucket(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let p = 63 - v.leading_zeros() as usize; // v in [2^p, 2^(p+1))
    let shift = p - SUB.trailing_zeros() as usize;
    let sub = ((v >> shift) as usize) - SUB;
    ((p - SUB.trailing_zeros() as usize + 1) * SUB + sub).min(SUB * POWERS - 1)
}

fn bucket_low(b: usize) -> u64 {
    if b < SUB {
        return b as u64;
    }
    let p = b / SUB - 1 + SUB.trailing_zeros() as usize;
    let sub = (b % SUB) as u64;
    (SUB as u64 + sub) << (p - SUB.trailing_zeros() as usize)
}

impl Histogram {
    /// Records one value.
    pub fn record(&mut self, v: u64) {
        self.counts[bucket(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a += b;
        }
        self.total += o.total;
        self.max = self.max.max(o.max);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Largest value recorded.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), as the low edge of its bucket.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((self.total as f64 * q).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_low(b).min(self.max);
            }
        }
        self.max
    }

    /// Serialises the non-empty buckets as `b:c,b:c,...` (for child processes).
    pub fn encode(&self) -> String {
        let mut s = format!("{}", self.max);
        for (b, &c) in self.counts.iter().enumerate() {
            if c != 0 {
                s.push_str(&format!(",{b}:{c}"));
            }
        }
        s
    }

    /// Parses [`Histogram::encode`]'s output.
    pub fn decode(s: &str) -> Option<Histogram> {
        let mut h = Histogram::default();
        let mut it = s.split(',');
        h.max = it.next()?.parse().ok()?;
        for kv in it {
            let (b, c) = kv.split_once(':')?;
            let (b, c): (usize, u64) = (b.parse().ok()?, c.parse().ok()?);
            *h.counts.get_mut(b)? += c;
            h.total += c;
        }
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..2_000_000u64).step_by(7) {
            let b = bucket(v);
            assert!(b >= last, "bucket order at {v}");
            last = b;
            let lo = bucket_low(b);
            assert!(lo <= v, "{lo} <= {v}");
            assert!(v - lo <= v / 16 + 1, "resolution at {v}: {lo}");
        }
    }

    #[test]
    fn quantiles_and_round_trip() {
        let mut h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5);
        assert!((480_000..=500_000).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99);
        assert!((955_000..=990_000).contains(&p99), "{p99}");
        let back = Histogram::decode(&h.encode()).unwrap();
        assert_eq!(back.count(), 1000);
        assert_eq!(back.quantile(0.5), p50);
        assert_eq!(back.max(), 1_000_000);
    }
}
