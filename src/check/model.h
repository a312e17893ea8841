/*
 * model.h -- the checker's sequential models over interned values (see
 * model.c). Internal to src/check.
 */
#ifndef KEEL_CHECK_MODEL_H
#define KEEL_CHECK_MODEL_H

#include "check/check_internal.h"

/* The interning table and the models' scratch. */
struct check_model_ctx {
	const struct keel_alloc *a;
	struct check_arena_block *arena;
	struct check_map map; /* encoded value -> id */
	struct check_value *vals;
	size_t n_vals, cap_vals;
	char *buf;
	size_t buf_cap;
	uint32_t initial; /* id of the history's initial value */
};

/* An op as the search sees it: its values interned. */
struct check_mop {
	enum check_f f;
	enum check_outcome outcome;
	bool has_out;
	uint32_t arg, arg2, out;
};

void check_model_init(struct check_model_ctx *m, const struct keel_alloc *a);
void check_model_close(struct check_model_ctx *m);
/* Interns v (copied); 0, KEEL_ERR_NOMEM or KEEL_ERR_TOO_BIG. */
int check_model_intern(struct check_model_ctx *m, const struct check_value *v,
		       uint32_t *id);
/* Borrowed until the model is closed. */
const struct check_value *check_model_value(const struct check_model_ctx *m,
					    uint32_t id);
/* Applies op in state: *legal says whether the model allows it (with its
 * recorded result), *next is the state after. Returns 0 or an error from
 * interning a built value. */
int check_model_step(struct check_model_ctx *m, const struct check_mop *op,
		     uint32_t state, bool *legal, uint32_t *next);

#endif
