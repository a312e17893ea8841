/*
 * json.c -- reads keel's JSON-lines histories, one event object per line:
 *   {"process": 3, "type": "invoke", "f": "cas", "key": "k1",
 *    "value": [1, 2], "time": 123456789}
 *
 * A small strict JSON reader for the subset the format uses (no
 * dependency): objects, arrays, strings with every JSON escape (\uXXXX
 * with surrogate pairs, to UTF-8), integers, null, true and false. Fields
 * the format does not know are skipped whatever their shape, up to
 * CHECK_MAX_DEPTH deep. Fields it knows must have the right type; numbers
 * it uses must be integers that fit in int64. Every error names its line.
 * The reader's pieces (check_json_*) are shared with bank.c.
 */
#include <string.h>

#include "check/check_internal.h"

void check_json_ws(struct check_json *j)
{
	while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' ||
			       j->s[j->i] == '\r' || j->s[j->i] == '\n'))
		j->i++;
}

int check_json_bad(struct check_json *j, const char *what)
{
	return check_ctx_fail(j->c, KEEL_ERR_MALFORMED, "bad JSON at column %zu: %s",
			      j->i + 1, what);
}

int check_json_member_end(struct check_json *j, bool *done)
{
	check_json_ws(j);
	if (j->i < j->n && (j->s[j->i] == ',' || j->s[j->i] == '}')) {
		*done = j->s[j->i++] == '}';
		return 0;
	}
	return check_json_bad(j, "expected ',' or '}'");
}

int check_json_line_end(struct check_json *j)
{
	check_json_ws(j);
	if (j->i != j->n)
		return check_json_bad(j, "trailing text after the object");
	return 0;
}

static int hex4(struct check_json *j, uint32_t *out)
{
	if (j->n - j->i < 4)
		return check_json_bad(j, "short \\u escape");
	uint32_t v = 0;
	for (int k = 0; k < 4; k++) {
		char ch = j->s[j->i++];
		v <<= 4;
		if (ch >= '0' && ch <= '9')
			v |= (uint32_t)(ch - '0');
		else if (ch >= 'a' && ch <= 'f')
			v |= (uint32_t)(ch - 'a' + 10);
		else if (ch >= 'A' && ch <= 'F')
			v |= (uint32_t)(ch - 'A' + 10);
		else
			return check_json_bad(j, "bad hex digit in \\u escape");
	}
	*out = v;
	return 0;
}

/* A string at j (which is at the opening quote). Without escapes it points
 * into the input; with escapes it is decoded into the line's scratch. */
int check_json_string(struct check_json *j, struct check_value *v)
{
	KEEL_ASSERT(j->s[j->i] == '"');
	j->i++;
	size_t start = j->i;
	bool escaped = false;
	for (;; j->i++) {
		if (j->i >= j->n)
			return check_json_bad(j, "unterminated string");
		unsigned char ch = (unsigned char)j->s[j->i];
		if (ch == '"')
			break;
		if (ch < 0x20)
			return check_json_bad(j, "control character in string");
		if (ch == '\\') {
			escaped = true;
			j->i++; /* skip the escaped char; checked below */
			if (j->i >= j->n)
				return check_json_bad(j, "unterminated string");
		}
	}
	size_t end = j->i;
	j->i++; /* closing quote */
	size_t max = j->max_str ? j->max_str : CHECK_MAX_STR;
	if (end - start > max)
		return check_ctx_fail(j->c, KEEL_ERR_TOO_BIG,
				      "string longer than %zu bytes", max);
	memset(v, 0, sizeof(*v));
	v->kind = CHECK_VAL_STR;
	if (!escaped) {
		v->str = j->s + start;
		v->len = (uint32_t)(end - start);
		return 0;
	}
	/* Decoded text is never longer than the raw text. The scratch was
	 * sized for the whole line before parsing started. */
	struct check_parse_ctx *c = j->c;
	KEEL_ASSERT(c->scratch_used + (end - start) <= c->scratch_cap);
	char *o = c->scratch + c->scratch_used;
	size_t on = 0;
	struct check_json d = {.s = j->s, .i = start, .n = end, .c = c};
	while (d.i < end) {
		char ch = d.s[d.i++];
		if (ch != '\\') {
			o[on++] = ch;
			continue;
		}
		ch = d.s[d.i++];
		switch (ch) {
		case '"':
		case '\\':
		case '/':
			o[on++] = ch;
			break;
		case 'b':
			o[on++] = '\b';
			break;
		case 'f':
			o[on++] = '\f';
			break;
		case 'n':
			o[on++] = '\n';
			break;
		case 'r':
			o[on++] = '\r';
			break;
		case 't':
			o[on++] = '\t';
			break;
		case 'u': {
			uint32_t cp, lo;
			int rv = hex4(&d, &cp);
			if (rv)
				return rv;
			if (cp >= 0xdc00 && cp <= 0xdfff)
				return check_json_bad(&d, "lone low surrogate");
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (end - d.i < 6 || d.s[d.i] != '\\' ||
				    d.s[d.i + 1] != 'u')
					return check_json_bad(&d, "lone high surrogate");
				d.i += 2;
				if ((rv = hex4(&d, &lo)))
					return rv;
				if (lo < 0xdc00 || lo > 0xdfff)
					return check_json_bad(&d, "bad low surrogate");
				cp = 0x10000 + ((cp - 0xd800) << 10) +
				     (lo - 0xdc00);
			}
			/* UTF-8 of cp: at most as long as the escape. */
			if (cp < 0x80) {
				o[on++] = (char)cp;
			} else if (cp < 0x800) {
				o[on++] = (char)(0xc0 | (cp >> 6));
				o[on++] = (char)(0x80 | (cp & 0x3f));
			} else if (cp < 0x10000) {
				o[on++] = (char)(0xe0 | (cp >> 12));
				o[on++] = (char)(0x80 | ((cp >> 6) & 0x3f));
				o[on++] = (char)(0x80 | (cp & 0x3f));
			} else {
				o[on++] = (char)(0xf0 | (cp >> 18));
				o[on++] = (char)(0x80 | ((cp >> 12) & 0x3f));
				o[on++] = (char)(0x80 | ((cp >> 6) & 0x3f));
				o[on++] = (char)(0x80 | (cp & 0x3f));
			}
			break;
		}
		default:
			return check_json_bad(&d, "unknown escape");
		}
	}
	KEEL_ASSERT(on <= end - start);
	c->scratch_used += on;
	v->str = o;
	v->len = (uint32_t)on;
	return 0;
}

/* A number. integer_only: the format uses it, so it must be an int64. */
int check_json_number(struct check_json *j, struct check_value *v,
		      bool integer_only)
{
	size_t start = j->i;
	if (j->i < j->n && j->s[j->i] == '-')
		j->i++;
	size_t digits = j->i;
	while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9')
		j->i++;
	if (j->i == digits)
		return check_json_bad(j, "expected a digit");
	if (j->i - digits > 1 && j->s[digits] == '0')
		return check_json_bad(j, "leading zero");
	size_t int_end = j->i;
	bool frac = false;
	if (j->i < j->n && j->s[j->i] == '.') {
		frac = true;
		j->i++;
		size_t d = j->i;
		while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9')
			j->i++;
		if (j->i == d)
			return check_json_bad(j, "expected a digit after '.'");
	}
	if (j->i < j->n && (j->s[j->i] == 'e' || j->s[j->i] == 'E')) {
		frac = true;
		j->i++;
		if (j->i < j->n && (j->s[j->i] == '+' || j->s[j->i] == '-'))
			j->i++;
		size_t d = j->i;
		while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9')
			j->i++;
		if (j->i == d)
			return check_json_bad(j, "expected an exponent");
	}
	if (!integer_only)
		return 0;
	if (frac)
		return check_json_bad(j, "expected an integer");
	memset(v, 0, sizeof(*v));
	v->kind = CHECK_VAL_INT;
	int rv = check_parse_i64(j->s + start, int_end - start, &v->num);
	if (rv == KEEL_ERR_TOO_BIG)
		return check_ctx_fail(j->c, rv, "integer out of range at column "
					     "%zu", start + 1);
	if (rv)
		return check_json_bad(j, "bad integer");
	return 0;
}

bool check_json_literal(struct check_json *j, const char *word)
{
	size_t n = strlen(word);
	if (j->n - j->i >= n && !memcmp(j->s + j->i, word, n)) {
		j->i += n;
		return true;
	}
	return false;
}

/* Skips any JSON value. */
int check_json_skip(struct check_json *j, int depth)
{
	struct check_value v;
	check_json_ws(j);
	if (j->i >= j->n)
		return check_json_bad(j, "expected a value");
	if (depth > CHECK_MAX_DEPTH)
		return check_ctx_fail(j->c, KEEL_ERR_TOO_BIG,
				      "JSON nested deeper than %d",
				      CHECK_MAX_DEPTH);
	char ch = j->s[j->i];
	if (ch == '"')
		return check_json_string(j, &v);
	if (ch == '-' || (ch >= '0' && ch <= '9'))
		return check_json_number(j, &v, false);
	if (check_json_literal(j, "null") || check_json_literal(j, "true") ||
	    check_json_literal(j, "false"))
		return 0;
	if (ch != '[' && ch != '{')
		return check_json_bad(j, "expected a value");
	char close = ch == '[' ? ']' : '}';
	j->i++;
	check_json_ws(j);
	if (j->i < j->n && j->s[j->i] == close) {
		j->i++;
		return 0;
	}
	for (;;) {
		int rv;
		if (close == '}') {
			check_json_ws(j);
			if (j->i >= j->n || j->s[j->i] != '"')
				return check_json_bad(j, "expected a field name");
			if ((rv = check_json_string(j, &v)))
				return rv;
			check_json_ws(j);
			if (j->i >= j->n || j->s[j->i] != ':')
				return check_json_bad(j, "expected ':'");
			j->i++;
		}
		if ((rv = check_json_skip(j, depth + 1)))
			return rv;
		check_json_ws(j);
		if (j->i < j->n && j->s[j->i] == ',') {
			j->i++;
			continue;
		}
		if (j->i < j->n && j->s[j->i] == close) {
			j->i++;
			return 0;
		}
		return check_json_bad(j, "expected ',' or a closing bracket");
	}
}

/* A scalar the format uses: null, an integer or a string. */
static int jscalar(struct check_json *j, struct check_value *v)
{
	check_json_ws(j);
	if (j->i >= j->n)
		return check_json_bad(j, "expected a value");
	char ch = j->s[j->i];
	memset(v, 0, sizeof(*v));
	if (ch == '"')
		return check_json_string(j, v);
	if (ch == '-' || (ch >= '0' && ch <= '9'))
		return check_json_number(j, v, true);
	if (check_json_literal(j, "null")) {
		v->kind = CHECK_VAL_NIL;
		return 0;
	}
	return check_json_bad(j, "expected null, an integer or a string");
}

/* "value": a scalar or [a, b]. */
static int jvalue(struct check_json *j, struct check_raw_value *out)
{
	memset(out, 0, sizeof(*out));
	check_json_ws(j);
	out->present = true;
	if (j->i >= j->n || j->s[j->i] != '[')
		return jscalar(j, &out->v);
	j->i++;
	int rv = jscalar(j, &out->v);
	if (rv)
		return rv;
	check_json_ws(j);
	if (j->i >= j->n || j->s[j->i] != ',')
		return check_json_bad(j, "a value array needs exactly two elements");
	j->i++;
	if ((rv = jscalar(j, &out->v2)))
		return rv;
	check_json_ws(j);
	if (j->i >= j->n || j->s[j->i] != ']')
		return check_json_bad(j, "a value array needs exactly two elements");
	j->i++;
	out->is_pair = true;
	return 0;
}

enum {
	FLD_PROCESS = 1,
	FLD_TYPE = 2,
	FLD_F = 4,
	FLD_KEY = 8,
	FLD_VALUE = 16,
	FLD_TIME = 32,
};

static int parse_line(struct check_parse_ctx *c, const char *line, size_t n)
{
	struct check_json j = {.s = line, .i = 0, .n = n, .c = c};
	int rv;
	check_json_ws(&j);
	if (j.i == n)
		return 0; /* blank line */
	c->scratch_used = 0;
	if ((rv = check_ctx_scratch(c, n)))
		return rv;
	if (j.s[j.i] != '{')
		return check_json_bad(&j, "expected '{'");
	j.i++;
	unsigned seen = 0;
	struct check_value process = {0}, type = {0}, f = {0}, key = {0},
			   time = {0};
	struct check_raw_value value;
	memset(&value, 0, sizeof(value));
	check_json_ws(&j);
	if (j.i < n && j.s[j.i] == '}')
		return check_json_bad(&j, "empty event");
	for (;;) {
		struct check_value name;
		check_json_ws(&j);
		if (j.i >= n || j.s[j.i] != '"')
			return check_json_bad(&j, "expected a field name");
		if ((rv = check_json_string(&j, &name)))
			return rv;
		check_json_ws(&j);
		if (j.i >= n || j.s[j.i] != ':')
			return check_json_bad(&j, "expected ':'");
		j.i++;
		check_json_ws(&j);
		static const struct {
			const char *name;
			unsigned bit;
		} fields[] = {
			{"process", FLD_PROCESS}, {"type", FLD_TYPE},
			{"f", FLD_F},             {"key", FLD_KEY},
			{"value", FLD_VALUE},     {"time", FLD_TIME},
		};
		unsigned bit = 0;
		for (size_t k = 0; k < KEEL_ARRAY_LEN(fields); k++)
			if (strlen(fields[k].name) == name.len &&
			    !memcmp(fields[k].name, name.str, name.len))
				bit = fields[k].bit;
		if (bit & seen)
			return check_ctx_fail(c, KEEL_ERR_MALFORMED,
					      "duplicate field \"%.*s\"",
					      (int)name.len, name.str);
		seen |= bit;
		switch (bit) {
		case FLD_PROCESS:
		case FLD_TIME: {
			struct check_value *v =
				bit == FLD_PROCESS ? &process : &time;
			if (j.i >= n || !(j.s[j.i] == '-' ||
					  (j.s[j.i] >= '0' && j.s[j.i] <= '9')))
				return check_json_bad(&j, "expected an integer");
			rv = check_json_number(&j, v, true);
			break;
		}
		case FLD_TYPE:
		case FLD_F:
			if (j.i >= n || j.s[j.i] != '"')
				return check_json_bad(&j, "expected a string");
			rv = check_json_string(&j, bit == FLD_TYPE ? &type : &f);
			break;
		case FLD_KEY:
			rv = jscalar(&j, &key);
			break;
		case FLD_VALUE:
			rv = jvalue(&j, &value);
			break;
		default:
			rv = check_json_skip(&j, 1);
			break;
		}
		bool done = false;
		if (rv || (rv = check_json_member_end(&j, &done)))
			return rv;
		if (done)
			break;
	}
	if ((rv = check_json_line_end(&j)))
		return rv;
	unsigned need = FLD_PROCESS | FLD_TYPE | FLD_F;
	if ((seen & need) != need)
		return check_ctx_fail(c, KEEL_ERR_MALFORMED,
				      "event needs \"process\", \"type\" and "
				      "\"f\"");
	int t = check_type_parse(type.str, type.len);
	if (t < 0)
		return check_ctx_fail(c, KEEL_ERR_MALFORMED,
				      "unknown type \"%.*s\"",
				      (int)KEEL_MIN(type.len, 40), type.str);
	int fn = check_f_parse(f.str, f.len);
	if (fn < 0)
		return check_ctx_fail(c, KEEL_ERR_MALFORMED,
				      "unknown f \"%.*s\"",
				      (int)KEEL_MIN(f.len, 40), f.str);
	if ((seen & FLD_KEY) && key.kind == CHECK_VAL_NIL)
		return check_ctx_fail(c, KEEL_ERR_MALFORMED,
				      "key must not be null");
	return check_ctx_event(c, (enum check_event_type)t, process.num,
			       (enum check_f)fn, (seen & FLD_KEY) ? &key : NULL,
			       &value, (seen & FLD_TIME) != 0, time.num);
}

int check_parse_jsonl(const char *buf, size_t len, struct check_history *h,
		      struct check_parse_error *err)
{
	struct check_parse_ctx c;
	check_ctx_init(&c, h, err, CHECK_FORMAT_JSONL);
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
