/*
 * bank_parse.c -- reads bank histories (Jepsen's bank workload) from JSON
 * lines, byte-exact as docs/checker.md ("The bank model") gives them:
 *
 *   {"type":"bank","accounts":["a0","a1"],"total":100,"initial":{...}}
 *   {"process":0,"type":"invoke","f":"transfer",
 *    "value":{"from":"a0","to":"a1","amount":5,"id":"t1"}}
 *   {"process":0,"type":"ok","f":"transfer","value":{...same...}}
 *   {"process":1,"type":"invoke","f":"read"}
 *   {"process":1,"type":"ok","f":"read","value":{"a0":95,"a1":5}}
 *   {"type":"final","f":"ledger","value":"t1,"}
 *
 * It shares json.c's strict reader and history.c's per-process pairing.
 * Fields may come in any order, so a line's fields are read first (an
 * object value into a list of members) and interpreted after. Malformed
 * input (what no store could have produced: an unknown account in a
 * transfer, a reused transfer id, a completion without an invocation) is
 * an error with its line; what a faulty store could produce (a read with a
 * missing, unknown or negative balance, any ledger text) is kept for
 * check_bank_run to judge.
 */
#include <string.h>

#include "check/check_internal.h"

/* One member of a "value" or "initial" object. Strings point into the
 * line or the scratch: valid until the next line. */
struct member {
	struct check_value name;
	struct check_value v;
	bool scalar; /* v is a string, an integer or null */
	int owner;   /* FLD_VALUE or FLD_INITIAL */
};

struct bank_parse {
	struct check_parse_ctx c;
	struct check_history dummy; /* carries the allocator for c */
	struct check_bank_history *h;
	const struct keel_alloc *a;
	struct check_map accounts; /* name -> account index */
	struct check_map ids;      /* transfer id -> op index */
	struct member *members;
	size_t n_members, cap_members;
	struct check_value *names; /* the config's accounts, this line */
	size_t n_names;
	bool have_config, have_final;
	uint8_t *seen; /* per account, for one read */
};

enum {
	FLD_PROCESS = 1,
	FLD_TYPE = 2,
	FLD_F = 4,
	FLD_VALUE = 8,
	FLD_TIME = 16,
	FLD_ACCOUNTS = 32,
	FLD_TOTAL = 64,
	FLD_INITIAL = 128,
};

static int fail(struct bank_parse *p, int code, const char *msg)
{
	return check_ctx_fail(&p->c, code, "%s", msg);
}

static bool is(const struct check_value *v, const char *word)
{
	size_t n = strlen(word);
	return v->kind == CHECK_VAL_STR && v->len == n &&
	       !memcmp(v->str, word, n);
}

/* Copies s into the history's arena. */
static int own(struct bank_parse *p, struct check_value *v)
{
	KEEL_ASSERT(v->kind == CHECK_VAL_STR);
	const char *s = check_arena_dup(&p->h->arena, p->a, v->str, v->len);
	if (!s)
		return fail(p, KEEL_ERR_NOMEM, "out of memory");
	v->str = s;
	return 0;
}

/* An integer where the format needs one. */
static int jint(struct check_json *j, int64_t *out)
{
	if (j->i >= j->n ||
	    !(j->s[j->i] == '-' || (j->s[j->i] >= '0' && j->s[j->i] <= '9')))
		return check_json_bad(j, "expected an integer");
	struct check_value v;
	int rv = check_json_number(j, &v, true);
	if (!rv)
		*out = v.num;
	return rv;
}

static int jstr(struct check_json *j, struct check_value *out)
{
	if (j->i >= j->n || j->s[j->i] != '"')
		return check_json_bad(j, "expected a string");
	return check_json_string(j, out);
}

/* A member's value: a scalar if it is a string, an integer or null,
 * otherwise skipped (scalar false). */
static int member_value(struct check_json *j, struct member *m)
{
	memset(&m->v, 0, sizeof(m->v));
	m->scalar = true;
	if (j->i >= j->n)
		return check_json_bad(j, "expected a value");
	char ch = j->s[j->i];
	if (ch == '"')
		return check_json_string(j, &m->v);
	if (ch == '-' || (ch >= '0' && ch <= '9')) {
		size_t start = j->i;
		int rv = check_json_number(j, &m->v, false);
		if (rv)
			return rv;
		/* An integer that fits int64 is ours; anything else (a
		 * fraction, a huge number) is skipped like an unknown shape,
		 * and refused only where the format needs an integer. */
		m->v.kind = CHECK_VAL_INT;
		m->scalar = check_parse_i64(j->s + start, j->i - start,
					    &m->v.num) == 0;
		return 0;
	}
	if (check_json_literal(j, "null")) {
		m->v.kind = CHECK_VAL_NIL;
		return 0;
	}
	m->scalar = false;
	return check_json_skip(j, 2);
}

/* An object's members into p->members, tagged with owner. */
static int jobject(struct bank_parse *p, struct check_json *j, int owner)
{
	if (j->i >= j->n || j->s[j->i] != '{')
		return check_json_bad(j, "expected an object");
	j->i++;
	check_json_ws(j);
	if (j->i < j->n && j->s[j->i] == '}') {
		j->i++;
		return 0;
	}
	size_t count = 0;
	for (;;) {
		if (++count > CHECK_BANK_MAX_FIELDS)
			return check_ctx_fail(&p->c, KEEL_ERR_TOO_BIG,
					      "object with more than %u members",
					      CHECK_BANK_MAX_FIELDS);
		if (p->n_members == p->cap_members) {
			size_t cap = p->cap_members ? p->cap_members * 2 : 16;
			struct member *ms = p->a->realloc(
				p->a->ctx, p->members, cap * sizeof(*ms));
			if (!ms)
				return fail(p, KEEL_ERR_NOMEM, "out of memory");
			p->members = ms;
			p->cap_members = cap;
		}
		struct member *m = &p->members[p->n_members];
		m->owner = owner;
		check_json_ws(j);
		int rv = jstr(j, &m->name);
		if (rv)
			return rv;
		check_json_ws(j);
		if (j->i >= j->n || j->s[j->i] != ':')
			return check_json_bad(j, "expected ':'");
		j->i++;
		check_json_ws(j);
		if ((rv = member_value(j, m)))
			return rv;
		p->n_members++;
		bool done = false;
		if ((rv = check_json_member_end(j, &done)))
			return rv;
		if (done)
			return 0;
	}
}

/* The config's "accounts": an array of strings into p->names. */
static int jaccounts(struct bank_parse *p, struct check_json *j)
{
	if (j->i >= j->n || j->s[j->i] != '[')
		return check_json_bad(j, "accounts must be an array of strings");
	j->i++;
	check_json_ws(j);
	if (j->i < j->n && j->s[j->i] == ']') {
		j->i++;
		return 0;
	}
	for (;;) {
		if (p->n_names >= CHECK_BANK_MAX_ACCOUNTS)
			return check_ctx_fail(&p->c, KEEL_ERR_TOO_BIG,
					      "more than %u accounts",
					      CHECK_BANK_MAX_ACCOUNTS);
		check_json_ws(j);
		int rv = jstr(j, &p->names[p->n_names]);
		if (rv)
			return rv;
		p->n_names++;
		check_json_ws(j);
		if (j->i < j->n && j->s[j->i] == ',') {
			j->i++;
			continue;
		}
		if (j->i < j->n && j->s[j->i] == ']') {
			j->i++;
			return 0;
		}
		return check_json_bad(j, "expected ',' or ']'");
	}
}

/* ---- the config line --------------------------------------------------- */

static int config(struct bank_parse *p, unsigned seen, int64_t total)
{
	struct check_bank_history *h = p->h;
	const struct keel_alloc *a = p->a;
	if (p->have_config)
		return fail(p, KEEL_ERR_MALFORMED, "a second bank config line");
	if (!(seen & FLD_ACCOUNTS) || !(seen & FLD_TOTAL))
		return fail(p, KEEL_ERR_MALFORMED,
			    "the bank config needs \"accounts\" and \"total\"");
	if (p->n_names == 0)
		return fail(p, KEEL_ERR_MALFORMED, "no accounts");
	if (total < 0)
		return fail(p, KEEL_ERR_MALFORMED, "total must be >= 0");
	h->total = total;
	h->accounts = a->malloc(a->ctx, p->n_names * sizeof(*h->accounts));
	p->seen = a->malloc(a->ctx, p->n_names);
	if (!h->accounts || !p->seen)
		return fail(p, KEEL_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < p->n_names; i++) {
		struct check_value name = p->names[i];
		uint32_t dup;
		if (name.len > CHECK_MAX_STR)
			return fail(p, KEEL_ERR_TOO_BIG, "account name too long");
		if (check_map_get(&p->accounts, name.str, name.len, &dup))
			return check_ctx_fail(&p->c, KEEL_ERR_MALFORMED,
					      "account \"%.*s\" listed twice",
					      (int)KEEL_MIN(name.len, 40),
					      name.str);
		int rv = own(p, &name);
		if (rv)
			return rv;
		rv = check_map_put(&p->accounts, a, name.str, name.len,
				   (uint32_t)i);
		if (rv)
			return fail(p, rv, "out of memory");
		h->accounts[i] = name;
		h->n_accounts = (uint32_t)i + 1;
	}
	p->have_config = true;
	if (!(seen & FLD_INITIAL))
		return 0;
	h->initial = a->malloc(a->ctx, h->n_accounts * sizeof(*h->initial));
	if (!h->initial)
		return fail(p, KEEL_ERR_NOMEM, "out of memory");
	memset(p->seen, 0, h->n_accounts);
	int64_t sum = 0;
	uint32_t named = 0;
	for (size_t i = 0; i < p->n_members; i++) {
		const struct member *m = &p->members[i];
		if (m->owner != FLD_INITIAL)
			continue;
		uint32_t acct;
		if (!check_map_get(&p->accounts, m->name.str, m->name.len,
				   &acct))
			return check_ctx_fail(
				&p->c, KEEL_ERR_MALFORMED,
				"initial names \"%.*s\", not an account",
				(int)KEEL_MIN(m->name.len, 40), m->name.str);
		if (p->seen[acct])
			return fail(p, KEEL_ERR_MALFORMED,
				    "initial names an account twice");
		if (!m->scalar || m->v.kind != CHECK_VAL_INT || m->v.num < 0)
			return fail(p, KEEL_ERR_MALFORMED,
				    "initial balances must be integers >= 0");
		p->seen[acct] = 1;
		named++;
		h->initial[acct] = m->v.num;
		if (__builtin_add_overflow(sum, m->v.num, &sum))
			return fail(p, KEEL_ERR_MALFORMED,
				    "initial balances overflow");
	}
	if (named != h->n_accounts)
		return fail(p, KEEL_ERR_MALFORMED,
			    "initial must give every account's balance");
	if (sum != h->total)
		return check_ctx_fail(&p->c, KEEL_ERR_MALFORMED,
				      "initial balances sum to %lld, not the "
				      "total %lld",
				      (long long)sum, (long long)h->total);
	h->has_initial = true;
	return 0;
}

/* ---- the final ledger -------------------------------------------------- */

static int ledger(struct bank_parse *p, const struct check_value *v)
{
	struct check_bank_history *h = p->h;
	const struct keel_alloc *a = p->a;
	if (p->have_final)
		return fail(p, KEEL_ERR_MALFORMED, "a second final ledger");
	if (v->kind != CHECK_VAL_STR)
		return fail(p, KEEL_ERR_MALFORMED,
			    "the final ledger's value must be a string");
	struct check_value text = *v;
	int rv = own(p, &text);
	if (rv)
		return rv;
	/* "id,id,...,": one entry per ','; text after the last ',' (a torn
	 * append) is one more entry. Entries are store output: odd ones
	 * (empty, unknown) are violations, not format errors. */
	size_t n = 0;
	for (uint32_t i = 0; i < text.len; i++)
		n += text.str[i] == ',';
	if (text.len && text.str[text.len - 1] != ',')
		n++;
	if (n) {
		h->ledger = a->malloc(a->ctx, n * sizeof(*h->ledger));
		if (!h->ledger)
			return fail(p, KEEL_ERR_NOMEM, "out of memory");
	}
	uint32_t start = 0;
	for (uint32_t i = 0; i <= text.len; i++) {
		if (i < text.len && text.str[i] != ',')
			continue;
		if (i == text.len && start == text.len)
			break;
		struct check_bank_entry *e = &h->ledger[h->n_ledger++];
		KEEL_ASSERT(h->n_ledger <= n);
		e->id = text.str + start;
		e->id_len = i - start;
		if (!check_map_get(&p->ids, e->id, e->id_len, &e->op))
			e->op = UINT32_MAX;
		start = i + 1;
	}
	KEEL_ASSERT(h->n_ledger == n);
	h->has_ledger = true;
	h->ledger_line = p->c.line;
	p->have_final = true;
	return 0;
}

/* ---- events ------------------------------------------------------------ */

/* A transfer's value members into op (from, to, amount, id). */
static int transfer_value(struct bank_parse *p, struct check_bank_op *op)
{
	unsigned got = 0;
	for (size_t i = 0; i < p->n_members; i++) {
		const struct member *m = &p->members[i];
		if (m->owner != FLD_VALUE)
			continue;
		unsigned bit = is(&m->name, "from")     ? 1
			       : is(&m->name, "to")     ? 2
			       : is(&m->name, "amount") ? 4
			       : is(&m->name, "id")     ? 8
						        : 0;
		if (!bit)
			continue;
		if (got & bit)
			return check_ctx_fail(&p->c, KEEL_ERR_MALFORMED,
					      "duplicate field \"%.*s\"",
					      (int)m->name.len, m->name.str);
		got |= bit;
		if (bit == 4) {
			if (!m->scalar || m->v.kind != CHECK_VAL_INT ||
			    m->v.num < 0)
				return fail(p, KEEL_ERR_MALFORMED,
					    "amount must be an integer >= 0");
			op->amount = m->v.num;
			continue;
		}
		if (!m->scalar || m->v.kind != CHECK_VAL_STR)
			return check_ctx_fail(&p->c, KEEL_ERR_MALFORMED,
					      "\"%.*s\" must be a string",
					      (int)m->name.len, m->name.str);
		if (bit == 8) {
			if (m->v.len == 0 || m->v.len > CHECK_MAX_STR ||
			    memchr(m->v.str, ',', m->v.len))
				return fail(p, KEEL_ERR_MALFORMED,
					    "a transfer id must be non-empty, "
					    "without ','");
			op->id = m->v.str;
			op->id_len = m->v.len;
			continue;
		}
		uint32_t acct;
		if (!check_map_get(&p->accounts, m->v.str, m->v.len, &acct))
			return check_ctx_fail(
				&p->c, KEEL_ERR_MALFORMED,
				"transfer names \"%.*s\", not an account",
				(int)KEEL_MIN(m->v.len, 40), m->v.str);
		if (bit == 1)
			op->from = acct;
		else
			op->to = acct;
	}
	if (got != 15)
		return fail(p, KEEL_ERR_MALFORMED,
			    "a transfer's value needs \"from\", \"to\", "
			    "\"amount\" and \"id\"");
	return 0;
}

/* An ok read's balances into the history's cells. */
static int read_value(struct bank_parse *p, struct check_bank_op *op)
{
	struct check_bank_history *h = p->h;
	const struct keel_alloc *a = p->a;
	if (h->n_cells + h->n_accounts > CHECK_BANK_MAX_CELLS)
		return check_ctx_fail(&p->c, KEEL_ERR_TOO_BIG,
				      "more than %u balances in all reads",
				      CHECK_BANK_MAX_CELLS);
	if (h->n_cells + h->n_accounts > h->cap_cells) {
		size_t cap = h->cap_cells ? h->cap_cells * 2 : 1024;
		while (cap < h->n_cells + h->n_accounts)
			cap *= 2;
		int64_t *cells =
			a->realloc(a->ctx, h->cells, cap * sizeof(*cells));
		if (!cells)
			return fail(p, KEEL_ERR_NOMEM, "out of memory");
		h->cells = cells;
		h->cap_cells = cap;
	}
	op->cells_at = h->n_cells;
	int64_t *cells = h->cells + h->n_cells;
	memset(cells, 0, h->n_accounts * sizeof(*cells));
	memset(p->seen, 0, h->n_accounts);
	for (size_t i = 0; i < p->n_members; i++) {
		const struct member *m = &p->members[i];
		if (m->owner != FLD_VALUE)
			continue;
		if (!m->scalar || m->v.kind != CHECK_VAL_INT)
			return check_ctx_fail(&p->c, KEEL_ERR_MALFORMED,
					      "balance of \"%.*s\" must be an "
					      "integer",
					      (int)KEEL_MIN(m->name.len, 40),
					      m->name.str);
		uint32_t acct;
		if (!check_map_get(&p->accounts, m->name.str, m->name.len,
				   &acct)) {
			if (op->n_unknown++ == 0) {
				struct check_value name = m->name;
				name.len = KEEL_MIN(name.len, 256u);
				int rv = own(p, &name);
				if (rv)
					return rv;
				op->unknown = name.str;
				op->unknown_len = name.len;
			}
			continue;
		}
		if (p->seen[acct])
			return check_ctx_fail(&p->c, KEEL_ERR_MALFORMED,
					      "read names \"%.*s\" twice",
					      (int)KEEL_MIN(m->name.len, 40),
					      m->name.str);
		p->seen[acct] = 1;
		cells[acct] = m->v.num;
	}
	for (uint32_t i = 0; i < h->n_accounts; i++)
		if (!p->seen[i] && op->n_missing++ == 0)
			op->first_missing = i;
	h->n_cells += h->n_accounts;
	return 0;
}

static bool same_transfer(const struct check_bank_op *x,
			  const struct check_bank_op *y)
{
	return x->from == y->from && x->to == y->to &&
	       x->amount == y->amount && x->id_len == y->id_len &&
	       !memcmp(x->id, y->id, x->id_len);
}

static int invoke(struct bank_parse *p, struct check_proc_slot *ps,
		  enum check_bank_f f, bool has_value, bool has_time,
		  int64_t time)
{
	struct check_bank_history *h = p->h;
	const struct keel_alloc *a = p->a;
	if (ps->op != UINT32_MAX)
		return check_ctx_fail(
			&p->c, KEEL_ERR_MALFORMED,
			"process %lld invokes while its op from line %u is open",
			(long long)ps->process, h->ops[ps->op].call_line);
	if (h->n_ops >= CHECK_MAX_OPS)
		return check_ctx_fail(&p->c, KEEL_ERR_TOO_BIG,
				      "more than %u operations", CHECK_MAX_OPS);
	if (h->n_ops == h->cap_ops) {
		size_t cap = h->cap_ops ? h->cap_ops * 2 : 64;
		struct check_bank_op *ops =
			a->realloc(a->ctx, h->ops, cap * sizeof(*ops));
		if (!ops)
			return fail(p, KEEL_ERR_NOMEM, "out of memory");
		h->ops = ops;
		h->cap_ops = cap;
	}
	struct check_bank_op op;
	memset(&op, 0, sizeof(op));
	op.f = f;
	op.outcome = CHECK_BANK_INFO;
	op.process = ps->process;
	op.call_seq = p->c.seq;
	op.ret_seq = CHECK_SEQ_INF;
	op.has_time = has_time;
	op.call_time = time;
	op.call_line = p->c.line;
	if (f == CHECK_BANK_TRANSFER) {
		if (!has_value)
			return fail(p, KEEL_ERR_MALFORMED,
				    "a transfer's invocation needs its value");
		int rv = transfer_value(p, &op);
		if (rv)
			return rv;
		uint32_t prev;
		if (check_map_get(&p->ids, op.id, op.id_len, &prev))
			return check_ctx_fail(
				&p->c, KEEL_ERR_MALFORMED,
				"transfer id \"%.*s\" already invoked on "
				"line %u",
				(int)KEEL_MIN(op.id_len, 40), op.id,
				h->ops[prev].call_line);
		struct check_value id = {.kind = CHECK_VAL_STR,
					 .str = op.id,
					 .len = op.id_len};
		if ((rv = own(p, &id)))
			return rv;
		op.id = id.str;
		rv = check_map_put(&p->ids, a, op.id, op.id_len,
				   (uint32_t)h->n_ops);
		if (rv)
			return fail(p, rv, "out of memory");
	}
	ps->op = (uint32_t)h->n_ops;
	h->ops[h->n_ops++] = op;
	return 0;
}

static int complete(struct bank_parse *p, struct check_proc_slot *ps,
		    enum check_event_type type, enum check_bank_f f,
		    bool has_value, bool has_time, int64_t time)
{
	struct check_bank_history *h = p->h;
	if (ps->op == UINT32_MAX)
		return check_ctx_fail(&p->c, KEEL_ERR_MALFORMED,
				      "process %lld completes an op it never "
				      "invoked",
				      (long long)ps->process);
	struct check_bank_op *op = &h->ops[ps->op];
	if (op->f != f)
		return check_ctx_fail(
			&p->c, KEEL_ERR_MALFORMED,
			"process %lld completes %s but invoked %s on line %u",
			(long long)ps->process,
			f == CHECK_BANK_READ ? "read" : "transfer",
			op->f == CHECK_BANK_READ ? "read" : "transfer",
			op->call_line);
	op->ret_line = p->c.line;
	op->ret_time = time;
	op->has_time = op->has_time && has_time;
	if (f == CHECK_BANK_TRANSFER && has_value) {
		/* The completion repeats the invocation's value. */
		struct check_bank_op again = *op;
		int rv = transfer_value(p, &again);
		if (rv)
			return rv;
		if (!same_transfer(op, &again))
			return check_ctx_fail(&p->c, KEEL_ERR_MALFORMED,
					      "the value differs from the "
					      "invocation on line %u",
					      op->call_line);
	}
	switch (type) {
	case CHECK_EV_OK:
		op->outcome = CHECK_BANK_OK;
		op->ret_seq = p->c.seq;
		if (f == CHECK_BANK_READ) {
			if (!has_value)
				return fail(p, KEEL_ERR_MALFORMED,
					    "a read's ok needs the balances "
					    "as an object");
			int rv = read_value(p, op);
			if (rv)
				return rv;
		}
		break;
	case CHECK_EV_FAIL:
		op->outcome = CHECK_BANK_FAIL;
		op->ret_seq = p->c.seq;
		break;
	case CHECK_EV_INFO:
		op->outcome = CHECK_BANK_INFO;
		op->ret_seq = CHECK_SEQ_INF;
		break;
	case CHECK_EV_INVOKE:
		KEEL_ASSERT(0);
	}
	ps->op = UINT32_MAX;
	return 0;
}

static int parse_line(struct bank_parse *p, const char *line, size_t n)
{
	struct check_json j = {.s = line, .i = 0, .n = n, .c = &p->c,
			       .max_str = CHECK_MAX_LINE};
	int rv;
	check_json_ws(&j);
	if (j.i == n)
		return 0; /* blank line */
	p->c.scratch_used = 0;
	p->n_members = 0;
	p->n_names = 0;
	if ((rv = check_ctx_scratch(&p->c, n)))
		return rv;
	if (j.s[j.i] != '{')
		return check_json_bad(&j, "expected '{'");
	j.i++;
	unsigned seen = 0;
	int64_t process = 0, time = 0, total = 0;
	struct check_value type = {0}, f = {0}, value = {0};
	bool value_object = false, value_null = false;
	check_json_ws(&j);
	if (j.i < n && j.s[j.i] == '}')
		return check_json_bad(&j, "empty object");
	for (;;) {
		struct check_value name;
		check_json_ws(&j);
		if ((rv = jstr(&j, &name)))
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
			{"process", FLD_PROCESS},   {"type", FLD_TYPE},
			{"f", FLD_F},               {"value", FLD_VALUE},
			{"time", FLD_TIME},         {"accounts", FLD_ACCOUNTS},
			{"total", FLD_TOTAL},       {"initial", FLD_INITIAL},
		};
		unsigned bit = 0;
		for (size_t k = 0; k < KEEL_ARRAY_LEN(fields); k++)
			if (is(&name, fields[k].name))
				bit = fields[k].bit;
		if (bit & seen)
			return check_ctx_fail(&p->c, KEEL_ERR_MALFORMED,
					      "duplicate field \"%.*s\"",
					      (int)name.len, name.str);
		seen |= bit;
		switch (bit) {
		case FLD_PROCESS:
			rv = jint(&j, &process);
			break;
		case FLD_TIME:
			rv = jint(&j, &time);
			break;
		case FLD_TOTAL:
			rv = jint(&j, &total);
			break;
		case FLD_TYPE:
			rv = jstr(&j, &type);
			break;
		case FLD_F:
			rv = jstr(&j, &f);
			break;
		case FLD_ACCOUNTS:
			rv = jaccounts(p, &j);
			break;
		case FLD_INITIAL:
			rv = jobject(p, &j, FLD_INITIAL);
			break;
		case FLD_VALUE:
			if (j.i < n && j.s[j.i] == '{') {
				value_object = true;
				rv = jobject(p, &j, FLD_VALUE);
			} else if (j.i < n && j.s[j.i] == '"') {
				rv = check_json_string(&j, &value);
			} else if (check_json_literal(&j, "null")) {
				value_null = true; /* as if absent */
			} else {
				rv = check_json_skip(&j, 1);
			}
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
	if (!(seen & FLD_TYPE))
		return fail(p, KEEL_ERR_MALFORMED, "a line needs \"type\"");
	if (is(&type, "bank"))
		return config(p, seen, total);
	if (!p->have_config)
		return fail(p, KEEL_ERR_MALFORMED,
			    "the first line must be the bank config "
			    "{\"type\":\"bank\",...}");
	if (is(&type, "final")) {
		if (!is(&f, "ledger"))
			return fail(p, KEEL_ERR_MALFORMED,
				    "a final line needs \"f\":\"ledger\"");
		if (!(seen & FLD_VALUE))
			return fail(p, KEEL_ERR_MALFORMED,
				    "the final ledger needs a value");
		return ledger(p, &value);
	}
	if (p->have_final)
		return fail(p, KEEL_ERR_MALFORMED,
			    "an event after the final ledger");
	int t = check_type_parse(type.str, type.len);
	if (t < 0)
		return check_ctx_fail(&p->c, KEEL_ERR_MALFORMED,
				      "unknown type \"%.*s\"",
				      (int)KEEL_MIN(type.len, 40), type.str);
	if (!(seen & FLD_PROCESS) || !(seen & FLD_F))
		return fail(p, KEEL_ERR_MALFORMED,
			    "an event needs \"process\", \"type\" and \"f\"");
	enum check_bank_f fn;
	if (is(&f, "transfer"))
		fn = CHECK_BANK_TRANSFER;
	else if (is(&f, "read"))
		fn = CHECK_BANK_READ;
	else
		return check_ctx_fail(&p->c, KEEL_ERR_MALFORMED,
				      "unknown f \"%.*s\" (bank: transfer, "
				      "read)",
				      (int)KEEL_MIN(f.len, 40), f.str);
	bool has_value = (seen & FLD_VALUE) && !value_null;
	if (has_value && !value_object &&
	    (fn == CHECK_BANK_TRANSFER || t == CHECK_EV_OK))
		return fail(p, KEEL_ERR_MALFORMED,
			    "the value must be an object");
	struct check_proc_slot *ps = check_ctx_proc(&p->c, process);
	if (!ps)
		return fail(p, KEEL_ERR_NOMEM, "out of memory");
	p->c.seq++;
	if (t == CHECK_EV_INVOKE)
		return invoke(p, ps, fn, has_value, (seen & FLD_TIME) != 0,
			      time);
	return complete(p, ps, (enum check_event_type)t, fn, has_value,
			(seen & FLD_TIME) != 0, time);
}

int check_bank_parse(const char *buf, size_t len,
		     struct check_bank_history *h,
		     struct check_parse_error *err)
{
	struct bank_parse p;
	memset(&p, 0, sizeof(p));
	p.h = h;
	p.a = h->alloc;
	check_history_init(&p.dummy, h->alloc);
	check_ctx_init(&p.c, &p.dummy, err, CHECK_FORMAT_JSONL);
	int rv = 0;
	p.names = p.a->malloc(p.a->ctx, CHECK_BANK_MAX_ACCOUNTS *
						sizeof(*p.names));
	if (!p.names)
		rv = fail(&p, KEEL_ERR_NOMEM, "out of memory");
	size_t pos = 0;
	const char *line;
	size_t n;
	while (!rv && check_next_line(buf, len, &pos, &line, &n)) {
		p.c.line++;
		if (n > CHECK_MAX_LINE) {
			rv = check_ctx_fail(&p.c, KEEL_ERR_TOO_BIG,
					    "line longer than %u bytes",
					    CHECK_MAX_LINE);
			break;
		}
		rv = parse_line(&p, line, n);
	}
	if (!rv && !p.have_config) {
		p.c.line = 0;
		rv = fail(&p, KEEL_ERR_MALFORMED,
			  "no bank config line {\"type\":\"bank\",...}");
	}
	/* Ops still open at the end stay INFO with no completion. */
	h->n_events = p.c.seq;
	for (size_t i = 0; !rv && i < h->n_ops; i++) {
		const struct check_bank_op *o = &h->ops[i];
		if (o->f == CHECK_BANK_TRANSFER)
			h->n_transfers[o->outcome]++;
		else
			h->n_reads[o->outcome]++;
	}
	check_map_free(&p.accounts, p.a);
	check_map_free(&p.ids, p.a);
	p.a->free(p.a->ctx, p.members);
	p.a->free(p.a->ctx, p.names);
	p.a->free(p.a->ctx, p.seen);
	check_ctx_close(&p.c);
	check_history_close(&p.dummy);
	return rv;
}

void check_bank_init(struct check_bank_history *h,
		     const struct keel_alloc *alloc)
{
	memset(h, 0, sizeof(*h));
	h->alloc = alloc;
}

void check_bank_close(struct check_bank_history *h)
{
	const struct keel_alloc *a = h->alloc;
	if (!a)
		return;
	a->free(a->ctx, h->accounts);
	a->free(a->ctx, h->initial);
	a->free(a->ctx, h->ops);
	a->free(a->ctx, h->cells);
	a->free(a->ctx, h->ledger);
	check_arena_free(&h->arena, a);
	memset(h, 0, sizeof(*h));
}

bool check_bank_detect(const char *buf, size_t len)
{
	size_t pos = 0;
	const char *line;
	size_t n;
	while (check_next_line(buf, len, &pos, &line, &n)) {
		size_t i = 0;
		while (i < n && (line[i] == ' ' || line[i] == '\t'))
			i++;
		if (i == n)
			continue;
		if (line[i] != '{')
			return false;
		/* A textual look for "type" : "bank" at the top level is
		 * enough to pick the model; the parser is the strict part. */
		for (size_t k = i; k + 6 <= n; k++) {
			if (memcmp(line + k, "\"type\"", 6))
				continue;
			size_t m = k + 6;
			while (m < n && (line[m] == ' ' || line[m] == '\t'))
				m++;
			if (m >= n || line[m] != ':')
				continue;
			m++;
			while (m < n && (line[m] == ' ' || line[m] == '\t'))
				m++;
			if (n - m >= 6 && !memcmp(line + m, "\"bank\"", 6))
				return true;
		}
		return false;
	}
	return false;
}
