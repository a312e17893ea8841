/*
 * cmd.c -- the command entry codec (what a write looks like in the Raft
 * log), the leader's relative-to-absolute TTL rewrite, and the strict
 * number parsing and formatting every command shares.
 *
 * The decoder is the boundary where arbitrary bytes from the log (or a
 * fuzzer) enter kv, so every length is capped and checked against the
 * remaining buffer before it is used.
 */
#include <string.h>

#include "kv/kv_internal.h"

/* ---- numbers --------------------------------------------------------------- */

/* Redis's string2ll rules: at most 20 characters, optional '-', no '+', no
 * spaces, no leading zeros ("0" itself is fine, "-0" is not). */
bool kv_parse_i64(const uint8_t *p, size_t len, int64_t *out)
{
	if (len == 0 || len > 20)
		return false;
	if (len == 1 && p[0] == '0') {
		*out = 0;
		return true;
	}
	bool neg = false;
	size_t i = 0;
	if (p[0] == '-') {
		neg = true;
		i = 1;
		if (len == 1)
			return false;
	}
	if (p[i] < '1' || p[i] > '9')
		return false;
	uint64_t v = 0;
	for (; i < len; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		uint64_t d = (uint64_t)(p[i] - '0');
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

/* Plain decimal digits only (cursors, revisions). */
bool kv_parse_u64(const uint8_t *p, size_t len, uint64_t *out)
{
	return keel_parse_u64_bytes(p, len, 0, UINT64_MAX, out);
}

size_t kv_fmt_u64(uint64_t v, char *buf)
{
	char tmp[21];
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (size_t i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	buf[n] = '\0';
	return n;
}

size_t kv_fmt_i64(int64_t v, char *buf)
{
	if (v >= 0)
		return kv_fmt_u64((uint64_t)v, buf);
	buf[0] = '-';
	/* -(v + 1) + 1 avoids negating INT64_MIN. */
	return 1 + kv_fmt_u64((uint64_t)(-(v + 1)) + 1, buf + 1);
}

bool kv_bytes_ieq(const uint8_t *p, size_t len, const char *word)
{
	size_t wl = strlen(word);
	if (wl != len)
		return false;
	for (size_t i = 0; i < len; i++) {
		uint8_t a = p[i], b = (uint8_t)word[i];
		if (a >= 'A' && a <= 'Z')
			a = (uint8_t)(a - 'A' + 'a');
		if (b >= 'A' && b <= 'Z')
			b = (uint8_t)(b - 'A' + 'a');
		if (a != b)
			return false;
	}
	return true;
}

/* ---- entry codec ------------------------------------------------------------ */

size_t kv_cmd_encoded_size(int argc, const size_t *lens)
{
	if (argc < 1 || (uint64_t)argc > KV_MAX_ARGC)
		return 0;
	uint64_t total = KV_CMD_HEADER_BYTES;
	for (int i = 0; i < argc; i++) {
		if (lens[i] > KV_MAX_ARG_BYTES)
			return 0;
		total += 4 + (uint64_t)lens[i];
		if (total > KV_MAX_CMD_BYTES)
			return 0;
	}
	return (size_t)total;
}

int kv_cmd_encode(uint64_t now_ms, int argc, const uint8_t *const *argv,
		  const size_t *lens, uint8_t *buf, size_t cap, size_t *out_len)
{
	if (argc < 1)
		return KEEL_ERR_INVAL;
	size_t need = kv_cmd_encoded_size(argc, lens);
	if (need == 0 || need > cap)
		return KEEL_ERR_TOO_BIG;
	uint8_t *p = buf;
	*p++ = KV_CMD_VERSION;
	keel_put_u64(p, now_ms);
	p += 8;
	keel_put_u32(p, (uint32_t)argc);
	p += 4;
	for (int i = 0; i < argc; i++) {
		keel_put_u32(p, (uint32_t)lens[i]);
		p += 4;
		if (lens[i])
			memcpy(p, argv[i], lens[i]);
		p += lens[i];
	}
	KEEL_ASSERT((size_t)(p - buf) == need);
	*out_len = need;
	return 0;
}

int kv_cmd_decode(const uint8_t *buf, size_t len, uint64_t *now_ms,
		  uint32_t *argc, const uint8_t **argv, size_t *lens,
		  size_t max_args)
{
	if (len < 1)
		return KEEL_ERR_TRUNCATED;
	if (buf[0] != KV_CMD_VERSION)
		return KEEL_ERR_VERSION;
	if (len < KV_CMD_HEADER_BYTES)
		return KEEL_ERR_TRUNCATED;
	if (len > KV_MAX_CMD_BYTES)
		return KEEL_ERR_TOO_BIG;
	uint64_t now = keel_get_u64(buf + 1);
	uint32_t n = keel_get_u32(buf + 9);
	if (n == 0)
		return KEEL_ERR_MALFORMED;
	if (n > KV_MAX_ARGC)
		return KEEL_ERR_TOO_BIG;
	/* Validate the whole entry before handing out anything. */
	size_t off = KV_CMD_HEADER_BYTES;
	for (uint32_t i = 0; i < n; i++) {
		if (len - off < 4)
			return KEEL_ERR_TRUNCATED;
		uint32_t l = keel_get_u32(buf + off);
		off += 4;
		if (l > KV_MAX_ARG_BYTES)
			return KEEL_ERR_TOO_BIG;
		if (len - off < l)
			return KEEL_ERR_TRUNCATED;
		off += l;
	}
	if (off != len)
		return KEEL_ERR_MALFORMED;
	*now_ms = now;
	*argc = n;
	if (n > max_args)
		return KEEL_ERR_NOSPACE;
	off = KV_CMD_HEADER_BYTES;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t l = keel_get_u32(buf + off);
		off += 4;
		argv[i] = buf + off;
		lens[i] = l;
		off += l;
	}
	return 0;
}

/* ---- relative TTL rewrite --------------------------------------------------- */

/* now + rel (in unit ms) as a positive absolute time, Redis's validity rules
 * for SET/GETEX/SETEX: rel > 0, no overflow. */
static bool kv_abs_positive(const uint8_t *p, size_t len, int64_t unit,
			    int64_t now, int64_t *out)
{
	int64_t v;
	if (!kv_parse_i64(p, len, &v) || v <= 0 || v > INT64_MAX / unit)
		return false;
	v *= unit;
	if (v > INT64_MAX - now)
		return false;
	*out = v + now;
	return true;
}

struct kv_rw {
	const uint8_t **argv;
	size_t *lens;
	char (*num)[24]; /* storage for rewritten numbers, one per slot */
	int argc;
};

static void kv_rw_set_num(struct kv_rw *w, int slot, int64_t v)
{
	size_t n = kv_fmt_i64(v, w->num[slot]);
	w->argv[slot] = (const uint8_t *)w->num[slot];
	w->lens[slot] = n;
}

static void kv_rw_set_word(struct kv_rw *w, int slot, const char *word)
{
	w->argv[slot] = (const uint8_t *)word;
	w->lens[slot] = strlen(word);
}

/* Rewrites SET/GETEX options from argv position start on. Only when the
 * option list is valid as a whole (Redis's own parser says so) and its
 * effective EX/PX value converts: then every expiry pair is dropped and one
 * "PXAT at" goes last. Rewriting pair by pair would change replies: "EX 1
 * PX 2" is a syntax error but "PXAT a PXAT b" is not. */
static void kv_rw_options(struct kv_rw *w, int start, bool is_set, int64_t now)
{
	unsigned flags;
	int exp_idx;
	if (!kv_parse_ext_options(w->argv, w->lens, w->argc, start, is_set,
				  &flags, &exp_idx))
		return;
	if (!(flags & (KV_SETF_EX | KV_SETF_PX)))
		return;
	int64_t at;
	if (!kv_abs_positive(w->argv[exp_idx], w->lens[exp_idx],
			     (flags & KV_SETF_EX) ? 1000 : 1, now, &at))
		return;
	int o = start;
	for (int i = start; i < w->argc; i++) {
		const uint8_t *a = w->argv[i];
		size_t al = w->lens[i];
		if (kv_bytes_ieq(a, al, "ex") || kv_bytes_ieq(a, al, "px")) {
			i++; /* valid list: the value follows */
			continue;
		}
		w->argv[o] = a;
		w->lens[o] = al;
		o++;
	}
	KEEL_ASSERT(o + 2 <= w->argc);
	kv_rw_set_word(w, o, "PXAT");
	kv_rw_set_num(w, o + 1, at);
	w->argc = o + 2;
}

/* Rewrites one command in[0..inc) into out (room for inc + 1 arguments;
 * num has a slot per out position). Returns the new argc. */
static int kv_rw_one(const uint8_t *const *in, const size_t *inl, int inc,
		     int64_t now, const uint8_t **out, size_t *outl,
		     char (*num)[24])
{
	for (int i = 0; i < inc; i++) {
		out[i] = in[i];
		outl[i] = inl[i];
	}
	struct kv_rw w = {out, outl, num, inc};
	const uint8_t *name = in[0];
	size_t nl = inl[0];
	if (kv_bytes_ieq(name, nl, "set") && inc >= 3) {
		kv_rw_options(&w, 3, true, now);
	} else if (kv_bytes_ieq(name, nl, "getex") && inc >= 2) {
		kv_rw_options(&w, 2, false, now);
	} else if ((kv_bytes_ieq(name, nl, "setex") ||
		    kv_bytes_ieq(name, nl, "psetex")) &&
		   inc == 4) {
		int64_t at;
		int64_t unit = (nl == 5) ? 1000 : 1;
		if (kv_abs_positive(in[2], inl[2], unit, now, &at)) {
			/* SETEX k s v -> SET k v PXAT at: argc 4 -> 5. */
			kv_rw_set_word(&w, 0, "SET");
			out[2] = in[3];
			outl[2] = inl[3];
			kv_rw_set_word(&w, 3, "PXAT");
			kv_rw_set_num(&w, 4, at);
			w.argc = 5;
		}
	} else if ((kv_bytes_ieq(name, nl, "expire") ||
		    kv_bytes_ieq(name, nl, "pexpire")) &&
		   inc >= 3) {
		/* EXPIRE accepts negative times (delete now), so only overflow
		 * keeps the original form (and its error). */
		int64_t v;
		int64_t unit = (nl == 6) ? 1000 : 1;
		if (kv_parse_i64(in[2], inl[2], &v) &&
		    v <= INT64_MAX / unit && v >= INT64_MIN / unit &&
		    v * unit <= INT64_MAX - now) {
			kv_rw_set_word(&w, 0, "PEXPIREAT");
			kv_rw_set_num(&w, 2, v * unit + now);
		}
	}
	return w.argc;
}

/* Copies in[from..to) to out at *o. */
static void kv_rw_copy(const uint8_t *const *in, const size_t *inl, int from,
		       int to, const uint8_t **out, size_t *outl, int *o)
{
	for (int i = from; i < to; i++) {
		out[*o] = in[i];
		outl[*o] = inl[i];
		(*o)++;
	}
}

/* Rewrites the n sub-commands at in[pos..] into out at *o, each with its
 * new count. Returns the index after them in in. */
static int kv_rw_list(const uint8_t *const *in, const size_t *inl, int pos,
		      int n, int64_t now, const uint8_t **out, size_t *outl,
		      char (*num)[24], int *o)
{
	for (int i = 0; i < n; i++) {
		uint64_t k = 0;
		bool ok = kv_parse_u64(in[pos], inl[pos], &k);
		KEEL_ASSERT(ok && k >= 1);
		int cnt_at = (*o)++;
		int nc = kv_rw_one(in + pos + 1, inl + pos + 1, (int)k, now,
				   out + *o, outl + *o, num + *o);
		struct kv_rw w = {out, outl, num, 0};
		kv_rw_set_num(&w, cnt_at, nc);
		*o += nc;
		pos += 1 + (int)k;
	}
	return pos;
}

/* KEEL.EXEC / KEEL.TXN: every sub-command rewritten as if proposed alone
 * (a sub-command's argc may grow by one, SETEX -> SET .. PXAT). A layout
 * that does not parse is left as it is. Returns the new argc. */
static int kv_rw_txn(const uint8_t *const *in, const size_t *inl, int inc,
		     int64_t now, const uint8_t **out, size_t *outl,
		     char (*num)[24])
{
	struct kv_txn_layout l;
	const char *err;
	int o = 0;
	if (!kv_txn_parse_layout(inc, in, inl, &l, &err)) {
		kv_rw_copy(in, inl, 0, inc, out, outl, &o);
		return o;
	}
	kv_rw_copy(in, inl, 0, l.then_pos, out, outl, &o);
	int i = kv_rw_list(in, inl, l.then_pos, l.nthen, now, out, outl, num,
			   &o);
	kv_rw_copy(in, inl, i, l.else_pos, out, outl, &o);
	i = kv_rw_list(in, inl, l.else_pos, l.nelse, now, out, outl, num, &o);
	kv_rw_copy(in, inl, i, inc, out, outl, &o);
	return o;
}

int kv_rewrite_relative(const struct keel_alloc *a, uint64_t now_ms, int argc,
			const uint8_t *const *argv, const size_t *lens,
			uint8_t **out, size_t *out_len)
{
	if (argc < 1)
		return KEEL_ERR_INVAL;
	if ((uint64_t)argc > KV_MAX_ARGC)
		return KEEL_ERR_TOO_BIG;
	/* Room: every command (or sub-command) may grow by one argument, and
	 * a transaction has at most argc / 2 sub-commands (each a count and
	 * at least a name). */
	const struct kv_command *kc = kv_command_lookup(argv[0], lens[0]);
	bool txn = kc && (kc->flags & KV_CMD_TXN);
	size_t n = (size_t)argc + (txn ? (size_t)argc / 2 : 0) + 1;
	const uint8_t **wargv = a->malloc(a->ctx, n * sizeof(*wargv));
	size_t *wlens = a->malloc(a->ctx, n * sizeof(*wlens));
	char(*num)[24] = a->malloc(a->ctx, n * sizeof(*num));
	uint8_t *buf = NULL;
	int rc = KEEL_ERR_NOMEM;
	if (!wargv || !wlens || !num)
		goto done;
	int64_t now = now_ms > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)now_ms;
	int wargc = txn ? kv_rw_txn(argv, lens, argc, now, wargv, wlens, num)
			    : kv_rw_one(argv, lens, argc, now, wargv, wlens, num);
	size_t sz = kv_cmd_encoded_size(wargc, wlens);
	rc = KEEL_ERR_TOO_BIG;
	if (!sz)
		goto done;
	rc = KEEL_ERR_NOMEM;
	buf = a->malloc(a->ctx, sz);
	if (!buf)
		goto done;
	rc = kv_cmd_encode(now_ms, wargc, wargv, wlens, buf, sz, out_len);
done:
	if (rc == 0) {
		*out = buf;
	} else {
		a->free(a->ctx, buf);
	}
	a->free(a->ctx, num);
	a->free(a->ctx, wlens);
	a->free(a->ctx, wargv);
	return rc;
}
