// C++ without exceptions (built with -fno-exceptions -fno-rtti in scripts/test-c.sh):
// the route bindings/c/README.md documents, the C API from C++ with RAII owners.
// bips.hpp reports failures as exceptions and refuses to compile without them.
//
// Usage: cpp_noexcept producer CHANNEL FRAMES CONSUMERS   (the checksum stream, checksum.h)
//        cpp_noexcept consumer CHANNEL FRAMES
// Every failure is a status: printed with bips_last_error_message(), exit 1.
#include <bips/bips.h>

#include "checksum.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

namespace {

// Owners: destroyed when they go out of scope, like bips::Producer / bips::Consumer.
struct ProducerDel {
    void operator()(bips_producer* p) const noexcept { bips_producer_destroy(p); }
};
struct ConsumerDel {
    void operator()(bips_consumer* c) const noexcept { bips_consumer_destroy(c); }
};
using Producer = std::unique_ptr<bips_producer, ProducerDel>;
using Consumer = std::unique_ptr<bips_consumer, ConsumerDel>;

// A received sample, released when it goes out of scope (or by release()).
class Sample {
  public:
    Sample() noexcept : s_{} {}
    Sample(const Sample&) = delete;
    Sample& operator=(const Sample&) = delete;
    ~Sample() { release(); }
    bips_sample* out() noexcept { return &s_; }
    const bips_sample& get() const noexcept { return s_; }
    bips_status release() noexcept { return s_.owner ? bips_sample_release(&s_) : BIPS_OK; }

  private:
    bips_sample s_;
};

int fail(const char* what, bips_status st) {
    std::fprintf(stderr, "cpp_noexcept: %s: %s: %s\n", what, bips_status_name(st), bips_last_error_message());
    return 1;
}

int produce(const char* channel, uint32_t frames, uint32_t want) {
    bips_options o;
    bips_options_default(&o);
    o.buffers = 4;
    o.buffer_size = TEST_BUFFER_SIZE;
    o.meta_size = TEST_META_SIZE;
    bips_producer* raw = nullptr;
    bips_status st = bips_producer_create(channel, &o, &raw);
    if (st != BIPS_OK) return fail("create", st);
    Producer producer(raw);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (uint32_t n = 0; n < want;) {
        if ((st = bips_producer_consumer_count(producer.get(), &n)) != BIPS_OK) return fail("consumer_count", st);
        if (n >= want) break;
        if (std::chrono::steady_clock::now() > deadline) {
            std::fprintf(stderr, "cpp_noexcept: only %u of %u consumers attached\n", n, want);
            return 1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    uint32_t total = 0;
    for (uint32_t i = 0; i < frames; i++) {
        bips_sample_mut loan;
        if ((st = bips_producer_loan(producer.get(), BIPS_FOREVER, &loan)) != BIPS_OK) return fail("loan", st);
        uint8_t* data = static_cast<uint8_t*>(bips_sample_mut_data(loan));
        uint8_t* meta = static_cast<uint8_t*>(bips_sample_mut_meta(loan));
        const size_t n = test_frame_len(i);
        test_fill(i, data, n);
        const uint32_t crc = test_crc32(data, n);
        test_put_u32(meta, i);
        test_put_u32(meta + 4, static_cast<uint32_t>(n));
        test_put_u32(meta + 8, crc);
        total ^= crc;
        if ((st = bips_sample_mut_set_len(loan, n)) != BIPS_OK) {
            bips_sample_mut_discard(&loan);
            return fail("set_len", st);
        }
        uint64_t seq = 0;
        if ((st = bips_sample_mut_publish(&loan, &seq)) != BIPS_OK) return fail("publish", st);
        if (seq != i) {
            std::fprintf(stderr, "cpp_noexcept: sequence %llu, expected %u\n", static_cast<unsigned long long>(seq), i);
            return 1;
        }
    }
    std::printf("TOTAL %08x\n", total);
    std::fflush(stdout);
    return 0;  // ~Producer closes the channel
}

int consume(const char* channel, uint32_t frames) {
    bips_consumer_options o;
    bips_consumer_options_default(&o);
    o.start = BIPS_START_OLDEST;
    bips_consumer* raw = nullptr;
    bips_status st = BIPS_E_NOT_FOUND;
    for (int tries = 0; tries < 2000; tries++) {  // wait up to 20 s for the producer
        st = bips_consumer_open(channel, &o, &raw);
        if (st != BIPS_E_NOT_FOUND && st != BIPS_E_DISCONNECTED) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (st != BIPS_OK) return fail("open", st);
    Consumer consumer(raw);
    uint32_t n = 0, total = 0;
    for (;;) {
        Sample s;
        st = bips_consumer_recv(consumer.get(), BIPS_FOREVER, s.out());
        if (st == BIPS_E_DISCONNECTED) break;  // the producer left and everything was read
        if (st != BIPS_OK) return fail("recv", st);
        const uint8_t* data = static_cast<const uint8_t*>(bips_sample_data(s.get()));
        const uint8_t* meta = static_cast<const uint8_t*>(bips_sample_meta(s.get()));
        const size_t len = bips_sample_len(s.get());
        const uint32_t got = test_crc32(data, len);
        if (bips_sample_meta_size(s.get()) < 12 || test_get_u32(meta) != n || len != test_frame_len(n) ||
            test_get_u32(meta + 4) != len || test_get_u32(meta + 8) != got) {
            std::fprintf(stderr, "cpp_noexcept: bad frame #%u (len %zu)\n", n, len);
            return 1;
        }
        total ^= got;
        n++;
        if ((st = s.release()) != BIPS_OK) return fail("release", st);
    }
    if (n != frames) {
        std::fprintf(stderr, "cpp_noexcept: received %u frames, expected %u\n", n, frames);
        return 1;
    }
    std::printf("TOTAL %08x\n", total);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 5 && std::strcmp(argv[1], "producer") == 0)
        return produce(argv[2], static_cast<uint32_t>(std::strtoul(argv[3], nullptr, 10)),
                       static_cast<uint32_t>(std::strtoul(argv[4], nullptr, 10)));
    if (argc == 4 && std::strcmp(argv[1], "consumer") == 0)
        return consume(argv[2], static_cast<uint32_t>(std::strtoul(argv[3], nullptr, 10)));
    std::fprintf(stderr, "usage: %s producer CHANNEL FRAMES CONSUMERS | consumer CHANNEL FRAMES\n", argv[0]);
    return 2;
}
