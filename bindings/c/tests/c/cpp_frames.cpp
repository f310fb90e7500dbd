// Frames through the C++ wrapper (bips.hpp): bips::Descriptor, set_descriptor,
// descriptor(), typed views (bips::View, std::mdspan where <mdspan> exists),
// payload types and the mismatch at open. Usage:
//   cpp_frames checks PREFIX                 in-process checks, "cpp_frames: N checks, M failed"
//   cpp_frames producer CHANNEL FRAMES N     the stream of frames.h, once N consumers are attached
//   cpp_frames consumer CHANNEL FRAMES       reads and checks it through views (requires the type)
// Producer and consumers print "TOTAL <hex>" (frames.h).
#include <bips/bips.hpp>
#include "frames.h"

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>

static int checks = 0, failed = 0;
#define CHECK(cond)                                                                   \
    do {                                                                              \
        checks++;                                                                     \
        if (!(cond)) {                                                                \
            failed++;                                                                 \
            std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                 \
        }                                                                             \
    } while (0)

template <class F>
static bips_status status_of(F&& f) {
    try {
        f();
    } catch (const bips::Error& e) {
        return e.status();
    }
    return BIPS_OK;
}

static bool has(const std::string& hay, const char* needle) { return hay.find(needle) != std::string::npos; }

static std::string message_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "";
}

static bips::Descriptor frame_descriptor(uint32_t i) {
    const int64_t row = static_cast<int64_t>(frames_row_bytes(i));
    if (frames_is_rgb(i))
        return bips::Descriptor::image(frames_h(i), frames_w(i), 3, bips::DType::U8).strides({row, 3, 1}).format("RGB");
    return bips::Descriptor::image(frames_h(i), frames_w(i), 1, bips::DType::U16)
        .strides({row, 2})
        .offset(frames_offset(i))
        .format("GRAY16_LE");
}

// Element (y, x[, c]) of a rank-N view, the same code for std::mdspan and bips::View.
template <class V, size_t N>
static auto& elem(const V& v, const std::array<size_t, N>& idx) {
    return v[idx];
}

static int producer(const char* channel, uint32_t frames, uint32_t want) {
    bips::Producer producer(channel, bips::Options(4, FRAMES_BUFFER_SIZE).payload_type(FRAMES_TYPE, FRAMES_VERSION));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (producer.consumer_count() < want) {
        if (std::chrono::steady_clock::now() > deadline) {
            std::fprintf(stderr, "cpp_frames: only %u of %u consumers attached\n", producer.consumer_count(), want);
            return 1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    uint32_t total = 0;
    for (uint32_t i = 0; i < frames; i++) {
        bips::SampleMut s = producer.loan();
        const bips::Descriptor d = frame_descriptor(i);
        s.set_descriptor(d);
        uint32_t k = 0;
        if (frames_is_rgb(i)) {
            bips::View<uint8_t> v = s.view<uint8_t>();
            for (size_t y = 0; y < v.shape(0); y++)
                for (size_t x = 0; x < v.shape(1); x++)
                    for (size_t c = 0; c < 3; c++) {
                        const uint32_t val = frames_u8(i, y, x, c);
                        v(y, x, c) = static_cast<uint8_t>(val);
                        total += frames_mix(i, k++, val);
                    }
        } else {
            bips::View<uint16_t> v = s.view<uint16_t>();
            for (size_t y = 0; y < v.shape(0); y++)
                for (size_t x = 0; x < v.shape(1); x++) {
                    const uint32_t val = frames_u16(i, y, x);
                    v(y, x) = static_cast<uint16_t>(val);
                    total += frames_mix(i, k++, val);
                }
        }
        s.set_size(d.extent());
        if (s.publish() != i) {
            std::fprintf(stderr, "cpp_frames: unexpected sequence number\n");
            return 1;
        }
    }
    std::printf("TOTAL %08x\n", total);
    std::fflush(stdout);
    return 0;
}

static int consumer(const char* channel, uint32_t frames) {
    bips::ConsumerOptions o;
    o.start(BIPS_START_OLDEST).require_type(FRAMES_TYPE, FRAMES_VERSION);
    std::optional<bips::Consumer> c;
    for (int tries = 0; !c; tries++) {
        try {
            c.emplace(channel, o);
        } catch (const bips::Error& e) {
            if ((e.status() != BIPS_E_NOT_FOUND && !e.disconnected()) || tries > 2000) throw;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
    uint32_t n = 0, total = 0;
    int bad = 0;
    while (auto s = c->next()) {
        const uint32_t i = n++;
        std::optional<bips::Descriptor> d = s->descriptor();
        if (!d || *d != frame_descriptor(i)) {
            std::fprintf(stderr, "cpp_frames: frame %u: unexpected descriptor\n", i);
            bad = 1;
            continue;
        }
        uint32_t k = 0;
        if (frames_is_rgb(i)) {
            auto v = s->view<uint8_t, 3>();  // std::mdspan with C++23 <mdspan>, else bips::View
            for (size_t y = 0; y < frames_h(i); y++)
                for (size_t x = 0; x < frames_w(i); x++)
                    for (size_t ch = 0; ch < 3; ch++) {
                        const uint32_t got = elem(v, std::array<size_t, 3>{y, x, ch});
                        if (got != frames_u8(i, y, x, ch)) bad = 1;
                        total += frames_mix(i, k++, got);
                    }
        } else {
            auto v = s->view<uint16_t, 2>();
            for (size_t y = 0; y < frames_h(i); y++)
                for (size_t x = 0; x < frames_w(i); x++) {
                    const uint32_t got = elem(v, std::array<size_t, 2>{y, x});
                    if (got != frames_u16(i, y, x)) bad = 1;
                    total += frames_mix(i, k++, got);
                }
        }
        if (bad) std::fprintf(stderr, "cpp_frames: frame %u: unexpected values\n", i);
    }
    if (n != frames) {
        std::fprintf(stderr, "cpp_frames: received %u frames, expected %u\n", n, frames);
        bad = 1;
    }
    std::printf("TOTAL %08x\n", total);
    return bad;
}

static void run_checks(const std::string& prefix) {
    using bips::DType;
    // Builders and their checks.
    auto d = bips::Descriptor::image(2, 3, 3, DType::U8).strides({12, 3, 1}).format("RGB").colorimetry("sRGB");
    CHECK(d.ndim() == 3 && d.shape(0) == 2 && d.stride(0) == 12 && d.format() == "RGB" && d.colorimetry() == "sRGB");
    CHECK(d.extent() == 21 && d.dtype() == DType::U8 && std::string(bips::dtype_name(d.dtype())) == "uint8");
    CHECK(status_of([&] { d.validate(20); }) == BIPS_E_DESCRIPTOR);
    CHECK(status_of([&] { d.validate(21); }) == BIPS_OK);
    CHECK(bips::Descriptor::image(4, 5, 1, DType::U16).shape() == std::vector<uint64_t>({4, 5}));
    CHECK(bips::Descriptor::contiguous(DType::F32, {2, 3, 4}).strides() == std::vector<int64_t>({48, 16, 4}));
    CHECK(status_of([] { bips::Descriptor::contiguous(DType::F32, std::vector<uint64_t>(9, 1)); }) ==
          BIPS_E_DESCRIPTOR);
    CHECK(status_of([] { bips::Descriptor::image(2, 2, 3, DType::U8).strides({6, 3}); }) == BIPS_E_DESCRIPTOR);
    CHECK(status_of([] { bips::Descriptor::image(2, 2, 3, DType::U8).format("SIXTEEN_LETTERS_"); }) ==
          BIPS_E_DESCRIPTOR);
    CHECK(status_of([] { bips::Descriptor::image(2, 2, 3, DType::U8).format("caf\xc3\xa9"); }) == BIPS_E_DESCRIPTOR);
    CHECK(status_of([] { bips::Descriptor::image(2, 2, 3, static_cast<DType>(99)); }) == BIPS_E_DESCRIPTOR);
    bips_descriptor raw = d.raw();
    raw.ndim = 9;
    CHECK(status_of([&] { bips::Descriptor::from_raw(raw); }) == BIPS_E_DESCRIPTOR);
    CHECK(has(message_of([&] { bips::Descriptor::from_raw(raw); }), "9 dimensions"));

    // A typed channel: payload types on both ends, the mismatch at open.
    const std::string name = prefix + "-typed";
    bips::Producer producer(name, bips::Options(2, 4096).payload_type("image/rgb8", 1));
    CHECK(producer.payload_type() && producer.payload_type()->name == "image/rgb8");
    try {
        bips::Consumer wrong(name, bips::ConsumerOptions().require_type("image/bgr8", 1));
        CHECK(false);
    } catch (const bips::Error& e) {
        CHECK(e.type_mismatch() && e.status() == BIPS_E_TYPE_MISMATCH);
        CHECK(has(e.what(), "image/rgb8 v1") && has(e.what(), "image/bgr8 v1"));
    }
    CHECK(status_of([&] { bips::Consumer v2(name, bips::ConsumerOptions().require_type("image/rgb8", 2)); }) ==
          BIPS_E_TYPE_MISMATCH);
    CHECK(producer.consumer_count() == 0);
    bips::Consumer consumer(name, bips::ConsumerOptions().require_type("image/rgb8", 1).start(BIPS_START_OLDEST));
    auto t = consumer.payload_type();
    CHECK(t && t->name == "image/rgb8" && t->version == 1 && !t->descriptor);

    // Set on the loan, written through its view, read through the sample's.
    {
        bips::SampleMut s = producer.loan();
        CHECK(!s.descriptor());
        CHECK(status_of([&] { s.view<uint8_t>(); }) == BIPS_E_DESCRIPTOR);
        CHECK(status_of([&] { s.set_descriptor(bips::Descriptor::image(64, 64, 2, DType::U8)); }) ==
              BIPS_E_DESCRIPTOR);  // 8192 bytes > 4096
        s.set_descriptor(d);
        CHECK(s.descriptor() && *s.descriptor() == d);
        bips::View<uint8_t> w = s.view<uint8_t>();
        CHECK(w.rank() == 3 && w.shape(1) == 3 && w.stride_bytes(0) == 12 && w.data() == s.data());
        std::memset(s.data(), 0xEE, 21);
        for (size_t y = 0; y < 2; y++)
            for (size_t x = 0; x < 3; x++)
                for (size_t c = 0; c < 3; c++) w(y, x, c) = static_cast<uint8_t>(100 * y + 10 * x + c);
        CHECK(s.data()[12 + 2 * 3 + 1] == 121 && s.data()[9] == 0xEE);  // row 1 starts at byte 12
        CHECK(status_of([&] { s.view<uint16_t>(); }) == BIPS_E_DESCRIPTOR);
        s.set_size(21);
        s.publish();
    }
    {
        bips::Sample s = consumer.recv();
        auto got = s.descriptor();
        CHECK(got && *got == d && got->format() == "RGB");
        bips::View<const uint8_t> v = s.view<uint8_t>();
        CHECK(v(1, 2, 1) == 121 && v(0, 1, 2) == 12 && v.size() == 18 && v.data() == s.data());
        CHECK((v[std::array<size_t, 3>{1, 0, 0}] == 100));
        CHECK(v.at(1, 2, 2) == 122);
        bool threw = false;
        try {
            (void)v.at(2, 0, 0);
        } catch (const std::out_of_range&) {
            threw = true;
        }
        CHECK(threw);
        try {
            (void)s.view<uint16_t>();
            CHECK(false);
        } catch (const bips::Error& e) {
            CHECK(e.status() == BIPS_E_DESCRIPTOR && has(e.what(), "a view of uint16 asked of a sample of uint8"));
        }
        CHECK(status_of([&] { s.view<uint8_t, 2>(); }) == BIPS_E_DESCRIPTOR);
        auto v3 = s.view<uint8_t, 3>();
        CHECK((elem(v3, std::array<size_t, 3>{1, 2, 0}) == 120));
#ifdef BIPS_HPP_HAS_MDSPAN
        CHECK(v3.extent(0) == 2 && v3.stride(0) == 12);
        std::printf("cpp_frames: view<T, N>() is std::mdspan\n");
#else
        CHECK(v3.shape(0) == 2 && v3.stride_bytes(0) == 12);
        std::printf("cpp_frames: view<T, N>() is bips::View (no <mdspan>)\n");
#endif
    }
    // A sample without a descriptor; a flipped (negative-stride) one; a misaligned one.
    {
        bips::SampleMut s = producer.loan();
        s.set_size(4);
        s.publish();
        bips::Sample got = consumer.recv();
        CHECK(!got.descriptor());
        CHECK(status_of([&] { got.view<uint8_t>(); }) == BIPS_E_DESCRIPTOR);
    }
    {
        bips::SampleMut s = producer.loan();
        for (uint8_t b = 0; b < 8; b++) s.data()[b] = b;
        s.set_descriptor(bips::Descriptor::image(2, 4, 1, DType::U8).strides({-4, 1}).offset(4));
        s.set_size(8);
        s.publish();
        bips::Sample got = consumer.recv();
        bips::View<const uint8_t> v = got.view<uint8_t>();
        CHECK(v(0, 0) == 4 && v(1, 3) == 3 && v.stride_bytes(0) == -4);
    }
    {
        bips::SampleMut s = producer.loan();
        s.set_descriptor(bips::Descriptor::image(2, 2, 1, DType::U16).offset(1));
        CHECK(has(message_of([&] { s.view<uint16_t>(); }), "aligned"));
        s.set_size(3);  // the descriptor needs 9 bytes
        CHECK(status_of([&] { s.publish(); }) == BIPS_E_DESCRIPTOR);
        CHECK(!consumer.try_recv());
    }
    // A fixed descriptor: every sample has it.
    {
        const auto gray = bips::Descriptor::image(8, 8, 1, DType::U16).format("GRAY16_LE");
        bips::Producer fixed(prefix + "-fixed", bips::Options(2, 4096).payload_type("image/gray16", 1, gray));
        bips::Consumer c(prefix + "-fixed", bips::ConsumerOptions().require_type("image/gray16", 1, gray));
        CHECK(status_of([&] {
                  bips::Consumer other(prefix + "-fixed", bips::ConsumerOptions().require_type(
                                                               "image/gray16", 1, bips::Descriptor::image(
                                                                                      8, 4, 1, DType::U16)));
              }) == BIPS_E_TYPE_MISMATCH);
        bips::SampleMut s = fixed.loan();
        CHECK(s.descriptor() && *s.descriptor() == gray);
        s.view<uint16_t>()(7, 7) = 0xBEEF;
        s.set_size(128);
        s.publish();
        bips::Sample got = c.recv();
        CHECK(got.view<uint16_t>()(7, 7) == 0xBEEF);
        CHECK(c.payload_type() && c.payload_type()->descriptor && *c.payload_type()->descriptor == gray);
    }
}

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s checks PREFIX | producer CHANNEL FRAMES N | consumer CHANNEL FRAMES\n",
                     argv[0]);
        return 2;
    }
    const std::string mode = argv[1];
    try {
        if (mode == "checks") {
            run_checks(argv[2]);
            std::printf("cpp_frames: %d checks, %d failed\n", checks, failed);
            return failed != 0;
        }
        const uint32_t frames = argc > 3 ? static_cast<uint32_t>(std::strtoul(argv[3], nullptr, 10)) : 100;
        if (mode == "producer")
            return producer(argv[2], frames, argc > 4 ? static_cast<uint32_t>(std::strtoul(argv[4], nullptr, 10)) : 1);
        if (mode == "consumer") return consumer(argv[2], frames);
    } catch (const bips::Error& e) {
        std::fprintf(stderr, "cpp_frames %s: %s\n", mode.c_str(), e.what());
        return 1;
    }
    std::fprintf(stderr, "cpp_frames: unknown mode %s\n", mode.c_str());
    return 2;
}
