/* crc32c.c -- CRC32C (Castagnoli, reflected polynomial 0x82F63B78).
 *
 * Two implementations of the same function: the SSE4.2 crc32 instruction
 * (8 bytes per instruction) where the CPU has it, else slicing by 8 over
 * tables. Which one runs is decided once, before main() (a constructor),
 * so threads never race on it; the tables are immutable after start-up
 * and always built (the test compares both paths). The checksum is in
 * every peer frame and log record: on the write path it was ~5% of the
 * leader's CPU with the tables (docs/benchmarks.md, "Write path profile
 * and tuning"). */
#include <string.h>

#include "keel/common.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KEEL_CRC_HW 1
#include <nmmintrin.h>
#endif

static uint32_t table[8][256];

#ifdef KEEL_CRC_HW
static bool use_hw;

/* The crc32 instruction computes exactly this CRC, without the pre- and
 * post-inversion, which the caller does. */
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc,
							 const uint8_t *p,
							 size_t len)
{
	uint64_t c = crc;
	while (len && ((uintptr_t)p & 7)) {
		c = _mm_crc32_u8((uint32_t)c, *p++);
		len--;
	}
	while (len >= 8) {
		uint64_t v;
		memcpy(&v, p, 8); /* x86 is little-endian, like the CRC */
		c = _mm_crc32_u64(c, v);
		p += 8;
		len -= 8;
	}
	while (len--)
		c = _mm_crc32_u8((uint32_t)c, *p++);
	return (uint32_t)c;
}
#endif

/* Filled before main() runs, so threads never race on first use. */
__attribute__((constructor)) static void init_table(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = table[0][i];
		for (int t = 1; t < 8; t++) {
			c = table[0][c & 0xff] ^ (c >> 8);
			table[t][i] = c;
		}
	}
#ifdef KEEL_CRC_HW
	__builtin_cpu_init();
	use_hw = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t len)
{
	while (len >= 8) {
		uint32_t lo = crc ^ keel_get_u32(p);
		uint32_t hi = keel_get_u32(p + 4);
		crc = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^
		      table[5][(lo >> 16) & 0xff] ^ table[4][lo >> 24] ^
		      table[3][hi & 0xff] ^ table[2][(hi >> 8) & 0xff] ^
		      table[1][(hi >> 16) & 0xff] ^ table[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

uint32_t keel_crc32c(uint32_t crc, const void *buf, size_t len)
{
#ifdef KEEL_CRC_HW
	if (use_hw)
		return ~crc_hw(~crc, buf, len);
#endif
	return ~crc_sw(~crc, buf, len);
}

uint32_t keel_crc32c_portable(uint32_t crc, const void *buf, size_t len)
{
	return ~crc_sw(~crc, buf, len);
}

bool keel_crc32c_hw(void)
{
#ifdef KEEL_CRC_HW
	return use_hw;
#else
	return false;
#endif
}
