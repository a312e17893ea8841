/*
 * reply_parse.c -- parses one RESP2/RESP3 reply into a tree of struct
 * resp_value, for the keel CLI, the client library and tests.
 *
 * Two passes over the same bytes. The first validates the reply, checks
 * every length, count and the nesting depth against the limits, and counts
 * the nodes and string bytes; it allocates nothing, so a truncated reply
 * costs no memory and returns RESP_NEED_MORE, and a hostile header
 * ("*2000000000", "$999999999999", a thousand nested "*1") is refused
 * before any allocation. The second pass, over input now known to be
 * valid, fills one allocation holding every node and a NUL-terminated copy
 * of every string, so a whole reply is freed with one call and never
 * borrows the caller's buffer.
 *
 * Recursion depth is bounded by the depth limit (at most
 * RESP_REPLY_MAX_DEPTH), so the C stack use is bounded too.
 */
#include <stdlib.h>
#include <string.h>

#include "keel/resp.h"
#include "resp/resp_int.h"

const struct resp_reply_limits resp_reply_limits_default = {
    .max_depth = 32,
    .max_elements = 16ull * 1024 * 1024,
    .max_aggregate_len = 16ull * 1024 * 1024,
    .max_string_len = 512ull * 1024 * 1024,
};

/* Longest header line ("$-9223372036854775808") we need to look at; a
 * longer one is malformed whatever follows. */
#define MAX_HEADER_LINE 24
/* Longest double text accepted (strtod needs a NUL-terminated copy). */
#define MAX_DOUBLE_TEXT 256

struct rp {
	const struct resp_reply_limits *lim;
	const uint8_t *buf;
	size_t len, pos;
	const char *err;
	/* First pass: totals. */
	uint64_t nodes;
	uint64_t str_bytes;
	/* Second pass: where the next nodes and string bytes go. */
	bool build;
	struct resp_value *next_node;
	char *next_str;
};

static int bad(struct rp *c, const char *msg)
{
	c->err = msg;
	return RESP_ERR_PROTOCOL;
}

/* The bytes of a CRLF-terminated line starting at c->pos, at most cap of
 * them. A bare CR or LF inside is malformed: no line type may carry one. */
static int read_line(struct rp *c, uint64_t cap, const uint8_t **s, size_t *n)
{
	const uint8_t *start = c->buf + c->pos;
	size_t avail = c->len - c->pos;
	size_t scan = avail;
	if ((uint64_t)scan > cap + 1)
		scan = (size_t)(cap + 1);
	const uint8_t *cr = scan ? memchr(start, '\r', scan) : NULL;
	size_t k = cr ? (size_t)(cr - start) : scan;
	if (memchr(start, '\n', k))
		return bad(c, "Protocol error: LF without CR in line");
	if ((uint64_t)k > cap)
		return bad(c, "Protocol error: line too long");
	if (!cr || k + 1 >= avail)
		return RESP_NEED_MORE;
	if (start[k + 1] != '\n')
		return bad(c, "Protocol error: CR not followed by LF");
	*s = start;
	*n = k;
	c->pos += k + 2;
	return RESP_OK;
}

/* [+-]digits[.digits][(e|E)[+-]digits], or inf / -inf / nan. */
static bool valid_double(const uint8_t *s, size_t n)
{
	if ((n == 3 && (!memcmp(s, "inf", 3) || !memcmp(s, "nan", 3))) ||
	    (n == 4 && (!memcmp(s, "-inf", 4) || !memcmp(s, "+inf", 4))))
		return true;
	size_t i = 0;
	if (i < n && (s[i] == '-' || s[i] == '+'))
		i++;
	size_t d0 = i;
	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++;
	if (i == d0)
		return false;
	if (i < n && s[i] == '.') {
		size_t f0 = ++i;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == f0)
			return false;
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '-' || s[i] == '+'))
			i++;
		size_t e0 = i;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == e0)
			return false;
	}
	return i == n && n <= MAX_DOUBLE_TEXT;
}

static bool valid_bignum(const uint8_t *s, size_t n)
{
	size_t i = (n > 0 && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
	if (i == n)
		return false;
	for (; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

/* Second pass only: a NUL-terminated copy of s in the string area. */
static const char *keep_string(struct rp *c, const uint8_t *s, size_t n)
{
	char *d = c->next_str;
	if (n)
		memcpy(d, s, n);
	d[n] = '\0';
	c->next_str += n + 1;
	return d;
}

static int parse_value(struct rp *c, struct resp_value *v, uint32_t depth);

static int parse_line_type(struct rp *c, struct resp_value *v, uint8_t t)
{
	const uint8_t *s;
	size_t n;
	uint64_t cap = t == '+' || t == '-' ? c->lim->max_string_len
		       : t == '('	    ? c->lim->max_string_len
					    : MAX_DOUBLE_TEXT;
	int rc = read_line(c, cap, &s, &n);
	if (rc)
		return rc;
	int type = 0;
	int64_t iv = 0;
	switch (t) {
	case '+':
		type = RESP_T_STRING;
		break;
	case '-':
		type = RESP_T_ERROR;
		break;
	case '(':
		if (!valid_bignum(s, n))
			return bad(c, "Protocol error: invalid big number");
		type = RESP_T_BIGNUM;
		break;
	case ':':
		if (!resp_parse_i64(s, n, &iv))
			return bad(c, "Protocol error: invalid integer");
		type = RESP_T_INTEGER;
		break;
	case ',':
		if (!valid_double(s, n))
			return bad(c, "Protocol error: invalid double");
		type = RESP_T_DOUBLE;
		break;
	case '#':
		if (n != 1 || (s[0] != 't' && s[0] != 'f'))
			return bad(c, "Protocol error: invalid boolean");
		type = RESP_T_BOOL;
		iv = s[0] == 't';
		break;
	case '_':
		if (n != 0)
			return bad(c, "Protocol error: invalid null");
		type = RESP_T_NULL;
		break;
	default:
		KEEL_ASSERT(!"not a line type");
	}
	bool has_str = type == RESP_T_STRING || type == RESP_T_ERROR ||
		       type == RESP_T_BIGNUM || type == RESP_T_DOUBLE;
	if (!c->build) {
		if (has_str)
			c->str_bytes += n + 1;
		return RESP_OK;
	}
	v->type = type;
	v->integer = iv;
	if (has_str) {
		v->str = keep_string(c, s, n);
		v->len = n;
	}
	if (type == RESP_T_DOUBLE)
		v->dbl = strtod(v->str, NULL);
	return RESP_OK;
}

static int read_length(struct rp *c, int64_t *out)
{
	const uint8_t *s;
	size_t n;
	int rc = read_line(c, MAX_HEADER_LINE, &s, &n);
	if (rc == RESP_ERR_PROTOCOL)
		return bad(c, "Protocol error: invalid length");
	if (rc)
		return rc;
	if (!resp_parse_i64(s, n, out))
		return bad(c, "Protocol error: invalid length");
	return RESP_OK;
}

static int parse_blob(struct rp *c, struct resp_value *v, uint8_t t)
{
	int64_t ll;
	int rc = read_length(c, &ll);
	if (rc)
		return rc;
	if (ll == -1 && t == '$') {
		if (c->build)
			v->type = RESP_T_NULL;
		return RESP_OK;
	}
	if (ll < 0)
		return bad(c, "Protocol error: invalid bulk length");
	if ((uint64_t)ll > c->lim->max_string_len)
		return bad(c, "Protocol error: bulk length over limit");
	size_t n = (size_t)ll;
	if (c->len - c->pos < 2 || c->len - c->pos - 2 < n)
		return RESP_NEED_MORE;
	const uint8_t *s = c->buf + c->pos;
	if (s[n] != '\r' || s[n + 1] != '\n')
		return bad(c, "Protocol error: bulk not followed by CRLF");
	if (t == '=' && (n < 4 || s[3] != ':'))
		return bad(c, "Protocol error: invalid verbatim string");
	c->pos += n + 2;
	if (!c->build) {
		/* A verbatim string keeps only what follows "fmt:". */
		c->str_bytes += (t == '=' ? n - 4 : n) + 1;
		return RESP_OK;
	}
	if (t == '=') {
		v->type = RESP_T_VERBATIM;
		memcpy(v->format, s, 3);
		v->format[3] = '\0';
		v->str = keep_string(c, s + 4, n - 4);
		v->len = n - 4;
	} else {
		v->type = t == '$' ? RESP_T_BULK : RESP_T_BLOB_ERROR;
		v->str = keep_string(c, s, n);
		v->len = n;
	}
	return RESP_OK;
}

static int parse_aggregate(struct rp *c, struct resp_value *v, uint8_t t,
			   uint32_t depth)
{
	int64_t ll;
	int rc = read_length(c, &ll);
	if (rc)
		return rc;
	if (ll == -1 && t == '*') {
		if (c->build)
			v->type = RESP_T_NULL; /* RESP2 null array */
		return RESP_OK;
	}
	if (ll < 0)
		return bad(c, "Protocol error: invalid aggregate length");
	if ((uint64_t)ll > c->lim->max_aggregate_len)
		return bad(c, "Protocol error: aggregate length over limit");
	if (depth + 1 > c->lim->max_depth || depth + 1 > RESP_REPLY_MAX_DEPTH)
		return bad(c, "Protocol error: reply nested too deeply");
	uint64_t count = (uint64_t)ll * (t == '%' ? 2 : 1);
	struct resp_value *kids = NULL;
	if (!c->build) {
		if (count > c->lim->max_elements - c->nodes)
			return bad(c, "Protocol error: too many elements");
		c->nodes += count;
	} else {
		kids = c->next_node;
		c->next_node += count;
		v->type = t == '*'   ? RESP_T_ARRAY
			  : t == '%' ? RESP_T_MAP
			  : t == '~' ? RESP_T_SET
				     : RESP_T_PUSH;
		v->n = (size_t)count;
		v->elem = count ? kids : NULL;
	}
	for (uint64_t i = 0; i < count; i++) {
		rc = parse_value(c, kids ? &kids[i] : NULL, depth + 1);
		if (rc)
			return rc;
	}
	return RESP_OK;
}

static int parse_value(struct rp *c, struct resp_value *v, uint32_t depth)
{
	KEEL_ASSERT(c->build == (v != NULL));
	if (c->pos >= c->len)
		return RESP_NEED_MORE;
	uint8_t t = c->buf[c->pos++];
	if (v)
		memset(v, 0, sizeof(*v));
	switch (t) {
	case '+':
	case '-':
	case ':':
	case ',':
	case '#':
	case '_':
	case '(':
		return parse_line_type(c, v, t);
	case '$':
	case '!':
	case '=':
		return parse_blob(c, v, t);
	case '*':
	case '%':
	case '~':
	case '>':
		return parse_aggregate(c, v, t, depth);
	default:
		return bad(c, "Protocol error: invalid reply type byte");
	}
}

int resp_reply_parse(const struct resp_reply_limits *limits,
		     const struct keel_alloc *alloc, const uint8_t *buf,
		     size_t len, size_t *consumed, struct resp_value **out,
		     const char **errmsg)
{
	KEEL_ASSERT(consumed != NULL);
	KEEL_ASSERT(out != NULL);
	KEEL_ASSERT(buf != NULL || len == 0);
	*consumed = 0;
	*out = NULL;
	struct rp c = {
	    .lim = limits ? limits : &resp_reply_limits_default,
	    .buf = buf,
	    .len = len,
	    .nodes = 1,
	};
	int rc = parse_value(&c, NULL, 0);
	if (rc) {
		if (errmsg)
			*errmsg = rc == RESP_ERR_PROTOCOL ? c.err : "";
		return rc;
	}
	size_t end = c.pos;
	if (c.nodes > SIZE_MAX / sizeof(struct resp_value) ||
	    c.str_bytes > SIZE_MAX - c.nodes * sizeof(struct resp_value)) {
		if (errmsg)
			*errmsg = "out of memory";
		return RESP_ERR_NOMEM;
	}
	size_t node_bytes = (size_t)c.nodes * sizeof(struct resp_value);
	uint8_t *mem = alloc->malloc(alloc->ctx, node_bytes + c.str_bytes);
	if (!mem) {
		if (errmsg)
			*errmsg = "out of memory";
		return RESP_ERR_NOMEM;
	}
	struct resp_value *root = (struct resp_value *)(void *)mem;
	c.build = true;
	c.pos = 0;
	c.next_node = root + 1;
	c.next_str = (char *)mem + node_bytes;
	rc = parse_value(&c, root, 0);
	/* The input was validated by the first pass; the second must agree
	 * to the byte, or the layout above is wrong. */
	KEEL_ASSERT(rc == RESP_OK);
	KEEL_ASSERT(c.pos == end);
	KEEL_ASSERT(c.next_node == root + c.nodes);
	KEEL_ASSERT(c.next_str == (char *)mem + node_bytes + c.str_bytes);
	*consumed = end;
	*out = root;
	return RESP_OK;
}

void resp_value_free(const struct keel_alloc *alloc, struct resp_value *v)
{
	alloc->free(alloc->ctx, v);
}
