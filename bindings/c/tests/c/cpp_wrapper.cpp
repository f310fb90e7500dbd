// The C++ wrapper (bips.hpp) in one process: RAII, moves, exceptions, spans.
// Built as C++17 and C++20, plain and with -fsanitize=address,undefined.
// Usage: cpp_wrapper CHANNEL_PREFIX; prints "cpp_wrapper: N checks, M failed".
#include "bips.hpp"

#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

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

int main(int argc, char** argv) {
    const std::string prefix = argc > 1 ? argv[1] : "cpp-wrapper";
    const std::string name = prefix + "-a";
    {
        bips::Producer producer(name, bips::Options(4, 1 << 16).meta_size(8));
        CHECK(producer.geometry().buffers == 4);
        CHECK(status_of([&] { bips::Producer again(name, bips::Options(4, 64)); }) == BIPS_E_BUSY);
        CHECK(status_of([&] { bips::Consumer none(prefix + "-none"); }) == BIPS_E_NOT_FOUND);
        CHECK(status_of([&] { bips::Producer bad("bad/name", bips::Options(4, 64)); }) ==
              BIPS_E_INVALID_ARGUMENT);
        try {
            bips::Producer zero(prefix + "-zero", bips::Options(4, 0));
            CHECK(false);
        } catch (const bips::Error& e) {
            CHECK(e.status() == BIPS_E_INVALID_ARGUMENT);
            CHECK(std::string(e.what()).find("buffer_size") != std::string::npos);
            CHECK(std::string(e.status_name()) == "BIPS_E_INVALID_ARGUMENT");
        }

        bips::Consumer consumer(name, bips::ConsumerOptions().start(BIPS_START_OLDEST));
        CHECK(producer.consumer_count() == 1);
        CHECK(!consumer.try_recv().has_value());
        CHECK(!consumer.recv_for(std::chrono::milliseconds(1)).has_value());

        for (uint8_t i = 0; i < 3; i++) {
            bips::SampleMut s = producer.loan();
            CHECK(s && s.capacity() == (1 << 16) && s.size() == s.capacity() && s.meta_size() == 8);
            std::memset(s.data(), 'a' + i, 100);
            s.meta()[0] = i;
            s.set_size(100);
            CHECK(status_of([&] { s.set_size(s.capacity() + 1); }) == BIPS_E_INVALID_ARGUMENT);
            CHECK(s.size() == 100);
            bips::SampleMut moved = std::move(s);  // moved-from: empty, harmless
            CHECK(!s && s.data() == nullptr);
            CHECK(moved.publish() == i);
            CHECK(!moved);
            CHECK(status_of([&] { moved.publish(); }) == BIPS_E_INVALID_ARGUMENT);
        }
        {
            bips::SampleMut dropped = producer.loan();  // destroyed unpublished: discarded
            dropped.data()[0] = 'x';
        }
        std::vector<bips::Sample> kept;
        for (uint8_t i = 0; i < 3; i++) {
            bips::Sample s = consumer.recv();
            CHECK(s.seq() == i && s.size() == 100 && s.data()[99] == 'a' + i && s.meta()[0] == i);
            CHECK(s.timestamp_ns() > 0 && s.timestamp_ns() <= bips::now_ns() && s.lagged() == 0);
#ifdef BIPS_HPP_HAS_SPAN
            std::span<const uint8_t> bytes = s.bytes();
            CHECK(bytes.size() == 100 && bytes[0] == 'a' + i && s.meta_bytes().size() == 8);
#endif
            kept.push_back(std::move(s));
            CHECK(!s);
        }
        CHECK(!consumer.try_recv().has_value());  // the discarded loan was never published
        kept[0].release();
        CHECK(status_of([&] { kept[0].release(); }) == BIPS_E_INVALID_ARGUMENT);
        // Samples outliving their consumer: the detach waits for them.
        bips::Consumer gone = std::move(consumer);
        { bips::Consumer end = std::move(gone); }
        CHECK(kept[1].data()[0] == 'b' && kept[2].data()[0] == 'c');
        kept.clear();
        // A loan outliving its producer: the close waits for it.
        bips::SampleMut late = producer.loan();
        { bips::Producer end = std::move(producer); }
        late.set_size(1);
        late.publish();
    }
    {
        // The producer is gone: a consumer drains, then next() ends.
        bips::Producer producer(name, bips::Options(2, 64));
        bips::Consumer consumer(name);
        { bips::SampleMut s = producer.loan(); s.set_size(1); s.publish(); }
        producer = bips::Producer(prefix + "-b", bips::Options(2, 64));  // closes `name`
        int n = 0;
        while (auto s = consumer.next()) n++;
        CHECK(n == 1);
        CHECK(status_of([&] { consumer.recv(); }) == BIPS_E_DISCONNECTED);
    }
    std::printf("cpp_wrapper: %d checks, %d failed\n", checks, failed);
    return failed != 0;
}
