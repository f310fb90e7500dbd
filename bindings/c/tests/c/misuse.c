/* Misuse of the C API must answer error codes, never crash. Built and run
 * plain and under -fsanitize=address,undefined by scripts/test-c.sh.
 * Usage: misuse CHANNEL_PREFIX. Prints one line per check, then
 * "misuse: N checks, M failed"; exit status 1 when any failed. */
#define _POSIX_C_SOURCE 200809L
#include <bips/bips.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int checks = 0, failed = 0;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        checks++;                                                                     \
        if (!(cond)) {                                                                \
            failed++;                                                                 \
            printf("FAIL %s:%d: %s (last error: %s)\n", __FILE__, __LINE__, #cond,      \
                   bips_last_error_message());                                        \
        }                                                                             \
    } while (0)

#define EXPECT(call, status) CHECK((call) == (status))

static char name_a[128], name_b[128], name_c[128];

static bips_producer *make_producer(const char *name, uint32_t buffers) {
    bips_options o;
    bips_options_default(&o);
    o.buffers = buffers;
    o.buffer_size = 4096;
    o.meta_size = 16;
    bips_producer *p = NULL;
    EXPECT(bips_producer_create(name, &o, &p), BIPS_OK);
    return p;
}

static void publish_n(bips_producer *p, int n) {
    for (int i = 0; i < n; i++) {
        bips_sample_mut s;
        EXPECT(bips_producer_loan(p, BIPS_TRY, &s), BIPS_OK);
        ((uint8_t *)bips_sample_mut_data(s))[0] = (uint8_t)i;
        EXPECT(bips_sample_mut_set_len(s, 1), BIPS_OK);
        EXPECT(bips_sample_mut_publish(&s, NULL), BIPS_OK);
    }
}

static void arguments(void) {
    bips_options o;
    bips_producer *p = (bips_producer *)1;
    bips_consumer *c = (bips_consumer *)1;
    EXPECT(bips_options_init(NULL, sizeof o), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_options_default(&o), BIPS_OK);
    CHECK(o.struct_size == sizeof o && o.buffers == 4 && o.buffer_size == 0 && o.meta_size == 64);
    EXPECT(bips_producer_create(name_a, &o, &p), BIPS_E_INVALID_ARGUMENT); /* buffer_size 0 */
    CHECK(p == NULL);
    CHECK(strstr(bips_last_error_message(), "buffer_size") != NULL);
    o.buffer_size = 4096;
    EXPECT(bips_producer_create(NULL, &o, &p), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_producer_create(name_a, NULL, &p), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_producer_create(name_a, &o, NULL), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_producer_create("bad/name", &o, &p), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_producer_create("", &o, &p), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_producer_create("\xff\xfe", &o, &p), BIPS_E_INVALID_ARGUMENT);
    o.policy = 99;
    EXPECT(bips_producer_create(name_a, &o, &p), BIPS_E_INVALID_ARGUMENT);
    o.policy = BIPS_POLICY_BLOCK;
    o.wait = 42;
    EXPECT(bips_producer_create(name_a, &o, &p), BIPS_E_INVALID_ARGUMENT);
    o.wait = BIPS_WAIT_PARK;
    o.flags = 0x80;
    EXPECT(bips_producer_create(name_a, &o, &p), BIPS_E_INVALID_ARGUMENT);
    o.flags = 0;
    o.struct_size = 0;
    EXPECT(bips_producer_create(name_a, &o, &p), BIPS_E_INVALID_ARGUMENT);
    o.struct_size = sizeof o;
    o.buffers = 0;
    EXPECT(bips_producer_create(name_a, &o, &p), BIPS_E_INVALID_ARGUMENT);
    /* Out-of-range geometry: refused with a message, nothing created. */
    o.buffers = 0xFFFFFFFFu;
    EXPECT(bips_producer_create(name_a, &o, &p), BIPS_E_INVALID_ARGUMENT);
    o.buffers = 4;
    o.buffer_size = UINT64_MAX;
    EXPECT(bips_producer_create(name_a, &o, &p), BIPS_E_INVALID_ARGUMENT);
    o.buffer_size = 4096;
    o.max_consumers = 0;
    EXPECT(bips_producer_create(name_a, &o, &p), BIPS_E_INVALID_ARGUMENT);
    o.max_consumers = 8;
    o.alignment = 3;
    EXPECT(bips_producer_create(name_a, &o, &p), BIPS_E_INVALID_ARGUMENT);
    CHECK(strstr(bips_last_error_message(), "alignment") != NULL);
    o.alignment = 0;
    o.ring_capacity = 3;
    EXPECT(bips_producer_create(name_a, &o, &p), BIPS_E_INVALID_ARGUMENT);
    CHECK(p == NULL);

    EXPECT(bips_consumer_open(name_a, NULL, &c), BIPS_E_NOT_FOUND);
    CHECK(c == NULL);
    EXPECT(bips_consumer_open(NULL, NULL, &c), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_consumer_open(name_a, NULL, NULL), BIPS_E_INVALID_ARGUMENT);
    bips_consumer_options co;
    bips_consumer_options_default(&co);
    co.start = 7;
    EXPECT(bips_consumer_open(name_a, &co, &c), BIPS_E_INVALID_ARGUMENT);

    /* Null handles everywhere. */
    bips_sample_mut sm = {0};
    bips_sample s = {0};
    bips_geometry g;
    uint32_t n;
    EXPECT(bips_producer_loan(NULL, 0, &sm), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_producer_destroy(NULL), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_producer_geometry(NULL, &g), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_producer_consumer_count(NULL, &n), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_consumer_recv(NULL, 0, &s), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_consumer_destroy(NULL), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_consumer_geometry(NULL, &g), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_sample_mut_publish(NULL, NULL), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_sample_mut_publish(&sm, NULL), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_sample_mut_discard(&sm), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_sample_mut_set_len(sm, 1), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_sample_release(NULL), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_sample_release(&s), BIPS_E_INVALID_ARGUMENT);
    CHECK(bips_sample_mut_data(sm) == NULL && bips_sample_mut_capacity(sm) == 0);
    CHECK(bips_sample_data(s) == NULL && bips_sample_len(s) == 0 && bips_sample_meta(s) == NULL);

    CHECK(strcmp(bips_status_name(BIPS_E_STALE), "BIPS_E_STALE") == 0);
    CHECK(strcmp(bips_status_name(1000), "BIPS_E_UNKNOWN") == 0);
    CHECK(bips_version()[0] != '\0');
    CHECK(bips_now_ns() > 0);
}

static void loans(void) {
    bips_producer *p = make_producer(name_a, 4);
    bips_producer *p2 = NULL;
    bips_options o;
    bips_options_default(&o);
    o.buffer_size = 4096;
    EXPECT(bips_producer_create(name_a, &o, &p2), BIPS_E_BUSY); /* live producer owns it */
    CHECK(p2 == NULL);
    EXPECT(bips_producer_loan(p, 0, NULL), BIPS_E_INVALID_ARGUMENT);

    bips_sample_mut l[4];
    for (int i = 0; i < 4; i++) EXPECT(bips_producer_loan(p, BIPS_TRY, &l[i]), BIPS_OK);
    bips_sample_mut extra;
    EXPECT(bips_producer_loan(p, BIPS_TRY, &extra), BIPS_E_TIMEOUT);
    CHECK(extra.owner == NULL);
    EXPECT(bips_producer_loan(p, 1000000, &extra), BIPS_E_TIMEOUT); /* 1 ms */
    /* Every buffer on loan to p: waiting forever would never end. */
    EXPECT(bips_producer_loan(p, BIPS_FOREVER, &extra), BIPS_E_HELD_LIMIT);
    CHECK(extra.owner == NULL);
    CHECK(strstr(bips_last_error_message(), "every buffer is on loan to this producer") != NULL);

    size_t cap = bips_sample_mut_capacity(l[0]);
    CHECK(cap == 4096 && bips_sample_mut_len(l[0]) == cap && bips_sample_mut_meta_size(l[0]) == 16);
    EXPECT(bips_sample_mut_set_len(l[0], cap + 1), BIPS_E_INVALID_ARGUMENT);
    CHECK(bips_sample_mut_len(l[0]) == cap);
    EXPECT(bips_sample_mut_set_len(l[0], 10), BIPS_OK);
    EXPECT(bips_sample_mut_set_timestamp_ns(l[0], 12345), BIPS_OK);

    bips_sample_mut copy = l[0];
    uint64_t seq = 99;
    EXPECT(bips_sample_mut_publish(&l[0], &seq), BIPS_OK);
    CHECK(seq == 0 && l[0].owner == NULL);
    EXPECT(bips_sample_mut_publish(&l[0], &seq), BIPS_E_INVALID_ARGUMENT); /* zeroed */
    EXPECT(bips_sample_mut_publish(&copy, &seq), BIPS_E_STALE);            /* double publish */
    EXPECT(bips_sample_mut_discard(&copy), BIPS_E_STALE);
    EXPECT(bips_sample_mut_set_len(copy, 1), BIPS_E_STALE);
    CHECK(bips_sample_mut_data(copy) == NULL && bips_sample_mut_meta(copy) == NULL);

    copy = l[1];
    EXPECT(bips_sample_mut_discard(&l[1]), BIPS_OK);
    EXPECT(bips_sample_mut_discard(&copy), BIPS_E_STALE); /* double discard */
    /* The discarded buffer is loaned again: the stale copy must not reach it. */
    bips_sample_mut again;
    EXPECT(bips_producer_loan(p, BIPS_TRY, &again), BIPS_OK);
    CHECK(again.token != copy.token);
    EXPECT(bips_sample_mut_publish(&copy, NULL), BIPS_E_STALE);
    EXPECT(bips_sample_mut_discard(&again), BIPS_OK);

    /* A loan handed to another producer's handle is not one of its loans. */
    bips_producer *pb = make_producer(name_b, 4);
    bips_sample_mut forged = l[2];
    forged.owner = pb;
    EXPECT(bips_sample_mut_publish(&forged, NULL), BIPS_E_STALE);

    /* Destroy with loans outstanding: deferred; the loans still work. */
    EXPECT(bips_producer_destroy(p), BIPS_OK);
    EXPECT(bips_producer_loan(p, BIPS_TRY, &extra), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_producer_destroy(p), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_sample_mut_set_len(l[2], 3), BIPS_OK);
    EXPECT(bips_sample_mut_publish(&l[2], NULL), BIPS_OK);
    EXPECT(bips_sample_mut_discard(&l[3]), BIPS_OK); /* the last one: frees the producer */
    EXPECT(bips_producer_destroy(pb), BIPS_OK);
    /* Both names are gone now. */
    bips_consumer *c = NULL;
    EXPECT(bips_consumer_open(name_a, NULL, &c), BIPS_E_NOT_FOUND);
    EXPECT(bips_consumer_open(name_b, NULL, &c), BIPS_E_NOT_FOUND);
}

static void samples(void) {
    bips_producer *p = make_producer(name_a, 12);
    bips_consumer *c = NULL, *c2 = NULL;
    bips_consumer_options co;
    bips_consumer_options_default(&co);
    co.start = BIPS_START_OLDEST;
    EXPECT(bips_consumer_open(name_a, &co, &c), BIPS_OK);
    EXPECT(bips_consumer_open(name_a, &co, &c2), BIPS_OK);
    uint32_t n = 0;
    EXPECT(bips_producer_consumer_count(p, &n), BIPS_OK);
    CHECK(n == 2);
    bips_geometry g;
    EXPECT(bips_consumer_geometry(c, &g), BIPS_OK);
    CHECK(g.buffers == 12 && g.buffer_size == 4096 && g.meta_size == 16 && g.policy == BIPS_POLICY_BLOCK);

    bips_sample s;
    EXPECT(bips_consumer_recv(c, BIPS_TRY, &s), BIPS_E_TIMEOUT);
    CHECK(s.owner == NULL);
    EXPECT(bips_consumer_recv(c, 1000000, &s), BIPS_E_TIMEOUT);
    publish_n(p, 10);

    bips_sample held[BIPS_MAX_HELD];
    for (int i = 0; i < BIPS_MAX_HELD; i++) {
        EXPECT(bips_consumer_recv(c, BIPS_TRY, &held[i]), BIPS_OK);
        CHECK(bips_sample_seq(held[i]) == (uint64_t)i && bips_sample_len(held[i]) == 1);
        CHECK(((const uint8_t *)bips_sample_data(held[i]))[0] == (uint8_t)i);
    }
    EXPECT(bips_consumer_recv(c, BIPS_TRY, &s), BIPS_E_HELD_LIMIT);
    EXPECT(bips_consumer_recv(c, 0, NULL), BIPS_E_INVALID_ARGUMENT);

    bips_sample copy = held[0];
    EXPECT(bips_sample_release(&held[0]), BIPS_OK);
    CHECK(held[0].owner == NULL);
    EXPECT(bips_sample_release(&held[0]), BIPS_E_INVALID_ARGUMENT); /* zeroed */
    EXPECT(bips_sample_release(&copy), BIPS_E_STALE);               /* double release */
    CHECK(bips_sample_data(copy) == NULL && bips_sample_len(copy) == 0 && bips_sample_seq(copy) == 0);
    bips_sample_info info;
    EXPECT(bips_sample_get_info(copy, &info), BIPS_E_STALE);
    /* The freed slot is reused by the next sample; the stale copy must not reach it. */
    EXPECT(bips_consumer_recv(c, BIPS_TRY, &s), BIPS_OK);
    CHECK(s.token != copy.token);
    EXPECT(bips_sample_release(&copy), BIPS_E_STALE);
    EXPECT(bips_sample_get_info(s, &info), BIPS_OK);
    CHECK(info.seq == 8 && info.len == 1 && info.meta_size == 16 && info.lagged == 0);

    /* Released to the wrong consumer: refused, and the right one still works. */
    bips_sample wrong = held[1];
    wrong.owner = c2;
    EXPECT(bips_sample_release(&wrong), BIPS_E_STALE);
    EXPECT(bips_sample_release(&held[1]), BIPS_OK);

    /* Destroy with samples held: deferred; the bytes stay readable. */
    EXPECT(bips_consumer_destroy(c), BIPS_OK);
    EXPECT(bips_consumer_recv(c, BIPS_TRY, &copy), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_consumer_destroy(c), BIPS_E_INVALID_ARGUMENT);
    CHECK(((const uint8_t *)bips_sample_data(held[2]))[0] == 2);
    for (int i = 2; i < BIPS_MAX_HELD; i++) EXPECT(bips_sample_release(&held[i]), BIPS_OK);
    EXPECT(bips_sample_release(&s), BIPS_OK); /* the last one: frees the consumer */

    /* Producer gone: the other consumer drains, then is told. */
    EXPECT(bips_producer_destroy(p), BIPS_OK);
    int got = 0;
    bips_status st;
    while ((st = bips_consumer_recv(c2, BIPS_FOREVER, &s)) == BIPS_OK) {
        got++;
        EXPECT(bips_sample_release(&s), BIPS_OK);
    }
    CHECK(st == BIPS_E_DISCONNECTED && got == 10);
    CHECK(strstr(bips_last_error_message(), "disconnected") != NULL);
    EXPECT(bips_consumer_destroy(c2), BIPS_OK);
}

/* Two consumers' first samples: a handle carrying the other consumer is
 * stale there, and neither sample is touched. */
static void swapped_owners(void) {
    bips_producer *p = make_producer(name_a, 4);
    bips_consumer *a = NULL, *b = NULL;
    EXPECT(bips_consumer_open(name_a, NULL, &a), BIPS_OK);
    EXPECT(bips_consumer_open(name_a, NULL, &b), BIPS_OK);
    publish_n(p, 1);
    bips_sample sa, sb;
    EXPECT(bips_consumer_recv(a, BIPS_TRY, &sa), BIPS_OK);
    EXPECT(bips_consumer_recv(b, BIPS_TRY, &sb), BIPS_OK);
    CHECK(sa.token != sb.token);
    bips_sample fa = {b, sa.token}, fb = {a, sb.token};
    EXPECT(bips_sample_release(&fa), BIPS_E_STALE);
    EXPECT(bips_sample_release(&fb), BIPS_E_STALE);
    CHECK(bips_sample_data(fa) == NULL && bips_sample_len(fb) == 0);
    CHECK(bips_sample_len(sa) == 1 && bips_sample_len(sb) == 1);
    CHECK(((const uint8_t *)bips_sample_data(sa))[0] == 0);
    EXPECT(bips_sample_release(&sa), BIPS_OK);
    EXPECT(bips_sample_release(&sb), BIPS_OK);
    EXPECT(bips_consumer_destroy(a), BIPS_OK);
    EXPECT(bips_consumer_destroy(b), BIPS_OK);
    EXPECT(bips_producer_destroy(p), BIPS_OK);
}

struct blocked {
    bips_consumer *c;
    bips_status status;
};

static void *recv_forever(void *arg) {
    struct blocked *b = arg;
    bips_sample s;
    b->status = bips_consumer_recv(b->c, BIPS_FOREVER, &s);
    if (b->status == BIPS_OK) bips_sample_release(&s);
    return NULL;
}

static void threads(void) {
    bips_producer *p = make_producer(name_c, 4);
    bips_consumer *c = NULL;
    EXPECT(bips_consumer_open(name_c, NULL, &c), BIPS_OK);
    struct blocked b = {c, BIPS_E_INTERNAL};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, recv_forever, &b) == 0);
    struct timespec ms50 = {0, 50 * 1000000L};
    nanosleep(&ms50, NULL);
    /* The other thread is inside recv: a second caller is refused, not raced. */
    bips_sample s;
    EXPECT(bips_consumer_recv(c, BIPS_TRY, &s), BIPS_E_BUSY);
    EXPECT(bips_consumer_destroy(c), BIPS_E_BUSY);
    publish_n(p, 1);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(b.status == BIPS_OK);
    EXPECT(bips_consumer_destroy(c), BIPS_OK);
    EXPECT(bips_producer_destroy(p), BIPS_OK);
}

/* A release while another thread is blocked in recv on the same consumer (a
 * broken contract, e.g. a C++ Sample destroyed on another thread): it is left
 * in the consumer's mailbox, answered BIPS_OK, and applied by the thread
 * inside between the slices of its wait, so a Block producer that needs that
 * buffer makes progress (and the blocked recv gets its sample). */
static void mailbox(void) {
    bips_producer *p = make_producer(name_c, 2);
    bips_consumer *c = NULL;
    EXPECT(bips_consumer_open(name_c, NULL, &c), BIPS_OK);
    publish_n(p, 2);
    bips_sample s0, s1;
    EXPECT(bips_consumer_recv(c, BIPS_TRY, &s0), BIPS_OK);
    EXPECT(bips_consumer_recv(c, BIPS_TRY, &s1), BIPS_OK);
    bips_sample_mut l;
    EXPECT(bips_producer_loan(p, BIPS_TRY, &l), BIPS_E_TIMEOUT); /* both buffers held */
    struct blocked b = {c, BIPS_E_INTERNAL};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, recv_forever, &b) == 0);
    struct timespec ms50 = {0, 50 * 1000000L};
    nanosleep(&ms50, NULL);
    bips_geometry g;
    EXPECT(bips_consumer_geometry(c, &g), BIPS_E_BUSY); /* the thread is inside */
    bips_sample copy = s0;
    EXPECT(bips_sample_release(&s0), BIPS_OK); /* left in the mailbox */
    CHECK(s0.owner == NULL);
    EXPECT(bips_producer_loan(p, 5000000000LL, &l), BIPS_OK); /* applied: a buffer is free */
    ((uint8_t *)bips_sample_mut_data(l))[0] = 9;
    EXPECT(bips_sample_mut_set_len(l, 1), BIPS_OK);
    EXPECT(bips_sample_mut_publish(&l, NULL), BIPS_OK);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(b.status == BIPS_OK);
    copy.owner = c;
    EXPECT(bips_sample_release(&copy), BIPS_E_STALE); /* it was released */
    EXPECT(bips_sample_release(&s1), BIPS_OK);
    EXPECT(bips_consumer_destroy(c), BIPS_OK);
    EXPECT(bips_producer_destroy(p), BIPS_OK);
}

/* Owner trust (T2): the setters check their arguments; trusting more than
 * our own uid still opens our own channel. */
static void trust(void) {
    bips_consumer_options co;
    bips_options o;
    EXPECT(bips_consumer_options_trust_owner(NULL, 1), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_consumer_options_trust_any_owner(NULL), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_options_trust_owner(NULL, 1), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_options_trust_any_owner(NULL), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_options_default(&o), BIPS_OK);
    EXPECT(bips_options_trust_owner(&o, 65534), BIPS_OK);
    CHECK(o.trusted_uid_count == 1 && o.trusted_uids[0] == 65534 && o.trust_any_owner == 0);
    EXPECT(bips_options_trust_any_owner(&o), BIPS_OK);
    CHECK(o.trust_any_owner == 1);
    EXPECT(bips_consumer_options_default(&co), BIPS_OK);
    CHECK(co.trusted_uid_count == 0 && co.trust_any_owner == 0);
    for (uint32_t u = 0; u < BIPS_MAX_TRUSTED_UIDS; u++)
        EXPECT(bips_consumer_options_trust_owner(&co, 1000 + u), BIPS_OK);
    EXPECT(bips_consumer_options_trust_owner(&co, 1000), BIPS_OK); /* already there */
    EXPECT(bips_consumer_options_trust_owner(&co, 7), BIPS_E_INVALID_ARGUMENT);
    CHECK(strstr(bips_last_error_message(), "trust_any_owner") != NULL);
    co.trusted_uid_count = BIPS_MAX_TRUSTED_UIDS + 1; /* set by hand: checked at open */
    bips_consumer *c = NULL;
    EXPECT(bips_consumer_open(name_a, &co, &c), BIPS_E_INVALID_ARGUMENT);
    co.trusted_uid_count = 1;
    bips_producer *p = make_producer(name_a, 2);
    EXPECT(bips_consumer_open(name_a, &co, &c), BIPS_OK);
    EXPECT(bips_consumer_destroy(c), BIPS_OK);
    EXPECT(bips_producer_destroy(p), BIPS_OK);
}

/* The raw real-time API: the buffer table, and the buffer index carried by
 * loans and samples; misuse of the table calls. */
static void buffer_tables(void) {
    bips_producer *p = make_producer(name_a, 3);
    bips_consumer *c = NULL;
    EXPECT(bips_consumer_open(name_a, NULL, &c), BIPS_OK);
    size_t n = 99;
    bips_buffer_info pt[4], ct[4];
    EXPECT(bips_producer_buffers(p, NULL, 0, &n), BIPS_OK); /* size query */
    CHECK(n == 3);
    EXPECT(bips_producer_buffers(p, NULL, 2, &n), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_producer_buffers(p, pt, 4, NULL), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_producer_buffers(NULL, pt, 4, &n), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_consumer_buffers(NULL, ct, 4, &n), BIPS_E_INVALID_ARGUMENT);
    memset(pt, 0, sizeof pt);
    EXPECT(bips_producer_buffers(p, pt, 2, &n), BIPS_OK); /* short array: 2 written */
    CHECK(n == 3 && pt[1].index == 1 && pt[2].data == NULL);
    EXPECT(bips_producer_buffers(p, pt, 4, &n), BIPS_OK);
    EXPECT(bips_consumer_buffers(c, ct, 4, &n), BIPS_OK);
    CHECK(n == 3);
    for (uint32_t i = 0; i < 3; i++) {
        CHECK(pt[i].index == i && ct[i].index == i);
        CHECK(pt[i].capacity == 4096 && pt[i].meta_size == 16 && ct[i].capacity == 4096);
        CHECK(pt[i].data != NULL && ct[i].data != NULL && pt[i].meta != NULL);
    }
    for (int round = 0; round < 6; round++) {
        bips_sample_mut m;
        bips_sample_mut_info mi;
        EXPECT(bips_producer_loan(p, BIPS_TRY, &m), BIPS_OK);
        EXPECT(bips_sample_mut_get_info(m, &mi), BIPS_OK);
        CHECK(mi.buffer_index < 3 && mi.data == pt[mi.buffer_index].data);
        CHECK(mi.meta == pt[mi.buffer_index].meta);
        /* written through the table, as a DMA engine would */
        memset(pt[mi.buffer_index].data, 0x40 + round, 32);
        EXPECT(bips_sample_mut_set_len(m, 32), BIPS_OK);
        EXPECT(bips_sample_mut_publish(&m, NULL), BIPS_OK);
        bips_sample s;
        bips_sample_info si;
        EXPECT(bips_consumer_recv(c, BIPS_TRY, &s), BIPS_OK);
        EXPECT(bips_sample_get_info(s, &si), BIPS_OK);
        CHECK(si.buffer_index == mi.buffer_index && si.data == ct[si.buffer_index].data);
        CHECK(((const uint8_t *)ct[si.buffer_index].data)[31] == 0x40 + round);
        EXPECT(bips_sample_release(&s), BIPS_OK);
    }
    EXPECT(bips_consumer_destroy(c), BIPS_OK);
    EXPECT(bips_producer_destroy(p), BIPS_OK);
}

/* Frames: a malformed bips_descriptor is refused with BIPS_E_DESCRIPTOR (a C
 * struct is untrusted input), NULLs and stale handles with their usual codes,
 * and a consumer requiring another payload type with BIPS_E_TYPE_MISMATCH. */
static void frames(void) {
    bips_descriptor d, bad;
    EXPECT(bips_descriptor_image(2, 3, 3, BIPS_DTYPE_U8, &d), BIPS_OK);
    CHECK(d.ndim == 3 && d.strides[0] == 9 && d.format[0] == '\0');
    EXPECT(bips_descriptor_set_format(&d, "RGB"), BIPS_OK);
    EXPECT(bips_descriptor_validate(&d, 18), BIPS_OK);
    EXPECT(bips_descriptor_validate(&d, 17), BIPS_E_DESCRIPTOR);
    CHECK(strstr(bips_last_error_message(), "needs 18 bytes") != NULL);
    EXPECT(bips_descriptor_validate(NULL, 18), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_descriptor_image(2, 3, 3, BIPS_DTYPE_U8, NULL), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_descriptor_image(2, 3, 3, 0, &bad), BIPS_E_DESCRIPTOR);
    bad = d; bad.dtype = 16;
    EXPECT(bips_descriptor_validate(&bad, 18), BIPS_E_DESCRIPTOR);
    CHECK(strstr(bips_last_error_message(), "unknown element type code 16") != NULL);
    bad = d; bad.dtype = 0xFFFFFFFFu;
    EXPECT(bips_descriptor_validate(&bad, 18), BIPS_E_DESCRIPTOR);
    bad = d; bad.ndim = 9;
    EXPECT(bips_descriptor_validate(&bad, 18), BIPS_E_DESCRIPTOR);
    bad = d; bad.nplanes = 5;
    EXPECT(bips_descriptor_validate(&bad, 18), BIPS_E_DESCRIPTOR);
    bad = d; bad.format[0] = (char)0xC3; bad.format[1] = (char)0xA9;
    EXPECT(bips_descriptor_validate(&bad, 18), BIPS_E_DESCRIPTOR);
    bad = d; memset(bad.colorimetry, 'x', sizeof bad.colorimetry); /* no NUL */
    EXPECT(bips_descriptor_validate(&bad, 18), BIPS_E_DESCRIPTOR);
    CHECK(strstr(bips_last_error_message(), "NUL-terminated") != NULL);
    bad = d; bad.shape[0] = UINT64_MAX;
    EXPECT(bips_descriptor_validate(&bad, 18), BIPS_E_DESCRIPTOR);
    EXPECT(bips_descriptor_set_format(&d, "0123456789ABCDEF"), BIPS_E_DESCRIPTOR);
    CHECK(strcmp(d.format, "RGB") == 0); /* unchanged */
    CHECK(bips_dtype_size(BIPS_DTYPE_F64) == 8 && bips_dtype_size(99) == 0);
    CHECK(strcmp(bips_dtype_name(BIPS_DTYPE_U16), "uint16") == 0);
    CHECK(strcmp(bips_status_name(BIPS_E_TYPE_MISMATCH), "BIPS_E_TYPE_MISMATCH") == 0);

    bips_options o;
    bips_options_default(&o);
    o.buffer_size = 4096;
    EXPECT(bips_options_payload_type(&o, "image/rgb8", 1, &bad), BIPS_E_DESCRIPTOR);
    EXPECT(bips_options_payload_type(&o, "two words", 1, NULL), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_options_payload_type(NULL, "image/rgb8", 1, NULL), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_options_payload_type(&o, "image/rgb8", 1, NULL), BIPS_OK);
    bips_producer *p = NULL;
    EXPECT(bips_producer_create(name_a, &o, &p), BIPS_OK);
    bips_consumer_options co;
    bips_consumer_options_default(&co);
    EXPECT(bips_consumer_options_require_type(&co, "image/bgr8", 1, NULL), BIPS_OK);
    bips_consumer *c = NULL;
    EXPECT(bips_consumer_open(name_a, &co, &c), BIPS_E_TYPE_MISMATCH);
    CHECK(c == NULL && strstr(bips_last_error_message(), "image/rgb8 v1") != NULL);
    EXPECT(bips_consumer_options_require_type(&co, "image/rgb8", 1, NULL), BIPS_OK);
    EXPECT(bips_consumer_open(name_a, &co, &c), BIPS_OK);

    bips_sample_mut l, stale;
    EXPECT(bips_producer_loan(p, BIPS_TRY, &l), BIPS_OK);
    EXPECT(bips_sample_mut_set_descriptor(l, NULL), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_sample_mut_set_descriptor(l, &bad), BIPS_E_DESCRIPTOR);
    EXPECT(bips_sample_mut_descriptor(l, &bad), BIPS_E_NO_DESCRIPTOR);
    CHECK(bad.dtype == BIPS_DTYPE_NONE);
    EXPECT(bips_sample_mut_set_descriptor(l, &d), BIPS_OK);
    EXPECT(bips_sample_mut_set_len(l, 18), BIPS_OK);
    stale = l;
    EXPECT(bips_sample_mut_publish(&l, NULL), BIPS_OK);
    EXPECT(bips_sample_mut_set_descriptor(stale, &d), BIPS_E_STALE);
    bips_sample s, zero = {0};
    EXPECT(bips_consumer_recv(c, BIPS_TRY, &s), BIPS_OK);
    EXPECT(bips_sample_descriptor(s, &bad), BIPS_OK);
    CHECK(bad.dtype == BIPS_DTYPE_U8 && bad.shape[1] == 3 && strcmp(bad.format, "RGB") == 0);
    EXPECT(bips_sample_descriptor(zero, &bad), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_sample_descriptor(s, NULL), BIPS_E_INVALID_ARGUMENT);
    EXPECT(bips_sample_release(&s), BIPS_OK);
    bips_payload_type t;
    EXPECT(bips_consumer_payload_type(c, &t), BIPS_OK);
    CHECK(strcmp(t.name, "image/rgb8") == 0 && t.version == 1 && t.has_descriptor == 0);
    EXPECT(bips_consumer_destroy(c), BIPS_OK);
    EXPECT(bips_producer_destroy(p), BIPS_OK);
}

int main(int argc, char **argv) {
    const char *prefix = argc > 1 ? argv[1] : "misuse";
    snprintf(name_a, sizeof name_a, "%s-a", prefix);
    snprintf(name_b, sizeof name_b, "%s-b", prefix);
    snprintf(name_c, sizeof name_c, "%s-c", prefix);
    arguments();
    loans();
    samples();
    swapped_owners();
    threads();
    mailbox();
    trust();
    buffer_tables();
    frames();
    printf("misuse: %d checks, %d failed\n", checks, failed);
    return failed != 0;
}
