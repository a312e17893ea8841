/*
 * parse.c -- strict decimal parsing for flags, config files and CLI
 * arguments: one rule everywhere a user types a number.
 */
#include <errno.h>
#include <stdlib.h>

#include "keel/common.h"

bool keel_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	/* Digits only: strtoull alone would accept " 1", "+1" and wrap "-1". */
	if (!s || *s < '0' || *s > '9')
		return false;
	errno = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

bool keel_parse_u64_bytes(const uint8_t *p, size_t len, uint64_t min,
			  uint64_t max, uint64_t *out)
{
	if (len == 0 || len > 20)
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		uint64_t d = (uint64_t)(p[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (v < min || v > max)
		return false;
	*out = v;
	return true;
}

uint32_t keel_lower_hash(const uint8_t *p, size_t len)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < len; i++) {
		uint8_t c = p[i];
		if (c >= 'A' && c <= 'Z')
			c = (uint8_t)(c - 'A' + 'a');
		h = (h ^ c) * 16777619u;
	}
	return h;
}
