/*
 * reply.c -- the RESP encoder: writes replies into a growable, capped
 * output buffer in the protocol version the connection negotiated (RESP2
 * or RESP3, switched by HELLO), and requests (arrays of bulk strings) for
 * the client library and CLI.
 *
 * RESP3 types that RESP2 lacks are mapped the way Redis maps them: a map
 * becomes a flat array of 2n, a set or push an array, a double a bulk
 * string, a boolean the integer 0 or 1, a verbatim string a plain bulk, a
 * big number a bulk of its digits. Each write is all-or-nothing: when it
 * would pass the cap or the allocator refuses, the buffer is marked failed
 * and keeps its previous bytes, so the caller never sends half an item.
 *
 * Doubles are formatted here by exact decimal expansion (no snprintf in a
 * pure module) as the shortest text that reads back to the same double.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "keel/resp.h"
#include "resp/resp_int.h"

void resp_buf_init(struct resp_buf *b, const struct keel_alloc *alloc,
		   size_t max_bytes, int proto)
{
	KEEL_ASSERT(alloc != NULL);
	KEEL_ASSERT(proto == 2 || proto == 3);
	memset(b, 0, sizeof(*b));
	b->alloc = alloc;
	b->max_bytes = max_bytes;
	b->proto = proto;
}

void resp_buf_close(struct resp_buf *b)
{
	b->alloc->free(b->alloc->ctx, b->data);
	memset(b, 0, sizeof(*b));
}

void resp_buf_reset(struct resp_buf *b)
{
	b->len = 0;
	b->failed = 0;
}

void resp_buf_consume(struct resp_buf *b, size_t n)
{
	KEEL_ASSERT(n <= b->len);
	if (n < b->len)
		memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

void resp_buf_set_proto(struct resp_buf *b, int proto)
{
	KEEL_ASSERT(proto == 2 || proto == 3);
	b->proto = proto;
}

/* Room for n more bytes, or NULL with b->failed set. */
static uint8_t *reserve(struct resp_buf *b, size_t n)
{
	if (b->failed)
		return NULL;
	if (n > b->max_bytes || b->len > b->max_bytes - n) {
		b->failed = RESP_ERR_TOO_BIG;
		return NULL;
	}
	size_t need = b->len + n;
	if (need > b->cap) {
		size_t ncap = b->cap ? b->cap : 256;
		while (ncap < need && ncap <= SIZE_MAX / 2)
			ncap *= 2;
		if (ncap < need || ncap > b->max_bytes)
			ncap = KEEL_MAX(need, KEEL_MIN(ncap, b->max_bytes));
		void *nd = b->alloc->realloc(b->alloc->ctx, b->data, ncap);
		if (!nd) {
			b->failed = RESP_ERR_NOMEM;
			return NULL;
		}
		b->data = nd;
		b->cap = ncap;
	}
	return b->data + b->len;
}

/* "<type><n>\r\n" into out (at least 24 bytes); returns its length. */
static size_t fmt_header(uint8_t *out, char type, int64_t n)
{
	char num[24];
	size_t k = resp_format_i64(n, num);
	out[0] = (uint8_t)type;
	memcpy(out + 1, num, k);
	out[1 + k] = '\r';
	out[2 + k] = '\n';
	return k + 3;
}

static void put_header(struct resp_buf *b, char type, int64_t n)
{
	uint8_t hdr[24];
	size_t k = fmt_header(hdr, type, n);
	uint8_t *d = reserve(b, k);
	if (d) {
		memcpy(d, hdr, k);
		b->len += k;
	}
}

/* A header, payload and CRLF as one item (bulk, verbatim, blob error). */
static void put_blob(struct resp_buf *b, char type, const void *prefix,
		     size_t plen, const void *data, size_t len)
{
	uint8_t hdr[24];
	if (len > SIZE_MAX - plen - 64) {
		b->failed = RESP_ERR_TOO_BIG;
		return;
	}
	size_t k = fmt_header(hdr, type, (int64_t)(plen + len));
	uint8_t *d = reserve(b, k + plen + len + 2);
	if (!d)
		return;
	memcpy(d, hdr, k);
	if (plen)
		memcpy(d + k, prefix, plen);
	if (len)
		memcpy(d + k + plen, data, len);
	d[k + plen + len] = '\r';
	d[k + plen + len + 1] = '\n';
	b->len += k + plen + len + 2;
}

/* "<type><s>\r\n", CR and LF in s replaced by spaces: a line type cannot
 * carry them, and Redis does the same for error texts. */
static void put_line(struct resp_buf *b, char type, const char *s, size_t len)
{
	if (len > SIZE_MAX - 3) {
		b->failed = RESP_ERR_TOO_BIG;
		return;
	}
	uint8_t *d = reserve(b, len + 3);
	if (!d)
		return;
	d[0] = (uint8_t)type;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		d[1 + i] = (uint8_t)(c == '\r' || c == '\n' ? ' ' : c);
	}
	d[1 + len] = '\r';
	d[2 + len] = '\n';
	b->len += len + 3;
}

void resp_write_simple(struct resp_buf *b, const char *s, size_t len)
{
	put_line(b, '+', s, len);
}

void resp_write_error(struct resp_buf *b, const char *s, size_t len)
{
	put_line(b, '-', s, len);
}

void resp_write_integer(struct resp_buf *b, int64_t v)
{
	put_header(b, ':', v);
}

void resp_write_bulk(struct resp_buf *b, const void *data, size_t len)
{
	put_blob(b, '$', NULL, 0, data, len);
}

void resp_write_null(struct resp_buf *b)
{
	if (b->proto == 3)
		put_line(b, '_', "", 0);
	else
		put_header(b, '$', -1);
}

void resp_write_null_array(struct resp_buf *b)
{
	if (b->proto == 3)
		put_line(b, '_', "", 0);
	else
		put_header(b, '*', -1);
}

/* Aggregate lengths come from the server's own data, never from the
 * network, so one above INT64_MAX is a programmer error. */
static int64_t agg_len(size_t n)
{
	KEEL_ASSERT((uint64_t)n <= (uint64_t)INT64_MAX / 2);
	return (int64_t)n;
}

void resp_write_array(struct resp_buf *b, size_t n)
{
	put_header(b, '*', agg_len(n));
}

void resp_write_map(struct resp_buf *b, size_t pairs)
{
	if (b->proto == 3)
		put_header(b, '%', agg_len(pairs));
	else
		put_header(b, '*', 2 * agg_len(pairs));
}

void resp_write_set(struct resp_buf *b, size_t n)
{
	put_header(b, b->proto == 3 ? '~' : '*', agg_len(n));
}

void resp_write_push(struct resp_buf *b, size_t n)
{
	put_header(b, b->proto == 3 ? '>' : '*', agg_len(n));
}

void resp_write_double(struct resp_buf *b, double v)
{
	char txt[RESP_DOUBLE_MAX_CHARS];
	size_t n = resp_format_double(v, txt);
	if (b->proto == 3)
		put_line(b, ',', txt, n);
	else
		put_blob(b, '$', NULL, 0, txt, n);
}

void resp_write_bool(struct resp_buf *b, bool v)
{
	if (b->proto == 3)
		put_line(b, '#', v ? "t" : "f", 1);
	else
		put_header(b, ':', v ? 1 : 0);
}

void resp_write_verbatim(struct resp_buf *b, const char fmt[3],
			 const void *data, size_t len)
{
	if (b->proto == 3) {
		char prefix[4] = {fmt[0], fmt[1], fmt[2], ':'};
		put_blob(b, '=', prefix, 4, data, len);
	} else {
		put_blob(b, '$', NULL, 0, data, len);
	}
}

void resp_write_bignum(struct resp_buf *b, const char *digits, size_t len)
{
	if (b->proto == 3)
		put_line(b, '(', digits, len);
	else
		put_blob(b, '$', NULL, 0, digits, len);
}

void resp_write_command(struct resp_buf *b, size_t argc,
			const uint8_t *const *argv, const size_t *argv_len)
{
	/* Sized up front so the whole command is one all-or-nothing write. */
	size_t total = 24;
	for (size_t i = 0; i < argc; i++) {
		if (argv_len[i] > SIZE_MAX / 2 - total - 32) {
			b->failed = RESP_ERR_TOO_BIG;
			return;
		}
		total += argv_len[i] + 26;
	}
	uint8_t *d = reserve(b, total);
	if (!d)
		return;
	size_t k = fmt_header(d, '*', agg_len(argc));
	for (size_t i = 0; i < argc; i++) {
		k += fmt_header(d + k, '$', (int64_t)argv_len[i]);
		if (argv_len[i])
			memcpy(d + k, argv[i], argv_len[i]);
		k += argv_len[i];
		d[k++] = '\r';
		d[k++] = '\n';
	}
	KEEL_ASSERT(k <= total);
	b->len += k;
}

void resp_write_value(struct resp_buf *b, const struct resp_value *v)
{
	switch (v->type) {
	case RESP_T_STRING:
		resp_write_simple(b, v->str, v->len);
		return;
	case RESP_T_ERROR:
		resp_write_error(b, v->str, v->len);
		return;
	case RESP_T_INTEGER:
		resp_write_integer(b, v->integer);
		return;
	case RESP_T_BULK:
		resp_write_bulk(b, v->str, v->len);
		return;
	case RESP_T_NULL:
		resp_write_null(b);
		return;
	case RESP_T_DOUBLE:
		resp_write_double(b, v->dbl);
		return;
	case RESP_T_BOOL:
		resp_write_bool(b, v->integer != 0);
		return;
	case RESP_T_VERBATIM:
		resp_write_verbatim(b, v->format, v->str, v->len);
		return;
	case RESP_T_BIGNUM:
		resp_write_bignum(b, v->str, v->len);
		return;
	case RESP_T_BLOB_ERROR:
		/* RESP2 has no blob error: a simple error, as Redis. */
		if (b->proto == 3)
			put_blob(b, '!', NULL, 0, v->str, v->len);
		else
			put_line(b, '-', v->str, v->len);
		return;
	case RESP_T_ARRAY:
		resp_write_array(b, v->n);
		break;
	case RESP_T_MAP:
		KEEL_ASSERT(v->n % 2 == 0);
		resp_write_map(b, v->n / 2);
		break;
	case RESP_T_SET:
		resp_write_set(b, v->n);
		break;
	case RESP_T_PUSH:
		resp_write_push(b, v->n);
		break;
	default:
		KEEL_ASSERT(!"unknown resp_value type");
	}
	for (size_t i = 0; i < v->n; i++)
		resp_write_value(b, &v->elem[i]);
}

/* ---- doubles ------------------------------------------------------------ */

/* A double m * 2^e is exactly representable in decimal: for e >= 0 it is
 * the integer m << e (at most 309 digits), for e < 0 it is m * 5^-e
 * divided by 10^-e (at most 767 significant digits). We compute those
 * digits in base-1e9 limbs, then round to 1..17 significant digits,
 * taking the first that strtod reads back as the same double. */
#define LIMBS 90
#define LIMB_BASE 1000000000u

static void big_mul_small(uint32_t *d, size_t *n, uint32_t m)
{
	uint64_t carry = 0;
	for (size_t i = 0; i < *n; i++) {
		uint64_t x = (uint64_t)d[i] * m + carry;
		d[i] = (uint32_t)(x % LIMB_BASE);
		carry = x / LIMB_BASE;
	}
	while (carry) {
		KEEL_ASSERT(*n < LIMBS);
		d[(*n)++] = (uint32_t)(carry % LIMB_BASE);
		carry /= LIMB_BASE;
	}
}

/* Exact significant digits of |v| (v finite, nonzero) into dig; returns
 * their count and sets *dexp so that |v| = 0.dig * 10^dexp. */
static size_t exact_digits(double v, char *dig, int *dexp)
{
	uint64_t bits;
	memcpy(&bits, &v, sizeof(bits));
	int be = (int)((bits >> 52) & 0x7ff);
	uint64_t m = bits & ((1ull << 52) - 1);
	int e;
	if (be == 0) {
		e = -1074;
	} else {
		m |= 1ull << 52;
		e = be - 1075;
	}
	uint32_t d[LIMBS];
	size_t n = 0;
	while (m) {
		d[n++] = (uint32_t)(m % LIMB_BASE);
		m /= LIMB_BASE;
	}
	int frac = 0; /* number of decimal digits after the point */
	if (e >= 0) {
		for (int k = e; k > 0; k -= 29)
			big_mul_small(d, &n, 1u << KEEL_MIN(k, 29));
	} else {
		frac = -e;
		for (int k = -e; k > 0; k -= 13) {
			uint32_t p5 = 1;
			for (int j = 0; j < KEEL_MIN(k, 13); j++)
				p5 *= 5;
			big_mul_small(d, &n, p5);
		}
	}
	/* Limbs to a digit string, most significant first. */
	size_t nd = 0;
	char tmp[24];
	size_t k = resp_format_u64(d[n - 1], tmp);
	memcpy(dig, tmp, k);
	nd = k;
	for (size_t i = n - 1; i-- > 0;) {
		uint32_t x = d[i];
		for (int j = 8; j >= 0; j--) {
			dig[nd + (size_t)j] = (char)('0' + x % 10);
			x /= 10;
		}
		nd += 9;
	}
	*dexp = (int)nd - frac;
	while (nd > 1 && dig[nd - 1] == '0')
		nd--;
	return nd;
}

/* Rounds dig[0..nd) to at most p digits, half to even (the digits are
 * exact, so this is correct rounding). Returns the new count. */
static size_t round_digits(char *dig, size_t nd, size_t p, int *dexp)
{
	if (nd <= p)
		return nd;
	bool up;
	if (dig[p] > '5') {
		up = true;
	} else if (dig[p] < '5') {
		up = false;
	} else {
		bool rest = false;
		for (size_t i = p + 1; i < nd; i++)
			rest = rest || dig[i] != '0';
		up = rest || ((dig[p - 1] - '0') % 2 == 1);
	}
	nd = p;
	if (up) {
		size_t i = p;
		while (i > 0 && dig[i - 1] == '9')
			dig[--i] = '0';
		if (i == 0) {
			dig[0] = '1';
			nd = 1;
			(*dexp)++;
		} else {
			dig[i - 1]++;
		}
	}
	while (nd > 1 && dig[nd - 1] == '0')
		nd--;
	return nd;
}

/* Lays out digits like printf's %.17g: fixed notation when the decimal
 * exponent x satisfies -4 <= x < 17, else d.ddde[+-]xx. */
static size_t layout(bool neg, const char *dig, size_t nd, int dexp, char *out)
{
	size_t o = 0;
	if (neg)
		out[o++] = '-';
	int x = dexp - 1;
	if (x >= -4 && x < 17) {
		if (x >= 0) {
			for (int i = 0; i <= x; i++)
				out[o++] = (size_t)i < nd ? dig[i] : '0';
			if (nd > (size_t)x + 1) {
				out[o++] = '.';
				for (size_t i = (size_t)x + 1; i < nd; i++)
					out[o++] = dig[i];
			}
		} else {
			out[o++] = '0';
			out[o++] = '.';
			for (int i = 0; i < -x - 1; i++)
				out[o++] = '0';
			for (size_t i = 0; i < nd; i++)
				out[o++] = dig[i];
		}
		return o;
	}
	out[o++] = dig[0];
	if (nd > 1) {
		out[o++] = '.';
		for (size_t i = 1; i < nd; i++)
			out[o++] = dig[i];
	}
	out[o++] = 'e';
	out[o++] = x < 0 ? '-' : '+';
	int ax = x < 0 ? -x : x;
	if (ax < 10)
		out[o++] = '0';
	o += resp_format_u64((uint64_t)ax, out + o);
	return o;
}

size_t resp_format_double(double v, char *out)
{
	if (isnan(v)) {
		memcpy(out, "nan", 3);
		return 3;
	}
	if (isinf(v)) {
		if (v < 0) {
			memcpy(out, "-inf", 4);
			return 4;
		}
		memcpy(out, "inf", 3);
		return 3;
	}
	bool neg = signbit(v) != 0;
	if (v == 0) {
		if (neg) {
			memcpy(out, "-0", 2);
			return 2;
		}
		out[0] = '0';
		return 1;
	}
	char exact[800];
	int dexp0;
	size_t nd0 = exact_digits(v, exact, &dexp0);
	for (size_t p = 1; p <= 17; p++) {
		char dig[24];
		size_t nd = KEEL_MIN(nd0, 18);
		int dexp = dexp0;
		/* Rounding needs every digit for the half-way test. */
		char work[800];
		memcpy(work, exact, nd0);
		nd = round_digits(work, nd0, p, &dexp);
		memcpy(dig, work, nd);
		char txt[RESP_DOUBLE_MAX_CHARS + 1];
		size_t n = layout(neg, dig, nd, dexp, txt);
		KEEL_ASSERT(n < sizeof(txt));
		txt[n] = '\0';
		if (p == 17 || strtod(txt, NULL) == v) {
			memcpy(out, txt, n);
			return n;
		}
	}
	KEEL_ASSERT(!"unreachable");
	return 0;
}
