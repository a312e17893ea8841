/*
 * parse.c -- the incremental RESP request parser: turns the bytes a client
 * sends (multibulk "*<n>\r\n$<len>\r\n<bytes>\r\n..." or inline "PING\r\n")
 * into one command at a time, however the bytes were split across reads.
 *
 * Unlike Redis, whose parser works on the client's query buffer, this one
 * consumes every byte it is given: a partial header line is kept in a small
 * line buffer, a partial argument in the parser's arena, so the caller can
 * drop consumed bytes and a one-byte-per-read client costs O(1) per byte.
 * When an argument lies whole in the caller's buffer it is not copied
 * (zero-copy); such borrowed arguments are copied into the arena only if
 * the command is still incomplete when the call returns.
 *
 * Every length is checked against the limits the moment it is parsed,
 * before allocating or waiting for its bytes; memory then grows with the
 * bytes that actually arrive, never with what a header merely declares.
 * Error texts mirror Redis's networking.c so clients see familiar messages.
 */
#include <string.h>

#include "keel/resp.h"
#include "resp/resp_int.h"

enum {
	ST_IDLE = 0,  /* before the first byte of a command */
	ST_MB_COUNT,  /* reading the "*<n>" line */
	ST_BULK_HDR,  /* reading a "$<len>" line */
	ST_BULK_DATA, /* copying a bulk payload into the arena */
	ST_BULK_CR,   /* expecting the '\r' after a payload */
	ST_BULK_LF,   /* expecting the '\n' after a payload */
	ST_INLINE,    /* reading an inline command line */
	ST_DONE,      /* returned RESP_OK; release the command on next call */
};

/* Client-visible error texts: Redis's networking.c wording where Redis
 * has one (docs/resp.md lists which are keel's own). */
#define ERR_MB_LEN "Protocol error: invalid multibulk length"
#define ERR_MB_UNAUTH "Protocol error: unauthenticated multibulk length"
#define ERR_BULK_LEN "Protocol error: invalid bulk length"
#define ERR_BULK_UNAUTH "Protocol error: unauthenticated bulk length"
#define ERR_MB_LINE "Protocol error: too big mbulk count string"
#define ERR_BULK_LINE "Protocol error: too big bulk count string"
#define ERR_INLINE_LINE "Protocol error: too big inline request"
#define ERR_QUOTES "Protocol error: unbalanced quotes in request"
#define ERR_INLINE_ARGS "Protocol error: too many arguments in inline request"
#define ERR_CMD_BYTES "Protocol error: too big command"
#define ERR_BULK_CRLF "Protocol error: bulk data not followed by CRLF"

/* Above these, memory kept between commands is given back, so one big
 * command does not pin its buffers for the connection's lifetime. */
#define KEEP_ARENA_BYTES (64u * 1024)
#define KEEP_ARGS 1024u
#define KEEP_LINE_BYTES 1024u

const struct resp_limits resp_limits_default = {
    .max_bulk_len = RESP_DEFAULT_MAX_BULK_LEN,
    .max_array_len = RESP_DEFAULT_MAX_ARRAY_LEN,
    .max_inline_len = RESP_DEFAULT_MAX_INLINE_LEN,
    .max_command_bytes = RESP_DEFAULT_MAX_COMMAND_BYTES,
};

const struct resp_limits resp_limits_unauth = {
    .max_bulk_len = RESP_UNAUTH_MAX_BULK_LEN,
    .max_array_len = RESP_UNAUTH_MAX_ARRAY_LEN,
    .max_inline_len = RESP_UNAUTH_MAX_INLINE_LEN,
    .max_command_bytes = RESP_UNAUTH_MAX_COMMAND_BYTES,
};

static const uint8_t empty_arg[1] = {0};

void resp_parser_init(struct resp_parser *p, const struct keel_alloc *alloc,
		      const struct resp_limits *limits)
{
	KEEL_ASSERT(p != NULL);
	KEEL_ASSERT(alloc != NULL);
	memset(p, 0, sizeof(*p));
	p->alloc = alloc;
	p->limits = limits ? *limits : resp_limits_default;
	p->state = ST_IDLE;
}

void resp_parser_close(struct resp_parser *p)
{
	p->alloc->free(p->alloc->ctx, p->line);
	p->alloc->free(p->alloc->ctx, p->argv);
	p->alloc->free(p->alloc->ctx, p->argv_len);
	p->alloc->free(p->alloc->ctx, p->arg_off);
	p->alloc->free(p->alloc->ctx, p->arena);
	memset(p, 0, sizeof(*p));
}

void resp_parser_set_unauth(struct resp_parser *p,
			    const struct resp_limits *tight)
{
	p->unauth_on = tight != NULL;
	if (tight)
		p->unauth = *tight;
}

const char *resp_parser_error(const struct resp_parser *p)
{
	return p->errmsg;
}

/* Records a sticky error. msg is copied; the parser never allocates on the
 * error path. */
static int fail(struct resp_parser *p, int code, const char *msg)
{
	size_t n = strlen(msg);
	if (n >= sizeof(p->errmsg))
		n = sizeof(p->errmsg) - 1;
	memcpy(p->errmsg, msg, n);
	p->errmsg[n] = '\0';
	p->err = code;
	return code;
}

static int fail_nomem(struct resp_parser *p)
{
	return fail(p, RESP_ERR_NOMEM, "ERR out of memory");
}

/* Redis's "expected '$', got '%c'"; bytes that would not survive in a one
 * line error reply (control bytes, non-ASCII) are shown as '?'. */
static int fail_expected_dollar(struct resp_parser *p, uint8_t got)
{
	static const char pre[] = "Protocol error: expected '$', got '";
	char msg[sizeof(pre) + 2];
	memcpy(msg, pre, sizeof(pre) - 1);
	msg[sizeof(pre) - 1] = (got >= 0x20 && got < 0x7f) ? (char)got : '?';
	msg[sizeof(pre)] = '\'';
	msg[sizeof(pre) + 1] = '\0';
	return fail(p, RESP_ERR_PROTOCOL, msg);
}

/* Grows a buffer to hold `need` bytes, at least doubling (bounded by
 * `hint`, the most we expect to need, so a declared length is never
 * allocated ahead of its bytes by more than 2x what arrived). */
static int grow(struct resp_parser *p, uint8_t **buf, size_t *cap, size_t need,
		size_t hint)
{
	if (need <= *cap)
		return 0;
	size_t ncap = *cap ? *cap : 64;
	while (ncap < need && ncap <= SIZE_MAX / 2)
		ncap *= 2;
	if (ncap < need)
		ncap = need;
	if (ncap > hint && hint >= need)
		ncap = hint;
	void *nb = p->alloc->realloc(p->alloc->ctx, *buf, ncap);
	if (!nb)
		return fail_nomem(p);
	*buf = nb;
	*cap = ncap;
	return 0;
}

static int arena_append(struct resp_parser *p, const uint8_t *src, size_t n,
			size_t hint)
{
	if (n == 0)
		return 0;
	if (n > SIZE_MAX - p->arena_len)
		return fail_nomem(p);
	int rc = grow(p, &p->arena, &p->arena_cap, p->arena_len + n, hint);
	if (rc)
		return rc;
	memcpy(p->arena + p->arena_len, src, n);
	p->arena_len += n;
	return 0;
}

/* Makes room for one more argument slot. A multibulk command's slots grow
 * by doubling up to the declared count, never to it at once: "*1000000"
 * followed by silence costs nothing. */
static int ensure_slot(struct resp_parser *p)
{
	if (p->nargs < p->args_cap)
		return 0;
	size_t ncap = p->args_cap ? p->args_cap * 2 : 8;
	if (!p->is_inline && p->want_args >= p->nargs + 1 &&
	    ncap > p->want_args)
		ncap = (size_t)p->want_args;
	if (ncap > SIZE_MAX / sizeof(size_t))
		return fail_nomem(p);
	const struct keel_alloc *a = p->alloc;
	void *nv = a->realloc(a->ctx, (void *)p->argv, ncap * sizeof(*p->argv));
	if (!nv)
		return fail_nomem(p);
	p->argv = nv;
	void *nl = a->realloc(a->ctx, p->argv_len, ncap * sizeof(size_t));
	if (!nl)
		return fail_nomem(p);
	p->argv_len = nl;
	void *no = a->realloc(a->ctx, p->arg_off, ncap * sizeof(size_t));
	if (!no)
		return fail_nomem(p);
	p->arg_off = no;
	p->args_cap = ncap;
	return 0;
}

/* Copies every argument that still points into the caller's buffer into
 * the arena, because the call is about to return without a command and
 * the caller may then reuse that buffer. */
static int own_borrowed(struct resp_parser *p)
{
	for (size_t i = 0; i < p->nargs; i++) {
		if (p->arg_off[i] != SIZE_MAX)
			continue;
		size_t off = p->arena_len;
		int rc = arena_append(p, p->argv[i], p->argv_len[i], 0);
		if (rc)
			return rc;
		p->arg_off[i] = off;
	}
	return 0;
}

/* Forgets the previous command; gives back oversized buffers. */
static void release_command(struct resp_parser *p)
{
	const struct keel_alloc *a = p->alloc;
	p->nargs = 0;
	p->want_args = 0;
	p->cmd_bytes = 0;
	p->arena_len = 0;
	p->is_inline = false;
	if (p->arena_cap > KEEP_ARENA_BYTES) {
		a->free(a->ctx, p->arena);
		p->arena = NULL;
		p->arena_cap = 0;
	}
	if (p->args_cap > KEEP_ARGS) {
		a->free(a->ctx, (void *)p->argv);
		a->free(a->ctx, p->argv_len);
		a->free(a->ctx, p->arg_off);
		p->argv = NULL;
		p->argv_len = NULL;
		p->arg_off = NULL;
		p->args_cap = 0;
	}
	if (p->line_cap > KEEP_LINE_BYTES) {
		a->free(a->ctx, p->line);
		p->line = NULL;
		p->line_cap = 0;
	}
}

/* Reads one line (the bytes before '\n'; a trailing '\r' stays and counts
 * toward cap). Returns 1 with *line and *line_len set (borrowed from buf when
 * the whole line is there, else from p->line, valid until the next
 * get_line), 0 when buf ended first (its bytes are kept, *pos == len), or
 * an error. A line is rejected with too_big as soon as more than cap bytes
 * of it are seen, so the verdict does not depend on how it was split. */
static int get_line(struct resp_parser *p, const uint8_t *buf, size_t len,
		    size_t *pos, uint64_t cap, const char *too_big,
		    const uint8_t **line, size_t *line_len)
{
	/* Only if the caps were tightened mid-line (set_unauth between
	 * calls): refuse, as for any over-long line. */
	if (p->line_len > cap)
		return fail(p, RESP_ERR_PROTOCOL, too_big);
	const uint8_t *start = buf + *pos;
	size_t avail = len - *pos;
	uint64_t room = cap - p->line_len;
	size_t scan = avail;
	if ((uint64_t)scan > room + 1)
		scan = (size_t)(room + 1);
	const uint8_t *nl = scan ? memchr(start, '\n', scan) : NULL;
	size_t n = nl ? (size_t)(nl - start) : scan;
	if ((uint64_t)p->line_len + n > cap)
		return fail(p, RESP_ERR_PROTOCOL, too_big);
	KEEL_ASSERT(nl != NULL || scan == avail);
	if (nl && p->line_len == 0) {
		*line = start;
		*line_len = n;
		*pos += n + 1;
		return 1;
	}
	int rc = grow(p, &p->line, &p->line_cap, p->line_len + n + 1,
		      (size_t)KEEL_MIN(cap + 1, (uint64_t)SIZE_MAX));
	if (rc)
		return rc;
	if (n)
		memcpy(p->line + p->line_len, start, n);
	p->line_len += n;
	*pos += n;
	if (!nl)
		return 0;
	*pos += 1;
	*line = p->line;
	*line_len = p->line_len;
	p->line_len = 0;
	return 1;
}

/* The number in a "*<n>\r" or "$<len>\r" line (prefix byte already
 * known). The '\r' is required: Redis accepts nothing else before '\n'. */
static bool header_number(const uint8_t *line, size_t n, int64_t *out)
{
	if (n < 2 || line[n - 1] != '\r')
		return false;
	return resp_parse_i64(line + 1, n - 2, out);
}

/* The whitespace Redis's sdssplitargs skips between arguments (isspace
 * in the C locale). */
static bool inline_space(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
	       c == '\f';
}

static int hex_val(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Splits an inline line into arguments with Redis's rules (sdssplitargs):
 * whitespace separates; "..." understands \n \r \t \b \a \xHH and \<any>;
 * '...' understands only \'; a closing quote must be followed by
 * whitespace or the end; an unterminated quote is an error. Unlike Redis,
 * a NUL byte is ordinary data (Redis stops the line there).
 * The unquoted bytes go to the arena, which never needs more than n. */
static int split_inline(struct resp_parser *p, const uint8_t *s, size_t n,
			uint64_t max_args)
{
	/* All tokens together are never longer than the line. */
	int rc = grow(p, &p->arena, &p->arena_cap, p->arena_len + n + 1,
		      p->arena_len + n + 1);
	if (rc)
		return rc;
	size_t i = 0;
	for (;;) {
		while (i < n && inline_space(s[i]))
			i++;
		if (i == n)
			return 0;
		/* Redis has no such cap, but an inline command must not get
		 * past the argument limit a multibulk one is held to
		 * (pre-AUTH above all). */
		if (p->nargs >= max_args)
			return fail(p, RESP_ERR_PROTOCOL, ERR_INLINE_ARGS);
		rc = ensure_slot(p);
		if (rc)
			return rc;
		size_t off = p->arena_len;
		uint8_t *d = p->arena + off;
		size_t dl = 0;
		int quote = 0; /* 0, '"' or '\'' */
		bool done = false;
		while (!done) {
			if (i == n) {
				if (quote)
					return fail(p, RESP_ERR_PROTOCOL,
						    ERR_QUOTES);
				break;
			}
			uint8_t c = s[i];
			if (quote == '"') {
				if (c == '\\' && i + 3 < n && s[i + 1] == 'x' &&
				    hex_val(s[i + 2]) >= 0 &&
				    hex_val(s[i + 3]) >= 0) {
					d[dl++] =
					    (uint8_t)(hex_val(s[i + 2]) * 16 +
						      hex_val(s[i + 3]));
					i += 4;
					continue;
				}
				if (c == '\\' && i + 1 < n) {
					uint8_t e = s[i + 1];
					switch (e) {
					case 'n':
						e = '\n';
						break;
					case 'r':
						e = '\r';
						break;
					case 't':
						e = '\t';
						break;
					case 'b':
						e = '\b';
						break;
					case 'a':
						e = '\a';
						break;
					default:
						break;
					}
					d[dl++] = e;
					i += 2;
					continue;
				}
				if (c == '"') {
					if (i + 1 < n &&
					    !inline_space(s[i + 1]))
						return fail(p,
							    RESP_ERR_PROTOCOL,
							    ERR_QUOTES);
					done = true;
				} else {
					d[dl++] = c;
				}
			} else if (quote == '\'') {
				if (c == '\\' && i + 1 < n &&
				    s[i + 1] == '\'') {
					d[dl++] = '\'';
					i += 2;
					continue;
				}
				if (c == '\'') {
					if (i + 1 < n &&
					    !inline_space(s[i + 1]))
						return fail(p,
							    RESP_ERR_PROTOCOL,
							    ERR_QUOTES);
					done = true;
				} else {
					d[dl++] = c;
				}
			} else if (c == ' ' || c == '\n' || c == '\r' ||
				   c == '\t') {
				done = true;
			} else if (c == '"' || c == '\'') {
				quote = c;
			} else {
				d[dl++] = c;
			}
			i++;
		}
		KEEL_ASSERT(off + dl <= p->arena_cap);
		p->argv_len[p->nargs] = dl;
		p->arg_off[p->nargs] = off;
		p->nargs++;
		p->arena_len += dl;
	}
}

/* Processes a complete "*<n>" line. Returns 0 to go on, or an error. */
static int on_mb_count(struct resp_parser *p, const uint8_t *line, size_t n)
{
	int64_t ll;
	if (!header_number(line, n, &ll) ||
	    (ll > 0 && (uint64_t)ll > p->limits.max_array_len))
		return fail(p, RESP_ERR_PROTOCOL, ERR_MB_LEN);
	if (p->unauth_on && ll > 0 && (uint64_t)ll > p->unauth.max_array_len)
		return fail(p, RESP_ERR_PROTOCOL, ERR_MB_UNAUTH);
	if (ll <= 0) {
		/* "*0" and "*-1" are empty commands; Redis skips them. */
		p->state = ST_IDLE;
		return 0;
	}
	p->want_args = (uint64_t)ll;
	p->state = ST_BULK_HDR;
	return 0;
}

/* Processes a complete "$<len>" line. */
static int on_bulk_len(struct resp_parser *p, const uint8_t *line, size_t n,
		       int64_t *len_out)
{
	int64_t ll;
	if (!header_number(line, n, &ll) || ll < 0 ||
	    (uint64_t)ll > p->limits.max_bulk_len)
		return fail(p, RESP_ERR_PROTOCOL, ERR_BULK_LEN);
	if (p->unauth_on && (uint64_t)ll > p->unauth.max_bulk_len)
		return fail(p, RESP_ERR_PROTOCOL, ERR_BULK_UNAUTH);
	const struct resp_limits *l = p->unauth_on ? &p->unauth : &p->limits;
	uint64_t cmd_max =
	    KEEL_MIN(l->max_command_bytes, p->limits.max_command_bytes);
	if ((uint64_t)ll > cmd_max - KEEL_MIN(p->cmd_bytes, cmd_max))
		return fail(p, RESP_ERR_PROTOCOL, ERR_CMD_BYTES);
	if ((uint64_t)ll > SIZE_MAX - 2)
		return fail(p, RESP_ERR_PROTOCOL, ERR_BULK_LEN);
	p->cmd_bytes += (uint64_t)ll;
	*len_out = ll;
	return 0;
}

static void finish(struct resp_parser *p, struct resp_command *out)
{
	for (size_t i = 0; i < p->nargs; i++) {
		if (p->arg_off[i] == SIZE_MAX)
			continue; /* borrowed from this call's buffer */
		KEEL_ASSERT(p->arg_off[i] + p->argv_len[i] <= p->arena_len);
		p->argv[i] =
		    p->argv_len[i] ? p->arena + p->arg_off[i] : empty_arg;
	}
	out->argc = p->nargs;
	out->argv = p->argv;
	out->argv_len = p->argv_len;
	out->is_inline = p->is_inline;
	p->state = ST_DONE;
}

int resp_parse(struct resp_parser *p, const uint8_t *buf, size_t len,
	       size_t *consumed, struct resp_command *out)
{
	KEEL_ASSERT(consumed != NULL);
	KEEL_ASSERT(out != NULL);
	KEEL_ASSERT(buf != NULL || len == 0);
	*consumed = 0;
	if (p->err)
		return p->err;
	if (p->state == ST_DONE) {
		release_command(p);
		p->state = ST_IDLE;
	}
	const struct resp_limits *lim = p->unauth_on ? &p->unauth : &p->limits;
	uint64_t inline_cap =
	    KEEL_MIN(lim->max_inline_len, p->limits.max_inline_len);
	size_t pos = 0;
	int rc = 0;
	for (;;) {
		const uint8_t *line;
		size_t n;
		switch (p->state) {
		case ST_IDLE:
			if (pos == len)
				goto need_more;
			KEEL_ASSERT(p->nargs == 0);
			KEEL_ASSERT(p->arena_len == 0);
			p->state = buf[pos] == '*' ? ST_MB_COUNT : ST_INLINE;
			p->is_inline = p->state == ST_INLINE;
			break;
		case ST_MB_COUNT:
			rc = get_line(p, buf, len, &pos, inline_cap,
				      ERR_MB_LINE, &line, &n);
			if (rc == 0)
				goto need_more;
			if (rc < 0 || rc > 1)
				return rc;
			rc = on_mb_count(p, line, n);
			if (rc)
				return rc;
			break;
		case ST_INLINE:
			rc = get_line(p, buf, len, &pos, inline_cap,
				      ERR_INLINE_LINE, &line, &n);
			if (rc == 0)
				goto need_more;
			if (rc > 1)
				return rc;
			if (n > 0 && line[n - 1] == '\r')
				n--;
			rc = split_inline(p, line, n,
					  KEEL_MIN(lim->max_array_len,
						   p->limits.max_array_len));
			if (rc)
				return rc;
			if (p->nargs == 0) {
				p->state = ST_IDLE; /* blank line: skipped */
				p->arena_len = 0;
				p->is_inline = false;
				break;
			}
			finish(p, out);
			*consumed = pos;
			return RESP_OK;
		case ST_BULK_HDR: {
			if (pos == len)
				goto need_more;
			if (p->line_len == 0 && buf[pos] != '$')
				return fail_expected_dollar(p, buf[pos]);
			rc = get_line(p, buf, len, &pos, inline_cap,
				      ERR_BULK_LINE, &line, &n);
			if (rc == 0)
				goto need_more;
			if (rc > 1)
				return rc;
			int64_t ll;
			rc = on_bulk_len(p, line, n, &ll);
			if (rc)
				return rc;
			rc = ensure_slot(p);
			if (rc)
				return rc;
			size_t blen = (size_t)ll;
			if (len - pos >= 2 && len - pos - 2 >= blen) {
				/* Whole payload present: borrow it. */
				if (buf[pos + blen] != '\r' ||
				    buf[pos + blen + 1] != '\n')
					return fail(p, RESP_ERR_PROTOCOL,
						    ERR_BULK_CRLF);
				p->argv[p->nargs] = buf + pos;
				p->argv_len[p->nargs] = blen;
				p->arg_off[p->nargs] = SIZE_MAX;
				p->nargs++;
				pos += blen + 2;
				if (p->nargs == p->want_args) {
					finish(p, out);
					*consumed = pos;
					return RESP_OK;
				}
				break;
			}
			/* Partial payload: earlier borrowed arguments move
			 * to the arena first, so this one is contiguous. */
			rc = own_borrowed(p);
			if (rc)
				return rc;
			p->bulk_off = p->arena_len;
			p->bulk_len = blen;
			p->bulk_got = 0;
			p->state = ST_BULK_DATA;
			break;
		}
		case ST_BULK_DATA: {
			uint64_t left = p->bulk_len - p->bulk_got;
			size_t take = len - pos;
			if ((uint64_t)take > left)
				take = (size_t)left;
			rc = arena_append(p, buf + pos, take,
					  p->bulk_off + (size_t)p->bulk_len);
			if (rc)
				return rc;
			pos += take;
			p->bulk_got += take;
			if (p->bulk_got < p->bulk_len)
				goto need_more;
			p->state = ST_BULK_CR;
			break;
		}
		case ST_BULK_CR:
		case ST_BULK_LF:
			if (pos == len)
				goto need_more;
			if (buf[pos] != (p->state == ST_BULK_CR ? '\r' : '\n'))
				return fail(p, RESP_ERR_PROTOCOL,
					    ERR_BULK_CRLF);
			pos++;
			if (p->state == ST_BULK_CR) {
				p->state = ST_BULK_LF;
				break;
			}
			p->argv_len[p->nargs] = (size_t)p->bulk_len;
			p->arg_off[p->nargs] = p->bulk_off;
			p->nargs++;
			if (p->nargs == p->want_args) {
				finish(p, out);
				*consumed = pos;
				return RESP_OK;
			}
			p->state = ST_BULK_HDR;
			break;
		default:
			KEEL_ASSERT(!"bad parser state");
		}
	}
need_more:
	KEEL_ASSERT(pos == len);
	rc = own_borrowed(p);
	if (rc)
		return rc;
	*consumed = len;
	return RESP_NEED_MORE;
}
