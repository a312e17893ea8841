/*
 * parse_kv.c -- reads the kv lab's histories: one EDN map per line,
 *   {:process 0, :type :invoke, :f :append, :key "4", :value "x 0 1 y"}
 *
 * A reader for the EDN subset those lines use: keywords, strings (with
 * \" \\ \n \t \r escapes), integers, nil, true/false, and vectors, lists
 * and maps (only skipped, or a two-element vector as a cas value). Commas
 * are whitespace, as in EDN. Keys and values are per key independent; an
 * absent key reads as the empty string, so the history's initial value is
 * "" rather than nil.
 */
#include <string.h>

#include "check/check_internal.h"

struct ecur {
	const char *s;
	size_t i, n;
	struct check_parse_ctx *c;
};

static void ws(struct ecur *e)
{
	while (e->i < e->n &&
	       (e->s[e->i] == ' ' || e->s[e->i] == '\t' || e->s[e->i] == ',' ||
		e->s[e->i] == '\r' || e->s[e->i] == '\n'))
		e->i++;
}

static int bad(struct ecur *e, const char *what)
{
	return check_ctx_fail(e->c, KEEL_ERR_MALFORMED,
			      "bad EDN at column %zu: %s", e->i + 1, what);
}

static bool sym_char(char ch)
{
	/* strchr would match the terminating NUL: rule ch == 0 out. */
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       (ch >= '0' && ch <= '9') ||
	       (ch != '\0' && strchr("-_?!.*+/<>=&%$'", ch) != NULL);
}

/* A bare token (keyword without ':', symbol or number). */
static void token(struct ecur *e, const char **t, size_t *len)
{
	size_t s = e->i;
	while (e->i < e->n && sym_char(e->s[e->i]))
		e->i++;
	*t = e->s + s;
	*len = e->i - s;
}

static int estring(struct ecur *e, struct check_value *v)
{
	KEEL_ASSERT(e->s[e->i] == '"');
	e->i++;
	size_t start = e->i;
	bool escaped = false;
	for (;; e->i++) {
		if (e->i >= e->n)
			return bad(e, "unterminated string");
		if (e->s[e->i] == '"')
			break;
		if (e->s[e->i] == '\\') {
			escaped = true;
			if (++e->i >= e->n)
				return bad(e, "unterminated string");
		}
	}
	size_t end = e->i++;
	if (end - start > CHECK_MAX_STR)
		return check_ctx_fail(e->c, KEEL_ERR_TOO_BIG,
				      "string longer than %u bytes",
				      CHECK_MAX_STR);
	memset(v, 0, sizeof(*v));
	v->kind = CHECK_VAL_STR;
	if (!escaped) {
		v->str = e->s + start;
		v->len = (uint32_t)(end - start);
		return 0;
	}
	struct check_parse_ctx *c = e->c;
	KEEL_ASSERT(c->scratch_used + (end - start) <= c->scratch_cap);
	char *o = c->scratch + c->scratch_used;
	size_t on = 0;
	for (size_t i = start; i < end; i++) {
		char ch = e->s[i];
		if (ch != '\\') {
			o[on++] = ch;
			continue;
		}
		ch = e->s[++i];
		switch (ch) {
		case '"':
		case '\\':
			o[on++] = ch;
			break;
		case 'n':
			o[on++] = '\n';
			break;
		case 't':
			o[on++] = '\t';
			break;
		case 'r':
			o[on++] = '\r';
			break;
		default:
			e->i = i;
			return bad(e, "unknown escape in string");
		}
	}
	c->scratch_used += on;
	v->str = o;
	v->len = (uint32_t)on;
	return 0;
}

/* A scalar: nil, integer, string; keywords set *keyword instead. */
static int escalar(struct ecur *e, struct check_value *v, bool *keyword)
{
	ws(e);
	memset(v, 0, sizeof(*v));
	*keyword = false;
	if (e->i >= e->n)
		return bad(e, "expected a value");
	char ch = e->s[e->i];
	if (ch == '"')
		return estring(e, v);
	if (ch == ':') {
		e->i++;
		const char *t;
		size_t len;
		token(e, &t, &len);
		if (!len)
			return bad(e, "empty keyword");
		*keyword = true;
		v->kind = CHECK_VAL_STR;
		v->str = t;
		v->len = (uint32_t)len;
		return 0;
	}
	const char *t;
	size_t len;
	token(e, &t, &len);
	if (!len)
		return bad(e, "expected a value");
	if (len == 3 && !memcmp(t, "nil", 3)) {
		v->kind = CHECK_VAL_NIL;
		return 0;
	}
	int rv = check_parse_i64(t, len, &v->num);
	if (rv == KEEL_ERR_TOO_BIG)
		return check_ctx_fail(e->c, rv, "integer out of range: %.*s",
				      (int)KEEL_MIN(len, 40), t);
	if (rv) {
		e->i = (size_t)(t - e->s);
		return bad(e, "expected nil, an integer, a string or a "
			      "keyword");
	}
	v->kind = CHECK_VAL_INT;
	return 0;
}

/* Skips any value, nested collections included. */
static int eskip(struct ecur *e, int depth)
{
	ws(e);
	if (e->i >= e->n)
		return bad(e, "expected a value");
	if (depth > CHECK_MAX_DEPTH)
		return check_ctx_fail(e->c, KEEL_ERR_TOO_BIG,
				      "EDN nested deeper than %d",
				      CHECK_MAX_DEPTH);
	char ch = e->s[e->i];
	char close = ch == '[' ? ']' : ch == '(' ? ')' : ch == '{' ? '}' : 0;
	if (!close) {
		struct check_value v;
		bool kw;
		if (ch == '#' || ch == '\\')
			return bad(e, "unsupported EDN syntax");
		if (ch != '"' && ch != ':' && !sym_char(ch))
			return bad(e, "expected a value");
		if (ch != '"' && ch != ':') {
			/* Symbols (true, false, names) and numbers. */
			const char *t;
			size_t len;
			token(e, &t, &len);
			KEEL_ASSERT(len > 0); /* ch is a symbol char */
			return 0;
		}
		return escalar(e, &v, &kw);
	}
	e->i++;
	for (;;) {
		ws(e);
		if (e->i >= e->n)
			return bad(e, "unterminated collection");
		if (e->s[e->i] == close) {
			e->i++;
			return 0;
		}
		int rv = eskip(e, depth + 1);
		if (rv)
			return rv;
	}
}

static int evalue(struct ecur *e, struct check_raw_value *out)
{
	memset(out, 0, sizeof(*out));
	ws(e);
	bool kw;
	out->present = true;
	if (e->i < e->n && e->s[e->i] == '[') {
		e->i++;
		int rv = escalar(e, &out->v, &kw);
		if (rv)
			return rv;
		if (kw)
			return bad(e, "keyword inside a value vector");
		if ((rv = escalar(e, &out->v2, &kw)))
			return rv;
		if (kw)
			return bad(e, "keyword inside a value vector");
		ws(e);
		if (e->i >= e->n || e->s[e->i] != ']')
			return bad(e, "a value vector needs exactly two "
				      "elements");
		e->i++;
		out->is_pair = true;
		return 0;
	}
	int rv = escalar(e, &out->v, &kw);
	if (rv)
		return rv;
	if (kw) /* e.g. :timed-out on an info line: no value */
		memset(out, 0, sizeof(*out));
	return 0;
}

static bool is_kw(const struct check_value *v, const char *name)
{
	size_t n = strlen(name);
	return v->len == n && !memcmp(v->str, name, n);
}

static int parse_line(struct check_parse_ctx *c, const char *line, size_t n)
{
	struct ecur e = {.s = line, .i = 0, .n = n, .c = c};
	int rv;
	ws(&e);
	if (e.i == n)
		return 0;
	c->scratch_used = 0;
	if ((rv = check_ctx_scratch(c, n)))
		return rv;
	if (e.s[e.i] != '{')
		return bad(&e, "expected '{'");
	e.i++;
	bool has_process = false, has_type = false, has_f = false,
	     has_key = false, has_value = false;
	int64_t process = 0;
	int type = -1, f = -1;
	struct check_value key = {0};
	struct check_raw_value value;
	memset(&value, 0, sizeof(value));
	for (;;) {
		ws(&e);
		if (e.i >= n)
			return bad(&e, "unterminated map");
		if (e.s[e.i] == '}') {
			e.i++;
			break;
		}
		struct check_value name, v;
		bool kw;
		if (e.s[e.i] != ':')
			return bad(&e, "expected a keyword field name");
		if ((rv = escalar(&e, &name, &kw)))
			return rv;
		bool *seen = is_kw(&name, "process") ? &has_process
			     : is_kw(&name, "type")  ? &has_type
			     : is_kw(&name, "f")     ? &has_f
			     : is_kw(&name, "key")   ? &has_key
			     : is_kw(&name, "value") ? &has_value
						     : NULL;
		if (!seen) {
			if ((rv = eskip(&e, 1)))
				return rv;
			continue;
		}
		if (*seen)
			return check_ctx_fail(c, KEEL_ERR_MALFORMED,
					      "duplicate field :%.*s",
					      (int)name.len, name.str);
		*seen = true;
		if (seen == &has_value) {
			if ((rv = evalue(&e, &value)))
				return rv;
			continue;
		}
		if ((rv = escalar(&e, &v, &kw)))
			return rv;
		if (seen == &has_process) {
			if (v.kind != CHECK_VAL_INT || kw)
				return check_ctx_fail(
					c, KEEL_ERR_MALFORMED,
					":process must be an integer");
			process = v.num;
		} else if (seen == &has_key) {
			if (kw || v.kind == CHECK_VAL_NIL)
				return check_ctx_fail(
					c, KEEL_ERR_MALFORMED,
					":key must be a string or integer");
			key = v;
		} else {
			if (!kw)
				return check_ctx_fail(c, KEEL_ERR_MALFORMED,
						      ":type and :f take "
						      "keywords");
			if (seen == &has_type &&
			    (type = check_type_parse(v.str, v.len)) < 0)
				return check_ctx_fail(
					c, KEEL_ERR_MALFORMED,
					"unknown :type :%.*s",
					(int)KEEL_MIN(v.len, 40), v.str);
			if (seen == &has_f &&
			    (f = check_f_parse(v.str, v.len)) < 0)
				return check_ctx_fail(
					c, KEEL_ERR_MALFORMED,
					"unknown :f :%.*s",
					(int)KEEL_MIN(v.len, 40), v.str);
		}
	}
	ws(&e);
	if (e.i != n)
		return bad(&e, "trailing text after the map");
	if (!has_process || !has_type || !has_f)
		return check_ctx_fail(c, KEEL_ERR_MALFORMED,
				      "event needs :process, :type and :f");
	return check_ctx_event(c, (enum check_event_type)type, process,
			       (enum check_f)f, has_key ? &key : NULL, &value,
			       false, 0);
}

int check_parse_kv(const char *buf, size_t len, struct check_history *h,
		   struct check_parse_error *err)
{
	struct check_parse_ctx c;
	check_ctx_init(&c, h, err, CHECK_FORMAT_KV);
	/* The lab's absent key reads as "". */
	h->initial.kind = CHECK_VAL_STR;
	h->initial.str = "";
	h->initial.len = 0;
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
