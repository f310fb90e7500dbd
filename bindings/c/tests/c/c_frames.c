/* C99 consumer of the frame stream (frames.h), through bips.h: requires the
 * payload type at open, reads each sample's bips_descriptor and every element
 * through its shape, byte strides and offset, checks them, prints "TOTAL <hex>".
 * Usage: c_frames CHANNEL FRAMES (retries the open up to 20 s). Exit 1 on any
 * bad frame or a count other than FRAMES. */
#define _POSIX_C_SOURCE 199309L /* nanosleep */
#include <bips/bips.h>
#include "frames.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void nap_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* Whether `d` is what frames.h says frame i is. */
static int descriptor_ok(uint32_t i, const bips_descriptor *d) {
    const int rgb = frames_is_rgb(i);
    if (d->dtype != (rgb ? BIPS_DTYPE_U8 : BIPS_DTYPE_U16) || d->ndim != (rgb ? 3u : 2u)) return 0;
    if (d->shape[0] != frames_h(i) || d->shape[1] != frames_w(i) || (rgb && d->shape[2] != 3)) return 0;
    if (d->strides[0] != (int64_t)frames_row_bytes(i) || d->strides[1] != (rgb ? 3 : 2) || (rgb && d->strides[2] != 1))
        return 0;
    if (d->offset != frames_offset(i) || d->nplanes != 0) return 0;
    return strcmp(d->format, rgb ? "RGB" : "GRAY16_LE") == 0 && d->colorimetry[0] == '\0';
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
    bips_status st = bips_consumer_options_require_type(&opts, FRAMES_TYPE, FRAMES_VERSION, NULL);
    if (st != BIPS_OK) {
        fprintf(stderr, "c_frames: require_type: %s\n", bips_last_error_message());
        return 1;
    }
    bips_consumer *c = NULL;
    for (int tries = 0; tries < 2000; tries++) {
        st = bips_consumer_open(argv[1], &opts, &c);
        if (st != BIPS_E_NOT_FOUND && st != BIPS_E_DISCONNECTED) break;
        nap_ms(10);
    }
    if (st != BIPS_OK) {
        fprintf(stderr, "c_frames: open: %s: %s\n", bips_status_name(st), bips_last_error_message());
        return 1;
    }
    uint32_t n = 0, total = 0;
    int bad = 0;
    for (;;) {
        bips_sample s;
        st = bips_consumer_recv(c, BIPS_FOREVER, &s);
        if (st == BIPS_E_DISCONNECTED) break;
        if (st != BIPS_OK) {
            fprintf(stderr, "c_frames: recv: %s: %s\n", bips_status_name(st), bips_last_error_message());
            bad = 1;
            break;
        }
        const uint32_t i = n++;
        bips_descriptor d;
        st = bips_sample_descriptor(s, &d);
        if (st != BIPS_OK || !descriptor_ok(i, &d)) {
            fprintf(stderr, "c_frames: frame %u: descriptor %s (%s)\n", i, bips_status_name(st),
                    st == BIPS_OK ? "unexpected fields" : bips_last_error_message());
            bad = 1;
        } else {
            /* bips checked that every element lies inside the sample. */
            const uint8_t *base = (const uint8_t *)bips_sample_data(s) + d.offset;
            const uint32_t channels = d.ndim == 3 ? (uint32_t)d.shape[2] : 1u;
            uint32_t k = 0;
            for (uint32_t y = 0; y < d.shape[0]; y++)
                for (uint32_t x = 0; x < d.shape[1]; x++)
                    for (uint32_t ch = 0; ch < channels; ch++) {
                        const uint8_t *p = base + (int64_t)y * d.strides[0] + (int64_t)x * d.strides[1] +
                                           (d.ndim == 3 ? (int64_t)ch * d.strides[2] : 0);
                        uint32_t got, want;
                        if (d.dtype == BIPS_DTYPE_U8) {
                            got = p[0];
                            want = frames_u8(i, y, x, ch);
                        } else {
                            got = (uint32_t)p[0] | (uint32_t)p[1] << 8; /* little-endian u16 */
                            want = frames_u16(i, y, x);
                        }
                        if (got != want) bad = 1;
                        total += frames_mix(i, k++, got);
                    }
        }
        if (bips_sample_release(&s) != BIPS_OK) bad = 1;
    }
    if (bips_consumer_destroy(c) != BIPS_OK) bad = 1;
    if (n != frames) {
        fprintf(stderr, "c_frames: received %u frames, expected %u\n", n, frames);
        bad = 1;
    }
    printf("TOTAL %08x\n", total);
    return bad;
}
