/* C99 consumer of the checksum stream (checksum.h), through bips.h.
 * Usage: c_consumer CHANNEL FRAMES — opens the channel (retrying up to 20 s
 * while it does not exist yet), reads from the oldest sample until the
 * producer leaves, checks every frame, prints "TOTAL <hex>". Exit 1 on any
 * bad frame or a count other than FRAMES. */
#define _POSIX_C_SOURCE 199309L /* nanosleep */
#include <bips/bips.h>
#include "checksum.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void nap_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CHANNEL FRAMES\n", argv[0]);
        return 2;
    }
    const uint32_t frames = (uint32_t)strtoul(argv[2], NULL, 10);
    bips_consumer_options opts;
    bips_consumer_options_default(&opts);
    opts.start = BIPS_START_OLDEST;
    bips_consumer *c = NULL;
    bips_status st = BIPS_E_NOT_FOUND;
    for (int tries = 0; tries < 2000; tries++) {
        st = bips_consumer_open(argv[1], &opts, &c);
        if (st != BIPS_E_NOT_FOUND && st != BIPS_E_DISCONNECTED) break;
        nap_ms(10);
    }
    if (st != BIPS_OK) {
        fprintf(stderr, "c_consumer: open: %s: %s\n", bips_status_name(st), bips_last_error_message());
        return 1;
    }
    uint32_t n = 0, total = 0;
    int bad = 0;
    for (;;) {
        bips_sample s;
        st = bips_consumer_recv(c, BIPS_FOREVER, &s);
        if (st == BIPS_E_DISCONNECTED) break;
        if (st != BIPS_OK) {
            fprintf(stderr, "c_consumer: recv: %s: %s\n", bips_status_name(st), bips_last_error_message());
            bad = 1;
            break;
        }
        bips_sample_info info;
        if (bips_sample_get_info(s, &info) != BIPS_OK || info.meta_size < 12) {
            fprintf(stderr, "c_consumer: sample_info failed\n");
            bad = 1;
            break;
        }
        const uint8_t *meta = (const uint8_t *)info.meta;
        const uint32_t idx = test_get_u32(meta), len = test_get_u32(meta + 4), crc = test_get_u32(meta + 8);
        const uint32_t got = test_crc32((const uint8_t *)info.data, info.len);
        if (idx != n || info.seq != n || len != info.len || len != test_frame_len(n) || got != crc) {
            fprintf(stderr, "c_consumer: bad frame #%u: idx %u seq %llu len %zu/%u crc %08x/%08x\n", n, idx,
                    (unsigned long long)info.seq, info.len, len, got, crc);
            bad = 1;
        }
        total ^= got;
        n++;
        if (bips_sample_release(&s) != BIPS_OK || s.owner != NULL) {
            fprintf(stderr, "c_consumer: release failed\n");
            bad = 1;
        }
    }
    if (bips_consumer_destroy(c) != BIPS_OK) bad = 1;
    if (n != frames) {
        fprintf(stderr, "c_consumer: received %u frames, expected %u\n", n, frames);
        bad = 1;
    }
    printf("TOTAL %08x\n", total);
    return bad;
}
