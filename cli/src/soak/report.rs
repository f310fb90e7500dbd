//! What a policy's run found (`Tally`) and how it is reported.

use super::*;

/// Everything one policy's run found.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) seconds: f64,
    pub(super) sent: u64,
    pub(super) received: u64,
    pub(super) dropped: u64,
    pub(super) sessions: u64,
    pub(super) corrupt: u64,
    pub(super) lost_block: u64,
    pub(super) s4: u64,
    pub(super) stalls: u64,
    pub(super) consumer_kills: u64,
    pub(super) producer_kills: u64,
    pub(super) reclaim_ms: Vec<f64>,
    pub(super) reclaimed_by_producer: u64,
    pub(super) reclaimed_by_open: u64,
    pub(super) reclaim_timeouts: u64,
    /// DropOldest: killed consumers' entries still taken after the deadline.
    pub(super) reclaim_unreaped: u64,
    pub(super) reclaim_abandoned: u64,
    pub(super) recovery_ms: Vec<f64>,
    pub(super) recovery_timeouts: u64,
    pub(super) child_failures: Vec<String>,
    pub(super) open_errors: BTreeMap<String, u64>,
    pub(super) events: Vec<String>,
    pub(super) dev_shm_left: u64,
}

impl Tally {
    /// Records a failure event; the first 20 are also shown on stderr.
    pub(super) fn event(&mut self, msg: String) {
        if self.events.len() < 20 {
            note(&msg);
        } else if self.events.len() == 20 {
            note("(more events: see the report)");
        }
        if self.events.len() < 1000 {
            self.events.push(msg);
        }
    }

    /// Figures that must be 0, by name.
    pub(super) fn must_be_zero(&self) -> [(&'static str, u64); 7] {
        [
            ("corrupt", self.corrupt),
            ("lost_block", self.lost_block),
            ("s4_violations", self.s4),
            ("producer_stalls", self.stalls),
            ("reclaim_timeouts", self.reclaim_timeouts),
            ("recovery_timeouts", self.recovery_timeouts),
            ("child_failures", self.child_failures.len() as u64),
        ]
    }

    pub(super) fn add(&mut self, o: &Tally) {
        self.seconds += o.seconds;
        self.sent += o.sent;
        self.received += o.received;
        self.dropped += o.dropped;
        self.sessions += o.sessions;
        self.corrupt += o.corrupt;
        self.lost_block += o.lost_block;
        self.s4 += o.s4;
        self.stalls += o.stalls;
        self.consumer_kills += o.consumer_kills;
        self.producer_kills += o.producer_kills;
        self.reclaim_ms.extend(&o.reclaim_ms);
        self.reclaimed_by_producer += o.reclaimed_by_producer;
        self.reclaimed_by_open += o.reclaimed_by_open;
        self.reclaim_timeouts += o.reclaim_timeouts;
        self.reclaim_unreaped += o.reclaim_unreaped;
        self.reclaim_abandoned += o.reclaim_abandoned;
        self.recovery_ms.extend(&o.recovery_ms);
        self.recovery_timeouts += o.recovery_timeouts;
        self.child_failures.extend(o.child_failures.iter().cloned());
        for (k, v) in &o.open_errors {
            *self.open_errors.entry(k.clone()).or_insert(0) += v;
        }
        self.events.extend(o.events.iter().cloned());
        self.dev_shm_left += o.dev_shm_left;
    }

    pub(super) fn json(&self) -> Value {
        let zero: serde_json::Map<String, Value> = self
            .must_be_zero()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        json!({
            "seconds": (self.seconds * 10.0).round() / 10.0,
            "sent": self.sent,
            "received": self.received,
            "dropped_by_policy": self.dropped,
            "consumer_sessions": self.sessions,
            "corrupt": self.corrupt,
            "lost_block": self.lost_block,
            "s4_violations": self.s4,
            "producer_stalls": self.stalls,
            "consumer_kills": self.consumer_kills,
            "producer_kills": self.producer_kills,
            "reclaim_ms": stats(&self.reclaim_ms),
            "reclaimed_by_producer": self.reclaimed_by_producer,
            "reclaimed_by_new_consumer": self.reclaimed_by_open,
            "reclaim_timeouts": self.reclaim_timeouts,
            "reclaim_pending_after_deadline_drop_oldest": self.reclaim_unreaped,
            "reclaim_not_measured": self.reclaim_abandoned,
            "producer_recovery_ms": stats(&self.recovery_ms),
            "recovery_timeouts": self.recovery_timeouts,
            "child_failures": self.child_failures,
            "open_retries": self.open_errors,
            "events": self.events.iter().take(50).collect::<Vec<_>>(),
            "dev_shm_left": self.dev_shm_left,
            "must_be_zero": zero,
        })
    }
}

/// count/min/median/max of `v` (ms), rounded to 0.01 ms.
pub(super) fn stats(v: &[f64]) -> Value {
    if v.is_empty() {
        return json!({ "count": 0 });
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let r = |x: f64| (x * 100.0).round() / 100.0;
    json!({
        "count": s.len(),
        "min": r(s[0]),
        "median": r(s[s.len() / 2]),
        "max": r(s[s.len() - 1]),
    })
}

pub(super) fn fmt_stats(v: &[f64]) -> String {
    if v.is_empty() {
        return "none measured".into();
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    format!(
        "min {:.1} / median {:.1} / max {:.1} ms ({} measured)",
        s[0],
        s[s.len() / 2],
        s[s.len() - 1],
        s.len()
    )
}
