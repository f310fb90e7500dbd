// bips.hpp — header-only C++17 wrapper of the bips C ABI (bips.h).
//
// RAII, move-only handles: bips::Producer, bips::Consumer, bips::SampleMut
// (a loan: discarded on destruction unless published), bips::Sample (released
// on destruction). Failures throw bips::Error, which carries the bips_status
// and the library's message. Bytes are reached as data() + size() (and as
// std::span when compiled as C++20).
//
//   bips::Producer producer("camera", bips::Options(4, 1920 * 1080 * 3));
//   bips::SampleMut frame = producer.loan();
//   fill(frame.data(), frame.capacity());
//   frame.set_size(n);
//   frame.publish();
//
//   bips::Consumer consumer("camera");
//   while (auto sample = consumer.next()) {      // std::nullopt once disconnected
//       use(sample->data(), sample->size());
//   }                                            // released here
//
// The BIPS spelling works too, so code written for BIPS ports with a changed
// include (what the arguments mean: bindings/c/README.md, "The BIPS spelling"):
//
//   bips::Producer producer(bips::Backends::kShm, "/example", 10, 1024, true);
//   bips::SampleMut buf = producer.Pull();        // a free buffer to fill
//   producer.Push(buf);                           // publishes it
//   bips::Consumer consumer(bips::Backends::kShm, "/example", 10, 1024, true);
//   bips::Sample in = consumer.Pull();            // the next buffer to read
//   consumer.Push(in);                            // gives it back
//
// Threads: a Producer or Consumer (with its loans/samples) is used by one
// thread at a time; moving it to another thread is fine. If that contract is
// broken anyway: a Sample destroyed while another thread is inside its
// Consumer is released through the consumer's mailbox (applied when that
// thread leaves, or within 10 ms of a blocked recv); the other destructors
// (and ~Sample if a release of the same slot is already waiting) retry on
// BIPS_E_BUSY for up to BIPS_HPP_BUSY_TIMEOUT_MS (default 2000) milliseconds,
// yielding, then print what happened and call std::terminate rather than
// lose the loan/sample silently.
//
// Destroy order: a Sample may outlive its Consumer (the detach waits for it),
// but until it is released the consumer stays attached and its read position
// does not move, so under BIPS_POLICY_BLOCK the producer (and every other
// consumer) stalls once the pool is full. Release samples before destroying
// their consumer, or a Block producer stalls once its pool is full.
#ifndef BIPS_HPP
#define BIPS_HPP

#include "bips.h"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#ifndef BIPS_HPP_BUSY_TIMEOUT_MS
#define BIPS_HPP_BUSY_TIMEOUT_MS 2000
#endif

#if __cplusplus >= 202002L && defined(__has_include)
#if __has_include(<span>)
#include <span>
#define BIPS_HPP_HAS_SPAN 1
#endif
#endif

namespace bips {

/// A failed bips call: the status code and the library's message.
class Error : public std::runtime_error {
public:
    Error(bips_status status, const std::string& message)
        : std::runtime_error(message), status_(status) {}
    /// The C status code (never BIPS_OK).
    bips_status status() const noexcept { return status_; }
    /// Its name, e.g. "BIPS_E_TIMEOUT".
    const char* status_name() const noexcept { return bips_status_name(status_); }
    /// Whether the producer is gone and every sample was received.
    bool disconnected() const noexcept { return status_ == BIPS_E_DISCONNECTED; }
    /// Whether a timeout passed.
    bool timed_out() const noexcept { return status_ == BIPS_E_TIMEOUT; }

private:
    bips_status status_;
};

namespace detail {
/// The Error of status `s`, with the thread's last message (read now).
inline Error error(bips_status s) {
    return Error(s, std::string(bips_status_name(s)) + ": " + bips_last_error_message());
}
[[noreturn]] inline void fail(bips_status s) { throw error(s); }
/// Ends a handle from a destructor (`call` is a discard/release/destroy):
/// while another thread is inside the same owner (BIPS_E_BUSY, a broken
/// one-thread-at-a-time contract) retries, yielding, for up to
/// BIPS_HPP_BUSY_TIMEOUT_MS, then reports and terminates: a silently lost
/// loan or sample would stall the channel with no trace. Other failures
/// (nothing left to end) are ignored, as a destructor must.
template <class Call>
inline void end_in_destructor(const char* what, Call call) noexcept {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(BIPS_HPP_BUSY_TIMEOUT_MS);
    while (call() == BIPS_E_BUSY) {
        if (std::chrono::steady_clock::now() >= deadline) {
            std::fprintf(stderr,
                         "bips.hpp: %s: another thread stayed inside the same bips handle for "
                         "%d ms (a handle with its loans/samples is used by one thread at a "
                         "time); terminating rather than losing it\n",
                         what, BIPS_HPP_BUSY_TIMEOUT_MS);
            std::terminate();
        }
        std::this_thread::yield();
    }
}
inline void check(bips_status s) {
    if (s != BIPS_OK) fail(s);
}
inline int64_t to_ns(std::chrono::nanoseconds d) {
    return d.count() < 0 ? 0 : static_cast<int64_t>(d.count());
}
/// Asks `fill(out, cap, &n)` for the size, then for the whole table.
template <class Fill>
std::vector<bips_buffer_info> buffer_table(Fill fill) {
    size_t n = 0;
    check(fill(nullptr, 0, &n));
    std::vector<bips_buffer_info> t(n);
    check(fill(t.data(), t.size(), &n));
    t.resize(n < t.size() ? n : t.size());
    return t;
}
}  // namespace detail

/// The transports of the BIPS API; bips has one, POSIX shared memory.
enum class Backends { kShm };

namespace detail {
/// A BIPS channel name: a leading '/' (POSIX shm style) is dropped; the
/// rest goes to bips, which refuses any other '/'.
inline std::string seed_name(const std::string& name) {
    return !name.empty() && name[0] == '/' ? name.substr(1) : name;
}
/// The channel name of a BIPS constructor, once its backend is checked.
inline std::string seed_name(Backends backend, const std::string& name) {
    if (backend != Backends::kShm)
        throw Error(BIPS_E_INVALID_ARGUMENT, "BIPS_E_INVALID_ARGUMENT: bips has bips::Backends::kShm only");
    return seed_name(name);
}
}  // namespace detail

/// The library version string.
inline const char* version() noexcept { return bips_version(); }
/// CLOCK_MONOTONIC in ns: the clock of sample timestamps.
inline uint64_t now_ns() noexcept { return bips_now_ns(); }

/// Options of a new channel (wraps bips_options; `raw()` reaches every field).
class Options {
public:
    Options(uint32_t buffers, uint64_t buffer_size) {
        bips_options_default(&o_);
        o_.buffers = buffers;
        o_.buffer_size = buffer_size;
    }
    Options& policy(bips_policy p) { o_.policy = p; return *this; }
    Options& drop_oldest() { return policy(BIPS_POLICY_DROP_OLDEST); }
    Options& meta_size(uint32_t n) { o_.meta_size = n; return *this; }
    Options& max_consumers(uint32_t n) { o_.max_consumers = n; return *this; }
    Options& wait(bips_wait w) { o_.wait = w; return *this; }
    Options& mode(uint32_t m) { o_.mode = m; return *this; }
    Options& alignment(uint32_t a) { o_.alignment = a; return *this; }
    Options& flags(uint32_t f) { o_.flags = f; return *this; }
    /// Also trust a stale object of `uid` under the name (replace it).
    Options& trust_owner(uint32_t uid) { detail::check(bips_options_trust_owner(&o_, uid)); return *this; }
    /// Replace a stale object under the name whoever owns it.
    Options& trust_any_owner() { detail::check(bips_options_trust_any_owner(&o_)); return *this; }
    const bips_options& raw() const noexcept { return o_; }
    bips_options& raw() noexcept { return o_; }

private:
    bips_options o_{};
};

/// Options of a consumer (wraps bips_consumer_options).
class ConsumerOptions {
public:
    ConsumerOptions() { bips_consumer_options_default(&o_); }
    ConsumerOptions& start(bips_start s) { o_.start = s; return *this; }
    ConsumerOptions& wait(bips_wait w) { o_.wait = w; return *this; }
    ConsumerOptions& flags(uint32_t f) { o_.flags = f; return *this; }
    /// Also open channels whose object `uid` owns (default: the effective uid only).
    ConsumerOptions& trust_owner(uint32_t uid) {
        detail::check(bips_consumer_options_trust_owner(&o_, uid));
        return *this;
    }
    /// Open channels whoever owns them.
    ConsumerOptions& trust_any_owner() {
        detail::check(bips_consumer_options_trust_any_owner(&o_));
        return *this;
    }
    const bips_consumer_options& raw() const noexcept { return o_; }

private:
    bips_consumer_options o_{};
};

/// A loaned buffer being written. Discarded (given back unpublished) when
/// destroyed without publish().
class SampleMut {
public:
    SampleMut() noexcept = default;
    /// Adopts a C loan handle (discarded on destruction).
    explicit SampleMut(bips_sample_mut h) : h_(h) {
        bips_status s = h_.owner ? bips_sample_mut_get_info(h_, &info_) : BIPS_OK;
        if (s != BIPS_OK) {
            Error e = detail::error(s);  // before reset() overwrites the message
            reset();
            throw e;
        }
    }
    SampleMut(SampleMut&& o) noexcept : h_(o.h_), info_(o.info_) { o.h_ = {}; o.info_ = {}; }
    SampleMut& operator=(SampleMut&& o) noexcept {
        if (this != &o) {
            reset();
            h_ = o.h_;
            info_ = o.info_;
            o.h_ = {};
            o.info_ = {};
        }
        return *this;
    }
    SampleMut(const SampleMut&) = delete;
    SampleMut& operator=(const SampleMut&) = delete;
    ~SampleMut() { reset(); }

    /// Whether this holds a loan.
    explicit operator bool() const noexcept { return h_.owner != nullptr; }
    /// The buffer (capacity() bytes), aligned to the channel's alignment.
    uint8_t* data() const noexcept { return static_cast<uint8_t*>(info_.data); }
    /// Bytes the buffer can hold.
    size_t capacity() const noexcept { return info_.capacity; }
    /// Bytes that will be published (starts at capacity()).
    size_t size() const noexcept { return info_.len; }
    /// Sets the bytes to publish; throws BIPS_E_INVALID_ARGUMENT beyond capacity().
    void set_size(size_t n) {
        detail::check(bips_sample_mut_set_len(h_, n));
        info_.len = n;
    }
    /// The per-sample metadata area (meta_size() bytes).
    uint8_t* meta() const noexcept { return static_cast<uint8_t*>(info_.meta); }
    size_t meta_size() const noexcept { return info_.meta_size; }
    /// The buffer's index in the pool: its entry in Producer::buffers().
    uint32_t buffer_index() const noexcept { return info_.buffer_index; }
    /// Overrides the timestamp (default: bips::now_ns() at publish).
    void set_timestamp_ns(uint64_t ns) { detail::check(bips_sample_mut_set_timestamp_ns(h_, ns)); }
#ifdef BIPS_HPP_HAS_SPAN
    std::span<uint8_t> bytes() const noexcept { return {data(), capacity()}; }
    std::span<uint8_t> meta_bytes() const noexcept { return {meta(), meta_size()}; }
#endif
    /// Publishes the first size() bytes; returns the sequence number.
    uint64_t publish() {
        uint64_t seq = 0;
        info_ = {};
        detail::check(bips_sample_mut_publish(&h_, &seq));
        return seq;
    }
    /// Gives the buffer back unpublished.
    void discard() {
        info_ = {};
        detail::check(bips_sample_mut_discard(&h_));
    }
    /// The C handle.
    bips_sample_mut native() const noexcept { return h_; }

private:
    void reset() noexcept {
        if (h_.owner) detail::end_in_destructor("~SampleMut", [&] { return bips_sample_mut_discard(&h_); });
        h_ = {};
        info_ = {};
    }
    bips_sample_mut h_{};
    bips_sample_mut_info info_{};
};

/// The single writer of a channel. Destroying it closes the channel (once
/// its last loan, if any, is given back) and removes the name.
class Producer {
public:
    Producer(const std::string& name, const Options& options) {
        detail::check(bips_producer_create(name.c_str(), &options.raw(), &p_));
    }
    /// The BIPS spelling: creates channel `name` (a leading '/' dropped) with
    /// `buffers` buffers of `size` bytes; `in_order` true is a lossless
    /// channel (BIPS_POLICY_BLOCK), false latest-wins (BIPS_POLICY_DROP_OLDEST).
    Producer(Backends backend, const std::string& name, uint32_t buffers, uint64_t size, bool in_order = true)
        : Producer(detail::seed_name(backend, name),
                   Options(buffers, size).policy(in_order ? BIPS_POLICY_BLOCK : BIPS_POLICY_DROP_OLDEST)) {}
    Producer(Producer&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    Producer& operator=(Producer&& o) noexcept {
        if (this != &o) {
            reset();
            p_ = std::exchange(o.p_, nullptr);
        }
        return *this;
    }
    Producer(const Producer&) = delete;
    Producer& operator=(const Producer&) = delete;
    ~Producer() { reset(); }

    /// Loans a buffer, waiting as long as it takes. Throws BIPS_E_HELD_LIMIT
    /// at once when every buffer is on loan to this producer already (the
    /// wait could never end: publish or discard one first).
    SampleMut loan() { return loan_ns(BIPS_FOREVER).value(); }
    /// Loans a buffer if one is free now.
    std::optional<SampleMut> try_loan() { return loan_ns(BIPS_TRY); }
    /// Loans a buffer, waiting at most `timeout` (std::nullopt after).
    std::optional<SampleMut> loan_for(std::chrono::nanoseconds timeout) {
        return loan_ns(detail::to_ns(timeout));
    }
    bips_geometry geometry() const {
        bips_geometry g{};
        detail::check(bips_producer_geometry(p_, &g));
        return g;
    }
    uint32_t consumer_count() const {
        uint32_t n = 0;
        detail::check(bips_producer_consumer_count(p_, &n));
        return n;
    }
    /// The BIPS spelling of loan(): a free buffer to fill.
    SampleMut Pull() { return loan(); }
    /// The BIPS spelling of publish(): publishes `buf`, a loan of this
    /// producer (BIPS_E_INVALID_ARGUMENT for another's); returns its sequence.
    uint64_t Push(SampleMut& buf) {
        if (!buf || buf.native().owner != p_)
            throw Error(BIPS_E_INVALID_ARGUMENT,
                        "BIPS_E_INVALID_ARGUMENT: Push: the buffer is not a loan of this bips::Producer");
        return buf.publish();
    }
    uint64_t Push(SampleMut&& buf) { return Push(buf); }
    /// The whole buffer table (entry i is buffer i), stable for the
    /// producer's life: register it once, then find each loan's buffer by
    /// SampleMut::buffer_index().
    std::vector<bips_buffer_info> buffers() const {
        return detail::buffer_table([&](bips_buffer_info* out, size_t cap, size_t* n) {
            return bips_producer_buffers(p_, out, cap, n);
        });
    }
    /// The C handle (still owned by this object).
    bips_producer* native() const noexcept { return p_; }

private:
    std::optional<SampleMut> loan_ns(int64_t ns) {
        bips_sample_mut h{};
        bips_status s = bips_producer_loan(p_, ns, &h);
        if (s == BIPS_E_TIMEOUT) return std::nullopt;
        detail::check(s);
        return SampleMut(h);
    }
    void reset() noexcept {
        if (p_) detail::end_in_destructor("~Producer", [&] { return bips_producer_destroy(p_); });
        p_ = nullptr;
    }
    bips_producer* p_ = nullptr;
};

/// A received sample: the producer's bytes in place, read-only, held until
/// this object is destroyed (or release()).
class Sample {
public:
    Sample() noexcept = default;
    /// Adopts a C sample handle (released on destruction).
    explicit Sample(bips_sample h) : h_(h) {
        bips_status s = h_.owner ? bips_sample_get_info(h_, &info_) : BIPS_OK;
        if (s != BIPS_OK) {
            Error e = detail::error(s);  // before reset() overwrites the message
            reset();
            throw e;
        }
    }
    Sample(Sample&& o) noexcept : h_(o.h_), info_(o.info_) { o.h_ = {}; o.info_ = {}; }
    Sample& operator=(Sample&& o) noexcept {
        if (this != &o) {
            reset();
            h_ = o.h_;
            info_ = o.info_;
            o.h_ = {};
            o.info_ = {};
        }
        return *this;
    }
    Sample(const Sample&) = delete;
    Sample& operator=(const Sample&) = delete;
    ~Sample() { reset(); }

    explicit operator bool() const noexcept { return h_.owner != nullptr; }
    /// The payload (size() bytes), aligned to the channel's alignment.
    const uint8_t* data() const noexcept { return static_cast<const uint8_t*>(info_.data); }
    size_t size() const noexcept { return info_.len; }
    uint64_t seq() const noexcept { return info_.seq; }
    uint64_t timestamp_ns() const noexcept { return info_.timestamp_ns; }
    /// Samples lost just before this one (drop-oldest channels).
    uint64_t lagged() const noexcept { return info_.lagged; }
    const uint8_t* meta() const noexcept { return static_cast<const uint8_t*>(info_.meta); }
    size_t meta_size() const noexcept { return info_.meta_size; }
    /// The buffer's index in the pool: its entry in Consumer::buffers().
    uint32_t buffer_index() const noexcept { return info_.buffer_index; }
#ifdef BIPS_HPP_HAS_SPAN
    std::span<const uint8_t> bytes() const noexcept { return {data(), size()}; }
    std::span<const uint8_t> meta_bytes() const noexcept { return {meta(), meta_size()}; }
#endif
    /// Gives the buffer back now.
    void release() {
        info_ = {};
        detail::check(bips_sample_release(&h_));
    }
    bips_sample native() const noexcept { return h_; }

private:
    void reset() noexcept {
        if (h_.owner) detail::end_in_destructor("~Sample", [&] { return bips_sample_release(&h_); });
        h_ = {};
        info_ = {};
    }
    bips_sample h_{};
    bips_sample_info info_{};
};

/// A reader of a channel. Destroying it detaches it once its last Sample is
/// released; until then, under BIPS_POLICY_BLOCK, a producer stalls once its
/// pool is full (release samples before destroying their consumer).
class Consumer {
public:
    explicit Consumer(const std::string& name, const ConsumerOptions& options = ConsumerOptions()) {
        detail::check(bips_consumer_open(name.c_str(), &options.raw(), &c_));
    }
    /// The BIPS spelling: opens channel `name` (a leading '/' dropped) and
    /// checks it: exactly `buffers` buffers of `size` bytes and, with
    /// `in_order`, lossless (BIPS_POLICY_BLOCK); else throws BIPS_E_LAYOUT.
    Consumer(Backends backend, const std::string& name, uint32_t buffers, uint64_t size, bool in_order = true,
             const ConsumerOptions& options = ConsumerOptions())
        : Consumer(detail::seed_name(backend, name), options) {
        const bips_geometry g = geometry();
        std::string problem;
        if (g.buffers != buffers || g.buffer_size != size) {
            problem = "channel '" + detail::seed_name(name) + "' has " + std::to_string(g.buffers) +
                      " buffers of " + std::to_string(g.buffer_size) + " bytes, but this consumer was written for " +
                      std::to_string(buffers) + " buffers of " + std::to_string(size) +
                      " bytes: pass the producer's geometry";
        } else if (in_order && g.policy != BIPS_POLICY_BLOCK) {
            problem = "channel '" + detail::seed_name(name) +
                      "' is latest-wins (BIPS_POLICY_DROP_OLDEST), but this consumer asked for in_order "
                      "(every buffer, none skipped): pass in_order = false to read it";
        }
        if (!problem.empty()) {
            reset();  // a refused consumer does not stay attached
            throw Error(BIPS_E_LAYOUT, "BIPS_E_LAYOUT: " + problem);
        }
    }
    Consumer(Consumer&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
    Consumer& operator=(Consumer&& o) noexcept {
        if (this != &o) {
            reset();
            c_ = std::exchange(o.c_, nullptr);
        }
        return *this;
    }
    Consumer(const Consumer&) = delete;
    Consumer& operator=(const Consumer&) = delete;
    ~Consumer() { reset(); }

    /// The next sample, waiting as long as it takes; throws Error
    /// (disconnected()) once the producer is gone and drained.
    Sample recv() { return recv_ns(BIPS_FOREVER).value(); }
    /// The next sample, or std::nullopt once the producer is gone and
    /// drained: `while (auto s = consumer.next()) { ... }`.
    std::optional<Sample> next() {
        try {
            return recv_ns(BIPS_FOREVER);
        } catch (const Error& e) {
            if (e.disconnected()) return std::nullopt;
            throw;
        }
    }
    /// The BIPS spelling of recv(): the next buffer to read; throws Error
    /// (disconnected()) once the producer is gone and drained.
    Sample Pull() { return recv(); }
    /// The BIPS spelling of release(): gives `sample`, received by this
    /// consumer, back (BIPS_E_INVALID_ARGUMENT for another's).
    void Push(Sample& sample) {
        if (!sample || sample.native().owner != c_)
            throw Error(BIPS_E_INVALID_ARGUMENT,
                        "BIPS_E_INVALID_ARGUMENT: Push: the sample was not received by this bips::Consumer");
        sample.release();
    }
    void Push(Sample&& sample) { Push(sample); }
    /// The next sample if one is ready now (no system call), else std::nullopt.
    std::optional<Sample> try_recv() { return recv_ns(BIPS_TRY); }
    /// The next sample, waiting at most `timeout` (std::nullopt after).
    std::optional<Sample> recv_for(std::chrono::nanoseconds timeout) {
        return recv_ns(detail::to_ns(timeout));
    }
    bips_geometry geometry() const {
        bips_geometry g{};
        detail::check(bips_consumer_geometry(c_, &g));
        return g;
    }
    /// The whole buffer table as mapped in this process (entry i is buffer
    /// i), stable for the consumer's life; read a buffer only while holding
    /// a Sample whose buffer_index() it is.
    std::vector<bips_buffer_info> buffers() const {
        return detail::buffer_table([&](bips_buffer_info* out, size_t cap, size_t* n) {
            return bips_consumer_buffers(c_, out, cap, n);
        });
    }
    bips_consumer* native() const noexcept { return c_; }

private:
    std::optional<Sample> recv_ns(int64_t ns) {
        bips_sample h{};
        bips_status s = bips_consumer_recv(c_, ns, &h);
        if (s == BIPS_E_TIMEOUT) return std::nullopt;
        detail::check(s);
        return Sample(h);
    }
    void reset() noexcept {
        if (c_) detail::end_in_destructor("~Consumer", [&] { return bips_consumer_destroy(c_); });
        c_ = nullptr;
    }
    bips_consumer* c_ = nullptr;
};

}  // namespace bips

#endif  // BIPS_HPP
