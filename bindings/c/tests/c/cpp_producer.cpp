// C++ producer of the checksum stream (checksum.h), through bips.hpp.
// Usage: cpp_producer CHANNEL FRAMES CONSUMERS — waits (up to 20 s) until
// CONSUMERS consumers are attached, publishes FRAMES frames (Block policy),
// prints "TOTAL <hex>", and closes the channel.
#include <bips/bips.hpp>
#include "checksum.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: %s CHANNEL FRAMES CONSUMERS\n", argv[0]);
        return 2;
    }
    const uint32_t frames = static_cast<uint32_t>(std::strtoul(argv[2], nullptr, 10));
    const uint32_t want = static_cast<uint32_t>(std::strtoul(argv[3], nullptr, 10));
    try {
        bips::Producer producer(argv[1], bips::Options(4, TEST_BUFFER_SIZE).meta_size(TEST_META_SIZE));
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (producer.consumer_count() < want) {
            if (std::chrono::steady_clock::now() > deadline) {
                std::fprintf(stderr, "cpp_producer: only %u of %u consumers attached\n",
                             producer.consumer_count(), want);
                return 1;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        uint32_t total = 0;
        for (uint32_t i = 0; i < frames; i++) {
            bips::SampleMut s = producer.loan();
            const size_t n = test_frame_len(i);
            test_fill(i, s.data(), n);
            s.set_size(n);
            const uint32_t crc = test_crc32(s.data(), n);
            test_put_u32(s.meta(), i);
            test_put_u32(s.meta() + 4, static_cast<uint32_t>(n));
            test_put_u32(s.meta() + 8, crc);
            total ^= crc;
            if (s.publish() != i) {
                std::fprintf(stderr, "cpp_producer: unexpected sequence number\n");
                return 1;
            }
        }
        std::printf("TOTAL %08x\n", total);
        std::fflush(stdout);
    } catch (const bips::Error& e) {
        std::fprintf(stderr, "cpp_producer: %s\n", e.what());
        return 1;
    }
    return 0;
}
