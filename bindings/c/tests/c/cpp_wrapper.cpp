// The C++ wrapper (bips.hpp) in one process: RAII, moves, exceptions, spans.
// Built as C++17 and C++20, plain and with -fsanitize=address,undefined.
// Usage: cpp_wrapper CHANNEL_PREFIX; prints "cpp_wrapper: N checks, M failed".
// Destructors meeting BIPS_E_BUSY give up (std::terminate) after 200 ms here.
#define BIPS_HPP_BUSY_TIMEOUT_MS 200
#include <bips/bips.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

static int checks = 0, failed = 0;
static bool consumer_count_ok(const bips::Producer& p) { return p.consumer_count() == 1; }
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

        {
            // Owner trust (T2): the setters chain; a ninth uid is refused.
            bips::Consumer trusting(name, bips::ConsumerOptions().trust_owner(65534).trust_any_owner());
            CHECK(trusting.geometry().buffers == 4);
            CHECK(status_of([] {
                      bips::ConsumerOptions o;
                      for (uint32_t u = 0; u <= BIPS_MAX_TRUSTED_UIDS; u++) o.trust_owner(1000 + u);
                  }) == BIPS_E_INVALID_ARGUMENT);
            CHECK(status_of([] { bips::Options(4, 64).trust_owner(65534).trust_any_owner(); }) == BIPS_OK);
        }
        {
            // A batching consumer: max_held 16 on its own channel; the 17th hold throws.
            bips::Producer batch(prefix + "-held", bips::Options(20, 64).max_held(16));
            bips::Consumer bc(prefix + "-held", bips::ConsumerOptions().start(BIPS_START_OLDEST));
            CHECK(bc.max_held() == 16 && consumer_count_ok(batch));
            for (int i = 0; i < 17; i++) batch.loan().publish();
            std::vector<bips::Sample> held;
            for (int i = 0; i < 16; i++) held.push_back(bc.recv());
            CHECK(held.size() == 16 && held[15].seq() == 15);
            CHECK(status_of([&] { bc.try_recv(); }) == BIPS_E_HELD_LIMIT);
            held.pop_back();
            CHECK(bc.try_recv().has_value());
            CHECK(status_of([&] { bips::Producer bad(prefix + "-held2", bips::Options(4, 64).max_held(65)); }) ==
                  BIPS_E_INVALID_ARGUMENT);
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
    {
        // A failing constructor keeps the message of its own failure.
        bips::Producer producer(name, bips::Options(2, 64));
        bips::Consumer consumer(name);
        bips_sample_mut stale = producer.loan().native();  // discarded at once
        try {
            bips::SampleMut adopted(stale);
            CHECK(false);
        } catch (const bips::Error& e) {
            CHECK(e.status() == BIPS_E_STALE);
            CHECK(std::string(e.what()).find("already published or discarded") != std::string::npos);
        }
        { bips::SampleMut s = producer.loan(); s.set_size(1); s.publish(); }
        bips_sample gone = consumer.recv().native();  // released at once
        try {
            bips::Sample adopted(gone);
            CHECK(false);
        } catch (const bips::Error& e) {
            CHECK(e.status() == BIPS_E_STALE);
            CHECK(std::string(e.what()).find("already released") != std::string::npos);
        }
        // Every buffer on loan: loan() throws instead of waiting forever.
        bips::SampleMut a = producer.loan(), b = producer.loan();
        try {
            producer.loan();
            CHECK(false);
        } catch (const bips::Error& e) {
            CHECK(e.status() == BIPS_E_HELD_LIMIT);
            CHECK(std::string(e.what()).find("publish or discard one first") != std::string::npos);
        }
    }
    {
        // A Sample destroyed while another thread is inside its Consumer (a
        // broken contract): the release waits in the consumer's mailbox and
        // is applied when that thread leaves; nothing is lost.
        bips::Producer producer(name, bips::Options(4, 64));
        bips::Consumer consumer(name);
        { bips::SampleMut s = producer.loan(); s.set_size(1); s.publish(); }
        std::optional<bips::Sample> held = consumer.recv();
        bips_sample copy = held->native();
        std::thread inside([&] { (void)consumer.recv_for(std::chrono::milliseconds(100)); });
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        bips_geometry g{};
        bool was_busy = bips_consumer_geometry(consumer.native(), &g) == BIPS_E_BUSY;
        held.reset();  // left in the mailbox
        inside.join();
        CHECK(bips_sample_release(&copy) == BIPS_E_STALE);  // it was released
        if (!was_busy) std::printf("note: the other thread was not inside yet\n");
    }
    {
        // A SampleMut destroyed while another thread is inside its Producer:
        // the destructor retries until that thread leaves, then discards.
        bips::Producer producer(name, bips::Options(2, 64));
        bips::Consumer consumer(name);
        { bips::SampleMut s = producer.loan(); s.set_size(1); s.publish(); }
        bips::Sample pinned = consumer.recv();                   // holds one buffer
        std::optional<bips::SampleMut> loan = producer.loan();  // the other one
        bips_sample_mut copy = loan->native();
        std::thread inside([&] { (void)producer.loan_for(std::chrono::milliseconds(100)); });
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        loan.reset();  // BUSY until `inside` times out, then discarded
        inside.join();
        CHECK(bips_sample_mut_discard(&copy) == BIPS_E_STALE);  // it was discarded

        // The same with a thread that never leaves: std::terminate, loudly.
        std::fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
            const std::string cname = prefix + "-die";
            bips::Producer p2(cname, bips::Options(2, 64));
            bips::Consumer c2(cname);
            { bips::SampleMut s = p2.loan(); s.set_size(1); s.publish(); }
            bips::Sample pinned2 = c2.recv();
            std::optional<bips::SampleMut> l2 = p2.loan();
            std::thread stuck([&] { (void)p2.loan_for(std::chrono::seconds(10)); });
            std::this_thread::sleep_for(std::chrono::milliseconds(30));
            l2.reset();  // BUSY for 200 ms: terminates
            _exit(0);    // not reached
        }
        int wstatus = 0;
        CHECK(child > 0 && waitpid(child, &wstatus, 0) == child);
        CHECK(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGABRT);
        // The dead child's channel: a new producer replaces it, then removes it.
        { bips::Producer cleanup(prefix + "-die", bips::Options(2, 64)); }
    }
    {
        // The raw real-time API: buffer tables and buffer indices.
        bips::Producer producer(prefix + "-raw", bips::Options(4, 1 << 16));
        bips::Consumer consumer(prefix + "-raw", bips::ConsumerOptions().start(BIPS_START_OLDEST));
        std::vector<bips_buffer_info> pt = producer.buffers(), ct = consumer.buffers();
        CHECK(pt.size() == 4 && ct.size() == 4 && pt[3].index == 3 && ct[3].capacity == (1u << 16));
        for (uint8_t round = 0; round < 6; round++) {
            bips::SampleMut m = producer.loan();
            const uint32_t idx = m.buffer_index();
            CHECK(idx < 4 && m.data() == pt[idx].data);
            static_cast<uint8_t*>(pt[idx].data)[0] = static_cast<uint8_t>(0x50 + round);
            m.set_size(1);
            m.publish();
            std::optional<bips::Sample> s = consumer.try_recv();
            CHECK(s && s->buffer_index() == idx && s->data() == ct[idx].data);
            CHECK(s && s->data()[0] == 0x50 + round);
        }
    }
    std::printf("cpp_wrapper: %d checks, %d failed\n", checks, failed);
    return failed != 0;
}
