/* frames.h — the frame stream of the descriptor tests (cpp_frames.cpp, c_frames.c).
 *
 * Channel payload type "test/frames" v1 (no fixed descriptor: shapes vary).
 * Frame i is h = 3 + i % 17 rows by w = 5 + (i * 7) % 23 columns (odd widths too):
 *   even i: (h, w, 3) uint8 "RGB", rows padded to a multiple of 16 bytes,
 *           element (y, x, c) = (i * 31 + y * 7 + x * 3 + c) & 0xff;
 *   odd i:  (h, w) uint16 "GRAY16_LE" starting 64 bytes into the buffer, rows
 *           padded to a multiple of 16 bytes, element (y, x) = (i * 1009 + y * 257 + x * 13) & 0xffff.
 * Every process prints "TOTAL <hex>": the sum over frames of frames_mix(i, k, value) over
 * every element in row-major order (k counting from 0), as written or as read. */
#ifndef BIPS_TEST_FRAMES_H
#define BIPS_TEST_FRAMES_H
#include <stddef.h>
#include <stdint.h>

#define FRAMES_TYPE "test/frames"
#define FRAMES_VERSION 1u
#define FRAMES_BUFFER_SIZE 65536u

static inline uint32_t frames_h(uint32_t i) { return 3u + i % 17u; }
static inline uint32_t frames_w(uint32_t i) { return 5u + (i * 7u) % 23u; }
static inline int frames_is_rgb(uint32_t i) { return i % 2u == 0; }
static inline uint64_t frames_row_bytes(uint32_t i) {
    const uint64_t packed = (uint64_t)frames_w(i) * (frames_is_rgb(i) ? 3u : 2u);
    return (packed + 15u) / 16u * 16u;
}
static inline uint64_t frames_offset(uint32_t i) { return frames_is_rgb(i) ? 0u : 64u; }
static inline uint32_t frames_u8(uint32_t i, uint32_t y, uint32_t x, uint32_t c) {
    return (i * 31u + y * 7u + x * 3u + c) & 0xffu;
}
static inline uint32_t frames_u16(uint32_t i, uint32_t y, uint32_t x) {
    return (i * 1009u + y * 257u + x * 13u) & 0xffffu;
}
static inline uint32_t frames_mix(uint32_t i, uint32_t k, uint32_t value) {
    return (value + 1u) * (k * 2654435761u + i + 1u);
}
#endif
