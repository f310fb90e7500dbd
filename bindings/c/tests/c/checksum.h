/* checksum.h — the test stream shared by the C, C++, Rust and Python test programs.
 *
 * Frame i (0-based) has len = 1024 + (i * 997) % 60000 bytes, byte j being
 * (uint8_t)(i * 131 + j * 7 + (j >> 8)). Its 12 metadata bytes are three
 * little-endian u32: the index i, len, and the CRC-32 (zlib's) of the payload.
 * Producers print "TOTAL <xor of every frame's crc>"; consumers check every
 * frame (index in order, len, crc of the bytes as received == meta crc ==
 * crc of the expected pattern) and print the same line. */
#ifndef BIPS_TEST_CHECKSUM_H
#define BIPS_TEST_CHECKSUM_H
#include <stddef.h>
#include <stdint.h>

#define TEST_BUFFER_SIZE 65536u
#define TEST_META_SIZE 16u

static inline uint32_t test_crc32(const uint8_t *p, size_t n) {
    static uint32_t table[256];
    static int ready = 0;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static inline size_t test_frame_len(uint32_t i) { return 1024u + (size_t)((i * 997u) % 60000u); }

static inline void test_fill(uint32_t i, uint8_t *p, size_t n) {
    for (size_t j = 0; j < n; j++) p[j] = (uint8_t)(i * 131u + j * 7u + (j >> 8));
}

static inline void test_put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t test_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
#endif
