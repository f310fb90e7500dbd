// The BIPS spelling of bips.hpp (bips::Backends::kShm, Producer/Consumer(backend,
// name, buffers, size, in_order), Pull/Push) on the checksum stream (checksum.h).
// Usage:
//   cpp_seed producer CHANNEL FRAMES CONSUMERS   waits for CONSUMERS, publishes FRAMES
//   cpp_seed consumer CHANNEL FRAMES             reads until the producer leaves
//   cpp_seed checks CHANNEL                      what the arguments mean, in one process
// Producer and consumer name the channel "/CHANNEL" (the BIPS style; bips
// drops the '/'), so they interoperate with the other test programs, which
// open "CHANNEL". Both print "TOTAL <hex>".
#include <bips/bips.hpp>
#include "checksum.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace {

constexpr uint32_t kBuffers = 10;

int produce(const std::string& channel, uint32_t frames, uint32_t want) {
    bips::Producer producer(bips::Backends::kShm, "/" + channel, kBuffers, TEST_BUFFER_SIZE, true);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (producer.consumer_count() < want) {
        if (std::chrono::steady_clock::now() > deadline) {
            std::fprintf(stderr, "cpp_seed: only %u of %u consumers attached\n", producer.consumer_count(), want);
            return 1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    uint32_t total = 0;
    for (uint32_t i = 0; i < frames; i++) {
        bips::SampleMut buf = producer.Pull();
        const size_t n = test_frame_len(i);
        test_fill(i, buf.data(), n);
        buf.set_size(n);
        const uint32_t crc = test_crc32(buf.data(), n);
        test_put_u32(buf.meta(), i);
        test_put_u32(buf.meta() + 4, static_cast<uint32_t>(n));
        test_put_u32(buf.meta() + 8, crc);
        total ^= crc;
        if (producer.Push(buf) != i || buf) {
            std::fprintf(stderr, "cpp_seed: Push: unexpected sequence number, or the loan still held\n");
            return 1;
        }
    }
    std::printf("TOTAL %08x\n", total);
    return 0;
}

int consume(const std::string& channel, uint32_t frames) {
    std::optional<bips::Consumer> consumer;
    for (int tries = 0;; tries++) {
        try {
            consumer.emplace(bips::Backends::kShm, "/" + channel, kBuffers, TEST_BUFFER_SIZE, true);
            break;
        } catch (const bips::Error& e) {
            const bool not_yet = e.status() == BIPS_E_NOT_FOUND || e.disconnected();
            if (!not_yet || tries >= 2000) throw;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
    uint32_t n = 0, total = 0;
    int bad = 0;
    for (;;) {
        bips::Sample buf;
        try {
            buf = consumer->Pull();
        } catch (const bips::Error& e) {
            if (e.disconnected()) break;
            throw;
        }
        const uint32_t idx = test_get_u32(buf.meta()), len = test_get_u32(buf.meta() + 4),
                       crc = test_get_u32(buf.meta() + 8);
        const uint32_t got = test_crc32(buf.data(), buf.size());
        if (idx != n || buf.seq() != n || len != buf.size() || len != test_frame_len(n) || got != crc) {
            std::fprintf(stderr, "cpp_seed: bad frame #%u: idx %u seq %llu len %zu/%u crc %08x/%08x\n", n, idx,
                         static_cast<unsigned long long>(buf.seq()), buf.size(), len, got, crc);
            bad = 1;
        }
        total ^= got;
        n++;
        consumer->Push(buf);
        if (buf) {
            std::fprintf(stderr, "cpp_seed: Push did not give the sample back\n");
            bad = 1;
        }
    }
    if (n != frames) {
        std::fprintf(stderr, "cpp_seed: received %u frames, expected %u\n", n, frames);
        bad = 1;
    }
    std::printf("TOTAL %08x\n", total);
    return bad;
}

int failures = 0;

void expect(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "cpp_seed checks: FAILED: %s\n", what);
        failures++;
    }
}

// Runs `f`, which must throw bips::Error with `status` and a message containing `needle`.
template <class F>
void expect_error(F f, bips_status status, const char* needle, const char* what) {
    try {
        f();
    } catch (const bips::Error& e) {
        if (e.status() == status && std::strstr(e.what(), needle)) return;
        std::fprintf(stderr, "cpp_seed checks: FAILED: %s: threw %s: %s\n", what, e.status_name(), e.what());
        failures++;
        return;
    }
    std::fprintf(stderr, "cpp_seed checks: FAILED: %s: did not throw\n", what);
    failures++;
}

int checks(const std::string& ch) {
    using bips::Backends;
    // The real API keeps refusing '/' in a name.
    expect_error([&] { bips::Producer p("/" + ch, bips::Options(2, 64)); }, BIPS_E_INVALID_ARGUMENT, "/",
                 "bips::Producer(\"/name\") (the real API) is refused");
    {
        // in_order = true: a lossless channel.
        bips::Producer p(Backends::kShm, "/" + ch, 2, 64, true);
        expect(p.geometry().policy == BIPS_POLICY_BLOCK, "in_order = true makes a BIPS_POLICY_BLOCK channel");
        bips::Consumer c(Backends::kShm, "/" + ch, 2, 64, true);
        expect(c.geometry().buffers == 2 && c.geometry().buffer_size == 64, "the consumer sees the geometry");
        // Pull/Push: a buffer written, published, read, given back.
        bips::SampleMut out = p.Pull();
        std::memcpy(out.data(), "seed", 4);
        out.set_size(4);
        expect(p.Push(out) == 0 && !out, "Producer::Push publishes (sequence 0) and ends the loan");
        bips::Sample in = c.Pull();
        expect(in.size() == 4 && std::memcmp(in.data(), "seed", 4) == 0, "Consumer::Pull reads the bytes");
        // Push of another producer's loan / another consumer's sample.
        bips::Producer other(Backends::kShm, "/" + ch + "-2", 2, 64, true);
        bips::Consumer other_c(Backends::kShm, ch + "-2", 2, 64, false);  // no '/': fine too
        bips::SampleMut foreign = other.Pull();
        expect_error([&] { p.Push(foreign); }, BIPS_E_INVALID_ARGUMENT, "not a loan of this",
                     "Producer::Push of another producer's loan");
        expect(static_cast<bool>(foreign), "the refused loan is still held");
        expect_error([&] { other_c.Push(in); }, BIPS_E_INVALID_ARGUMENT, "not received by this",
                     "Consumer::Push of another consumer's sample");
        c.Push(in);
        expect(!in, "Consumer::Push gives the sample back");
    }
    {
        // in_order = false: latest-wins; a consumer checks geometry and in_order.
        bips::Producer p(Backends::kShm, "/" + ch, 4, 1024, false);
        expect(p.geometry().policy == BIPS_POLICY_DROP_OLDEST, "in_order = false makes a drop-oldest channel");
        expect_error([&] { bips::Consumer c(Backends::kShm, "/" + ch, 10, 1024, false); }, BIPS_E_LAYOUT,
                     "has 4 buffers of 1024 bytes, but this consumer was written for 10 buffers",
                     "a consumer with another buffer count");
        expect_error([&] { bips::Consumer c(Backends::kShm, "/" + ch, 4, 2048, false); }, BIPS_E_LAYOUT,
                     "written for 4 buffers of 2048 bytes", "a consumer with another buffer size");
        expect_error([&] { bips::Consumer c(Backends::kShm, "/" + ch, 4, 1024, true); }, BIPS_E_LAYOUT,
                     "in_order", "an in_order consumer of a latest-wins channel");
        expect(p.consumer_count() == 0, "a refused consumer does not stay attached");
        bips::Consumer c(Backends::kShm, "/" + ch, 4, 1024, false);
        expect(p.consumer_count() == 1, "a matching consumer attaches");
    }
    if (failures == 0) std::printf("cpp_seed checks: ok\n");
    return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string role = argc > 1 ? argv[1] : "";
    try {
        if (role == "producer" && argc == 5)
            return produce(argv[2], static_cast<uint32_t>(std::strtoul(argv[3], nullptr, 10)),
                           static_cast<uint32_t>(std::strtoul(argv[4], nullptr, 10)));
        if (role == "consumer" && argc == 4)
            return consume(argv[2], static_cast<uint32_t>(std::strtoul(argv[3], nullptr, 10)));
        if (role == "checks" && argc == 3) return checks(argv[2]);
    } catch (const bips::Error& e) {
        std::fprintf(stderr, "cpp_seed %s: %s\n", role.c_str(), e.what());
        return 1;
    }
    std::fprintf(stderr,
                 "usage: %s producer CHANNEL FRAMES CONSUMERS | consumer CHANNEL FRAMES | checks CHANNEL\n",
                 argv[0]);
    return 2;
}
