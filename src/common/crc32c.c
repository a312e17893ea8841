/* crc32c.c -- CRC32C (Castagnoli, reflected polynomial 0x82F63B78), slicing
 * by 8 over tables computed at first use. The tables are immutable after
 * start-up, so sharing them across nodes and threads is safe. */
#include "keel/common.h"

static uint32_t table[8][256];

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
}

uint32_t keel_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	crc = ~crc;
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
	return ~crc;
}
