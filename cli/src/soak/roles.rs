//! The child processes: the producer and consumer roles.

use super::*;

/// A flag set when our stdin reaches EOF (the coordinator's stop order).
pub(super) fn stop_on_stdin_eof() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        s.store(true, Ordering::Release);
    });
    stop
}

pub(super) fn say(line: std::fmt::Arguments<'_>) {
    // Line-buffered stdout: every line is written to the pipe at once.
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// The producer role: create (replacing a stale segment), publish
/// self-checking payloads of varying length until stdin closes.
pub fn producer(a: ChildArgs) -> Result<(), BoxError> {
    let stop = stop_on_stdin_eof();
    let inc = a.id;
    let mut rng = Rng::new(a.seed ^ mix64(inc) ^ 0x9D0D);
    let opts = Options::new(BUFFERS, BUF_SIZE)
        .backpressure(a.policy.into())
        .max_consumers(MAX_CONSUMERS)
        .meta_size(16);
    // A signal to the process group (Ctrl-C) reaches us too: remove the
    // channel before dying (SIGKILL, the chaos, is the coordinator's to clean).
    bips::cleanup_on_signals()?;
    let p = Producer::create(&a.channel, &opts)
        .map_err(|e| format!("producer incarnation {inc}: create: {e}"))?;
    say(format_args!("READY {inc}"));
    let cap = p.buffer_size();
    let corrupt = inject("corrupt");
    let mut published = 0u64;
    let mut last_report = Instant::now();
    while !stop.load(Ordering::Acquire) {
        // Now and then a pause, so consumers drain and go to sleep on the
        // futex (wake-ups get exercised, not only the spinning path).
        if rng.one_in(4000) {
            std::thread::sleep(Duration::from_micros(rng.range(100, 5000)));
        }
        let mut s = match p.loan_timeout(STALL_AFTER) {
            Ok(s) => s,
            Err(Error::Timeout) => {
                say(format_args!("STALL"));
                continue;
            }
            Err(e) => return Err(format!("producer incarnation {inc}: loan: {e}").into()),
        };
        let len = draw_len(&mut rng, cap);
        let seq = published; // this incarnation's stream starts at 0
        write_payload(s.as_mut_slice(), len, inc, seq);
        if corrupt && rng.one_in(2_000) {
            s.as_mut_slice()[len / 2] ^= 0x20;
        }
        s.set_len(len);
        s.meta_mut()[..8].copy_from_slice(&seq.to_le_bytes());
        s.meta_mut()[8..16].copy_from_slice(&epoch_word(inc).to_le_bytes());
        let got = s
            .publish()
            .map_err(|e| format!("producer incarnation {inc}: publish: {e}"))?;
        if got != seq {
            return Err(
                format!("producer incarnation {inc}: published seq {got}, expected {seq}").into(),
            );
        }
        published += 1;
        if last_report.elapsed() >= REPORT_EVERY {
            say(format_args!("STAT {published}"));
            last_report = Instant::now();
        }
    }
    say(format_args!("FINAL {published}"));
    drop(p); // closes the channel and removes its name
    Ok(())
}

/// What one consumer process counted (cumulative over its sessions).
#[derive(Default)]
pub(super) struct Counts {
    pub(super) received: u64,
    pub(super) dropped: u64,
    pub(super) sessions: u64,
}

/// The consumer role: open, receive and check, detach and reopen now and
/// then, reopen after `Disconnected`, until stdin closes (then finish the
/// current session up to `Disconnected`).
pub fn consumer(a: ChildArgs) -> Result<(), BoxError> {
    let stop = stop_on_stdin_eof();
    let policy: Backpressure = a.policy.into();
    let mut rng = Rng::new(a.seed ^ mix64(a.id) ^ bips::now_ns());
    let skip = inject("skip");
    let mut n = Counts::default();
    let mut last_report = Instant::now();
    let report = |n: &Counts, kind: &str| {
        say(format_args!(
            "{kind} {} {} {}",
            n.received, n.dropped, n.sessions
        ))
    };
    loop {
        if stop.load(Ordering::Acquire) {
            break;
        }
        if last_report.elapsed() >= REPORT_EVERY {
            report(&n, "STAT");
            last_report = Instant::now();
        }
        let start = match rng.below(3) {
            0 => Start::Newest,
            1 => Start::Oldest,
            _ => Start::Next,
        };
        let wait = if rng.one_in(2) {
            WaitStrategy::Park
        } else {
            WaitStrategy::default()
        };
        let opts = ConsumerOptions::new().start(start).wait(wait);
        let c = match Consumer::open_with(&a.channel, &opts) {
            Ok(c) => c,
            // The producer is restarting: not there yet, dead, or its
            // segment half-made (killed while creating it).
            Err(
                e @ (Error::NotFound { .. }
                | Error::Disconnected
                | Error::Layout { .. }
                | Error::Io { .. }
                | Error::TooManyConsumers { .. }),
            ) => {
                let kind = format!("{e:?}");
                let kind = kind
                    .split(|c: char| !c.is_alphanumeric())
                    .next()
                    .unwrap_or("?");
                say(format_args!("OPENERR {kind}"));
                std::thread::sleep(Duration::from_millis(rng.range(2, 10)));
                continue;
            }
            Err(e) => return Err(format!("consumer {}: open: {e}", a.id).into()),
        };
        let entry = i64::from(c.entry_index());
        say(format_args!("ATTACH {entry}"));
        n.sessions += 1;
        // Detach of our own accord after a while (70% of sessions).
        let until =
            (!rng.one_in(3)).then(|| Instant::now() + Duration::from_millis(rng.range(100, 3000)));
        let polling = rng.one_in(4); // try_recv + short sleeps instead of recv
        let hold_prev = rng.one_in(2); // keep the previous sample while reading the next
        let mut prev = None;
        let mut last_seq: Option<u64> = None;
        let mut session_inc: Option<u64> = None;
        let mut why = "voluntary";
        loop {
            if last_report.elapsed() >= REPORT_EVERY {
                report(&n, "STAT");
                last_report = Instant::now();
            }
            if !stop.load(Ordering::Acquire) && until.is_some_and(|u| Instant::now() >= u) {
                break;
            }
            let r = if polling {
                match c.try_recv() {
                    Ok(Some(s)) => Ok(s),
                    Ok(None) => {
                        std::thread::sleep(Duration::from_micros(50));
                        continue;
                    }
                    Err(e) => Err(e),
                }
            } else {
                c.recv_timeout(Duration::from_millis(100))
            };
            let s = match r {
                Ok(s) => s,
                Err(Error::Timeout) => continue,
                Err(Error::Disconnected) => {
                    why = "disconnected";
                    break;
                }
                Err(Error::Corrupt { what }) => {
                    say(format_args!("CORRUPT recv: {what}"));
                    why = "corrupt";
                    break;
                }
                Err(e) => return Err(format!("consumer {}: recv: {e}", a.id).into()),
            };
            if skip && last_seq.is_some() && rng.one_in(2_000) {
                continue; // self-test: as if this sample had not arrived
            }
            let seq = s.seq();
            let lagged = s.lagged();
            match check_payload(s.as_slice(), seq) {
                Ok(inc) => {
                    if s.meta()[..8] != seq.to_le_bytes()
                        || s.meta()[8..16] != epoch_word(inc).to_le_bytes()
                    {
                        say(format_args!("CORRUPT seq {seq}: metadata does not match"));
                    }
                    match session_inc {
                        None => {
                            session_inc = Some(inc);
                            say(format_args!("SESSION {inc} {}", bips::now_ns()));
                        }
                        Some(si) if si != inc => say(format_args!(
                            "CORRUPT seq {seq}: from producer incarnation {inc} in a session of {si} (stale)"
                        )),
                        Some(_) => {}
                    }
                }
                Err(why) => say(format_args!("CORRUPT {why}")),
            }
            match last_seq {
                Some(l) if seq <= l => {
                    say(format_args!("S4 seq {seq} after {l}"));
                }
                Some(l) => {
                    let gap = seq - l - 1;
                    match policy {
                        Backpressure::Block => {
                            if gap > 0 || lagged > 0 {
                                say(format_args!(
                                    "LOST {} seq {seq} after {l}, lagged {lagged}",
                                    gap.max(lagged)
                                ));
                            }
                        }
                        _ => {
                            if gap != lagged {
                                say(format_args!(
                                    "S4 seq {seq} after {l}: gap {gap} reported as lagged {lagged}"
                                ));
                            }
                        }
                    }
                }
                None => {
                    if policy == Backpressure::Block && lagged > 0 {
                        say(format_args!(
                            "LOST {lagged} first seq {seq} of the session, lagged {lagged}"
                        ));
                    }
                }
            }
            last_seq = Some(seq);
            n.received += 1;
            n.dropped += lagged;
            // Now and then a slow spell: DropOldest consumers fall behind,
            // Block ones pace the producer.
            if rng.one_in(500) {
                std::thread::sleep(Duration::from_micros(rng.range(200, 10_000)));
            }
            if hold_prev {
                prev = Some(s); // releases the one before
            } else {
                drop(s);
            }
        }
        drop(prev);
        // How the session ended, for the coordinator's tail check (a
        // session ended by `Disconnected` must have drained the stream).
        if let (Some(inc), Some(last)) = (session_inc, last_seq) {
            say(format_args!("END {inc} {last} {why}"));
        }
        say(format_args!("DETACHING"));
        drop(c);
    }
    report(&n, "FINAL");
    Ok(())
}
