/*
 * ops.c -- the commands: Redis string-keyspace semantics, option parsing,
 * and error texts as Redis 7 gives them, plus keel's KEEL.GET and the
 * leader's KEEL.EXPIRE-DELETE.
 *
 * Each command runs against c->now_ms: the entry's timestamp in kv_apply,
 * the caller's clock in kv_read. A key with expire_at_ms <= now is absent
 * for every command. Read commands never mutate (kv_read shares them).
 * Arity has been checked by the dispatcher (commands.c) before a command
 * runs, so argv[0..arity) exist.
 */
#include <string.h>

#include "kv/kv_internal.h"

#define ARG(i) (c->argv[(i)])
#define LEN(i) (c->lens[(i)])

static int64_t kv_now_i64(const struct kv_ctx *c)
{
	return c->now_ms > (uint64_t)INT64_MAX ? INT64_MAX
					       : (int64_t)c->now_ms;
}

static struct kv_entry *kv_live(struct kv_ctx *c, int i)
{
	return kv_lookup_live(c->kv, ARG(i), LEN(i), c->now_ms);
}

static void kv_reply_entry_or_null(struct kv_ctx *c, const struct kv_entry *e)
{
	if (e)
		kv_reply_bulk_entry(c, e);
	else
		c->r->null(c->rc);
}

static void kv_reply_invalid_expire(struct kv_ctx *c)
{
	kv_reply_errf(c, "invalid expire time in '",
		      (const uint8_t *)c->cmd->name, strlen(c->cmd->name),
		      "' command");
}

/* ---- SET family ------------------------------------------------------------ */

bool kv_parse_ext_options(const uint8_t *const *argv, const size_t *lens,
			  int argc, int start, bool is_set, unsigned *flags,
			  int *exp_idx)
{
	unsigned f = 0;
	int ei = -1;
	for (int j = start; j < argc; j++) {
		const uint8_t *o = argv[j];
		size_t ol = lens[j];
		bool next = j + 1 < argc;
		/* The same precedence as Redis 7's parser: an option that
		 * conflicts with one already seen falls through to "syntax
		 * error"; repeating a compatible one is allowed (last wins). */
		if (kv_bytes_ieq(o, ol, "nx") && !(f & KV_SETF_XX) && is_set) {
			f |= KV_SETF_NX;
		} else if (kv_bytes_ieq(o, ol, "xx") && !(f & KV_SETF_NX) &&
			   is_set) {
			f |= KV_SETF_XX;
		} else if (kv_bytes_ieq(o, ol, "get") && is_set) {
			f |= KV_SETF_GET;
		} else if (kv_bytes_ieq(o, ol, "keepttl") &&
			   !(f & (KV_SETF_PERSIST | KV_SETF_ANY_EXP)) &&
			   is_set) {
			f |= KV_SETF_KEEPTTL;
		} else if (kv_bytes_ieq(o, ol, "persist") && !is_set &&
			   !(f & (KV_SETF_ANY_EXP | KV_SETF_KEEPTTL))) {
			f |= KV_SETF_PERSIST;
		} else if (kv_bytes_ieq(o, ol, "ex") && next &&
			   !(f & (KV_SETF_KEEPTTL | KV_SETF_PERSIST |
				  KV_SETF_EXAT | KV_SETF_PX | KV_SETF_PXAT))) {
			f |= KV_SETF_EX;
			ei = ++j;
		} else if (kv_bytes_ieq(o, ol, "px") && next &&
			   !(f & (KV_SETF_KEEPTTL | KV_SETF_PERSIST |
				  KV_SETF_EX | KV_SETF_EXAT | KV_SETF_PXAT))) {
			f |= KV_SETF_PX;
			ei = ++j;
		} else if (kv_bytes_ieq(o, ol, "exat") && next &&
			   !(f & (KV_SETF_KEEPTTL | KV_SETF_PERSIST |
				  KV_SETF_EX | KV_SETF_PX | KV_SETF_PXAT))) {
			f |= KV_SETF_EXAT;
			ei = ++j;
		} else if (kv_bytes_ieq(o, ol, "pxat") && next &&
			   !(f & (KV_SETF_KEEPTTL | KV_SETF_PERSIST |
				  KV_SETF_EX | KV_SETF_EXAT | KV_SETF_PX))) {
			f |= KV_SETF_PXAT;
			ei = ++j;
		} else {
			return false;
		}
	}
	*flags = f;
	*exp_idx = ei;
	return true;
}

/* The absolute expiry (ms) of a SET/GETEX/SETEX option value, Redis's
 * getExpireMillisecondsOrReply. Returns false after replying an error. */
static bool kv_expire_ms(struct kv_ctx *c, unsigned flags, int idx,
			 uint64_t *at)
{
	int64_t ms;
	if (!kv_parse_i64(ARG(idx), LEN(idx), &ms)) {
		kv_reply_err(c, KV_ERR_NOT_INT);
		return false;
	}
	bool secs = (flags & (KV_SETF_EX | KV_SETF_EXAT)) != 0;
	if (ms <= 0 || (secs && ms > INT64_MAX / 1000)) {
		kv_reply_invalid_expire(c);
		return false;
	}
	if (secs)
		ms *= 1000;
	if (flags & (KV_SETF_EX | KV_SETF_PX)) {
		int64_t now = kv_now_i64(c);
		if (ms > INT64_MAX - now) {
			kv_reply_invalid_expire(c);
			return false;
		}
		ms += now;
	}
	*at = (uint64_t)ms;
	return true;
}

static int kv_set_generic(struct kv_ctx *c, unsigned flags, int key, int val,
			  uint64_t at)
{
	struct kv_entry *e = kv_live(c, key);
	bool get = (flags & KV_SETF_GET) != 0;
	if (get)
		kv_reply_entry_or_null(c, e);
	if (((flags & KV_SETF_NX) && e) || ((flags & KV_SETF_XX) && !e)) {
		if (!get)
			c->r->null(c->rc);
		return 0;
	}
	if (at && at <= c->now_ms) {
		/* Already expired: the write's net effect is "absent". */
		if (e)
			kv_delete_entry(c->kv, e);
	} else {
		int rc = kv_set_value(c->kv, ARG(key), LEN(key), ARG(val),
				      LEN(val), (flags & KV_SETF_KEEPTTL) != 0,
				      at, c->now_ms);
		if (rc)
			return rc;
	}
	if (!get)
		kv_reply_ok(c);
	return 0;
}

static int cmd_set(struct kv_ctx *c)
{
	unsigned flags;
	int ei;
	uint64_t at = 0;
	if (!kv_parse_ext_options(c->argv, c->lens, c->argc, 3, true, &flags,
				  &ei)) {
		kv_reply_err(c, KV_ERR_SYNTAX);
		return 0;
	}
	if ((flags & KV_SETF_ANY_EXP) && !kv_expire_ms(c, flags, ei, &at))
		return 0;
	return kv_set_generic(c, flags, 1, 2, at);
}

static int cmd_setnx(struct kv_ctx *c)
{
	if (kv_live(c, 1)) {
		c->r->integer(c->rc, 0);
		return 0;
	}
	int rc = kv_set_value(c->kv, ARG(1), LEN(1), ARG(2), LEN(2), false, 0,
			      c->now_ms);
	if (rc)
		return rc;
	c->r->integer(c->rc, 1);
	return 0;
}

static int kv_setex_generic(struct kv_ctx *c, unsigned unit_flag)
{
	uint64_t at;
	if (!kv_expire_ms(c, unit_flag, 2, &at))
		return 0;
	return kv_set_generic(c, 0, 1, 3, at);
}

static int cmd_setex(struct kv_ctx *c)
{
	return kv_setex_generic(c, KV_SETF_EX);
}

static int cmd_psetex(struct kv_ctx *c)
{
	return kv_setex_generic(c, KV_SETF_PX);
}

static int cmd_getset(struct kv_ctx *c)
{
	kv_reply_entry_or_null(c, kv_live(c, 1));
	return kv_set_value(c->kv, ARG(1), LEN(1), ARG(2), LEN(2), false, 0,
			    c->now_ms);
}

static int cmd_getdel(struct kv_ctx *c)
{
	struct kv_entry *e = kv_live(c, 1);
	kv_reply_entry_or_null(c, e);
	if (e)
		kv_delete_entry(c->kv, e);
	return 0;
}

static int cmd_getex(struct kv_ctx *c)
{
	unsigned flags;
	int ei;
	uint64_t at = 0;
	if (!kv_parse_ext_options(c->argv, c->lens, c->argc, 2, false, &flags,
				  &ei)) {
		kv_reply_err(c, KV_ERR_SYNTAX);
		return 0;
	}
	if ((flags & KV_SETF_ANY_EXP) && !kv_expire_ms(c, flags, ei, &at))
		return 0;
	struct kv_entry *e = kv_live(c, 1);
	/* Reply with the value before the expiry change may delete it. */
	kv_reply_entry_or_null(c, e);
	if (!e)
		return 0;
	if (at && at <= c->now_ms) {
		kv_delete_entry(c->kv, e);
	} else if (at) {
		return kv_change_expire(c->kv, e, at);
	} else if ((flags & KV_SETF_PERSIST) && e->meta.expire_at_ms) {
		return kv_change_expire(c->kv, e, 0);
	}
	return 0;
}

static int cmd_get(struct kv_ctx *c)
{
	kv_reply_entry_or_null(c, kv_live(c, 1));
	return 0;
}

static int cmd_mget(struct kv_ctx *c)
{
	c->r->array(c->rc, (size_t)(c->argc - 1));
	for (int i = 1; i < c->argc; i++)
		kv_reply_entry_or_null(c, kv_live(c, i));
	return 0;
}

static int kv_arity_error(struct kv_ctx *c)
{
	kv_reply_errf(c, "wrong number of arguments for '",
		      (const uint8_t *)c->cmd->name, strlen(c->cmd->name),
		      "' command");
	return 0;
}

static int kv_mset_all(struct kv_ctx *c)
{
	for (int i = 1; i + 1 < c->argc; i += 2) {
		int rc = kv_set_value(c->kv, ARG(i), LEN(i), ARG(i + 1),
				      LEN(i + 1), false, 0, c->now_ms);
		if (rc)
			return rc;
	}
	return 0;
}

static int cmd_mset(struct kv_ctx *c)
{
	if (c->argc % 2 == 0)
		return kv_arity_error(c);
	int rc = kv_mset_all(c);
	if (rc)
		return rc;
	kv_reply_ok(c);
	return 0;
}

static int cmd_msetnx(struct kv_ctx *c)
{
	if (c->argc % 2 == 0)
		return kv_arity_error(c);
	for (int i = 1; i < c->argc; i += 2) {
		if (kv_live(c, i)) {
			c->r->integer(c->rc, 0);
			return 0;
		}
	}
	int rc = kv_mset_all(c);
	if (rc)
		return rc;
	c->r->integer(c->rc, 1);
	return 0;
}

static int cmd_del(struct kv_ctx *c)
{
	int64_t n = 0;
	for (int i = 1; i < c->argc; i++) {
		struct kv_entry *e = kv_live(c, i);
		if (e) {
			kv_delete_entry(c->kv, e);
			n++;
		}
	}
	c->r->integer(c->rc, n);
	return 0;
}

static int cmd_exists(struct kv_ctx *c)
{
	int64_t n = 0;
	for (int i = 1; i < c->argc; i++)
		n += kv_live(c, i) != NULL;
	c->r->integer(c->rc, n);
	return 0;
}

/* ---- counters ---------------------------------------------------------------- */

static int kv_incr_generic(struct kv_ctx *c, int64_t incr)
{
	struct kv_entry *e = kv_live(c, 1);
	int64_t cur = 0;
	if (e && !kv_parse_i64(e->val, e->val_len, &cur)) {
		kv_reply_err(c, KV_ERR_NOT_INT);
		return 0;
	}
	if ((incr < 0 && cur < 0 && incr < INT64_MIN - cur) ||
	    (incr > 0 && cur > 0 && incr > INT64_MAX - cur)) {
		kv_reply_err(c, "ERR increment or decrement would overflow");
		return 0;
	}
	cur += incr;
	char buf[24];
	size_t n = kv_fmt_i64(cur, buf);
	/* INCR keeps the key's TTL, as Redis does. */
	int rc = kv_set_value(c->kv, ARG(1), LEN(1), (const uint8_t *)buf, n,
			      true, 0, c->now_ms);
	if (rc)
		return rc;
	c->r->integer(c->rc, cur);
	return 0;
}

static int cmd_incr(struct kv_ctx *c)
{
	return kv_incr_generic(c, 1);
}

static int cmd_decr(struct kv_ctx *c)
{
	return kv_incr_generic(c, -1);
}

static int cmd_incrby(struct kv_ctx *c)
{
	int64_t incr;
	if (!kv_parse_i64(ARG(2), LEN(2), &incr)) {
		kv_reply_err(c, KV_ERR_NOT_INT);
		return 0;
	}
	return kv_incr_generic(c, incr);
}

static int cmd_decrby(struct kv_ctx *c)
{
	int64_t incr;
	if (!kv_parse_i64(ARG(2), LEN(2), &incr)) {
		kv_reply_err(c, KV_ERR_NOT_INT);
		return 0;
	}
	if (incr == INT64_MIN) {
		kv_reply_err(c, "ERR decrement would overflow");
		return 0;
	}
	return kv_incr_generic(c, -incr);
}

static int cmd_append(struct kv_ctx *c)
{
	struct kv_entry *e = kv_live(c, 1);
	if (!e) {
		int rc = kv_set_value(c->kv, ARG(1), LEN(1), ARG(2), LEN(2),
				      false, 0, c->now_ms);
		if (rc)
			return rc;
		c->r->integer(c->rc, (int64_t)LEN(2));
		return 0;
	}
	if (e->val_len + LEN(2) > KV_MAX_VALUE_BYTES) {
		kv_reply_err(c, "ERR string exceeds maximum allowed size "
				"(proto-max-bulk-len)");
		return 0;
	}
	int rc = kv_append_value(c->kv, e, ARG(2), LEN(2));
	if (rc)
		return rc;
	c->r->integer(c->rc, (int64_t)e->val_len);
	return 0;
}

static int cmd_strlen(struct kv_ctx *c)
{
	struct kv_entry *e = kv_live(c, 1);
	c->r->integer(c->rc, e ? (int64_t)e->val_len : 0);
	return 0;
}

static int cmd_type(struct kv_ctx *c)
{
	c->r->status(c->rc, kv_live(c, 1) ? "string" : "none");
	return 0;
}

/* ---- expiry ------------------------------------------------------------------ */

enum {
	KV_EXP_NX = 1,
	KV_EXP_XX = 2,
	KV_EXP_GT = 4,
	KV_EXP_LT = 8,
};

/* Redis's expireGenericCommand: basetime is now for EXPIRE/PEXPIRE and 0
 * for the *AT forms; unit is 1000 for seconds. */
static int kv_expire_generic(struct kv_ctx *c, int64_t base, int64_t unit)
{
	unsigned f = 0;
	for (int j = 3; j < c->argc; j++) {
		if (kv_bytes_ieq(ARG(j), LEN(j), "nx")) {
			f |= KV_EXP_NX;
		} else if (kv_bytes_ieq(ARG(j), LEN(j), "xx")) {
			f |= KV_EXP_XX;
		} else if (kv_bytes_ieq(ARG(j), LEN(j), "gt")) {
			f |= KV_EXP_GT;
		} else if (kv_bytes_ieq(ARG(j), LEN(j), "lt")) {
			f |= KV_EXP_LT;
		} else {
			kv_reply_errf(c, "Unsupported option ", ARG(j), LEN(j),
				      "");
			return 0;
		}
	}
	if ((f & KV_EXP_NX) && (f & (KV_EXP_XX | KV_EXP_GT | KV_EXP_LT))) {
		kv_reply_err(c, "ERR NX and XX, GT or LT options at the same "
				"time are not compatible");
		return 0;
	}
	if ((f & KV_EXP_GT) && (f & KV_EXP_LT)) {
		kv_reply_err(c, "ERR GT and LT options at the same time are "
				"not compatible");
		return 0;
	}
	int64_t when;
	if (!kv_parse_i64(ARG(2), LEN(2), &when)) {
		kv_reply_err(c, KV_ERR_NOT_INT);
		return 0;
	}
	if (unit != 1) {
		if (when > INT64_MAX / unit || when < INT64_MIN / unit) {
			kv_reply_invalid_expire(c);
			return 0;
		}
		when *= unit;
	}
	if (when > INT64_MAX - base) {
		kv_reply_invalid_expire(c);
		return 0;
	}
	when += base;
	struct kv_entry *e = kv_live(c, 1);
	if (!e) {
		c->r->integer(c->rc, 0);
		return 0;
	}
	int64_t cur = e->meta.expire_at_ms ? (int64_t)e->meta.expire_at_ms : -1;
	if (((f & KV_EXP_NX) && cur != -1) || ((f & KV_EXP_XX) && cur == -1) ||
	    ((f & KV_EXP_GT) && (when <= cur || cur == -1)) ||
	    ((f & KV_EXP_LT) && cur != -1 && when >= cur)) {
		c->r->integer(c->rc, 0);
		return 0;
	}
	if (when <= kv_now_i64(c)) {
		kv_delete_entry(c->kv, e);
	} else {
		int rc = kv_change_expire(c->kv, e, (uint64_t)when);
		if (rc)
			return rc;
	}
	c->r->integer(c->rc, 1);
	return 0;
}

static int cmd_expire(struct kv_ctx *c)
{
	return kv_expire_generic(c, kv_now_i64(c), 1000);
}

static int cmd_pexpire(struct kv_ctx *c)
{
	return kv_expire_generic(c, kv_now_i64(c), 1);
}

static int cmd_expireat(struct kv_ctx *c)
{
	return kv_expire_generic(c, 0, 1000);
}

static int cmd_pexpireat(struct kv_ctx *c)
{
	return kv_expire_generic(c, 0, 1);
}

static int cmd_persist(struct kv_ctx *c)
{
	struct kv_entry *e = kv_live(c, 1);
	if (!e || !e->meta.expire_at_ms) {
		c->r->integer(c->rc, 0);
		return 0;
	}
	int rc = kv_change_expire(c->kv, e, 0);
	if (rc)
		return rc;
	c->r->integer(c->rc, 1);
	return 0;
}

static int kv_ttl_generic(struct kv_ctx *c, bool ms)
{
	struct kv_entry *e = kv_live(c, 1);
	if (!e) {
		c->r->integer(c->rc, -2);
		return 0;
	}
	if (!e->meta.expire_at_ms) {
		c->r->integer(c->rc, -1);
		return 0;
	}
	/* Live means expire_at_ms > now, so ttl >= 1. */
	uint64_t ttl = e->meta.expire_at_ms - c->now_ms;
	if (!ms)
		ttl = (ttl + 500) / 1000;
	c->r->integer(c->rc, ttl > (uint64_t)INT64_MAX ? INT64_MAX
						      : (int64_t)ttl);
	return 0;
}

static int cmd_ttl(struct kv_ctx *c)
{
	return kv_ttl_generic(c, false);
}

static int cmd_pttl(struct kv_ctx *c)
{
	return kv_ttl_generic(c, true);
}

static int cmd_expire_delete(struct kv_ctx *c)
{
	uint64_t rev;
	if (!kv_parse_u64(ARG(2), LEN(2), &rev)) {
		kv_reply_err(c, KV_ERR_NOT_INT);
		return 0;
	}
	/* The leader decided from an older state; delete only if the key it
	 * saw is still there, unchanged, and still expired at this entry's
	 * time. A key rewritten (or given a new TTL) since then survives. */
	struct kv_entry *e = kv_lookup(c->kv, ARG(1), LEN(1));
	if (e && e->meta.mod_revision == rev && kv_entry_expired(e, c->now_ms)) {
		kv_delete_entry(c->kv, e);
		c->r->integer(c->rc, 1);
	} else {
		c->r->integer(c->rc, 0);
	}
	return 0;
}

/* ---- keyspace ---------------------------------------------------------------- */

static int cmd_flush(struct kv_ctx *c)
{
	if (c->argc > 2 || (c->argc == 2 && !kv_bytes_ieq(ARG(1), LEN(1), "sync") &&
			    !kv_bytes_ieq(ARG(1), LEN(1), "async"))) {
		kv_reply_err(c, KV_ERR_SYNTAX);
		return 0;
	}
	kv_clear(c->kv);
	kv_reply_ok(c);
	return 0;
}

static int cmd_dbsize(struct kv_ctx *c)
{
	c->r->integer(c->rc, (int64_t)kv_dbsize(c->kv, c->now_ms));
	return 0;
}

/* Length of the pattern's literal prefix: every key it can match starts
 * with it, so KEYS walks only that range of the ordered index. */
static size_t kv_glob_literal_prefix(const uint8_t *p, size_t len)
{
	size_t i = 0;
	while (i < len && p[i] != '*' && p[i] != '?' && p[i] != '[' &&
	       p[i] != '\\')
		i++;
	return i;
}

/* One walk of KEYS; emits when emit is set, returns the match count. */
static uint64_t kv_keys_walk(struct kv_ctx *c, bool emit)
{
	const uint8_t *pat = ARG(1);
	size_t plen = LEN(1);
	size_t pre = kv_glob_literal_prefix(pat, plen);
	uint64_t n = 0;
	struct kv_avl_iter it;
	struct kv_probe p = {pat, pre, 0, 0};
	kv_avl_seek(&it, c->kv->by_key, &p, kv_cmp_key);
	for (struct kv_avl *a; (a = kv_avl_cur(&it)); kv_avl_next(&it)) {
		const struct kv_entry *e = KV_CONTAINER(a, by_key);
		if (e->key_len < pre || (pre && memcmp(e->key, pat, pre)))
			break;
		if (pre == plen && e->key_len != pre)
			break; /* fully literal: one key at most */
		if (kv_entry_expired(e, c->now_ms) ||
		    !kv_glob_match(pat, plen, e->key, e->key_len))
			continue;
		n++;
		if (emit)
			c->r->bulk(c->rc, e->key, e->key_len);
	}
	return n;
}

static int cmd_keys(struct kv_ctx *c)
{
	/* Two walks instead of a buffer: the reply header needs the count
	 * and reads do not allocate. Nothing changes between the walks. */
	c->r->array(c->rc, (size_t)kv_keys_walk(c, false));
	kv_keys_walk(c, true);
	return 0;
}

struct kv_scan_opts {
	uint64_t cursor;
	int64_t count;
	const uint8_t *pat;
	size_t plen;
	bool type_ok;
};

/* One walk of SCAN from the cursor: visits count entries in (hash, key)
 * order and then the rest of the last hash's group, so a group of equal
 * hashes is never split across calls. Returns the match count and sets
 * *next to the hash of the first entry not visited (0: the end). */
static uint64_t kv_scan_walk(struct kv_ctx *c, const struct kv_scan_opts *o,
			     bool emit, uint64_t *next)
{
	struct kv_avl_iter it;
	struct kv_probe p = {(const uint8_t *)"", 0, o->cursor, 0};
	uint64_t visited = 0, n = 0, last = 0;
	*next = 0;
	kv_avl_seek(&it, c->kv->by_hash, &p, kv_cmp_hash);
	for (struct kv_avl *a; (a = kv_avl_cur(&it)); kv_avl_next(&it)) {
		const struct kv_entry *e = KV_CONTAINER(a, by_hash);
		if (visited >= (uint64_t)o->count && e->hash != last) {
			*next = e->hash; /* > last >= cursor, so never 0 */
			break;
		}
		visited++;
		last = e->hash;
		if (!o->type_ok || kv_entry_expired(e, c->now_ms))
			continue;
		if (o->pat && !kv_glob_match(o->pat, o->plen, e->key, e->key_len))
			continue;
		n++;
		if (emit)
			c->r->bulk(c->rc, e->key, e->key_len);
	}
	return n;
}

static int cmd_scan(struct kv_ctx *c)
{
	struct kv_scan_opts o = {0, 10, NULL, 0, true};
	if (!kv_parse_u64(ARG(1), LEN(1), &o.cursor)) {
		kv_reply_err(c, "ERR invalid cursor");
		return 0;
	}
	for (int i = 2; i < c->argc;) {
		int left = c->argc - i;
		if (kv_bytes_ieq(ARG(i), LEN(i), "count") && left >= 2) {
			if (!kv_parse_i64(ARG(i + 1), LEN(i + 1), &o.count)) {
				kv_reply_err(c, KV_ERR_NOT_INT);
				return 0;
			}
			if (o.count < 1) {
				kv_reply_err(c, KV_ERR_SYNTAX);
				return 0;
			}
		} else if (kv_bytes_ieq(ARG(i), LEN(i), "match") && left >= 2) {
			o.pat = ARG(i + 1);
			o.plen = LEN(i + 1);
			if (o.plen == 1 && o.pat[0] == '*')
				o.pat = NULL;
		} else if (kv_bytes_ieq(ARG(i), LEN(i), "type") && left >= 2) {
			/* Every keel key is a string. */
			o.type_ok = kv_bytes_ieq(ARG(i + 1), LEN(i + 1), "string");
		} else {
			kv_reply_err(c, KV_ERR_SYNTAX);
			return 0;
		}
		i += 2;
	}
	uint64_t next;
	uint64_t n = kv_scan_walk(c, &o, false, &next);
	char cur[24];
	size_t cl = kv_fmt_u64(next, cur);
	c->r->array(c->rc, 2);
	c->r->bulk(c->rc, (const uint8_t *)cur, cl);
	c->r->array(c->rc, (size_t)n);
	kv_scan_walk(c, &o, true, &next);
	return 0;
}

static int cmd_keel_get(struct kv_ctx *c)
{
	struct kv_entry *e = kv_live(c, 1);
	if (!e) {
		c->r->null(c->rc);
		return 0;
	}
	c->r->array(c->rc, 4);
	kv_reply_bulk_entry(c, e);
	c->r->integer(c->rc, (int64_t)e->meta.create_revision);
	c->r->integer(c->rc, (int64_t)e->meta.mod_revision);
	c->r->integer(c->rc, (int64_t)e->meta.version);
	return 0;
}

/* KEEL.CAS key expected new: replaces the value only if the key is live
 * and holds exactly `expected`; 1 if it did, 0 otherwise. Like SET, the
 * new value has no TTL. (Compare-and-set on revision is wave 2.) */
static int cmd_keel_cas(struct kv_ctx *c)
{
	struct kv_entry *e = kv_live(c, 1);
	if (!e || e->val_len != LEN(2) ||
	    (LEN(2) && memcmp(e->val, ARG(2), LEN(2)) != 0)) {
		c->r->integer(c->rc, 0);
		return 0;
	}
	int rc = kv_set_value(c->kv, ARG(1), LEN(1), ARG(3), LEN(3), false, 0,
			      c->now_ms);
	if (rc)
		return rc;
	c->r->integer(c->rc, 1);
	return 0;
}

/*
 * The command table: one row per command -- name, arity, flags, key spec,
 * group, ACL categories, handler -- and nothing kept in step by hand
 * (it was two parallel arrays). kv_command_lookup (commands.c) finds a row
 * by a hash of its name; the server builds its rows from these.
 */
#define W KV_CMD_WRITE
#define R KV_CMD_READ
#define F KV_CMD_FAST
#define RW KV_CMD_REWRITE
const struct kv_command kv_commands[] = {
	{"get", 2, R | F, 1, 1, 1, "string", "@read @string @fast", cmd_get},
	{"set", -3, W | RW, 1, 1, 1, "string", "@write @string @slow",
	 cmd_set},
	{"setnx", 3, W | F, 1, 1, 1, "string", "@write @string @fast",
	 cmd_setnx},
	{"setex", 4, W | RW, 1, 1, 1, "string", "@write @string @slow",
	 cmd_setex},
	{"psetex", 4, W | RW, 1, 1, 1, "string", "@write @string @slow",
	 cmd_psetex},
	{"getset", 3, W | F, 1, 1, 1, "string", "@write @string @fast",
	 cmd_getset},
	{"getdel", 2, W | F, 1, 1, 1, "string", "@write @string @fast",
	 cmd_getdel},
	{"getex", -2, W | F | RW, 1, 1, 1, "string", "@write @string @fast",
	 cmd_getex},
	{"mget", -2, R, 1, -1, 1, "string", "@read @string @fast", cmd_mget},
	{"mset", -3, W, 1, -1, 2, "string", "@write @string @slow", cmd_mset},
	{"msetnx", -3, W, 1, -1, 2, "string", "@write @string @slow",
	 cmd_msetnx},
	{"del", -2, W, 1, -1, 1, "generic", "@keyspace @write @slow", cmd_del},
	{"unlink", -2, W, 1, -1, 1, "generic", "@keyspace @write @fast",
	 cmd_del},
	{"exists", -2, R, 1, -1, 1, "generic", "@keyspace @read @fast",
	 cmd_exists},
	{"incr", 2, W | F, 1, 1, 1, "string", "@write @string @fast", cmd_incr},
	{"incrby", 3, W | F, 1, 1, 1, "string", "@write @string @fast",
	 cmd_incrby},
	{"decr", 2, W | F, 1, 1, 1, "string", "@write @string @fast", cmd_decr},
	{"decrby", 3, W | F, 1, 1, 1, "string", "@write @string @fast",
	 cmd_decrby},
	{"append", 3, W | F, 1, 1, 1, "string", "@write @string @fast",
	 cmd_append},
	{"strlen", 2, R | F, 1, 1, 1, "string", "@read @string @fast",
	 cmd_strlen},
	{"type", 2, R | F, 1, 1, 1, "generic", "@keyspace @read @fast",
	 cmd_type},
	{"expire", -3, W | F | RW, 1, 1, 1, "generic", "@keyspace @write @fast",
	 cmd_expire},
	{"pexpire", -3, W | F | RW, 1, 1, 1, "generic",
	 "@keyspace @write @fast", cmd_pexpire},
	{"expireat", -3, W | F, 1, 1, 1, "generic", "@keyspace @write @fast",
	 cmd_expireat},
	{"pexpireat", -3, W | F, 1, 1, 1, "generic", "@keyspace @write @fast",
	 cmd_pexpireat},
	{"ttl", 2, R | F, 1, 1, 1, "generic", "@keyspace @read @fast", cmd_ttl},
	{"pttl", 2, R | F, 1, 1, 1, "generic", "@keyspace @read @fast",
	 cmd_pttl},
	{"persist", 2, W | F, 1, 1, 1, "generic", "@keyspace @write @fast",
	 cmd_persist},
	{"keys", 2, R, 0, 0, 0, "generic", "@keyspace @read @slow @dangerous",
	 cmd_keys},
	{"scan", -2, R, 0, 0, 0, "generic", "@keyspace @read @slow", cmd_scan},
	{"dbsize", 1, R | F, 0, 0, 0, "server", "@keyspace @read @fast",
	 cmd_dbsize},
	{"flushdb", -1, W | KV_CMD_ADMIN, 0, 0, 0, "server",
	 "@keyspace @write @slow @dangerous", cmd_flush},
	{"flushall", -1, W | KV_CMD_ADMIN, 0, 0, 0, "server",
	 "@keyspace @write @slow @dangerous", cmd_flush},
	{"keel.get", 2, R | F, 1, 1, 1, "keel", "@read @string @fast",
	 cmd_keel_get},
	{"keel.expire-delete", 3, W | F | KV_CMD_INTERNAL, 1, 1, 1, "keel",
	 "@keyspace @write @fast", cmd_expire_delete},
	{"keel.cas", 4, W | F, 1, 1, 1, "keel", "@write @string @fast",
	 cmd_keel_cas},
	/* Transactions (txn.c, docs/kv.md "Transactions"). KEEL.EXEC and
	 * KEEL.WATCH-REVS are what the server sends for EXEC and WATCH. */
	{"keel.getrev", 2, R | F, 1, 1, 1, "keel", "@read @string @fast",
	 cmd_keel_get},
	{"keel.exec", -3, W | KV_CMD_SERVER | KV_CMD_TXN | RW, 0, 0, 0,
	 "transactions", "@write @transaction @slow", kv_cmd_keel_exec},
	{"keel.txn", -3, W | KV_CMD_TXN | RW, 0, 0, 0, "transactions",
	 "@write @transaction @slow", kv_cmd_keel_txn},
	{"keel.watch-revs", -2, R | KV_CMD_SERVER, 1, -1, 1, "transactions",
	 "@read @transaction @fast", kv_cmd_keel_watch_revs},
};
#undef W
#undef R
#undef F
#undef RW

const size_t kv_commands_count = KEEL_ARRAY_LEN(kv_commands);
