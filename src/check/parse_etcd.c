/*
 * parse_etcd.c -- reads Jepsen etcd logs (one compare-and-set register).
 *
 * Only lines with "jepsen.util - " followed by a process number are events:
 *   INFO  jepsen.util - 3<TAB>:ok<TAB>:cas<TAB>[3 0]
 * Everything else (and jepsen.util lines about the nemesis, whose "process"
 * is not a number) is log noise. An event line that does not parse is an
 * error with its line number: silently skipping it could turn a violation
 * into a pass.
 */
#include <string.h>

#include "check/check_internal.h"

static const char marker[] = "jepsen.util - ";

static bool is_ws(char ch)
{
	return ch == ' ' || ch == '\t';
}

/* The next whitespace-separated token of line[*i..n). */
static bool next_token(const char *line, size_t n, size_t *i, const char **tok,
		       size_t *tok_len)
{
	while (*i < n && is_ws(line[*i]))
		(*i)++;
	if (*i >= n)
		return false;
	size_t s = *i;
	while (*i < n && !is_ws(line[*i]))
		(*i)++;
	*tok = line + s;
	*tok_len = *i - s;
	return true;
}

/* One scalar: nil, an integer, or any :keyword (treated as no value, e.g.
 * :timed-out on info lines). */
static int scalar(struct check_parse_ctx *c, const char *s, size_t n,
		  struct check_value *v, bool *present)
{
	memset(v, 0, sizeof(*v));
	*present = true;
	if (n == 3 && !memcmp(s, "nil", 3)) {
		v->kind = CHECK_VAL_NIL;
		return 0;
	}
	if (n > 0 && s[0] == ':') {
		*present = false;
		return 0;
	}
	int rv = check_parse_i64(s, n, &v->num);
	if (rv == KEEL_ERR_TOO_BIG)
		return check_ctx_fail(c, rv, "integer out of range: %.*s",
				      (int)KEEL_MIN(n, 40), s);
	if (rv)
		return check_ctx_fail(c, rv, "bad value '%.*s'",
				      (int)KEEL_MIN(n, 40), s);
	v->kind = CHECK_VAL_INT;
	return 0;
}

static int parse_value(struct check_parse_ctx *c, const char *s, size_t n,
		       struct check_raw_value *out)
{
	memset(out, 0, sizeof(*out));
	if (n == 0)
		return 0;
	if (s[0] != '[') {
		for (size_t i = 0; i < n; i++)
			if (is_ws(s[i]))
				return check_ctx_fail(c, KEEL_ERR_MALFORMED,
						      "trailing text after "
						      "value");
		return scalar(c, s, n, &out->v, &out->present);
	}
	if (s[n - 1] != ']')
		return check_ctx_fail(c, KEEL_ERR_MALFORMED,
				      "unterminated [ in value");
	const char *t[3];
	size_t tl[3];
	size_t cnt = 0, i = 1;
	const char *tok;
	size_t len;
	while (next_token(s, n - 1, &i, &tok, &len)) {
		if (cnt == 2)
			return check_ctx_fail(c, KEEL_ERR_MALFORMED,
					      "[expected new] has more than two "
					      "elements");
		t[cnt] = tok;
		tl[cnt++] = len;
	}
	if (cnt != 2)
		return check_ctx_fail(c, KEEL_ERR_MALFORMED,
				      "[expected new] needs two elements");
	bool p1, p2;
	int rv = scalar(c, t[0], tl[0], &out->v, &p1);
	if (!rv)
		rv = scalar(c, t[1], tl[1], &out->v2, &p2);
	if (rv)
		return rv;
	if (!p1 || !p2)
		return check_ctx_fail(c, KEEL_ERR_MALFORMED,
				      "keyword inside [expected new]");
	out->present = true;
	out->is_pair = true;
	return 0;
}

static int parse_line(struct check_parse_ctx *c, const char *line, size_t n)
{
	size_t ml = sizeof(marker) - 1;
	size_t at = SIZE_MAX;
	for (size_t j = 0; j + ml <= n; j++) {
		if (!memcmp(line + j, marker, ml)) {
			at = j + ml;
			break;
		}
	}
	if (at == SIZE_MAX)
		return 0; /* noise */
	size_t i = at;
	while (i < n && is_ws(line[i]))
		i++;
	if (i >= n || line[i] < '0' || line[i] > '9')
		return 0; /* e.g. ":nemesis :info :start nil" */
	const char *tok;
	size_t len;
	int64_t process;
	next_token(line, n, &i, &tok, &len);
	int rv = check_parse_i64(tok, len, &process);
	if (rv)
		return check_ctx_fail(c, rv, "bad process number '%.*s'",
				      (int)KEEL_MIN(len, 40), tok);
	if (!next_token(line, n, &i, &tok, &len) || len < 2 || tok[0] != ':')
		return check_ctx_fail(c, KEEL_ERR_MALFORMED,
				      "expected :invoke, :ok, :fail or :info");
	int type = check_type_parse(tok + 1, len - 1);
	if (type < 0)
		return check_ctx_fail(c, KEEL_ERR_MALFORMED,
				      "unknown event type '%.*s'",
				      (int)KEEL_MIN(len, 40), tok);
	if (!next_token(line, n, &i, &tok, &len) || len < 2 || tok[0] != ':')
		return check_ctx_fail(c, KEEL_ERR_MALFORMED,
				      "expected :read, :write or :cas");
	int f = check_f_parse(tok + 1, len - 1);
	if (f < 0)
		return check_ctx_fail(c, KEEL_ERR_MALFORMED,
				      "unknown operation '%.*s'",
				      (int)KEEL_MIN(len, 40), tok);
	while (i < n && is_ws(line[i]))
		i++;
	size_t end = n;
	while (end > i && is_ws(line[end - 1]))
		end--;
	struct check_raw_value value;
	rv = parse_value(c, line + i, end - i, &value);
	if (rv)
		return rv;
	return check_ctx_event(c, (enum check_event_type)type, process,
			       (enum check_f)f, NULL, &value, false, 0);
}

int check_parse_etcd(const char *buf, size_t len, struct check_history *h,
		     struct check_parse_error *err)
{
	struct check_parse_ctx c;
	check_ctx_init(&c, h, err, CHECK_FORMAT_ETCD);
	size_t pos = 0;
	const char *line;
	size_t n;
	int rv = 0;
	while (check_next_line(buf, len, &pos, &line, &n)) {
		c.line++;
		if (n > CHECK_MAX_LINE) {
			rv = check_ctx_fail(&c, KEEL_ERR_TOO_BIG,
					    "line longer than %u bytes",
					    CHECK_MAX_LINE);
			break;
		}
		if ((rv = parse_line(&c, line, n)))
			break;
	}
	if (!rv)
		rv = check_ctx_finish(&c);
	check_ctx_close(&c);
	return rv;
}
