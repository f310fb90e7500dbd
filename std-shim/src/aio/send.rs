//! The `Send` futures: [`Consumer::recv_async`] and [`Producer::loan_async`]
//! borrow their consumer or producer exclusively (`&mut self`), and what they
//! resolve to ([`SendSample`], [`SendSampleMut`]) keeps that exclusive borrow.
//!
//! Why this is sound without making `Consumer`/`Producer` `Sync`: their
//! process-local state (`Cell`s) is only ever touched through one thread at
//! a time. A `&'c mut Consumer` is `Send` because `Consumer` is: while it
//! lives it is the only path to the consumer, so moving it to another thread
//! moves every access along. The future holds exactly that. When it
//! resolves it turns the `&'c mut` into the `&'c Consumer` a [`Sample<'c>`]
//! needs, consuming it: for `'c` the sample's reference is still the only
//! path to the consumer (its owner stays mutably borrowed), so sending the
//! sample is sending that exclusive borrow. Nothing else can reach the
//! consumer through a `SendSample`: it gives out `&Sample` (whose methods
//! never hand out the consumer) and never `&mut Sample` (which could be
//! swapped with a `Sample` of a consumer shared elsewhere); it is not `Sync`,
//! so `&SendSample` stays on one thread. [`SendSampleMut`] is the same for a
//! producer's loan, with the writing methods forwarded instead of a
//! `DerefMut` for that same reason.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context, Poll};

use bips_core::descriptor::{Descriptor, Element, ViewMut};

use super::AsyncWait;
use crate::consumer::{Consumer, RawSample, Sample};
use crate::error::Result;
use crate::producer::{Producer, RawLoan, SampleMut};

impl Consumer {
    /// Receives the next sample without blocking the thread: a future that
    /// resolves to what [`Consumer::recv`] would return. While nothing is
    /// published it sleeps in the process's doorbell reactor (no thread of
    /// its own, no polling: see [`crate::async_backend`]).
    ///
    /// The future, and the [`SendSample`] it resolves to, are `Send`: a task
    /// of a multi-thread runtime (`tokio::spawn`) may own the consumer, and
    /// hold the sample across an `.await`. Both borrow the consumer
    /// exclusively, so one sample is alive at a time; to keep several, use
    /// [`Consumer::recv_raw_async`] (owned samples) or, on one thread,
    /// [`Consumer::recv_async_local`]. Why this is sound: the [module
    /// docs](crate::aio).
    ///
    /// Cancel safe: dropping the future loses no sample.
    ///
    /// ```
    /// use bips::{Consumer, Options, Producer};
    /// # let name = format!("doc-recv-async-{}", std::process::id());
    /// let producer = Producer::create(&name, &Options::new(4, 64))?;
    /// let mut consumer = Consumer::open(&name)?;
    /// let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
    /// // The consumer moves into a task that any worker thread may run.
    /// let task = rt.spawn(async move {
    ///     let mut sum = 0u32;
    ///     while let Ok(s) = consumer.recv_async().await {
    ///         tokio::task::yield_now().await; // the sample may cross an await
    ///         sum += u32::from(s.as_slice()[0]);
    ///     }
    ///     sum // `Disconnected`: the producer is gone and everything is read
    /// });
    /// for i in 1..=3u8 {
    ///     let mut s = producer.loan()?;
    ///     s.write_pod(&[i])?;
    ///     s.publish()?;
    /// }
    /// drop(producer); // closes the channel
    /// assert_eq!(rt.block_on(task).unwrap(), 6);
    /// # Ok::<(), bips::Error>(())
    /// ```
    pub fn recv_async(&mut self) -> RecvFuture<'_> {
        RecvFuture {
            consumer: Some(self),
            wait: AsyncWait::new(),
        }
    }

    /// [`Consumer::recv_async`] as a [`RawSample`]: an owned hold that does
    /// not borrow the consumer, so a `Send` task can keep several at once;
    /// give each back with [`Consumer::release_raw`].
    ///
    /// ```
    /// use bips::{Consumer, Options, Producer};
    /// # let name = format!("doc-recv-raw-async-{}", std::process::id());
    /// let producer = Producer::create(&name, &Options::new(4, 64))?;
    /// let mut consumer = Consumer::open(&name)?;
    /// for i in 0..2u8 {
    ///     let mut s = producer.loan()?;
    ///     s.write_pod(&[i])?;
    ///     s.publish()?;
    /// }
    /// let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
    /// let pair = rt.spawn(async move {
    ///     let a = consumer.recv_raw_async().await?;
    ///     let b = consumer.recv_raw_async().await?; // both held
    ///     // SAFETY: not released yet, and `consumer` lives.
    ///     let bytes = unsafe { (a.as_slice()[0], b.as_slice()[0]) };
    ///     consumer.release_raw(a);
    ///     consumer.release_raw(b);
    ///     Ok::<_, bips::Error>(bytes)
    /// });
    /// assert_eq!(rt.block_on(pair).unwrap()?, (0, 1));
    /// # Ok::<(), bips::Error>(())
    /// ```
    pub fn recv_raw_async(&mut self) -> impl Future<Output = Result<RawSample>> + Send + '_ {
        let f = self.recv_async();
        async move { f.await.map(SendSample::into_raw) }
    }
}

/// The future of [`Consumer::recv_async`]: `Send`, holding the consumer's
/// exclusive borrow.
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct RecvFuture<'c> {
    /// `None` once it has resolved (the wait is ended then).
    consumer: Option<&'c mut Consumer>,
    wait: AsyncWait,
}

impl<'c> Future for RecvFuture<'c> {
    type Output = Result<SendSample<'c>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let consumer = this
            .consumer
            .as_deref()
            .expect("RecvFuture polled after it completed");
        let r = std::task::ready!(consumer.poll_received(&mut this.wait, cx.waker()));
        // Ready: the wait is ended. Give the exclusive borrow up to the
        // sample (the `&'c mut` becomes the sample's `&'c`).
        let consumer: &'c Consumer = this.consumer.take().expect("checked above");
        Poll::Ready(r.map(|r| SendSample {
            sample: consumer.sample(r),
        }))
    }
}

impl Drop for RecvFuture<'_> {
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.as_deref() {
            consumer.end_wait(&mut self.wait);
        }
    }
}

/// A [`Sample`] received by [`Consumer::recv_async`]: `Send`, because it
/// keeps the exclusive borrow of its consumer that the future had (see the
/// [module docs](crate::aio)). Read it through `Deref` (every
/// [`Sample`] method, and `&SendSample` coerces to `&Sample`); the buffer
/// is given back when it drops.
///
/// ```
/// # use bips::{Consumer, Options, Producer, Sample};
/// # let name = format!("doc-send-sample-{}", std::process::id());
/// # let producer = Producer::create(&name, &Options::new(2, 64))?;
/// # let mut consumer = Consumer::open(&name)?;
/// # let mut s = producer.loan()?;
/// # s.write_pod(&[5u8, 6])?;
/// # s.publish()?;
/// fn total(s: &Sample) -> u32 {
///     s.as_slice().iter().map(|&b| u32::from(b)).sum()
/// }
/// let s = futures::executor::block_on(consumer.recv_async())?;
/// assert_eq!((s.seq(), total(&s)), (0, 11));
/// # Ok::<(), bips::Error>(())
/// ```
///
/// It is not `Sync` (a `&SendSample` must not reach another thread while
/// the sample is used here):
///
/// ```compile_fail
/// fn assert_sync<T: Sync>() {}
/// assert_sync::<bips::SendSample<'static>>();
/// ```
pub struct SendSample<'c> {
    sample: Sample<'c>,
}

// SAFETY: `sample`'s `&'c Consumer` comes from the `&'c mut Consumer` that
// `RecvFuture` held and gave up (see `RecvFuture::poll`): for `'c` nothing
// else reaches that consumer, so moving the sample to another thread is
// moving an exclusive borrow of a `Send` type, as `&mut Consumer: Send` is.
// `SendSample` hands out only `&Sample` (no method of which returns the
// consumer) and no `&mut Sample` (a swap would put a shared consumer's
// sample in here); it is `!Sync` (a `Sample` is), so `&SendSample` cannot
// be used on two threads at once.
unsafe impl Send for SendSample<'_> {}

impl<'c> Deref for SendSample<'c> {
    type Target = Sample<'c>;

    fn deref(&self) -> &Sample<'c> {
        &self.sample
    }
}

impl std::fmt::Debug for SendSample<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.sample.fmt(f)
    }
}

impl SendSample<'_> {
    /// Detaches the sample from its consumer's borrow ([`Sample::into_raw`]):
    /// give it back with [`Consumer::release_raw`].
    pub fn into_raw(self) -> RawSample {
        self.sample.into_raw()
    }
}

impl Producer {
    /// Loans a buffer without blocking the thread: a future that resolves
    /// to what [`Producer::loan`] would return. Under `Block` it waits for
    /// the slowest consumer to free a buffer, asleep in the process's
    /// doorbell reactor; dead consumers are reclaimed meanwhile (once per
    /// liveness slice), as by `loan`.
    ///
    /// The future, and the [`SendSampleMut`] it resolves to, are `Send`
    /// (they borrow the producer exclusively, like [`Consumer::recv_async`]):
    /// a spawned task may own the producer and hold the loan across an
    /// `.await` while it fills it. For several loans at once, use
    /// [`Producer::loan_raw_async`] or, on one thread,
    /// [`Producer::loan_async_local`].
    ///
    /// Cancel safe: dropping the future leaves no buffer loaned.
    ///
    /// ```
    /// use bips::{Consumer, Options, Producer};
    /// # let name = format!("doc-loan-async-{}", std::process::id());
    /// let mut producer = Producer::create(&name, &Options::new(2, 64))?;
    /// let consumer = Consumer::open(&name)?;
    /// let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
    /// // The producer moves into a task that any worker thread may run.
    /// let task = rt.spawn(async move {
    ///     let mut s = producer.loan_async().await?;
    ///     tokio::task::yield_now().await; // e.g. reading the frame from a socket
    ///     s.write_pod(&[7u8])?;
    ///     s.publish()?;
    ///     Ok::<_, bips::Error>(producer) // keep the channel open
    /// });
    /// let _producer = rt.block_on(task).unwrap()?;
    /// assert_eq!(consumer.recv()?.as_slice(), [7]);
    /// # Ok::<(), bips::Error>(())
    /// ```
    pub fn loan_async(&mut self) -> LoanFuture<'_> {
        LoanFuture {
            producer: Some(self),
            wait: AsyncWait::new(),
        }
    }

    /// [`Producer::loan_async`] as a [`RawLoan`]: owned, no borrow of the
    /// producer; hand it back with [`Producer::publish_raw`] or
    /// [`Producer::unloan_raw`].
    pub fn loan_raw_async(&mut self) -> impl Future<Output = Result<RawLoan>> + Send + '_ {
        let f = self.loan_async();
        async move { f.await.map(SendSampleMut::into_raw) }
    }
}

/// The future of [`Producer::loan_async`]: `Send`, holding the producer's
/// exclusive borrow.
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct LoanFuture<'p> {
    /// `None` once it has resolved (the wait is ended then).
    producer: Option<&'p mut Producer>,
    wait: AsyncWait,
}

impl<'p> Future for LoanFuture<'p> {
    type Output = Result<SendSampleMut<'p>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let producer = this
            .producer
            .as_deref()
            .expect("LoanFuture polled after it completed");
        let r = std::task::ready!(producer.poll_loaned(&mut this.wait, cx.waker()));
        // As in `RecvFuture::poll`: the exclusive borrow goes to the loan.
        let producer: &'p Producer = this.producer.take().expect("checked above");
        Poll::Ready(r.map(|buf| SendSampleMut {
            loan: producer.sample(buf),
        }))
    }
}

impl Drop for LoanFuture<'_> {
    fn drop(&mut self) {
        if let Some(producer) = self.producer.as_deref() {
            producer.end_wait(&mut self.wait);
        }
    }
}

/// A [`SampleMut`] loaned by [`Producer::loan_async`]: `Send`, as
/// [`SendSample`] is. Its reading methods come through `Deref`; the writing
/// ones are forwarded here (there is no `DerefMut`: a `&mut SampleMut`
/// could be swapped with a loan of a producer shared on this thread, which
/// would then travel to another).
///
/// ```compile_fail
/// fn assert_sync<T: Sync>() {}
/// assert_sync::<bips::SendSampleMut<'static>>();
/// ```
pub struct SendSampleMut<'p> {
    loan: SampleMut<'p>,
}

// SAFETY: as for `SendSample`: `loan`'s `&'p Producer` comes from the
// `&'p mut Producer` that `LoanFuture` gave up, so nothing else reaches the
// producer for `'p`; `SendSampleMut` hands out `&SampleMut` (no method of
// which returns the producer) and never `&mut SampleMut`; it is `!Sync`.
unsafe impl Send for SendSampleMut<'_> {}

impl<'p> Deref for SendSampleMut<'p> {
    type Target = SampleMut<'p>;

    fn deref(&self) -> &SampleMut<'p> {
        &self.loan
    }
}

impl std::fmt::Debug for SendSampleMut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.loan.fmt(f)
    }
}

impl<'p> SendSampleMut<'p> {
    /// [`SampleMut::as_mut_slice`].
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.loan.as_mut_slice()
    }

    /// [`SampleMut::as_mut_ptr`].
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.loan.as_mut_ptr()
    }

    /// [`SampleMut::set_len`].
    ///
    /// # Panics
    /// When `len` exceeds [`SampleMut::capacity`].
    pub fn set_len(&mut self, len: usize) {
        self.loan.set_len(len)
    }

    /// [`SampleMut::set_timestamp_ns`].
    pub fn set_timestamp_ns(&mut self, ns: u64) {
        self.loan.set_timestamp_ns(ns)
    }

    /// [`SampleMut::meta_mut`].
    pub fn meta_mut(&mut self) -> &mut [u8] {
        self.loan.meta_mut()
    }

    /// [`SampleMut::set_descriptor`].
    pub fn set_descriptor(&mut self, d: &Descriptor) -> Result<()> {
        self.loan.set_descriptor(d)
    }

    /// [`SampleMut::view_mut`].
    pub fn view_mut<T: Element>(&mut self) -> Result<ViewMut<'_, T>> {
        self.loan.view_mut()
    }

    /// [`SampleMut::write_pod`].
    pub fn write_pod<T: bytemuck::NoUninit>(&mut self, values: &[T]) -> Result<()> {
        self.loan.write_pod(values)
    }

    /// [`SampleMut::as_mut_pod`].
    pub fn as_mut_pod<T: bytemuck::Pod>(&mut self) -> Result<&mut [T]> {
        self.loan.as_mut_pod()
    }

    /// [`SampleMut::publish`]: returns the sequence number.
    pub fn publish(self) -> Result<u64> {
        self.loan.publish()
    }

    /// [`SampleMut::into_raw`].
    pub fn into_raw(self) -> RawLoan {
        self.loan.into_raw()
    }
}
