/*
 * util.c -- the decimal integer reading and writing that the RESP parser,
 * encoder and reply parser share. Hand-written because the pure modules
 * may not use stdio's formatting, and because RESP's integers are stricter
 * than strtoll (no spaces, no '+', no leading zeros).
 */
#include "resp/resp_int.h"

bool resp_parse_i64(const uint8_t *s, size_t n, int64_t *out)
{
	if (n == 0 || n > 20)
		return false;
	if (n == 1 && s[0] == '0') {
		*out = 0;
		return true;
	}
	bool neg = false;
	size_t i = 0;
	if (s[0] == '-') {
		neg = true;
		i = 1;
		if (n == 1)
			return false;
	}
	if (s[i] < '1' || s[i] > '9')
		return false;
	uint64_t v = 0;
	for (; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		uint64_t d = (uint64_t)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (neg) {
		if (v > (uint64_t)INT64_MAX + 1)
			return false;
		*out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
	} else {
		if (v > (uint64_t)INT64_MAX)
			return false;
		*out = (int64_t)v;
	}
	return true;
}

size_t resp_format_u64(uint64_t v, char *out)
{
	char tmp[20];
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (size_t i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	return n;
}

size_t resp_format_i64(int64_t v, char *out)
{
	if (v >= 0)
		return resp_format_u64((uint64_t)v, out);
	out[0] = '-';
	/* -(v + 1) + 1 avoids overflow at INT64_MIN. */
	return 1 + resp_format_u64((uint64_t)(-(v + 1)) + 1, out + 1);
}
