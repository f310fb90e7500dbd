//! `bips metrics`: the collector's figures in the Prometheus text exposition
//! format (version 0.0.4) on `http://ADDR/metrics`, over a plain
//! `std::net::TcpListener` (one request per connection, one at a time; a
//! client gets 2 s to send its request). Every scrape takes a fresh
//! read-only snapshot; counters are totals, so Prometheus computes rates
//! (`rate(bips_samples_published_total[1m])`).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use super::collect::{self, ChannelStats};
use super::MetricsArgs;
use crate::{signals, Failure};

/// Serves until SIGINT/SIGTERM/SIGHUP, then ends by that signal.
pub fn run(a: &MetricsArgs) -> Result<(), Failure> {
    signals::install().map_err(|e| Failure::new(1, format!("cannot catch signals: {e}")))?;
    let listener = TcpListener::bind(a.listen)
        .map_err(|e| Failure::new(1, format!("cannot listen on {}: {e}", a.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::new(1, format!("cannot listen on {}: {e}", a.listen)))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Failure::new(1, format!("cannot listen on {addr}: {e}")))?;
    println!("bips metrics: serving http://{addr}/metrics (Ctrl-C stops)");
    let _ = std::io::stdout().flush();
    loop {
        if let Some(sig) = signals::pending() {
            drop(listener);
            let e: Box<dyn std::error::Error> = Box::new(signals::Interrupted(sig));
            return Err(e.into());
        }
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = serve(stream, &a.patterns) {
                    eprintln!("bips metrics: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // EMFILE and the like: back off, keep serving.
            Err(e) => {
                eprintln!("bips metrics: accept: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Answers one HTTP request.
fn serve(mut s: TcpStream, patterns: &[String]) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&req);
    let mut parts = line.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => match collect::snapshot(patterns) {
            Ok(snap) => (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                exposition(&collect::derive(None, &snap, None)),
            ),
            Err(f) => (
                "500 Internal Server Error",
                "text/plain; charset=utf-8",
                format!("{}\n", f.msg),
            ),
        },
        ("GET" | "HEAD", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "bips metrics: see /metrics\n".to_owned(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: the metrics are at /metrics\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET /metrics\n".to_owned(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    if method != "HEAD" {
        s.write_all(body.as_bytes())?;
    }
    s.flush()
}

/// A label value, escaped as the text format wants (`\`, `"`, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: HELP, TYPE, then a sample per (labels, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
    }
}

fn b(v: bool) -> String {
    u8::from(v).to_string()
}

/// The exposition of `stats` (metric names: README, "Metrics").
pub fn exposition(stats: &[ChannelStats]) -> String {
    let ch = |c: &ChannelStats| format!("channel=\"{}\"", esc(&c.name));
    let per = |f: &dyn Fn(&ChannelStats) -> Option<String>| -> Vec<(String, String)> {
        stats
            .iter()
            .filter_map(|c| f(c).map(|v| (ch(c), v)))
            .collect()
    };
    let readable = |c: &ChannelStats| c.error.is_none();
    let per_consumer = |f: &dyn Fn(&collect::ConsumerStats) -> String| -> Vec<(String, String)> {
        stats
            .iter()
            .flat_map(|c| {
                c.consumers
                    .iter()
                    .map(move |k| (format!("{},consumer=\"{}\"", ch(c), k.index), f(k)))
            })
            .collect()
    };
    let mut o = String::new();
    family(
        &mut o,
        "bips_channel_info",
        "gauge",
        "A bips channel on this machine (always 1), with its backend, backpressure policy and state (open, closed, stale, unreadable).",
        &stats
            .iter()
            .map(|c| {
                (
                    format!(
                        "{},backend=\"{}\",policy=\"{}\",state=\"{}\"",
                        ch(c),
                        c.backend.unwrap_or(""),
                        c.policy.unwrap_or(""),
                        c.state
                    ),
                    "1".to_owned(),
                )
            })
            .collect::<Vec<_>>(),
    );
    family(
        &mut o,
        "bips_channel_readable",
        "gauge",
        "Whether the channel's segment could be read (1) or not (0).",
        &per(&|c| Some(b(readable(c)))),
    );
    family(
        &mut o,
        "bips_producer_alive",
        "gauge",
        "Whether a process holds the channel's producer liveness lock (1) or not (0).",
        &per(&|c| Some(b(c.producer_alive))),
    );
    family(
        &mut o,
        "bips_samples_published_total",
        "counter",
        "Samples the producer published (the channel's head sequence).",
        &per(&|c| readable(c).then(|| c.published.to_string())),
    );
    family(
        &mut o,
        "bips_newest_sample_age_seconds",
        "gauge",
        "Now minus the publish timestamp of the newest sample (CLOCK_MONOTONIC, unless the producer sets its own timestamps).",
        &per(&|c| c.newest_age_ns.map(|n| (n as f64 / 1e9).to_string())),
    );
    family(
        &mut o,
        "bips_buffers",
        "gauge",
        "Buffers of the channel's pool, by state: free (in the producer's pool), loaned (being written), published (retained), retired (past the tail, still held by a consumer).",
        &stats
            .iter()
            .filter(|c| readable(c))
            .flat_map(|c| {
                [
                    ("free", c.free),
                    ("loaned", c.loaned),
                    ("published", c.published_buffers),
                    ("retired", c.retired),
                ]
                .map(|(s, n)| (format!("{},state=\"{s}\"", ch(c)), n.to_string()))
            })
            .collect::<Vec<_>>(),
    );
    family(
        &mut o,
        "bips_buffers_available",
        "gauge",
        "Buffers the producer can loan without waiting: free ones plus retained ones it may recycle at once (an estimate from one look).",
        &per(&|c| readable(c).then(|| c.available.to_string())),
    );
    family(
        &mut o,
        "bips_samples_held",
        "gauge",
        "Samples held by the channel's consumers, summed over entries.",
        &per(&|c| readable(c).then(|| c.held.to_string())),
    );
    family(
        &mut o,
        "bips_consumers",
        "gauge",
        "Live consumers of the channel (liveness lock held).",
        &per(&|c| readable(c).then(|| c.consumers_alive.to_string())),
    );
    family(
        &mut o,
        "bips_consumers_max",
        "gauge",
        "Consumer entries of the channel (its maximum number of consumers).",
        &per(&|c| readable(c).then(|| c.max_consumers.to_string())),
    );
    family(
        &mut o,
        "bips_consumer_alive",
        "gauge",
        "Whether the process of this consumer entry lives (1) or died and awaits reclaim (0).",
        &per_consumer(&|k| b(k.alive)),
    );
    family(
        &mut o,
        "bips_consumer_lag",
        "gauge",
        "Published samples the consumer has not received yet (head - cursor).",
        &per_consumer(&|k| k.lag.to_string()),
    );
    family(
        &mut o,
        "bips_consumer_held",
        "gauge",
        "Samples the consumer holds right now.",
        &per_consumer(&|k| k.held.to_string()),
    );
    family(
        &mut o,
        "bips_consumer_received_total",
        "counter",
        "Samples the consumer received.",
        &per_consumer(&|k| k.received.to_string()),
    );
    family(
        &mut o,
        "bips_consumer_lost_total",
        "counter",
        "Samples the consumer lost to DropOldest (reported to it as lagged).",
        &per_consumer(&|k| k.lost.to_string()),
    );
    o
}
