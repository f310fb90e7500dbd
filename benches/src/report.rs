//! Rows, ratios, the targets, and the markdown / CSV / JSON outputs.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::stats::{fmt_ns, fmt_size, Summary};
use crate::sys::Machine;

/// What a row measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One-way latency by ping-pong.
    Latency,
    /// Samples per second, as fast as the consumers take them.
    Throughput,
}

/// One measured configuration.
#[derive(Clone, Debug)]
pub struct Row {
    /// Latency or throughput.
    pub kind: Kind,
    /// `bips`, `raw atomic`, `raw futex`, `iceoryx2`, `uds copy`, `memcpy`.
    pub system: &'static str,
    /// `spin` (busy-poll) or `park` (sleep in the kernel until woken).
    pub wait: &'static str,
    /// Consumer processes.
    pub fanout: u32,
    /// Payload bytes per sample.
    pub size: u64,
    /// One-way latency (half of each round trip), ns.
    pub lat: Summary,
    /// bips only: publish -> receive latency measured by each consumer from the
    /// sample's CLOCK_MONOTONIC timestamp (histogram, ~3% resolution).
    pub ts: Option<Summary>,
    /// Median over the floor's median at the same size (raw atomic for spin
    /// rows, raw futex for park rows).
    pub floor_ratio: Option<f64>,
    /// bips spin rows: median over iceoryx2's median at the same size.
    pub iox_ratio: Option<f64>,
    /// Throughput rows: samples published per second (each consumer receives
    /// every one).
    pub samples_per_s: f64,
    /// The median of the `memcpy` row of the same size (what copying one
    /// sample costs on this machine, this run), ns; set by
    /// [`Report::compute_ratios`].
    pub memcpy_ns: Option<u64>,
    /// Samples that arrived out of order or with a wrong header.
    pub errors: u64,
}

impl Row {
    /// A latency row.
    pub fn latency(
        system: &'static str,
        wait: &'static str,
        fanout: u32,
        size: u64,
        lat: Summary,
    ) -> Row {
        Row {
            kind: Kind::Latency,
            system,
            wait,
            fanout,
            size,
            lat,
            ts: None,
            floor_ratio: None,
            iox_ratio: None,
            samples_per_s: 0.0,
            memcpy_ns: None,
            errors: 0,
        }
    }

    /// Adds the consumers' publish -> receive latencies.
    pub fn with_ts(mut self, ts: Summary) -> Row {
        self.ts = Some(ts);
        self
    }

    /// A throughput row.
    pub fn throughput(
        system: &'static str,
        wait: &'static str,
        fanout: u32,
        size: u64,
        rate: f64,
        errors: u64,
    ) -> Row {
        Row {
            kind: Kind::Throughput,
            samples_per_s: rate,
            errors,
            ..Row::latency(system, wait, fanout, size, Summary::default())
        }
    }

    /// `bips spin 1->1` style label.
    pub fn label(&self) -> String {
        format!("{} {} 1->{}", self.system, self.wait, self.fanout)
    }

    /// The progress line printed as the row finishes.
    pub fn one_line(&self) -> String {
        match self.kind {
            Kind::Latency => format!(
                "{:>9}  {:<22} median {:>9}  p99 {:>9}  p99.9 {:>9}  max {:>9}  ({} samples)",
                fmt_size(self.size),
                self.label(),
                fmt_ns(self.lat.median),
                fmt_ns(self.lat.p99),
                fmt_ns(self.lat.p999),
                fmt_ns(self.lat.max),
                self.lat.n
            ),
            Kind::Throughput => format!(
                "{:>9}  {:<22} {:>12.0} samples/s",
                fmt_size(self.size),
                format!("{} (throughput)", self.label()),
                self.samples_per_s,
            ),
        }
    }
}

/// One of the targets, evaluated on a run.
#[derive(Clone, Debug)]
pub struct Target {
    /// The target, as the issue states it.
    pub goal: &'static str,
    /// What this run measured.
    pub measured: String,
    /// `Some(true)` met, `Some(false)` missed, `None` not measured.
    pub met: Option<bool>,
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// Notes (pinning, skipped rows, load).
    pub notes: Vec<String>,
    /// Every row, in the order run.
    pub rows: Vec<Row>,
    /// Wall time of the rows.
    pub took: Duration,
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

impl Report {
    /// A report of `rows`.
    pub fn new(machine: Machine, notes: Vec<String>, rows: Vec<Row>, took: Duration) -> Report {
        Report {
            machine,
            notes,
            rows,
            took,
        }
    }

    /// The latency row of `system`/`wait`/`fanout` at `size`.
    pub fn find(&self, system: &str, wait: &str, fanout: u32, size: u64) -> Option<&Row> {
        self.rows.iter().find(|r| {
            r.kind == Kind::Latency
                && r.system == system
                && r.wait == wait
                && r.fanout == fanout
                && r.size == size
        })
    }

    /// Payload sizes measured, ascending.
    pub fn sizes(&self) -> Vec<u64> {
        let mut s: Vec<u64> = self.rows.iter().map(|r| r.size).collect();
        s.sort_unstable();
        s.dedup();
        s
    }

    /// Fills `floor_ratio` and `iox_ratio`.
    pub fn compute_ratios(&mut self) {
        let mut out = Vec::with_capacity(self.rows.len());
        for r in &self.rows {
            let mut r = r.clone();
            r.memcpy_ns = self.find("memcpy", "copy", 1, r.size).map(|m| m.lat.median);
            if r.kind == Kind::Latency && r.wait != "copy" {
                let floor = if r.wait == "spin" {
                    "raw atomic"
                } else {
                    "raw futex"
                };
                r.floor_ratio = self
                    .find(floor, r.wait, 1, r.size)
                    .and_then(|f| ratio(r.lat.median, f.lat.median));
                if r.system == "bips" && r.wait == "spin" {
                    r.iox_ratio = self
                        .find("iceoryx2", "spin", 1, r.size)
                        .and_then(|f| ratio(r.lat.median, f.lat.median));
                }
            }
            out.push(r);
        }
        self.rows = out;
    }

    /// The targets, evaluated on this run.
    pub fn targets(&self) -> Vec<Target> {
        let sizes = self.sizes();
        let lat = |sys: &str, wait: &str, fan: u32| -> Vec<&Row> {
            sizes
                .iter()
                .filter_map(|&s| self.find(sys, wait, fan, s))
                .collect()
        };
        let worst = |rows: &[&Row], f: &dyn Fn(&Row) -> Option<f64>| -> Option<(f64, u64, f64)> {
            let vals: Vec<(f64, u64)> = rows.iter().filter_map(|r| Some((f(r)?, r.size))).collect();
            let best = vals.iter().map(|v| v.0).fold(f64::INFINITY, f64::min);
            vals.into_iter()
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(w, s)| (w, s, best))
        };
        let span = |w: Option<(f64, u64, f64)>, limit: f64, what: &str| -> Target {
            match w {
                Some((w, s, best)) => Target {
                    goal: "",
                    measured: format!("{what} {best:.2}x .. {w:.2}x (worst at {})", fmt_size(s)),
                    met: Some(w <= limit),
                },
                None => Target {
                    goal: "",
                    measured: "not measured in this run".into(),
                    met: None,
                },
            }
        };
        let mut t = Vec::new();

        let spin = lat("bips", "spin", 1);
        let mut x = span(
            worst(&spin, &|r| r.floor_ratio),
            1.5,
            "median / raw atomic:",
        );
        x.goal = "busy-spin one-way <= 1.5x the floor";
        t.push(x);

        let mut x = span(worst(&spin, &|r| r.iox_ratio), 0.5, "median / iceoryx2:");
        x.goal = "busy-spin one-way <= 0.5x iceoryx2";
        t.push(x);

        let flat = |wait: &str| -> Target {
            let rows = lat("bips", wait, 1);
            match (rows.first(), rows.last()) {
                (Some(a), Some(b)) if rows.len() > 1 => {
                    let r = b.lat.median as f64 / a.lat.median.max(1) as f64;
                    Target {
                        goal: "",
                        measured: format!(
                            "{wait}: {} at {} vs {} at {}: {r:.2}x",
                            fmt_ns(b.lat.median),
                            fmt_size(b.size),
                            fmt_ns(a.lat.median),
                            fmt_size(a.size)
                        ),
                        met: Some(r <= 1.1),
                    }
                }
                _ => Target {
                    goal: "",
                    measured: "needs two sizes".into(),
                    met: None,
                },
            }
        };
        let mut x = flat("spin");
        x.goal = "flat in payload: largest within 1.1x of smallest (spin)";
        t.push(x);
        let mut x = flat("park");
        x.goal = "flat in payload: largest within 1.1x of smallest (park)";
        t.push(x);

        let park = lat("bips", "park", 1);
        let mut x = span(worst(&park, &|r| r.floor_ratio), 1.2, "median / raw futex:");
        x.goal = "blocking one-way <= 1.2x raw futex";
        t.push(x);

        let tail = |r: &Row| ratio(r.lat.p999, r.lat.median);
        let mut x = span(worst(&spin, &tail), 3.0, "p99.9 / median:");
        x.goal = "p99.9 <= 3x median (bips spin 1->1)";
        t.push(x);
        let mut x = span(worst(&park, &tail), 3.0, "p99.9 / median:");
        x.goal = "p99.9 <= 3x median (bips park 1->1)";
        t.push(x);

        let fan = self
            .rows
            .iter()
            .filter(|r| r.kind == Kind::Latency && r.system == "bips" && r.fanout > 1)
            .map(|r| r.fanout)
            .max();
        let mut x = match fan {
            Some(n) => {
                let rows = lat("bips", "park", n);
                let mut x = span(
                    worst(&rows, &|r| {
                        self.find("bips", "park", 1, r.size)
                            .and_then(|one| ratio(r.lat.median, one.lat.median))
                    }),
                    1.5,
                    &format!("median 1->{n} / 1->1 (park):"),
                );
                x.measured = x.measured.replace("  ", " ");
                x
            }
            None => span(None, 1.5, ""),
        };
        x.goal = "1->4 median <= 1.5x 1->1";
        t.push(x);

        // Throughput: bips / iceoryx2 samples/s at 1->1, per size.
        let tp = |sys: &str, size: u64| {
            self.rows
                .iter()
                .find(|r| {
                    r.kind == Kind::Throughput && r.system == sys && r.fanout == 1 && r.size == size
                })
                .map(|r| r.samples_per_s)
        };
        let x: Vec<(f64, u64)> = sizes
            .iter()
            .filter_map(|&s| {
                let (b, i) = (tp("bips", s)?, tp("iceoryx2", s)?);
                (i > 0.0).then(|| (b / i, s))
            })
            .collect();
        let lowest = x.iter().copied().min_by(|a, b| a.0.total_cmp(&b.0));
        let highest = x.iter().map(|v| v.0).fold(f64::NEG_INFINITY, f64::max);
        t.push(match lowest {
            Some((lo, s)) => Target {
                goal: "throughput 1->1 >= 2x iceoryx2",
                measured: format!(
                    "bips / iceoryx2 samples/s: {lo:.2}x .. {highest:.2}x (lowest at {})",
                    fmt_size(s)
                ),
                met: Some(lo >= 2.0),
            },
            None => Target {
                goal: "throughput 1->1 >= 2x iceoryx2",
                measured: "not measured in this run".into(),
                met: None,
            },
        });
        t
    }

    /// The report as markdown: latency table, throughput table, targets.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(
            s,
            "Machine: {} ({} CPUs{}), kernel {}, load average {:.2} at start; rows took {:.1} s.\n",
            m.cpu_model,
            m.cpus,
            if m.virtualized { ", virtualized" } else { "" },
            m.kernel,
            m.load_start,
            self.took.as_secs_f64()
        );
        for n in &self.notes {
            let _ = writeln!(s, "- {n}");
        }
        if !self.notes.is_empty() {
            s.push('\n');
        }
        s.push_str(
            "One-way latency = half of each round trip (to the last answer when 1->N). \
             The writer stamps an 8-byte sequence header in the loaned buffer and the reader \
             checks it in place: the payload is never copied (uds copy: the kernel copies it \
             twice each way). `x floor` = median / the raw atomic (spin) or raw futex (park) \
             median at the same size; `pub->recv` = publish -> receive measured by the \
             consumers from the sample timestamp.\n\n",
        );
        s.push_str(
            "| payload | system | wait | 1->N | samples | median | p99 | p99.9 | max | x floor | x iceoryx2 | pub->recv median / p99.9 |\n\
             |---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in self.rows.iter().filter(|r| r.kind == Kind::Latency) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                fmt_size(r.size),
                r.system,
                r.wait,
                r.fanout,
                r.lat.n,
                fmt_ns(r.lat.median),
                fmt_ns(r.lat.p99),
                fmt_ns(r.lat.p999),
                fmt_ns(r.lat.max),
                r.floor_ratio.map_or("".into(), |x| format!("{x:.2}")),
                r.iox_ratio.map_or("".into(), |x| format!("{x:.2}")),
                r.ts.map_or("".into(), |t| format!(
                    "{} / {}",
                    fmt_ns(t.median),
                    fmt_ns(t.p999)
                )),
            );
        }
        if self.rows.iter().any(|r| r.kind == Kind::Throughput) {
            s.push_str(
                "\nThroughput: the producer publishes as fast as the consumers release (Block \
                 policy, 8 buffers); every consumer receives and checks every sample. \
                 No byte is copied: what that saves is the last column, one memcpy of the \
                 payload measured in the same run (the `memcpy` latency row), paid per sample \
                 and consumer by a copying transport.\n\n\
                 | payload | system | wait | 1->N | samples/s | one memcpy of the payload | errors |\n\
                 |---:|---|---|---:|---:|---:|---:|\n",
            );
            for r in self.rows.iter().filter(|r| r.kind == Kind::Throughput) {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {:.0} | {} | {} |",
                    fmt_size(r.size),
                    r.system,
                    r.wait,
                    r.fanout,
                    r.samples_per_s,
                    r.memcpy_ns.map_or("".into(), fmt_ns),
                    r.errors
                );
            }
        }
        s.push_str("\nTargets (issue 4; measured, never asserted):\n\n| target | this run | status |\n|---|---|---|\n");
        for t in self.targets() {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                t.goal,
                t.measured,
                match t.met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "n/a",
                }
            );
        }
        s
    }

    /// The rows as CSV (one header line).
    pub fn csv(&self) -> String {
        let mut s = String::from(
            "kind,system,wait,fanout,size_bytes,samples,median_ns,p99_ns,p999_ns,max_ns,mean_ns,\
             floor_ratio,iceoryx2_ratio,pubrecv_median_ns,pubrecv_p999_ns,samples_per_s,memcpy_ns,errors\n",
        );
        let opt = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.4}"));
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.1},{},{}",
                match r.kind {
                    Kind::Latency => "latency",
                    Kind::Throughput => "throughput",
                },
                r.system,
                r.wait,
                r.fanout,
                r.size,
                r.lat.n,
                r.lat.median,
                r.lat.p99,
                r.lat.p999,
                r.lat.max,
                r.lat.mean,
                opt(r.floor_ratio),
                opt(r.iox_ratio),
                r.ts.map_or(String::new(), |t| t.median.to_string()),
                r.ts.map_or(String::new(), |t| t.p999.to_string()),
                r.samples_per_s,
                r.memcpy_ns.map_or(String::new(), |n| n.to_string()),
                r.errors
            );
        }
        s
    }

    /// The whole run as JSON.
    pub fn json(&self) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let num = |x: Option<f64>| x.map_or("null".into(), |v| format!("{v:.4}"));
        let m = &self.machine;
        let mut s = String::from("{\n");
        let _ = writeln!(
            s,
            "  \"machine\": {{\"cpu_model\": {}, \"cpus\": {}, \"kernel\": {}, \"load_start\": {:.2}, \"virtualized\": {}}},",
            q(&m.cpu_model),
            m.cpus,
            q(&m.kernel),
            m.load_start,
            m.virtualized
        );
        let notes: Vec<String> = self.notes.iter().map(|n| q(n)).collect();
        let _ = writeln!(s, "  \"notes\": [{}],", notes.join(", "));
        let _ = writeln!(s, "  \"seconds\": {:.3},", self.took.as_secs_f64());
        s.push_str("  \"rows\": [\n");
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                let ts = r.ts.map_or("null".into(), |t| {
                    format!("{{\"median_ns\": {}, \"p999_ns\": {}, \"max_ns\": {}}}", t.median, t.p999, t.max)
                });
                format!(
                    "    {{\"kind\": {}, \"system\": {}, \"wait\": {}, \"fanout\": {}, \"size_bytes\": {}, \
                     \"samples\": {}, \"median_ns\": {}, \"p99_ns\": {}, \"p999_ns\": {}, \"max_ns\": {}, \
                     \"mean_ns\": {}, \"floor_ratio\": {}, \"iceoryx2_ratio\": {}, \"pub_recv\": {}, \
                     \"samples_per_s\": {:.1}, \"memcpy_ns\": {}, \"errors\": {}}}",
                    q(match r.kind {
                        Kind::Latency => "latency",
                        Kind::Throughput => "throughput",
                    }),
                    q(r.system),
                    q(r.wait),
                    r.fanout,
                    r.size,
                    r.lat.n,
                    r.lat.median,
                    r.lat.p99,
                    r.lat.p999,
                    r.lat.max,
                    r.lat.mean,
                    num(r.floor_ratio),
                    num(r.iox_ratio),
                    ts,
                    r.samples_per_s,
                    r.memcpy_ns.map_or("null".into(), |n| n.to_string()),
                    r.errors
                )
            })
            .collect();
        s.push_str(&rows.join(",\n"));
        s.push_str("\n  ],\n  \"targets\": [\n");
        let targets: Vec<String> = self
            .targets()
            .iter()
            .map(|t| {
                format!(
                    "    {{\"goal\": {}, \"measured\": {}, \"met\": {}}}",
                    q(t.goal),
                    q(&t.measured),
                    t.met.map_or("null".into(), |b| b.to_string())
                )
            })
            .collect();
        s.push_str(&targets.join(",\n"));
        s.push_str("\n  ]\n}\n");
        s
    }

    /// Writes results.md, results.csv and results.json into `dir`.
    pub fn write_files(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::write(dir.join("results.md"), self.markdown())?;
        std::fs::write(dir.join("results.csv"), self.csv())?;
        std::fs::write(dir.join("results.json"), self.json())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(median: u64) -> Summary {
        Summary {
            n: 100,
            median,
            p99: median * 2,
            p999: median * 4,
            max: median * 10,
            mean: median,
        }
    }

    #[test]
    fn ratios_and_targets() {
        let rows = vec![
            Row::latency("raw atomic", "spin", 1, 64, s(100)),
            Row::latency("bips", "spin", 1, 64, s(120)),
            Row::latency("iceoryx2", "spin", 1, 64, s(500)),
            Row::latency("raw atomic", "spin", 1, 4096, s(100)),
            Row::latency("bips", "spin", 1, 4096, s(160)),
            Row::latency("raw futex", "park", 1, 64, s(1000)),
            Row::latency("bips", "park", 1, 64, s(1100)),
            Row::latency("bips", "park", 4, 64, s(2000)),
            Row::throughput("bips", "spin", 1, 64, 1e6, 0),
        ];
        let mut r = Report::new(Machine::default(), vec![], rows, Duration::from_secs(1));
        r.compute_ratios();
        let b = r.find("bips", "spin", 1, 64).unwrap();
        assert_eq!(b.floor_ratio, Some(1.2));
        assert!((b.iox_ratio.unwrap() - 0.24).abs() < 1e-9);
        let t = r.targets();
        assert_eq!(t[0].met, Some(false), "{:?}", t[0]); // 1.6x at 4 KiB
        assert_eq!(t[1].met, Some(true));
        assert_eq!(t[2].met, Some(false)); // 160 vs 120
        assert_eq!(t[4].met, Some(true)); // 1.1x futex
        assert_eq!(t[5].met, Some(false)); // p99.9 = 4x median
        assert_eq!(t[7].met, Some(false)); // 2000 / 1100
        let md = r.markdown();
        assert!(md.contains("| 64 B | bips | spin | 1 |"));
        assert!(r.csv().lines().count() == 10);
        assert!(r.json().contains("\"targets\""));
    }
}
