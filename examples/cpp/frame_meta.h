/* frame_meta.h — the per-frame metadata of the capture example (32 bytes).
 *
 * Eight little-endian u32 fields at the start of each sample's metadata area
 * (the channel is created with meta_size >= 32):
 *
 *   offset  field    meaning
 *        0  version  1
 *        4  width    pixels per row
 *        8  height   rows
 *       12  stride   bytes from one row to the next (>= width * bytes per pixel)
 *       16  format   FourCC, e.g. 'RGB3' (V4L2_PIX_FMT_RGB24: 3 bytes R, G, B)
 *       20  frame    the producer's frame counter
 *       24  crc32    zlib CRC-32 of the payload (height * stride bytes), 0 = not computed
 *       28  reserved 0
 *
 * Read it in Python with struct.unpack_from("<8I", sample.meta). */
#ifndef BIPS_EXAMPLE_FRAME_META_H
#define BIPS_EXAMPLE_FRAME_META_H
#include <stdint.h>

#define FRAME_META_SIZE 32u
#define FRAME_META_VERSION 1u
#define FOURCC(a, b, c, d) ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)
#define FORMAT_RGB24 FOURCC('R', 'G', 'B', '3')

typedef struct frame_meta {
    uint32_t version, width, height, stride, format, frame, crc32, reserved;
} frame_meta;

/* Stores `m` little-endian whatever the host's byte order. */
static inline void frame_meta_write(uint8_t *out, const frame_meta *m) {
    const uint32_t v[8] = {m->version, m->width, m->height, m->stride, m->format, m->frame, m->crc32, m->reserved};
    for (int i = 0; i < 8; i++)
        for (int k = 0; k < 4; k++) out[4 * i + k] = (uint8_t)(v[i] >> (8 * k));
}
#endif
