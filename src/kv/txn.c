/*
 * txn.c -- transactions: KEEL.EXEC (what the server turns MULTI ... EXEC
 * into, with the WATCH conditions), KEEL.TXN (etcd-style compare, then one
 * list of commands or another, in one round trip), KEEL.WATCH-REVS (the
 * linearizable read WATCH makes) and the undo journal that makes a
 * transaction all-or-nothing even when an allocation fails midway.
 *
 * A transaction is one command, so one log entry: every replica applies
 * it whole at one revision (the dispatcher's revision rule: every key it
 * writes gets pending_rev, the global revision moves by one if anything
 * changed). Its sub-commands are carried inside its argv as counted lists
 * (docs/kv.md, "Transactions", has the byte-exact syntax), so the entry
 * codec, the node's routing, forwarding, dedup and per-connection order
 * apply to it unchanged.
 *
 * Atomicity under memory exhaustion: before a write sub-command runs, each
 * key it may write is copied into the journal (the whole record, or
 * "absent") together with the key's creation mark. If an allocation fails
 * -- while journaling or inside the sub-command -- the journal is played
 * back newest first, which needs no memory: every key that changed gets
 * its copy linked back, the marks get their old values, and kv_apply sees
 * "nothing changed" (KEEL_ERR_NOMEM with the state and applied index as
 * before, the entry may be applied again). Keys a sub-command reads are
 * not journaled; FLUSHDB/FLUSHALL (which would need the whole keyspace
 * journaled) are refused inside transactions.
 */
#include <string.h>

#include "kv/kv_internal.h"

#define ARG(i) (c->argv[(i)])
#define LEN(i) (c->lens[(i)])

bool kv_command_txn_allowed(const struct kv_command *cmd)
{
	return !(cmd->flags & (KV_CMD_INTERNAL | KV_CMD_ADMIN | KV_CMD_SERVER |
			       KV_CMD_TXN));
}

/* ---- layout ----------------------------------------------------------------- */

static bool kv_txn_count(const uint8_t *const *argv, const size_t *lens,
			 int i, uint64_t max, int *out)
{
	uint64_t v;
	if (!kv_parse_u64(argv[i], lens[i], &v) || v > max)
		return false;
	*out = (int)v;
	return true;
}

/* A list of n sub-commands from pos: each a count >= 1 and that many
 * arguments, all inside argc. Returns the index after it, or -1. */
static int kv_txn_list(int argc, const uint8_t *const *argv,
		       const size_t *lens, int pos, int n)
{
	for (int i = 0; i < n; i++) {
		int k;
		if (pos >= argc || !kv_txn_count(argv, lens, pos, KV_MAX_ARGC, &k) ||
		    k < 1 || k > argc - pos - 1)
			return -1;
		pos += 1 + k;
	}
	return pos;
}

bool kv_txn_parse_layout(int argc, const uint8_t *const *argv,
			 const size_t *lens, struct kv_txn_layout *l,
			 const char **err)
{
	memset(l, 0, sizeof(*l));
	l->exec = kv_bytes_ieq(argv[0], lens[0], "keel.exec");
	int i = 1;
	if (l->exec) {
		/* KEEL.EXEC <nwatch> (<key> <mod> <rev>)* <ncmds> (<n> <arg>..)* */
		if (i >= argc || !kv_txn_count(argv, lens, i, KV_MAX_ARGC,
					       &l->ncond) ||
		    l->ncond > (argc - i - 1) / 3) {
			*err = "bad watch count";
			return false;
		}
		l->cond_pos = i + 1;
		i = l->cond_pos + 3 * l->ncond;
		if (i >= argc || !kv_txn_count(argv, lens, i, KV_TXN_MAX_CMDS,
					       &l->nthen)) {
			*err = "bad command count";
			return false;
		}
		l->then_pos = i + 1;
		i = kv_txn_list(argc, argv, lens, l->then_pos, l->nthen);
		l->else_pos = argc;
		if (i != argc) {
			*err = "malformed command list";
			return false;
		}
		return true;
	}
	/* KEEL.TXN [IF <n> (<key> <field> <op> <value>)*] THEN <m> (..)*
	 *          [ELSE <k> (..)*] */
	if (i < argc && kv_bytes_ieq(argv[i], lens[i], "if")) {
		if (i + 1 >= argc ||
		    !kv_txn_count(argv, lens, i + 1, KV_TXN_MAX_COMPARES,
				  &l->ncond) ||
		    l->ncond > (argc - i - 2) / 4) {
			*err = "IF needs a compare count and that many "
			       "<key> <field> <op> <value> compares";
			return false;
		}
		l->cond_pos = i + 2;
		i = l->cond_pos + 4 * l->ncond;
	}
	if (i >= argc || !kv_bytes_ieq(argv[i], lens[i], "then") ||
	    i + 1 >= argc ||
	    !kv_txn_count(argv, lens, i + 1, KV_TXN_MAX_CMDS, &l->nthen)) {
		*err = "expected THEN <count> after the compares";
		return false;
	}
	l->then_pos = i + 2;
	i = kv_txn_list(argc, argv, lens, l->then_pos, l->nthen);
	if (i < 0) {
		*err = "malformed THEN list (each command is <argc> <arg>...)";
		return false;
	}
	l->else_pos = argc;
	if (i < argc) {
		if (!kv_bytes_ieq(argv[i], lens[i], "else") || i + 1 >= argc ||
		    !kv_txn_count(argv, lens, i + 1, KV_TXN_MAX_CMDS,
				  &l->nelse)) {
			*err = "expected ELSE <count> or the end after THEN";
			return false;
		}
		l->else_pos = i + 2;
		i = kv_txn_list(argc, argv, lens, l->else_pos, l->nelse);
		if (i != argc) {
			*err = "malformed ELSE list (each command is <argc> "
			       "<arg>...)";
			return false;
		}
	}
	return true;
}

/* ---- checks before anything runs ------------------------------------------------ */

static void kv_txn_err(struct kv_ctx *c, const char *what)
{
	const char *name = kv_bytes_ieq(ARG(0), LEN(0), "keel.exec")
				   ? "KEEL.EXEC: "
				   : "KEEL.TXN: ";
	kv_reply_errf(c, name, (const uint8_t *)what, strlen(what), "");
}

/* Every sub-command of a list is known, has a valid arity and is allowed
 * in a transaction; false after replying the error. */
static bool kv_txn_check_list(struct kv_ctx *c, int pos, int n)
{
	for (int i = 0; i < n; i++) {
		int k = 0;
		(void)kv_txn_count(c->argv, c->lens, pos, KV_MAX_ARGC, &k);
		const uint8_t *name = ARG(pos + 1);
		size_t nl = LEN(pos + 1);
		const struct kv_command *cmd = kv_command_lookup(name, nl);
		if (!cmd) {
			kv_reply_errf(c, "unknown command '", name, nl,
				      "' in a transaction");
			return false;
		}
		int ar = cmd->arity;
		if ((ar > 0 && k != ar) || (ar < 0 && k < -ar)) {
			kv_reply_errf(c, "wrong number of arguments for '",
				      (const uint8_t *)cmd->name,
				      strlen(cmd->name),
				      "' command in a transaction");
			return false;
		}
		if (!kv_command_txn_allowed(cmd)) {
			kv_reply_errf(c, "'", (const uint8_t *)cmd->name,
				      strlen(cmd->name),
				      "' is not allowed in a transaction");
			return false;
		}
		pos += 1 + k;
	}
	return true;
}

enum kv_cmp_field { F_MOD, F_CREATE, F_VERSION, F_VALUE, F_EXISTS };
enum kv_cmp_op { OP_EQ, OP_NE, OP_LT, OP_GT };

struct kv_compare {
	int field, op;
	uint64_t num;
};

static bool kv_parse_compare(const struct kv_ctx *c, int at,
			     struct kv_compare *out, const char **err)
{
	const uint8_t *f = ARG(at + 1), *o = ARG(at + 2);
	size_t fl = LEN(at + 1), ol = LEN(at + 2);
	if (kv_bytes_ieq(f, fl, "mod"))
		out->field = F_MOD;
	else if (kv_bytes_ieq(f, fl, "create"))
		out->field = F_CREATE;
	else if (kv_bytes_ieq(f, fl, "version"))
		out->field = F_VERSION;
	else if (kv_bytes_ieq(f, fl, "value"))
		out->field = F_VALUE;
	else if (kv_bytes_ieq(f, fl, "exists"))
		out->field = F_EXISTS;
	else {
		*err = "compare field must be MOD, CREATE, VERSION, VALUE or "
		       "EXISTS";
		return false;
	}
	if (ol == 1 && o[0] == '=')
		out->op = OP_EQ;
	else if (ol == 2 && o[0] == '!' && o[1] == '=')
		out->op = OP_NE;
	else if (ol == 1 && o[0] == '<')
		out->op = OP_LT;
	else if (ol == 1 && o[0] == '>')
		out->op = OP_GT;
	else {
		*err = "compare operator must be =, !=, < or >";
		return false;
	}
	out->num = 0;
	if (out->field != F_VALUE &&
	    !kv_parse_u64(ARG(at + 3), LEN(at + 3), &out->num)) {
		*err = "compare value of MOD, CREATE, VERSION or EXISTS must "
		       "be a non-negative integer";
		return false;
	}
	if (out->field == F_EXISTS && out->num > 1) {
		*err = "EXISTS compares with 0 or 1";
		return false;
	}
	return true;
}

static bool kv_op_holds(int op, int cmp)
{
	switch (op) {
	case OP_EQ:
		return cmp == 0;
	case OP_NE:
		return cmp != 0;
	case OP_LT:
		return cmp < 0;
	default:
		return cmp > 0;
	}
}

/* etcd's rules: an absent key has MOD, CREATE and VERSION 0; a VALUE
 * compare on an absent key is false whatever the operator. */
static bool kv_compare_holds(struct kv_ctx *c, int at,
			     const struct kv_compare *k)
{
	const struct kv_entry *e =
		kv_lookup_live(c->kv, ARG(at), LEN(at), c->now_ms);
	if (k->field == F_VALUE) {
		if (!e)
			return false;
		return kv_op_holds(k->op, kv_keycmp(e->val, e->val_len,
						    ARG(at + 3), LEN(at + 3)));
	}
	uint64_t cur = 0;
	if (e) {
		switch (k->field) {
		case F_MOD:
			cur = e->meta.mod_revision;
			break;
		case F_CREATE:
			cur = e->meta.create_revision;
			break;
		case F_VERSION:
			cur = e->meta.version;
			break;
		default:
			cur = 1;
			break;
		}
	}
	int cmp = cur < k->num ? -1 : cur > k->num ? 1 : 0;
	return kv_op_holds(k->op, cmp);
}

/* A WATCH condition (key, mod, rev): the key read at revision rev had
 * mod_revision mod (0 = absent). It still holds when the key is live with
 * that mod_revision, or, for an absent key, is still absent and no key of
 * its creation-mark bucket was created after rev. Deletions need no
 * record: a key present at WATCH and deleted is absent now, and one absent
 * at WATCH can only be deleted after being created, which moved the mark.
 */
static bool kv_watch_holds(struct kv_ctx *c, int at, bool *ok_syntax)
{
	uint64_t mod, rev;
	if (!kv_parse_u64(ARG(at + 1), LEN(at + 1), &mod) ||
	    !kv_parse_u64(ARG(at + 2), LEN(at + 2), &rev)) {
		*ok_syntax = false;
		return false;
	}
	const struct kv_entry *e =
		kv_lookup_live(c->kv, ARG(at), LEN(at), c->now_ms);
	if (mod)
		return e && e->meta.mod_revision == mod;
	if (e)
		return false;
	unsigned b = kv_mark_bucket(kv_key_hash(ARG(at), LEN(at)));
	return c->kv->create_marks[b] <= rev;
}

/* ---- the undo journal --------------------------------------------------------------- */

struct kv_jrec {
	const uint8_t *key; /* borrowed from the entry's argv */
	size_t klen;
	struct kv_entry *pre; /* the stored record's copy; NULL = absent */
	uint64_t old_mark;
	unsigned bucket;
};

struct kv_journal {
	struct kv *kv;
	struct kv_jrec *recs;
	size_t n, cap;
};

/* A standalone copy of e (key, value, metadata), not linked anywhere. */
static struct kv_entry *kv_entry_copy(struct kv *kv, const struct kv_entry *e)
{
	struct kv_entry *p = kv_entry_alloc(kv, e->key, e->key_len);
	if (!p)
		return NULL;
	if (e->val_len) {
		p->val = kv->a->malloc(kv->a->ctx, e->val_len);
		if (!p->val) {
			kv_entry_free(kv, p);
			return NULL;
		}
		memcpy(p->val, e->val, e->val_len);
	}
	p->val_len = p->val_cap = e->val_len;
	p->meta = e->meta;
	return p;
}

static int kv_journal_key(struct kv_journal *j, const uint8_t *key,
			  size_t klen)
{
	struct kv *kv = j->kv;
	struct kv_entry *e = kv_lookup(kv, key, klen);
	/* Changed by this entry already: its state before the entry is in
	 * the journal (every change inside a transaction is journaled
	 * first). No key can hold pending_rev otherwise. */
	if (e && e->meta.mod_revision == kv->pending_rev)
		return 0;
	KEEL_ASSERT(j->n < j->cap);
	struct kv_entry *pre = NULL;
	if (e) {
		pre = kv_entry_copy(kv, e);
		if (!pre)
			return KEEL_ERR_NOMEM;
	}
	unsigned b = kv_mark_bucket(kv_key_hash(key, klen));
	j->recs[j->n++] = (struct kv_jrec){key, klen, pre, kv->create_marks[b],
					   b};
	return 0;
}

/* Journals every key position of one write sub-command. */
static int kv_journal_cmd(struct kv_journal *j, const struct kv_command *cmd,
			  int argc, const uint8_t *const *argv,
			  const size_t *lens)
{
	if (!(cmd->flags & KV_CMD_WRITE) || cmd->first_key <= 0)
		return 0;
	int last = cmd->last_key < 0 ? argc + cmd->last_key : cmd->last_key;
	for (int i = cmd->first_key; i <= last && i < argc; i += cmd->step) {
		int rc = kv_journal_key(j, argv[i], lens[i]);
		if (rc)
			return rc;
	}
	return 0;
}

static size_t kv_journal_need(const struct kv_command *cmd, int argc)
{
	if (!(cmd->flags & KV_CMD_WRITE) || cmd->first_key <= 0)
		return 0;
	int last = cmd->last_key < 0 ? argc + cmd->last_key : cmd->last_key;
	if (last < cmd->first_key)
		return 0;
	return (size_t)((last - cmd->first_key) / cmd->step + 1);
}

/* Plays the journal back, newest first: needs no memory. */
static void kv_journal_undo(struct kv_journal *j)
{
	struct kv *kv = j->kv;
	for (size_t i = j->n; i-- > 0;) {
		struct kv_jrec *r = &j->recs[i];
		struct kv_entry *e = kv_lookup(kv, r->key, r->klen);
		bool same = (!e && !r->pre) ||
			    (e && r->pre &&
			     e->meta.mod_revision == r->pre->meta.mod_revision &&
			     e->meta.create_revision ==
				     r->pre->meta.create_revision);
		if (!same) {
			/* A changed key has its frozen pre-image already (the
			 * mutation kept it), so the frozen version does not
			 * take e here: it is freed. */
			if (e)
				kv_delete_entry(kv, e);
			if (r->pre) {
				kv_link_entry(kv, r->pre);
				r->pre = NULL;
			}
		}
		kv->create_marks[r->bucket] = r->old_mark;
	}
	kv->changed = false;
}

static void kv_journal_close(struct kv_journal *j)
{
	struct kv *kv = j->kv;
	for (size_t i = 0; i < j->n; i++)
		if (j->recs[i].pre)
			kv_entry_free(kv, j->recs[i].pre);
	kv->a->free(kv->a->ctx, j->recs);
	j->recs = NULL;
	j->n = j->cap = 0;
}

/* Runs the n sub-commands at pos (checked) with replies as array(n) of
 * their replies. All or nothing: KEEL_ERR_NOMEM after undoing. */
static int kv_txn_run(struct kv_ctx *c, int pos, int n)
{
	struct kv *kv = c->kv;
	struct kv_journal j = {kv, NULL, 0, 0};
	size_t need = 0;
	for (int i = 0, p = pos; i < n; i++) {
		int k = 0;
		(void)kv_txn_count(c->argv, c->lens, p, KV_MAX_ARGC, &k);
		need += kv_journal_need(kv_command_lookup(ARG(p + 1),
							  LEN(p + 1)),
					k);
		p += 1 + k;
	}
	if (need) {
		j.recs = kv->a->malloc(kv->a->ctx, need * sizeof(*j.recs));
		if (!j.recs)
			return KEEL_ERR_NOMEM;
		j.cap = need;
	}
	c->r->array(c->rc, (size_t)n);
	int rc = 0;
	/* Planted bug (txn-partial): with more than one write command, stop
	 * after the first; the rest answer OK without running. */
	int writes = 0;
	bool partial = KV_MUTANT(kv, KV_MUTANT_TXN_PARTIAL) && need > 1;
	for (int i = 0, p = pos; i < n && !rc; i++) {
		int k = 0;
		(void)kv_txn_count(c->argv, c->lens, p, KV_MAX_ARGC, &k);
		struct kv_ctx sub = *c;
		sub.argc = k;
		sub.argv = c->argv + p + 1;
		sub.lens = c->lens + p + 1;
		sub.cmd = kv_command_lookup(sub.argv[0], sub.lens[0]);
		KEEL_ASSERT(sub.cmd != NULL);
		if (partial && writes > 0) {
			c->r->status(c->rc, "OK");
			p += 1 + k;
			continue;
		}
		if (sub.cmd->flags & KV_CMD_WRITE)
			writes++;
		rc = kv_journal_cmd(&j, sub.cmd, k, sub.argv, sub.lens);
		if (!rc)
			rc = sub.cmd->proc(&sub);
		p += 1 + k;
	}
	if (rc)
		kv_journal_undo(&j);
	kv_journal_close(&j);
	return rc;
}

/* ---- the commands -------------------------------------------------------------- */

int kv_cmd_keel_exec(struct kv_ctx *c)
{
	struct kv_txn_layout l;
	const char *err;
	if (!kv_txn_parse_layout(c->argc, c->argv, c->lens, &l, &err)) {
		kv_txn_err(c, err);
		return 0;
	}
	if (!kv_txn_check_list(c, l.then_pos, l.nthen))
		return 0;
	bool holds = true, syntax = true;
	for (int i = 0; i < l.ncond && holds; i++)
		holds = kv_watch_holds(c, l.cond_pos + 3 * i, &syntax);
	if (KV_MUTANT(c->kv, KV_MUTANT_WATCH_BLIND))
		holds = true; /* planted bug: the conditions are ignored */
	if (!syntax) {
		kv_txn_err(c, "bad watch condition");
		return 0;
	}
	if (!holds) {
		/* A watched key changed: Redis's null array, nothing runs. */
		c->r->null(c->rc);
		return 0;
	}
	return kv_txn_run(c, l.then_pos, l.nthen);
}

int kv_cmd_keel_txn(struct kv_ctx *c)
{
	struct kv_txn_layout l;
	const char *err;
	if (!kv_txn_parse_layout(c->argc, c->argv, c->lens, &l, &err)) {
		kv_txn_err(c, err);
		return 0;
	}
	/* Everything is checked before anything runs: a syntax error in
	 * the branch not taken still refuses the whole command. */
	struct kv_compare k;
	for (int i = 0; i < l.ncond; i++) {
		if (!kv_parse_compare(c, l.cond_pos + 4 * i, &k, &err)) {
			kv_txn_err(c, err);
			return 0;
		}
	}
	if (!kv_txn_check_list(c, l.then_pos, l.nthen) ||
	    !kv_txn_check_list(c, l.else_pos, l.nelse))
		return 0;
	bool holds = true;
	for (int i = 0; i < l.ncond && holds; i++) {
		int at = l.cond_pos + 4 * i;
		(void)kv_parse_compare(c, at, &k, &err);
		holds = kv_compare_holds(c, at, &k);
	}
	c->r->array(c->rc, 2);
	c->r->integer(c->rc, holds ? 1 : 0);
	return holds ? kv_txn_run(c, l.then_pos, l.nthen)
		     : kv_txn_run(c, l.else_pos, l.nelse);
}

/* KEEL.WATCH-REVS key...: [revision, mod_revision of each key or 0 when
 * absent (or expired) at this read]. */
int kv_cmd_keel_watch_revs(struct kv_ctx *c)
{
	c->r->array(c->rc, (size_t)c->argc);
	c->r->integer(c->rc, (int64_t)c->kv->revision);
	for (int i = 1; i < c->argc; i++) {
		const struct kv_entry *e =
			kv_lookup_live(c->kv, ARG(i), LEN(i), c->now_ms);
		c->r->integer(c->rc, e ? (int64_t)e->meta.mod_revision : 0);
	}
	return 0;
}
