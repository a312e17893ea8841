/*
 * commands.c -- finding a command (the hashed index over kv_commands[],
 * whose rows are in ops.c) and the two entry points that run commands:
 * kv_apply for committed log entries and kv_read for reads.
 *
 * kv_apply is total: whatever bytes a log entry holds, it ends in exactly
 * one reply and the same state on every replica. The dispatcher owns the
 * revision rule: an entry that changed anything gets the next revision.
 */
#include <string.h>

#include "kv/kv_internal.h"

/*
 * Lookup by a hash of the lowercase name: an open-addressing index over
 * kv_commands[] (its rows are in ops.c), built once before main
 * by a constructor (as the CRC tables are) and only read afterwards.
 * Names longer than KV_CMD_NAME_MAX are no command.
 */
#define KV_CMD_NAME_MAX 32
#define KV_INDEX_SLOTS 128 /* a power of two, over twice the rows */

static uint8_t kv_index_[KV_INDEX_SLOTS]; /* row + 1; 0 = empty */

__attribute__((constructor)) static void kv_index_build(void)
{
	/* Half empty at most: probes stay short, and a lookup of an unknown
	 * name always meets an empty slot. */
	KEEL_ASSERT(kv_commands_count * 2 <= KV_INDEX_SLOTS);
	for (size_t r = 0; r < kv_commands_count; r++) {
		const char *nm = kv_commands[r].name;
		size_t len = strlen(nm);
		KEEL_ASSERT(len <= KV_CMD_NAME_MAX);
		uint32_t i = keel_lower_hash((const uint8_t *)nm, len) &
			     (KV_INDEX_SLOTS - 1);
		while (kv_index_[i])
			i = (i + 1) & (KV_INDEX_SLOTS - 1);
		kv_index_[i] = (uint8_t)(r + 1);
	}
}

const struct kv_command *kv_command_lookup(const uint8_t *name, size_t len)
{
	if (len > KV_CMD_NAME_MAX)
		return NULL;
	uint32_t i = keel_lower_hash(name, len) & (KV_INDEX_SLOTS - 1);
	for (uint32_t probes = 0; probes < KV_INDEX_SLOTS; probes++) {
		uint8_t r = kv_index_[i];
		if (!r)
			return NULL;
		const struct kv_command *c = &kv_commands[r - 1];
		if (kv_bytes_ieq(name, len, c->name))
			return c;
		i = (i + 1) & (KV_INDEX_SLOTS - 1);
	}
	return NULL;
}

/* ---- replies ------------------------------------------------------------------ */

void kv_reply_ok(struct kv_ctx *c)
{
	c->r->status(c->rc, "OK");
}

void kv_reply_err(struct kv_ctx *c, const char *s)
{
	c->r->error(c->rc, s);
}

void kv_reply_bulk_entry(struct kv_ctx *c, const struct kv_entry *e)
{
	c->r->bulk(c->rc, e->val, e->val_len);
}

struct kv_fmt {
	char *buf;
	size_t len;
	size_t cap; /* includes the NUL */
};

static void kv_fmt_str(struct kv_fmt *f, const char *s)
{
	while (*s && f->len + 1 < f->cap)
		f->buf[f->len++] = *s++;
	f->buf[f->len] = '\0';
}

/* Client bytes inside an error line: CR, LF and NUL would break the RESP
 * line (or the C string), so they become spaces, as Redis does. */
static void kv_fmt_arg(struct kv_fmt *f, const uint8_t *p, size_t len,
		       size_t max)
{
	for (size_t i = 0; i < len && i < max && f->len + 1 < f->cap; i++) {
		uint8_t b = p[i];
		f->buf[f->len++] = (b == '\r' || b == '\n' || b == 0) ? ' '
								      : (char)b;
	}
	f->buf[f->len] = '\0';
}

void kv_reply_errf(struct kv_ctx *c, const char *a, const uint8_t *arg,
		   size_t arglen, const char *b)
{
	struct kv_fmt f = {c->kv->errbuf, 0, sizeof(c->kv->errbuf)};
	kv_fmt_str(&f, "ERR ");
	kv_fmt_str(&f, a);
	kv_fmt_arg(&f, arg, arglen, 128);
	kv_fmt_str(&f, b);
	c->r->error(c->rc, f.buf);
}

/* Redis 7's text: the name and the first arguments, up to 128 bytes. */
static void kv_reply_unknown(struct kv_ctx *c)
{
	struct kv_fmt f = {c->kv->errbuf, 0, sizeof(c->kv->errbuf)};
	kv_fmt_str(&f, "ERR unknown command '");
	kv_fmt_arg(&f, c->argv[0], c->lens[0], 128);
	kv_fmt_str(&f, "', with args beginning with: ");
	size_t args = 0;
	for (int i = 1; i < c->argc && args < 128; i++) {
		size_t before = f.len;
		kv_fmt_str(&f, "'");
		kv_fmt_arg(&f, c->argv[i], c->lens[i], 128 - args);
		kv_fmt_str(&f, "' ");
		args += f.len - before;
	}
	c->r->error(c->rc, f.buf);
}

/* ---- dispatch ------------------------------------------------------------------- */

/* Finds the command and checks arity; false after replying an error. */
static bool kv_resolve(struct kv_ctx *c)
{
	c->cmd = kv_command_lookup(c->argv[0], c->lens[0]);
	if (!c->cmd) {
		kv_reply_unknown(c);
		return false;
	}
	int ar = c->cmd->arity;
	if ((ar > 0 && c->argc != ar) || (ar < 0 && c->argc < -ar)) {
		kv_reply_errf(c, "wrong number of arguments for '",
			      (const uint8_t *)c->cmd->name,
			      strlen(c->cmd->name), "' command");
		return false;
	}
	return true;
}

#define KV_SMALL_ARGS 16

int kv_apply(struct kv *kv, uint64_t index, const uint8_t *cmd, size_t len,
	     const struct kv_reply_ops *reply, void *reply_ctx)
{
	KEEL_ASSERT(kv != NULL && reply != NULL);
	/* The log hands entries over in order, once each. */
	KEEL_ASSERT(index > kv->applied_index);
	const uint8_t *small_argv[KV_SMALL_ARGS];
	size_t small_lens[KV_SMALL_ARGS];
	const uint8_t **argv = small_argv;
	size_t *lens = small_lens;
	uint64_t now_ms = 0;
	uint32_t argc = 0;
	int rc = kv_cmd_decode(cmd, len, &now_ms, &argc, argv, lens,
			       KV_SMALL_ARGS);
	if (rc == KEEL_ERR_NOSPACE) {
		argv = kv->a->malloc(kv->a->ctx, argc * sizeof(*argv));
		lens = kv->a->malloc(kv->a->ctx, argc * sizeof(*lens));
		if (!argv || !lens) {
			kv->a->free(kv->a->ctx, argv);
			kv->a->free(kv->a->ctx, lens);
			return KEEL_ERR_NOMEM;
		}
		rc = kv_cmd_decode(cmd, len, &now_ms, &argc, argv, lens, argc);
		KEEL_ASSERT(rc == 0);
	}
	uint64_t prev_index = kv->applied_index;
	kv->applied_index = index;
	if (rc) {
		/* Deterministic: the same bytes give the same error everywhere. */
		reply->error(reply_ctx, "ERR keel: malformed command entry");
		return 0;
	}
	struct kv_ctx c = {
		.kv = kv,
		.now_ms = now_ms,
		.argc = (int)argc,
		.argv = argv,
		.lens = lens,
		.r = reply,
		.rc = reply_ctx,
		.in_apply = true,
	};
	kv->pending_rev = kv->revision + 1;
	kv->changed = false;
	if (kv_resolve(&c))
		rc = c.cmd->proc(&c);
	if (kv->changed)
		kv->revision = kv->pending_rev;
	/* Out of memory: single-key commands allocate before they change
	 * anything, so nothing changed and the entry may be applied again. */
	if (rc == KEEL_ERR_NOMEM && !kv->changed)
		kv->applied_index = prev_index;
	kv->changed = false;
	if (argv != small_argv) {
		kv->a->free(kv->a->ctx, argv);
		kv->a->free(kv->a->ctx, lens);
	}
	return rc;
}

int kv_read(struct kv *kv, int argc, const uint8_t *const *argv,
	    const size_t *lens, uint64_t now_ms,
	    const struct kv_reply_ops *reply, void *reply_ctx)
{
	KEEL_ASSERT(kv != NULL && reply != NULL);
	if (argc < 1) {
		reply->error(reply_ctx, "ERR empty command");
		return 0;
	}
	struct kv_ctx c = {
		.kv = kv,
		.now_ms = now_ms,
		.argc = argc,
		.argv = argv,
		.lens = lens,
		.r = reply,
		.rc = reply_ctx,
		.in_apply = false,
	};
	if (!kv_resolve(&c))
		return 0;
	if (!(c.cmd->flags & KV_CMD_READ)) {
		reply->error(reply_ctx,
			     "ERR keel: write command on the read path");
		return 0;
	}
	uint64_t rev = kv->revision;
	int rc = c.cmd->proc(&c);
	KEEL_ASSERT(kv->revision == rev && !kv->changed);
	return rc;
}
