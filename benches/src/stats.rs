//! Exact order statistics over a vector of nanosecond samples.

/// Summary of one row's samples, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub n: u64,
    /// Median (nearest rank).
    pub median: u64,
    /// 99th percentile (nearest rank).
    pub p99: u64,
    /// 99.9th percentile (nearest rank).
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: u64,
}

impl Summary {
    /// Sorts `v` in place and summarises it. An empty vector gives all zeros.
    pub fn of(v: &mut [u64]) -> Summary {
        if v.is_empty() {
            return Summary::default();
        }
        v.sort_unstable();
        let n = v.len();
        let q = |p: f64| -> u64 {
            let rank = ((n as f64 * p).ceil() as usize).clamp(1, n);
            v[rank - 1]
        };
        let sum: u128 = v.iter().map(|&x| u128::from(x)).sum();
        Summary {
            n: n as u64,
            median: q(0.5),
            p99: q(0.99),
            p999: q(0.999),
            max: v[n - 1],
            mean: (sum / n as u128) as u64,
        }
    }

    /// Summary from a histogram (about 3% resolution).
    pub fn of_hist(h: &crate::hist::Histogram) -> Summary {
        Summary {
            n: h.count(),
            median: h.quantile(0.5),
            p99: h.quantile(0.99),
            p999: h.quantile(0.999),
            max: h.max(),
            mean: 0,
        }
    }

    /// Parses `n median p99 p999 max mean` (as the iceoryx2 peer prints them).
    pub fn parse(fields: &[&str]) -> Option<Summary> {
        let f = |i: usize| fields.get(i)?.parse::<u64>().ok();
        Some(Summary {
            n: f(0)?,
            median: f(1)?,
            p99: f(2)?,
            p999: f(3)?,
            max: f(4)?,
            mean: f(5)?,
        })
    }
}

/// Formats nanoseconds for people: `412 ns`, `18.3 us`, `4.21 ms`.
pub fn fmt_ns(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns} ns"),
        10_000..=9_999_999 => format!("{:.1} us", ns as f64 / 1e3),
        _ => format!("{:.2} ms", ns as f64 / 1e6),
    }
}

/// Formats a byte count with binary units: `64 B`, `4 KiB`, `6.2 MB` stays
/// exact for the frame size (`6220800 B` prints as `5.93 MiB`).
pub fn fmt_size(b: u64) -> String {
    const KI: u64 = 1024;
    if b < KI {
        format!("{b} B")
    } else if b < KI * KI {
        if b % KI == 0 {
            format!("{} KiB", b / KI)
        } else {
            format!("{:.1} KiB", b as f64 / KI as f64)
        }
    } else if b % (KI * KI) == 0 {
        format!("{} MiB", b / (KI * KI))
    } else {
        format!("{:.2} MiB", b as f64 / (KI * KI) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<u64> = (1..=1000).rev().collect();
        let s = Summary::of(&mut v);
        assert_eq!(
            (s.n, s.median, s.p99, s.p999, s.max),
            (1000, 500, 990, 999, 1000)
        );
        assert_eq!(s.mean, 500);
        assert_eq!(Summary::of(&mut []), Summary::default());
        let mut one = [7];
        assert_eq!(Summary::of(&mut one).p999, 7);
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_ns(412), "412 ns");
        assert_eq!(fmt_ns(18_300), "18.3 us");
        assert_eq!(fmt_size(64), "64 B");
        assert_eq!(fmt_size(4096), "4 KiB");
        assert_eq!(fmt_size(32 << 20), "32 MiB");
        assert_eq!(fmt_size(1920 * 1080 * 3), "5.93 MiB");
        let p = Summary::parse(&["3", "1", "2", "3", "4", "5"]).unwrap();
        assert_eq!((p.n, p.max, p.mean), (3, 4, 5));
    }
}
