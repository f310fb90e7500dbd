//! The coordinator: starts, kills and restarts children, follows their lines
//! and measures reclaim and recovery (one `Phase` per policy).

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    Producer { inc: u64 },
    Consumer { slot: usize },
}

impl Role {
    pub(super) fn describe(self, key: usize) -> String {
        match self {
            Role::Producer { inc } => format!("producer #{inc}"),
            Role::Consumer { slot } => format!("consumer {slot} (child {key})"),
        }
    }
}

/// A running child process.
pub(super) struct Kid {
    pub(super) role: Role,
    pub(super) child: Child,
    pub(super) stdin: Option<ChildStdin>,
    pub(super) reader: Option<JoinHandle<()>>,
}

/// What the coordinator knows of a child (kept after it ends, for the tally).
pub(super) struct KidState {
    pub(super) role: Role,
    /// (received, dropped, sessions) of a consumer, (published, 0, 0) of a
    /// producer: as last reported.
    pub(super) counts: (u64, u64, u64),
    /// Consumer entry of its current session, and when we learnt of it.
    pub(super) entry: Option<(u32, Instant)>,
    /// When we learnt of its current session's first sample.
    pub(super) session_at: Option<Instant>,
    pub(super) ready: bool,
}

/// A consumer session that ended by `Disconnected`.
pub(super) struct End {
    pub(super) who: String,
    pub(super) inc: u64,
    pub(super) last_seq: u64,
    /// When we learnt of the session's first sample.
    pub(super) began: Option<Instant>,
}

/// A line from child `key`.
pub(super) struct Line {
    pub(super) key: usize,
    pub(super) text: String,
}

/// Kills (SIGKILL) and reaps every child still running, and removes this
/// run's channels, whatever happened.
pub(super) struct Cleanup {
    pub(super) prefix: String,
    pub(super) kids: Vec<Kid>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for k in &mut self.kids {
            let _ = k.child.kill();
            let _ = k.child.wait();
        }
        remove_channels(&self.prefix);
    }
}

/// Removes `/dev/shm/bips.<prefix>*`; answers how many there were.
pub(super) fn remove_channels(prefix: &str) -> u64 {
    let want = format!("bips.{prefix}");
    let mut n = 0;
    if let Ok(dir) = std::fs::read_dir("/dev/shm") {
        for e in dir.flatten() {
            if e.file_name().to_str().is_some_and(|f| f.starts_with(&want)) {
                n += 1;
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    n
}

pub(super) fn policy_name(p: PolicyArg) -> &'static str {
    match p {
        PolicyArg::Block => "block",
        PolicyArg::DropOldest => "drop-oldest",
    }
}

/// Progress on stderr.
pub(super) fn note(msg: impl AsRef<str>) {
    eprintln!("soak: {}", msg.as_ref());
}

/// A reclaim being watched: a killed consumer's entry.
pub(super) struct Watch {
    pub(super) entry: u32,
    pub(super) killed_at: Instant,
    pub(super) epoch: u64,
}

/// One policy's run.
pub(super) struct Phase {
    pub(super) policy: PolicyArg,
    pub(super) channel: String,
    pub(super) seed: u64,
    pub(super) consumers: usize,
    pub(super) kill_every: Option<Duration>,
    pub(super) producer_restarts: u32,
    pub(super) rng: Rng,
    pub(super) tx: mpsc::Sender<Line>,
    pub(super) rx: mpsc::Receiver<Line>,
    pub(super) next_key: usize,
    pub(super) kids: HashMap<usize, Kid>,
    pub(super) state: HashMap<usize, KidState>,
    pub(super) tally: Tally,
    /// Consumer slot -> key of its current process (None while it waits
    /// for its respawn).
    pub(super) slots: Vec<Option<usize>>,
    pub(super) respawn: Vec<(usize, Instant)>,
    pub(super) producer: Option<usize>,
    pub(super) inc: u64,
    pub(super) last_restart: Option<Instant>,
    /// (incarnation, CLOCK_MONOTONIC ns of the previous one's kill, when).
    pub(super) recovering: Vec<(u64, u64, Instant)>,
    pub(super) watch: Option<Watch>,
    /// Per producer incarnation: (published as last reported, when we
    /// learnt it, whether that was its FINAL count).
    pub(super) streams: HashMap<u64, (u64, Instant, bool)>,
    pub(super) ends: Vec<End>,
}

impl Phase {
    pub(super) fn spawn(&mut self, role: Role) -> Result<usize, BoxError> {
        let key = self.next_key;
        self.next_key += 1;
        let (sub, id) = match role {
            Role::Producer { inc } => ("__soak-producer", inc),
            Role::Consumer { slot } => ("__soak-consumer", slot as u64),
        };
        let mut child = Command::new(std::env::current_exe()?)
            .arg(sub)
            .args(["--channel", &self.channel])
            .args(["--policy", policy_name(self.policy)])
            .args(["--id", &id.to_string()])
            .args(["--seed", &self.seed.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let out = child.stdout.take().expect("piped");
        let tx = self.tx.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(text) = line else { break };
                if tx.send(Line { key, text }).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        self.kids.insert(
            key,
            Kid {
                role,
                child,
                stdin,
                reader: Some(reader),
            },
        );
        self.state.insert(
            key,
            KidState {
                role,
                counts: (0, 0, 0),
                entry: None,
                session_at: None,
                ready: false,
            },
        );
        match role {
            Role::Producer { .. } => self.producer = Some(key),
            Role::Consumer { slot } => self.slots[slot] = Some(key),
        }
        Ok(key)
    }

    /// Handles every line received so far.
    pub(super) fn pump(&mut self) {
        while let Ok(l) = self.rx.try_recv() {
            self.handle(l);
        }
    }

    pub(super) fn handle(&mut self, l: Line) {
        let Some(st) = self.state.get_mut(&l.key) else {
            return;
        };
        let who = st.role.describe(l.key);
        let (kind, rest) = l.text.split_once(' ').unwrap_or((&l.text, ""));
        let nums: Vec<u64> = rest.split(' ').map_while(|s| s.parse().ok()).collect();
        let num = |i: usize| nums.get(i).copied().unwrap_or(0);
        let t = &mut self.tally;
        match kind {
            "STAT" | "FINAL" => {
                st.counts = (num(0), num(1), num(2));
                if let Role::Producer { inc } = st.role {
                    self.streams
                        .insert(inc, (num(0), Instant::now(), kind == "FINAL"));
                }
            }
            "END" => {
                if rest.ends_with("disconnected") {
                    self.ends.push(End {
                        who,
                        inc: num(0),
                        last_seq: num(1),
                        began: st.session_at,
                    });
                }
                st.session_at = None;
            }
            "READY" => st.ready = true,
            "ATTACH" => st.entry = rest.trim().parse().ok().map(|e| (e, Instant::now())),
            "DETACHING" => st.entry = None,
            "SESSION" => {
                let (inc, at) = (num(0), num(1));
                st.session_at = Some(Instant::now());
                if let Some(i) = self.recovering.iter().position(|r| r.0 == inc) {
                    let (_, killed_ns, _) = self.recovering.remove(i);
                    let ms = at.saturating_sub(killed_ns) as f64 / 1e6;
                    t.recovery_ms.push(ms);
                    note(format!(
                        "{}: a consumer receives from producer #{inc} {ms:.1} ms after #{} was killed",
                        policy_name(self.policy),
                        inc - 1
                    ));
                }
            }
            "CORRUPT" => {
                t.corrupt += 1;
                t.event(format!("{who}: CORRUPT {rest}"));
            }
            "LOST" => {
                t.lost_block += num(0);
                t.event(format!("{who}: LOST {rest}"));
            }
            "S4" => {
                t.s4 += 1;
                t.event(format!("{who}: S4 violation: {rest}"));
            }
            "STALL" => {
                t.stalls += 1;
                t.event(format!("{who}: a loan waited {STALL_AFTER:?}"));
            }
            "OPENERR" => *t.open_errors.entry(rest.to_owned()).or_insert(0) += 1,
            _ => note(format!("{who}: {}", l.text)),
        }
    }

    /// Records the end of child `key` (exited with `status`; `killed`: by us).
    pub(super) fn finish(&mut self, key: usize, status: ExitStatus, killed: bool) {
        let Some(mut kid) = self.kids.remove(&key) else {
            return;
        };
        drop(kid.stdin.take());
        if let Some(r) = kid.reader.take() {
            let _ = r.join(); // its stdout is closed: every line is in `rx`
        }
        self.pump();
        if let Some(st) = self.state.get_mut(&key) {
            st.entry = None;
        }
        if !killed && !status.success() {
            let msg = format!(
                "{}: {} exited with {status}",
                policy_name(self.policy),
                kid.role.describe(key)
            );
            note(&msg);
            self.tally.child_failures.push(msg);
        }
    }

    /// SIGKILLs child `key` and reaps it.
    pub(super) fn kill(&mut self, key: usize) -> Result<(), BoxError> {
        let Some(kid) = self.kids.get_mut(&key) else {
            return Ok(());
        };
        kid.child.kill()?; // SIGKILL on Unix
        let status = kid.child.wait()?;
        self.finish(key, status, true);
        Ok(())
    }

    /// Children that exited on their own during the run are failures; they
    /// are restarted so the soak goes on.
    pub(super) fn reap_exited(&mut self) -> Result<(), BoxError> {
        let mut done = Vec::new();
        for (&key, kid) in &mut self.kids {
            if let Some(status) = kid.child.try_wait()? {
                done.push((key, status));
            }
        }
        for (key, status) in done {
            let role = self.kids[&key].role;
            self.finish(key, status, false);
            match role {
                Role::Producer { .. } if self.producer == Some(key) => {
                    self.inc += 1;
                    self.spawn(Role::Producer { inc: self.inc })?;
                }
                Role::Consumer { slot } if self.slots[slot] == Some(key) => {
                    self.spawn(Role::Consumer { slot })?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub(super) fn draw_kill_interval(&mut self) -> Duration {
        let m = self.kill_every.map_or(0, |d| d.as_millis() as u64);
        Duration::from_millis(self.rng.range(m / 2, m + m / 2).max(1))
    }

    /// Kills a random consumer; if it was attached to the current segment,
    /// watches its entry until reclaimed.
    pub(super) fn kill_a_consumer(&mut self) -> Result<(), BoxError> {
        let live: Vec<(usize, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, k)| k.map(|k| (slot, k)))
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        let (slot, key) = live[self.rng.below(live.len() as u64) as usize];
        // Watch its entry only if it attached after the last producer
        // restart (else it may be on the old, replaced segment) and the
        // segment agrees that the entry is taken and alive.
        let entry = self.state[&key].entry.filter(|&(_, at)| {
            self.last_restart
                .is_none_or(|r| at > r + Duration::from_millis(20))
        });
        let epoch = entry.and_then(|(e, _)| {
            let info = bips::monitor::inspect(&self.channel).ok()?;
            info.consumers
                .iter()
                .any(|c| c.index == e && c.active && c.alive)
                .then_some(info.epoch)
        });
        let killed_at = Instant::now();
        self.kill(key)?;
        self.tally.consumer_kills += 1;
        self.slots[slot] = None;
        let delay = Duration::from_millis(self.rng.range(20, 400));
        self.respawn.push((slot, Instant::now() + delay));
        match (entry, epoch) {
            (Some((entry, _)), Some(epoch)) => {
                self.watch = Some(Watch {
                    entry,
                    killed_at,
                    epoch,
                })
            }
            _ => self.tally.reclaim_abandoned += 1,
        }
        Ok(())
    }

    /// Looks whether the watched entry was reclaimed.
    pub(super) fn poll_watch(&mut self) {
        let Some(w) = &self.watch else { return };
        let elapsed = w.killed_at.elapsed();
        let done = match bips::monitor::inspect(&self.channel) {
            Ok(info) if info.epoch == w.epoch => {
                match info.consumers.iter().find(|c| c.index == w.entry) {
                    // Free and unlocked: reclaimed (by the producer's reaper,
                    // or a reaper that has finished).
                    None => Some(false),
                    // Someone else holds its lock: a new consumer took it over.
                    Some(c) if c.alive => Some(true),
                    Some(c) if !c.active => Some(false),
                    Some(_) => None, // still taken by the dead
                }
            }
            // The producer was restarted meanwhile: no measurement.
            _ => {
                self.tally.reclaim_abandoned += 1;
                self.watch = None;
                return;
            }
        };
        match done {
            Some(by_open) => {
                self.tally.reclaim_ms.push(elapsed.as_secs_f64() * 1e3);
                if by_open {
                    self.tally.reclaimed_by_open += 1;
                } else {
                    self.tally.reclaimed_by_producer += 1;
                }
                self.watch = None;
            }
            None if elapsed > RECLAIM_DEADLINE => {
                let msg = format!(
                    "{}: entry {} of a consumer killed {elapsed:?} ago is still taken",
                    policy_name(self.policy),
                    w.entry
                );
                // Under DropOldest the producer reaps only when it runs out
                // of buffers (it never waits), so a dead entry may stay
                // until a new consumer takes it: not a failure there.
                if self.policy == PolicyArg::Block {
                    self.tally.event(msg);
                    self.tally.reclaim_timeouts += 1;
                } else {
                    note(&msg);
                    self.tally.reclaim_unreaped += 1;
                }
                self.watch = None;
            }
            None => {}
        }
    }

    /// Kills the producer and starts its next incarnation at once.
    pub(super) fn restart_producer(&mut self) -> Result<(), BoxError> {
        let Some(key) = self.producer.take() else {
            return Ok(());
        };
        let killed_ns = bips::now_ns();
        self.kill(key)?;
        self.tally.producer_kills += 1;
        if self.watch.take().is_some() {
            self.tally.reclaim_abandoned += 1;
        }
        self.inc += 1;
        self.last_restart = Some(Instant::now());
        self.recovering.push((self.inc, killed_ns, Instant::now()));
        self.spawn(Role::Producer { inc: self.inc })?;
        Ok(())
    }

    pub(super) fn run(&mut self, secs: f64) -> Result<(), BoxError> {
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs_f64(secs);
        let key = self.spawn(Role::Producer { inc: self.inc })?;
        while !self.state[&key].ready {
            self.pump();
            if let Some(st) = self
                .kids
                .get_mut(&key)
                .and_then(|k| k.child.try_wait().ok()?)
            {
                return Err(format!("the first producer exited with {st}").into());
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return Err("the first producer did not start within 10 s".into());
            }
            crate::signals::check()?;
            std::thread::sleep(Duration::from_millis(1));
        }
        for slot in 0..self.consumers {
            self.spawn(Role::Consumer { slot })?;
        }
        let n = self.producer_restarts;
        let mut restarts: Vec<Instant> = (1..=n)
            .map(|i| {
                let at = secs * 0.85 * f64::from(i) / f64::from(n + 1);
                let jitter = (self.rng.below(1000) as f64 / 1000.0 - 0.5) * secs * 0.85
                    / f64::from(n + 1)
                    / 2.0;
                t0 + Duration::from_secs_f64((at + jitter).max(0.2))
            })
            .collect();
        let mut next_kill = self
            .kill_every
            .map(|_| Instant::now() + self.draw_kill_interval());
        let mut last_poll = Instant::now();
        let mut last_progress = Instant::now();
        loop {
            self.pump();
            self.reap_exited()?;
            let now = Instant::now();
            // Respawn killed consumers whose delay is over.
            let due: Vec<usize> = self
                .respawn
                .iter()
                .filter(|r| r.1 <= now)
                .map(|r| r.0)
                .collect();
            self.respawn.retain(|r| r.1 > now);
            for slot in due {
                self.spawn(Role::Consumer { slot })?;
            }
            if now >= end {
                // Give producer restarts still recovering time to finish.
                if self.recovering.is_empty()
                    || self
                        .recovering
                        .iter()
                        .all(|r| r.2.elapsed() > RECOVERY_DEADLINE)
                {
                    break;
                }
            } else {
                if restarts.first().is_some_and(|&t| now >= t) {
                    restarts.remove(0);
                    self.restart_producer()?;
                }
                if let Some(k) = next_kill {
                    if now >= k && self.watch.is_none() {
                        self.kill_a_consumer()?;
                        next_kill = Some(Instant::now() + self.draw_kill_interval());
                    }
                }
            }
            if self.watch.is_some() && last_poll.elapsed() >= Duration::from_millis(1) {
                self.poll_watch();
                last_poll = Instant::now();
            }
            let before = self.recovering.len();
            self.recovering
                .retain(|r| r.2.elapsed() <= RECOVERY_DEADLINE);
            self.tally.recovery_timeouts += (before - self.recovering.len()) as u64;
            if last_progress.elapsed() >= Duration::from_secs(5) {
                last_progress = Instant::now();
                note(format!(
                    "{}: {:.0}/{secs:.0} s, {} consumer kills, {} producer kills, corrupt {}, lost {}, S4 {}",
                    policy_name(self.policy),
                    t0.elapsed().as_secs_f64(),
                    self.tally.consumer_kills,
                    self.tally.producer_kills,
                    self.tally.corrupt,
                    self.tally.lost_block,
                    self.tally.s4
                ));
            }
            crate::signals::check()?;
            std::thread::sleep(Duration::from_micros(500));
        }
        self.tally.recovery_timeouts += self.recovering.len() as u64;
        self.recovering.clear();
        if self.watch.take().is_some() {
            self.tally.reclaim_abandoned += 1;
        }
        self.respawn.clear();
        self.stop()?;
        self.tally.seconds = t0.elapsed().as_secs_f64();
        for st in self.state.values() {
            match st.role {
                Role::Producer { .. } => self.tally.sent += st.counts.0,
                Role::Consumer { .. } => {
                    self.tally.received += st.counts.0;
                    self.tally.dropped += st.counts.1;
                    self.tally.sessions += st.counts.2;
                }
            }
        }
        self.check_tails();
        let path = format!("/dev/shm/bips.{}", self.channel);
        if std::path::Path::new(&path).exists() {
            note(format!("{path} was left behind"));
            self.tally.dev_shm_left += 1;
            let _ = std::fs::remove_file(&path);
        }
        Ok(())
    }

    /// A session that ended by `Disconnected` must have received its
    /// producer's stream to the end: every sample is retained until each
    /// live consumer received it (Block), and the newest sample always is
    /// (DropOldest). For a producer that stopped cleanly the end is known
    /// exactly (its FINAL count); for one killed, only as of its last report,
    /// which counts for sessions that began at least 100 ms before it.
    pub(super) fn check_tails(&mut self) {
        for e in std::mem::take(&mut self.ends) {
            let Some(&(published, reported_at, clean)) = self.streams.get(&e.inc) else {
                continue;
            };
            let applies = clean
                || e.began
                    .is_some_and(|b| b + Duration::from_millis(100) < reported_at);
            if !applies || published == 0 || e.last_seq + 1 >= published {
                continue;
            }
            let missing = published - 1 - e.last_seq;
            let msg = format!(
                "{}: TAIL session on producer #{} ended (Disconnected) at seq {}, but {} were published{}",
                e.who,
                e.inc,
                e.last_seq,
                published,
                if clean { "" } else { " (as last reported before its kill)" }
            );
            self.tally.event(msg);
            match self.policy {
                PolicyArg::Block => self.tally.lost_block += missing,
                PolicyArg::DropOldest => self.tally.s4 += 1, // a silent loss
            }
        }
    }

    /// Tells every child to stop (closes its stdin): consumers finish their
    /// session (drain to `Disconnected`), the producer closes the channel.
    pub(super) fn stop(&mut self) -> Result<(), BoxError> {
        for kid in self.kids.values_mut() {
            if matches!(kid.role, Role::Consumer { .. }) {
                drop(kid.stdin.take());
            }
        }
        for kid in self.kids.values_mut() {
            drop(kid.stdin.take());
        }
        let deadline = Instant::now() + STOP_DEADLINE;
        while !self.kids.is_empty() {
            self.pump();
            let mut done = Vec::new();
            for (&key, kid) in &mut self.kids {
                if let Some(status) = kid.child.try_wait()? {
                    done.push((key, status));
                }
            }
            for (key, status) in done {
                self.finish(key, status, false);
            }
            if Instant::now() > deadline {
                let keys: Vec<usize> = self.kids.keys().copied().collect();
                for key in keys {
                    let msg = format!(
                        "{}: {} did not stop within {STOP_DEADLINE:?}",
                        policy_name(self.policy),
                        self.kids[&key].role.describe(key)
                    );
                    note(&msg);
                    self.tally.child_failures.push(msg);
                    self.kill(key)?;
                }
            }
            crate::signals::check()?;
            std::thread::sleep(Duration::from_millis(2));
        }
        self.pump();
        Ok(())
    }
}
