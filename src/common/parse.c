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
