// bips.hpp — header-only C++17 wrapper of the bips C ABI (bips.h).
// #include <bips/bips.hpp> (installed under include/bips/ with bips.h).
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

// Every failure of this wrapper is a thrown bips::Error: there is no mode
// without exceptions (a timeout or a disconnect is ordinary control flow, so
// aborting instead would not be a usable wrapper). Code built with
// -fno-exceptions includes <bips/bips.h> and uses the C API, whose calls
// return a bips_status (bindings/c/README.md, "Without exceptions").
#if !defined(__cpp_exceptions) && !defined(__EXCEPTIONS) && !defined(_CPPUNWIND)
#error "bips.hpp needs C++ exceptions (it throws bips::Error); with -fno-exceptions include <bips/bips.h> and use the C API (bindings/c/README.md, \"Without exceptions\")"
#endif

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

// Frames: std::mdspan where the library has it (C++23), else bips::View.
#include <array>
#include <type_traits>
#if __cplusplus >= 202002L && defined(__has_include)
#if __has_include(<version>)
#include <version>
#endif
#endif
#if defined(__cpp_lib_mdspan) && !defined(BIPS_HPP_NO_MDSPAN)
#include <mdspan>
#define BIPS_HPP_HAS_MDSPAN 1
#elif defined(BIPS_HPP_STD_MDSPAN_PROVIDED)  // std::mdspan from elsewhere (a reference implementation)
#define BIPS_HPP_HAS_MDSPAN 1
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
    /// Whether the channel does not carry the payload type the consumer requires.
    bool type_mismatch() const noexcept { return status_ == BIPS_E_TYPE_MISMATCH; }

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

// ---- Frames and tensors (issue 16): DType, Descriptor, PayloadType, View ----
//
//   auto d = bips::Descriptor::image(h, w, 3, bips::DType::U8).strides({row_bytes, 3, 1}).format("RGB");
//   loan.set_descriptor(d);                           // what the bytes are
//   if (auto d = sample.descriptor()) { d->shape(0); d->format(); }
//   auto v = sample.view<uint8_t>();                  // bips::View<const uint8_t>, any rank
//   v(y, x, c); v.shape(0); v.stride_bytes(0);
//   auto m = sample.view<uint8_t, 3>();               // std::mdspan (C++23 <mdspan>), else View
//
// A view checks the element type (T against the descriptor's dtype), the
// rank and the alignment at run time and throws bips::Error
// (BIPS_E_DESCRIPTOR) on a mismatch; indexing is not checked (as std::mdspan),
// View::at() is.

/// Element type of a descriptor (the BIPS_DTYPE_* codes).
enum class DType : uint32_t {
    U8 = BIPS_DTYPE_U8, I8 = BIPS_DTYPE_I8, U16 = BIPS_DTYPE_U16, I16 = BIPS_DTYPE_I16,
    U32 = BIPS_DTYPE_U32, I32 = BIPS_DTYPE_I32, U64 = BIPS_DTYPE_U64, I64 = BIPS_DTYPE_I64,
    F16 = BIPS_DTYPE_F16, F32 = BIPS_DTYPE_F32, F64 = BIPS_DTYPE_F64, BF16 = BIPS_DTYPE_BF16,
    Bool = BIPS_DTYPE_BOOL, C64 = BIPS_DTYPE_C64, C128 = BIPS_DTYPE_C128,
};
/// Bytes per element.
inline size_t dtype_size(DType d) noexcept { return bips_dtype_size(static_cast<bips_dtype>(d)); }
/// NumPy's name ("uint8", "float32", ...).
inline const char* dtype_name(DType d) noexcept { return bips_dtype_name(static_cast<bips_dtype>(d)); }

/// The DType of a C++ element type (dtype_of<T>::value).
template <class T> struct dtype_of;
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::U8; };
template <> struct dtype_of<int8_t> { static constexpr DType value = DType::I8; };
template <> struct dtype_of<uint16_t> { static constexpr DType value = DType::U16; };
template <> struct dtype_of<int16_t> { static constexpr DType value = DType::I16; };
template <> struct dtype_of<uint32_t> { static constexpr DType value = DType::U32; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::I32; };
template <> struct dtype_of<uint64_t> { static constexpr DType value = DType::U64; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::I64; };
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::F64; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::Bool; };
template <class T> struct dtype_of<const T> : dtype_of<T> {};

namespace detail {
[[noreturn]] inline void descriptor_error(const std::string& what) {
    throw Error(BIPS_E_DESCRIPTOR, "BIPS_E_DESCRIPTOR: " + what);
}
inline std::string text_field(const char (&f)[BIPS_TEXT_SIZE]) {
    size_t n = 0;
    while (n < BIPS_TEXT_SIZE && f[n] != '\0') n++;
    return std::string(f, n);
}
}  // namespace detail

/// What a sample's bytes are (wraps bips_descriptor; `raw()` reaches every
/// field): element type, shape, byte strides, byte offset, and optionally a
/// pixel format, a colorimetry and a plane table. Every builder checks its
/// input and throws bips::Error (BIPS_E_DESCRIPTOR) on a bad one.
class Descriptor {
public:
    /// A packed image: (height, width, channels), or (height, width) when
    /// channels is 1; rows not padded (see strides()).
    static Descriptor image(uint64_t height, uint64_t width, uint64_t channels, DType dtype) {
        Descriptor d;
        detail::check(bips_descriptor_image(height, width, channels, static_cast<bips_dtype>(dtype), &d.d_));
        return d;
    }
    /// A C-contiguous (row-major, packed) array of `shape`.
    static Descriptor contiguous(DType dtype, const std::vector<uint64_t>& shape) {
        Descriptor d;
        detail::check(
            bips_descriptor_contiguous(static_cast<bips_dtype>(dtype), shape.size(), shape.data(), &d.d_));
        return d;
    }
    /// Adopts a C descriptor, checked (not against a length).
    static Descriptor from_raw(const bips_descriptor& raw) {
        uint64_t end = 0;
        detail::check(bips_descriptor_extent(&raw, &end));
        Descriptor d;
        d.d_ = raw;
        return d;
    }

    /// Byte strides, one per dimension (e.g. {row_bytes, 3, 1} for padded rows).
    Descriptor& strides(const std::vector<int64_t>& s) & {
        if (s.size() != ndim())
            detail::descriptor_error(std::to_string(s.size()) + " strides given for " + std::to_string(ndim()) +
                                     " dimensions");
        for (size_t i = 0; i < s.size(); i++) d_.strides[i] = s[i];
        return *this;
    }
    Descriptor&& strides(const std::vector<int64_t>& s) && { return std::move(strides(s)); }
    /// Bytes from the buffer's start to the first element.
    Descriptor& offset(uint64_t o) & { d_.offset = o; return *this; }
    Descriptor&& offset(uint64_t o) && { return std::move(offset(o)); }
    /// Pixel format ("RGB", "BGRx", "GRAY16_LE", "NV12"): printable ASCII, at most 15.
    Descriptor& format(const std::string& f) & {
        detail::check(bips_descriptor_set_format(&d_, f.c_str()));
        return *this;
    }
    Descriptor&& format(const std::string& f) && { return std::move(format(f)); }
    /// Colorimetry ("bt709", "sRGB"): printable ASCII, at most 15.
    Descriptor& colorimetry(const std::string& c) & {
        detail::check(bips_descriptor_set_colorimetry(&d_, c.c_str()));
        return *this;
    }
    Descriptor&& colorimetry(const std::string& c) && { return std::move(colorimetry(c)); }
    /// The plane table of a planar frame (plane 0 first, at most 4).
    Descriptor& planes(const std::vector<bips_plane>& p) & {
        if (p.size() > BIPS_MAX_PLANES) detail::descriptor_error(std::to_string(p.size()) + " planes (at most 4)");
        for (size_t i = 0; i < BIPS_MAX_PLANES; i++) d_.planes[i] = i < p.size() ? p[i] : bips_plane{};
        d_.nplanes = static_cast<uint32_t>(p.size());
        return *this;
    }
    Descriptor&& planes(const std::vector<bips_plane>& p) && { return std::move(planes(p)); }

    DType dtype() const noexcept { return static_cast<DType>(d_.dtype); }
    size_t ndim() const noexcept { return d_.ndim < BIPS_MAX_DIMS ? d_.ndim : BIPS_MAX_DIMS; }
    uint64_t shape(size_t i) const { return d_.shape[index(i)]; }
    int64_t stride(size_t i) const { return d_.strides[index(i)]; }
    std::vector<uint64_t> shape() const { return std::vector<uint64_t>(d_.shape, d_.shape + ndim()); }
    std::vector<int64_t> strides() const { return std::vector<int64_t>(d_.strides, d_.strides + ndim()); }
    uint64_t offset() const noexcept { return d_.offset; }
    /// "" when none.
    std::string format() const { return detail::text_field(d_.format); }
    std::string colorimetry() const { return detail::text_field(d_.colorimetry); }
    std::vector<bips_plane> planes() const {
        const size_t n = d_.nplanes < BIPS_MAX_PLANES ? d_.nplanes : BIPS_MAX_PLANES;
        return std::vector<bips_plane>(d_.planes, d_.planes + n);
    }
    /// Bytes a buffer needs (one past the last byte used).
    uint64_t extent() const {
        uint64_t end = 0;
        detail::check(bips_descriptor_extent(&d_, &end));
        return end;
    }
    /// Throws unless every element and plane lies inside `len` bytes.
    void validate(size_t len) const { detail::check(bips_descriptor_validate(&d_, len)); }
    const bips_descriptor& raw() const noexcept { return d_; }
    bips_descriptor& raw() noexcept { return d_; }

    friend bool operator==(const Descriptor& a, const Descriptor& b) {
        if (a.d_.dtype != b.d_.dtype || a.ndim() != b.ndim() || a.d_.offset != b.d_.offset ||
            a.format() != b.format() || a.colorimetry() != b.colorimetry() || a.planes().size() != b.planes().size())
            return false;
        for (size_t i = 0; i < a.ndim(); i++)
            if (a.d_.shape[i] != b.d_.shape[i] || a.d_.strides[i] != b.d_.strides[i]) return false;
        const auto pa = a.planes(), pb = b.planes();
        for (size_t i = 0; i < pa.size(); i++)
            if (pa[i].offset != pb[i].offset || pa[i].stride != pb[i].stride || pa[i].rows != pb[i].rows ||
                pa[i].row_bytes != pb[i].row_bytes)
                return false;
        return true;
    }
    friend bool operator!=(const Descriptor& a, const Descriptor& b) { return !(a == b); }

private:
    Descriptor() noexcept : d_{} {}
    size_t index(size_t i) const {
        if (i >= ndim()) throw std::out_of_range("bips::Descriptor: dimension out of range");
        return i;
    }
    bips_descriptor d_;
};

/// What a channel carries: a name, a version, and optionally the descriptor
/// every sample has.
struct PayloadType {
    std::string name;
    uint32_t version = 0;
    std::optional<Descriptor> descriptor;
    /// std::nullopt for an all-zero (untyped) C struct.
    static std::optional<PayloadType> from_raw(const bips_payload_type& t) {
        size_t n = 0;
        while (n < BIPS_TYPE_NAME_SIZE && t.name[n] != '\0') n++;
        if (n == 0) return std::nullopt;
        PayloadType p;
        p.name.assign(t.name, n);
        p.version = t.version;
        if (t.has_descriptor) p.descriptor = Descriptor::from_raw(t.descriptor);
        return p;
    }
};

/// A typed, strided view of a sample's (or loan's) elements: `T` is the
/// element type (const for a sample), the rank is the descriptor's. Valid
/// while the sample/loan it came from is held.
template <class T>
class View {
public:
    /// Checks dtype, alignment; `base` is the buffer's first byte.
    View(T* base, const Descriptor& d) : rank_(d.ndim()) {
        using E = typename std::remove_const<T>::type;
        if (d.dtype() != dtype_of<E>::value)
            detail::descriptor_error(std::string("a view of ") + dtype_name(dtype_of<E>::value) +
                                     " asked of a sample of " + dtype_name(d.dtype()));
        auto bytes = reinterpret_cast<typename std::conditional<std::is_const<T>::value, const uint8_t,
                                                                 uint8_t>::type*>(base);
        data_ = reinterpret_cast<T*>(bytes + d.offset());
        bool aligned = reinterpret_cast<uintptr_t>(data_) % alignof(E) == 0;
        for (size_t i = 0; i < rank_; i++) {
            shape_[i] = static_cast<size_t>(d.shape(i));
            strides_[i] = static_cast<ptrdiff_t>(d.stride(i));
            aligned = aligned && strides_[i] % static_cast<ptrdiff_t>(alignof(E)) == 0;
        }
        if (!aligned)
            detail::descriptor_error("elements are not aligned to " + std::to_string(alignof(E)) +
                                     " bytes (buffer, offset or a stride)");
    }
    /// Dimensions.
    size_t rank() const noexcept { return rank_; }
    /// Elements along dimension i (std::mdspan spells it extent(i)).
    size_t shape(size_t i) const noexcept { return shape_[i]; }
    size_t extent(size_t i) const noexcept { return shape_[i]; }
    /// Bytes between neighbours along dimension i (may be negative).
    ptrdiff_t stride_bytes(size_t i) const noexcept { return strides_[i]; }
    /// Number of elements.
    size_t size() const noexcept {
        size_t n = 1;
        for (size_t i = 0; i < rank_; i++) n *= shape_[i];
        return n;
    }
    /// Element [0, ..., 0].
    T* data() const noexcept { return data_; }
    /// Element (i, j, ...), one index per dimension; not checked.
    template <class... I>
    T& operator()(I... idx) const noexcept {
        const size_t ix[] = {static_cast<size_t>(idx)...};
        return *at_bytes(ix, sizeof...(I));
    }
    /// Element idx (std::mdspan's spelling), not checked.
    template <size_t N>
    T& operator[](const std::array<size_t, N>& idx) const noexcept { return *at_bytes(idx.data(), N); }
    /// Element (i, j, ...), checked: std::out_of_range for a wrong rank or index.
    template <class... I>
    T& at(I... idx) const {
        const size_t ix[] = {static_cast<size_t>(idx)...};
        if (sizeof...(I) != rank_) throw std::out_of_range("bips::View::at: wrong number of indices");
        for (size_t k = 0; k < rank_; k++)
            if (ix[k] >= shape_[k]) throw std::out_of_range("bips::View::at: index out of range");
        return *at_bytes(ix, rank_);
    }

private:
    T* at_bytes(const size_t* ix, size_t n) const noexcept {
        ptrdiff_t off = 0;
        for (size_t k = 0; k < n; k++) off += static_cast<ptrdiff_t>(ix[k]) * strides_[k];
        using B = typename std::conditional<std::is_const<T>::value, const uint8_t, uint8_t>::type;
        return reinterpret_cast<T*>(reinterpret_cast<B*>(data_) + off);
    }
    T* data_ = nullptr;
    size_t rank_ = 0;
    size_t shape_[BIPS_MAX_DIMS] = {};
    ptrdiff_t strides_[BIPS_MAX_DIMS] = {};
};

#ifdef BIPS_HPP_HAS_MDSPAN
/// The std::mdspan of a view of rank N (layout_stride: strides in elements,
/// non-negative, multiples of sizeof(T)).
template <size_t N, class T>
std::mdspan<T, std::dextents<size_t, N>, std::layout_stride> to_mdspan(const View<T>& v) {
    if (v.rank() != N)
        detail::descriptor_error("a " + std::to_string(N) + "-dimensional view asked of a " +
                                 std::to_string(v.rank()) + "-dimensional sample");
    std::array<size_t, N> ext{}, str{};
    for (size_t i = 0; i < N; i++) {
        if (v.stride_bytes(i) < 0 || v.stride_bytes(i) % static_cast<ptrdiff_t>(sizeof(T)) != 0)
            detail::descriptor_error("std::mdspan needs non-negative strides in whole elements");
        ext[i] = v.shape(i);
        str[i] = static_cast<size_t>(v.stride_bytes(i)) / sizeof(T);
    }
    using M = std::layout_stride::mapping<std::dextents<size_t, N>>;
    return std::mdspan<T, std::dextents<size_t, N>, std::layout_stride>(v.data(), M(std::dextents<size_t, N>(ext), str));
}
/// What view<T, N>() returns: std::mdspan here.
template <class T, size_t N>
using ViewN = std::mdspan<T, std::dextents<size_t, N>, std::layout_stride>;
#else
/// What view<T, N>() returns: bips::View<T> (checked to rank N) without <mdspan>.
template <class T, size_t N>
using ViewN = View<T>;
#endif

namespace detail {
template <size_t N, class T>
ViewN<T, N> view_n(const View<T>& v) {
#ifdef BIPS_HPP_HAS_MDSPAN
    return to_mdspan<N>(v);
#else
    if (v.rank() != N)
        descriptor_error("a " + std::to_string(N) + "-dimensional view asked of a " + std::to_string(v.rank()) +
                         "-dimensional sample");
    return v;
#endif
}
}  // namespace detail
// ---- end of frames and tensors ----

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
    /// Samples one consumer may hold at once, 1..=BIPS_MAX_HELD_LIMIT (64;
    /// default BIPS_MAX_HELD, 8): a batching consumer keeps 16-64 frames.
    Options& max_held(uint32_t n) { o_.max_held = n; return *this; }
    Options& wait(bips_wait w) { o_.wait = w; return *this; }
    Options& mode(uint32_t m) { o_.mode = m; return *this; }
    Options& alignment(uint32_t a) { o_.alignment = a; return *this; }
    Options& flags(uint32_t f) { o_.flags = f; return *this; }
    /// A sealed memfd channel served from the socket directory (BIPS_FLAG_MEMFD).
    Options& memfd(bool on = true) {
        o_.flags = on ? (o_.flags | BIPS_FLAG_MEMFD) : (o_.flags & ~BIPS_FLAG_MEMFD);
        return *this;
    }
    /// Also trust a stale object of `uid` under the name (replace it).
    Options& trust_owner(uint32_t uid) { detail::check(bips_options_trust_owner(&o_, uid)); return *this; }
    /// Replace a stale object under the name whoever owns it.
    Options& trust_any_owner() { detail::check(bips_options_trust_any_owner(&o_)); return *this; }
    /// Frames: declares what the channel carries (a type name, a version).
    Options& payload_type(const std::string& name, uint32_t version) {
        detail::check(bips_options_payload_type(&o_, name.c_str(), version, nullptr));
        return *this;
    }
    /// Frames: ... and the descriptor every sample has.
    Options& payload_type(const std::string& name, uint32_t version, const Descriptor& fixed) {
        detail::check(bips_options_payload_type(&o_, name.c_str(), version, &fixed.raw()));
        return *this;
    }
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
    /// Frames: opens only a channel of this payload type (else the
    /// constructor throws BIPS_E_TYPE_MISMATCH).
    ConsumerOptions& require_type(const std::string& name, uint32_t version) {
        detail::check(bips_consumer_options_require_type(&o_, name.c_str(), version, nullptr));
        return *this;
    }
    /// Frames: ... with this fixed descriptor.
    ConsumerOptions& require_type(const std::string& name, uint32_t version, const Descriptor& fixed) {
        detail::check(bips_consumer_options_require_type(&o_, name.c_str(), version, &fixed.raw()));
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
    // Frames: the loan's descriptor, and typed views of its buffer.
    /// Sets what the bytes are; throws BIPS_E_DESCRIPTOR when `d` does not
    /// fit the capacity (and at publish() when it does not fit size()).
    void set_descriptor(const Descriptor& d) { detail::check(bips_sample_mut_set_descriptor(h_, &d.raw())); }
    /// The descriptor set (else the channel's fixed one), or std::nullopt.
    std::optional<Descriptor> descriptor() const {
        bips_descriptor d{};
        bips_status s = bips_sample_mut_descriptor(h_, &d);
        if (s == BIPS_E_NO_DESCRIPTOR) return std::nullopt;
        detail::check(s);
        return Descriptor::from_raw(d);
    }
    /// A writable view of the elements as the descriptor says (any rank).
    template <class T>
    View<T> view() const {
        auto d = descriptor();
        if (!d) detail::descriptor_error("the loan has no descriptor: set_descriptor() first");
        return View<T>(reinterpret_cast<T*>(data()), *d);
    }
    /// ... of rank N: std::mdspan with C++23 <mdspan>, else View<T>.
    template <class T, size_t N>
    ViewN<T, N> view() const { return detail::view_n<N>(view<T>()); }
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
    /// Frames: the payload type this channel declares (std::nullopt: untyped).
    std::optional<PayloadType> payload_type() const {
        bips_payload_type t{};
        detail::check(bips_producer_payload_type(p_, &t));
        return PayloadType::from_raw(t);
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
    // Frames: the sample's descriptor, and typed views of its bytes.
    /// Its descriptor (its own, else the channel's fixed one), checked
    /// against size(); std::nullopt when none; throws BIPS_E_DESCRIPTOR for
    /// a malformed one (a buggy or hostile producer).
    std::optional<Descriptor> descriptor() const {
        bips_descriptor d{};
        bips_status s = bips_sample_descriptor(h_, &d);
        if (s == BIPS_E_NO_DESCRIPTOR) return std::nullopt;
        detail::check(s);
        return Descriptor::from_raw(d);
    }
    /// A read-only view of the elements as the descriptor says (any rank);
    /// throws BIPS_E_DESCRIPTOR without a descriptor or for another dtype.
    template <class T>
    View<const T> view() const {
        auto d = descriptor();
        if (!d) detail::descriptor_error("the sample carries no descriptor (and its channel fixes none)");
        return View<const T>(reinterpret_cast<const T*>(data()), *d);
    }
    /// ... of rank N: std::mdspan<const T, dextents<size_t, N>, layout_stride>
    /// with C++23 <mdspan>, else View<const T>.
    template <class T, size_t N>
    ViewN<const T, N> view() const { return detail::view_n<N>(view<T>()); }
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
    /// Samples this consumer may hold at once: the channel's max_held (one
    /// more recv throws bips::Error with BIPS_E_HELD_LIMIT).
    uint32_t max_held() const {
        uint32_t n = 0;
        detail::check(bips_consumer_max_held(c_, &n));
        return n;
    }
    /// The whole buffer table as mapped in this process (entry i is buffer
    /// i), stable for the consumer's life; read a buffer only while holding
    /// a Sample whose buffer_index() it is.
    std::vector<bips_buffer_info> buffers() const {
        return detail::buffer_table([&](bips_buffer_info* out, size_t cap, size_t* n) {
            return bips_consumer_buffers(c_, out, cap, n);
        });
    }
    /// Frames: the payload type the channel declares (std::nullopt: untyped).
    std::optional<PayloadType> payload_type() const {
        bips_payload_type t{};
        detail::check(bips_consumer_payload_type(c_, &t));
        return PayloadType::from_raw(t);
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
