/*
 * fuzz_bank.c -- libFuzzer harness for the checker's bank-history parser
 * (src/check/bank_parse.c), which reads files produced by other programs
 * (the Jepsen bank workload, the simulator), and for the checks that run
 * on what it accepts (src/check/bank.c).
 *
 * The input is copied into a buffer of exactly its size so ASan catches a
 * read one byte past the end. Beyond "no crash, no leak", it checks what
 * the parser promises: an error has a message; a parsed history has 1..1024
 * accounts, ops whose accounts exist, calls before returns, info exactly
 * when the return is infinite, ok reads whose balances lie inside the
 * cells, ledger entries naming transfers or nothing; and that the checks
 * answer without error, report only shown violations that they counted,
 * and find none on a history without transfers, reads or ledger.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_bank: property failed: %s\n", what);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	if (size)
		memcpy(buf, data, size);
	struct check_bank_history h;
	struct check_parse_error err;
	check_bank_init(&h, &keel_alloc_libc);
	int rv = check_bank_parse(buf, size, &h, &err);
	if (rv) {
		check(rv == KEEL_ERR_MALFORMED || rv == KEEL_ERR_TOO_BIG ||
			      rv == KEEL_ERR_NOMEM,
		      "parse error code");
		check(err.msg[0] != '\0', "parse error has a message");
		check(strlen(err.msg) < sizeof(err.msg), "message terminated");
		goto out;
	}
	check(h.n_accounts >= 1 && h.n_accounts <= CHECK_BANK_MAX_ACCOUNTS,
	      "account count");
	check(h.total >= 0, "total >= 0");
	for (size_t i = 0; i < h.n_ops; i++) {
		const struct check_bank_op *o = &h.ops[i];
		check(o->call_seq < o->ret_seq, "call before return");
		check(o->ret_seq <= h.n_events || o->ret_seq == CHECK_SEQ_INF,
		      "return within the events");
		check((o->outcome == CHECK_BANK_INFO) ==
			      (o->ret_seq == CHECK_SEQ_INF),
		      "info iff open-ended");
		if (o->f == CHECK_BANK_TRANSFER) {
			check(o->from < h.n_accounts && o->to < h.n_accounts,
			      "transfer accounts exist");
			check(o->amount >= 0 && o->id_len >= 1,
			      "amount and id");
		} else if (o->outcome == CHECK_BANK_OK) {
			check(o->cells_at + h.n_accounts <= h.n_cells,
			      "read cells in range");
			check(o->n_missing <= h.n_accounts, "missing count");
		}
	}
	for (size_t p = 0; p < h.n_ledger; p++) {
		uint32_t op = h.ledger[p].op;
		check(op == UINT32_MAX ||
			      (op < h.n_ops &&
			       h.ops[op].f == CHECK_BANK_TRANSFER),
		      "ledger entries name transfers");
	}
	struct check_bank_result *res = malloc(sizeof(*res));
	if (!res)
		goto out;
	rv = check_bank_run(&h, &keel_alloc_libc, res);
	check(rv == 0, "run succeeds");
	size_t sum = 0;
	for (int k = 0; k < CHECK_BANK_KINDS; k++)
		sum += res->n_by_kind[k];
	check(sum == res->n_violations, "kinds add up");
	check(res->n_shown <= res->n_violations, "shown <= counted");
	for (size_t i = 0; i < res->n_shown; i++) {
		const struct check_bank_violation *v = &res->shown[i];
		check(v->op == UINT32_MAX || v->op < h.n_ops, "violation op");
		if (v->kind == CHECK_BANK_NO_PREFIX)
			check(v->n_diff >= 1 && v->nearest <= h.n_ledger,
			      "nearest prefix");
	}
	if (h.n_ops == 0 && h.n_ledger == 0)
		check(res->n_violations == 0, "nothing, nothing wrong");
	if (res->consistency_checked)
		check(res->n_by_kind[CHECK_BANK_NEVER_INVOKED] == 0,
		      "replay only with known ids");
	free(res);
out:
	check_bank_close(&h);
	free(buf);
	return 0;
}
