//! `bips list`, `bips inspect`, `bips clean`: read-only views of the channels
//! in /dev/shm, and removal of the ones nobody uses any more.
//!
//! Everything here goes through `bips::monitor`. Looking (`list`, `inspect`)
//! opens a segment read-only and maps it `PROT_READ`: it needs read permission
//! only, takes no liveness lock and claims no consumer entry, so it never
//! disturbs a running channel. Cleaning takes a segment's producer lock for
//! the instant of its check and removal (T1).

use std::time::Duration;

use bips::monitor::{self, ChannelInfo};
use clap::Args;
use serde_json::{json, Value};

use crate::Failure;

/// A staging object (`bips..new-*`) younger than this may be a producer
/// still creating its channel: `clean` leaves it alone.
const CREATION_GRACE: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print JSON (an array of channel objects) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Channel name (as given to Producer::create; the object is /dev/shm/bips.NAME).
    name: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct CleanArgs {
    /// Only say what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// Only consider these channels (default: every bips channel in /dev/shm).
    names: Vec<String>,
    /// Print JSON ({"removed": [...], "kept": [...], "errors": [...]}).
    #[arg(long)]
    json: bool,
}

/// Where channel `name` lives: `/dev/shm/bips.<name>`, or its memfd
/// socket in the socket directory when only that exists.
fn path(name: &str) -> String {
    let shm = format!("/dev/shm/bips.{name}");
    let sock = bips::socket_dir(None).join(format!("bips.{name}.sock"));
    if std::fs::symlink_metadata(&shm).is_err() && std::fs::symlink_metadata(&sock).is_ok() {
        return sock.display().to_string();
    }
    shm
}

fn policy(info: &ChannelInfo) -> &'static str {
    match info.geometry.policy {
        bips::Backpressure::Block => "block",
        bips::Backpressure::DropOldest => "drop-oldest",
    }
}

fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn names() -> Result<Vec<String>, Failure> {
    bips::list_channels().map_err(|e| Failure::new(1, format!("cannot read /dev/shm: {e}")))
}

fn info_json(i: &ChannelInfo) -> Value {
    let g = &i.geometry;
    json!({
        "name": i.name,
        "path": path(&i.name),
        "size_bytes": i.size_bytes,
        "owner_uid": i.owner_uid,
        "epoch": i.epoch,
        "geometry": {
            "buffers": g.buffer_count,
            "buffer_size": g.buffer_size,
            "alignment": g.alignment,
            "ring_capacity": g.ring_capacity,
            "max_consumers": g.max_consumers,
            "meta_size": g.meta_size,
            "max_held": g.max_held,
        },
        "policy": policy(i),
        "backend": backend(i),
        "payload_type": i.payload_type.as_ref().map(payload_json),
        "head": i.head,
        "tail": i.tail,
        "closed": i.closed,
        "producer_alive": i.producer_alive,
        "consumers_alive": i.consumers.iter().filter(|c| c.alive).count(),
        "consumers": i.consumers.iter().map(|c| json!({
            "index": c.index,
            "active": c.active,
            "alive": c.alive,
            "cursor": c.cursor,
            "lag": c.lag,
            "lost": c.lost,
            "received": c.received,
            "held": c.held,
            "sleeping": c.sleeping,
        })).collect::<Vec<_>>(),
        "buffer_states": i.buffer_states,
    })
}

fn payload_json(t: &bips::PayloadType) -> Value {
    json!({
        "name": t.name(),
        "version": t.version(),
        "descriptor": t.descriptor().map(|d| json!({
            "dtype": d.dtype().name(),
            "shape": d.shape(),
            "strides": d.strides(),
            "offset": d.offset(),
            "format": d.format(),
            "colorimetry": d.colorimetry(),
            "planes": d.planes().iter().map(|p| json!({
                "offset": p.offset, "stride": p.stride, "rows": p.rows, "row_bytes": p.row_bytes,
            })).collect::<Vec<_>>(),
        })),
    })
}

fn backend(i: &ChannelInfo) -> &'static str {
    match i.backend {
        bips::Backend::Memfd => "memfd",
        _ => "shm",
    }
}

/// `TYPE` column of `bips list`: `image/rgb8 v1`, or `-`.
fn type_cell(i: &ChannelInfo) -> String {
    i.payload_type.as_ref().map_or_else(
        || "-".to_owned(),
        |t| format!("{} v{}", t.name(), t.version()),
    )
}

/// `bips list`.
pub fn list(a: ListArgs) -> Result<(), Failure> {
    let names = names()?;
    let snaps: Vec<(String, Result<ChannelInfo, bips::Error>)> = names
        .into_iter()
        .map(|n| {
            let r = monitor::inspect(&n);
            (n, r)
        })
        // Removed between the directory listing and the look: not a channel any more.
        .filter(|(_, r)| !matches!(r, Err(bips::Error::NotFound { .. })))
        .collect();
    if a.json {
        let v: Vec<Value> = snaps
            .iter()
            .map(|(n, r)| match r {
                Ok(i) => info_json(i),
                Err(e) => json!({"name": n, "path": path(n), "error": e.to_string()}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    if snaps.is_empty() {
        println!("no bips channels in /dev/shm");
        return Ok(());
    }
    println!(
        "{:<28} {:>18} {:>5} {:>12} {:>8} {:>9} {:>10} {:>10} {:>7}  TYPE",
        "NAME",
        "BUFFERS x SIZE",
        "RING",
        "POLICY",
        "PRODUCER",
        "CONSUMERS",
        "SIZE",
        "STATE",
        "BACKEND"
    );
    for (n, r) in &snaps {
        match r {
            Ok(i) => {
                let g = &i.geometry;
                let alive = i.consumers.iter().filter(|c| c.alive).count();
                let state = if i.closed {
                    "closed"
                } else if i.producer_alive {
                    "open"
                } else {
                    "stale"
                };
                println!(
                    "{:<28} {:>18} {:>5} {:>12} {:>8} {:>9} {:>10} {:>10} {:>7}  {}",
                    n,
                    format!("{} x {}", g.buffer_count, human_bytes(g.buffer_size)),
                    g.ring_capacity,
                    policy(i),
                    if i.producer_alive { "alive" } else { "dead" },
                    format!("{alive}/{}", g.max_consumers),
                    human_bytes(i.size_bytes),
                    state,
                    backend(i),
                    type_cell(i)
                );
            }
            Err(bips::Error::Disconnected) => println!(
                "{n:<28} (stale memfd channel: its producer died; `bips clean` removes the socket)"
            ),
            Err(e) => println!("{n:<28} (unreadable: {e})"),
        }
    }
    println!(
        "\nstale = producer gone and nobody closed it; `bips clean` removes channels nobody uses."
    );
    Ok(())
}

/// Flags an owner other than us: our consumers would refuse it by default.
fn owner_note(owner: u32) -> String {
    let me = bips::trust::effective_uid();
    if owner == me {
        String::new()
    } else {
        format!(
            " (NOT this user's uid {me}: consumers of uid {me} refuse it unless told to \
             trust uid {owner}, e.g. ConsumerOptions::trust_owner({owner}))"
        )
    }
}

/// `bips inspect NAME`.
pub fn inspect(a: InspectArgs) -> Result<(), Failure> {
    let i = monitor::inspect(&a.name).map_err(|e| match e {
        bips::Error::NotFound { .. } => Failure::new(
            3,
            format!(
                "no channel {:?} ({} does not exist); `bips list` shows the channels",
                a.name,
                path(&a.name)
            ),
        ),
        bips::Error::InvalidName { .. } => Failure::new(2, e.to_string()),
        e => Failure::new(1, format!("cannot inspect {:?}: {e}", a.name)),
    })?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&info_json(&i)).unwrap_or_default()
        );
        return Ok(());
    }
    let g = &i.geometry;
    println!("channel {}  ({})", i.name, path(&i.name));
    println!(
        "  size       {} ({} bytes), epoch {:#x}",
        human_bytes(i.size_bytes),
        i.size_bytes,
        i.epoch
    );
    println!(
        "  geometry   {} buffers x {} B (alignment {}), ring {}, max {} consumers, {} B metadata, \
         max {} held per consumer",
        g.buffer_count,
        g.buffer_size,
        g.alignment,
        g.ring_capacity,
        g.max_consumers,
        g.meta_size,
        g.max_held
    );
    println!(
        "  owner      uid {}{}",
        i.owner_uid,
        owner_note(i.owner_uid)
    );
    println!("  policy     {}", policy(&i));
    println!("  backend    {}", backend(&i));
    match &i.payload_type {
        Some(t) => println!("  type       {t}"),
        None => println!("  type       none declared"),
    }
    println!(
        "  producer   {}{}",
        if i.producer_alive {
            "alive"
        } else {
            "DEAD (no process holds its liveness lock)"
        },
        if i.closed { ", channel closed" } else { "" }
    );
    println!(
        "  sequences  head {} (next to publish), tail {} (oldest retained): {} retained",
        i.head,
        i.tail,
        i.head.saturating_sub(i.tail)
    );
    if i.consumers.is_empty() {
        println!("  consumers  none attached");
    } else {
        println!(
            "  consumers  {:>5} {:>6} {:>6} {:>10} {:>8} {:>5} {:>8} {:>10} {:>8}",
            "entry", "alive", "active", "cursor", "lag", "held", "lost", "received", "sleeping"
        );
        for c in &i.consumers {
            println!(
                "             {:>5} {:>6} {:>6} {:>10} {:>8} {:>5} {:>8} {:>10} {:>8}",
                c.index,
                if c.alive { "yes" } else { "DEAD" },
                if c.active { "yes" } else { "no" },
                c.cursor,
                c.lag,
                c.held,
                c.lost,
                c.received,
                if c.sleeping { "yes" } else { "no" }
            );
        }
    }
    let count = |s: &str| i.buffer_states.iter().filter(|&&b| b == s).count();
    println!(
        "  buffers    free {}, loaned {}, published {}, retired {}{}",
        count("free"),
        count("loaned"),
        count("published"),
        count("retired"),
        match count("invalid") {
            0 => String::new(),
            n => format!(", INVALID {n}"),
        }
    );
    if i.buffer_states.len() <= 64 {
        let line: Vec<String> = i
            .buffer_states
            .iter()
            .enumerate()
            .map(|(k, s)| format!("{k}:{s}"))
            .collect();
        println!("             {}", line.join(" "));
    }
    Ok(())
}

/// `bips clean`.
pub fn clean(a: CleanArgs) -> Result<(), Failure> {
    let all = names()?;
    let targets: Vec<String> = if a.names.is_empty() {
        all
    } else {
        for n in &a.names {
            if let Err(e @ bips::Error::InvalidName { .. }) = monitor::has_live_participants(n) {
                return Err(Failure::new(2, e.to_string()));
            }
        }
        a.names.clone()
    };
    let (mut removed, mut kept, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for n in &targets {
        // Said before the sweep: a removed memfd socket is no longer there to find.
        let place = path(n);
        // T1: `sweep` removes an object only while holding its producer
        // lock, having seen no consumer lock; it says what it found. No
        // object under a channel's name is ever "being created" (producers
        // create under a staging name and rename when complete), so an
        // unlocked, unreadable one is dead and removed too.
        match monitor::sweep(n, a.dry_run) {
            Ok(monitor::Sweep::Removed { what }) => removed.push((n.clone(), what, place)),
            Ok(monitor::Sweep::Gone) => {
                if !a.names.is_empty() {
                    errors.push((n.clone(), "no such channel".to_string()));
                }
            }
            Ok(other) => kept.push((n.clone(), other.to_string())),
            Err(bips::Error::NotFound { .. }) => {}
            Err(e) => errors.push((n.clone(), e.to_string())),
        }
    }
    // Staging objects of producers that died while creating a channel (only
    // in a sweep of everything, not when channels are named).
    let staging = if a.names.is_empty() {
        monitor::remove_stale_staging(CREATION_GRACE, a.dry_run).unwrap_or_else(|e| {
            errors.push(("(staging objects)".to_string(), e.to_string()));
            Vec::new()
        })
    } else {
        Vec::new()
    };
    if a.json {
        let v = json!({
            "dry_run": a.dry_run,
            "removed": removed.iter().map(|(n, _, _)| n).collect::<Vec<_>>(),
            "removed_what": removed.iter().map(|(n, what, place)| json!({"name": n, "what": what, "path": place})).collect::<Vec<_>>(),
            "staging_removed": staging,
            "kept": kept.iter().map(|(n, why)| json!({"name": n, "why": why})).collect::<Vec<_>>(),
            "errors": errors.iter().map(|(n, e)| json!({"name": n, "error": e})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        let verb = if a.dry_run { "would remove" } else { "removed" };
        for (_, what, place) in &removed {
            println!("{verb} {place} ({what})");
        }
        for f in &staging {
            println!("{verb} /dev/shm/{f} (left by a producer that died while creating)");
        }
        for (n, why) in &kept {
            println!("kept {} ({why})", path(n));
        }
        for (n, e) in &errors {
            eprintln!("bips clean: {n}: {e}");
        }
        println!(
            "{} {} channel(s), kept {}{}",
            verb,
            removed.len(),
            kept.len(),
            if errors.is_empty() {
                String::new()
            } else {
                format!(", {} error(s)", errors.len())
            }
        );
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(
            1,
            format!("{} channel(s) could not be checked", errors.len()),
        ))
    }
}
