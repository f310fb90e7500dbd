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
//! `Send`/`Sync`: [`RecvFuture`] and [`LoanFuture`] borrow a `Consumer` /
//! `Producer`, which are `Send` but `!Sync` (process-local state in `Cell`s),
//! so the futures are `!Send`: await them on the thread that owns the
//! consumer (a current-thread runtime, a `LocalSet`, `Runtime::block_on`'s
//! future, `futures::executor::block_on`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::consumer::{Consumer, RawSample, Sample};
use crate::error::{Error, Result};
use crate::map_protocol;
use crate::producer::{Producer, RawLoan, SampleMut};
use crate::reactor::{self, Registration};
use crate::waiting::{now_ns, LIVENESS_SLICE};

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
    /// Receives the next sample without blocking the thread: a future that
    /// resolves to what [`Consumer::recv`] would return. While nothing is
    /// published it sleeps in the process's doorbell reactor (no thread of
    /// its own, no polling: see [`crate::async_backend`]).
    ///
    /// Cancel safe: dropping the future loses no sample. The future is
    /// `!Send` (see the [module docs](crate::aio)).
    ///
    /// ```
    /// use bips::{Consumer, Options, Producer};
    /// # let name = format!("doc-recv-async-{}", std::process::id());
    /// let producer = Producer::create(&name, &Options::new(4, 64))?;
    /// let consumer = Consumer::open(&name)?;
    /// let publisher = std::thread::spawn({
    ///     let name = name.clone();
    ///     move || {
    ///         std::thread::sleep(std::time::Duration::from_millis(20));
    ///         let mut s = producer.loan()?;
    ///         s.write_pod(&[42u8])?;
    ///         s.publish()?;
    ///         Ok::<_, bips::Error>(producer) // keep the channel open
    ///     }
    /// });
    /// // Any executor: tokio, async-std, smol, or a plain `block_on`.
    /// let byte = futures::executor::block_on(async {
    ///     let sample = consumer.recv_async().await?;
    ///     Ok::<_, bips::Error>(sample.as_slice()[0])
    /// })?;
    /// assert_eq!(byte, 42);
    /// # drop(publisher.join().unwrap()?);
    /// # Ok::<(), bips::Error>(())
    /// ```
    pub fn recv_async(&self) -> RecvFuture<'_> {
        RecvFuture {
            consumer: self,
            wait: AsyncWait::new(),
        }
    }

    /// [`Consumer::recv_async`] as a [`RawSample`] (no borrow of the
    /// consumer in the result); give it back with [`Consumer::release_raw`].
    pub fn recv_raw_async(&self) -> impl Future<Output = Result<RawSample>> + '_ {
        let f = self.recv_async();
        async move { f.await.map(Sample::into_raw) }
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
        if let Some(owner) = wait.armed {
            assert_eq!(owner, self.id(), "AsyncWait armed on another consumer");
        }
        let r = self.poll_recv_inner(wait, waker);
        if r.is_ready() {
            self.end_wait(wait);
        }
        r
    }

    fn poll_recv_inner(&self, wait: &mut AsyncWait, waker: &Waker) -> Poll<Result<Sample<'_>>> {
        let core = self.core();
        loop {
            if let Some(r) = core.try_recv().map_err(map_protocol)? {
                return Poll::Ready(Ok(self.sample(r)));
            }
            match wait.tick() {
                Tick::TimedOut => return Poll::Ready(Err(Error::Timeout)),
                // Closed just now: the next try answers what is retained,
                // or `Disconnected`.
                Tick::Check if self.check_producer() => continue,
                Tick::Check | Tick::Wait => {}
            }
            // Handshake 2: counted as a sleeper, fence, bell, re-check.
            let bell = match wait.armed {
                Some(_) => core.rearm_wait(),
                None => {
                    wait.armed = Some(self.id());
                    core.arm_wait()
                }
            };
            if let Some(r) = core.try_recv().map_err(map_protocol)? {
                return Poll::Ready(Ok(self.sample(r)));
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
        wait.reg = None;
        if let Some(owner) = wait.armed.take() {
            assert_eq!(owner, self.id(), "AsyncWait armed on another consumer");
            self.core().disarm_wait();
        }
    }
}

/// The future of [`Consumer::recv_async`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct RecvFuture<'c> {
    consumer: &'c Consumer,
    wait: AsyncWait,
}

impl<'c> Future for RecvFuture<'c> {
    type Output = Result<Sample<'c>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let consumer: &'c Consumer = this.consumer;
        consumer.poll_recv(&mut this.wait, cx.waker())
    }
}

impl Drop for RecvFuture<'_> {
    fn drop(&mut self) {
        self.consumer.end_wait(&mut self.wait);
    }
}

impl Producer {
    /// Loans a buffer without blocking the thread: a future that resolves
    /// to what [`Producer::loan`] would return. Under `Block` it waits for
    /// the slowest consumer to free a buffer, asleep in the process's
    /// doorbell reactor; dead consumers are reclaimed meanwhile (once per
    /// liveness slice), as by `loan`.
    ///
    /// Cancel safe: dropping the future leaves no buffer loaned. `!Send`,
    /// like [`RecvFuture`].
    ///
    /// ```
    /// use bips::{Consumer, Options, Producer};
    /// # let name = format!("doc-loan-async-{}", std::process::id());
    /// let producer = Producer::create(&name, &Options::new(2, 64))?;
    /// futures::executor::block_on(async {
    ///     let mut s = producer.loan_async().await?;
    ///     s.write_pod(&[7u8])?;
    ///     s.publish()?;
    ///     Ok::<(), bips::Error>(())
    /// })?;
    /// # Ok::<(), bips::Error>(())
    /// ```
    pub fn loan_async(&self) -> LoanFuture<'_> {
        LoanFuture {
            producer: self,
            wait: AsyncWait::new(),
        }
    }

    /// [`Producer::loan_async`] as a [`RawLoan`].
    pub fn loan_raw_async(&self) -> impl Future<Output = Result<RawLoan>> + '_ {
        let f = self.loan_async();
        async move { f.await.map(SampleMut::into_raw) }
    }

    /// One step of an asynchronous loan (see [`Consumer::poll_recv`]).
    ///
    /// # Panics
    /// When `wait` is armed on another producer.
    pub fn poll_loan(&self, wait: &mut AsyncWait, waker: &Waker) -> Poll<Result<SampleMut<'_>>> {
        if let Some(owner) = wait.armed {
            assert_eq!(owner, self.id(), "AsyncWait armed on another producer");
        }
        let r = self.poll_loan_inner(wait, waker);
        if r.is_ready() {
            self.end_wait(wait);
        }
        r
    }

    fn poll_loan_inner(&self, wait: &mut AsyncWait, waker: &Waker) -> Poll<Result<SampleMut<'_>>> {
        self.check_loanable()?;
        let core = self.core();
        loop {
            if let Some(b) = core.try_loan().map_err(map_protocol)? {
                return Poll::Ready(Ok(self.sample(b)));
            }
            match wait.tick() {
                Tick::TimedOut => return Poll::Ready(Err(Error::Timeout)),
                // A dead consumer may be what keeps every buffer busy.
                Tick::Check if self.reap_dead_consumers() > 0 => continue,
                Tick::Check | Tick::Wait => {}
            }
            // Handshake 3: announce, fence, bell, re-check.
            let bell = match wait.armed {
                Some(_) => core.rearm_wait(),
                None => {
                    wait.armed = Some(self.id());
                    core.arm_wait()
                }
            };
            if let Some(b) = core.try_loan().map_err(map_protocol)? {
                return Poll::Ready(Ok(self.sample(b)));
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
        wait.reg = None;
        if let Some(owner) = wait.armed.take() {
            assert_eq!(owner, self.id(), "AsyncWait armed on another producer");
            self.core().disarm_wait();
        }
    }
}

/// The future of [`Producer::loan_async`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct LoanFuture<'p> {
    producer: &'p Producer,
    wait: AsyncWait,
}

impl<'p> Future for LoanFuture<'p> {
    type Output = Result<SampleMut<'p>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let producer: &'p Producer = this.producer;
        producer.poll_loan(&mut this.wait, cx.waker())
    }
}

impl Drop for LoanFuture<'_> {
    fn drop(&mut self) {
        self.producer.end_wait(&mut self.wait);
    }
}
