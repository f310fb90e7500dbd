//! The text of `bips top`: one table, the same lines on a live terminal and
//! in `--once` (plain text, no control codes). Fits 80 columns: every line
//! is cut to the width it is given.

use super::collect::{ChannelStats, ConsumerStats};

/// Column widths of a channel row (with single spaces between): 79 in all.
const NAME_W: usize = 19;

/// How channels are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// By name, A to Z.
    Name,
    /// By samples/s, highest first.
    Rate,
    /// By the largest consumer lag, highest first.
    Lag,
}

impl SortKey {
    /// The next key (the `s` key of the live view cycles through them).
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Name => SortKey::Rate,
            SortKey::Rate => SortKey::Lag,
            SortKey::Lag => SortKey::Name,
        }
    }

    /// Its name, as shown in the title line.
    pub fn label(self) -> &'static str {
        match self {
            SortKey::Name => "name",
            SortKey::Rate => "rate",
            SortKey::Lag => "lag",
        }
    }
}

/// Orders `stats` by `key` (ties by name).
pub fn sort(stats: &mut [ChannelStats], key: SortKey) {
    stats.sort_by(|a, b| {
        let by = match key {
            SortKey::Name => std::cmp::Ordering::Equal,
            SortKey::Rate => b.rate.unwrap_or(-1.0).total_cmp(&a.rate.unwrap_or(-1.0)),
            SortKey::Lag => b.max_lag.cmp(&a.max_lag),
        };
        by.then_with(|| a.name.cmp(&b.name))
    });
}

/// A count in at most 6 characters: `123456`, `1.23M`, `45.6G`.
pub fn count(v: u64) -> String {
    if v < 1_000_000 {
        return v.to_string();
    }
    let (d, u) = if v < 1_000_000_000 {
        (1e6, "M")
    } else if v < 1_000_000_000_000 {
        (1e9, "G")
    } else {
        (1e12, "T")
    };
    let x = v as f64 / d;
    if x < 10.0 {
        format!("{x:.2}{u}")
    } else if x < 100.0 {
        format!("{x:.1}{u}")
    } else if x < 1000.0 {
        format!("{x:.0}{u}")
    } else {
        ">999T".to_owned()
    }
}

/// A small count in at most 4 characters: `9999`, `65k`, `999k`, `4G`.
fn small(v: u32) -> String {
    match v {
        0..=9_999 => v.to_string(),
        10_000..=999_999 => format!("{}k", v / 1000),
        1_000_000..=999_999_999 => format!("{}M", v / 1_000_000),
        _ => format!("{}G", v / 1_000_000_000),
    }
}

/// A rate in at most 7 characters: `-`, `0`, `29.97`, `1200`, `1.05M`.
pub fn rate(r: Option<f64>) -> String {
    match r {
        None => "-".to_owned(),
        Some(r) if r < 0.005 => "0".to_owned(),
        Some(r) if r < 100.0 => format!("{r:.2}"),
        Some(r) if r < 100_000.0 => format!("{r:.0}"),
        Some(r) => count(r as u64),
    }
}

/// A duration in at most 6 characters: `850ns`, `12.3us`, `4.56ms`, `1.20s`, `75m`.
pub fn duration(ns: Option<u64>) -> String {
    let Some(ns) = ns else {
        return "-".to_owned();
    };
    let f = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 99_950 {
        format!("{:.1}us", f / 1e3)
    } else if ns < 1_000_000 {
        format!("{:.0}us", f / 1e3)
    } else if ns < 99_950_000 {
        format!("{:.1}ms", f / 1e6)
    } else if ns < 1_000_000_000 {
        format!("{:.0}ms", f / 1e6)
    } else if ns < 100_000_000_000 {
        format!("{:.1}s", f / 1e9)
    } else if ns < 6_000_000_000_000 {
        format!("{:.0}m", f / 60e9)
    } else if ns < 3_600_000_000_000_000 {
        format!("{:.0}h", f / 3600e9)
    } else {
        ">999h".to_owned()
    }
}

/// Cuts `s` to `width` characters (all text here is ASCII).
fn cut(mut s: String, width: usize) -> String {
    if s.len() > width {
        s.truncate(width);
    }
    s
}

/// The title line.
pub fn title(n: usize, interval: f64, key: SortKey, live: bool) -> String {
    let mut t = format!(
        "bips top - {n} channel{} - every {interval}s - sort: {}",
        if n == 1 { "" } else { "s" },
        key.label()
    );
    if live {
        t.push_str(" - s/n/r/l sort, q quit");
    }
    t
}

/// The column header of the channel rows.
pub fn header() -> String {
    format!(
        "{:<NAME_W$} {:<4} {:<4} {:>7} {:>9} {:>4} {:>5} {:>6} {:>6} {:>6}",
        "CHANNEL", "PROD", "POL", "RATE/s", "FREE/BUF", "HELD", "CONS", "MAXLAG", "LOST", "AGE"
    )
}

fn prod(c: &ChannelStats) -> &'static str {
    match c.state {
        "open" => "up",
        "closed" if c.producer_alive => "clsd",
        "closed" => "done",
        "unreadable" => "?",
        _ => "DEAD",
    }
}

fn policy(c: &ChannelStats) -> &'static str {
    match c.policy {
        Some("block") => "blk",
        Some(_) => "drop",
        None => "-",
    }
}

/// The lines of one channel: its row (its name alone on the line before
/// when longer than the column), one line per consumer entry, and the
/// latency line with `--latency`.
pub fn channel_lines(c: &ChannelStats, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    let name = if c.name.len() > NAME_W {
        out.push(cut(c.name.clone(), width));
        String::new()
    } else {
        c.name.clone()
    };
    if let Some(e) = &c.error {
        out.push(cut(format!("{name:<NAME_W$} {:<4} {e}", prod(c)), width));
        return out;
    }
    out.push(cut(
        format!(
            "{:<NAME_W$} {:<4} {:<4} {:>7} {:>9} {:>4} {:>5} {:>6} {:>6} {:>6}",
            name,
            prod(c),
            policy(c),
            rate(c.rate),
            format!("{}/{}", small(c.available), small(c.buffers)),
            small(c.held),
            format!("{}/{}", c.consumers_alive, c.max_consumers),
            count(c.max_lag),
            count(c.lost),
            duration(c.newest_age_ns),
        ),
        width,
    ));
    for k in &c.consumers {
        out.push(cut(consumer_line(k), width));
    }
    if let Some(l) = &c.latency {
        let text = match (&l.error, l.samples) {
            (Some(e), 0) => format!("  latency: {e}"),
            (_, 0) => "  latency: no sample in the last interval".to_owned(),
            _ => format!(
                "  latency p50 {} p99 {} max {} (n={}{})",
                duration(l.p50_ns),
                duration(l.p99_ns),
                duration(l.max_ns),
                count(l.samples),
                l.consumer
                    .map_or(String::new(), |e| format!(", probe is consumer #{e}")),
            ),
        };
        out.push(cut(text, width));
    }
    out
}

fn consumer_line(k: &ConsumerStats) -> String {
    let mut s = format!(
        "  #{:<3} {:<4} lag {:>6} held {:>2} lost {:>6} recv/s {:>7}",
        k.index,
        if k.alive { "up" } else { "DEAD" },
        count(k.lag),
        k.held,
        count(k.lost),
        rate(k.rate),
    );
    if k.is_probe {
        s.push_str(" (top)");
    } else if k.sleeping {
        s.push_str(" asleep");
    }
    s
}

/// Every line below the title: the header, then each channel's lines.
pub fn table(stats: &[ChannelStats], width: usize) -> Vec<String> {
    let mut out = vec![cut(header(), width)];
    if stats.is_empty() {
        out.push("(no bips channel on this machine)".to_owned());
    }
    for c in stats {
        out.extend(channel_lines(c, width));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::collect::{ChannelStats, ConsumerStats, Latency};
    use super::*;

    fn wide() -> ChannelStats {
        let k = ConsumerStats {
            index: 63,
            alive: false,
            active: true,
            cursor: u64::MAX,
            lag: u64::MAX,
            held: 16,
            lost: u64::MAX,
            received: u64::MAX,
            rate: Some(9.9e12),
            sleeping: true,
            is_probe: false,
        };
        ChannelStats {
            name: "x".repeat(200),
            backend: Some("memfd"),
            policy: Some("drop-oldest"),
            state: "stale",
            producer_alive: false,
            published: u64::MAX,
            rate: Some(1e15),
            newest_age_ns: Some(u64::MAX),
            buffers: 65535,
            free: 65535,
            available: 65535,
            loaned: 0,
            published_buffers: 0,
            retired: 0,
            held: 9999,
            max_consumers: 64,
            consumers_alive: 64,
            max_lag: u64::MAX,
            lost: u64::MAX,
            consumers: vec![
                k.clone(),
                ConsumerStats {
                    is_probe: true,
                    ..k
                },
            ],
            latency: Some(Latency {
                consumer: Some(63),
                samples: u64::MAX,
                p50_ns: Some(u64::MAX),
                p99_ns: Some(u64::MAX),
                max_ns: Some(u64::MAX),
                error: None,
            }),
            error: None,
        }
    }

    #[test]
    fn every_line_fits_80_columns_even_with_extreme_values() {
        let lines = table(&[wide()], usize::MAX);
        assert!(lines.len() >= 5, "{lines:#?}");
        for l in lines.iter().skip(2) {
            assert!(l.len() <= 80, "{} columns: {l:?}", l.len());
        }
        assert!(header().len() <= 80);
        assert!(title(999, 0.25, SortKey::Rate, true).len() <= 80);
        // The name line is cut only to the width given.
        assert_eq!(table(&[wide()], 80)[1].len(), 80);
    }

    #[test]
    fn formats_are_short() {
        let edges: Vec<u64> = (0..19)
            .flat_map(|p| [10u64.pow(p) - 1, 10u64.pow(p) / 1000 * 9995, 10u64.pow(p)])
            .chain([u64::MAX])
            .collect();
        for r in edges.iter().map(|&v| v as f64) {
            assert!(rate(Some(r)).len() <= 7, "{r}: {}", rate(Some(r)));
        }
        for v in edges {
            assert!(count(v).len() <= 6, "{v}: {}", count(v));
        }
        for v in [0, 9_999, 10_000, 999_999, 1_000_000, u32::MAX] {
            assert!(small(v).len() <= 4, "{v}: {}", small(v));
        }
        for r in [0.0, 0.004, 29.97, 99_999.0, 1e6, 1e20] {
            assert!(rate(Some(r)).len() <= 7, "{r}: {}", rate(Some(r)));
        }
        let mut all: Vec<u64> = (0..64).map(|p| 1u64 << p).collect();
        all.extend((0..20).map(|p| 10u64.pow(p) - 1));
        all.extend((3..19).map(|p| 10u64.pow(p) / 1000 * 9995));
        all.extend([420_400, 420_400_000, 99_999_999_999, u64::MAX]);
        for ns in all {
            assert!(
                duration(Some(ns)).len() <= 6,
                "{ns}: {}",
                duration(Some(ns))
            );
        }
    }

    #[test]
    fn sorts_by_rate_and_lag() {
        let mut a = wide();
        a.name = "a".into();
        a.rate = Some(1.0);
        a.max_lag = 5;
        let mut b = a.clone();
        b.name = "b".into();
        b.rate = Some(2.0);
        b.max_lag = 1;
        let mut v = vec![a, b];
        sort(&mut v, SortKey::Rate);
        assert_eq!(v[0].name, "b");
        sort(&mut v, SortKey::Lag);
        assert_eq!(v[0].name, "a");
        sort(&mut v, SortKey::Name);
        assert_eq!(v[0].name, "a");
    }
}
