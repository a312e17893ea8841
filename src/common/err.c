/* err.c -- the message table behind keel_strerror and the assertion hook. */
#include <stdio.h>
#include <stdlib.h>

#include "keel/common.h"

const char *keel_strerror(int err)
{
	switch (err) {
#define KEEL_ERR_CASE_(name, value, text)                                     \
	case value:                                                           \
		return text;
		KEEL_ERRORS(KEEL_ERR_CASE_)
#undef KEEL_ERR_CASE_
	default:
		return "unknown error";
	}
}

void keel_assert_fail(const char *expr, const char *file, int line)
{
	fprintf(stderr, "keel: assertion failed: %s (%s:%d)\n", expr, file,
		line);
	fflush(stderr);
	abort();
}
