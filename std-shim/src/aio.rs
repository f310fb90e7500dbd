//! Async receive and loan: futures over the protocol's sleep handshakes and
//! the process-wide doorbell reactor ([`crate::reactor`]).
//!
//! Executor-agnostic: the futures only use the [`Waker`] they are polled
//! with; no runtime is needed (tokio, `futures::executor::block_on`,
//! `pollster`, a GLib or asyncio loop through [`Consumer::poll_recv`]).
//!
//! Cancel safety: a sample is taken from the channel only inside a poll that
//! returns it (`Ready`), so dropping a future at any point loses nothing; the
//! next receive gets that sample. Dropping a pending future also uncounts
//! the consumer as a sleeper (its `sleepers` bit goes with the last armed
//! wait) and cancels its reactor registration.
//!
//! # Which to use
//!
//! `Consumer` and `Producer` are `Send` but `!Sync` (process-local protocol
//! state in `Cell`s), so what a future may do depends on how it borrows them:
//!
//! | | borrows | future, result | use it for |
//! |---|---|---|---|
//! | [`Consumer::recv_async`], [`Producer::loan_async`] | `&mut self` | `Send`: [`RecvFuture`] → [`SendSample`], [`LoanFuture`] → [`SendSampleMut`] | the default: `tokio::spawn`, multi-thread runtimes, holding the sample across `.await` |
//! | [`Consumer::recv_raw_async`], [`Producer::loan_raw_async`] | `&mut self` while waiting | `Send`, resolves to an owned [`RawSample`] / [`RawLoan`] | keeping several samples (or loans) at once from a `Send` task |
//! | [`Consumer::recv_async_local`], [`Producer::loan_async_local`] | `&self` | `!Send`: [`LocalRecvFuture`] → [`Sample`], [`LocalLoanFuture`] → [`SampleMut`] | several safe `Sample<'_>` (or loans) alive at once, on one thread (a current-thread runtime, a `LocalSet`, `block_on`) |
//!
//! Why the `&mut self` futures are `Send`: `&mut T` is `Send` when `T` is,
//! because an exclusive borrow is the only path to `T` while it lives.
//! Moving it to another thread moves every access with it; nothing is
//! shared, so `!Sync` is not in question. A `&self` future could not be:
//! other `&Consumer`s may be in use on the first thread while it is polled
//! on another, and both would touch the same `Cell`s. The sample a `&mut
//! self` future resolves to keeps that exclusive borrow (see [`SendSample`]),
//! hence it is `Send` too, and one is alive at a time per consumer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bips_core::Received;

use crate::consumer::{Consumer, Sample};
use crate::error::{Error, Result};
use crate::map_protocol;
use crate::producer::{Producer, SampleMut};
use crate::reactor::{self, Registration};
use crate::waiting::{now_ns, LIVENESS_SLICE};

mod send;
#[cfg(doc)]
use crate::{RawLoan, RawSample};
pub use send::{LoanFuture, RecvFuture, SendSample, SendSampleMut};

/// The state of one asynchronous wait, kept by its caller between polls:
/// whether the consumer (or producer) is armed as a sleeper, the reactor
/// registration, the next liveness check and an optional deadline.
///
/// [`RecvFuture`] and [`LoanFuture`] hold one; event-loop integrations that
/// cannot hold a borrow across polls (the Python binding) keep one next to
/// the consumer and call [`Consumer::poll_recv`] / [`Consumer::end_wait`].
#[derive(Debug, Default)]
pub struct AsyncWait {
    /// `Some(owner id)` while armed (the protocol counts us as a sleeper).
    armed: Option<u64>,
    reg: Option<Registration>,
    next_check_ns: u64,
    deadline_ns: Option<u64>,
}

impl AsyncWait {
    /// A wait without a deadline.
    pub fn new() -> AsyncWait {
        AsyncWait::default()
    }

    /// A wait that gives up with [`Error::Timeout`] once `timeout` has
    /// passed (counted from now).
    pub fn with_timeout(timeout: Duration) -> AsyncWait {
        AsyncWait {
            deadline_ns: Some(
                now_ns().saturating_add(timeout.as_nanos().min(u64::MAX as u128) as u64),
            ),
            ..AsyncWait::default()
        }
    }

    /// Whether the wait is armed (the consumer or producer counted as a
    /// sleeper): [`Consumer::end_wait`] / [`Producer::end_wait`] must end it.
    pub fn is_armed(&self) -> bool {
        self.armed.is_some()
    }

    /// Panics when the wait is armed on another endpoint than `owner`.
    fn check_owner(&self, owner: u64, what: &str) {
        if let Some(o) = self.armed {
            assert_eq!(o, owner, "AsyncWait armed on another {what}");
        }
    }

    /// Arms for `owner` (`arm`: counted as a sleeper) or, already armed,
    /// re-arms (`rearm`); either answers the bell value to wait on.
    fn arm(&mut self, owner: u64, arm: impl FnOnce() -> u32, rearm: impl FnOnce() -> u32) -> u32 {
        if self.armed.is_some() {
            rearm()
        } else {
            self.armed = Some(owner);
            arm()
        }
    }

    /// Ends the wait: drops the registration and, if armed (by `owner`,
    /// else panics naming `what`), `disarm`s. Idempotent.
    fn end(&mut self, owner: u64, what: &str, disarm: impl FnOnce()) {
        self.reg = None;
        if let Some(o) = self.armed.take() {
            assert_eq!(o, owner, "AsyncWait armed on another {what}");
            disarm();
        }
    }

    /// Before re-checking: the liveness check is due (and its next instant
    /// set), the deadline has passed, or neither.
    fn tick(&mut self) -> Tick {
        let now = now_ns();
        if let Some(d) = self.deadline_ns {
            if now >= d {
                return Tick::TimedOut;
            }
        }
        let slice = LIVENESS_SLICE.as_nanos() as u64;
        if self.next_check_ns == 0 {
            self.next_check_ns = now + slice;
        } else if now >= self.next_check_ns {
            self.next_check_ns = now + slice;
            return Tick::Check;
        }
        Tick::Wait
    }

    /// Registers (or keeps) the one-shot wait on `word` holding `expected`.
    fn register(&mut self, word: &std::sync::atomic::AtomicU32, expected: u32, waker: &Waker) {
        if self
            .reg
            .as_ref()
            .is_some_and(|r| r.refresh(expected, waker))
        {
            return;
        }
        let deadline = self.next_check_ns.min(self.deadline_ns.unwrap_or(u64::MAX));
        // The old one (fired, or for another value) is cancelled first.
        self.reg = None;
        self.reg = Some(reactor::register(word, expected, deadline, waker));
    }
}

enum Tick {
    Wait,
    Check,
    TimedOut,
}

impl Consumer {
    /// [`Consumer::recv_async`] on `&self`: a `!Send` future, for keeping
    /// several [`Sample`]s alive at once on one thread (a current-thread
    /// runtime, a `LocalSet`, `block_on`). In a `Send` task (`tokio::spawn`
    /// on a multi-thread runtime) use [`Consumer::recv_async`], or
    /// [`Consumer::recv_raw_async`] to keep several samples. See the
    /// [module docs](crate::aio) for why the `&self` form cannot be `Send`.
    ///
    /// Cancel safe: dropping the future loses no sample.
    ///
    /// ```
    /// use bips::{Consumer, Options, Producer};
    /// # let name = format!("doc-recv-local-{}", std::process::id());
    /// let producer = Producer::create(&name, &Options::new(4, 64))?;
    /// let consumer = Consumer::open(&name)?;
    /// for i in 0..3u8 {
    ///     let mut s = producer.loan()?;
    ///     s.write_pod(&[i])?;
    ///     s.publish()?;
    /// }
    /// // Three samples held at once (a window), all borrowing `consumer`.
    /// let sum = futures::executor::block_on(async {
    ///     let a = consumer.recv_async_local().await?;
    ///     let b = consumer.recv_async_local().await?;
    ///     let c = consumer.recv_async_local().await?;
    ///     Ok::<_, bips::Error>(a.as_slice()[0] + b.as_slice()[0] + c.as_slice()[0])
    /// })?;
    /// assert_eq!(sum, 3);
    /// # Ok::<(), bips::Error>(())
    /// ```
    pub fn recv_async_local(&self) -> LocalRecvFuture<'_> {
        LocalRecvFuture {
            consumer: self,
            wait: AsyncWait::new(),
        }
    }

    /// One step of an asynchronous receive, for event-loop integrations
    /// that keep the [`AsyncWait`] themselves: `Ready` with the sample (or
    /// the error), or `Pending` after arranging for `waker` to be woken when
    /// the channel's doorbell rings (or the liveness slice, or `wait`'s
    /// deadline, passes). A wait that ended `Ready` is ended already; one
    /// abandoned while `Pending` must be ended with [`Consumer::end_wait`].
    ///
    /// # Panics
    /// When `wait` is armed on another consumer.
    pub fn poll_recv(&self, wait: &mut AsyncWait, waker: &Waker) -> Poll<Result<Sample<'_>>> {
        self.poll_received(wait, waker).map_ok(|r| self.sample(r))
    }

    /// [`Consumer::poll_recv`] answering the protocol's hold, for futures
    /// that build the sample with a lifetime of their own.
    pub(crate) fn poll_received(
        &self,
        wait: &mut AsyncWait,
        waker: &Waker,
    ) -> Poll<Result<Received>> {
        wait.check_owner(self.id(), "consumer");
        let r = self.poll_recv_inner(wait, waker);
        if r.is_ready() {
            self.end_wait(wait);
        }
        r
    }

    fn poll_recv_inner(&self, wait: &mut AsyncWait, waker: &Waker) -> Poll<Result<Received>> {
        let core = self.core();
        loop {
            if let Some(r) = core.try_recv().map_err(map_protocol)? {
                return Poll::Ready(Ok(r));
            }
            match wait.tick() {
                Tick::TimedOut => return Poll::Ready(Err(Error::Timeout)),
                // Closed just now: the next try answers what is retained,
                // or `Disconnected`.
                Tick::Check if self.check_producer() => continue,
                Tick::Check | Tick::Wait => {}
            }
            // Handshake 2: counted as a sleeper, fence, bell, re-check.
            let bell = wait.arm(self.id(), || core.arm_wait(), || core.rearm_wait());
            if let Some(r) = core.try_recv().map_err(map_protocol)? {
                return Poll::Ready(Ok(r));
            }
            wait.register(core.doorbell(), bell, waker);
            return Poll::Pending;
        }
    }

    /// Ends an asynchronous wait: cancels its reactor registration and, if
    /// it was armed, uncounts this consumer as a sleeper. Idempotent.
    ///
    /// # Panics
    /// When `wait` is armed on another consumer.
    pub fn end_wait(&self, wait: &mut AsyncWait) {
        wait.end(self.id(), "consumer", || self.core().disarm_wait());
    }
}

/// The `!Send` future of [`Consumer::recv_async_local`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct LocalRecvFuture<'c> {
    consumer: &'c Consumer,
    wait: AsyncWait,
}

impl<'c> Future for LocalRecvFuture<'c> {
    type Output = Result<Sample<'c>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let consumer: &'c Consumer = this.consumer;
        consumer.poll_recv(&mut this.wait, cx.waker())
    }
}

impl Drop for LocalRecvFuture<'_> {
    fn drop(&mut self) {
        self.consumer.end_wait(&mut self.wait);
    }
}

impl Producer {
    /// [`Producer::loan_async`] on `&self`: a `!Send` future, for several
    /// [`SampleMut`] loans alive at once on one thread (see
    /// [`Consumer::recv_async_local`] and the [module docs](crate::aio)).
    ///
    /// Cancel safe: dropping the future leaves no buffer loaned.
    ///
    /// ```
    /// use bips::{Options, Producer};
    /// # let name = format!("doc-loan-local-{}", std::process::id());
    /// let producer = Producer::create(&name, &Options::new(2, 64))?;
    /// futures::executor::block_on(async {
    ///     let mut a = producer.loan_async_local().await?;
    ///     let mut b = producer.loan_async_local().await?; // two loans at once
    ///     a.write_pod(&[1u8])?;
    ///     b.write_pod(&[2u8])?;
    ///     a.publish()?;
    ///     b.publish()?;
    ///     Ok::<(), bips::Error>(())
    /// })?;
    /// # Ok::<(), bips::Error>(())
    /// ```
    pub fn loan_async_local(&self) -> LocalLoanFuture<'_> {
        LocalLoanFuture {
            producer: self,
            wait: AsyncWait::new(),
        }
    }

    /// One step of an asynchronous loan (see [`Consumer::poll_recv`]).
    ///
    /// # Panics
    /// When `wait` is armed on another producer.
    pub fn poll_loan(&self, wait: &mut AsyncWait, waker: &Waker) -> Poll<Result<SampleMut<'_>>> {
        self.poll_loaned(wait, waker).map_ok(|b| self.sample(b))
    }

    /// [`Producer::poll_loan`] answering the loaned buffer's index, for
    /// futures that build the loan with a lifetime of their own.
    pub(crate) fn poll_loaned(&self, wait: &mut AsyncWait, waker: &Waker) -> Poll<Result<u32>> {
        wait.check_owner(self.id(), "producer");
        let r = self.poll_loan_inner(wait, waker);
        if r.is_ready() {
            self.end_wait(wait);
        }
        r
    }

    fn poll_loan_inner(&self, wait: &mut AsyncWait, waker: &Waker) -> Poll<Result<u32>> {
        self.check_loanable()?;
        let core = self.core();
        loop {
            if let Some(b) = core.try_loan().map_err(map_protocol)? {
                return Poll::Ready(Ok(b));
            }
            match wait.tick() {
                Tick::TimedOut => return Poll::Ready(Err(Error::Timeout)),
                // A dead consumer may be what keeps every buffer busy.
                Tick::Check if self.reap_dead_consumers() > 0 => continue,
                Tick::Check | Tick::Wait => {}
            }
            // Handshake 3: announce, fence, bell, re-check.
            let bell = wait.arm(self.id(), || core.arm_wait(), || core.rearm_wait());
            if let Some(b) = core.try_loan().map_err(map_protocol)? {
                return Poll::Ready(Ok(b));
            }
            wait.register(core.space_bell(), bell, waker);
            return Poll::Pending;
        }
    }

    /// Ends an asynchronous loan wait (see [`Consumer::end_wait`]).
    ///
    /// # Panics
    /// When `wait` is armed on another producer.
    pub fn end_wait(&self, wait: &mut AsyncWait) {
        wait.end(self.id(), "producer", || self.core().disarm_wait());
    }
}

/// The `!Send` future of [`Producer::loan_async_local`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct LocalLoanFuture<'p> {
    producer: &'p Producer,
    wait: AsyncWait,
}

impl<'p> Future for LocalLoanFuture<'p> {
    type Output = Result<SampleMut<'p>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let producer: &'p Producer = this.producer;
        producer.poll_loan(&mut this.wait, cx.waker())
    }
}

impl Drop for LocalLoanFuture<'_> {
    fn drop(&mut self) {
        self.producer.end_wait(&mut self.wait);
    }
}
